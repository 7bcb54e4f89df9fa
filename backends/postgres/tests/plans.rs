//! Plans follow the queue's size (schema version 4): a session that claimed, popped, pruned
//! or acknowledged while its queue held a few items, and kept the plans the server chose
//! then, still finds the rows it changes by key once the queue holds thousands, instead of
//! reading every row of the queue for each of them. Observed through the server's own count of the index
//! entries the calls read, in the measured transaction, not through timing. And the push
//! statements' plans keep a batch's items in their order without sorting them.

use hookspool_postgres::{PostgresBackend, SCHEMA_VERSION, testing};
use tokio_postgres::Client;

mod common;

use common::{fresh_schema, index_entries_all, table_scans};

/// Entries of `schema`'s indexes of items by phase (`items_by_phase` and, from schema
/// version 9, `items_pending`) that this session's scans returned (counted in this session
/// and not yet reported).
async fn by_phase_entries(client: &Client, schema: &str) -> i64 {
    client
        .query_one(
            "SELECT sum(pg_stat_get_xact_tuples_returned(c.oid))::bigint FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname IN ('items_by_phase', 'items_pending')",
            &[&schema],
        )
        .await
        .expect("index statistics")
        .get(0)
}

/// Pushes `n` items to queue `q`, at time 1000.
async fn push(client: &Client, schema: &str, n: i32) {
    client
        .batch_execute(&format!(
            "SELECT \"{schema}\".push_many('q', array_agg(decode(md5(i::text), 'hex')), \
             array_agg('{{}}'::json), array_agg(NULL::bigint), 1000) \
             FROM generate_series(1, {n}) AS i"
        ))
        .await
        .expect("push");
}

/// A fresh schema (migrated by a backend) with an empty queue `q` that keeps its items, a
/// session of its own, and the schema's name.
async fn fresh_queue() -> (Client, String) {
    let (session, schema) = fresh_schema().await;
    session
        .batch_execute(&format!(
            "SELECT \"{schema}\".create_queue('q', NULL, 'keep', 0, '{{}}')"
        ))
        .await
        .expect("queue");
    (session, schema)
}

/// In a session whose plans are forced generic (as the server settles on one after five
/// calls while a table is small): runs `call` (a statement of `{schema}`, returning a
/// count, whose `$1` is an integer) six times with `$1 = 1` on a queue of 3 items, fills the
/// queue to 20,003 from another session, then runs it once with `$1 = 10` in a transaction.
/// Returns what it returned then, and how many `items_by_phase` entries it read.
async fn after_the_queue_grew(call: &str) -> (i64, i64) {
    let (session, schema) = fresh_queue().await;
    session
        .batch_execute("SET plan_cache_mode = force_generic_plan")
        .await
        .expect("generic plans");
    push(&session, &schema, 3).await;
    let call = call.replace("{schema}", &format!("\"{schema}\""));
    for _ in 0..6 {
        session.query_one(&call, &[&1_i64]).await.expect(&call);
    }
    push(&testing::client().await, &schema, 20_000).await;
    session.batch_execute("BEGIN").await.expect("begin");
    let before = by_phase_entries(&session, &schema).await;
    let got: i64 = session
        .query_one(&call, &[&10_i64])
        .await
        .expect(&call)
        .get(0);
    let read = by_phase_entries(&session, &schema).await - before;
    session.batch_execute("COMMIT").await.expect("commit");
    (got, read)
}

#[tokio::test]
async fn a_claim_planned_on_a_small_queue_finds_its_rows_by_key_once_it_has_grown() {
    let (claimed, read) = after_the_queue_grew(
        "SELECT count(*) FROM {schema}.claim('q', 'w', ($1::bigint)::integer, 1000000000, 2000)",
    )
    .await;
    assert_eq!(claimed, 10);
    assert_eq!(
        read, 0,
        "schema version {SCHEMA_VERSION}: a claim must not find its rows by generation"
    );
}

