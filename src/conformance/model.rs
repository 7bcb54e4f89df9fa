//! A deliberately naive in-memory model of the `Backend` contract, random operation
//! sequences over it, and the runner that compares a real backend with the model after every
//! step.
//!
//! The model is written from the contract text in `src/backend.rs`, not from the memory
//! backend: a queue is a plain `Vec<Item>` in key order, and every operation is a linear scan.
//! That makes it slow and obviously right, which is what a reference needs to be.
//!
//! This file holds the language of a run: the [`Op`]s and the [`Outcome`]s both sides are
//! compared by. The model itself is in `reference`, the runner that drives a backend and the
//! model side by side in `harness`, and the proptest strategies in `strategy`.

use crate::{Item, Key, PhaseCounts, SweepReport, Timestamp};

mod harness;
mod reference;
mod strategy;

pub use harness::{read_all, run_ops};
pub use reference::{Model, select, tally};
pub use strategy::{cases, model_based, op_strategy, ops_strategy};

/// The queue ids an [`Op`] can name (its `queue` field is taken modulo this list's length).
pub const QUEUES: [&str; 3] = ["q0", "q1", "q2"];
/// The phases an [`Op`] can name: every built-in one (so that moves into `in_flight` are
/// tried and must be refused) and two of the caller's own.
pub const PHASES: [&str; 7] = [
    "pending",
    "in_flight",
    "done",
    "dead",
    "expired",
    "review",
    "parked",
];
/// The consumers an [`Op`] can name.
pub const OWNERS: [&str; 2] = ["w0", "w1"];
/// The clock's value when a run starts: far enough from zero that rewinding never saturates.
pub const START: Timestamp = Timestamp(1_000_000);
/// Items per page when the runner reads a queue back in full: small, so that the cursor
/// (`Page::after`) is exercised on every comparison.
const READ_PAGE: usize = 7;
/// Environment variable with the number of proptest cases [`model_based`] runs.
pub const CASES_ENV: &str = "HOOKSPOOL_PROPTEST_CASES";
/// Cases [`model_based`] runs when [`CASES_ENV`] is unset.
pub const DEFAULT_CASES: u32 = 64;
/// Longest generated operation sequence (a durable backend syncs on most of them).
pub const MAX_OPS: usize = 40;

/// One item of a [`Op::Push`] batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushSpec {
    /// The payload bytes.
    pub payload: Vec<u8>,
    /// Not handed out before `now + delay_ms` (`None`: due at once).
    pub delay_ms: Option<u64>,
    /// When set, stored as metadata entry `tag`.
    pub tag: Option<u8>,
}

/// Names an item: the `n`-th item the model holds in the queue (modulo the queue's length, so
/// it nearly always hits), or a literal key (which may well be missing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRef {
    /// The `n`-th existing item in key order; key 1 when the queue is empty or missing.
    Nth(u8),
    /// This key, whether it exists or not.
    Raw(Key),
}

/// What a [`Op::Fetch`] or [`Op::Pop`] selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Select {
    /// One item by key.
    Key(KeyRef),
    /// A page; `phase` indexes [`PHASES`].
    Page {
        /// Only this phase (index into [`PHASES`]).
        phase: Option<u8>,
        /// The cursor.
        after: Option<KeyRef>,
        /// Matching items to skip.
        offset: u8,
        /// Most items to return.
        limit: u8,
        /// Newest first.
        reverse: bool,
    },
}

