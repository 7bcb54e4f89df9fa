//! The conformance properties: one `pub async fn` per rule of the `Backend` contract, each
//! building its own backend from a [`Factory`] and panicking with a clear message on failure.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::Factory;
use super::model::{read_all, select, tally};

mod retention;
use crate::{
    Action, Backend, Claim, DUMP_PAGE, Error, Expect, Item, Key, Lease, ManualClock, Move, NewItem,
    Page, Phase, PhaseCounts, QueueConfig, QueueId, Retention, Selector, Store, SweepReport,
    Timestamp, Transition,
};
pub use retention::*;

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

// After the macro, so that it can use it.
mod settling;
pub use settling::*;

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

// ---- queues -----------------------------------------------------------------------------

/// `create_queue` stores every setting as given, and `get_queue` returns it; unknown ids give `None`.
pub async fn create_queue_stores_config_as_given<F: Factory>(f: &F) {
    let b = f.create().await;
    let full = config("orders")
        .with_metadata("secret", "whsec_test")
        .with_ttl(Duration::from_millis(1_234))
        .with_retention(Retention::Remove)
        .with_metadata("team", "payments")
        .with_metadata("region", "eu");
    ok(b.create_queue(full.clone()).await, "create_queue");
    assert_eq!(
        ok(b.get_queue(&full.id).await, "get_queue"),
        Some(full.clone()),
        "get_queue must return the settings exactly as created"
    );
    assert_eq!(
        ok(b.get_queue(&qid("missing")).await, "get_queue"),
        None,
        "get_queue of an unknown id must be Ok(None)"
    );
    assert_eq!(
        ok(b.count(&full.id).await, "count"),
        PhaseCounts::default(),
        "a new queue must be empty"
    );
}

/// `create_queue` with a taken id is `QueueExists` and leaves the first queue untouched.
pub async fn create_existing_queue_is_queue_exists<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders").with_metadata("v", "1")).await;
    push_n(&b, &q, 2, T0).await;
    assert_err!(
        b.create_queue(config("orders").with_metadata("v", "2"))
            .await,
        Error::QueueExists(_),
        "create_queue twice"
    );
    let stored = ok(b.get_queue(&q).await, "get_queue");
    assert_eq!(
        stored.map(|c| c.metadata.get("v").cloned()),
        Some(Some("1".to_owned())),
        "a refused create_queue must not change the existing settings"
    );
    assert_eq!(
        all(&b, &q).await.len(),
        2,
        "a refused create_queue must keep the items"
    );
}

/// `list_queues` returns every queue ordered by id, whatever the creation order.
pub async fn list_queues_is_sorted_by_id<F: Factory>(f: &F) {
    let b = f.create().await;
    assert!(
        ok(b.list_queues().await, "list_queues").is_empty(),
        "a fresh backend has no queues"
    );
    for name in ["m", "B", "a", "z9", "0x", "a.b", "a-b"] {
        ok(b.create_queue(config(name)).await, "create_queue");
    }
    let ids: Vec<String> = ok(b.list_queues().await, "list_queues")
        .into_iter()
        .map(|c| c.id.to_string())
        .collect();
    let mut expected: Vec<String> = ["m", "B", "a", "z9", "0x", "a.b", "a-b"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    expected.sort();
    assert_eq!(
        ids, expected,
        "list_queues must return every queue ordered by id"
    );
}

/// `update_queue` replaces the settings but keeps `created_at`, the items and the key counter.
pub async fn update_queue_keeps_created_at_items_and_keys<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    push_n(&b, &q, 3, T0).await;
    let mut new = config("orders")
        .with_ttl(Duration::from_mins(1))
        .with_retention(Retention::Remove)
        .with_metadata("owner", "ops");
    new.created_at = at(99_999);
    ok(b.update_queue(new.clone()).await, "update_queue");
    let stored = ok(b.get_queue(&q).await, "get_queue");
    let mut expected = new;
    expected.created_at = T0;
    assert_eq!(
        stored,
        Some(expected),
        "update_queue must store the new settings and keep the original created_at"
    );
    assert_eq!(
        keys(&all(&b, &q).await),
        vec![1, 2, 3],
        "update_queue must keep the items"
    );
    assert_eq!(
        push_n(&b, &q, 1, at(1)).await,
        vec![4],
        "update_queue must keep the key counter"
    );
    assert_err!(
        b.update_queue(config("missing")).await,
        Error::QueueNotFound(_),
        "update_queue of an unknown queue"
    );
    assert_eq!(
        ok(b.get_queue(&qid("missing")).await, "get_queue"),
        None,
        "update_queue must not create a queue"
    );
}

/// `delete_queue` removes the queue and its items (`true`), `false` when absent; a recreated
/// queue is empty and starts again at key 1; other queues are untouched.
pub async fn delete_queue_removes_it_and_its_items<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    let other = qid("other");
    ok(b.create_queue(config("other")).await, "create_queue");
    push_n(&b, &q, 3, T0).await;
    push_n(&b, &other, 2, T0).await;
    ok(b.claim(&q, claim("w", 1, at(1_000)), T0).await, "claim");
    assert!(
        ok(b.delete_queue(&q).await, "delete_queue"),
        "delete_queue of an existing queue must return true"
    );
    assert!(
        !ok(b.delete_queue(&q).await, "delete_queue"),
        "delete_queue of a deleted queue must return false"
    );
    assert_eq!(
        ok(b.get_queue(&q).await, "get_queue"),
        None,
        "a deleted queue must be gone"
    );
    assert_err!(
        b.count(&q).await,
        Error::QueueNotFound(_),
        "count of a deleted queue"
    );
    assert_err!(
        b.fetch(&q, &Selector::Page(Page::first(10))).await,
        Error::QueueNotFound(_),
        "fetch from a deleted queue"
    );
    ok(
        b.create_queue(config("orders")).await,
        "recreating a deleted queue",
    );
    assert!(
        all(&b, &q).await.is_empty(),
        "a recreated queue must not see the old items"
    );
    assert_eq!(
        ok(b.count(&q).await, "count"),
        PhaseCounts::default(),
        "a recreated queue must count zero"
    );
    assert_eq!(
        push_n(&b, &q, 1, at(1)).await,
        vec![1],
        "delete_queue forgets the key counter: a recreated queue starts at key 1"
    );
    assert_eq!(
        keys(&all(&b, &other).await),
        vec![1, 2],
        "deleting one queue must not touch another"
    );
}

/// Every item method on an unknown queue is `QueueNotFound`.
pub async fn unknown_queue_is_queue_not_found<F: Factory>(f: &F) {
    let b = f.create().await;
    let q = qid("nope");
    assert_err!(
        b.push(&q, items(1, "x"), T0).await,
        Error::QueueNotFound(_),
        "push"
    );
    assert_err!(
        b.push(&q, Vec::new(), T0).await,
        Error::QueueNotFound(_),
        "push of an empty batch"
    );
    assert_err!(
        b.fetch(&q, &Selector::Key(1)).await,
        Error::QueueNotFound(_),
        "fetch by key"
    );
    assert_err!(
        b.fetch(&q, &Selector::Page(Page::first(5))).await,
        Error::QueueNotFound(_),
        "fetch page"
    );
    assert_err!(
        b.pop(&q, &Selector::Key(1)).await,
        Error::QueueNotFound(_),
        "pop by key"
    );
    assert_err!(
        b.pop(&q, &Selector::Page(Page::first(5))).await,
        Error::QueueNotFound(_),
        "pop page"
    );
    assert_err!(b.count(&q).await, Error::QueueNotFound(_), "count");
    assert_err!(b.reset(&q).await, Error::QueueNotFound(_), "reset");
    assert_err!(
        b.update(&q, 1, plain(move_to(Phase::DONE)), T0).await,
        Error::QueueNotFound(_),
        "update"
    );
    assert_err!(
        b.claim(&q, claim("w", 1, at(10)), T0).await,
        Error::QueueNotFound(_),
        "claim"
    );
    assert_err!(b.sweep(&q, T0).await, Error::QueueNotFound(_), "sweep");
    assert_eq!(
        ok(b.list_queues().await, "list_queues"),
        Vec::new(),
        "no call may create the queue"
    );
}

