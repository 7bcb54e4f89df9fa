//! Opening the backend on a real server: bad settings and foreign or newer schemas are
//! refused with a typed error that says what is wrong; several processes' worth of backends
//! opening one fresh schema at once all succeed (the migration runs once, under its lock);
//! `reset` and `delete_queue` answer at once and leave the old rows to the background; a
//! claim without sync leaves the connection it ran on committing synchronously; each pooled
//! session counts in a shard of its own; a schema an older hookspool made is upgraded in
//! place, keeping its items and counts (and, from version 4, its leases, with pages of every
//! phase right after the index by phase is rebuilt, and readers going on while it is
//! built); the one-statement settle refuses
//! arrays of different lengths; only queues with a TTL index their items by age,
//! and a queue that gains a TTL catches up the pushes that raced the change.

use std::time::Duration;

use hookspool::{Backend, NewItem, QueueConfig, QueueId, Store, Timestamp};
use hookspool_postgres::{OpenError, PostgresBackend, PostgresOptions, SCHEMA_VERSION, testing};

fn url() -> String {
    testing::TestServer::shared().url().to_owned()
}

async fn sql(statement: &str) {
    let client = testing::client().await;
    client.batch_execute(statement).await.expect(statement);
}

async fn scalar(statement: &str) -> i64 {
    let client = testing::client().await;
    client
        .query_one(statement, &[])
        .await
        .expect(statement)
        .get(0)
}

#[tokio::test]
async fn bad_settings_are_refused_before_connecting() {
    for schema in ["", "Upper", "1st", "pg_catalog", "a-b", "x;drop table y"] {
        let e = PostgresBackend::open(PostgresOptions::new(url()).schema(schema))
            .await
            .expect_err(schema);
        assert!(matches!(e, OpenError::InvalidOptions(_)), "{schema}: {e}");
        assert!(e.to_string().contains("schema name"), "{e}");
    }
    let e = PostgresBackend::open(PostgresOptions::new(url()).pool_size(0))
        .await
        .expect_err("pool size 0");
    assert!(e.to_string().contains("pool size"), "{e}");
    let e = PostgresBackend::open(PostgresOptions::new("postgresql://x:y@[bad"))
        .await
        .expect_err("bad URL");
    assert!(e.to_string().contains("connection string"), "{e}");
}

#[tokio::test]
async fn an_unreachable_server_or_a_wrong_login_names_the_host() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let e = PostgresBackend::open(PostgresOptions::new(format!(
        "postgresql://postgres:secret-pw@127.0.0.1:{port}/postgres"
    )))
    .await
    .expect_err("nothing listens there");
    let shown = e.to_string();
    assert!(matches!(e, OpenError::Connect { .. }), "{shown}");
    assert!(shown.contains(&format!("127.0.0.1:{port}")), "{shown}");
    assert!(!shown.contains("secret-pw"), "{shown}");

    let server = testing::TestServer::shared().url();
    let wrong = server.replace("postgresql://postgres@", "postgresql://nobody@");
    let e = PostgresBackend::open(PostgresOptions::new(wrong))
        .await
        .expect_err("no such role");
    assert!(
        e.to_string().contains("role \"nobody\" does not exist"),
        "{e}"
    );
}

#[tokio::test]
async fn a_server_that_does_not_speak_postgres_is_named() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    // An HTTP server where the database should be: it answers the startup message with
    // an HTTP error and hangs up.
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 512];
            let _ = socket.read(&mut buf).await;
            let _ = socket
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    let mut options = PostgresOptions::new(format!(
        "postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=disable"
    ));
    options.connect_timeout = std::time::Duration::from_secs(5);
    let e = PostgresBackend::open(options)
        .await
        .expect_err("not a PostgreSQL server");
    server.abort();
    let shown = e.to_string();
    assert!(matches!(e, OpenError::Connect { .. }), "{shown}");
    assert!(shown.contains(&format!("127.0.0.1:{port}")), "{shown}");
}

