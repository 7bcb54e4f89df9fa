//! Settling: `update` and `update_many` with a lease, as the ack, the nack and the kill use
//! them; each entry of a batch has its own result, and a failed one changes nothing.

use super::{
    Factory, T0, all, at, backend_with, check_counts, claim, config, counts, entry_codes,
    failed_entry_changed_nothing, get, keys, leased, move_to, must_get, ok, only_if, phase, plain,
    push_n, qid,
};
use crate::{Action, Backend, Claim, Error, Key, Move, Phase, QueueId, Timestamp, Transition};

/// Ack, nack and kill (`update` expecting the lease) work for the lease owner only; for anyone
/// else, or an item without a lease, they are `NotLeaseOwner` and change nothing.
#[allow(clippy::too_many_lines)] // one scenario reads best in one piece
pub async fn settling_needs_the_lease_owner<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    push_n(&b, &q, 3, T0).await;
    ok(b.claim(&q, claim("w1", 3, at(1_000)), T0).await, "claim");
    let nack = |at_: Timestamp| {
        Action::Move(Move {
            phase: Phase::PENDING,
            not_before: Some(at_),
            error: Some("HTTP 503".to_owned()),
            metadata: None,
        })
    };
    let kill = Action::Move(Move {
        phase: Phase::DEAD,
        not_before: None,
        error: Some("HTTP 410".to_owned()),
        metadata: None,
    });
    for key in 1..=3 {
        let before = must_get(&b, &q, key).await;
        for action in [
            move_to(Phase::DONE),
            nack(at(100)),
            kill.clone(),
            Action::Remove,
        ] {
            match b.update(&q, key, leased("w2", action), at(1)).await {
                Err(Error::NotLeaseOwner { key: k, owner }) => {
                    assert_eq!((k, owner.as_str()), (key, "w2"), "NotLeaseOwner fields");
                }
                other => panic!(
                    "settling item {key} as a non-owner: expected NotLeaseOwner, got {other:?}"
                ),
            }
        }
        assert_eq!(
            must_get(&b, &q, key).await,
            before,
            "a refused settle must change nothing"
        );
    }
    let acked = ok(
        b.update(&q, 1, leased("w1", move_to(Phase::DONE)), at(2))
            .await,
        "ack",
    );
    assert_eq!(
        (acked.phase.clone(), acked.lease.clone()),
        (Phase::DONE, None),
        "ack: done, lease dropped"
    );
    assert_eq!(acked.updated_at, at(2));
    let nacked = ok(
        b.update(&q, 2, leased("w1", nack(at(100))), at(3)).await,
        "nack",
    );
    assert_eq!(
        nacked.phase,
        Phase::PENDING,
        "nack returns the item to pending"
    );
    assert_eq!(nacked.not_before, at(100), "nack sets the retry time");
    assert_eq!(
        nacked.last_error.as_deref(),
        Some("HTTP 503"),
        "nack records the error"
    );
    assert_eq!(nacked.lease, None, "nack drops the lease");
    assert_eq!(nacked.attempts, 1, "nack keeps the attempt count");
    let killed = ok(b.update(&q, 3, leased("w1", kill), at(4)).await, "kill");
    assert_eq!(killed.phase, Phase::DEAD);
    assert_eq!(killed.last_error.as_deref(), Some("HTTP 410"));
    assert_eq!(killed.lease, None);
    for key in 1..=3 {
        assert_err!(
            b.update(&q, key, leased("w1", move_to(Phase::DONE)), at(5))
                .await,
            Error::NotLeaseOwner { .. },
            "settling item {key} again after it was settled"
        );
    }
    assert_eq!(
        ok(b.count(&q).await, "count"),
        counts(&[(&Phase::DONE, 1), (&Phase::PENDING, 1), (&Phase::DEAD, 1)])
    );
    assert!(
        ok(
            b.claim(&q, claim("w1", 5, at(1_000)), at(99)).await,
            "claim"
        )
        .is_empty(),
        "a nacked item is not due before its retry time"
    );
    let again = ok(
        b.claim(&q, claim("w1", 5, at(1_000)), at(100)).await,
        "claim",
    );
    assert_eq!(
        keys(&again),
        vec![2],
        "a nacked item is claimed again at its retry time"
    );
    assert_eq!(
        again[0].attempts, 2,
        "the second claim counts a second attempt"
    );
}