// ---- push ---------------------------------------------------------------------------------

/// `push` assigns keys 1, 2, 3, … in push order; a batch gets consecutive keys in the order given.
pub async fn push_assigns_increasing_keys<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    assert_eq!(
        push_n(&b, &q, 1, T0).await,
        vec![1],
        "the first key of a queue is 1"
    );
    assert_eq!(push_n(&b, &q, 1, T0).await, vec![2], "keys increase by one");
    assert_eq!(
        push_n(&b, &q, 4, T0).await,
        vec![3, 4, 5, 6],
        "a batch gets consecutive keys"
    );
    let other = qid("other");
    ok(b.create_queue(config("other")).await, "create_queue");
    assert_eq!(
        push_n(&b, &other, 2, T0).await,
        vec![1, 2],
        "every queue has its own counter"
    );
    assert_eq!(
        push_n(&b, &q, 1, T0).await,
        vec![7],
        "another queue's pushes do not use this queue's keys"
    );
    let payloads: Vec<Vec<u8>> = all(&b, &q).await.into_iter().map(|i| i.payload).collect();
    let expected: Vec<Vec<u8>> = [
        "item-0", "item-0", "item-0", "item-1", "item-2", "item-3", "item-0",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    assert_eq!(
        payloads, expected,
        "items must be stored in key order with their payloads, batch order kept"
    );
}

/// `push` stores payload and metadata as given, in phase pending, created/updated now, due at
/// `not_before` or now, with no attempts, lease or error.
pub async fn push_sets_item_fields<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    let binary: Vec<u8> = (0..=255).collect();
    let batch = vec![
        NewItem::new(binary.clone())
            .with_metadata("event", "order.created")
            .with_metadata("delivery-id", "d1"),
        NewItem::new(Vec::new()).not_before(at(5_000)),
        NewItem::new(b"{\"id\":1}".to_vec()).not_before(Timestamp(1)),
    ];
    let now = at(7);
    let k = ok(b.push(&q, batch.clone(), now).await, "push");
    assert_eq!(k, vec![1, 2, 3]);
    let expected_nb = [now, at(5_000), Timestamp(1)];
    for ((key, new), nb) in k.iter().zip(&batch).zip(expected_nb) {
        let item = must_get(&b, &q, *key).await;
        let expected = Item {
            key: *key,
            payload: new.payload.clone(),
            phase: Phase::PENDING,
            attempts: 0,
            created_at: now,
            updated_at: now,
            not_before: nb,
            lease: None,
            last_error: None,
            metadata: new.metadata.clone(),
        };
        assert_eq!(item, expected, "item {key} as stored by push");
    }
    assert_eq!(
        ok(b.count(&q).await, "count"),
        counts(&[(&Phase::PENDING, 3)]),
        "pushed items are counted as pending"
    );
}

/// Concurrent batch pushes never share a key, and each batch keeps its order. A backend with
/// [`crate::Capabilities::gapless_keys`] must also give every batch consecutive keys (a batch
/// is one atomic step) and use exactly `1..=n`; one without it may interleave batches, but
/// every key must still hold the item pushed under it.
pub async fn push_batches_get_consecutive_keys_under_concurrency<F: Factory>(f: &F) {
    const TASKS: usize = 4;
    const BATCHES: usize = 8;
    const BATCH: usize = 5;
    let (b, q) = backend_with(f, config("orders")).await;
    let gapless = b.capabilities().gapless_keys;
    let b = Arc::new(b);
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let b = Arc::clone(&b);
        let q = q.clone();
        handles.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for n in 0..BATCHES {
                let tag = format!("t{t}-b{n}");
                got.push((tag.clone(), b.push(&q, items(BATCH, &tag), T0).await));
            }
            got
        }));
    }
    let mut seen = BTreeSet::new();
    for h in handles {
        let batches = match h.await {
            Ok(v) => v,
            Err(e) => panic!("a pushing task panicked: {e}"),
        };
        let mut last_of_task = 0;
        for (tag, r) in batches {
            let k = ok(r, "concurrent push");
            assert_eq!(k.len(), BATCH, "a batch of {BATCH} must get {BATCH} keys");
            if gapless {
                assert!(
                    k.windows(2).all(|w| w[1] == w[0] + 1),
                    "batch {tag} got non-consecutive keys {k:?}: another push interleaved"
                );
            } else {
                assert!(
                    k.windows(2).all(|w| w[1] > w[0]),
                    "batch {tag} got keys {k:?}: a batch's keys must increase in batch order"
                );
            }
            assert!(
                k[0] > last_of_task,
                "batch {tag} got keys {k:?}, not above the task's previous push ({last_of_task})"
            );
            last_of_task = k[BATCH - 1];
            for key in &k {
                assert!(seen.insert(*key), "key {key} was given twice");
            }
            for (i, key) in k.iter().enumerate() {
                let item = must_get(&*b, &q, *key).await;
                assert_eq!(
                    item.payload,
                    format!("{tag}-{i}").into_bytes(),
                    "key {key} must hold item {i} of batch {tag}"
                );
            }
        }
    }
    let total = TASKS * BATCHES * BATCH;
    if gapless {
        assert_eq!(
            seen,
            (1..=total as u64).collect(),
            "keys must be exactly 1..={total}"
        );
    } else {
        assert_eq!(seen.len(), total, "every pushed item must have its own key");
        assert!(!seen.contains(&0), "keys start at 1");
    }
    check_counts(&*b, &q, "concurrent pushes").await;
}

/// Keys are never reused: not after pop of the head or the newest, removal, reset or reopen.
pub async fn keys_are_never_reused<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    push_n(&b, &q, 5, T0).await;
    let head = ok(b.pop(&q, &Selector::Page(Page::first(1))).await, "pop head");
    assert_eq!(keys(&head), vec![1]);
    let newest = ok(
        b.pop(&q, &Selector::Page(Page::first(1).reverse())).await,
        "pop newest",
    );
    assert_eq!(keys(&newest), vec![5]);
    assert_eq!(
        push_n(&b, &q, 1, T0).await,
        vec![6],
        "after popping the newest key"
    );
    ok(
        b.update(&q, 6, plain(Action::Remove), T0).await,
        "update Remove",
    );
    assert_eq!(
        push_n(&b, &q, 1, T0).await,
        vec![7],
        "after removing the newest key"
    );
    ok(b.pop(&q, &Selector::Key(7)).await, "pop by key");
    assert_eq!(push_n(&b, &q, 1, T0).await, vec![8], "after popping by key");
    ok(b.reset(&q).await, "reset");
    assert_eq!(push_n(&b, &q, 1, T0).await, vec![9], "after reset");
    ok(b.reset(&q).await, "reset");
    let b = f.reopen(b).await;
    assert_eq!(
        push_n(&b, &q, 2, T0).await,
        vec![10, 11],
        "after reset and reopen"
    );
}

// ---- fetch --------------------------------------------------------------------------------

/// `fetch` by key returns that item whatever its phase, and nothing for a missing key.
pub async fn fetch_by_key<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    push_n(&b, &q, 3, T0).await;
    ok(
        b.update(&q, 2, plain(move_to(Phase::DEAD)), T0).await,
        "update",
    );
    let got = ok(b.fetch(&q, &Selector::Key(2)).await, "fetch key 2");
    assert_eq!(
        keys(&got),
        vec![2],
        "fetch by key returns exactly that item"
    );
    assert_eq!(got[0].phase, Phase::DEAD, "fetch by key ignores the phase");
    assert_eq!(got[0].payload, b"item-1".to_vec());
    for missing in [0, 4, 1_000, Key::MAX] {
        assert!(
            ok(b.fetch(&q, &Selector::Key(missing)).await, "fetch").is_empty(),
            "fetch of missing key {missing} must be empty, not an error"
        );
    }
}

