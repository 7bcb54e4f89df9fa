//! Through `Store`: the consumer protocol, lease expiry, TTLs and dumps as an application
//! sees them.

use std::time::Duration;

use super::{Factory, T0, at, items, keys, ok, qid, store};
use crate::{DUMP_PAGE, Error, Key, NewItem, Phase, QueueConfig, Retention, SweepReport};

/// Through `Store` with a manual clock: claim, ack (kept as done or removed, by retention),
/// nack with a retry time, kill and replay behave as documented.
pub async fn store_consumer_protocol_round_trip<F: Factory>(f: &F) {
    let (s, clock) = store(f.create().await);
    let q = ok(
        s.create_queue(QueueConfig::new(qid("orders"))).await,
        "create_queue",
    )
    .id;
    let r = ok(
        s.create_queue(QueueConfig::new(qid("fire-and-forget")).with_retention(Retention::Remove))
            .await,
        "create_queue",
    )
    .id;
    assert_eq!(
        ok(s.queue(&q).await, "queue").map(|c| c.created_at),
        Some(T0),
        "create_queue stamps created_at with the clock"
    );
    ok(s.push_batch(&q, items(3, "job")).await, "push_batch");
    let got = ok(
        s.claim(&q, "w1", 10, Duration::from_secs(30)).await,
        "claim",
    );
    assert_eq!(keys(&got), vec![1, 2, 3]);
    assert_eq!(
        got[0].lease.as_ref().map(|l| l.until),
        Some(at(30_000)),
        "lease = now + duration"
    );
    ok(s.ack(&q, 1, "w1").await, "ack");
    ok(s.nack(&q, 2, "w1", at(10_000), "HTTP 500").await, "nack");
    ok(s.kill(&q, 3, "w1", "HTTP 404").await, "kill");
    assert_eq!(
        ok(s.count_phase(&q, &Phase::DONE).await, "count"),
        1,
        "ack keeps the item as done"
    );
    assert_eq!(ok(s.count_phase(&q, &Phase::DEAD).await, "count"), 1);
    assert!(
        ok(
            s.claim(&q, "w1", 10, Duration::from_secs(30)).await,
            "claim"
        )
        .is_empty(),
        "the nacked item waits"
    );
    clock.advance(Duration::from_secs(10));
    let retry = ok(
        s.claim(&q, "w2", 10, Duration::from_secs(30)).await,
        "claim",
    );
    assert_eq!(
        keys(&retry),
        vec![2],
        "the nacked item is due at its retry time"
    );
    assert_eq!(retry[0].attempts, 2);
    assert_eq!(retry[0].last_error.as_deref(), Some("HTTP 500"));
    let replayed = ok(s.replay(&q, 3).await, "replay");
    assert_eq!(
        (replayed.phase, replayed.not_before),
        (Phase::PENDING, at(10_000)),
        "replay makes a dead item due now"
    );

    ok(s.push(&r, NewItem::new(b"x".to_vec())).await, "push");
    ok(s.claim(&r, "w1", 1, Duration::from_secs(5)).await, "claim");
    ok(s.ack(&r, 1, "w1").await, "ack");
    assert_eq!(
        ok(s.fetch_key(&r, 1).await, "fetch_key"),
        None,
        "ack with Retention::Remove removes the item"
    );
    assert_eq!(ok(s.count(&r).await, "count"), 0);
}

