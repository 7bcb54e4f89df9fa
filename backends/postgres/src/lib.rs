//! hookspool-postgres: a [`hookspool::Backend`] on PostgreSQL, so that several hookspool
//! processes, on one machine or many, share one set of queues, and applications push items
//! and fire events **in their own transactions**.
//!
//! TODO crate docs
#![doc = ""]

mod backend;
mod connect;
mod error;
mod notify;
mod open;
mod options;
mod outbox;
mod rows;
mod schema;
mod sql;
mod trash;

#[cfg(feature = "testing")]
pub mod testing;

pub use backend::PostgresBackend;
pub use error::{OpenError, ServerError};
pub use options::{DEFAULT_POOL_SIZE, DEFAULT_SCHEMA, PostgresOptions, redact};
pub use schema::SCHEMA_VERSION;
