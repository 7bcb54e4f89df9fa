//! Crash safety of the PostgreSQL backend under kill -9, through the conformance kit's
//! harness (`hookspool::conformance::crash`): a child process pushes, claims, acks, nacks and
//! deletes on a schema of its own on the test process's server while the parent kills it
//! with SIGKILL at random moments. A database cannot be copied like a directory, so after
//! every kill the parent checks the schema in place (releasing the dead child's leases, as
//! their expiry would). `HOOKSPOOL_CRASH_ROUNDS` (default `crash::DEFAULT_ROUNDS`, 12) and
//! `HOOKSPOOL_CRASH_SEED`.

use hookspool::conformance::crash::{self, CrashTarget, Place};
use hookspool_postgres::{PostgresBackend, PostgresOptions, testing};

/// The schema named by the place, on the shared test server (`testing::TestServer`); the
/// child is given that server's URL, so it starts none of its own.
struct Postgres;

impl CrashTarget for Postgres {
    type Backend = PostgresBackend;

    async fn open(&self, place: &Place, _mode: &str) -> PostgresBackend {
        let options = PostgresOptions::new(testing::TestServer::shared().url())
            .schema(&place.name)
            .pool_size(2);
        PostgresBackend::open(options)
            .await
            .expect("open the crash test's schema")
    }

    fn copyable(&self) -> bool {
        false
    }

    /// Waits until no session but this one names the schema in its statement: the killed
    /// child's idle sessions end as soon as the server sees the connection gone, and a
    /// statement it sent just before it died runs to its end (and may commit) first.
    async fn settle(&self, place: &Place) {
        let client = testing::client().await;
        for _ in 0..3_000 {
            let sessions: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE pid <> pg_backend_pid() AND position($1 IN query) > 0",
                    &[&place.name],
                )
                .await
                .expect("pg_stat_activity")
                .get(0);
            if sessions == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!(
            "the killed child's sessions on schema {} did not end in 30 s",
            place.name
        );
    }

    fn child_env(&self) -> Vec<(String, String)> {
        vec![(
            testing::DATABASE_URL_VAR.to_owned(),
            testing::TestServer::shared().url().to_owned(),
        )]
    }
}

/// The child's side: works the store until it is killed. A no-op in a normal test run.
#[test]
fn crash_child() {
    crash::child(&Postgres);
}

/// Pushes, claims, acks and deletes that returned survive SIGKILL of the process at random
/// moments (every call is a committed transaction with `synchronous_commit` on).
#[test]
fn postgres_survives_sigkill_at_random_moments() {
    crash::run(&Postgres, "default");
}
