//! Crash safety of the journal backend: a child process pushes, claims, acks and nacks while
//! the parent kills it with SIGKILL at random moments; after every kill the parent reopens the
//! store and checks that nothing a returned call reported as stored was lost.
//!
//! The child runs with small segments and a small checkpoint threshold, so that kills also
//! land while a segment is being rotated (created, preallocated, synced) and while a
//! checkpoint is being written or old segments deleted. Payloads have varied sizes and carry
//! their own description, so a payload torn or mixed up by recovery is caught too.
//!
//! The test binary re-executes itself as the child (the test `crash_child`, which does nothing
//! unless `HOOKSPOOL_CRASH_CHILD_DIR` is set). After each call returns `Ok`, the child appends
//! a line to a journal file and fsyncs it, so the parent knows a lower bound of what had
//! returned before the kill. A call that returned but was not journaled yet may or may not
//! show up: the checks rely only on journaled lines, which is exactly the guarantee `push`
//! and `ack` make.
//!
//! Every round continues the same directory. The parent checks a *copy* of the store (so the
//! sweep at a far-future time and the probe push it does there do not change what the next
//! child continues from).
//!
//! Knobs: `HOOKSPOOL_CRASH_ROUNDS` (default 20) and `HOOKSPOOL_CRASH_SEED` (replays the kill
//! schedule and the children's operation mix; the seed is printed on every run).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hookspool::conformance::support::{Rng, copy_dir};
use hookspool::{
    Error, Item, Key, ManualClock, NewItem, Phase, QueueConfig, QueueId, Store, Timestamp,
};
use hookspool_journal::{Durability, JournalBackend, JournalOptions};

/// Set (to the working directory) only in the child process.
const CHILD_DIR_ENV: &str = "HOOKSPOOL_CRASH_CHILD_DIR";
/// The child's own random seed, chosen by the parent so a run can be replayed.
const CHILD_SEED_ENV: &str = "HOOKSPOOL_CRASH_CHILD_SEED";
/// The options the child opens the store with: `immediate` or `periodic` (see [`options`]).
const CHILD_MODE_ENV: &str = "HOOKSPOOL_CRASH_CHILD_MODE";
/// The periodic mode's sync interval. A call returns once its record is written to the
/// file, which `kill -9` does not undo: only a power loss could lose the last interval.
const PERIODIC_INTERVAL: Duration = Duration::from_millis(10);
/// Small segments and checkpoints: a round writes tens of KiB, so rotations and checkpoints
/// happen every round or two and some kills land in the middle of them.
const SEGMENT_SIZE: u64 = 64 << 10;
const CHECKPOINT_BYTES: u64 = 128 << 10;
const ROUNDS_ENV: &str = "HOOKSPOOL_CRASH_ROUNDS";
const SEED_ENV: &str = "HOOKSPOOL_CRASH_SEED";
/// The name of the test the child runs (`--exact` needs the full test path).
const CHILD_TEST: &str = "crash_child";
const DEFAULT_ROUNDS: u32 = 20;
const QUEUE: &str = "crash";
/// A child whose parent died (so nobody kills it) stops on its own after this long.
const CHILD_MAX_LIFETIME: Duration = Duration::from_secs(30);
/// How long the parent waits for a child to open the store before calling it hung.
const CHILD_OPEN_TIMEOUT: Duration = Duration::from_secs(20);

// ---- the child -------------------------------------------------------------------------------

/// The child's side: works the store until it is killed. A no-op in a normal test run.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let seed = std::env::var(CHILD_SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mode = std::env::var(CHILD_MODE_ENV).unwrap_or_default();
    runtime().block_on(child_work(&PathBuf::from(dir), seed, &mode));
}

/// The store's options in `mode`: `immediate` (group commit, preallocated segments) or
/// `periodic` (returns once written, syncs every 10 ms, segments grown as written).
fn options(mode: &str) -> JournalOptions {
    let (durability, preallocate) = match mode {
        "periodic" => (
            Durability::Periodic {
                interval: PERIODIC_INTERVAL,
            },
            false,
        ),
        _ => (Durability::Immediate, true),
    };
    JournalOptions {
        durability,
        segment_size: SEGMENT_SIZE,
        preallocate,
        checkpoint_bytes: CHECKPOINT_BYTES,
        ..JournalOptions::default()
    }
}

