//! The journal's settings ([`JournalOptions`]), the fault-injection hook tests use
//! ([`Faults`], [`IoOp`]), and what open reports ([`RecoveryReport`]).

use std::sync::Arc;

use crate::Durability;

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
    /// Reading `len` bytes of item data (one or more nearby blobs) from segment `segment`
    /// with one `pread`. Reads run without the state lock (see the crate docs), and while a
    /// hook is set every one of them runs on a blocking thread (the non-blocking reads from
    /// the page cache on the calling thread are skipped), so a test may block here to hold
    /// one in flight while others carry on.
    Read {
        /// Which segment.
        segment: u64,
        /// How many bytes.
        len: usize,
    },
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

/// Settings of [`crate::JournalBackend::open_with`].
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
    /// [`crate::JournalBackend::recovery`]; later records that depended on it may not
    /// replay and are skipped too.
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
