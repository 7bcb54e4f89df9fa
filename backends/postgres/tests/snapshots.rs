//! The oldest snapshot on the server: a session that holds one open is found and named
//! (its process id, application and state); once it ends, it is not. Any age is a valid
//! question, the longest too. A backend told how old is too old says so in its log, and
//! meanwhile claims from where its last claim ended (schema version 6): such a claim reads
//! none of the index entries the snapshot keeps alive, and nothing is left behind for long.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookspool::{
    Action, Backend, Claim, Expect, Item, Move, NewItem, Phase, QueueConfig, QueueId, Timestamp,
    Transition,
};
use hookspool_postgres::{PostgresBackend, testing};

/// The tests of this file one at a time: each holds a snapshot open on the shared server,
/// and the oldest of them is the one every query names.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn a_session_holding_a_snapshot_open_is_named_until_it_ends() {
    let _one = ONE_AT_A_TIME.lock().await;
    let backend = PostgresBackend::open(testing::options())
        .await
        .expect("open");
    let (holder, pid) = hold_snapshot("forgotten report").await;

    let found = backend
        .oldest_snapshot(Duration::ZERO)
        .await
        .expect("oldest snapshot")
        .expect("a session holds a snapshot");
    assert_eq!(found.pid, pid, "{found:?}");
    assert_eq!(found.application, "forgotten report");
    assert_eq!(found.state, "idle in transaction");
    assert!(
        backend
            .oldest_snapshot(Duration::from_hours(1))
            .await
            .expect("oldest snapshot")
            .is_none(),
        "a snapshot of less than an hour reported as older"
    );
    assert!(
        backend
            .oldest_snapshot(Duration::MAX)
            .await
            .expect("the longest age is a question too")
            .is_none()
    );

    holder.batch_execute("COMMIT").await.expect("commit");
    let after = backend
        .oldest_snapshot(Duration::ZERO)
        .await
        .expect("oldest snapshot");
    assert!(after.as_ref().is_none_or(|s| s.pid != pid), "{after:?}");
}

/// A session named `application` that holds a snapshot open (a `REPEATABLE READ`
/// transaction that has read something), and its process id.
async fn hold_snapshot(application: &str) -> (tokio_postgres::Client, i32) {
    let holder = testing::client().await;
    holder
        .batch_execute(&format!("SET application_name = '{application}'"))
        .await
        .expect("set application_name");
    let pid: i32 = holder
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    holder
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM pg_class")
        .await
        .expect("a snapshot held open");
    (holder, pid)
}

/// What a test's tracing subscriber writes, kept for the test to read.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The warning itself: a backend told to warn about snapshots older than 200 ms logs one
/// naming the session that holds it (its pid and application), as an operator reads it; its
/// gauges report the snapshot's age and the pool; and once the session ends its transaction,
/// the backend says so, with the REINDEX that gives the indexes' space back.
#[tokio::test]
async fn a_backend_logs_a_warning_naming_the_session_that_holds_an_old_snapshot() {
    let _one = ONE_AT_A_TIME.lock().await;
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    // This test's runtime has one thread, so the backend's tasks log through this too.
    let _guard = tracing::subscriber::set_default(subscriber);

    let (holder, pid) = hold_snapshot("report left open").await;
    let backend = PostgresBackend::open(
        testing::options().snapshot_warning(Some(Duration::from_millis(200))),
    )
    .await
    .expect("open");

    let wanted = format!("pid={pid}");
    let line = log_line(&log, &wanted, "held a snapshot open").await;
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("application=report left open"), "{line}");
    assert!(line.contains("state=idle in transaction"), "{line}");
    assert!(
        line.contains("idle_in_transaction_session_timeout"),
        "{line}"
    );

    // The same look is one of the backend's gauges, beside its pool's.
    let gauges = backend.gauges();
    let value = |name: &str, label: Option<(&str, &str)>| {
        gauges
            .iter()
            .find(|g| {
                g.name == name
                    && label
                        .is_none_or(|(k, v)| g.labels.iter().any(|(gk, gv)| *gk == k && gv == v))
            })
            .unwrap_or_else(|| panic!("no gauge {name} {label:?} in {gauges:?}"))
            .value
    };
    assert!(
        value("hookspool_postgres_oldest_snapshot_seconds", None) >= 0.2,
        "{gauges:?}"
    );
    assert!(
        value("hookspool_postgres_connections", Some(("state", "open"))) >= 1.0,
        "{gauges:?}"
    );
    assert!(value("hookspool_postgres_connections", Some(("state", "idle"))) >= 0.0);
    assert!((value("hookspool_postgres_connections_max", None) - 4.0).abs() < f64::EPSILON);
    assert!(value("hookspool_postgres_connection_waiters", None).abs() < f64::EPSILON);

    // Once it ends, the backend says so, once, with what is left to do.
    holder.batch_execute("COMMIT").await.expect("commit");
    let line = log_line(&log, &wanted, "no snapshot is held open any more").await;
    assert!(line.contains("INFO"), "{line}");
    assert!(line.contains("REINDEX TABLE CONCURRENTLY"), "{line}");
    drop(backend);
}

