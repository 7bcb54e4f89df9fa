//! [`JournalBackend`]: the backend calls (apply to the state, log, wait for durability),
//! reading blobs, checkpoints and space reclamation. Recovery is in `recover`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::BufWriter;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hookspool::{
    Backend, Claim, Error, Item, Key, NewItem, PhaseCounts, QueueConfig, QueueId, Result, Selector,
    SweepReport, Timestamp, Transition,
};

use crate::log::{Log, Settings, create_segment, io_error, segment_name, sync_dir};
use crate::record::{self, Op, RECORD_HEADER, SEGMENT_HEADER};
use crate::recover::{self, CHECKPOINT_FILE, CHECKPOINT_TMP};
use crate::state::{Header, Loc, State};
use crate::{IoOp, JournalOptions, RecoveryReport};

const LOCK_FILE: &str = "hookspool.lock";
/// Blobs read with one `pread` when they lie this close together.
const READ_GAP: u64 = 4096;
/// At most this many bytes per `pread`.
const READ_RUN: u64 = 4 << 20;
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
    files: Files,
    log: Log,
    options: JournalOptions,
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

/// Read handles of segment files, opened when first needed. A handle outlives the file's
/// deletion, so a reader that took one under the state lock can always finish.
#[derive(Debug)]
struct Files {
    dir: PathBuf,
    open: Mutex<HashMap<u32, Arc<File>>>,
}

impl Files {
    fn get(&self, segment: u32) -> Result<Arc<File>> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(f) = open.get(&segment) {
            return Ok(Arc::clone(f));
        }
        let path = self.dir.join(segment_name(u64::from(segment)));
        let file = File::open(&path).map_err(|e| Error::Corrupted {
            what: format!("journal segment {segment} holds live items but cannot be opened: {e}"),
        })?;
        let file = Arc::new(file);
        open.insert(segment, Arc::clone(&file));
        Ok(file)
    }

    fn forget(&self, segment: u32) {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&segment);
    }
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
    fn state(&self) -> MutexGuard<'_, State> {
        // Every state change computes and checks before it mutates, and a panic inside one
        // would be a bug that reopening recovers from: a poisoned lock still guards a state
        // the log agrees with.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads blobs (in the order given), one `pread` per run of nearby ones. Waits, if need
    /// be, until the writer has put them in their files.
    fn read_blobs(&self, locs: &[Loc]) -> Result<Vec<Vec<u8>>> {
        let mut order: Vec<usize> = (0..locs.len()).collect();
        order.sort_by_key(|&i| locs[i]);
        let mut out = vec![Vec::new(); locs.len()];
        let mut i = 0;
        while i < order.len() {
            let first = locs[order[i]];
            let start = u64::from(first.offset);
            let mut end = start + u64::from(first.len);
            let mut j = i + 1;
            while j < order.len() {
                let l = locs[order[j]];
                let (from, to) = (u64::from(l.offset), u64::from(l.offset) + u64::from(l.len));
                if l.segment != first.segment || from > end + READ_GAP || to - start > READ_RUN {
                    break;
                }
                end = end.max(to);
                j += 1;
            }
            self.log.wait_readable(u64::from(first.segment), end)?;
            let file = self.files.get(first.segment)?;
            let mut buf = vec![0; usize::try_from(end - start).unwrap_or(usize::MAX)];
            file.read_exact_at(&mut buf, start)
                .map_err(|e| Error::Corrupted {
                    what: format!(
                        "journal segment {} offset {start}: item data cannot be read: {e}",
                        first.segment
                    ),
                })?;
            for &k in &order[i..j] {
                let l = locs[k];
                let from = (u64::from(l.offset) - start) as usize;
                out[k] = buf[from..from + l.len as usize].to_vec();
            }
            i = j;
        }
        Ok(out)
    }

    /// Appends a record under the state lock the caller holds; returns its LSN.
    fn append(&self, body: &[u8]) -> Result<u64> {
        let (lsn, _, _) = self.log.append(body)?;
        Ok(lsn)
    }

    /// Writes the checkpoint to its temporary name and syncs it: the state as of the log's
    /// current position, encoded under the state lock (writers wait that long). Returns
    /// where replay will start and the file's size.
    fn write_checkpoint_tmp(&self) -> Result<(u64, u64, u64)> {
        let faults = self.options.faults.as_ref();
        let write = || -> Result<(u64, u64, u64)> {
            if let Some(f) = faults {
                f.check(IoOp::Write { len: 0, segment: 0 })
                    .map_err(io_error)?;
            }
            let tmp = self.dir.join(CHECKPOINT_TMP);
            let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp).map_err(io_error)?);
            let (segment, offset) = {
                let st = self.state();
                let (segment, offset) = self.log.position();
                self.since_checkpoint.store(0, Ordering::Relaxed);
                self.reclaimable.store(0, Ordering::Relaxed);
                st.write_checkpoint(segment, offset, &mut out)
                    .map_err(io_error)?;
                (segment, offset)
            };
            let file = out.into_inner().map_err(|e| io_error(e.into_error()))?;
            if let Some(f) = faults {
                f.check(IoOp::Sync).map_err(io_error)?;
            }
            file.sync_all().map_err(io_error)?;
            let bytes = file.metadata().map_err(io_error)?.len();
            Ok((segment, offset, bytes))
        };
        write()
    }

    /// Puts a synced temporary checkpoint in force (rename, directory sync).
    fn install(&self, segment: u64, offset: u64, bytes: u64) -> Result<()> {
        let faults = self.options.faults.as_ref();
        std::fs::rename(
            self.dir.join(CHECKPOINT_TMP),
            self.dir.join(CHECKPOINT_FILE),
        )
        .map_err(io_error)?;
        sync_dir(&self.dir, faults).map_err(io_error)?;
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
            if let Ok(n) = u32::try_from(n) {
                self.files.forget(n);
            }
            std::fs::remove_file(self.dir.join(segment_name(n))).map_err(io_error)?;
        }
        if !dead.is_empty() {
            sync_dir(&self.dir, self.options.faults.as_ref()).map_err(io_error)?;
        }
        Ok(())
    }
}