/// Pages select by phase, cursor (`after`), offset, limit and direction exactly as documented on `Page`.
pub async fn fetch_pages_select_phase_cursor_offset_limit_reverse<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    push_n(&b, &q, 12, T0).await;
    let review = phase("review");
    for k in [2, 4, 6, 9] {
        ok(
            b.update(&q, k, plain(move_to(review.clone())), T0).await,
            "update",
        );
    }
    for k in [3, 12] {
        ok(
            b.update(&q, k, plain(move_to(Phase::DONE)), T0).await,
            "update",
        );
    }
    ok(b.pop(&q, &Selector::Key(7)).await, "pop");
    let everything = all(&b, &q).await;
    assert_eq!(everything.len(), 11);
    let phases = [
        None,
        Some(Phase::PENDING),
        Some(review),
        Some(Phase::DONE),
        Some(Phase::DEAD),
    ];
    for p in &phases {
        for after in [None, Some(0), Some(4), Some(7), Some(12), Some(13)] {
            for offset in [0, 1, 3, 20] {
                for limit in [0, 1, 2, 100] {
                    for reverse in [false, true] {
                        let page = Page {
                            phase: p.clone(),
                            after,
                            offset,
                            limit,
                            reverse,
                        };
                        let sel = Selector::Page(page.clone());
                        let got = ok(b.fetch(&q, &sel).await, "fetch page");
                        let expected = select(&everything, &sel);
                        assert_eq!(
                            keys(&got),
                            keys(&expected),
                            "fetch of {page:?} returned the wrong keys"
                        );
                        assert_eq!(got, expected, "fetch of {page:?} returned the wrong items");
                    }
                }
            }
        }
    }
}

/// `fetch` changes nothing: items and counts are the same before and after any fetch.
pub async fn fetch_changes_nothing<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders").with_ttl(Duration::from_millis(10))).await;
    push_n(&b, &q, 4, T0).await;
    ok(b.claim(&q, claim("w", 1, at(5)), T0).await, "claim");
    let before = all(&b, &q).await;
    let counts_before = ok(b.count(&q).await, "count");
    // Even long after the lease and the TTL have run out, a fetch must not sweep.
    for sel in [
        Selector::Key(1),
        Selector::Key(2),
        Selector::Page(Page::first(10)),
        Selector::Page(Page::first(10).phase(Phase::IN_FLIGHT)),
        Selector::Page(Page::first(2).reverse().offset(1)),
    ] {
        ok(b.fetch(&q, &sel).await, "fetch");
    }
    assert_eq!(all(&b, &q).await, before, "fetch must not change any item");
    assert_eq!(
        ok(b.count(&q).await, "count"),
        counts_before,
        "fetch must not change the counts"
    );
}

// ---- pop ----------------------------------------------------------------------------------

/// `pop` removes exactly what `fetch` with the same selector returns, and nothing else.
pub async fn pop_removes_exactly_what_it_returns<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    push_n(&b, &q, 14, T0).await;
    let review = phase("review");
    for k in [2, 5, 8, 11] {
        ok(
            b.update(&q, k, plain(move_to(review.clone())), T0).await,
            "update",
        );
    }
    ok(b.claim(&q, claim("w", 2, at(100)), T0).await, "claim");
    let selectors = [
        Selector::Key(3),
        Selector::Key(99),
        Selector::Page(Page::first(2).phase(review.clone()).offset(1)),
        Selector::Page(Page::first(2).reverse()),
        Selector::Page(Page::first(1).after(5)),
        Selector::Page(Page::first(3).phase(Phase::PENDING).reverse().after(10)),
        Selector::Page(Page::first(0)),
        Selector::Page(Page::first(5).phase(Phase::IN_FLIGHT)),
        Selector::Page(Page::first(100)),
    ];
    for sel in selectors {
        let before = all(&b, &q).await;
        let fetched = ok(b.fetch(&q, &sel).await, "fetch");
        let popped = ok(b.pop(&q, &sel).await, "pop");
        assert_eq!(
            popped, fetched,
            "pop of {sel:?} must return what fetch returned"
        );
        let after = all(&b, &q).await;
        let expected: Vec<Item> = before
            .into_iter()
            .filter(|i| !popped.iter().any(|p| p.key == i.key))
            .collect();
        assert_eq!(
            after, expected,
            "pop of {sel:?} must remove exactly the items it returned"
        );
        check_counts(&b, &q, &format!("pop of {sel:?}")).await;
    }
    assert!(all(&b, &q).await.is_empty(), "the last pop took everything");
}

/// Concurrent pops of the head never hand out the same item twice and lose none.
pub async fn concurrent_pops_never_return_an_item_twice<F: Factory>(f: &F) {
    const ITEMS: usize = 60;
    let (b, q) = backend_with(f, config("orders")).await;
    push_n(&b, &q, ITEMS, T0).await;
    let b = Arc::new(b);
    let mut handles = Vec::new();
    for _ in 0..4 {
        let b = Arc::clone(&b);
        let q = q.clone();
        handles.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                match b.pop(&q, &Selector::Page(Page::first(1))).await {
                    Ok(items) if items.is_empty() => return Ok(got),
                    Ok(items) => got.extend(items.into_iter().map(|i| i.key)),
                    Err(e) => return Err(e),
                }
            }
        }));
    }
    let mut popped = Vec::new();
    for h in handles {
        match h.await {
            Ok(r) => popped.extend(ok(r, "concurrent pop")),
            Err(e) => panic!("a popping task panicked: {e}"),
        }
    }
    popped.sort_unstable();
    let expected: Vec<Key> = (1..=ITEMS as u64).collect();
    assert_eq!(popped, expected, "every item must be popped exactly once");
    assert_eq!(ok(b.count(&q).await, "count"), PhaseCounts::default());
}

// ---- count ----------------------------------------------------------------------------------

/// `count` by phase equals a recount of the queue's items after every kind of change.
pub async fn count_matches_contents_after_every_change<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders").with_ttl(Duration::from_secs(1))).await;
    let review = phase("review");
    check_counts(&b, &q, "create").await;
    push_n(&b, &q, 8, T0).await;
    check_counts(&b, &q, "push").await;
    ok(b.claim(&q, claim("w1", 3, at(100)), T0).await, "claim");
    check_counts(&b, &q, "claim").await;
    ok(
        b.update(&q, 1, leased("w1", move_to(Phase::DONE)), at(1))
            .await,
        "ack",
    );
    check_counts(&b, &q, "ack").await;
    let nack = Action::Move(Move {
        phase: Phase::PENDING,
        not_before: Some(at(50)),
        error: Some("boom".to_owned()),
        metadata: None,
    });
    ok(b.update(&q, 2, leased("w1", nack), at(2)).await, "nack");
    check_counts(&b, &q, "nack").await;
    ok(
        b.update(&q, 3, leased("w1", move_to(Phase::DEAD)), at(3))
            .await,
        "kill",
    );
    check_counts(&b, &q, "kill").await;
    ok(
        b.update(&q, 4, plain(move_to(review.clone())), at(4)).await,
        "update_phase",
    );
    check_counts(&b, &q, "update to a custom phase").await;
    ok(
        b.update(&q, 4, only_if(review, move_to(Phase::PENDING)), at(5))
            .await,
        "update_phase_if",
    );
    check_counts(&b, &q, "compare-and-set back to pending").await;
    ok(
        b.update(&q, 5, plain(Action::Remove), at(6)).await,
        "remove",
    );
    check_counts(&b, &q, "update Remove").await;
    ok(b.claim(&q, claim("w2", 2, at(200)), at(60)).await, "claim");
    check_counts(&b, &q, "second claim").await;
    ok(b.sweep(&q, at(200)).await, "sweep");
    check_counts(&b, &q, "sweep releasing leases").await;
    ok(b.pop(&q, &Selector::Key(6)).await, "pop key");
    check_counts(&b, &q, "pop by key").await;
    ok(
        b.pop(&q, &Selector::Page(Page::first(1).phase(Phase::PENDING)))
            .await,
        "pop head",
    );
    check_counts(&b, &q, "pop of the head").await;
    ok(b.sweep(&q, at(1_000)).await, "sweep");
    check_counts(&b, &q, "sweep expiring items").await;
    assert!(
        ok(b.count(&q).await, "count").get(&Phase::EXPIRED) > 0,
        "the TTL sweep should have expired some items"
    );
    push_n(&b, &q, 3, at(1_001)).await;
    ok(b.reset(&q).await, "reset");
    check_counts(&b, &q, "reset").await;
    assert_eq!(
        ok(b.count(&q).await, "count"),
        PhaseCounts::default(),
        "reset leaves nothing to count"
    );
    ok(b.sync().await, "sync");
}

