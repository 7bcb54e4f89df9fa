//! Durability: everything a backend acknowledged is there after a reopen.

use std::time::Duration;

use super::{
    Factory, T0, all, at, check_counts, claim, config, leased, move_to, ok, phase, plain, push_n,
    qid,
};
use crate::{Action, Backend, Error, Move, NewItem, Phase, Retention, Selector};

/// After `Factory::reopen`, everything is as it was: queue settings, deleted queues, items with
/// every field and phase, leases, counts and key counters. (Trivial for a non-durable factory,
/// whose `reopen` returns the same backend.)
#[allow(clippy::too_many_lines)] // one scenario reads best in one piece
pub async fn reopen_keeps_everything<F: Factory>(f: &F) {
    let b = f.create().await;
    let full = config("orders")
        .with_metadata("secret", "whsec_durable")
        .with_ttl(Duration::from_hours(1))
        .with_retention(Retention::Remove)
        .with_metadata("team", "payments");
    let other = config("other");
    ok(b.create_queue(full.clone()).await, "create_queue");
    ok(b.create_queue(other.clone()).await, "create_queue");
    ok(b.create_queue(config("gone")).await, "create_queue");
    let (q, o) = (full.id.clone(), other.id.clone());
    let batch = vec![
        NewItem::new(b"{\"id\":1}".to_vec()).with_metadata("event", "order.created"),
        NewItem::new(vec![0, 255, 1]),
        NewItem::new(b"three".to_vec()).not_before(at(7_000)),
        NewItem::new(b"four".to_vec()),
        NewItem::new(b"five".to_vec()),
        NewItem::new(b"six".to_vec()),
    ];
    ok(b.push(&q, batch, T0).await, "push");
    push_n(&b, &o, 3, T0).await;
    ok(
        b.claim(&q, claim("w1", 2, at(60_000)), at(1)).await,
        "claim",
    );
    let nack = Action::Move(Move {
        phase: Phase::PENDING,
        not_before: Some(at(2_000)),
        error: Some("timeout".to_owned()),
        metadata: None,
    });
    ok(b.update(&q, 2, leased("w1", nack), at(2)).await, "nack");
    ok(
        b.update(&q, 4, plain(move_to(phase("review"))), at(3))
            .await,
        "update",
    );
    ok(b.pop(&q, &Selector::Key(6)).await, "pop newest");
    ok(b.pop(&o, &Selector::Key(1)).await, "pop");
    ok(b.reset(&o).await, "reset");
    ok(b.delete_queue(&qid("gone")).await, "delete_queue");

    let queues = ok(b.list_queues().await, "list_queues");
    let items_q = all(&b, &q).await;
    let counts_q = ok(b.count(&q).await, "count");
    let b = f.reopen(b).await;
    let durable = if f.durable() {
        "durable"
    } else {
        "non-durable"
    };
    assert_eq!(
        ok(b.list_queues().await, "list_queues"),
        queues,
        "queue settings after reopen ({durable})"
    );
    assert_eq!(
        ok(b.get_queue(&q).await, "get_queue"),
        Some(full),
        "every setting survives reopen"
    );
    assert_eq!(
        ok(b.get_queue(&qid("gone")).await, "get_queue"),
        None,
        "a deleted queue stays deleted"
    );
    assert_eq!(
        all(&b, &q).await,
        items_q,
        "items (every field, phase and lease) after reopen ({durable})"
    );
    assert_eq!(
        ok(b.count(&q).await, "count"),
        counts_q,
        "counts after reopen ({durable})"
    );
    check_counts(&b, &q, "reopen").await;
    assert!(
        all(&b, &o).await.is_empty(),
        "a reset queue stays empty after reopen"
    );
    assert_eq!(
        push_n(&b, &q, 1, at(5)).await,
        vec![7],
        "the key counter survives reopen"
    );
    assert_eq!(
        push_n(&b, &o, 1, at(5)).await,
        vec![4],
        "a reset queue's key counter survives reopen"
    );
    assert_err!(
        b.update(&q, 1, leased("w2", move_to(Phase::DONE)), at(6))
            .await,
        Error::NotLeaseOwner { .. },
        "the lease survives reopen"
    );
    ok(
        b.update(&q, 1, leased("w1", Action::Remove), at(6)).await,
        "ack by the owner after reopen",
    );
    let report = ok(b.sweep(&q, at(60_000)).await, "sweep");
    assert_eq!(report.released, 0, "no lease is left to run out");
    let again = f.reopen(b).await;
    check_counts(&again, &q, "a second reopen").await;
}