/// `update_many` applies each entry as `update` would, in order (a repeated key sees the
/// entry before it), gives each its own result, and fails as a whole only for a missing
/// queue; an empty batch changes nothing.
pub async fn update_many_settles_each_entry_like_update<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    push_n(&b, &q, 8, T0).await;
    ok(b.claim(&q, claim("w1", 6, at(1_000)), T0).await, "claim");
    let with_meta =
        Move::to(Phase::DEAD)
            .error("HTTP 410")
            .metadata(std::collections::BTreeMap::from([(
                "why".to_owned(),
                "gone".to_owned(),
            )]));
    let batch = vec![
        (1, leased("w1", move_to(Phase::DONE))),
        (2, leased("w2", move_to(Phase::DONE))),
        (3, leased("w1", Action::Remove)),
        (4, leased("w1", move_to(Phase::DONE))),
        (4, leased("w1", move_to(Phase::DONE))),
        (99, leased("w1", move_to(Phase::DONE))),
        (5, leased("w1", with_meta.into())),
        (7, only_if(Phase::PENDING, move_to(phase("parked")))),
        (8, only_if(Phase::DEAD, move_to(Phase::PENDING))),
        (6, plain(move_to(Phase::IN_FLIGHT))),
    ];
    let codes = entry_codes(&ok(b.update_many(&q, batch, at(7)).await, "update_many"));
    assert_eq!(
        codes,
        [
            "ok",
            "not_lease_owner",
            "ok",
            "ok",
            "not_lease_owner",
            "item_not_found",
            "ok",
            "ok",
            "phase_conflict",
            "invalid_input",
        ],
        "one result per entry, in order"
    );
    let done = must_get(&b, &q, 1).await;
    assert_eq!(
        (
            done.key,
            done.phase.clone(),
            done.lease.clone(),
            done.updated_at
        ),
        (1, Phase::DONE, None, at(7)),
        "an entry that succeeded is applied"
    );
    assert_eq!(done.payload, b"item-0", "with its payload kept");
    assert!(get(&b, &q, 3).await.is_none(), "a removal removes");
    let killed = must_get(&b, &q, 5).await;
    assert_eq!(
        (killed.phase.clone(), killed.last_error.as_deref()),
        (Phase::DEAD, Some("HTTP 410"))
    );
    assert_eq!(killed.metadata.get("why").map(String::as_str), Some("gone"));
    assert_eq!(must_get(&b, &q, 7).await.phase, phase("parked"));
    failed_entry_changed_nothing(&b, &q, 2).await;
    check_counts(&b, &q, "update_many").await;
    let before = all(&b, &q).await;
    assert!(
        ok(
            b.update_many(&q, Vec::new(), at(8)).await,
            "empty update_many"
        )
        .is_empty(),
        "an empty batch has no results"
    );
    assert_eq!(all(&b, &q).await, before, "an empty batch changes nothing");
    assert_err!(
        b.update_many(&qid("nope"), vec![(1, plain(Action::Remove))], at(9))
            .await,
        Error::QueueNotFound(_),
        "update_many on a missing queue"
    );
    assert_err!(
        b.update_many(&qid("nope"), Vec::new(), at(9)).await,
        Error::QueueNotFound(_),
        "an empty update_many on a missing queue"
    );
}

/// The kill both batch properties give an item: `dead`, with an error and new metadata.
fn kill_move() -> Move {
    Move::to(Phase::DEAD)
        .error("HTTP 500")
        .metadata(std::collections::BTreeMap::from([(
            "attempts".to_owned(),
            "3".to_owned(),
        )]))
}

