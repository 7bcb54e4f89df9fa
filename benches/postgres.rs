//! Benchmark: hookspool on PostgreSQL against plain SQL on the same server, in the same run.
//!
//! A throwaway PostgreSQL server is started for the run (`TestServer::start`: `fsync=on`,
//! `synchronous_commit=on`, data in a temp dir). On it, each measurement gets a schema of
//! its own:
//!
//! - the baseline: plain SQL through tokio-postgres on an `outbox` table (id, queue, phase,
//!   payload, not_before, lease columns, a partial index of what is pending): one-row
//!   INSERTs from 1 and 16 clients, 8-row INSERTs from 16 (an event fired to 8
//!   subscriptions), 1,000-row INSERTs from 2 clients, and 4 clients that
//!   claim 100 due rows with `FOR UPDATE SKIP LOCKED` and mark them done in one transaction
//!   (and, to show what a lease protocol costs, 4 that lease 1024 rows in one transaction
//!   and mark them done in a second);
//! - hookspool: `hookspool::Store` over `PostgresBackend` doing the same work: `push` from 1
//!   and 16 producers, `push_batch` of 8 from 16 and of 1024 from 2, and 4 consumers that
//!   `claim` 1024 and `ack_many` them (tasks of this one process, so claims they make at
//!   once share statements, as any process's consumers do: `claim_for`, schema version 11);
//! - `count` on queues of 10k and 1M items (time per call), beside `count(*)` on the plain
//!   table.
//!
//! Every throughput case also reports what its timed phase cost per row: the CPU time of
//! the bench's own process (the client) and of the whole server (`/proc`: the postmaster,
//! its backends, the WAL writer, the checkpointer), and the WAL the server wrote. Where the
//! disk is fast, a case's rate follows its CPU per row; these say where it goes.
//!
//! Before the cases, the server writes about 1 GiB of WAL and keeps that much for reuse
//! (`warm_wal`): no case pays for creating the segments that the ones after it reuse.
//!
//! Every throughput case runs for a fixed time (`HOOKSPOOL_BENCH_SECS`, default 5 s) in its
//! own child process; runs come from `HOOKSPOOL_BENCH_RUNS` (default 3, medians printed).
//! Without `--bench` (under `cargo test`) a smoke version pushes, claims and counts a few
//! hundred items and times nothing.
//!
//! `cargo bench -p hookspool-benches --bench postgres [-- FILTER]`; also
//! `HOOKSPOOL_BENCH_PG_CLAIM_N` (items pre-filled for the claim cases, default 200,000) and
//! `HOOKSPOOL_BENCH_PG_COUNT_N` (items of the large count queue, default 1,000,000).
// Counts and sizes stay far below 2^52, where f64 would start rounding them.
#![allow(clippy::cast_precision_loss)]

mod common;
#[path = "postgres/counts.rs"]
mod counts;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use hookspool::{Key, NewItem, Phase, QueueConfig, QueueId, Retention, Store};
use hookspool_postgres::testing::TestServer;
use hookspool_postgres::{PostgresBackend, PostgresOptions};

use common::backends::{LEASE, QUEUE, runtime};
use tokio::task::JoinSet;

use common::pg::{
    Run, Settle, Worked, check, checkpoint, connect, drive, drop_schema, figures, seq, server_info,
    sql_claim, sql_insert, warm_wal,
};
use common::table::{Table, median, micros, rate, ratio, spread};
use common::{
    BATCH, BenchResult, ChildArgs, Metrics, PAYLOAD_LEN, Samples, Settings, Summary, child_main,
    payload, print_footer, print_header, run_case,
};

use counts::{COUNTS, count_case, count_rows, fill_count, print_counts, run_counts};

fn main() -> BenchResult<()> {
    if child_main(child)? {
        return Ok(());
    }
    parent()
}

// ---- the cases ----------------------------------------------------------------------------

