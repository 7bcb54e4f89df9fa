//! What the conformance kit cannot know about the sled backend: corrupt records on disk,
//! the directory lock, durability settings across reopen, group commit under concurrency,
//! and poisoning after a failed sync.

// Helpers outside `#[test]` functions unwrap too: a test fails by panicking, and
// clippy.toml's `allow-unwrap-in-tests` only reaches the test functions themselves.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::path::Path;
use std::time::{Duration, Instant};

use hookspool::{Backend, Error, NewItem, Page, Phase, QueueConfig, QueueId, Selector, Timestamp};
use hookspool_sled::{Durability, LOCK_FILE, SledBackend, SledOptions};

const NOW: Timestamp = Timestamp::from_millis(1_000_000);

fn qid(name: &str) -> QueueId {
    QueueId::new(name).unwrap()
}

fn batched(interval: Duration) -> SledOptions {
    SledOptions::default().with_durability(Durability::Periodic { interval })
}

/// A backend with queue `q` holding items with payloads `0..n`.
async fn with_items(dir: &Path, options: SledOptions, n: u8) -> SledBackend {
    let b = SledBackend::open_with(dir, options).unwrap();
    b.create_queue(QueueConfig::new(qid("q"))).await.unwrap();
    let items = (0..n).map(|i| NewItem::new(vec![i])).collect();
    b.push(&qid("q"), items, NOW).await.unwrap();
    b
}

async fn payloads(b: &SledBackend) -> Vec<Vec<u8>> {
    b.fetch(&qid("q"), &Selector::Page(Page::first(1000)))
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.payload)
        .collect()
}

/// The raw key of an item record, as the crate docs describe the layout.
fn raw_item_key(queue: &str, key: u64) -> Vec<u8> {
    let mut k = vec![b'i', u8::try_from(queue.len()).unwrap()];
    k.extend_from_slice(queue.as_bytes());
    k.extend_from_slice(&key.to_be_bytes());
    k
}

