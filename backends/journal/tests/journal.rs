//! What the conformance kit cannot know about the journal backend: the directory lock,
//! checkpoints (reopen replays little, space comes back after draining, leftover segments
//! from an interrupted cleanup are harmless), and periodic durability's `sync`.

// Helpers outside `#[test]` functions unwrap too: a test fails by panicking, and
// clippy.toml's `allow-unwrap-in-tests` only reaches the test functions themselves.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use hookspool::{Error, Item, NewItem, Page, Phase, QueueConfig, QueueId, Retention, Store};
use hookspool_journal::{Durability, Faults, IoOp, JournalBackend, JournalOptions};

const SEGMENT_SIZE: u64 = 16 << 10;

fn qid(name: &str) -> QueueId {
    QueueId::new(name).unwrap()
}

/// Small segments, no automatic checkpoint (not even at close): the tests decide when one is
/// written.
fn options() -> JournalOptions {
    JournalOptions {
        segment_size: SEGMENT_SIZE,
        checkpoint_bytes: 1 << 40,
        checkpoint_on_close: false,
        ..JournalOptions::default()
    }
}

fn open(dir: &Path) -> Store<JournalBackend> {
    Store::new(JournalBackend::open_with(dir, options()).unwrap())
}

/// Every queue's settings and items, in full.
async fn dumps(store: &Store<JournalBackend>) -> Vec<(QueueConfig, Vec<Item>)> {
    let mut all = Vec::new();
    for config in store.queues().await.unwrap() {
        let items = store
            .fetch_page(&config.id, Page::first(10_000))
            .await
            .unwrap();
        all.push((config, items));
    }
    all
}

fn segments(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| {
            n.strip_prefix("journal-")
                .and_then(|rest| rest.strip_suffix(".log"))
                .is_some()
        })
        .collect();
    names.sort();
    names
}

