//! Benchmark: the `hookspool serve` daemon as a service, over HTTP on 127.0.0.1. How many
//! `POST /events` per second it acknowledges durably (each 202 means the deliveries are
//! fdatasync'ed on the default sled backend), with 1 and 16 keep-alive clients; how many
//! deliveries per second reach a local receiver end to end (first publish → last delivery
//! received, the publish phase included); and, for reference, publishing with no subscriber
//! (nothing is stored: the HTTP cost alone) and pushing one item per request with
//! `POST /queues/{id}/items` (durable, no webhook machinery). The raw disk baseline is
//! measured in the same run.
//!
//! `cargo bench -p hookspool-benches --bench daemon [-- FILTER]`. It builds the release
//! `hookspool` binary first (`cargo build --release -p hookspool-cli --bin hookspool`, same
//! target dir) unless `HOOKSPOOL_BIN` names one. Requests per client level come from
//! `DAEMON_BENCH_N` (2,000), runs from `HOOKSPOOL_BENCH_RUNS` (3); every run starts a fresh
//! daemon on a fresh data directory and stops it with SIGTERM, which must exit 0.
// Counts stay far below 2^52, where f64 would start rounding them.
#![allow(clippy::cast_precision_loss)]

mod common;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hookspool_webhooks::HEADER_WEBHOOK_ID;
use serde_json::Value;

use common::raw::{self, percentile_us};
use common::table::{Table, micros, rate, ratio, ratio_to, spread};
use common::{
    BenchResult, ChildArgs, Metrics, PAYLOAD_LEN, Samples, Settings, child_main, data_root,
    print_footer, print_header, run_case, scratch,
};

fn main() -> BenchResult<()> {
    if child_main(child)? {
        return Ok(());
    }
    parent()
}

const RAW_PER_RECORD: &str = "raw-per-record";
const RAW_GROUP: &str = "raw-group-commit";
/// `POST /events` with one subscription (the receiver), then wait for every delivery.
const PUBLISH: &str = "publish";
/// `POST /events` with no subscription: nothing is stored, so this is the HTTP cost alone.
const PUBLISH_NO_SUB: &str = "publish-nosub";
/// `POST /queues/bench/items`, one item per request: a durable push without webhooks.
const PUSH: &str = "push";

/// Concurrent keep-alive clients, each with its own connection.
const CLIENTS: [usize; 2] = [1, 16];
/// The event every publish names, and the pattern the receiver subscribes to.
const EVENT: &str = "bench.created";
const PATTERN: &str = "bench.*";
/// The queue of the push case.
const QUEUE: &str = "bench";
/// The daemon's bearer token (at least 16 characters, as the daemon requires).
const TOKEN: &str = "hookspool-bench-token-0123456789";
/// A run that takes longer than this has stalled.
const STALL: Duration = Duration::from_mins(5);
/// How long SIGTERM may take: the daemon's default grace for requests is 10 s.
const STOP_TIMEOUT: Duration = Duration::from_mins(1);

// ---- parent: builds the daemon, plans the runs, prints the tables ------------------------

/// One measurement of the plan.
struct Planned {
    id: String,
    case: &'static str,
    clients: usize,
    /// The daemon's `--backend` (raw cases: unused).
    backend: &'static str,
}

/// The daemon's durable backends, each measured.
const BACKENDS: [&str; 2] = ["sled", "journal"];

