//! Webhook delivery survives kill -9: a real child process (this test binary, re-executed)
//! fires events and delivers them to a real axum receiver on 127.0.0.1 while the parent kills
//! it with SIGKILL at random moments, round after round, on one store (sled, then the journal,
//! whose claims are written without a sync of their own). The parent then
//! checks, from the receiver's log and the store itself, that every fired event arrived, that
//! every delivery the receiver saw is still in the store after each kill (nothing is sent
//! before it is durable), that nothing recorded as delivered was sent again after a restart,
//! and that attempt numbers continued across restarts instead of starting again from 1.
//!
//! `HOOKSPOOL_DCRASH_SEED=<seed printed by the test>` replays a failing run's choice of kill
//! moments (the timing of the processes around them cannot be replayed).

// Tests may unwrap (house rule): a failed unwrap is a failed test, with its error printed.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hookspool::{Backend, Phase, QueueId, Store};
use hookspool_journal::JournalBackend;
use hookspool_sled::SledBackend;
use hookspool_webhooks::{
    Attempt, DELIVERIES_QUEUE, DeliveryConfig, DeliveryId, HEADER_WEBHOOK_ID,
    HEADER_WEBHOOK_SIGNATURE, Hooks, HttpConfig, NetworkPolicy, RetrySchedule, SubscribeOptions,
};

/// Set in the child: the directory holding the store and the journal. Its absence makes the
/// child test a no-op, so a plain `cargo test` runs only the parent.
const ENV_DIR: &str = "HOOKSPOOL_DCRASH_DIR";
/// Set in the child: the receiver's URL.
const ENV_URL: &str = "HOOKSPOOL_DCRASH_URL";
/// Set in the child: how many events to fire in all (across restarts).
const ENV_EVENTS: &str = "HOOKSPOOL_DCRASH_EVENTS";
/// Optional: the seed of the kill moments, to replay a failing run.
const ENV_SEED: &str = "HOOKSPOOL_DCRASH_SEED";
/// Set in the child: the backend, `sled` or `journal`.
const ENV_BACKEND: &str = "HOOKSPOOL_DCRASH_BACKEND";

/// The backends the test runs on.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Sled,
    Journal,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Sled => "sled",
            Kind::Journal => "journal",
        }
    }

    fn from_env() -> Self {
        match std::env::var(ENV_BACKEND).unwrap().as_str() {
            "sled" => Kind::Sled,
            "journal" => Kind::Journal,
            other => panic!("{ENV_BACKEND}={other}: not a backend of this test"),
        }
    }
}

/// Events fired over the whole test.
const EVENTS: usize = 300;
/// Events fired between two journal syncs.
const FIRE_BATCH: usize = 5;
/// Pause between fire batches, so that firing overlaps several kill rounds.
const FIRE_PAUSE: Duration = Duration::from_millis(5);
/// Child processes in all; every one but the last is killed.
const ROUNDS: usize = 8;
/// Every third round kills at a random time after the spawn, up to this many milliseconds,
/// so that some kills land in start-up and recovery; the others wait for requests first.
const MAX_KILL_AFTER_SPAWN_MS: u64 = 250;
/// A killed round waits for between 1 and this many new requests before the kill.
const MAX_REQUESTS_BEFORE_KILL: u64 = 40;
/// ... and then up to this many milliseconds more.
const MAX_KILL_JITTER_MS: u64 = 25;
/// Ids whose hash is divisible by this get 503 answers first ...
const FAILING_EVERY: u64 = 4;
/// ... to their first this many requests (kept below the schedule's 6 attempts).
const FAILURES_PER_ID: usize = 2;
/// Ids whose hash is divisible by this are answered after a short delay.
const SLOW_EVERY: u64 = 3;
/// The delay of slow answers.
const SLOW_ANSWER: Duration = Duration::from_millis(4);
/// Failure detection only: a healthy run takes a few seconds.
const DEADLINE: Duration = Duration::from_mins(2);

const EVENT: &str = "order.created";

/// The child test's name as the test harness knows it (module path without the crate).
fn child_test_name() -> String {
    let path = module_path!();
    let module = path.split_once("::").map_or(path, |(_, rest)| rest);
    format!("{module}::kill_9_child")
}

// ---- the receiver ---------------------------------------------------------------------------

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
struct Received {
    /// Receive order, from 0.
    seq: usize,
    /// The `webhook-id` header.
    id: String,
    /// What it answered.
    status: u16,
    /// Whether a Standard Webhooks signature was present.
    signed: bool,
}