/// Item `key` got [`kill_move`] in a batch at `at(7)`: all of it, and its lease dropped.
async fn assert_killed<B: Backend>(b: &B, q: &QueueId, key: Key) {
    let killed = must_get(b, q, key).await;
    assert_eq!(
        (
            killed.phase.clone(),
            killed.last_error.as_deref(),
            killed.lease.clone(),
            killed.updated_at
        ),
        (Phase::DEAD, Some("HTTP 500"), None, at(7)),
        "a kill in a batch"
    );
    assert_eq!(
        killed.metadata.get("attempts").map(String::as_str),
        Some("3"),
        "a kill in a batch replaces the metadata"
    );
}

/// Item `key`, claimed once, was moved back to pending due at `at(50)` in a batch.
async fn assert_retried<B: Backend>(b: &B, q: &QueueId, key: Key) {
    let retried = must_get(b, q, key).await;
    assert_eq!(
        (
            retried.phase.clone(),
            retried.not_before,
            retried.lease.clone(),
            retried.attempts
        ),
        (Phase::PENDING, at(50), None, 1),
        "a move to pending takes its not-before time and keeps the attempt count"
    );
}

/// A batch of moves only, each key once, each entry expecting a phase (the ack and the
/// delivery loop's outcomes; a backend may apply such a batch by a path of its own): each
/// entry still gets its own result in the order given, whatever order the keys come in,
/// a failed one changes nothing, and the counts follow.
pub async fn update_many_of_moves_reports_each_failed_entry<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    push_n(&b, &q, 8, T0).await;
    ok(b.claim(&q, claim("w1", 6, at(1_000)), T0).await, "claim");
    let later = Move::to(Phase::PENDING).not_before(at(50));
    let batch = vec![
        (5, leased("w1", kill_move().into())),
        (2, leased("w2", move_to(Phase::DONE))),
        (1, leased("w1", move_to(Phase::DONE))),
        (99, leased("w1", move_to(Phase::DONE))),
        (7, only_if(Phase::PENDING, move_to(phase("parked")))),
        (8, only_if(Phase::DEAD, move_to(Phase::PENDING))),
        (3, leased("w1", later.into())),
        (4, leased("w1", move_to(Phase::PENDING))),
    ];
    let codes = entry_codes(&ok(b.update_many(&q, batch, at(7)).await, "update_many"));
    assert_eq!(
        codes,
        [
            "ok",
            "not_lease_owner",
            "ok",
            "item_not_found",
            "ok",
            "phase_conflict",
            "ok",
            "ok"
        ],
        "one result per entry, in the order given"
    );
    assert_killed(&b, &q, 5).await;
    assert_retried(&b, &q, 3).await;
    let now_due = must_get(&b, &q, 4).await;
    assert_eq!(
        (now_due.not_before, now_due.updated_at),
        (at(7), at(7)),
        "without one, it is due at once"
    );
    assert_eq!(must_get(&b, &q, 7).await.phase, phase("parked"));
    failed_entry_changed_nothing(&b, &q, 2).await;
    check_counts(&b, &q, "a batch of moves with failures").await;
    let results = ok(
        b.update_many(
            &q,
            vec![
                (6, leased("w1", move_to(Phase::DONE))),
                (2, leased("w1", move_to(Phase::DONE))),
            ],
            at(8),
        )
        .await,
        "update_many",
    );
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(must_get(&b, &q, 6).await.phase, Phase::DONE);
    check_counts(&b, &q, "a batch of moves that all apply").await;
}

