//! Acks by address (schema version 14): a claim returns each leased row's address, and the
//! batched ack of those items (`settle_located`) finds the rows there, settling by key
//! whatever an address no longer finds. Checked here: that an address settles only the row
//! its key names, and that an ack whose addresses went stale (the items released and
//! claimed again, the queue reset, a row updated while the ack waits for it) has the result
//! an ack by key has. A consumer alone keeps addresses only for claims of 64 items or more
//! (see the last test), so these claim 64.

use std::time::Duration;

use hookspool::{Backend, Key, NewItem, Phase, QueueId, Result};
use hookspool_postgres::{PostgresBackend, testing};

mod common;

use common::{acks, at, claim, fresh, keys_of};

/// A backend on a fresh schema with a queue `q` of `n` pending items, and the schema.
async fn filled(n: usize) -> (PostgresBackend, QueueId, String) {
    let (backend, q, schema) = fresh().await;
    let items = (0..n).map(|i| NewItem::new(vec![u8::try_from(i % 256).unwrap_or(0)]));
    backend
        .push(&q, items.collect(), at(0))
        .await
        .expect("push");
    (backend, q, schema)
}

/// `(phase, lease owner)` of each of `keys`, in order.
async fn states(schema: &str, keys: &[Key]) -> Vec<(String, Option<String>)> {
    let keys: Vec<i64> = keys
        .iter()
        .map(|k| i64::try_from(*k).expect("key"))
        .collect();
    testing::client()
        .await
        .query(
            &format!(
                "SELECT phase, lease_owner FROM \"{schema}\".items i \
                 JOIN unnest($1::bigint[]) WITH ORDINALITY AS u(key, n) USING (key) \
                 WHERE i.gen = (SELECT gen FROM \"{schema}\".queues WHERE id = 'q') ORDER BY u.n"
            ),
            &[&keys],
        )
        .await
        .expect("states")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn all_ok(results: &[Result<()>]) -> bool {
    results.iter().all(Result::is_ok)
}

/// An address settles the row it names only if that row is its key's: given another
/// item's address, `settle_located` leaves that item in flight and settles its own key's
/// item by key.
#[tokio::test]
async fn an_address_settles_only_its_keys_row() {
    let (backend, q, schema) = filled(10).await;
    let claimed = backend
        .claim(&q, claim("a", 2, 10_000), at(1_000))
        .await
        .expect("claim");
    let [first, second] = [claimed[0].key, claimed[1].key].map(|k| i64::try_from(k).expect("k"));
    let client = testing::client().await;
    let row = client
        .query_one(
            &format!(
                "SELECT {s}.settle_located('q', 'a', ARRAY[$1::bigint], \
                 ARRAY[(SELECT ctid FROM {s}.items WHERE key = $2)], 'done', 2000)",
                s = format_args!("\"{schema}\"")
            ),
            &[&first, &second],
        )
        .await
        .expect("settle_located");
    assert_eq!(row.get::<_, Vec<i64>>(0), [first]);
    assert_eq!(
        states(&schema, &keys_of(&claimed)).await,
        [
            ("done".to_owned(), None),
            ("in_flight".to_owned(), Some("a".to_owned()))
        ],
        "the second item's address, given for the first key, left the second item alone"
    );
    // Wrong sizes are refused with a message that says so.
    let err = client
        .query_one(
            &format!("SELECT \"{schema}\".settle_located('q', 'a', ARRAY[1, 2], ARRAY['(0,1)'::tid], 'done', 0)"),
            &[],
        )
        .await
        .expect_err("refused");
    let message = err.as_db_error().map(|e| e.message().to_owned());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("arrays of one length")),
        "{err:?}"
    );
}