async fn child_work(dir: &Path, seed: u64, mode: &str) {
    let mut journal = Journal::open(&dir.join("journal"));
    let backend =
        JournalBackend::open_with(dir.join("store"), options(mode)).expect("child opens the store");
    let store = Store::new(backend);
    let queue = queue_id();
    match store.create_queue(QueueConfig::new(queue.clone())).await {
        Ok(_) | Err(Error::QueueExists(_)) => {}
        Err(e) => panic!("child cannot create the queue: {e}"),
    }
    let owner = format!("worker-{}", std::process::id());
    // Tells the parent the store is open and the queue exists: from here on, kills land in
    // the middle of real work.
    journal.record(&format!("open {owner}"));

    let mut rng = Rng::new(seed);
    let mut held: Vec<Key> = Vec::new();
    // Items this child acked: it deletes some, so that segments empty out and compaction and
    // segment deletion run (and get killed) too.
    let mut done: Vec<Key> = Vec::new();
    let mut n = 0u64;
    let started = Instant::now();
    while started.elapsed() < CHILD_MAX_LIFETIME {
        n += 1;
        let roll = rng.below(100);
        if roll >= 88 && !done.is_empty() {
            // Deletes keep up with acks, so that whole segments empty out.
            for _ in 0..done.len().min(4) {
                let key = done.swap_remove(rng.below(done.len() as u64) as usize);
                assert!(
                    store.delete(&queue, key).await.expect("delete"),
                    "{key} was there"
                );
                journal.record(&format!("deleted {key}"));
            }
        } else if roll < 40 || (held.is_empty() && roll >= 65) {
            // A single push, or a small batch (all or nothing).
            let size = if roll < 30 { 1 } else { 2 + rng.below(5) };
            let items = (0..size)
                .map(|i| {
                    let len = 16 + rng.below(1000) as usize;
                    NewItem::new(payload(n, i, len)).with_metadata("event", "crash.test")
                })
                .collect();
            let keys = store.push_batch(&queue, items).await.expect("push");
            journal.record(&format!("pushed {}", join(&keys)));
        } else if roll < 65 {
            // Leases of every length: short ones expire while this child runs (so its own
            // claims sweep them back), long ones are still open when the kill comes.
            let lease = [50, 400, 60_000][rng.below(3) as usize];
            let limit = 1 + rng.below(8) as usize;
            let items = store
                .claim(&queue, &owner, limit, Duration::from_millis(lease))
                .await
                .expect("claim");
            if items.is_empty() {
                continue;
            }
            let until = items
                .iter()
                .filter_map(|i| i.lease.as_ref().map(|l| l.until))
                .min()
                .expect("claimed items have leases");
            let keys: Vec<Key> = items.iter().map(|i| i.key).collect();
            journal.record(&format!("claimed {} {}", until.as_millis(), join(&keys)));
            held.extend(keys);
        } else if roll < 72 && held.len() >= 2 {
            // A batched ack: one record for all of them.
            let take = held.len().min(2 + rng.below(3) as usize);
            let keys: Vec<Key> = held.drain(..take).collect();
            ack_batch(&store, &owner, &keys, &mut journal, &mut done).await;
        } else {
            let key = held.swap_remove(rng.below(held.len() as u64) as usize);
            let result = if roll < 85 {
                store.ack(&queue, key, &owner).await.map(|()| "acked")
            } else {
                let retry_at =
                    Timestamp::now().saturating_add(Duration::from_millis(rng.below(50)));
                store
                    .nack(&queue, key, &owner, retry_at, "crash test nack")
                    .await
                    .map(|()| "nacked")
            };
            match result {
                Ok(what) => {
                    journal.record(&format!("{what} {key}"));
                    if what == "acked" {
                        done.push(key);
                    }
                }
                // The lease ran out before we settled the item: it is not ours any more. (If
                // we claimed it again and settled that claim first, it may even be deleted.)
                Err(
                    Error::NotLeaseOwner { .. }
                    | Error::PhaseConflict { .. }
                    | Error::ItemNotFound { .. },
                ) => {}
                Err(e) => panic!("settling item {key}: {e}"),
            }
        }
    }
}