/// The first line of `log` holding both `pid` and `what`, waited for (the backend looks
/// every 100 ms) for at most 20 s.
async fn log_line(log: &Captured, pid: &str, what: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = log.text();
        if let Some(line) = text.lines().find(|l| l.contains(pid) && l.contains(what)) {
            return line.to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no line with {pid} and {what:?} within 20 s; the log:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A claim by `w` of at most `limit` items, leased until `until`.
fn claim(limit: usize, until: Timestamp) -> Claim {
    Claim {
        owner: "w".to_owned(),
        limit,
        lease_until: until,
        durable: true,
    }
}

/// Acknowledges `items` (leased to `w`): they move to `done`.
async fn ack(backend: &PostgresBackend, q: &QueueId, items: &[Item], now: Timestamp) {
    let done = Transition {
        expect: Expect {
            phase: None,
            lease_owner: Some("w".to_owned()),
        },
        action: Action::Move(Move::to(Phase::DONE)),
    };
    let results = backend
        .update_many(
            q,
            items.iter().map(|i| (i.key, done.clone())).collect(),
            now,
        )
        .await
        .expect("ack");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
}

/// A backend whose own calls stay full ones (it does not look for snapshots), with a queue
/// `q` of 2,100 items pushed at 1,000, of which the first 2,000 were claimed (leased until
/// 2,000) and acknowledged under a snapshot held open since before the claims.
struct HeldQueue {
    backend: PostgresBackend,
    q: QueueId,
    /// Holds the snapshot until it is dropped (or commits).
    _holder: tokio_postgres::Client,
    /// The last item claimed: `not_before` and key.
    last: (i64, i64),
}

async fn claimed_and_acked_under_a_held_snapshot() -> HeldQueue {
    let backend = PostgresBackend::open(testing::options().snapshot_warning(None))
        .await
        .expect("open");
    let q = QueueId::new("q").expect("queue id");
    backend
        .create_queue(QueueConfig::new(q.clone()))
        .await
        .expect("create");
    let at = Timestamp::from_millis;
    let items = (0..2_100)
        .map(|i| NewItem::new(format!("item {i}")))
        .collect();
    backend.push(&q, items, at(1_000)).await.expect("push");
    let (holder, _) = hold_snapshot("held during claims").await;
    let mut last = None;
    for _ in 0..20 {
        let items = backend
            .claim(&q, claim(100, at(2_000)), at(1_500))
            .await
            .expect("claim");
        assert_eq!(items.len(), 100);
        ack(&backend, &q, &items, at(1_600)).await;
        last = items
            .last()
            .map(|i| (1_000, i64::try_from(i.key).expect("key")));
    }
    HeldQueue {
        backend,
        q,
        _holder: holder,
        last: last.expect("claimed"),
    }
}

/// What `call` (a statement of the backend's schema) returned, an integer per row, and how
/// many entries of the two indexes it read, in a transaction rolled back afterwards.
/// Observed through the server's count of the index entries a session's scans returned,
/// dead ones included, not through timing.
async fn entries_read_by(
    backend: &PostgresBackend,
    call: &str,
    [one, two]: [&str; 2],
) -> (Vec<i64>, i64, i64) {
    let session = testing::client().await;
    let schema = backend.schema();
    let call = call.replace("{schema}", &format!("\"{schema}\""));
    let read = async |index: &str| -> i64 {
        session
            .query_one(
                "SELECT pg_stat_get_xact_tuples_returned(format('%I.%I', $1::text, $2::text)::regclass)",
                &[&schema, &index],
            )
            .await
            .expect("index statistics")
            .get(0)
    };
    session.batch_execute("BEGIN").await.expect("begin");
    let (first, second) = (read(one).await, read(two).await);
    let returned = session
        .query(&call, &[])
        .await
        .expect(&call)
        .iter()
        .map(|r| r.get(0))
        .collect();
    let (first, second) = (read(one).await - first, read(two).await - second);
    session.batch_execute("ROLLBACK").await.expect("rollback");
    (returned, first, second)
}

/// Under a held snapshot, 2,000 items were claimed and acknowledged: the full claim then
/// reads the entries of all of them in the due index to claim the next 10. Its sweep reads
/// the entries of the 20 claims' lease rows (their leases have run out at 5,000; the acks
/// deleted the rows), one per claim: up to schema version 12 it read those of the 2,000
/// items in the lease index. `claim_after`, given where the last claim ended, claims the
/// same 10 reading neither.
#[tokio::test]
async fn a_claim_from_a_position_reads_none_of_the_entries_a_held_snapshot_keeps() {
    let _one = ONE_AT_A_TIME.lock().await;
    let held = claimed_and_acked_under_a_held_snapshot().await;
    let (not_before, key) = held.last;
    let indexes = ["items_due", "leases_due"];
    let (full, full_due, full_leases) = entries_read_by(
        &held.backend,
        "SELECT key FROM {schema}.claim('q', 'w', 10, 1000000, 5000) ORDER BY key",
        indexes,
    )
    .await;
    let (after, after_due, after_leases) = entries_read_by(
        &held.backend,
        &format!(
            "SELECT key FROM {{schema}}.claim_after('q', 'w', 10, 1000000, 5000, {not_before}, \
             {key}) ORDER BY key"
        ),
        indexes,
    )
    .await;

    let next: Vec<i64> = (key + 1..=key + 10).collect();
    assert_eq!(full, next);
    assert_eq!(after, next, "claim_after claims what the full claim does");
    assert!(
        full_due >= 2_000,
        "the premise: the full claim reads the due index's entries of the 2,000 claimed \
         items (it read {full_due})"
    );
    assert!(
        (20..=25).contains(&full_leases),
        "the full claim's sweep read {full_leases} entries of the lease rows' index, where \
         the 20 claims left 20"
    );
    assert!(
        after_due <= 20,
        "claim_after read {after_due} entries of the due index to claim 10"
    );
    assert_eq!(after_leases, 0, "claim_after does not sweep");
}

/// Under a held snapshot, 2,000 items were claimed and acknowledged, and retention removed
/// 1,990 of them: its next full step reads the primary key's entries of all those to
/// remove the 10 left, and `prune_after`, given where the last step ended, none.
#[tokio::test]
async fn a_prune_from_a_position_reads_none_of_the_entries_a_held_snapshot_keeps() {
    let _one = ONE_AT_A_TIME.lock().await;
    let held = claimed_and_acked_under_a_held_snapshot().await;
    let pruned = held
        .backend
        .prune(&held.q, &Phase::DONE, Timestamp::from_millis(10_000), 1_990)
        .await
        .expect("prune");
    assert_eq!(pruned, 1_990);
    let pruned_up_to = held.last.1 - 10;

    let indexes = ["items_pkey", "items_by_phase"];
    let (full, full_keys, _) = entries_read_by(
        &held.backend,
        "SELECT {schema}.prune_phase('q', 'done', 10000, 100)",
        indexes,
    )
    .await;
    let (after, after_keys, _) = entries_read_by(
        &held.backend,
        &format!(
            "SELECT removed FROM {{schema}}.prune_after('q', 'done', 10000, 100, {pruned_up_to})"
        ),
        indexes,
    )
    .await;
    assert_eq!(
        (full, after),
        (vec![10], vec![10]),
        "both remove the 10 left"
    );
    // Each removed item left three versions (pending, in flight, done); the first two have an
    // entry each, and the third too where its page had no room for an update in place
    // (schema version 15). What both read besides is the rest of the queue (100 items
    // pending, 10 done).
    assert!(
        full_keys - after_keys >= 2 * 1_990 && after_keys < 1_990,
        "the full step reads the entries of the 1,990 items removed, prune_after none of them \
         (full: {full_keys}, prune_after: {after_keys})"
    );
}

/// A backend told to warn about snapshots older than 200 ms, with a queue `q`, once it has
/// seen a snapshot held that long; and the session that holds it.
async fn a_backend_that_sees_a_held_snapshot() -> (PostgresBackend, QueueId, tokio_postgres::Client)
{
    let backend = PostgresBackend::open(
        testing::options().snapshot_warning(Some(Duration::from_millis(200))),
    )
    .await
    .expect("open");
    let q = QueueId::new("q").expect("queue id");
    backend
        .create_queue(QueueConfig::new(q.clone()))
        .await
        .expect("create");
    let (holder, _) = hold_snapshot("held while delivering").await;
    wait_for("the backend to see the snapshot", || {
        gauge(&backend, "hookspool_postgres_oldest_snapshot_seconds").is_some_and(|s| s >= 0.2)
    })
    .await;
    (backend, q, holder)
}

fn gauge(backend: &PostgresBackend, name: &str) -> Option<f64> {
    backend
        .gauges()
        .iter()
        .find(|g| g.name == name)
        .map(|g| g.value)
}

const HOUR: Duration = Duration::from_hours(1);

/// A backend that sees a snapshot held open claims from where its last claim ended (its
/// gauge says for how many queues), and still claims every item exactly once. What lands
/// behind that position comes within a few full claims (one at least every 100 ms with this
/// threshold): an item pushed with a `not_before` already past, and an item whose lease ran
/// out. Once the snapshot is released, claims are full ones again.
#[tokio::test]
async fn under_a_held_snapshot_claims_start_where_the_last_ended_and_leave_nothing_behind() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (backend, q, holder) = a_backend_that_sees_a_held_snapshot().await;

    let items = (0..30).map(|i| NewItem::new(format!("item {i}"))).collect();
    let pushed = backend
        .push(&q, items, Timestamp::now())
        .await
        .expect("push");
    let mut claimed = Vec::new();
    loop {
        let now = Timestamp::now();
        let items = backend
            .claim(&q, claim(7, now.saturating_add(HOUR)), now)
            .await
            .expect("claim");
        if items.is_empty() {
            break;
        }
        ack(&backend, &q, &items, now).await;
        claimed.extend(items.iter().map(|i| i.key));
    }
    assert_eq!(claimed, pushed, "every item, once, in order");
    assert_eq!(
        gauge(&backend, "hookspool_postgres_claims_from_position"),
        Some(1.0),
        "claims of the queue start from a position"
    );

    // Behind the position: an item due an hour ago, and one whose lease runs out at once.
    let now = Timestamp::now();
    let late = NewItem {
        not_before: Some(Timestamp::from_millis(now.as_millis() - 3_600_000)),
        ..NewItem::new("due an hour ago")
    };
    let leased = backend
        .push(&q, vec![NewItem::new("leased")], now)
        .await
        .expect("push")[0];
    let taken = backend.claim(&q, claim(1, now), now).await.expect("claim");
    assert_eq!(taken.iter().map(|i| i.key).collect::<Vec<_>>(), [leased]);
    let late = backend.push(&q, vec![late], now).await.expect("push")[0];

    let mut again = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while again.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "within 20 s, claimed again only {again:?}"
        );
        let now = Timestamp::now();
        for item in backend
            .claim(&q, claim(10, now.saturating_add(HOUR)), now)
            .await
            .expect("claim")
        {
            assert!(
                again.insert(item.key, item.attempts).is_none(),
                "{} claimed twice",
                item.key
            );
            ack(&backend, &q, &[item], now).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        again,
        BTreeMap::from([(late, 1), (leased, 2)]),
        "the item due an hour ago, and the expired lease's item on its second attempt"
    );

    holder.batch_execute("COMMIT").await.expect("commit");
    wait_for("claims to be full ones again", || {
        gauge(&backend, "hookspool_postgres_claims_from_position") == Some(0.0)
    })
    .await;
}

