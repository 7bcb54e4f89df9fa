//! Making writes survive power loss: sled's flush followed by our own fdatasync of the files
//! sled wrote, shared between concurrent writers (group commit), with poisoning on failure
//! and the background syncer of [`crate::Durability::Periodic`].

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use hookspool::{Error, Result};

/// Shared sync state. Writes are numbered (generations) in the order they were applied;
/// `synced` is the highest generation known to be on the device.
#[derive(Debug, Default)]
struct SyncState {
    /// Generation of the latest applied write.
    written: u64,
    /// Every write with a generation ≤ this is in sled's data file (sled's `flush`).
    flushed: u64,
    /// Every write with a generation ≤ this is durable (flushed and fdatasync'ed).
    synced: u64,
    /// A leader is running a flush or sync right now; the others wait for its result.
    busy: bool,
    /// Why the backend is poisoned, once a sync has failed.
    poisoned: Option<String>,
}

/// Runs and shares syncs of one sled database.
#[derive(Debug)]
pub(crate) struct Syncer {
    db: sled::Db,
    /// Our own handle on sled's data file `<dir>/db`, only for `fdatasync`. sled's `flush`
    /// on Linux ends in `sync_file_range`, which pushes the pages to the device but neither
    /// flushes its write cache nor persists the file size: that is what this handle is for.
    /// sled never replaces the file (it writes in place), so the handle stays valid.
    data_file: File,
    /// `<dir>/blobs`: sled writes every value too large for its log (over about 128 KiB)
    /// to its own file there, without any sync.
    blobs_dir: PathBuf,
    state: Mutex<SyncState>,
    cond: Condvar,
    /// Blob files already synced, with the length they had then. Blobs are written once and
    /// only appended to while being written, so a changed length means "sync again".
    synced_blobs: Mutex<HashMap<OsString, u64>>,
}

impl Syncer {
    /// Wraps an open database whose directory is `dir`.
    pub(crate) fn new(db: sled::Db, dir: &Path) -> Result<Self> {
        let data_file = File::open(dir.join("db")).map_err(io_error)?;
        Ok(Syncer {
            db,
            data_file,
            blobs_dir: dir.join("blobs"),
            state: Mutex::new(SyncState::default()),
            cond: Condvar::new(),
            synced_blobs: Mutex::new(HashMap::new()),
        })
    }

