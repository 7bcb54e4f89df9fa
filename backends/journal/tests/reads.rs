//! Reading item data holds nobody up. A `pread` runs on a blocking thread with the state
//! lock released, so while one call's read is held (blocked in the journal's [`Faults`]
//! hook at [`IoOp::Read`]) every other caller completes; an item that compaction moves
//! while a read of it is held is returned all the same, read from its new place; an item
//! whose record the writer has not written yet is read from memory, without waiting for
//! the writer; and consumers, pushers and compaction running at once return every item
//! exactly once, in a log that replays to the same state.
//!
//! A held step is let go by the test, never by time: the hook's guard only turns a
//! deadlock (other callers waiting for the held step, as they did when reads happened under
//! the state lock) into a failure instead of a hang.

// Helpers outside `#[test]` functions unwrap too: a test fails by panicking.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use hookspool::{Item, Key, NewItem, Page, Phase, QueueConfig, QueueId, Retention, Store};
use hookspool_journal::{Durability, Faults, IoOp, JournalBackend, JournalOptions};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// How long a held step waits to be let go before giving up (and saying so).
const DEADLOCK_GUARD: Duration = Duration::from_mins(1);

/// Which step [`Hold`] holds.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// A `pread` of item data.
    Read,
    /// The writer's `pwrite` of log records.
    Write,
}

/// Holds the first step of its kind after it is armed until the test lets it go.
#[derive(Debug)]
struct Hold {
    step: Step,
    armed: AtomicBool,
    /// Told the segment of the step being held.
    held: UnboundedSender<u64>,
    release: Mutex<mpsc::Receiver<()>>,
    /// Set if [`DEADLOCK_GUARD`] ran out: the test waited for something the held step
    /// blocked.
    expired: AtomicBool,
}

/// The test's side of a [`Hold`].
struct Holder {
    hold: Arc<Hold>,
    held: UnboundedReceiver<u64>,
    release: mpsc::Sender<()>,
}

impl Holder {
    fn new(step: Step) -> Self {
        let (held_tx, held) = unbounded_channel();
        let (release, release_rx) = mpsc::channel();
        Holder {
            hold: Arc::new(Hold {
                step,
                armed: AtomicBool::new(false),
                held: held_tx,
                release: Mutex::new(release_rx),
                expired: AtomicBool::new(false),
            }),
            held,
            release,
        }
    }

    fn faults(&self) -> Arc<dyn Faults> {
        self.hold.clone()
    }

    fn arm(&self) {
        self.hold.armed.store(true, Ordering::SeqCst);
    }

    /// Waits until the armed step is being held; returns its segment.
    async fn wait_held(&mut self) -> u64 {
        self.held.recv().await.unwrap()
    }

    /// Lets the held step go.
    fn release(&self) {
        self.release.send(()).unwrap();
    }

    fn expired(&self) -> bool {
        self.hold.expired.load(Ordering::SeqCst)
    }
}

impl Faults for Hold {
    fn check(&self, op: IoOp) -> std::io::Result<()> {
        let segment = match (self.step, op) {
            (Step::Read, IoOp::Read { segment, .. }) => segment,
            // Segment 0 is the checkpoint file.
            (Step::Write, IoOp::Write { segment, .. }) if segment != 0 => segment,
            _ => return Ok(()),
        };
        if !self.armed.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let _ = self.held.send(segment);
        let release = self.release.lock().unwrap();
        if release.recv_timeout(DEADLOCK_GUARD).is_err() {
            self.expired.store(true, Ordering::SeqCst);
        }
        Ok(())
    }
}

fn qid(name: &str) -> QueueId {
    QueueId::new(name).unwrap()
}

/// A payload that names its queue and index, 1 KiB.
fn payload(queue: &str, i: usize) -> Vec<u8> {
    let mut p = format!("<{queue} {i:05}>").into_bytes();
    p.resize(1024, b'.');
    p
}

fn item(queue: &str, i: usize) -> NewItem {
    NewItem::new(payload(queue, i)).with_metadata("i", i.to_string())
}

fn check_item(item: &Item, queue: &str, key: Key) {
    let i = usize::try_from(key - 1).unwrap();
    assert_eq!(item.key, key);
    assert_eq!(item.payload, payload(queue, i), "payload of {queue} {key}");
    assert_eq!(
        item.metadata["i"],
        i.to_string(),
        "metadata of {queue} {key}"
    );
}

/// The calls that read item data, each taking item 1 of queue `a` (the head).
#[derive(Clone, Copy, Debug)]
enum Reader {
    Fetch,
    Pop,
    Claim,
    Update,
}

