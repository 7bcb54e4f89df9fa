//! `SledBackend`: opening and locking the data directory, and the `Backend` operations as
//! read-compute-apply steps over one sled tree.

use std::fmt;
use std::fs::{File, TryLockError};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use hookspool::{
    Action, Backend, Capabilities, Claim, Durability, Error, Item, Key, Lease, NewItem, Page,
    Phase, PhaseCounts, QueueConfig, QueueId, Result, Selector, SweepReport, Timestamp, Transition,
    apply_move, check_expect,
};

use crate::durable::{Syncer, Ticker, io_error, sync_dir};
use crate::keys::{self, AGE, CONFIG, COUNT, DUE, ITEM, ITEM_TAGS, LEASE, NEXT_KEY};
use crate::tx::{self, Tx, sled_error};

/// Name of the lock file in the data directory.
pub const LOCK_FILE: &str = "hookspool.lock";

/// Name of the sled tree that holds everything.
const TREE: &str = "hookspool";

/// Default size of sled's page cache: 128 MiB (sled's own default is 1 GiB).
pub const DEFAULT_CACHE_CAPACITY: u64 = 128 * 1024 * 1024;

/// Interval of sled's own background flusher, in milliseconds. We keep sled's default: that
/// thread is the only place sled 0.34 compacts its log segments, so turning it off would
/// let the data file grow without bound. Its periodic fsync only adds to ours.
const SLED_FLUSH_EVERY_MS: u64 = 500;

/// How long `open` waits for sled's own file lock when ours is free. sled's I/O threads may
/// hold its data file for a moment after the previous handle in this process was dropped.
const SLED_LOCK_WAIT: Duration = Duration::from_secs(5);

/// Settings for [`SledBackend::open_with`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SledOptions {
    /// When a mutating call's effect is on the device (default [`Durability::Immediate`]).
    pub durability: Durability,
    /// Bytes of sled's page cache (default [`DEFAULT_CACHE_CAPACITY`]).
    pub cache_capacity: u64,
}

impl Default for SledOptions {
    fn default() -> Self {
        SledOptions {
            durability: Durability::Immediate,
            cache_capacity: DEFAULT_CACHE_CAPACITY,
        }
    }
}

impl SledOptions {
    /// Sets the durability.
    #[must_use]
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets the size of sled's page cache in bytes.
    #[must_use]
    pub fn with_cache_capacity(mut self, bytes: u64) -> Self {
        self.cache_capacity = bytes;
        self
    }
}

/// A durable [`Backend`] on sled 0.34 in a directory of its own.
///
/// Cloning gives another handle to the same store. The directory is locked while any
/// handle is alive; dropping the last one syncs, closes sled and releases the lock.
#[derive(Clone)]
pub struct SledBackend {
    inner: Arc<Inner>,
}

impl fmt::Debug for SledBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledBackend")
            .field("path", &self.inner.path)
            .field("durability", &self.inner.options.durability)
            .finish_non_exhaustive()
    }
}

/// Everything behind the handle. Field order is drop order, and it matters: the ticker
/// (stopped in `Drop`) before sled, sled before the directory lock.
struct Inner {
    path: PathBuf,
    options: SledOptions,
    ticker: Option<Ticker>,
    tree: sled::Tree,
    syncer: Arc<Syncer>,
    /// Writers take it exclusively around read-compute-apply, readers shared: every
    /// operation sees a state between whole operations. Never held while syncing.
    rw: RwLock<()>,
    _lock: DirLock,
}

impl Drop for Inner {
    fn drop(&mut self) {
        drop(self.ticker.take());
        // A clean close leaves nothing unsynced, whatever the durability setting.
        if self.syncer.check().is_ok()
            && self.syncer.dirty()
            && let Err(e) = self.syncer.sync_all_written()
        {
            tracing::error!(error = %e, path = %self.path.display(), "final sync failed");
        }
    }
}

