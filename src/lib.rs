//! hookspool: a durable queue engine with pluggable backends, built to be a crash-safe outbox.
//!
//! This crate is the engine only: the queue model, the [`Backend`] trait and its contract,
//! the [`Store`] applications call, the in-memory reference backend, and the conformance kit
//! that proves a backend keeps the contract. It knows nothing of HTTP or webhooks.
//!
//! - **Queues of items with phases**: `pending`, `in_flight`, `done`, `dead`, `expired`, and
//!   any phase of your own, each counted from counters (no scan) and paged by key cursor.
//! - **Queue operations**: `push` (one or a batch, atomically), `pop`, `fetch`, `count`,
//!   `dump` (streamed), `reset`, `delete`, `update_phase` (with compare-and-set).
//! - **A consumer protocol**: `claim` leases due items, `ack` / `nack` / `kill` settle them
//!   (`ack_many` settles a batch in one durable write), an expired lease gives the item back
//!   with its attempt counted; schedules (`not_before`) and per-queue TTLs.
//! - **Retention**: a queue's [`Retain`] periods say how long items stay `done`, `dead` and
//!   `expired`; [`Store::prune`], [`Store::prune_all`] and the background
//!   [`Store::spawn_retention`] remove what is old enough through [`Backend::prune`], a
//!   bounded batch at a time, counted in [`Store::pruned`].
//! - **Damage**: an item whose stored data fails its checksum is quarantined by the backend
//!   that reads it, in [`Phase::CORRUPT`], so that nothing else stops; [`Store::verify`]
//!   checks every item through [`Backend::check`] and reports damage by queue and key.
//! - **Backends**: [`MemoryBackend`] here (the reference, not durable);
//!   `hookspool-journal` (hookspool's own segmented log, the default of the daemon) and
//!   `hookspool-sled` in their own crates, both durable under a [`Durability`] setting;
//!   `hookspool-postgres` (PostgreSQL: several processes share the queues, and applications
//!   push in their own transactions); your own, proved by the conformance kit (feature
//!   `conformance`). What a backend promises beyond the common contract is stated in its
//!   [`Capabilities`] (gapless keys, storage shared by several processes); what it can tell
//!   about itself for monitoring, in its [`Backend::gauges`].
//!
//! **It is not** a message broker (no replication of its own: a journal or sled data
//! directory belongs to one process; to share queues between processes and machines, use
//! the PostgreSQL backend) and not a database: items are opaque bytes with a small string
//! map of metadata.
//!
//! The crates above this one: `hookspool-webhooks` (signing, subscriptions, firing and the
//! delivery loop), `hookspool-http` (the axum router of the HTTP API, and the web console
//! beside it), `hookspool-client` (a typed client of that API), `hookspool-cli` (the
//! `hookspool` tool and daemon).
//!
//! # Durability
//!
//! What a returned call guarantees is the backend's contract (see [`Backend`]): under a
//! durable backend's default [`Durability::Immediate`], a `push` that returned `Ok` survives
//! `kill -9` and power loss; [`Durability::Periodic`] survives `kill -9` and syncs on an
//! interval. [`MemoryBackend`] keeps nothing across a restart.
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
//! let keys: Vec<_> = batch.iter().map(|item| item.key).collect();
//! // ... deliver each item.payload, then settle the batch in one call ...
//! for result in store.ack_many(&orders, &keys, "worker-1").await? {
//!     result?;
//! }
//! assert_eq!(store.count_phase(&orders, &Phase::DONE).await?, 1);
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! - `conformance`: the conformance kit for backend authors (module `conformance`, which
//!   exists only with the feature on): a `Factory` trait, one
//!   check per property of the [`Backend`] contract, a model-based property test, the
//!   `conformance_tests!` macro that runs them all, `conformance::crash` (kill -9 testing of
//!   any durable backend in one call per mode) and `conformance::support` for a backend's
//!   own damage tests.
//!
//! # Modules
//!
//! The API is flat: [`Store`] (the queue API), [`Backend`] (the storage contract, with
//! [`Capabilities`], [`Gauge`], [`check_expect`] and [`apply_move`] for implementors), [`MemoryBackend`], the model types
//! ([`Item`], [`Phase`], [`QueueConfig`], [`Transition`], …), [`Durability`], [`lock_file`]
//! (the data-directory lock for backends that live in a directory) and [`Error`].

mod backend;
#[cfg(feature = "conformance")]
pub mod conformance;
mod durability;
mod error;
mod lock;
mod memory;
mod model;
mod retention;
mod store;
mod verify;

pub use backend::{Backend, Capabilities, Gauge, apply_move, check_expect};
pub use durability::Durability;
pub use error::{Error, Result};
pub use lock::lock_file;
pub use memory::MemoryBackend;
pub use model::{
    Action, Claim, Expect, Item, Key, Lease, MAX_PHASE_LEN, MAX_QUEUE_ID_LEN, Move, NewItem, Page,
    Phase, PhaseCounts, QueueConfig, QueueId, Retain, Retention, Selector, SweepReport, Timestamp,
    Transition,
};
pub use retention::{PRUNE_BATCH, PRUNE_BUDGET, RetentionTask};
pub use store::{
    Clock, DEFAULT_MAX_BATCH, DEFAULT_MAX_PAYLOAD, DUMP_PAGE, Dump, Limits, MAX_METADATA_ENTRIES,
    MAX_METADATA_KEY, MAX_METADATA_VALUE, MAX_OWNER_LEN, ManualClock, Store, SystemClock,
    TokioClock,
};
pub use verify::{Checked, Damage, VERIFY_PAGE, VerifyReport};
