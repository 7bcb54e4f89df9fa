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
#[allow(clippy::unwrap_used)] // tests may panic on failure
mod tests {
    use std::path::Path;
    use std::sync::atomic::AtomicUsize;

    use hookspool::{Backend, NewItem, Page, QueueConfig, Store, Timestamp};

    use super::*;
    use crate::{JournalBackend, JournalOptions};

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
            let locs: Vec<Loc> = st
                .header(&self.queue, 1)?
                .map(|h| h.loc)
                .into_iter()
                .collect();
            if self.steps < self.finish_at {
                return Ok(Step::Need(locs));
            }
            match blobs.take(&locs)? {
                Taken::All(found) => Ok(Step::Done((self.steps, found[0].1.clone()))),
                Taken::Missing(missing) => Ok(Step::Need(missing)),
                Taken::Damaged(_) => Err(Error::corrupted("item 1 of the test")),
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

    /// A payload that names its index, 1 KiB.
    fn payload(i: usize) -> Vec<u8> {
        let mut p = format!("<{i:05}>").into_bytes();
        p.resize(1024, b'.');
        p
    }

    fn check(items: &[Item], keys: std::ops::RangeInclusive<u64>) {
        let keys: Vec<u64> = keys.collect();
        assert_eq!(items.iter().map(|i| i.key).collect::<Vec<_>>(), keys);
        for item in items {
            assert_eq!(
                item.payload,
                payload(item.key as usize - 1),
                "item {}",
                item.key
            );
        }
    }

    /// Queue `q` with `n` items, reopened: reading them takes a read from the segment file
    /// (what was appended in this process would be copied from the log's memory).
    async fn reopened(dir: &Path, n: usize, options: &JournalOptions) -> Store<JournalBackend> {
        let store = Store::new(JournalBackend::open_with(dir, options.clone()).unwrap());
        let q = QueueId::new("q").unwrap();
        store
            .create_queue(QueueConfig::new(q.clone()))
            .await
            .unwrap();
        let items = (0..n).map(|i| NewItem::new(payload(i))).collect();
        store.push_batch(&q, items).await.unwrap();
        drop(store);
        Store::new(JournalBackend::open_with(dir, options.clone()).unwrap())
    }

    /// (`preadv2` calls, blobs they served, hand-offs to a blocking thread) so far.
    fn counts(store: &Store<JournalBackend>) -> (usize, usize, usize) {
        let c = &store.backend().inner().files.counts;
        (
            c.tries.load(Ordering::Relaxed),
            c.served.load(Ordering::Relaxed),
            c.handoffs.load(Ordering::Relaxed),
        )
    }

    /// Drops `dir`'s segment files from the page cache (they are synced, so clean).
    #[cfg(target_os = "linux")]
    fn evict(dir: &Path) {
        use rustix::fs::{Advice, fadvise};
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if crate::log::segment_number(&path.file_name().unwrap().to_string_lossy()).is_some() {
                let file = std::fs::File::open(&path).unwrap();
                fadvise(&file, 0, None, Advice::DontNeed).unwrap();
            }
        }
    }

    /// Data in the page cache is read on the calling thread, with no hand-off; what is not
    /// (a segment not open yet, a segment dropped from the cache) is read on a blocking
    /// thread, and is then cached for the next call.
    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cached_data_is_read_on_the_calling_thread_and_the_rest_on_a_blocking_one() {
        let tmp = tempfile::tempdir().unwrap();
        let store = reopened(tmp.path(), 100, &JournalOptions::default()).await;
        let q = QueueId::new("q").unwrap();
        let all = || store.fetch_page(&q, Page::first(100));

        // The segment is not open yet: the fast path does not open files.
        check(&all().await.unwrap(), 1..=100);
        assert_eq!(counts(&store), (0, 0, 1));

        // Open now, and just read: in the page cache.
        check(&all().await.unwrap(), 1..=100);
        if !store.backend().inner().files.nowait.load(Ordering::Relaxed) {
            // This file system has no RWF_NOWAIT: tried once, then never again.
            eprintln!(
                "no RWF_NOWAIT in {}: the fast path is off",
                tmp.path().display()
            );
            assert_eq!(counts(&store), (1, 0, 2));
            check(&all().await.unwrap(), 1..=100);
            assert_eq!(counts(&store), (1, 0, 3));
            return;
        }
        // One run of nearby blobs, one call, no hand-off.
        assert_eq!(counts(&store), (1, 100, 1));
        let one = store.fetch_key(&q, 50).await.unwrap().unwrap();
        check(&[one], 50..=50);
        let claimed = store
            .claim(&q, "c", 10, std::time::Duration::from_mins(1))
            .await
            .unwrap();
        check(&claimed, 1..=10);
        assert_eq!(counts(&store), (3, 111, 1));

        // Dropped from the cache: the fast path misses (EAGAIN) and a blocking thread reads,
        // which brings the data back into the cache for the next call. The missed read may
        // start readahead that a fast disk finishes before the read returns, and then it is
        // served after all: a miss must be seen in one of a few tries.
        let mut missed = false;
        for _ in 0..TRIES {
            evict(tmp.path());
            let (tries, served, handoffs) = counts(&store);
            check(&all().await.unwrap(), 1..=100);
            let now = counts(&store);
            if now == (tries + 1, served + 100, handoffs) {
                continue;
            }
            assert_eq!((now.0, now.2), (tries + 1, handoffs + 1));
            let (_, served, _) = counts(&store);
            check(&all().await.unwrap(), 1..=100);
            assert_eq!(counts(&store), (tries + 2, served + 100, handoffs + 1));
            missed = true;
            break;
        }
        assert!(
            missed,
            "the fast path never missed in {TRIES} tries after an eviction"
        );
    }

