//! A throwaway PostgreSQL server for tests and benchmarks (feature `testing`).
//!
//! [`TestServer::shared`] starts one server per test process, the first time a test asks:
//! `initdb` into a temp dir, then `postgres` on a free loopback port (and a unix socket in
//! that dir) with `fsync` on. A watchdog process stops it and deletes the dir when the test
//! process ends, however it ends. [`TestServer::start`] starts one of your own (to stop and
//! restart it); it is stopped when dropped. [`options`] gives each caller a schema of its
//! own on the shared server ([`store_with_queue`], a store with a queue on one), and
//! [`writing_transactions`] counts the transactions that wrote its items.
//! [`push_one_statement`] is the backend's push of one item as SQL, for benchmarks that
//! take it apart.
//!
//! With `HOOKSPOOL_TEST_DATABASE_URL` set, no server is started: everything uses that one.
//! `HOOKSPOOL_TEST_PG_SETTINGS` adds settings to a server started here (`-c name=value`
//! pairs, for example `-c wal_writer_delay=5ms`), for benchmarks of server tuning.
//! As root, the server runs as the `postgres` user (PostgreSQL refuses to run as root).
//! Without the server binaries, every call panics with a message naming the package to
//! install; a test is never skipped silently.

#![allow(clippy::missing_panics_doc)] // test support: panicking is how it reports

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{PostgresBackend, PostgresOptions};

/// The environment variable naming a server of your own for the tests.
pub const DATABASE_URL_VAR: &str = "HOOKSPOOL_TEST_DATABASE_URL";

/// The environment variable with extra settings for a server started here.
pub const SETTINGS_VAR: &str = "HOOKSPOOL_TEST_PG_SETTINGS";

/// A PostgreSQL server in a temp dir.
#[derive(Debug)]
pub struct TestServer {
    url: String,
    dir: Option<PathBuf>,
    bin: PathBuf,
    port: u16,
    /// Stop the server when dropped (not for the shared one, which its watchdog stops).
    owned: bool,
}

