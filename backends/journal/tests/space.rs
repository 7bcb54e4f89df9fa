//! Payloads on disk: what the journal does with the segments that hold its items' data.
//! Compaction copies the live items of a sparse segment forward and deletes it (writers keep
//! going meanwhile); damage to data behind a checkpoint is reported when the item is read,
//! never returned and never half-applied, while settling (which reads no data) still works;
//! a missing data segment is refused at open (or, with `skip_corrupt`, its items are dropped
//! and counted); a clean close checkpoints and gives the preallocated tail back.

// Helpers outside `#[test]` functions unwrap too: a test fails by panicking.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;
use std::time::Duration;

use hookspool::{Error, Item, NewItem, Page, Phase, QueueConfig, QueueId, Retention, Store};
use hookspool_journal::{JournalBackend, JournalOptions};

const SEGMENT_SIZE: u64 = 16 << 10;

fn qid(name: &str) -> QueueId {
    QueueId::new(name).unwrap()
}

/// Small segments; checkpoints only when a test asks (not even at close, unless `close`).
fn options(close: bool) -> JournalOptions {
    JournalOptions {
        segment_size: SEGMENT_SIZE,
        checkpoint_bytes: 1 << 40,
        checkpoint_on_close: close,
        ..JournalOptions::default()
    }
}

fn open(dir: &Path) -> Store<JournalBackend> {
    Store::new(JournalBackend::open_with(dir, options(false)).unwrap())
}

fn segments(dir: &Path) -> Vec<(String, u64)> {
    let mut all: Vec<(String, u64)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with("journal-"))
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    all.sort();
    all
}

/// A payload that names itself, 1 KiB.
fn payload(i: usize) -> Vec<u8> {
    let mut p = format!("<item {i:05}>").into_bytes();
    p.resize(1024, b'.');
    p
}

async fn everything(store: &Store<JournalBackend>, queue: &QueueId) -> Vec<Item> {
    store.fetch_page(queue, Page::first(10_000)).await.unwrap()
}

/// `n` items of 1 KiB with metadata in queue `q` (retention `Remove`).
async fn filled(dir: &Path, n: usize) -> Store<JournalBackend> {
    let store = open(dir);
    store
        .create_queue(QueueConfig::new(qid("q")).with_retention(Retention::Remove))
        .await
        .unwrap();
    for i in 0..n {
        let item = NewItem::new(payload(i)).with_metadata("i", i.to_string());
        store.push(&qid("q"), item).await.unwrap();
    }
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_moves_live_items_out_of_sparse_segments_while_writers_continue() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let store = filled(&dir, 200).await;
    // Keep one item in ten, in several phases, one with replaced metadata and an error.
    let q = qid("q");
    for item in everything(&store, &q).await {
        if item.key % 10 != 0 {
            store.delete(&q, item.key).await.unwrap();
        }
    }
    let claimed = store
        .claim(&q, "w", 3, Duration::from_mins(5))
        .await
        .unwrap();
    store.ack(&q, claimed[0].key, "w").await.unwrap();
    store
        .kill(&q, claimed[1].key, "w", "gave up")
        .await
        .unwrap();
    let before = everything(&store, &q).await;
    assert_eq!(before.len(), 19);
    let old: u64 = segments(&dir).iter().map(|(_, n)| n).sum();
    let old_names: Vec<String> = segments(&dir).into_iter().map(|(n, _)| n).collect();
    assert!(old_names.len() >= 10, "{old_names:?}");

    // A checkpoint compacts, while another task keeps pushing.
    let pusher = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut keys = Vec::new();
            for i in 1000..1040 {
                keys.push(
                    store
                        .push(&qid("q"), NewItem::new(payload(i)))
                        .await
                        .unwrap(),
                );
            }
            keys
        })
    };
    store.backend().checkpoint().await.unwrap();
    let new_keys = pusher.await.unwrap();
    // What was there is unchanged, byte for byte: payloads, metadata, phases, errors.
    let now = everything(&store, &q).await;
    let kept: Vec<&Item> = now.iter().filter(|i| !new_keys.contains(&i.key)).collect();
    assert_eq!(kept, before.iter().collect::<Vec<_>>());
    let after = segments(&dir);
    let left_old = after
        .iter()
        .filter(|(n, _)| old_names[..old_names.len() - 1].contains(n));
    assert_eq!(left_old.count(), 0, "sparse segments deleted: {after:?}");
    let total: u64 = after.iter().map(|(_, n)| n).sum();
    assert!(total < old / 2, "space came back: {old} → {total} bytes");

    // The relocations replay (no checkpoint at close) and the data is read from the new place.
    let expected = everything(&store, &q).await;
    drop(store);
    let store = open(&dir);
    assert!(store.backend().recovery().replayed_records > 0);
    assert_eq!(everything(&store, &q).await, expected);
    // And from a checkpoint that already holds the new places (its own compaction may log
    // a few relocations after it).
    store.backend().checkpoint().await.unwrap();
    drop(store);
    let store = open(&dir);
    assert!(store.backend().recovery().replayed_records <= 2);
    assert_eq!(everything(&store, &q).await, expected);
}

