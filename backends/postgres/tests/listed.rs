//! The phase as the indexes list it (schema version 15): no index of the items names
//! `phase`, only `listed` (the phase, NULL for `in_flight` and `done`), so that an ack
//! changes no indexed column and PostgreSQL can write its version in place (HOT, no index
//! entry). Checked here: that acks are written in place when their page has room, by key
//! and by address; that a write changing `phase` without `listed` is refused (by a check
//! up to version 16, by the trigger `items_rules` since version 17), whole; and that the
//! upgrades from versions 14 and 16 keep every item where its phase says.

use std::time::Duration;

use hookspool::{Backend, NewItem, Page, Phase, QueueConfig, QueueId, Selector};
use hookspool_postgres::{PostgresBackend, SCHEMA_VERSION, testing};

mod common;

use common::{acks, at, claim, fresh, keys_of};

/// Updates of `schema`'s items written in place so far, as the backend's one pooled
/// session, which wrote them, sees them: the counts already reported plus those of its own
/// not yet reported.
async fn hot_updates(backend: &PostgresBackend, schema: &str) -> i64 {
    backend
        .connection()
        .await
        .expect("the pool's one session")
        .query_one(
            "SELECT (pg_stat_get_tuples_hot_updated(c.oid) \
                 + pg_stat_get_xact_tuples_hot_updated(c.oid))::bigint \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = 'items'",
            &[&schema],
        )
        .await
        .expect("table statistics")
        .get(0)
}

/// Claims of 10 (through version 13's `claim`, acked by key) and of 64 (through
/// `claim_located`, acked by address) from a queue with a TTL, each acked at once: every
/// ack's update is written in place. The items table is given a fillfactor of 10 first, so
/// that each page keeps room for its rows' next versions whatever other sessions' snapshots
/// keep (a held snapshot stops the server from reclaiming dead versions); the claims'
/// updates change `listed` and are never in place.
#[tokio::test]
async fn an_ack_is_written_in_place_when_its_page_has_room() {
    let options = testing::options().pool_size(1);
    let schema = options.schema.clone();
    let backend = PostgresBackend::open(options).await.expect("open");
    let q = QueueId::new("q").expect("queue id");
    // A TTL, so that the items enter the TTL index when pushed: a claim takes them out of
    // it (clearing `ttl_from`), and their acks then change no indexed column.
    let mut config = QueueConfig::new(q.clone());
    config.ttl = Some(Duration::from_hours(1));
    backend.create_queue(config).await.expect("create");
    testing::client()
        .await
        .batch_execute(&format!(
            "ALTER TABLE \"{schema}\".items SET (fillfactor = 10)"
        ))
        .await
        .expect("fillfactor");
    let items = (0..100u8).map(|i| NewItem::new(vec![i])).collect();
    backend.push(&q, items, at(0)).await.expect("push");
    for limit in [10, 64] {
        let before = hot_updates(&backend, &schema).await;
        let claimed = backend
            .claim(&q, claim("a", limit, 60_000), at(1_000))
            .await
            .expect("claim");
        assert_eq!(claimed.len(), limit);
        let claimed_in_place = hot_updates(&backend, &schema).await - before;
        assert_eq!(claimed_in_place, 0, "a claim changes `listed`");
        let results = backend
            .update_many(&q, acks(&keys_of(&claimed), "a"), at(2_000))
            .await
            .expect("ack");
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        let in_place = hot_updates(&backend, &schema).await - before;
        assert_eq!(
            in_place,
            i64::try_from(limit).expect("limit"),
            "acks of a claim of {limit} written in place"
        );
    }
    let counts = backend.count(&q).await.expect("counts");
    assert_eq!(
        (counts.get(&Phase::DONE), counts.get(&Phase::PENDING)),
        (74, 26),
        "{counts:?}"
    );
}

