//! hookspool-webhooks: webhooks on the hookspool queue engine, as a crash-safe outbox.
//!
//! Subscriptions, fired events and inbound callbacks are items of queues in the same
//! `hookspool::Store` as everything else, so they are as durable as the store's backend:
//!
//! - **Signing** ([`sign`], [`verify`], [`SigningKey`], [`Secret`]): Standard Webhooks (the
//!   default), webhooks_emitter-style and GitHub-style HMAC-SHA256 signatures, compared in
//!   constant time, with key rotation. With `default-features = false, features =
//!   ["signing"]` this is all the crate holds: a receiver that only verifies needs no HTTP
//!   client and no queue engine.
//! - **Subscriptions** ([`Hooks::subscribe`], [`Hooks::attach`] for named emitters,
//!   `unsubscribe`, `deregister_url`, `update`, `set_enabled`, `rotate_secret`): who gets
//!   which events (patterns `*`, `prefix.*`, exact names), signed how, with which headers,
//!   concurrency and ordering.
//! - **Firing** ([`Hooks::fire`], `notify` (one owner's subscriptions), `emit` (with a request
//!   id), `fire_to` / `fire_resolved` (URLs without a registry), [`Hooks::fire_with`] with
//!   [`FireOptions`], `fire_test` (one signed test event to one subscription)): one delivery
//!   per target, stored in one atomic push before the call returns; an **idempotency key**
//!   makes a retried fire a no-op for 24 hours (configurable).
//! - **The delivery loop** ([`Deliverer`]): claims due deliveries, POSTs them signed through
//!   an HTTP client that refuses private and loopback targets unless allowed
//!   ([`NetworkPolicy`]), records each attempt with the next state in one atomic update
//!   before announcing it ([`Hooks::results`]; the outcomes of requests that finish together
//!   share one `update_many`), retries on a [`RetrySchedule`] (honouring
//!   `Retry-After` and `410 Gone`), and resumes after a crash exactly where it stopped.
//!   Claims run beside the requests; on a database, [`DeliveryConfig::claim_pause`] spaces
//!   the claims that find less than they had room for, so that each takes what arrived
//!   meanwhile.
//! - **Deliveries** ([`Hooks::delivery`], `attempts`, `recent_deliveries`, `replay`,
//!   `replay_subscription`): the attempt log of every delivery, the newest ones (of a
//!   subscription), and replay of dead ones.
//! - **Inbound callbacks** ([`Hooks::receive`], [`Callbacks`], [`Handler`]): a callback
//!   channel is a queue; received requests are stored before they are acknowledged and the
//!   channel's handler runs them with retries, ending in `dead` if they keep failing.
//!
//! # Example
//!
//! ```no_run
//! use hookspool::{MemoryBackend, Store};
//! use hookspool_webhooks::{DeliveryConfig, Hooks, SubscribeOptions};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let hooks = Hooks::open(Store::new(MemoryBackend::new())).await?;
//! let sub = hooks
//!     .subscribe("order.*", "https://shop.example/hooks", SubscribeOptions::default())
//!     .await?;
//! println!("the receiver verifies with {}", sub.secret.expose());
//! let deliverer = hooks.deliverer(DeliveryConfig::default())?;
//! let running = tokio::spawn(deliverer.run(async {
//!     let _ = tokio::signal::ctrl_c().await;
//! }));
//! // Returns once the delivery is stored; the loop sends it.
//! let ids = hooks.fire("order.paid", br#"{"order":42}"#.to_vec()).await?;
//! println!("queued {ids:?}");
//! running.await??;
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! - `delivery` (default): everything above, over a hookspool store (reqwest with rustls).
//! - `signing` (in `delivery`): signatures alone.
//! - `openapi`: `utoipa::ToSchema` on the types the HTTP API sends ([`Delivery`],
//!   [`Attempt`], [`SubscriptionInfo`], [`SignatureScheme`]), for its OpenAPI document.
//!
//! # Modules
//!
//! The API is flat. Inside: `hooks` ([`Hooks`] and what its parts share), `subscription` and
//! `subscriptions` (the types and the registry), `firing`, `idempotency`, `deliveries`,
//! `deliver` (the loop), `inbound` (callbacks), `net` (URLs, the network policy, the HTTP
//! client, `Retry-After`), `retry` (schedules), `signing`, `stats` (counters for metrics),
//! `error` ([`Error`]: the engine's errors plus what only webhooks can get wrong).

