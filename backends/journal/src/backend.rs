//! [`JournalBackend`]: the backend calls (apply to the state, log, wait for durability),
//! checkpoints and space reclamation. The calls that return items are [`Call`]s run by
//! `read`, which reads their data without holding the state lock; recovery is in
//! `recover`.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hookspool::{
    Backend, Capabilities, Checked, Claim, Error, Item, Key, NewItem, Phase, PhaseCounts,
    QueueConfig, QueueId, Result, Selector, SweepReport, Timestamp, Transition,
};

use crate::calls;
use crate::checkpoint::{self, CHECKPOINT_FILE};
use crate::log::{Log, Settings, create_segment, io_error, segment_name, sync_dir};
use crate::read::{self, Files, Gates};
use crate::record::{self, Op, RECORD_HEADER, SEGMENT_HEADER};
use crate::recover;
use crate::settle;
use crate::state::{Loc, State};
use crate::{JournalOptions, RecoveryReport};

const LOCK_FILE: &str = "hookspool.lock";
/// Bytes of blobs copied per relocation record (each takes the state lock once).
const RELOCATE_BATCH: u64 = 1 << 20;

/// A durable [`Backend`] of its own design: every mutating call is one checksummed record
/// appended to a segmented log (group commit); a compact index of every item lives in memory
/// and payloads stay in the segment files. See the crate docs.
///
/// Cloning gives another handle to the same store; the store closes (pending writes synced,
/// a final checkpoint written, the directory unlocked) when the last handle is dropped.
#[derive(Clone)]
pub struct JournalBackend {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    dir: PathBuf,
    state: Mutex<State>,
    pub(crate) files: Files,
    pub(crate) log: Log,
    pub(crate) options: JournalOptions,
    /// Consumers of a queue take turns reading (see `read`).
    pub(crate) gates: Gates,
    recovery: RecoveryReport,
    /// Log bytes appended since the last checkpoint.
    since_checkpoint: AtomicU64,
    /// Size of the last checkpoint written or loaded.
    last_checkpoint: AtomicU64,
    /// Blob bytes removed from segments before the last checkpoint since it was written:
    /// space a checkpoint (and compaction) would give back.
    reclaimable: AtomicU64,
    /// The first segment the last checkpoint needs: older ones hold only blobs.
    checkpoint_segment: AtomicU64,
    checkpointing: AtomicBool,
    /// Serializes checkpoints.
    checkpoint_lock: tokio::sync::Mutex<()>,
    _lock: File,
}

impl std::fmt::Debug for JournalBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalBackend")
            .field("dir", &self.inner.dir)
            .field("items", &self.inner.state().item_count())
            .field("log", &self.inner.log)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Writes and syncs what is pending, then records the final state in a checkpoint
        // (the next open replays nothing) and deletes segments nothing needs any more,
        // before the lock file is released. A failure costs replay time, not data.
        self.log.close();
        if self.log.check().is_err() {
            return;
        }
        let dirty = self.options.checkpoint_on_close
            && self.since_checkpoint.load(Ordering::Relaxed) > 0
            || self.reclaimable.load(Ordering::Relaxed) > 0;
        if dirty {
            // The log is closed: every removal is durable, so dead segments can go at once.
            let done = self
                .write_checkpoint_tmp()
                .and_then(|(segment, offset, bytes)| {
                    self.install(segment, offset, bytes)?;
                    self.delete_segments(&self.dead_segments(segment)?)
                });
            if let Err(e) = done {
                tracing::warn!(error = %e, "hookspool-journal: final checkpoint failed");
            }
        }
    }
}

impl Inner {
    /// The state lock. Every call takes it on its own (async) thread, so it is never held
    /// across a `pread` or a wait for the writer: reads happen between a call's steps (see
    /// `read`). Only blocking threads ever hold it long: to encode a checkpoint, and to
    /// finish a call whose reads kept being overtaken. The log's own locks nest inside it
    /// (appends happen under it, so the log's order is the order of the changes).
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        // Every state change computes and checks before it mutates, and a panic inside one
        // would be a bug that reopening recovers from: a poisoned lock still guards a state
        // the log agrees with.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends a record under the state lock the caller holds; returns its LSN.
    pub(crate) fn append(&self, body: &[u8]) -> Result<u64> {
        let (lsn, _, _) = self.log.append(body)?;
        Ok(lsn)
    }

