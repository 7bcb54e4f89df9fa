//! Crash safety of the journal backend under kill -9, through the conformance kit's harness
//! (`hookspool::conformance::crash`) and the journal's target for it
//! ([`hookspool_journal::testing::JournalCrash`]: 64 KiB segments and 128 KiB checkpoints,
//! so that kills land in rotations, checkpoints, segment deletion and compaction; a torn
//! tail cut off at reopen is counted, and a clean close must leave none).
//! `HOOKSPOOL_CRASH_ROUNDS` (default `crash::DEFAULT_ROUNDS`, 12) and
//! `HOOKSPOOL_CRASH_SEED`.

use hookspool::conformance::crash;
use hookspool_journal::testing::JournalCrash;

/// The child's side: works the store until it is killed. A no-op in a normal test run.
#[test]
fn crash_child() {
    crash::child(&JournalCrash);
}

/// Pushes, claims, acks and deletes survive SIGKILL at random moments, round after round on
/// the same directory, under the default durability (`Immediate`), with preallocated
/// segments.
#[test]
fn journal_survives_sigkill_at_random_moments() {
    crash::run(&JournalCrash, "immediate");
}

/// The same under `Periodic`: a returned call's record is in the file, which a process crash
/// does not undo (only a power loss may take the last interval); segments here grow as they
/// are written instead of being preallocated.
#[test]
fn journal_periodic_survives_sigkill_at_random_moments() {
    crash::run(&JournalCrash, "periodic");
}