// ---- reset ----------------------------------------------------------------------------------

/// `reset` removes every item, returns how many, and keeps the key counter.
pub async fn reset_removes_items_and_keeps_the_key_counter<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    push_n(&b, &q, 5, T0).await;
    ok(b.claim(&q, claim("w", 2, at(100)), T0).await, "claim");
    ok(
        b.update(&q, 5, plain(move_to(phase("parked"))), T0).await,
        "update",
    );
    assert_eq!(
        ok(b.reset(&q).await, "reset"),
        5,
        "reset returns how many items it removed"
    );
    assert!(
        all(&b, &q).await.is_empty(),
        "reset removes every item, whatever its phase"
    );
    assert_eq!(ok(b.count(&q).await, "count"), PhaseCounts::default());
    assert_eq!(
        ok(b.reset(&q).await, "reset"),
        0,
        "reset of an empty queue removes 0"
    );
    assert_eq!(
        push_n(&b, &q, 1, T0).await,
        vec![6],
        "reset keeps the key counter"
    );
    assert!(
        ok(
            b.claim(&q, claim("w", 10, at(1_000)), at(500)).await,
            "claim"
        )
        .len()
            == 1,
        "after reset only the new item can be claimed (old leases are gone)"
    );
}

// ---- update ---------------------------------------------------------------------------------

/// `update` with `metadata` replaces the item's whole metadata map, atomically with the phase
/// change (and survives a reopen); without it the metadata is kept. Staying in the same phase
/// is allowed.
pub async fn update_replaces_metadata_when_given<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    let pushed = NewItem::new(b"x".to_vec())
        .with_metadata("event", "order.paid")
        .with_metadata("keep", "no");
    ok(b.push(&q, vec![pushed], T0).await, "push");
    let kept = ok(
        b.update(&q, 1, plain(move_to(phase("parked"))), at(1))
            .await,
        "move without metadata",
    );
    assert_eq!(kept.metadata.get("keep").map(String::as_str), Some("no"));
    let new_meta = std::collections::BTreeMap::from([("attempt.1".to_owned(), "503".to_owned())]);
    let same_phase = Action::Move(Move::to(phase("parked")).metadata(new_meta.clone()));
    let replaced = ok(
        b.update(&q, 1, plain(same_phase), at(2)).await,
        "metadata in the same phase",
    );
    assert_eq!(
        replaced.metadata, new_meta,
        "metadata is replaced, not merged"
    );
    assert_eq!(replaced.phase, phase("parked"));
    assert_eq!(
        replaced,
        must_get(&b, &q, 1).await,
        "update returns what is stored"
    );
    assert_eq!(
        ok(b.count(&q).await, "count"),
        counts(&[(&phase("parked"), 1)]),
        "staying in a phase does not change the counts"
    );
    let b = f.reopen(b).await;
    if f.durable() {
        assert_eq!(
            must_get(&b, &q, 1).await.metadata,
            new_meta,
            "metadata survives reopen"
        );
    }
}

/// `update` moves an item into a custom phase (counted and listed there) and back to pending,
/// which makes it due at the given time or now; `error` replaces `last_error`; leaving
/// `in_flight` drops the lease.
pub async fn update_moves_to_custom_phase_and_back<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    push_n(&b, &q, 2, T0).await;
    let review = phase("needs-review");
    let to_review = Action::Move(Move {
        phase: review.clone(),
        not_before: None,
        error: Some("a human should look".to_owned()),
        metadata: None,
    });
    let moved = ok(
        b.update(&q, 1, plain(to_review), at(10)).await,
        "update to custom phase",
    );
    assert_eq!(moved.phase, review);
    assert_eq!(moved.updated_at, at(10), "update sets updated_at = now");
    assert_eq!(moved.created_at, T0, "update keeps created_at");
    assert_eq!(moved.last_error.as_deref(), Some("a human should look"));
    assert_eq!(
        moved,
        must_get(&b, &q, 1).await,
        "update returns the item as stored"
    );
    assert_eq!(
        ok(b.count(&q).await, "count"),
        counts(&[(&review, 1), (&Phase::PENDING, 1)]),
        "a custom phase is counted"
    );
    let listed = ok(
        b.fetch(&q, &Selector::Page(Page::first(10).phase(review.clone())))
            .await,
        "fetch",
    );
    assert_eq!(keys(&listed), vec![1], "a custom phase is listed");

    let back = ok(
        b.update(&q, 1, plain(move_to(Phase::PENDING)), at(20))
            .await,
        "back to pending",
    );
    assert_eq!(back.phase, Phase::PENDING);
    assert_eq!(
        back.not_before,
        at(20),
        "entering pending without a time makes the item due now"
    );
    assert_eq!(
        back.last_error.as_deref(),
        Some("a human should look"),
        "a move without an error keeps last_error"
    );
    let later = Action::Move(Move {
        phase: Phase::PENDING,
        not_before: Some(at(500)),
        error: None,
        metadata: None,
    });
    let back = ok(b.update(&q, 1, plain(later), at(30)).await, "pending again");
    assert_eq!(
        back.not_before,
        at(500),
        "entering pending with a time makes it due then"
    );
    assert!(
        ok(
            b.claim(&q, claim("w", 10, at(1_000)), at(499)).await,
            "claim"
        )
        .iter()
        .all(|i| i.key != 1),
        "an item due later must not be claimed before then"
    );

    // Key 2 is in flight now: a plain move out of in_flight drops the lease.
    let parked = ok(
        b.update(&q, 2, plain(move_to(phase("parked"))), at(40))
            .await,
        "update",
    );
    assert_eq!(parked.lease, None, "leaving in_flight drops the lease");
    assert_eq!(parked.phase, phase("parked"));
    check_counts(&b, &q, "moves between phases").await;
}

/// A compare-and-set `update` whose expected phase is wrong is `PhaseConflict` and changes nothing.
pub async fn update_compare_and_set_conflict_changes_nothing<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    push_n(&b, &q, 1, T0).await;
    let before = must_get(&b, &q, 1).await;
    for action in [move_to(Phase::DEAD), Action::Remove] {
        match b.update(&q, 1, only_if(Phase::DONE, action), at(5)).await {
            Err(Error::PhaseConflict {
                key,
                expected,
                actual,
            }) => {
                assert_eq!(
                    (key, expected, actual),
                    (1, Phase::DONE, Phase::PENDING),
                    "PhaseConflict fields"
                );
            }
            other => panic!(
                "compare-and-set from the wrong phase: expected PhaseConflict, got {other:?}"
            ),
        }
        assert_eq!(
            must_get(&b, &q, 1).await,
            before,
            "a failed compare-and-set must change nothing"
        );
    }
    let moved = ok(
        b.update(&q, 1, only_if(Phase::PENDING, move_to(Phase::DEAD)), at(6))
            .await,
        "cas",
    );
    assert_eq!(
        moved.phase,
        Phase::DEAD,
        "compare-and-set from the right phase applies"
    );
    check_counts(&b, &q, "compare-and-set").await;
}

/// Moving an item into `in_flight` with `update` is `InvalidInput` and changes nothing.
pub async fn update_into_in_flight_is_refused<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    push_n(&b, &q, 1, T0).await;
    let before = must_get(&b, &q, 1).await;
    assert_err!(
        b.update(&q, 1, plain(move_to(Phase::IN_FLIGHT)), at(1))
            .await,
        Error::InvalidInput(_),
        "update into in_flight"
    );
    assert_err!(
        b.update(
            &q,
            1,
            only_if(Phase::PENDING, move_to(Phase::IN_FLIGHT)),
            at(1)
        )
        .await,
        Error::InvalidInput(_),
        "compare-and-set into in_flight"
    );
    assert_eq!(
        must_get(&b, &q, 1).await,
        before,
        "a refused move must change nothing"
    );
    check_counts(&b, &q, "refused moves").await;
}

