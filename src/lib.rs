//! hookspool: a durable on-disk queue engine with pluggable backends, built to be a
//! crash-safe outbox.
//!
//! - Named queues of items with phases (`pending`, `in_flight`, `done`, `dead`, `expired`,
//!   and any phase of your own), counted by phase without scanning.
//! - Pollin's operations: `push`, `pop`, `fetch`, `count`, `dump`, `reset`, `delete`,
//!   `update_phase` (with compare-and-set), over one small [`Backend`] trait.
//! - A consumer protocol: `claim` leases due items, `ack` / `nack` / `kill` settle them, an
//!   expired lease gives the item back; schedules (`not_before`) and per-queue TTLs.
//! - Backends: [`MemoryBackend`] here; `hookspool-sled` (durable) in its own crate; your own,
//!   checked by the conformance kit (feature `conformance`).
//! - Webhook delivery (feature `delivery`): `Hooks` (subscriptions, `fire` / `notify` /
//!   `emit`) and the `Deliverer` loop that POSTs deliveries signed, retries them and resumes
//!   after a crash; `verify` for receivers (feature `signing`).
//!
//! It is not a message broker (no replication; one process owns a data directory) and not a
//! database: items are opaque bytes with a small string map of metadata.
//!
//! # Durability
//!
//! What a returned call guarantees is the backend's contract (see [`Backend`]): with a
//! durable backend's default setting, a `push` that returned `Ok` survives `kill -9` and power
//! loss. [`MemoryBackend`] keeps nothing across a restart.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use hookspool::{MemoryBackend, NewItem, Phase, QueueConfig, QueueId, Store};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> hookspool::Result<()> {
//! let store = Store::new(MemoryBackend::new());
//! let orders = QueueId::new("orders")?;
//! store.create_queue(QueueConfig::new(orders.clone())).await?;
//!
//! store.push(&orders, NewItem::new(br#"{"id":1}"#.to_vec())).await?;
//! let batch = store.claim(&orders, "worker-1", 10, Duration::from_secs(30)).await?;
//! for item in &batch {
//!     // ... deliver item.payload ...
//!     store.ack(&orders, item.key, "worker-1").await?;
//! }
//! assert_eq!(store.count_phase(&orders, &Phase::DONE).await?, 1);
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! - `conformance`: the `hookspool::conformance` kit for backend authors: a `Factory` trait,
//!   one check per property of the [`Backend`] contract, a model-based property test, and the
//!   `conformance_tests!` macro that runs them all.
//! - `signing`: webhook signatures (`sign`, `verify`, `SigningKey`) without
//!   an HTTP client.
//! - `delivery` (implies `signing`): `Hooks`, `Deliverer`, the HTTP client with its network
//!   policy, and retry schedules.
//!
//! # Modules
//!
//! The API is flat: [`Store`] (the queue API), [`Backend`] (the storage contract),
//! [`MemoryBackend`], the model types ([`Item`], [`Phase`], [`QueueConfig`], …) and [`Error`].

mod backend;
#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "conformance")]
pub mod conformance;
mod error;
#[cfg(feature = "delivery")]
mod hooks;
#[cfg(feature = "http")]
pub mod http;
mod memory;
mod model;
#[cfg(feature = "delivery")]
mod net;
#[cfg(feature = "delivery")]
mod retry;
#[cfg(feature = "signing")]
mod signing;
mod store;
pub mod text;

pub use backend::{Backend, apply_move, check_expect, lock_file};
pub use error::{Error, Result};
#[cfg(feature = "delivery")]
pub use hooks::{
    Attempt, CANCELLED, CallbackConfig, CallbackOutcome, CallbackResult, Callbacks,
    DEFAULT_ROTATION_GRACE, DELIVERIES_QUEUE, DURATION_BUCKETS, Deliverer, Delivery,
    DeliveryConfig, DeliveryId, DeliveryOutcome, DeliveryStatsSnapshot, EventPattern, GONE,
    Handler, HandlerError, HandlerFn, Hooks, HooksOptions, Inbound, MAX_EVENT_LEN,
    MAX_EXTRA_HEADERS, META_CONTENT_TYPE, META_WEBHOOK_ID, OutcomeKind, SUBSCRIPTIONS_QUEUE,
    SubscribeOptions, Subscription, SubscriptionUpdate, UrlResolver, check_event_name, handler_fn,
};
pub use memory::{MemoryBackend, QueueSnapshot};
pub use model::{
    Action, Claim, Expect, Item, Key, Lease, MAX_PHASE_LEN, MAX_QUEUE_ID_LEN, Move, NewItem, Page,
    Phase, PhaseCounts, QueueConfig, QueueId, Retention, Secret, Selector, SweepReport, Timestamp,
    Transition,
};
#[cfg(feature = "delivery")]
pub use net::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_RESPONSE_BODY, DEFAULT_TIMEOUT, DeliveryClient,
    DeliveryError, HttpConfig, HttpResponse, IpNet, IpNetError, MAX_URL_LEN, NetworkPolicy,
    TargetUrl, USER_AGENT, UrlError, parse_retry_after,
};
#[cfg(feature = "delivery")]
pub use retry::{DEFAULT_JITTER, DEFAULT_RETRY_AFTER_MAX, RetrySchedule, STANDARD_DELAYS};
#[cfg(feature = "signing")]
pub use signing::{
    GENERATED_KEY_LEN, HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE, HEADER_WEBHOOK_TIMESTAMP,
    HEADER_X_HUB_SIGNATURE_256, HEADER_X_WEBHOOKS_DELIVERY, HEADER_X_WEBHOOKS_EVENT,
    HEADER_X_WEBHOOKS_SIGNATURE, MAX_KEY_LEN, MIN_KEY_LEN, SignInput, SignatureScheme,
    SigningError, SigningKey, TOLERANCE_SECS, VerifyError, WHSEC_PREFIX, sign, verify,
    verify_emitter, verify_github,
};
pub use store::{
    Clock, DEFAULT_MAX_BATCH, DEFAULT_MAX_PAYLOAD, DUMP_PAGE, Dump, Limits, MAX_METADATA_ENTRIES,
    MAX_METADATA_KEY, MAX_METADATA_VALUE, MAX_OWNER_LEN, ManualClock, Store, SystemClock,
    TokioClock,
};

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