fn parent() -> BenchResult<()> {
    let settings = Settings::from_env()?;
    let n = settings.count("DAEMON_BENCH_N", 2_000, 20)?;
    let (root, fs_desc) = data_root(env!("CARGO_TARGET_TMPDIR"))?;
    let bin = daemon_binary(settings.smoke)?;
    print_header(
        "daemon",
        &settings,
        &fs_desc,
        &[("DAEMON_BENCH_N (requests per case and run)", n)],
    );
    println!(
        "- daemon: `{}` `serve --backend sled|journal --token … --allow-network 127.0.0.0/8`, \
         default settings otherwise (durable: each answer means fdatasync'ed); a fresh daemon \
         and data directory per run, stopped by SIGTERM\n",
        bin.display()
    );

    let mut plan = vec![
        Planned {
            id: RAW_PER_RECORD.into(),
            case: RAW_PER_RECORD,
            clients: 1,
            backend: "-",
        },
        Planned {
            id: RAW_GROUP.into(),
            case: RAW_GROUP,
            clients: 16,
            backend: "-",
        },
    ];
    for backend in BACKENDS {
        for case in [PUBLISH, PUBLISH_NO_SUB, PUSH] {
            // Nothing is stored without a subscription: one backend shows the HTTP cost.
            if case == PUBLISH_NO_SUB && backend != "sled" {
                continue;
            }
            for clients in CLIENTS {
                plan.push(Planned {
                    id: format!("{case} {backend} clients={clients}"),
                    case,
                    clients,
                    backend,
                });
            }
        }
    }
    plan.retain(|p| p.case == RAW_PER_RECORD || p.case == RAW_GROUP || settings.wants(&p.id));

    let mut samples = Samples::default();
    for round in 1..=settings.runs {
        eprintln!("daemon: round {round}/{}", settings.runs);
        for p in &plan {
            let dir = scratch(&root, &p.id.replace([' ', '='], "-"))?;
            let args = [
                ("dir", dir.path().display().to_string()),
                ("n", n.to_string()),
                ("clients", p.clients.to_string()),
                ("bin", bin.display().to_string()),
                ("backend", p.backend.to_owned()),
            ];
            run_case(&mut samples, &p.id, p.case, &args)?;
        }
    }
    print_tables(&samples, &plan, n);
    print_footer();
    Ok(())
}

/// The daemon binary: `$HOOKSPOOL_BIN`, else the one `cargo build` makes in the target dir
/// this bench runs under (release; debug for a smoke run, which must stay quick).
fn daemon_binary(smoke: bool) -> BenchResult<PathBuf> {
    if let Some(bin) = std::env::var_os("HOOKSPOOL_BIN") {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            return Err(format!("HOOKSPOOL_BIN={} is not a file", bin.display()).into());
        }
        return Ok(bin);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("the benches package has no parent directory")?;
    // A relative CARGO_TARGET_DIR is taken from the workspace root, where cargo runs below.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace.join("target"), |d| workspace.join(d));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(workspace)
        .args(["build", "-p", "hookspool-cli", "--bin", "hookspool"]);
    if !smoke {
        build.arg("--release");
    }
    eprintln!("daemon: building the hookspool binary ({build:?})");
    let status = build.stdin(Stdio::null()).status()?;
    if !status.success() {
        return Err(format!("building the daemon failed: {status}").into());
    }
    let bin = target
        .join(if smoke { "debug" } else { "release" })
        .join("hookspool");
    if !bin.is_file() {
        return Err(format!("the build made no {}", bin.display()).into());
    }
    Ok(bin)
}

fn print_tables(samples: &Samples, plan: &[Planned], n: usize) {
    print_baseline(samples, plan, n);
    print_requests(samples, plan, n);
    print_deliveries(samples, plan, n);
    println!(
        "Each client is a keep-alive connection sending its next request when the previous \
         one is answered; payloads are 256-byte JSON values. Latency is per request, as the \
         client sees it. A delivery is received when the receiver (axum on 127.0.0.1 in the \
         measuring process, answering 204) first sees its webhook-id; every published \
         delivery must arrive (else the bench fails), and repeats are counted as duplicates \
         (at-least-once delivery allows them). The clients, the receiver and the daemon share \
         the machine's CPUs. Ratio = requests (or deliveries) per second ÷ the raw \
         baseline's records per second. Medians over the runs.\n"
    );
    for p in plan.iter().filter(|p| p.case == PUBLISH) {
        if let Some(d) = samples.get(&p.id, "duplicates")
            && d.max > 0.0
        {
            println!(
                "WARNING: {}: up to {:.0} duplicate deliveries in a run (allowed by \
                 at-least-once delivery, but worth a look)\n",
                p.id, d.max
            );
        }
    }
}