#[cfg(feature = "delivery")]
mod deliver;
#[cfg(feature = "delivery")]
mod deliveries;
#[cfg(feature = "delivery")]
mod error;
#[cfg(feature = "delivery")]
mod firing;
#[cfg(feature = "delivery")]
mod hooks;
#[cfg(feature = "delivery")]
mod idempotency;
#[cfg(feature = "delivery")]
mod inbound;
#[cfg(feature = "delivery")]
mod json;
#[cfg(feature = "delivery")]
mod net;
#[cfg(feature = "delivery")]
mod restarts;
#[cfg(feature = "delivery")]
mod retry;
#[cfg(feature = "signing")]
mod secret;
#[cfg(feature = "signing")]
mod signing;
#[cfg(feature = "delivery")]
mod stats;
#[cfg(feature = "delivery")]
mod subscription;
#[cfg(feature = "delivery")]
mod subscriptions;

#[cfg(feature = "delivery")]
pub use deliver::{Deliverer, DeliveryConfig, DeliveryOutcome, OutcomeKind};
#[cfg(feature = "delivery")]
pub use deliveries::{Attempt, Delivery, DeliveryId, RECENT_SCAN};
#[cfg(feature = "delivery")]
pub use error::{Error, Result};
#[cfg(feature = "delivery")]
pub use firing::{FireOptions, Fired, RequestId, TEST_EVENT, UrlResolver};
#[cfg(feature = "delivery")]
pub use hooks::{
    CANCELLED, DEFAULT_DELIVERIES_RETAIN, DELIVERIES_QUEUE, GONE, Hooks, HooksOptions,
    SUBSCRIPTIONS_QUEUE,
};
#[cfg(feature = "delivery")]
pub use idempotency::{
    DEFAULT_IDEMPOTENCY_TTL, IDEMPOTENCY_QUEUE, MAX_IDEMPOTENCY_KEY, check_idempotency_key,
};
#[cfg(feature = "delivery")]
pub use inbound::{
    CHANNEL_SECRET, CallbackConfig, CallbackOutcome, CallbackResult, Callbacks, Handler,
    HandlerError, HandlerFn, INTERNAL_PREFIX, Inbound, META_CONTENT_TYPE, META_WEBHOOK_ID,
    channel_secret, handler_fn, set_channel_secret,
};
#[cfg(feature = "delivery")]
pub use json::compact_json;
#[cfg(feature = "delivery")]
pub use net::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_RESPONSE_BODY, DEFAULT_TIMEOUT, DeliveryClient,
    DeliveryError, HttpConfig, HttpResponse, IpNet, IpNetError, MAX_URL_LEN, NetworkPolicy,
    TargetUrl, USER_AGENT, UrlError, parse_retry_after,
};
#[cfg(feature = "delivery")]
pub use retry::{DEFAULT_JITTER, DEFAULT_RETRY_AFTER_MAX, RetrySchedule, STANDARD_DELAYS};
#[cfg(feature = "signing")]
pub use secret::Secret;
#[cfg(feature = "signing")]
pub use signing::{
    GENERATED_KEY_LEN, HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE, HEADER_WEBHOOK_TIMESTAMP,
    HEADER_X_HUB_SIGNATURE_256, HEADER_X_WEBHOOKS_DELIVERY, HEADER_X_WEBHOOKS_EVENT,
    HEADER_X_WEBHOOKS_SIGNATURE, MAX_KEY_LEN, MIN_KEY_LEN, SignInput, SignatureScheme,
    SigningError, SigningKey, TOLERANCE_SECS, VerifyError, WHSEC_PREFIX, sign, verify,
    verify_emitter, verify_github,
};
#[cfg(feature = "delivery")]
pub use stats::{DURATION_BUCKETS, DeliveryStatsReader, DeliveryStatsSnapshot};
#[cfg(feature = "delivery")]
pub use subscription::{
    DEFAULT_ROTATION_GRACE, EventPattern, MAX_EVENT_LEN, MAX_EXTRA_HEADERS, SubscribeOptions,
    Subscription, SubscriptionInfo, SubscriptionUpdate, check_event_name,
};