/// A batch in which every entry expects a lease of one owner, each key once (the ack and
/// the delivery loop's outcomes: a backend may apply such a batch in one statement, checking
/// the lease as it writes instead of reading the items first). An entry whose lease is
/// someone else's, whose item has no lease or does not exist fails alone and changes
/// nothing; the others apply with all a move carries (error, metadata, not-before); the
/// counts follow. The same for a batch of removals.
pub async fn update_many_of_one_owners_leases_reports_each_failed_entry<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    push_n(&b, &q, 10, T0).await;
    // 1-4 and 7-8 leased to w1, 5-6 to w2, 9-10 pending.
    for (owner, n) in [("w1", 4), ("w2", 2), ("w1", 2)] {
        let got = ok(b.claim(&q, claim(owner, n, at(1_000)), T0).await, "claim");
        assert_eq!(got.len(), n, "claim for {owner}");
    }
    let batch = vec![
        (4, leased("w1", kill_move().into())),
        (5, leased("w1", move_to(Phase::DONE))),
        (1, leased("w1", move_to(Phase::DONE))),
        (99, leased("w1", move_to(Phase::DONE))),
        (9, leased("w1", move_to(Phase::DONE))),
        (
            3,
            leased("w1", Move::to(Phase::PENDING).not_before(at(50)).into()),
        ),
        (2, leased("w1", move_to(phase("parked")))),
    ];
    let codes = entry_codes(&ok(b.update_many(&q, batch, at(7)).await, "update_many"));
    assert_eq!(
        codes,
        [
            "ok",
            "not_lease_owner",
            "ok",
            "item_not_found",
            "not_lease_owner",
            "ok",
            "ok"
        ],
        "one result per entry, in the order given"
    );
    assert_killed(&b, &q, 4).await;
    assert_retried(&b, &q, 3).await;
    assert_eq!(must_get(&b, &q, 1).await.phase, Phase::DONE);
    assert_eq!(must_get(&b, &q, 2).await.phase, phase("parked"));
    failed_entry_changed_nothing(&b, &q, 5).await;
    let waiting = must_get(&b, &q, 9).await;
    assert_eq!(
        (waiting.phase.clone(), waiting.updated_at),
        (Phase::PENDING, T0),
        "an entry for an item without a lease changes nothing"
    );
    check_counts(&b, &q, "a batch of one owner's moves with failures").await;
    let removals = [8, 6, 10, 7, 98]
        .into_iter()
        .map(|key| (key, leased("w1", Action::Remove)))
        .collect();
    let codes = entry_codes(&ok(
        b.update_many(&q, removals, at(8)).await,
        "update_many of removals",
    ));
    assert_eq!(
        codes,
        [
            "ok",
            "not_lease_owner",
            "not_lease_owner",
            "ok",
            "item_not_found"
        ],
        "one result per removal, in the order given"
    );
    assert!(get(&b, &q, 7).await.is_none() && get(&b, &q, 8).await.is_none());
    failed_entry_changed_nothing(&b, &q, 6).await;
    assert_eq!(must_get(&b, &q, 10).await.phase, Phase::PENDING);
    check_counts(&b, &q, "a batch of one owner's removals with failures").await;
    one_owners_large_batch(&b, &q).await;
}

/// The end of [`update_many_of_one_owners_leases_reports_each_failed_entry`]: the same in a
/// batch of 103 entries in no particular order (a backend may take another way for large
/// batches). Items 5 and 6 are still leased to w2, 9 and 10 pending.
async fn one_owners_large_batch<B: Backend>(b: &B, q: &QueueId) {
    push_n(b, q, 100, T0).await;
    let claimed = ok(b.claim(q, claim("w1", 100, at(1_000)), T0).await, "claim");
    assert_eq!(claimed.len(), 100, "9, 10 and 11-108 leased to w1");
    let outcome = |i: usize| match i % 4 {
        0 => move_to(Phase::DONE),
        1 => Move::to(Phase::PENDING).not_before(at(60)).into(),
        2 => kill_move().into(),
        _ => Action::Remove,
    };
    let mut batch: Vec<(Key, Transition)> = claimed
        .iter()
        .rev()
        .enumerate()
        .map(|(i, item)| (item.key, leased("w1", outcome(i))))
        .collect();
    let failing = [
        (10, 5, "not_lease_owner"),
        (50, 999, "item_not_found"),
        (90, 109, "not_lease_owner"),
    ];
    for (place, key, _) in failing {
        batch.insert(place, (key, leased("w1", move_to(Phase::DONE))));
    }
    let codes = entry_codes(&ok(b.update_many(q, batch, at(9)).await, "update_many"));
    for (place, code) in codes.iter().enumerate() {
        let expected = failing
            .iter()
            .find(|(p, _, _)| *p == place)
            .map_or("ok", |(_, _, code)| *code);
        assert_eq!(*code, expected, "entry {place} of a batch of 103");
    }
    for (i, item) in claimed.iter().rev().enumerate() {
        let now = get(b, q, item.key).await;
        let seen = now.as_ref().map(|n| {
            let error = n.last_error.as_deref().map(str::to_owned);
            (n.phase.clone(), n.lease.is_none(), n.updated_at, error)
        });
        let expected = match i % 4 {
            0 => Some((Phase::DONE, true, at(9), None)),
            1 => Some((Phase::PENDING, true, at(9), None)),
            2 => Some((Phase::DEAD, true, at(9), Some("HTTP 500".to_owned()))),
            _ => None,
        };
        assert_eq!(seen, expected, "item {} after a batch of 103", item.key);
        if i % 4 == 1 {
            let not_before = now.as_ref().map(|n| n.not_before);
            assert_eq!(not_before, Some(at(60)), "its not-before");
        }
        if i % 4 == 2 {
            let attempts = now.as_ref().and_then(|n| n.metadata.get("attempts"));
            assert_eq!(attempts.map(String::as_str), Some("3"), "its new metadata");
        }
    }
    failed_entry_changed_nothing(b, q, 5).await;
    let waiting = must_get(b, q, 109).await;
    assert_eq!((waiting.phase, waiting.updated_at), (Phase::PENDING, T0));
    check_counts(b, q, "a batch of 103 of one owner's entries with failures").await;
    one_owners_uniform_batches(b, q).await;
}

