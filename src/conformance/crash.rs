//! Kill -9 testing for any backend: a child process works a store while the parent kills it
//! with SIGKILL at random moments, then reopens the store and checks that nothing a returned
//! call reported as stored was lost.
//!
//! # How it works
//!
//! The test binary re-executes itself as the child (a test named [`CHILD_TEST`] that calls
//! [`child`], which does nothing unless the parent set it up). The child opens the store
//! through your [`CrashTarget`], creates a queue and pushes (single items and batches of
//! varied sizes), claims (with leases of every length), acks (one at a time and batched),
//! nacks and deletes. After each call returns `Ok` it appends a line to a journal file and
//! fsyncs it, so the parent knows a lower bound of what had returned before the kill. A call
//! that returned but was not journaled yet may or may not show up: the checks rely only on
//! journaled lines, which is exactly the guarantee `push` and `ack` make.
//!
//! Every round continues the same store. After each kill the parent reopens it and checks:
//! every journaled push is there with its payload whole (payloads describe themselves, so a
//! torn or mixed-up one is caught), unless its delete was journaled, and a journaled delete
//! never comes back; every journaled ack is `done`; an item is in flight exactly when it has
//! a lease, and a journaled claim's lease is not shortened; `counts()` equals a recount of
//! `dump`; past every lease each open lease returns to pending with its attempts kept and
//! nothing else changed; the next key is above every key ever seen; a clean close and reopen
//! keeps exactly that state.
//!
//! A target whose storage is a directory ([`CrashTarget::copyable`]) is checked on a *copy*,
//! so that the sweep at a far-future time and the probe push do not change what the next
//! child continues from. Storage that cannot be copied (a database) is checked in place,
//! between two children: the checks then release the dead child's leases (as lease expiry
//! would) and add a probe item the next child may take; neither weakens the next round's
//! checks.
//!
//! # For backend authors
//!
//! ```ignore
//! // tests/crash.rs of crate `my-backend`, with
//! // [dev-dependencies] hookspool = { version = "0.1", features = ["conformance"] }
//! use hookspool::conformance::crash::{self, CrashTarget, Place};
//! use my_backend::FileBackend;
//!
//! struct Files;
//!
//! impl CrashTarget for Files {
//!     type Backend = FileBackend;
//!
//!     async fn open(&self, place: &Place, mode: &str) -> FileBackend {
//!         FileBackend::open(&place.dir, mode == "periodic").expect("open the store")
//!     }
//! }
//!
//! #[test]
//! fn crash_child() {
//!     crash::child(&Files);
//! }
//!
//! #[test]
//! fn survives_sigkill_at_random_moments() {
//!     crash::run(&Files, "immediate");
//! }
//! ```
//!
//! Knobs: [`ROUNDS_ENV`] (`HOOKSPOOL_CRASH_ROUNDS`, default [`DEFAULT_ROUNDS`]) and
//! [`SEED_ENV`] (`HOOKSPOOL_CRASH_SEED`: replays the kill schedule and the children's
//! operation mix; the seed is printed on every run). [`Crash`] sets them in code, and runs
//! the child from a binary that is not a test harness ([`Crash::child_args`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::support::{Rng, copy_dir};
use crate::{
    Backend, Error, Item, Key, ManualClock, NewItem, Phase, QueueConfig, QueueId, Store, Timestamp,
};

/// Rounds (kills) per run: `HOOKSPOOL_CRASH_ROUNDS`.
pub const ROUNDS_ENV: &str = "HOOKSPOOL_CRASH_ROUNDS";
/// The seed of a run, to replay it: `HOOKSPOOL_CRASH_SEED`.
pub const SEED_ENV: &str = "HOOKSPOOL_CRASH_SEED";
/// Rounds per run when [`ROUNDS_ENV`] is not set: a few seconds per mode, short enough for
/// every CI run (the torture tool runs a thousand). A run of at least this many rounds must
/// also have seen every kind of call journaled (or it checked nothing and fails).
pub const DEFAULT_ROUNDS: u32 = 12;
/// The name of the test that runs [`child`] (the default [`Crash::child_args`] run it with
/// `--exact`, so it must sit at the crate root of the test file).
pub const CHILD_TEST: &str = "crash_child";

/// Set (to the run's directory) only in the child process.
const CHILD_DIR_ENV: &str = "HOOKSPOOL_CRASH_CHILD_DIR";
/// The child's [`Place::name`].
const CHILD_NAME_ENV: &str = "HOOKSPOOL_CRASH_CHILD_NAME";
/// The child's own random seed, chosen by the parent so a run can be replayed.
const CHILD_SEED_ENV: &str = "HOOKSPOOL_CRASH_CHILD_SEED";
/// The mode the child opens the store in.
const CHILD_MODE_ENV: &str = "HOOKSPOOL_CRASH_CHILD_MODE";
const QUEUE: &str = "crash";
/// A child whose parent died (so nobody kills it) stops on its own after this long.
const CHILD_MAX_LIFETIME: Duration = Duration::from_secs(30);
/// How long the parent waits for a child to open the store before calling it hung.
const CHILD_OPEN_TIMEOUT: Duration = Duration::from_secs(20);

