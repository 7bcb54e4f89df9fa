//! Torture: kill -9, over and over, of the three ways hookspool runs, each checked for
//! what it acknowledged.
//!
//! - `library`: the conformance kit's kill -9 harness (`hookspool::conformance::crash`) on
//!   the journal backend (the default), one child per cycle, with 64 KiB segments and 128 KiB
//!   checkpoints (`hookspool_journal::testing::JournalCrash`).
//! - `cli`: several concurrent `hookspool push` processes on one data directory (taking
//!   turns through its lock), all killed at a random moment of each cycle; after each kill
//!   the directory is reopened and every push that printed its key must be there with its
//!   payload, once.
//! - `daemon`: `hookspool serve` under publishing clients, delivering to a verifying
//!   loopback receiver, killed at a random moment of each cycle and started again; at the
//!   end every publish answered 202 must have been delivered (signature verified).
//!
//! For each it prints cycles, acknowledged (calls that returned `Ok`, pushes that printed
//! their key, publishes answered 202), lost, duplicated (for the daemon, deliveries that
//! arrived more than once: at-least-once delivery allows them after a kill) and failed starts
//! (a process that stopped by itself instead of being killed, or did not start). It fails
//! on anything lost, duplicated by a store, or a failed start.
//!
//! `cargo bench -p hookspool-benches --bench torture [-- library|cli|daemon]`: 1,000 cycles
//! of each (`HOOKSPOOL_TORTURE_CYCLES=N`); `HOOKSPOOL_CRASH_SEED=S` replays the kill moments.
//! Without `--bench` (`cargo test --benches`, CI) it runs 3 cycles of each. It builds the
//! release `hookspool` binary first unless `HOOKSPOOL_BIN` names one.

// Counts stay far below 2^52, where f64 would start rounding them (benches/common uses f64).
#![allow(clippy::cast_precision_loss)]

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod daemon;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hookspool::conformance::crash::{self, Crash, SEED_ENV};
use hookspool_journal::testing::JournalCrash;

use common::daemon::daemon_binary;
use common::table::Table;
use common::{BenchResult, Settings, data_root, load_average, print_footer};

/// The targets, in the order they run (a filter argument picks some).
const TARGETS: [&str; 3] = ["library", "cli", "daemon"];
/// Cycles per target.
const CYCLES_ENV: &str = "HOOKSPOOL_TORTURE_CYCLES";

/// What one target's cycles came to.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Kills.
    pub cycles: usize,
    /// Calls that returned success to their caller.
    pub acknowledged: usize,
    /// Acknowledged writes missing afterwards.
    pub lost: usize,
    /// Items stored (or deliveries received) more than once.
    pub duplicated: usize,
    /// Whether `duplicated` is a failure (for the daemon's deliveries it is not: at least
    /// once).
    pub duplicates_fail: bool,
    /// Processes that stopped by themselves instead of being killed, or did not start.
    pub failed_starts: usize,
    /// How long it took.
    pub elapsed: Duration,
    /// What else is worth saying.
    pub notes: String,
}

impl Outcome {
    fn failed(&self) -> bool {
        self.lost > 0 || (self.duplicates_fail && self.duplicated > 0) || self.failed_starts > 0
    }
}

fn main() -> BenchResult<()> {
    // Re-executed by the library target's harness as its child.
    if crash::child(&JournalCrash) {
        return Ok(());
    }
    let settings = Settings::from_env()?;
    let cycles = settings.count(CYCLES_ENV, 1_000, 3)?;
    let seed = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(seed_from_time);
    let (root, fs_desc) = data_root(env!("CARGO_TARGET_TMPDIR"))?;
    print_header(&settings, cycles, seed, &fs_desc);
    let mut table = Table::new(
        "kill -9 cycles",
        &[
            "target",
            "cycles",
            "acknowledged",
            "lost",
            "duplicated",
            "failed starts",
            "time",
            "notes",
        ],
    );
    let mut failed = Vec::new();
    let bin = if settings.wants("cli") || settings.wants("daemon") {
        Some(daemon_binary(settings.smoke)?)
    } else {
        None
    };
    for name in TARGETS {
        if !settings.wants(name) {
            continue;
        }
        eprintln!("torture: {cycles} cycles of {name}");
        let run = || match (name, &bin) {
            ("library", _) => Ok(library(cycles, seed)),
            ("cli", Some(bin)) => cli::torture(bin, &root, cycles, seed),
            ("daemon", Some(bin)) => daemon::torture(bin, &root, cycles, seed),
            _ => Err("no hookspool binary".into()),
        };
        let outcome = catch_unwind(AssertUnwindSafe(run)).unwrap_or_else(|panic| {
            Err(format!("panicked: {}", panic_message(panic.as_ref())).into())
        });
        match outcome {
            Ok(o) => {
                if o.failed() {
                    failed.push(format!("{name}: {o:?}"));
                }
                table.row(row(name, &o));
            }
            Err(e) => {
                failed.push(format!("{name}: {e}"));
                table.row(vec![name.to_owned(), format!("FAILED: {e}")]);
            }
        }
    }
    table.print();
    print_footer();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("torture failed: {}", failed.join("; ")).into())
    }
}

/// What, where and how this run tortures.
fn print_header(settings: &Settings, cycles: usize, seed: u64, fs_desc: &str) {
    println!("## hookspool torture\n");
    if settings.smoke {
        println!("SMOKE RUN (no `--bench` argument): a few cycles, to prove it works.\n");
    }
    println!("- cycles per target: {cycles}");
    println!("- seed: {seed} ({SEED_ENV}={seed} replays the kill moments)");
    println!("- data dir filesystem: {fs_desc}");
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    println!(
        "- machine: {cpus} CPUs; load average at start: {}\n",
        load_average()
    );
}

/// The kit's harness on the journal, re-executing this binary as the child, counting what
/// it finds instead of stopping at it.
fn library(cycles: usize, seed: u64) -> Outcome {
    let rounds = u32::try_from(cycles).unwrap_or(u32::MAX);
    let started = Instant::now();
    let report = Crash::new("immediate")
        .rounds(rounds)
        .seed(seed)
        .child_args(Vec::<String>::new())
        .keep_going(true)
        .run(&JournalCrash);
    Outcome {
        cycles,
        acknowledged: report.pushed,
        lost: report.lost,
        duplicated: report.duplicated,
        duplicates_fail: true,
        failed_starts: report.failed_starts as usize,
        elapsed: started.elapsed(),
        notes: format!(
            "journal, Immediate; also {} claims, {} acks, {} nacks, {} deletes returned; {} \
             reopens cut a torn tail",
            report.claims, report.acked, report.nacked, report.deleted, report.repaired
        ),
    }
}

/// A line on stderr every 100 cycles, so that a long run shows where it is.
fn progress(target: &str, cycle: usize, acknowledged: usize) {
    if (cycle + 1).is_multiple_of(100) {
        eprintln!(
            "torture: {target}: {} cycles, {acknowledged} acknowledged",
            cycle + 1
        );
    }
}

fn row(name: &str, o: &Outcome) -> Vec<String> {
    vec![
        name.to_owned(),
        o.cycles.to_string(),
        o.acknowledged.to_string(),
        o.lost.to_string(),
        o.duplicated.to_string(),
        o.failed_starts.to_string(),
        format!("{:.0} s", o.elapsed.as_secs_f64()),
        o.notes.clone(),
    ]
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "(no message)".to_owned())
}

fn seed_from_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id())
}