/// A statement that changes an item's phase without `listed` is refused by the trigger
/// `items_rules` (`23514`, naming the constraint version 15's check had), and the item
/// stays where it was: pending, and claimed next.
#[tokio::test]
async fn a_phase_changed_without_listed_is_refused() {
    let (backend, q, schema) = fresh().await;
    let items = (0..3u8).map(|i| NewItem::new(vec![i])).collect();
    let keys = backend.push(&q, items, at(0)).await.expect("push");
    let first = i64::try_from(keys[0]).expect("key");
    let client = testing::client().await;
    for stray in [
        format!("UPDATE \"{schema}\".items SET phase = 'dead' WHERE key = {first}"),
        format!(
            "UPDATE \"{schema}\".items SET phase = 'in_flight', lease_id = 1 WHERE key = {first}"
        ),
        format!("UPDATE \"{schema}\".items SET listed = NULL WHERE key = {first}"),
        format!("UPDATE \"{schema}\".items SET listed = 'dead' WHERE key = {first}"),
    ] {
        let err = client
            .batch_execute(&stray)
            .await
            .expect_err("a phase and `listed` that disagree");
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION),
            "{stray}: {err:?}"
        );
        assert!(
            err.as_db_error()
                .is_some_and(|e| e.constraint() == Some("items_listed_by_phase")),
            "{err:?}"
        );
    }
    let claimed = backend
        .claim(&q, claim("a", 1, 60_000), at(1_000))
        .await
        .expect("claim");
    assert_eq!(keys_of(&claimed), [keys[0]]);
}

/// An update of many items of which one breaks a rule is refused whole: the trigger runs
/// after each row, and its error undoes the statement, rows already written included. The
/// rows whose update keeps the rules are written as before. Inserts, and updates that name
/// neither `phase`, `listed` nor `lease_id`, are not looked at.
#[tokio::test]
async fn an_update_breaking_a_rule_in_one_row_is_refused_whole() {
    let (backend, q, schema) = fresh().await;
    let items = (0..5u8).map(|i| NewItem::new(vec![i])).collect();
    let keys = backend.push(&q, items, at(0)).await.expect("push");
    let last = i64::try_from(keys[4]).expect("key");
    let client = testing::client().await;
    // Keys 1-4 moved to `held` with their listing; the last one without it.
    let err = client
        .batch_execute(&format!(
            "UPDATE \"{schema}\".items SET phase = 'held', \
                 listed = CASE WHEN key = {last} THEN 'pending' ELSE 'held' END"
        ))
        .await
        .expect_err("one row listed as pending while held");
    let db = err.as_db_error().expect("a server error");
    assert_eq!(
        (db.code(), db.constraint(), db.table()),
        (
            &tokio_postgres::error::SqlState::CHECK_VIOLATION,
            Some("items_listed_by_phase"),
            Some("items")
        ),
        "{db:?}"
    );
    assert!(
        db.message().contains(&format!("item {last} of generation")),
        "the message names the item: {db:?}"
    );
    let unchanged: Vec<(String, Option<String>)> = listings(&schema)
        .await
        .into_iter()
        .map(|(_, phase, listed)| (phase, listed))
        .collect();
    assert_eq!(
        unchanged,
        vec![("pending".to_owned(), Some("pending".to_owned())); 5],
        "nothing of the refused statement is left"
    );
    // The same update with every row listed as its phase says is written.
    client
        .batch_execute(&format!(
            "UPDATE \"{schema}\".items SET phase = 'held', listed = 'held' WHERE key <> {last}"
        ))
        .await
        .expect("an update that keeps the rules");
    let held = listings(&schema)
        .await
        .iter()
        .filter(|(_, phase, listed)| phase == "held" && listed.as_deref() == Some("held"))
        .count();
    assert_eq!(held, 4);
    let claimed = backend
        .claim(&q, claim("a", 5, 60_000), at(1_000))
        .await
        .expect("claim");
    assert_eq!(keys_of(&claimed), [keys[4]]);
    // Inserts are not looked at (every push writes a pending item), nor are updates that
    // name none of the trigger's columns: a row written by hand against the rules takes
    // both, and is refused at its first update that names `phase`.
    let stray = "INSERT INTO {s}.items (gen, key, phase, created_at, updated_at, not_before, \
                 metadata, payload) SELECT gen, 1000, 'dead', 0, 0, 0, '{}', 'x' \
                 FROM {s}.queues WHERE id = 'q'; \
                 UPDATE {s}.items SET attempts = attempts + 1, last_error = 'x' WHERE key = 1000";
    client
        .batch_execute(&stray.replace("{s}", &format!("\"{schema}\"")))
        .await
        .expect("an insert, and an update of other columns");
    let err = client
        .batch_execute(&format!(
            "UPDATE \"{schema}\".items SET phase = phase WHERE key = 1000"
        ))
        .await
        .expect_err("`dead` listed as pending");
    assert_eq!(
        err.as_db_error().and_then(|e| e.constraint()),
        Some("items_listed_by_phase"),
        "{err:?}"
    );
}

