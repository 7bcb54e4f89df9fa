//! The oldest snapshot on the server: a session that holds one open is found and named
//! (its process id, application and state); once it ends, it is not. Any age is a valid
//! question, the longest too.

use std::time::Duration;

use hookspool_postgres::{PostgresBackend, testing};

#[tokio::test]
async fn a_session_holding_a_snapshot_open_is_named_until_it_ends() {
    let backend = PostgresBackend::open(testing::options())
        .await
        .expect("open");
    let holder = testing::client().await;
    holder
        .batch_execute("SET application_name = 'forgotten report'")
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