    /// [`Inner::append`], for a record that needs a sync of its own only if `durable`
    /// (see [`Log::append_unsynced`]).
    pub(crate) fn append_for(&self, body: &[u8], durable: bool) -> Result<u64> {
        let (lsn, _, _) = if durable {
            self.log.append(body)?
        } else {
            self.log.append_unsynced(body)?
        };
        Ok(lsn)
    }

    /// Counts blob and note bytes that left segments older than the last checkpoint.
    pub(crate) fn freed(&self, locs: &[Loc]) {
        let first = self.checkpoint_segment.load(Ordering::Relaxed);
        let old: u64 = locs
            .iter()
            .filter(|l| u64::from(l.segment) < first)
            .map(|l| u64::from(l.len))
            .sum();
        if old > 0 {
            self.reclaimable.fetch_add(old, Ordering::Relaxed);
        }
    }

    /// Writes the checkpoint to its temporary name and syncs it: the state as of the log's
    /// current position, encoded under the state lock (writers wait that long). Returns
    /// where replay will start and the file's size.
    fn write_checkpoint_tmp(&self) -> Result<(u64, u64, u64)> {
        let faults = self.options.faults.as_ref();
        let ((segment, offset), bytes) = checkpoint::write_tmp(&self.dir, faults, |out| {
            let st = self.state();
            let (segment, offset) = self.log.position();
            self.since_checkpoint.store(0, Ordering::Relaxed);
            self.reclaimable.store(0, Ordering::Relaxed);
            checkpoint::encode(&st, segment, offset, out).map_err(io_error)?;
            Ok((segment, offset))
        })?;
        Ok((segment, offset, bytes))
    }

    /// Puts a synced temporary checkpoint in force.
    fn install(&self, segment: u64, offset: u64, bytes: u64) -> Result<()> {
        checkpoint::install(&self.dir, self.options.faults.as_ref())?;
        self.last_checkpoint.store(bytes, Ordering::Relaxed);
        self.checkpoint_segment.store(segment, Ordering::Relaxed);
        tracing::debug!(
            segment,
            offset,
            bytes,
            "hookspool-journal checkpoint written"
        );
        Ok(())
    }

    /// The segments before `segment` that hold no live blob, as the state says now. The
    /// removals that emptied them may not be durable yet: sync the log before deleting
    /// them ([`Inner::delete_segments`]), or a crash could bring back items whose data is
    /// gone.
    fn dead_segments(&self, segment: u64) -> Result<Vec<u64>> {
        let live: Vec<u32> = self.state().live().keys().copied().collect();
        Ok(recover::segments_on_disk(&self.dir)?
            .into_iter()
            .filter(|&n| n < segment && !u32::try_from(n).is_ok_and(|n| live.contains(&n)))
            .collect())
    }

    /// Deletes segments (that [`Inner::dead_segments`] listed, with the log synced since),
    /// then syncs the directory. Blobs never go to old segments, so a dead one stays dead.
    fn delete_segments(&self, dead: &[u64]) -> Result<()> {
        for &n in dead {
            std::fs::remove_file(self.dir.join(segment_name(n))).map_err(io_error)?;
            // After the removal: a reader that opened the file just before it (one whose
            // item has moved on, so it reads a location no longer current) put a handle in
            // the map, which would keep the deleted file's space until the backend closes.
            // From now on the file cannot be opened again.
            if let Ok(n) = u32::try_from(n) {
                self.files.forget(n);
            }
        }
        if !dead.is_empty() {
            sync_dir(&self.dir, self.options.faults.as_ref()).map_err(io_error)?;
        }
        Ok(())
    }
}

/// Runs blocking work (file I/O, fsync, a read under the lock) off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::backend("journal", e))?
}

pub(crate) fn segment_u32(segment: u64) -> Result<u32> {
    u32::try_from(segment)
        .map_err(|_| Error::internal("the journal has run out of segment numbers"))
}

