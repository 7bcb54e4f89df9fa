//! `update`: metadata, moves between phases (custom ones too), compare-and-set, removal, and
//! what it refuses.

use super::{
    Factory, T0, all, at, backend_with, check_counts, claim, config, counts, get, keys, move_to,
    must_get, ok, only_if, phase, plain, push_n,
};
use crate::{Action, Backend, Error, Move, NewItem, Page, Phase, Selector};

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
