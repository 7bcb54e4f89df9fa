//! [`JournalBackend`]: opening (recovery), the logged operations, and checkpoints.

use std::fs::TryLockError;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, PoisonError};

use hookspool::{
    Backend, Claim, Error, Item, Key, MemoryBackend, NewItem, PhaseCounts, QueueConfig, QueueId,
    Result, Selector, SweepReport, Timestamp, Transition,
};
use tokio::sync::Mutex;

use crate::log::{Log, Settings, create_segment, io_error, segment_name, segment_number, sync_dir};
use crate::record::{self, Checkpoint, Op, Read, SEGMENT_HEADER, SEGMENT_MAGIC};
use crate::{JournalOptions, RecoveryReport};

const LOCK_FILE: &str = "hookspool.lock";
const CHECKPOINT_FILE: &str = "checkpoint";
const CHECKPOINT_TMP: &str = "checkpoint.tmp";

/// A durable [`Backend`] of its own design: every mutating call is one checksummed record
/// appended to a segmented log (group commit), the working state lives in memory and is
/// rebuilt at open from the latest checkpoint plus the records after it. See the crate docs.
///
/// Cloning gives another handle to the same store; the store closes (pending writes synced,
/// the directory unlocked) when the last handle is dropped.
#[derive(Clone)]
pub struct JournalBackend {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    state: MemoryBackend,
    /// Serializes "apply to the state, then append the record", so that the log's order is
    /// the order the state saw.
    apply: Mutex<()>,
    log: Log,
    options: JournalOptions,
    recovery: RecoveryReport,
    /// Bytes appended since the last checkpoint, and whether one is being written.
    since_checkpoint: AtomicU64,
    /// Size of the last checkpoint written (or loaded): the next one waits for at least as
    /// much log, so that checkpoints cost at most about as much I/O as the log itself.
    last_checkpoint: AtomicU64,
    /// How many items the last checkpoint held.
    last_checkpoint_items: AtomicU64,
    checkpointing: AtomicBool,
    /// Serializes checkpoints and holds the segment of the last one written: a checkpoint
    /// that finishes after a newer one must not replace it (the newer one may already have
    /// deleted the segments the older one starts at).
    checkpoint_lock: StdMutex<u64>,
    _lock: File,
}

impl std::fmt::Debug for JournalBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalBackend")
            .field("dir", &self.inner.dir)
            .field("state", &self.inner.state)
            .field("log", &self.inner.log)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Writes and syncs what is pending before the lock file is released.
        self.log.close();
    }
}