    fn state(&self) -> MutexGuard<'_, SyncState> {
        // The state is a few counters updated in single assignments; a panic elsewhere
        // cannot leave them inconsistent, so a poisoned mutex still guards valid data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `Err(Poisoned)` once a sync or a write has failed.
    pub(crate) fn check(&self) -> Result<()> {
        match &self.state().poisoned {
            Some(reason) => Err(Error::Poisoned {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Marks the backend as poisoned (the first reason wins).
    pub(crate) fn poison(&self, reason: String) {
        let mut st = self.state();
        if st.poisoned.is_none() {
            tracing::error!(%reason, "hookspool-sled backend poisoned");
            st.poisoned = Some(reason);
        }
        drop(st);
        self.cond.notify_all();
    }

    /// Records that a write has been applied to sled and returns its generation. Call it
    /// after `apply_batch` returned: any sync that starts later covers the write.
    pub(crate) fn record_write(&self) -> u64 {
        let mut st = self.state();
        st.written += 1;
        st.written
    }

    /// The generation of the latest applied write.
    pub(crate) fn latest(&self) -> u64 {
        self.state().written
    }

    /// Whether some applied write is not yet known to be durable.
    pub(crate) fn dirty(&self) -> bool {
        let st = self.state();
        st.written > st.synced
    }

    /// Returns once the write of generation `generation` is durable (on the device).
    pub(crate) fn wait_durable(&self, generation: u64) -> Result<()> {
        self.wait(generation, Level::Synced)
    }

    /// Returns once the write of generation `generation` is in sled's data file (it
    /// survives a crash of the process, not necessarily a power loss).
    pub(crate) fn wait_flushed(&self, generation: u64) -> Result<()> {
        self.wait(generation, Level::Flushed)
    }

    /// Group commit: if no flush or sync is running, this caller becomes the leader and
    /// flushes (or syncs) everything written so far, not just its own write; callers
    /// arriving meanwhile wait, and are woken when the leader is done; those it did not
    /// cover (they wrote after it took its target, or need a sync where it only flushed)
    /// elect the next leader, which again works for all of them.
    fn wait(&self, generation: u64, level: Level) -> Result<()> {
        let mut st = self.state();
        loop {
            if let Some(reason) = &st.poisoned {
                return Err(Error::Poisoned {
                    reason: reason.clone(),
                });
            }
            let done = match level {
                Level::Flushed => st.flushed,
                Level::Synced => st.synced,
            };
            if done >= generation {
                return Ok(());
            }
            if st.busy {
                st = self.cond.wait(st).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            st.busy = true;
            let target = st.written;
            drop(st);

            let mut leader = Leader {
                syncer: self,
                finished: false,
            };
            let result = match level {
                Level::Flushed => self.db.flush().map(drop).map_err(Into::into),
                Level::Synced => self.sync_files(),
            };
            leader.finished = true;

            st = self.state();
            st.busy = false;
            match result {
                Ok(()) => {
                    st.flushed = st.flushed.max(target);
                    if level == Level::Synced {
                        st.synced = st.synced.max(target);
                    }
                }
                Err(e) => {
                    let reason = format!("flush or sync of the sled data directory failed: {e}");
                    tracing::error!(%reason, "hookspool-sled backend poisoned");
                    st.poisoned.get_or_insert(reason);
                }
            }
            drop(leader);
            self.cond.notify_all();
        }
    }

    /// Makes every write applied so far durable.
    pub(crate) fn sync_all_written(&self) -> Result<()> {
        let target = self.latest();
        self.wait_durable(target)
    }

    /// Makes a freshly opened directory durable: everything sled wrote while opening
    /// (its `conf` file, recovery snapshot, the tree we created) and the directory entries
    /// of `db`, `conf`, `blobs` and `snap.*`. sled syncs none of these entries itself.
    pub(crate) fn sync_opened(&self, dir: &Path) -> Result<()> {
        self.sync_files().map_err(|e| {
            Error::backend(
                "sled",
                format!("sync of {} after opening failed: {e}", dir.display()),
            )
        })?;
        File::open(dir.join("conf"))
            .and_then(|f| f.sync_data())
            .map_err(io_error)?;
        sync_dir(&self.blobs_dir).map_err(io_error)?;
        sync_dir(dir).map_err(io_error)
    }

    /// Flushes sled, then fdatasyncs what it wrote: new or grown blob files (and their
    /// directory when one is new), then the data file. Blobs go first so that once the log
    /// entry pointing at a blob is on the device, the blob is too.
    fn sync_files(&self) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.db.flush()?;
        self.sync_blobs()?;
        self.data_file.sync_data()?;
        Ok(())
    }

    fn sync_blobs(&self) -> std::io::Result<()> {
        let mut synced = self
            .synced_blobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut seen = HashMap::with_capacity(synced.len());
        let mut new_entry = false;
        let entries = match std::fs::read_dir(&self.blobs_dir) {
            Ok(entries) => entries,
            // sled creates the directory when it opens; if it is gone there is nothing to do.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let len = match entry.metadata() {
                Ok(m) => m.len(),
                // sled's blob GC removed it between the listing and now.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            match synced.get(&name) {
                Some(&done) if done == len => {}
                previous => {
                    new_entry |= previous.is_none();
                    match File::open(entry.path()) {
                        Ok(f) => f.sync_data()?,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e),
                    }
                }
            }
            seen.insert(name, len);
        }
        if new_entry {
            sync_dir(&self.blobs_dir)?;
        }
        // Forget removed blobs, so the map does not grow with the history of the store.
        *synced = seen;
        Ok(())
    }
}

/// How far a write must have gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    /// Written by sled to its data file (survives a process crash).
    Flushed,
    /// Also fdatasync'ed (survives a power loss).
    Synced,
}

/// Resets the `busy` flag if a sync panics, so that waiting writers are not stuck
/// forever: they see the backend poisoned instead.
struct Leader<'a> {
    syncer: &'a Syncer,
    finished: bool,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let mut st = self.syncer.state();
            st.busy = false;
            st.poisoned
                .get_or_insert_with(|| "a sync of the sled data directory panicked".into());
            drop(st);
            self.syncer.cond.notify_all();
        }
    }
}

/// The background thread of `Durability::Periodic`: syncs every `interval` while something
/// is unsynced. It stops when the [`Ticker`] is dropped.
#[derive(Debug)]
pub(crate) struct Ticker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    /// Starts the thread.
    pub(crate) fn start(syncer: Arc<Syncer>, interval: Duration) -> Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("hookspool-sled-sync".into())
            .spawn(move || {
                // `recv_timeout` returns `Disconnected` as soon as the sender is dropped, so
                // shutdown does not wait for the rest of an interval.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    if syncer.check().is_err() {
                        return;
                    }
                    if syncer.dirty() {
                        // A failure poisons the backend; callers see it on their next call.
                        let _ = syncer.sync_all_written();
                    }
                }
            })
            .map_err(io_error)?;
        Ok(Ticker {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the hookspool-sled sync thread panicked");
        }
    }
}

/// fsyncs a directory, so that the entries created in it (files, renames) are durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Wraps an I/O error as a backend error.
pub(crate) fn io_error(e: std::io::Error) -> Error {
    Error::backend("sled", e)
}
