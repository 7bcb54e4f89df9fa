//! Reading item data: the calls that return items (`fetch`, `pop`, `claim`, `update`) run
//! as [`Call`]s through [`run`], which reads their blobs with the state lock released,
//! without blocking an async thread; and the one place blobs are read ([`Files`],
//! [`pread`], and its non-blocking twin [`Blobs::read_cached`]).
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
//! round that finishes, with two exceptions, each logged as a record of its own before the
//! call's: claim's sweep (as a `sweep` call would be), and the quarantine of an item whose
//! blob a step found damaged at its current location (it moves to phase `corrupt`, and the
//! next round goes on without reading it).
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
//!
//! # Reads from the page cache stay on the calling thread
//!
//! Handing a read to a blocking thread costs tens of microseconds (about 45 µs on the
//! development machine), a `pread` served from the page cache a few: for data that is
//! cached, which is most of it on a warm store, the hand-off would be nearly all of a
//! call's time. So between rounds, still without the lock, each needed run of blobs is
//! first read on the calling (async) thread with `preadv2(RWF_NOWAIT)`
//! ([`Blobs::read_cached`]), and only what that does not serve goes to a blocking thread as
//! above.
//!
//! That keeps the rule "no blocking I/O on an async thread", because `RWF_NOWAIT` asks the
//! kernel to copy only what the page cache already holds and to fail with `EAGAIN` (or
//! return fewer bytes: those that were cached) rather than wait for the device or for a
//! lock: at worst it costs a failed system call. What it returns is the same bytes a
//! `pread` would, so the rounds above are unchanged; only whole blobs are taken from a
//! short read, and the rest of the run is read on the blocking thread, as is anything the
//! fast path fails with (an I/O error is reported by that read, exactly as without the
//! fast path). A kernel or file system without `RWF_NOWAIT` (Linux before 4.14, tmpfs, a
//! sandbox that hides `preadv2`) says so once, and the backend stops trying. The fast path
//! never opens a segment file (that can wait on the disk) nor waits for the lock of the
//! open files: a segment not yet open is read, and opened, on a blocking thread. It copies
//! at most [`NOWAIT_BUDGET`] bytes per round, so that a large page does not keep an async
//! thread busy copying and checking what a blocking thread could. And with a fault hook
//! ([`Faults`]) set it is skipped: the hook must see every read and may block in it.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, TryLockError};

use hookspool::{Error, Item, QueueId, Result};

use crate::backend::{Inner, blocking};
use crate::log::segment_name;
use crate::record::{self, Note};
use crate::state::{Header, Loc, State};
use crate::{Faults, IoOp};

/// Blobs read with one `pread` when they lie this close together.
const READ_GAP: u64 = 4096;
/// At most this many bytes per `pread`.
const READ_RUN: u64 = 4 << 20;
/// At most this many bytes per round are read on the calling (async) thread
/// ([`Blobs::read_cached`]). Copying and checking that much costs about as long as a
/// hand-off to a blocking thread (tens of microseconds); for more, the hand-off is the
/// smaller share of the work, and it keeps the async thread free for other tasks.
const NOWAIT_BUDGET: u64 = 256 << 10;
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

/// Reads blobs into `blobs`: those still in the log's memory at once, those in the page
/// cache on this thread without blocking, the others with `pread` on a blocking thread.
pub(crate) async fn read(inner: &Arc<Inner>, locs: Vec<Loc>, blobs: &mut Blobs) -> Result<()> {
    let mut on_disk = blobs.copy_kept(inner, locs);
    // A fault hook must see every read, and it may block (tests hold a read there to show
    // that nobody waits for it), which must not happen on an async thread: with a hook set,
    // every read goes to a blocking thread, as before the fast path.
    if inner.options.faults.is_none() {
        on_disk = blobs.read_cached(&inner.files, on_disk);
    }
    if on_disk.is_empty() {
        return Ok(());
    }
    #[cfg(test)]
    inner.files.counts.handoffs.fetch_add(1, Ordering::Relaxed);
    let inner = Arc::clone(inner);
    let read = blocking(move || {
        let faults = inner.options.faults.as_ref();
        Ok(pread(&inner.files, faults, &on_disk)
            .into_iter()
            .map(|(loc, raw)| (loc, raw.and_then(|b| decode(loc, &b))))
            .collect::<Vec<_>>())
    })
    .await?;
    blobs.0.extend(read);
    Ok(())
}