/// Where a run's store lives. Every round of a run opens the same place.
#[derive(Clone, Debug)]
pub struct Place {
    /// A directory of the store's own (it does not exist before the first open): the store
    /// of a file backend.
    pub dir: PathBuf,
    /// A name unique to the run, usable as an SQL identifier (`crash_<pid>_<n>`): the schema
    /// or database of a backend that keeps its data elsewhere.
    pub name: String,
}

/// A backend under kill -9: how to open its store, and what else the kit should know.
pub trait CrashTarget: Send + Sync + 'static {
    /// The backend under test.
    type Backend: Backend;

    /// Opens the store at `place` in `mode` (the name given to [`run`]: a durability
    /// setting, say), creating it if it is not there. Called in the child, and in the parent
    /// after every kill. Panics if it cannot (in the child, that is a failed start).
    fn open(&self, place: &Place, mode: &str) -> impl Future<Output = Self::Backend> + Send;

    /// Whether [`Place::dir`] holds the whole store, so that the checks may run on a copy of
    /// it. `false` (a database): the checks run in place, between two children.
    fn copyable(&self) -> bool {
        true
    }

    /// Environment variables the child needs besides the kit's own (a server's URL).
    fn child_env(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// How much opening `backend` repaired (bytes of a torn tail cut off, say). The kit
    /// counts the rounds in which it was more than 0, and checks that it is 0 after a clean
    /// close.
    fn repaired(&self, backend: &Self::Backend) -> u64 {
        let _ = backend;
        0
    }

    /// Checks of the target's own at the end of a run, on the store as the last child left it
    /// (file layout, say); `report` says what the run did.
    fn finish(&self, place: &Place, report: &Report) {
        let _ = (place, report);
    }
}

/// In the child process, works the store until the parent kills it and returns `true`;
/// elsewhere (a normal test run) returns `false` at once. Call it from a test named
/// [`CHILD_TEST`], or first thing in the `main` of a binary that runs [`Crash`].
pub fn child<T: CrashTarget>(target: &T) -> bool {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return false;
    };
    let root = PathBuf::from(dir);
    let place = Place {
        dir: root.join("store"),
        name: std::env::var(CHILD_NAME_ENV).unwrap_or_default(),
    };
    let seed = std::env::var(CHILD_SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mode = std::env::var(CHILD_MODE_ENV).unwrap_or_default();
    runtime().block_on(async {
        let mut worker = Worker::start(target, &root, &place, &mode, seed).await;
        worker.work().await;
    });
    true
}

/// Runs a kill -9 test of `target` in `mode` with the settings from the environment
/// ([`ROUNDS_ENV`], [`SEED_ENV`]), panicking on the first violation.
pub fn run<T: CrashTarget>(target: &T, mode: &str) -> Report {
    Crash::new(mode).run(target)
}

/// A kill -9 run's settings. [`run`] is `Crash::new(mode).run(target)`.
#[derive(Clone, Debug)]
pub struct Crash {
    mode: String,
    rounds: u32,
    seed: u64,
    child_args: Vec<String>,
    keep_going: bool,
}

impl Crash {
    /// A run in `mode`, with rounds and seed from the environment ([`ROUNDS_ENV`],
    /// [`SEED_ENV`]; a fresh seed otherwise), the child run as the test [`CHILD_TEST`], and
    /// stopping at the first violation.
    pub fn new(mode: &str) -> Self {
        Crash {
            mode: mode.to_owned(),
            rounds: env_number(ROUNDS_ENV).unwrap_or(DEFAULT_ROUNDS),
            seed: env_number(SEED_ENV).unwrap_or_else(seed_from_time_and_pid),
            child_args: ["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"]
                .map(String::from)
                .to_vec(),
            keep_going: false,
        }
    }

    /// How many children to kill.
    #[must_use]
    pub fn rounds(mut self, rounds: u32) -> Self {
        self.rounds = rounds;
        self
    }

    /// The seed of the kill moments and the children's choices.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The arguments this executable is re-run with to become the child (which must then
    /// call [`child`]). Empty for a binary whose `main` calls [`child`] first.
    #[must_use]
    pub fn child_args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.child_args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Whether lost or duplicated items and failed starts are counted in the [`Report`]
    /// and the run goes on (a torture run), instead of panicking at once (a test). Any other
    /// violation panics either way.
    #[must_use]
    pub fn keep_going(mut self, keep_going: bool) -> Self {
        self.keep_going = keep_going;
        self
    }

    /// Runs the rounds against `target` and says what they did. Panics on a violation
    /// (see [`Crash::keep_going`]).
    pub fn run<T: CrashTarget>(&self, target: &T) -> Report {
        eprintln!(
            "crash test ({}): {} rounds, seed {} (set {SEED_ENV}={} to replay)",
            self.mode, self.rounds, self.seed, self.seed
        );
        let root = match tempfile::Builder::new()
            .prefix("hookspool-crash-")
            .tempdir()
        {
            Ok(root) => root,
            Err(e) => panic!("crash test: no temp dir: {e}"),
        };
        let mut parent = Parent::new(self, target, root.path());
        for round in 0..self.rounds {
            parent.round(round);
        }
        let report = parent.finish();
        eprintln!("crash test ({}): {report}", self.mode);
        report
    }
}