impl SledBackend {
    /// Whether `dir` holds a sled store (sled's `db` or `conf` file). `false` for an empty
    /// or missing directory, or one that holds another backend's files. Reads only the
    /// directory listing (no lock is taken), so it can tell which backend to open with.
    pub fn detect(dir: impl AsRef<Path>) -> bool {
        let dir = dir.as_ref();
        dir.join("db").is_file() || dir.join("conf").is_file()
    }

    /// Opens (creating if needed) a store in `dir` with default options.
    ///
    /// # Errors
    /// [`Error::Locked`] if the directory is in use; [`Error::Corrupted`] if sled or the
    /// layout check finds damage; [`Error::Backend`] for I/O errors.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(dir, SledOptions::default())
    }

    /// Opens (creating if needed) a store in `dir`.
    ///
    /// This blocks (file locking, sled's recovery, a sync): in async code call it from
    /// `spawn_blocking` if the runtime must not stall.
    ///
    /// # Errors
    /// As [`SledBackend::open`], and [`Error::InvalidInput`] for a zero periodic interval.
    pub fn open_with(dir: impl AsRef<Path>, options: SledOptions) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        if let Durability::Periodic { interval } = options.durability
            && interval.is_zero()
        {
            return Err(Error::invalid(
                "the periodic sync interval must not be zero",
            ));
        }
        let existed = dir.is_dir();
        std::fs::create_dir_all(&dir).map_err(io_error)?;
        if !existed && let Some(parent) = dir.parent() {
            // The new directory's own entry must be durable too.
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            sync_dir(parent).map_err(io_error)?;
        }

        // Our lock first: a second open must get `Locked`, never sled's I/O error.
        let lock = DirLock::acquire(&dir)?;
        let config = sled::Config::new()
            .path(&dir)
            .cache_capacity(options.cache_capacity)
            .flush_every_ms(Some(SLED_FLUSH_EVERY_MS));
        let db = open_sled(&config, &dir)?;
        let tree = db.open_tree(TREE).map_err(sled_error)?;
        check_layout(&tree, &dir)?;
        let syncer = Arc::new(Syncer::new(db, &dir)?);
        syncer.sync_opened(&dir)?;
        let ticker = match options.durability {
            Durability::Immediate => None,
            Durability::Periodic { interval } => {
                Some(Ticker::start(Arc::clone(&syncer), interval)?)
            }
        };
        Ok(SledBackend {
            inner: Arc::new(Inner {
                path: dir,
                options,
                ticker,
                tree,
                syncer,
                rw: RwLock::new(()),
                _lock: lock,
            }),
        })
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &SledOptions {
        &self.inner.options
    }

    /// Whether some write that has been applied is not yet known to be on the device.
    ///
    /// Under [`Durability::Periodic`] this is what a power loss could take away right now;
    /// under [`Durability::Immediate`] it is true only while a call is waiting for its sync.
    pub fn has_unsynced_writes(&self) -> bool {
        self.inner.syncer.dirty()
    }

    /// Runs a read-only operation on a blocking thread, seeing a state between writes.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(move || {
            inner.syncer.check()?;
            let _shared = inner.rw.read().unwrap_or_else(PoisonError::into_inner);
            f(&Tx::new(&inner.tree))
        })
        .await
    }

    /// Runs a mutating operation on a blocking thread: computes its writes under the
    /// writer lock, applies them as one batch, then waits until they are synced
    /// (`Immediate`) or in sled's data file (`Periodic`), without the lock, so that other
    /// writers join the same flush or sync.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(move || {
            inner.syncer.check()?;
            let (out, generation) = {
                // A panic under this lock cannot leave sled half-written: writes reach
                // sled only in the single `apply_batch` below.
                let _exclusive = inner.rw.write().unwrap_or_else(PoisonError::into_inner);
                let mut tx = Tx::new(&inner.tree);
                let out = f(&mut tx)?;
                if tx.is_empty() {
                    (out, None)
                } else {
                    if let Err(e) = inner.tree.apply_batch(tx.into_batch()) {
                        // We cannot tell what sled kept; trust nothing more.
                        inner.syncer.poison(format!("a sled write failed: {e}"));
                        return Err(sled_error(e));
                    }
                    (out, Some(inner.syncer.record_write()))
                }
            };
            if let Some(generation) = generation {
                match inner.options.durability {
                    Durability::Immediate => inner.syncer.wait_durable(generation)?,
                    Durability::Periodic { .. } => inner.syncer.wait_flushed(generation)?,
                }
            }
            Ok(out)
        })
        .await
    }
}

