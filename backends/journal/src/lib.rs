//! hookspool-journal: a durable [`hookspool::Backend`] of its own design, a segmented
//! append-only log with group commit and checkpoints.
//!
//! - **Log.** Every mutating call (`create_queue`, `push`, `pop`, `update`, `claim`, `sweep`,
//!   `reset`, …) that changes something is one record appended to the current segment file:
//!   `[length][crc32][operation]`, the operation with all its inputs, its timestamp included,
//!   so that replaying it on the same state gives the same result. A record is all or
//!   nothing: one whose checksum does not hold is never applied.
//! - **Group commit.** One writer thread takes every record appended since its last round,
//!   writes them with one `pwrite` and makes them durable with one `fdatasync`; a call returns
//!   only once its own record is synced ([`Durability::Immediate`], the default).
//!   [`Durability::Periodic`] returns once the record is written to the file (it survives
//!   `kill -9`, not a power loss) and syncs on an interval: weaker, and named so.
//! - **State.** In memory is a compact index: one 48-byte slot per item (phase, attempts,
//!   times, and where its *blob* is), plus small maps for what only some items carry (lease
//!   owners, errors, replaced metadata). Payloads and their metadata stay in the segment
//!   files, each item's blob with its own checksum, and are read with `pread` (nearby ones in
//!   one call) when an item is returned. Counts come from counters; claim order needs no
//!   per-item index for items pushed in order (see `state`).
//! - **Checkpoints.** After `checkpoint_bytes` of log (64 MiB by default, or the last
//!   checkpoint's size if larger), after as much blob data in older segments has died (a
//!   queue drained), and at a clean close, the index is written to the `checkpoint` file (a
//!   temporary name, synced, renamed, directory synced) with the log position it stands for:
//!   open loads it and replays only the records after that position. About 12 bytes an item.
//! - **Space.** A segment before the checkpoint whose items are all gone is deleted; one
//!   that is less than half live is compacted: its live blobs are copied to the end of the
//!   log (a record per megabyte, writers wait only for that), then it is deleted. At a clean
//!   close the preallocated tail of the last segment is given back.
//! - **Segments** are preallocated with zeros (writing into allocated bytes needs no metadata
//!   journal commit, so each fdatasync is cheaper) and the directory is synced whenever a
//!   segment or the checkpoint is created, renamed or deleted. A failed write or sync of the
//!   log **poisons** the backend: every later call fails with [`hookspool::Error::Poisoned`]
//!   until it is reopened, which recovers from what is on disk. A failed checkpoint does not:
//!   it never touches the log, the previous checkpoint stays in force, and the next threshold
//!   tries again.
//! - **Recovery.** A torn last record (a crash mid-write) is cut off at open; the store always
//!   opens. A damaged record elsewhere (a checksum that fails with valid records after it) is
//!   reported as [`hookspool::Error::Corrupted`], never returned as data; with
//!   [`JournalOptions::skip_corrupt`] open skips it and counts it in
//!   [`JournalBackend::recovery`]. An item whose blob fails its checksum when read is
//!   reported the same way, and the call that read it changes nothing. A missing segment that
//!   holds live items is `Corrupted` too (with `skip_corrupt`, those items are dropped and
//!   counted).
//! - **Batched acks.** `update_many` (`Store::ack_many`) is one record and one sync for the
//!   whole batch.
//!
//! It is written against hookspool's public API, passes the conformance kit, and has its
//! own crash, torn-write and fault-injection tests.
//!
//! # Example
//!
//! ```
//! use hookspool::{NewItem, QueueConfig, QueueId, Store};
//! use hookspool_journal::JournalBackend;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> hookspool::Result<()> {
//! # let tmp = tempfile::tempdir().unwrap();
//! # let dir = tmp.path().join("data");
//! let store = Store::new(JournalBackend::open(&dir)?);
//! let orders = QueueId::new("orders")?;
//! store.create_queue(QueueConfig::new(orders.clone())).await?;
//! // Returns once the record is on the device (Durability::Immediate).
//! store.push(&orders, NewItem::new(br#"{"id":1}"#.to_vec())).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Limits
//!
//! Memory grows with the number of items (48 bytes each, plus the strings of leased or
//! failed items), not with their size. Encoding a checkpoint holds the state lock: writers
//! wait that long (a whole checkpoint of a million items took 33 ms on the development
//! machine). An item whose data is damaged on disk
//! cannot be read, popped, claimed or acked (each would return it): it is reported, never
//! returned, and stays until its queue is reset or deleted. One process opens a directory
//! at a time (`hookspool.lock`, [`hookspool::Error::Locked`]).