/// What a run did (over all its rounds) and what it found.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Report {
    /// The mode the stores were opened in.
    pub mode: String,
    /// Children killed.
    pub rounds: u32,
    /// The seed that replays the run.
    pub seed: u64,
    /// How long the run took.
    pub elapsed: Duration,
    /// Children that had the store open and the queue created before they were killed.
    pub opens: usize,
    /// Items whose push returned `Ok` (journaled).
    pub pushed: usize,
    /// Claims that returned items, acks, nacks and deletes that returned `Ok`.
    pub claims: u64,
    /// See [`Report::claims`].
    pub acked: usize,
    /// See [`Report::claims`].
    pub nacked: u64,
    /// See [`Report::claims`].
    pub deleted: usize,
    /// Open leases returned to pending by the checks' sweeps.
    pub released: u64,
    /// Items in the store at the last check.
    pub items: usize,
    /// Rounds in which reopening repaired something ([`CrashTarget::repaired`]).
    pub repaired: u32,
    /// Items whose journaled push or claim the store lost (only with [`Crash::keep_going`];
    /// otherwise the run panics).
    pub lost: usize,
    /// Items the store would hand out again: a key listed twice, a journaled ack not `done`,
    /// a journaled delete come back (only with [`Crash::keep_going`]).
    pub duplicated: usize,
    /// Children that stopped by themselves instead of being killed (only with
    /// [`Crash::keep_going`]).
    pub failed_starts: u32,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} rounds in {:.1?}; {} items stored; journaled: {} pushed, {} claims, {} acked, \
             {} nacked, {} deleted; {} open leases returned to pending across the checks; \
             {} reopens repaired a torn tail; lost {}, duplicated {}, failed starts {}",
            self.rounds,
            self.elapsed,
            self.items,
            self.pushed,
            self.claims,
            self.acked,
            self.nacked,
            self.deleted,
            self.released,
            self.repaired,
            self.lost,
            self.duplicated,
            self.failed_starts,
        )
    }
}

// ---- the child ---------------------------------------------------------------------------

/// The child's side: a store, the journal of what returned, and what it holds.
struct Worker<B: Backend> {
    store: Store<B>,
    queue: QueueId,
    owner: String,
    journal: Journal,
    rng: Rng,
    /// Items this child claimed and has not settled.
    held: Vec<Key>,
    /// Items this child acked: it deletes some, so that a backend's space reclamation runs
    /// (and gets killed) too.
    done: Vec<Key>,
    /// Calls made so far (payloads name it).
    n: u64,
}

impl<B: Backend> Worker<B> {
    async fn start<T: CrashTarget<Backend = B>>(
        target: &T,
        root: &Path,
        place: &Place,
        mode: &str,
        seed: u64,
    ) -> Self {
        let mut journal = Journal::open(&root.join("journal"));
        let store = Store::new(target.open(place, mode).await);
        let queue = queue_id();
        match store.create_queue(QueueConfig::new(queue.clone())).await {
            Ok(_) | Err(Error::QueueExists(_)) => {}
            Err(e) => panic!("child cannot create the queue: {e}"),
        }
        let owner = format!("worker-{}", std::process::id());
        // Tells the parent the store is open and the queue exists: from here on, kills land
        // in the middle of real work.
        journal.record(&format!("open {owner}"));
        Worker {
            store,
            queue,
            owner,
            journal,
            rng: Rng::new(seed),
            held: Vec::new(),
            done: Vec::new(),
            n: 0,
        }
    }

    /// The operation mix, until killed (or [`CHILD_MAX_LIFETIME`]).
    async fn work(&mut self) {
        let started = Instant::now();
        while started.elapsed() < CHILD_MAX_LIFETIME {
            self.n += 1;
            let roll = self.rng.below(100);
            if roll >= 88 && !self.done.is_empty() {
                self.delete_some().await;
            } else if roll < 40 || (self.held.is_empty() && roll >= 65) {
                self.push(roll).await;
            } else if roll < 65 {
                self.claim().await;
            } else if roll < 72 && self.held.len() >= 2 {
                self.ack_batch().await;
            } else {
                self.settle_one(roll).await;
            }
        }
    }

    /// A single push, or a small batch (all or nothing), of payloads of varied sizes.
    async fn push(&mut self, roll: u64) {
        let size = if roll < 30 { 1 } else { 2 + self.rng.below(5) };
        let items = (0..size)
            .map(|i| {
                let len = 16 + self.rng.below(1000) as usize;
                NewItem::new(payload(self.n, i, len)).with_metadata("event", "crash.test")
            })
            .collect();
        let keys = self
            .store
            .push_batch(&self.queue, items)
            .await
            .expect("push");
        self.journal.record(&format!("pushed {}", join(&keys)));
    }