fn print_baseline(samples: &Samples, plan: &[Planned], n: usize) {
    let mut t = Table::new(
        "Raw disk baseline (same run, same filesystem; 256 B records appended to a new file)",
        &[
            "measurement",
            "N",
            "ops/s",
            "µs/op median (min..max)",
            "p50 / p99 µs",
        ],
    );
    for p in plan.iter().filter(|p| p.case == RAW_PER_RECORD) {
        t.row(vec![
            "write + fdatasync per record, 1 writer".into(),
            n.to_string(),
            median_of(samples, &p.id, "ops_per_s", rate),
            spread(samples.get(&p.id, "us_per_op"), micros),
            pair(samples, &p.id, "p50_us", "p99_us", micros),
        ]);
    }
    for p in plan.iter().filter(|p| p.case == RAW_GROUP) {
        t.row(vec![
            "group commit, 16 threads sharing fdatasyncs".into(),
            n.to_string(),
            median_of(samples, &p.id, "ops_per_s", rate),
            spread(samples.get(&p.id, "us_per_op"), micros),
            pair(samples, &p.id, "p50_us", "p99_us", micros),
        ]);
    }
    t.print();
}

fn print_requests(samples: &Samples, plan: &[Planned], n: usize) {
    let mut t = Table::new(
        "Requests through the daemon's HTTP API (durable: each answer means fdatasync'ed)",
        &[
            "backend",
            "request",
            "clients",
            "N",
            "requests/s median (min..max)",
            "ratio to fdatasync per record",
            "latency p50 / p99 ms",
            "daemon peak RSS MiB",
        ],
    );
    for p in plan.iter().filter(|p| is_daemon_case(p.case)) {
        let what = match p.case {
            PUBLISH => "POST /events → 202, 1 subscription",
            PUBLISH_NO_SUB => "POST /events → 202, no subscription (nothing stored)",
            _ => "POST /queues/bench/items → 201, 1 item",
        };
        t.row(vec![
            p.backend.into(),
            what.into(),
            p.clients.to_string(),
            n.to_string(),
            spread(samples.get(&p.id, "ops_per_s"), rate),
            ratio_to(samples, &p.id, RAW_PER_RECORD),
            pair(samples, &p.id, "p50_us", "p99_us", |us| millis(us / 1e3)),
            median_of(samples, &p.id, "daemon_rss_kib", |k| {
                format!("{:.1}", k / 1024.0)
            }),
        ]);
    }
    t.print();
}

fn print_deliveries(samples: &Samples, plan: &[Planned], n: usize) {
    let mut t = Table::new(
        "Webhook deliveries end to end (first publish → last delivery received, publishing \
         included), 1 subscription, default delivery settings",
        &[
            "backend",
            "publishing clients",
            "N",
            "deliveries/s median (min..max)",
            "ratio to fdatasync per record",
            "publish → receipt p50 / p99 ms",
            "duplicates (max of runs)",
        ],
    );
    for p in plan.iter().filter(|p| p.case == PUBLISH) {
        let e2e_ratio = match (
            samples.get(&p.id, "e2e_per_s"),
            samples.get(RAW_PER_RECORD, "ops_per_s"),
        ) {
            (Some(a), Some(b)) if b.median > 0.0 => ratio(a.median / b.median),
            _ => "-".into(),
        };
        t.row(vec![
            p.backend.into(),
            p.clients.to_string(),
            n.to_string(),
            spread(samples.get(&p.id, "e2e_per_s"), rate),
            e2e_ratio,
            pair(samples, &p.id, "receipt_p50_ms", "receipt_p99_ms", millis),
            samples
                .get(&p.id, "duplicates")
                .map_or_else(|| "-".into(), |s| format!("{:.0}", s.max)),
        ]);
    }
    t.print();
}

