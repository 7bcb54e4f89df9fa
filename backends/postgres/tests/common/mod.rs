//! Helpers the PostgreSQL backend's tests of leases and acks share.

use hookspool::{Backend, Claim, QueueConfig, QueueId, Timestamp};
use hookspool_postgres::{PostgresBackend, testing};

/// The time `ms` milliseconds after the epoch.
pub fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

/// A durable claim for `owner` of at most `limit` items, leased until `until`.
pub fn claim(owner: &str, limit: usize, until: u64) -> Claim {
    Claim {
        owner: owner.to_owned(),
        limit,
        lease_until: at(until),
        durable: true,
    }
}

/// A backend on a fresh schema with a queue `q`, and the schema's name.
pub async fn fresh() -> (PostgresBackend, QueueId, String) {
    let options = testing::options();
    let schema = options.schema.clone();
    let backend = PostgresBackend::open(options).await.expect("open");
    let q = QueueId::new("q").expect("queue id");
    backend
        .create_queue(QueueConfig::new(q.clone()))
        .await
        .expect("create");
    (backend, q, schema)
}