/// Items released by a sweep and claimed again (by another backend, under the same owner
/// name) have new rows: the first backend's addresses find nothing, and its ack settles
/// them by key, as an ack by key would. Claimed again under another owner, the ack settles
/// none of them, and the other owner's ack (its addresses taken by then) settles them all.
#[tokio::test]
async fn an_ack_with_stale_addresses_has_the_result_of_an_ack_by_key() {
    let (backend, q, schema) = filled(64).await;
    let other = PostgresBackend::open(testing::options().schema(schema.clone()))
        .await
        .expect("open a second backend");

    let first = backend
        .claim(&q, claim("a", 64, 2_000), at(1_000))
        .await
        .expect("claim");
    assert_eq!(
        other.sweep(&q, at(2_000)).await.expect("sweep").released,
        64
    );
    let again = other
        .claim(&q, claim("a", 64, 9_000), at(2_100))
        .await
        .expect("claim again");
    assert_eq!(keys_of(&again), keys_of(&first));
    let acked = backend
        .update_many(&q, acks(&keys_of(&first), "a"), at(2_200))
        .await
        .expect("ack");
    assert!(all_ok(&acked), "{acked:?}");
    assert!(
        states(&schema, &keys_of(&first))
            .await
            .iter()
            .all(|s| *s == ("done".to_owned(), None))
    );

    let items = (0..64).map(|_| NewItem::new(b"more".to_vec()));
    backend
        .push(&q, items.collect(), at(2_250))
        .await
        .expect("push");
    let second = backend
        .claim(&q, claim("a", 64, 3_000), at(2_300))
        .await
        .expect("claim");
    assert_eq!(
        other.sweep(&q, at(3_000)).await.expect("sweep").released,
        64
    );
    let taken = backend
        .claim(&q, claim("b", 64, 9_000), at(3_100))
        .await
        .expect("claim by b");
    assert_eq!(keys_of(&taken), keys_of(&second));
    let refused = backend
        .update_many(&q, acks(&keys_of(&second), "a"), at(3_200))
        .await
        .expect("ack");
    assert!(refused.iter().all(Result::is_err), "{refused:?}");
    assert!(
        states(&schema, &keys_of(&second))
            .await
            .iter()
            .all(|s| *s == ("in_flight".to_owned(), Some("b".to_owned())))
    );
    let acked = backend
        .update_many(&q, acks(&keys_of(&second), "b"), at(3_300))
        .await
        .expect("ack");
    assert!(all_ok(&acked), "{acked:?}");
    let counts = backend.count(&q).await.expect("count");
    assert_eq!(
        (counts.get(&Phase::DONE), counts.get(&Phase::IN_FLIGHT)),
        (128, 0)
    );
}

/// After a reset, the addresses of the thrown-away items' rows do not settle them (they are
/// no longer the queue's), and the new items are left alone. The thrown-away rows are still
/// there: a session holds them with a lock that writes which leave the key alone (an ack's)
/// do not wait for and deletes (the background delete of the old generation's rows) do.
#[tokio::test]
async fn an_ack_after_a_reset_settles_nothing() {
    let (backend, q, schema) = filled(80).await;
    let claimed = backend
        .claim(&q, claim("a", 64, 9_000), at(1_000))
        .await
        .expect("claim");
    let holder = testing::client().await;
    holder
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM \"{schema}\".items WHERE phase = 'in_flight' FOR KEY SHARE"
        ))
        .await
        .expect("hold the leased rows");
    assert_eq!(backend.reset(&q).await.expect("reset"), 80);
    let items = (0..50).map(|_| NewItem::new(b"new".to_vec()));
    backend
        .push(&q, items.collect(), at(1_100))
        .await
        .expect("push");
    let acked = backend
        .update_many(&q, acks(&keys_of(&claimed), "a"), at(1_200))
        .await
        .expect("ack");
    assert!(acked.iter().all(Result::is_err), "{acked:?}");
    let counts = backend.count(&q).await.expect("count");
    assert_eq!(
        (counts.get(&Phase::PENDING), counts.get(&Phase::DONE)),
        (50, 0)
    );
    let old_rows: i64 = holder
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".items WHERE phase = 'in_flight'"),
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(
        old_rows, 64,
        "the old generation's leased rows were there all along"
    );
    holder.batch_execute("ROLLBACK").await.expect("release");
}