/// Clients (or producers) of the concurrent one-row case.
const MANY: usize = 16;
/// Rows per call of the small-batch case: an event fired to 8 subscriptions.
const FANOUT: usize = 8;
/// Clients of the batched insert cases.
const BATCH_CLIENTS: usize = 2;
/// Rows per transaction of the batched SQL insert.
const SQL_BATCH: usize = 1_000;
/// Consumers of the claim cases.
const CONSUMERS: usize = 4;
/// Rows per SQL claim transaction.
const SQL_CLAIM: usize = 100;
/// Items per push when filling a queue (untimed), and the producers doing it.
const FILL_BATCH: usize = 10_000;
const FILL_PRODUCERS: usize = 2;
/// The small count queue.
const COUNT_SMALL: usize = 10_000;

/// One measurement: the child case, the workers, rows per call, and what it pre-fills.
#[derive(Clone, Copy)]
struct Case {
    id: &'static str,
    what: &'static str,
    workers: usize,
    /// Rows per call in a full run (smoke runs use [`Case::smoke_batch`]).
    batch: usize,
    smoke_batch: usize,
    /// Whether the case claims from a pre-filled queue.
    prefilled: bool,
}

const SQL_INSERT_1: Case = Case {
    id: "sql-insert-1",
    what: "SQL: 1 client, one-row INSERT per transaction (autocommit)",
    workers: 1,
    batch: 1,
    smoke_batch: 1,
    prefilled: false,
};
const SQL_INSERT_16: Case = Case {
    id: "sql-insert-16",
    what: "SQL: 16 clients, one-row INSERT per transaction (autocommit)",
    workers: MANY,
    batch: 1,
    smoke_batch: 1,
    prefilled: false,
};
const SQL_INSERT_16X8: Case = Case {
    id: "sql-insert-16x8",
    what: "SQL: 16 clients, 8-row INSERT … SELECT unnest($2::bytea[]) per transaction",
    workers: MANY,
    batch: FANOUT,
    smoke_batch: FANOUT,
    prefilled: false,
};
const SQL_INSERT_BATCH: Case = Case {
    id: "sql-insert-batch",
    what: "SQL: 2 clients, 1,000-row INSERT … SELECT unnest($2::bytea[]) per transaction",
    workers: BATCH_CLIENTS,
    batch: SQL_BATCH,
    smoke_batch: 50,
    prefilled: false,
};
const SQL_CLAIM_DONE: Case = Case {
    id: "sql-claim",
    what: "SQL: 4 clients, per transaction SELECT 100 due rows FOR UPDATE SKIP LOCKED + UPDATE to done",
    workers: CONSUMERS,
    batch: SQL_CLAIM,
    smoke_batch: 25,
    prefilled: true,
};
const SQL_CLAIM_LEASED: Case = Case {
    id: "sql-claim-leased",
    what: "SQL: 4 clients, SELECT 1024 due rows FOR UPDATE SKIP LOCKED + UPDATE to leased, commit; UPDATE to done where the lease holds, commit",
    workers: CONSUMERS,
    batch: BATCH,
    smoke_batch: 25,
    prefilled: true,
};
const HS_PUSH_1: Case = Case {
    id: "hs-push-1",
    what: "hookspool: 1 producer, push 1 item per call",
    workers: 1,
    batch: 1,
    smoke_batch: 1,
    prefilled: false,
};
const HS_PUSH_16: Case = Case {
    id: "hs-push-16",
    what: "hookspool: 16 producers (tokio tasks), push 1 item per call",
    workers: MANY,
    batch: 1,
    smoke_batch: 1,
    prefilled: false,
};
const HS_PUSH_16X8: Case = Case {
    id: "hs-push-16x8",
    what: "hookspool: 16 producers (tokio tasks), push_batch of 8 items per call",
    workers: MANY,
    batch: FANOUT,
    smoke_batch: FANOUT,
    prefilled: false,
};
const HS_PUSH_BATCH: Case = Case {
    id: "hs-push-batch",
    what: "hookspool: 2 producers, push_batch of 1024 items per call",
    workers: BATCH_CLIENTS,
    batch: BATCH,
    smoke_batch: 50,
    prefilled: false,
};
const HS_CLAIM_ACK: Case = Case {
    id: "hs-claim-ack",
    what: "hookspool: 4 consumers, claim 1024 + ack_many of them per round",
    workers: CONSUMERS,
    batch: BATCH,
    smoke_batch: 25,
    prefilled: true,
};

