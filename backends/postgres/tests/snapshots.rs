//! The oldest snapshot on the server: a session that holds one open is found and named
//! (its process id, application and state); once it ends, it is not. Any age is a valid
//! question, the longest too. A backend told how old is too old says so in its log.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookspool::Backend;
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
