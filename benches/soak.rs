//! Soak: the `hookspool serve` daemon delivering a steady stream of webhooks for a long time
//! with a short retention, to show that memory, disk and open files stay flat.
//!
//! Publishing clients on 127.0.0.1 send `POST /events` at a steady total rate (each event
//! reaches one subscription: a local receiver that answers 204), and the daemon keeps done
//! and dead deliveries for `SOAK_RETAIN` (1m). Every `SOAK_SAMPLE_SECS` (10 s) it samples
//! the daemon's resident memory (VmRSS), the size of what it stores and the daemon's open
//! file descriptors, with what was published, delivered and is still held. At the end each
//! series' mean over the last 2 minutes is compared with its mean over the 2 minutes after
//! `SOAK_WARMUP_SECS` (300 s): flat means within ±10 % (and the run fails otherwise).
//!
//! `SOAK_BACKEND` picks the store:
//! - `journal` (the default): the size is the data directory's;
//! - `postgres`: the daemon runs `--backend postgres` on a throwaway PostgreSQL server
//!   (`TestServer::start`, autovacuum as the server's defaults have it), and the size is
//!   that of the daemon's schema: every table with its indexes and TOAST. Each sample also
//!   shows the `items` table and its indexes apart, its dead rows (as the server's
//!   statistics last counted them) and the server's WAL directory, which are not checked.
//!   `SOAK_PG_HOLD=FROM-TO` has a session hold one snapshot open from second FROM to second
//!   TO of the run, as an application's forgotten transaction would; the daemon's warnings
//!   naming it are then expected, not counted against the run.
//!
//! `cargo bench -p hookspool-benches --bench soak` runs 30 minutes at 2,000 events/s:
//! `SOAK_SECS` (1800), `SOAK_RATE` (2000), `SOAK_CLIENTS` (16). It builds the release
//! binary first unless `HOOKSPOOL_BIN` names one. As a smoke run (`cargo test --benches`)
//! it runs each backend for 4 s at 200/s with 1 s samples (on PostgreSQL holding a snapshot
//! from second 1 to 3) and checks nothing but that it works.
// Counts and sizes stay far below 2^52, where f64 would start rounding them.
#![allow(clippy::cast_precision_loss)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::daemon::{
    Daemon, EVENT, PATTERN, Receiver, client, daemon_binary, event_payload, request,
};
use common::{BenchResult, Settings, data_root, scratch};
use hookspool_postgres::testing::TestServer;

/// The daemon's retention of done and dead deliveries.
const RETAIN: &str = "1m";
/// Flat: the mean of the last window within this fraction of the mean after warm-up.
const FLAT: f64 = 0.10;
/// The windows whose means [`check_flat`] compares, in seconds.
const WINDOW: f64 = 120.0;

/// One series of the samples.
type Series = fn(&Sample) -> f64;

/// One sample of the run.
struct Sample {
    secs: f64,
    rss_mib: f64,
    /// What the daemon stores: its data directory, or its PostgreSQL schema.
    stored_mib: f64,
    fds: f64,
    published: u64,
    delivered: u64,
    held: u64,
    /// PostgreSQL only: the `items` table, its indexes, its dead rows and the server's WAL.
    pg: Option<PgDetail>,
}

struct PgDetail {
    items_mib: f64,
    indexes_mib: f64,
    dead_rows: i64,
    wal_mib: f64,
}

/// The store the daemon soaks on.
#[derive(Clone, Copy, PartialEq)]
enum Backend {
    Journal,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Journal => "journal",
            Backend::Postgres => "postgres",
        }
    }
}

/// Where the size of what the daemon stores is read.
enum Stored {
    Dir(std::path::PathBuf),
    Schema {
        client: tokio_postgres::Client,
        schema: &'static str,
    },
}

/// The daemon's schema on the PostgreSQL server.
const SCHEMA: &str = "soak";
/// Part of the warning the daemon logs about a snapshot held open (`SOAK_PG_HOLD`).
const HELD_WARNING: &str = "has held a snapshot open";
/// The snapshot held in the smoke run of PostgreSQL, from and to which second.
const SMOKE_HOLD: (u64, u64) = (1, 3);

struct Plan {
    secs: usize,
    rate: usize,
    clients: usize,
    sample_every: Duration,
    /// PostgreSQL only: from and to which second of the run a session holds a snapshot open.
    hold: Option<(u64, u64)>,
}