fn is_daemon_case(case: &str) -> bool {
    matches!(case, PUBLISH | PUBLISH_NO_SUB | PUSH)
}

/// The median of one figure, or `-`.
fn median_of(samples: &Samples, id: &str, key: &str, fmt: impl Fn(f64) -> String) -> String {
    samples
        .get(id, key)
        .map_or_else(|| "-".into(), |s| fmt(s.median))
}

/// `a / b` of two figures, medians over the runs.
fn pair(samples: &Samples, id: &str, a: &str, b: &str, fmt: fn(f64) -> String) -> String {
    match (samples.get(id, a), samples.get(id, b)) {
        (Some(a), Some(b)) => format!("{} / {}", fmt(a.median), fmt(b.median)),
        _ => "-".into(),
    }
}

/// Milliseconds with precision fitting their size.
fn millis(x: f64) -> String {
    if !x.is_finite() {
        "-".into()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

// ---- child: one measurement -------------------------------------------------------------

fn child(case: &str, args: &ChildArgs) -> BenchResult<Metrics> {
    let dir = args.path("dir")?;
    let n = args.usize("n")?;
    let clients = args.usize("clients")?;
    match case {
        RAW_PER_RECORD => raw::per_record(&dir, n),
        RAW_GROUP => raw::group_commit(&dir, n, clients),
        _ if is_daemon_case(case) => {
            let bin = args.path("bin")?;
            let backend = args.str("backend")?;
            measure_daemon(case, &bin, backend, &dir, n, clients)
        }
        _ => Err(format!("unknown case {case:?}").into()),
    }
}

/// What the publishing phase of one run saw.
struct Published {
    /// Per-request latency as the client saw it.
    latencies: Vec<Duration>,
    /// When the request that created each delivery id was sent.
    sent_at: HashMap<String, Instant>,
    /// When the first request was sent.
    start: Instant,
    /// The publishing phase's duration.
    secs: f64,
}

/// Starts a daemon (and for [`PUBLISH`] a receiver), sends `n` requests from `clients`
/// clients, waits for the deliveries, stops the daemon with SIGTERM and checks the receipts.
fn measure_daemon(
    case: &str,
    bin: &Path,
    backend: &str,
    dir: &Path,
    n: usize,
    clients: usize,
) -> BenchResult<Metrics> {
    let receiver = Receiver::start()?;
    let daemon = Daemon::start(bin, backend, dir)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let base = format!("http://{}", daemon.addr);
    let published = rt.block_on(async {
        let setup = client()?;
        match case {
            PUBLISH => {
                let sub = serde_json::json!({
                    "event": PATTERN,
                    "target_url": format!("http://{}/hook", receiver.addr),
                });
                request(&setup, &format!("{base}/hooks/subscribe"), &sub, 201).await?;
            }
            PUSH => {
                let queue = serde_json::json!({ "id": QUEUE });
                request(&setup, &format!("{base}/queues"), &queue, 201).await?;
            }
            _ => {}
        }
        let published = publish_all(case, &base, n, clients).await?;
        if case == PUBLISH {
            receiver.wait_for(n).await?;
        }
        Ok::<_, common::BoxError>(published)
    });
    // Read before stopping: the daemon's own high-water mark of resident memory.
    let rss = daemon.peak_rss_kib();
    // Stopped whatever happened, so that no daemon outlives a failed run.
    let stopped = daemon.stop();
    let published = published?;
    stopped?;

    let mut lat = published.latencies;
    let mut m = Metrics::from([
        ("ops".into(), n as f64),
        ("secs".into(), published.secs),
        ("p50_us".into(), percentile_us(&mut lat, 50)),
        ("p99_us".into(), percentile_us(&mut lat, 99)),
    ]);
    if let Some(kib) = rss {
        m.insert("daemon_rss_kib".into(), kib);
    }
    if case == PUBLISH {
        // Checked after the daemon stopped, so a late repeat is counted too.
        let receipts = receiver.check(&published.sent_at)?;
        let e2e = receipts
            .last
            .saturating_duration_since(published.start)
            .as_secs_f64();
        let mut lat = receipts.latencies;
        m.insert("e2e_secs".into(), e2e);
        m.insert("e2e_per_s".into(), n as f64 / e2e);
        m.insert("receipt_p50_ms".into(), percentile_us(&mut lat, 50) / 1e3);
        m.insert("receipt_p99_ms".into(), percentile_us(&mut lat, 99) / 1e3);
        m.insert("duplicates".into(), receipts.duplicates as f64);
        if receipts.duplicates > 0 {
            eprintln!(
                "WARNING: {} duplicate deliveries (at-least-once delivery allows them)",
                receipts.duplicates
            );
        }
    }
    Ok(m)
}

/// An HTTP client with its own connection pool, keep-alive, and no proxy (all traffic stays
/// on 127.0.0.1 whatever the environment says).
fn client() -> BenchResult<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .timeout(STALL)
        .build()?)
}