    /// Leases of every length: short ones expire while this child runs (so its own claims
    /// sweep them back), long ones are still open when the kill comes.
    async fn claim(&mut self) {
        let lease = [50, 400, 60_000][self.rng.below(3) as usize];
        let limit = 1 + self.rng.below(8) as usize;
        let items = self
            .store
            .claim(
                &self.queue,
                &self.owner,
                limit,
                Duration::from_millis(lease),
            )
            .await
            .expect("claim");
        let Some(until) = items
            .iter()
            .filter_map(|i| i.lease.as_ref().map(|l| l.until))
            .min()
        else {
            assert!(items.is_empty(), "claimed items have leases");
            return;
        };
        let keys: Vec<Key> = items.iter().map(|i| i.key).collect();
        self.journal
            .record(&format!("claimed {} {}", until.as_millis(), join(&keys)));
        self.held.extend(keys);
    }

    /// An ack or a nack of one held item.
    async fn settle_one(&mut self, roll: u64) {
        let key = self
            .held
            .swap_remove(self.rng.below(self.held.len() as u64) as usize);
        let result = if roll < 85 {
            self.store
                .ack(&self.queue, key, &self.owner)
                .await
                .map(|()| "acked")
        } else {
            let retry_at =
                Timestamp::now().saturating_add(Duration::from_millis(self.rng.below(50)));
            self.store
                .nack(&self.queue, key, &self.owner, retry_at, "crash test nack")
                .await
                .map(|()| "nacked")
        };
        match result {
            Ok(what) => {
                self.journal.record(&format!("{what} {key}"));
                if what == "acked" {
                    self.done.push(key);
                }
            }
            Err(e) => not_ours_any_more(key, &e),
        }
    }

    /// A batched ack: one call for several held items, each ack that succeeded journaled.
    async fn ack_batch(&mut self) {
        let take = self.held.len().min(2 + self.rng.below(3) as usize);
        let keys: Vec<Key> = self.held.drain(..take).collect();
        let results = self
            .store
            .ack_many(&self.queue, &keys, &self.owner)
            .await
            .expect("ack_many");
        for (key, result) in keys.iter().zip(results) {
            match result {
                Ok(()) => {
                    self.journal.record(&format!("acked {key}"));
                    self.done.push(*key);
                }
                Err(e) => not_ours_any_more(*key, &e),
            }
        }
    }

    /// Deletes of acked items, keeping up with the acks. Each is journaled before the call
    /// (`deleting`, so that the parent knows the item may be gone) and after it.
    async fn delete_some(&mut self) {
        for _ in 0..self.done.len().min(4) {
            let key = self
                .done
                .swap_remove(self.rng.below(self.done.len() as u64) as usize);
            self.journal.record(&format!("deleting {key}"));
            let existed = self.store.delete(&self.queue, key).await.expect("delete");
            assert!(existed, "{key} was acked and not deleted, yet it is gone");
            self.journal.record(&format!("deleted {key}"));
        }
    }
}

/// A settle that failed because the item is not this child's any more: its lease ran out
/// before the call (and if this child claimed it again and settled that claim first, it may
/// even be deleted). Any other error fails the child.
fn not_ours_any_more(key: Key, e: &Error) {
    if !matches!(
        e,
        Error::NotLeaseOwner { .. } | Error::PhaseConflict { .. } | Error::ItemNotFound { .. }
    ) {
        panic!("settling item {key}: {e}");
    }
}

/// The child's append-only record of calls that returned `Ok`.
struct Journal(File);

impl Journal {
    fn open(path: &Path) -> Self {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open journal");
        // Cut a torn last line (a kill in the middle of a write) so that every line in the
        // file is whole and the next child's lines do not glue onto it.
        let content = fs::read(path).expect("read journal");
        let whole = content
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        if whole < content.len() {
            file.set_len(whole as u64).expect("truncate journal");
        }
        Journal(file)
    }

    /// Appends one line in a single write and syncs it: once this returns, the parent sees
    /// the line after the kill.
    fn record(&mut self, line: &str) {
        self.0
            .write_all(format!("{line}\n").as_bytes())
            .expect("write journal");
        self.0.sync_data().expect("sync journal");
    }
}

// ---- the parent --------------------------------------------------------------------------

/// The parent's side of a run.
struct Parent<'a, T: CrashTarget> {
    settings: &'a Crash,
    target: &'a T,
    root: &'a Path,
    place: Place,
    rng: Rng,
    rt: tokio::runtime::Runtime,
    started: Instant,
    report: Report,
    lost: BTreeSet<Key>,
    duplicated: BTreeSet<Key>,
    journal: JournalState,
}

