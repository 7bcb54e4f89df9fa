//! Integration tests of hookspool-http and hookspool-client: every route over a real server
//! on 127.0.0.1:0, the typed client against it, two in-process hookspools doing remote
//! subscribe. One binary, one module per area.

// Helpers outside `#[test]` functions unwrap too: a test that cannot set up should panic.
#![allow(clippy::unwrap_used)]

mod client;
mod console;
mod disk_full;
mod http_callbacks;
mod http_hooks;
mod http_metrics;
mod http_openapi;
mod http_queues;
mod http_queues_refused;
mod http_robustness;
mod remote;
mod retention;
// The receiver of the webhook tests: one file, used by both test binaries (these tests use
// only part of it).
#[allow(dead_code)]
#[path = "../../../webhooks/tests/it/support.rs"]
mod support;

/// A delivery loop for tests: polls every 10 ms, retries after `delays` (none: the first
/// failure is final), no jitter, loopback targets allowed.
pub(crate) fn loopback_delivery(
    delays: Vec<std::time::Duration>,
) -> hookspool_webhooks::DeliveryConfig {
    use hookspool_webhooks::{DeliveryConfig, HttpConfig, NetworkPolicy, RetrySchedule};
    DeliveryConfig {
        poll_interval: std::time::Duration::from_millis(10),
        schedule: RetrySchedule {
            delays,
            jitter: 0.0,
            ..RetrySchedule::standard()
        },
        http: HttpConfig {
            policy: NetworkPolicy::new().allow_loopback(),
            ..HttpConfig::default()
        },
        ..DeliveryConfig::default()
    }
}

/// Runs [`loopback_delivery`] without retries over `hooks` until the test ends.
pub(crate) fn spawn_loopback_delivery<B: hookspool::Backend>(hooks: &hookspool_webhooks::Hooks<B>) {
    let deliverer = hooks.deliverer(loopback_delivery(Vec::new())).unwrap();
    tokio::spawn(deliverer.run(std::future::pending()));
}