/// POSTs `body` as JSON with the token, checks the status, returns the answer's JSON.
async fn request(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
    expect: u16,
) -> BenchResult<Value> {
    let resp = client
        .post(url)
        .bearer_auth(TOKEN)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(body)?)
        .send()
        .await?;
    let status = resp.status();
    let bytes = resp.bytes().await?;
    if status.as_u16() != expect {
        return Err(format!(
            "POST {url}: {status} (expected {expect}): {}",
            String::from_utf8_lossy(&bytes)
        )
        .into());
    }
    Ok(serde_json::from_slice(&bytes)?)
}

/// A 256-byte JSON payload (the size of every other bench's records).
fn event_payload(seq: usize) -> BenchResult<Value> {
    let head = format!("{{\"seq\":{seq},\"pad\":\"");
    let pad = PAYLOAD_LEN.saturating_sub(head.len() + 2);
    Ok(serde_json::from_str(&format!(
        "{head}{}\"}}",
        "x".repeat(pad)
    ))?)
}

/// Sends `n` requests of `case` from `clients` concurrent clients, each sending its next
/// request once the previous one is answered; every answer must be the expected success.
async fn publish_all(case: &str, base: &str, n: usize, clients: usize) -> BenchResult<Published> {
    let next = Arc::new(AtomicUsize::new(0));
    let (url, expect) = if case == PUSH {
        (format!("{base}/queues/{QUEUE}/items"), 201)
    } else {
        (format!("{base}/events"), 202)
    };
    // Connected before the clock starts, so that connection setup is not timed.
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        let c = client()?;
        let resp = c.get(format!("{base}/healthz")).send().await?;
        if !resp.status().is_success() {
            return Err(format!("GET /healthz: {}", resp.status()).into());
        }
        resp.bytes().await?;
        conns.push(c);
    }
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in conns {
        let (next, url, case) = (Arc::clone(&next), url.clone(), case.to_owned());
        tasks.spawn(async move {
            let mut lat = Vec::new();
            let mut sent = Vec::new();
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= n {
                    break;
                }
                let body = if case == PUSH {
                    serde_json::json!({ "payload": event_payload(seq)? })
                } else {
                    serde_json::json!({ "event": EVENT, "payload": event_payload(seq)? })
                };
                let at = Instant::now();
                let answer = request(&c, &url, &body, expect).await?;
                lat.push(at.elapsed());
                if case == PUBLISH {
                    let id = single_delivery_id(&answer)?;
                    sent.push((id, at));
                } else if case == PUBLISH_NO_SUB && answer["delivery_ids"] != serde_json::json!([])
                {
                    return Err(format!("no subscription, yet deliveries: {answer}").into());
                }
            }
            Ok::<_, common::BoxError>((lat, sent))
        });
    }
    let mut latencies = Vec::with_capacity(n);
    let mut sent_at = HashMap::with_capacity(n);
    while let Some(r) = tasks.join_next().await {
        let (lat, sent) = r??;
        latencies.extend(lat);
        sent_at.extend(sent);
    }
    let secs = start.elapsed().as_secs_f64();
    if latencies.len() != n {
        return Err(format!("{} of {n} requests answered", latencies.len()).into());
    }
    if case == PUBLISH && sent_at.len() != n {
        return Err(format!("{n} publishes gave {} distinct delivery ids", sent_at.len()).into());
    }
    Ok(Published {
        latencies,
        sent_at,
        start,
        secs,
    })
}

