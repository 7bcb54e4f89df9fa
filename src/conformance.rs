//! The conformance kit: proves that a [`Backend`] keeps the contract, one named property at
//! a time, plus a model-based test over random operation sequences.
//!
//! # For backend authors
//!
//! Enable the `conformance` feature of `hookspool` in your dev-dependencies, implement
//! [`Factory`] for your backend (a fresh, empty backend per call, and a way to reopen the same
//! storage as a restart would), and add one line to a test file:
//!
//! ```ignore
//! // tests/conformance.rs of crate `my-backend`, with
//! // [dev-dependencies] hookspool = { version = "0.1", features = ["conformance"] }, tempfile = "3"
//! use hookspool::conformance::Factory;
//! use my_backend::FileBackend;
//!
//! struct FileFactory;
//!
//! impl Factory for FileFactory {
//!     type Backend = FileBackend;
//!
//!     async fn create(&self) -> FileBackend {
//!         // Leak the temp dir so it outlives the backend (and every reopen of it).
//!         let dir = tempfile::tempdir().unwrap().keep();
//!         FileBackend::open(dir).unwrap()
//!     }
//!
//!     async fn reopen(&self, backend: FileBackend) -> FileBackend {
//!         let dir = backend.path().to_owned();
//!         drop(backend); // close it first: the directory is locked while it is open
//!         FileBackend::open(dir).unwrap()
//!     }
//!
//!     fn durable(&self) -> bool {
//!         true
//!     }
//! }
//!
//! hookspool::conformance_tests!(FileFactory);
//! ```
//!
//! The macro expands to one `#[test]` per property, named after it (so `cargo test` shows
//! `push_assigns_increasing_keys ... FAILED` and the panic says what broke), plus
//! `model_based`. Each test builds its own tokio runtime: you need no tokio dev-dependency.
//! Run a single property with `cargo test push_assigns`; make the model test run longer with
//! `HOOKSPOOL_PROPTEST_CASES=1000 cargo test model_based`.
//!
//! You can also call the properties yourself (they are `async fn`s taking `&impl Factory`),
//! for example from a `#[tokio::test]`, and drive [`model::run_ops`] from a fuzz target.
//!
//! What the kit pins beyond the contract's words: in sequential use, keys of a queue are
//! exactly `1, 2, 3, …` (for every backend: a push that fails, for example on a missing
//! queue, must not use up keys); under concurrent pushes, exactly `1..=n` with consecutive
//! batches where the backend claims [`crate::Capabilities::gapless_keys`], and unique,
//! increasing keys where it does not;
//! a recreated queue starts again at key 1 (`delete_queue` "forgets the counter"); a sweep
//! releases expired leases *before* applying the TTL, so a released item past its TTL is
//! expired in the same sweep; errors are compared by [`crate::Error::code`].
//!
//! Every function here panics on a contract violation: that is how a test fails.
//!
//! # Kill -9
//!
//! [`crash`] tests a durable backend against real process crashes: a child process (the
//! test binary run again) works a store while the parent kills it with SIGKILL at random
//! moments, then reopens it and checks that nothing a returned call reported as stored was
//! lost, that leases come back, keys continue and counts match a recount. Implement
//! [`crash::CrashTarget`] (how to open your store at a [`crash::Place`] in a named mode) and
//! add two tests: `crash_child` calling [`crash::child`], and one calling [`crash::run`] per
//! mode. `HOOKSPOOL_CRASH_ROUNDS` sets the rounds, `HOOKSPOOL_CRASH_SEED` replays a run.
//!
//! [`Backend`]: crate::Backend

// Every public function in this module panics on a contract violation by design (that is how
// a test reports failure); the module doc says so once instead of on each function.
#![allow(clippy::missing_panics_doc)]

use std::future::Future;

use crate::{Backend, MemoryBackend};

pub mod crash;
pub mod model;
mod properties;
pub mod support;

pub use properties::*;

/// Builds backends for the kit: a fresh one per property, and the same one reopened.
pub trait Factory: Send + Sync + 'static {
    /// The backend under test.
    type Backend: Backend;

    /// A fresh, empty backend on storage of its own (e.g. a new temp dir per call).
    fn create(&self) -> impl Future<Output = Self::Backend> + Send;

    /// Closes `backend` (drops it) and opens the same storage again, as a process restart
    /// would. A non-durable backend returns it unchanged.
    fn reopen(&self, backend: Self::Backend) -> impl Future<Output = Self::Backend> + Send;

    /// Whether data survives [`Factory::reopen`] because it was stored, not because the
    /// handle was kept.
    fn durable(&self) -> bool;
}