/// One step of a model-based test. Every field is a small index or number, so any value is
/// valid: fuzz targets can build these from arbitrary bytes. Queue, phase and owner fields
/// index [`QUEUES`], [`PHASES`] and [`OWNERS`] (modulo their lengths).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `create_queue` with an optional TTL and retention.
    CreateQueue {
        /// Which queue.
        queue: u8,
        /// Item TTL in milliseconds (0 is treated as 1).
        ttl_ms: Option<u64>,
        /// Ack removes items ([`Retention::Remove`](crate::Retention::Remove)) instead of keeping them as `done`.
        remove_on_ack: bool,
    },
    /// `update_queue` with new settings.
    UpdateQueue {
        /// Which queue.
        queue: u8,
        /// Item TTL in milliseconds (0 is treated as 1).
        ttl_ms: Option<u64>,
        /// Ack removes items.
        remove_on_ack: bool,
    },
    /// `delete_queue`.
    DeleteQueue {
        /// Which queue.
        queue: u8,
    },
    /// `push` of a batch.
    Push {
        /// Which queue.
        queue: u8,
        /// The batch.
        items: Vec<PushSpec>,
    },
    /// `fetch`.
    Fetch {
        /// Which queue.
        queue: u8,
        /// What to select.
        select: Select,
    },
    /// `pop`.
    Pop {
        /// Which queue.
        queue: u8,
        /// What to select.
        select: Select,
    },
    /// `count`.
    Count {
        /// Which queue.
        queue: u8,
    },
    /// `reset`.
    Reset {
        /// Which queue.
        queue: u8,
    },
    /// `claim` for `lease_ms` from now.
    Claim {
        /// Which queue.
        queue: u8,
        /// Which consumer.
        owner: u8,
        /// Most items.
        limit: u8,
        /// Lease length in milliseconds.
        lease_ms: u64,
    },
    /// Ack through `update`: requires the lease; moves to `done` or removes, by retention.
    Ack {
        /// Which queue.
        queue: u8,
        /// Which item.
        key: KeyRef,
        /// Which consumer.
        owner: u8,
    },
    /// Ack of several items through one `update_many` (a key may repeat: the second ack of
    /// the same item fails on its own).
    AckMany {
        /// Which queue.
        queue: u8,
        /// Which items.
        keys: Vec<KeyRef>,
        /// Which consumer.
        owner: u8,
    },
    /// Nack through `update`: requires the lease; back to pending at `now + retry_ms`.
    Nack {
        /// Which queue.
        queue: u8,
        /// Which item.
        key: KeyRef,
        /// Which consumer.
        owner: u8,
        /// Delay before the retry, in milliseconds.
        retry_ms: u64,
    },
    /// Kill through `update`: requires the lease; moves to `dead`.
    Kill {
        /// Which queue.
        queue: u8,
        /// Which item.
        key: KeyRef,
        /// Which consumer.
        owner: u8,
    },
    /// `update` moving to a phase, optionally compare-and-set on the current phase.
    UpdatePhase {
        /// Which queue.
        queue: u8,
        /// Which item.
        key: KeyRef,
        /// The new phase (index into [`PHASES`]).
        phase: u8,
        /// Required current phase (index into [`PHASES`]).
        expect: Option<u8>,
    },
    /// `update` removing the item, optionally compare-and-set on the current phase.
    Remove {
        /// Which queue.
        queue: u8,
        /// Which item.
        key: KeyRef,
        /// Required current phase (index into [`PHASES`]).
        expect: Option<u8>,
    },
    /// `sweep`.
    Sweep {
        /// Which queue.
        queue: u8,
    },
    /// `prune` of one phase: removes its items that reached it `age_ms` or more before now,
    /// in key order, stopping at the first younger one or after `limit`.
    Prune {
        /// Which queue.
        queue: u8,
        /// Which phase (index into [`PHASES`]).
        phase: u8,
        /// How old an item must be: `before` is now minus this.
        age_ms: u64,
        /// Most items removed.
        limit: u8,
    },
    /// Moves the clock forward.
    Advance {
        /// By this many milliseconds.
        ms: u64,
    },
    /// Moves the clock backward (the contract says backends must accept it).
    Rewind {
        /// By this many milliseconds.
        ms: u64,
    },
    /// Closes and reopens the backend ([`Factory::reopen`](crate::conformance::Factory::reopen)); the model does not change.
    Reopen,
}

/// What an operation returned, in a form both sides can be compared by. Errors compare by
/// their [`Error::code`](crate::Error::code), since messages and sources are the backend's own business.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing (`create_queue`, `update_queue`, clock moves, reopen).
    Unit,
    /// A boolean (`delete_queue`).
    Bool(bool),
    /// Keys (`push`).
    Keys(Vec<Key>),
    /// Items (`fetch`, `pop`, `claim`).
    Items(Vec<Item>),
    /// One item (`update`).
    Item(Box<Item>),
    /// Counts (`count`).
    Counts(PhaseCounts),
    /// A number (`reset`, `prune`).
    Number(u64),
    /// A sweep report.
    Swept(SweepReport),
    /// An error, by code.
    Error(&'static str),
    /// One outcome per entry (`update_many`).
    Each(Vec<Outcome>),
}

impl<T> From<crate::Result<T>> for Outcome
where
    T: Into<Outcome>,
{
    fn from(r: crate::Result<T>) -> Self {
        match r {
            Ok(v) => v.into(),
            Err(e) => Outcome::Error(e.code()),
        }
    }
}

impl From<()> for Outcome {
    fn from((): ()) -> Self {
        Outcome::Unit
    }
}
impl From<bool> for Outcome {
    fn from(b: bool) -> Self {
        Outcome::Bool(b)
    }
}
impl From<Vec<Key>> for Outcome {
    fn from(k: Vec<Key>) -> Self {
        Outcome::Keys(k)
    }
}
impl From<Vec<Item>> for Outcome {
    fn from(i: Vec<Item>) -> Self {
        Outcome::Items(i)
    }
}
impl From<Item> for Outcome {
    fn from(i: Item) -> Self {
        Outcome::Item(Box::new(i))
    }
}
impl From<PhaseCounts> for Outcome {
    fn from(c: PhaseCounts) -> Self {
        Outcome::Counts(c)
    }
}
impl From<u64> for Outcome {
    fn from(n: u64) -> Self {
        Outcome::Number(n)
    }
}
impl From<Vec<crate::Result<()>>> for Outcome {
    fn from(results: Vec<crate::Result<()>>) -> Self {
        Outcome::Each(results.into_iter().map(Outcome::from).collect())
    }
}
impl From<SweepReport> for Outcome {
    fn from(r: SweepReport) -> Self {
        Outcome::Swept(r)
    }
}
