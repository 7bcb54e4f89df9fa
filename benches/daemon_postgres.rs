//! Benchmark: `hookspool serve` on PostgreSQL, one daemon against two sharing one database.
//!
//! One throwaway PostgreSQL server is started for the run (`TestServer::start`: `fsync=on`,
//! `synchronous_commit=on`, data in a temp dir). Each run of a daemon case gets a fresh
//! schema, starts 1 or 2 `hookspool serve --backend postgres` daemons on it (each its own
//! `--node-id`), subscribes an in-process receiver (answering 204 at once) to the bench
//! event through each daemon (one subscription: the second subscribe finds the first's),
//! publishes N events (256-byte payloads) with 16 keep-alive clients spread evenly over the
//! daemons' `POST /events`, and times first publish → the receiver has seen every
//! delivery (distinct `webhook-id`s; repeats are counted as duplicates). The daemons are
//! then stopped with SIGTERM, which must exit 0, and the schema is dropped.
//!
//! For context, the same run measures the commit baseline: write + fdatasync per 256 B
//! record on the data filesystem, and one-row INSERT per transaction (autocommit) from 1
//! and 16 tokio-postgres clients on the same server.
//!
//! `cargo bench -p hookspool-benches --bench daemon_postgres [-- FILTER]`. It builds the
//! release `hookspool` binary first (`cargo build --release -p hookspool-cli --bin
//! hookspool`, same target dir) unless `HOOKSPOOL_BIN` names one. Events per run come from
//! `DAEMON_PG_BENCH_N` (20,000), runs from `HOOKSPOOL_BENCH_RUNS` (3). Without `--bench`
//! (under `cargo test`) a smoke version publishes a few hundred events through a debug
//! daemon, times nothing, and fails unless every event is delivered.
// Counts stay far below 2^52, where f64 would start rounding them.
#![allow(clippy::cast_precision_loss)]

mod common;

use std::path::Path;
use std::time::Instant;

use hookspool_postgres::testing::TestServer;
use serde_json::Value;

use common::daemon::{
    self, Daemon, PATTERN, Receiver, Requests, client, daemon_binary, event_body, process_cpu_secs,
    receipt_figures, request, server_tree_cpu_secs, single_delivery_id,
};
use common::pg::{self, Limit, Run, server_info, sql_insert};
use common::raw;
use common::table::{Table, cpu_per_op, median, micros, millis, pair, rate, ratio, spread};
use common::{
    BenchResult, ChildArgs, Metrics, Samples, Settings, child_main, data_root, print_footer,
    print_header, run_case, scratch,
};

fn main() -> BenchResult<()> {
    if child_main(child)? {
        return Ok(());
    }
    parent()
}

// ---- the cases ----------------------------------------------------------------------------

/// write + fdatasync per record, 1 writer, on the data filesystem.
const RAW: &str = "raw-per-record";
/// One-row INSERT per transaction from 1 client.
const SQL_1: &str = "sql-insert-1";
/// One-row INSERT per transaction from [`CLIENTS`] clients.
const SQL_16: &str = "sql-insert-16";
/// Publish + deliver through one daemon.
const ONE: &str = "publish-1-daemon";
/// Publish + deliver through two daemons sharing one schema.
const TWO: &str = "publish-2-daemons";

/// Publishing clients in total (spread evenly over the daemons), and the SQL clients.
const CLIENTS: usize = 16;
/// Records of the raw baseline and rows of the 1-client INSERT case (each costs a flush).
const RAW_N: usize = 2_000;
/// The environment variables that shape a run (printed with the command line).
const ENV_VARS: [&str; 5] = [
    "CARGO_TARGET_DIR",
    "DAEMON_PG_BENCH_N",
    "HOOKSPOOL_BENCH_RUNS",
    "HOOKSPOOL_BIN",
    "HOOKSPOOL_PG_BIN",
];

// ---- parent: builds the daemon, starts the server, plans the runs, prints the tables -----