impl JournalBackend {
    /// Opens (or creates) the journal in `dir` with default options.
    ///
    /// # Errors
    /// See [`JournalBackend::open_with`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(dir, JournalOptions::default())
    }

    /// Opens (or creates) the journal in `dir`: loads the checkpoint, replays the records
    /// after it, truncates a torn last record, and starts the writer.
    ///
    /// # Errors
    /// [`Error::Locked`] if another handle or process has the directory open;
    /// [`Error::Corrupted`] for a damaged record that is not a torn tail (unless
    /// [`JournalOptions::skip_corrupt`]) or a damaged checkpoint; I/O errors.
    pub fn open_with(dir: impl AsRef<Path>, options: JournalOptions) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let created = !dir.exists();
        std::fs::create_dir_all(&dir).map_err(io_error)?;
        if created && let Some(parent) = dir.parent() {
            // The new directory's own entry must survive too.
            let _ = sync_dir(parent, None);
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .map_err(io_error)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(Error::Locked {
                    path: dir.display().to_string(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_error(e)),
        }
        let settings = Settings {
            dir: dir.clone(),
            segment_size: options.segment_size,
            preallocate: options.preallocate,
            durability: options.durability,
            faults: options.faults.clone(),
        };
        let recovered = recover(&dir, &options)?;
        let (file, segment, offset) = if let Some((segment, offset)) = recovered.tail {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(dir.join(segment_name(segment)))
                .map_err(io_error)?;
            (file, segment, offset)
        } else {
            let segment = recovered.next_segment;
            let file = create_segment(&settings, segment).map_err(io_error)?;
            (file, segment, SEGMENT_HEADER)
        };
        let log = Log::start(settings, file, segment, offset, 0)?;
        Ok(JournalBackend {
            inner: Arc::new(Inner {
                dir,
                state: recovered.state,
                apply: Mutex::new(()),
                log,
                since_checkpoint: AtomicU64::new(recovered.replayed_bytes),
                last_checkpoint: AtomicU64::new(recovered.checkpoint_bytes),
                last_checkpoint_items: AtomicU64::new(recovered.checkpoint_items),
                checkpointing: AtomicBool::new(false),
                checkpoint_lock: StdMutex::new(0),
                options,
                recovery: recovered.report,
                _lock: lock,
            }),
        })
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.inner.dir
    }

    /// What the last open found and did: records replayed, a torn tail cut off, damaged
    /// records skipped (only with [`JournalOptions::skip_corrupt`]).
    pub fn recovery(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// Writes a checkpoint now: the whole state to the `checkpoint` file (written to a
    /// temporary file, synced, renamed, directory synced), then deletes the segments it
    /// covers. Later opens replay only what follows it. Writers continue meanwhile, except
    /// for the moment the state is copied.
    ///
    /// # Errors
    /// I/O errors; [`Error::Poisoned`].
    pub async fn checkpoint(&self) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        // The state is copied under the apply lock, at the same point of the log as the
        // switch to a new segment.
        let (segment, queues) = {
            let _apply = inner.apply.lock().await;
            let segment = inner.log.rotate()?;
            inner.since_checkpoint.store(0, Ordering::Relaxed);
            (segment, inner.state.snapshot())
        };
        // The checkpoint must not claim more than the device holds: it covers everything
        // before the switch, so that must be synced first.
        // Asks the writer for that sync (under periodic durability the next periodic one may be
        // a whole interval away); `sync` covers everything appended so far, the switch included.
        inner.log.sync().await?;
        let inner2 = Arc::clone(&inner);
        tokio::task::spawn_blocking(move || write_checkpoint(&inner2, segment, queues))
            .await
            .map_err(|e| Error::Backend {
                backend: "journal",
                source: Box::new(e),
            })?
    }

    /// Writes a checkpoint once enough has been appended since the last one. The call that
    /// crosses the threshold does it, after its own record is durable (so its latency
    /// includes the checkpoint; other callers wait only while the state is copied).
    async fn maybe_checkpoint(&self, appended: u64) {
        let inner = &self.inner;
        let since = inner
            .since_checkpoint
            .fetch_add(appended, Ordering::Relaxed)
            + appended;
        let last = inner.last_checkpoint.load(Ordering::Relaxed);
        // Enough log since the last checkpoint (at least as much as that checkpoint, so that
        // checkpoints cost at most the log's own I/O) ...
        let grown = since >= inner.options.checkpoint_bytes.max(last);
        // ... or the live state has become small next to what is on disk (a queue drained):
        // a checkpoint then reclaims the space of the segments it covers.
        let shrunk = last + since > 2 * self.live_estimate() + inner.options.checkpoint_bytes / 2;
        if !(grown || shrunk) || inner.checkpointing.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Err(e) = self.checkpoint().await {
            // The log still has everything: a failed checkpoint costs replay time, not data.
            tracing::warn!(error = %e, "hookspool-journal checkpoint failed");
        }
        inner.checkpointing.store(false, Ordering::Release);
    }

    /// About how many bytes a checkpoint of the current state would take: the item count
    /// times the bytes per item of the last checkpoint (300 before the first).
    fn live_estimate(&self) -> u64 {
        let inner = &self.inner;
        let items = inner.state.item_count() as u64;
        let (bytes, count) = (
            inner.last_checkpoint.load(Ordering::Relaxed),
            inner.last_checkpoint_items.load(Ordering::Relaxed),
        );
        let per_item = bytes.checked_div(count).unwrap_or(300);
        items.saturating_mul(per_item.max(1))
    }

    /// Applies a mutating call to the state and logs it, under the apply lock; then waits
    /// for durability. `changed` says whether the call's result changed anything (nothing is
    /// logged otherwise).
    async fn logged<T>(
        &self,
        op: Op,
        apply: impl AsyncFnOnce(&MemoryBackend) -> Result<T>,
        changed: impl FnOnce(&T) -> bool,
    ) -> Result<T> {
        let inner = &self.inner;
        inner.log.check()?;
        let body = record::encode(&op)?;
        let (value, lsn) = {
            let _apply = inner.apply.lock().await;
            let value = apply(&inner.state).await?;
            if !changed(&value) {
                return Ok(value);
            }
            (value, inner.log.append(&body)?)
        };
        match inner.options.durability {
            crate::Durability::Immediate => inner.log.wait_synced(lsn).await?,
            crate::Durability::Periodic { .. } => inner.log.wait_written(lsn).await?,
        }
        self.maybe_checkpoint(body.len() as u64 + 8).await;
        Ok(value)
    }
}