#[derive(Default)]
struct Receiver {
    log: Mutex<Vec<Received>>,
}

impl Receiver {
    fn log(&self) -> std::sync::MutexGuard<'_, Vec<Received>> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn len(&self) -> usize {
        self.log().len()
    }
}

/// FNV-1a: a stable hash, so which ids fail or are slow is decided by the id alone.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

async fn hook(State(rx): State<Arc<Receiver>>, headers: HeaderMap, _body: Bytes) -> StatusCode {
    let id = headers
        .get(HEADER_WEBHOOK_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let signed = headers
        .get(HEADER_WEBHOOK_SIGNATURE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("v1,"));
    let h = fnv(&id);
    let status = {
        let mut log = rx.log();
        let earlier = log.iter().filter(|r| r.id == id).count();
        let status = if h.is_multiple_of(FAILING_EVERY) && earlier < FAILURES_PER_ID {
            503
        } else {
            200
        };
        let seq = log.len();
        log.push(Received {
            seq,
            id,
            status,
            signed,
        });
        status
    };
    if h.is_multiple_of(SLOW_EVERY) {
        tokio::time::sleep(SLOW_ANSWER).await;
    }
    StatusCode::from_u16(status).unwrap()
}

async fn start_receiver() -> (Arc<Receiver>, SocketAddr) {
    let rx = Arc::new(Receiver::default());
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(Arc::clone(&rx));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (rx, addr)
}

// ---- the child ------------------------------------------------------------------------------

fn delivery_config() -> DeliveryConfig {
    DeliveryConfig {
        schedule: RetrySchedule {
            delays: vec![Duration::from_millis(50); 5],
            jitter: 0.0,
            ..RetrySchedule::standard()
        },
        poll_interval: Duration::from_millis(20),
        http: HttpConfig {
            policy: NetworkPolicy::new().allow_loopback(),
            ..HttpConfig::default()
        },
        ..DeliveryConfig::default()
    }
}

/// Reads the journal of fired delivery ids, cutting off a torn last line (a kill during the
/// append) so that the next append starts on a fresh line.
fn read_journal(path: &Path, repair: bool) -> Vec<DeliveryId> {
    let Ok(text) = fs::read_to_string(path) else {
        return Vec::new();
    };
    let complete = text.rfind('\n').map_or(0, |i| i + 1);
    if repair && complete < text.len() {
        let file = OpenOptions::new().write(true).open(path).unwrap();
        file.set_len(complete as u64).unwrap();
        file.sync_all().unwrap();
    }
    text[..complete]
        .lines()
        .map(|l| DeliveryId::parse(l).unwrap())
        .collect()
}

/// The child: subscribe (idempotent), fire what the journal says is still to fire, deliver,
/// and exit once every delivery is done. Killed at a random moment in every round but the last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_child() {
    let Some(dir) = std::env::var_os(ENV_DIR).map(PathBuf::from) else {
        return;
    };
    let store_dir = dir.join("store");
    match Kind::from_env() {
        Kind::Sled => child(&dir, Store::new(SledBackend::open(store_dir).unwrap())).await,
        Kind::Journal => child(&dir, Store::new(JournalBackend::open(store_dir).unwrap())).await,
    }
}

/// The child's work on its store: fire the events not yet journaled, deliver until every one
/// is done, then stop gracefully.
async fn child<B: Backend>(dir: &Path, store: Store<B>) {
    let url = std::env::var(ENV_URL).unwrap();
    let events: usize = std::env::var(ENV_EVENTS).unwrap().parse().unwrap();
    let hooks = Hooks::open(store.clone()).await.unwrap();
    hooks
        .subscribe(EVENT, &url, SubscribeOptions::default())
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let deliverer = hooks.deliverer(delivery_config()).unwrap();
    let running = tokio::spawn(deliverer.run(async {
        let _ = stopped.await;
    }));

    let journal_path = dir.join("journal");
    let mut fired = read_journal(&journal_path, true);
    let mut journal = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&journal_path)
        .unwrap();
    while fired.len() < events {
        let upto = (fired.len() + FIRE_BATCH).min(events);
        let mut lines = String::new();
        let mut batch = Vec::new();
        for seq in fired.len()..upto {
            let ids = hooks
                .fire(EVENT, format!("{{\"seq\":{seq}}}"))
                .await
                .unwrap();
            assert_eq!(ids.len(), 1, "one subscription, one delivery per event");
            for id in ids {
                lines.push_str(id.as_str());
                lines.push('\n');
                batch.push(id);
            }
        }
        // Journaled only after `fire` returned: a journaled id is one the application was
        // told is stored.
        journal.write_all(lines.as_bytes()).unwrap();
        journal.sync_data().unwrap();
        fired.extend(batch);
        tokio::time::sleep(FIRE_PAUSE).await;
    }

    // Wait until every journaled delivery, and every delivery at all (an event fired just
    // before a kill may be stored but not journaled), is done.
    let q = QueueId::new(DELIVERIES_QUEUE).unwrap();
    let mut next = 0;
    loop {
        while next < fired.len() {
            let d = hooks.delivery(&fired[next]).await.unwrap().unwrap();
            assert!(
                d.state == Phase::DONE || d.state == Phase::PENDING || d.state == Phase::IN_FLIGHT,
                "{} ended as {}",
                d.id,
                d.state
            );
            if d.state != Phase::DONE {
                break;
            }
            next += 1;
        }
        if next == fired.len()
            && store.count(&q).await.unwrap() == store.count_phase(&q, &Phase::DONE).await.unwrap()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
}

