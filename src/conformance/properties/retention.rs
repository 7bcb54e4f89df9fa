//! Retention: a queue's [`Retain`] periods are stored like its other settings, and
//! `Backend::prune` removes what is old enough in a phase, in key order, and no more.

use std::time::Duration;

use super::{Factory, move_to, phase, qid};
use super::{
    T0, all, at, backend_with, check_counts, config, get, must_get, ok, only_if, plain, push_n,
    store,
};
use crate::{Backend, Key, Phase, QueueConfig, QueueId, Retain};

/// A queue's retention periods come back from `get_queue` and `list_queues` exactly as set,
/// after `update_queue` too, and after a reopen; none of them shows in the metadata.
pub async fn queue_settings_keep_retention_periods<F: Factory>(f: &F) {
    let retain = Retain {
        done: Some(Duration::from_hours(72)),
        dead: Some(Duration::from_hours(720)),
        expired: None,
    };
    let full = config("orders")
        .with_retain(retain)
        .with_metadata("team", "payments");
    let (b, q) = backend_with(f, full.clone()).await;
    let got = ok(b.get_queue(&q).await, "get_queue");
    assert_eq!(
        got.as_ref(),
        Some(&full),
        "get_queue must return the retention periods as created, and only the metadata given"
    );
    let changed = full.clone().with_retain(Retain {
        expired: Some(Duration::from_secs(1)),
        ..Retain::FOREVER
    });
    ok(b.update_queue(changed.clone()).await, "update_queue");
    assert_eq!(
        ok(b.list_queues().await, "list_queues"),
        vec![changed.clone()],
        "list_queues must show the periods update_queue set (done and dead now forever)"
    );
    let b = f.reopen(b).await;
    if f.durable() {
        assert_eq!(
            ok(b.get_queue(&q).await, "get_queue after reopen"),
            Some(changed),
            "the retention periods must survive a reopen"
        );
    }
}

/// Moves `key` to `to` at `now` (it must be pending or in a settled phase).
async fn settle_at<B: Backend>(b: &B, q: &QueueId, key: Key, to: &Phase, now: u64) {
    ok(
        b.update(q, key, plain(move_to(to.clone())), at(now)).await,
        "moving an item to a settled phase",
    );
}

/// `prune` removes the items of one phase whose `updated_at ≤ before`, in key order, stops
/// at the first younger one and at `limit`, leaves other phases alone, keeps the counters
/// right, and finds an item that reaches the phase after an earlier prune passed its key.
pub async fn prune_removes_old_items_of_one_phase_in_key_order<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    push_n(&b, &q, 8, T0).await;
    for key in [1, 2, 3] {
        settle_at(&b, &q, key, &Phase::DONE, 100).await;
    }
    settle_at(&b, &q, 4, &Phase::DONE, 300).await; // young: stops the walk
    settle_at(&b, &q, 5, &Phase::DONE, 100).await; // old, but behind key 4
    settle_at(&b, &q, 6, &Phase::DEAD, 100).await; // another phase
    // 7 and 8 stay pending.
    assert_eq!(
        ok(b.prune(&q, &Phase::DONE, at(200), 2).await, "prune"),
        2,
        "prune stops at `limit`"
    );
    assert!(get(&b, &q, 1).await.is_none() && get(&b, &q, 2).await.is_none());
    assert_eq!(
        ok(b.prune(&q, &Phase::DONE, at(200), 100).await, "prune"),
        1,
        "prune removes key 3 and stops at key 4, which reached `done` after `before`"
    );
    for (key, phase) in [(4, Phase::DONE), (5, Phase::DONE), (6, Phase::DEAD)] {
        assert_eq!(
            must_get(&b, &q, key).await.phase,
            phase,
            "key {key} must be kept"
        );
    }
    check_counts(&b, &q, "prune").await;
    assert_eq!(
        ok(b.prune(&q, &Phase::DONE, at(300), 100).await, "prune"),
        2,
        "once key 4 is old enough, keys 4 and 5 go"
    );
    assert_eq!(
        ok(b.prune(&q, &Phase::DONE, at(10_000), 100).await, "prune"),
        0,
        "nothing is left in done"
    );
    // Key 7 reaches `done` after the walks above went past its key.
    settle_at(&b, &q, 7, &Phase::DONE, 400).await;
    assert_eq!(
        ok(b.prune(&q, &Phase::DONE, at(400), 100).await, "prune"),
        1,
        "an item that reached the phase with a key below where the last prune stopped is found"
    );
    assert_eq!(
        ok(b.prune(&q, &Phase::DEAD, at(100), 100).await, "prune"),
        1,
        "dead key 6"
    );
    let left: Vec<Key> = all(&b, &q).await.iter().map(|i| i.key).collect();
    assert_eq!(left, vec![8], "only the pending item is left");
    check_counts(&b, &q, "every prune").await;
    assert_eq!(
        ok(
            b.prune(&q, &phase("never-used"), at(10_000), 10).await,
            "prune"
        ),
        0,
        "a phase the queue never had prunes nothing"
    );
    let gone = qid("gone");
    assert!(
        matches!(
            b.prune(&gone, &Phase::DONE, at(0), 10).await,
            Err(crate::Error::QueueNotFound(_))
        ),
        "prune of a missing queue is QueueNotFound"
    );
}