/// `SOAK_PG_HOLD=FROM-TO`: seconds of the run between which a session on the server holds
/// one snapshot open (a `REPEATABLE READ` transaction that read something), as a forgotten
/// transaction of an application would: vacuum can free no row that died meanwhile.
fn hold_from_env() -> BenchResult<Option<(u64, u64)>> {
    let Ok(text) = std::env::var("SOAK_PG_HOLD") else {
        return Ok(None);
    };
    let bad = || format!("SOAK_PG_HOLD={text:?}: give FROM-TO in seconds of the run, FROM < TO");
    let (from, to) = text.split_once('-').ok_or_else(bad)?;
    let (from, to): (u64, u64) = (
        from.trim().parse().map_err(|_| bad())?,
        to.trim().parse().map_err(|_| bad())?,
    );
    if from >= to {
        return Err(bad().into());
    }
    Ok(Some((from, to)))
}

fn main() -> BenchResult<()> {
    let settings = Settings::from_env()?;
    let mut plan = Plan {
        secs: settings.count("SOAK_SECS", 1_800, 4)?,
        rate: settings.count("SOAK_RATE", 2_000, 200)?,
        clients: settings.count("SOAK_CLIENTS", 16, 2)?,
        sample_every: Duration::from_secs(settings.count("SOAK_SAMPLE_SECS", 10, 1)? as u64),
        hold: hold_from_env()?,
    };
    if let Some((_, to)) = plan.hold
        && to > plan.secs as u64
    {
        return Err(format!(
            "SOAK_PG_HOLD ends at {to} s, after the run's {} s",
            plan.secs
        )
        .into());
    }
    let warmup = settings.count("SOAK_WARMUP_SECS", 300, 2)? as f64;
    let backends = match std::env::var("SOAK_BACKEND").as_deref() {
        Ok("journal") => vec![Backend::Journal],
        Ok("postgres") => vec![Backend::Postgres],
        Ok(other) => {
            return Err(format!("SOAK_BACKEND={other:?}: use `journal` or `postgres`").into());
        }
        Err(_) if settings.smoke => vec![Backend::Journal, Backend::Postgres],
        Err(_) => vec![Backend::Journal],
    };
    if plan.hold.is_some() && backends.contains(&Backend::Journal) {
        return Err(
            "SOAK_PG_HOLD holds a snapshot on PostgreSQL: set SOAK_BACKEND=postgres".into(),
        );
    }
    // The smoke run holds a snapshot for a moment, so that the code doing it runs in tests.
    if settings.smoke && plan.hold.is_none() {
        plan.hold = Some(SMOKE_HOLD);
    }
    let bin = daemon_binary(settings.smoke)?;
    for backend in backends {
        soak(&bin, backend, &plan, warmup, settings.smoke)?;
    }
    Ok(())
}

/// One soak of the daemon on `backend`.
fn soak(bin: &Path, backend: Backend, plan: &Plan, warmup: f64, smoke: bool) -> BenchResult<()> {
    let (root, fs_desc) = data_root(env!("CARGO_TARGET_TMPDIR"))?;
    let dir = scratch(&root, "soak")?;
    let server = (backend == Backend::Postgres).then(TestServer::start);
    println!(
        "soak ({}): {} s at {} events/s from {} clients, retention {RETAIN}, sampled every \
         {:?}; data on {fs_desc}",
        backend.name(),
        plan.secs,
        plan.rate,
        plan.clients,
        plan.sample_every
    );
    let receiver = Receiver::start()?;
    let retain = [
        "--retain-deliveries-done",
        RETAIN,
        "--retain-deliveries-dead",
        RETAIN,
    ];
    let daemon = match &server {
        None => Daemon::start(bin, dir.path(), "soak", &[], &retain)?,
        Some(server) => {
            let mut serve = vec!["--backend", "postgres"];
            serve.extend(retain);
            Daemon::start(
                bin,
                dir.path(),
                "soak",
                &["--database-url", server.url(), "--database-schema", SCHEMA],
                &serve,
            )?
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let samples = rt.block_on(async {
        let stored = match &server {
            None => Stored::Dir(dir.path().join("soak-data")),
            Some(server) => Stored::Schema {
                client: common::pg::connect(server.url()).await?,
                schema: SCHEMA,
            },
        };
        let holding = match (&server, plan.hold) {
            (Some(server), Some((from, to))) => {
                let session = common::pg::connect(server.url()).await?;
                Some(tokio::spawn(hold_snapshot(session, from, to)))
            }
            _ => None,
        };
        let samples = run(&daemon, &receiver, &stored, plan).await?;
        if let Some(holding) = holding {
            holding.await??;
        }
        Ok::<_, common::BoxError>(samples)
    })?;
    let warnings = daemon.log_warnings();
    // With a snapshot held on purpose, the daemon's warnings naming it are expected.
    let expected = if plan.hold.is_some() {
        daemon.log_lines_containing(HELD_WARNING)
    } else {
        0
    };
    daemon.stop()?;
    print_samples(&samples);
    if expected > 0 {
        println!("the daemon named the held snapshot in {expected} warnings, as it should");
    }
    if warnings > expected {
        return Err(format!(
            "the daemon logged {} warnings or errors",
            warnings - expected
        )
        .into());
    }
    if !smoke {
        check_flat(&samples, warmup)?;
    }
    Ok(())
}

/// Holds one snapshot open on `session` from second `from` of the run to second `to`.
async fn hold_snapshot(session: tokio_postgres::Client, from: u64, to: u64) -> BenchResult<()> {
    let start = tokio::time::Instant::now();
    tokio::time::sleep_until(start + Duration::from_secs(from)).await;
    session
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM {SCHEMA}.queues"
        ))
        .await?;
    println!("{from:>6} s  a session holds a snapshot open (until {to} s)");
    tokio::time::sleep_until(start + Duration::from_secs(to)).await;
    session.batch_execute("COMMIT").await?;
    println!("{to:>6} s  the session's snapshot is released");
    Ok(())
}

