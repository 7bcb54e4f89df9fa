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
//! - **State.** In memory is a compact index: one 56-byte slot per item (phase, attempts,
//!   times, where its *blob* is and where its *note* is), plus the lease owners of the items
//!   in flight. Payloads and their metadata stay in the segment files, each item's blob with
//!   its own checksum, and are read with `pread` (nearby ones in one call) when an item is
//!   returned. So do metadata and errors set after the push: an update that sets them writes
//!   them, both as they are after it, in a note (a blob with its own checksum) inside its
//!   record, and the slot points there. A done delivery with its attempt log costs its slot,
//!   however long it is kept. Counts come from counters; claim order needs no per-item
//!   index for items pushed in order (see `state`). A page of one phase walks the slots in
//!   key order, but stops as soon as no item of the phase can be left: at once for an empty
//!   phase, after the phase's count from an end of the queue, and below the phase's lowest
//!   possible key walking down.
//! - **Reads.** No read that could block runs on an async thread, and no reader ever waits
//!   for the writer. A call that returns items (`fetch`, `pop`, `claim`, `update`) looks at
//!   the index under the state lock, reads the blobs it needs with the lock released, then
//!   takes the lock again and applies its change only if every item it returns is still
//!   where it was read (a blob never changes in place: compaction writes a copy elsewhere);
//!   otherwise it reads what changed and checks again. Records not yet written, and the last
//!   few MiB written, are copied from memory; blobs in the page cache are copied on the
//!   calling thread with `preadv2(RWF_NOWAIT)`, which fails rather than wait for the disk
//!   (Linux; not with a [`Faults`] hook set); the rest is read with `pread` on a blocking
//!   thread. Consumers of one queue (`claim`, `pop` of a page) take turns; everything else
//!   goes on while they read. Only a call overtaken by changes round after round finishes
//!   with one read under the lock, on a blocking thread (see `read`).
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
//!   [`JournalBackend::recovery`]. A missing segment that holds live items is `Corrupted`
//!   too (with `skip_corrupt`, those items are dropped and counted).
//! - **Quarantine.** An item whose blob fails its checksum when a call reads it is
//!   **quarantined**: moved to [`hookspool::Phase::CORRUPT`] with the damage as its
//!   `last_error`, by a logged record of its own (it replays, and it is durable with the next
//!   sync), and logged at error level; the call then goes on without it. So a claim hands out
//!   the other items, and `fetch`, `dump` and `pop` return a quarantined item with an empty
//!   payload (its blob is never read again) and go on with the rest; `delete` removes it.
//!   One flipped byte stops nothing but its own item.
//! - **Batched acks.** `update_many` (`Store::ack_many`, and the single `ack`, `nack` and
//!   `kill`) is one record and one sync for the whole batch, and reads no item data: the
//!   index holds all that settling needs. (One exception: an update that sets an item's
//!   metadata but not its error, or the other way round, while its note holds the other,
//!   first reads that note to carry it over.)
//!
//! - **Its own directory.** [`JournalBackend::detect`] tells whether a directory holds a
//!   journal (a checkpoint or a segment), so that a tool can open a directory with the
//!   backend that wrote it. Durability is hookspool's one setting, [`Durability`].
//!
//! It is written against hookspool's public API, depends on the engine crate alone, passes
//! the conformance kit, and has its own crash, torn-write, fault-injection and read tests.
//! Feature `testing` adds `testing::JournalCrash`, the journal as a target of the kit's
//! kill -9 harness (`hookspool::conformance::crash`), for its crash test and the torture
//! tool.
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
//! Memory grows with the number of items (56 bytes each, plus the lease owners of those in
//! flight), not with their size nor with what was recorded about them, plus the records
//! kept for readers (those not yet written, and 4 MiB of the latest written). Items last
//! changed by a version before notes keep their error and replaced metadata in memory
//! until their next change. A directory written with notes cannot be opened by such a
//! version (its checkpoint is refused as not one, its noted records as of unknown kind). A call that reads item data the page cache
//! does not hold, or more than 256 KiB of it at once, or any at all on a file system without
//! `RWF_NOWAIT` (such as tmpfs) or a system other than Linux, hands that read to a blocking
//! thread, which costs tens of microseconds per call on the development machine on top of
//! the read. Encoding a checkpoint holds the state lock: writers wait that long (a
//! whole checkpoint of a million items took 33 ms on the development machine). An item
//! whose data is damaged on disk is quarantined when read (see above); an item moved to
//! `corrupt` keeps its replaced metadata only if its note was whole. One process opens a directory at a time (`hookspool.lock`,
//! [`hookspool::Error::Locked`]).
//!
//! The module `fuzzing`, hidden from these docs, exposes the record and checkpoint decoders
//! to the fuzz targets (`fuzz/`); it is not part of the API.

mod backend;
mod calls;
mod checkpoint;
#[doc(hidden)]
pub mod fuzzing;
mod log;
mod options;
mod read;
mod record;
mod recover;
mod settle;
mod slots;
mod state;
#[cfg(feature = "testing")]
pub mod testing;
mod verify;

pub use backend::JournalBackend;
pub use options::{Faults, IoOp, JournalOptions, RecoveryReport};

/// When a mutating call returns: hookspool's one durability setting, re-exported here.
/// For the journal, [`Durability::Immediate`] returns once the call's record is
/// fdatasync'ed (group commit); [`Durability::Periodic`] once it is written to the segment
/// file, with the writer syncing every `interval`.
pub use hookspool::Durability;
