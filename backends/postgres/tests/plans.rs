//! The claim's plan follows the queue's size: a session that claimed while its queue held a
//! few items, and kept the plan the server chose then, still looks the claimed rows up by
//! key once the queue holds thousands (schema version 4), instead of reading every row of
//! the queue's generation for each of them. Observed through the server's own count of
//! index scans in the claiming transaction, not through timing.

use hookspool_postgres::{PostgresBackend, SCHEMA_VERSION, testing};
use tokio_postgres::Client;

async fn connect() -> Client {
    let url = testing::TestServer::shared().url();
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

/// Scans of `schema`'s index `index` counted in this session and not yet reported.
async fn scans(client: &Client, schema: &str, index: &str) -> i64 {
    client
        .query_one(
            "SELECT pg_stat_get_xact_numscans(format('%I.%I', $1::text, $2::text)::regclass)",
            &[&schema, &index],
        )
        .await
        .expect("index scans")
        .get(0)
}

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

#[tokio::test]
async fn a_claim_planned_on_a_small_queue_still_finds_its_rows_by_key_once_it_has_grown() {
    let options = testing::options();
    let schema = options.schema.clone();
    drop(PostgresBackend::open(options).await.expect("open"));
    let session = connect().await;
    session
        .batch_execute(&format!(
            "SELECT \"{schema}\".create_queue('q', NULL, 'keep', 0, '{{}}'); \
             SET plan_cache_mode = force_generic_plan"
        ))
        .await
        .expect("queue");
    // While the queue is small, the session's claims settle on a plan (a generic one: the
    // server takes one after five calls when it costs no more than planning anew).
    push(&session, &schema, 3).await;
    let claim = format!("SELECT count(*) FROM \"{schema}\".claim('q', 'w', $1, 1000000000, 2000)");
    for _ in 0..6 {
        session.query_one(&claim, &[&1_i32]).await.expect("claim");
    }
    // Another session fills the queue.
    push(&connect().await, &schema, 20_000).await;
    session.batch_execute("BEGIN").await.expect("begin");
    let before = (
        scans(&session, &schema, "items_by_phase").await,
        scans(&session, &schema, "items_pkey").await,
    );
    let claimed: i64 = session
        .query_one(&claim, &[&10_i32])
        .await
        .expect("claim")
        .get(0);
    let after = (
        scans(&session, &schema, "items_by_phase").await,
        scans(&session, &schema, "items_pkey").await,
    );
    session.batch_execute("COMMIT").await.expect("commit");
    assert_eq!(claimed, 10);
    assert_eq!(
        after.0 - before.0,
        0,
        "schema version {SCHEMA_VERSION}: the claim must not look its rows up by generation"
    );
    assert!(
        after.1 - before.1 >= 10,
        "each claimed row is found by its primary key: {} scans",
        after.1 - before.1
    );
}
