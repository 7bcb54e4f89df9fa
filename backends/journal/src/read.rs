//! Reading item data: the calls that return items (`fetch`, `pop`, `claim`, `update`) run
//! as [`Call`]s through [`run`], which reads their blobs with the state lock released and
//! off the async threads; and the one place blobs are read ([`Files`], [`pread`]).
//!
//! # Why reads happen outside the state lock
//!
//! The state lock (a `std::sync::Mutex`) is taken by every call on the caller's async
//! thread, so it must never be held across a `pread`: every other caller, and the threads
//! they run on, would wait on the disk. A call that returns items is therefore a
//! [`Call::step`] run in rounds. Under the lock, a step looks at the state as it is *now*
//! (selection, sweep, preconditions) and either finishes the call with blobs it already
//! has, applying and logging its change, or names the blobs it lacks. Those are read with
//! the lock released, on a blocking thread, and the next round takes the lock again and
//! starts over from the state as it is then.
//!
//! That is sound because the bytes at a blob's location never change: segments are
//! append-only, their numbers are never reused, and compaction (a `Relocate` record) writes
//! a *copy* at a new location and points the item there. So a blob read at location L is
//! the blob of whatever item the state still places at L when the lock is taken again,
//! and a step that has, for every item it returns or changes, the blob at that item's
//! current location does exactly what a step that had read under the lock would do: the
//! same change, the same record, the same replay. An item that moved (relocated), went
//! (popped, deleted, reset) or joined the selection (pushed, released by a sweep) in the
//! meantime costs another round, reading only what is new. Nothing is changed before the
//! round that finishes, so a step that finds a damaged blob at an item's current location
//! fails with `Corrupted` and changes nothing. (Claim's sweep is the exception by design:
//! it is a step of its own, logged before the lease, as a `sweep` call would be.)
//!
//! A failed read counts only if its location is still current when the lock is taken
//! again: a read from a segment that compaction deleted meanwhile fails, but by then the
//! item is elsewhere. A segment is deleted only once no live item points into it, and no
//! blob is ever placed in an old segment, so an item's current location is always in a
//! file that exists; a read that fails there is damage.
//!
//! Items pushed a moment ago are copied from the log's memory ([`crate::log::Log::recent`])
//! rather than read: nobody waits for the writer to put them in their file, and what joins
//! a selection during a round is mostly such items, so rounds are few. Consumers of one
//! queue (`claim`, `pop` of a page) take turns through an async gate ([`Gates`]), or they
//! would invalidate each other's reads round after round (they all want the head of the
//! queue); waiting for it blocks no thread, and it orders nothing else.
//!
//! The alternative, running the whole critical section (lock, read, apply, append) on
//! `spawn_blocking` as the sled backend does, keeps the async threads free but still makes
//! every caller of every queue wait behind each disk read, since all of them need the lock.
//!
//! After [`ROUNDS`] rounds that each found something new (a selection changing faster than
//! it can be read), the call finishes on a blocking thread that holds the lock while it
//! reads what is still missing: that bounds the call, at the price of making the others
//! wait for that last read. No async thread ever holds the lock across a read.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use hookspool::{Error, Item, QueueId, Result};

use crate::backend::{Inner, blocking};
use crate::log::segment_name;
use crate::record;
use crate::state::{Header, Loc, State};
use crate::{Faults, IoOp};

/// Blobs read with one `pread` when they lie this close together.
const READ_GAP: u64 = 4096;
/// At most this many bytes per `pread`.
const READ_RUN: u64 = 4 << 20;
/// Rounds of read-then-check before a call reads under the lock (see the module docs).
pub(crate) const ROUNDS: usize = 8;

/// A blob's metadata and payload.
pub(crate) type Blob = (BTreeMap<String, String>, Vec<u8>);

/// What a step decided.
pub(crate) enum Step<T> {
    /// The call is finished (and its change, if any, applied and appended).
    Done(T),
    /// Nothing changed yet: these blobs are needed first.
    Need(Vec<Loc>),
}