/// Acks `keys` with one `ack_many` call, journaling each ack that succeeded.
async fn ack_batch(
    store: &Store<JournalBackend>,
    owner: &str,
    keys: &[Key],
    journal: &mut Journal,
    done: &mut Vec<Key>,
) {
    let results = store
        .ack_many(&queue_id(), keys, owner)
        .await
        .expect("ack_many");
    for (key, result) in keys.iter().zip(results) {
        match result {
            Ok(()) => {
                journal.record(&format!("acked {key}"));
                done.push(*key);
            }
            // As for a single ack (see `child_work`).
            Err(
                Error::NotLeaseOwner { .. }
                | Error::PhaseConflict { .. }
                | Error::ItemNotFound { .. },
            ) => {}
            Err(e) => panic!("batched ack of item {key}: {e}"),
        }
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

// ---- the parent ------------------------------------------------------------------------------

/// Pushes, claims and acks survive SIGKILL at random moments, round after round on the same
/// directory, under the default durability ([`Durability::Immediate`]), with preallocated
/// segments.
#[test]
fn journal_survives_sigkill_at_random_moments() {
    crash_rounds("immediate");
}

/// The same under [`Durability::Periodic`]: a returned call's record is in the file, which a
/// process crash does not undo (only a power loss may take the last interval); segments here
/// grow as they are written instead of being preallocated.
#[test]
fn journal_periodic_survives_sigkill_at_random_moments() {
    crash_rounds("periodic");
}

/// Runs the kill-and-check rounds with the child opening the store in `mode`.
fn crash_rounds(mode: &str) {
    let rounds: u32 = std::env::var(ROUNDS_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_ROUNDS);
    let seed: u64 = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(seed_from_time_and_pid);
    eprintln!(
        "crash test ({mode}): {rounds} rounds, seed {seed} (set {SEED_ENV}={seed} to replay)"
    );

    let root = tempfile::tempdir().expect("tempdir");
    let journal_path = root.path().join("journal");
    let stderr_path = root.path().join("child-stderr.log");
    let rt = runtime();
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let mut totals = Totals::default();

    for round in 0..rounds {
        let journal_len = fs::metadata(&journal_path).map_or(0, |m| m.len());
        let mut child = spawn_child(root.path(), mode, rng.next(), &stderr_path);
        // One round in five kills early, possibly while the child is still opening (and
        // recovering) the store; the others wait for it to be at work first.
        let delay = if rng.below(5) == 0 {
            Duration::from_millis(rng.below(40))
        } else {
            wait_until_open(&mut child, &journal_path, journal_len, &stderr_path);
            Duration::from_millis(20 + rng.below(281))
        };
        std::thread::sleep(delay);
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            child_failed(status, &stderr_path);
        }
        // `Child::kill` sends SIGKILL on Unix: no destructor, no flush, no fsync runs.
        child.0.kill().expect("kill child");
        child.0.wait().expect("reap child");

        let journal = JournalState::read(&journal_path);
        let checked = rt.block_on(check_after_crash(root.path(), mode, round, &journal));
        totals.items = checked.items;
        totals.released += checked.released;
        totals.torn_tails += u64::from(checked.truncated > 0);
        totals.journal = journal;
    }
    let (last_segment, checkpoint) = layout(&root.path().join("store"));
    let segments_left = segment_count(&root.path().join("store"));

    eprintln!(
        "crash test ({mode}): {rounds} rounds in {:?}; {} items stored; journaled: {} pushed, {} claims, \
         {} acked, {} nacked, {} deleted; {} open leases returned to pending across the \
         checks; {} torn tails cut off; last segment {last_segment} ({segments_left} left), \
         checkpoint written: {checkpoint}",
        started.elapsed(),
        totals.items,
        totals.journal.pushed.len(),
        totals.journal.claims,
        totals.journal.acked.len(),
        totals.journal.nacked,
        totals.journal.deleted.len(),
        totals.released,
        totals.torn_tails,
    );
    // A run in which the children never got to work checks nothing: fail rather than pass.
    if rounds >= DEFAULT_ROUNDS {
        assert!(totals.journal.opens > 0, "no child ever opened the store");
        assert!(!totals.journal.pushed.is_empty(), "no push was journaled");
        assert!(totals.journal.claims > 0, "no claim was journaled");
        assert!(!totals.journal.acked.is_empty(), "no ack was journaled");
        // Otherwise no kill could have landed in a rotation or a checkpoint.
        assert!(
            last_segment >= 3,
            "only {last_segment} segments were written"
        );
        assert!(checkpoint, "no checkpoint was written");
        assert!(
            !totals.journal.deleted.is_empty(),
            "no delete was journaled"
        );
        // Segments emptied by deletes were deleted themselves (or compacted away).
        assert!(
            segments_left < last_segment,
            "all {last_segment} segments are still there"
        );
    }
}

/// How many segment files the store directory holds.
fn segment_count(dir: &Path) -> u64 {
    fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("journal-"))
            .count() as u64
    })
}