/// A prune survives a reopen like any removal, and the pruned keys are never reused.
pub async fn prune_is_durable<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    push_n(&b, &q, 3, T0).await;
    for key in [1, 2] {
        ok(
            b.update(
                &q,
                key,
                only_if(Phase::PENDING, move_to(Phase::DEAD)),
                at(5),
            )
            .await,
            "kill",
        );
    }
    assert_eq!(ok(b.prune(&q, &Phase::DEAD, at(5), 10).await, "prune"), 2);
    let b = f.reopen(b).await;
    if f.durable() {
        let left: Vec<Key> = all(&b, &q).await.iter().map(|i| i.key).collect();
        assert_eq!(
            left,
            vec![3],
            "what prune removed stays removed after a reopen"
        );
        check_counts(&b, &q, "a reopen after prune").await;
    }
    assert_eq!(
        push_n(&b, &q, 1, at(10)).await,
        vec![4],
        "keys of pruned items are not reused"
    );
}

/// Through `Store` with a manual clock: `prune` applies the queue's periods (each from the
/// moment an item reached its phase), a queue kept forever loses nothing, and `pruned`
/// counts what went, by phase.
pub async fn store_prune_applies_the_retain_periods<F: Factory>(f: &F) {
    let (s, clock) = store(f.create().await);
    let retain = Retain {
        done: Some(Duration::from_mins(1)),
        dead: Some(Duration::from_mins(10)),
        expired: None,
    };
    let q = ok(
        s.create_queue(QueueConfig::new(qid("jobs")).with_retain(retain))
            .await,
        "create_queue",
    )
    .id;
    let kept = ok(
        s.create_queue(QueueConfig::new(qid("kept"))).await,
        "create_queue",
    )
    .id;
    let keys = ok(s.push_batch(&q, super::items(3, "job")).await, "push");
    ok(s.push_batch(&kept, super::items(1, "job")).await, "push");
    let claimed = ok(s.claim(&q, "w", 3, Duration::from_secs(30)).await, "claim");
    assert_eq!(claimed.len(), 3);
    ok(s.ack(&q, keys[0], "w").await, "ack");
    ok(s.kill(&q, keys[1], "w", "gave up").await, "kill");
    let kept_claim = ok(
        s.claim(&kept, "w", 1, Duration::from_secs(30)).await,
        "claim",
    );
    ok(s.ack(&kept, kept_claim[0].key, "w").await, "ack");
    clock.advance(Duration::from_secs(59));
    assert!(
        ok(s.prune(&q).await, "prune").is_empty(),
        "nothing has been done for 60 s yet"
    );
    clock.advance(Duration::from_secs(1));
    ok(s.ack(&q, keys[2], "w").await, "ack"); // done now: 60 s to go
    let removed = ok(s.prune(&q).await, "prune");
    assert_eq!(
        removed.get(&Phase::DONE),
        Some(&1),
        "the first ack is 60 s old: removed"
    );
    assert_eq!(ok(s.prune_all().await, "prune_all"), 0);
    clock.advance(Duration::from_mins(10));
    assert_eq!(
        ok(s.prune_all().await, "prune_all"),
        2,
        "the second ack (done) and the killed item (dead, 600 s) go; `kept` keeps forever"
    );
    assert_eq!(ok(s.count(&q).await, "count"), 0);
    assert_eq!(ok(s.count(&kept).await, "count"), 1);
    let pruned = s.pruned(&q);
    assert_eq!(
        (pruned.get(&Phase::DONE), pruned.get(&Phase::DEAD)),
        (Some(&2), Some(&1)),
        "pruned counts removals by phase"
    );
    assert!(s.pruned(&kept).is_empty());
}
