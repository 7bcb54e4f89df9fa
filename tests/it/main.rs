//! Integration tests of hookspool: one binary, one module per area.

// Helpers outside `#[test]` functions unwrap too: a test that cannot set up should panic.
#![allow(clippy::unwrap_used)]

mod callbacks;
mod client;
mod conformance_memory;
mod delivery;
mod delivery_crash;
mod http_hooks;
mod http_metrics;
mod http_openapi;
mod http_queues;
mod net;
mod remote;
mod store;
mod support;
