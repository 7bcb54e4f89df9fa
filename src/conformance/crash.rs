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

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, File};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod checks;
mod worker;

use checks::{JournalState, check_round};
use worker::Worker;

use super::support::Rng;

use crate::{Backend, Key, QueueId};

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

    /// Waits, after a kill, until nothing the killed child started can still change the
    /// store at `place`. A database server may still be running a statement the child sent
    /// just before it died, and commit it after the kill: the checks must not read the store
    /// before that. Nothing to wait for by default (a killed process writes nothing more).
    fn settle(&self, place: &Place) -> impl Future<Output = ()> + Send {
        let _ = place;
        async {}
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