/// `update` of a missing key (never pushed, or already removed) is `ItemNotFound`.
pub async fn update_missing_item_is_item_not_found<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    push_n(&b, &q, 2, T0).await;
    ok(b.pop(&q, &Selector::Key(2)).await, "pop");
    for key in [0, 2, 3, 42] {
        match b.update(&q, key, plain(move_to(Phase::DONE)), T0).await {
            Err(Error::ItemNotFound { queue, key: k }) => {
                assert_eq!((queue, k), (q.clone(), key), "ItemNotFound fields");
            }
            other => panic!("update of missing key {key}: expected ItemNotFound, got {other:?}"),
        }
    }
    assert_eq!(
        keys(&all(&b, &q).await),
        vec![1],
        "a failed update must not create an item"
    );
}

/// `update` with `Action::Remove` returns the item as it was and removes it.
pub async fn update_remove_returns_the_item_and_removes_it<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    push_n(&b, &q, 3, T0).await;
    let before = must_get(&b, &q, 2).await;
    let removed = ok(
        b.update(&q, 2, plain(Action::Remove), at(9)).await,
        "remove",
    );
    assert_eq!(removed.key, 2);
    assert_eq!(
        removed.payload, before.payload,
        "Remove returns the removed item"
    );
    assert_eq!(removed.phase, before.phase);
    assert_eq!(get(&b, &q, 2).await, None, "a removed item is gone");
    assert_eq!(keys(&all(&b, &q).await), vec![1, 3]);
    check_counts(&b, &q, "update Remove").await;
}

// ---- claim ----------------------------------------------------------------------------------

/// `claim` hands out due items in `(not_before, key)` order.
pub async fn claim_orders_by_not_before_then_key<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    let batch = vec![
        NewItem::new(b"a".to_vec()).not_before(at(30)),
        NewItem::new(b"b".to_vec()).not_before(at(10)),
        NewItem::new(b"c".to_vec()),
        NewItem::new(b"d".to_vec()).not_before(at(10)),
        NewItem::new(b"e".to_vec()).not_before(at(50)),
        NewItem::new(b"f".to_vec()).not_before(Timestamp(5)),
    ];
    ok(b.push(&q, batch, T0).await, "push");
    let got = ok(
        b.claim(&q, claim("w", 10, at(1_000)), at(40)).await,
        "claim",
    );
    assert_eq!(
        keys(&got),
        vec![6, 3, 2, 4, 1],
        "claim order must be (not_before, key); key 5 is not due"
    );
    let got = ok(
        b.claim(&q, claim("w", 10, at(1_000)), at(50)).await,
        "claim",
    );
    assert_eq!(keys(&got), vec![5], "an item is due when not_before == now");
}

/// `claim` takes at most `limit` items and never one whose `not_before` is in the future.
pub async fn claim_respects_limit_and_not_before<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    push_n(&b, &q, 5, T0).await;
    let later = vec![
        NewItem::new(b"later-1".to_vec()).not_before(at(1_000)),
        NewItem::new(b"later-2".to_vec()).not_before(at(1_000)),
    ];
    ok(b.push(&q, later, T0).await, "push");
    let c = |limit| claim("w", limit, at(10_000));
    assert_eq!(
        keys(&ok(b.claim(&q, c(2), T0).await, "claim")),
        vec![1, 2],
        "limit 2"
    );
    assert!(
        ok(b.claim(&q, c(0), T0).await, "claim").is_empty(),
        "limit 0 claims nothing"
    );
    assert_eq!(
        keys(&ok(b.claim(&q, c(10), at(999)).await, "claim")),
        vec![3, 4, 5],
        "only due items"
    );
    assert!(
        ok(b.claim(&q, c(10), at(999)).await, "claim").is_empty(),
        "nothing due is left"
    );
    assert_eq!(
        keys(&ok(b.claim(&q, c(10), at(1_000)).await, "claim")),
        vec![6, 7],
        "due at not_before"
    );
    check_counts(&b, &q, "claims").await;
}

/// `claim` moves items to `in_flight` with the lease given, `attempts + 1` and `updated_at = now`.
pub async fn claim_sets_lease_and_counts_the_attempt<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    push_n(&b, &q, 3, T0).await;
    let got = ok(
        b.claim(&q, claim("worker-7", 2, at(30_000)), at(5)).await,
        "claim",
    );
    assert_eq!(keys(&got), vec![1, 2]);
    for item in &got {
        assert_eq!(item.phase, Phase::IN_FLIGHT, "a claimed item is in flight");
        assert_eq!(
            item.lease,
            Some(Lease {
                owner: "worker-7".to_owned(),
                until: at(30_000)
            }),
            "a claimed item carries the lease"
        );
        assert_eq!(item.attempts, 1, "claim counts an attempt");
        assert_eq!(item.updated_at, at(5), "claim sets updated_at = now");
        assert_eq!(item.created_at, T0, "claim keeps created_at");
        assert_eq!(
            *item,
            must_get(&b, &q, item.key).await,
            "claim returns the items as stored"
        );
    }
    assert_eq!(
        must_get(&b, &q, 3).await.lease,
        None,
        "an unclaimed item has no lease"
    );
    assert_eq!(
        ok(b.count(&q).await, "count"),
        counts(&[(&Phase::IN_FLIGHT, 2), (&Phase::PENDING, 1)])
    );
}

/// `claim` takes only pending items: never done, dead, expired, custom-phase or in-flight ones.
pub async fn claim_takes_only_pending_items<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    push_n(&b, &q, 6, T0).await;
    for (k, p) in [
        (1, Phase::DONE),
        (2, Phase::DEAD),
        (3, Phase::EXPIRED),
        (4, phase("parked")),
    ] {
        ok(b.update(&q, k, plain(move_to(p)), T0).await, "update");
    }
    assert_eq!(
        keys(&ok(b.claim(&q, claim("w", 1, at(100)), T0).await, "claim")),
        vec![5]
    );
    assert_eq!(
        keys(&ok(
            b.claim(&q, claim("w", 10, at(100)), at(1)).await,
            "claim"
        )),
        vec![6],
        "an in-flight item with a live lease is not claimed again"
    );
    assert!(ok(b.claim(&q, claim("w", 10, at(100)), at(2)).await, "claim").is_empty());
}

/// Concurrent claims never lease one item to two consumers, and lose none.
pub async fn concurrent_claims_never_share_an_item<F: Factory>(f: &F) {
    const ITEMS: usize = 50;
    let (b, q) = backend_with(f, config("orders")).await;
    push_n(&b, &q, ITEMS, T0).await;
    let b = Arc::new(b);
    let mut handles = Vec::new();
    for w in 0..5 {
        let b = Arc::clone(&b);
        let q = q.clone();
        handles.push(tokio::spawn(async move {
            let owner = format!("w{w}");
            let mut got = Vec::new();
            loop {
                match b.claim(&q, claim(&owner, 3, at(60_000)), at(1)).await {
                    Ok(items) if items.is_empty() => return Ok((owner, got)),
                    Ok(items) => got.extend(items.into_iter().map(|i| i.key)),
                    Err(e) => return Err(e),
                }
            }
        }));
    }
    let mut claimed = Vec::new();
    for h in handles {
        let (owner, got) = match h.await {
            Ok(r) => ok(r, "concurrent claim"),
            Err(e) => panic!("a claiming task panicked: {e}"),
        };
        for key in &got {
            let item = must_get(&*b, &q, *key).await;
            assert_eq!(
                item.lease.map(|l| l.owner),
                Some(owner.clone()),
                "item {key} must be leased to {owner}, who claimed it"
            );
            assert_eq!(item.attempts, 1, "item {key} was claimed more than once");
        }
        claimed.extend(got);
    }
    claimed.sort_unstable();
    let expected: Vec<Key> = (1..=ITEMS as u64).collect();
    assert_eq!(claimed, expected, "every item must be claimed exactly once");
}

// ---- lease expiry ---------------------------------------------------------------------------