/// The [`Factory`] for [`MemoryBackend`]: a new empty backend per call; `reopen` keeps it
/// (memory is not durable, so a real restart would lose everything).
#[derive(Clone, Copy, Debug, Default)]
pub struct MemoryFactory;

impl Factory for MemoryFactory {
    type Backend = MemoryBackend;

    async fn create(&self) -> MemoryBackend {
        MemoryBackend::new()
    }

    async fn reopen(&self, backend: MemoryBackend) -> MemoryBackend {
        backend
    }

    fn durable(&self) -> bool {
        false
    }
}

/// Support for [`conformance_tests!`](crate::conformance_tests); not a public API.
#[doc(hidden)]
pub mod __private {
    use std::future::Future;

    /// A runtime for one test: multi-threaded, so that the concurrency properties really
    /// run in parallel, and small, because tests run in parallel too.
    pub fn runtime() -> tokio::runtime::Runtime {
        match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => panic!("conformance kit: cannot build a tokio runtime: {e}"),
        }
    }

    /// Runs a property to completion on a fresh runtime.
    pub fn block_on<T>(fut: impl Future<Output = T>) -> T {
        runtime().block_on(fut)
    }
}

/// Expands to one `#[test]` per conformance property, plus `model_based`, for the
/// [`Factory`](crate::conformance::Factory) expression given (evaluated once per test).
///
/// ```ignore
/// hookspool::conformance_tests!(hookspool::conformance::MemoryFactory);
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr $(,)?) => {
        $crate::conformance_tests!(@each $factory;
            create_queue_stores_config_as_given
            create_existing_queue_is_queue_exists
            list_queues_is_sorted_by_id
            update_queue_keeps_created_at_items_and_keys
            delete_queue_removes_it_and_its_items
            unknown_queue_is_queue_not_found
            push_assigns_increasing_keys
            push_sets_item_fields
            push_batches_get_consecutive_keys_under_concurrency
            keys_are_never_reused
            fetch_by_key
            fetch_pages_select_phase_cursor_offset_limit_reverse
            fetch_changes_nothing
            pop_removes_exactly_what_it_returns
            concurrent_pops_never_return_an_item_twice
            count_matches_contents_after_every_change
            reset_removes_items_and_keeps_the_key_counter
            update_moves_to_custom_phase_and_back
            update_replaces_metadata_when_given
            update_compare_and_set_conflict_changes_nothing
            update_into_in_flight_is_refused
            update_missing_item_is_item_not_found
            update_remove_returns_the_item_and_removes_it
            claim_orders_by_not_before_then_key
            claim_respects_limit_and_not_before
            claim_sets_lease_and_counts_the_attempt
            claim_takes_only_pending_items
            concurrent_claims_never_share_an_item
            settling_needs_the_lease_owner
            update_many_settles_each_entry_like_update
            update_many_of_moves_reports_each_failed_entry
            update_many_of_one_owners_leases_reports_each_failed_entry
            update_many_survives_reopen
            claim_without_sync_is_a_claim_made_durable_by_the_next_write
            reclaimed_item_rejects_the_old_owner
            expired_lease_returns_to_pending_on_claim
            expired_lease_returns_to_pending_on_sweep
            ttl_moves_old_pending_items_to_expired
            ttl_expired_items_are_never_claimed
            time_going_backwards_breaks_nothing
            ttl_holds_when_the_clock_goes_backwards
            reopen_keeps_everything
            store_consumer_protocol_round_trip
            store_lease_expiry_hands_the_item_to_the_next_consumer
            store_pop_and_claim_skip_ttl_expired_items
            store_dump_returns_every_item_once
            once_runs_the_write_once_per_name
            queue_settings_keep_retention_periods
            prune_removes_old_items_of_one_phase_in_key_order
            prune_is_durable
            store_prune_applies_the_retain_periods
        );

        #[test]
        fn model_based() {
            $crate::conformance::model::model_based(&$factory);
        }
    };
    (@each $factory:expr; $($name:ident)*) => {
        $(
            #[test]
            fn $name() {
                let factory = $factory;
                $crate::conformance::__private::block_on(
                    $crate::conformance::$name(&factory),
                );
            }
        )*
    };
}