/// Two queues with `n` items of 1 KiB each, some claimed, some acked, some dead.
async fn filled(dir: &Path, n: usize) -> Store<JournalBackend> {
    let store = open(dir);
    store
        .create_queue(QueueConfig::new(qid("a")).with_retention(Retention::Remove))
        .await
        .unwrap();
    store
        .create_queue(QueueConfig::new(qid("b")).with_metadata("k", "v"))
        .await
        .unwrap();
    for i in 0..n {
        let mut payload = format!("item {i} ").into_bytes();
        payload.resize(1024, b'x');
        let item = NewItem::new(payload).with_metadata("i", i.to_string());
        store.push(&qid("a"), item.clone()).await.unwrap();
        if i % 4 == 0 {
            store.push(&qid("b"), item).await.unwrap();
        }
    }
    for item in store
        .claim(&qid("b"), "w", 4, Duration::from_mins(10))
        .await
        .unwrap()
    {
        store.ack(&qid("b"), item.key, "w").await.unwrap();
    }
    let claimed = store
        .claim(&qid("b"), "w", 2, Duration::from_mins(10))
        .await
        .unwrap();
    store
        .kill(&qid("b"), claimed[0].key, "w", "gave up")
        .await
        .unwrap();
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_of_the_same_directory_is_locked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let first = JournalBackend::open(&dir).unwrap();
    match JournalBackend::open(&dir) {
        Err(Error::Locked { path }) => assert!(path.contains("data"), "{path}"),
        other => panic!("expected Locked, got {other:?}"),
    }
    // A clone is another handle to the same store, not a second open.
    let clone = first.clone();
    drop(first);
    assert!(matches!(
        JournalBackend::open(&dir),
        Err(Error::Locked { .. })
    ));
    drop(clone);
    JournalBackend::open(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_keeps_the_state_and_reopen_replays_only_what_follows() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let store = filled(&dir, 60).await;
    drop(store);
    let store = open(&dir);
    let replayed = store.backend().recovery().replayed_records;
    assert!(
        replayed > 60,
        "the whole log replays without a checkpoint: {replayed}"
    );
    let before = dumps(&store).await;
    store.backend().checkpoint().await.unwrap();
    assert_eq!(dumps(&store).await, before, "a checkpoint changes nothing");
    drop(store);

    let store = open(&dir);
    assert_eq!(store.backend().recovery().replayed_records, 0);
    assert_eq!(
        dumps(&store).await,
        before,
        "state after reopen from the checkpoint"
    );
    // Keys continue after the checkpoint: the next key is part of its state.
    let key = store
        .push(&qid("a"), NewItem::new(b"after".to_vec()))
        .await
        .unwrap();
    let max = before[0].1.iter().map(|i| i.key).max().unwrap();
    assert_eq!(key, max + 1);
    drop(store);
    let store = open(&dir);
    assert_eq!(store.backend().recovery().replayed_records, 1);
    assert_eq!(store.count(&qid("a")).await.unwrap(), 61);
}

/// After filling several segments and draining every queue, a checkpoint leaves one segment
/// and a small checkpoint: space comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_store_shrinks_to_one_segment_after_a_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let store = filled(&dir, 80).await;
    let written = segments(&dir).len();
    assert!(
        written >= 5,
        "80 KiB of items fill several segments: {written}"
    );

    // Drain: queue `a` (retention Remove) by claim + ack, queue `b` by pop and reset.
    loop {
        let items = store
            .claim(&qid("a"), "w", 16, Duration::from_mins(10))
            .await
            .unwrap();
        if items.is_empty() {
            break;
        }
        for item in items {
            store.ack(&qid("a"), item.key, "w").await.unwrap();
        }
    }
    assert!(store.pop(&qid("b")).await.unwrap().is_some());
    assert!(store.reset(&qid("b")).await.unwrap() > 0);
    assert_eq!(store.count(&qid("a")).await.unwrap(), 0);
    assert_eq!(store.count(&qid("b")).await.unwrap(), 0);
    store.backend().checkpoint().await.unwrap();

    let left = segments(&dir);
    assert_eq!(left.len(), 1, "segments after the checkpoint: {left:?}");
    let mut files: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["checkpoint", "hookspool.lock", left[0].as_str()],
        "the directory holds one segment, the checkpoint and the lock"
    );
    let checkpoint = fs::metadata(dir.join("checkpoint")).unwrap().len();
    assert!(
        checkpoint < 1024,
        "an empty store's checkpoint is small: {checkpoint}"
    );
    let segment = fs::metadata(dir.join(&left[0])).unwrap().len();
    assert!(segment <= SEGMENT_SIZE, "{segment}");
    drop(store);

    // Still the same store: queues kept, keys not reused.
    let store = open(&dir);
    assert_eq!(store.queues().await.unwrap().len(), 2);
    let key = store
        .push(&qid("a"), NewItem::new(b"again".to_vec()))
        .await
        .unwrap();
    assert!(key > 80, "{key}");
}

/// A crash between the checkpoint's rename and the deletion of the segments it covers leaves
/// those segments behind: open ignores them (their records are in the checkpoint) and the
/// next checkpoint deletes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_left_over_from_an_interrupted_checkpoint_are_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let saved = tmp.path().join("saved");
    fs::create_dir(&saved).unwrap();
    let store = filled(&dir, 40).await;
    // Every item of the first segments dies: they hold nothing a checkpoint needs.
    store.reset(&qid("a")).await.unwrap();
    store.reset(&qid("b")).await.unwrap();
    let old = segments(&dir);
    assert!(old.len() >= 2, "{old:?}");
    for name in &old {
        fs::copy(dir.join(name), saved.join(name)).unwrap();
    }
    store.backend().checkpoint().await.unwrap();
    let more = store
        .push(&qid("b"), NewItem::new(b"after the checkpoint".to_vec()))
        .await
        .unwrap();
    let expected = dumps(&store).await;
    drop(store);
    let deleted: Vec<&String> = old.iter().filter(|n| !dir.join(n).exists()).collect();
    assert_eq!(deleted.len(), old.len() - 1, "all but the last: {old:?}");
    for name in &deleted {
        fs::copy(saved.join(name), dir.join(name)).unwrap();
    }

    // As if a crash had cut the deletion short: open deletes them.
    let store = open(&dir);
    assert_eq!(store.backend().recovery().replayed_records, 1);
    assert_eq!(dumps(&store).await, expected);
    assert!(store.fetch_key(&qid("b"), more).await.unwrap().is_some());
    let left = segments(&dir);
    assert!(
        deleted.iter().all(|name| !left.contains(name)),
        "open deletes them: {left:?}"
    );
    drop(store);
    let store = open(&dir);
    assert_eq!(dumps(&store).await, expected);
}

