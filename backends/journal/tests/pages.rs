//! Pages of one phase stop walking the slots once no item of the phase can be left (at once
//! for an empty phase, after the phase's count from an end of the queue, below the phase's
//! lowest possible key walking down), and still return exactly what the reference memory
//! backend returns: every combination of phase, direction, cursor, offset and limit, on a
//! queue whose phases were reshuffled after a retention pass had raised a phase's lowest
//! possible key, and again after a reopen.

// Helpers outside `#[test]` functions unwrap too: a test fails by panicking.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use hookspool::{
    Backend, ManualClock, MemoryBackend, NewItem, Page, Phase, QueueConfig, QueueId, Retain, Store,
    Timestamp,
};
use hookspool_journal::JournalBackend;

const N: u64 = 300;

/// The same steps on any store: 300 items; every 7th done, every 11th dead; a retention
/// pass that removes the old done items (raising the journal's lowest possible key of
/// `done`); then low keys moved into `done` and `dead` again, and a custom phase.
async fn scenario<B: Backend>(store: &Store<B>, clock: &ManualClock, q: &QueueId) {
    let retain = Retain {
        done: Some(Duration::from_mins(1)),
        ..Retain::default()
    };
    store
        .create_queue(QueueConfig::new(q.clone()).with_retain(retain))
        .await
        .unwrap();
    let items = (0..N)
        .map(|i| NewItem::new(i.to_le_bytes().to_vec()))
        .collect();
    let keys = store.push_batch(q, items).await.unwrap();
    for (i, key) in keys.iter().enumerate() {
        if i % 7 == 3 {
            store.update_phase(q, *key, Phase::DONE).await.unwrap();
        } else if i % 11 == 5 {
            store.update_phase(q, *key, Phase::DEAD).await.unwrap();
        }
    }
    clock.advance(Duration::from_mins(2));
    // Newer done items, which the pass keeps.
    for key in &keys[200..210] {
        store.update_phase(q, *key, Phase::DONE).await.unwrap();
    }
    let removed = store.prune(q).await.unwrap();
    assert!(removed[&Phase::DONE] > 0, "{removed:?}");
    // A low key enters `done` after the pass: below where the pass stopped.
    store.update_phase(q, keys[1], Phase::DONE).await.unwrap();
    store.update_phase(q, keys[2], Phase::DEAD).await.unwrap();
    let mine = Phase::new("parked").unwrap();
    store.update_phase(q, keys[4], mine.clone()).await.unwrap();
    store.update_phase(q, keys[290], mine).await.unwrap();
}

/// Every page shape, on the given store.
async fn pages<B: Backend>(store: &Store<B>, q: &QueueId) -> Vec<Vec<u64>> {
    let phases = [
        None,
        Some(Phase::PENDING),
        Some(Phase::DONE),
        Some(Phase::DEAD),
        Some(Phase::EXPIRED),
        Some(Phase::new("parked").unwrap()),
        Some(Phase::new("never-used").unwrap()),
    ];
    let mut out = Vec::new();
    for phase in &phases {
        for reverse in [false, true] {
            for after in [
                None,
                Some(1),
                Some(2),
                Some(150),
                Some(209),
                Some(299),
                Some(400),
            ] {
                for (offset, limit) in [(0, 1), (0, 5), (3, 4), (0, 1000), (40, 1000)] {
                    let mut page = Page::first(limit).offset(offset);
                    page.after = after;
                    if reverse {
                        page = page.reverse();
                    }
                    if let Some(p) = phase {
                        page = page.phase(p.clone());
                    }
                    let items = store.fetch_page(q, page).await.unwrap();
                    out.push(items.iter().map(|i| i.key).collect());
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn pages_of_one_phase_are_the_reference_ones() {
    let q = QueueId::new("pages").unwrap();
    let start = Timestamp::from_millis(1_000_000);
    let mem_clock = ManualClock::new(start);
    let memory = Store::new(MemoryBackend::new()).with_clock(mem_clock.clone());
    scenario(&memory, &mem_clock, &q).await;
    let expected = pages(&memory, &q).await;

    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start);
    let journal = Store::new(JournalBackend::open(dir.path()).unwrap()).with_clock(clock.clone());
    scenario(&journal, &clock, &q).await;
    assert_eq!(pages(&journal, &q).await, expected);
    drop(journal);
    let reopened = Store::new(JournalBackend::open(dir.path()).unwrap()).with_clock(clock);
    assert_eq!(pages(&reopened, &q).await, expected, "after a reopen");
}