const READERS: [Reader; 4] = [Reader::Fetch, Reader::Pop, Reader::Claim, Reader::Update];

/// Starts `reader` on key `key` of queue `queue` (the queue's head).
fn start(
    store: &Store<JournalBackend>,
    reader: Reader,
    queue: &str,
    key: Key,
) -> tokio::task::JoinHandle<hookspool::Result<Vec<Item>>> {
    let store = store.clone();
    let q = qid(queue);
    tokio::spawn(async move {
        match reader {
            Reader::Fetch => store
                .fetch_key(&q, key)
                .await
                .map(|i| i.into_iter().collect()),
            Reader::Pop => store.pop_page(&q, Page::first(1)).await,
            Reader::Claim => store.claim(&q, "slow", 1, Duration::from_hours(1)).await,
            Reader::Update => store
                .update_phase(&q, key, Phase::DEAD)
                .await
                .map(|i| vec![i]),
        }
    })
}

/// What `reader` left of item `key` in `store`.
async fn check_after(store: &Store<JournalBackend>, reader: Reader, queue: &str, key: Key) {
    let now = store.fetch_key(&qid(queue), key).await.unwrap();
    match (reader, now) {
        (Reader::Pop, None) => {}
        (Reader::Fetch, Some(i)) => assert_eq!(i.phase, Phase::PENDING),
        (Reader::Claim, Some(i)) => {
            assert_eq!(i.phase, Phase::IN_FLIGHT);
            assert_eq!(i.lease.unwrap().owner, "slow");
        }
        (Reader::Update, Some(i)) => assert_eq!(i.phase, Phase::DEAD),
        (reader, now) => panic!("{reader:?} left item {key} as {now:?}"),
    }
}

