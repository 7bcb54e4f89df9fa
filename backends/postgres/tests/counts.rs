//! Counts by phase with the count changes of schema version 7: a push appends its count
//! change to `count_changes`, and the backend rolls the changes up into the counter rows.
//! A count is exact before the roll-up, after it, and while several processes push and
//! roll up at once; a reset counts what was not rolled up yet; the changes of a
//! thrown-away generation go with it. Observed in the tables themselves, on the shared
//! test server.

use std::time::Duration;

use hookspool::{Backend, Claim, NewItem, Phase, QueueConfig, QueueId, Timestamp};
use hookspool_postgres::{PostgresBackend, testing};
use tokio_postgres::Client;

fn items(n: usize, tag: &str) -> Vec<NewItem> {
    (0..n).map(|i| NewItem::new(format!("{tag} {i}"))).collect()
}

async fn open(options: hookspool_postgres::PostgresOptions) -> (PostgresBackend, QueueId) {
    let backend = PostgresBackend::open(options).await.expect("open");
    let q = QueueId::new("q").expect("queue id");
    backend
        .create_queue(QueueConfig::new(q.clone()))
        .await
        .expect("create");
    (backend, q)
}

/// Rows and the sum of their counts in `count_changes`, and the sum of the counter rows,
/// of queue `q`'s current generation (`None`: of every generation).
async fn tables(client: &Client, schema: &str, generation: Option<i64>) -> (i64, i64, i64) {
    let row = client
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM \"{schema}\".count_changes \
                         WHERE $1::bigint IS NULL OR gen = $1), \
                        (SELECT coalesce(sum(n), 0)::bigint FROM \"{schema}\".count_changes \
                         WHERE $1::bigint IS NULL OR gen = $1), \
                        (SELECT coalesce(sum(n), 0)::bigint FROM \"{schema}\".counts \
                         WHERE $1::bigint IS NULL OR gen = $1)"
            ),
            &[&generation],
        )
        .await
        .expect("count tables");
    (row.get(0), row.get(1), row.get(2))
}

async fn generation(client: &Client, schema: &str) -> i64 {
    client
        .query_one(
            &format!("SELECT gen FROM \"{schema}\".queues WHERE id = 'q'"),
            &[],
        )
        .await
        .expect("generation")
        .get(0)
}

async fn pending(backend: &PostgresBackend, q: &QueueId) -> u64 {
    backend.count(q).await.expect("count").get(&Phase::PENDING)
}

/// A session of its own holding the roll-up's turn of `schema` (its advisory lock), so that
/// no backend rolls the count changes up until it gives the turn back.
async fn take_the_turn(schema: &str) -> tokio_postgres::Client {
    let turn = testing::client().await;
    turn.batch_execute(&testing::count_changes_lock(schema))
        .await
        .expect("take the turn");
    turn
}