/// A call that returns items, as [`run`] drives it.
pub(crate) trait Call: Send + 'static {
    type Out: Send + 'static;

    /// The queue whose consumers this call takes turns with, if it is one of them.
    fn gate(&self) -> Option<&QueueId> {
        None
    }

    /// Under the state lock: the call finished from the state as it is now and the blobs
    /// read so far, or the blobs it lacks (and then nothing is changed, but for claim's
    /// sweep). It is called again after those are read, so it must decide from scratch
    /// each time.
    fn step(&mut self, inner: &Inner, st: &mut State, blobs: &mut Blobs)
    -> Result<Step<Self::Out>>;

    /// Without the lock, after a round's read: a call that changes nothing may finish
    /// here, from what its last step saw.
    fn after_read(&mut self, _blobs: &mut Blobs) -> Option<Result<Self::Out>> {
        None
    }
}

/// Runs a call: its steps under the state lock, its reads between them without it (see
/// the module docs).
pub(crate) async fn run<C: Call>(inner: &Arc<Inner>, mut call: C) -> Result<C::Out> {
    // Held across the reads: an async mutex, released when this returns (or the future is
    // dropped), before the caller waits for durability.
    let gate = call.gate().map(|q| inner.gates.get(q));
    let _turn = match &gate {
        Some(g) => Some(g.lock().await),
        None => None,
    };
    let mut blobs = Blobs::default();
    for _ in 0..ROUNDS {
        let step = {
            let mut st = inner.state();
            call.step(inner, &mut st, &mut blobs)?
        };
        let need = match step {
            Step::Done(out) => return Ok(out),
            Step::Need(locs) => locs,
        };
        read(inner, need, &mut blobs).await?;
        if let Some(out) = call.after_read(&mut blobs) {
            return out;
        }
    }
    let inner = Arc::clone(inner);
    blocking(move || {
        tracing::debug!("hookspool-journal: a call reads under the lock after {ROUNDS} rounds");
        let mut st = inner.state();
        // Nothing changes while the lock is held: one read completes the step.
        for _ in 0..2 {
            match call.step(&inner, &mut st, &mut blobs)? {
                Step::Done(out) => return Ok(out),
                Step::Need(locs) => blobs.read_now(&inner, &locs),
            }
        }
        Err(Error::internal(
            "a journal call still lacked item data it had just read under the lock",
        ))
    })
    .await
}

/// Reads blobs into `blobs`: those still in the log's memory at once, the others with
/// `pread` on a blocking thread.
async fn read(inner: &Arc<Inner>, locs: Vec<Loc>, blobs: &mut Blobs) -> Result<()> {
    let on_disk = blobs.copy_kept(inner, locs);
    if on_disk.is_empty() {
        return Ok(());
    }
    let inner = Arc::clone(inner);
    let read = blocking(move || {
        let faults = inner.options.faults.as_ref();
        Ok(pread(&inner.files, faults, &on_disk)
            .into_iter()
            .map(|(loc, raw)| (loc, raw.and_then(|b| decode(&b))))
            .collect::<Vec<_>>())
    })
    .await?;
    blobs.0.extend(read);
    Ok(())
}

fn decode(raw: &[u8]) -> std::result::Result<Blob, String> {
    record::decode_blob(raw).map_err(|e| match e {
        Error::Corrupted { what } => what,
        other => other.to_string(),
    })
}

/// The blobs one call has read, by location, decoded (or why they could not be).
#[derive(Default)]
pub(crate) struct Blobs(HashMap<Loc, std::result::Result<Blob, String>>);

/// What [`Blobs::take`] found.
pub(crate) enum Taken {
    /// Every blob asked for, in order.
    All(Vec<Blob>),
    /// Those not read yet.
    Missing(Vec<Loc>),
}

impl Blobs {
    /// The blobs at `locs`, in order, taken out. `Err(Corrupted)` if one could not be read
    /// or decoded: the caller asks for current locations only, so that is damage, and it
    /// must change nothing.
    pub(crate) fn take(&mut self, locs: &[Loc]) -> Result<Taken> {
        let mut missing = Vec::new();
        for loc in locs {
            match self.0.get(loc) {
                Some(Err(what)) => return Err(Error::corrupted(what.clone())),
                Some(Ok(_)) => {}
                None => missing.push(*loc),
            }
        }
        if !missing.is_empty() {
            return Ok(Taken::Missing(missing));
        }
        locs.iter()
            .map(|loc| match self.0.remove(loc) {
                Some(Ok(blob)) => Ok(blob),
                _ => Err(Error::internal("two journal items share one blob location")),
            })
            .collect::<Result<Vec<Blob>>>()
            .map(Taken::All)
    }