/// Through `Store`: once a lease runs out the next consumer gets the item (attempt counted) and
/// the first consumer's ack is `NotLeaseOwner`.
pub async fn store_lease_expiry_hands_the_item_to_the_next_consumer<F: Factory>(f: &F) {
    let (s, clock) = store(f.create().await);
    let q = ok(
        s.create_queue(QueueConfig::new(qid("orders"))).await,
        "create_queue",
    )
    .id;
    ok(s.push(&q, NewItem::new(b"job".to_vec())).await, "push");
    ok(s.claim(&q, "w1", 1, Duration::from_secs(5)).await, "claim");
    clock.advance(Duration::from_millis(4_999));
    assert!(
        ok(s.claim(&q, "w2", 1, Duration::from_secs(5)).await, "claim").is_empty(),
        "the lease is still live"
    );
    clock.advance(Duration::from_millis(1));
    let got = ok(s.claim(&q, "w2", 1, Duration::from_secs(5)).await, "claim");
    assert_eq!(
        keys(&got),
        vec![1],
        "the expired lease is handed to the next consumer"
    );
    assert_eq!(
        got[0].attempts, 2,
        "the expired lease counted as an attempt"
    );
    assert_err!(
        s.ack(&q, 1, "w1").await,
        Error::NotLeaseOwner { .. },
        "ack by the old owner"
    );
    ok(s.ack(&q, 1, "w2").await, "ack by the new owner");
    assert_eq!(ok(s.count_phase(&q, &Phase::DONE).await, "count"), 1);
    clock.advance(Duration::from_mins(1));
    assert_eq!(
        ok(s.sweep(&q).await, "sweep"),
        SweepReport::default(),
        "a settled item has no lease to expire"
    );
}

/// Through `Store`: `pop` and `claim` skip items past the queue's TTL, which are counted as expired.
pub async fn store_pop_and_claim_skip_ttl_expired_items<F: Factory>(f: &F) {
    let (s, clock) = store(f.create().await);
    let config = QueueConfig::new(qid("orders")).with_ttl(Duration::from_mins(1));
    let q = ok(s.create_queue(config).await, "create_queue").id;
    ok(s.push_batch(&q, items(2, "old")).await, "push");
    clock.advance(Duration::from_secs(30));
    ok(s.push_batch(&q, items(2, "new")).await, "push");
    clock.advance(Duration::from_secs(30));
    let head = ok(s.pop(&q).await, "pop");
    assert_eq!(
        head.map(|i| i.key),
        Some(3),
        "pop skips the items past their TTL"
    );
    assert_eq!(
        ok(s.count_phase(&q, &Phase::EXPIRED).await, "count"),
        2,
        "they are counted as expired"
    );
    clock.advance(Duration::from_secs(30));
    assert!(
        ok(s.claim(&q, "w", 10, Duration::from_secs(5)).await, "claim").is_empty(),
        "claim skips them too"
    );
    assert_eq!(ok(s.count_phase(&q, &Phase::EXPIRED).await, "count"), 3);
    assert_eq!(ok(s.pop(&q).await, "pop"), None, "nothing pending is left");
}

/// Through `Store`: `dump` pages through more than two `DUMP_PAGE`s, returning every item once, in key order.
pub async fn store_dump_returns_every_item_once<F: Factory>(f: &F) {
    let n = 2 * DUMP_PAGE + 7;
    let (s, _clock) = store(f.create().await);
    let q = ok(
        s.create_queue(QueueConfig::new(qid("orders"))).await,
        "create_queue",
    )
    .id;
    ok(s.push_batch(&q, items(n, "d")).await, "push_batch");
    ok(s.claim(&q, "w", 10, Duration::from_secs(5)).await, "claim");
    let mut dump = s.dump(&q);
    let mut seen = Vec::new();
    let mut pages = 0;
    while let Some(page) = ok(dump.next_page().await, "dump") {
        assert!(
            page.len() <= DUMP_PAGE,
            "a dump page holds at most DUMP_PAGE items"
        );
        pages += 1;
        seen.extend(page.into_iter().map(|i| i.key));
    }
    let expected: Vec<Key> = (1..=n as u64).collect();
    assert_eq!(
        seen, expected,
        "dump returns every item exactly once, in key order, whatever its phase"
    );
    assert_eq!(pages, 3, "{n} items take three pages");
    assert_eq!(
        ok(dump.next_page().await, "dump"),
        None,
        "a finished dump stays finished"
    );
}
