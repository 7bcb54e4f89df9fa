//! The `cli` target: concurrent `hookspool push` processes on one data directory, killed.
//!
//! Each cycle keeps [`WRITERS`] push processes running (a new one as soon as one ends) and,
//! at a random moment, SIGKILLs every one still running: in its open (recovery), its push
//! (the fsync), or its clean close (the checkpoint). They share the directory through its
//! lock: a push that finds it taken exits with 3 after its retries and changes nothing (it
//! is not counted). After each kill the directory is reopened in this process and checked:
//! every push that printed its key holds its payload under that key; no payload is stored
//! twice; no item holds a payload that no push was given; counts match a recount.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hookspool::conformance::support::Rng;
use hookspool::{Item, QueueId, Store};
use hookspool_journal::JournalBackend;

use crate::Outcome;
use crate::common::{BenchResult, scratch};

/// Push processes running at once.
const WRITERS: usize = 4;
const QUEUE: &str = "torture";
/// The CLI's exit code for a data directory in use by another process.
const EXIT_LOCKED: i32 = 3;

/// What the pushes of all cycles so far came to.
#[derive(Default)]
struct Ledger {
    /// Payload → the key its push printed.
    acked: HashMap<String, u64>,
    /// Payloads whose push was killed (stored or not).
    killed: HashSet<String>,
    /// Pushes that found the directory locked.
    busy: usize,
    failed_starts: usize,
}

/// Runs `cycles` kill cycles of `bin` on a data directory under `root`.
pub fn torture(bin: &Path, root: &Path, cycles: usize, seed: u64) -> BenchResult<Outcome> {
    let scratch = scratch(root, "torture-cli")?;
    let data = scratch.path().join("data");
    let status = cli(bin, &data)
        .args(["queue", "create", QUEUE])
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        return Err(format!("hookspool queue create: {status}").into());
    }
    let mut rng = Rng::new(seed ^ 0xC11);
    let mut ledger = Ledger::default();
    let mut findings = Findings::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let mut next = 0u64;
    for cycle in 0..cycles {
        // One cycle in five is killed within 15 ms (mostly while opening), the others
        // within 300 ms.
        let window = if rng.below(5) == 0 { 15 } else { 300 };
        let kill_at = Instant::now() + Duration::from_millis(rng.below(window));
        run_cycle(bin, &data, kill_at, &mut next, &mut ledger)?;
        findings = rt
            .block_on(check(&data, &ledger))
            .map_err(|e| format!("cycle {cycle}: {e}"))?;
        crate::progress("cli", cycle, ledger.acked.len());
    }
    Ok(Outcome {
        cycles,
        acknowledged: ledger.acked.len(),
        lost: findings.lost,
        duplicated: findings.duplicated,
        duplicates_fail: true,
        failed_starts: ledger.failed_starts,
        elapsed: started.elapsed(),
        notes: format!(
            "{WRITERS} push processes at a time, journal; {} killed mid-push ({} of them \
             stored), {} found the directory locked",
            ledger.killed.len(),
            findings.killed_stored,
            ledger.busy
        ),
    })
}

/// `hookspool --data-dir DATA` with no settings from this environment.
fn cli(bin: &Path, data: &Path) -> Command {
    let mut cmd = Command::new(bin);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HOOKSPOOL_") {
            cmd.env_remove(key);
        }
    }
    cmd.arg("--data-dir").arg(data).stdin(Stdio::null());
    cmd
}

/// Keeps [`WRITERS`] pushes running until `kill_at`, then SIGKILLs those still running.
fn run_cycle(
    bin: &Path,
    data: &Path,
    kill_at: Instant,
    next: &mut u64,
    ledger: &mut Ledger,
) -> BenchResult<()> {
    let mut running: Vec<(Child, String)> = Vec::new();
    while Instant::now() < kill_at {
        while running.len() < WRITERS {
            *next += 1;
            let payload = format!("torture-cli-{next}");
            let child = cli(bin, data)
                .args(["push", QUEUE, "--data", &payload])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?;
            running.push((child, payload));
        }
        let mut i = 0;
        while i < running.len() {
            if running[i].0.try_wait()?.is_some() {
                let (child, payload) = running.swap_remove(i);
                settle(child, payload, ledger)?;
            } else {
                i += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    for (mut child, payload) in running {
        // `Child::kill` sends SIGKILL on Unix. One that ended just before is judged by
        // its exit like any other.
        let _ = child.kill();
        let status = child.wait()?;
        if status.code().is_some() {
            settle(child, payload, ledger)?;
        } else {
            ledger.killed.insert(payload);
        }
    }
    Ok(())
}

/// Judges a push that ended by itself: exit 0 with its key, or 3 (locked).
fn settle(mut child: Child, payload: String, ledger: &mut Ledger) -> BenchResult<()> {
    let status = child.wait()?;
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        s.read_to_string(&mut out)?;
    }
    if let Some(mut s) = child.stderr.take() {
        s.read_to_string(&mut err)?;
    }
    match (status.code(), out.trim().parse::<u64>()) {
        (Some(0), Ok(key)) => {
            ledger.acked.insert(payload, key);
        }
        (Some(EXIT_LOCKED), _) => ledger.busy += 1,
        _ => {
            eprintln!("torture cli: push {payload:?} ended with {status}: {out}{err}");
            ledger.failed_starts += 1;
        }
    }
    Ok(())
}

#[derive(Default)]
struct Findings {
    lost: usize,
    duplicated: usize,
    killed_stored: usize,
}

/// Reopens the directory and checks it against the ledger.
async fn check(data: &Path, ledger: &Ledger) -> BenchResult<Findings> {
    let store = Store::new(JournalBackend::open(data)?);
    let queue = QueueId::new(QUEUE)?;
    let mut items: Vec<Item> = Vec::new();
    let mut dump = store.dump(&queue);
    while let Some(page) = dump.next_page().await? {
        items.extend(page);
    }
    let counts = store.counts(&queue).await?;
    if counts.total() != items.len() as u64 {
        return Err(format!(
            "counts say {} items, the dump has {}",
            counts.total(),
            items.len()
        )
        .into());
    }
    let mut by_payload: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for item in &items {
        let payload = String::from_utf8_lossy(&item.payload).into_owned();
        by_payload.entry(payload).or_default().push(item.key);
    }
    let mut found = Findings::default();
    for (payload, key) in &ledger.acked {
        match by_payload.get(payload).map(Vec::as_slice) {
            Some([k]) if k == key => {}
            Some([_]) | None => found.lost += 1,
            Some(_) => found.duplicated += 1,
        }
    }
    for payload in &ledger.killed {
        match by_payload.get(payload).map(Vec::len) {
            Some(1) => found.killed_stored += 1,
            Some(_) => found.duplicated += 1,
            None => {}
        }
    }
    let unknown = by_payload
        .keys()
        .filter(|p| !ledger.acked.contains_key(*p) && !ledger.killed.contains(*p))
        .count();
    if unknown > 0 {
        return Err(format!("{unknown} items hold payloads no push was given").into());
    }
    Ok(found)
}