fn parent() -> BenchResult<()> {
    let settings = Settings::from_env()?;
    let n = settings.count("DAEMON_PG_BENCH_N", 20_000, 300)?;
    let raw_n = if settings.smoke { 50 } else { RAW_N };
    let (root, fs_desc) = data_root(env!("CARGO_TARGET_TMPDIR"))?;
    let bin = daemon_binary(settings.smoke)?;

    let started = Instant::now();
    eprintln!("daemon_postgres: starting a throwaway PostgreSQL server (initdb) ...");
    let server = TestServer::start();
    let url = server.url().to_owned();
    let pg_dir = server
        .log()
        .and_then(|log| log.parent().map(Path::to_path_buf))
        .ok_or("the test server has no data dir")?;
    let info = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(server_info(&url))?;

    print_header(
        "daemon_postgres",
        &settings,
        &fs_desc,
        &[
            ("DAEMON_PG_BENCH_N (events per daemon run)", n),
            ("raw / 1-client INSERT records", raw_n),
        ],
    );
    println!("- command: `{}`", command_line());
    println!("- server: {info}; its data in {}", pg_dir.display());
    println!(
        "- daemon: `{}` `--database-url … --database-schema <fresh per run> serve --backend \
         postgres --node-id bench-N --token … --allow-network 127.0.0.0/8`, default settings \
         otherwise (pool of 16 connections, 32 webhook requests in flight); daemons started \
         one after the other, stopped by SIGTERM\n",
        bin.display()
    );

    let mut plan: Vec<&str> = vec![RAW, SQL_1, SQL_16, ONE, TWO];
    plan.retain(|c| matches!(*c, RAW | SQL_1 | SQL_16) || settings.wants(c));

    let mut samples = Samples::default();
    for round in 1..=settings.runs {
        eprintln!("daemon_postgres: round {round}/{}", settings.runs);
        for &case in &plan {
            let dir = scratch(&root, case)?;
            let schema = format!("dpg_{}_r{round}", case.replace('-', "_"));
            let (daemons, count) = match case {
                RAW | SQL_1 => (0, raw_n),
                SQL_16 => (0, n),
                ONE => (1, n),
                _ => (2, n),
            };
            let args = [
                ("dir", dir.path().display().to_string()),
                ("url", url.clone()),
                ("schema", schema),
                ("n", count.to_string()),
                ("daemons", daemons.to_string()),
                ("bin", bin.display().to_string()),
                ("pgdir", pg_dir.display().to_string()),
            ];
            run_case(&mut samples, case, case, &args)?;
        }
    }

    print_daemons(&samples, &plan, n);
    print_baseline(&samples, &plan, n, raw_n);
    print_details(&samples, &plan, n);
    println!(
        "- whole run: {:.0} s (build excluded, server start included)",
        started.elapsed().as_secs_f64()
    );
    print_footer();
    drop(server);
    Ok(())
}

/// The command that ran this bench, with the environment variables that shape it.
fn command_line() -> String {
    let mut parts: Vec<String> = ENV_VARS
        .iter()
        .filter_map(|var| std::env::var(var).ok().map(|v| format!("{var}={v}")))
        .collect();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench = args.iter().any(|a| a == "--bench");
    parts.push(format!(
        "cargo {} -p hookspool-benches --bench daemon_postgres",
        if bench { "bench" } else { "test" }
    ));
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty() {
        parts.push("--".into());
        parts.extend(filters.into_iter().cloned());
    }
    parts.join(" ")
}

/// The main table: publishes/s and deliveries/s of 1 and 2 daemons, and their ratio.
fn print_daemons(samples: &Samples, plan: &[&str], n: usize) {
    let mut t = Table::new(
        "hookspool serve on PostgreSQL: 1 daemon versus 2 sharing one schema (16 publishing \
         clients in total, 1 subscription)",
        &[
            "case",
            "daemons",
            "N",
            "publishes/s median (min..max)",
            "deliveries/s median (min..max)",
            "ratio vs 1 daemon (publishes / deliveries)",
        ],
    );
    let one_pub = samples.get(ONE, "ops_per_s");
    let one_e2e = samples.get(ONE, "e2e_per_s");
    for &case in plan.iter().filter(|c| matches!(**c, ONE | TWO)) {
        let vs = |base: Option<common::Summary>, key: &str| match (base, samples.get(case, key)) {
            (Some(b), Some(a)) if b.median > 0.0 => ratio(a.median / b.median),
            _ => "-".into(),
        };
        t.row(vec![
            case.into(),
            if case == ONE { "1" } else { "2" }.into(),
            n.to_string(),
            spread(samples.get(case, "ops_per_s"), rate),
            spread(samples.get(case, "e2e_per_s"), rate),
            format!(
                "{} / {}",
                vs(one_pub, "ops_per_s"),
                vs(one_e2e, "e2e_per_s")
            ),
        ]);
    }
    t.print();
    println!(
        "publishes/s = N ÷ the publishing phase (first request sent → last 202 received); \
         deliveries/s = N ÷ (first publish sent → last delivery first received), publishing \
         included. Every 202 means the event and its delivery are committed \
         (synchronous_commit=on). The publishing clients, the receiver (axum on 127.0.0.1 \
         in the measuring process, answering 204), the daemons and PostgreSQL share the \
         machine's CPUs. Medians over the runs.\n"
    );
    for &case in plan.iter().filter(|c| matches!(**c, ONE | TWO)) {
        if let Some(d) = samples.get(case, "duplicates")
            && d.max > 0.0
        {
            println!(
                "WARNING: {case}: up to {:.0} duplicate deliveries in a run (allowed by \
                 at-least-once delivery, but worth a look)\n",
                d.max
            );
        }
        if let Some(w) = samples.get(case, "log_warnings")
            && w.max > 0.0
        {
            println!(
                "WARNING: {case}: up to {:.0} WARN/ERROR lines in the daemons' logs in a run \
                 (printed on stderr during the run)\n",
                w.max
            );
        }
    }
}