/// Counts the journal's fsyncs of files, and holds them (the writer waits in its sync) while
/// `hold(true)` is in force.
#[derive(Debug, Default)]
struct CountSyncs {
    count: AtomicU64,
    held: Mutex<bool>,
    released: Condvar,
    /// Syncs that found the hold in force.
    stopped: AtomicU64,
}

impl CountSyncs {
    fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    fn hold(&self, held: bool) {
        *self.held.lock().unwrap() = held;
        self.released.notify_all();
    }
}

/// Holds the syncs until dropped, so that a failed assertion lets the writer go (the store's
/// close waits for it) and the test fails instead of hanging.
struct Hold<'a>(&'a CountSyncs);

impl<'a> Hold<'a> {
    fn new(syncs: &'a CountSyncs) -> Self {
        syncs.hold(true);
        Hold(syncs)
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        self.0.hold(false);
    }
}

impl Faults for CountSyncs {
    fn check(&self, op: IoOp) -> std::io::Result<()> {
        if op == IoOp::Sync {
            let mut held = self.held.lock().unwrap();
            if *held {
                self.stopped.fetch_add(1, Ordering::SeqCst);
            }
            while *held {
                held = self.released.wait(held).unwrap();
            }
            self.count.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

/// The test options with fsyncs counted (and held on demand).
fn counting(durability: Durability) -> (JournalOptions, Arc<CountSyncs>) {
    let syncs = Arc::new(CountSyncs::default());
    let opts = JournalOptions {
        durability,
        faults: Some(syncs.clone()),
        ..options()
    };
    (opts, syncs)
}

/// Under periodic durability a push returns without an fsync; `sync` forces one, and what
/// was pushed is there after a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_durability_syncs_on_demand() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (opts, syncs) = counting(Durability::Periodic {
        interval: Duration::from_hours(1),
    });
    let store = Store::new(JournalBackend::open_with(&dir, opts.clone()).unwrap());
    store
        .create_queue(QueueConfig::new(qid("q")))
        .await
        .unwrap();
    let at_start = syncs.count();
    for i in 0..20u8 {
        store.push(&qid("q"), NewItem::new(vec![i])).await.unwrap();
    }
    assert_eq!(
        syncs.count(),
        at_start,
        "no fsync per push under periodic durability"
    );
    store.sync().await.unwrap();
    let after_sync = syncs.count();
    assert_eq!(after_sync, at_start + 1, "sync issues one fsync for all 20");
    // Nothing new appended: nothing to sync.
    store.sync().await.unwrap();
    assert_eq!(syncs.count(), after_sync);
    drop(store);

    let store = Store::new(JournalBackend::open_with(&dir, opts).unwrap());
    assert_eq!(store.count(&qid("q")).await.unwrap(), 20);
}