/// Writes the checkpoint file and removes the segments before `segment`.
fn write_checkpoint(
    inner: &Inner,
    segment: u64,
    queues: Vec<hookspool::QueueSnapshot>,
) -> Result<()> {
    let mut last = inner
        .checkpoint_lock
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if segment <= *last {
        // A newer checkpoint is already in place.
        return Ok(());
    }
    let faults = inner.options.faults.as_ref();
    let items: u64 = queues.iter().map(|q| q.items.len() as u64).sum();
    let bytes = record::encode_checkpoint(&Checkpoint { segment, queues })?;
    let tmp = inner.dir.join(CHECKPOINT_TMP);
    let write = || -> std::io::Result<()> {
        if let Some(f) = faults {
            f.check(crate::IoOp::Write {
                len: bytes.len(),
                segment: 0,
            })?;
        }
        let mut file = File::create(&tmp)?;
        std::io::Write::write_all(&mut file, &bytes)?;
        if let Some(f) = faults {
            f.check(crate::IoOp::Sync)?;
        }
        file.sync_all()?;
        std::fs::rename(&tmp, inner.dir.join(CHECKPOINT_FILE))?;
        sync_dir(&inner.dir, faults)
    };
    write().map_err(io_error)?;
    *last = segment;
    inner
        .last_checkpoint
        .store(bytes.len() as u64, Ordering::Relaxed);
    inner.last_checkpoint_items.store(items, Ordering::Relaxed);
    // Segments wholly before the checkpoint are no longer needed.
    let mut removed = false;
    for entry in std::fs::read_dir(&inner.dir).map_err(io_error)? {
        let entry = entry.map_err(io_error)?;
        if let Some(n) = entry.file_name().to_str().and_then(segment_number)
            && n < segment
        {
            std::fs::remove_file(entry.path()).map_err(io_error)?;
            removed = true;
        }
    }
    if removed {
        sync_dir(&inner.dir, faults).map_err(io_error)?;
    }
    Ok(())
}

/// What recovery rebuilt.
struct Recovered {
    state: MemoryBackend,
    /// Size of the checkpoint file loaded (0 without one), and its item count.
    checkpoint_bytes: u64,
    checkpoint_items: u64,
    /// Where appending continues: (segment, offset), or `None` to start a new segment.
    tail: Option<(u64, u64)>,
    next_segment: u64,
    replayed_bytes: u64,
    report: RecoveryReport,
}