/// A blob read from `loc`, decoded; what is wrong, with where, if it cannot be.
fn decode(loc: Loc, raw: &[u8]) -> std::result::Result<Blob, String> {
    record::decode_blob(raw).map_err(|e| {
        let what = match e {
            Error::Corrupted { what } => what,
            other => other.to_string(),
        };
        format!(
            "{what} (segment {}, offset {}, {} bytes)",
            loc.segment, loc.offset, loc.len
        )
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
    /// Blobs that could not be read or decoded, with why (once nothing asked for is
    /// missing): the caller asks for current locations only, so that is damage. The caller
    /// quarantines their items (see `backend::quarantine`) and takes another step; nothing
    /// else was taken out.
    Damaged(Vec<(Loc, String)>),
}

impl Blobs {
    /// The blobs at `locs`, in order, taken out; or those still missing; or, once none is,
    /// those that are damaged (see [`Taken`]): so that a quarantine has every other blob of
    /// its items at hand.
    pub(crate) fn take(&mut self, locs: &[Loc]) -> Result<Taken> {
        let mut missing = Vec::new();
        let mut damaged = Vec::new();
        for loc in locs {
            match self.0.get(loc) {
                Some(Err(what)) => damaged.push((*loc, what.clone())),
                Some(Ok(_)) => {}
                None => missing.push(*loc),
            }
        }
        if !missing.is_empty() {
            return Ok(Taken::Missing(missing));
        }
        if !damaged.is_empty() {
            for (loc, _) in &damaged {
                self.0.remove(loc);
            }
            return Ok(Taken::Damaged(damaged));
        }
        locs.iter()
            .map(|loc| match self.0.remove(loc) {
                Some(Ok(blob)) => Ok(blob),
                _ => Err(Error::internal("two journal items share one blob location")),
            })
            .collect::<Result<Vec<Blob>>>()
            .map(Taken::All)
    }

    /// The note at `loc`, if it was read and is whole (it stays for [`Blobs::take`]).
    pub(crate) fn note(&self, loc: Loc) -> Option<Note> {
        match self.0.get(&loc) {
            Some(Ok(blob)) => Some(Note::from_blob(blob.clone())),
            _ => None,
        }
    }

    /// Whether the blob at `loc` was read (whole or not).
    pub(crate) fn has(&self, loc: Loc) -> bool {
        self.0.contains_key(&loc)
    }

    /// Drops what was read at these locations (damage already dealt with).
    pub(crate) fn forget(&mut self, damaged: &[(Loc, String)]) {
        for (loc, _) in damaged {
            self.0.remove(loc);
        }
    }

    /// Why the blob at `loc` could not be read or decoded, if it could not.
    pub(crate) fn damage(&self, loc: Loc) -> Option<&str> {
        match self.0.get(&loc) {
            Some(Err(what)) => Some(what),
            _ => None,
        }
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
                    self.0.insert(loc, decode(loc, &raw));
                }
                None => on_disk.push(loc),
            }
        }
        on_disk
    }

    /// The fast path (see the module docs): reads what it can of the blobs at `locs` on the
    /// calling (async) thread, from the page cache and without blocking, and returns the
    /// locations it did not serve, for a blocking thread. Runs of nearby blobs are read with
    /// one call each, as [`pread`] reads them; of a run the kernel served in part, only the
    /// blobs wholly inside what it returned are taken.
    fn read_cached(&mut self, files: &Files, locs: Vec<Loc>) -> Vec<Loc> {
        if locs.is_empty() || !files.nowait.load(Ordering::Relaxed) {
            return locs;
        }
        let mut sorted = locs;
        sorted.sort_unstable();
        let mut budget = NOWAIT_BUDGET;
        let mut left = Vec::new();
        for run in runs(&sorted) {
            // Nothing more is tried once the kernel said it has no RWF_NOWAIT.
            let buf = if run.len() <= budget && files.nowait.load(Ordering::Relaxed) {
                files.read_cached(run.segment, run.start, run.len())
            } else {
                Vec::new()
            };
            budget = budget.saturating_sub(buf.len() as u64);
            for &loc in run.locs {
                match run.blob(&buf, loc) {
                    Some(raw) => {
                        #[cfg(test)]
                        files.counts.served.fetch_add(1, Ordering::Relaxed);
                        self.0.insert(loc, decode(loc, raw));
                    }
                    None => left.push(loc),
                }
            }
        }
        left
    }

    /// Reads blobs on the calling thread (a blocking one).
    fn read_now(&mut self, inner: &Inner, locs: &[Loc]) {
        let on_disk = self.copy_kept(inner, locs.to_vec());
        let faults = inner.options.faults.as_ref();
        for (loc, raw) in pread(&inner.files, faults, &on_disk) {
            self.0.insert(loc, raw.and_then(|b| decode(loc, &b)));
        }
    }
}

