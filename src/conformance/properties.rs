//! The conformance properties: one `pub async fn` per rule of the `Backend` contract, each
//! building its own backend from a [`Factory`] and panicking with a clear message on failure.
//!
//! They are grouped by what they exercise, one file each: `queues`, `items` (push, fetch,
//! pop, count, reset), `update`, `claims` (leases, TTLs, the clock), `settling` (ack, nack
//! and kill with a lease), `retention`, `reopen`, `through_store` and `once`. This file holds
//! what they share: the start time, the helpers and `assert_err!`.

use super::Factory;
use super::model::{read_all, select, tally};
use crate::{
    Action, Backend, Claim, Error, Expect, Item, Key, ManualClock, Move, NewItem, Phase,
    PhaseCounts, QueueConfig, QueueId, Selector, Store, Timestamp, Transition,
};

/// The time every property starts at (far from zero, so going backwards is possible).
const T0: Timestamp = Timestamp(1_000_000);

/// `t` milliseconds after [`T0`].
fn at(ms: u64) -> Timestamp {
    Timestamp(T0.0 + ms)
}

/// Panics unless `$r` is an `Err` matching `$p`; the rest is a `format!` of what was tried.
macro_rules! assert_err {
    ($r:expr, $p:pat, $($what:tt)+) => {
        match $r {
            Err($p) => {}
            other => panic!(
                "{}: expected Err({}), got {:?}",
                format!($($what)+),
                stringify!($p),
                other
            ),
        }
    };
}

// After the macro, so that they can use it.
mod claims;
mod items;
mod once;
mod queues;
mod reopen;
mod retention;
mod settling;
mod through_store;
mod update;
pub use claims::*;
pub use items::*;
pub use once::*;
pub use queues::*;
pub use reopen::*;
pub use retention::*;
pub use settling::*;
pub use through_store::*;
pub use update::*;

/// Unwraps a result, panicking with what was being done and the error.
fn ok<T>(r: crate::Result<T>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: unexpected error: {e} ({e:?})"),
    }
}

fn qid(name: &str) -> QueueId {
    QueueId::new(name).unwrap_or_else(|e| panic!("queue id {name:?}: {e}"))
}

fn phase(name: &str) -> Phase {
    Phase::new(name).unwrap_or_else(|e| panic!("phase {name:?}: {e}"))
}

/// A queue config as the store would pass it: `created_at` set.
fn config(name: &str) -> QueueConfig {
    let mut c = QueueConfig::new(qid(name));
    c.created_at = T0;
    c
}

/// A fresh backend with one queue created from `config`.
async fn backend_with<F: Factory>(f: &F, config: QueueConfig) -> (F::Backend, QueueId) {
    let b = f.create().await;
    let id = config.id.clone();
    ok(
        b.create_queue(config).await,
        "create_queue on a fresh backend",
    );
    (b, id)
}

/// `n` items with payloads `"{tag}-{i}"`.
fn items(n: usize, tag: &str) -> Vec<NewItem> {
    (0..n)
        .map(|i| NewItem::new(format!("{tag}-{i}").into_bytes()))
        .collect()
}

async fn push_n<B: Backend>(b: &B, q: &QueueId, n: usize, now: Timestamp) -> Vec<Key> {
    ok(b.push(q, items(n, "item"), now).await, "push")
}

async fn all<B: Backend>(b: &B, q: &QueueId) -> Vec<Item> {
    ok(
        read_all(b, q).await,
        "reading the whole queue with fetch pages",
    )
}

async fn get<B: Backend>(b: &B, q: &QueueId, key: Key) -> Option<Item> {
    ok(b.fetch(q, &Selector::Key(key)).await, "fetch by key")
        .into_iter()
        .next()
}

async fn must_get<B: Backend>(b: &B, q: &QueueId, key: Key) -> Item {
    match get(b, q, key).await {
        Some(item) => item,
        None => panic!("item {key} of {q} should exist but fetch returned nothing"),
    }
}

/// The in-flight item `key` (claimed at `T0`), whose entry of an `update_many` failed, is
/// as it was.
async fn failed_entry_changed_nothing<B: Backend>(b: &B, q: &QueueId, key: Key) {
    let untouched = must_get(b, q, key).await;
    assert_eq!(
        (untouched.phase.clone(), untouched.updated_at),
        (Phase::IN_FLIGHT, T0),
        "a failed entry changes nothing"
    );
}

/// Checks that `count` equals a recount of what `fetch` returns.
async fn check_counts<B: Backend>(b: &B, q: &QueueId, after: &str) {
    let items = all(b, q).await;
    let counts = ok(b.count(q).await, "count");
    assert_eq!(
        counts,
        tally(&items),
        "after {after}: count() disagrees with the items fetch returns"
    );
}

/// Each entry's result of an `update_many`: `"ok"` or its error's code.
fn entry_codes(results: &[crate::Result<()>]) -> Vec<&'static str> {
    results
        .iter()
        .map(|r| r.as_ref().map_or_else(Error::code, |()| "ok"))
        .collect()
}

fn claim(owner: &str, limit: usize, until: Timestamp) -> Claim {
    Claim {
        owner: owner.to_owned(),
        limit,
        lease_until: until,
        durable: true,
    }
}

fn move_to(p: Phase) -> Action {
    Action::Move(Move {
        phase: p,
        not_before: None,
        error: None,
        metadata: None,
    })
}

fn plain(action: Action) -> Transition {
    Transition {
        expect: Expect::default(),
        action,
    }
}

fn only_if(expected: Phase, action: Action) -> Transition {
    Transition {
        expect: Expect {
            phase: Some(expected),
            lease_owner: None,
        },
        action,
    }
}

fn leased(owner: &str, action: Action) -> Transition {
    Transition {
        expect: Expect {
            phase: Some(Phase::IN_FLIGHT),
            lease_owner: Some(owner.to_owned()),
        },
        action,
    }
}

fn keys(items: &[Item]) -> Vec<Key> {
    items.iter().map(|i| i.key).collect()
}

fn counts(pairs: &[(&Phase, u64)]) -> PhaseCounts {
    let mut c = PhaseCounts::default();
    for (p, n) in pairs {
        c.add(p, *n);
    }
    c
}

/// A `Store` over `b` with a manual clock at [`T0`].
fn store<B: Backend>(b: B) -> (Store<B>, ManualClock) {
    let clock = ManualClock::new(T0);
    (Store::new(b).with_clock(clock.clone()), clock)
}
