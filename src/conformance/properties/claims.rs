//! Claims: order, limits and leases; expired leases and TTLs; a clock that goes backwards.

use std::sync::Arc;
use std::time::Duration;

use super::{
    Factory, T0, at, backend_with, check_counts, claim, config, counts, keys, leased, move_to,
    must_get, ok, phase, plain, push_n,
};
use crate::{Backend, Key, Lease, NewItem, Phase, SweepReport, Timestamp};

/// `claim` hands out due items in `(not_before, key)` order.
pub async fn claim_orders_by_not_before_then_key<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    let batch = vec![
        NewItem::new(b"a".to_vec()).not_before(at(30)),
        NewItem::new(b"b".to_vec()).not_before(at(10)),
        NewItem::new(b"c".to_vec()),
        NewItem::new(b"d".to_vec()).not_before(at(10)),
        NewItem::new(b"e".to_vec()).not_before(at(50)),
        NewItem::new(b"f".to_vec()).not_before(Timestamp(5)),
    ];
    ok(b.push(&q, batch, T0).await, "push");
    let got = ok(
        b.claim(&q, claim("w", 10, at(1_000)), at(40)).await,
        "claim",
    );
    assert_eq!(
        keys(&got),
        vec![6, 3, 2, 4, 1],
        "claim order must be (not_before, key); key 5 is not due"
    );
    let got = ok(
        b.claim(&q, claim("w", 10, at(1_000)), at(50)).await,
        "claim",
    );
    assert_eq!(keys(&got), vec![5], "an item is due when not_before == now");
}

/// `claim` takes at most `limit` items and never one whose `not_before` is in the future.
pub async fn claim_respects_limit_and_not_before<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    push_n(&b, &q, 5, T0).await;
    let later = vec![
        NewItem::new(b"later-1".to_vec()).not_before(at(1_000)),
        NewItem::new(b"later-2".to_vec()).not_before(at(1_000)),
    ];
    ok(b.push(&q, later, T0).await, "push");
    let c = |limit| claim("w", limit, at(10_000));
    assert_eq!(
        keys(&ok(b.claim(&q, c(2), T0).await, "claim")),
        vec![1, 2],
        "limit 2"
    );
    assert!(
        ok(b.claim(&q, c(0), T0).await, "claim").is_empty(),
        "limit 0 claims nothing"
    );
    assert_eq!(
        keys(&ok(b.claim(&q, c(10), at(999)).await, "claim")),
        vec![3, 4, 5],
        "only due items"
    );
    assert!(
        ok(b.claim(&q, c(10), at(999)).await, "claim").is_empty(),
        "nothing due is left"
    );
    assert_eq!(
        keys(&ok(b.claim(&q, c(10), at(1_000)).await, "claim")),
        vec![6, 7],
        "due at not_before"
    );
    check_counts(&b, &q, "claims").await;
}

/// `claim` moves items to `in_flight` with the lease given, `attempts + 1` and `updated_at = now`.
pub async fn claim_sets_lease_and_counts_the_attempt<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    push_n(&b, &q, 3, T0).await;
    let got = ok(
        b.claim(&q, claim("worker-7", 2, at(30_000)), at(5)).await,
        "claim",
    );
    assert_eq!(keys(&got), vec![1, 2]);
    for item in &got {
        assert_eq!(item.phase, Phase::IN_FLIGHT, "a claimed item is in flight");
        assert_eq!(
            item.lease,
            Some(Lease {
                owner: "worker-7".to_owned(),
                until: at(30_000)
            }),
            "a claimed item carries the lease"
        );
        assert_eq!(item.attempts, 1, "claim counts an attempt");
        assert_eq!(item.updated_at, at(5), "claim sets updated_at = now");
        assert_eq!(item.created_at, T0, "claim keeps created_at");
        assert_eq!(
            *item,
            must_get(&b, &q, item.key).await,
            "claim returns the items as stored"
        );
    }
    assert_eq!(
        must_get(&b, &q, 3).await.lease,
        None,
        "an unclaimed item has no lease"
    );
    assert_eq!(
        ok(b.count(&q).await, "count"),
        counts(&[(&Phase::IN_FLIGHT, 2), (&Phase::PENDING, 1)])
    );
}