/// While another session holds the roll-up's turn, every kind of push leaves its count in
/// `count_changes` and counts are exact; once the turn is free, one roll-up moves them all
/// into the counter rows, and counts are the same.
#[tokio::test]
async fn pushes_are_counted_before_and_after_their_changes_are_rolled_up() {
    let options = testing::options();
    let schema = options.schema.clone();
    let (backend, q) = open(options).await;
    let turn = take_the_turn(&schema).await;
    let client = testing::client().await;
    let now = Timestamp::now();

    for i in 0..5 {
        backend
            .push(&q, items(1, &format!("one {i}")), now)
            .await
            .expect("push one");
    }
    backend
        .push(&q, items(10, "batch"), now)
        .await
        .expect("push batch");
    let mut conn = backend.connection().await.expect("connection");
    let tx = conn.transaction().await.expect("begin");
    backend
        .push_in(&tx, &q, items(3, "in a transaction"))
        .await
        .expect("push in");
    tx.commit().await.expect("commit");
    drop(conn);
    client
        .batch_execute(&format!(
            "SELECT \"{schema}\".push('q', '\\x00'::bytea); SELECT \"{schema}\".push('q', '{{}}'::jsonb)"
        ))
        .await
        .expect("SQL pushes");

    let g = generation(&client, &schema).await;
    let (rows, changes, counted) = tables(&client, &schema, Some(g)).await;
    assert_eq!(
        (rows, changes, counted),
        (9, 20, 0),
        "one change per statement (5 single pushes, a batch, a push in a transaction, two \
         SQL pushes), none rolled up"
    );
    assert_eq!(pending(&backend, &q).await, 20);
    assert_eq!(
        testing::roll_up_count_changes(&backend).await,
        Ok(0),
        "not its turn"
    );

    turn.batch_execute("SELECT pg_advisory_unlock_all()")
        .await
        .expect("give the turn back");
    assert_eq!(testing::roll_up_count_changes(&backend).await, Ok(9));
    assert_eq!(tables(&client, &schema, Some(g)).await, (0, 0, 20));
    assert_eq!(pending(&backend, &q).await, 20);

    // Claims and acknowledgements keep counting in the counter rows.
    let claimed = backend
        .claim(
            &q,
            Claim {
                owner: "w".to_owned(),
                limit: 4,
                lease_until: now.saturating_add(Duration::from_hours(1)),
                durable: true,
            },
            now,
        )
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 4);
    backend
        .push(&q, items(1, "after"), now)
        .await
        .expect("push");
    let counts = backend.count(&q).await.expect("count");
    assert_eq!(
        (counts.get(&Phase::PENDING), counts.get(&Phase::IN_FLIGHT)),
        (17, 4)
    );
}

/// The backend rolls its pushes' changes up by itself, within a few periods of 200 ms.
#[tokio::test]
async fn the_backend_rolls_its_pushes_changes_up_by_itself() {
    let options = testing::options();
    let schema = options.schema.clone();
    let (backend, q) = open(options).await;
    let client = testing::client().await;
    backend
        .push(&q, items(1, "one"), Timestamp::now())
        .await
        .expect("push");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tables(&client, &schema, None).await.0 > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the change is still there after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(tables(&client, &schema, None).await, (0, 0, 1));
    assert_eq!(pending(&backend, &q).await, 1);
}

/// Two backends (two processes, as far as the server can tell) push from several tasks
/// each while both roll up as fast as they can: every push is counted once, at every
/// moment and at the end.
#[tokio::test]
async fn two_backends_pushing_and_rolling_up_at_once_count_every_push_once() {
    const TASKS: usize = 3;
    const PUSHES: usize = 150;
    let options = testing::options();
    let schema = options.schema.clone();
    let (a, q) = open(options.clone()).await;
    let b = PostgresBackend::open(options).await.expect("open b");
    let client = testing::client().await;

    let mut pushers = Vec::new();
    for backend in [&a, &b] {
        for t in 0..TASKS {
            let (backend, q) = (backend.clone(), q.clone());
            pushers.push(tokio::spawn(async move {
                for i in 0..PUSHES {
                    let n = 1 + i % 3;
                    backend
                        .push(&q, items(n, &format!("{t} {i}")), Timestamp::now())
                        .await
                        .expect("push");
                }
            }));
        }
    }
    let rolling = [&a, &b].map(|backend| {
        let backend = backend.clone();
        tokio::spawn(async move {
            let mut moved = 0;
            for _ in 0..200 {
                moved += testing::roll_up_count_changes(&backend)
                    .await
                    .expect("roll up");
                tokio::task::yield_now().await;
            }
            moved
        })
    });
    let mut seen = Vec::new();
    for _ in 0..20 {
        seen.push(pending(&a, &q).await);
    }
    for p in pushers {
        p.await.expect("pusher");
    }
    let mut moved = 0;
    for r in rolling {
        moved += r.await.expect("roller");
    }
    let pushed = (2 * TASKS * (PUSHES / 3) * 6) as u64;
    assert!(moved > 0, "the roll-ups moved changes while pushes ran");
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]) && seen.iter().all(|&n| n <= pushed),
        "counts read meanwhile only grew, and never past what was pushed: {seen:?}"
    );
    assert_eq!(pending(&a, &q).await, pushed);
    assert_eq!(pending(&b, &q).await, pushed);
    while testing::roll_up_count_changes(&a).await.expect("roll up") > 0 {}
    let (rows, _, counted) = tables(&client, &schema, None).await;
    assert_eq!((rows, counted), (0, i64::try_from(pushed).expect("small")));
}