/// Queues `a` and `b` with ten items each, reopened so that reading any of them takes a
/// `pread` (what was appended in this process would be read from memory).
async fn two_queues(dir: &Path, faults: Arc<dyn Faults>) -> Store<JournalBackend> {
    let options = JournalOptions {
        faults: Some(faults),
        ..JournalOptions::default()
    };
    let store = Store::new(JournalBackend::open_with(dir, options.clone()).unwrap());
    for name in ["a", "b"] {
        store
            .create_queue(QueueConfig::new(qid(name)))
            .await
            .unwrap();
        let items = (0..10).map(|i| item(name, i)).collect();
        store.push_batch(&qid(name), items).await.unwrap();
    }
    drop(store);
    Store::new(JournalBackend::open_with(dir, options).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_a_read_is_held_every_other_caller_completes() {
    for reader in READERS {
        let tmp = tempfile::tempdir().unwrap();
        let mut holder = Holder::new(Step::Read);
        let store = two_queues(&tmp.path().join("data"), holder.faults()).await;
        let a = qid("a");
        holder.arm();
        let held = start(&store, reader, "a", 1);
        holder.wait_held().await;

        // The held call has read nothing and changed nothing; everyone else goes on (a
        // count that waited for the held call would see its change).
        assert_eq!(
            store.count(&a).await.unwrap(),
            10,
            "{reader:?}: count waited for the held read"
        );
        let pushed = store
            .push(&a, NewItem::new(b"pushed meanwhile".to_vec()))
            .await
            .unwrap();
        assert_eq!(pushed, 11);
        let other = store.fetch_key(&a, 5).await.unwrap().unwrap();
        check_item(&other, "a", 5);
        let claimed = store
            .claim(&qid("b"), "other", 2, Duration::from_hours(1))
            .await
            .unwrap();
        assert_eq!(claimed.len(), 2);
        check_item(&claimed[0], "b", 1);
        check_item(&claimed[1], "b", 2);
        let acked = store.ack_many(&qid("b"), &[1, 2], "other").await.unwrap();
        assert!(acked.iter().all(Result::is_ok), "{acked:?}");
        assert!(store.delete(&a, 7).await.unwrap());
        assert!(
            !held.is_finished(),
            "{reader:?} finished while its read was held"
        );

        holder.release();
        let items = held.await.unwrap().unwrap();
        assert!(
            !holder.expired(),
            "{reader:?}: other callers waited for the held read"
        );
        assert_eq!(items.len(), 1, "{reader:?}: {items:?}");
        check_item(&items[0], "a", 1);
        check_after(&store, reader, "a", 1).await;
        assert_eq!(
            store.count(&a).await.unwrap(),
            10 - u64::from(matches!(reader, Reader::Pop))
        );
    }
}

/// Compaction copies the held item's blob to the end of the log and deletes the segment
/// the held read was about to read: the call finds the item moved, reads it again from its
/// new place, and applies its change there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_compaction_moves_while_its_read_is_held_is_read_from_its_new_place() {
    for reader in READERS {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let mut holder = Holder::new(Step::Read);
        let options = JournalOptions {
            segment_size: 16 << 10,
            checkpoint_bytes: 1 << 40,
            checkpoint_on_close: false,
            faults: Some(holder.faults()),
            ..JournalOptions::default()
        };
        let store = Store::new(JournalBackend::open_with(&dir, options.clone()).unwrap());
        let q = qid("q");
        store
            .create_queue(QueueConfig::new(q.clone()).with_retention(Retention::Remove))
            .await
            .unwrap();
        for i in 0..200 {
            store.push(&q, item("q", i)).await.unwrap();
        }
        // One item in ten stays: every segment is sparse, and key 10 is the head.
        for key in (1..=200).filter(|k| k % 10 != 0) {
            assert!(store.delete(&q, key).await.unwrap());
        }
        drop(store);
        let store = Store::new(JournalBackend::open_with(&dir, options.clone()).unwrap());

        holder.arm();
        let held = start(&store, reader, "q", 10);
        let segment = holder.wait_held().await;
        store.backend().checkpoint().await.unwrap();
        let file = dir.join(format!("journal-{segment:010}.log"));
        assert!(
            !file.exists(),
            "{reader:?}: compaction did not delete segment {segment} under the held read"
        );

        holder.release();
        let items = held.await.unwrap().unwrap();
        assert!(
            !holder.expired(),
            "{reader:?}: compaction waited for the read"
        );
        assert_eq!(items.len(), 1, "{reader:?}: {items:?}");
        check_item(&items[0], "q", 10);
        check_after(&store, reader, "q", 10).await;
        let all = store.fetch_page(&q, Page::first(100)).await.unwrap();
        drop(store);

        // The log (relocations, then the call) replays to the same items, read from their
        // new places.
        let store = Store::new(JournalBackend::open_with(&dir, options).unwrap());
        assert!(store.backend().recovery().replayed_records > 0);
        assert_eq!(
            store.fetch_page(&q, Page::first(100)).await.unwrap(),
            all,
            "{reader:?}"
        );
        check_after(&store, reader, "q", 10).await;
    }
}

/// A reader needs no record in its file: while the writer is held before writing a push,
/// the pushed item is already read (from memory), and the push itself still waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_is_read_before_the_writer_has_written_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut holder = Holder::new(Step::Write);
    let options = JournalOptions {
        faults: Some(holder.faults()),
        ..JournalOptions::default()
    };
    let store = Store::new(JournalBackend::open_with(tmp.path(), options).unwrap());
    let q = qid("q");
    store
        .create_queue(QueueConfig::new(q.clone()))
        .await
        .unwrap();
    holder.arm();
    let push = {
        let store = store.clone();
        tokio::spawn(async move { store.push(&qid("q"), item("q", 0)).await })
    };
    holder.wait_held().await;

    let read = store.fetch_key(&q, 1).await.unwrap().unwrap();
    check_item(&read, "q", 1);
    let page = store.fetch_page(&q, Page::first(10)).await.unwrap();
    assert_eq!(page, vec![read]);
    assert!(
        !push.is_finished(),
        "the push returned before its record was written"
    );

    holder.release();
    assert_eq!(push.await.unwrap().unwrap(), 1);
    assert!(!holder.expired(), "a read waited for the writer");
}

/// The payloads each key was returned with.
type Returned = Arc<Mutex<BTreeMap<Key, Vec<Vec<u8>>>>>;

fn record(returned: &Mutex<BTreeMap<Key, Vec<Vec<u8>>>>, items: &[Item]) {
    let mut returned = returned.lock().unwrap();
    for item in items {
        returned
            .entry(item.key)
            .or_default()
            .push(item.payload.clone());
    }
}

