//! The kill -9 harness of the conformance kit can fail: a backend that forgets everything at
//! a restart (the memory backend, opened afresh after every kill) is caught at the first
//! check after a child had the store open.

use hookspool::MemoryBackend;
use hookspool::conformance::crash::{self, Crash, CrashTarget, Place};

/// The full path of [`crash_child`] in this test binary (`--exact` needs it).
const CHILD: &str = "crash_kit::crash_child";

/// A store that keeps nothing across processes: each open is a new, empty memory backend.
struct Forgetful;

impl CrashTarget for Forgetful {
    type Backend = MemoryBackend;

    async fn open(&self, _place: &Place, _mode: &str) -> MemoryBackend {
        MemoryBackend::new()
    }

    fn copyable(&self) -> bool {
        false
    }
}

/// The child's side: a no-op in a normal test run.
#[test]
fn crash_child() {
    crash::child(&Forgetful);
}

/// Seed 1 waits for the first child to open the store before killing it, so the first
/// check finds the queue (and everything the child journaled) gone.
#[test]
#[should_panic(expected = "the queue was created but is gone")]
fn a_backend_that_forgets_at_restart_fails_the_crash_test() {
    Crash::new("memory")
        .rounds(3)
        .seed(1)
        .child_args(["--exact", CHILD, "--nocapture", "--test-threads=1"])
        .run(&Forgetful);
}