    /// Whether every blob at `locs` was read and decoded.
    pub(crate) fn all_read(&self, locs: impl IntoIterator<Item = Loc>) -> bool {
        locs.into_iter()
            .all(|loc| matches!(self.0.get(&loc), Some(Ok(_))))
    }

    /// Takes the blobs in the log's memory; returns the locations that are not there.
    fn copy_kept(&mut self, inner: &Inner, locs: Vec<Loc>) -> Vec<Loc> {
        let wanted: Vec<(u64, u64, u64)> = locs
            .iter()
            .map(|l| (u64::from(l.segment), u64::from(l.offset), u64::from(l.len)))
            .collect();
        let mut on_disk = Vec::new();
        for (loc, kept) in locs.into_iter().zip(inner.log.recent(&wanted)) {
            match kept {
                Some(raw) => {
                    self.0.insert(loc, decode(&raw));
                }
                None => on_disk.push(loc),
            }
        }
        on_disk
    }

    /// Reads blobs on the calling thread (a blocking one).
    fn read_now(&mut self, inner: &Inner, locs: &[Loc]) {
        let on_disk = self.copy_kept(inner, locs.to_vec());
        let faults = inner.options.faults.as_ref();
        for (loc, raw) in pread(&inner.files, faults, &on_disk) {
            self.0.insert(loc, raw.and_then(|b| decode(&b)));
        }
    }
}

/// An item from its header and its blob.
pub(crate) fn fill(header: Header, (metadata, payload): Blob) -> Item {
    let mut item = header.item;
    item.payload = payload;
    if !header.replaced_metadata {
        item.metadata = metadata;
    }
    item
}

/// Reads the bytes at `locs` (blocking), one `pread` per run of nearby ones; a run that
/// fails fails each of its blobs. The bytes must be in their files: a blob still in the
/// log's memory is taken from there first ([`Blobs`]), and one that is not has been written.
pub(crate) fn pread(
    files: &Files,
    faults: Option<&Arc<dyn Faults>>,
    locs: &[Loc],
) -> Vec<(Loc, std::result::Result<Vec<u8>, String>)> {
    let mut sorted = locs.to_vec();
    sorted.sort_unstable();
    let mut out = Vec::with_capacity(sorted.len());
    let mut i = 0;
    while i < sorted.len() {
        let first = sorted[i];
        let start = u64::from(first.offset);
        let mut end = start + u64::from(first.len);
        let mut j = i + 1;
        while j < sorted.len() {
            let l = sorted[j];
            let (from, to) = (u64::from(l.offset), u64::from(l.offset) + u64::from(l.len));
            if l.segment != first.segment || from > end + READ_GAP || to - start > READ_RUN {
                break;
            }
            end = end.max(to);
            j += 1;
        }
        let run = &sorted[i..j];
        match read_run(files, faults, first.segment, start, end) {
            Ok(buf) => out.extend(run.iter().map(|l| {
                let from = (u64::from(l.offset) - start) as usize;
                (*l, Ok(buf[from..from + l.len as usize].to_vec()))
            })),
            Err(what) => out.extend(run.iter().map(|l| (*l, Err(what.clone())))),
        }
        i = j;
    }
    out
}

fn read_run(
    files: &Files,
    faults: Option<&Arc<dyn Faults>>,
    segment: u32,
    start: u64,
    end: u64,
) -> std::result::Result<Vec<u8>, String> {
    let len = usize::try_from(end - start).map_err(|e| e.to_string())?;
    let failed = |e: &dyn std::fmt::Display| {
        format!("journal segment {segment} offset {start}: item data cannot be read: {e}")
    };
    if let Some(f) = faults {
        f.check(IoOp::Read {
            segment: u64::from(segment),
            len,
        })
        .map_err(|e| failed(&e))?;
    }
    let file = files.get(segment)?;
    let mut buf = vec![0; len];
    file.read_exact_at(&mut buf, start)
        .map_err(|e| failed(&e))?;
    Ok(buf)
}