/// Schema version 8: the claim's second statement finds the rows its first one locked by
/// their address, so a claim reads no entry of the primary key (version 7 read one per
/// claimed item, looking each up again by key).
#[tokio::test]
async fn a_claim_leases_the_rows_it_locked_by_their_address() {
    let (session, schema) = fresh_queue().await;
    push(&session, &schema, 2_000).await;
    session.batch_execute("BEGIN").await.expect("begin");
    let before = index_entries_all(&session, &schema, "items_pkey").await;
    let claimed: i64 = session
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".claim('q', 'w', 1000, 1000000000, 2000)"),
            &[],
        )
        .await
        .expect("claim")
        .get(0);
    let read = index_entries_all(&session, &schema, "items_pkey").await - before;
    session.batch_execute("COMMIT").await.expect("commit");
    assert_eq!(claimed, 1000);
    assert_eq!(
        read, 0,
        "schema version {SCHEMA_VERSION}: a claim must not look its rows up again by key"
    );
    let leased: i64 = session
        .query_one(
            &format!(
                "SELECT count(*) FROM \"{schema}\".items \
                 WHERE phase = 'in_flight' AND lease_owner = 'w' AND attempts = 1 AND key <= 1000"
            ),
            &[],
        )
        .await
        .expect("leased")
        .get(0);
    assert_eq!(leased, 1000, "the claim leased the 1000 oldest items");
}

#[tokio::test]
async fn a_pop_planned_on_a_small_queue_finds_its_rows_by_key_once_it_has_grown() {
    let (popped, read) = after_the_queue_grew(
        "SELECT count(*) FROM {schema}.pop_page('q', NULL, 0, $1, false, NULL)",
    )
    .await;
    assert_eq!(popped, 10);
    assert_eq!(
        read, 0,
        "schema version {SCHEMA_VERSION}: a pop must not find its rows by generation"
    );
}

#[tokio::test]
async fn a_prune_planned_on_a_small_queue_reads_only_the_head_of_its_phase_once_it_has_grown() {
    let (pruned, read) =
        after_the_queue_grew("SELECT {schema}.prune_phase('q', 'pending', 5000, $1)").await;
    assert_eq!(pruned, 10);
    assert!(
        read <= 20,
        "schema version {SCHEMA_VERSION}: a prune of 10 read {read} entries of the phase's \
         index (its head is 10; the phase holds 20,000)"
    );
}

/// A backend on a fresh schema with one pooled session, its plans forced generic, a store
/// on it and its queue `q`; and the schema's name.
async fn generic_store() -> (
    PostgresBackend,
    hookspool::Store<PostgresBackend>,
    hookspool::QueueId,
    String,
) {
    let options = testing::options().pool_size(1);
    let schema = options.schema.clone();
    let backend = PostgresBackend::open(options).await.expect("open");
    let store = hookspool::Store::new(backend.clone());
    let q = hookspool::QueueId::new("q").expect("queue id");
    store
        .create_queue(hookspool::QueueConfig::new(q.clone()))
        .await
        .expect("create");
    backend
        .connection()
        .await
        .expect("the pool's one session")
        .batch_execute("SET plan_cache_mode = force_generic_plan")
        .await
        .expect("set");
    (backend, store, q, schema)
}

/// The keys of the first page of 10 items in `phase` (through the backend's one pooled
/// session), and how many entries of each of `indexes` it read.
async fn page_of(
    backend: &PostgresBackend,
    store: &hookspool::Store<PostgresBackend>,
    q: &hookspool::QueueId,
    phase: &hookspool::Phase,
    indexes: &[&str],
) -> (Vec<hookspool::Key>, Vec<i64>) {
    let schema = backend.schema();
    let session = || async { backend.connection().await.expect("the pool's one session") };
    let mut before = Vec::new();
    for index in indexes {
        before.push(index_entries_all(&*session().await, schema, index).await);
    }
    let got = store
        .fetch_page(q, hookspool::Page::first(10).phase(phase.clone()))
        .await
        .expect("page")
        .iter()
        .map(|i| i.key)
        .collect();
    let mut reads = Vec::new();
    for (index, before) in indexes.iter().zip(before) {
        reads.push(index_entries_all(&*session().await, schema, index).await - before);
    }
    (got, reads)
}

