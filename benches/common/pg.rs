//! The PostgreSQL side of the benches: connections, the server's settings, a workload
//! driver for a fixed time or call count, and the baseline every hookspool figure on
//! PostgreSQL is compared with: plain SQL through tokio-postgres on one `outbox` table.
// Counts stay far below 2^52, where f64 would start rounding them.
#![allow(clippy::cast_precision_loss)]

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::task::JoinSet;
use tokio_postgres::{Client, NoTls, Statement};

use super::backends::QUEUE;
use super::daemon::{process_cpu_secs, server_tree_cpu_secs, stat_fields};
use super::raw::percentile_us;
use super::{BenchResult, ChildArgs, Metrics, PAYLOAD_LEN, fill_payload, payload};

/// The server's version and the settings that decide what a commit costs.
pub async fn server_info(url: &str) -> BenchResult<String> {
    let client = connect(url).await?;
    let mut parts = Vec::new();
    let version: String = client.query_one("SHOW server_version", &[]).await?.get(0);
    parts.push(format!("PostgreSQL {version}"));
    for setting in [
        "fsync",
        "synchronous_commit",
        "wal_sync_method",
        "full_page_writes",
        "shared_buffers",
        "max_wal_size",
        "min_wal_size",
        "commit_delay",
    ] {
        let value: String = client
            .query_one(&format!("SHOW {setting}"), &[])
            .await?
            .get(0);
        parts.push(format!("{setting}={value}"));
    }
    Ok(parts.join(", "))
}

/// What a throughput child was asked to do.
pub struct Run {
    pub url: String,
    pub limit: Limit,
    pub workers: usize,
    pub batch: usize,
    /// Items to pre-fill (claim cases).
    pub n: usize,
    /// This measurement's schema.
    pub schema: String,
}

impl Run {
    pub fn from_args(args: &ChildArgs) -> BenchResult<Run> {
        let ms = args.usize("ms")?;
        let limit = if ms > 0 {
            Limit::Time(Duration::from_millis(ms as u64))
        } else {
            Limit::Calls(args.usize("calls")?)
        };
        Ok(Run {
            url: args.str("url")?.to_owned(),
            limit,
            workers: args.usize("workers")?.max(1),
            batch: args.usize("batch")?.max(1),
            n: args.usize("n")?,
            schema: format!("bench_{}", std::process::id()),
        })
    }
}

/// How long each worker keeps calling.
#[derive(Clone, Copy)]
pub enum Limit {
    /// Until this much time has passed since the start (a full run).
    Time(Duration),
    /// This many calls per worker (a smoke run).
    Calls(usize),
}

/// A [`Limit`] from a start time.
#[derive(Clone, Copy)]
pub enum Budget {
    Until(Instant),
    Calls(usize),
}

impl Budget {
    pub fn more(self, calls: usize) -> bool {
        match self {
            Budget::Until(deadline) => Instant::now() < deadline,
            Budget::Calls(n) => calls < n,
        }
    }
}

/// What a worker did in the timed phase (and, summed by [`drive`], what the whole phase
/// cost in CPU).
#[derive(Default)]
pub struct Worked {
    pub rows: usize,
    pub calls: Vec<Duration>,
    /// CPU seconds of this process (the client) over the phase.
    pub client_cpu_s: Option<f64>,
    /// CPU seconds of the whole server (every backend, the WAL writer, the checkpointer,
    /// autovacuum) over the phase; `None` for a server on another machine.
    pub server_cpu_s: Option<f64>,
    /// Bytes of WAL the server wrote over the phase (every session's).
    pub wal_bytes: Option<f64>,
}

/// The postmaster's process id of the server `client` is connected to (the parent of its
/// backend's), if that server runs on this machine where this process can see it: the
/// backend and its parent both named `postgres` in `/proc`. A server elsewhere (a
/// `HOOKSPOOL_TEST_DATABASE_URL` on another host) has none, and its CPU is not reported.
async fn postmaster_pid(client: &Client) -> Option<String> {
    let backend: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .ok()?
        .get(0);
    let is_postgres = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres")
    };
    let backend = backend.to_string();
    if !is_postgres(&backend) {
        return None;
    }
    let parent = stat_fields(&backend)?.get(1)?.to_string();
    is_postgres(&parent).then_some(parent)
}

/// The server's WAL insert position, in bytes.
async fn wal_position(client: &Client) -> BenchResult<f64> {
    let lsn: f64 = client
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::float8",
            &[],
        )
        .await?
        .get(0);
    Ok(lsn)
}

