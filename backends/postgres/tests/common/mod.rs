//! Helpers the PostgreSQL backend's tests of leases and acks share.

// Each test crate that includes this module uses only some of them.
#![allow(dead_code)]

use hookspool::{
    Action, Backend, Claim, Expect, Key, Move, Phase, QueueConfig, QueueId, Timestamp, Transition,
};
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

/// Acks of `keys` for `owner`'s leases, as `Store::ack_many` makes them on a queue that
/// keeps done items.
pub fn acks(keys: &[Key], owner: &str) -> Vec<(Key, Transition)> {
    keys.iter()
        .map(|key| {
            let ack = Transition {
                expect: Expect {
                    phase: None,
                    lease_owner: Some(owner.to_owned()),
                },
                action: Action::Move(Move::to(Phase::DONE)),
            };
            (*key, ack)
        })
        .collect()
}

pub fn keys_of(items: &[hookspool::Item]) -> Vec<Key> {
    items.iter().map(|i| i.key).collect()
}
