//! The `hookspool serve` daemon as the daemon benches drive it: the binary, a daemon
//! process on a free loopback port (with its peak memory and CPU time), a receiver that
//! records every delivery, and keep-alive clients that publish.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hookspool_webhooks::{HEADER_WEBHOOK_ID, SigningKey, verify};
use serde_json::Value;

use super::raw::percentile_us;
use super::{BenchResult, BoxError, Metrics, PAYLOAD_LEN};

/// The event every publish names, and the pattern the receiver subscribes to.
pub const EVENT: &str = "bench.created";
pub const PATTERN: &str = "bench.*";
/// The daemons' bearer token (at least 16 characters, as the daemon requires).
pub const TOKEN: &str = "hookspool-bench-token-0123456789";
/// A run that takes longer than this has stalled.
pub const STALL: Duration = Duration::from_mins(5);
/// How long SIGTERM may take: the daemon's default grace for requests is 10 s.
const STOP_TIMEOUT: Duration = Duration::from_mins(1);

/// The daemon binary: `$HOOKSPOOL_BIN`, else the one `cargo build` makes in the target dir
/// this bench runs under (release; debug for a smoke run, which must stay quick).
pub fn daemon_binary(smoke: bool) -> BenchResult<PathBuf> {
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
    eprintln!("building the hookspool binary ({build:?})");
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

// ---- the daemon -------------------------------------------------------------------------

/// A `hookspool serve` process on a free loopback port. Killed when dropped unless
/// [`Daemon::stop`] stopped it.
pub struct Daemon {
    child: Child,
    /// `IP:PORT` it listens on.
    pub addr: String,
    name: String,
    log: PathBuf,
    /// Drains the daemon's stdout, so that it never writes into a closed pipe.
    drain: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    /// Starts `BIN --data-dir DIR/NAME-data GLOBAL... serve --listen 127.0.0.1:0 --token …
    /// --allow-network 127.0.0.0/8 SERVE...`, logging at `warn` to `DIR/NAME.log`, with no
    /// settings from this environment, and returns once it printed `listening on ADDR`.
    pub fn start(
        bin: &Path,
        dir: &Path,
        name: &str,
        global: &[&str],
        serve: &[&str],
    ) -> BenchResult<Daemon> {
        let log = dir.join(format!("{name}.log"));
        let mut cmd = Command::new(bin);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("HOOKSPOOL_") || key == "DATABASE_URL" {
                cmd.env_remove(key);
            }
        }
        let mut child = cmd
            .arg("--data-dir")
            .arg(dir.join(format!("{name}-data")))
            .args(global)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(["--token", TOKEN, "--allow-network", "127.0.0.0/8"])
            .args(serve)
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
            name: name.to_owned(),
            log,
            drain: Some(drain),
        };
        match line.trim().strip_prefix("listening on ") {
            Some(addr) => addr.clone_into(&mut daemon.addr),
            None => {
                return Err(format!(
                    "daemon {name} printed {line:?}, not `listening on ADDR`{}",
                    daemon.log_tail()
                )
                .into());
            }
        }
        Ok(daemon)
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://ADDR`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The daemon's peak resident set (VmHWM), if it can be read.
    pub fn peak_rss_kib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.trim_start_matches("VmHWM:")
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    }

    /// CPU seconds (user + system) the daemon used so far.
    pub fn cpu_secs(&self) -> Option<f64> {
        process_cpu_secs(&self.child.id().to_string(), false)
    }

    /// The WARN and ERROR lines of the daemon's log so far (it logs at `warn`), the first
    /// few printed on stderr; returns how many there were.
    pub fn log_warnings(&self) -> usize {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        for line in lines.iter().take(5) {
            eprintln!("daemon {}: {line}", self.name);
        }
        if lines.len() > 5 {
            eprintln!("daemon {}: ... {} more", self.name, lines.len() - 5);
        }
        lines.len()
    }

    /// How many lines of the daemon's log so far contain `needle`.
    pub fn log_lines_containing(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Sends SIGTERM and waits for the exit, which must be 0 (graceful shutdown).
    pub fn stop(mut self) -> BenchResult<()> {
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
                "daemon {} exited with {status} after SIGTERM, not 0{}",
                self.name,
                self.log_tail()
            )
            .into());
        }
        Ok(())
    }

    /// SIGKILL: no chance to clean up; waits for the exit.
    pub fn kill9(mut self) -> BenchResult<()> {
        // `Child::kill` sends SIGKILL on Unix.
        self.child.kill()?;
        self.child.wait()?;
        if let Some(drain) = self.drain.take() {
            let _ = drain.join();
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
                    "daemon {} did not exit within {timeout:?} of SIGTERM{}",
                    self.name,
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

// ---- CPU time ---------------------------------------------------------------------------

/// Clock ticks per second of `/proc/PID/stat` times (`getconf CLK_TCK`, else 100).
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The fields of `/proc/PID/stat` after the command name: `[0]` is the state, `[1]` the
/// parent pid, `[11]`/`[12]` user/system time, `[13]`/`[14]` those of reaped children.
pub fn stat_fields(pid: &str) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(
        rest.split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

/// CPU seconds (user + system) of process `pid` (`self` for this one), with those of its
/// reaped children if `children`.
pub fn process_cpu_secs(pid: &str, children: bool) -> Option<f64> {
    let f = stat_fields(pid)?;
    let mut ticks = f.get(11)? + f.get(12)?;
    if children {
        ticks += f.get(13)? + f.get(14)?;
    }
    #[allow(clippy::cast_precision_loss)]
    Some(ticks as f64 / clock_ticks())
}

/// CPU seconds of the PostgreSQL server whose postmaster is `postmaster`: the postmaster
/// with every reaped child (backends that ended) plus its live children (backends, the WAL
/// writer, the checkpointer, autovacuum).
pub fn server_tree_cpu_secs(postmaster: &str) -> Option<f64> {
    let mut secs = process_cpu_secs(postmaster, true)?;
    let parent: u64 = postmaster.parse().ok()?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if stat_fields(pid).and_then(|f| f.get(1).copied()) == Some(parent) {
            secs += process_cpu_secs(pid, false).unwrap_or(0.0);
        }
    }
    Some(secs)
}

// ---- the receiver -----------------------------------------------------------------------

/// Serves `app` on a free port of 127.0.0.1 from a thread and runtime of its own, as a
/// separate server would, until the process exits; returns its address.
pub fn serve_loopback(app: Router) -> BenchResult<std::net::SocketAddr> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let served = (|| -> BenchResult<()> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let _ = tx.send(Ok(listener.local_addr()?));
                axum::serve(listener, app).await?;
                Ok(())
            })
        })();
        if let Err(e) = served {
            let _ = tx.send(Err(e.to_string()));
        }
    });
    Ok(rx.recv()??)
}