impl JournalBackend {
    /// Whether `dir` holds a journal: a checkpoint or a segment file. `false` for an empty
    /// or missing directory, or one that holds another backend's files. Reads only the
    /// directory listing (no lock is taken), so it can tell which backend to open with.
    pub fn detect(dir: impl AsRef<Path>) -> bool {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return false;
        };
        entries.flatten().any(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name == CHECKPOINT_FILE || crate::log::segment_number(&name).is_some()
        })
    }

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
    /// [`JournalOptions::skip_corrupt`]), a damaged checkpoint, or a missing segment that
    /// holds live items; [`Error::InvalidInput`] for a segment size outside 1 KiB–4 GiB or
    /// a zero periodic sync interval; I/O errors.
    pub fn open_with(dir: impl AsRef<Path>, options: JournalOptions) -> Result<Self> {
        if !(1024..=u64::from(u32::MAX)).contains(&options.segment_size) {
            return Err(Error::invalid(format!(
                "journal segment size {} is outside 1 KiB–4 GiB",
                options.segment_size
            )));
        }
        if let crate::Durability::Periodic { interval } = options.durability
            && interval.is_zero()
        {
            return Err(Error::invalid(
                "the periodic sync interval must not be zero",
            ));
        }
        let dir = dir.as_ref().to_path_buf();
        let created = !dir.exists();
        std::fs::create_dir_all(&dir).map_err(io_error)?;
        if created && let Some(parent) = dir.parent() {
            // The new directory's own entry must survive too.
            let _ = sync_dir(parent, None);
        }
        let lock = hookspool::lock_file(&dir.join(LOCK_FILE), "journal")?;
        let settings = Settings {
            dir: dir.clone(),
            segment_size: options.segment_size,
            preallocate: options.preallocate,
            durability: options.durability,
            faults: options.faults.clone(),
        };
        let recovered = recover::recover(&dir, &options)?;
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
                files: Files::new(dir.clone()),
                gates: Gates::default(),
                dir,
                state: Mutex::new(recovered.state),
                log,
                since_checkpoint: AtomicU64::new(recovered.replayed_bytes),
                last_checkpoint: AtomicU64::new(recovered.checkpoint_bytes),
                reclaimable: AtomicU64::new(0),
                checkpoint_segment: AtomicU64::new(recovered.first_segment),
                checkpointing: AtomicBool::new(false),
                checkpoint_lock: tokio::sync::Mutex::new(()),
                options,
                recovery: recovered.report,
                _lock: lock,
            }),
        })
    }

    #[cfg(test)]
    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
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

    /// Writes a checkpoint now and reclaims space: the state (the index, not the payloads)
    /// goes to the `checkpoint` file (a temporary file, synced, renamed, directory synced);
    /// segments before it that hold no live item are deleted, and the live items of
    /// segments less than half live are copied forward (compaction) so that those go too.
    /// Later opens replay only what follows the checkpoint. Writers wait only while the
    /// state is encoded, and for a moment per megabyte compacted.
    ///
    /// # Errors
    /// I/O errors; [`Error::Poisoned`].
    pub async fn checkpoint(&self) -> Result<()> {
        let _one = self.inner.checkpoint_lock.lock().await;
        let inner = Arc::clone(&self.inner);
        let (segment, offset, bytes) = blocking(move || inner.write_checkpoint_tmp()).await?;
        // The checkpoint must not claim more than the device holds: everything before its
        // position must be synced before it is put in force.
        self.inner.log.sync().await?;
        let inner = Arc::clone(&self.inner);
        blocking(move || inner.install(segment, offset, bytes)).await?;
        self.compact(segment).await
    }

    /// Copies the live items of sparse segments before `segment` forward, then deletes every
    /// segment before `segment` that no longer holds a live item.
    async fn compact(&self, segment: u64) -> Result<()> {
        let inner = &self.inner;
        let live: Vec<(u32, u64)> = inner
            .state()
            .live()
            .iter()
            .map(|(s, n)| (*s, *n))
            .filter(|(s, _)| u64::from(*s) < segment)
            .collect();
        let dir = inner.dir.clone();
        let sparse: Vec<u32> = blocking(move || {
            Ok(live
                .into_iter()
                .filter(|&(n, live_bytes)| {
                    let size = std::fs::metadata(dir.join(segment_name(u64::from(n))))
                        .map_or(0, |m| m.len());
                    live_bytes.saturating_mul(2) < size
                })
                .map(|(n, _)| n)
                .collect())
        })
        .await?;
        for n in sparse {
            self.relocate_segment(n).await?;
        }
        // Listed first, then the log synced: the removals (and relocations) that emptied
        // them are durable before the segments go.
        let inner2 = Arc::clone(inner);
        let dead = blocking(move || inner2.dead_segments(segment)).await?;
        inner.log.sync().await?;
        let inner2 = Arc::clone(inner);
        blocking(move || inner2.delete_segments(&dead)).await
    }

    /// Copies every live blob of segment `n` to the end of the log, a batch per record.
    async fn relocate_segment(&self, n: u32) -> Result<()> {
        let inner = &self.inner;
        let mut items = inner.state().in_segment(n);
        items.sort_by_key(|(q, _, loc)| (q.clone(), loc.offset));
        let mut start = 0;
        while start < items.len() {
            let queue = items[start].0.clone();
            let mut end = start;
            let mut bytes = 0;
            while end < items.len() && items[end].0 == queue && bytes < RELOCATE_BATCH {
                bytes += u64::from(items[end].2.len);
                end += 1;
            }
            // Read without the state lock (see `read`): the bytes at a location never
            // change, and the check under the lock below skips every item that moved or
            // went meanwhile. Only this task deletes old segments, and only after it is
            // done, so the segment is still there to read.
            let locs: Vec<Loc> = items[start..end].iter().map(|(_, _, l)| *l).collect();
            let reader = Arc::clone(inner);
            let read: std::collections::HashMap<Loc, std::result::Result<Vec<u8>, String>> =
                blocking(move || {
                    let faults = reader.options.faults.as_ref();
                    Ok(read::pread(&reader.files, faults, &locs)
                        .into_iter()
                        .collect())
                })
                .await?;
            let lsn = {
                let mut st = inner.state();
                let mut still: Vec<(Key, Loc, &[u8])> = Vec::new();
                for (q, key, loc) in &items[start..end] {
                    let here = st
                        .header(q, *key)
                        .ok()
                        .flatten()
                        .is_some_and(|h| h.loc == *loc || h.note == Some(*loc));
                    if !here {
                        continue;
                    }
                    match read.get(loc) {
                        Some(Ok(blob)) => still.push((*key, *loc, blob)),
                        Some(Err(what)) => return Err(Error::corrupted(what.clone())),
                        None => return Err(Error::internal("a relocated blob was not read")),
                    }
                }
                if still.is_empty() {
                    None
                } else {
                    // Copied as read, checksum included: a damaged blob stays detectably
                    // damaged at its new place.
                    let refs: Vec<(Key, u32, u32, &[u8])> = still
                        .iter()
                        .map(|(k, l, b)| (*k, l.segment, l.offset, *b))
                        .collect();
                    let (body, moved) = record::encode_relocate(&queue, &refs)?;
                    let (lsn, segment, offset) = inner.log.append(&body)?;
                    let segment = segment_u32(segment)?;
                    let base = offset + RECORD_HEADER as u64;
                    let relocations: Vec<(Key, u32, u32, Loc)> = moved
                        .iter()
                        .map(|m| {
                            let to = Loc {
                                segment,
                                offset: u32::try_from(base + u64::from(m.blob.at))
                                    .unwrap_or(u32::MAX),
                                len: m.blob.len,
                            };
                            (m.key, m.from_segment, m.from_offset, to)
                        })
                        .collect();
                    st.relocate(&queue, &relocations);
                    inner
                        .since_checkpoint
                        .fetch_add(body.len() as u64, Ordering::Relaxed);
                    Some(lsn)
                }
            };
            if let Some(lsn) = lsn {
                inner.log.wait_written(lsn).await?;
            }
            start = end;
        }
        Ok(())
    }

    /// Writes a checkpoint once enough has been appended since the last one, or once
    /// enough space would come back. The call that crosses the threshold does it, after its
    /// own record is durable.
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
        // ... or enough space in old segments has died (a queue drained) that a checkpoint
        // and compaction would give back more than the checkpoint costs.
        let freed = inner.reclaimable.load(Ordering::Relaxed)
            >= (inner.options.checkpoint_bytes / 2).max(last);
        if !(grown || freed) || inner.checkpointing.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Err(e) = self.checkpoint().await {
            // The log still has everything: a failed checkpoint costs replay time, not data.
            tracing::warn!(error = %e, "hookspool-journal checkpoint failed");
        }
        inner.checkpointing.store(false, Ordering::Release);
    }

    /// Waits for a record's durability, then checkpoints if one is due.
    async fn finish(&self, lsn: u64, bytes: usize) -> Result<()> {
        let log = &self.inner.log;
        match self.inner.options.durability {
            crate::Durability::Immediate => log.wait_synced(lsn).await?,
            crate::Durability::Periodic { .. } => log.wait_written(lsn).await?,
        }
        self.maybe_checkpoint((bytes + RECORD_HEADER) as u64).await;
        Ok(())
    }

    /// Applies a call that returns nothing to read, logging `op` if `apply` says it
    /// changed something.
    async fn logged<T>(
        &self,
        op: &Op,
        apply: impl FnOnce(&mut State) -> Result<T>,
        changed: impl FnOnce(&T) -> bool,
    ) -> Result<T> {
        let inner = &self.inner;
        inner.log.check()?;
        let body = record::encode(op)?;
        let (value, lsn) = {
            let mut st = inner.state();
            let value = apply(&mut st)?;
            if !changed(&value) {
                return Ok(value);
            }
            (value, inner.append(&body)?)
        };
        self.finish(lsn, body.len()).await?;
        Ok(value)
    }
}

