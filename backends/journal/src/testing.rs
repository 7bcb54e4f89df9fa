//! The journal under the conformance kit's kill -9 harness (feature `testing`):
//! [`JournalCrash`], used by this crate's crash test and by the torture tool.

// Test support: panicking is how it reports (the kit's convention).
#![allow(clippy::missing_panics_doc)]

use std::fs;
use std::path::Path;
use std::time::Duration;

use hookspool::conformance::crash::{CrashTarget, DEFAULT_ROUNDS, Place, Report};

use crate::{Durability, JournalBackend, JournalOptions};

/// The periodic mode's sync interval. A call returns once its record is written to the
/// file, which `kill -9` does not undo: only a power loss could lose the last interval.
const PERIODIC_INTERVAL: Duration = Duration::from_millis(10);
/// Small segments and checkpoints: a round writes tens of KiB, so rotations and checkpoints
/// happen every round or two and some kills land in the middle of them.
const SEGMENT_SIZE: u64 = 64 << 10;
const CHECKPOINT_BYTES: u64 = 128 << 10;

/// A journal in the place's directory, with 64 KiB segments and 128 KiB checkpoints, so
/// that kills also land while a segment is rotated (created, preallocated, synced), while a
/// checkpoint is written and while emptied segments are deleted or compacted. Modes:
/// `immediate` (group commit, preallocated segments) and `periodic` (returns once written,
/// syncs every 10 ms, segments grown as written).
///
/// Beyond the kit's checks: a clean close leaves no torn tail; after a run of at least
/// [`DEFAULT_ROUNDS`] rounds, at least three segments were written, a checkpoint exists, and
/// once every queue is reset and the store closed, only the segment being written is left.
#[derive(Clone, Copy, Debug, Default)]
pub struct JournalCrash;

impl JournalCrash {
    /// The store's options in `mode`.
    pub fn options(mode: &str) -> JournalOptions {
        let (durability, preallocate) = match mode {
            "periodic" => (
                Durability::Periodic {
                    interval: PERIODIC_INTERVAL,
                },
                false,
            ),
            _ => (Durability::Immediate, true),
        };
        JournalOptions {
            durability,
            segment_size: SEGMENT_SIZE,
            preallocate,
            checkpoint_bytes: CHECKPOINT_BYTES,
            ..JournalOptions::default()
        }
    }
}

impl CrashTarget for JournalCrash {
    type Backend = JournalBackend;

    async fn open(&self, place: &Place, mode: &str) -> JournalBackend {
        JournalBackend::open_with(&place.dir, Self::options(mode)).expect("open the journal")
    }

    /// Bytes of a torn last record that the open cut off.
    fn repaired(&self, backend: &JournalBackend) -> u64 {
        backend.recovery().truncated_bytes
    }

    fn finish(&self, place: &Place, report: &Report) {
        let (last_segment, checkpoint) = layout(&place.dir);
        let segments_left = segment_count(&place.dir);
        eprintln!(
            "crash test ({}): last segment {last_segment} ({segments_left} left), checkpoint \
             written: {checkpoint}",
            report.mode
        );
        if report.rounds < DEFAULT_ROUNDS {
            return;
        }
        // Otherwise no kill could have landed in a rotation or a checkpoint.
        assert!(
            last_segment >= 3,
            "only {last_segment} segments were written"
        );
        assert!(checkpoint, "no checkpoint was written");
        // Whether the children's own deletes freed whole segments depends on how far each got
        // between two kills (a loaded machine gets less done), so the check is made on the
        // store as the kills left it, emptied: a clean open, a reset of every queue and a
        // close (which writes a checkpoint) must delete every segment but the one being
        // written. One still there means that recovery left a live reference to it.
        let left = empty_and_close(&place.dir, &report.mode);
        assert!(
            left <= 1,
            "emptied and closed, the store still has {left} segments (of {segments_left} \
             before; the last was number {last_segment})"
        );
    }
}

/// Opens the store in `dir`, resets every queue, closes it; returns how many segment files
/// are left.
fn empty_and_close(dir: &Path, mode: &str) -> u64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let backend =
            JournalBackend::open_with(dir, JournalCrash::options(mode)).expect("open the journal");
        let store = hookspool::Store::new(backend);
        for queue in store.queues().await.expect("list the queues") {
            store.reset(&queue.id).await.expect("reset a queue");
        }
    });
    segment_count(dir)
}

/// How many segment files the store directory holds.
fn segment_count(dir: &Path) -> u64 {
    fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("journal-"))
            .count() as u64
    })
}

/// The highest segment number in the store directory, and whether it has a checkpoint.
fn layout(dir: &Path) -> (u64, bool) {
    let Ok(entries) = fs::read_dir(dir) else {
        return (0, false);
    };
    let names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let last_segment = names
        .iter()
        .filter_map(|n| {
            n.strip_prefix("journal-")?
                .strip_suffix(".log")?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0);
    (last_segment, names.iter().any(|n| n == "checkpoint"))
}