/// A keep-alive HTTP receiver on 127.0.0.1 that answers 204 at once and records, per
/// `webhook-id`, when it first arrived and how often. It runs on its own thread and
/// runtime, as a separate server would, and lives until the process exits. Given the
/// subscription's key ([`Receiver::verify_with`]), it also verifies every signature, and
/// answers a request that fails 400 without recording it.
pub struct Receiver {
    pub addr: std::net::SocketAddr,
    state: Arc<Receipts>,
}

/// What the receiver got.
struct Receipts {
    /// Per `webhook-id`: first arrival and number of arrivals.
    seen: Mutex<HashMap<String, (Instant, usize)>>,
    /// How many distinct ids arrived.
    distinct: tokio::sync::watch::Sender<usize>,
    /// The key every request's signature must verify with, once set.
    key: OnceLock<SigningKey>,
    /// Requests whose signature did not verify.
    bad_signatures: AtomicUsize,
}

impl Receipts {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, (Instant, usize)>> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The receipts of the published deliveries, once every one arrived.
pub struct Checked {
    /// Publish request sent → first receipt, per delivery.
    pub latencies: Vec<Duration>,
    /// The last first receipt.
    pub last: Instant,
    /// Deliveries first received by the end of the publishing phase.
    pub by_end: usize,
    /// Arrivals beyond the first, over all deliveries.
    pub duplicates: usize,
}

impl Receiver {
    pub fn start() -> BenchResult<Receiver> {
        let state = Arc::new(Receipts {
            seen: Mutex::default(),
            distinct: tokio::sync::watch::Sender::new(0),
            key: OnceLock::new(),
            bad_signatures: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(Arc::clone(&state));
        let addr = serve_loopback(app)?;
        Ok(Receiver { addr, state })
    }

    /// How many distinct deliveries arrived so far.
    pub fn distinct(&self) -> usize {
        *self.state.distinct.borrow()
    }

    /// Waits until `n` distinct deliveries arrived.
    pub async fn wait_for(&self, n: usize) -> BenchResult<()> {
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

    /// Verifies every request from now on with `key` (the subscription's secret); the first
    /// key set stays.
    pub fn verify_with(&self, key: SigningKey) {
        let _ = self.state.key.set(key);
    }

    /// Per `webhook-id`, how many times it arrived (with a valid signature, once a key is
    /// set).
    pub fn arrivals(&self) -> HashMap<String, usize> {
        self.state
            .lock()
            .iter()
            .map(|(id, (_, n))| (id.clone(), *n))
            .collect()
    }

    /// Requests whose signature did not verify.
    pub fn bad_signatures(&self) -> usize {
        self.state.bad_signatures.load(Ordering::Relaxed)
    }

    /// Checks that every delivery in `published` arrived and nothing else did, and
    /// measures.
    pub fn check(&self, published: &Published) -> BenchResult<Checked> {
        let sent_at = &published.sent_at;
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
        let mut by_end = 0;
        for (id, at) in sent_at {
            if let Some(&(first, count)) = seen.get(id) {
                latencies.push(first.saturating_duration_since(*at));
                last = Some(last.map_or(first, |l| l.max(first)));
                duplicates += count - 1;
                by_end += usize::from(first <= published.end);
            }
        }
        Ok(Checked {
            latencies,
            last: last.ok_or("no deliveries")?,
            by_end,
            duplicates,
        })
    }
}

async fn receive(
    State(state): State<Arc<Receipts>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let now = Instant::now();
    if let Some(key) = state.key.get() {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if verify(&[key], header, &body, unix).is_err() {
            state.bad_signatures.fetch_add(1, Ordering::Relaxed);
            return StatusCode::BAD_REQUEST;
        }
    }
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

/// The figures of a run's receipts: end to end (first publish → last delivery received),
/// the drain after publishing, publish → receipt latency, duplicates.
pub fn receipt_figures(m: &mut Metrics, receipts: &Checked, published: &Published) {
    let n = published.sent_at.len();
    let e2e = receipts
        .last
        .saturating_duration_since(published.start)
        .as_secs_f64();
    let drain = receipts
        .last
        .saturating_duration_since(published.end)
        .as_secs_f64();
    let left = n - receipts.by_end;
    #[allow(clippy::cast_precision_loss)]
    {
        m.insert("by_end".into(), receipts.by_end as f64);
        if left > 0 && drain > 0.0 {
            m.insert("drain_per_s".into(), left as f64 / drain);
        }
        m.insert("e2e_per_s".into(), n as f64 / e2e);
        m.insert("duplicates".into(), receipts.duplicates as f64);
    }
    let mut lat = receipts.latencies.clone();
    m.insert("e2e_secs".into(), e2e);
    m.insert("receipt_p50_ms".into(), percentile_us(&mut lat, 50) / 1e3);
    m.insert("receipt_p99_ms".into(), percentile_us(&mut lat, 99) / 1e3);
    if receipts.duplicates > 0 {
        eprintln!(
            "WARNING: {} duplicate deliveries (at-least-once delivery allows them)",
            receipts.duplicates
        );
    }
}

// ---- the publishing clients -------------------------------------------------------------

/// An HTTP client with its own connection pool, keep-alive, and no proxy (all traffic stays
/// on 127.0.0.1 whatever the environment says).
pub fn client() -> BenchResult<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .timeout(STALL)
        .build()?)
}

/// POSTs `body` as JSON with the token, checks the status, returns the answer's JSON.
pub async fn request(
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
pub fn event_payload(seq: usize) -> BenchResult<Value> {
    let head = format!("{{\"seq\":{seq},\"pad\":\"");
    let pad = PAYLOAD_LEN.saturating_sub(head.len() + 2);
    Ok(serde_json::from_str(&format!(
        "{head}{}\"}}",
        "x".repeat(pad)
    ))?)
}

/// The body of publish `seq`: [`EVENT`] with [`event_payload`].
pub fn event_body(seq: usize) -> BenchResult<Value> {
    Ok(serde_json::json!({ "event": EVENT, "payload": event_payload(seq)? }))
}

/// Subscribes `target_url` to [`PATTERN`] on the daemon at `base`; returns the
/// subscription's signing key.
pub async fn subscribe(base: &str, target_url: &str) -> BenchResult<SigningKey> {
    let sub = serde_json::json!({ "event": PATTERN, "target_url": target_url });
    let answer = request(&client()?, &format!("{base}/hooks/subscribe"), &sub, 201).await?;
    let secret = answer["secret"]
        .as_str()
        .ok_or_else(|| format!("a new subscription without its secret: {answer}"))?;
    Ok(SigningKey::from_whsec(secret)?)
}

/// The one delivery id of a 202 to a publish reaching one subscription.
pub fn single_delivery_id(answer: &Value) -> BenchResult<String> {
    match answer["delivery_ids"].as_array().map(Vec::as_slice) {
        Some([Value::String(id)]) => Ok(id.clone()),
        _ => Err(format!("one subscription, but the answer was {answer}").into()),
    }
}

/// What one kind of request looks like: the path, the body of request `seq`, the expected
/// status, and what the answer must hold (`Some(delivery id)` to wait for its receipt).
pub struct Requests {
    pub path: String,
    pub body: fn(usize) -> BenchResult<Value>,
    pub expect: u16,
    pub answer: fn(&Value) -> BenchResult<Option<String>>,
}

/// What the publishing phase of one run saw.
pub struct Published {
    /// Per-request latency as the client saw it.
    pub latencies: Vec<Duration>,
    /// When the request that created each delivery id was sent.
    pub sent_at: HashMap<String, Instant>,
    /// When the first request was sent.
    pub start: Instant,
    /// When the last answer arrived.
    pub end: Instant,
}

impl Published {
    /// The publishing phase's duration.
    pub fn secs(&self) -> f64 {
        self.end.saturating_duration_since(self.start).as_secs_f64()
    }

    /// Requests, seconds and request latency p50/p99.
    pub fn metrics(&self) -> Metrics {
        let mut lat = self.latencies.clone();
        #[allow(clippy::cast_precision_loss)]
        Metrics::from([
            ("ops".into(), self.latencies.len() as f64),
            ("secs".into(), self.secs()),
            ("p50_us".into(), percentile_us(&mut lat, 50)),
            ("p99_us".into(), percentile_us(&mut lat, 99)),
        ])
    }
}

/// Sends `n` requests from `clients` keep-alive clients, client `i` to daemon
/// `bases[i % bases.len()]`, each sending its next request once the previous one is
/// answered; every answer must be the expected success.
pub async fn publish_all(
    bases: &[String],
    clients: usize,
    n: usize,
    kind: &Requests,
) -> BenchResult<Published> {
    let next = Arc::new(AtomicUsize::new(0));
    // Connected before the clock starts, so that connection setup is not timed.
    let mut conns = Vec::with_capacity(clients);
    for i in 0..clients {
        let base = &bases[i % bases.len()];
        let c = client()?;
        let resp = c.get(format!("{base}/healthz")).send().await?;
        if !resp.status().is_success() {
            return Err(format!("GET {base}/healthz: {}", resp.status()).into());
        }
        resp.bytes().await?;
        conns.push((c, format!("{base}{}", kind.path)));
    }
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (c, url) in conns {
        let next = Arc::clone(&next);
        let (body, expect, answer) = (kind.body, kind.expect, kind.answer);
        tasks.spawn(async move {
            let mut lat = Vec::new();
            let mut sent = Vec::new();
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= n {
                    break;
                }
                let body = body(seq)?;
                let at = Instant::now();
                let got = request(&c, &url, &body, expect).await?;
                lat.push(at.elapsed());
                if let Some(id) = answer(&got)? {
                    sent.push((id, at));
                }
            }
            Ok::<_, BoxError>((lat, sent))
        });
    }
    let mut latencies = Vec::with_capacity(n);
    let mut sent_at = HashMap::with_capacity(n);
    let mut ids = 0;
    while let Some(r) = tasks.join_next().await {
        let (lat, sent) = r??;
        latencies.extend(lat);
        ids += sent.len();
        sent_at.extend(sent);
    }
    let end = Instant::now();
    if latencies.len() != n {
        return Err(format!("{} of {n} requests answered", latencies.len()).into());
    }
    if sent_at.len() != ids {
        return Err(format!("{ids} answers gave {} distinct delivery ids", sent_at.len()).into());
    }
    Ok(Published {
        latencies,
        sent_at,
        start,
        end,
    })
}