/// Runs blocking work off the async runtime's threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::backend("sled", e))?
}

/// Opens sled, waiting a little if only sled's own lock is taken (see [`SLED_LOCK_WAIT`]).
fn open_sled(config: &sled::Config, dir: &Path) -> Result<sled::Db> {
    let deadline = Instant::now() + SLED_LOCK_WAIT;
    loop {
        match config.open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if Instant::now() >= deadline {
                    return Err(Error::Locked {
                        path: dir.display().to_string(),
                    });
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(sled_error(e)),
        }
    }
}

/// Checks (or, in a new store, writes) the key layout version.
fn check_layout(tree: &sled::Tree, dir: &Path) -> Result<()> {
    match tree.get(keys::LAYOUT_KEY).map_err(sled_error)? {
        Some(v) if v.as_ref() == [keys::LAYOUT_VERSION] => Ok(()),
        Some(v) => Err(Error::corrupted(format!(
            "{}: unknown key layout version {:?} (this build reads version {})",
            dir.display(),
            v.as_ref(),
            keys::LAYOUT_VERSION
        ))),
        None if tree.is_empty() => {
            tree.insert(keys::LAYOUT_KEY, &[keys::LAYOUT_VERSION])
                .map_err(sled_error)?;
            Ok(())
        }
        None => Err(Error::corrupted(format!(
            "{}: the store has entries but no layout version",
            dir.display()
        ))),
    }
}

/// The exclusive lock on `<dir>/hookspool.lock`, held for the life of the handle.
struct DirLock {
    _file: File,
    sled_file: PathBuf,
}

impl DirLock {
    fn acquire(dir: &Path) -> Result<Self> {
        Ok(DirLock {
            _file: hookspool::lock_file(&dir.join(LOCK_FILE), "sled")?,
            sled_file: dir.join("db"),
        })
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // sled closes its data file when its last internal reference goes, which can be a
        // moment after our handles are dropped (its I/O threads hold one). Release our lock
        // only once sled's is gone, so that whoever takes ours can open sled at once.
        // Both are `flock` locks, so a probe on a new descriptor conflicts with sled's.
        let deadline = Instant::now() + SLED_LOCK_WAIT;
        while Instant::now() < deadline {
            let Ok(probe) = File::open(&self.sled_file) else {
                return;
            };
            match probe.try_lock() {
                Err(TryLockError::WouldBlock) => std::thread::sleep(Duration::from_millis(1)),
                // Locked by us (released when `probe` drops) or unlockable: either way sled
                // is not holding it.
                _ => return,
            }
        }
    }
}

// ---- operations ---------------------------------------------------------------------------

/// The items of a page, in page order. Reads the tree directly: call it before the
/// transaction has written anything.
fn select_page(tx: &Tx<'_>, queue: &QueueId, page: &Page) -> Result<Vec<Item>> {
    if page.limit == 0 {
        return Ok(Vec::new());
    }
    let prefix = match &page.phase {
        None => keys::queue_prefix(ITEM, queue),
        Some(phase) => keys::phase_prefix(queue, phase),
    };
    let first = Bound::Included(keys::with_u64(prefix.clone(), 0));
    let last = Bound::Included(keys::with_u64(prefix.clone(), u64::MAX));
    let range = match (page.after, page.reverse) {
        (None, _) => (first, last),
        (Some(after), false) => (Bound::Excluded(keys::with_u64(prefix, after)), last),
        (Some(0), true) => return Ok(Vec::new()),
        (Some(after), true) => (first, Bound::Excluded(keys::with_u64(prefix, after))),
    };
    let iter = tx.tree().range(range);
    let iter: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = if page.reverse {
        Box::new(iter.rev())
    } else {
        Box::new(iter)
    };
    let mut skipped = 0;
    let mut out = Vec::new();
    for entry in iter {
        let (k, v) = entry.map_err(sled_error)?;
        if skipped < page.offset {
            skipped += 1;
            continue;
        }
        let key = keys::trailing_key(&k)
            .ok_or_else(|| Error::corrupted(format!("queue `{queue}`: malformed index key")))?;
        out.push(match page.phase {
            None => tx::decode_stored(queue, key, &v)?,
            Some(_) => tx.indexed_item(queue, key, "phase")?,
        });
        if out.len() == page.limit {
            break;
        }
    }
    Ok(out)
}