impl<'a, T: CrashTarget> Parent<'a, T> {
    fn new(settings: &'a Crash, target: &'a T, root: &'a Path) -> Self {
        static RUNS: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "crash_{}_{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        );
        Parent {
            settings,
            target,
            root,
            place: Place {
                dir: root.join("store"),
                name,
            },
            rng: Rng::new(settings.seed),
            rt: runtime(),
            started: Instant::now(),
            report: Report {
                mode: settings.mode.clone(),
                rounds: settings.rounds,
                seed: settings.seed,
                ..Report::default()
            },
            lost: BTreeSet::new(),
            duplicated: BTreeSet::new(),
            journal: JournalState::default(),
        }
    }

    /// One child, killed at a random moment, then the checks.
    fn round(&mut self, round: u32) {
        self.kill_a_child();
        self.journal = JournalState::read(&self.root.join("journal"));
        let ctx = format!("round {round}");
        let checked = self.rt.block_on(check_round(
            self.target,
            &self.settings.mode,
            &self.place,
            &self.root.join(format!("check-{round}")),
            &ctx,
            &self.journal,
        ));
        self.report.items = checked.items;
        self.report.released += checked.released;
        self.report.repaired += u32::from(checked.repaired > 0);
        let (lost, duplicated) = (checked.findings.lost, checked.findings.duplicated);
        if !self.settings.keep_going {
            assert!(lost.is_empty(), "{ctx}: journaled items lost: {lost:?}");
            assert!(
                duplicated.is_empty(),
                "{ctx}: items that would be handed out again: {duplicated:?}"
            );
        }
        self.lost.extend(lost);
        self.duplicated.extend(duplicated);
    }

    /// Starts a child and kills it: one round in five early, possibly while it is still
    /// opening (and recovering) the store; the others once it is at work.
    fn kill_a_child(&mut self) {
        let journal = self.root.join("journal");
        let stderr = self.root.join("child-stderr.log");
        let journal_len = fs::metadata(&journal).map_or(0, |m| m.len());
        let mut child = self.spawn_child(&stderr);
        let delay = if self.rng.below(5) == 0 {
            Duration::from_millis(self.rng.below(40))
        } else {
            if let Err(status) = wait_until_open(&mut child, &journal, journal_len) {
                self.failed_start(status, &stderr);
                return;
            }
            Duration::from_millis(20 + self.rng.below(281))
        };
        std::thread::sleep(delay);
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            self.failed_start(status, &stderr);
            return;
        }
        // `Child::kill` sends SIGKILL on Unix: no destructor, no flush, no fsync runs.
        child.0.kill().expect("kill child");
        child.0.wait().expect("reap child");
    }

    fn spawn_child(&mut self, stderr: &Path) -> ChildGuard {
        let exe = std::env::current_exe().expect("current_exe");
        let stderr = File::create(stderr).expect("child stderr file");
        let child = Command::new(exe)
            .args(&self.settings.child_args)
            .envs(self.target.child_env())
            .env(CHILD_DIR_ENV, self.root)
            .env(CHILD_NAME_ENV, &self.place.name)
            .env(CHILD_SEED_ENV, self.rng.next().to_string())
            .env(CHILD_MODE_ENV, &self.settings.mode)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn child");
        ChildGuard(child)
    }

    fn failed_start(&mut self, status: ExitStatus, stderr: &Path) {
        let log = fs::read_to_string(stderr).unwrap_or_default();
        let what = format!(
            "the child stopped by itself ({status}) instead of being killed; its stderr:\n{log}"
        );
        assert!(self.settings.keep_going, "{what}");
        eprintln!("crash test: {what}");
        self.report.failed_starts += 1;
    }

    /// The totals, the target's own checks, and a check that the run checked something.
    fn finish(mut self) -> Report {
        let journal = &self.journal;
        self.report.elapsed = self.started.elapsed();
        self.report.opens = journal.opens;
        self.report.pushed = journal.pushed.len();
        self.report.claims = journal.claims;
        self.report.acked = journal.acked.len();
        self.report.nacked = journal.nacked;
        self.report.deleted = journal.deleted.len();
        self.report.lost = self.lost.len();
        self.report.duplicated = self.duplicated.len();
        // A run in which the children never got to work checks nothing: fail rather than
        // pass.
        if self.settings.rounds >= DEFAULT_ROUNDS {
            assert!(journal.opens > 0, "no child ever opened the store");
            assert!(!journal.pushed.is_empty(), "no push was journaled");
            assert!(journal.claims > 0, "no claim was journaled");
            assert!(!journal.acked.is_empty(), "no ack was journaled");
            assert!(!journal.deleted.is_empty(), "no delete was journaled");
        }
        self.target.finish(&self.place, &self.report);
        self.report
    }
}