/// Under immediate durability, a claim that need not be durable (`Store::claim_without_sync`)
/// is written without an fsync of its own; the next durable write (an ack) syncs it with
/// itself, and both are there after a reopen. A durable claim still syncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_without_sync_costs_no_fsync_and_the_next_write_syncs_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (opts, syncs) = counting(Durability::Immediate);
    let store = Store::new(JournalBackend::open_with(&dir, opts.clone()).unwrap());
    let q = qid("q");
    store
        .create_queue(QueueConfig::new(q.clone()))
        .await
        .unwrap();
    for i in 0..4u8 {
        store.push(&q, NewItem::new(vec![i])).await.unwrap();
    }
    let lease = Duration::from_mins(5);
    let before = syncs.count();
    let lazy = store.claim_without_sync(&q, "w", 2, lease).await.unwrap();
    assert_eq!(lazy.len(), 2);
    // The writer may still be writing the claim: give it time to sync, if it were to.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        syncs.count(),
        before,
        "a claim without sync issues no fsync"
    );
    store.ack(&q, lazy[0].key, "w").await.unwrap();
    let after_ack = syncs.count();
    assert_eq!(
        after_ack,
        before + 1,
        "the ack's fsync covers the claim too"
    );
    let durable = store.claim(&q, "w", 1, lease).await.unwrap();
    assert_eq!(durable.len(), 1);
    assert_eq!(syncs.count(), after_ack + 1, "a claim syncs");
    let expected = dumps(&store).await;
    drop(store);
    let store = Store::new(JournalBackend::open_with(&dir, opts).unwrap());
    assert_eq!(dumps(&store).await, expected);
    assert_eq!(store.count_phase(&q, &Phase::IN_FLIGHT).await.unwrap(), 2);
    assert_eq!(store.count_phase(&q, &Phase::DONE).await.unwrap(), 1);
}

/// A claim without sync waits for no fsync of its own, but hands out nothing that is not yet
/// durable: an item whose push is still waiting for its fsync (its pusher not yet answered)
/// is handed out only once that fsync is done, or a crash could lose an item already sent
/// on. An item that was durable already is handed out at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_without_sync_hands_out_an_item_only_once_its_push_is_synced() {
    let tmp = tempfile::tempdir().unwrap();
    let (opts, syncs) = counting(Durability::Immediate);
    let store = Store::new(JournalBackend::open_with(tmp.path(), opts).unwrap());
    let q = qid("q");
    store
        .create_queue(QueueConfig::new(q.clone()))
        .await
        .unwrap();
    store.push(&q, NewItem::new(b"old".to_vec())).await.unwrap();
    let lease = Duration::from_mins(5);

    let hold = Hold::new(&syncs);
    let old = store.claim_without_sync(&q, "w", 1, lease).await.unwrap();
    assert_eq!(
        old[0].payload, b"old",
        "a durable item is handed out at once"
    );
    let pushing = tokio::spawn({
        let (store, q) = (store.clone(), q.clone());
        async move { store.push(&q, NewItem::new(b"new".to_vec())).await }
    });
    // The push is applied (counted) and waits for its fsync, which is held.
    while store.count(&q).await.unwrap() < 2 || syncs.stopped.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let claiming = tokio::spawn({
        let (store, q) = (store.clone(), q.clone());
        async move { store.claim_without_sync(&q, "w", 1, lease).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !claiming.is_finished(),
        "an item was handed out before its push was synced"
    );
    assert!(!pushing.is_finished());
    drop(hold);
    let new = claiming.await.unwrap().unwrap();
    assert_eq!(new[0].payload, b"new");
    pushing.await.unwrap().unwrap();
}

/// Under immediate durability, concurrent pushes share fsyncs (group commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_share_fsyncs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (opts, syncs) = counting(Durability::Immediate);
    let store = Store::new(JournalBackend::open_with(&dir, opts).unwrap());
    store
        .create_queue(QueueConfig::new(qid("q")))
        .await
        .unwrap();
    let at_start = syncs.count();
    let tasks: Vec<_> = (0..64u8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.push(&qid("q"), NewItem::new(vec![i])).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let used = syncs.count() - at_start;
    assert!(
        (1..64).contains(&used),
        "64 concurrent pushes took {used} fsyncs"
    );
    assert_eq!(store.count(&qid("q")).await.unwrap(), 64);
}

/// `checkpoint()` needs everything before it on the device; under periodic durability it
/// should ask the writer for that sync rather than wait for the next periodic one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_under_periodic_durability_does_not_wait_for_the_interval() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = JournalOptions {
        durability: Durability::Periodic {
            interval: Duration::from_hours(1),
        },
        ..options()
    };
    let store = Store::new(JournalBackend::open_with(tmp.path(), opts).unwrap());
    store
        .create_queue(QueueConfig::new(qid("q")))
        .await
        .unwrap();
    store
        .push(&qid("q"), NewItem::new(b"x".to_vec()))
        .await
        .unwrap();
    // Real time on purpose: the checkpoint waits on the writer thread, not on tokio's clock.
    let done = tokio::time::timeout(Duration::from_secs(10), store.backend().checkpoint()).await;
    assert!(matches!(done, Ok(Ok(()))), "checkpoint: {done:?}");
}

