//! Notes: metadata and errors set after an item's push are written to disk beside the
//! update (a *note*), not kept in memory, and read back like payloads. They must read back
//! the same through every path: the call that wrote them, replay, a checkpoint, compaction;
//! an update that sets only one of the two keeps the other; and a damaged note quarantines
//! its item like a damaged payload.

// Helpers outside `#[test]` functions unwrap too: a test fails by panicking.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use hookspool::{
    Expect, Item, Move, NewItem, Page, Phase, QueueConfig, QueueId, Retention, Store, Transition,
};
use hookspool_journal::{JournalBackend, JournalOptions};

fn qid() -> QueueId {
    QueueId::new("deliveries").unwrap()
}

/// Small segments, so that a few hundred items span many; checkpoints only when asked.
fn open(dir: &Path) -> Store<JournalBackend> {
    let options = JournalOptions {
        segment_size: 16 << 10,
        checkpoint_bytes: 1 << 40,
        checkpoint_on_close: false,
        ..JournalOptions::default()
    };
    Store::new(JournalBackend::open_with(dir, options).unwrap())
}

async fn everything(store: &Store<JournalBackend>) -> Vec<Item> {
    store.fetch_page(&qid(), Page::first(10_000)).await.unwrap()
}

/// The metadata a settle writes for item `i`: what it was pushed with, and an attempt log.
fn attempt_log(i: u64) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("i".to_owned(), i.to_string()),
        ("attempts".to_owned(), "1".to_owned()),
        (
            "attempt.0001".to_owned(),
            format!(
                r#"{{"number":1,"status":200,"item":{i},"body":"{}"}}"#,
                "x".repeat(120)
            ),
        ),
    ])
}

/// A move with no precondition.
fn any(m: Move) -> Transition {
    Transition {
        expect: Expect::default(),
        action: m.into(),
    }
}

fn error_of(i: u64) -> String {
    format!("<error {i:05}> the receiver answered 500")
}

/// Settles every item in flight as the delivery loop does: done with an attempt log, and
/// every third one dead with an error too.
async fn settle_all(store: &Store<JournalBackend>, keys: &[u64]) {
    let updates = keys
        .iter()
        .map(|&k| {
            let m = if k % 3 == 0 {
                Move::to(Phase::DEAD).error(error_of(k))
            } else {
                Move::to(Phase::DONE)
            };
            (k, any(m.metadata(attempt_log(k))))
        })
        .collect();
    let results = store.update_many(&qid(), updates).await.unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
}

/// What `notes_read_back_through_replay_checkpoints_and_compaction` left in each item.
fn check(items: &[Item]) {
    for item in items {
        let k = item.key;
        let mut log = attempt_log(k);
        let error = match k {
            1 | 2 => Some(format!("later {k}")),
            3 => {
                log.insert("attempts".to_owned(), "3".to_owned());
                Some(error_of(3))
            }
            _ if k % 3 == 0 => Some(error_of(k)),
            _ => None,
        };
        assert_eq!(item.metadata, log, "metadata of {k}");
        assert_eq!(item.last_error, error, "error of {k}");
        assert_eq!(item.payload, vec![b'p'; 200], "payload of {k}");
    }
}

