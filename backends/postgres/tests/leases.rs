//! Lease rows (schema version 13): each claim writes one row with its lease end and its
//! items' keys, the batched acks count their items off it and delete it when none is left,
//! and the sweep finds expired leases through the rows. Checked here: what an upgrade does
//! with the leases taken before it, an item claimed again while its first claim's row is
//! still there, and the check that keeps every item in flight in a row.

use hookspool::{Action, Backend, Expect, Key, Move, NewItem, Phase, QueueId, Store, Transition};
use hookspool_postgres::{PostgresBackend, SCHEMA_VERSION, testing};

mod common;

use common::{at, claim, fresh};

/// The lease rows of `schema`, as `(until, open, keys)`, by their keys.
async fn lease_rows(schema: &str) -> Vec<(i64, i32, Vec<i64>)> {
    testing::client()
        .await
        .query(
            &format!("SELECT until, open, keys FROM \"{schema}\".leases ORDER BY keys"),
            &[],
        )
        .await
        .expect("lease rows")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

fn keys(items: &[hookspool::Item]) -> Vec<i64> {
    items
        .iter()
        .map(|i| i64::try_from(i.key).expect("key"))
        .collect()
}

/// A schema at version 12 with 25 items in flight under three leases (ten to `a` until
/// 5,000, ten to `b` until far off, five to `a` until 6,000) and five pending, claimed
/// through version 12's own function, is upgraded: each lease gets a row with its items,
/// and the leases then expire, settle and are counted as before.
#[tokio::test]
async fn an_upgrade_gives_the_leases_taken_before_it_their_rows() {
    let options = testing::options();
    let schema = options.schema.clone();
    testing::create_schema_at(&options, 12)
        .await
        .expect("a version 12 schema");
    let claimed = |owner: &str, limit: i32, until: i64| {
        format!(
            "SELECT array_agg(key ORDER BY key) FROM \"{schema}\".claim('q', '{owner}', \
             {limit}, {until}, 1000)"
        )
    };
    let client = testing::client().await;
    client
        .batch_execute(&format!(
            "SELECT \"{schema}\".create_queue('q', NULL, 'keep', 0, '{{}}'); \
             SELECT \"{schema}\".push_many('q', array_agg(convert_to(i::text, 'UTF8')), \
                 NULL, NULL, 1000) FROM generate_series(1, 30) AS i;"
        ))
        .await
        .expect("queue and items");
    let mut leases = Vec::new();
    for (owner, limit, until) in [
        ("a", 10, 5_000),
        ("b", 10, 9_000_000_000_000),
        ("a", 5, 6_000),
    ] {
        let keys: Vec<i64> = client
            .query_one(&claimed(owner, limit, until), &[])
            .await
            .expect("claim under version 12")
            .get(0);
        leases.push((until, limit, keys));
    }

    let backend = PostgresBackend::open(options).await.expect("open");
    assert_eq!(
        testing::client()
            .await
            .query_one(
                &format!("SELECT max(version) FROM \"{schema}\".migrations"),
                &[]
            )
            .await
            .expect("version")
            .get::<_, i32>(0),
        SCHEMA_VERSION
    );
    assert_eq!(lease_rows(&schema).await, leases, "one row per lease");
    let unnamed: i64 = client
        .query_one(
            &format!(
                "SELECT count(*) FROM \"{schema}\".items \
                 WHERE phase = 'in_flight' AND lease_id IS NULL"
            ),
            &[],
        )
        .await
        .expect("unnamed")
        .get(0);
    assert_eq!(unnamed, 0, "every item in flight names its lease row");
    let index: Option<String> = client
        .query_one(
            &format!("SELECT to_regclass('\"{schema}\".items_leases')::text"),
            &[],
        )
        .await
        .expect("index")
        .get(0);
    assert_eq!(index, None, "the lease index is dropped");

    let q = QueueId::new("q").expect("queue id");
    let report = backend.sweep(&q, at(5_500)).await.expect("sweep");
    assert_eq!(report.released, 10, "a's first lease has run out");
    assert_eq!(lease_rows(&schema).await, leases[1..]);
    let store = Store::new(backend.clone());
    let b_keys: Vec<Key> = leases[1]
        .2
        .iter()
        .map(|&k| Key::try_from(k).expect("key"))
        .collect();
    let acked = store.ack_many(&q, &b_keys, "b").await.expect("ack");
    assert!(acked.iter().all(Result::is_ok), "{acked:?}");
    assert_eq!(
        lease_rows(&schema).await,
        leases[2..],
        "b's acks deleted its row"
    );
    let report = backend.sweep(&q, at(7_000)).await.expect("sweep");
    assert_eq!(report.released, 5, "a's second lease has run out");
    assert_eq!(lease_rows(&schema).await, []);
    let counts = store.counts(&q).await.expect("counts");
    assert_eq!(
        (
            counts.get(&Phase::PENDING),
            counts.get(&Phase::IN_FLIGHT),
            counts.get(&Phase::DONE)
        ),
        (20, 0, 10),
        "{counts:?}"
    );
}

/// An ack that finds its item's lease row held by another session does not wait for it
/// (a sweep deleting the row may be waiting for the ack's items): it leaves the count as it
/// is. An item put back to pending that way and claimed again is in two rows. When the
/// first row's lease end passes, the sweep deletes that row and leaves the item in flight
/// under its live lease; when the second's passes, it releases the item. The acks of the
/// other items, a batch too small for the one-statement settle, count them off as usual.
#[tokio::test]
async fn an_item_claimed_again_outlives_the_row_of_its_first_claim() {
    let (backend, q, schema) = fresh().await;
    let items = (0..3).map(|i| NewItem::new(vec![i])).collect();
    backend.push(&q, items, at(1_000)).await.expect("push");
    let first = backend
        .claim(&q, claim("a", 3, 2_000), at(1_000))
        .await
        .expect("claim");
    assert_eq!(lease_rows(&schema).await, [(2_000, 3, keys(&first))]);

    let holder = testing::client().await;
    holder
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM \"{schema}\".leases FOR UPDATE"
        ))
        .await
        .expect("hold the row");
    let nack = Transition {
        expect: Expect {
            phase: None,
            lease_owner: Some("a".to_owned()),
        },
        action: Action::Move(Move::to(Phase::PENDING).not_before(at(1_000))),
    };
    let moved = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        backend.update_many(&q, vec![(first[0].key, nack)], at(1_100)),
    )
    .await
    .expect("the nack does not wait for the held row")
    .expect("nack");
    assert!(moved.iter().all(Result::is_ok), "{moved:?}");
    holder.batch_execute("ROLLBACK").await.expect("release");
    assert_eq!(lease_rows(&schema).await, [(2_000, 3, keys(&first))]);

    let acks = first[1..]
        .iter()
        .map(|i| {
            let ack = Transition {
                expect: Expect {
                    phase: None,
                    lease_owner: Some("a".to_owned()),
                },
                action: Action::Move(Move::to(Phase::DONE)),
            };
            (i.key, ack)
        })
        .collect();
    let acked = backend.update_many(&q, acks, at(1_200)).await.expect("ack");
    assert!(acked.iter().all(Result::is_ok), "{acked:?}");
    assert_eq!(
        lease_rows(&schema).await,
        [(2_000, 1, keys(&first))],
        "the acks counted their two items off"
    );

    let again = backend
        .claim(&q, claim("b", 1, 3_000), at(1_500))
        .await
        .expect("claim again");
    assert_eq!(keys(&again), keys(&first[..1]));
    assert_eq!(lease_rows(&schema).await.len(), 2);

    let report = backend.sweep(&q, at(2_500)).await.expect("sweep");
    assert_eq!(report.released, 0, "the item's lease runs to 3,000");
    assert_eq!(lease_rows(&schema).await, [(3_000, 1, keys(&again))]);
    let store = Store::new(backend.clone());
    let item = store
        .fetch_key(&q, first[0].key)
        .await
        .expect("fetch")
        .expect("the item");
    assert_eq!(item.phase, Phase::IN_FLIGHT);
    assert_eq!(item.lease.map(|l| l.owner), Some("b".to_owned()));

    let report = backend.sweep(&q, at(3_500)).await.expect("sweep");
    assert_eq!(report.released, 1);
    assert_eq!(lease_rows(&schema).await, []);
    let item = store
        .fetch_key(&q, first[0].key)
        .await
        .expect("fetch")
        .expect("the item");
    assert_eq!((item.phase, item.lease), (Phase::PENDING, None));
}