/// The throughput cases, in the order each round runs them (baseline, then hookspool).
const CASES: [Case; 11] = [
    SQL_INSERT_1,
    SQL_INSERT_16,
    SQL_INSERT_16X8,
    SQL_INSERT_BATCH,
    SQL_CLAIM_DONE,
    SQL_CLAIM_LEASED,
    HS_PUSH_1,
    HS_PUSH_16,
    HS_PUSH_16X8,
    HS_PUSH_BATCH,
    HS_CLAIM_ACK,
];

/// The comparisons of the summary: label, baseline case, hookspool case, target ratio
/// (issue 11's; none for a comparison that only explains another).
const COMPARISONS: [(&str, Case, Case, Option<f64>); 6] = [
    (
        "push, 1 producer, 1 item/call (rows/s)",
        SQL_INSERT_1,
        HS_PUSH_1,
        Some(0.8),
    ),
    (
        "push, 16 producers, 1 item/call (rows/s)",
        SQL_INSERT_16,
        HS_PUSH_16,
        Some(0.8),
    ),
    (
        "push, 16 producers, 8 items/call, as an event fired to 8 subscriptions (rows/s)",
        SQL_INSERT_16X8,
        HS_PUSH_16X8,
        None,
    ),
    (
        "push batches, 2 producers (rows/s; SQL 1,000/tx, hookspool 1024/call)",
        SQL_INSERT_BATCH,
        HS_PUSH_BATCH,
        Some(0.7),
    ),
    (
        "claim + complete, 4 consumers (rows/s; SQL 100/tx, hookspool claim 1024 + ack_many)",
        SQL_CLAIM_DONE,
        HS_CLAIM_ACK,
        Some(0.8),
    ),
    (
        "claim + complete, 4 consumers, both as a lease protocol (rows/s; SQL 1024 leased, \
         commit, then marked done, commit)",
        SQL_CLAIM_LEASED,
        HS_CLAIM_ACK,
        None,
    ),
];

// ---- parent: plans the runs, prints the tables ------------------------------------------