/// The settle (`ack_many`) through the backend itself, on its one pooled session with plans
/// forced generic: after acks on a 3-item queue, an ack of 10 once it holds 20,003 still
/// finds its rows by key (the settle's transaction plans its statements afresh).
#[tokio::test]
async fn an_ack_planned_on_a_small_queue_finds_its_rows_by_key_once_it_has_grown() {
    use hookspool::NewItem;
    use std::time::Duration;

    let (backend, store, q, schema) = generic_store().await;
    let session = || async { backend.connection().await.expect("the pool's one session") };
    let items = |n: usize| {
        (0..n)
            .map(|i| NewItem::new(i.to_le_bytes().to_vec()))
            .collect()
    };
    store.push_batch(&q, items(3)).await.expect("push");
    let lease = Duration::from_mins(5);
    for _ in 0..6 {
        let keys: Vec<_> = store
            .claim(&q, "w", 1, lease)
            .await
            .expect("claim")
            .iter()
            .map(|i| i.key)
            .collect();
        store.ack_many(&q, &keys, "w").await.expect("ack");
    }
    for _ in 0..20 {
        store.push_batch(&q, items(1000)).await.expect("push");
    }
    let keys: Vec<_> = store
        .claim(&q, "w", 10, lease)
        .await
        .expect("claim")
        .iter()
        .map(|i| i.key)
        .collect();
    let before = index_entries_all(&*session().await, &schema, "items_by_phase").await;
    let acked = store.ack_many(&q, &keys, "w").await.expect("ack");
    let read = index_entries_all(&*session().await, &schema, "items_by_phase").await - before;
    assert_eq!(acked.iter().filter(|r| r.is_ok()).count(), 10);
    assert_eq!(
        read, 0,
        "schema version {SCHEMA_VERSION}: an ack must not find its rows by generation"
    );
}