/// The one delivery id of a 202 to a publish reaching one subscription.
fn single_delivery_id(answer: &Value) -> BenchResult<String> {
    match answer["delivery_ids"].as_array().map(Vec::as_slice) {
        Some([Value::String(id)]) => Ok(id.clone()),
        _ => Err(format!("one subscription, but the answer was {answer}").into()),
    }
}

// ---- the daemon -------------------------------------------------------------------------

/// A `hookspool serve` process on a free loopback port. Killed when dropped unless
/// [`Daemon::stop`] stopped it.
struct Daemon {
    child: Child,
    addr: String,
    log: PathBuf,
    /// Drains the daemon's stdout, so that it never writes into a closed pipe.
    drain: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    /// Starts the daemon with its data in `dir/data` and its log in `dir/daemon.log`, and
    /// returns once it printed `listening on ADDR`.
    fn start(bin: &Path, backend: &str, dir: &Path) -> BenchResult<Daemon> {
        let log = dir.join("daemon.log");
        let mut cmd = Command::new(bin);
        // Settings only from the flags below: none from this environment.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("HOOKSPOOL_") {
                cmd.env_remove(key);
            }
        }
        let mut child = cmd
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["serve", "--listen", "127.0.0.1:0", "--backend", backend])
            .args(["--token", TOKEN, "--allow-network", "127.0.0.0/8"])
            .env("HOOKSPOOL_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&log)?)
            .spawn()?;
        let mut out = BufReader::new(child.stdout.take().ok_or("no stdout pipe")?);
        let mut line = String::new();
        out.read_line(&mut line)?;
        let drain = std::thread::spawn(move || {
            let mut rest = Vec::new();
            let _ = out.read_to_end(&mut rest);
        });
        let mut daemon = Daemon {
            child,
            addr: String::new(),
            log,
            drain: Some(drain),
        };
        match line.trim().strip_prefix("listening on ") {
            Some(addr) => addr.clone_into(&mut daemon.addr),
            None => {
                return Err(format!(
                    "the daemon printed {line:?}, not `listening on ADDR`{}",
                    daemon.log_tail()
                )
                .into());
            }
        }
        Ok(daemon)
    }

    /// The daemon's peak resident set (VmHWM), if it can be read.
    fn peak_rss_kib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.trim_start_matches("VmHWM:")
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    }

    /// Sends SIGTERM and waits for the exit, which must be 0 (graceful shutdown).
    fn stop(mut self) -> BenchResult<()> {
        let kill = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        if !kill.success() {
            return Err(format!("kill -TERM {}: {kill}", self.child.id()).into());
        }
        let status = self.wait(STOP_TIMEOUT)?;
        if let Some(drain) = self.drain.take() {
            let _ = drain.join();
        }
        if !status.success() {
            return Err(format!(
                "the daemon exited with {status} after SIGTERM, not 0{}",
                self.log_tail()
            )
            .into());
        }
        Ok(())
    }

    fn wait(&mut self, timeout: Duration) -> BenchResult<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the daemon did not exit within {timeout:?} of SIGTERM{}",
                    self.log_tail()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The end of the daemon's log, for error messages.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        if tail.is_empty() {
            String::new()
        } else {
            format!("; its log ends:\n{tail}")
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---- the receiver -----------------------------------------------------------------------

/// A keep-alive HTTP receiver on 127.0.0.1 that answers 204 at once and records, per
/// `webhook-id`, when it first arrived and how often. It runs on its own thread and
/// runtime, as a separate server would, and lives until the process exits.
struct Receiver {
    addr: std::net::SocketAddr,
    state: Arc<Receipts>,
}

/// What the receiver got.
struct Receipts {
    /// Per `webhook-id`: first arrival and number of arrivals.
    seen: Mutex<HashMap<String, (Instant, usize)>>,
    /// How many distinct ids arrived.
    distinct: tokio::sync::watch::Sender<usize>,
}

impl Receipts {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, (Instant, usize)>> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The receipts of the published deliveries, once every one arrived.
struct Checked {
    /// Publish request sent → first receipt, per delivery.
    latencies: Vec<Duration>,
    /// The last first receipt.
    last: Instant,
    /// Arrivals beyond the first, over all deliveries.
    duplicates: usize,
}

impl Receiver {
    fn start() -> BenchResult<Receiver> {
        let state = Arc::new(Receipts {
            seen: Mutex::default(),
            distinct: tokio::sync::watch::Sender::new(0),
        });
        let shared = Arc::clone(&state);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let served = (|| -> BenchResult<()> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                    let _ = tx.send(Ok(listener.local_addr()?));
                    let app = Router::new()
                        .route("/hook", post(receive))
                        .with_state(shared);
                    axum::serve(listener, app).await?;
                    Ok(())
                })
            })();
            if let Err(e) = served {
                let _ = tx.send(Err(e.to_string()));
            }
        });
        let addr = rx.recv()??;
        Ok(Receiver { addr, state })
    }

    /// Waits until `n` distinct deliveries arrived.
    async fn wait_for(&self, n: usize) -> BenchResult<()> {
        let mut distinct = self.state.distinct.subscribe();
        let waited = tokio::time::timeout(STALL, distinct.wait_for(|&d| d >= n))
            .await
            .map(|r| r.map(|_| ()));
        match waited {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(format!(
                "stalled: {} of {n} deliveries received after {STALL:?}",
                *self.state.distinct.borrow()
            )
            .into()),
        }
    }

    /// Checks that every delivery in `sent_at` arrived and nothing else did, and measures.
    fn check(&self, sent_at: &HashMap<String, Instant>) -> BenchResult<Checked> {
        let seen = self.state.lock();
        let missing = sent_at.keys().filter(|id| !seen.contains_key(*id)).count();
        if missing > 0 {
            return Err(format!("{missing} of {} deliveries never arrived", sent_at.len()).into());
        }
        if let Some(id) = seen.keys().find(|id| !sent_at.contains_key(*id)) {
            return Err(format!("received {id}, which no publish answered").into());
        }
        let mut last = None::<Instant>;
        let mut latencies = Vec::with_capacity(sent_at.len());
        let mut duplicates = 0;
        for (id, at) in sent_at {
            if let Some(&(first, count)) = seen.get(id) {
                latencies.push(first.saturating_duration_since(*at));
                last = Some(last.map_or(first, |l| l.max(first)));
                duplicates += count - 1;
            }
        }
        Ok(Checked {
            latencies,
            last: last.ok_or("no deliveries")?,
            duplicates,
        })
    }
}

async fn receive(
    State(state): State<Arc<Receipts>>,
    headers: HeaderMap,
    _body: Bytes,
) -> StatusCode {
    let now = Instant::now();
    if let Some(id) = headers.get(HEADER_WEBHOOK_ID).and_then(|v| v.to_str().ok()) {
        let first = {
            let mut seen = state.lock();
            let entry = seen.entry(id.to_owned()).or_insert((now, 0));
            entry.1 += 1;
            entry.1 == 1
        };
        if first {
            state.distinct.send_modify(|d| *d += 1);
        }
    }
    StatusCode::NO_CONTENT
}