/// A reset counts the changes not rolled up yet among what it removed. Those of the old
/// generation are dropped by a roll-up, not added to any counter row, and the trash deletes
/// what is left of them with the generation.
#[tokio::test]
async fn a_reset_counts_the_changes_not_rolled_up_and_they_go_with_its_generation() {
    let mut options = testing::options();
    options.trash_grace = Duration::from_millis(50);
    let schema = options.schema.clone();
    let (backend, q) = open(options).await;
    let client = testing::client().await;
    let turn = take_the_turn(&schema).await;
    let now = Timestamp::now();

    backend.push(&q, items(4, "old"), now).await.expect("push");
    let old = generation(&client, &schema).await;
    assert_eq!(backend.reset(&q).await.expect("reset"), 4);
    backend.push(&q, items(2, "new"), now).await.expect("push");
    let new = generation(&client, &schema).await;
    assert_ne!(old, new);
    assert_eq!(pending(&backend, &q).await, 2);

    // The trash empties the old generation; its change goes with it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tables(&client, &schema, Some(old)).await != (0, 0, 0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old generation's count change is still there after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A change of a generation that is gone by the roll-up is dropped, not counted.
    backend
        .push(&q, items(3, "racing"), now)
        .await
        .expect("push");
    client
        .batch_execute(&format!(
            "INSERT INTO \"{schema}\".count_changes (gen, phase, n) VALUES ({old}, 'pending', 5)"
        ))
        .await
        .expect("a late change of the old generation");
    turn.batch_execute("SELECT pg_advisory_unlock_all()")
        .await
        .expect("give the turn back");
    assert_eq!(testing::roll_up_count_changes(&backend).await, Ok(3));
    assert_eq!(tables(&client, &schema, Some(old)).await, (0, 0, 0));
    assert_eq!(tables(&client, &schema, Some(new)).await, (0, 0, 5));
    assert_eq!(pending(&backend, &q).await, 5);
}

/// The vacuum after roll-ups leaves the table's pages in place (no exclusive lock); the one
/// with `TRUNCATE` gives back the empty tail, as after a snapshot held open let the table
/// grow. Counts are the same throughout.
#[tokio::test]
async fn a_vacuum_with_truncate_gives_back_the_pages_of_rolled_up_changes() {
    let options = testing::options();
    let schema = options.schema.clone();
    let (backend, q) = open(options).await;
    let client = testing::client().await;
    let turn = take_the_turn(&schema).await;
    let g = generation(&client, &schema).await;
    client
        .batch_execute(&format!(
            "INSERT INTO \"{schema}\".count_changes (gen, phase, n) \
             SELECT {g}, 'done', 1 FROM generate_series(1, 20000)"
        ))
        .await
        .expect("many changes");
    let pages = async || -> i64 {
        client
            .query_one(
                &format!("SELECT pg_relation_size('\"{schema}\".count_changes') / 8192"),
                &[],
            )
            .await
            .expect("size")
            .get(0)
    };
    let grown = pages().await;
    assert!(grown > 50, "20,000 rows take {grown} pages");
    turn.batch_execute("SELECT pg_advisory_unlock_all()")
        .await
        .expect("give the turn back");
    assert_eq!(testing::roll_up_count_changes(&backend).await, Ok(20_000));
    let done = || async { backend.count(&q).await.expect("count").get(&Phase::DONE) };
    assert_eq!(done().await, 20_000);

    testing::vacuum_count_changes(&backend, false)
        .await
        .expect("vacuum");
    assert_eq!(pages().await, grown, "no truncation without TRUNCATE");
    // Other tests' transactions on the shared server may still see the moved rows for a
    // moment (vacuum then keeps them): try again until they are gone.
    let mut after = grown;
    for _ in 0..100 {
        testing::vacuum_count_changes(&backend, true)
            .await
            .expect("vacuum with truncate");
        after = pages().await;
        if after <= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(after <= 1, "{after} pages left of {grown}");
    assert_eq!(done().await, 20_000);
}