/// Read handles of segment files, opened when first needed (on a blocking thread). A
/// handle outlives the file's deletion, so a read that got one finishes even if compaction
/// deletes the segment meanwhile; one that did not fails, and its step looks again.
#[derive(Debug)]
pub(crate) struct Files {
    dir: PathBuf,
    open: Mutex<HashMap<u32, Arc<std::fs::File>>>,
}

impl Files {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Files {
            dir,
            open: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, segment: u32) -> std::result::Result<Arc<std::fs::File>, String> {
        // Held while a file is opened: only blocking threads take it.
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(f) = open.get(&segment) {
            return Ok(Arc::clone(f));
        }
        let path = self.dir.join(segment_name(u64::from(segment)));
        let file = std::fs::File::open(&path).map_err(|e| {
            format!("journal segment {segment} holds live items but cannot be opened: {e}")
        })?;
        let file = Arc::new(file);
        open.insert(segment, Arc::clone(&file));
        Ok(file)
    }

    /// Drops the handle of a segment about to be deleted.
    pub(crate) fn forget(&self, segment: u32) {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&segment);
    }
}

/// One async mutex per queue that has consumers: `claim` and `pop` of a page take turns
/// per queue (see the module docs). It only spares them reading for nothing; correctness
/// comes from the checks under the state lock, so a queue deleted and created again
/// meanwhile may briefly have two gates, harmlessly.
#[derive(Debug, Default)]
pub(crate) struct Gates(Mutex<HashMap<QueueId, Arc<tokio::sync::Mutex<()>>>>);

impl Gates {
    fn get(&self, queue: &QueueId) -> Arc<tokio::sync::Mutex<()>> {
        let mut gates = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(gates.entry(queue.clone()).or_default())
    }

    /// Forgets a deleted queue's gate (whoever holds it keeps it until done).
    pub(crate) fn forget(&self, queue: &QueueId) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(queue);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on failure
mod tests {
    use hookspool::{Backend, NewItem, QueueConfig, Timestamp};

    use super::*;
    use crate::JournalBackend;

    /// Needs item 1's blob again in every step before step `finish_at`, as if the item
    /// moved each time; then finishes with it.
    struct Restless {
        queue: QueueId,
        steps: usize,
        finish_at: usize,
    }

    impl Call for Restless {
        type Out = (usize, Vec<u8>);

        fn step(
            &mut self,
            _: &Inner,
            st: &mut State,
            blobs: &mut Blobs,
        ) -> Result<Step<Self::Out>> {
            self.steps += 1;
            let locs = st.locs(&self.queue, &[1])?;
            if self.steps < self.finish_at {
                return Ok(Step::Need(locs));
            }
            match blobs.take(&locs)? {
                Taken::All(found) => Ok(Step::Done((self.steps, found[0].1.clone()))),
                Taken::Missing(missing) => Ok(Step::Need(missing)),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_that_keeps_finding_changes_is_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = JournalBackend::open(tmp.path()).unwrap();
        let queue = QueueId::new("q").unwrap();
        backend
            .create_queue(QueueConfig::new(queue.clone()))
            .await
            .unwrap();
        let item = NewItem::new(b"x".to_vec());
        backend
            .push(&queue, vec![item], Timestamp(1))
            .await
            .unwrap();
        let restless = |finish_at| Restless {
            queue: queue.clone(),
            steps: 0,
            finish_at,
        };
        let inner = backend.inner();
        // In the last round that reads without the lock...
        let (steps, payload) = run(inner, restless(ROUNDS)).await.unwrap();
        assert_eq!((steps, payload.as_slice()), (ROUNDS, &b"x"[..]));
        // ... or after it, reading once more under the lock, which the next step sees.
        let (steps, payload) = run(inner, restless(ROUNDS + 2)).await.unwrap();
        assert_eq!((steps, payload.as_slice()), (ROUNDS + 2, &b"x"[..]));
        // Never more: a step that still lacks what it just read is a bug, not a loop.
        match run(inner, restless(usize::MAX)).await {
            Err(Error::Internal { .. }) => {}
            other => panic!("expected Internal, got {other:?}"),
        }
    }
}
