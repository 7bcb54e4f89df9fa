//! The backends and durability modes under test, behind one store type, plus the runtime and
//! queue every case uses.

use std::path::Path;
use std::time::Duration;

use hookspool::{
    Item, Key, MemoryBackend, NewItem, Page, Phase, QueueConfig, QueueId, Retention, Store,
    Transition,
};

use hookspool_journal::{JournalBackend, JournalOptions};
use hookspool_sled::{Durability, SledBackend, SledOptions};

use super::{BATCH, BenchResult, payload};

/// The queue every case pushes into.
pub const QUEUE: &str = "bench";
/// The consumer name of the claim cases.
pub const OWNER: &str = "bench-consumer";
/// Lease of the claim cases: long enough never to expire during a run.
pub const LEASE: Duration = Duration::from_hours(1);
/// Sync interval of the periodic modes.
pub const BATCHED_INTERVAL: Duration = Duration::from_millis(10);

/// A backend with one of its durability settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `MemoryBackend`: not durable.
    Memory,
    /// `SledBackend`, `Durability::Immediate` (the default): fdatasync'ed when a call returns.
    SledImmediate,
    /// `SledBackend`, `Durability::Periodic { interval: 10ms }`: in the OS when a call
    /// returns, synced by a background thread or `sync()`.
    SledPeriodic,
    /// `JournalBackend`, `Durability::Immediate` (the default): fdatasync'ed (group commit).
    JournalImmediate,
    /// `JournalBackend`, `Durability::Periodic { interval: 10ms }`: written to the file when
    /// a call returns, fdatasync'ed by the writer every 10 ms or on `sync()`.
    JournalPeriodic,
}

impl Mode {
    /// Every mode, in table order.
    pub const ALL: [Mode; 5] = [
        Mode::Memory,
        Mode::SledImmediate,
        Mode::SledPeriodic,
        Mode::JournalImmediate,
        Mode::JournalPeriodic,
    ];

    /// The name used in case names and child arguments.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Memory => "memory",
            Mode::SledImmediate => "sled-immediate",
            Mode::SledPeriodic => "sled-periodic",
            Mode::JournalImmediate => "journal-immediate",
            Mode::JournalPeriodic => "journal-periodic",
        }
    }

    /// The name printed in tables.
    pub fn label(self) -> &'static str {
        match self {
            Mode::Memory => "memory",
            Mode::SledImmediate => "sled Immediate",
            Mode::SledPeriodic => "sled Periodic 10ms",
            Mode::JournalImmediate => "journal Immediate",
            Mode::JournalPeriodic => "journal Periodic 10ms",
        }
    }

    /// Parses [`Mode::name`].
    pub fn parse(name: &str) -> BenchResult<Mode> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| format!("unknown mode {name:?}").into())
    }

    /// Whether every mutating call waits for the disk, so that per-call cases get the small
    /// count: sled `Immediate` waits for an fdatasync, and sled `Periodic` for sled's own
    /// `flush` (a `sync_file_range` that waits for the writeback), measured at ~0.3-0.5 ms
    /// a call on this machine.
    pub fn waits_for_disk_per_call(self) -> bool {
        self != Mode::Memory
    }

    /// Whether data lives in files under the case's directory.
    pub fn on_disk(self) -> bool {
        self != Mode::Memory
    }

    /// Opens this backend on `dir` (ignored by memory).
    pub fn open(self, dir: &Path) -> BenchResult<AnyStore> {
        match self {
            Mode::Memory => {
                let _ = dir;
                Ok(AnyStore::Memory(Store::new(MemoryBackend::new())))
            }
            Mode::SledImmediate | Mode::SledPeriodic => {
                let durability = if self == Mode::SledImmediate {
                    Durability::Immediate
                } else {
                    Durability::Periodic {
                        interval: BATCHED_INTERVAL,
                    }
                };
                let options = SledOptions::default().with_durability(durability);
                Ok(AnyStore::Sled(Store::new(SledBackend::open_with(
                    dir, options,
                )?)))
            }
            Mode::JournalImmediate | Mode::JournalPeriodic => {
                let durability = if self == Mode::JournalImmediate {
                    hookspool_journal::Durability::Immediate
                } else {
                    hookspool_journal::Durability::Periodic {
                        interval: BATCHED_INTERVAL,
                    }
                };
                let options = JournalOptions {
                    durability,
                    ..JournalOptions::default()
                };
                Ok(AnyStore::Journal(Store::new(JournalBackend::open_with(
                    dir, options,
                )?)))
            }
        }
    }
}