fn first_segment(dir: &Path) -> String {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("journal-"))
        .collect();
    names.sort();
    names[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_read_back_through_replay_checkpoints_and_compaction() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let store = open(&dir);
    let q = qid();
    store
        .create_queue(QueueConfig::new(q.clone()).with_retention(Retention::Keep))
        .await
        .unwrap();
    for i in 1..=300_u64 {
        let item = NewItem::new(vec![b'p'; 200]).with_metadata("i", i.to_string());
        store.push(&q, item).await.unwrap();
    }
    let claimed = store
        .claim(&q, "w", 300, Duration::from_mins(5))
        .await
        .unwrap();
    let keys: Vec<u64> = claimed.iter().map(|i| i.key).collect();
    settle_all(&store, &keys).await;

    // Setting one of the two keeps the other. An error alone, on items whose note holds an
    // attempt log: by `update_many` (key 1, done) and by `update` (key 2).
    let error_only = |k: u64| {
        let m = Move::to(Phase::DEAD).error(format!("later {k}"));
        (k, any(m))
    };
    let results = store.update_many(&q, vec![error_only(1)]).await.unwrap();
    assert!(results[0].is_ok(), "{results:?}");
    let two = store.update(&q, 2, error_only(2).1).await.unwrap();
    assert_eq!(
        two.metadata,
        attempt_log(2),
        "update returns the carried log"
    );
    assert_eq!(two.last_error.as_deref(), Some("later 2"));
    // Metadata alone, on an item whose note holds an error (key 3), twice in one batch.
    let meta_only = |k: u64, n: &str| {
        let mut log = attempt_log(k);
        log.insert("attempts".to_owned(), n.to_owned());
        let m = Move::to(Phase::DONE).metadata(log);
        (k, any(m))
    };
    let results = store
        .update_many(&q, vec![meta_only(3, "2"), meta_only(3, "3")])
        .await
        .unwrap();
    assert!(results.iter().all(Result::is_ok));
    // A move that sets neither keeps both (key 6: dead with an error and a log).
    store
        .update(
            &q,
            6,
            Transition {
                expect: Expect {
                    phase: Some(Phase::DEAD),
                    lease_owner: None,
                },
                action: Move::to(Phase::PENDING).into(),
            },
        )
        .await
        .unwrap();

    let all = everything(&store).await;
    assert_eq!(all.len(), 300);
    check(&all);

    // Replay (no checkpoint at close) reads the notes where the records put them.
    drop(store);
    let store = open(&dir);
    assert_eq!(everything(&store).await, all);

    // Most items go, so that the older segments are sparse; a checkpoint then compacts
    // them, copying the survivors' blobs and notes forward.
    for item in &all {
        if item.key % 10 != 0 && item.key > 6 {
            assert!(store.delete(&q, item.key).await.unwrap());
        }
    }
    let kept: Vec<Item> = everything(&store).await;
    assert_eq!(kept.len(), 6 + 30);
    check(&kept);
    let oldest = first_segment(&dir);
    store.backend().checkpoint().await.unwrap();
    assert_ne!(
        first_segment(&dir),
        oldest,
        "the oldest segment was compacted away"
    );
    assert_eq!(everything(&store).await, kept);
    // From the checkpoint, and from the checkpoint plus the relocations logged after it.
    drop(store);
    let store = open(&dir);
    assert_eq!(everything(&store).await, kept);
    store.backend().checkpoint().await.unwrap();
    drop(store);
    let store = open(&dir);
    assert_eq!(everything(&store).await, kept);
    // Retention removes them like any item.
    assert_eq!(store.reset(&q).await.unwrap(), 36);
}

/// Flips one byte of the first on-disk copy of `marker`.
fn damage(dir: &Path, marker: &[u8]) {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("journal-")
        })
        .collect();
    names.sort();
    for path in names {
        let mut bytes = fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(marker.len()).position(|w| w == marker) {
            bytes[at + 2] ^= 0x20;
            fs::write(&path, bytes).unwrap();
            return;
        }
    }
    panic!("{} not found on disk", String::from_utf8_lossy(marker));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_note_quarantines_its_item_and_the_rest_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let store = open(&dir);
    let q = qid();
    store
        .create_queue(QueueConfig::new(q.clone()))
        .await
        .unwrap();
    for i in 1..=20_u64 {
        store
            .push(
                &q,
                NewItem::new(b"payload".to_vec()).with_metadata("i", i.to_string()),
            )
            .await
            .unwrap();
    }
    let claimed = store
        .claim(&q, "w", 20, Duration::from_mins(5))
        .await
        .unwrap();
    settle_all(&store, &claimed.iter().map(|i| i.key).collect::<Vec<_>>()).await;
    // Behind a checkpoint, as damage that the log's own checksums no longer see (a damaged
    // record that replay reads is refused at open, or cut off as a torn write at the end).
    store.backend().checkpoint().await.unwrap();
    drop(store);
    damage(&dir, format!("<error {:05}>", 9).as_bytes());

    let store = open(&dir);
    let page = everything(&store).await;
    assert_eq!(page.len(), 20, "the page goes on past the damaged note");
    let bad = store.fetch_key(&q, 9).await.unwrap().unwrap();
    assert_eq!(bad.phase, Phase::CORRUPT);
    let error = bad.last_error.unwrap();
    assert!(
        error.contains("its note") && error.contains("checksum"),
        "{error}"
    );
    assert_eq!(store.count_phase(&q, &Phase::CORRUPT).await.unwrap(), 1);
    for item in page.iter().filter(|i| i.key != 9) {
        assert_eq!(item.metadata, attempt_log(item.key));
    }
    // The quarantine replays, and the item is deleted on its own.
    drop(store);
    let store = open(&dir);
    let again = store.fetch_key(&q, 9).await.unwrap().unwrap();
    assert_eq!(again.phase, Phase::CORRUPT);
    assert!(store.delete(&q, 9).await.unwrap());
    assert_eq!(store.count(&q).await.unwrap(), 19);
}