fn recover(dir: &Path, options: &JournalOptions) -> Result<Recovered> {
    // A checkpoint written to its temporary name but not renamed never counted.
    let _ = std::fs::remove_file(dir.join(CHECKPOINT_TMP));
    let (state, first, checkpoint_bytes, checkpoint_items) =
        match std::fs::read(dir.join(CHECKPOINT_FILE)) {
            Ok(bytes) => {
                let cp = record::decode_checkpoint(&bytes)?;
                let items = cp.queues.iter().map(|q| q.items.len() as u64).sum();
                (
                    MemoryBackend::restore(cp.queues)?,
                    cp.segment,
                    bytes.len() as u64,
                    items,
                )
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (MemoryBackend::new(), 1, 0, 0),
            Err(e) => return Err(io_error(e)),
        };
    let segments = list_segments(dir, first)?;
    let mut report = RecoveryReport::default();
    let mut replayed_bytes = 0;
    let mut tail = None;
    let mut next_segment = segments.last().map_or(first, |n| n + 1);
    for (i, &n) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        let path = dir.join(segment_name(n));
        let Some(end) = replay_segment(&state, &path, n, last, options, &mut report)? else {
            // An empty last segment, removed: it is created again.
            next_segment = n;
            break;
        };
        replayed_bytes += end - SEGMENT_HEADER;
        if last {
            tail = Some((n, end));
        }
    }
    Ok(Recovered {
        state,
        checkpoint_bytes,
        checkpoint_items,
        tail,
        next_segment,
        replayed_bytes,
        report,
    })
}

/// The segment numbers from `first` on, checked to be consecutive.
fn list_segments(dir: &Path, first: u64) -> Result<Vec<u64>> {
    let mut segments: Vec<u64> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error)? {
        let entry = entry.map_err(io_error)?;
        if let Some(n) = entry.file_name().to_str().and_then(segment_number) {
            segments.push(n);
        }
    }
    segments.sort_unstable();
    // Segments before the checkpoint are left over from a checkpoint whose cleanup was cut
    // short: the checkpoint covers them.
    segments.retain(|n| *n >= first);
    if let Some(pair) = segments.windows(2).find(|w| w[1] != w[0] + 1) {
        return Err(Error::Corrupted {
            what: format!(
                "journal segment {} is missing (found {} then {})",
                pair[0] + 1,
                pair[0],
                pair[1]
            ),
        });
    }
    if let Some(&s) = segments.first()
        && s != first
    {
        return Err(Error::Corrupted {
            what: format!("journal segment {first} (the checkpoint's start) is missing"),
        });
    }
    Ok(segments)
}

