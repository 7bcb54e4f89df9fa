//! Several real OS processes claim from one PostgreSQL queue at once: no item is leased to
//! two of them, and every item is settled (acknowledged) exactly once — also when one of
//! them is killed with SIGKILL while it holds leases.
//!
//! The parent test opens a `PostgresBackend` on a fresh schema of the test process's server
//! (`testing::TestServer::shared`), creates a queue and pushes [`ITEMS`] items. It then runs
//! this same test binary [`CHILDREN`] times as child processes (the test `child`, which does
//! nothing unless [`CHILD_ENV`] is set), passing them the server's URL, the schema, a
//! consumer name and a lease length through environment variables. Every child opens a
//! backend of its own, says `ready`, waits for the parent's go (a file the parent creates
//! once every child is ready, so that they really start claiming together) and then loops:
//! `claim` up to [`CLAIM_LIMIT`] items, write `claimed KEY` for each to its own output file
//! (before acking, so that the file holds every claim that was acted on), `ack_many` them
//! and write `acked KEY` (or `ack-failed KEY …`) for each result. It stops when a claim
//! returns nothing and `counts` shows nothing pending or in flight.
//!
//! The parent waits for the children (killing them all and failing after [`DEADLINE`]),
//! then checks, from the children's files and from the database itself:
//! - the pushed keys are exactly `1..=ITEMS`, and the claimed keys are exactly those;
//! - no key was claimed twice, by one process or by two;
//! - every ack returned `Ok`, so every key was acknowledged exactly once;
//! - `counts` shows `ITEMS` done and nothing pending or in flight, and every item is `done`,
//!   without a lease, with `attempts == 1` (the server's own count of claims).
//!
//! The second test kills one child (the victim) with SIGKILL while it holds a batch of
//! leases: the victim acks its first claim and, after its second, writes `holding` and
//! waits to be killed. Its leases are short ([`SHORT_LEASE`]) so that they run out and the
//! surviving children's claims take the items back; the survivors' own leases stay long
//! ([`LONG_LEASE`]), so that a slow machine cannot turn a slow ack into a second, legitimate
//! claim that would look like a double lease. The parent checks that the items the victim
//! held were claimed again (once) by a survivor and end `done` with `attempts == 2`, that
//! nothing the victim acknowledged was claimed again, that no survivor claimed a key twice
//! and every survivor ack was `Ok`, and that every key ended `done` exactly once.
//!
//! The parent prints (`println!`) how many items each process took; run with
//! `-- --nocapture` to see it.

#![cfg(unix)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use hookspool::{Item, Key, NewItem, Phase, PhaseCounts, QueueConfig, QueueId, Store};
use hookspool_postgres::{PostgresBackend, PostgresOptions, testing};

/// Set (to the child's output file) only in a child process.
const CHILD_ENV: &str = "HOOKSPOOL_PG_CHILD";
/// The server's connection string.
const URL_ENV: &str = "HOOKSPOOL_PG_CHILD_URL";
/// The schema that holds the queue.
const SCHEMA_ENV: &str = "HOOKSPOOL_PG_CHILD_SCHEMA";
/// The child's consumer name (the lease owner).
const OWNER_ENV: &str = "HOOKSPOOL_PG_CHILD_OWNER";
/// The child's lease length, in milliseconds.
const LEASE_ENV: &str = "HOOKSPOOL_PG_CHILD_LEASE_MS";
/// A file that appears when the parent lets the children start claiming.
const GO_ENV: &str = "HOOKSPOOL_PG_CHILD_GO";
/// Set only for the victim: after this many claims, it stops acking and waits to be killed.
const HOLD_ENV: &str = "HOOKSPOOL_PG_CHILD_HOLD_AT";
/// The name of the child test (`--exact` needs its full path: it is at the crate root).
const CHILD_TEST: &str = "child";

const QUEUE: &str = "processes";
const ITEMS: u64 = 3_000;
const PUSH_BATCH: usize = 500;
const CHILDREN: usize = 4;
const CLAIM_LIMIT: usize = 50;
/// The lease of every child that is not killed: far longer than any claim-to-ack gap.
const LONG_LEASE: Duration = Duration::from_mins(1);
/// The lease of the child that is killed: it must run out for the others to finish.
const SHORT_LEASE: Duration = Duration::from_secs(2);
/// How long the parent waits for all children before killing them and failing.
const DEADLINE: Duration = Duration::from_mins(2);
/// A child gives up (and fails, saying why) after this long, so that none outlives its test.
const CHILD_MAX_LIFETIME: Duration = Duration::from_secs(110);
/// How long a child waits between claims when there is nothing to claim yet.
const IDLE_PAUSE: Duration = Duration::from_millis(20);