/// `claim` first returns items with expired leases to pending, attempts kept, then may hand them out again.
pub async fn expired_lease_returns_to_pending_on_claim<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    push_n(&b, &q, 2, T0).await;
    ok(b.claim(&q, claim("w1", 1, at(100)), T0).await, "claim");
    ok(
        b.update(&q, 2, plain(move_to(phase("parked"))), T0).await,
        "park key 2",
    );
    assert!(
        ok(b.claim(&q, claim("w2", 5, at(900)), at(99)).await, "claim").is_empty(),
        "a live lease is not taken over"
    );
    assert_eq!(
        must_get(&b, &q, 1).await.lease.map(|l| l.owner),
        Some("w1".to_owned())
    );
    let got = ok(b.claim(&q, claim("w2", 5, at(900)), at(150)).await, "claim");
    assert_eq!(
        keys(&got),
        vec![1],
        "the expired item is released and claimed again"
    );
    let item = &got[0];
    assert_eq!(
        item.attempts, 2,
        "release keeps the attempt; the new claim adds one"
    );
    assert_eq!(
        item.lease,
        Some(Lease {
            owner: "w2".to_owned(),
            until: at(900)
        })
    );
    assert_eq!(item.updated_at, at(150));
    check_counts(&b, &q, "claim after lease expiry").await;
}

/// `sweep` returns in-flight items whose lease ran out (`until <= now`) to pending, due now,
/// with the lease cleared and attempts unchanged, and reports how many.
pub async fn expired_lease_returns_to_pending_on_sweep<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    push_n(&b, &q, 3, T0).await;
    ok(b.claim(&q, claim("w1", 2, at(100)), T0).await, "claim");
    ok(b.claim(&q, claim("w2", 1, at(200)), at(1)).await, "claim");
    let none = ok(b.sweep(&q, at(99)).await, "sweep");
    assert_eq!(
        none,
        SweepReport::default(),
        "nothing has expired before until"
    );
    let report = ok(b.sweep(&q, at(100)).await, "sweep");
    assert_eq!(
        report,
        SweepReport {
            released: 2,
            expired: 0
        },
        "two leases ran out at until == now"
    );
    for key in [1, 2] {
        let item = must_get(&b, &q, key).await;
        assert_eq!(item.phase, Phase::PENDING, "item {key} is back in pending");
        assert_eq!(item.lease, None, "item {key} has no lease");
        assert_eq!(item.not_before, at(100), "item {key} is due at once");
        assert_eq!(item.updated_at, at(100));
        assert_eq!(item.attempts, 1, "release does not count another attempt");
    }
    assert_eq!(
        must_get(&b, &q, 3).await.phase,
        Phase::IN_FLIGHT,
        "a live lease stays"
    );
    assert_eq!(
        ok(b.sweep(&q, at(100)).await, "sweep"),
        SweepReport::default(),
        "a second sweep finds nothing"
    );
    assert_eq!(
        ok(b.count(&q).await, "count"),
        counts(&[(&Phase::PENDING, 2), (&Phase::IN_FLIGHT, 1)])
    );
}

// ---- TTL --------------------------------------------------------------------------------------

/// `sweep` moves pending items with `created_at + ttl <= now` to `expired` (counted there),
/// leaves other phases alone, and expires a released item past its TTL in the same sweep.
pub async fn ttl_moves_old_pending_items_to_expired<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders").with_ttl(Duration::from_secs(1))).await;
    push_n(&b, &q, 3, T0).await; // 1, 2, 3
    ok(
        b.push(
            &q,
            vec![NewItem::new(b"later".to_vec()).not_before(at(9_000))],
            T0,
        )
        .await,
        "push",
    ); // 4
    push_n(&b, &q, 1, at(500)).await; // 5
    ok(
        b.claim(&q, claim("w", 1, at(5_000)), T0).await,
        "claim key 1",
    );
    ok(
        b.update(&q, 2, plain(move_to(phase("parked"))), T0).await,
        "park key 2",
    );
    assert_eq!(
        ok(b.sweep(&q, at(999)).await, "sweep"),
        SweepReport::default(),
        "nothing is past its TTL yet"
    );
    let report = ok(b.sweep(&q, at(1_000)).await, "sweep");
    assert_eq!(
        report,
        SweepReport {
            released: 0,
            expired: 2
        },
        "keys 3 and 4 reach their TTL at created_at + ttl"
    );
    for key in [3, 4] {
        let item = must_get(&b, &q, key).await;
        assert_eq!(
            item.phase,
            Phase::EXPIRED,
            "item {key} expired (a future not_before does not protect it)"
        );
        assert_eq!(item.updated_at, at(1_000));
    }
    assert_eq!(
        must_get(&b, &q, 1).await.phase,
        Phase::IN_FLIGHT,
        "TTL does not touch in-flight items"
    );
    assert_eq!(
        must_get(&b, &q, 2).await.phase,
        phase("parked"),
        "TTL does not touch other phases"
    );
    assert_eq!(
        must_get(&b, &q, 5).await.phase,
        Phase::PENDING,
        "key 5 is younger"
    );
    let report = ok(b.sweep(&q, at(5_000)).await, "sweep");
    assert_eq!(
        report,
        SweepReport {
            released: 1,
            expired: 2
        },
        "the lease of key 1 runs out; it is past its TTL, so it expires too, as does key 5"
    );
    assert_eq!(must_get(&b, &q, 1).await.phase, Phase::EXPIRED);
    assert_eq!(
        must_get(&b, &q, 1).await.attempts,
        1,
        "expiry keeps the attempt count"
    );
    assert_eq!(
        ok(b.count(&q).await, "count"),
        counts(&[(&Phase::EXPIRED, 4), (&phase("parked"), 1)])
    );
}

/// `claim` never hands out a pending item past its TTL: it expires it first, even one moved
/// back to pending by hand.
pub async fn ttl_expired_items_are_never_claimed<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders").with_ttl(Duration::from_secs(1))).await;
    push_n(&b, &q, 2, T0).await;
    push_n(&b, &q, 1, at(600)).await;
    let got = ok(
        b.claim(&q, claim("w", 10, at(5_000)), at(1_000)).await,
        "claim",
    );
    assert_eq!(
        keys(&got),
        vec![3],
        "only the item within its TTL is claimed"
    );
    assert_eq!(
        ok(b.count(&q).await, "count"),
        counts(&[(&Phase::EXPIRED, 2), (&Phase::IN_FLIGHT, 1)]),
        "claim expired the old items on its way"
    );
    ok(
        b.update(&q, 1, plain(move_to(Phase::PENDING)), at(1_100))
            .await,
        "move back to pending",
    );
    assert!(
        ok(
            b.claim(&q, claim("w", 10, at(5_000)), at(1_100)).await,
            "claim"
        )
        .is_empty(),
        "an item past its TTL is never handed out, even after a move back to pending"
    );
    assert_eq!(must_get(&b, &q, 1).await.phase, Phase::EXPIRED);
}

// ---- time -------------------------------------------------------------------------------------

/// A clock that goes backwards only makes fewer things due: nothing is lost, duplicated or
/// miscounted, and claim order still follows `(not_before, key)`.
pub async fn time_going_backwards_breaks_nothing<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    push_n(&b, &q, 1, at(1_000)).await; // due at +1000
    assert!(
        ok(b.claim(&q, claim("w", 10, at(2_000)), T0).await, "claim").is_empty(),
        "after the clock went back, the item is not due yet"
    );
    assert_eq!(
        push_n(&b, &q, 1, T0).await,
        vec![2],
        "keys keep increasing when time goes back"
    );
    let got = ok(
        b.claim(&q, claim("w", 10, at(2_000)), at(1_000)).await,
        "claim",
    );
    assert_eq!(
        keys(&got),
        vec![2, 1],
        "claim order is by not_before, not by key, when the clock jumped"
    );
    assert_eq!(
        ok(b.sweep(&q, at(500)).await, "sweep"),
        SweepReport::default(),
        "no lease has run out at an earlier time"
    );
    let acked = ok(
        b.update(&q, 1, leased("w", move_to(Phase::DONE)), at(100))
            .await,
        "ack",
    );
    assert_eq!(
        acked.updated_at,
        at(100),
        "updated_at follows the clock, even backwards"
    );
    let report = ok(b.sweep(&q, at(2_000)).await, "sweep");
    assert_eq!(
        report.released, 1,
        "the other lease runs out when the clock comes back"
    );
    check_counts(&b, &q, "a clock going back and forth").await;

    let (b, q) = backend_with(f, config("ttl").with_ttl(Duration::from_secs(1))).await;
    push_n(&b, &q, 1, at(5_000)).await;
    assert_eq!(
        ok(b.sweep(&q, T0).await, "sweep"),
        SweepReport::default(),
        "nothing expires before it was created"
    );
    assert_eq!(must_get(&b, &q, 1).await.phase, Phase::PENDING);
}