fn print_baseline(samples: &Samples, plan: &[&str], n: usize, raw_n: usize) {
    let mut t = Table::new(
        "Commit baseline (same run, same filesystem, same server)",
        &[
            "measurement",
            "N",
            "ops/s median (min..max)",
            "µs/op p50 / p99",
        ],
    );
    for &case in plan.iter().filter(|c| matches!(**c, RAW | SQL_1 | SQL_16)) {
        let (what, count) = match case {
            RAW => ("write + fdatasync per 256 B record, 1 writer", raw_n),
            SQL_1 => (
                "SQL: 1 client, one-row INSERT per transaction (autocommit)",
                raw_n,
            ),
            _ => (
                "SQL: 16 clients, one-row INSERT per transaction (autocommit)",
                n,
            ),
        };
        t.row(vec![
            what.into(),
            count.to_string(),
            spread(samples.get(case, "ops_per_s"), rate),
            pair(samples, case, "p50_us", "p99_us", micros),
        ]);
    }
    t.print();
}

fn print_details(samples: &Samples, plan: &[&str], n: usize) {
    let mut t = Table::new(
        "Daemon runs in detail (medians over the runs)",
        &[
            "case",
            "publish latency p50 / p99 ms",
            "publish → receipt p50 / p99 ms",
            "end to end s",
            "ratio to 16-client INSERT (publishes / deliveries)",
            "duplicates (max of runs)",
            "peak RSS MiB per daemon",
            "CPU µs per delivery: daemons / PostgreSQL / clients + receiver",
        ],
    );
    let sql = samples.get(SQL_16, "ops_per_s");
    for &case in plan.iter().filter(|c| matches!(**c, ONE | TWO)) {
        let vs = |key: &str| match (sql, samples.get(case, key)) {
            (Some(b), Some(a)) if b.median > 0.0 => ratio(a.median / b.median),
            _ => "-".into(),
        };
        t.row(vec![
            case.into(),
            pair(samples, case, "p50_us", "p99_us", |us| millis(us / 1e3)),
            pair(samples, case, "receipt_p50_ms", "receipt_p99_ms", millis),
            median(samples.get(case, "e2e_secs"), |s| format!("{s:.2}")),
            format!("{} / {}", vs("ops_per_s"), vs("e2e_per_s")),
            samples
                .get(case, "duplicates")
                .map_or_else(|| "-".into(), |s| format!("{:.0}", s.max)),
            median(samples.get(case, "daemon_rss_kib"), |k| {
                format!("{:.1}", k / 1024.0)
            }),
            ["daemons_cpu_s", "pg_cpu_s", "bench_cpu_s"]
                .map(|key| cpu_per_op(samples, case, key, n))
                .join(" / "),
        ]);
    }
    t.print();
    println!(
        "CPU is user + system time from /proc over publishing and delivering (subscription \
         set up before, shutdown after): of the daemons, of the PostgreSQL server (postmaster \
         and its backends) and of this process (the publishing clients and the receiver), \
         divided by N. On 2 cores, their sum per delivery bounds deliveries/s at about \
         2 s ÷ that sum.\n"
    );
}

// ---- child: one measurement -------------------------------------------------------------

fn child(case: &str, args: &ChildArgs) -> BenchResult<Metrics> {
    let dir = args.path("dir")?;
    let n = args.usize("n")?;
    let url = args.str("url")?;
    let schema = args.str("schema")?;
    match case {
        RAW => raw::per_record(&dir, n),
        SQL_1 | SQL_16 => {
            let clients = if case == SQL_1 { 1 } else { CLIENTS };
            let run = Run {
                url: url.to_owned(),
                limit: Limit::Calls(n / clients),
                workers: clients,
                batch: 1,
                n: 0,
                schema: schema.to_owned(),
            };
            common::backends::runtime()?.block_on(sql_insert(&run))
        }
        ONE | TWO => {
            let bin = args.path("bin")?;
            let daemons = args.usize("daemons")?;
            let pg_dir = args.path("pgdir")?;
            measure_daemons(&bin, url, schema, &dir, &pg_dir, n, daemons)
        }
        _ => Err(format!("unknown case {case:?}").into()),
    }
}