fn select(tx: &Tx<'_>, queue: &QueueId, selector: &Selector) -> Result<Vec<Item>> {
    match selector {
        Selector::Key(key) => Ok(tx.item(queue, *key)?.into_iter().collect()),
        Selector::Page(page) => select_page(tx, queue, page),
    }
}

/// The `(time, key)` pair at the end of a due or lease index key.
fn time_and_key(queue: &QueueId, k: &[u8]) -> Result<(Timestamp, Key)> {
    let time = k
        .len()
        .checked_sub(16)
        .and_then(|start| keys::trailing_key(&k[..start + 8]));
    match (time, keys::trailing_key(k)) {
        (Some(t), Some(key)) => Ok((Timestamp::from_millis(t), key)),
        _ => Err(Error::corrupted(format!(
            "queue `{queue}`: malformed index key"
        ))),
    }
}

/// The index range of entries `tag | queue | time ≤ until | key`.
fn time_range(tag: u8, queue: &QueueId, until: Timestamp) -> tx::Range {
    let prefix = keys::queue_prefix(tag, queue);
    (
        Bound::Included(keys::with_u64(keys::with_u64(prefix.clone(), 0), 0)),
        Bound::Included(keys::with_u64(
            keys::with_u64(prefix, until.as_millis()),
            u64::MAX,
        )),
    )
}

/// Expired leases back to pending, then pending items past the TTL to `expired` (in that
/// order, so a released item past its TTL expires in the same sweep). Reads only the
/// expired parts of the lease and age indexes.
fn sweep(
    tx: &mut Tx<'_>,
    queue: &QueueId,
    config: &QueueConfig,
    now: Timestamp,
) -> Result<SweepReport> {
    let mut report = SweepReport::default();

    let leases = tx
        .keys(time_range(LEASE, queue, now))
        .map(|k| k.and_then(|k| time_and_key(queue, &k)))
        .collect::<Result<Vec<_>>>()?;
    for (until, key) in leases {
        let mut item = tx.indexed_item(queue, key, "lease")?;
        if item.lease.as_ref().map(|l| l.until) != Some(until) {
            return Err(Error::corrupted(format!(
                "queue `{queue}`: the lease index disagrees with item {key}"
            )));
        }
        tx.remove_item(queue, &item)?;
        item.phase = Phase::PENDING;
        item.lease = None;
        item.not_before = now;
        item.updated_at = now;
        tx.insert_item(queue, &item)?;
        report.released += 1;
    }

    if let Some(ttl) = config.ttl {
        // `created_at + ttl <= now` (saturating, as `Timestamp::saturating_add`) holds
        // exactly for `created_at <= now - ttl`, or for every item when `now` is the end
        // of time. The age index yields exactly those items, in any clock history.
        let ttl = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let newest = if now.as_millis() == u64::MAX {
            Some(u64::MAX)
        } else {
            now.as_millis().checked_sub(ttl)
        };
        if let Some(newest) = newest {
            let old = tx
                .keys(time_range(AGE, queue, Timestamp::from_millis(newest)))
                .map(|k| k.and_then(|k| time_and_key(queue, &k)))
                .collect::<Result<Vec<_>>>()?;
            for (created_at, key) in old {
                let mut item = tx.indexed_item(queue, key, "age")?;
                if item.phase != Phase::PENDING || item.created_at != created_at {
                    return Err(Error::corrupted(format!(
                        "queue `{queue}`: the age index disagrees with item {key}"
                    )));
                }
                tx.remove_item(queue, &item)?;
                item.phase = Phase::EXPIRED;
                item.updated_at = now;
                tx.insert_item(queue, &item)?;
                report.expired += 1;
            }
        }
    }
    Ok(report)
}