/// Overwrites one stored item record with `bytes`, through sled directly, while the
/// backend is closed.
fn overwrite_record(dir: &Path, key: u64, bytes: &[u8]) {
    let db = sled::Config::new().path(dir).open().unwrap();
    let tree = db.open_tree("hookspool").unwrap();
    let k = raw_item_key("q", key);
    assert!(
        tree.get(&k).unwrap().is_some(),
        "item {key} is where the docs say"
    );
    tree.insert(k, bytes).unwrap();
    db.flush().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_record_is_reported_and_other_items_stay_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let b = with_items(dir, SledOptions::default(), 3).await;
    let good = b.fetch(&qid("q"), &Selector::Key(2)).await.unwrap();
    drop(b);

    // A bit flip in the middle of item 2's record.
    let mut bytes = hookspool_sled::encode_item(&good[0]);
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    overwrite_record(dir, 2, &bytes);

    let b = SledBackend::open(dir).unwrap();
    match b.fetch(&qid("q"), &Selector::Key(2)).await {
        Err(Error::Corrupted { what }) => {
            assert!(what.contains("`q`") && what.contains("item 2"), "{what}");
        }
        other => panic!("expected Corrupted, got {other:?}"),
    }
    // A page that includes it fails as a whole rather than skipping it silently.
    assert!(matches!(
        b.fetch(&qid("q"), &Selector::Page(Page::first(10))).await,
        Err(Error::Corrupted { .. })
    ));
    // Neither does `pop` hand it out nor remove anything.
    assert!(matches!(
        b.pop(&qid("q"), &Selector::Key(2)).await,
        Err(Error::Corrupted { .. })
    ));
    for key in [1, 3] {
        let items = b.fetch(&qid("q"), &Selector::Key(key)).await.unwrap();
        assert_eq!(items[0].payload, vec![u8::try_from(key - 1).unwrap()]);
    }
    assert_eq!(b.count(&qid("q")).await.unwrap().get(&Phase::PENDING), 3);

    // Garbage that is not even a record header: same answer.
    drop(b);
    overwrite_record(dir, 2, b"\x01no");
    let b = SledBackend::open(dir).unwrap();
    assert!(matches!(
        b.fetch(&qid("q"), &Selector::Key(2)).await,
        Err(Error::Corrupted { .. })
    ));

    // `reset` is the way out: it removes records without decoding them.
    assert_eq!(b.reset(&qid("q")).await.unwrap(), 3);
    assert_eq!(b.count(&qid("q")).await.unwrap().total(), 0);
    assert_eq!(
        b.push(&qid("q"), vec![NewItem::new(b"x".to_vec())], NOW)
            .await
            .unwrap(),
        vec![4]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_open_is_locked_until_the_last_handle_is_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let b = with_items(&dir, SledOptions::default(), 1).await;
    let clone = b.clone();

    match SledBackend::open(&dir) {
        Err(Error::Locked { path }) => assert_eq!(path, dir.display().to_string()),
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(b);
    // A clone still holds the directory.
    assert!(matches!(SledBackend::open(&dir), Err(Error::Locked { .. })));
    assert_eq!(payloads(&clone).await, vec![vec![0]]);
    drop(clone);

    let again = SledBackend::open(&dir).unwrap();
    assert_eq!(payloads(&again).await, vec![vec![0]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_held_by_another_process_is_locked_not_a_sled_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    drop(SledBackend::open(dir).unwrap());

    // Another process's lock: a lock on its own open file description, as a process has.
    let other = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join(LOCK_FILE))
        .unwrap();
    other.try_lock().unwrap();
    assert!(matches!(SledBackend::open(dir), Err(Error::Locked { .. })));
    drop(other);
    SledBackend::open(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_reopen_in_both_durability_modes() {
    for options in [SledOptions::default(), batched(Duration::from_hours(1))] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let b = with_items(dir, options.clone(), 5).await;
        b.pop(&qid("q"), &Selector::Key(1)).await.unwrap();
        let counts = b.count(&qid("q")).await.unwrap();
        drop(b);

        let b = SledBackend::open_with(dir, options.clone()).unwrap();
        assert_eq!(
            payloads(&b).await,
            vec![vec![1], vec![2], vec![3], vec![4]],
            "{options:?}"
        );
        assert_eq!(b.count(&qid("q")).await.unwrap(), counts);
        let keys = b
            .push(&qid("q"), vec![NewItem::new(b"next".to_vec())], NOW)
            .await
            .unwrap();
        assert_eq!(keys, vec![6], "{options:?}: the key counter survives");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_returns_only_when_synced() {
    let tmp = tempfile::tempdir().unwrap();
    let b = with_items(tmp.path(), SledOptions::default(), 2).await;
    assert!(!b.has_unsynced_writes());
    b.pop(&qid("q"), &Selector::Key(1)).await.unwrap();
    assert!(!b.has_unsynced_writes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_syncs_on_demand_and_in_the_background() {
    let tmp = tempfile::tempdir().unwrap();
    // An interval that never fires during the test: only `sync` can sync.
    let b = with_items(&tmp.path().join("a"), batched(Duration::from_hours(1)), 3).await;
    assert!(
        b.has_unsynced_writes(),
        "batched push does not wait for a sync"
    );
    b.sync().await.unwrap();
    assert!(!b.has_unsynced_writes(), "sync covers every returned call");
    b.sync().await.unwrap(); // nothing to do: still fine
    drop(b);

    // A short interval: the background thread syncs without being asked.
    let b = with_items(&tmp.path().join("b"), batched(Duration::from_millis(5)), 3).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.has_unsynced_writes() {
        assert!(Instant::now() < deadline, "the background sync never ran");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(payloads(&b).await.len(), 3);
}

#[test]
fn zero_batched_interval_is_invalid_input() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(matches!(
        SledBackend::open_with(tmp.path(), batched(Duration::ZERO)),
        Err(Error::InvalidInput(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_get_distinct_keys_and_all_survive_reopen() {
    const TASKS: u64 = 32;
    const PUSHES: u64 = 8;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let b = SledBackend::open(dir).unwrap();
    b.create_queue(QueueConfig::new(qid("q"))).await.unwrap();

    // Many callers in flight at once: the group commit path, where one sync covers the
    // writes of callers that arrived while another sync was running.
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            let mut keys = Vec::new();
            for i in 0..PUSHES {
                let payload = format!("{t}-{i}").into_bytes();
                keys.extend(
                    b.push(&qid("q"), vec![NewItem::new(payload)], NOW)
                        .await
                        .unwrap(),
                );
            }
            keys
        }));
    }
    let mut keys = BTreeSet::new();
    for task in tasks {
        for key in task.await.unwrap() {
            assert!(keys.insert(key), "key {key} handed out twice");
        }
    }
    assert_eq!(keys, (1..=TASKS * PUSHES).collect::<BTreeSet<_>>());
    drop(b);

    let b = SledBackend::open(dir).unwrap();
    let all = b
        .fetch(&qid("q"), &Selector::Page(Page::first(10_000)))
        .await
        .unwrap();
    assert_eq!(all.len() as u64, TASKS * PUSHES);
    let payloads: BTreeSet<Vec<u8>> = all.into_iter().map(|i| i.payload).collect();
    for t in 0..TASKS {
        for i in 0..PUSHES {
            assert!(payloads.contains(format!("{t}-{i}").as_bytes()));
        }
    }
    assert_eq!(
        b.count(&qid("q")).await.unwrap().get(&Phase::PENDING),
        TASKS * PUSHES
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_payloads_go_through_blobs_and_survive_reopen() {
    // sled stores values over about 128 KiB as files in `blobs/`, which the sync must cover.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let b = SledBackend::open(dir).unwrap();
    b.create_queue(QueueConfig::new(qid("q"))).await.unwrap();
    let big: Vec<u8> = (0..1024 * 1024)
        .map(|i| u8::try_from(i % 251).unwrap())
        .collect();
    b.push(&qid("q"), vec![NewItem::new(big.clone())], NOW)
        .await
        .unwrap();
    assert!(
        std::fs::read_dir(dir.join("blobs")).unwrap().count() > 0,
        "a 1 MiB value is stored as a blob file"
    );
    drop(b);
    let b = SledBackend::open(dir).unwrap();
    assert_eq!(payloads(&b).await, vec![big]);
}

/// Replaces `blobs/` with a plain file, so that the next sync cannot list it and fails.
fn break_blobs_dir(dir: &Path) {
    let blobs = dir.join("blobs");
    std::fs::remove_dir_all(&blobs).unwrap();
    File::create(&blobs).unwrap();
}

fn repair_blobs_dir(dir: &Path) {
    let blobs = dir.join("blobs");
    std::fs::remove_file(&blobs).unwrap();
    std::fs::create_dir(&blobs).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sync_poisons_the_backend_until_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let b = with_items(dir, SledOptions::default(), 1).await;

    break_blobs_dir(dir);
    let push = b
        .push(&qid("q"), vec![NewItem::new(b"unsure".to_vec())], NOW)
        .await;
    assert!(matches!(push, Err(Error::Poisoned { .. })), "{push:?}");
    // Every later call, reads included, fails the same way.
    assert!(matches!(
        b.count(&qid("q")).await,
        Err(Error::Poisoned { .. })
    ));
    assert!(matches!(b.sync().await, Err(Error::Poisoned { .. })));
    assert!(matches!(
        b.push(&qid("q"), vec![NewItem::new(b"more".to_vec())], NOW)
            .await,
        Err(Error::Poisoned { .. })
    ));
    drop(b);

    repair_blobs_dir(dir);
    let b = SledBackend::open(dir).unwrap();
    let got = payloads(&b).await;
    assert_eq!(got[0], vec![0], "what was durable before is still there");
    assert!(got.len() <= 2, "at most the unsure push was kept: {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_background_sync_poisons_batched_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let b = with_items(dir, batched(Duration::from_hours(1)), 1).await;
    break_blobs_dir(dir);
    assert!(matches!(b.sync().await, Err(Error::Poisoned { .. })));
    assert!(matches!(
        b.fetch(&qid("q"), &Selector::Key(1)).await,
        Err(Error::Poisoned { .. })
    ));
    drop(b);
    repair_blobs_dir(dir);
    // Periodic calls had reached sled's data file before they returned.
    let b = SledBackend::open(dir).unwrap();
    assert_eq!(payloads(&b).await, vec![vec![0]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_cursors_at_the_ends_of_the_key_space() {
    let tmp = tempfile::tempdir().unwrap();
    let b = with_items(tmp.path(), SledOptions::default(), 3).await;
    let page = |p: Page| {
        let b = b.clone();
        async move {
            b.fetch(&qid("q"), &Selector::Page(p))
                .await
                .unwrap()
                .into_iter()
                .map(|i| i.key)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        page(Page::first(10).after(u64::MAX)).await,
        Vec::<u64>::new()
    );
    assert_eq!(page(Page::first(10).after(0)).await, vec![1, 2, 3]);
    assert_eq!(
        page(Page::first(10).after(0).reverse()).await,
        Vec::<u64>::new()
    );
    assert_eq!(
        page(Page::first(10).after(u64::MAX).reverse()).await,
        vec![3, 2, 1]
    );
    assert_eq!(page(Page::first(0)).await, Vec::<u64>::new());
    assert_eq!(
        page(Page::first(10).offset(usize::MAX)).await,
        Vec::<u64>::new()
    );
    assert_eq!(
        page(Page::first(10).phase(Phase::DONE)).await,
        Vec::<u64>::new()
    );
}