fn join_error(e: tokio::task::JoinError) -> Error {
    Error::Backend {
        backend: "journal",
        source: Box::new(e),
    }
}

fn segment_u32(segment: u64) -> Result<u32> {
    u32::try_from(segment).map_err(|_| Error::invalid("the journal has run out of segment numbers"))
}

/// An item from its header and its blob.
fn fill(header: Header, blob: &[u8]) -> Result<Item> {
    Ok(fill_decoded(header, record::decode_blob(blob)?))
}

/// An item from its header and its decoded blob.
fn fill_decoded(header: Header, (metadata, payload): Blob) -> Item {
    let mut item = header.item;
    item.payload = payload;
    if !header.replaced_metadata {
        item.metadata = metadata;
    }
    item
}

/// A blob's metadata and payload.
type Blob = (std::collections::BTreeMap<String, String>, Vec<u8>);

/// Reads and checks blobs before anything changes: an error leaves the items as they were.
fn decode_all(blobs: &[Vec<u8>]) -> Result<Vec<Blob>> {
    blobs.iter().map(|b| record::decode_blob(b)).collect()
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
                files: Files {
                    dir: dir.clone(),
                    open: Mutex::new(HashMap::new()),
                },
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
        let (segment, offset, bytes) =
            tokio::task::spawn_blocking(move || inner.write_checkpoint_tmp())
                .await
                .map_err(join_error)??;
        // The checkpoint must not claim more than the device holds: everything before its
        // position must be synced before it is put in force.
        self.inner.log.sync().await?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || inner.install(segment, offset, bytes))
            .await
            .map_err(join_error)??;
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
        for (n, live_bytes) in live {
            let size = std::fs::metadata(inner.dir.join(segment_name(u64::from(n))))
                .map_or(0, |m| m.len());
            if live_bytes.saturating_mul(2) >= size {
                continue;
            }
            self.relocate_segment(n).await?;
        }
        // Listed first, then the log synced: the removals (and relocations) that emptied
        // them are durable before the segments go.
        let dead = inner.dead_segments(segment)?;
        inner.log.sync().await?;
        let inner2 = Arc::clone(inner);
        tokio::task::spawn_blocking(move || inner2.delete_segments(&dead))
            .await
            .map_err(join_error)?
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
            let lsn = {
                let mut st = inner.state();
                // Items removed or moved since the list was made are skipped.
                let still: Vec<(Key, Loc)> = items[start..end]
                    .iter()
                    .filter(|(q, key, loc)| {
                        st.header(q, *key)
                            .ok()
                            .flatten()
                            .is_some_and(|h| h.loc == *loc)
                    })
                    .map(|(_, key, loc)| (*key, *loc))
                    .collect();
                if still.is_empty() {
                    None
                } else {
                    let locs: Vec<Loc> = still.iter().map(|(_, l)| *l).collect();
                    let blobs = inner.read_blobs(&locs)?;
                    let refs: Vec<(Key, u32, u32, &[u8])> = still
                        .iter()
                        .zip(&blobs)
                        .map(|((k, l), b)| (*k, l.segment, l.offset, b.as_slice()))
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

    /// Counts blob bytes that left segments older than the last checkpoint.
    fn freed(&self, headers: &[Header]) {
        let first = self.inner.checkpoint_segment.load(Ordering::Relaxed);
        let old: u64 = headers
            .iter()
            .filter(|h| u64::from(h.loc.segment) < first)
            .map(|h| u64::from(h.loc.len))
            .sum();
        if old > 0 {
            self.inner.reclaimable.fetch_add(old, Ordering::Relaxed);
        }
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
        self.logged(
            &op,
            |s| {
                let old = s.queue_bytes_before(id, first);
                let deleted = s.delete_queue(id);
                self.inner.reclaimable.fetch_add(old, Ordering::Relaxed);
                Ok(deleted)
            },
            |deleted| *deleted,
        )
        .await
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
        let inner = &self.inner;
        inner.log.check()?;
        let headers = {
            let st = inner.state();
            let keys = st.select(queue, selector)?;
            let headers: Vec<Header> = keys
                .into_iter()
                .filter_map(|k| st.header(queue, k).ok().flatten())
                .collect();
            // Handles taken under the lock: a segment deleted after it is released (its
            // items relocated) stays readable through them.
            for h in &headers {
                inner.files.get(h.loc.segment)?;
            }
            headers
        };
        let locs: Vec<Loc> = headers.iter().map(|h| h.loc).collect();
        let blobs = inner.read_blobs(&locs)?;
        headers
            .into_iter()
            .zip(blobs)
            .map(|(h, b)| fill(h, &b))
            .collect()
    }

    async fn pop(&self, queue: &QueueId, selector: &Selector) -> Result<Vec<Item>> {
        let inner = &self.inner;
        inner.log.check()?;
        let body = record::encode(&Op::Pop {
            queue: queue.clone(),
            selector: selector.clone(),
        })?;
        let (items, lsn) = {
            let mut st = inner.state();
            let keys = st.select(queue, selector)?;
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let headers: Vec<Header> = keys
                .iter()
                .filter_map(|k| st.header(queue, *k).ok().flatten())
                .collect();
            let locs: Vec<Loc> = headers.iter().map(|h| h.loc).collect();
            // Read before anything changes: a read error leaves the items where they are.
            let blobs = decode_all(&inner.read_blobs(&locs)?)?;
            self.freed(&headers);
            let items = headers
                .into_iter()
                .zip(blobs)
                .map(|(h, b)| fill_decoded(h, b))
                .collect();
            st.remove(queue, &keys)?;
            (items, inner.append(&body)?)
        };
        self.finish(lsn, body.len()).await?;
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
        let inner = &self.inner;
        inner.log.check()?;
        let body = record::encode(&Op::Update {
            queue: queue.clone(),
            key,
            transition: transition.clone(),
            now,
        })?;
        let (item, lsn) = {
            let mut st = inner.state();
            let before = st.header(queue, key)?.ok_or_else(|| Error::ItemNotFound {
                queue: queue.clone(),
                key,
            })?;
            let blob = decode_all(&inner.read_blobs(&[before.loc])?)?.remove(0);
            let removes = matches!(transition.action, hookspool::Action::Remove);
            let after = st.update(queue, key, transition, now)?;
            if removes {
                self.freed(std::slice::from_ref(&after));
            }
            (fill_decoded(after, blob), inner.append(&body)?)
        };
        self.finish(lsn, body.len()).await?;
        Ok(item)
    }

    async fn update_many(
        &self,
        queue: &QueueId,
        updates: Vec<(Key, Transition)>,
        now: Timestamp,
    ) -> Result<Vec<Result<()>>> {
        let inner = &self.inner;
        inner.log.check()?;
        let body = record::encode(&Op::UpdateMany {
            queue: queue.clone(),
            updates: updates.clone(),
            now,
        })?;
        let (results, lsn) = {
            let mut st = inner.state();
            if !st.has_queue(queue) {
                return Err(Error::QueueNotFound(queue.clone()));
            }
            // Settling reads nothing from disk: the index holds all that the preconditions
            // and the moves need.
            let mut results = Vec::with_capacity(updates.len());
            for (key, transition) in updates {
                let removes = matches!(transition.action, hookspool::Action::Remove);
                let result = st.update(queue, key, transition, now).map(|h| {
                    if removes {
                        self.freed(std::slice::from_ref(&h));
                    }
                });
                results.push(result);
            }
            let lsn = if results.iter().any(Result::is_ok) {
                Some(inner.append(&body)?)
            } else {
                None
            };
            (results, lsn)
        };
        if let Some(lsn) = lsn {
            self.finish(lsn, body.len()).await?;
        }
        Ok(results)
    }

    async fn claim(&self, queue: &QueueId, claim: Claim, now: Timestamp) -> Result<Vec<Item>> {
        let inner = &self.inner;
        inner.log.check()?;
        let sweep = record::encode(&Op::Sweep {
            queue: queue.clone(),
            now,
        })?;
        let body = record::encode(&Op::Claim {
            queue: queue.clone(),
            claim: claim.clone(),
            now,
        })?;
        let (items, lsn) = {
            let mut st = inner.state();
            let swept = st.sweep(queue, now)?;
            // The sweep is logged on its own, so that it is replayed even if nothing is
            // leased (or reading fails) below.
            let mut lsn = if swept.released > 0 || swept.expired > 0 {
                Some(inner.append(&sweep)?)
            } else {
                None
            };
            let keys = st.claimable(queue, claim.limit, now)?;
            if keys.is_empty() {
                (Vec::new(), lsn)
            } else {
                let locs: Vec<Loc> = keys
                    .iter()
                    .filter_map(|k| st.header(queue, *k).ok().flatten().map(|h| h.loc))
                    .collect();
                let blobs = decode_all(&inner.read_blobs(&locs)?)?;
                let headers = st.lease(queue, &keys, &claim.owner, claim.lease_until, now)?;
                let items = headers
                    .into_iter()
                    .zip(blobs)
                    .map(|(h, b)| fill_decoded(h, b))
                    .collect();
                lsn = Some(inner.append(&body)?);
                (items, lsn)
            }
        };
        if let Some(lsn) = lsn {
            self.finish(lsn, body.len()).await?;
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
