//! Fault injection: a write, an fsync, a segment creation or a directory fsync that fails
//! (through the journal's [`Faults`] hook) poisons the backend, and the store reopened
//! without faults holds every push that returned `Ok`, nothing that was never pushed, and
//! counters that match a recount.
//!
//! Segments (4 KiB) and the checkpoint threshold (8 KiB) are tiny, so the N-th operation of a
//! kind lands in plain appends, in segment rotations and in checkpoints. Where a fault fired
//! is recorded (the operation and the thread): on the journal's writer thread it must poison
//! the backend; in a checkpoint (which runs elsewhere) it costs replay time, not data, so the
//! store carries on and reopens with everything.

// Helpers outside `#[test]` functions unwrap too: a test fails by panicking, and
// clippy.toml's `allow-unwrap-in-tests` only reaches the test functions themselves.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookspool::{Error, Item, Key, NewItem, Page, Phase, PhaseCounts, QueueConfig, QueueId, Store};
use hookspool_journal::{Durability, Faults, IoOp, JournalBackend, JournalOptions};

/// The name of the journal's writer thread (appends, syncs, rotations).
const WRITER_THREAD: &str = "hookspool-journal";
/// Operations per scenario: enough for several rotations and checkpoints.
const OPS: usize = 80;

/// Which I/O step to fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// A write of log records.
    Write,
    /// The write of a checkpoint file.
    CheckpointWrite,
    /// An fsync of the checkpoint file (off the writer thread).
    CheckpointSync,
    /// A directory fsync in a checkpoint (after the rename, after deleting segments).
    CheckpointSyncDir,
    Sync,
    CreateSegment,
    SyncDir,
}

/// Fails the `nth` step of kind `target` once armed, and remembers where it did.
#[derive(Debug)]
struct FailNth {
    target: Target,
    nth: u64,
    seen: AtomicU64,
    armed: AtomicBool,
    fired: Mutex<Option<(IoOp, String)>>,
}

impl FailNth {
    fn new(target: Target, nth: u64) -> Arc<Self> {
        Arc::new(FailNth {
            target,
            nth,
            seen: AtomicU64::new(0),
            armed: AtomicBool::new(false),
            fired: Mutex::new(None),
        })
    }

    fn fired(&self) -> Option<(IoOp, String)> {
        self.fired.lock().unwrap().clone()
    }
}

impl Faults for FailNth {
    fn check(&self, op: IoOp) -> std::io::Result<()> {
        if !self.armed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let writer = std::thread::current().name() == Some(WRITER_THREAD);
        let hit = match (self.target, op) {
            (Target::Write, IoOp::Write { segment, .. }) => segment != 0,
            (Target::CheckpointWrite, IoOp::Write { segment, .. }) => segment == 0,
            (Target::CheckpointSync, IoOp::Sync) | (Target::CheckpointSyncDir, IoOp::SyncDir) => {
                !writer
            }
            (Target::Sync, IoOp::Sync)
            | (Target::CreateSegment, IoOp::CreateSegment)
            | (Target::SyncDir, IoOp::SyncDir) => true,
            _ => false,
        };
        if hit && self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.nth {
            let thread = std::thread::current().name().unwrap_or("?").to_owned();
            *self.fired.lock().unwrap() = Some((op, thread));
            return Err(std::io::Error::other(format!(
                "injected fault: {:?} number {}",
                self.target, self.nth
            )));
        }
        Ok(())
    }
}

fn options(durability: Durability, preallocate: bool) -> JournalOptions {
    JournalOptions {
        durability,
        segment_size: 4 << 10,
        preallocate,
        checkpoint_bytes: 8 << 10,
        ..JournalOptions::default()
    }
}

fn qid() -> QueueId {
    QueueId::new("q").unwrap()
}

/// A unique payload of 50 to 450 bytes.
fn payload(i: usize, j: usize) -> Vec<u8> {
    let mut p = format!("item {i}.{j} ").into_bytes();
    p.resize(50 + (i * 37 + j * 101) % 400, b'0' + (i % 10) as u8);
    p
}

async fn dump(store: &Store<JournalBackend>) -> Vec<Item> {
    store.fetch_page(&qid(), Page::first(10_000)).await.unwrap()
}

fn is_poisoned<T: std::fmt::Debug>(r: &hookspool::Result<T>) -> bool {
    matches!(r, Err(Error::Poisoned { .. }))
}

/// What the workload saw returned.
#[derive(Default)]
struct Seen {
    /// Pushes that returned `Ok`, by key.
    pushed: BTreeMap<Key, Vec<u8>>,
    /// Every payload ever handed to `push`, whatever the call returned.
    attempted: BTreeSet<Vec<u8>>,
    /// Acks that returned `Ok`.
    acked: BTreeSet<Key>,
    /// The operation number that failed first.
    failed_at: Option<usize>,
}