/// A schema at version 16 (the rules held by CHECK constraints) with items pending, in
/// flight and done is upgraded: the checks are gone, the rules are the trigger's, and the
/// items go on as before (the one in flight is acked, the pending ones claimed). An
/// in-flight item written without its lease row is still refused, naming version 13's
/// constraint.
#[tokio::test]
async fn an_upgrade_from_version_16_keeps_the_rules_on_updates_only() {
    let (options, schema, s, client) = schema_at(16).await;
    client
        .batch_execute(&format!(
            "SELECT {s}.create_queue('q', NULL, 'keep', 0, '{{}}');
             SELECT {s}.push_many('q', array_agg(convert_to(i::text, 'UTF8')), NULL, NULL, 1000)
                 FROM generate_series(1, 4) AS i;
             SELECT {s}.settle_leased_to('q', 'a', ARRAY(SELECT key FROM {s}.claim('q', 'a', 1, 60000, 1000)), 'done', 1000);
             SELECT count(*) FROM {s}.claim('q', 'a', 1, 60000, 1000);"
        ))
        .await
        .expect("items under version 16");
    assert_eq!(
        rules(&client, &schema).await,
        (2, 0),
        "version 16: two checks"
    );

    let backend = PostgresBackend::open(options).await.expect("open");
    assert_eq!(
        rules(&client, &schema).await,
        (0, 1),
        "version 17: the trigger"
    );
    let q = QueueId::new("q").expect("queue id");
    let results = backend
        .update_many(&q, acks(&[2], "a"), at(2_000))
        .await
        .expect("ack");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let claimed = backend
        .claim(&q, claim("c", 10, 60_000), at(2_000))
        .await
        .expect("claim");
    assert_eq!(keys_of(&claimed), [3, 4]);
    let err = client
        .batch_execute(&format!(
            "UPDATE {s}.items SET lease_id = NULL WHERE key = 3"
        ))
        .await
        .expect_err("an item in flight without its lease row");
    assert_eq!(
        err.as_db_error().and_then(|e| e.constraint()),
        Some("items_in_flight_have_a_lease_row"),
        "{err:?}"
    );
    let counts = backend.count(&q).await.expect("counts");
    assert_eq!(
        (
            counts.get(&Phase::DONE),
            counts.get(&Phase::IN_FLIGHT),
            counts.get(&Phase::PENDING)
        ),
        (2, 2, 0),
        "{counts:?}"
    );
}

/// Options for a fresh schema made at an older `version`, its name, its name quoted for
/// SQL, and a client of the test server.
async fn schema_at(
    version: i32,
) -> (
    hookspool_postgres::PostgresOptions,
    String,
    String,
    tokio_postgres::Client,
) {
    let options = testing::options();
    let schema = options.schema.clone();
    testing::create_schema_at(&options, version)
        .await
        .unwrap_or_else(|e| panic!("a version {version} schema: {e}"));
    let quoted = format!("\"{schema}\"");
    (options, schema, quoted, testing::client().await)
}

/// The CHECK constraints of `schema`'s items table, and its triggers named `items_rules`.
async fn rules(client: &tokio_postgres::Client, schema: &str) -> (i64, i64) {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM pg_constraint c \
                     WHERE c.conrelid = r.oid AND c.contype = 'c'), \
                    (SELECT count(*) FROM pg_trigger t \
                     WHERE t.tgrelid = r.oid AND t.tgname = 'items_rules') \
             FROM pg_class r JOIN pg_namespace n ON n.oid = r.relnamespace \
             WHERE n.nspname = $1 AND r.relname = 'items'",
            &[&schema],
        )
        .await
        .expect("constraints and triggers");
    (row.get(0), row.get(1))
}