impl Backend for JournalBackend {
    fn capabilities(&self) -> Capabilities {
        Capabilities::EXCLUSIVE
    }

    async fn create_queue(&self, config: QueueConfig) -> Result<()> {
        let op = Op::CreateQueue(config.clone());
        self.logged(&op, |s| s.create_queue(config), |()| true)
            .await
    }

    async fn update_queue(&self, config: QueueConfig) -> Result<()> {
        let op = Op::UpdateQueue(config.clone());
        self.logged(&op, |s| s.update_queue(config), |()| true)
            .await
    }

    async fn get_queue(&self, id: &QueueId) -> Result<Option<QueueConfig>> {
        self.inner.log.check()?;
        Ok(self.inner.state().get_queue(id))
    }

    async fn list_queues(&self) -> Result<Vec<QueueConfig>> {
        self.inner.log.check()?;
        Ok(self.inner.state().list_queues())
    }

    async fn delete_queue(&self, id: &QueueId) -> Result<bool> {
        let op = Op::DeleteQueue(id.clone());
        let first = self.inner.checkpoint_segment.load(Ordering::Relaxed);
        let deleted = self
            .logged(
                &op,
                |s| {
                    let old = s.queue_bytes_before(id, first);
                    let deleted = s.delete_queue(id);
                    self.inner.reclaimable.fetch_add(old, Ordering::Relaxed);
                    Ok(deleted)
                },
                |deleted| *deleted,
            )
            .await?;
        if deleted {
            self.inner.gates.forget(id);
        }
        Ok(deleted)
    }