fn parent() -> BenchResult<()> {
    let settings = Settings::from_env()?;
    let secs = settings.count("HOOKSPOOL_BENCH_SECS", 5, 0)?;
    let claim_n = settings.count("HOOKSPOOL_BENCH_PG_CLAIM_N", 200_000, 300)?;
    let count_n = settings.count("HOOKSPOOL_BENCH_PG_COUNT_N", 1_000_000, 400)?;
    let small_n = if settings.smoke { 100 } else { COUNT_SMALL };
    // Calls per worker in a smoke run (a full run calls until its time is up).
    let smoke_calls = 6;

    let started = Instant::now();
    eprintln!("postgres: starting a throwaway PostgreSQL server (initdb) ...");
    let server = TestServer::start();
    let url = server.url().to_owned();
    let data_dir = server
        .log()
        .and_then(|log| log.parent().map(Path::to_path_buf))
        .ok_or("the test server has no data dir")?;
    if !settings.smoke {
        eprintln!("postgres: writing 1 GiB of WAL for the cases to reuse ...");
        runtime()?.block_on(warm_wal(&url))?;
    }
    let info = runtime()?.block_on(server_info(&url))?;

    print_header(
        "postgres",
        &settings,
        &filesystem_of(&data_dir),
        &[
            ("HOOKSPOOL_BENCH_SECS (per throughput case)", secs),
            (
                "HOOKSPOOL_BENCH_PG_CLAIM_N (pre-filled per claim case)",
                claim_n,
            ),
            ("HOOKSPOOL_BENCH_PG_COUNT_N (large count queue)", count_n),
        ],
    );
    print_setup(&info);

    let args = |case: &Case, n: usize| -> Vec<(&str, String)> {
        let (ms, calls, batch) = if settings.smoke {
            (0, smoke_calls, case.smoke_batch)
        } else {
            (secs * 1000, 0, case.batch)
        };
        vec![
            ("url", url.clone()),
            ("ms", ms.to_string()),
            ("calls", calls.to_string()),
            ("workers", case.workers.to_string()),
            ("batch", batch.to_string()),
            ("n", n.to_string()),
        ]
    };

    let mut samples = Samples::default();
    let plan: Vec<Case> = CASES.into_iter().filter(|c| settings.wants(c.id)).collect();
    for round in 1..=settings.runs {
        eprintln!("postgres: round {round}/{}", settings.runs);
        for case in &plan {
            let n = if case.prefilled { claim_n } else { 0 };
            run_case(&mut samples, case.id, case.id, &args(case, n))?;
        }
    }

    let fill = if COUNTS.iter().any(|(id, _)| settings.wants(id)) {
        let m = run_counts(&settings, &url, small_n, count_n, &mut samples)?;
        Some((m, small_n, count_n))
    } else {
        None
    };

    print_summary(&samples, fill.as_ref(), settings.smoke);
    print_details(&samples, &plan, claim_n);
    if let Some(fill) = &fill {
        print_counts(&samples, fill);
    }
    println!(
        "- whole run: {:.0} s (server start included)",
        started.elapsed().as_secs_f64()
    );
    print_footer();
    drop(server);
    Ok(())
}

/// What the run measures with, under the header.
fn print_setup(info: &str) {
    println!("- server: {info}");
    println!(
        "- client: tokio-postgres on a multi-threaded tokio runtime (one worker per CPU), \
         over TCP on loopback, no TLS; client and server share the machine's CPUs"
    );
    println!(
        "- hookspool: `hookspool::Store` over `PostgresBackend`, pool of workers + 4 \
         connections, a fresh schema per measurement, queue retention Keep (acked items \
         move to done)"
    );
    println!(
        "- before each timed phase: `CHECKPOINT`; after a pre-fill also `ANALYZE` of the \
         filled table (both sides alike); each case's schema is dropped after it\n"
    );
}

/// `fstype (source mounted on target)` of the filesystem holding `dir`.
fn filesystem_of(dir: &Path) -> String {
    let found = Command::new("findmnt")
        .args(["-n", "-o", "FSTYPE,SOURCE,TARGET", "-T"])
        .arg(dir)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let Some(line) = found else {
        return format!("unknown (server data in {})", dir.display());
    };
    let mut fields = line.split_whitespace();
    let (fstype, source, target) = (
        fields.next().unwrap_or("?"),
        fields.next().unwrap_or("?"),
        fields.next().unwrap_or("?"),
    );
    let warning = if matches!(fstype, "tmpfs" | "ramfs") {
        " — WARNING: a RAM filesystem, commits cost no disk flush"
    } else {
        ""
    };
    format!(
        "{fstype} ({source} mounted on {target}; the server's data in {}){warning}",
        dir.display()
    )
}