/// A batch of one owner's acks (32 entries or more) finds its rows at the addresses its
/// claim returned (`settle_located`, schema version 14), and without them by key
/// (`settle_leased_to`, whose keys come through a sub-select since version 10, so that
/// planning does not weigh each one: the planner no longer sees how many there are, and must
/// still look them up in the primary key rather than read the queue's generation). On a
/// queue of 20,064 items, with plans forced generic, an ack of 64 leased items through the
/// backend that claimed them reads no entry of any index; through another backend (which
/// has no addresses) it reads at most 4 entries of the primary key for each (the item's
/// versions) and none of the indexes by phase. Under either retention (the `UPDATE` to
/// `done`, the `DELETE`).
#[tokio::test]
async fn a_batch_of_one_owners_acks_finds_its_rows_by_address_or_by_key() {
    use hookspool::{NewItem, QueueConfig, QueueId, Retention};
    use std::time::Duration;

    let (backend, store, _, schema) = generic_store().await;
    let other = PostgresBackend::open(testing::options().schema(schema.clone()).pool_size(1))
        .await
        .expect("open a second backend");
    other
        .connection()
        .await
        .expect("its one session")
        .batch_execute("SET plan_cache_mode = force_generic_plan")
        .await
        .expect("set");
    let other_store = hookspool::Store::new(other.clone());
    // Read through the acking backend's one session: the counts are the server's plus those
    // this session has not yet sent it.
    let read = |acker: &PostgresBackend, index: &'static str| {
        let (acker, schema) = (acker.clone(), schema.clone());
        async move {
            let session = acker.connection().await.expect("the pool's one session");
            if index == "items" {
                table_scans(&session, &schema).await
            } else {
                index_entries_all(&session, &schema, index).await
            }
        }
    };
    for retention in [Retention::Keep, Retention::Remove] {
        let q = QueueId::new(format!("acks-{retention:?}").to_lowercase()).expect("queue id");
        store
            .create_queue(QueueConfig::new(q.clone()).with_retention(retention))
            .await
            .expect("create");
        for _ in 0..20 {
            let items = (0..1000_u32)
                .map(|i| NewItem::new(i.to_le_bytes().to_vec()))
                .collect();
            store.push_batch(&q, items).await.expect("push");
        }
        let mut acks = 0;
        let rounds = [
            ("address", &backend, &store, 0..=0),
            ("key", &other, &other_store, 64..=256),
        ];
        for (by, acker, acking, pkey_reads) in rounds {
            let keys: Vec<_> = store
                .claim(&q, "w", 64, Duration::from_mins(5))
                .await
                .expect("claim")
                .iter()
                .map(|i| i.key)
                .collect();
            assert_eq!(keys.len(), 64);
            let (pkey, by_phase, pending, scans) = (
                read(acker, "items_pkey").await,
                read(acker, "items_by_phase").await,
                read(acker, "items_pending").await,
                read(acker, "items").await,
            );
            let acked = acking.ack_many(&q, &keys, "w").await.expect("ack");
            assert!(acked.iter().all(Result::is_ok), "{retention:?}: {acked:?}");
            let pkey = read(acker, "items_pkey").await - pkey;
            let by_phase = read(acker, "items_by_phase").await - by_phase
                + read(acker, "items_pending").await
                - pending;
            assert_eq!(
                read(acker, "items").await - scans,
                0,
                "schema version {SCHEMA_VERSION}, {retention:?}: an ack by {by} read the table"
            );
            assert!(
                pkey_reads.contains(&pkey),
                "schema version {SCHEMA_VERSION}, {retention:?}: an ack of 64 by {by} read \
                 {pkey} entries of the primary key"
            );
            assert_eq!(
                by_phase, 0,
                "schema version {SCHEMA_VERSION}, {retention:?}: an ack must not page its phase"
            );
            assert_eq!(
                store
                    .count_phase(&q, &hookspool::Phase::IN_FLIGHT)
                    .await
                    .expect("count"),
                0
            );
            let kept = store
                .count_phase(&q, &hookspool::Phase::DONE)
                .await
                .expect("count");
            acks += 64;
            assert_eq!(
                kept,
                if retention == Retention::Keep {
                    acks
                } else {
                    0
                },
                "by {by}"
            );
        }
    }
}