/// Runs `work` on every state at once (each a task) within `run`'s limit; returns the rows
/// and call latencies of all of them, the CPU seconds the client and the server used, the
/// bytes of WAL written, and the seconds from the start until the last finished.
pub async fn drive<S, F, Fut>(run: &Run, states: Vec<S>, work: F) -> BenchResult<(Worked, f64)>
where
    S: Send + 'static,
    F: Fn(usize, S, Budget) -> Fut,
    Fut: Future<Output = BenchResult<Worked>> + Send + 'static,
{
    let watch = connect(&run.url).await?;
    let postmaster = postmaster_pid(&watch).await;
    let cpu = || {
        (
            process_cpu_secs("self", false),
            postmaster.as_deref().and_then(server_tree_cpu_secs),
        )
    };
    let wal_before = wal_position(&watch).await?;
    let before = cpu();
    let start = Instant::now();
    let budget = match run.limit {
        Limit::Time(d) => Budget::Until(start + d),
        Limit::Calls(n) => Budget::Calls(n),
    };
    let mut tasks = JoinSet::new();
    for (i, state) in states.into_iter().enumerate() {
        tasks.spawn(work(i, state, budget));
    }
    let mut total = Worked::default();
    while let Some(done) = tasks.join_next().await {
        let w = done??;
        total.rows += w.rows;
        total.calls.extend(w.calls);
    }
    let secs = start.elapsed().as_secs_f64();
    let after = cpu();
    total.client_cpu_s = after.0.zip(before.0).map(|(a, b)| a - b);
    total.server_cpu_s = after.1.zip(before.1).map(|(a, b)| a - b);
    total.wal_bytes = Some(wal_position(&watch).await? - wal_before);
    Ok((total, secs))
}

/// The figures of a timed phase.
pub fn figures(mut worked: Worked, secs: f64) -> Metrics {
    let mut m = Metrics::from([
        ("ops".into(), worked.rows as f64),
        ("secs".into(), secs),
        ("calls".into(), worked.calls.len() as f64),
        ("p50_us".into(), percentile_us(&mut worked.calls, 50)),
        ("p99_us".into(), percentile_us(&mut worked.calls, 99)),
    ]);
    for (key, cpu) in [
        ("client_cpu_s", worked.client_cpu_s),
        ("server_cpu_s", worked.server_cpu_s),
        ("wal_bytes", worked.wal_bytes),
    ] {
        if let Some(cpu) = cpu {
            m.insert(key.into(), cpu);
        }
    }
    m
}

/// Payload `i` of worker `w` (distinct across workers).
pub fn seq(w: usize, i: usize) -> u64 {
    ((w as u64) << 40) | i as u64
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub fn check(what: &str, expected: usize, found: i64) -> BenchResult<()> {
    if i64::try_from(expected).ok() == Some(found) {
        Ok(())
    } else {
        Err(format!("{what}: expected {expected}, found {found}").into())
    }
}

/// A connection of its own (its driver on a task).
pub async fn connect(url: &str) -> BenchResult<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("postgres connection ended: {e}");
        }
    });
    Ok(client)
}

/// Writes about 1 GiB of WAL once, before any case runs, and keeps that much for reuse
/// (`min_wal_size`): a fresh server has few WAL segments, and the first cases on it would
/// otherwise create the ones that every later case reuses (on this machine the plain
/// batches, run alone on a fresh server, made 297-302k rows/s without this and 329-350k
/// with it). A server that has been running has its segments already; this measures every
/// case as it would run there.
pub async fn warm_wal(url: &str) -> BenchResult<()> {
    let admin = connect(url).await?;
    // One statement per call: several in one message make one transaction, and
    // `ALTER SYSTEM` refuses to run in one.
    for statement in [
        "ALTER SYSTEM SET min_wal_size = '1GB'",
        "SELECT pg_reload_conf()",
        "CREATE TABLE public.hookspool_bench_wal_warmup AS \
         SELECT repeat('x', 900) AS filler FROM generate_series(1, 1100000)",
        "DROP TABLE public.hookspool_bench_wal_warmup",
        "CHECKPOINT",
    ] {
        admin.batch_execute(statement).await?;
    }
    Ok(())
}

/// Runs `CHECKPOINT`, so that no checkpoint of an earlier case's writes lands in this one.
pub async fn checkpoint(admin: &Client) -> BenchResult<()> {
    admin.batch_execute("CHECKPOINT").await?;
    Ok(())
}

