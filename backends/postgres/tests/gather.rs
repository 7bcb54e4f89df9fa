//! One claim for several consumers: claims of one queue made at once by tasks of one
//! process share statements (`claim_for`, schema version 11), and each consumer still gets
//! its own share of the due items, under its own lease, and nothing twice.

use std::collections::BTreeMap;
use std::time::Duration;

use hookspool::{NewItem, Phase, QueueId, Store};
use hookspool_postgres::{PostgresBackend, testing};
use tokio::task::JoinSet;

async fn fill(store: &Store<PostgresBackend>, q: &QueueId, n: usize) {
    let items = (0..n)
        .map(|i| NewItem::new(format!("item {i}").into_bytes()))
        .collect();
    store.push_batch(q, items).await.expect("push_batch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_share_statements_and_each_gets_its_own_share() {
    const TASKS: usize = 16;
    const ROUNDS: usize = 3;
    const LIMIT: usize = 25;
    let (store, q, schema) = testing::store_with_queue("q").await;
    fill(&store, &q, 2_000).await;
    let mut tasks = JoinSet::new();
    for t in 0..TASKS {
        let (store, q) = (store.clone(), q.clone());
        tasks.spawn(async move {
            let owner = format!("consumer-{t}");
            // A lease of its own length per task: each must get its own back.
            let lease = Duration::from_secs(60 + t as u64);
            let mut claims = Vec::new();
            for round in 0..ROUNDS {
                let items = if round % 2 == 0 {
                    store.claim(&q, &owner, LIMIT, lease).await
                } else {
                    store.claim_without_sync(&q, &owner, LIMIT, lease).await
                };
                claims.push(items.expect("claim"));
            }
            (owner, claims)
        });
    }
    let mut leased = BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        let (owner, claims) = done.expect("task");
        for items in claims {
            assert_eq!(items.len(), LIMIT, "{owner}: a claim with plenty due");
            assert!(
                items
                    .windows(2)
                    .all(|w| (w[0].not_before, w[0].key) < (w[1].not_before, w[1].key)),
                "{owner}: a claim's items out of claim order"
            );
            for item in items {
                assert_eq!(item.phase, Phase::IN_FLIGHT);
                assert_eq!(item.attempts, 1);
                let lease = item.lease.clone().expect("a claimed item has a lease");
                assert_eq!(lease.owner, owner);
                assert!(
                    leased.insert(item.key, item).is_none(),
                    "an item claimed twice"
                );
            }
        }
    }
    assert_eq!(leased.len(), TASKS * ROUNDS * LIMIT);
    // What each claim returned is what the server stored.
    for (key, claimed) in &leased {
        let stored = store
            .fetch_key(&q, *key)
            .await
            .expect("fetch")
            .expect("a claimed item is stored");
        assert_eq!(&stored, claimed, "item {key} as claimed and as stored");
    }
    let counts = store.counts(&q).await.expect("counts");
    assert_eq!(
        counts.get(&Phase::IN_FLIGHT),
        (TASKS * ROUNDS * LIMIT) as u64
    );
    assert_eq!(
        counts.get(&Phase::PENDING),
        (2_000 - TASKS * ROUNDS * LIMIT) as u64
    );
    let statements =
        testing::writing_transactions(&testing::client().await, &schema, "phase = 'in_flight'")
            .await;
    assert!(
        statements > 0 && statements <= i64::try_from(TASKS * ROUNDS / 2).expect("small"),
        "{} claims from {TASKS} tasks at once took {statements} transactions",
        TASKS * ROUNDS
    );
}

/// A claim whose caller gives up while it waits behind the two claims running is left out
/// of the statement that follows them: nothing is leased to it, and the claim that waited
/// after it is made as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_given_up_while_it_waits_is_left_out() {
    const LIMIT: usize = 10;
    let lease = Duration::from_mins(1);
    let (store, q, schema) = testing::store_with_queue("q").await;
    fill(&store, &q, 100).await;
    // Another session locks the items against the claims' writes until it commits.
    let blocker = testing::lock_items(&schema).await;
    let mut running = JoinSet::new();
    for owner in ["a", "b"] {
        let (store, q) = (store.clone(), q.clone());
        running.spawn(async move { store.claim(&q, owner, LIMIT, lease).await });
    }
    let observer = testing::client().await;
    testing::until_waiting_for_items(&observer, &schema, 2).await;
    // Both claim statements are running: a third claim waits in the queue's lane (one poll
    // puts it there), and its caller gives up.
    assert!(
        testing::give_up_after_one_poll(store.claim(&q, "gone", LIMIT, lease)).await,
        "a third claim ran while two were running"
    );
    let kept = {
        let (store, q) = (store.clone(), q.clone());
        tokio::spawn(async move { store.claim(&q, "kept", LIMIT, lease).await })
    };
    blocker.batch_execute("COMMIT").await.expect("unlock");
    while let Some(claimed) = running.join_next().await {
        assert_eq!(claimed.expect("task").expect("claim").len(), LIMIT);
    }
    let kept = kept.await.expect("task").expect("claim");
    assert_eq!(kept.len(), LIMIT);
    assert!(
        kept.iter()
            .all(|item| { item.lease.as_ref().is_some_and(|l| l.owner == "kept") })
    );
    let owners: BTreeMap<String, i64> = observer
        .query(
            &format!(
                "SELECT lease_owner, count(*) FROM \"{schema}\".items \
                 WHERE phase = 'in_flight' GROUP BY lease_owner"
            ),
            &[],
        )
        .await
        .expect("leases")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let expected = ["a", "b", "kept"].map(|o| (o.to_owned(), 10_i64));
    assert_eq!(
        owners,
        BTreeMap::from(expected),
        "nothing leased to the claim given up"
    );
    let counts = store.counts(&q).await.expect("counts");
    assert_eq!(counts.get(&Phase::IN_FLIGHT), 3 * LIMIT as u64);
    assert_eq!(counts.get(&Phase::PENDING), 100 - 3 * LIMIT as u64);
}

