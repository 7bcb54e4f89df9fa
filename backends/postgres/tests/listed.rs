//! The phase as the indexes list it (schema version 15): no index of the items names
//! `phase`, only `listed` (the phase, NULL for `in_flight` and `done`), so that an ack
//! changes no indexed column and PostgreSQL can write its version in place (HOT, no index
//! entry). Checked here: that acks are written in place when their page has room, by key
//! and by address; that a write changing `phase` without `listed` is refused; and that an
//! upgrade from version 14 lists every item where its phase says.

use std::time::Duration;

use hookspool::{Backend, NewItem, Page, Phase, QueueConfig, QueueId, Selector};
use hookspool_postgres::{PostgresBackend, SCHEMA_VERSION, testing};

mod common;

use common::{acks, at, claim, keys_of};

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

/// A statement that changes an item's phase without `listed` is refused by the check
/// (`23514`), and the item stays where it was: pending, and claimed next.
#[tokio::test]
async fn a_phase_changed_without_listed_is_refused() {
    let options = testing::options();
    let schema = options.schema.clone();
    let backend = PostgresBackend::open(options).await.expect("open");
    let q = QueueId::new("q").expect("queue id");
    backend
        .create_queue(QueueConfig::new(q.clone()))
        .await
        .expect("create");
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
    let options = testing::options();
    let schema = options.schema.clone();
    testing::create_schema_at(&options, 14)
        .await
        .expect("a version 14 schema");
    let s = format!("\"{schema}\"");
    let client = testing::client().await;
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