/// `(key, phase, listed)` of every item of `schema`'s queue `q`, by key.
async fn listings(schema: &str) -> Vec<(i64, String, Option<String>)> {
    testing::client()
        .await
        .query(
            &format!(
                "SELECT key, phase, listed FROM \"{schema}\".items \
                 WHERE gen = (SELECT gen FROM \"{schema}\".queues WHERE id = 'q') ORDER BY key"
            ),
            &[],
        )
        .await
        .expect("items")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// A schema at version 14 with items in every kind of phase (pending, in flight, done,
/// `dead`, and an application's own `held`) is upgraded: each item is listed as its phase
/// says, and claims, acks, pages by phase and the TTL sweep work on them.
#[tokio::test]
async fn an_upgrade_lists_each_item_as_its_phase_says() {
    let (options, schema, s, client) = schema_at(14).await;
    // 10 items in queue `q`; keys 1-2 done, 3-4 in flight to `a`, 5 dead, 6 held, 7-10
    // pending; and 2 pending items in queue `t`, whose TTL is 1 second.
    client
        .batch_execute(&format!(
            "SELECT {s}.create_queue('q', NULL, 'keep', 0, '{{}}');
             SELECT {s}.create_queue('t', 1000, 'keep', 0, '{{}}');
             SELECT {s}.push_many('q', array_agg(convert_to(i::text, 'UTF8')), NULL, NULL, 1000)
                 FROM generate_series(1, 10) AS i;
             SELECT {s}.push_many('t', ARRAY['x'::bytea, 'y'::bytea], NULL, NULL, 1000);
             SELECT {s}.settle_leased_to('q', 'a', ARRAY(SELECT key FROM {s}.claim('q', 'a', 2, 60000, 1000)), 'done', 1000);
             SELECT count(*) FROM {s}.claim('q', 'a', 2, 60000, 1000);
             SELECT {s}.settle_leased_to('q', 'b', ARRAY(SELECT key FROM {s}.claim('q', 'b', 1, 60000, 1000)), 'dead', 1000);
             SELECT {s}.settle_leased_to('q', 'b', ARRAY(SELECT key FROM {s}.claim('q', 'b', 1, 60000, 1000)), 'held', 1000);"
        ))
        .await
        .expect("items in every kind of phase under version 14");

    let backend = PostgresBackend::open(options).await.expect("open");
    let version: i32 = client
        .query_one(&format!("SELECT max(version) FROM {s}.migrations"), &[])
        .await
        .expect("version")
        .get(0);
    assert_eq!(version, SCHEMA_VERSION);
    let q = QueueId::new("q").expect("queue id");
    let listed: Vec<(String, Option<String>)> = listings(&schema)
        .await
        .into_iter()
        .map(|(_, phase, listed)| (phase, listed))
        .collect();
    let expected: Vec<(&str, Option<&str>)> = [
        ("done", None),
        ("done", None),
        ("in_flight", None),
        ("in_flight", None),
        ("dead", Some("dead")),
        ("held", Some("held")),
    ]
    .into_iter()
    .chain([("pending", Some("pending")); 4])
    .collect();
    let listed_ref: Vec<(&str, Option<&str>)> = listed
        .iter()
        .map(|(p, l)| (p.as_str(), l.as_deref()))
        .collect();
    assert_eq!(listed_ref, expected);

    // The items in flight are acked; the pending ones claimed; the others paged by phase.
    let results = backend
        .update_many(&q, acks(&[3, 4], "a"), at(2_000))
        .await
        .expect("ack");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let claimed = backend
        .claim(&q, claim("c", 10, 60_000), at(2_000))
        .await
        .expect("claim");
    assert_eq!(keys_of(&claimed), [7, 8, 9, 10]);
    for (phase, expected) in [
        ("dead", vec![5]),
        ("held", vec![6]),
        ("done", vec![1, 2, 3, 4]),
    ] {
        let page = Page::first(10).phase(Phase::new(phase).expect("phase"));
        let items = backend
            .fetch(&q, &Selector::Page(page))
            .await
            .expect("page");
        assert_eq!(keys_of(&items), expected, "a page of {phase}");
    }
    // Queue `t`'s items, pushed under version 14, expire once past the TTL.
    let swept = backend
        .sweep(&QueueId::new("t").expect("queue id"), at(5_000))
        .await;
    let swept = swept.expect("sweep");
    assert_eq!(swept.expired, 2);
    let counts = backend.count(&q).await.expect("counts");
    assert_eq!(
        (
            counts.get(&Phase::DONE),
            counts.get(&Phase::IN_FLIGHT),
            counts.get(&Phase::PENDING)
        ),
        (4, 4, 0),
        "{counts:?}"
    );
}