/// A row another transaction updates while the ack waits for it: its new version is at
/// another address, so the ack settles it by key, checking that version. A lease made
/// longer is still the owner's (settled); a lease given to another owner is not (left to
/// that owner).
#[tokio::test]
async fn an_ack_waiting_for_a_row_settles_its_new_version_by_key() {
    for (change, settled) in [
        ("lease_until = lease_until + 1", true),
        ("lease_owner = 'x'", false),
    ] {
        let (backend, q, schema) = filled(100).await;
        let claimed = backend
            .claim(&q, claim("a", 64, 9_000), at(1_000))
            .await
            .expect("claim");
        let held = i64::try_from(claimed[7].key).expect("key");
        let holder = testing::client().await;
        holder
            .batch_execute(&format!(
                "BEGIN; UPDATE \"{schema}\".items SET {change} WHERE key = {held}"
            ))
            .await
            .expect("update the row, holding it");
        let ack = tokio::spawn({
            let (backend, q, keys) = (backend.clone(), q.clone(), keys_of(&claimed));
            async move { backend.update_many(&q, acks(&keys, "a"), at(1_100)).await }
        });
        // Wait until the ack waits for the held row.
        let watcher = testing::client().await;
        let mut waited = false;
        for _ in 0..3000 {
            let waiting: i64 = watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE wait_event_type = 'Lock' AND query LIKE '%settle_located%'",
                    &[],
                )
                .await
                .expect("activity")
                .get(0);
            if waiting > 0 {
                waited = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(waited, "{change}: the ack never waited for the held row");
        holder.batch_execute("COMMIT").await.expect("commit");
        let acked = ack.await.expect("join").expect("ack");
        for (item, result) in claimed.iter().zip(&acked) {
            let expected = item.key != claimed[7].key || settled;
            assert_eq!(
                result.is_ok(),
                expected,
                "{change}: item {}: {result:?}",
                item.key
            );
        }
        let state = states(&schema, &[claimed[7].key]).await;
        let want = if settled {
            ("done".to_owned(), None)
        } else {
            ("in_flight".to_owned(), Some("x".to_owned()))
        };
        assert_eq!(state, [want], "{change}");
    }
}

/// Calls of `schema`'s function `name` counted by the server, plus those the session has
/// not yet sent it (`track_functions` must be on in the session).
async fn calls(session: &tokio_postgres::Client, schema: &str, name: &str) -> i64 {
    session
        .query_one(
            "SELECT coalesce(sum(pg_stat_get_function_calls(p.oid) \
                 + pg_stat_get_xact_function_calls(p.oid)), 0)::bigint \
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname = $1 AND p.proname = $2",
            &[&schema, &name],
        )
        .await
        .expect("function statistics")
        .get(0)
}

/// A consumer alone claiming fewer than 64 items claims through version 13's `claim`,
/// which returns no addresses, and an ack of all of them goes by key: `claim_located` costs
/// the server about 130k instructions more per call, which a claim of 16, acked 10-20 at a
/// time by key as the delivery loop acks, never earns back. From 64 items up it claims
/// through `claim_located`, and an ack of all of them finds them by address
/// (`settle_located`). Several consumers sharing a statement always use `claim_located`.
#[tokio::test]
async fn a_small_claim_of_one_consumer_keeps_no_addresses() {
    let options = testing::options().pool_size(1);
    let schema = options.schema.clone();
    let backend = PostgresBackend::open(options).await.expect("open");
    let q = QueueId::new("q").expect("queue id");
    backend
        .create_queue(hookspool::QueueConfig::new(q.clone()))
        .await
        .expect("create");
    let items = (0..200u8).map(|i| NewItem::new(vec![i])).collect();
    backend.push(&q, items, at(0)).await.expect("push");
    let session = backend.connection().await.expect("the pool's one session");
    session
        .batch_execute("SET track_functions = 'pl'")
        .await
        .expect("set");
    drop(session);
    let counted = |names: [&'static str; 3]| {
        let (backend, schema) = (backend.clone(), schema.clone());
        async move {
            let session = backend.connection().await.expect("the pool's one session");
            let mut n = [0; 3];
            for (count, name) in n.iter_mut().zip(names) {
                *count = calls(&session, &schema, name).await;
            }
            n
        }
    };
    let names = ["claim", "claim_located", "settle_located"];
    for (limit, expected) in [(63, [1, 0, 0]), (64, [0, 1, 1])] {
        let before = counted(names).await;
        let claimed = backend
            .claim(&q, claim("a", limit, 60_000), at(1_000))
            .await
            .expect("claim");
        assert_eq!(claimed.len(), limit);
        let keys = keys_of(&claimed);
        let results = backend
            .update_many(&q, acks(&keys, "a"), at(2_000))
            .await
            .expect("ack");
        assert!(all_ok(&results), "{results:?}");
        let after = counted(names).await;
        let made: Vec<i64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
        assert_eq!(
            made, expected,
            "a claim of {limit}, acked at once: calls of {names:?}"
        );
        assert!(
            states(&schema, &keys)
                .await
                .iter()
                .all(|(phase, owner)| phase == "done" && owner.is_none()),
            "a claim of {limit}: every item acked"
        );
    }
}