    async fn push(&self, queue: &QueueId, items: Vec<NewItem>, now: Timestamp) -> Result<Vec<Key>> {
        let inner = &self.inner;
        inner.log.check()?;
        let (body, pushed) = record::encode_push(queue, &items, now)?;
        drop(items);
        let (keys, lsn) = {
            let mut st = inner.state();
            if !st.has_queue(queue) {
                return Err(Error::QueueNotFound(queue.clone()));
            }
            st.check_keys(queue, pushed.len())?;
            let (lsn, segment, offset) = inner.log.append(&body)?;
            let keys = st.push(
                queue,
                &pushed,
                now,
                segment_u32(segment)?,
                offset + RECORD_HEADER as u64,
            )?;
            (keys, lsn)
        };
        self.finish(lsn, body.len()).await?;
        Ok(keys)
    }

    async fn fetch(&self, queue: &QueueId, selector: &Selector) -> Result<Vec<Item>> {
        self.inner.log.check()?;
        let call = calls::Fetch {
            queue: queue.clone(),
            selector: selector.clone(),
            seen: None,
        };
        read::run(&self.inner, call).await
    }

    async fn pop(&self, queue: &QueueId, selector: &Selector) -> Result<Vec<Item>> {
        self.inner.log.check()?;
        let body = record::encode(&Op::Pop {
            queue: queue.clone(),
            selector: selector.clone(),
        })?;
        let bytes = body.len();
        let call = calls::Pop {
            queue: queue.clone(),
            selector: selector.clone(),
            body,
        };
        let (items, lsn) = read::run(&self.inner, call).await?;
        if let Some(lsn) = lsn {
            self.finish(lsn, bytes).await?;
        }
        Ok(items)
    }

    async fn count(&self, queue: &QueueId) -> Result<PhaseCounts> {
        self.inner.log.check()?;
        self.inner.state().count(queue)
    }

