//! Crash safety of the sled backend under kill -9, through the conformance kit's harness
//! (`hookspool::conformance::crash`): a child process pushes, claims, acks, nacks and
//! deletes while the parent kills it with SIGKILL at random moments; after every kill the
//! parent reopens a copy of the store and checks that nothing a returned call reported as
//! stored was lost. `HOOKSPOOL_CRASH_ROUNDS` (default `crash::DEFAULT_ROUNDS`, 12) and
//! `HOOKSPOOL_CRASH_SEED`.

use std::time::Duration;

use hookspool::conformance::crash::{self, CrashTarget, Place};
use hookspool_sled::{Durability, SledBackend, SledOptions};

/// The batched mode's sync interval: long, so that most kills land between syncs and only
/// "the write reached the OS" protects what returned.
const BATCH_INTERVAL: Duration = Duration::from_secs(1);

/// A sled store in the place's directory: `immediate` or `batched` durability.
struct Sled;

impl CrashTarget for Sled {
    type Backend = SledBackend;

    async fn open(&self, place: &Place, mode: &str) -> SledBackend {
        let durability = match mode {
            "batched" => Durability::Periodic {
                interval: BATCH_INTERVAL,
            },
            _ => Durability::Immediate,
        };
        let options = SledOptions::default().with_durability(durability);
        SledBackend::open_with(&place.dir, options).expect("open the sled store")
    }
}

/// The child's side: works the store until it is killed. A no-op in a normal test run.
#[test]
fn crash_child() {
    crash::child(&Sled);
}

/// Pushes, claims and acks survive SIGKILL at random moments, round after round on the same
/// directory, under the default durability ([`Durability::Immediate`]).
#[test]
fn sled_survives_sigkill_at_random_moments() {
    crash::run(&Sled, "immediate");
}

/// The same under [`Durability::Periodic`]: its contract also promises that a returned call
/// survives a process crash (the write reached the OS), only power loss may take the last
/// interval.
#[test]
fn sled_batched_survives_sigkill_at_random_moments() {
    crash::run(&Sled, "batched");
}