/// The summary: each target beside its ratio.
/// In a smoke run the `met` column stays empty: its figures mean nothing.
fn print_summary(samples: &Samples, fill: Option<&(Metrics, usize, usize)>, smoke: bool) {
    let mut table = Table::new(
        "hookspool on PostgreSQL versus plain SQL (same server, same run; medians)",
        &[
            "measure",
            "baseline (plain SQL)",
            "hookspool",
            "ratio",
            "ratio by round (min..max)",
            "target",
            "met",
        ],
    );
    for (label, base_case, hs_case, target) in COMPARISONS {
        let base = samples.get(base_case.id, "ops_per_s");
        let hs = samples.get(hs_case.id, "ops_per_s");
        let value = match (base, hs) {
            (Some(base), Some(hs)) if base.median > 0.0 => Some(hs.median / base.median),
            _ => None,
        };
        // Each round's pair on its own: a slow spell of the machine that falls on one side
        // of a pair moves that round's ratio, and the spread shows how far.
        let rounds = samples.ratios(hs_case.id, base_case.id, "ops_per_s");
        table.row(vec![
            label.into(),
            median(base, rate),
            median(hs, rate),
            value.map_or_else(|| "-".into(), ratio),
            spread(Summary::of(&rounds), ratio),
            target.map_or_else(|| "-".into(), |t| format!("≥ {t}×")),
            match (value, target) {
                (Some(v), Some(t)) if !smoke => format!(
                    "{} ({} of {} rounds)",
                    yes_no(v >= t),
                    rounds.iter().filter(|&&r| r >= t).count(),
                    rounds.len()
                ),
                _ => "-".into(),
            },
        ]);
    }
    if let Some((fill, _, _)) = fill {
        count_rows(&mut table, samples, fill, smoke);
    }
    table.print();
    println!(
        "ratio = hookspool ÷ baseline rows/s, of the medians (for count: baseline time ÷ \
         hookspool time, >1 = hookspool faster); by round = the same ratio within each round \
         (every case runs once per round), and `met` counts the rounds at or above the \
         target. Payloads {PAYLOAD_LEN} B. Every commit waits for its WAL \
         flush (synchronous_commit=on) on both sides. Baseline count = `SELECT count(*) FROM \
         outbox WHERE queue = $1` on a plain table of that many rows (vacuumed, analyzed); \
         hookspool count = `Store::count` (sums the sharded counter rows and the count \
         changes not rolled up yet).\n"
    );
}

fn yes_no(ok: bool) -> String {
    if ok { "yes" } else { "NO" }.into()
}

/// Every throughput case with its spread and call latencies.
fn print_details(samples: &Samples, plan: &[Case], claim_n: usize) {
    let mut t = Table::new(
        "Every throughput case",
        &[
            "case",
            "runs",
            "rows/s median (min..max)",
            "rows per run (median)",
            "µs per call p50 / p99",
            "CPU µs per row: client / server",
            "WAL bytes per row",
            "peak RSS MiB (client)",
        ],
    );
    for case in plan {
        // The median of `key` over the median rows, times `scale`.
        let per_row = |key, scale: f64, decimals: usize| match (
            samples.get(case.id, key).map(|s| s.median),
            samples.get(case.id, "ops").map(|s| s.median),
        ) {
            (Some(x), Some(rows)) if rows > 0.0 => format!("{:.decimals$}", x / rows * scale),
            _ => "-".into(),
        };
        let cpu = |key| per_row(key, 1e6, 1);
        let lat = match (
            samples.get(case.id, "p50_us"),
            samples.get(case.id, "p99_us"),
        ) {
            (Some(a), Some(b)) => format!("{} / {}", micros(a.median), micros(b.median)),
            _ => "-".into(),
        };
        t.row(vec![
            case.what.into(),
            samples.count(case.id).to_string(),
            spread(samples.get(case.id, "ops_per_s"), rate),
            median(samples.get(case.id, "ops"), |x| format!("{x:.0}")),
            lat,
            format!("{} / {}", cpu("client_cpu_s"), cpu("server_cpu_s")),
            per_row("wal_bytes", 1.0, 0),
            median(samples.get(case.id, "peak_rss_kib"), |k| {
                format!("{:.1}", k / 1024.0)
            }),
        ]);
    }
    t.print();
    println!(
        "A call = one transaction on the baseline side, one `Store` call on hookspool's (a \
         claim round = a claim call + an ack_many call; a SQL claim = SELECT … FOR UPDATE \
         SKIP LOCKED + UPDATE + COMMIT). The claim cases start from {claim_n} due items \
         (pushed untimed: plain INSERT … SELECT generate_series for the baseline, \
         `push_batch` of {FILL_BATCH} for hookspool) and stop at the time limit or when \
         the queue is empty, whichever is first. Each worker connects and makes one call \
         before the clock starts (connections made, statements prepared). CPU per row: \
         the medians of the timed phase's CPU seconds (the bench client's process; the whole \
         server: postmaster, backends, WAL writer, checkpointer) over its median rows, from \
         `/proc` in clock ticks; WAL bytes per row: the same for the WAL the server wrote \
         (every session's, so a checkpoint's or autovacuum's too).\n"
    );
}