    /// How often a test that needs the page cache in a given state tries to get it there.
    const TRIES: usize = 5;

    /// Counts the reads the hook sees.
    #[derive(Debug, Default)]
    struct CountReads(AtomicUsize);

    impl Faults for CountReads {
        fn check(&self, op: IoOp) -> std::io::Result<()> {
            if matches!(op, IoOp::Read { .. }) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }
    }

    /// A fault hook may block, so with one set every read goes to a blocking thread, where
    /// the hook sees it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_a_fault_hook_every_read_is_handed_off_and_seen_by_it() {
        let tmp = tempfile::tempdir().unwrap();
        let hook = Arc::new(CountReads::default());
        let options = JournalOptions {
            faults: Some(hook.clone()),
            ..JournalOptions::default()
        };
        let store = reopened(tmp.path(), 100, &options).await;
        let q = QueueId::new("q").unwrap();
        for _ in 0..3 {
            check(
                &store.fetch_page(&q, Page::first(100)).await.unwrap(),
                1..=100,
            );
        }
        let one = store.fetch_key(&q, 7).await.unwrap().unwrap();
        check(&[one], 7..=7);
        assert_eq!(counts(&store), (0, 0, 4));
        assert_eq!(hook.0.load(Ordering::Relaxed), 4);
    }

    /// The blobs of the run [`a_short_read_serves_only_whole_blobs`] reads: two in the first
    /// page, one across the first two, one in the third.
    fn four_blobs_in_three_pages() -> Vec<Loc> {
        let loc = |offset, len| Loc {
            segment: 1,
            offset,
            len,
        };
        vec![
            loc(0, 1000),
            loc(1000, 3096),
            loc(4000, 2000),
            loc(8192, 100),
        ]
    }

    /// However much of a run a read returned, a blob is found in it only if it lies wholly
    /// inside, and then whole: never in part.
    #[test]
    fn a_short_buffer_holds_only_the_blobs_wholly_inside_it() {
        let locs = four_blobs_in_three_pages();
        let runs = runs(&locs);
        assert_eq!(runs.len(), 1);
        let run = &runs[0];
        let buf: Vec<u8> = (0..run.len()).map(|i| i as u8).collect();
        // (bytes returned, how many blobs lie wholly inside them)
        for (n, whole) in [
            (0, 0),
            (999, 0),
            (1000, 1),
            (4095, 1),
            (4096, 2),
            (5999, 2),
            (6000, 3),
            (8192, 3),
            (8291, 3),
            (8292, 4),
        ] {
            for (i, &loc) in locs.iter().enumerate() {
                let found = run.blob(&buf[..n], loc);
                if i < whole {
                    let from = loc.offset as usize;
                    assert_eq!(
                        found,
                        Some(&buf[from..from + loc.len as usize]),
                        "{n} bytes"
                    );
                } else {
                    assert_eq!(found, None, "{n} bytes, blob {i}");
                }
            }
        }
    }

    /// Of a run the kernel returned in part (the rest not cached), the blobs wholly inside
    /// what it returned are taken, and the others are left for the blocking read.
    ///
    /// Only the first page is cached when the read starts, but the non-blocking read may
    /// itself start readahead of the rest, and on a fast disk that can finish before the
    /// read returns (CI saw it once). So each try may get one, two or all three pages;
    /// whichever it got, the taken blobs are those wholly inside it (the split for each
    /// length is checked exactly above), and at least one try of [`TRIES`] must be short.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_short_read_serves_only_whole_blobs() {
        use rustix::fs::{Advice, fadvise};

        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(segment_name(1));
        std::fs::write(&path, vec![7u8; 4 * 4096]).unwrap();
        std::fs::File::open(&path).unwrap().sync_all().unwrap();
        let locs = four_blobs_in_three_pages();
        let mut short = 0;
        for _ in 0..TRIES {
            // Only the first page cached: read through a handle without readahead.
            let own = std::fs::File::open(&path).unwrap();
            fadvise(&own, 0, None, Advice::DontNeed).unwrap();
            fadvise(&own, 0, None, Advice::Random).unwrap();
            own.read_exact_at(&mut [0; 4096], 0).unwrap();

            let files = Files::new(tmp.path().to_path_buf());
            files.get(1).unwrap();
            let mut blobs = Blobs::default();
            let left = blobs.read_cached(&files, locs.clone());
            if !files.nowait.load(Ordering::Relaxed) {
                eprintln!("no RWF_NOWAIT in {}: nothing to test", tmp.path().display());
                assert_eq!(left, locs);
                return;
            }
            let mut taken: Vec<Loc> = blobs.0.keys().copied().collect();
            taken.sort_unstable();
            // One page returned: two blobs; two pages: three; all three pages: all four.
            let k = taken.len();
            assert!(
                (2..=4).contains(&k),
                "{k} blobs taken of a run whose first page is cached"
            );
            assert_eq!(taken, &locs[..k]);
            assert_eq!(left, &locs[k..]);
            short += usize::from(k < 4);
        }
        assert!(short > 0, "no short read in {TRIES} tries");
    }

    /// A run the budget cannot hold is left for the blocking read; one file not open yet
    /// too, without a try.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_fast_path_keeps_to_its_budget_and_opens_no_file() {
        let tmp = tempfile::tempdir().unwrap();
        for segment in [1, 2] {
            std::fs::write(tmp.path().join(segment_name(segment)), vec![7u8; 1 << 20]).unwrap();
        }
        let files = Files::new(tmp.path().to_path_buf());
        files.get(1).unwrap();
        let loc = |segment, offset, len| Loc {
            segment,
            offset,
            len,
        };
        let big = loc(1, 0, u32::try_from(NOWAIT_BUDGET).unwrap() + 1);
        let small = loc(1, 900_000, 100);
        let closed = loc(2, 0, 100);
        let mut blobs = Blobs::default();
        let left = blobs.read_cached(&files, vec![closed, small, big]);
        if !files.nowait.load(Ordering::Relaxed) {
            eprintln!("no RWF_NOWAIT in {}: nothing to test", tmp.path().display());
            return;
        }
        assert_eq!(left, vec![big, closed]);
        assert_eq!(blobs.0.keys().copied().collect::<Vec<_>>(), vec![small]);
        assert_eq!(files.counts.tries.load(Ordering::Relaxed), 1);
    }

    /// The errors that say RWF_NOWAIT cannot work here turn the fast path off; the others
    /// (EAGAIN above all) concern one read.
    #[cfg(target_os = "linux")]
    #[test]
    fn errors_that_turn_the_fast_path_off() {
        use rustix::io::Errno;
        for e in [Errno::NOSYS, Errno::PERM, Errno::OPNOTSUPP, Errno::INVAL] {
            assert_eq!(nowait_error(e), Nowait::Unsupported, "{e}");
        }
        for e in [Errno::AGAIN, Errno::INTR, Errno::IO, Errno::BADF] {
            assert_eq!(nowait_error(e), Nowait::NotNow, "{e}");
        }
    }

    /// On a file system without RWF_NOWAIT (tmpfs, here), the backend tries once and then
    /// reads everything from disk on a blocking thread.
    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_rwf_nowait_the_backend_stops_trying() {
        let Ok(tmp) = tempfile::tempdir_in("/dev/shm") else {
            eprintln!("no /dev/shm: nothing to test");
            return;
        };
        let store = reopened(tmp.path(), 100, &JournalOptions::default()).await;
        let q = QueueId::new("q").unwrap();
        for _ in 0..3 {
            check(
                &store.fetch_page(&q, Page::first(100)).await.unwrap(),
                1..=100,
            );
        }
        if store.backend().inner().files.nowait.load(Ordering::Relaxed) {
            eprintln!("this kernel's tmpfs has RWF_NOWAIT: nothing to test");
            return;
        }
        assert_eq!(counts(&store), (1, 0, 3));
    }
}