/// `claim` takes only pending items: never done, dead, expired, custom-phase or in-flight ones.
pub async fn claim_takes_only_pending_items<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    push_n(&b, &q, 6, T0).await;
    for (k, p) in [
        (1, Phase::DONE),
        (2, Phase::DEAD),
        (3, Phase::EXPIRED),
        (4, phase("parked")),
    ] {
        ok(b.update(&q, k, plain(move_to(p)), T0).await, "update");
    }
    assert_eq!(
        keys(&ok(b.claim(&q, claim("w", 1, at(100)), T0).await, "claim")),
        vec![5]
    );
    assert_eq!(
        keys(&ok(
            b.claim(&q, claim("w", 10, at(100)), at(1)).await,
            "claim"
        )),
        vec![6],
        "an in-flight item with a live lease is not claimed again"
    );
    assert!(ok(b.claim(&q, claim("w", 10, at(100)), at(2)).await, "claim").is_empty());
}

/// Concurrent claims never lease one item to two consumers, and lose none.
pub async fn concurrent_claims_never_share_an_item<F: Factory>(f: &F) {
    const ITEMS: usize = 50;
    let (b, q) = backend_with(f, config("orders")).await;
    push_n(&b, &q, ITEMS, T0).await;
    let b = Arc::new(b);
    let mut handles = Vec::new();
    for w in 0..5 {
        let b = Arc::clone(&b);
        let q = q.clone();
        handles.push(tokio::spawn(async move {
            let owner = format!("w{w}");
            let mut got = Vec::new();
            loop {
                match b.claim(&q, claim(&owner, 3, at(60_000)), at(1)).await {
                    Ok(items) if items.is_empty() => return Ok((owner, got)),
                    Ok(items) => got.extend(items.into_iter().map(|i| i.key)),
                    Err(e) => return Err(e),
                }
            }
        }));
    }
    let mut claimed = Vec::new();
    for h in handles {
        let (owner, got) = match h.await {
            Ok(r) => ok(r, "concurrent claim"),
            Err(e) => panic!("a claiming task panicked: {e}"),
        };
        for key in &got {
            let item = must_get(&*b, &q, *key).await;
            assert_eq!(
                item.lease.map(|l| l.owner),
                Some(owner.clone()),
                "item {key} must be leased to {owner}, who claimed it"
            );
            assert_eq!(item.attempts, 1, "item {key} was claimed more than once");
        }
        claimed.extend(got);
    }
    claimed.sort_unstable();
    let expected: Vec<Key> = (1..=ITEMS as u64).collect();
    assert_eq!(claimed, expected, "every item must be claimed exactly once");
}

/// `claim` first returns items with expired leases to pending, attempts kept, then may hand them out again.
pub async fn expired_lease_returns_to_pending_on_claim<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    push_n(&b, &q, 2, T0).await;
    ok(b.claim(&q, claim("w1", 1, at(100)), T0).await, "claim");
    ok(
        b.update(&q, 2, plain(move_to(phase("parked"))), T0).await,
        "park key 2",
    );
    assert!(
        ok(b.claim(&q, claim("w2", 5, at(900)), at(99)).await, "claim").is_empty(),
        "a live lease is not taken over"
    );
    assert_eq!(
        must_get(&b, &q, 1).await.lease.map(|l| l.owner),
        Some("w1".to_owned())
    );
    let got = ok(b.claim(&q, claim("w2", 5, at(900)), at(150)).await, "claim");
    assert_eq!(
        keys(&got),
        vec![1],
        "the expired item is released and claimed again"
    );
    let item = &got[0];
    assert_eq!(
        item.attempts, 2,
        "release keeps the attempt; the new claim adds one"
    );
    assert_eq!(
        item.lease,
        Some(Lease {
            owner: "w2".to_owned(),
            until: at(900)
        })
    );
    assert_eq!(item.updated_at, at(150));
    check_counts(&b, &q, "claim after lease expiry").await;
}