/// Pushes (single and batches), claims and acks until the first error; then checks that
/// every kind of call fails with `Poisoned`.
async fn workload(store: &Store<JournalBackend>) -> Seen {
    let q = qid();
    let mut seen = Seen::default();
    let mut held: Vec<Key> = Vec::new();
    for i in 0..OPS {
        let result = match i % 5 {
            0..=2 => {
                let n = 1 + i % 2;
                let items: Vec<NewItem> = (0..n).map(|j| NewItem::new(payload(i, j))).collect();
                seen.attempted
                    .extend(items.iter().map(|item| item.payload.clone()));
                store.push_batch(&q, items.clone()).await.map(|keys| {
                    for (key, item) in keys.into_iter().zip(items) {
                        seen.pushed.insert(key, item.payload);
                    }
                })
            }
            3 => store
                .claim(&q, "worker", 2, Duration::from_mins(10))
                .await
                .map(|items| held.extend(items.iter().map(|item| item.key))),
            _ => match held.pop() {
                Some(key) => store.ack(&q, key, "worker").await.map(|()| {
                    seen.acked.insert(key);
                }),
                None => Ok(()),
            },
        };
        if let Err(e) = result {
            assert!(
                matches!(e, Error::Poisoned { .. } | Error::Backend { .. }),
                "operation {i} failed with {e:?}"
            );
            seen.failed_at = Some(i);
            break;
        }
    }
    if seen.failed_at.is_some() {
        // Every later call fails: nothing more is trusted after a failed write or sync.
        let late = NewItem::new(b"after the fault".to_vec());
        seen.attempted.insert(late.payload.clone());
        assert!(
            is_poisoned(&store.push(&q, late).await),
            "push after the fault"
        );
        assert!(is_poisoned(&store.fetch(&q).await), "fetch after the fault");
        assert!(
            is_poisoned(&store.counts(&q).await),
            "count after the fault"
        );
        assert!(
            is_poisoned(&store.claim(&q, "worker", 1, Duration::from_secs(1)).await),
            "claim after the fault"
        );
        if let Some(&key) = held.last() {
            assert!(
                is_poisoned(&store.ack(&q, key, "worker").await),
                "ack after the fault"
            );
        }
        assert!(is_poisoned(&store.sync().await), "sync after the fault");
        assert!(
            is_poisoned(&store.backend().checkpoint().await),
            "checkpoint after the fault"
        );
    }
    seen
}

/// Runs one scenario: fail the `nth` step of kind `target`, then reopen without faults and
/// check. Returns where the fault fired.
async fn scenario(
    target: Target,
    nth: u64,
    durability: Durability,
    preallocate: bool,
) -> (IoOp, String) {
    let ctx = format!("{target:?} #{nth} ({durability:?}, preallocate {preallocate})");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let faults = FailNth::new(target, nth);
    let backend = JournalBackend::open_with(
        &dir,
        JournalOptions {
            faults: Some(faults.clone()),
            ..options(durability, preallocate)
        },
    )
    .unwrap();
    let store = Store::new(backend);
    store.create_queue(QueueConfig::new(qid())).await.unwrap();
    faults.armed.store(true, Ordering::SeqCst);
    let seen = workload(&store).await;
    drop(store);

    let (op, thread) = faults
        .fired()
        .unwrap_or_else(|| panic!("{ctx}: the fault never fired"));
    eprintln!(
        "{ctx}: {op:?} failed on thread {thread}; first failed call: {:?}; {} pushes returned Ok",
        seen.failed_at,
        seen.pushed.len()
    );
    if thread == WRITER_THREAD {
        assert!(
            seen.failed_at.is_some(),
            "{ctx}: {op:?} failed on the writer thread but no call failed"
        );
    } else {
        // A failed checkpoint leaves the log whole: the store carries on.
        assert_eq!(
            seen.failed_at, None,
            "{ctx}: {op:?} failed on thread {thread} (a checkpoint) and poisoned the store"
        );
    }
    check_reopened(&ctx, &dir, &seen, durability, preallocate).await;
    (op, thread)
}

/// The store reopened without faults: every `Ok` push is there with its payload, nothing
/// that was never pushed is, acked items are done, counters match a recount, and it takes
/// a new push that survives another reopen.
async fn check_reopened(
    ctx: &str,
    dir: &Path,
    seen: &Seen,
    durability: Durability,
    preallocate: bool,
) {
    let store =
        Store::new(JournalBackend::open_with(dir, options(durability, preallocate)).unwrap());
    let items = dump(&store).await;
    let by_key: BTreeMap<Key, &Item> = items.iter().map(|i| (i.key, i)).collect();
    for (key, payload) in &seen.pushed {
        let item = by_key
            .get(key)
            .unwrap_or_else(|| panic!("{ctx}: acknowledged push {key} is lost"));
        assert_eq!(&item.payload, payload, "{ctx}: item {key} payload");
    }
    for item in &items {
        assert!(
            seen.attempted.contains(&item.payload),
            "{ctx}: item {} was never pushed: {:?}",
            item.key,
            String::from_utf8_lossy(&item.payload)
        );
        assert_eq!(
            item.phase == Phase::IN_FLIGHT,
            item.lease.is_some(),
            "{ctx}: item {} phase and lease",
            item.key
        );
    }
    for key in &seen.acked {
        assert_eq!(
            by_key.get(key).map(|i| &i.phase),
            Some(&Phase::DONE),
            "{ctx}: acked item {key}"
        );
    }
    let mut recount = PhaseCounts::default();
    for item in &items {
        recount.add(&item.phase, 1);
    }
    assert_eq!(
        store.counts(&qid()).await.unwrap(),
        recount,
        "{ctx}: counters"
    );

    let key = store
        .push(&qid(), NewItem::new(b"after reopen".to_vec()))
        .await
        .unwrap();
    assert!(
        items.iter().all(|i| i.key < key),
        "{ctx}: new key {key} reuses an old one"
    );
    drop(store);
    let store =
        Store::new(JournalBackend::open_with(dir, options(durability, preallocate)).unwrap());
    let again = dump(&store).await;
    assert_eq!(
        again.len(),
        items.len() + 1,
        "{ctx}: items after another reopen"
    );
    assert_eq!(
        again[..items.len()],
        items[..],
        "{ctx}: items changed by a reopen"
    );
    assert_eq!(
        again[items.len()].payload,
        b"after reopen",
        "{ctx}: the new push"
    );
}