/// Flips one byte of item `key`'s payload in whatever segment holds it.
fn damage_payload(dir: &Path, i: usize) {
    let marker = format!("<item {i:05}>").into_bytes();
    for (name, _) in segments(dir) {
        let path = dir.join(&name);
        let mut bytes = fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(marker.len()).position(|w| w == marker) {
            bytes[at + 3] ^= 0x20;
            fs::write(&path, bytes).unwrap();
            return;
        }
    }
    panic!("item {i} not found in any segment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_data_behind_a_checkpoint_is_quarantined_when_read_and_the_rest_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let store = filled(&dir, 50).await;
    // Item 0 (key 1) is leased to `w` before the damage; item 1 (key 2) is then the head
    // of the pending items.
    let claimed = store
        .claim(&qid("q"), "w", 1, Duration::from_hours(1))
        .await
        .unwrap();
    assert_eq!(claimed[0].key, 1);
    store.backend().checkpoint().await.unwrap();
    drop(store);
    damage_payload(&dir, 0);
    damage_payload(&dir, 1);

    let store = open(&dir);
    let q = qid("q");
    // Settling reads no data: the damaged item leased before is acked (and, the queue's
    // retention being `Remove`, gone).
    store.ack(&q, 1, "w").await.unwrap();
    assert_eq!(store.count(&q).await.unwrap(), 49);
    // The claim finds key 2 damaged, quarantines it and hands out the next five.
    let claimed = store
        .claim(&q, "w", 5, Duration::from_mins(1))
        .await
        .unwrap();
    assert_eq!(
        claimed.iter().map(|i| i.key).collect::<Vec<_>>(),
        [3, 4, 5, 6, 7]
    );
    assert_eq!(claimed[0].payload, payload(2));
    let counts = store.counts(&q).await.unwrap();
    assert_eq!(counts.get(&Phase::CORRUPT), 1, "{counts:?}");
    // Reads report it as an entry (no payload, the damage as its error) and go on.
    let bad = store.fetch_key(&q, 2).await.unwrap().unwrap();
    assert_eq!(bad.phase, Phase::CORRUPT);
    assert!(bad.payload.is_empty());
    let error = bad.last_error.clone().unwrap();
    assert!(
        error.starts_with("quarantined: ") && error.contains("item data"),
        "{error}"
    );
    let page = store.fetch_page(&q, Page::first(100)).await.unwrap();
    assert_eq!(page.len(), 49);
    assert_eq!(page[0].key, 2);
    assert_eq!(page[1].payload, payload(2));
    let mut dump = store.dump(&q);
    let mut dumped = 0;
    while let Some(items) = dump.next_page().await.unwrap() {
        dumped += items.len();
    }
    assert_eq!(dumped, 49, "dump goes on past the damaged item");
    // The quarantine is durable: after a reopen the item is still in `corrupt`, unread.
    drop(dump);
    drop(store);
    let store = open(&dir);
    let again = store.fetch_key(&q, 2).await.unwrap().unwrap();
    assert_eq!(
        (again.phase, again.last_error),
        (Phase::CORRUPT, Some(error))
    );
    // It is deleted on its own; everything else stays readable.
    assert!(store.delete(&q, 2).await.unwrap());
    assert_eq!(store.count_phase(&q, &Phase::CORRUPT).await.unwrap(), 0);
    let rest = store.pop_page(&q, Page::first(100)).await.unwrap();
    assert_eq!(rest.len(), 48);
    assert_eq!(store.count(&q).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_data_segment_is_refused_or_its_items_dropped_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let store = filled(&dir, 100).await;
    store.backend().checkpoint().await.unwrap();
    drop(store);
    let (victim, _) = segments(&dir)[1].clone();
    fs::remove_file(dir.join(&victim)).unwrap();

    match JournalBackend::open_with(&dir, options(false)) {
        Err(Error::Corrupted { what }) => {
            assert!(
                what.contains("segment 2") && what.contains("missing"),
                "{what}"
            );
        }
        other => panic!("expected Corrupted, got {other:?}"),
    }
    let backend = JournalBackend::open_with(
        &dir,
        JournalOptions {
            skip_corrupt: true,
            ..options(false)
        },
    )
    .unwrap();
    let dropped = backend.recovery().skipped_items;
    assert!(dropped > 0 && dropped < 100, "dropped {dropped}");
    let store = Store::new(backend);
    let items = everything(&store, &qid("q")).await;
    assert_eq!(items.len() as u64, 100 - dropped);
    for item in &items {
        let i: usize = item.metadata["i"].parse().unwrap();
        assert_eq!(item.payload, payload(i));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_close_checkpoints_and_gives_the_preallocated_tail_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let opts = JournalOptions {
        segment_size: 1 << 20,
        ..options(true)
    };
    let store = Store::new(JournalBackend::open_with(&dir, opts.clone()).unwrap());
    store
        .create_queue(QueueConfig::new(qid("q")))
        .await
        .unwrap();
    for i in 0..20 {
        store
            .push(&qid("q"), NewItem::new(payload(i)))
            .await
            .unwrap();
    }
    assert_eq!(segments(&dir)[0].1, 1 << 20, "preallocated while open");
    drop(store);
    let (_, len) = segments(&dir)[0].clone();
    assert!(len < 32 << 10, "trimmed to what was written: {len}");

    let store = Store::new(JournalBackend::open_with(&dir, opts.clone()).unwrap());
    assert_eq!(store.backend().recovery().replayed_records, 0);
    assert_eq!(everything(&store, &qid("q")).await.len(), 20);
    // Appending after the trim grows the file; the next open finds it all.
    let key = store
        .push(&qid("q"), NewItem::new(payload(20)))
        .await
        .unwrap();
    drop(store);
    let store = Store::new(JournalBackend::open_with(&dir, opts).unwrap());
    let item = store.fetch_key(&qid("q"), key).await.unwrap().unwrap();
    assert_eq!(item.payload, payload(20));
}