/// The TTL rule (`created_at + ttl <= now` is never handed out) holds for an item pushed after
/// the clock went back, even behind younger items in key order.
pub async fn ttl_holds_when_the_clock_goes_backwards<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders").with_ttl(Duration::from_secs(1))).await;
    ok(
        b.push(
            &q,
            vec![NewItem::new(b"young".to_vec()).not_before(at(9_000))],
            at(5_000),
        )
        .await,
        "push",
    );
    push_n(&b, &q, 1, T0).await; // created at T0 after the clock went back: key 2, expires at +1000
    let got = ok(
        b.claim(&q, claim("w", 10, at(10_000)), at(1_500)).await,
        "claim",
    );
    assert!(
        got.is_empty(),
        "key 2 (created {T0}, TTL 1000 ms) is past its TTL at {}: claim must not hand it out, got {:?}",
        at(1_500),
        keys(&got)
    );
    assert_eq!(
        must_get(&b, &q, 2).await.phase,
        Phase::EXPIRED,
        "claim expires key 2"
    );
    assert_eq!(
        must_get(&b, &q, 1).await.phase,
        Phase::PENDING,
        "key 1 is young"
    );
}

// ---- durability -------------------------------------------------------------------------------

/// After `Factory::reopen`, everything is as it was: queue settings, deleted queues, items with
/// every field and phase, leases, counts and key counters. (Trivial for a non-durable factory,
/// whose `reopen` returns the same backend.)
#[allow(clippy::too_many_lines)] // one scenario reads best in one piece
pub async fn reopen_keeps_everything<F: Factory>(f: &F) {
    let b = f.create().await;
    let full = config("orders")
        .with_metadata("secret", "whsec_durable")
        .with_ttl(Duration::from_hours(1))
        .with_retention(Retention::Remove)
        .with_metadata("team", "payments");
    let other = config("other");
    ok(b.create_queue(full.clone()).await, "create_queue");
    ok(b.create_queue(other.clone()).await, "create_queue");
    ok(b.create_queue(config("gone")).await, "create_queue");
    let (q, o) = (full.id.clone(), other.id.clone());
    let batch = vec![
        NewItem::new(b"{\"id\":1}".to_vec()).with_metadata("event", "order.created"),
        NewItem::new(vec![0, 255, 1]),
        NewItem::new(b"three".to_vec()).not_before(at(7_000)),
        NewItem::new(b"four".to_vec()),
        NewItem::new(b"five".to_vec()),
        NewItem::new(b"six".to_vec()),
    ];
    ok(b.push(&q, batch, T0).await, "push");
    push_n(&b, &o, 3, T0).await;
    ok(
        b.claim(&q, claim("w1", 2, at(60_000)), at(1)).await,
        "claim",
    );
    let nack = Action::Move(Move {
        phase: Phase::PENDING,
        not_before: Some(at(2_000)),
        error: Some("timeout".to_owned()),
        metadata: None,
    });
    ok(b.update(&q, 2, leased("w1", nack), at(2)).await, "nack");
    ok(
        b.update(&q, 4, plain(move_to(phase("review"))), at(3))
            .await,
        "update",
    );
    ok(b.pop(&q, &Selector::Key(6)).await, "pop newest");
    ok(b.pop(&o, &Selector::Key(1)).await, "pop");
    ok(b.reset(&o).await, "reset");
    ok(b.delete_queue(&qid("gone")).await, "delete_queue");

    let queues = ok(b.list_queues().await, "list_queues");
    let items_q = all(&b, &q).await;
    let counts_q = ok(b.count(&q).await, "count");
    let b = f.reopen(b).await;
    let durable = if f.durable() {
        "durable"
    } else {
        "non-durable"
    };
    assert_eq!(
        ok(b.list_queues().await, "list_queues"),
        queues,
        "queue settings after reopen ({durable})"
    );
    assert_eq!(
        ok(b.get_queue(&q).await, "get_queue"),
        Some(full),
        "every setting survives reopen"
    );
    assert_eq!(
        ok(b.get_queue(&qid("gone")).await, "get_queue"),
        None,
        "a deleted queue stays deleted"
    );
    assert_eq!(
        all(&b, &q).await,
        items_q,
        "items (every field, phase and lease) after reopen ({durable})"
    );
    assert_eq!(
        ok(b.count(&q).await, "count"),
        counts_q,
        "counts after reopen ({durable})"
    );
    check_counts(&b, &q, "reopen").await;
    assert!(
        all(&b, &o).await.is_empty(),
        "a reset queue stays empty after reopen"
    );
    assert_eq!(
        push_n(&b, &q, 1, at(5)).await,
        vec![7],
        "the key counter survives reopen"
    );
    assert_eq!(
        push_n(&b, &o, 1, at(5)).await,
        vec![4],
        "a reset queue's key counter survives reopen"
    );
    assert_err!(
        b.update(&q, 1, leased("w2", move_to(Phase::DONE)), at(6))
            .await,
        Error::NotLeaseOwner { .. },
        "the lease survives reopen"
    );
    ok(
        b.update(&q, 1, leased("w1", Action::Remove), at(6)).await,
        "ack by the owner after reopen",
    );
    let report = ok(b.sweep(&q, at(60_000)).await, "sweep");
    assert_eq!(report.released, 0, "no lease is left to run out");
    let again = f.reopen(b).await;
    check_counts(&again, &q, "a second reopen").await;
}

// ---- through Store ----------------------------------------------------------------------------

fn store<B: Backend>(b: B) -> (Store<B>, ManualClock) {
    let clock = ManualClock::new(T0);
    (Store::new(b).with_clock(clock.clone()), clock)
}

/// Through `Store` with a manual clock: claim, ack (kept as done or removed, by retention),
/// nack with a retry time, kill and replay behave as documented.
pub async fn store_consumer_protocol_round_trip<F: Factory>(f: &F) {
    let (s, clock) = store(f.create().await);
    let q = ok(
        s.create_queue(QueueConfig::new(qid("orders"))).await,
        "create_queue",
    )
    .id;
    let r = ok(
        s.create_queue(QueueConfig::new(qid("fire-and-forget")).with_retention(Retention::Remove))
            .await,
        "create_queue",
    )
    .id;
    assert_eq!(
        ok(s.queue(&q).await, "queue").map(|c| c.created_at),
        Some(T0),
        "create_queue stamps created_at with the clock"
    );
    ok(s.push_batch(&q, items(3, "job")).await, "push_batch");
    let got = ok(
        s.claim(&q, "w1", 10, Duration::from_secs(30)).await,
        "claim",
    );
    assert_eq!(keys(&got), vec![1, 2, 3]);
    assert_eq!(
        got[0].lease.as_ref().map(|l| l.until),
        Some(at(30_000)),
        "lease = now + duration"
    );
    ok(s.ack(&q, 1, "w1").await, "ack");
    ok(s.nack(&q, 2, "w1", at(10_000), "HTTP 500").await, "nack");
    ok(s.kill(&q, 3, "w1", "HTTP 404").await, "kill");
    assert_eq!(
        ok(s.count_phase(&q, &Phase::DONE).await, "count"),
        1,
        "ack keeps the item as done"
    );
    assert_eq!(ok(s.count_phase(&q, &Phase::DEAD).await, "count"), 1);
    assert!(
        ok(
            s.claim(&q, "w1", 10, Duration::from_secs(30)).await,
            "claim"
        )
        .is_empty(),
        "the nacked item waits"
    );
    clock.advance(Duration::from_secs(10));
    let retry = ok(
        s.claim(&q, "w2", 10, Duration::from_secs(30)).await,
        "claim",
    );
    assert_eq!(
        keys(&retry),
        vec![2],
        "the nacked item is due at its retry time"
    );
    assert_eq!(retry[0].attempts, 2);
    assert_eq!(retry[0].last_error.as_deref(), Some("HTTP 500"));
    let replayed = ok(s.replay(&q, 3).await, "replay");
    assert_eq!(
        (replayed.phase, replayed.not_before),
        (Phase::PENDING, at(10_000)),
        "replay makes a dead item due now"
    );

    ok(s.push(&r, NewItem::new(b"x".to_vec())).await, "push");
    ok(s.claim(&r, "w1", 1, Duration::from_secs(5)).await, "claim");
    ok(s.ack(&r, 1, "w1").await, "ack");
    assert_eq!(
        ok(s.fetch_key(&r, 1).await, "fetch_key"),
        None,
        "ack with Retention::Remove removes the item"
    );
    assert_eq!(ok(s.count(&r).await, "count"), 0);
}