/// `items_by_phase` leaves out `in_flight` and `done` (schema version 5). On a queue of
/// 20,000 done items, 5 in flight and 5 pending, through the backend's one pooled session
/// with plans forced generic: a page of the in-flight items looks up the keys of the lease
/// rows (schema version 13), not the done items before them; a page of done items reads
/// the head of the primary key; a page of pending items reads `items_pending` (schema
/// version 9). Each gives the right items. The acks of the 20 claims before have deleted
/// their lease rows: one is left, the last claim's. The tables are vacuumed first, as
/// autovacuum does after every few thousand changes (hundreds, for the lease rows).
#[tokio::test]
async fn pages_of_in_flight_and_done_items_read_only_what_they_return() {
    use hookspool::{NewItem, Phase};
    use std::time::Duration;

    let (backend, store, q, schema) = generic_store().await;
    let lease = Duration::from_mins(5);
    for round in 0..20 {
        let items = (0..1000)
            .map(|i| NewItem::new(format!("{round}-{i}").into_bytes()))
            .collect();
        store.push_batch(&q, items).await.expect("push");
        let keys: Vec<_> = store
            .claim(&q, "w", 1000, lease)
            .await
            .expect("claim")
            .iter()
            .map(|i| i.key)
            .collect();
        assert_eq!(keys.len(), 1000);
        let acked = store.ack_many(&q, &keys, "w").await.expect("ack");
        assert!(acked.iter().all(Result::is_ok));
    }
    let tail = (0..10).map(|i| NewItem::new(vec![i])).collect();
    let tail = store.push_batch(&q, tail).await.expect("push");
    let flying: Vec<_> = store
        .claim(&q, "w", 5, lease)
        .await
        .expect("claim")
        .iter()
        .map(|i| i.key)
        .collect();
    assert_eq!(flying, tail[..5]);
    let client = testing::client().await;
    client
        .batch_execute(&format!(
            "VACUUM ANALYZE \"{schema}\".items, \"{schema}\".leases"
        ))
        .await
        .expect("vacuum");
    let leases: Vec<(i32, Vec<i64>)> = client
        .query(&format!("SELECT open, keys FROM \"{schema}\".leases"), &[])
        .await
        .expect("leases")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let flying: Vec<i64> = flying
        .iter()
        .map(|&k| i64::try_from(k).expect("key"))
        .collect();
    assert_eq!(
        leases,
        [(5, flying)],
        "the lease rows left after 20 acked claims and one more"
    );

    let indexes = [
        "items_pkey",
        "leases_due",
        "items_by_phase",
        "items_pending",
    ];
    for (phase, expect) in [
        (Phase::IN_FLIGHT, tail[..5].to_vec()),
        (Phase::PENDING, tail[5..].to_vec()),
        (Phase::DONE, (1..=10).collect()),
    ] {
        let (got, reads) = page_of(&backend, &store, &q, &phase, &indexes).await;
        assert_eq!(got, expect, "a page of {phase}");
        for (index, read) in indexes.iter().zip(reads) {
            assert!(
                read <= 20,
                "schema version {SCHEMA_VERSION}: a page of 10 {phase} items read {read} \
                 entries of {index} (the queue holds 20,000 done items)"
            );
        }
    }
}

/// Pending items have an index of their own, `items_pending`, and `items_by_phase` holds
/// the other phases but `in_flight` and `done` (schema version 9). On a queue of 2,000
/// pending items and 10 dead ones after them, through the backend's one pooled session with
/// plans forced generic, a page of each phase reads the head of its own index, and neither
/// reads past the items it returns in any index.
#[tokio::test]
async fn pages_of_pending_and_dead_items_read_only_what_they_return() {
    use hookspool::{NewItem, Phase};

    let (backend, store, q, schema) = generic_store().await;
    let items = (0..2010_u32)
        .map(|i| NewItem::new(i.to_le_bytes().to_vec()))
        .collect();
    let keys = store.push_batch(&q, items).await.expect("push");
    for key in &keys[2000..] {
        store
            .update_phase(&q, *key, Phase::DEAD)
            .await
            .expect("to dead");
    }
    testing::client()
        .await
        .batch_execute(&format!("VACUUM ANALYZE \"{schema}\".items"))
        .await
        .expect("vacuum");
    let indexes = ["items_pkey", "items_by_phase", "items_pending"];
    for (phase, expect, own) in [
        (Phase::PENDING, keys[..10].to_vec(), "items_pending"),
        (Phase::DEAD, keys[2000..].to_vec(), "items_by_phase"),
    ] {
        let (got, reads) = page_of(&backend, &store, &q, &phase, &indexes).await;
        assert_eq!(got, expect, "a page of {phase}");
        for (index, read) in indexes.iter().zip(reads) {
            if *index == own {
                assert!(
                    (10..=20).contains(&read),
                    "schema version {SCHEMA_VERSION}: a page of 10 {phase} items read {read} \
                     entries of {index}, its own index"
                );
            } else {
                assert!(
                    read <= 20,
                    "schema version {SCHEMA_VERSION}: a page of 10 {phase} items read {read} \
                     entries of {index} (the queue holds 2,010 items)"
                );
            }
        }
    }
}