/// Two backends on one schema (two nodes), both seeing a held snapshot, claim while another
/// task pushes in small batches: every item is claimed exactly once, by one of them, and
/// none is left behind, though each claims from a position of its own and passes over the
/// other's claims.
#[tokio::test]
async fn under_a_held_snapshot_two_nodes_claim_every_item_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (a, q, _holder) = a_backend_that_sees_a_held_snapshot().await;
    let b = PostgresBackend::open(
        testing::options()
            .schema(a.schema())
            .snapshot_warning(Some(Duration::from_millis(200))),
    )
    .await
    .expect("open a second node");
    wait_for("the second node to see the snapshot", || {
        gauge(&b, "hookspool_postgres_oldest_snapshot_seconds").is_some_and(|s| s >= 0.2)
    })
    .await;

    let pushing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let producer = {
        let (a, q, pushing) = (a.clone(), q.clone(), Arc::clone(&pushing));
        tokio::spawn(async move {
            let mut pushed = Vec::new();
            for batch in 0..100 {
                let items = (0..=batch % 7)
                    .map(|i| NewItem::new(format!("batch {batch} item {i}")))
                    .collect();
                pushed.extend(a.push(&q, items, Timestamp::now()).await.expect("push"));
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            pushing.store(false, std::sync::atomic::Ordering::SeqCst);
            pushed
        })
    };
    let consumer = |node: PostgresBackend, q: QueueId| {
        let pushing = Arc::clone(&pushing);
        tokio::spawn(async move {
            let mut claimed = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            // Until the pushes are over and nothing is pending or in flight, or the deadline.
            loop {
                let done_pushing = !pushing.load(std::sync::atomic::Ordering::SeqCst);
                let now = Timestamp::now();
                let items = node
                    .claim(&q, claim(5, now.saturating_add(HOUR)), now)
                    .await
                    .expect("claim");
                ack(&node, &q, &items, now).await;
                claimed.extend(items.iter().map(|i| i.key));
                let counts = node.count(&q).await.expect("count");
                let open = counts.get(&Phase::PENDING) + counts.get(&Phase::IN_FLIGHT);
                if (done_pushing && items.is_empty() && open == 0)
                    || tokio::time::Instant::now() > deadline
                {
                    return (claimed, node);
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };
    let (from_a, from_b) = (consumer(a.clone(), q.clone()), consumer(b, q.clone()));
    let mut pushed = producer.await.expect("producer");
    let (mut claimed, a) = from_a.await.expect("node a");
    let (from_b, b) = from_b.await.expect("node b");
    assert!(
        !claimed.is_empty() && !from_b.is_empty(),
        "both nodes claimed"
    );
    claimed.extend(from_b);
    claimed.sort_unstable();
    pushed.sort_unstable();
    assert_eq!(claimed, pushed, "every item claimed once, by one node");
    for node in [&a, &b] {
        assert_eq!(
            gauge(node, "hookspool_postgres_claims_from_position"),
            Some(1.0),
            "each node claimed from a position of its own"
        );
    }
}

/// A backend that sees a snapshot held open prunes from where its last step ended, and an
/// item that became done behind that key goes at the next full step (one at least every
/// 200 ms, the warning's threshold, here).
#[tokio::test]
async fn under_a_held_snapshot_retention_starts_where_it_ended_and_leaves_nothing_behind() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (backend, q, _holder) = a_backend_that_sees_a_held_snapshot().await;
    let now = Timestamp::now();
    let items = (0..5).map(|i| NewItem::new(format!("item {i}"))).collect();
    backend.push(&q, items, now).await.expect("push");
    let five = backend
        .claim(&q, claim(5, now.saturating_add(HOUR)), now)
        .await
        .expect("claim");
    assert_eq!(five.len(), 5);
    // All but the first are done, and retention removes them: its step ends at the last.
    ack(&backend, &q, &five[1..], now).await;
    let everything = now.saturating_add(HOUR);
    let done = async || backend.count(&q).await.expect("count").get(&Phase::DONE);
    let prune = async || {
        backend
            .prune(&q, &Phase::DONE, everything, 1_000)
            .await
            .expect("prune")
    };
    assert_eq!(prune().await, 4);
    // The first becomes done behind that key.
    ack(&backend, &q, &five[..1], now).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut removed = 0;
    while done().await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the item done behind the last step's key is still there after 20 s"
        );
        removed += prune().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(removed, 1);
}

/// A backend that sees a snapshot held open counts its pushes with the upsert of counter
/// rows (schema version 7's count changes could not be freed once rolled up), moves each
/// session's counter row to a new shard every period (100 ms with this threshold), and
/// counts stay exact; once the
/// snapshot is released, the rows of those shards are folded back into the sessions' own
/// (below 64), and counts are still exact.
#[tokio::test]
async fn under_a_held_snapshot_counts_move_to_new_shards_and_fold_back_after() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (backend, q, holder) = a_backend_that_sees_a_held_snapshot().await;
    let client = testing::client().await;
    let schema = backend.schema().to_owned();
    let epoch_shards = async || -> i64 {
        client
            .query_one(
                &format!("SELECT count(DISTINCT shard) FROM \"{schema}\".counts WHERE shard >= 64"),
                &[],
            )
            .await
            .expect("counts")
            .get(0)
    };
    let counts = async || {
        let counts = backend.count(&q).await.expect("count");
        (counts.get(&Phase::PENDING), counts.get(&Phase::IN_FLIGHT))
    };

    for i in 0..6 {
        let now = Timestamp::now();
        let item = NewItem::new(format!("item {i}"));
        backend.push(&q, vec![item], now).await.expect("push");
        if i % 2 == 1 {
            let one = backend
                .claim(&q, claim(1, now.saturating_add(HOUR)), now)
                .await
                .expect("claim");
            assert_eq!(one.len(), 1);
        }
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    assert!(
        epoch_shards().await >= 2,
        "pushes over several periods wrote to shards of more than one epoch"
    );
    let changes: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".count_changes"),
            &[],
        )
        .await
        .expect("count changes")
        .get(0);
    assert_eq!(
        changes, 0,
        "pushes counted with the upsert, not with changes no roll-up could free"
    );
    assert_eq!(counts().await, (3, 3), "pending and in flight, exact");

    holder.batch_execute("COMMIT").await.expect("commit");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while epoch_shards().await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the shards of epochs are still there 20 s after the snapshot was released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(counts().await, (3, 3), "folded, still exact");
}

/// Waits (at most 20 s, looking every 20 ms) until `done` holds.
async fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited 20 s for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
