//! Soak: the `hookspool serve` daemon (journal) delivering a steady stream of webhooks for a
//! long time with a short retention, to show that memory, disk and open files stay flat.
//!
//! Publishing clients on 127.0.0.1 send `POST /events` at a steady total rate (each event
//! reaches one subscription: a local receiver that answers 204), and the daemon keeps done
//! and dead deliveries for `SOAK_RETAIN` (1m). Every `SOAK_SAMPLE_SECS` (10 s) it samples
//! the daemon's resident memory (VmRSS), the data directory's size and the daemon's open
//! file descriptors, with what was published, delivered and is still held. At the end each
//! series' mean over the last 2 minutes is compared with its mean over the 2 minutes after
//! `SOAK_WARMUP_SECS` (300 s): flat means within ±10 % (and the run fails otherwise).
//!
//! `cargo bench -p hookspool-benches --bench soak` runs 30 minutes at 2,000 events/s:
//! `SOAK_SECS` (1800), `SOAK_RATE` (2000), `SOAK_CLIENTS` (16). It builds the release
//! binary first unless `HOOKSPOOL_BIN` names one. As a smoke run (`cargo test --benches`)
//! it runs 4 s at 200/s with 1 s samples and checks nothing but that it works.
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
    disk_mib: f64,
    fds: f64,
    published: u64,
    delivered: u64,
    held: u64,
}

fn main() -> BenchResult<()> {
    let settings = Settings::from_env()?;
    let secs = settings.count("SOAK_SECS", 1_800, 4)?;
    let rate = settings.count("SOAK_RATE", 2_000, 200)?;
    let clients = settings.count("SOAK_CLIENTS", 16, 2)?;
    let sample_every = Duration::from_secs(settings.count("SOAK_SAMPLE_SECS", 10, 1)? as u64);
    let warmup = settings.count("SOAK_WARMUP_SECS", 300, 2)? as f64;
    let (root, fs_desc) = data_root(env!("CARGO_TARGET_TMPDIR"))?;
    let bin = daemon_binary(settings.smoke)?;
    let dir = scratch(&root, "soak")?;
    println!(
        "soak: {secs} s at {rate} events/s from {clients} clients, retention {RETAIN}, \
         sampled every {sample_every:?}; data on {fs_desc}"
    );
    let receiver = Receiver::start()?;
    let retain = [
        "--retain-deliveries-done",
        RETAIN,
        "--retain-deliveries-dead",
        RETAIN,
    ];
    let daemon = Daemon::start(&bin, dir.path(), "soak", &[], &retain)?;
    let data = dir.path().join("soak-data");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let samples = rt.block_on(run(
        &daemon,
        &receiver,
        &data,
        secs,
        rate,
        clients,
        sample_every,
    ))?;
    let warnings = daemon.log_warnings();
    daemon.stop()?;
    print_samples(&samples);
    if warnings > 0 {
        return Err(format!("the daemon logged {warnings} warnings or errors").into());
    }
    if !settings.smoke {
        check_flat(&samples, warmup)?;
    }
    Ok(())
}

/// Publishes at `rate` for `secs` while sampling; returns the samples.
async fn run(
    daemon: &Daemon,
    receiver: &Receiver,
    data: &Path,
    secs: usize,
    rate: usize,
    clients: usize,
    sample_every: Duration,
) -> BenchResult<Vec<Sample>> {
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
        let sample = sample(daemon, receiver, data, &setup, start, &published).await?;
        println!(
            "{:>6.0} s  rss {:>7.1} MiB  disk {:>7.1} MiB  fds {:>4.0}  published {:>9}  \
             delivered {:>9}  held {:>8}",
            sample.secs,
            sample.rss_mib,
            sample.disk_mib,
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
    data: &Path,
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
    Ok(Sample {
        secs: start.elapsed().as_secs_f64(),
        rss_mib: rss_kib / 1024.0,
        disk_mib: dir_bytes(data)? as f64 / (1024.0 * 1024.0),
        fds: fds as f64,
        published: published.load(Ordering::Relaxed),
        delivered: receiver.distinct() as u64,
        held: counts["total"].as_u64().unwrap_or(0),
    })
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
    println!("| minute | daemon RSS (MiB) | data dir (MiB) | open fds | delivered | held |");
    println!("|---:|---:|---:|---:|---:|---:|");
    let mut last_minute = None;
    for s in samples {
        let minute = Duration::from_secs_f64(s.secs).as_secs() / 60;
        if last_minute != Some(minute) {
            last_minute = Some(minute);
            println!(
                "| {minute} | {:.1} | {:.1} | {:.0} | {} | {} |",
                s.rss_mib, s.disk_mib, s.fds, s.delivered, s.held
            );
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
        ("data dir (MiB)", |s| s.disk_mib),
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