/// Replays one segment onto `state`; returns where its written part ends (`None` if the
/// segment was an empty last one, removed). A torn tail of the last segment is cut off.
fn replay_segment(
    state: &MemoryBackend,
    path: &Path,
    n: u64,
    last: bool,
    options: &JournalOptions,
    report: &mut RecoveryReport,
) -> Result<Option<u64>> {
    let bytes = std::fs::read(path).map_err(io_error)?;
    if bytes.len() < SEGMENT_HEADER as usize
        || &bytes[..8] != SEGMENT_MAGIC
        || bytes[8..16] != n.to_le_bytes()
    {
        if last && bytes.iter().skip(8).all(|b| *b == 0) {
            // Created but its header never made it: an empty last segment.
            std::fs::remove_file(path).map_err(io_error)?;
            return Ok(None);
        }
        return Err(Error::Corrupted {
            what: format!("journal segment {}: bad header", path.display()),
        });
    }
    let mut pos = SEGMENT_HEADER as usize;
    // Where the written part ends: bytes after it are zeros (preallocated) or missing.
    let written_end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    let valid_at =
        |p: usize| p < bytes.len() && matches!(record::read(n, &bytes[p..]), Read::Record { .. });
    loop {
        let found = match record::read(n, &bytes[pos..]) {
            // Zeros where a record should be, yet valid records after them: damage (a lost
            // page), not the end of the log.
            Read::End if (pos + 1..written_end).any(valid_at) => Read::Bad {
                size: None,
                why: "zeros where a record should be, with records after them".to_owned(),
            },
            other => other,
        };
        match found {
            Read::End => break,
            Read::Record { body, size } => {
                let applied = record::decode(body).and_then(|op| ready(replay(state, op)));
                if let Err(e) = applied {
                    if !options.skip_corrupt {
                        return Err(Error::Corrupted {
                            what: format!(
                                "journal segment {n} offset {pos}: record does not replay: {e}"
                            ),
                        });
                    }
                    report.skipped_records += 1;
                } else {
                    report.replayed_records += 1;
                }
                pos += size;
            }
            Read::Bad { size, why } => {
                // Where valid records resume: right after this one if its length is intact,
                // else at the first later offset holding a valid record (the length field
                // itself may be what is damaged). None: nothing valid follows.
                let resume = size
                    .map(|s| pos + s)
                    .filter(|&p| valid_at(p))
                    .or_else(|| (pos + 1..written_end).find(|&p| valid_at(p)));
                if resume.is_none() && last {
                    // A torn tail: nothing valid follows in the last segment.
                    report.truncated_bytes = bytes.len() as u64 - pos as u64;
                    truncate_tail(path, pos as u64, options)?;
                    tracing::warn!(segment = n, offset = pos, %why,
                        "hookspool-journal: torn last record cut off");
                    break;
                }
                if !options.skip_corrupt {
                    return Err(Error::Corrupted {
                        what: format!(
                            "journal segment {n} offset {pos}: {why}; open with \
                             skip_corrupt to skip damaged records"
                        ),
                    });
                }
                tracing::warn!(segment = n, offset = pos, %why,
                    "hookspool-journal: damaged record skipped");
                report.skipped_records += 1;
                match resume {
                    Some(p) => pos = p,
                    // The rest of a segment that is not the last: later segments follow.
                    None => break,
                }
            }
        }
    }
    Ok(Some(pos as u64))
}

/// Cuts a torn last record off: zeros it where the segment was preallocated (so the space
/// stays allocated), truncates otherwise; then syncs.
fn truncate_tail(path: &Path, at: u64, options: &JournalOptions) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_error)?;
    let len = file.metadata().map_err(io_error)?.len();
    if options.preallocate && len <= options.segment_size {
        let zeros = vec![0u8; usize::try_from(len - at).unwrap_or(0)];
        std::os::unix::fs::FileExt::write_all_at(&file, &zeros, at).map_err(io_error)?;
    } else {
        file.set_len(at).map_err(io_error)?;
    }
    file.sync_all().map_err(io_error)
}

/// Runs a future that completes without waiting: `MemoryBackend`'s calls only take a lock.
/// (Recovery runs inside `open`, which may itself be called from async code, so it cannot
/// start a runtime of its own.)
fn ready<T>(fut: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(r) => r,
        std::task::Poll::Pending => Err(Error::invalid(
            "a memory backend call did not complete at once during recovery",
        )),
    }
}

/// Applies one logged operation during recovery.
async fn replay(state: &MemoryBackend, op: Op) -> Result<()> {
    match op {
        Op::CreateQueue(c) => state.create_queue(c).await,
        Op::UpdateQueue(c) => state.update_queue(c).await,
        Op::DeleteQueue(id) => state.delete_queue(&id).await.map(drop),
        Op::Push { queue, items, now } => state.push(&queue, items, now).await.map(drop),
        Op::Pop { queue, selector } => state.pop(&queue, &selector).await.map(drop),
        Op::Reset(queue) => state.reset(&queue).await.map(drop),
        Op::Update {
            queue,
            key,
            transition,
            now,
        } => state.update(&queue, key, transition, now).await.map(drop),
        Op::Claim { queue, claim, now } => state.claim(&queue, claim, now).await.map(drop),
        Op::Sweep { queue, now } => state.sweep(&queue, now).await.map(drop),
    }
}