/// A batch of one owner's settles that differ (acks, nacks with an error, removals), large
/// enough for the one-statement settle (`settle_leased`), counts every item off: the lease
/// rows of the two claims are gone, and no sweep has anything left to release.
#[tokio::test]
async fn a_batch_of_mixed_settles_deletes_the_lease_rows_it_empties() {
    let (backend, q, schema) = fresh().await;
    let items = (0..60u8).map(|i| NewItem::new(vec![i])).collect();
    backend.push(&q, items, at(1_000)).await.expect("push");
    let mut claimed = Vec::new();
    for until in [2_000, 2_100] {
        claimed.extend(
            backend
                .claim(&q, claim("a", 30, until), at(1_000))
                .await
                .expect("claim"),
        );
    }
    assert_eq!(lease_rows(&schema).await.len(), 2);
    let settles = claimed
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let action = match i % 3 {
                0 => Action::Move(Move::to(Phase::DONE)),
                1 => Action::Move(Move::to(Phase::PENDING).error("try again")),
                _ => Action::Remove,
            };
            let expect = Expect {
                phase: None,
                lease_owner: Some("a".to_owned()),
            };
            (item.key, Transition { expect, action })
        })
        .collect();
    let settled = backend
        .update_many(&q, settles, at(1_500))
        .await
        .expect("settle");
    assert!(settled.iter().all(Result::is_ok), "{settled:?}");
    assert_eq!(lease_rows(&schema).await, []);
    let report = backend.sweep(&q, at(9_000)).await.expect("sweep");
    assert_eq!(report.released, 0);
    let counts = backend.count(&q).await.expect("count");
    assert_eq!(
        (
            counts.get(&Phase::DONE),
            counts.get(&Phase::PENDING),
            counts.get(&Phase::IN_FLIGHT),
            counts.total()
        ),
        (20, 20, 0, 40),
        "{counts:?}"
    );
}