#[tokio::test]
async fn a_schema_holding_something_else_is_refused() {
    let schema = testing::options().schema;
    sql(&format!(
        "CREATE SCHEMA {schema}; CREATE TABLE {schema}.customers (id int)"
    ))
    .await;
    let e = PostgresBackend::open(PostgresOptions::new(url()).schema(&schema))
        .await
        .expect_err("a foreign schema");
    assert!(matches!(e, OpenError::ForeignSchema { .. }), "{e}");
    assert!(e.to_string().contains("not hookspool's"), "{e}");
    // Nothing of ours was added to it.
    let tables = scalar(&format!(
        "SELECT count(*) FROM pg_tables WHERE schemaname = '{schema}'"
    ))
    .await;
    assert_eq!(tables, 1);

    // An empty schema (made by a DBA, say) is fine.
    let empty = testing::options().schema;
    sql(&format!("CREATE SCHEMA {empty}")).await;
    PostgresBackend::open(PostgresOptions::new(url()).schema(&empty))
        .await
        .expect("an empty schema is used");
}

#[tokio::test]
async fn a_schema_from_a_newer_hookspool_is_refused() {
    let options = testing::options();
    let schema = options.schema.clone();
    drop(PostgresBackend::open(options).await.expect("open"));
    sql(&format!(
        "INSERT INTO {schema}.migrations (version) VALUES ({})",
        SCHEMA_VERSION + 1
    ))
    .await;
    let e = PostgresBackend::open(PostgresOptions::new(url()).schema(&schema))
        .await
        .expect_err("newer schema");
    match &e {
        OpenError::SchemaTooNew {
            found, supported, ..
        } => {
            assert_eq!(*found, SCHEMA_VERSION + 1);
            assert_eq!(*supported, SCHEMA_VERSION);
        }
        other => panic!("expected SchemaTooNew, got {other}"),
    }
    assert!(e.to_string().contains("upgrade hookspool"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_backends_opening_one_fresh_schema_at_once_all_succeed() {
    let schema = testing::options().schema;
    let opens: Vec<_> = (0..8)
        .map(|_| {
            let options = PostgresOptions::new(url()).schema(&schema).pool_size(2);
            tokio::spawn(PostgresBackend::open(options))
        })
        .collect();
    for open in opens {
        open.await.expect("task").expect("every open succeeds");
    }
    let versions = scalar(&format!("SELECT count(*) FROM {schema}.migrations")).await;
    assert_eq!(
        versions,
        i64::from(SCHEMA_VERSION),
        "each migration ran once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_and_delete_answer_at_once_and_the_rows_go_in_the_background() {
    let mut options = testing::options();
    options.trash_grace = Duration::from_millis(200);
    let schema = options.schema.clone();
    let backend = PostgresBackend::open(options).await.expect("open");
    let store = Store::new(backend.clone());
    let q = QueueId::new("big").expect("id");
    store
        .create_queue(QueueConfig::new(q.clone()))
        .await
        .expect("create");
    for _ in 0..4 {
        let batch = (0..5_000)
            .map(|i| NewItem::new(format!("{i}").into_bytes()))
            .collect();
        store.push_batch(&q, batch).await.expect("push");
    }
    assert_eq!(store.reset(&q).await.expect("reset"), 20_000);
    assert_eq!(
        backend.count(&q).await.expect("count").total(),
        0,
        "gone for readers at once"
    );
    let keys = store
        .push(&q, NewItem::new(b"after".to_vec()))
        .await
        .expect("push");
    assert_eq!(keys, 20_001, "the key counter is kept");

    let other = QueueId::new("other").expect("id");
    store
        .create_queue(QueueConfig::new(other.clone()))
        .await
        .expect("create");
    store
        .push_batch(
            &other,
            (0..3_000).map(|_| NewItem::new(b"x".to_vec())).collect(),
        )
        .await
        .expect("push");
    assert!(store.delete_queue(&other).await.expect("delete"));

    // The background task deletes the old rows, then (after the grace period) forgets the
    // generations and drops the deleted queue's key sequence.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let rows = scalar(&format!("SELECT count(*) FROM {schema}.items")).await;
        let trash = scalar(&format!("SELECT count(*) FROM {schema}.trash")).await;
        let sequences = scalar(&format!(
            // From the catalog alone: the `pg_sequences` view opens each sequence, and one
            // that the cleaner drops meanwhile fails the query ("could not open relation").
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'S' AND n.nspname = '{schema}' AND c.relname LIKE 'keys_%'"
        ))
        .await;
        if rows == 1 && trash == 0 && sequences == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{rows} rows, {trash} generations in the trash, {sequences} key sequences"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(store.count(&q).await.expect("count"), 1);
}

/// A claim without sync turns `synchronous_commit` off for its own transaction only: the
/// pooled connection it ran on (the only one, here) commits synchronously afterwards, so
/// the pushes and settles that follow on it are still durable on return.
#[tokio::test]
async fn a_claim_without_sync_leaves_its_connection_committing_synchronously() {
    let backend = PostgresBackend::open(testing::options().pool_size(1))
        .await
        .expect("open");
    let store = Store::new(backend.clone());
    let q = QueueId::new("lazy").expect("queue id");
    store
        .create_queue(QueueConfig::new(q.clone()))
        .await
        .expect("create");
    store
        .push_batch(
            &q,
            vec![NewItem::new(b"a".to_vec()), NewItem::new(b"b".to_vec())],
        )
        .await
        .expect("push");
    let setting = || async {
        let conn = backend
            .connection()
            .await
            .expect("the pool's one connection");
        conn.query_one("SHOW synchronous_commit", &[])
            .await
            .expect("show")
            .get::<_, String>(0)
    };
    assert_eq!(setting().await, "on", "the server's setting");
    let lazy = store
        .claim_without_sync(&q, "w", 1, Duration::from_mins(1))
        .await
        .expect("claim without sync");
    assert_eq!(lazy.len(), 1, "it leases like any claim");
    assert_eq!(
        setting().await,
        "on",
        "after a claim without sync, the same connection commits synchronously again"
    );
    let durable = store
        .claim(&q, "w", 1, Duration::from_mins(1))
        .await
        .expect("claim");
    assert_eq!(durable.len(), 1);
    assert_eq!(setting().await, "on");
}

/// The shard `schema.shard()` gives each of `sessions`, after checking that the session
/// holds that shard's advisory lock.
async fn shards(schema: &str, sessions: &[deadpool_postgres::Object]) -> Vec<i32> {
    let mut out = Vec::new();
    for conn in sessions {
        let row = conn
            .query_one(
                &format!(
                    "SELECT {schema}.shard(), EXISTS (SELECT 1 FROM pg_locks \
                     WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted \
                     AND classid::int = hashtext('hookspool counter shard') \
                     AND objid::int = {schema}.shard() AND objsubid = 2)"
                ),
                &[],
            )
            .await
            .expect("shard");
        let (shard, held): (i32, bool) = (row.get(0), row.get(1));
        assert!(held, "the session holds the lock of its shard {shard}");
        out.push(shard);
    }
    out
}

/// Every pooled session of every backend on the server writes its counts to a shard no
/// other one holds (two on one shard would wait for each other's commits); a session of
/// the application's own uses its process id's.
#[tokio::test]
async fn each_pooled_session_counts_in_a_shard_of_its_own() {
    let options = testing::options().pool_size(4);
    let schema = options.schema.clone();
    let one = PostgresBackend::open(options.clone()).await.expect("open");
    let two = PostgresBackend::open(options).await.expect("open again");
    let mut held = Vec::new();
    for backend in [&one, &two] {
        for _ in 0..4 {
            held.push(backend.connection().await.expect("a pooled connection"));
        }
    }
    let mut got = shards(&schema, &held).await;
    assert!(got.iter().all(|s| (0..64).contains(s)), "{got:?}");
    got.sort_unstable();
    got.dedup();
    assert_eq!(got.len(), 8, "eight sessions, eight shards: {got:?}");
    let own = scalar(&format!(
        "SELECT ({schema}.shard() = pg_backend_pid() % 64)::int::bigint"
    ))
    .await;
    assert_eq!(own, 1, "a session that took no shard uses its process id's");
}

/// Opens the backend on an older schema of `options` and checks that it now has every
/// migration.
async fn upgraded(options: PostgresOptions) -> Store<PostgresBackend> {
    let schema = options.schema.clone();
    let store = Store::new(PostgresBackend::open(options).await.expect("open"));
    assert_eq!(
        scalar(&format!(
            "SELECT max(version)::bigint FROM {schema}.migrations"
        ))
        .await,
        i64::from(SCHEMA_VERSION)
    );
    store
}

/// A schema at version 4 (as that version's SQL made it) with a queue `q`, then `setup`.
async fn version_4_with_queue_q(options: &PostgresOptions, setup: &str) {
    testing::create_schema_at(options, 4)
        .await
        .expect("a version 4 schema");
    let schema = &options.schema;
    sql(&format!(
        "SELECT {schema}.create_queue('q', NULL, 'keep', 0, '{{}}'); {setup}"
    ))
    .await;
}

/// A schema at version 1 (process-id shards, of 16) is brought to the current version when
/// the backend opens: the items and counts written before stay, and new counts add to them.
#[tokio::test]
async fn a_schema_from_version_1_is_upgraded_and_keeps_its_items_and_counts() {
    let options = testing::options();
    let schema = options.schema.clone();
    testing::create_schema_at(&options, 1)
        .await
        .expect("a version 1 schema");
    assert_eq!(
        scalar(&format!(
            "SELECT max(version)::bigint FROM {schema}.migrations"
        ))
        .await,
        1
    );
    sql(&format!(
        "SELECT {schema}.create_queue('old', NULL, 'keep', 0, '{{}}'); \
         SELECT {schema}.push('old', 'a'::bytea); SELECT {schema}.push('old', 'b'::bytea); \
         SELECT {schema}.create_queue('aging', 1000, 'keep', 0, '{{}}'); \
         SELECT {schema}.push('aging', 'x'::bytea);"
    ))
    .await;

    let store = upgraded(options).await;
    let q = QueueId::new("old").expect("queue id");
    assert_eq!(
        store.count(&q).await.expect("count"),
        2,
        "counted by version 1"
    );
    store
        .push(&q, NewItem::new(b"c".to_vec()))
        .await
        .expect("push");
    let claimed = store
        .claim(&q, "w", 10, Duration::from_mins(1))
        .await
        .expect("claim");
    let payloads: Vec<&[u8]> = claimed.iter().map(|i| i.payload.as_slice()).collect();
    assert_eq!(payloads, [b"a".as_slice(), b"b", b"c"]);
    let counts = store.counts(&q).await.expect("counts");
    assert_eq!(counts.get(&hookspool::Phase::IN_FLIGHT), 3, "{counts:?}");
    assert_eq!(counts.get(&hookspool::Phase::PENDING), 0, "{counts:?}");

    // Version 3 indexes pending items by age only in queues with a TTL: the item pushed
    // under version 1 to the queue with a TTL still expires.
    let aging = QueueId::new("aging").expect("queue id");
    let report = store
        .backend()
        .sweep(&aging, Timestamp::from_millis(u64::MAX / 2))
        .await
        .expect("sweep");
    assert_eq!(report.expired, 1, "{report:?}");
}

/// A schema at version 4 holding items in flight and pending is brought to version 5 (the
/// index by phase rebuilt without `in_flight` and `done`): the leases taken before still
/// settle, in one statement (a batch of 40) and the general way, and pages of every phase
/// and the counts agree with what happened.
#[tokio::test]
async fn a_schema_from_version_4_is_upgraded_with_its_leases_and_pages() {
    use hookspool::{Page, Phase};

    let options = testing::options();
    let schema = options.schema.clone();
    version_4_with_queue_q(
        &options,
        &format!(
            "SELECT {schema}.push('q', convert_to(i::text, 'UTF8')) FROM generate_series(1, 50) AS i; \
             SELECT count(*) FROM {schema}.claim('q', 'w', 45, 9000000000000, {schema}.now_ms());"
        ),
    )
    .await;

    let store = upgraded(options).await;
    let q = QueueId::new("q").expect("queue id");
    let page = |phase: Phase| Page::first(100).phase(phase);
    let keys = |items: Vec<hookspool::Item>| items.iter().map(|i| i.key).collect::<Vec<_>>();
    let flying = keys(
        store
            .fetch_page(&q, page(Phase::IN_FLIGHT))
            .await
            .expect("page"),
    );
    assert_eq!(flying.len(), 45, "leased under version 4");
    let (many, few) = flying.split_at(40);
    for batch in [many, few] {
        let acked = store.ack_many(&q, batch, "w").await.expect("ack");
        assert!(acked.iter().all(Result::is_ok), "{acked:?}");
    }
    let in_flight = keys(
        store
            .fetch_page(&q, page(Phase::IN_FLIGHT))
            .await
            .expect("page"),
    );
    let done = keys(store.fetch_page(&q, page(Phase::DONE)).await.expect("page"));
    let pending = keys(
        store
            .fetch_page(&q, page(Phase::PENDING))
            .await
            .expect("page"),
    );
    assert!(in_flight.is_empty(), "{in_flight:?}");
    assert_eq!(done, flying);
    assert_eq!(pending.len(), 5);
    let counts = store.counts(&q).await.expect("counts");
    assert_eq!(
        (
            counts.get(&Phase::DONE),
            counts.get(&Phase::PENDING),
            counts.get(&Phase::IN_FLIGHT)
        ),
        (45, 5, 0),
        "{counts:?}"
    );
}

/// The upgrade to version 5 rebuilds the index by phase without stopping readers. A writer
/// holds the items table, so the migration waits to build the new index; meanwhile a read of
/// the table goes through (it would wait behind the migration if the old index were dropped
/// before the new one is built). Once the writer commits, the upgrade completes with one
/// index by phase, the latest version's.
#[tokio::test]
async fn the_upgrade_to_version_5_lets_readers_through_while_its_index_waits_to_be_built() {
    let options = testing::options();
    let schema = options.schema.clone();
    version_4_with_queue_q(
        &options,
        &format!("SELECT {schema}.push('q', 'a'::bytea) FROM generate_series(1, 5);"),
    )
    .await;
    let writer = testing::client().await;
    writer
        .batch_execute(&format!(
            "BEGIN; UPDATE {schema}.items SET updated_at = updated_at + 1 \
             WHERE key = (SELECT min(key) FROM {schema}.items)"
        ))
        .await
        .expect("a writer's open transaction");
    let opening = tokio::spawn(PostgresBackend::open(options));
    let waiting = format!(
        "SELECT count(*) FROM pg_locks WHERE NOT granted \
         AND relation = '{schema}.items'::regclass"
    );
    let mut polls = 0;
    while scalar(&waiting).await == 0 {
        polls += 1;
        assert!(polls < 1_000, "the migration never waited for the writer");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reader = testing::client().await;
    reader
        .batch_execute("SET lock_timeout = '5s'")
        .await
        .expect("set lock_timeout");
    let read: i64 = reader
        .query_one(&format!("SELECT count(*) FROM {schema}.items"), &[])
        .await
        .expect("a read while the migration waits to build its index")
        .get(0);
    assert_eq!(read, 5);
    assert!(!opening.is_finished(), "the migration did not wait");
    writer.batch_execute("COMMIT").await.expect("commit");
    let store = Store::new(opening.await.expect("join").expect("open"));
    assert_eq!(
        scalar(&format!(
            "SELECT max(version)::bigint FROM {schema}.migrations"
        ))
        .await,
        i64::from(SCHEMA_VERSION)
    );
    let client = testing::client().await;
    let indexes: Vec<String> = client
        .query(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = $1 \
             AND indexname LIKE 'items_by_phase%'",
            &[&schema],
        )
        .await
        .expect("indexes")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(indexes.len(), 1, "{indexes:?}");
    // The index of the latest version (15 lists phases by `listed`).
    assert!(
        indexes[0].contains("items_by_phase ON") && indexes[0].contains("WHERE (listed <>"),
        "{indexes:?}"
    );
    let q = QueueId::new("q").expect("queue id");
    assert_eq!(store.count(&q).await.expect("count"), 5);
}

/// `settle_leased` (the one-statement settle, schema version 5) refuses arrays of different
/// lengths, which `unnest` would pad with NULL (a NULL phase removes an item): the leased
/// items stay as they were.
#[tokio::test]
async fn settle_leased_refuses_arrays_of_different_lengths() {
    let options = testing::options();
    let schema = options.schema.clone();
    drop(PostgresBackend::open(options).await.expect("open"));
    sql(&format!(
        "SELECT {schema}.create_queue('q', NULL, 'keep', 0, '{{}}'); \
         SELECT {schema}.push('q', 'a'::bytea); SELECT {schema}.push('q', 'b'::bytea); \
         SELECT count(*) FROM {schema}.claim('q', 'w', 2, 9000000000000, {schema}.now_ms());"
    ))
    .await;
    let client = testing::client().await;
    let err = client
        .query_one(
            &format!(
                "SELECT {schema}.settle_leased('q', 'w', ARRAY[1, 2]::bigint[], \
                 ARRAY['done']::text[], ARRAY[NULL, NULL]::bigint[], \
                 ARRAY[NULL, NULL]::text[], ARRAY[NULL, NULL]::json[], 1)"
            ),
            &[],
        )
        .await
        .expect_err("arrays of different lengths");
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "22023");
    assert!(db.message().contains("one length"), "{}", db.message());
    let in_flight = scalar(&format!(
        "SELECT count(*) FROM {schema}.items WHERE phase = 'in_flight'"
    ))
    .await;
    assert_eq!(in_flight, 2, "nothing settled, nothing removed");
}

/// Whether each item of `queue` carries `ttl_from` (is in the TTL index when pending), by key.
async fn ttl_marks(schema: &str, queue: &str) -> Vec<(i64, bool)> {
    let client = testing::client().await;
    client
        .query(
            &format!(
                "SELECT i.key, i.ttl_from IS NOT NULL FROM {schema}.items i \
                 JOIN {schema}.queues q ON q.gen = i.gen WHERE q.id = $1 ORDER BY i.key"
            ),
            &[&queue],
        )
        .await
        .expect("marks")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Only items of a queue with a TTL enter the TTL index. A queue that gains a TTL gives it
/// to its pending items at once; an item that a push racing the change left without it
/// (made here by hand: the race itself cannot be timed from a test) gets it from the
/// background once the grace period has passed, and then expires like the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_queues_with_a_ttl_index_items_by_age_and_a_gained_ttl_catches_up() {
    let mut options = testing::options();
    // Long enough for the sweep below to run before the catch-up can.
    options.trash_grace = Duration::from_millis(300);
    let schema = options.schema.clone();
    let backend = PostgresBackend::open(options).await.expect("open");
    let store = Store::new(backend.clone());
    let q = QueueId::new("later").expect("queue id");
    store
        .create_queue(QueueConfig::new(q.clone()))
        .await
        .expect("create");
    for payload in [b"a", b"b"] {
        store
            .push(&q, NewItem::new(payload.to_vec()))
            .await
            .expect("push");
    }
    assert_eq!(
        ttl_marks(&schema, "later").await,
        [(1, false), (2, false)],
        "no TTL, no entry in the TTL index"
    );

    let config = QueueConfig::new(q.clone()).with_ttl(Duration::from_secs(1));
    store.update_queue(config).await.expect("gain a TTL");
    store
        .push(&q, NewItem::new(b"c".to_vec()))
        .await
        .expect("push");
    assert_eq!(
        ttl_marks(&schema, "later").await,
        [(1, true), (2, true), (3, true)],
        "the pending items got the TTL with the queue, and a later push gets it too"
    );

    // What a push that read the queue just before the TTL was added leaves behind, while
    // the gain waits out its grace period (noted again: the cleaner may be done with it).
    sql(&format!(
        "UPDATE {schema}.items SET ttl_from = NULL WHERE key = 2 \
         AND gen = (SELECT gen FROM {schema}.queues WHERE id = 'later'); \
         INSERT INTO {schema}.ttl_gains (gen) SELECT gen FROM {schema}.queues \
         WHERE id = 'later' ON CONFLICT (gen) DO UPDATE SET since = now()"
    ))
    .await;
    let early = backend
        .sweep(&q, Timestamp::from_millis(u64::MAX / 2))
        .await
        .expect("sweep");
    assert_eq!(early.expired, 2, "without the TTL, item 2 stays: {early:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while scalar(&format!("SELECT count(*) FROM {schema}.ttl_gains")).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the cleaner never caught up the TTL gain"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        ttl_marks(&schema, "later").await,
        [(1, true), (2, true), (3, true)],
        "caught up after the grace period"
    );
    let report = backend
        .sweep(&q, Timestamp::from_millis(u64::MAX / 2))
        .await
        .expect("sweep");
    assert_eq!(report.expired, 1, "item 2 expires now: {report:?}");
}

/// The applications' push (`push_many`, under `push`, `fire` and `push_in`) as `schema`
/// defines it, with the schema's name taken out so that two schemas compare.
async fn push_many_definition(schema: &str) -> String {
    let client = testing::client().await;
    let definition: String = client
        .query_one(
            "SELECT pg_get_functiondef(p.oid) FROM pg_proc p \
             JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname = $1 AND p.proname = 'push_many'",
            &[&schema],
        )
        .await
        .expect("push_many")
        .get(0);
    definition.replace(schema, "SCHEMA")
}

/// Version 12 redefines `push_many` as the backend's batch statement, which sorts nothing: a
/// schema upgraded from version 11 gets the same function as a fresh one, and a schema
/// created at version 11 still has the one version 7 made (frozen in `v7.sql`).
#[tokio::test]
async fn version_12_gives_upgraded_and_fresh_schemas_the_same_push() {
    let old = testing::options();
    testing::create_schema_at(&old, 11)
        .await
        .expect("a version 11 schema");
    let before = push_many_definition(&old.schema).await;
    assert!(
        before.contains("WITH ORDINALITY") && before.contains("ORDER BY u.i"),
        "version 7's push: {before}"
    );
    let old_schema = old.schema.clone();
    let store = upgraded(old).await;
    let after = push_many_definition(&old_schema).await;
    assert!(
        !after.contains("ORDINALITY") && !after.contains("ORDER BY u."),
        "version 12's push sorts nothing: {after}"
    );
    let fresh = testing::options();
    let fresh_schema = fresh.schema.clone();
    drop(PostgresBackend::open(fresh).await.expect("open"));
    assert_eq!(after, push_many_definition(&fresh_schema).await);
    // And it pushes: keys in batch order, through the SQL function.
    let q = QueueId::new("q").expect("queue id");
    store
        .create_queue(QueueConfig::new(q.clone()))
        .await
        .expect("queue");
    let keys: Vec<i64> = testing::client()
        .await
        .query_one(
            &format!(
                "SELECT \"{old_schema}\".push_many('q', ARRAY['a', 'b', 'c']::bytea[], NULL, \
                 NULL, 1000)"
            ),
            &[],
        )
        .await
        .expect("push_many")
        .get(0);
    assert_eq!(keys, [1, 2, 3]);
    let items = store
        .fetch_page(&q, hookspool::Page::first(10))
        .await
        .expect("page");
    let payloads: Vec<&[u8]> = items.iter().map(|i| i.payload.as_slice()).collect();
    assert_eq!(payloads, [b"a".as_slice(), b"b", b"c"]);
}