#[derive(Default)]
struct Totals {
    items: usize,
    released: u64,
    torn_tails: u64,
    journal: JournalState,
}

/// What one post-crash check saw.
struct Checked {
    items: usize,
    released: u64,
    /// Bytes of a torn last record that the reopen cut off.
    truncated: u64,
}

/// Reopens (a copy of) the store after a kill and checks every invariant against the journal.
async fn check_after_crash(root: &Path, mode: &str, round: u32, journal: &JournalState) -> Checked {
    let ctx = format!("round {round}");
    let original = root.join("store");
    if !original.exists() {
        // Killed before the first child got to create the store: nothing can be journaled.
        assert_eq!(journal.opens, 0, "{ctx}: the store directory is gone");
        return Checked {
            items: 0,
            released: 0,
            truncated: 0,
        };
    }
    let copy = root.join(format!("check-{round}"));
    copy_dir(&original, &copy);
    let clock = ManualClock::new(Timestamp::now());
    let backend = JournalBackend::open_with(&copy, options(mode)).expect("reopen after the kill");
    let truncated = backend.recovery().truncated_bytes;
    let store = Store::new(backend).with_clock(clock.clone());
    let queue = queue_id();

    let checked = if store.queue(&queue).await.expect("get queue").is_none() {
        // Killed before the first child created the queue: then nothing can be journaled.
        assert_eq!(journal.opens, 0, "{ctx}: the queue was created but is gone");
        Checked {
            items: 0,
            released: 0,
            truncated,
        }
    } else {
        let before = dump_all(&store, &queue).await;
        check_items(&ctx, &before, journal);
        let counts = store.counts(&queue).await.expect("counts");
        assert_eq!(
            counts.0,
            recount(&before),
            "{ctx}: counters differ from a recount"
        );
        let after = check_leases_return(&ctx, &store, &clock, &before).await;
        let probe = check_next_key(&ctx, &store, &before, journal).await;
        drop(store);
        check_clean_reopen(&ctx, &copy, mode, &after, probe).await;
        Checked {
            items: before.len(),
            released: before.iter().filter(|i| i.lease.is_some()).count() as u64,
            truncated,
        }
    };
    fs::remove_dir_all(&copy).expect("remove check copy");
    checked
}