    async fn reset(&self, queue: &QueueId) -> Result<u64> {
        let first = self.inner.checkpoint_segment.load(Ordering::Relaxed);
        self.logged(
            &Op::Reset(queue.clone()),
            |s| {
                let old = s.queue_bytes_before(queue, first);
                let n = s.reset(queue)?;
                self.inner.reclaimable.fetch_add(old, Ordering::Relaxed);
                Ok(n)
            },
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
        self.inner.log.check()?;
        let call = calls::Update {
            queue: queue.clone(),
            key,
            transition,
            now,
        };
        let (item, (lsn, bytes)) = read::run(&self.inner, call).await?;
        self.finish(lsn, bytes).await?;
        Ok(item)
    }

    async fn update_many(
        &self,
        queue: &QueueId,
        updates: Vec<(Key, Transition)>,
        now: Timestamp,
    ) -> Result<Vec<Result<()>>> {
        self.inner.log.check()?;
        // Settling reads nothing from disk, unless an update carries over part of an item's
        // note (see `calls`): the index holds all that the preconditions and the moves need.
        // (So an item whose blob is damaged can still be settled.) Acks and other moves that
        // write no note take the short way: encoded before the lock, applied under it.
        let (results, appended) = if updates.iter().any(|(_, t)| calls::writes_note(t)) {
            let call = settle::UpdateMany::new(queue, updates, now)?;
            read::run(&self.inner, call).await?
        } else {
            settle::settle_plain(&self.inner, queue, updates, now)?
        };
        if let Some((lsn, bytes)) = appended {
            self.finish(lsn, bytes).await?;
        }
        Ok(results)
    }

    async fn prune(
        &self,
        queue: &QueueId,
        phase: &Phase,
        before: Timestamp,
        limit: usize,
    ) -> Result<u64> {
        let inner = &self.inner;
        inner.log.check()?;
        // Chosen and removed under one hold of the state, from the index alone: no payload is
        // read, and nothing can move in between. The record is an `UpdateMany` of removals,
        // each expecting the phase, so replaying it gives the same result.
        let (removed, lsn, len) = {
            let mut st = inner.state();
            let keys = st.prunable(queue, phase, before, limit)?;
            if keys.is_empty() {
                return Ok(0);
            }
            let updates: Vec<(Key, Transition)> = keys
                .iter()
                .map(|key| (*key, Transition::remove_from(phase.clone())))
                .collect();
            let body = record::encode(&Op::UpdateMany {
                queue: queue.clone(),
                updates: updates.clone(),
                now: before,
            })?;
            // Like `update_many`: an entry that failed (none can: they were chosen just now)
            // fails alone, and replay sees the same.
            let mut removed = 0;
            let mut gone = Vec::with_capacity(updates.len());
            for (key, transition) in updates {
                if let Ok(header) = st.update(queue, key, transition, before, None) {
                    gone.extend(header.stored());
                    removed += 1;
                }
            }
            inner.freed(&gone);
            (removed, inner.append(&body)?, body.len())
        };
        self.finish(lsn, len).await?;
        Ok(removed)
    }

    async fn check(&self, queue: &QueueId, after: Option<Key>, limit: usize) -> Result<Checked> {
        crate::verify::check(&self.inner, queue, after, limit).await
    }

    async fn claim(&self, queue: &QueueId, claim: Claim, now: Timestamp) -> Result<Vec<Item>> {
        self.inner.log.check()?;
        let sweep = record::encode(&Op::Sweep {
            queue: queue.clone(),
            now,
        })?;
        let body = record::encode(&Op::Claim {
            queue: queue.clone(),
            claim: claim.clone(),
            now,
        })?;
        let bytes = body.len();
        let durable = claim.durable;
        let call = calls::ClaimItems {
            queue: queue.clone(),
            claim,
            now,
            sweep,
            body,
            swept: None,
        };
        let (items, lsn, reach) = read::run(&self.inner, call).await?;
        match lsn {
            Some(lsn) if durable => self.finish(lsn, bytes).await?,
            // Appended and not waited for: the writer's next round takes it, and any later
            // record that is waited for (they are written in order) makes it durable too.
            // What it leased must be durable all the same before anyone sees it: an item
            // whose push is still on its way to the disk (its pusher not yet answered) would
            // otherwise be handed out, then lost with the push in a crash. Those pushes asked
            // for a sync, so this waits for no sync of its own, and none for items that were
            // waiting in the queue.
            Some(_) => {
                if let Some((segment, end)) = reach {
                    let last = end.saturating_sub(1);
                    self.inner.log.wait_durable_past(segment, last).await?;
                }
                self.maybe_checkpoint((bytes + RECORD_HEADER) as u64).await;
            }
            None => {}
        }
        Ok(items)
    }

    async fn sweep(&self, queue: &QueueId, now: Timestamp) -> Result<SweepReport> {
        self.logged(
            &Op::Sweep {
                queue: queue.clone(),
                now,
            },
            |s| s.sweep(queue, now),
            |r: &SweepReport| r.released > 0 || r.expired > 0,
        )
        .await
    }

    async fn sync(&self) -> Result<()> {
        self.inner.log.check()?;
        self.inner.log.sync().await
    }
}