// ---- the parent -----------------------------------------------------------------------------

/// xorshift64*: the kill moments, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn from_env() -> Self {
        let seed = std::env::var(ENV_SEED).ok().map_or_else(
            || {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos();
                (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32)
            },
            |s| s.parse().unwrap(),
        );
        eprintln!("delivery_crash: seed {seed} (set {ENV_SEED} to replay)");
        Rng(seed | 1)
    }

    /// Uniform in `lo..=hi` (a slight modulo bias does not matter here).
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        lo + self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % (hi - lo + 1)
    }
}

fn spawn_child(kind: Kind, dir: &Path, url: &str, round: usize) -> Child {
    let log = File::create(dir.join(format!("child-{round}.log"))).unwrap();
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &child_test_name(),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV_DIR, dir)
        .env(ENV_URL, url)
        .env(ENV_EVENTS, EVENTS.to_string())
        .env(ENV_BACKEND, kind.name())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn child_failed(dir: &Path, round: usize, status: ExitStatus) -> ! {
    let log = fs::read_to_string(dir.join(format!("child-{round}.log"))).unwrap_or_default();
    panic!("child of round {round} failed ({status}); its output:\n{log}");
}

/// What the parent reads from the store between two children.
#[derive(Debug, Default)]
struct Snapshot {
    /// Ids recorded as done.
    done: BTreeSet<String>,
    /// Deliveries waiting for a retry after at least one recorded failed attempt, with
    /// their attempt logs.
    retrying: BTreeMap<String, Vec<Attempt>>,
    /// Every delivery's state and attempts, by id.
    all: BTreeMap<String, (Phase, Vec<Attempt>)>,
    /// Deliveries in the store, and how many of them are done.
    total: u64,
    total_done: u64,
}

/// Opens the store the dead child left (its lock goes with the process, but allow a
/// moment), reads the state of every known delivery, and closes the store again.
async fn inspect(kind: Kind, store_dir: &Path, known: &BTreeSet<String>) -> Snapshot {
    match kind {
        Kind::Sled => read(reopen(|| SledBackend::open(store_dir)).await, known).await,
        Kind::Journal => read(reopen(|| JournalBackend::open(store_dir)).await, known).await,
    }
}

async fn reopen<B: Backend>(open: impl Fn() -> hookspool::Result<B>) -> Store<B> {
    let started = Instant::now();
    loop {
        match open() {
            Ok(b) => break Store::new(b),
            Err(hookspool::Error::Locked { .. }) if started.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("reopening the store after a kill: {e}"),
        }
    }
}

async fn read<B: Backend>(store: Store<B>, known: &BTreeSet<String>) -> Snapshot {
    let hooks = Hooks::open(store.clone()).await.unwrap();
    let mut snap = Snapshot::default();
    for id in known {
        let d = hooks
            .delivery(&DeliveryId::parse(id).unwrap())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{id} was fired or received but is not in the store"));
        if d.state == Phase::DONE {
            snap.done.insert(id.clone());
        } else if d.state == Phase::PENDING && !d.attempts.is_empty() {
            snap.retrying.insert(id.clone(), d.attempts.clone());
        }
        snap.all.insert(id.clone(), (d.state, d.attempts));
    }
    let q = QueueId::new(DELIVERIES_QUEUE).unwrap();
    snap.total = store.count(&q).await.unwrap();
    snap.total_done = store.count_phase(&q, &Phase::DONE).await.unwrap();
    // Dropping the last handle closes the store and releases the lock for the next child.
    drop(hooks);
    drop(store);
    snap
}