/// Kills and reaps the child if the parent panics, so no child outlives a failed test.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until the child journals its `open` line (the journal grows past `len`); the
/// child's exit status if it stopped first.
fn wait_until_open(child: &mut ChildGuard, journal: &Path, len: u64) -> Result<(), ExitStatus> {
    let deadline = Instant::now() + CHILD_OPEN_TIMEOUT;
    while fs::metadata(journal).map_or(0, |m| m.len()) <= len {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            return Err(status);
        }
        assert!(
            Instant::now() < deadline,
            "child did not open the store within {CHILD_OPEN_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

// ---- the checks --------------------------------------------------------------------------

/// What one post-crash check saw.
#[derive(Default)]
struct Checked {
    items: usize,
    released: u64,
    repaired: u64,
    findings: Findings,
}

/// Keys lost, and keys the store would hand out again.
#[derive(Default)]
struct Findings {
    lost: BTreeSet<Key>,
    duplicated: BTreeSet<Key>,
}

/// Reopens the store after a kill (a copy at `copy` if the target is copyable) and checks
/// every invariant against the journal.
async fn check_round<T: CrashTarget>(
    target: &T,
    mode: &str,
    place: &Place,
    copy: &Path,
    ctx: &str,
    journal: &JournalState,
) -> Checked {
    let at = if target.copyable() {
        if !place.dir.exists() {
            // Killed before the first child got to create the store: nothing is journaled.
            assert_eq!(journal.opens, 0, "{ctx}: the store directory is gone");
            return Checked::default();
        }
        copy_dir(&place.dir, copy);
        Place {
            dir: copy.to_owned(),
            name: place.name.clone(),
        }
    } else {
        place.clone()
    };
    let checked = check_store(target, mode, &at, ctx, journal).await;
    if target.copyable() {
        fs::remove_dir_all(copy).expect("remove check copy");
    }
    checked
}

async fn check_store<T: CrashTarget>(
    target: &T,
    mode: &str,
    at: &Place,
    ctx: &str,
    journal: &JournalState,
) -> Checked {
    let backend = target.open(at, mode).await;
    let repaired = target.repaired(&backend);
    let clock = ManualClock::new(Timestamp::now());
    let store = Store::new(backend).with_clock(clock.clone());
    let queue = queue_id();
    if store.queue(&queue).await.expect("get queue").is_none() {
        // Killed before the first child created the queue: then nothing can be journaled.
        assert_eq!(journal.opens, 0, "{ctx}: the queue was created but is gone");
        return Checked {
            repaired,
            ..Checked::default()
        };
    }
    let before = dump_all(&store, &queue).await;
    let findings = check_items(ctx, &before, journal);
    let counts = store.counts(&queue).await.expect("counts");
    assert_eq!(
        counts.0,
        recount(&before),
        "{ctx}: counters differ from a recount"
    );
    let after = check_leases_return(ctx, &store, &clock, &before).await;
    let probe = check_next_key(ctx, &store, &before, journal).await;
    drop(store);
    check_clean_reopen(target, mode, at, ctx, &after, probe).await;
    Checked {
        items: before.len(),
        released: before.iter().filter(|i| i.lease.is_some()).count() as u64,
        repaired,
        findings,
    }
}

/// The item set after a crash: well-formed, and holding everything the journal confirms.
fn check_items(ctx: &str, items: &[Item], journal: &JournalState) -> Findings {
    let mut found = Findings::default();
    for pair in items.windows(2) {
        assert!(
            pair[0].key <= pair[1].key,
            "{ctx}: keys out of order: {} then {}",
            pair[0].key,
            pair[1].key
        );
        if pair[0].key == pair[1].key {
            found.duplicated.insert(pair[0].key);
        }
    }
    for item in items {
        check_item(ctx, item);
    }
    let by_key: BTreeMap<Key, &Item> = items.iter().map(|i| (i.key, i)).collect();
    // Every push that returned Ok is still there, in some phase, unless it was deleted: the
    // child deletes only items whose ack it journaled, and journals `deleting` first. A
    // journaled delete never comes back.
    for key in &journal.pushed {
        let there = by_key.contains_key(key);
        if journal.deleted.contains(key) {
            if there {
                found.duplicated.insert(*key);
            }
        } else if !there && !journal.deleting.contains(key) {
            found.lost.insert(*key);
        }
    }
    // Nothing acked comes back: an acked item stays done (retention Keep, and nothing else
    // moves done items here), so in particular it is not pending; or it was deleted.
    for key in &journal.acked {
        match by_key.get(key) {
            Some(item) if item.phase != Phase::DONE => {
                found.duplicated.insert(*key);
            }
            None if !journal.deleting.contains(key) => {
                found.lost.insert(*key);
            }
            _ => {}
        }
    }
    check_claims(ctx, &by_key, journal, &mut found);
    found
}

/// One item is well-formed: a known phase, a lease exactly when in flight, a whole payload.
fn check_item(ctx: &str, item: &Item) {
    assert!(
        [Phase::PENDING, Phase::IN_FLIGHT, Phase::DONE].contains(&item.phase),
        "{ctx}: item {} in unexpected phase {}",
        item.key,
        item.phase
    );
    assert_eq!(
        item.phase == Phase::IN_FLIGHT,
        item.lease.is_some(),
        "{ctx}: item {} is in phase {} with lease {:?}",
        item.key,
        item.phase,
        item.lease
    );
    check_payload(ctx, item.key, &item.payload);
}

/// An item whose last journaled event is a claim is still leased (by that claim or a later
/// one), or was settled or released by a call the kill kept out of the journal.
fn check_claims(
    ctx: &str,
    by_key: &BTreeMap<Key, &Item>,
    journal: &JournalState,
    found: &mut Findings,
) {
    for (key, event) in &journal.last {
        if let Event::Claimed(until) = event {
            let Some(item) = by_key.get(key) else {
                found.lost.insert(*key);
                continue;
            };
            if let Some(lease) = &item.lease {
                assert!(
                    lease.until >= *until,
                    "{ctx}: item {key} is leased until {} but the journaled claim leased it \
                     until {until}",
                    lease.until
                );
            }
        }
    }
}

/// Past every lease, each item whose lease was open is pending again with its attempts kept,
/// and nothing else changes. Returns the items after the sweep.
async fn check_leases_return<B: Backend>(
    ctx: &str,
    store: &Store<B>,
    clock: &ManualClock,
    before: &[Item],
) -> Vec<Item> {
    let queue = queue_id();
    let open_leases = before.iter().filter(|i| i.lease.is_some()).count() as u64;
    clock.set(Timestamp::now().saturating_add(Duration::from_hours(365 * 24)));
    let report = store.sweep(&queue).await.expect("sweep");
    assert_eq!(report.released, open_leases, "{ctx}: sweep released");
    assert_eq!(report.expired, 0, "{ctx}: no TTL, nothing expires");
    let after = dump_all(store, &queue).await;
    assert_eq!(
        after.len(),
        before.len(),
        "{ctx}: sweep changed the item set"
    );
    for (was, now) in before.iter().zip(&after) {
        if was.phase == Phase::IN_FLIGHT {
            assert_eq!(now.key, was.key, "{ctx}: sweep changed the keys");
            assert_eq!(
                now.phase,
                Phase::PENDING,
                "{ctx}: item {} not released",
                was.key
            );
            assert_eq!(now.lease, None, "{ctx}: item {} kept its lease", was.key);
            assert_eq!(
                now.attempts, was.attempts,
                "{ctx}: item {} attempts",
                was.key
            );
        } else {
            assert_eq!(now, was, "{ctx}: sweep changed item {}", was.key);
        }
    }
    let counts = store.counts(&queue).await.expect("counts");
    assert_eq!(
        counts.0,
        recount(&after),
        "{ctx}: counters differ from a recount after the sweep"
    );
    after
}

/// The key counter survived the crash: the next key is above every existing one and every
/// journaled one (a returned-but-unjournaled push may have taken more). Returns the new key.
async fn check_next_key<B: Backend>(
    ctx: &str,
    store: &Store<B>,
    items: &[Item],
    journal: &JournalState,
) -> Key {
    let max_key = items
        .last()
        .map(|i| i.key)
        .into_iter()
        .chain(journal.pushed.last().copied())
        .max()
        .unwrap_or(0);
    // Payloads of call 0 are probes: the children count their calls from 1.
    let probe = store
        .push(&queue_id(), NewItem::new(payload(0, 0, 8)))
        .await
        .expect("probe push");
    assert!(
        probe > max_key,
        "{ctx}: next key {probe} is not above {max_key}"
    );
    probe
}

/// A clean close and reopen keeps exactly what was there, the probe push included, and has
/// nothing to repair.
async fn check_clean_reopen<T: CrashTarget>(
    target: &T,
    mode: &str,
    at: &Place,
    ctx: &str,
    items: &[Item],
    probe: Key,
) {
    let backend = target.open(at, mode).await;
    assert_eq!(
        target.repaired(&backend),
        0,
        "{ctx}: a clean close left something to repair"
    );
    let store = Store::new(backend);
    let reopened = dump_all(&store, &queue_id()).await;
    assert_eq!(reopened.len(), items.len() + 1, "{ctx}: reopen item count");
    assert_eq!(
        &reopened[..items.len()],
        items,
        "{ctx}: reopen changed items"
    );
    assert_eq!(
        reopened[items.len()].key,
        probe,
        "{ctx}: reopen lost the probe"
    );
}

async fn dump_all<B: Backend>(store: &Store<B>, queue: &QueueId) -> Vec<Item> {
    let mut dump = store.dump(queue);
    let mut items = Vec::new();
    while let Some(page) = dump.next_page().await.expect("dump page") {
        items.extend(page);
    }
    items
}

fn recount(items: &[Item]) -> BTreeMap<Phase, u64> {
    let mut counts = BTreeMap::new();
    for item in items {
        *counts.entry(item.phase.clone()).or_insert(0) += 1;
    }
    counts
}

// ---- the journal, as the parent reads it -------------------------------------------------

/// What the journal says returned `Ok`, over all rounds so far.
#[derive(Default)]
struct JournalState {
    opens: usize,
    pushed: BTreeSet<Key>,
    acked: BTreeSet<Key>,
    /// Items a delete was called for (it may have returned before the kill, unjournaled).
    deleting: BTreeSet<Key>,
    deleted: BTreeSet<Key>,
    claims: u64,
    nacked: u64,
    /// The last journaled event of each key.
    last: BTreeMap<Key, Event>,
}

enum Event {
    Pushed,
    Claimed(Timestamp),
    Acked,
    Nacked,
    Deleting,
    Deleted,
}

impl JournalState {
    fn read(path: &Path) -> Self {
        let text = fs::read_to_string(path).unwrap_or_default();
        let mut state = JournalState::default();
        // A line without its newline was torn by the kill: not a confirmed record.
        let whole = text.rfind('\n').map_or("", |i| &text[..=i]);
        for line in whole.lines() {
            let mut words = line.split(' ');
            let verb = words.next().unwrap_or_default();
            if verb == "open" {
                // `open <owner>`: a child had the store open and the queue created.
                state.opens += 1;
                continue;
            }
            let nums: Vec<u64> = words
                .map(|w| {
                    w.parse()
                        .unwrap_or_else(|_| panic!("bad journal line {line:?}"))
                })
                .collect();
            state.apply(verb, &nums, line);
        }
        state
    }

    fn apply(&mut self, verb: &str, nums: &[u64], line: &str) {
        let key = || {
            *nums
                .first()
                .unwrap_or_else(|| panic!("bad journal line {line:?}"))
        };
        match verb {
            "pushed" => {
                for &key in nums {
                    assert!(self.pushed.insert(key), "key {key} pushed twice");
                    self.last.insert(key, Event::Pushed);
                }
            }
            "claimed" => {
                self.claims += 1;
                let until = Timestamp::from_millis(key());
                for &key in &nums[1..] {
                    self.last.insert(key, Event::Claimed(until));
                }
            }
            "acked" => {
                self.acked.insert(key());
                self.last.insert(key(), Event::Acked);
            }
            "nacked" => {
                self.nacked += 1;
                self.last.insert(key(), Event::Nacked);
            }
            "deleting" => {
                self.deleting.insert(key());
                self.last.insert(key(), Event::Deleting);
            }
            "deleted" => {
                self.deleted.insert(key());
                self.last.insert(key(), Event::Deleted);
            }
            _ => panic!("bad journal line {line:?}"),
        }
    }
}

// ---- payloads ----------------------------------------------------------------------------

/// Payload `i` of the child's `n`-th call: a header saying what it is, then `len` filler
/// bytes that depend on `n` and `i`, so [`check_payload`] can tell a whole payload from a
/// torn or mixed-up one.
fn payload(n: u64, i: u64, len: usize) -> Vec<u8> {
    let mut bytes = format!("p{n}.{i}.{len}:").into_bytes();
    bytes.resize(bytes.len() + len, filler(n, i));
    bytes
}

fn filler(n: u64, i: u64) -> u8 {
    b'a' + ((n * 7 + i) % 26) as u8
}

/// Checks that `bytes` is a whole payload made by [`payload`].
fn check_payload(ctx: &str, key: Key, bytes: &[u8]) {
    let bad = || panic!("{ctx}: item {key} has a damaged payload: {bytes:?}");
    let Some(colon) = bytes.iter().position(|b| *b == b':') else {
        bad()
    };
    let header = std::str::from_utf8(&bytes[..colon]).unwrap_or_else(|_| bad());
    let nums: Vec<u64> = header
        .strip_prefix('p')
        .unwrap_or_else(|| bad())
        .split('.')
        .map(|w| w.parse().unwrap_or_else(|_| bad()))
        .collect();
    let [n, i, len] = nums[..] else { bad() };
    let body = &bytes[colon + 1..];
    if body.len() as u64 != len || body.iter().any(|b| *b != filler(n, i)) {
        bad();
    }
}

// ---- small helpers -----------------------------------------------------------------------

fn queue_id() -> QueueId {
    QueueId::new(QUEUE).expect("valid queue id")
}

/// The child's and the parent's runtime: one thread, as a small process would have.
fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("crash test: cannot build a tokio runtime: {e}"),
    }
}

fn join(keys: &[Key]) -> String {
    keys.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The number in environment variable `var`, if set; panics on one that is not a number.
fn env_number<N: std::str::FromStr<Err: fmt::Display>>(var: &str) -> Option<N> {
    let value = std::env::var(var).ok().filter(|v| !v.is_empty())?;
    match value.parse() {
        Ok(n) => Some(n),
        Err(e) => panic!("{var}={value:?} is not a number: {e}"),
    }
}

fn seed_from_time_and_pid() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

#[cfg(test)]
mod tests {
    use super::{check_payload, payload};

    #[test]
    fn payloads_check_whole_and_catch_torn_or_mixed_ones() {
        let p = payload(12, 3, 40);
        check_payload("t", 1, &p);
        let torn = std::panic::catch_unwind(|| check_payload("t", 1, &p[..p.len() - 1]));
        assert!(torn.is_err(), "a torn payload passed");
        let mut mixed = p.clone();
        let last = mixed.len() - 1;
        mixed[last] = payload(12, 4, 1)[payload(12, 4, 1).len() - 1];
        let mixed = std::panic::catch_unwind(|| check_payload("t", 1, &mixed));
        assert!(mixed.is_err(), "a mixed-up payload passed");
    }
}