/// `sweep` returns in-flight items whose lease ran out (`until <= now`) to pending, due now,
/// with the lease cleared and attempts unchanged, and reports how many.
pub async fn expired_lease_returns_to_pending_on_sweep<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    push_n(&b, &q, 3, T0).await;
    ok(b.claim(&q, claim("w1", 2, at(100)), T0).await, "claim");
    ok(b.claim(&q, claim("w2", 1, at(200)), at(1)).await, "claim");
    let none = ok(b.sweep(&q, at(99)).await, "sweep");
    assert_eq!(
        none,
        SweepReport::default(),
        "nothing has expired before until"
    );
    let report = ok(b.sweep(&q, at(100)).await, "sweep");
    assert_eq!(
        report,
        SweepReport {
            released: 2,
            expired: 0
        },
        "two leases ran out at until == now"
    );
    for key in [1, 2] {
        let item = must_get(&b, &q, key).await;
        assert_eq!(item.phase, Phase::PENDING, "item {key} is back in pending");
        assert_eq!(item.lease, None, "item {key} has no lease");
        assert_eq!(item.not_before, at(100), "item {key} is due at once");
        assert_eq!(item.updated_at, at(100));
        assert_eq!(item.attempts, 1, "release does not count another attempt");
    }
    assert_eq!(
        must_get(&b, &q, 3).await.phase,
        Phase::IN_FLIGHT,
        "a live lease stays"
    );
    assert_eq!(
        ok(b.sweep(&q, at(100)).await, "sweep"),
        SweepReport::default(),
        "a second sweep finds nothing"
    );
    assert_eq!(
        ok(b.count(&q).await, "count"),
        counts(&[(&Phase::PENDING, 2), (&Phase::IN_FLIGHT, 1)])
    );
}

/// `sweep` moves pending items with `created_at + ttl <= now` to `expired` (counted there),
/// leaves other phases alone, and expires a released item past its TTL in the same sweep.
pub async fn ttl_moves_old_pending_items_to_expired<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders").with_ttl(Duration::from_secs(1))).await;
    push_n(&b, &q, 3, T0).await; // 1, 2, 3
    ok(
        b.push(
            &q,
            vec![NewItem::new(b"later".to_vec()).not_before(at(9_000))],
            T0,
        )
        .await,
        "push",
    ); // 4
    push_n(&b, &q, 1, at(500)).await; // 5
    ok(
        b.claim(&q, claim("w", 1, at(5_000)), T0).await,
        "claim key 1",
    );
    ok(
        b.update(&q, 2, plain(move_to(phase("parked"))), T0).await,
        "park key 2",
    );
    assert_eq!(
        ok(b.sweep(&q, at(999)).await, "sweep"),
        SweepReport::default(),
        "nothing is past its TTL yet"
    );
    let report = ok(b.sweep(&q, at(1_000)).await, "sweep");
    assert_eq!(
        report,
        SweepReport {
            released: 0,
            expired: 2
        },
        "keys 3 and 4 reach their TTL at created_at + ttl"
    );
    for key in [3, 4] {
        let item = must_get(&b, &q, key).await;
        assert_eq!(
            item.phase,
            Phase::EXPIRED,
            "item {key} expired (a future not_before does not protect it)"
        );
        assert_eq!(item.updated_at, at(1_000));
    }
    assert_eq!(
        must_get(&b, &q, 1).await.phase,
        Phase::IN_FLIGHT,
        "TTL does not touch in-flight items"
    );
    assert_eq!(
        must_get(&b, &q, 2).await.phase,
        phase("parked"),
        "TTL does not touch other phases"
    );
    assert_eq!(
        must_get(&b, &q, 5).await.phase,
        Phase::PENDING,
        "key 5 is younger"
    );
    let report = ok(b.sweep(&q, at(5_000)).await, "sweep");
    assert_eq!(
        report,
        SweepReport {
            released: 1,
            expired: 2
        },
        "the lease of key 1 runs out; it is past its TTL, so it expires too, as does key 5"
    );
    assert_eq!(must_get(&b, &q, 1).await.phase, Phase::EXPIRED);
    assert_eq!(
        must_get(&b, &q, 1).await.attempts,
        1,
        "expiry keeps the attempt count"
    );
    assert_eq!(
        ok(b.count(&q).await, "count"),
        counts(&[(&Phase::EXPIRED, 4), (&phase("parked"), 1)])
    );
}