// ---- the child -------------------------------------------------------------------------------

/// The child's side: claims and acks until the queue is drained. A no-op in a normal run.
#[test]
fn child() {
    let Some(out) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let config = ChildConfig {
        out: PathBuf::from(out),
        url: var(URL_ENV),
        schema: var(SCHEMA_ENV),
        owner: var(OWNER_ENV),
        lease: Duration::from_millis(var(LEASE_ENV).parse().expect("a lease in ms")),
        go: PathBuf::from(var(GO_ENV)),
        hold_at: std::env::var(HOLD_ENV)
            .ok()
            .map(|n| n.parse().expect("a claim number")),
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(child_work(&config));
}

struct ChildConfig {
    out: PathBuf,
    url: String,
    schema: String,
    owner: String,
    lease: Duration,
    go: PathBuf,
    hold_at: Option<u64>,
}

async fn child_work(config: &ChildConfig) {
    let started = Instant::now();
    let mut out = Output::create(&config.out);
    let options = PostgresOptions::new(config.url.as_str())
        .schema(config.schema.as_str())
        .pool_size(2);
    let backend = PostgresBackend::open(options)
        .await
        .expect("child opens the backend");
    let store = Store::new(backend);
    let queue = queue_id();
    out.record("ready\n");
    while !config.go.exists() {
        assert!(
            started.elapsed() < CHILD_MAX_LIFETIME,
            "the parent never said go"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    let mut claims = 0u64;
    loop {
        let items = store
            .claim(&queue, &config.owner, CLAIM_LIMIT, config.lease)
            .await
            .expect("claim");
        if items.is_empty() {
            let counts = store.counts(&queue).await.expect("counts");
            let open = counts.get(&Phase::PENDING) + counts.get(&Phase::IN_FLIGHT);
            if open == 0 {
                break;
            }
            assert!(
                started.elapsed() < CHILD_MAX_LIFETIME,
                "{} gave up after {CHILD_MAX_LIFETIME:?}: still {counts:?}",
                config.owner
            );
            tokio::time::sleep(IDLE_PAUSE).await;
            continue;
        }
        claims += 1;
        for item in &items {
            check_claimed(item, &config.owner);
        }
        let keys: Vec<Key> = items.iter().map(|i| i.key).collect();
        out.record(&lines(keys.iter().map(|k| format!("claimed {k}"))));

        if config.hold_at == Some(claims) {
            // The victim: keep these leases and wait for SIGKILL.
            out.record("holding\n");
            tokio::time::sleep(CHILD_MAX_LIFETIME.saturating_sub(started.elapsed())).await;
            panic!("{} was never killed", config.owner);
        }

        let results = store
            .ack_many(&queue, &keys, &config.owner)
            .await
            .expect("ack_many");
        assert_eq!(results.len(), keys.len(), "one ack result per key");
        out.record(&lines(keys.iter().zip(&results).map(|(k, r)| match r {
            Ok(()) => format!("acked {k}"),
            Err(e) => format!("ack-failed {k} {}", e.to_string().replace('\n', " ")),
        })));
    }
    out.record("finished\n");
}

/// What `claim` returned is leased to us, in flight.
fn check_claimed(item: &Item, owner: &str) {
    assert_eq!(item.phase, Phase::IN_FLIGHT, "claimed item {}", item.key);
    let lease_owner = item.lease.as_ref().map(|l| l.owner.as_str());
    assert_eq!(lease_owner, Some(owner), "claimed item {}", item.key);
}

fn lines(lines: impl Iterator<Item = String>) -> String {
    lines.map(|l| l + "\n").collect()
}

/// A child's output file: every record is one `write` straight to the file (no buffer), so
/// whatever was recorded before a SIGKILL is there for the parent.
struct Output(File);

impl Output {
    fn create(path: &Path) -> Self {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open the child's output file");
        Output(file)
    }

    fn record(&mut self, text: &str) {
        self.0
            .write_all(text.as_bytes())
            .expect("write the child's output file");
    }
}

// ---- the parent ------------------------------------------------------------------------------

/// Four processes drain one queue together: every item is leased once and acked once.
#[test]
fn processes_share_one_queue_without_double_leases() {
    let run = Run::setup("shared");
    let mut children: Vec<ChildProcess> = (0..CHILDREN)
        .map(|i| run.spawn(i, LONG_LEASE, None))
        .collect();
    run.start(&mut children);
    wait_all(&mut children);

    let reports: Vec<Report> = children.iter().map(ChildProcess::report).collect();
    for (child, report) in children.iter().zip(&reports) {
        assert!(report.finished, "{} did not finish", child.owner);
        println!(
            "{} (pid {}): claimed {}, acked {}",
            child.owner,
            child.pid,
            report.claimed.len(),
            report.acked.len()
        );
    }

    let mut claimed_by: BTreeMap<Key, &str> = BTreeMap::new();
    for (child, report) in children.iter().zip(&reports) {
        assert!(
            report.ack_failures.is_empty(),
            "{}: acks failed: {:?}",
            child.owner,
            report.ack_failures
        );
        for &key in &report.claimed {
            if let Some(first) = claimed_by.insert(key, &child.owner) {
                panic!(
                    "key {key} was claimed by {first} and again by {}",
                    child.owner
                );
            }
        }
        let claimed: BTreeSet<Key> = report.claimed.iter().copied().collect();
        let acked: BTreeSet<Key> = report.acked.iter().copied().collect();
        assert_eq!(
            acked.len(),
            report.acked.len(),
            "{}: a key acked twice",
            child.owner
        );
        assert_eq!(
            acked, claimed,
            "{}: acked differs from claimed",
            child.owner
        );
    }
    let claimed: BTreeSet<Key> = claimed_by.keys().copied().collect();
    assert_eq!(
        claimed, run.keys,
        "the claimed keys are not exactly the pushed ones"
    );
    let busy = reports.iter().filter(|r| !r.claimed.is_empty()).count();
    println!("{busy} of {CHILDREN} processes took items");
    assert!(busy >= 2, "only {busy} process(es) took items");

    let expected_attempts = |_: Key| 1;
    run.check_database(&expected_attempts);
}

/// One process is killed with SIGKILL while holding leases: they run out, the others claim
/// those items again, and every item still ends `done` exactly once.
#[test]
fn leases_of_a_killed_process_return_to_the_others() {
    let run = Run::setup("killed");
    // Child 0 is the victim: it acks its first claim, holds its second, and is killed.
    let mut children: Vec<ChildProcess> = (0..CHILDREN)
        .map(|i| {
            if i == 0 {
                run.spawn(i, SHORT_LEASE, Some(2))
            } else {
                run.spawn(i, LONG_LEASE, None)
            }
        })
        .collect();
    run.start(&mut children);

    let (victim, survivors) = children.split_at_mut(1);
    let victim = &mut victim[0];
    victim.wait_for_holding();
    // `Child::kill` sends SIGKILL on Unix: the victim acks nothing more, ever.
    victim.child.kill().expect("kill the victim");
    let status = victim.child.wait().expect("reap the victim");
    assert_eq!(
        status.signal(),
        Some(9),
        "the victim ended by itself ({status}) instead of SIGKILL; its stderr:\n{}",
        victim.stderr()
    );
    wait_all(survivors);

    let (victim_acked, held) = check_victim(victim);

    let mut claimed_by: BTreeMap<Key, &str> = BTreeMap::new();
    let mut acks: BTreeMap<Key, u32> = victim_acked.iter().map(|&k| (k, 1)).collect();
    for survivor in survivors.iter() {
        let report = survivor.report();
        assert!(report.finished, "{} did not finish", survivor.owner);
        println!(
            "{} (pid {}): claimed {}, acked {} ({} of them taken back from the victim)",
            survivor.owner,
            survivor.pid,
            report.claimed.len(),
            report.acked.len(),
            report.claimed.iter().filter(|k| held.contains(k)).count()
        );
        assert!(
            report.ack_failures.is_empty(),
            "{}: acks failed: {:?}",
            survivor.owner,
            report.ack_failures
        );
        for &key in &report.claimed {
            assert!(
                !victim_acked.contains(&key),
                "key {key} was acked by the victim and claimed again by {}",
                survivor.owner
            );
            if let Some(first) = claimed_by.insert(key, &survivor.owner) {
                panic!(
                    "key {key} was claimed by {first} and again by {}",
                    survivor.owner
                );
            }
        }
        for &key in &report.acked {
            *acks.entry(key).or_insert(0) += 1;
        }
        let claimed: BTreeSet<Key> = report.claimed.iter().copied().collect();
        let acked: BTreeSet<Key> = report.acked.iter().copied().collect();
        assert_eq!(
            acked, claimed,
            "{}: acked differs from claimed",
            survivor.owner
        );
    }
    let retaken: BTreeSet<Key> = claimed_by
        .keys()
        .copied()
        .filter(|k| held.contains(k))
        .collect();
    assert_eq!(
        retaken, held,
        "not every item the victim held was claimed again"
    );
    let acked_keys: BTreeSet<Key> = acks.keys().copied().collect();
    assert_eq!(
        acked_keys, run.keys,
        "the acked keys are not exactly the pushed ones"
    );
    if let Some((key, n)) = acks.iter().find(|(_, n)| **n != 1) {
        panic!("key {key} was acked {n} times");
    }

    let expected_attempts = |key: Key| if held.contains(&key) { 2 } else { 1 };
    run.check_database(&expected_attempts);
}

/// The victim's own record: it claimed no key twice, its acks were all `Ok`, and it held
/// leases when it was killed. Returns what it acked and what it held.
fn check_victim(victim: &ChildProcess) -> (BTreeSet<Key>, BTreeSet<Key>) {
    let victim_report = victim.report();
    println!(
        "{} (pid {}, killed): claimed {}, acked {}, held {} when killed",
        victim.owner,
        victim.pid,
        victim_report.claimed.len(),
        victim_report.acked.len(),
        victim_report.claimed.len() - victim_report.acked.len()
    );
    assert!(victim_report.holding, "the victim did not reach its hold");
    assert!(
        victim_report.ack_failures.is_empty(),
        "the victim's acks failed: {:?}",
        victim_report.ack_failures
    );
    let victim_claimed: BTreeSet<Key> = victim_report.claimed.iter().copied().collect();
    assert_eq!(
        victim_claimed.len(),
        victim_report.claimed.len(),
        "the victim claimed a key twice"
    );
    let victim_acked: BTreeSet<Key> = victim_report.acked.iter().copied().collect();
    assert!(
        victim_acked.is_subset(&victim_claimed),
        "the victim acked what it never claimed"
    );
    let held: BTreeSet<Key> = victim_claimed.difference(&victim_acked).copied().collect();
    assert!(!held.is_empty(), "the victim held no leases when killed");
    (victim_acked, held)
}

/// One test's queue, on a schema of its own, and the directory of its children's files.
struct Run {
    name: &'static str,
    url: String,
    schema: String,
    dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    store: Store<PostgresBackend>,
    keys: BTreeSet<Key>,
}

impl Run {
    /// Opens a fresh schema, creates the queue and pushes [`ITEMS`] items.
    fn setup(name: &'static str) -> Self {
        let url = testing::TestServer::shared().url().to_owned();
        let schema = testing::options().schema;
        // Several threads, so that the backend's background tasks run while this thread
        // waits for the children.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let options = PostgresOptions::new(url.as_str())
            .schema(schema.as_str())
            .pool_size(4);
        let store = Store::new(rt.block_on(PostgresBackend::open(options)).expect("open"));
        let queue = queue_id();
        let mut keys = BTreeSet::new();
        rt.block_on(async {
            store
                .create_queue(QueueConfig::new(queue.clone()))
                .await
                .expect("create the queue");
            let mut next = 1;
            while next <= ITEMS {
                let batch: Vec<NewItem> = (next..=ITEMS)
                    .take(PUSH_BATCH)
                    .map(|i| NewItem::new(format!("item {i}").into_bytes()))
                    .collect();
                next += batch.len() as u64;
                keys.extend(store.push_batch(&queue, batch).await.expect("push"));
            }
        });
        assert_eq!(
            keys,
            (1..=ITEMS).collect::<BTreeSet<Key>>(),
            "the pushed keys are not 1..={ITEMS}"
        );
        let dir = tempfile::Builder::new()
            .prefix("hookspool-processes-")
            .tempdir()
            .expect("tempdir");
        println!("{name}: {ITEMS} items pushed to schema {schema}");
        Run {
            name,
            url,
            schema,
            dir,
            rt,
            store,
            keys,
        }
    }

    fn spawn(&self, index: usize, lease: Duration, hold_at: Option<u64>) -> ChildProcess {
        let owner = format!("{}-{index}", self.name);
        let out = self.dir.path().join(format!("{owner}.out"));
        let stderr_path = self.dir.path().join(format!("{owner}.stderr"));
        let stderr = File::create(&stderr_path).expect("child stderr file");
        let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
        cmd.args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &out)
            .env(URL_ENV, &self.url)
            .env(SCHEMA_ENV, &self.schema)
            .env(OWNER_ENV, &owner)
            .env(LEASE_ENV, lease.as_millis().to_string())
            .env(GO_ENV, self.go_file())
            .env_remove(HOLD_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if let Some(n) = hold_at {
            cmd.env(HOLD_ENV, n.to_string());
        }
        let child = cmd.spawn().expect("spawn a child");
        ChildProcess {
            pid: child.id(),
            child,
            owner,
            out,
            stderr_path,
        }
    }

    fn go_file(&self) -> PathBuf {
        self.dir.path().join("go")
    }

    /// Waits until every child has its backend open, then lets them all start at once.
    fn start(&self, children: &mut [ChildProcess]) {
        let deadline = Instant::now() + DEADLINE;
        for child in children.iter_mut() {
            while !child.report().ready {
                child.fail_if_exited("before it was ready");
                check_deadline(deadline, "the children to open their backends");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        File::create(self.go_file()).expect("create the go file");
    }

    /// The queue as the database sees it: everything done, once, with the expected attempts.
    fn check_database(&self, expected_attempts: &dyn Fn(Key) -> u32) {
        let queue = queue_id();
        let (counts, items) = self.rt.block_on(async {
            let counts = self.store.counts(&queue).await.expect("counts");
            let mut items = Vec::new();
            let mut dump = self.store.dump(&queue);
            while let Some(page) = dump.next_page().await.expect("dump") {
                items.extend(page);
            }
            (counts, items)
        });
        println!("{}: final counts {counts:?}", self.name);
        let mut want = PhaseCounts::default();
        want.add(&Phase::DONE, ITEMS);
        assert_eq!(counts, want, "the queue's counts");
        let keys: BTreeSet<Key> = items.iter().map(|i| i.key).collect();
        assert_eq!(keys.len(), items.len(), "the dump repeats a key");
        assert_eq!(keys, self.keys, "the stored keys");
        for item in &items {
            assert_eq!(item.phase, Phase::DONE, "item {}", item.key);
            assert_eq!(item.lease, None, "item {}", item.key);
            assert_eq!(
                item.attempts,
                expected_attempts(item.key),
                "item {}: attempts (how many times the server leased it)",
                item.key
            );
        }
    }
}

/// A running child, killed (and reaped) when dropped, so that none outlives a failed test.
struct ChildProcess {
    child: Child,
    pid: u32,
    owner: String,
    out: PathBuf,
    stderr_path: PathBuf,
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ChildProcess {
    fn report(&self) -> Report {
        Report::read(&self.out)
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    fn fail_if_exited(&mut self, when: &str) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            self.failed(status, when);
        }
    }

    fn failed(&self, status: ExitStatus, when: &str) -> ! {
        panic!(
            "{} stopped ({status}) {when}; its stderr:\n{}",
            self.owner,
            self.stderr()
        );
    }

    /// Waits until the victim says it holds leases it will never ack.
    fn wait_for_holding(&mut self) {
        let deadline = Instant::now() + DEADLINE;
        while !self.report().holding {
            self.fail_if_exited("before it held its leases");
            check_deadline(deadline, "the victim to hold its leases");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Waits for every child to exit successfully (failing, with its stderr, on any other exit), within [`DEADLINE`] (else they are killed
/// when dropped, and the test fails).
fn wait_all(children: &mut [ChildProcess]) {
    let deadline = Instant::now() + DEADLINE;
    let mut pending: Vec<usize> = (0..children.len()).collect();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for i in pending {
            let child = &mut children[i];
            match child.child.try_wait().expect("try_wait") {
                Some(status) if status.success() => {}
                Some(status) => child.failed(status, "with a failure"),
                None => still.push(i),
            }
        }
        pending = still;
        if !pending.is_empty() {
            check_deadline(deadline, "the children to drain the queue");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn check_deadline(deadline: Instant, what: &str) {
    assert!(
        Instant::now() < deadline,
        "gave up waiting for {what} after {DEADLINE:?}"
    );
}

/// What a child's output file says (whole lines only: a line cut by SIGKILL is ignored).
#[derive(Default)]
struct Report {
    ready: bool,
    holding: bool,
    finished: bool,
    claimed: Vec<Key>,
    acked: Vec<Key>,
    ack_failures: Vec<String>,
}

impl Report {
    fn read(path: &Path) -> Self {
        let text = fs::read_to_string(path).unwrap_or_default();
        let whole = text.rfind('\n').map_or("", |i| &text[..=i]);
        let mut report = Report::default();
        for line in whole.lines() {
            let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
            let key = || -> Key {
                rest.parse()
                    .unwrap_or_else(|_| panic!("bad line {line:?} in {}", path.display()))
            };
            match verb {
                "ready" => report.ready = true,
                "holding" => report.holding = true,
                "finished" => report.finished = true,
                "claimed" => report.claimed.push(key()),
                "acked" => report.acked.push(key()),
                "ack-failed" => report.ack_failures.push(rest.to_owned()),
                _ => panic!("bad line {line:?} in {}", path.display()),
            }
        }
        report
    }
}

fn queue_id() -> QueueId {
    QueueId::new(QUEUE).expect("valid queue id")
}