// ---- child: one measurement ---------------------------------------------------------------

fn child(case: &str, args: &ChildArgs) -> BenchResult<Metrics> {
    let rt = runtime()?;
    rt.block_on(async {
        match case {
            "fill-count" => fill_count(args).await,
            "sql-count-small" | "sql-count-large" | "hs-count-small" | "hs-count-large"
            | "hs-count-busy" => count_case(case, args).await,
            _ => {
                let case = CASES
                    .into_iter()
                    .find(|c| c.id == case)
                    .ok_or_else(|| format!("unknown case {case:?}"))?;
                let run = Run::from_args(args)?;
                match case.id {
                    "sql-insert-1" | "sql-insert-16" | "sql-insert-16x8" | "sql-insert-batch" => {
                        sql_insert(&run).await
                    }
                    "sql-claim" => sql_claim(&run, Settle::InTheClaim).await,
                    "sql-claim-leased" => sql_claim(&run, Settle::Leased).await,
                    "hs-push-1" | "hs-push-16" | "hs-push-16x8" | "hs-push-batch" => {
                        hs_push(&run).await
                    }
                    _ => hs_claim_ack(&run).await,
                }
            }
        }
    })
}

// ---- hookspool on PostgresBackend -------------------------------------------------------

type PgStore = Store<PostgresBackend>;

async fn hs_open(url: &str, schema: &str, pool: usize) -> BenchResult<PgStore> {
    let options = PostgresOptions::new(url).schema(schema).pool_size(pool);
    Ok(Store::new(PostgresBackend::open(options).await?))
}

async fn hs_queue(store: &PgStore, name: &str) -> BenchResult<QueueId> {
    let id = QueueId::new(name)?;
    store
        .create_queue(QueueConfig::new(id.clone()).with_retention(Retention::Keep))
        .await?;
    Ok(id)
}

