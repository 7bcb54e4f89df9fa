//! Claims and the TTL sweep read the index made for them whatever the table's statistics
//! say (schema version 16). A table analyzed while its queues were drained has statistics
//! that say no item is pending, and a table never analyzed has none; either way the planner
//! expects one pending item, and up to version 15 it then planned a claim through
//! `items_pending` and a sort of every pending item, and the TTL sweep through
//! `items_pending` too. Observed through the server's own count of the index entries and
//! table scans of the measured calls (autovacuum is off for the table, so the statistics
//! stay as the test leaves them).

use tokio_postgres::Client;

mod common;

use common::{fresh_schema, index_entries_all, table_scans};

/// The lease end of every claim here.
const UNTIL: i64 = 9_000_000_000_000;

/// The indexes whose entries the measured calls read.
const INDEXES: [&str; 3] = ["items_due", "items_pending", "items_ttl"];

/// What scans of `schema`'s items have read so far, counted by the server (reported, and
/// this session's not yet reported): entries of each of `INDEXES`, then sequential scans of
/// the table.
async fn reads(client: &Client, schema: &str) -> Vec<i64> {
    let mut got = Vec::new();
    for index in INDEXES {
        got.push(index_entries_all(client, schema, index).await);
    }
    got.push(table_scans(client, schema).await);
    got
}

/// Runs `statement` (returning a count) and gives what it returned and what it read: the
/// entries of each of `INDEXES`, then the table's sequential scans.
async fn measured(client: &Client, schema: &str, statement: &str) -> (i64, Vec<i64>) {
    let before = reads(client, schema).await;
    let statement = statement.replace("{schema}", &format!("\"{schema}\""));
    let got = client
        .query_one(&statement, &[])
        .await
        .expect(&statement)
        .get(0);
    let after = reads(client, schema).await;
    let read = after.iter().zip(before).map(|(a, b)| a - b).collect();
    (got, read)
}

/// A fresh schema whose items table autovacuum leaves alone, with a queue `q` that keeps
/// its items and has a TTL of `ttl_ms` (none if `None`); a session and the schema's name.
async fn fresh_queue(ttl_ms: Option<i64>) -> (Client, String) {
    let (session, schema) = fresh_schema().await;
    session
        .batch_execute(&format!(
            "ALTER TABLE \"{schema}\".items SET (autovacuum_enabled = false)"
        ))
        .await
        .expect("autovacuum off");
    session
        .execute(
            &format!("SELECT \"{schema}\".create_queue('q', $1, 'keep', 0, '{{}}')"),
            &[&ttl_ms],
        )
        .await
        .expect("queue");
    (session, schema)
}

/// Pushes `n` items to `queue`, at time `now`.
async fn push(client: &Client, schema: &str, queue: &str, n: i32, now: i64) {
    client
        .batch_execute(&format!(
            "SELECT \"{schema}\".push_many('{queue}', array_agg(decode(md5(i::text), 'hex')), \
             NULL, NULL, {now}) FROM generate_series(1, {n}) AS i"
        ))
        .await
        .expect("push");
}

/// How many of `schema`'s items have expired.
async fn expired_items(client: &Client, schema: &str) -> i64 {
    client
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".items WHERE phase = 'expired'"),
            &[],
        )
        .await
        .expect("expired items")
        .get(0)
}

/// Pushes 2,000 items to another queue, claims and acks them all, and analyzes the table:
/// its statistics then say that no item is pending (`listed` is NULL in every row). The
/// other queue's items leave entries in the indexes that the server may not remove yet
/// (other tests' snapshots); in a queue of their own they are not in `q`'s part of them.
async fn analyzed_while_drained(client: &Client, schema: &str) {
    client
        .batch_execute(&format!(
            "SELECT \"{schema}\".create_queue('drained', NULL, 'keep', 0, '{{}}')"
        ))
        .await
        .expect("queue");
    push(client, schema, "drained", 2_000, 1_000).await;
    let settled: i32 = client
        .query_one(
            &format!(
                "SELECT cardinality(\"{schema}\".settle_leased_to('drained', 'w', ARRAY(SELECT \
                 key FROM \"{schema}\".claim('drained', 'w', 2000, {UNTIL}, 1000)), 'done', 1000))"
            ),
            &[],
        )
        .await
        .expect("drain")
        .get(0);
    assert_eq!(settled, 2_000);
    client
        .batch_execute(&format!("VACUUM ANALYZE \"{schema}\".items"))
        .await
        .expect("analyze");
    let none_pending: bool = client
        .query_one(
            "SELECT null_frac = 1 FROM pg_stats \
             WHERE schemaname = $1 AND tablename = 'items' AND attname = 'listed'",
            &[&schema],
        )
        .await
        .expect("the statistics of `listed`")
        .get(0);
    assert!(
        none_pending,
        "the statistics must say that nothing is pending"
    );
}

