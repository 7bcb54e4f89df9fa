//! The real `hookspool serve` on PostgreSQL: three daemons sharing one database (one
//! subscription made on one node and used by all, thousands of events published across them
//! while one node is SIGKILLed and restarted twice), a database server restarted under a
//! running daemon, and daemons starting at once on a fresh schema. Daemons listen on free
//! loopback ports; the receivers are real HTTP servers in this process, and verify every
//! request's Standard Webhooks signature. (A database that cannot be reached at start, and
//! the CLI's queue commands on a database: `postgres_cli.rs`.)
//!
//! The tests that need a server of their own (to stop and start it) use
//! `TestServer::start`; the others use the test process's shared server, each in a schema of
//! its own. Run with `-- --nocapture` to see what they report (duplicates, statuses).
#![allow(clippy::unwrap_used)] // tests may panic on failure

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::pg_schema as schema;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hookspool::{Phase, QueueId};
use hookspool_client::{Client, NewSubscription, Publish};
use hookspool_postgres::testing::TestServer;
use hookspool_webhooks::{DELIVERIES_QUEUE, Secret, SigningKey};

const TOKEN: &str = "pg-e2e-token-0123456789";

/// Short retries: a delivery that failed (the receiver, or the node, went away) comes back
/// within a second, and none runs out of attempts during a test.
const RETRIES: &str =
    "100ms,100ms,200ms,200ms,500ms,500ms,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s";

// ---- daemons -------------------------------------------------------------------------------

/// How a daemon is started (kept to start it again the same way).
#[derive(Clone)]
struct DaemonSpec {
    database_url: String,
    schema: Option<String>,
    node_id: String,
    /// Its data dir (unused on PostgreSQL, but `--data-dir` is always given) and log file.
    dir: PathBuf,
}

/// A `hookspool serve` process on PostgreSQL and where it listens.
struct Daemon {
    child: Child,
    url: String,
    addr: String,
    log: PathBuf,
}

impl Daemon {
    /// Starts `hookspool serve --database-url … --node-id …` on a free loopback port, with
    /// loopback deliveries allowed and [`RETRIES`]; its stderr (logs at `info`) is appended
    /// to `DIR.log`.
    fn start(spec: &DaemonSpec) -> Daemon {
        let log = spec.dir.with_extension("log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut args = vec![
            "--token",
            TOKEN,
            "--database-url",
            &spec.database_url,
            "--node-id",
            &spec.node_id,
            "--allow-network",
            "127.0.0.0/8",
            "--retry-schedule",
            RETRIES,
            // Looks for old snapshots every 500 ms, so that `/metrics` has the gauge soon.
            "--database-snapshot-warning",
            "1s",
        ];
        if let Some(schema) = &spec.schema {
            args.extend(["--database-schema", schema]);
        }
        let (child, addr) = support::start_with(
            &spec.dir,
            &args,
            [("HOOKSPOOL_LOG", "info")],
            log_file.into(),
        );
        Daemon {
            child,
            url: format!("http://{addr}"),
            addr,
            log,
        }
    }

    fn client(&self) -> Client {
        Client::new(&self.url, Some(Secret::new(TOKEN))).unwrap()
    }

    /// SIGKILL: no chance to give anything back.
    fn kill9(&mut self) {
        support::signal(&self.child, "-KILL");
        self.child.wait().unwrap();
    }