/// A consumer of queue `q`: claims batches of 7 as `owner` (acking every other batch, so
/// that the state left is not just empty) or, without an owner, pops pages of 5 pending
/// items; until the queue has nothing left for it once `done` is set.
async fn consume(
    store: Store<JournalBackend>,
    owner: Option<String>,
    done: Arc<AtomicBool>,
    returned: Returned,
) {
    let q = qid("q");
    let mut batches = 0;
    loop {
        let finished = done.load(Ordering::SeqCst);
        let items = match &owner {
            Some(owner) => store
                .claim(&q, owner, 7, Duration::from_hours(1))
                .await
                .unwrap(),
            None => store
                .pop_page(&q, Page::first(5).phase(Phase::PENDING))
                .await
                .unwrap(),
        };
        if items.is_empty() {
            if finished {
                return;
            }
            // Waiting for pushes: a pause, or the consumers would crowd the pushers out.
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        record(&returned, &items);
        batches += 1;
        if let Some(owner) = owner.as_deref().filter(|_| batches % 2 == 0) {
            let keys: Vec<Key> = items.iter().map(|i| i.key).collect();
            let acked = store.ack_many(&q, &keys, owner).await.unwrap();
            assert!(acked.iter().all(Result::is_ok), "{acked:?}");
        }
    }
}

/// Claimers and page poppers (who take turns on the queue), pushers and back-to-back
/// checkpoints (whose compaction moves items) at once: every item comes back exactly once,
/// with its own payload, and the log replays to the state it left.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_consumers_get_each_item_once_while_compaction_moves_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let options = JournalOptions {
        durability: Durability::Periodic {
            interval: Duration::from_millis(2),
        },
        segment_size: 16 << 10,
        checkpoint_bytes: 1 << 40,
        checkpoint_on_close: false,
        ..JournalOptions::default()
    };
    let store = Store::new(JournalBackend::open_with(&dir, options.clone()).unwrap());
    let q = qid("q");
    store
        .create_queue(QueueConfig::new(q.clone()).with_retention(Retention::Remove))
        .await
        .unwrap();
    let items = (0..600).map(|i| item("q", i)).collect();
    store.push_batch(&q, items).await.unwrap();
    drop(store);
    let store = Store::new(JournalBackend::open_with(&dir, options.clone()).unwrap());

    // Item index by key, as pushed; and the payloads each key came back with.
    let pushed: Arc<Mutex<BTreeMap<Key, usize>>> = Arc::new(Mutex::new(
        (1..=600).map(|k| (k, (k - 1) as usize)).collect(),
    ));
    let returned: Returned = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let pushers: Vec<_> = (0..2)
        .map(|p| {
            let (store, pushed) = (store.clone(), Arc::clone(&pushed));
            tokio::spawn(async move {
                for j in 0..150 {
                    let i = 1000 + p * 1000 + j;
                    let key = store.push(&qid("q"), item("q", i)).await.unwrap();
                    pushed.lock().unwrap().insert(key, i);
                }
            })
        })
        .collect();
    let owners = [Some("c0"), Some("c1"), Some("c2"), None, None];
    let consumers: Vec<_> = owners
        .into_iter()
        .map(|owner| {
            let owner = owner.map(str::to_owned);
            let (store, done, returned) = (store.clone(), Arc::clone(&done), Arc::clone(&returned));
            tokio::spawn(consume(store, owner, done, returned))
        })
        .collect();
    let compacting = Arc::new(AtomicBool::new(true));
    let checkpoints = {
        let (store, compacting) = (store.clone(), Arc::clone(&compacting));
        tokio::spawn(async move {
            let mut n = 0;
            while compacting.load(Ordering::SeqCst) || n == 0 {
                store.backend().checkpoint().await.unwrap();
                n += 1;
            }
            n
        })
    };
    for task in pushers {
        task.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    for consumer in consumers {
        consumer.await.unwrap();
    }
    compacting.store(false, Ordering::SeqCst);
    assert!(checkpoints.await.unwrap() > 0);

    let pushed = pushed.lock().unwrap().clone();
    let returned = returned.lock().unwrap().clone();
    assert_eq!(pushed.len(), 900);
    for (key, i) in &pushed {
        match returned.get(key).map(Vec::as_slice) {
            Some([once]) => assert_eq!(once, &payload("q", *i), "item {key}"),
            Some(more) => panic!("item {key} returned {} times", more.len()),
            None => panic!("item {key} never returned"),
        }
    }
    assert_eq!(returned.len(), pushed.len(), "only pushed items come back");
    let left = store.fetch_page(&q, Page::first(1000)).await.unwrap();
    assert!(left.iter().all(|i| i.phase == Phase::IN_FLIGHT), "{left:?}");
    assert_eq!(store.count(&q).await.unwrap(), left.len() as u64);
    drop(store);

    let store = Store::new(JournalBackend::open_with(&dir, options).unwrap());
    assert_eq!(store.fetch_page(&q, Page::first(1000)).await.unwrap(), left);
}