pub async fn drop_schema(admin: &Client, schema: &str) -> BenchResult<()> {
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await?;
    Ok(())
}

// ---- the baseline: plain SQL ----------------------------------------------------------------

/// The reference outbox: one table, a partial index of what is pending, by due time.
pub async fn sql_create(admin: &Client, schema: &str) -> BenchResult<()> {
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.outbox (
                 id          bigserial PRIMARY KEY,
                 queue       text NOT NULL,
                 phase       smallint NOT NULL,
                 payload     bytea NOT NULL,
                 not_before  bigint NOT NULL,
                 lease_owner text,
                 lease_until bigint
             );
             CREATE INDEX outbox_due ON {schema}.outbox (queue, not_before, id) WHERE phase = 0;"
        ))
        .await?;
    Ok(())
}

/// Inserts `n` due rows of 256-byte payloads in one statement (`md5` hex, decoded).
pub async fn sql_fill(admin: &Client, schema: &str, n: usize) -> BenchResult<()> {
    let n = i64::try_from(n)?;
    admin
        .execute(
            &format!(
                "INSERT INTO {schema}.outbox (queue, phase, payload, not_before) \
                 SELECT $1::text, 0, decode(repeat(md5(i::text), {}), 'hex'), $2::bigint \
                 FROM generate_series(1, $3::bigint) AS i",
                PAYLOAD_LEN / 16
            ),
            &[&QUEUE, &(now_ms() - 1000), &n],
        )
        .await?;
    Ok(())
}

/// A baseline worker: its connection and prepared statements.
struct SqlWorker {
    client: Client,
    statements: Vec<Statement>,
    batch: usize,
}

async fn sql_workers(run: &Run, texts: &[String]) -> BenchResult<Vec<SqlWorker>> {
    let mut workers = Vec::with_capacity(run.workers);
    for _ in 0..run.workers {
        let client = connect(&run.url).await?;
        let mut statements = Vec::with_capacity(texts.len());
        for text in texts {
            statements.push(client.prepare(text).await?);
        }
        workers.push(SqlWorker {
            client,
            statements,
            batch: run.batch,
        });
    }
    Ok(workers)
}

pub async fn sql_insert(run: &Run) -> BenchResult<Metrics> {
    let admin = connect(&run.url).await?;
    let s = &run.schema;
    sql_create(&admin, s).await?;
    let text = if run.batch == 1 {
        format!("INSERT INTO {s}.outbox (queue, phase, payload, not_before) VALUES ($1, 0, $2, $3)")
    } else {
        format!(
            "INSERT INTO {s}.outbox (queue, phase, payload, not_before) \
             SELECT $1::text, 0, p, $3::bigint FROM unnest($2::bytea[]) AS p"
        )
    };
    let workers = sql_workers(run, &[text]).await?;
    // Warm-up: one call per connection (plans, caches), not timed.
    let mut warm = 0;
    for (w, worker) in workers.iter().enumerate() {
        warm += sql_insert_call(worker, w, usize::MAX).await?;
    }
    checkpoint(&admin).await?;
    let (worked, secs) = drive(run, workers, |w, worker, budget| async move {
        let mut done = Worked::default();
        while budget.more(done.calls.len()) {
            let t = Instant::now();
            done.rows += sql_insert_call(&worker, w, done.calls.len()).await?;
            done.calls.push(t.elapsed());
        }
        Ok(done)
    })
    .await?;
    let rows: i64 = admin
        .query_one(&format!("SELECT count(*) FROM {s}.outbox"), &[])
        .await?
        .get(0);
    check("rows inserted", warm + worked.rows, rows)?;
    let m = figures(worked, secs);
    drop_schema(&admin, s).await?;
    Ok(m)
}

/// One INSERT transaction (one row, or a batch of `worker.batch` rows); returns the rows.
async fn sql_insert_call(worker: &SqlWorker, w: usize, call: usize) -> BenchResult<usize> {
    let stmt = &worker.statements[0];
    if worker.batch == 1 {
        let mut buf = [0u8; PAYLOAD_LEN];
        fill_payload(&mut buf, seq(w, call));
        worker
            .client
            .execute(stmt, &[&QUEUE, &&buf[..], &now_ms()])
            .await?;
    } else {
        let first = call.wrapping_mul(worker.batch);
        let payloads: Vec<Vec<u8>> = (0..worker.batch)
            .map(|i| payload(seq(w, first.wrapping_add(i))))
            .collect();
        worker
            .client
            .execute(stmt, &[&QUEUE, &payloads, &now_ms()])
            .await?;
    }
    Ok(worker.batch)
}