    /// SIGTERM, and the exit status must be 0.
    fn stop(mut self) {
        support::sigterm(&self.child);
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "exit {status:?}; log: {}",
            read(&self.log)
        );
    }

    /// Panics (with the log) unless the process is still running.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("the daemon exited ({status:?}); log: {}", read(&self.log));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failing test shows what the daemon logged (its dir is deleted afterwards).
        if std::thread::panicking() {
            let log = read(&self.log);
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            eprintln!("--- the last lines of {}:\n{tail}", self.log.display());
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Polls `check` every 20 ms until it returns `Some`, for at most `limit`.
async fn eventually<T>(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `check` every 20 ms until it holds, for at most `limit`; whether it did (the
/// caller then asserts with the details).
async fn within(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One raw HTTP/1.1 request to `addr` (with the API token): the status and body of the
/// answer, or `None` if no answer came.
async fn raw_http(addr: &str, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n\
             {body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        let text = String::from_utf8_lossy(&answer).into_owned();
        let status = text.split(' ').nth(1)?.parse().ok()?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_mins(1), exchange)
        .await
        .ok()
        .flatten()
}

// ---- the receiver --------------------------------------------------------------------------

/// A receiver that verifies each request's Standard Webhooks signature with the
/// subscription's secret and records its `webhook-id`; answers 204 (401 to a bad signature).
#[derive(Clone, Default)]
struct Receiver {
    key: Arc<OnceLock<SigningKey>>,
    seen: Arc<Mutex<HashMap<String, usize>>>,
    verified: Arc<AtomicUsize>,
    /// Every request whose signature did not verify, with why.
    bad: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    /// Serves on a fresh loopback port; returns the hook's URL.
    async fn start(&self) -> String {
        async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
            let id = headers
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let Some(key) = r.key.get() else {
                r.bad.lock().unwrap().push(format!("{id}: no key yet"));
                return StatusCode::UNAUTHORIZED;
            };
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
            match hookspool_webhooks::verify(&[key], header, &body, now) {
                Ok(()) => {
                    r.verified.fetch_add(1, Ordering::Relaxed);
                    *r.seen.lock().unwrap().entry(id).or_default() += 1;
                    StatusCode::NO_CONTENT
                }
                Err(e) => {
                    r.bad.lock().unwrap().push(format!("{id}: {e}"));
                    StatusCode::UNAUTHORIZED
                }
            }
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/hook", post(hook))
            .with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    /// Verifies with this secret from now on.
    fn set_secret(&self, secret: &str) {
        let key = SigningKey::from_whsec(secret).unwrap();
        assert!(self.key.set(key).is_ok(), "the key is set once");
    }

    fn seen(&self) -> HashMap<String, usize> {
        self.seen.lock().unwrap().clone()
    }

    fn has_all(&self, ids: &BTreeSet<String>) -> bool {
        let seen = self.seen.lock().unwrap();
        ids.iter().all(|id| seen.contains_key(id))
    }

    fn bad(&self) -> Vec<String> {
        self.bad.lock().unwrap().clone()
    }
}

/// Subscribes `url` to `order.*` through `client`; returns the subscription's secret.
async fn subscribe(client: &Client, url: &str) -> String {
    let sub = client
        .subscribe(&NewSubscription::new("order.*", url))
        .await
        .unwrap();
    let secret = sub.secret.expect("a new subscription shows its secret");
    let secret = secret.expose().to_owned();
    assert!(secret.starts_with("whsec_"), "a Standard Webhooks secret");
    secret
}

/// Publishes probes on `client` until one reaches a subscription (for at most `limit`);
/// returns its delivery id and how long that took.
async fn probe(client: &Client, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    let id = eventually("the node to use the new subscription", limit, async || {
        let p = client
            .publish(&Publish::new("order.probe", &serde_json::json!({})))
            .await
            .unwrap();
        p.delivery_ids.first().map(|id| id.as_str().to_owned())
    })
    .await;
    (id, started.elapsed())
}

// ---- 1. three daemons ----------------------------------------------------------------------

const EVENTS: usize = 5_000;
const PUBLISHERS: usize = 6;
const NODES: usize = 3;

/// What the publishing tasks share: each node's current client (replaced when it restarts).
struct Cluster {
    clients: Vec<RwLock<Client>>,
    next: AtomicUsize,
    accepted: AtomicUsize,
}

/// Publishes events `n` (taken from the shared counter) until [`EVENTS`] are taken, event
/// `n` on node `n % 3`; a publish that fails (its node killed) is tried again on the next
/// node. Returns the accepted delivery ids with their node, and the failures.
async fn publisher(cluster: Arc<Cluster>) -> (Vec<(String, usize)>, Vec<String>) {
    let mut accepted = Vec::new();
    let mut failures = Vec::new();
    loop {
        let n = cluster.next.fetch_add(1, Ordering::Relaxed);
        if n >= EVENTS {
            break;
        }
        let mut node = n % NODES;
        let mut tries = 0;
        loop {
            let client = cluster.clients[node].read().unwrap().clone();
            let event = Publish::new("order.paid", &serde_json::json!({ "n": n }));
            match client.publish(&event).await {
                Ok(p) => {
                    assert_eq!(p.delivery_ids.len(), 1, "event {n}: {p:?}");
                    accepted.push((p.delivery_ids[0].as_str().to_owned(), node));
                    cluster.accepted.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    failures.push(format!("event {n} on node {}: {e}", node + 1));
                    tries += 1;
                    assert!(tries < 200, "event {n} cannot be published: {failures:?}");
                    node = (node + 1) % NODES;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    (accepted, failures)
}

/// Three daemons on one database: a subscription made on node 1 is used by nodes 2 and 3
/// at once; 5,000 events published across the three nodes are all delivered, signed with
/// the subscription's secret, while node 3 is SIGKILLed and restarted (same node id) twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)] // one story, step by step: splitting it would hide the order
async fn three_daemons_share_one_database() {
    let server = TestServer::shared();
    let schema = schema("three");
    let dir = tempfile::tempdir().unwrap();
    let specs: Vec<DaemonSpec> = (1..=NODES)
        .map(|i| DaemonSpec {
            database_url: server.url().to_owned(),
            schema: Some(schema.clone()),
            node_id: format!("node-{i}"),
            dir: dir.path().join(format!("node-{i}")),
        })
        .collect();
    let mut daemons: Vec<Daemon> = specs.iter().map(Daemon::start).collect();

    let receiver = Receiver::default();
    let url = receiver.start().await;
    let secret = subscribe(&daemons[0].client(), &url).await;
    receiver.set_secret(&secret);

    // Nodes 2 and 3 learn of the subscription by node 1's notice (or their 1 s reload).
    let mut probes = BTreeSet::new();
    for (i, daemon) in daemons.iter().enumerate().skip(1) {
        let (id, took) = probe(&daemon.client(), Duration::from_secs(3)).await;
        println!("node {} used the subscription after {took:?}", i + 1);
        probes.insert(id);
    }
    eventually(
        "the probes at the receiver",
        Duration::from_secs(10),
        async || receiver.has_all(&probes).then_some(()),
    )
    .await;

    let cluster = Arc::new(Cluster {
        clients: daemons.iter().map(|d| RwLock::new(d.client())).collect(),
        next: AtomicUsize::new(0),
        accepted: AtomicUsize::new(0),
    });
    let started = Instant::now();
    let tasks: Vec<_> = (0..PUBLISHERS)
        .map(|_| tokio::spawn(publisher(Arc::clone(&cluster))))
        .collect();

    // Node 3 is killed with SIGKILL and started again under its node id, twice.
    let victim = NODES - 1;
    let mut kills = Vec::new();
    for at in [EVENTS * 3 / 10, EVENTS * 6 / 10] {
        eventually(
            "publishing to progress",
            Duration::from_mins(2),
            async || (cluster.accepted.load(Ordering::Relaxed) >= at).then_some(()),
        )
        .await;
        kills.push(cluster.accepted.load(Ordering::Relaxed));
        // The victim is the last node: take it out, kill it, start it again in its place.
        let mut old = daemons.pop().unwrap();
        let spec = specs[victim].clone();
        let restarted = tokio::task::spawn_blocking(move || {
            old.kill9();
            drop(old);
            Daemon::start(&spec)
        })
        .await
        .unwrap();
        *cluster.clients[victim].write().unwrap() = restarted.client();
        daemons.push(restarted);
    }

    let mut accepted: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for task in tasks {
        let (ids, failed) = task.await.unwrap();
        accepted.extend(ids);
        failures.extend(failed);
    }
    let published_in = started.elapsed();
    assert_eq!(
        accepted.len(),
        EVENTS,
        "every event accepted once, by some node"
    );
    let ids: BTreeSet<String> = accepted.keys().cloned().collect();
    within(Duration::from_mins(1), || receiver.has_all(&ids)).await;
    let delivered_in = started.elapsed();
    let seen = receiver.seen();
    let missing: Vec<&String> = ids.iter().filter(|id| !seen.contains_key(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} accepted events never reached the receiver: {missing:?}",
        missing.len()
    );

    // Every delivery ends done in the database: none dead, none left leased.
    let deliveries = QueueId::new(DELIVERIES_QUEUE).unwrap();
    let client = daemons[0].client();
    let mut counts = client.counts(&deliveries).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while counts.get(&Phase::DONE) != counts.total() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        counts = client.counts(&deliveries).await.unwrap();
    }
    assert_eq!(
        counts.get(&Phase::DONE),
        counts.total(),
        "every delivery ends done: {counts:?}"
    );
    let seen = receiver.seen();
    let duplicated: BTreeMap<&String, usize> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, n)| (id, *n))
        .collect();
    let extra_requests: usize = duplicated.values().map(|n| n - 1).sum();
    let unknown: Vec<&String> = seen
        .keys()
        .filter(|id| !ids.contains(*id) && !probes.contains(*id))
        .collect();
    let by_node = accepted.values().fold([0usize; NODES], |mut acc, node| {
        acc[*node] += 1;
        acc
    });
    println!(
        "three daemons: {EVENTS} events accepted (by node: {by_node:?}) in {published_in:?}, \
         all received after {delivered_in:?}; node 3 killed at {kills:?} accepted; \
         {} publish failures; {} deliveries received more than once ({extra_requests} extra \
         requests); {} received deliveries whose publish got no answer; {} signatures \
         verified; deliveries queue {counts:?}",
        failures.len(),
        duplicated.len(),
        unknown.len(),
        receiver.verified.load(Ordering::Relaxed),
    );
    if !duplicated.is_empty() {
        println!("duplicated: {duplicated:?}");
    }
    if !failures.is_empty() {
        println!(
            "publish failures (first 10): {:?}",
            &failures[..failures.len().min(10)]
        );
    }
    assert_eq!(
        receiver.bad(),
        Vec::<String>::new(),
        "every signature verifies"
    );
    assert_eq!(
        receiver.verified.load(Ordering::Relaxed),
        seen.values().sum::<usize>(),
        "every request received was verified"
    );
    assert_eq!(
        counts.total() as usize,
        seen.len(),
        "every delivery in the database was received: {counts:?}"
    );
    for mut daemon in daemons {
        daemon.assert_running();
        daemon.stop();
    }
}

// ---- 2. the database restarts --------------------------------------------------------------

/// When a publish was made, relative to the outage (`during`: from the call that stops the
/// server to the return of the one that starts it again, so it includes a few publishes
/// answered while the server was still shutting down or already back).
const BEFORE: u8 = 0;
const DURING: u8 = 1;
const AFTER: u8 = 2;
const PHASES: [&str; 3] = ["before", "during", "after"];

/// One publish's answer: the delivery id, or the error status and code (`None`: no answer).
type Answer = Result<String, (Option<u16>, String)>;

/// Publishes one event after another until `stop`, recording each answer with the phase it
/// was made in.
async fn publish_until(
    client: Client,
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<(u8, Answer)>>>,
) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let at = phase.load(Ordering::Relaxed);
        let event = Publish::new("order.paid", &serde_json::json!({ "n": n }));
        let answer = match client.publish(&event).await {
            Ok(p) => {
                assert_eq!(p.delivery_ids.len(), 1, "{p:?}");
                Ok(p.delivery_ids[0].as_str().to_owned())
            }
            Err(hookspool_client::Error::Remote { status, code, .. }) => Err((Some(status), code)),
            Err(e) => Err((None, e.to_string())),
        };
        log.lock().unwrap().push((at, answer));
        n += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How many answers of `phase` the log holds that are accepted (`true`) or failed.
fn answers(log: &Mutex<Vec<(u8, Answer)>>, phase: u8, ok: bool) -> usize {
    log.lock()
        .unwrap()
        .iter()
        .filter(|(p, a)| *p == phase && a.is_ok() == ok)
        .count()
}

/// A daemon publishing all the time while its PostgreSQL server stops and starts again on
/// the same port: while it is down, publishing answers 503 with the API's JSON error and
/// `/readyz` fails; once it is back, the daemon recovers by itself, and every event that was
/// accepted (before, during, after) is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)] // one story, step by step: splitting it would hide the order
async fn database_restart_loses_nothing() {
    let server = Arc::new(TestServer::start());
    let dir = tempfile::tempdir().unwrap();
    let spec = DaemonSpec {
        database_url: server.url().to_owned(),
        schema: None,
        node_id: "solo".to_owned(),
        dir: dir.path().join("solo"),
    };
    let mut daemon = Daemon::start(&spec);
    let client = daemon.client();
    let receiver = Receiver::default();
    let url = receiver.start().await;
    let secret = subscribe(&client, &url).await;
    receiver.set_secret(&secret);
    assert_eq!(
        raw_http(&daemon.addr, "GET", "/readyz", "").await,
        Some((200, "ready".to_owned()))
    );
    // The backend's own gauges: its pool, and (looked for every 500 ms) the oldest snapshot.
    let metrics = eventually(
        "the backend's gauges in /metrics",
        Duration::from_secs(10),
        async || {
            let (status, body) = raw_http(&daemon.addr, "GET", "/metrics", "").await?;
            (status == 200 && body.contains("\nhookspool_postgres_oldest_snapshot_seconds "))
                .then_some(body)
        },
    )
    .await;
    for line in [
        "# TYPE hookspool_postgres_connections gauge",
        "hookspool_postgres_connections{state=\"open\"} ",
        "hookspool_postgres_connections{state=\"idle\"} ",
        "hookspool_postgres_connections_max 16",
    ] {
        assert!(
            metrics.contains(line),
            "/metrics lacks {line:?}:\n{metrics}"
        );
    }

    let phase = Arc::new(AtomicU8::new(BEFORE));
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    let publishing = tokio::spawn(publish_until(
        client.clone(),
        Arc::clone(&phase),
        Arc::clone(&stop),
        Arc::clone(&log),
    ));
    eventually(
        "publishing before the outage",
        Duration::from_secs(30),
        async || (answers(&log, BEFORE, true) >= 50).then_some(()),
    )
    .await;

    phase.store(DURING, Ordering::Relaxed);
    let s = Arc::clone(&server);
    tokio::task::spawn_blocking(move || s.stop()).await.unwrap();

    // The server is down: not ready, and publishing answers 503 with a JSON error.
    let ready = raw_http(&daemon.addr, "GET", "/readyz", "").await;
    let published = raw_http(
        &daemon.addr,
        "POST",
        "/events",
        r#"{"event":"order.paid","payload":{"down":true}}"#,
    )
    .await;
    eventually(
        "a publish to fail during the outage",
        Duration::from_secs(30),
        async || (answers(&log, DURING, false) >= 1).then_some(()),
    )
    .await;
    let s = Arc::clone(&server);
    tokio::task::spawn_blocking(move || s.restart_stopped())
        .await
        .unwrap();
    phase.store(AFTER, Ordering::Relaxed);

    let (ready_status, ready_body) = ready.expect("/readyz answers while the database is down");
    assert_ne!(
        ready_status, 200,
        "/readyz while the database is down: {ready_body}"
    );
    let (status, body) = published.expect("publishing answers while the database is down");
    assert_eq!(status, 503, "publish while the database is down: {body}");
    let error: serde_json::Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("the 503 has a JSON body ({e}): {body:?}"));
    assert_eq!(error["error"], "unavailable", "{error}");
    assert!(error["message"].is_string(), "{error}");
    println!(
        "while the database was down: /readyz {ready_status} {ready_body:?}, publish {status} \
         {error}"
    );

    // Back by itself: ready again, publishing accepted again.
    eventually(
        "/readyz after the restart",
        Duration::from_secs(30),
        async || (raw_http(&daemon.addr, "GET", "/readyz", "").await?.0 == 200).then_some(()),
    )
    .await;
    eventually(
        "publishing after the outage",
        Duration::from_secs(30),
        async || (answers(&log, AFTER, true) >= 50).then_some(()),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    publishing.await.unwrap();

    let log = log.lock().unwrap().clone();
    let mut statuses: BTreeMap<(&str, String), usize> = BTreeMap::new();
    for (p, answer) in &log {
        let what = match answer {
            Ok(_) => "2xx".to_owned(),
            Err((Some(status), code)) => format!("{status} {code}"),
            Err((None, reason)) => format!("no answer: {reason}"),
        };
        *statuses.entry((PHASES[*p as usize], what)).or_default() += 1;
    }
    println!("publish answers by phase: {statuses:?}");
    let wrong: Vec<_> = log
        .iter()
        .filter(|(_, a)| !matches!(a, Ok(_) | Err((Some(503), _))))
        .collect();
    assert!(
        wrong.is_empty(),
        "answers other than 2xx and 503: {wrong:?}"
    );
    let accepted: BTreeSet<String> = log.iter().filter_map(|(_, a)| a.clone().ok()).collect();
    within(Duration::from_mins(1), || receiver.has_all(&accepted)).await;
    let seen = receiver.seen();
    let missing: Vec<&String> = accepted
        .iter()
        .filter(|id| !seen.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} accepted events never reached the receiver: {missing:?}",
        missing.len()
    );
    let duplicates = seen.values().filter(|n| **n > 1).count();
    println!(
        "{} events accepted, all delivered ({} received more than once, {} received in all)",
        accepted.len(),
        duplicates,
        seen.len()
    );
    assert_eq!(
        receiver.bad(),
        Vec::<String>::new(),
        "every signature verifies"
    );
    daemon.assert_running();
    daemon.stop();
}

/// Daemons started at the same moment on a schema nobody used yet all come up: the
/// migration runs once under its lock, and the webhook queues are created by one of them
/// and read by the others.
#[test]
fn daemons_starting_at_once_on_a_fresh_schema_all_come_up() {
    let server = TestServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    for round in 0..3 {
        let schema = schema(&format!("race{round}"));
        let starts: Vec<_> = (0..3)
            .map(|n| {
                let spec = DaemonSpec {
                    database_url: server.url().to_owned(),
                    schema: Some(schema.clone()),
                    node_id: format!("race-{round}-{n}"),
                    dir: tmp.path().join(format!("race-{round}-{n}")),
                };
                std::thread::spawn(move || Daemon::start(&spec))
            })
            .collect();
        let daemons: Vec<Daemon> = starts.into_iter().map(|t| t.join().unwrap()).collect();
        for d in daemons {
            d.stop();
        }
    }
}