/// Each of the four claims, for 16 items of the 60,000 pending, reads only the head of
/// `items_due`: no entry of `items_pending`, no sequential scan.
async fn claims_read_the_due_index(client: &Client, schema: &str) {
    let claims = [
        format!("SELECT count(*) FROM {{schema}}.claim('q', 'w', 16, {UNTIL}, 3000)"),
        format!("SELECT count(*) FROM {{schema}}.claim_after('q', 'w', 16, {UNTIL}, 3000, 0, 0)"),
        format!(
            "SELECT count(*) FROM {{schema}}.claim_for('q', ARRAY['w', 'v'], ARRAY[8, 8], \
             ARRAY[{UNTIL}, {UNTIL}]::bigint[], 3000)"
        ),
        format!(
            "SELECT count(*) FROM {{schema}}.claim_located('q', ARRAY['w'], ARRAY[16], \
             ARRAY[{UNTIL}]::bigint[], 3000)"
        ),
    ];
    for claim in &claims {
        let (claimed, read) = measured(client, schema, claim).await;
        assert_eq!(claimed, 16, "{claim}");
        let [due, pending, _, table_scans] = read[..] else {
            unreachable!("three indexes and the table")
        };
        assert_eq!(pending, 0, "{claim} read items_pending: {read:?}");
        assert_eq!(table_scans, 0, "{claim} scanned the table: {read:?}");
        // The entries of the items that earlier claims took are read too, until the
        // server marks them dead.
        assert!(
            (16..=80).contains(&due),
            "{claim} read {due} entries of items_due: {read:?}"
        );
    }
}

/// A table never analyzed (a new schema filled before autovacuum's first look).
#[tokio::test]
async fn claims_read_the_due_index_of_a_table_never_analyzed() {
    let (client, schema) = fresh_queue(None).await;
    push(&client, &schema, "q", 60_000, 1_000).await;
    claims_read_the_due_index(&client, &schema).await;
}

/// A table analyzed while drained, then given 60,000 items.
#[tokio::test]
async fn claims_read_the_due_index_of_a_table_analyzed_while_drained() {
    let (client, schema) = fresh_queue(None).await;
    analyzed_while_drained(&client, &schema).await;
    push(&client, &schema, "q", 60_000, 1_000).await;
    claims_read_the_due_index(&client, &schema).await;
}

/// A pop of a page of pending items (by key) on a table analyzed while drained reads the
/// head of `items_pending`, not `items_due` and a sort: no guard does this, the page's
/// conditions fit `items_pending` better whatever the statistics say; kept here so that
/// it stays so.
#[tokio::test]
async fn a_pop_of_pending_items_reads_the_pending_index_of_a_table_analyzed_while_drained() {
    let (client, schema) = fresh_queue(None).await;
    analyzed_while_drained(&client, &schema).await;
    push(&client, &schema, "q", 60_000, 1_000).await;
    let pop = "SELECT count(*) FROM {schema}.pop_page('q', NULL, 0, 10, false, 'pending')";
    let (popped, read) = measured(&client, &schema, pop).await;
    assert_eq!(popped, 10);
    let [due, pending, _, table_scans] = read[..] else {
        unreachable!("three indexes and the table")
    };
    assert_eq!(due, 0, "the pop read items_due: {read:?}");
    assert_eq!(table_scans, 0, "the pop scanned the table: {read:?}");
    assert!(
        (10..=20).contains(&pending),
        "the pop read {pending} entries of items_pending: {read:?}"
    );
}