/// An item from its header, its blob (none for a quarantined item: its payload is left
/// empty) and its note, if it has one: the note's metadata and error stand, then the
/// blob's metadata unless it was replaced, then what the header has.
pub(crate) fn fill(header: Header, blob: Option<Blob>, note: Option<Note>) -> Item {
    let mut item = header.item;
    if let Some((metadata, payload)) = blob {
        item.payload = payload;
        if !header.replaced_metadata {
            item.metadata = metadata;
        }
    }
    if let Some(note) = note {
        if let Some(metadata) = note.metadata {
            item.metadata = metadata;
        }
        if note.error.is_some() {
            item.last_error = note.error;
        }
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
    for run in runs(&sorted) {
        match read_run(files, faults, run.segment, run.start, run.end) {
            Ok(buf) => out.extend(run.locs.iter().map(|&l| {
                let raw = run.blob(&buf, l).map(<[u8]>::to_vec).ok_or_else(|| {
                    format!("journal segment {}: a read came back short", run.segment)
                });
                (l, raw)
            })),
            Err(what) => out.extend(run.locs.iter().map(|l| (*l, Err(what.clone())))),
        }
    }
    out
}

/// Nearby blobs of one segment, read with one call: bytes `start..end` of the file.
struct Run<'a> {
    segment: u32,
    start: u64,
    end: u64,
    locs: &'a [Loc],
}

impl Run<'_> {
    fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Blob `loc`'s bytes in `buf`, the bytes read from `start` on; `None` if `buf` ends
    /// before the blob does (a short read: the blob is never taken in part).
    fn blob<'b>(&self, buf: &'b [u8], loc: Loc) -> Option<&'b [u8]> {
        let from = (u64::from(loc.offset) - self.start) as usize;
        buf.get(from..from + loc.len as usize)
    }
}

/// Splits sorted locations into runs: blobs of one segment at most [`READ_GAP`] apart,
/// at most [`READ_RUN`] bytes in all.
fn runs(sorted: &[Loc]) -> Vec<Run<'_>> {
    let mut runs = Vec::new();
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
        runs.push(Run {
            segment: first.segment,
            start,
            end,
            locs: &sorted[i..j],
        });
        i = j;
    }
    runs
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
    /// Whether the fast path may try `preadv2(RWF_NOWAIT)`: cleared for good the first time
    /// the kernel or the file system says it has none (it is the same for every segment of
    /// the directory).
    nowait: AtomicBool,
    #[cfg(test)]
    pub(crate) counts: Counts,
}

/// Which path served the reads (tests).
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Counts {
    /// `preadv2(RWF_NOWAIT)` calls made.
    pub(crate) tries: std::sync::atomic::AtomicUsize,
    /// Blobs they served.
    pub(crate) served: std::sync::atomic::AtomicUsize,
    /// Reads between rounds handed to a blocking thread.
    pub(crate) handoffs: std::sync::atomic::AtomicUsize,
}