/// Checkpoints asked for at the same time (explicit calls, or one beside the background
/// one) must not let an older checkpoint replace a newer one whose cleanup already deleted
/// the older one's segments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checkpoints_leave_a_store_that_opens() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    open(&dir)
        .create_queue(QueueConfig::new(qid("q")))
        .await
        .unwrap();
    for round in 0..30u8 {
        let store = match JournalBackend::open_with(&dir, options()) {
            Ok(backend) => Store::new(backend),
            Err(e) => panic!("round {round}: reopen after concurrent checkpoints: {e}"),
        };
        assert_eq!(store.count(&qid("q")).await.unwrap(), u64::from(round));
        store
            .push(&qid("q"), NewItem::new(vec![round]))
            .await
            .unwrap();
        let a = store.backend().clone();
        let b = store.backend().clone();
        let (ra, rb) = tokio::join!(
            tokio::spawn(async move { a.checkpoint().await }),
            tokio::spawn(async move { b.checkpoint().await }),
        );
        ra.unwrap().unwrap();
        rb.unwrap().unwrap();
    }
}

/// Draining a queue gives its space back without an explicit checkpoint: once what is on disk
/// is large next to the live state, a checkpoint is written and the segments it covers go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_queue_gives_its_space_back_on_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let options = JournalOptions {
        segment_size: SEGMENT_SIZE,
        preallocate: false,
        checkpoint_bytes: 64 << 10,
        ..JournalOptions::default()
    };
    let store = Store::new(JournalBackend::open_with(&dir, options.clone()).unwrap());
    store
        .create_queue(QueueConfig::new(qid("q")))
        .await
        .unwrap();
    for chunk in 0..20u8 {
        let items = (0..50u8)
            .map(|i| NewItem::new(vec![chunk ^ i; 256]))
            .collect();
        store.push_batch(&qid("q"), items).await.unwrap();
    }
    let full: u64 = dir_bytes(&dir);
    assert!(full > 256 * 1000, "the log holds the payloads: {full}");
    while !store
        .pop_page(&qid("q"), Page::first(100))
        .await
        .unwrap()
        .is_empty()
    {}
    assert_eq!(store.count(&qid("q")).await.unwrap(), 0);
    let segs = segments(&dir);
    assert!(segs.len() <= 1, "one segment left: {segs:?}");
    let drained = dir_bytes(&dir);
    assert!(
        drained < full / 4,
        "space given back: {full} bytes full, {drained} drained"
    );
    drop(store);
    let store = Store::new(JournalBackend::open_with(&dir, options).unwrap());
    assert_eq!(store.count(&qid("q")).await.unwrap(), 0);
}

fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[test]
fn a_segment_size_outside_1_kib_to_4_gib_is_refused_and_nothing_is_created() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    for size in [0, 100, (4 << 30) + 1] {
        let options = JournalOptions {
            segment_size: size,
            ..JournalOptions::default()
        };
        match JournalBackend::open_with(&dir, options) {
            Err(Error::InvalidInput(what)) => assert!(what.contains("segment size"), "{what}"),
            other => panic!("segment size {size}: expected InvalidInput, got {other:?}"),
        }
    }
    assert!(!dir.exists(), "a refused open creates nothing");
}

#[test]
fn a_zero_periodic_interval_is_refused_and_nothing_is_created() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let options = JournalOptions {
        durability: Durability::Periodic {
            interval: Duration::ZERO,
        },
        ..JournalOptions::default()
    };
    match JournalBackend::open_with(&dir, options) {
        Err(Error::InvalidInput(what)) => assert!(what.contains("interval"), "{what}"),
        other => panic!("expected InvalidInput, got {other:?}"),
    }
    assert!(!dir.exists(), "a refused open creates nothing");
}