impl Backend for SledBackend {
    fn capabilities(&self) -> Capabilities {
        Capabilities::EXCLUSIVE
    }

    async fn create_queue(&self, config: QueueConfig) -> Result<()> {
        self.write(move |tx| {
            if tx.find_config(&config.id)?.is_some() {
                return Err(Error::QueueExists(config.id));
            }
            tx.put_config(&config)?;
            tx.set_next_key(&config.id, 1);
            Ok(())
        })
        .await
    }

    async fn update_queue(&self, mut config: QueueConfig) -> Result<()> {
        self.write(move |tx| {
            let old = tx.config(&config.id)?;
            config.created_at = old.created_at;
            tx.put_config(&config)
        })
        .await
    }

    async fn get_queue(&self, id: &QueueId) -> Result<Option<QueueConfig>> {
        let id = id.clone();
        self.read(move |tx| tx.find_config(&id)).await
    }

    async fn list_queues(&self) -> Result<Vec<QueueConfig>> {
        self.read(|tx| {
            let mut all = Vec::new();
            for entry in tx.tree().scan_prefix([CONFIG]) {
                let (k, _) = entry.map_err(sled_error)?;
                let id = keys::queue_of_config_key(&k)
                    .and_then(|id| QueueId::new(id).ok())
                    .ok_or_else(|| {
                        Error::corrupted(format!("malformed queue settings key {:?}", k.as_ref()))
                    })?;
                all.extend(tx.find_config(&id)?);
            }
            // Keys sort by id length first (the length prefix), so sort by id here.
            all.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(all)
        })
        .await
    }

    async fn delete_queue(&self, id: &QueueId) -> Result<bool> {
        let id = id.clone();
        self.write(move |tx| {
            if tx.find_config(&id)?.is_none() {
                return Ok(false);
            }
            for tag in ITEM_TAGS {
                tx.del_prefix(&keys::queue_prefix(tag, &id))?;
            }
            tx.del(keys::queue_prefix(CONFIG, &id));
            tx.del(keys::queue_prefix(NEXT_KEY, &id));
            Ok(true)
        })
        .await
    }

    async fn push(&self, queue: &QueueId, items: Vec<NewItem>, now: Timestamp) -> Result<Vec<Key>> {
        let queue = queue.clone();
        self.write(move |tx| {
            tx.config(&queue)?;
            if items.is_empty() {
                return Ok(Vec::new());
            }
            let first = tx.next_key(&queue)?;
            let next = first
                .checked_add(items.len() as u64)
                .ok_or_else(|| Error::invalid(format!("queue `{queue}` has run out of keys")))?;
            let mut keys = Vec::with_capacity(items.len());
            for (key, new) in (first..next).zip(items) {
                tx.insert_item(
                    &queue,
                    &Item {
                        key,
                        payload: new.payload,
                        phase: Phase::PENDING,
                        attempts: 0,
                        created_at: now,
                        updated_at: now,
                        not_before: new.not_before.unwrap_or(now),
                        lease: None,
                        last_error: None,
                        metadata: new.metadata,
                    },
                )?;
                keys.push(key);
            }
            tx.set_next_key(&queue, next);
            Ok(keys)
        })
        .await
    }

    async fn fetch(&self, queue: &QueueId, selector: &Selector) -> Result<Vec<Item>> {
        let (queue, selector) = (queue.clone(), selector.clone());
        self.read(move |tx| {
            tx.config(&queue)?;
            select(tx, &queue, &selector)
        })
        .await
    }

    async fn pop(&self, queue: &QueueId, selector: &Selector) -> Result<Vec<Item>> {
        let (queue, selector) = (queue.clone(), selector.clone());
        self.write(move |tx| {
            tx.config(&queue)?;
            let items = select(tx, &queue, &selector)?;
            for item in &items {
                tx.remove_item(&queue, item)?;
            }
            Ok(items)
        })
        .await
    }