/// The item set after a crash: well-formed, and holding everything the journal confirms.
fn check_items(ctx: &str, items: &[Item], journal: &JournalState) {
    for pair in items.windows(2) {
        assert!(
            pair[0].key < pair[1].key,
            "{ctx}: keys out of order or repeated: {} then {}",
            pair[0].key,
            pair[1].key
        );
    }
    for item in items {
        assert!(
            [Phase::PENDING, Phase::IN_FLIGHT, Phase::DONE].contains(&item.phase),
            "{ctx}: item {} in unexpected phase {}",
            item.key,
            item.phase
        );
        check_payload(ctx, item.key, &item.payload);
        assert_eq!(
            item.phase == Phase::IN_FLIGHT,
            item.lease.is_some(),
            "{ctx}: item {} is in phase {} with lease {:?}",
            item.key,
            item.phase,
            item.lease
        );
    }
    let by_key: BTreeMap<Key, &Item> = items.iter().map(|i| (i.key, i)).collect();

    // Every push that returned Ok (and was journaled) is still there, in some phase, unless
    // it was deleted: the child deletes only items whose ack it journaled (the delete itself
    // may have returned just before the kill, unjournaled). A journaled delete never comes
    // back.
    for key in &journal.pushed {
        if journal.deleted.contains(key) {
            assert!(
                !by_key.contains_key(key),
                "{ctx}: deleted item {key} came back"
            );
        } else {
            assert!(
                by_key.contains_key(key) || journal.acked.contains(key),
                "{ctx}: journaled push {key} is lost"
            );
        }
    }
    // Nothing acked comes back: an acked item stays done (retention Keep, and nothing else
    // moves done items in this test), so in particular it is not pending; or it was deleted.
    for key in &journal.acked {
        if let Some(item) = by_key.get(key) {
            assert_eq!(
                item.phase,
                Phase::DONE,
                "{ctx}: journaled ack {key} is not done"
            );
        }
    }
    // An item whose last journaled event is a claim is still leased (by that claim or a later
    // one), or was settled or released by a call the kill kept out of the journal.
    for (key, event) in &journal.last {
        if let Event::Claimed(until) = event {
            let item = by_key
                .get(key)
                .unwrap_or_else(|| panic!("{ctx}: claimed item {key} is lost"));
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
async fn check_leases_return(
    ctx: &str,
    store: &Store<JournalBackend>,
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
async fn check_next_key(
    ctx: &str,
    store: &Store<JournalBackend>,
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
    let probe = store
        .push(&queue_id(), NewItem::new(b"probe".to_vec()))
        .await
        .expect("probe push");
    assert!(
        probe > max_key,
        "{ctx}: next key {probe} is not above {max_key}"
    );
    probe
}

/// A clean close and reopen keeps exactly what was there, the probe push included.
async fn check_clean_reopen(ctx: &str, dir: &Path, mode: &str, items: &[Item], probe: Key) {
    let backend = JournalBackend::open_with(dir, options(mode)).expect("reopen the check copy");
    assert_eq!(
        backend.recovery().truncated_bytes,
        0,
        "{ctx}: a clean close left a torn tail"
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

async fn dump_all(store: &Store<JournalBackend>, queue: &QueueId) -> Vec<Item> {
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

/// Kills and reaps the child if the parent panics, so no child outlives a failed test.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_child(dir: &Path, mode: &str, seed: u64, stderr_path: &Path) -> ChildGuard {
    let exe = std::env::current_exe().expect("current_exe");
    let stderr = File::create(stderr_path).expect("child stderr file");
    let child = Command::new(exe)
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_SEED_ENV, seed.to_string())
        .env(CHILD_MODE_ENV, mode)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn child");
    ChildGuard(child)
}

/// Waits until the child journals its `open` line (the journal grows past `len`).
fn wait_until_open(child: &mut ChildGuard, journal: &Path, len: u64, stderr: &Path) {
    let deadline = Instant::now() + CHILD_OPEN_TIMEOUT;
    while fs::metadata(journal).map_or(0, |m| m.len()) <= len {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            child_failed(status, stderr);
        }
        assert!(
            Instant::now() < deadline,
            "child did not open the store within {CHILD_OPEN_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn child_failed(status: ExitStatus, stderr: &Path) -> ! {
    let log = fs::read_to_string(stderr).unwrap_or_default();
    panic!("the child stopped by itself ({status}) instead of being killed; its stderr:\n{log}");
}

/// What the journal says returned `Ok`, over all rounds so far.
#[derive(Default)]
struct JournalState {
    opens: usize,
    pushed: BTreeSet<Key>,
    acked: BTreeSet<Key>,
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
            match verb {
                "pushed" => {
                    for &key in &nums {
                        assert!(state.pushed.insert(key), "key {key} pushed twice");
                        state.last.insert(key, Event::Pushed);
                    }
                }
                "claimed" => {
                    state.claims += 1;
                    let until = Timestamp::from_millis(nums[0]);
                    for &key in &nums[1..] {
                        state.last.insert(key, Event::Claimed(until));
                    }
                }
                "acked" => {
                    state.acked.insert(nums[0]);
                    state.last.insert(nums[0], Event::Acked);
                }
                "nacked" => {
                    state.nacked += 1;
                    state.last.insert(nums[0], Event::Nacked);
                }
                "deleted" => {
                    state.deleted.insert(nums[0]);
                    state.last.insert(nums[0], Event::Deleted);
                }
                _ => panic!("bad journal line {line:?}"),
            }
        }
        state
    }
}

/// The highest segment number in the store directory, and whether it has a checkpoint.
fn layout(dir: &Path) -> (u64, bool) {
    let Ok(entries) = fs::read_dir(dir) else {
        return (0, false);
    };
    let names: Vec<String> = entries
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let last_segment = names
        .iter()
        .filter_map(|n| {
            n.strip_prefix("journal-")?
                .strip_suffix(".log")?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0);
    (last_segment, names.iter().any(|n| n == "checkpoint"))
}

// ---- small helpers ---------------------------------------------------------------------------

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

fn queue_id() -> QueueId {
    QueueId::new(QUEUE).expect("valid queue id")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn join(keys: &[Key]) -> String {
    keys.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

fn seed_from_time_and_pid() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}