const PERIODIC: Durability = Durability::Periodic {
    interval: Duration::from_millis(5),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_log_write_poisons_and_reopen_keeps_every_acknowledged_push() {
    for (i, nth) in [1, 5, 30, 60].into_iter().enumerate() {
        let (op, thread) = scenario(Target::Write, nth, Durability::Immediate, i % 2 == 0).await;
        assert_eq!(thread, WRITER_THREAD, "{op:?}");
    }
    scenario(Target::Write, 20, PERIODIC, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_poisons_and_reopen_keeps_every_acknowledged_push() {
    let mut threads = BTreeSet::new();
    for (i, nth) in [1, 4, 11, 25, 50].into_iter().enumerate() {
        let (_, thread) = scenario(Target::Sync, nth, Durability::Immediate, i % 2 == 0).await;
        threads.insert(thread);
    }
    scenario(Target::Sync, 3, PERIODIC, true).await;
    assert!(
        threads.contains(WRITER_THREAD),
        "no sync of the log failed: {threads:?}"
    );
}

/// Segment creation happens only when a segment fills up or a checkpoint starts a new one:
/// each of these faults lands in a rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_rotation_poisons_and_reopen_keeps_every_acknowledged_push() {
    for (i, nth) in [1, 2, 4].into_iter().enumerate() {
        let (op, thread) = scenario(
            Target::CreateSegment,
            nth,
            Durability::Immediate,
            i % 2 == 0,
        )
        .await;
        assert_eq!(thread, WRITER_THREAD, "{op:?}");
    }
    scenario(Target::CreateSegment, 2, PERIODIC, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_directory_sync_is_survived() {
    for (i, nth) in [1, 2, 3, 6].into_iter().enumerate() {
        scenario(Target::SyncDir, nth, Durability::Immediate, i % 2 == 0).await;
    }
}

/// A checkpoint that cannot be written, synced, renamed durably or cleaned up costs replay
/// time, not data: the background checkpoint's failure does not reach the caller, and the
/// store reopens with everything (from the old checkpoint and the log, or from the new
/// checkpoint beside segments it already covers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_checkpoint_loses_nothing() {
    let cases = [
        (Target::CheckpointWrite, 1),
        (Target::CheckpointWrite, 2),
        (Target::CheckpointSync, 1),
        (Target::CheckpointSyncDir, 1),
        (Target::CheckpointSyncDir, 2),
    ];
    for (i, (target, nth)) in cases.into_iter().enumerate() {
        let (op, thread) = scenario(target, nth, Durability::Immediate, i % 2 == 0).await;
        assert_ne!(thread, WRITER_THREAD, "{op:?}");
    }
}

/// An explicit `checkpoint()` whose write fails returns the error; the store carries on and
/// the old checkpoint plus the log still give the whole state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_checkpoint_that_fails_returns_the_error_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let faults = FailNth::new(Target::CheckpointWrite, 2);
    let opts = JournalOptions {
        faults: Some(faults.clone()),
        checkpoint_bytes: 1 << 40,
        ..options(Durability::Immediate, true)
    };
    let store = Store::new(JournalBackend::open_with(&dir, opts).unwrap());
    store.create_queue(QueueConfig::new(qid())).await.unwrap();
    faults.armed.store(true, Ordering::SeqCst);
    let mut seen = Seen::default();
    for i in 0..20 {
        let p = payload(i, 0);
        let key = store.push(&qid(), NewItem::new(p.clone())).await.unwrap();
        seen.attempted.insert(p.clone());
        seen.pushed.insert(key, p);
        if i == 5 {
            store.backend().checkpoint().await.unwrap();
        }
        if i == 12 {
            let e = store.backend().checkpoint().await.unwrap_err();
            assert!(matches!(e, Error::Backend { .. }), "{e:?}");
        }
    }
    assert!(faults.fired().is_some());
    drop(store);
    check_reopened(
        "explicit checkpoint",
        &dir,
        &seen,
        Durability::Immediate,
        true,
    )
    .await;
}