/// The end of [`one_owners_large_batch`]: large batches of one owner's entries that all do
/// the same thing and nothing more, as an `ack_many` does (a backend may take yet another
/// way for those): all to `done`, all back to `pending` (due at once, the lease gone), all
/// removed, each with an entry for someone else's lease and one for a missing item among
/// them. Item 5 is still leased to w2.
async fn one_owners_uniform_batches<B: Backend>(b: &B, q: &QueueId) {
    push_n(b, q, 120, T0).await;
    let claimed = ok(b.claim(q, claim("w1", 120, at(1_000)), T0).await, "claim");
    assert_eq!(claimed.len(), 120, "109 and the 119 new items leased to w1");
    let cases = [
        ("done", Some(Phase::DONE)),
        ("pending", Some(Phase::PENDING)),
        ("removed", None),
    ];
    for ((what, phase), chunk) in cases.into_iter().zip(claimed.chunks(40)) {
        let action = phase.clone().map_or(Action::Remove, move_to);
        let mut batch: Vec<(Key, Transition)> = chunk
            .iter()
            .map(|item| (item.key, leased("w1", action.clone())))
            .collect();
        batch.insert(7, (5, leased("w1", action.clone())));
        batch.insert(30, (9999, leased("w1", action.clone())));
        let codes = entry_codes(&ok(b.update_many(q, batch, at(10)).await, what));
        for (place, code) in codes.iter().enumerate() {
            let expected = match place {
                7 => "not_lease_owner",
                30 => "item_not_found",
                _ => "ok",
            };
            assert_eq!(*code, expected, "entry {place} of the batch of {what}");
        }
        for item in chunk {
            let now = get(b, q, item.key).await;
            let seen = now.map(|n| (n.phase, n.lease.is_none(), n.updated_at, n.not_before));
            let expected = phase.clone().map(|p| {
                let not_before = if p == Phase::PENDING {
                    at(10)
                } else {
                    item.not_before
                };
                (p, true, at(10), not_before)
            });
            assert_eq!(
                seen, expected,
                "item {} after the batch of {what}",
                item.key
            );
        }
        failed_entry_changed_nothing(b, q, 5).await;
        check_counts(b, q, &format!("a batch of one owner's entries, all {what}")).await;
    }
}