mod backend;
mod log;
mod record;
mod recover;
mod slots;
mod state;

use std::sync::Arc;

pub use backend::JournalBackend;

/// When a mutating call returns: hookspool's one durability setting, re-exported here.
/// For the journal, [`Durability::Immediate`] returns once the call's record is
/// fdatasync'ed (group commit); [`Durability::Periodic`] once it is written to the segment
/// file, with the writer syncing every `interval`.
pub use hookspool::Durability;

/// An I/O step the journal is about to take, as shown to [`Faults`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoOp {
    /// Writing `len` bytes of records to segment `segment` (0: the checkpoint file).
    Write {
        /// How many bytes.
        len: usize,
        /// Which segment.
        segment: u64,
    },
    /// An fdatasync or fsync of a file.
    Sync,
    /// An fsync of the directory.
    SyncDir,
    /// Creating a segment file.
    CreateSegment,
}

/// Fault injection for tests: called before each I/O step; an error makes that step fail
/// as if the operating system had failed it.
pub trait Faults: Send + Sync + std::fmt::Debug {
    /// `Err` to fail the step.
    ///
    /// # Errors
    /// The error the step fails with.
    fn check(&self, op: IoOp) -> std::io::Result<()>;
}

/// Settings of [`JournalBackend::open_with`].
#[derive(Clone, Debug)]
pub struct JournalOptions {
    /// When calls return (default [`Durability::Immediate`]).
    pub durability: Durability,
    /// Size of a segment file (default 32 MiB).
    pub segment_size: u64,
    /// Whether new segments are filled with zeros up front (default `true`).
    pub preallocate: bool,
    /// Log bytes after which a checkpoint is written (default 64 MiB; at least the size of
    /// the last checkpoint, so that checkpoints never write more than the log did). A
    /// checkpoint is also written when the checkpoint and log on disk exceed twice the live
    /// state by more than half this (a drained queue gives its space back).
    pub checkpoint_bytes: u64,
    /// Open even if records in the middle of the log are damaged, skipping them (default
    /// `false`: such a log is refused with `Corrupted`). What was skipped is counted in
    /// [`JournalBackend::recovery`]; later records that depended on it may not replay and are
    /// skipped too.
    pub skip_corrupt: bool,
    /// Write a checkpoint when the store is closed (the last handle dropped) if anything
    /// changed since the last one (default `true`): the next open then replays nothing. A
    /// crash skips it, and open replays the log instead.
    pub checkpoint_on_close: bool,
    /// Fault injection (tests).
    pub faults: Option<Arc<dyn Faults>>,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions {
            durability: Durability::Immediate,
            segment_size: 32 << 20,
            preallocate: true,
            checkpoint_bytes: 64 << 20,
            skip_corrupt: false,
            checkpoint_on_close: true,
            faults: None,
        }
    }
}

/// What open found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Records replayed on top of the checkpoint.
    pub replayed_records: u64,
    /// Bytes of a torn last record cut off (0 if the log ended cleanly).
    pub truncated_bytes: u64,
    /// Damaged or unreplayable records skipped ([`JournalOptions::skip_corrupt`] only).
    pub skipped_records: u64,
    /// Items dropped because the segment holding their data is missing
    /// ([`JournalOptions::skip_corrupt`] only).
    pub skipped_items: u64,
}