#[tokio::test]
async fn a_shared_claim_gives_each_consumer_its_share_in_claim_order() {
    // In milliseconds, in 2100: every item pushed now is due, and the leases are the
    // consumers' own.
    const NOW: i64 = 4_102_444_800_000;
    const A: i64 = NOW + 1_000;
    const B: i64 = NOW + 2_000;
    const C: i64 = NOW + 3_000;
    let (store, q, schema) = testing::store_with_queue("q").await;
    fill(&store, &q, 10).await;
    let client = testing::client().await;
    let rows = client
        .query(
            &format!(
                "SELECT who, key, attempts FROM \"{schema}\".claim_for('q', \
                 ARRAY['a', 'b', 'c'], ARRAY[3, 4, 5], ARRAY[{A}, {B}, {C}]::bigint[], {NOW})"
            ),
            &[],
        )
        .await
        .expect("claim_for");
    let mut shares: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for row in &rows {
        assert_eq!(row.get::<_, i32>(2), 1, "attempts");
        shares.entry(row.get(0)).or_default().push(row.get(1));
    }
    for keys in shares.values_mut() {
        keys.sort_unstable();
    }
    // The first consumer the first items; the last gets what is left.
    let expected = BTreeMap::from([
        (1, vec![1, 2, 3]),
        (2, vec![4, 5, 6, 7]),
        (3, vec![8, 9, 10]),
    ]);
    assert_eq!(shares, expected);
    let leases = client
        .query(
            &format!(
                "SELECT key, lease_owner, lease_until, updated_at, phase FROM \"{schema}\".items \
                 ORDER BY key"
            ),
            &[],
        )
        .await
        .expect("items");
    for row in leases {
        let key: i64 = row.get(0);
        let (owner, until) = match key {
            1..=3 => ("a", A),
            4..=7 => ("b", B),
            _ => ("c", C),
        };
        assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some(owner));
        assert_eq!(row.get::<_, Option<i64>>(2), Some(until));
        assert_eq!(row.get::<_, i64>(3), NOW);
        assert_eq!(row.get::<_, String>(4), "in_flight");
    }
    let counts = store.counts(&q).await.expect("counts");
    assert_eq!(counts.get(&Phase::IN_FLIGHT), 10);
    assert_eq!(counts.get(&Phase::PENDING), 0);
}

/// `claim_for` and `claim_located` (schema version 14, the same checks) refuse arrays of
/// different lengths, empty ones and NULLs, with SQLSTATE 22023 and a message naming the
/// function; an unknown queue is `HS404`. Nothing is claimed by a refused call.
#[tokio::test]
async fn claims_for_several_owners_refuse_arrays_that_do_not_match() {
    let (store, q, schema) = testing::store_with_queue("q").await;
    fill(&store, &q, 3).await;
    let client = testing::client().await;
    for function in ["claim_for", "claim_located"] {
        for args in [
            "ARRAY['a', 'b'], ARRAY[1], ARRAY[1, 2]::bigint[]",
            "ARRAY['a'], ARRAY[1], ARRAY[1, 2]::bigint[]",
            "ARRAY[]::text[], ARRAY[]::integer[], ARRAY[]::bigint[]",
            "ARRAY['a', NULL], ARRAY[1, 1], ARRAY[1, 2]::bigint[]",
            "ARRAY['a'], ARRAY[NULL]::integer[], ARRAY[1]::bigint[]",
            "ARRAY['a'], ARRAY[1], ARRAY[NULL]::bigint[]",
            "NULL, ARRAY[1], ARRAY[1]::bigint[]",
        ] {
            let e = client
                .query(
                    &format!("SELECT * FROM \"{schema}\".{function}('q', {args}, 10)"),
                    &[],
                )
                .await
                .expect_err(&format!("{function}({args}) must be refused"));
            let db = e.as_db_error().expect("a server error");
            assert_eq!(db.code().code(), "22023", "{function}({args}): {db}");
            assert!(
                db.message().contains(&format!("{function} takes")),
                "{function}({args}): {db}"
            );
        }
        let e = client
            .query(
                &format!(
                    "SELECT * FROM \"{schema}\".{function}('nope', ARRAY['a'], ARRAY[1], \
                     ARRAY[1]::bigint[], 10)"
                ),
                &[],
            )
            .await
            .expect_err(&format!("{function} on an unknown queue must be refused"));
        let db = e.as_db_error().expect("a server error");
        assert_eq!(db.code().code(), "HS404", "{function}: {db}");
        assert!(
            db.message().contains("`nope` does not exist"),
            "{function}: {db}"
        );
    }
    // Nothing was claimed.
    assert_eq!(
        store.counts(&q).await.expect("counts").get(&Phase::PENDING),
        3
    );
}