/// Every id the test knows of: journaled by a child, or seen by the receiver.
fn known_ids(dir: &Path, rx: &Receiver) -> BTreeSet<String> {
    let mut known: BTreeSet<String> = read_journal(&dir.join("journal"), false)
        .iter()
        .map(|id| id.as_str().to_owned())
        .collect();
    known.extend(rx.log().iter().map(|r| r.id.clone()));
    known
}

/// A kill round: waits for some new requests plus a little (or, every third round, a random
/// time from the spawn), then SIGKILLs the child. Returns whether the child was killed (it
/// may have finished everything first).
async fn kill_at_random(
    child: &mut Child,
    rx: &Receiver,
    rng: &mut Rng,
    dir: &Path,
    round: usize,
) -> bool {
    let (wanted, jitter) = if round.is_multiple_of(3) {
        (0, rng.range(0, MAX_KILL_AFTER_SPAWN_MS))
    } else {
        (
            rx.len() as u64 + rng.range(1, MAX_REQUESTS_BEFORE_KILL),
            rng.range(0, MAX_KILL_JITTER_MS),
        )
    };
    let jitter = Duration::from_millis(jitter);
    let started = Instant::now();
    while (rx.len() as u64) < wanted {
        if let Some(status) = child.try_wait().unwrap() {
            if !status.success() {
                child_failed(dir, round, status);
            }
            return false;
        }
        assert!(started.elapsed() < DEADLINE, "round {round}: no progress");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(jitter).await;
    if let Some(status) = child.try_wait().unwrap() {
        if !status.success() {
            child_failed(dir, round, status);
        }
        return false;
    }
    // `Child::kill` is SIGKILL on Unix: no destructor, no flush, no graceful stop.
    child.kill().unwrap();
    child.wait().unwrap();
    true
}

/// The last round: the child runs until every delivery is done and exits by itself.
async fn wait_for_exit(child: &mut Child, dir: &Path, round: usize) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            if !status.success() {
                child_failed(dir, round, status);
            }
            return;
        }
        if started.elapsed() > DEADLINE {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("round {round}: the child did not finish delivering within {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What the rounds left for the checks.
struct Run {
    /// Per restart: the receiver's log length when the new child started, and the ids
    /// recorded as done then.
    marks: Vec<(usize, BTreeSet<String>)>,
    /// Deliveries seen waiting for a retry after a recorded failure, with their logs then.
    retrying: BTreeMap<String, Vec<Attempt>>,
    /// Children killed (one may instead have finished everything before its kill).
    killed: usize,
}

/// Runs the children, killing all but the last; inspects the store before each restart.
async fn run_rounds(kind: Kind, dir: &Path, rx: &Receiver, url: &str, t0: Instant) -> Run {
    let mut rng = Rng::from_env();
    let mut run = Run {
        marks: Vec::new(),
        retrying: BTreeMap::new(),
        killed: 0,
    };
    for round in 1..=ROUNDS {
        if round > 1 {
            let snap = inspect(kind, &dir.join("store"), &known_ids(dir, rx)).await;
            // Keep the latest log seen: later snapshots extend earlier ones.
            run.retrying.extend(snap.retrying);
            run.marks.push((rx.len(), snap.done));
        }
        let mut child = spawn_child(kind, dir, url, round);
        if round < ROUNDS {
            if kill_at_random(&mut child, rx, &mut rng, dir, round).await {
                run.killed += 1;
            }
        } else {
            wait_for_exit(&mut child, dir, round).await;
        }
        eprintln!(
            "delivery_crash: round {round} over after {:?}, {} requests received so far",
            t0.elapsed(),
            rx.len()
        );
    }
    run
}

/// (a) Every journaled delivery reached the receiver and was answered 200 at least once;
/// every request was signed. Returns the 200 answers per id.
fn check_arrivals<'a>(
    log: &'a [Received],
    journaled: &BTreeSet<String>,
) -> HashMap<&'a str, usize> {
    let mut oks: HashMap<&str, usize> = HashMap::new();
    for r in log {
        assert!(
            r.signed,
            "request {} for {} carried no v1 signature",
            r.seq, r.id
        );
        if r.status == 200 {
            *oks.entry(r.id.as_str()).or_default() += 1;
        }
    }
    let lost: Vec<&String> = journaled
        .iter()
        .filter(|id| !oks.contains_key(id.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} journaled deliveries never arrived: {lost:?}",
        lost.len()
    );
    oks
}