/// A lease written without a row, as a claim of version 12's code under way while version
/// 13 committed would write it, is refused by the check, and the item stays pending.
#[tokio::test]
async fn an_item_cannot_enter_flight_without_a_lease_row() {
    let (backend, q, schema) = fresh().await;
    let key = backend
        .push(&q, vec![NewItem::new("x")], at(1_000))
        .await
        .expect("push")[0];
    let error = testing::client()
        .await
        .execute(
            &format!(
                "UPDATE \"{schema}\".items SET phase = 'in_flight', lease_owner = 'w', \
                 lease_until = 2000, attempts = attempts + 1, updated_at = 1000 \
                 WHERE key = $1"
            ),
            &[&i64::try_from(key).expect("key")],
        )
        .await
        .expect_err("a lease without a row");
    let db = error.as_db_error().expect("a server error");
    assert_eq!(
        db.constraint(),
        Some("items_in_flight_have_a_lease_row"),
        "{db:?}"
    );
    let item = Store::new(backend)
        .fetch_key(&q, key)
        .await
        .expect("fetch")
        .expect("the item");
    assert_eq!((item.phase, item.lease), (Phase::PENDING, None));
}

/// The keys `sql` (a leasing call returning `key` first) leased, in key order.
async fn leased(client: &tokio_postgres::Client, sql: &str) -> Vec<i64> {
    let mut keys: Vec<i64> = client
        .query(sql, &[])
        .await
        .expect(sql)
        .iter()
        .map(|r| r.get(0))
        .collect();
    keys.sort_unstable();
    keys
}