/// How the plain-SQL consumers settle what they claim.
#[derive(Clone, Copy)]
pub enum Settle {
    /// In the claim's own transaction: each row written once, one commit per batch.
    InTheClaim,
    /// As a lease protocol does: the claim commits the rows leased (phase, owner, lease
    /// end), and a second transaction marks them done if the lease is still held. Each row
    /// written twice, two commits per batch: what `claim` + `ack_many` do.
    Leased,
}

/// Consumers claiming due rows with `FOR UPDATE SKIP LOCKED` and marking them done.
pub async fn sql_claim(run: &Run, settle: Settle) -> BenchResult<Metrics> {
    let admin = connect(&run.url).await?;
    let s = &run.schema;
    sql_create(&admin, s).await?;
    sql_fill(&admin, s, run.n).await?;
    admin.batch_execute(&format!("ANALYZE {s}.outbox")).await?;
    let texts = [
        format!(
            "SELECT id, payload FROM {s}.outbox \
             WHERE queue = $1 AND phase = 0 AND not_before <= $2 \
             ORDER BY not_before, id LIMIT $3 FOR UPDATE SKIP LOCKED"
        ),
        format!("UPDATE {s}.outbox SET phase = 2 WHERE id = ANY($1)"),
        format!(
            "UPDATE {s}.outbox SET phase = 1, lease_owner = $2, lease_until = $3 \
             WHERE id = ANY($1)"
        ),
        format!(
            "UPDATE {s}.outbox SET phase = 2, lease_owner = NULL, lease_until = NULL \
             WHERE id = ANY($1) AND phase = 1 AND lease_owner = $2"
        ),
    ];
    let mut workers = sql_workers(run, &texts).await?;
    let mut warm = 0;
    for worker in &mut workers {
        warm += sql_claim_call(worker, 1, settle).await?;
    }
    checkpoint(&admin).await?;
    let (worked, secs) = drive(run, workers, |_, mut worker, budget| async move {
        let batch = worker.batch;
        let mut done = Worked::default();
        while budget.more(done.calls.len()) {
            let t = Instant::now();
            let n = sql_claim_call(&mut worker, batch, settle).await?;
            if n == 0 {
                break;
            }
            done.rows += n;
            done.calls.push(t.elapsed());
        }
        Ok(done)
    })
    .await?;
    let rows: i64 = admin
        .query_one(
            &format!("SELECT count(*) FROM {s}.outbox WHERE phase = 2"),
            &[],
        )
        .await?
        .get(0);
    check("rows done", warm + worked.rows, rows)?;
    let m = figures(worked, secs);
    drop_schema(&admin, s).await?;
    Ok(m)
}

/// One claim: up to `limit` due rows locked (skipping those others hold) and read, then
/// marked done in the same transaction, or leased and marked done by a second one
/// ([`Settle`]). Returns how many.
async fn sql_claim_call(
    worker: &mut SqlWorker,
    limit: usize,
    settle: Settle,
) -> BenchResult<usize> {
    let limit = i64::try_from(limit)?;
    let [claim, done, lease, finish] = [0, 1, 2, 3].map(|i| worker.statements[i].clone());
    let owner = "bench-consumer";
    let tx = worker.client.transaction().await?;
    let rows = tx.query(&claim, &[&QUEUE, &now_ms(), &limit]).await?;
    let mut ids = Vec::with_capacity(rows.len());
    let mut bytes = 0;
    for row in &rows {
        ids.push(row.get::<_, i64>(0));
        bytes += row.get::<_, &[u8]>(1).len();
    }
    if bytes != ids.len() * PAYLOAD_LEN {
        return Err(format!("claimed {} rows holding {bytes} payload bytes", ids.len()).into());
    }
    if ids.is_empty() {
        tx.commit().await?;
        return Ok(0);
    }
    match settle {
        Settle::InTheClaim => {
            tx.execute(&done, &[&ids]).await?;
            tx.commit().await?;
        }
        Settle::Leased => {
            let until = now_ms() + 300_000;
            tx.execute(&lease, &[&ids, &owner, &until]).await?;
            tx.commit().await?;
            let finished = worker.client.execute(&finish, &[&ids, &owner]).await?;
            if finished != u64::try_from(ids.len())? {
                return Err(format!("{finished} of {} leased rows marked done", ids.len()).into());
            }
        }
    }
    Ok(ids.len())
}