/// What `update_many` returned survives a reopen (for durable backends).
pub async fn update_many_survives_reopen<F: Factory>(f: &F) {
    if !f.durable() {
        return;
    }
    let (b, q) = backend_with(f, config("orders")).await;
    push_n(&b, &q, 300, T0).await;
    let leased_items = ok(b.claim(&q, claim("w1", 200, at(1_000)), T0).await, "claim");
    let batch: Vec<(Key, Transition)> = leased_items
        .iter()
        .map(|i| (i.key, leased("w1", move_to(Phase::DONE))))
        .collect();
    let results = ok(b.update_many(&q, batch, at(5)).await, "update_many");
    assert!(results.iter().all(Result::is_ok), "every ack succeeds");
    let before = all(&b, &q).await;
    let b = f.reopen(b).await;
    assert_eq!(
        all(&b, &q).await,
        before,
        "the batch is all there after reopen"
    );
    assert_eq!(
        ok(b.count(&q).await, "count"),
        counts(&[(&Phase::DONE, 200), (&Phase::PENDING, 100)])
    );
}

/// A claim that need not be durable on return ([`Claim::durable`] `false`) is a claim like
/// any other: the same items, leases, attempts and counts, and the next durable write makes
/// it durable (it survives a reopen).
pub async fn claim_without_sync_is_a_claim_made_durable_by_the_next_write<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    push_n(&b, &q, 4, T0).await;
    let lazy = Claim {
        durable: false,
        ..claim("w1", 3, at(60_000))
    };
    let got = ok(b.claim(&q, lazy, at(5)).await, "claim without sync");
    assert_eq!(keys(&got), vec![1, 2, 3], "the oldest due items, in order");
    for item in &got {
        assert_eq!(item.phase, Phase::IN_FLIGHT);
        assert_eq!(item.attempts, 1, "the attempt is counted");
        assert_eq!(
            item.lease.as_ref().map(|l| (l.owner.as_str(), l.until)),
            Some(("w1", at(60_000)))
        );
        assert_eq!(
            *item,
            must_get(&b, &q, item.key).await,
            "stored as returned"
        );
    }
    assert_eq!(
        ok(b.count(&q).await, "count"),
        counts(&[(&Phase::IN_FLIGHT, 3), (&Phase::PENDING, 1)])
    );
    let again = ok(
        b.claim(&q, claim("w2", 10, at(60_000)), at(6)).await,
        "claim",
    );
    assert_eq!(
        keys(&again),
        vec![4],
        "what was claimed is not handed out again"
    );
    // A durable write after it: the ack of one of the items.
    let acked = ok(
        b.update_many(&q, vec![(1, leased("w1", move_to(Phase::DONE)))], at(7))
            .await,
        "update_many",
    );
    assert!(acked.iter().all(Result::is_ok), "the lease holder acks");
    if !f.durable() {
        return;
    }
    let before = all(&b, &q).await;
    let b = f.reopen(b).await;
    assert_eq!(
        all(&b, &q).await,
        before,
        "the claim without sync, and what followed it, after reopen"
    );
}

/// When a lease runs out and another consumer claims the item, the first owner's ack is `NotLeaseOwner`.
pub async fn reclaimed_item_rejects_the_old_owner<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    push_n(&b, &q, 1, T0).await;
    ok(b.claim(&q, claim("w1", 1, at(100)), T0).await, "claim");
    let got = ok(b.claim(&q, claim("w2", 1, at(500)), at(100)).await, "claim");
    assert_eq!(keys(&got), vec![1], "a lease with until == now has expired");
    assert_eq!(
        got[0].attempts, 2,
        "the expired lease counted as an attempt"
    );
    assert_eq!(got[0].lease.as_ref().map(|l| l.owner.as_str()), Some("w2"));
    assert_err!(
        b.update(&q, 1, leased("w1", move_to(Phase::DONE)), at(101))
            .await,
        Error::NotLeaseOwner { .. },
        "ack by the consumer whose lease ran out"
    );
    assert_eq!(
        must_get(&b, &q, 1).await.phase,
        Phase::IN_FLIGHT,
        "the refused ack changed nothing"
    );
    ok(
        b.update(&q, 1, leased("w2", move_to(Phase::DONE)), at(102))
            .await,
        "ack by the new owner",
    );
    assert_eq!(must_get(&b, &q, 1).await.phase, Phase::DONE);
}