impl TestServer {
    /// The server of this test process: `HOOKSPOOL_TEST_DATABASE_URL`, or one started the
    /// first time it is asked for.
    pub fn shared() -> &'static TestServer {
        static SERVER: OnceLock<TestServer> = OnceLock::new();
        SERVER.get_or_init(|| match std::env::var(DATABASE_URL_VAR) {
            Ok(url) if !url.is_empty() => TestServer {
                url,
                dir: None,
                bin: PathBuf::new(),
                port: 0,
                owned: false,
            },
            _ => {
                let mut server = TestServer::start();
                server.owned = false;
                server
            }
        })
    }

    /// Starts a server of the caller's own, stopped (and its dir deleted) when dropped.
    pub fn start() -> TestServer {
        let bin = find_binaries();
        let root = is_root();
        let dir = tempfile::Builder::new()
            .prefix("hookspool-pg-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir for PostgreSQL: {e}"))
            .keep();
        if root {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir));
        }
        let data = dir.join("data");
        run(as_server_user(root, &bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]));
        watchdog(&dir, &bin, root);
        let mut server = TestServer {
            url: String::new(),
            dir: Some(dir),
            bin,
            port: 0,
            owned: true,
        };
        let mut last = String::new();
        for _ in 0..5 {
            server.port = free_port();
            match server.pg_ctl_start() {
                Ok(()) => {
                    server.url = format!(
                        "postgresql://postgres@127.0.0.1:{}/postgres?sslmode=disable",
                        server.port
                    );
                    return server;
                }
                Err(e) => last = e,
            }
        }
        panic!("PostgreSQL did not start: {last}");
    }

    /// A connection string for the `postgres` database as user `postgres`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's log file (empty for a server given by URL).
    pub fn log(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join("log"))
    }

    /// Stops the server (fast shutdown: connections are closed, nothing committed is lost).
    pub fn stop(&self) {
        run(self.pg_ctl().args(["-m", "fast", "-w", "stop"]));
    }

    /// Starts the server again on the same port after [`TestServer::stop`].
    pub fn restart_stopped(&self) {
        if let Err(e) = self.pg_ctl_start() {
            panic!("PostgreSQL did not start again: {e}");
        }
    }

    /// `pg_ctl restart`: the server goes away and comes back on the same port.
    pub fn restart(&self) {
        self.stop();
        self.restart_stopped();
    }

    fn pg_ctl(&self) -> Command {
        let dir = self
            .dir
            .as_ref()
            .expect("a server given by URL cannot be controlled");
        let mut cmd = as_server_user(is_root(), &self.bin.join("pg_ctl"));
        cmd.arg("-D").arg(dir.join("data"));
        cmd
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let dir = self
            .dir
            .as_ref()
            .expect("a server given by URL cannot be controlled");
        let settings = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on \
             -c max_connections=400 -c shared_buffers=256MB {}",
            self.port,
            dir.display(),
            std::env::var(SETTINGS_VAR).unwrap_or_default()
        );
        let out = self
            .pg_ctl()
            .args(["-o", &settings, "-l"])
            .arg(dir.join("log"))
            .args(["-w", "-t", "30", "start"])
            .output()
            .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
            Err(format!(
                "{}{}\n{log}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if self.owned
            && let Some(dir) = &self.dir
        {
            let _ = self
                .pg_ctl()
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Options for a schema of its own (`t_<pid>_<n>`) on the shared server, with a small pool.
pub fn options() -> PostgresOptions {
    static N: AtomicU64 = AtomicU64::new(0);
    let schema = format!(
        "t_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    PostgresOptions::new(TestServer::shared().url())
        .schema(schema)
        .pool_size(4)
}

/// The statement the backend sends for a push of one item, for the schema `schema`: `$1`
/// queue, `$2` payload, `$3` metadata (`json`), `$4` not-before (NULL: now), `$5` now (ms).
/// Returns the key. For benchmarks that take the push apart (`benches/postgres_push_one.rs`).
#[must_use]
pub fn push_one_statement(schema: &str) -> String {
    crate::schema::render(&crate::sql::push_one(crate::sql::Counter::Append), schema)
}

/// The same push with its count written as schema version 6 wrote it, and as the backend
/// still writes it while a snapshot is held open: an upsert of the session's counter row.
#[must_use]
pub fn push_one_upserting_statement(schema: &str) -> String {
    crate::schema::render(&crate::sql::push_one(crate::sql::Counter::Upsert), schema)
}

/// The statements the backend sends for a push of several items, for the schema `schema`:
/// its own (counted by an appended change), the same while a snapshot is held open
/// (counted by an upsert), and the one inside an application's transaction (`push_in`,
/// which locks the queue row). Each takes `$1` queue, `$2` payloads (`bytea[]`), `$3`
/// metadata (`json[]`, or NULL for none), `$4` not-before times (`bigint[]`, or NULL for
/// none), `$5` now (ms), and returns the keys. For `tests/plans.rs`, which checks their plans.
#[must_use]
pub fn push_batch_statements(schema: &str) -> [String; 3] {
    use crate::sql::{Counter, push, push_locked};
    [push(Counter::Append), push(Counter::Upsert), push_locked()]
        .map(|text| crate::schema::render(&text, schema))
}

/// Rolls `backend`'s count changes up into its counter rows now, as its background task
/// does every 200 ms while it pushes. Returns how many changes it moved: 0 when there were
/// none, or when another session held the turn (the advisory lock of
/// [`count_changes_lock`]).
///
/// # Errors
/// The server's, as text.
pub async fn roll_up_count_changes(backend: &PostgresBackend) -> Result<i64, String> {
    crate::rollup::roll_up(&backend.inner.pool, &backend.inner.sql.roll_up).await
}

/// Vacuums `backend`'s count changes now, as its background task does every 2 s after a
/// roll-up; `truncate`: with `TRUNCATE`, as it does at most once a minute.
///
/// # Errors
/// The server's, as text.
pub async fn vacuum_count_changes(backend: &PostgresBackend, truncate: bool) -> Result<(), String> {
    let sql = &backend.inner.sql;
    let statement = if truncate {
        &sql.vacuum_changes_truncate
    } else {
        &sql.vacuum_changes
    };
    crate::rollup::execute(&backend.inner.pool, statement).await
}

/// The statement that takes the roll-up's turn for `schema` until the session ends (or
/// `pg_advisory_unlock` with the same key), so that a test can keep count changes from
/// being rolled up.
#[must_use]
pub fn count_changes_lock(schema: &str) -> String {
    format!("SELECT pg_advisory_lock(hashtextextended('hookspool count changes {schema}', 0))")
}

fn find_binaries() -> PathBuf {
    if let Some(dir) = std::env::var_os("HOOKSPOOL_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("postgres").exists()).then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "the PostgreSQL server binaries (initdb, pg_ctl, postgres) are not installed: \
             install the Debian package `postgresql` (apt-get install postgresql), set \
             HOOKSPOOL_PG_BIN to their directory, or set {DATABASE_URL_VAR} to a server of \
             your own"
        ),
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn as_server_user(root: bool, program: &Path) -> Command {
    if root {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or_else(|e| panic!("no free loopback port: {e}"), |a| a.port())
}

/// A shell that waits for this process to end, then stops the server and deletes its dir.
fn watchdog(dir: &Path, bin: &Path, root: bool) {
    let pg_ctl = bin.join("pg_ctl");
    let stop = if root {
        format!(
            "runuser -u postgres -- {} -D {}/data -m immediate stop",
            pg_ctl.display(),
            dir.display()
        )
    } else {
        format!(
            "{} -D {}/data -m immediate stop",
            pg_ctl.display(),
            dir.display()
        )
    };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
        pid = std::process::id(),
        dir = dir.display()
    );
    let _ = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// A plain session on the shared server (no TLS, no hookspool code, as an application's
/// own client would be), its connection driven by a spawned task: for tests that look at
/// the server's tables and statistics or act as another process.
///
/// # Panics
/// When the server cannot be reached.
pub async fn client() -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(TestServer::shared().url(), tokio_postgres::NoTls)
            .await
            .expect("connect to the test server");
    tokio::spawn(connection);
    client
}

/// A store on a schema of its own ([`options`]) with a queue named `queue` (default
/// settings): the store, the queue and the schema's name.
///
/// # Panics
/// When the backend cannot be opened or the queue created.
pub async fn store_with_queue(
    queue: &str,
) -> (
    hookspool::Store<crate::PostgresBackend>,
    hookspool::QueueId,
    String,
) {
    let options = options();
    let schema = options.schema.clone();
    let backend = crate::PostgresBackend::open(options).await.expect("open");
    let store = hookspool::Store::new(backend);
    let q = hookspool::QueueId::new(queue).expect("queue id");
    store
        .create_queue(hookspool::QueueConfig::new(q.clone()))
        .await
        .expect("create queue");
    (store, q, schema)
}

/// A session of its own that holds `schema`'s items locked against writes (`LOCK TABLE …
/// IN EXCLUSIVE MODE`; reads go on) until it commits: for tests that hold statements up
/// while other calls queue behind them.
///
/// # Panics
/// When the lock cannot be taken.
pub async fn lock_items(schema: &str) -> tokio_postgres::Client {
    let session = client().await;
    session
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE \"{schema}\".items IN EXCLUSIVE MODE"
        ))
        .await
        .expect("lock the items");
    session
}

/// Returns once `n` sessions wait for a lock on `schema`'s items (looked at every 5 ms).
///
/// # Panics
/// When they are not there within 10 s.
pub async fn until_waiting_for_items(client: &tokio_postgres::Client, schema: &str, n: i64) {
    for _ in 0..2_000 {
        let waiting: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_locks \
                 WHERE NOT granted AND relation = (quote_ident($1) || '.items')::regclass",
                &[&schema],
            )
            .await
            .expect("pg_locks")
            .get(0);
        if waiting >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("{n} sessions never waited for a lock on {schema}'s items");
}

/// Polls `call` once, which is enough for a call that waits behind others to take its
/// place, then gives it up (drops it), as a caller that hung up would. Returns whether it
/// was still waiting then (`false`: it had finished).
pub async fn give_up_after_one_poll<F: std::future::Future>(call: F) -> bool {
    let mut call = std::pin::pin!(call);
    tokio::select! {
        biased;
        _ = &mut call => false,
        () = std::future::ready(()) => true,
    }
}

/// How many transactions wrote the rows of `schema`'s items that meet `condition` (SQL;
/// `true` for all): their distinct `xmin`. For tests of statements that share commits.
///
/// # Panics
/// When the query fails.
pub async fn writing_transactions(
    client: &tokio_postgres::Client,
    schema: &str,
    condition: &str,
) -> i64 {
    client
        .query_one(
            &format!("SELECT count(DISTINCT xmin::text) FROM \"{schema}\".items WHERE {condition}"),
            &[],
        )
        .await
        .expect("xmin")
        .get(0)
}

/// Creates `options`' schema at an older `version` (as an earlier hookspool left it), so
/// that a test can open it and see the migrations after it applied.
///
/// # Errors
/// As [`crate::PostgresBackend::open`].
pub async fn create_schema_at(
    options: &PostgresOptions,
    version: i32,
) -> Result<(), crate::OpenError> {
    let connector = crate::connect::Connector::new(options)?;
    let target = connector.target();
    let (mut client, connection) =
        connector
            .connect()
            .await
            .map_err(|source| crate::OpenError::Connect {
                target: target.clone(),
                source,
            })?;
    let driver = tokio::spawn(connection);
    let migrated = crate::schema::migrate_to(&mut client, &options.schema, &target, version).await;
    drop(client);
    let _ = driver.await;
    migrated
}