/// (c) Nothing recorded as done before a child started was sent by it or any later one.
fn check_no_resend(log: &[Received], marks: &[(usize, BTreeSet<String>)]) {
    for (round, (mark, done)) in marks.iter().enumerate() {
        let resent: Vec<&Received> = log[*mark..]
            .iter()
            .filter(|r| done.contains(&r.id))
            .collect();
        assert!(
            resent.is_empty(),
            "round {}: {} requests for deliveries already recorded as done: {resent:?}",
            round + 2,
            resent.len()
        );
    }
}

/// (d) Attempt logs are numbered 1, 2, 3, … with no restart, end with the recorded 200 after
/// the receiver's 503s, never hold more attempts than requests were received, and a log seen
/// between two children is a prefix of the final one (the schedule went on from the persisted
/// attempt count).
fn check_attempts(log: &[Received], end: &Snapshot, retrying: &BTreeMap<String, Vec<Attempt>>) {
    let mut requests: HashMap<&str, usize> = HashMap::new();
    for r in log {
        *requests.entry(r.id.as_str()).or_default() += 1;
    }
    for (id, (_, attempts)) in &end.all {
        let numbers: Vec<u32> = attempts.iter().map(|a| a.number).collect();
        let expected: Vec<u32> = (1..=u32::try_from(attempts.len()).unwrap()).collect();
        assert_eq!(numbers, expected, "{id}: attempt numbers");
        let (final_attempt, failed) = attempts.split_last().unwrap();
        assert_eq!(
            final_attempt.status,
            Some(200),
            "{id}: last attempt {final_attempt:?}"
        );
        assert!(
            failed.iter().all(|a| a.status == Some(503)),
            "{id}: an earlier attempt was not the receiver's 503: {failed:?}"
        );
        let received = requests.get(id.as_str()).copied().unwrap_or(0);
        assert!(
            attempts.len() <= received,
            "{id}: {} attempts recorded but {received} requests received",
            attempts.len()
        );
    }
    for (id, before) in retrying {
        let after = &end.all[id].1;
        assert!(
            after.len() > before.len() && after[..before.len()] == before[..],
            "{id}: the attempt log restarted across a kill:\nbefore {before:?}\nafter  {after:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_resumes_after_kill_9_without_resending_what_was_done_on_sled() {
    kill_rounds(Kind::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_resumes_after_kill_9_without_resending_what_was_done_on_the_journal() {
    kill_rounds(Kind::Journal).await;
}

async fn kill_rounds(kind: Kind) {
    if std::env::var_os(ENV_DIR).is_some() {
        return; // in a child: only `kill_9_child` runs there
    }
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (rx, addr) = start_receiver().await;
    let run = run_rounds(kind, dir, &rx, &format!("http://{addr}/hook"), t0).await;

    let journaled: BTreeSet<String> = read_journal(&dir.join("journal"), false)
        .iter()
        .map(|id| id.as_str().to_owned())
        .collect();
    assert!(
        journaled.len() >= EVENTS,
        "only {} of {EVENTS} events journaled",
        journaled.len()
    );
    let known = known_ids(dir, &rx);
    let end = inspect(kind, &dir.join("store"), &known).await;
    let log = rx.log().clone();

    let oks = check_arrivals(&log, &journaled);
    // (b) Every delivery in the store is done, the unjournaled ones included.
    assert_eq!(
        end.total,
        end.total_done,
        "{} of {} deliveries are not done",
        end.total - end.total_done,
        end.total
    );
    let not_done: Vec<_> = known.iter().filter(|id| !end.done.contains(*id)).collect();
    assert!(not_done.is_empty(), "not done: {not_done:?}");
    check_no_resend(&log, &run.marks);
    check_attempts(&log, &end, &run.retrying);

    let duplicates: usize = oks.values().map(|n| n - 1).sum();
    let failed = log.iter().filter(|r| r.status == 503).count();
    eprintln!(
        "delivery_crash ({}): {ROUNDS} children ({} killed), {} deliveries ({} journaled), \
         {} requests ({failed} answered 503), {duplicates} duplicate 2xx after kills, \
         {} deliveries resumed mid-schedule, done before each restart: {:?}, in {:?}",
        kind.name(),
        run.killed,
        end.total,
        journaled.len(),
        log.len(),
        run.retrying.len(),
        run.marks.iter().map(|(_, d)| d.len()).collect::<Vec<_>>(),
        t0.elapsed()
    );
    // Guards against a run that exercised nothing (the checks above would pass vacuously).
    assert!(run.killed >= 1, "no child was killed mid-delivery");
    assert!(
        !run.retrying.is_empty(),
        "no delivery was caught by a kill between a recorded 503 and its retry"
    );
}