/// Publishes at `plan.rate` for `plan.secs` while sampling; returns the samples.
async fn run(
    daemon: &Daemon,
    receiver: &Receiver,
    stored: &Stored,
    plan: &Plan,
) -> BenchResult<Vec<Sample>> {
    let Plan {
        secs,
        rate,
        clients,
        sample_every,
        hold: _,
    } = *plan;
    let base = daemon.base();
    let setup = client()?;
    let sub = serde_json::json!({
        "event": PATTERN,
        "target_url": format!("http://{}/hook", receiver.addr),
    });
    request(&setup, &format!("{base}/hooks/subscribe"), &sub, 201).await?;
    let published = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + Duration::from_secs(secs as u64);
    let mut tasks = tokio::task::JoinSet::new();
    // Each client sends its share on a fixed schedule (no catching up in bursts).
    let per_client = Duration::from_secs_f64(clients as f64 / rate as f64);
    for i in 0..clients {
        let (c, url, published) = (client()?, format!("{base}/events"), Arc::clone(&published));
        tasks.spawn(async move {
            let mut tick = tokio::time::interval_at(
                tokio::time::Instant::now() + per_client.mul_f64(i as f64 / clients as f64),
                per_client,
            );
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut seq = i;
            while Instant::now() < end {
                tick.tick().await;
                let body = serde_json::json!({ "event": EVENT, "payload": event_payload(seq)? });
                request(&c, &url, &body, 202).await?;
                published.fetch_add(1, Ordering::Relaxed);
                seq += clients;
            }
            Ok::<_, common::BoxError>(())
        });
    }
    let mut samples = Vec::new();
    let mut next = start;
    while Instant::now() < end {
        next += sample_every;
        tokio::time::sleep_until(next.into()).await;
        let sample = sample(daemon, receiver, stored, &setup, start, &published).await?;
        let pg = sample.pg.as_ref().map_or_else(String::new, |d| {
            format!(
                "  (items {:.1} + indexes {:.1} MiB, {} dead rows; WAL {:.0} MiB)",
                d.items_mib, d.indexes_mib, d.dead_rows, d.wal_mib
            )
        });
        println!(
            "{:>6.0} s  rss {:>7.1} MiB  stored {:>7.1} MiB  fds {:>4.0}  published {:>9}  \
             delivered {:>9}  held {:>8}{pg}",
            sample.secs,
            sample.rss_mib,
            sample.stored_mib,
            sample.fds,
            sample.published,
            sample.delivered,
            sample.held
        );
        samples.push(sample);
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(samples)
}

async fn sample(
    daemon: &Daemon,
    receiver: &Receiver,
    stored: &Stored,
    http: &reqwest::Client,
    start: Instant,
    published: &AtomicU64,
) -> BenchResult<Sample> {
    let pid = daemon.pid().to_string();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or("no VmRSS")?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    let answer = http
        .get(format!(
            "{}/queues/hookspool.deliveries/count",
            daemon.base()
        ))
        .bearer_auth(common::daemon::TOKEN)
        .send()
        .await?
        .bytes()
        .await?;
    let counts: Value = serde_json::from_slice(&answer)?;
    let (stored_bytes, pg) = match stored {
        Stored::Dir(dir) => (dir_bytes(dir)?, None),
        Stored::Schema { client, schema } => {
            let (bytes, detail) = schema_bytes(client, schema).await?;
            (bytes, Some(detail))
        }
    };
    Ok(Sample {
        secs: start.elapsed().as_secs_f64(),
        rss_mib: rss_kib / 1024.0,
        stored_mib: stored_bytes as f64 / MIB,
        fds: fds as f64,
        published: published.load(Ordering::Relaxed),
        delivered: receiver.distinct() as u64,
        held: counts["total"].as_u64().unwrap_or(0),
        pg,
    })
}

const MIB: f64 = 1024.0 * 1024.0;

/// Bytes of every table of `schema` with its indexes and TOAST, and the detail of `items`.
async fn schema_bytes(
    client: &tokio_postgres::Client,
    schema: &str,
) -> BenchResult<(u64, PgDetail)> {
    let row = client
        .query_one(
            "SELECT (SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
                     FROM pg_class c WHERE c.relnamespace = $1::text::regnamespace
                       AND c.relkind IN ('r', 'p', 'm')),
                    pg_relation_size(format('%I.items', $1::text)::regclass),
                    pg_indexes_size(format('%I.items', $1::text)::regclass),
                    (SELECT n_dead_tup FROM pg_stat_user_tables
                     WHERE relid = format('%I.items', $1::text)::regclass),
                    (SELECT coalesce(sum(size), 0)::bigint FROM pg_ls_waldir())",
            &[&schema],
        )
        .await?;
    let mib = |i: usize| row.get::<_, i64>(i) as f64 / MIB;
    Ok((
        u64::try_from(row.get::<_, i64>(0))?,
        PgDetail {
            items_mib: mib(1),
            indexes_mib: mib(2),
            dead_rows: row.get::<_, Option<i64>>(3).unwrap_or(0),
            wal_mib: mib(4),
        },
    ))
}

