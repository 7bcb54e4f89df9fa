//! Helpers the PostgreSQL backend's tests share.

// Each test crate that includes this module uses only some of them.
#![allow(dead_code)]

use hookspool::{
    Action, Backend, Claim, Expect, Key, Move, Phase, QueueConfig, QueueId, Timestamp, Transition,
};
use hookspool_postgres::{PostgresBackend, testing};
use tokio_postgres::Client;

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

/// A fresh schema, migrated by a backend that is then closed, a session of its own, and
/// the schema's name.
pub async fn fresh_schema() -> (Client, String) {
    let options = testing::options();
    let schema = options.schema.clone();
    drop(PostgresBackend::open(options).await.expect("open"));
    (testing::client().await, schema)
}

/// How many sequential scans of `schema`'s items the server counts, and this session has
/// not yet sent it.
pub async fn table_scans(client: &Client, schema: &str) -> i64 {
    client
        .query_one(
            "SELECT pg_stat_get_numscans(t) + pg_stat_get_xact_numscans(t) \
             FROM (SELECT format('%I.items', $1::text)::regclass AS t) AS x",
            &[&schema],
        )
        .await
        .expect("table statistics")
        .get(0)
}

/// Entries that scans of `schema`'s index `index` returned, reported and not yet.
pub async fn index_entries_all(client: &Client, schema: &str, index: &str) -> i64 {
    client
        .query_one(
            "SELECT pg_stat_get_tuples_returned(i) + pg_stat_get_xact_tuples_returned(i) \
             FROM (SELECT format('%I.%I', $1::text, $2::text)::regclass AS i) AS x",
            &[&schema, &index],
        )
        .await
        .expect("index statistics")
        .get(0)
}
