//! Items: push assigns keys and fields, fetch reads without changing, pop removes exactly
//! what it returns, counts match the contents after every change, reset empties a queue.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::{
    Factory, T0, all, at, backend_with, check_counts, claim, config, counts, items, keys, leased,
    move_to, must_get, ok, only_if, phase, plain, push_n, qid, select,
};
use crate::{
    Action, Backend, Item, Key, Move, NewItem, Page, Phase, PhaseCounts, Selector, Timestamp,
};

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