/// Through `Store`: once a lease runs out the next consumer gets the item (attempt counted) and
/// the first consumer's ack is `NotLeaseOwner`.
pub async fn store_lease_expiry_hands_the_item_to_the_next_consumer<F: Factory>(f: &F) {
    let (s, clock) = store(f.create().await);
    let q = ok(
        s.create_queue(QueueConfig::new(qid("orders"))).await,
        "create_queue",
    )
    .id;
    ok(s.push(&q, NewItem::new(b"job".to_vec())).await, "push");
    ok(s.claim(&q, "w1", 1, Duration::from_secs(5)).await, "claim");
    clock.advance(Duration::from_millis(4_999));
    assert!(
        ok(s.claim(&q, "w2", 1, Duration::from_secs(5)).await, "claim").is_empty(),
        "the lease is still live"
    );
    clock.advance(Duration::from_millis(1));
    let got = ok(s.claim(&q, "w2", 1, Duration::from_secs(5)).await, "claim");
    assert_eq!(
        keys(&got),
        vec![1],
        "the expired lease is handed to the next consumer"
    );
    assert_eq!(
        got[0].attempts, 2,
        "the expired lease counted as an attempt"
    );
    assert_err!(
        s.ack(&q, 1, "w1").await,
        Error::NotLeaseOwner { .. },
        "ack by the old owner"
    );
    ok(s.ack(&q, 1, "w2").await, "ack by the new owner");
    assert_eq!(ok(s.count_phase(&q, &Phase::DONE).await, "count"), 1);
    clock.advance(Duration::from_mins(1));
    assert_eq!(
        ok(s.sweep(&q).await, "sweep"),
        SweepReport::default(),
        "a settled item has no lease to expire"
    );
}

/// Through `Store`: `pop` and `claim` skip items past the queue's TTL, which are counted as expired.
pub async fn store_pop_and_claim_skip_ttl_expired_items<F: Factory>(f: &F) {
    let (s, clock) = store(f.create().await);
    let config = QueueConfig::new(qid("orders")).with_ttl(Duration::from_mins(1));
    let q = ok(s.create_queue(config).await, "create_queue").id;
    ok(s.push_batch(&q, items(2, "old")).await, "push");
    clock.advance(Duration::from_secs(30));
    ok(s.push_batch(&q, items(2, "new")).await, "push");
    clock.advance(Duration::from_secs(30));
    let head = ok(s.pop(&q).await, "pop");
    assert_eq!(
        head.map(|i| i.key),
        Some(3),
        "pop skips the items past their TTL"
    );
    assert_eq!(
        ok(s.count_phase(&q, &Phase::EXPIRED).await, "count"),
        2,
        "they are counted as expired"
    );
    clock.advance(Duration::from_secs(30));
    assert!(
        ok(s.claim(&q, "w", 10, Duration::from_secs(5)).await, "claim").is_empty(),
        "claim skips them too"
    );
    assert_eq!(ok(s.count_phase(&q, &Phase::EXPIRED).await, "count"), 3);
    assert_eq!(ok(s.pop(&q).await, "pop"), None, "nothing pending is left");
}

/// Through `Store`: `dump` pages through more than two `DUMP_PAGE`s, returning every item once, in key order.
pub async fn store_dump_returns_every_item_once<F: Factory>(f: &F) {
    let n = 2 * DUMP_PAGE + 7;
    let (s, _clock) = store(f.create().await);
    let q = ok(
        s.create_queue(QueueConfig::new(qid("orders"))).await,
        "create_queue",
    )
    .id;
    ok(s.push_batch(&q, items(n, "d")).await, "push_batch");
    ok(s.claim(&q, "w", 10, Duration::from_secs(5)).await, "claim");
    let mut dump = s.dump(&q);
    let mut seen = Vec::new();
    let mut pages = 0;
    while let Some(page) = ok(dump.next_page().await, "dump") {
        assert!(
            page.len() <= DUMP_PAGE,
            "a dump page holds at most DUMP_PAGE items"
        );
        pages += 1;
        seen.extend(page.into_iter().map(|i| i.key));
    }
    let expected: Vec<Key> = (1..=n as u64).collect();
    assert_eq!(
        seen, expected,
        "dump returns every item exactly once, in key order, whatever its phase"
    );
    assert_eq!(pages, 3, "{n} items take three pages");
    assert_eq!(
        ok(dump.next_page().await, "dump"),
        None,
        "a finished dump stays finished"
    );
}

// ---- once ---------------------------------------------------------------------------------

/// `once`: a backend shared by several processes offers it (one that is not may answer
/// `None`); the first caller's write runs and every caller, concurrent ones included, gets
/// its bytes; a failed write stores nothing; a name written `ttl` ago is written anew.
pub async fn once_runs_the_write_once_per_name<F: Factory>(f: &F) {
    use std::sync::atomic::{AtomicUsize, Ordering};

    let b = Arc::new(f.create().await);
    let ttl = Duration::from_mins(1);
    let probe = b
        .once("kit", "probe", ttl, T0, || async {
            Ok::<_, Error>(b"p".to_vec())
        })
        .await;
    let Some(first) = probe else {
        assert!(
            !b.capabilities().shared,
            "a backend shared by several processes must offer `once`"
        );
        return;
    };
    assert_eq!(
        ok(first, "once"),
        (b"p".to_vec(), false),
        "the first write runs"
    );

    let runs = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let (b, runs) = (Arc::clone(&b), Arc::clone(&runs));
        tasks.push(tokio::spawn(async move {
            let write = || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                // Long enough for the others to arrive while it runs.
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok::<_, Error>(vec![i])
            };
            b.once("kit", "shared", ttl, T0, write).await
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Some(r)) => answers.push(ok(r, "concurrent once")),
            Ok(None) => panic!("`once` answered None after answering Some"),
            Err(e) => panic!("a task panicked: {e}"),
        }
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "one write among 8 concurrent callers"
    );
    let value = answers[0].0.clone();
    assert!(
        answers.iter().all(|(v, _)| *v == value),
        "every caller gets the stored bytes"
    );
    assert_eq!(answers.iter().filter(|(_, replayed)| !replayed).count(), 1);

    let failed = b
        .once("kit", "fails", ttl, T0, || async {
            Err::<Vec<u8>, Error>(Error::invalid("the write failed"))
        })
        .await;
    assert_err!(
        failed.expect("offered"),
        Error::InvalidInput(_),
        "a failing write's error is returned"
    );
    let retried = b
        .once("kit", "fails", ttl, at(1), || async {
            Ok::<_, Error>(b"second".to_vec())
        })
        .await;
    assert_eq!(
        ok(retried.expect("offered"), "once after a failure"),
        (b"second".to_vec(), false),
        "a failed write stores nothing: the next caller writes"
    );

    let later = T0.saturating_add(ttl);
    let renewed = b
        .once("kit", "probe", ttl, later, || async {
            Ok::<_, Error>(b"q".to_vec())
        })
        .await;
    assert_eq!(
        ok(renewed.expect("offered"), "once after the ttl"),
        (b"q".to_vec(), false),
        "a name `ttl` old is written anew"
    );
    let other_space = b
        .once("kit2", "probe", ttl, later, || async {
            Ok::<_, Error>(b"r".to_vec())
        })
        .await;
    assert_eq!(
        ok(other_space.expect("offered"), "once in another space"),
        (b"r".to_vec(), false),
        "spaces are separate"
    );
}
