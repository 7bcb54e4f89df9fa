//! hookspool-client: a typed async client of the hookspool HTTP API, and the API's wire
//! types.
//!
//! - [`Client`]: every queue admin route (queues, items, counts, a streamed dump, reset,
//!   phase changes, replay, push) and the webhook routes (subscribe, publish with an
//!   idempotency key, deliveries), for applications in Rust and for the CLI's `--url`.
//! - [`Client::subscribe_channel`]: subscribes one of our callback channels to another
//!   hookspool's events (two hookspools doing pubsub).
//! - [`wire`]: the JSON of every request and answer, defined once and shared by the router
//!   (`hookspool-http`), its OpenAPI document (feature `openapi`) and this client.
//!
//! Answers are decoded into the engine's own types where the API shows them whole
//! ([`hookspool::Item`], [`hookspool::PhaseCounts`]) and into the wire types where it shows
//! less (a queue's secret is never sent back, only whether it has one: [`QueueInfo`]).
//! Absence is `Ok(None)` / `Ok(false)` as in `hookspool::Store`: fetching an unknown item,
//! showing an unknown queue, deleting what is not there.
//!
//! Errors ([`Error`]): a non-2xx answer is [`Error::Remote`] with the HTTP status and the
//! server's `{"error": code, "message": text}`; no answer at all is [`Error::Network`]
//! naming the URL. The token is sent as `Authorization: Bearer …` and never appears in
//! `Debug` output or in errors.
//!
//! ```no_run
//! use hookspool::{NewItem, QueueConfig, QueueId};
//! use hookspool_client::Client;
//! use hookspool_webhooks::Secret;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::new("http://127.0.0.1:8080", Some(Secret::new("my-api-token")))?;
//! let orders = QueueId::new("orders")?;
//! client.create_queue(&QueueConfig::new(orders.clone())).await?;
//! let key = client.push(&orders, NewItem::new(br#"{"id":1}"#.to_vec())).await?;
//! let item = client.fetch_key(&orders, key).await?;
//! assert_eq!(item.map(|i| i.payload), Some(br#"{"id":1}"#.to_vec()));
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! - `openapi`: `utoipa::ToSchema` on the wire types (what `hookspool-http` builds its
//!   OpenAPI document from).

mod client;
mod error;
mod remote;
pub mod wire;

/// JSON text as hookspool shows it (hookspool-webhooks' helper, for the CLI and other users
/// of the wire types).
pub mod text {
    pub use hookspool_webhooks::compact_json;
}

pub use client::{
    CONNECT_TIMEOUT, Client, ClientOptions, READ_TIMEOUT, REQUEST_TIMEOUT, RemoteDump,
};
pub use error::{Error, Result};
pub use wire::{
    Delivery, NewSubscription, Publish, Published, QueueInfo, QueueUpdate, SubscriptionInfo,
};