/// `claim` never hands out a pending item past its TTL: it expires it first, even one moved
/// back to pending by hand.
pub async fn ttl_expired_items_are_never_claimed<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders").with_ttl(Duration::from_secs(1))).await;
    push_n(&b, &q, 2, T0).await;
    push_n(&b, &q, 1, at(600)).await;
    let got = ok(
        b.claim(&q, claim("w", 10, at(5_000)), at(1_000)).await,
        "claim",
    );
    assert_eq!(
        keys(&got),
        vec![3],
        "only the item within its TTL is claimed"
    );
    assert_eq!(
        ok(b.count(&q).await, "count"),
        counts(&[(&Phase::EXPIRED, 2), (&Phase::IN_FLIGHT, 1)]),
        "claim expired the old items on its way"
    );
    ok(
        b.update(&q, 1, plain(move_to(Phase::PENDING)), at(1_100))
            .await,
        "move back to pending",
    );
    assert!(
        ok(
            b.claim(&q, claim("w", 10, at(5_000)), at(1_100)).await,
            "claim"
        )
        .is_empty(),
        "an item past its TTL is never handed out, even after a move back to pending"
    );
    assert_eq!(must_get(&b, &q, 1).await.phase, Phase::EXPIRED);
}

/// A clock that goes backwards only makes fewer things due: nothing is lost, duplicated or
/// miscounted, and claim order still follows `(not_before, key)`.
pub async fn time_going_backwards_breaks_nothing<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    push_n(&b, &q, 1, at(1_000)).await; // due at +1000
    assert!(
        ok(b.claim(&q, claim("w", 10, at(2_000)), T0).await, "claim").is_empty(),
        "after the clock went back, the item is not due yet"
    );
    assert_eq!(
        push_n(&b, &q, 1, T0).await,
        vec![2],
        "keys keep increasing when time goes back"
    );
    let got = ok(
        b.claim(&q, claim("w", 10, at(2_000)), at(1_000)).await,
        "claim",
    );
    assert_eq!(
        keys(&got),
        vec![2, 1],
        "claim order is by not_before, not by key, when the clock jumped"
    );
    assert_eq!(
        ok(b.sweep(&q, at(500)).await, "sweep"),
        SweepReport::default(),
        "no lease has run out at an earlier time"
    );
    let acked = ok(
        b.update(&q, 1, leased("w", move_to(Phase::DONE)), at(100))
            .await,
        "ack",
    );
    assert_eq!(
        acked.updated_at,
        at(100),
        "updated_at follows the clock, even backwards"
    );
    let report = ok(b.sweep(&q, at(2_000)).await, "sweep");
    assert_eq!(
        report.released, 1,
        "the other lease runs out when the clock comes back"
    );
    check_counts(&b, &q, "a clock going back and forth").await;

    let (b, q) = backend_with(f, config("ttl").with_ttl(Duration::from_secs(1))).await;
    push_n(&b, &q, 1, at(5_000)).await;
    assert_eq!(
        ok(b.sweep(&q, T0).await, "sweep"),
        SweepReport::default(),
        "nothing expires before it was created"
    );
    assert_eq!(must_get(&b, &q, 1).await.phase, Phase::PENDING);
}

/// The TTL rule (`created_at + ttl <= now` is never handed out) holds for an item pushed after
/// the clock went back, even behind younger items in key order.
pub async fn ttl_holds_when_the_clock_goes_backwards<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders").with_ttl(Duration::from_secs(1))).await;
    ok(
        b.push(
            &q,
            vec![NewItem::new(b"young".to_vec()).not_before(at(9_000))],
            at(5_000),
        )
        .await,
        "push",
    );
    push_n(&b, &q, 1, T0).await; // created at T0 after the clock went back: key 2, expires at +1000
    let got = ok(
        b.claim(&q, claim("w", 10, at(10_000)), at(1_500)).await,
        "claim",
    );
    assert!(
        got.is_empty(),
        "key 2 (created {T0}, TTL 1000 ms) is past its TTL at {}: claim must not hand it out, got {:?}",
        at(1_500),
        keys(&got)
    );
    assert_eq!(
        must_get(&b, &q, 2).await.phase,
        Phase::EXPIRED,
        "claim expires key 2"
    );
    assert_eq!(
        must_get(&b, &q, 1).await.phase,
        Phase::PENDING,
        "key 1 is young"
    );
}
