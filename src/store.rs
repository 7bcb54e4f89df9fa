//! `Store`: the queue API applications call. It validates input, enforces limits, reads the
//! clock, and builds the queue operations and the consumer protocol on the backend primitives.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::{
    Action, Claim, Expect, Item, Key, Move, NewItem, Page, Phase, PhaseCounts, QueueConfig,
    QueueId, Retain, Retention, Selector, SweepReport, Timestamp, Transition,
};
use crate::retention::Pruned;

/// Default largest payload: 1 MiB.
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;
/// Default largest batch (for `push_batch`, `claim` and pages): 10,000 items.
pub const DEFAULT_MAX_BATCH: usize = 10_000;
/// Most metadata entries on one item or queue.
pub const MAX_METADATA_ENTRIES: usize = 64;
/// Largest metadata key, in bytes.
pub const MAX_METADATA_KEY: usize = 128;
/// Largest metadata value, in bytes.
pub const MAX_METADATA_VALUE: usize = 8 * 1024;
/// Longest consumer (lease owner) name, in bytes.
pub const MAX_OWNER_LEN: usize = 128;
/// Items per page that `dump` reads at a time.
pub const DUMP_PAGE: usize = 1000;

/// Where the store reads the time. Injectable so that tests drive leases and TTLs.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that moves only when told to. Clones share the same time.
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: Timestamp) -> Self {
        ManualClock(Arc::new(AtomicU64::new(start.as_millis())))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the clock.
    pub fn set(&self, to: Timestamp) {
        self.0.store(to.as_millis(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

/// A clock that follows tokio's clock (so `tokio::time::pause` and `advance` move it too),
/// starting at a given wall-clock time. For tests of schedules; clones share the start.
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    base: Timestamp,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock that shows `base` now and then moves with tokio's clock.
    pub fn starting_at(base: Timestamp) -> Self {
        TokioClock {
            base,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        self.base.saturating_add(self.start.elapsed())
    }
}

/// Size limits the store enforces before anything reaches the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload in bytes (default [`DEFAULT_MAX_PAYLOAD`]).
    pub max_payload: usize,
    /// Largest batch, claim or page (default [`DEFAULT_MAX_BATCH`]).
    pub max_batch: usize,
}

impl Limits {
    /// Checks a batch to push as [`Store::push_batch`] does: its length, every payload's size
    /// and every item's metadata. For code that pushes past a `Store` (for example into a
    /// database transaction of its own) with the same rules.
    ///
    /// # Errors
    /// [`Error::BatchTooLarge`], [`Error::PayloadTooLarge`], [`Error::InvalidInput`].
    pub fn check_items(&self, items: &[NewItem]) -> Result<()> {
        if items.len() > self.max_batch {
            return Err(Error::BatchTooLarge {
                len: items.len(),
                limit: self.max_batch,
            });
        }
        for item in items {
            if item.payload.len() > self.max_payload {
                return Err(Error::PayloadTooLarge {
                    size: item.payload.len(),
                    limit: self.max_payload,
                });
            }
            check_metadata(&item.metadata)?;
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_batch: DEFAULT_MAX_BATCH,
        }
    }
}

/// The queue API over a backend. Cheap to clone (the backend is shared).
///
/// Every method validates its input first and returns a typed [`Error`] saying what is wrong;
/// nothing reaches the backend unless it is valid.
pub struct Store<B> {
    backend: Arc<B>,
    limits: Limits,
    clock: Arc<dyn Clock>,
    pub(crate) pruned: Arc<Pruned>,
}

impl<B> Clone for Store<B> {
    fn clone(&self) -> Self {
        Store {
            backend: Arc::clone(&self.backend),
            limits: self.limits,
            clock: Arc::clone(&self.clock),
            pruned: Arc::clone(&self.pruned),
        }
    }
}

impl<B: Backend> fmt::Debug for Store<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> Store<B> {
    /// A store over `backend` with default limits and the system clock.
    pub fn new(backend: B) -> Self {
        Self::from_arc(Arc::new(backend))
    }

    /// A store over a shared backend.
    pub fn from_arc(backend: Arc<B>) -> Self {
        Store {
            backend,
            limits: Limits::default(),
            clock: Arc::new(SystemClock),
            pruned: Arc::default(),
        }
    }

    /// Replaces the limits.
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Replaces the clock.
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<B> {
        &self.backend
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The store's current time.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    // ---- queues -------------------------------------------------------------------------

    /// Creates a queue; `created_at` is set to now. Returns the stored settings.
    ///
    /// # Errors
    /// [`Error::QueueExists`], [`Error::InvalidInput`] for a zero TTL or bad metadata.
    pub async fn create_queue(&self, mut config: QueueConfig) -> Result<QueueConfig> {
        check_queue_config(&config)?;
        config.created_at = self.now();
        self.backend.create_queue(config.clone()).await?;
        Ok(config)
    }

    /// Replaces a queue's settings (its `created_at` is kept). Returns the stored settings.
    pub async fn update_queue(&self, config: QueueConfig) -> Result<QueueConfig> {
        check_queue_config(&config)?;
        self.backend.update_queue(config.clone()).await?;
        self.backend
            .get_queue(&config.id)
            .await?
            .ok_or(Error::QueueNotFound(config.id))
    }

    /// A queue's settings, or `None`.
    pub async fn queue(&self, id: &QueueId) -> Result<Option<QueueConfig>> {
        self.backend.get_queue(id).await
    }

    /// Every queue, ordered by id.
    pub async fn queues(&self) -> Result<Vec<QueueConfig>> {
        self.backend.list_queues().await
    }

    /// Deletes a queue and all its items; `false` if there was no such queue.
    pub async fn delete_queue(&self, id: &QueueId) -> Result<bool> {
        self.backend.delete_queue(id).await
    }

    async fn require_queue(&self, id: &QueueId) -> Result<QueueConfig> {
        self.backend
            .get_queue(id)
            .await?
            .ok_or_else(|| Error::QueueNotFound(id.clone()))
    }

    // ---- items --------------------------------------------------------------------------

    /// Pushes one item; returns its key.
    ///
    /// # Errors
    /// [`Error::QueueNotFound`], [`Error::PayloadTooLarge`], [`Error::InvalidInput`] for bad
    /// metadata.
    pub async fn push(&self, queue: &QueueId, item: NewItem) -> Result<Key> {
        let keys = self.push_batch(queue, vec![item]).await?;
        keys.first()
            .copied()
            .ok_or_else(|| Error::internal("the backend returned no key for a pushed item"))
    }

    /// Pushes a batch atomically (all or none); returns the keys in order.
    ///
    /// # Errors
    /// As [`Store::push`], plus [`Error::BatchTooLarge`].
    pub async fn push_batch(&self, queue: &QueueId, items: Vec<NewItem>) -> Result<Vec<Key>> {
        self.limits.check_items(&items)?;
        if items.is_empty() {
            // Still report a missing queue, so that an empty batch is not a silent no-op.
            self.require_queue(queue).await?;
            return Ok(Vec::new());
        }
        let n = items.len();
        let keys = self.backend.push(queue, items, self.now()).await?;
        if keys.len() != n {
            return Err(Error::internal(format!(
                "the backend returned {} keys for {n} pushed items",
                keys.len()
            )));
        }
        Ok(keys)
    }

    /// Removes and returns the head: the oldest pending item (whatever its not-before time;
    /// consumers that honour schedules and leases use [`Store::claim`]). Expired leases and
    /// TTLs are applied first, so an item past its TTL is never returned.
    pub async fn pop(&self, queue: &QueueId) -> Result<Option<Item>> {
        self.backend.sweep(queue, self.now()).await?;
        let page = Page::first(1).phase(Phase::PENDING);
        Ok(self
            .backend
            .pop(queue, &Selector::Page(page))
            .await?
            .into_iter()
            .next())
    }

    /// Removes and returns the item with this key, whatever its phase.
    pub async fn pop_key(&self, queue: &QueueId, key: Key) -> Result<Option<Item>> {
        Ok(self
            .backend
            .pop(queue, &Selector::Key(key))
            .await?
            .into_iter()
            .next())
    }

    /// Removes and returns a page of items, atomically.
    pub async fn pop_page(&self, queue: &QueueId, page: Page) -> Result<Vec<Item>> {
        self.check_page(&page)?;
        self.backend.pop(queue, &Selector::Page(page)).await
    }

    /// The head (the oldest pending item), without removing it.
    pub async fn fetch(&self, queue: &QueueId) -> Result<Option<Item>> {
        let page = Page::first(1).phase(Phase::PENDING);
        Ok(self
            .backend
            .fetch(queue, &Selector::Page(page))
            .await?
            .into_iter()
            .next())
    }

    /// The item with this key, or `None`.
    pub async fn fetch_key(&self, queue: &QueueId, key: Key) -> Result<Option<Item>> {
        Ok(self
            .backend
            .fetch(queue, &Selector::Key(key))
            .await?
            .into_iter()
            .next())
    }

    /// A page of items (by phase, cursor, offset, limit, direction), without removing them.
    pub async fn fetch_page(&self, queue: &QueueId, page: Page) -> Result<Vec<Item>> {
        self.check_page(&page)?;
        self.backend.fetch(queue, &Selector::Page(page)).await
    }

    /// How many items the queue holds, in every phase.
    pub async fn count(&self, queue: &QueueId) -> Result<u64> {
        Ok(self.backend.count(queue).await?.total())
    }

    /// How many items are in one phase.
    pub async fn count_phase(&self, queue: &QueueId, phase: &Phase) -> Result<u64> {
        Ok(self.backend.count(queue).await?.get(phase))
    }

    /// Item counts for every phase that has items.
    pub async fn counts(&self, queue: &QueueId) -> Result<PhaseCounts> {
        self.backend.count(queue).await
    }

    /// Every item of the queue, oldest first, read [`DUMP_PAGE`] items at a time: memory
    /// use does not grow with the queue. Items pushed while dumping may or may not appear.
    pub fn dump(&self, queue: &QueueId) -> Dump<B> {
        Dump {
            store: self.clone(),
            queue: queue.clone(),
            after: None,
            done: false,
        }
    }

    /// Removes every item of the queue; returns how many.
    pub async fn reset(&self, queue: &QueueId) -> Result<u64> {
        self.backend.reset(queue).await
    }

    /// Deletes one item; `false` if there was no such item.
    pub async fn delete(&self, queue: &QueueId, key: Key) -> Result<bool> {
        Ok(!self
            .backend
            .pop(queue, &Selector::Key(key))
            .await?
            .is_empty())
    }

    /// Moves an item to a phase (any phase but `in_flight`). Moving to `pending` makes it due
    /// now.
    ///
    /// # Errors
    /// [`Error::ItemNotFound`], [`Error::InvalidInput`] for `in_flight`.
    pub async fn update_phase(&self, queue: &QueueId, key: Key, phase: Phase) -> Result<Item> {
        self.transition(queue, key, Expect::default(), move_to(phase))
            .await
    }

    /// Moves an item to a phase only if it is currently in `expected` (compare-and-set, for
    /// racing consumers).
    ///
    /// # Errors
    /// [`Error::PhaseConflict`] if it is in another phase (nothing changes).
    pub async fn update_phase_if(
        &self,
        queue: &QueueId,
        key: Key,
        expected: Phase,
        phase: Phase,
    ) -> Result<Item> {
        let expect = Expect {
            phase: Some(expected),
            lease_owner: None,
        };
        self.transition(queue, key, expect, move_to(phase)).await
    }

    /// Applies a transition to one item: its precondition (phase, lease owner) is checked
    /// and its action applied in one atomic step. The general form behind `update_phase`,
    /// `ack`, `nack` and `kill`; new metadata in the action is checked like a push's.
    ///
    /// # Errors
    /// As the backend's `update`: [`Error::ItemNotFound`], [`Error::PhaseConflict`],
    /// [`Error::NotLeaseOwner`], [`Error::InvalidInput`].
    pub async fn update(&self, queue: &QueueId, key: Key, transition: Transition) -> Result<Item> {
        if let Action::Move(Move {
            metadata: Some(metadata),
            ..
        }) = &transition.action
        {
            check_metadata(metadata)?;
        }
        self.backend
            .update(queue, key, transition, self.now())
            .await
    }

    /// Leases up to `limit` due pending items to `owner` for `lease`, oldest due first.
    /// Expired leases return to pending and items past the TTL expire before selection.
    /// The claim is durable when this returns.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty or over-long owner, a zero lease, or a limit of
    /// zero or over the batch limit.
    pub async fn claim(
        &self,
        queue: &QueueId,
        owner: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Item>> {
        self.claim_with(queue, owner, limit, lease, true).await
    }

    /// [`Store::claim`], without waiting for the claim to be durable: for consumers that
    /// settle what they claim durably and can live with a crash undoing the claim (the items
    /// are then pending again, their attempt not counted, and are handed out again). Each
    /// later durable write makes the claim durable too. The items it returns are durable
    /// (an item whose push has not returned yet waits for that push's sync). On the journal
    /// this saves the claim its own sync; on PostgreSQL it commits without waiting for the
    /// WAL flush. The delivery loop claims this way: its attempt counts live in what it
    /// settles.
    ///
    /// # Errors
    /// As [`Store::claim`].
    pub async fn claim_without_sync(
        &self,
        queue: &QueueId,
        owner: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Item>> {
        self.claim_with(queue, owner, limit, lease, false).await
    }

    async fn claim_with(
        &self,
        queue: &QueueId,
        owner: &str,
        limit: usize,
        lease: Duration,
        durable: bool,
    ) -> Result<Vec<Item>> {
        check_owner(owner)?;
        if limit == 0 || limit > self.limits.max_batch {
            return Err(Error::invalid(format!(
                "claim limit must be between 1 and {}, got {limit}",
                self.limits.max_batch
            )));
        }
        if lease.is_zero() {
            return Err(Error::invalid("lease duration must be more than zero"));
        }
        let now = self.now();
        let claim = Claim {
            owner: owner.to_owned(),
            limit,
            lease_until: now.saturating_add(lease),
            durable,
        };
        self.backend.claim(queue, claim, now).await
    }

    /// Acknowledges an item leased to `owner`: it moves to `done`, or is removed if the
    /// queue's retention is [`Retention::Remove`].
    ///
    /// # Errors
    /// [`Error::NotLeaseOwner`] if the lease is not `owner`'s any more (it expired).
    pub async fn ack(&self, queue: &QueueId, key: Key, owner: &str) -> Result<()> {
        let config = self.require_queue(queue).await?;
        let action = match config.retention {
            Retention::Keep => move_to(Phase::DONE),
            Retention::Remove => Action::Remove,
        };
        self.settle_leased(queue, key, owner, action).await
    }

    /// Acknowledges several items leased to `owner` in one call (the batched ack: one
    /// atomic step and one durable write on backends that support it, see
    /// [`Backend::update_many`]). Each key gets its own result, in order:
    /// [`Error::NotLeaseOwner`] for one whose lease is not `owner`'s any more, and so on;
    /// the others are acknowledged all the same.
    ///
    /// # Errors
    /// [`Error::QueueNotFound`]; [`Error::BatchTooLarge`] for more keys than the batch
    /// limit; whatever fails the backend call as a whole.
    pub async fn ack_many(
        &self,
        queue: &QueueId,
        keys: &[Key],
        owner: &str,
    ) -> Result<Vec<Result<()>>> {
        let config = self.require_queue(queue).await?;
        let action = match config.retention {
            Retention::Keep => move_to(Phase::DONE),
            Retention::Remove => Action::Remove,
        };
        let updates = keys
            .iter()
            .map(|key| {
                let transition = Transition {
                    expect: leased_to(owner),
                    action: action.clone(),
                };
                (*key, transition)
            })
            .collect();
        self.update_many(queue, updates).await
    }

    /// Applies several transitions in one call: each is checked and applied as
    /// [`Store::update`] would, in order, with its own result. See
    /// [`Backend::update_many`] for what is atomic. No item is read back (a backend that
    /// keeps payloads on disk does not read them).
    ///
    /// # Errors
    /// [`Error::BatchTooLarge`] for more entries than the batch limit, or
    /// [`Error::InvalidInput`] for bad metadata in an entry (nothing is applied then); the
    /// backend's errors that fail the whole call, such as [`Error::QueueNotFound`].
    pub async fn update_many(
        &self,
        queue: &QueueId,
        updates: Vec<(Key, Transition)>,
    ) -> Result<Vec<Result<()>>> {
        if updates.len() > self.limits.max_batch {
            return Err(Error::BatchTooLarge {
                len: updates.len(),
                limit: self.limits.max_batch,
            });
        }
        for (_, t) in &updates {
            if let Action::Move(Move {
                metadata: Some(metadata),
                ..
            }) = &t.action
            {
                check_metadata(metadata)?;
            }
        }
        self.backend.update_many(queue, updates, self.now()).await
    }

    /// Returns an item leased to `owner` to pending, due at `retry_at`, recording `error`.
    ///
    /// # Errors
    /// [`Error::NotLeaseOwner`] if the lease is not `owner`'s any more (it expired).
    pub async fn nack(
        &self,
        queue: &QueueId,
        key: Key,
        owner: &str,
        retry_at: Timestamp,
        error: &str,
    ) -> Result<()> {
        let action = Move::to(Phase::PENDING)
            .not_before(retry_at)
            .error(error)
            .into();
        self.settle_leased(queue, key, owner, action).await
    }

    /// Moves an item leased to `owner` to `dead`, recording `error` (the consumer gives up).
    ///
    /// # Errors
    /// [`Error::NotLeaseOwner`] if the lease is not `owner`'s any more (it expired).
    pub async fn kill(&self, queue: &QueueId, key: Key, owner: &str, error: &str) -> Result<()> {
        let action = Move::to(Phase::DEAD).error(error).into();
        self.settle_leased(queue, key, owner, action).await
    }

    /// Applies a transition to one item, as [`Store::update`] does, without reading the
    /// item back: the path of `ack`, `nack` and `kill`, for a consumer settling what it
    /// claimed (a backend that keeps payloads on disk does not read them for it).
    ///
    /// # Errors
    /// As [`Store::update`].
    pub async fn settle(&self, queue: &QueueId, key: Key, transition: Transition) -> Result<()> {
        self.update_many(queue, vec![(key, transition)])
            .await?
            .pop()
            .unwrap_or_else(|| {
                Err(Error::internal(
                    "the backend returned no result for a one-entry update_many",
                ))
            })
    }

    /// Moves one dead item back to pending, due now.
    ///
    /// # Errors
    /// [`Error::PhaseConflict`] if the item is not dead.
    pub async fn replay(&self, queue: &QueueId, key: Key) -> Result<Item> {
        self.update_phase_if(queue, key, Phase::DEAD, Phase::PENDING)
            .await
    }

    /// Moves every dead item of the queue back to pending; returns how many.
    pub async fn replay_dead(&self, queue: &QueueId) -> Result<u64> {
        let mut moved = 0;
        let mut after = None;
        loop {
            let mut page = Page::first(DUMP_PAGE).phase(Phase::DEAD);
            page.after = after;
            let items = self.backend.fetch(queue, &Selector::Page(page)).await?;
            let Some(last) = items.last() else { break };
            after = Some(last.key);
            for item in items {
                match self.replay(queue, item.key).await {
                    Ok(_) => moved += 1,
                    // Changed or removed meanwhile by someone else: not ours to replay.
                    Err(Error::PhaseConflict { .. } | Error::ItemNotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(moved)
    }

    /// Returns expired leases to pending and expires items past the TTL, now. (`claim` and
    /// `pop` do this on their own; call it to keep counts current for a queue nobody claims
    /// from.)
    pub async fn sweep(&self, queue: &QueueId) -> Result<SweepReport> {
        self.backend.sweep(queue, self.now()).await
    }

    /// Makes everything returned so far durable (see the backend's durability setting).
    pub async fn sync(&self) -> Result<()> {
        self.backend.sync().await
    }

    async fn settle_leased(
        &self,
        queue: &QueueId,
        key: Key,
        owner: &str,
        action: Action,
    ) -> Result<()> {
        let expect = leased_to(owner);
        self.settle(queue, key, Transition { expect, action }).await
    }

    async fn transition(
        &self,
        queue: &QueueId,
        key: Key,
        expect: Expect,
        action: Action,
    ) -> Result<Item> {
        let transition = Transition { expect, action };
        self.backend
            .update(queue, key, transition, self.now())
            .await
    }

    fn check_page(&self, page: &Page) -> Result<()> {
        if page.limit > self.limits.max_batch {
            return Err(Error::invalid(format!(
                "page limit {} is over the maximum of {}",
                page.limit, self.limits.max_batch
            )));
        }
        Ok(())
    }
}

/// A dump in progress: call [`Dump::next_page`] until it returns `None`.
#[derive(Debug)]
pub struct Dump<B: Backend> {
    store: Store<B>,
    queue: QueueId,
    after: Option<Key>,
    done: bool,
}

impl<B: Backend> Dump<B> {
    /// The next page of items (at most [`DUMP_PAGE`]), or `None` at the end.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Item>>> {
        if self.done {
            return Ok(None);
        }
        let mut page = Page::first(DUMP_PAGE);
        page.after = self.after;
        let items = self
            .store
            .backend
            .fetch(&self.queue, &Selector::Page(page))
            .await?;
        let Some(last) = items.last() else {
            self.done = true;
            return Ok(None);
        };
        self.after = Some(last.key);
        if items.len() < DUMP_PAGE {
            self.done = true;
        }
        Ok(Some(items))
    }
}

fn move_to(phase: Phase) -> Action {
    Action::Move(Move::to(phase))
}

fn leased_to(owner: &str) -> Expect {
    Expect {
        phase: Some(Phase::IN_FLIGHT),
        lease_owner: Some(owner.to_owned()),
    }
}

fn check_owner(owner: &str) -> Result<()> {
    if owner.is_empty() || owner.len() > MAX_OWNER_LEN {
        return Err(Error::invalid(format!(
            "consumer name must be 1 to {MAX_OWNER_LEN} bytes, got {}",
            owner.len()
        )));
    }
    Ok(())
}

fn check_queue_config(config: &QueueConfig) -> Result<()> {
    if config.ttl.is_some_and(|t| t.as_millis() == 0) {
        return Err(Error::invalid(
            "queue TTL must be at least 1 ms (leave it unset for no TTL)",
        ));
    }
    config.retain.check()?;
    if let Some(key) = Retain::METADATA_KEYS
        .iter()
        .find(|k| config.metadata.contains_key(**k))
    {
        return Err(Error::invalid(format!(
            "metadata key {key:?} is reserved: set the queue's retention instead"
        )));
    }
    check_metadata(&config.metadata)
}

fn check_metadata(metadata: &std::collections::BTreeMap<String, String>) -> Result<()> {
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(Error::invalid(format!(
            "metadata has {} entries; at most {MAX_METADATA_ENTRIES} are allowed",
            metadata.len()
        )));
    }
    for (k, v) in metadata {
        if k.is_empty() || k.len() > MAX_METADATA_KEY {
            return Err(Error::invalid(format!(
                "metadata key {k:?} must be 1 to {MAX_METADATA_KEY} bytes"
            )));
        }
        if v.len() > MAX_METADATA_VALUE {
            return Err(Error::invalid(format!(
                "metadata value for {k:?} is {} bytes; at most {MAX_METADATA_VALUE} are allowed",
                v.len()
            )));
        }
    }
    Ok(())
}