impl Files {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Files {
            dir,
            open: Mutex::new(HashMap::new()),
            nowait: AtomicBool::new(true),
            #[cfg(test)]
            counts: Counts::default(),
        }
    }

    fn get(&self, segment: u32) -> std::result::Result<Arc<std::fs::File>, String> {
        // Held while a file is opened: only blocking threads wait for it (the fast path
        // only tries it, [`Files::open_now`]).
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

    /// The handle of `segment` if it is open already and the map is free now. The fast
    /// path neither opens a file (the lookup and the inode may have to come from the disk)
    /// nor waits for the map, which a blocking thread may hold while it opens one.
    fn open_now(&self, segment: u32) -> Option<Arc<std::fs::File>> {
        let open = match self.open.try_lock() {
            Ok(open) => open,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        open.get(&segment).map(Arc::clone)
    }

    /// Without blocking: the bytes `start..start + len` of `segment` that the page cache
    /// holds, as many as it holds from `start` on (all, a prefix, or none). None either if
    /// the file is not open yet, or on an error, which the blocking read that follows
    /// reports.
    fn read_cached(&self, segment: u32, start: u64, len: u64) -> Vec<u8> {
        let Some(file) = self.open_now(segment) else {
            return Vec::new();
        };
        let mut buf = vec![0; len as usize];
        #[cfg(test)]
        self.counts.tries.fetch_add(1, Ordering::Relaxed);
        match pread_nowait(&file, &mut buf, start) {
            Nowait::Read(n) => {
                buf.truncate(n);
                buf
            }
            Nowait::NotNow => Vec::new(),
            Nowait::Unsupported => {
                if self.nowait.swap(false, Ordering::Relaxed) {
                    tracing::debug!(
                        dir = %self.dir.display(),
                        "hookspool-journal: no preadv2(RWF_NOWAIT) here; every read from \
                         disk goes to a blocking thread"
                    );
                }
                Vec::new()
            }
        }
    }

    /// Drops the handle of a segment about to be deleted.
    pub(crate) fn forget(&self, segment: u32) {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&segment);
    }
}

/// What one non-blocking read gave.
#[derive(Debug, PartialEq, Eq)]
enum Nowait {
    /// This many bytes: fewer than asked if the rest is not in the page cache (or the file
    /// ends first).
    Read(usize),
    /// Nothing now: not in the page cache (`EAGAIN`), or an error the blocking read will
    /// meet and report.
    NotNow,
    /// No `RWF_NOWAIT` here: no point trying again.
    Unsupported,
}

/// `preadv2(RWF_NOWAIT)`: copies what the page cache holds of `buf.len()` bytes at
/// `offset`, and never waits for the device or a lock.
#[cfg(target_os = "linux")]
fn pread_nowait(file: &std::fs::File, buf: &mut [u8], offset: u64) -> Nowait {
    let bufs = &mut [std::io::IoSliceMut::new(buf)];
    match rustix::io::preadv2(file, bufs, offset, rustix::io::ReadWriteFlags::NOWAIT) {
        Ok(n) => Nowait::Read(n),
        Err(e) => nowait_error(e),
    }
}

/// Elsewhere the journal reads every blob from disk on a blocking thread.
#[cfg(not(target_os = "linux"))]
fn pread_nowait(_: &std::fs::File, _: &mut [u8], _: u64) -> Nowait {
    Nowait::Unsupported
}

#[cfg(target_os = "linux")]
fn nowait_error(e: rustix::io::Errno) -> Nowait {
    use rustix::io::Errno;
    // Said by every call alike, so the backend stops trying: ENOSYS, no preadv2 (before
    // Linux 4.6, or a sandbox that hides it; EPERM when a seccomp filter refuses it);
    // EOPNOTSUPP, no RWF_NOWAIT (before 4.14, or a file system without it, such as tmpfs);
    // EINVAL, a flag the kernel does not know. Anything else (EAGAIN: not cached; EIO...)
    // is about this read only.
    if [Errno::NOSYS, Errno::PERM, Errno::OPNOTSUPP, Errno::INVAL].contains(&e) {
        Nowait::Unsupported
    } else {
        Nowait::NotNow
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
mod tests;