/// Bytes the files of `dir` take on disk (allocated blocks, as `du` counts them).
fn dir_bytes(dir: &Path) -> BenchResult<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let meta = entry?.metadata()?;
        total += meta.blocks() * 512;
    }
    Ok(total)
}

fn print_samples(samples: &[Sample]) {
    println!();
    let pg = samples.iter().any(|s| s.pg.is_some());
    if pg {
        println!(
            "| minute | daemon RSS (MiB) | schema (MiB) | items + indexes (MiB) | dead rows \
             | WAL (MiB) | open fds | delivered | held |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    } else {
        println!("| minute | daemon RSS (MiB) | data dir (MiB) | open fds | delivered | held |");
        println!("|---:|---:|---:|---:|---:|---:|");
    }
    let mut last_minute = None;
    for s in samples {
        let minute = Duration::from_secs_f64(s.secs).as_secs() / 60;
        if last_minute != Some(minute) {
            last_minute = Some(minute);
            match &s.pg {
                Some(d) => println!(
                    "| {minute} | {:.1} | {:.1} | {:.1} + {:.1} | {} | {:.0} | {:.0} | {} | {} |",
                    s.rss_mib,
                    s.stored_mib,
                    d.items_mib,
                    d.indexes_mib,
                    d.dead_rows,
                    d.wal_mib,
                    s.fds,
                    s.delivered,
                    s.held
                ),
                None => println!(
                    "| {minute} | {:.1} | {:.1} | {:.0} | {} | {} |",
                    s.rss_mib, s.stored_mib, s.fds, s.delivered, s.held
                ),
            }
        }
    }
}

/// Every series flat: its mean over the last [`WINDOW`] within [`FLAT`] of its mean over the
/// [`WINDOW`] after `warmup` seconds. Means, not single samples: the data directory grows
/// and shrinks by a segment as segments fill and are compacted, and memory briefly rises
/// while a checkpoint is written; the level is what must not drift.
fn check_flat(samples: &[Sample], warmup: f64) -> BenchResult<()> {
    let end = samples.last().ok_or("no samples")?.secs;
    if end < warmup + 2.0 * WINDOW {
        return Err("the run ended before two windows after the warm-up did".into());
    }
    let mean = |from: f64, value: Series| {
        let window: Vec<f64> = samples
            .iter()
            .filter(|s| s.secs >= from && s.secs < from + WINDOW)
            .map(value)
            .collect();
        window.iter().sum::<f64>() / window.len().max(1) as f64
    };
    let series: [(&str, Series); 3] = [
        ("RSS (MiB)", |s| s.rss_mib),
        ("stored (MiB)", |s| s.stored_mib),
        ("open fds", |s| s.fds),
    ];
    let mut failed = Vec::new();
    for (name, value) in series {
        let (after_warmup, at_end) = (mean(warmup, value), mean(end - WINDOW, value));
        let change = at_end / after_warmup - 1.0;
        println!(
            "{name}: {after_warmup:.1} after warm-up, {at_end:.1} at the end ({:+.1} %)",
            change * 100.0
        );
        if change.abs() > FLAT {
            failed.push(name);
        }
    }
    if failed.is_empty() {
        println!(
            "flat: RSS, disk and fds within ±{:.0} % after warm-up",
            FLAT * 100.0
        );
        Ok(())
    } else {
        Err(format!("not flat: {}", failed.join(", ")).into())
    }
}