/// Starts a receiver and `daemons` daemons on a fresh `schema`, subscribes the receiver
/// through each, publishes `n` events from [`CLIENTS`] clients spread over the daemons,
/// waits for every delivery, stops the daemons with SIGTERM and checks the receipts.
fn measure_daemons(
    bin: &Path,
    url: &str,
    schema: &str,
    dir: &Path,
    pg_dir: &Path,
    n: usize,
    daemons: usize,
) -> BenchResult<Metrics> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // A fresh schema, and no checkpoint of an earlier case's writes in this one.
    rt.block_on(execute(
        url,
        &format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CHECKPOINT"),
    ))?;
    let receiver = Receiver::start()?;
    let mut running = Vec::with_capacity(daemons);
    for i in 1..=daemons {
        let node = format!("bench-{i}");
        running.push(Daemon::start(
            bin,
            dir,
            &node,
            &["--database-url", url, "--database-schema", schema],
            &["--backend", "postgres", "--node-id", &node],
        )?);
    }
    let bases: Vec<String> = running.iter().map(Daemon::base).collect();
    // CPU seconds of the daemons, the server and this process (clients and receiver).
    let cpu = || -> [Option<f64>; 3] {
        [
            running.iter().map(Daemon::cpu_secs).sum(),
            server_cpu_secs(pg_dir),
            process_cpu_secs("self", false),
        ]
    };
    let measured = rt.block_on(async {
        subscribe_all(&bases, receiver.addr).await?;
        let before = cpu();
        let kind = Requests {
            path: "/events".into(),
            body: event_body,
            expect: 202,
            answer: |a| single_delivery_id(a).map(Some),
        };
        let published = daemon::publish_all(&bases, CLIENTS, n, &kind).await?;
        receiver.wait_for(n).await?;
        Ok::<_, common::BoxError>((published, before, cpu()))
    });
    // Read before stopping: each daemon's own high-water mark of resident memory.
    let rss: Vec<f64> = running.iter().filter_map(Daemon::peak_rss_kib).collect();
    // Every daemon stopped whatever happened, so that none outlives a failed run.
    let mut stopped = Ok(());
    let mut warnings = 0;
    for d in running {
        warnings += d.log_warnings();
        let r = d.stop();
        if stopped.is_ok() {
            stopped = r;
        }
    }
    let (published, before, after) = measured?;
    stopped?;
    rt.block_on(execute(url, &format!("DROP SCHEMA {schema} CASCADE")))?;

    let mut m = published.metrics();
    m.insert("log_warnings".into(), warnings as f64);
    let keys = ["daemons_cpu_s", "pg_cpu_s", "bench_cpu_s"];
    for (key, (a, b)) in keys.into_iter().zip(after.into_iter().zip(before)) {
        if let (Some(a), Some(b)) = (a, b) {
            m.insert(key.into(), a - b);
        }
    }
    if !rss.is_empty() {
        m.insert(
            "daemon_rss_kib".into(),
            rss.iter().sum::<f64>() / rss.len() as f64,
        );
    }
    // Checked after the daemons stopped, so a late repeat is counted too.
    let receipts = receiver.check(&published)?;
    receipt_figures(&mut m, &receipts, &published);
    Ok(m)
}

/// Subscribes the receiver through every daemon: the first creates the subscription (201),
/// the others find it (200, same id), and so have it in memory before the first publish.
async fn subscribe_all(bases: &[String], receiver: std::net::SocketAddr) -> BenchResult<()> {
    let setup = client()?;
    let sub = serde_json::json!({
        "event": PATTERN,
        "target_url": format!("http://{receiver}/hook"),
    });
    let mut first = None::<Value>;
    for (i, base) in bases.iter().enumerate() {
        let expect = if i == 0 { 201 } else { 200 };
        let answer = request(&setup, &format!("{base}/hooks/subscribe"), &sub, expect).await?;
        match &first {
            None => first = Some(answer["id"].clone()),
            Some(id) if *id == answer["id"] => {}
            Some(id) => {
                return Err(format!(
                    "daemon {} made subscription {}, daemon 1 made {id}",
                    i + 1,
                    answer["id"]
                )
                .into());
            }
        }
    }
    Ok(())
}

/// Runs `sql` (statements separated by `;`) on a connection of its own.
async fn execute(url: &str, sql: &str) -> BenchResult<()> {
    pg::connect(url).await?.batch_execute(sql).await?;
    Ok(())
}

// ---- CPU time -----------------------------------------------------------------------------

/// CPU seconds of the PostgreSQL server whose data dir is `pg_dir/data` (see
/// [`server_tree_cpu_secs`]).
fn server_cpu_secs(pg_dir: &Path) -> Option<f64> {
    let pidfile = std::fs::read_to_string(pg_dir.join("data/postmaster.pid")).ok()?;
    server_tree_cpu_secs(pidfile.lines().next()?.trim())
}