    async fn count(&self, queue: &QueueId) -> Result<PhaseCounts> {
        let queue = queue.clone();
        self.read(move |tx| {
            tx.config(&queue)?;
            let prefix = keys::queue_prefix(COUNT, &queue);
            let mut counts = PhaseCounts::default();
            // One entry per non-empty phase: the cost is the number of phases, not items.
            for entry in tx.tree().scan_prefix(&prefix) {
                let (k, v) = entry.map_err(sled_error)?;
                let name = keys::phase_of_count_key(&prefix, &k).unwrap_or_default();
                let phase = Phase::new(name).map_err(|_| {
                    Error::corrupted(format!("queue `{queue}`: malformed counter key"))
                })?;
                let n = tx::decode_count(&queue, phase.as_str(), &v)?;
                if n > 0 {
                    counts.add(&phase, n);
                }
            }
            Ok(counts)
        })
        .await
    }

    async fn reset(&self, queue: &QueueId) -> Result<u64> {
        let queue = queue.clone();
        self.write(move |tx| {
            tx.config(&queue)?;
            let mut removed = 0;
            for tag in ITEM_TAGS {
                let n = tx.del_prefix(&keys::queue_prefix(tag, &queue))?;
                if tag == ITEM {
                    removed = n;
                }
            }
            Ok(removed)
        })
        .await
    }

    async fn update(
        &self,
        queue: &QueueId,
        key: Key,
        transition: Transition,
        now: Timestamp,
    ) -> Result<Item> {
        let queue = queue.clone();
        self.write(move |tx| {
            tx.config(&queue)?;
            let item = tx.item(&queue, key)?.ok_or_else(|| Error::ItemNotFound {
                queue: queue.clone(),
                key,
            })?;
            check_expect(&item, &transition)?;
            tx.remove_item(&queue, &item)?;
            match transition.action {
                Action::Remove => Ok(item),
                Action::Move(m) => {
                    let mut item = item;
                    apply_move(&mut item, m, now);
                    tx.insert_item(&queue, &item)?;
                    Ok(item)
                }
            }
        })
        .await
    }

    async fn claim(&self, queue: &QueueId, claim: Claim, now: Timestamp) -> Result<Vec<Item>> {
        let queue = queue.clone();
        self.write(move |tx| {
            let config = tx.config(&queue)?;
            sweep(tx, &queue, &config, now)?;
            if claim.limit == 0 {
                return Ok(Vec::new());
            }
            // The due index is ordered by (not_before, key): the first `limit` entries up to
            // `now` are exactly the items to lease. It sees the sweep's writes.
            let due = tx
                .keys(time_range(DUE, &queue, now))
                .take(claim.limit)
                .map(|k| k.and_then(|k| time_and_key(&queue, &k)))
                .collect::<Result<Vec<_>>>()?;
            let mut out = Vec::with_capacity(due.len());
            for (not_before, key) in due {
                let mut item = tx.indexed_item(&queue, key, "due")?;
                if item.phase != Phase::PENDING || item.not_before != not_before {
                    return Err(Error::corrupted(format!(
                        "queue `{queue}`: the due index disagrees with item {key}"
                    )));
                }
                tx.remove_item(&queue, &item)?;
                item.phase = Phase::IN_FLIGHT;
                item.attempts = item.attempts.saturating_add(1);
                item.lease = Some(Lease {
                    owner: claim.owner.clone(),
                    until: claim.lease_until,
                });
                item.updated_at = now;
                tx.insert_item(&queue, &item)?;
                out.push(item);
            }
            Ok(out)
        })
        .await
    }

    async fn sweep(&self, queue: &QueueId, now: Timestamp) -> Result<SweepReport> {
        let queue = queue.clone();
        self.write(move |tx| {
            let config = tx.config(&queue)?;
            sweep(tx, &queue, &config, now)
        })
        .await
    }

    async fn sync(&self) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        blocking(move || {
            inner.syncer.check()?;
            inner.syncer.sync_all_written()
        })
        .await
    }
}