/// The TTL sweep (in a claim) on a table analyzed while drained: it expires the 10 items
/// past their TTL reading the head of `items_ttl` alone, and so does a second sweep, which
/// finds none past their TTL (each reads the oldest entry, and the first the 10 expired
/// ones; the second may still read the entries those 10 left, until the server marks them
/// dead). The 60,000 other items are pushed later, not yet due at the claims' time.
#[tokio::test]
async fn the_ttl_sweep_reads_the_ttl_index_of_a_table_analyzed_while_drained() {
    let (client, schema) = fresh_queue(Some(3_600_000)).await;
    analyzed_while_drained(&client, &schema).await;
    push(&client, &schema, "q", 10, 10_000).await;
    push(&client, &schema, "q", 60_000, 5_000_000).await;
    let claim = format!("SELECT count(*) FROM {{schema}}.claim('q', 'w', 16, {UNTIL}, 3700000)");
    for sweep in ["first", "second"] {
        let (claimed, read) = measured(&client, &schema, &claim).await;
        assert_eq!(claimed, 0, "nothing is due yet");
        let [_, pending, ttl, table_scans] = read[..] else {
            unreachable!("three indexes and the table")
        };
        assert_eq!(pending, 0, "the {sweep} sweep read items_pending: {read:?}");
        assert_eq!(
            table_scans, 0,
            "the {sweep} sweep scanned the table: {read:?}"
        );
        assert!(
            (1..=21).contains(&ttl),
            "the {sweep} sweep read {ttl} entries of items_ttl: {read:?}"
        );
        assert_eq!(
            expired_items(&client, &schema).await,
            10,
            "after the {sweep} sweep"
        );
    }
}

/// The claims and the TTL sweep turn sorting off for one statement each and put back what
/// they found, so a caller's own statements in the same transaction plan as before: each
/// of the four claims and the sweep on its own, on a queue whose oldest items are past
/// their TTL, in a transaction whose `enable_sort` is `on` or `off` (`SET LOCAL`), and in
/// a session set to `off` outside any transaction block. (The claims put back what they
/// found at their start, which would hide a sweep inside them that did not: the sweep is
/// also called on its own.)
#[tokio::test]
async fn the_claims_and_the_sweep_leave_enable_sort_as_they_found_it() {
    let (client, schema) = fresh_queue(Some(3_600_000)).await;
    // Each call, what it returns (the items it claimed, or those it expired: the two
    // pushed for it, since the claim before it left nothing pending) and whether it
    // sweeps (`claim_after` does not).
    let calls = [
        (
            format!("SELECT count(*) FROM {{schema}}.claim('q', 'w', 4, {UNTIL}, {{now}})"),
            4,
            true,
        ),
        (
            format!(
                "SELECT count(*) FROM {{schema}}.claim_after('q', 'w', 4, {UNTIL}, {{now}}, 0, 0)"
            ),
            4,
            false,
        ),
        (
            format!(
                "SELECT count(*) FROM {{schema}}.claim_for('q', ARRAY['w', 'v'], ARRAY[2, 2], \
                 ARRAY[{UNTIL}, {UNTIL}]::bigint[], {{now}})"
            ),
            4,
            true,
        ),
        (
            format!(
                "SELECT count(*) FROM {{schema}}.claim_located('q', ARRAY['w'], ARRAY[4], \
                 ARRAY[{UNTIL}]::bigint[], {{now}})"
            ),
            4,
            true,
        ),
        (
            "SELECT expired FROM {schema}.sweep('q', {now})".to_string(),
            2,
            true,
        ),
    ];
    let mut now = 10_000;
    for (begin, expected) in [
        (Some("BEGIN; SET LOCAL enable_sort = on"), "on"),
        (Some("BEGIN; SET LOCAL enable_sort = off"), "off"),
        (None, "off"),
    ] {
        if begin.is_none() {
            client
                .batch_execute("SET enable_sort = off")
                .await
                .expect("session setting");
        }
        for (call, returns, sweeps) in &calls {
            // Two items past their TTL at the call's time, and four due at it.
            push(&client, &schema, "q", 2, now).await;
            now += 3_600_001;
            push(&client, &schema, "q", 4, now).await;
            let expired_before = expired_items(&client, &schema).await;
            if let Some(begin) = begin {
                client.batch_execute(begin).await.expect("begin");
            }
            let call = call
                .replace("{schema}", &format!("\"{schema}\""))
                .replace("{now}", &now.to_string());
            let returned: i64 = client.query_one(&call, &[]).await.expect(&call).get(0);
            assert_eq!(returned, *returns, "{call}");
            let sorting: String = client
                .query_one("SHOW enable_sort", &[])
                .await
                .expect("show")
                .get(0);
            assert_eq!(sorting, expected, "after {call} ({begin:?})");
            if begin.is_some() {
                client.batch_execute("COMMIT").await.expect("commit");
            }
            if *sweeps {
                assert!(
                    expired_items(&client, &schema).await > expired_before,
                    "{call} expired nothing"
                );
            }
        }
    }
}