impl Backend for JournalBackend {
    async fn create_queue(&self, config: QueueConfig) -> Result<()> {
        let c = config.clone();
        self.logged(
            Op::CreateQueue(config),
            async move |s| s.create_queue(c).await,
            |()| true,
        )
        .await
    }

    async fn update_queue(&self, config: QueueConfig) -> Result<()> {
        let c = config.clone();
        self.logged(
            Op::UpdateQueue(config),
            async move |s| s.update_queue(c).await,
            |()| true,
        )
        .await
    }

    async fn get_queue(&self, id: &QueueId) -> Result<Option<QueueConfig>> {
        self.inner.log.check()?;
        self.inner.state.get_queue(id).await
    }

    async fn list_queues(&self) -> Result<Vec<QueueConfig>> {
        self.inner.log.check()?;
        self.inner.state.list_queues().await
    }

    async fn delete_queue(&self, id: &QueueId) -> Result<bool> {
        self.logged(
            Op::DeleteQueue(id.clone()),
            async |s| s.delete_queue(id).await,
            |deleted| *deleted,
        )
        .await
    }

    async fn push(&self, queue: &QueueId, items: Vec<NewItem>, now: Timestamp) -> Result<Vec<Key>> {
        // The record keeps a copy: a memcpy of the payloads, small next to the write.
        let op = Op::Push {
            queue: queue.clone(),
            items: items.clone(),
            now,
        };
        self.logged(op, async move |s| s.push(queue, items, now).await, |_| true)
            .await
    }

    async fn fetch(&self, queue: &QueueId, selector: &Selector) -> Result<Vec<Item>> {
        self.inner.log.check()?;
        self.inner.state.fetch(queue, selector).await
    }

    async fn pop(&self, queue: &QueueId, selector: &Selector) -> Result<Vec<Item>> {
        self.logged(
            Op::Pop {
                queue: queue.clone(),
                selector: selector.clone(),
            },
            async |s| s.pop(queue, selector).await,
            |items: &Vec<Item>| !items.is_empty(),
        )
        .await
    }

    async fn count(&self, queue: &QueueId) -> Result<PhaseCounts> {
        self.inner.log.check()?;
        self.inner.state.count(queue).await
    }

    async fn reset(&self, queue: &QueueId) -> Result<u64> {
        self.logged(
            Op::Reset(queue.clone()),
            async |s| s.reset(queue).await,
            |n| *n > 0,
        )
        .await
    }

    async fn update(
        &self,
        queue: &QueueId,
        key: Key,
        transition: Transition,
        now: Timestamp,
    ) -> Result<Item> {
        let t = transition.clone();
        self.logged(
            Op::Update {
                queue: queue.clone(),
                key,
                transition,
                now,
            },
            async move |s| s.update(queue, key, t, now).await,
            |_| true,
        )
        .await
    }

    async fn claim(&self, queue: &QueueId, claim: Claim, now: Timestamp) -> Result<Vec<Item>> {
        // The sweep claim starts with is logged on its own when it changed something, so
        // that a claim that leases nothing needs no record.
        self.sweep(queue, now).await?;
        let c = claim.clone();
        self.logged(
            Op::Claim {
                queue: queue.clone(),
                claim,
                now,
            },
            async move |s| s.claim(queue, c, now).await,
            |items: &Vec<Item>| !items.is_empty(),
        )
        .await
    }

    async fn sweep(&self, queue: &QueueId, now: Timestamp) -> Result<SweepReport> {
        self.logged(
            Op::Sweep {
                queue: queue.clone(),
                now,
            },
            async |s| s.sweep(queue, now).await,
            |r: &SweepReport| r.released > 0 || r.expired > 0,
        )
        .await
    }

    async fn sync(&self) -> Result<()> {
        self.inner.log.check()?;
        self.inner.log.sync().await
    }
}