/// A push of several items draws its keys from the queue's sequence in the items' order
/// without sorting the items: the statement joins the queue's one row to the rows of the
/// arrays (unnested in a select list, which streams them in order), which only a nested
/// loop can do, and that passes the arrays' rows on in their order, `nextval` running on
/// each as it passes. Checked on the plans the server makes for
/// each push statement (generic and custom); what a push stores is checked below.
#[tokio::test]
async fn a_batch_push_draws_its_keys_in_the_items_order_without_a_sort() {
    let (session, schema) = fresh_queue().await;
    for (n, statement) in testing::push_batch_statements(&schema).iter().enumerate() {
        session
            .batch_execute(&format!(
                "PREPARE push{n}(text, bytea[], json[], bigint[], bigint) AS {statement}"
            ))
            .await
            .expect("prepare");
        for mode in ["force_generic_plan", "force_custom_plan"] {
            session
                .batch_execute(&format!("SET plan_cache_mode = {mode}"))
                .await
                .expect("plan cache mode");
            let plan = session
                .query(
                    &format!(
                        "EXPLAIN (COSTS OFF) EXECUTE push{n}('q', \
                         ARRAY['\\x01', '\\x02']::bytea[], NULL, NULL, 1000)"
                    ),
                    &[],
                )
                .await
                .expect("explain")
                .iter()
                .map(|row| row.get::<_, String>(0))
                .collect::<Vec<_>>()
                .join("\n");
            assert!(
                plan.contains("Nested Loop") && plan.contains("ProjectSet"),
                "push statement {n}, {mode}: the items' rows must come from the arrays, \
                 unnested in the select list, through a nested loop:\n{plan}"
            );
            assert!(
                !plan.contains("Sort"),
                "push statement {n}, {mode}: nothing may reorder the items' rows:\n{plan}"
            );
        }
    }
}

/// What the push statements' plans promise (above): two tasks push 1024 items each at
/// once, some with metadata or a due time, and each item is stored under the key its call
/// returned for it, in the order of its batch.
#[tokio::test]
async fn batches_pushed_at_once_store_each_item_under_its_own_key() {
    let (store, q, schema) = testing::store_with_queue("q").await;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..2_u32 {
        let (store, q) = (store.clone(), q.clone());
        tasks.spawn(async move {
            let items = (0..1024_u32)
                .map(|i| {
                    let mut item =
                        hookspool::NewItem::new([t.to_be_bytes(), i.to_be_bytes()].concat());
                    if i % 3 == 0 {
                        item = item.with_metadata("i", i.to_string());
                    }
                    if i % 5 == 0 {
                        item = item.not_before(hookspool::Timestamp::from_millis(u64::from(i)));
                    }
                    item
                })
                .collect::<Vec<_>>();
            let keys = store.push_batch(&q, items).await.expect("push");
            (t, keys)
        });
    }
    let client = testing::client().await;
    while let Some(pushed) = tasks.join_next().await {
        let (t, keys) = pushed.expect("task");
        assert!(
            keys.windows(2).all(|w| w[0] < w[1]),
            "keys ascend in batch order"
        );
        let keys: Vec<i64> = keys
            .iter()
            .map(|&k| i64::try_from(k).expect("key"))
            .collect();
        let rows = client
            .query(
                &format!(
                    "SELECT payload, metadata::text, not_before FROM \"{schema}\".items \
                     WHERE key = ANY($1) ORDER BY key"
                ),
                &[&keys],
            )
            .await
            .expect("items");
        assert_eq!(rows.len(), 1024);
        for (i, row) in (0..1024_u32).zip(&rows) {
            assert_eq!(
                row.get::<_, Vec<u8>>(0),
                [t.to_be_bytes(), i.to_be_bytes()].concat(),
                "batch {t}: item {i} under its key"
            );
            let metadata = if i % 3 == 0 {
                format!("{{\"i\":\"{i}\"}}")
            } else {
                "{}".to_owned()
            };
            assert_eq!(
                row.get::<_, String>(1),
                metadata,
                "batch {t}: item {i}'s metadata"
            );
            if i % 5 == 0 {
                assert_eq!(
                    row.get::<_, i64>(2),
                    i64::from(i),
                    "batch {t}: item {i}'s due time"
                );
            }
        }
    }
}