/// Pushes `n` items in batches of `batch` from [`FILL_PRODUCERS`] producers at once.
async fn hs_fill(
    store: &PgStore,
    queue: &QueueId,
    first: usize,
    n: usize,
    batch: usize,
) -> BenchResult<()> {
    let calls = n.div_ceil(batch);
    let mut tasks = JoinSet::new();
    for p in 0..FILL_PRODUCERS {
        let (store, queue) = (store.clone(), queue.clone());
        tasks.spawn(async move {
            for call in (p..calls).step_by(FILL_PRODUCERS) {
                let start = call * batch;
                let len = batch.min(n - start);
                let items = (start..start + len)
                    .map(|i| NewItem::new(payload((first + i) as u64)))
                    .collect();
                store.push_batch(&queue, items).await?;
            }
            Ok::<_, hookspool::Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

fn items(w: usize, first: usize, len: usize) -> Vec<NewItem> {
    (first..first + len)
        .map(|i| NewItem::new(payload(seq(w, i))))
        .collect()
}

async fn hs_push(run: &Run) -> BenchResult<Metrics> {
    let admin = connect(&run.url).await?;
    let store = hs_open(&run.url, &run.schema, run.workers + 4).await?;
    let queue = hs_queue(&store, QUEUE).await?;
    // Warm-up: one push per worker at once, so the pool holds a prepared connection each.
    let mut warm = JoinSet::new();
    for w in 0..run.workers {
        let (store, queue, batch) = (store.clone(), queue.clone(), run.batch);
        warm.spawn(async move {
            store
                .push_batch(&queue, items(w, usize::MAX / 2, batch))
                .await
        });
    }
    let mut warm_rows = 0;
    while let Some(done) = warm.join_next().await {
        warm_rows += done??.len();
    }
    checkpoint(&admin).await?;
    let states = vec![(store.clone(), queue.clone()); run.workers];
    let batch = run.batch;
    let (worked, secs) = drive(run, states, |w, (store, queue), budget| async move {
        let mut done = Worked::default();
        while budget.more(done.calls.len()) {
            let call = done.calls.len();
            let t = Instant::now();
            if batch == 1 {
                store
                    .push(&queue, NewItem::new(payload(seq(w, call))))
                    .await?;
            } else {
                store
                    .push_batch(&queue, items(w, call * batch, batch))
                    .await?;
            }
            done.calls.push(t.elapsed());
            done.rows += batch;
        }
        Ok(done)
    })
    .await?;
    let count = store.count(&queue).await?;
    check(
        "items pushed",
        warm_rows + worked.rows,
        i64::try_from(count)?,
    )?;
    let m = figures(worked, secs);
    drop(store);
    drop_schema(&admin, &run.schema).await?;
    Ok(m)
}

async fn hs_claim_ack(run: &Run) -> BenchResult<Metrics> {
    let admin = connect(&run.url).await?;
    let store = hs_open(&run.url, &run.schema, run.workers + 4).await?;
    let queue = hs_queue(&store, QUEUE).await?;
    hs_fill(&store, &queue, 0, run.n, FILL_BATCH).await?;
    admin
        .batch_execute(&format!("ANALYZE {}.items", run.schema))
        .await?;
    // Warm-up: one claim of 1 + ack per consumer at once (a pooled connection each).
    let mut warm = JoinSet::new();
    for w in 0..run.workers {
        let (store, queue) = (store.clone(), queue.clone());
        warm.spawn(async move { claim_ack_round(&store, &queue, &owner(w), 1).await });
    }
    let mut warm_rows = 0;
    while let Some(done) = warm.join_next().await {
        warm_rows += done??;
    }
    checkpoint(&admin).await?;
    let states = vec![(store.clone(), queue.clone()); run.workers];
    let batch = run.batch;
    let (worked, secs) = drive(run, states, |w, (store, queue), budget| async move {
        let owner = owner(w);
        let mut done = Worked::default();
        while budget.more(done.calls.len()) {
            let t = Instant::now();
            let n = claim_ack_round(&store, &queue, &owner, batch).await?;
            if n == 0 {
                break;
            }
            done.rows += n;
            done.calls.push(t.elapsed());
        }
        Ok(done)
    })
    .await?;
    let acked = store.count_phase(&queue, &Phase::DONE).await?;
    check(
        "items acked",
        warm_rows + worked.rows,
        i64::try_from(acked)?,
    )?;
    let m = figures(worked, secs);
    drop(store);
    drop_schema(&admin, &run.schema).await?;
    Ok(m)
}

fn owner(w: usize) -> String {
    format!("bench-consumer-{w}")
}

/// Claims up to `limit` items for `owner` and acks them with one `ack_many`; returns how many.
async fn claim_ack_round(
    store: &PgStore,
    queue: &QueueId,
    owner: &str,
    limit: usize,
) -> BenchResult<usize> {
    let claimed = store.claim(queue, owner, limit, LEASE).await?;
    if claimed.is_empty() {
        return Ok(0);
    }
    if let Some(bad) = claimed.iter().find(|i| i.payload.len() != PAYLOAD_LEN) {
        return Err(format!("claimed item {} has {} bytes", bad.key, bad.payload.len()).into());
    }
    let keys: Vec<Key> = claimed.iter().map(|i| i.key).collect();
    let results = store.ack_many(queue, &keys, owner).await?;
    if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
        return Err(e.into());
    }
    Ok(keys.len())
}