/// A store over any backend under test. An enum rather than generics, so that every case is
/// written once; the match per call costs nothing next to what is measured.
#[derive(Clone, Debug)]
pub enum AnyStore {
    /// Over [`MemoryBackend`].
    Memory(Store<MemoryBackend>),
    /// Over [`SledBackend`].
    Sled(Store<SledBackend>),
    /// Over [`JournalBackend`].
    Journal(Store<JournalBackend>),
}

/// Runs the same expression on whichever store `$self` holds.
macro_rules! each {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            AnyStore::Memory($s) => $e,
            AnyStore::Sled($s) => $e,
            AnyStore::Journal($s) => $e,
        }
    };
}

impl AnyStore {
    /// `Store::create_queue`.
    pub async fn create_queue(&self, config: QueueConfig) -> BenchResult<()> {
        each!(self, s => s.create_queue(config).await?);
        Ok(())
    }

    /// `Store::push`.
    pub async fn push(&self, queue: &QueueId, item: NewItem) -> hookspool::Result<Key> {
        each!(self, s => s.push(queue, item).await)
    }

    /// `Store::push_batch`.
    pub async fn push_batch(
        &self,
        queue: &QueueId,
        items: Vec<NewItem>,
    ) -> hookspool::Result<Vec<Key>> {
        each!(self, s => s.push_batch(queue, items).await)
    }

    /// `Store::claim` of up to `limit` items for [`OWNER`] with [`LEASE`].
    pub async fn claim(&self, queue: &QueueId, limit: usize) -> hookspool::Result<Vec<Item>> {
        each!(self, s => s.claim(queue, OWNER, limit, LEASE).await)
    }

    /// `Store::ack` by [`OWNER`].
    pub async fn ack(&self, queue: &QueueId, key: Key) -> hookspool::Result<()> {
        each!(self, s => s.ack(queue, key, OWNER).await)
    }

    /// `Store::ack_many` by [`OWNER`]: every key must be acked.
    pub async fn ack_many(&self, queue: &QueueId, keys: &[Key]) -> BenchResult<()> {
        let results = each!(self, s => s.ack_many(queue, keys, OWNER).await?);
        if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
            return Err(e.into());
        }
        Ok(())
    }

    /// `Store::update_many`: every entry must succeed.
    pub async fn update_many(
        &self,
        queue: &QueueId,
        updates: Vec<(Key, Transition)>,
    ) -> BenchResult<()> {
        let results = each!(self, s => s.update_many(queue, updates).await?);
        if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
            return Err(e.into());
        }
        Ok(())
    }

    /// `Store::pop_page` of up to `limit` pending items.
    pub async fn pop_pending(&self, queue: &QueueId, limit: usize) -> hookspool::Result<Vec<Item>> {
        let page = Page::first(limit).phase(Phase::PENDING);
        each!(self, s => s.pop_page(queue, page).await)
    }

    /// `Store::count`.
    pub async fn count(&self, queue: &QueueId) -> hookspool::Result<u64> {
        each!(self, s => s.count(queue).await)
    }

    /// `Store::count_phase`.
    pub async fn count_phase(&self, queue: &QueueId, phase: &Phase) -> hookspool::Result<u64> {
        each!(self, s => s.count_phase(queue, phase).await)
    }

    /// `Store::sync`.
    pub async fn sync(&self) -> hookspool::Result<()> {
        each!(self, s => s.sync().await)
    }
}

/// The multi-threaded runtime the cases run on (one worker per CPU, as a service would).
pub fn runtime() -> BenchResult<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// The bench queue's id.
pub fn queue_id() -> BenchResult<QueueId> {
    Ok(QueueId::new(QUEUE)?)
}

/// Creates the bench queue with `retention`.
pub async fn create_queue(store: &AnyStore, retention: Retention) -> BenchResult<QueueId> {
    let id = queue_id()?;
    store
        .create_queue(QueueConfig::new(id.clone()).with_retention(retention))
        .await?;
    Ok(id)
}

/// Items `first..first + len` as a batch.
pub fn batch(first: usize, len: usize) -> Vec<NewItem> {
    (first..first + len)
        .map(|seq| NewItem::new(payload(seq as u64)))
        .collect()
}

/// Pushes `n` items in batches of [`BATCH`], then syncs.
pub async fn fill(store: &AnyStore, queue: &QueueId, n: usize) -> BenchResult<()> {
    let mut done = 0;
    while done < n {
        let len = BATCH.min(n - done);
        store.push_batch(queue, batch(done, len)).await?;
        done += len;
    }
    store.sync().await?;
    Ok(())
}