/// The keys of each of two consumers' shares that `sql` (a shared claim returning `who`
/// and `key` first) leased, in key order.
async fn shared(client: &tokio_postgres::Client, sql: &str) -> [Vec<i64>; 2] {
    let shares: Vec<(i32, i64)> = client
        .query(sql, &[])
        .await
        .expect(sql)
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    [1, 2].map(|who| {
        let mut keys: Vec<i64> = shares
            .iter()
            .filter(|(w, _)| *w == who)
            .map(|(_, k)| *k)
            .collect();
        keys.sort_unstable();
        keys
    })
}

/// Every function that leases writes the row: `claim`, `claim_after` (while a snapshot is
/// held), `claim_for` (one row per consumer's share), version 8's `lease_rows` (kept for a
/// claim of older code) and version 14's `claim_located` (for one consumer, and a row per
/// share for two). Each row holds its own lease end and keys, and a sweep past all the ends
/// releases every item through them and leaves no row.
#[tokio::test]
async fn every_leasing_function_writes_its_row() {
    let (backend, q, schema) = fresh().await;
    let items = (0..16u8).map(|i| NewItem::new(vec![i])).collect();
    let pushed = backend.push(&q, items, at(1_000)).await.expect("push");
    let pushed: Vec<i64> = pushed
        .iter()
        .map(|&k| i64::try_from(k).expect("key"))
        .collect();
    let client = testing::client().await;
    let s = format!("\"{schema}\"");
    let mut got = Vec::new();
    got.push(
        leased(
            &client,
            &format!("SELECT key FROM {s}.claim('q', 'a', 2, 5000, 1000)"),
        )
        .await,
    );
    got.push(
        leased(
            &client,
            &format!(
                "SELECT key FROM {s}.claim_after('q', 'b', 2, 6000, 1000, 1000, {})",
                pushed[1]
            ),
        )
        .await,
    );
    got.extend(
        shared(
            &client,
            &format!(
                "SELECT who, key FROM {s}.claim_for('q', ARRAY['c', 'd'], ARRAY[2, 2], \
                 ARRAY[7000, 8000]::bigint[], 1000)"
            ),
        )
        .await,
    );
    got.push(
        leased(
            &client,
            &format!(
                "SELECT key FROM {s}.lease_rows((SELECT gen FROM {s}.queues WHERE id = 'q'), \
                 (SELECT array_agg(ctid) FROM (SELECT ctid FROM {s}.items \
                  WHERE phase = 'pending' ORDER BY key LIMIT 2 FOR UPDATE) AS x), \
                 'e', 9000, 1000)"
            ),
        )
        .await,
    );
    got.push(
        leased(
            &client,
            &format!(
                "SELECT key FROM {s}.claim_located('q', ARRAY['f'], ARRAY[2], \
                 ARRAY[9500]::bigint[], 1000)"
            ),
        )
        .await,
    );
    got.extend(
        shared(
            &client,
            &format!(
                "SELECT who, key FROM {s}.claim_located('q', ARRAY['g', 'h'], ARRAY[2, 2], \
                 ARRAY[9600, 9700]::bigint[], 1000)"
            ),
        )
        .await,
    );
    let expected: Vec<Vec<i64>> = pushed.chunks(2).map(<[i64]>::to_vec).collect();
    assert_eq!(got, expected, "each call leased the next two items");
    let ends = [5_000, 6_000, 7_000, 8_000, 9_000, 9_500, 9_600, 9_700];
    let want: Vec<(i64, i32, Vec<i64>)> = ends
        .iter()
        .zip(&expected)
        .map(|(&end, keys)| (end, 2, keys.clone()))
        .collect();
    assert_eq!(
        lease_rows(&schema).await,
        want,
        "one row per lease, with its end"
    );

    let report = backend.sweep(&q, at(7_500)).await.expect("sweep");
    assert_eq!(
        report.released, 6,
        "the leases ending at 5,000, 6,000 and 7,000"
    );
    assert_eq!(lease_rows(&schema).await, want[3..]);
    let report = backend.sweep(&q, at(10_000)).await.expect("sweep");
    assert_eq!(report.released, 10);
    assert_eq!(lease_rows(&schema).await, []);
}
