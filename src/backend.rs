//! The `Backend` trait: the storage primitives every backend implements, and their contract.

use std::future::Future;

use crate::error::{Error, Result};
use crate::model::{
    Action, Claim, Item, Key, Move, NewItem, Phase, PhaseCounts, QueueConfig, QueueId, Selector,
    SweepReport, Timestamp, Transition,
};

/// Storage for queues and their items.
///
/// Applications use [`crate::Store`], which validates input, applies limits, reads the clock
/// and offers the conveniences (`pop`, `ack`, `nack`, `dump`, …). A backend implements only
/// these primitives, each of which it can make atomic and fast.
///
/// # Contract
///
/// **Atomicity.** Every method is atomic: other callers (on any thread, through any clone of
/// the handle) observe either none or all of its effect, and a crash leaves either none or
/// all of it. In particular `push` stores the whole batch or nothing, `pop` removes exactly
/// the items it returns, `claim` leases exactly the items it returns, and `update` checks its
/// precondition and applies its action in one step.
///
/// **Durability.** A durable backend documents its durability setting. Under its default
/// setting, when a mutating call returns `Ok`, its effect survives a process crash *and* a
/// power loss (the bytes are synced to the device). Under a weaker, explicitly named setting
/// (e.g. batched syncing), a returned call survives a process crash and is synced within the
/// documented interval, or when [`Backend::sync`] returns. A non-durable backend (memory)
/// says so. Reads never wait for durability. One exception is asked for by the caller: a
/// claim with [`Claim::durable`] `false` may return before it is durable. A crash may then
/// undo it whole (never in part), and any durable write that returns after it makes it
/// durable too; a backend may also treat it as durable. It still returns only items whose
/// push is as durable as a returned call's: an item pushed by a call that has not returned
/// yet is handed out once that push is durable, so a crash can never take away an item a
/// consumer was given.
///
/// **Cancellation.** If the future of a mutating call is dropped before it completes, the
/// call either took effect completely or not at all; the caller cannot know which (as with a
/// crash). Backends must not leave partial state behind, and must not hold locks across an
/// `.await` (blocking I/O goes to `spawn_blocking` or a dedicated thread).
///
/// **Time.** Callers pass `now`; a backend never reads the clock itself, so a test can drive
/// leases and TTLs with a manual clock. Backends must accept time going backwards (it only
/// means nothing is due yet).
///
/// **Keys.** `push` assigns keys from a per-queue counter that only grows: keys are never
/// reused by the same queue (not after `pop`, `reset` or a restart), a batch gets increasing
/// keys in the order given, and a push that starts after another returned gets larger keys.
/// `delete_queue` forgets the counter. A backend whose [`Capabilities::gapless_keys`] holds
/// promises more: the first key is 1, keys have no gaps, and a batch gets consecutive keys
/// even under concurrent pushes. A backend without it (PostgreSQL, where keys come from a
/// sequence so that concurrent transactions never wait for each other's commit) may leave
/// gaps (a rolled-back push uses up its keys) and may interleave concurrent batches.
///
/// **Visibility order.** Within one process's sequential calls, an item is visible once its
/// `push` returned. A backend shared by several processes ([`Capabilities::shared`]) may make
/// a larger key visible before a smaller one that a slower transaction is still committing:
/// `claim` orders what is visible, not what is still being written.
///
/// **Counters.** `count` answers from maintained counters, not by scanning: its cost must
/// not grow with the number of items.
///
/// **Leases.** An item is in phase `in_flight` exactly when it has a lease. Only `claim`
/// creates leases. A lease whose `until` is ≤ `now` has expired: `claim` and `sweep` first
/// return such items to `pending` (lease cleared, `not_before = now`, attempts unchanged,
/// since `claim` already counted the attempt).
///
/// **TTL.** If the queue has a TTL, a pending item whose `created_at + ttl` ≤ `now` is never
/// handed out by `claim`: `claim` and `sweep` move it to `expired` first (counted there).
///
/// # Errors
///
/// - [`crate::Error::QueueNotFound`]: every item method, when the queue does not exist.
/// - [`crate::Error::QueueExists`]: `create_queue` with a taken id.
/// - [`crate::Error::ItemNotFound`]: `update` of a missing key.
/// - [`crate::Error::PhaseConflict`] / [`crate::Error::NotLeaseOwner`]: `update` whose
///   precondition fails; nothing changed.
/// - [`crate::Error::InvalidInput`]: `update` moving into `in_flight`.
/// - [`crate::Error::Corrupted`]: stored data failed its checksum; never returned as data.
/// - [`crate::Error::Poisoned`]: an earlier durable write failed; nothing more is trusted.
/// - [`crate::Error::Internal`]: the backend found its own state contradicting itself.
/// - [`crate::Error::Unavailable`]: the storage cannot be reached right now (a database
///   server down or restarting); retry later.
/// - [`crate::Error::Backend`]: anything else (I/O), with its source.
pub trait Backend: Send + Sync + std::fmt::Debug + 'static {
    /// What this backend promises beyond the contract's common core (see [`Capabilities`]).
    /// The conformance kit checks each backend according to these.
    fn capabilities(&self) -> Capabilities;

    /// Changes made by *other* processes sharing this backend's storage, as the ids of the
    /// queues they touched (pushes, settles, queue changes), for backends that can tell
    /// (PostgreSQL, through `LISTEN/NOTIFY`). Layers above use it to wake their loops and
    /// reload cached state without polling. A notice may be late, coalesced or (rarely)
    /// lost: it is a hint, never data, so callers keep a fallback poll. `None` (the
    /// default): nobody else writes this storage, or the backend cannot tell.
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<QueueId>> {
        None
    }

    /// Creates a queue. `config.created_at` is stored as given (the store sets it).
    fn create_queue(&self, config: QueueConfig) -> impl Future<Output = Result<()>> + Send;

    /// Replaces a queue's settings. Its items, key counter and `created_at` are kept.
    fn update_queue(&self, config: QueueConfig) -> impl Future<Output = Result<()>> + Send;

    /// A queue's settings, or `None`.
    fn get_queue(&self, id: &QueueId) -> impl Future<Output = Result<Option<QueueConfig>>> + Send;

    /// Every queue, ordered by id.
    fn list_queues(&self) -> impl Future<Output = Result<Vec<QueueConfig>>> + Send;

    /// Deletes a queue and all its items. `Ok(false)` if it did not exist.
    fn delete_queue(&self, id: &QueueId) -> impl Future<Output = Result<bool>> + Send;

    /// Appends items in phase `pending` with `created_at = updated_at = now`,
    /// `not_before = item.not_before.unwrap_or(now)`, no attempts, no lease. All or nothing.
    /// Returns their keys, in order.
    fn push(
        &self,
        queue: &QueueId,
        items: Vec<NewItem>,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<Key>>> + Send;

    /// The selected items, without changing anything. A missing key gives an empty vector.
    fn fetch(
        &self,
        queue: &QueueId,
        selector: &Selector,
    ) -> impl Future<Output = Result<Vec<Item>>> + Send;

    /// Removes and returns exactly what `fetch` with the same selector would return.
    fn pop(
        &self,
        queue: &QueueId,
        selector: &Selector,
    ) -> impl Future<Output = Result<Vec<Item>>> + Send;

    /// Item counts by phase, from counters.
    fn count(&self, queue: &QueueId) -> impl Future<Output = Result<PhaseCounts>> + Send;

    /// Removes every item of the queue (the key counter is kept). Returns how many.
    fn reset(&self, queue: &QueueId) -> impl Future<Output = Result<u64>> + Send;

    /// Checks `transition.expect` and applies `transition.action` to one item, setting
    /// `updated_at = now`. Returns the item as it is now (as it was, for `Action::Remove`).
    fn update(
        &self,
        queue: &QueueId,
        key: Key,
        transition: Transition,
        now: Timestamp,
    ) -> impl Future<Output = Result<Item>> + Send;

    /// Applies several transitions to items of one queue, in order: each is checked and
    /// applied exactly as [`Backend::update`] would be, seeing the effect of those before it,
    /// and each gets its own result. A failed precondition ([`Error::ItemNotFound`],
    /// [`Error::PhaseConflict`], [`Error::NotLeaseOwner`], [`Error::InvalidInput`]) fails
    /// that entry only; any other error fails the whole call.
    ///
    /// This is how consumers settle what they claimed (ack, nack, kill, the batched ack), so
    /// it returns no items: a backend should not read an item's payload for it. A backend
    /// should override it to apply the batch as one atomic step with one durable write (the
    /// memory and journal backends do). The default calls `update` once per entry: each
    /// entry is atomic and durable on its own, and an error that fails the call can leave
    /// the entries before it applied.
    fn update_many(
        &self,
        queue: &QueueId,
        updates: Vec<(Key, Transition)>,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<Result<()>>>> + Send {
        async move {
            // A missing queue fails the first `update` as a whole-call error below; only an
            // empty batch needs asking (and a settle of one item costs one call, not two).
            if updates.is_empty() && self.get_queue(queue).await?.is_none() {
                return Err(Error::QueueNotFound(queue.clone()));
            }
            let mut out = Vec::with_capacity(updates.len());
            for (key, transition) in updates {
                match self.update(queue, key, transition, now).await {
                    Err(e) if !e.fails_one_entry() => return Err(e),
                    result => out.push(result.map(drop)),
                }
            }
            Ok(out)
        }
    }

    /// Removes items that reached `phase` at `before` or earlier (`updated_at ≤ before`): the
    /// step of a queue's retention (see [`crate::Retain`]). It takes the phase's items in key
    /// order and stops at the first one that is younger, or after `limit` removals; returns
    /// how many it removed. Its cost is proportional to what it removes, never to the
    /// queue's size. Items usually reach a settled phase in about key order; one that got
    /// there late (after long retries) holds back the removal of those after it until it is
    /// old enough itself.
    ///
    /// The default reads the first `limit` items of the phase with `fetch` and removes the
    /// old ones with one `update_many` (each checked to be still in `phase`), so it costs the
    /// reading of their payloads. A backend with an index of its own should override it to
    /// read none (the memory and journal backends do).
    fn prune(
        &self,
        queue: &QueueId,
        phase: &Phase,
        before: Timestamp,
        limit: usize,
    ) -> impl Future<Output = Result<u64>> + Send {
        async move {
            let page = Selector::Page(crate::Page::first(limit).phase(phase.clone()));
            let items = self.fetch(queue, &page).await?;
            let updates: Vec<(Key, Transition)> = items
                .iter()
                .take_while(|item| item.updated_at <= before)
                .map(|item| (item.key, Transition::remove_from(phase.clone())))
                .collect();
            if updates.is_empty() {
                return Ok(0);
            }
            let results = self.update_many(queue, updates, before).await?;
            Ok(results.iter().filter(|r| r.is_ok()).count() as u64)
        }
    }

    /// Checks the stored data of up to `limit` items of `queue` after key `after` (all
    /// phases, in key order) against its checksums, changing nothing, for
    /// [`crate::Store::verify`]. Items already in [`Phase::CORRUPT`] are listed as such.
    ///
    /// The default reads the page with `fetch`: a backend that reports damage as
    /// [`Error::Corrupted`] then fails the page as a whole, and it is reported with no key,
    /// and the check of that queue ends there. A backend that can check item by item
    /// without side effects should override it (the journal does: it reads each blob and
    /// quarantines nothing).
    fn check(
        &self,
        queue: &QueueId,
        after: Option<Key>,
        limit: usize,
    ) -> impl Future<Output = Result<crate::Checked>> + Send {
        async move {
            let mut page = crate::Page::first(limit);
            page.after = after;
            match self.fetch(queue, &Selector::Page(page)).await {
                Ok(items) => Ok(crate::Checked {
                    items: items.len() as u64,
                    last: (items.len() == limit)
                        .then(|| items.last().map(|i| i.key))
                        .flatten(),
                    damaged: Vec::new(),
                    quarantined: items
                        .into_iter()
                        .filter(|i| i.phase == Phase::CORRUPT)
                        .map(|i| (i.key, i.last_error.unwrap_or_default()))
                        .collect(),
                }),
                Err(Error::Corrupted { what }) => Ok(crate::Checked {
                    items: 0,
                    last: None,
                    damaged: vec![(None, what)],
                    quarantined: Vec::new(),
                }),
                Err(e) => Err(e),
            }
        }
    }

    /// Sweeps (see [`Backend::sweep`]), then leases up to `claim.limit` pending items with
    /// `not_before ≤ now`, in order of `(not_before, key)`: each moves to `in_flight` with
    /// `lease = (claim.owner, claim.lease_until)`, `attempts + 1`, `updated_at = now`.
    ///
    /// A [`Capabilities::shared`] backend may document a degraded mode in which it
    /// claims from where its last claim ended, so that items that became due behind that
    /// point come a bounded time late (PostgreSQL does, while another session holds a
    /// snapshot open; see its crate docs). It must not skip an item for longer, and it
    /// holds the order exactly otherwise: the conformance kit checks that.
    fn claim(
        &self,
        queue: &QueueId,
        claim: Claim,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<Item>>> + Send;

    /// Returns in-flight items with expired leases to pending and moves pending items past
    /// the queue's TTL to `expired`. Cost proportional to what it changes, not queue size.
    fn sweep(
        &self,
        queue: &QueueId,
        now: Timestamp,
    ) -> impl Future<Output = Result<SweepReport>> + Send;

    /// A first-writer-wins record shared by every process on this storage, for layers above
    /// that must do something once across processes (the webhook layer's idempotency keys).
    /// While `name` (in `space`) lives, `write` runs at most once: the first caller runs it
    /// and stores the bytes it returns under `name`; a caller that comes later, or at the same
    /// time (it waits), gets those bytes and `true`. A name lives `ttl` from when it was
    /// written; after that the next caller writes it anew. If `write` fails, nothing is
    /// stored and the next caller runs its own. A process that dies between `write` and
    /// storing its result leaves nothing either (at least once, then, not exactly once).
    ///
    /// `None` (the default): the backend does not offer it, because one process owns the
    /// storage and that process's own lock and records do the job. A backend whose
    /// [`Capabilities::shared`] holds should offer it.
    fn once<F, Fut, E>(
        &self,
        space: &str,
        name: &str,
        ttl: std::time::Duration,
        now: Timestamp,
        write: F,
    ) -> impl Future<Output = Option<std::result::Result<(Vec<u8>, bool), E>>> + Send
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = std::result::Result<Vec<u8>, E>> + Send,
        E: From<Error> + Send,
    {
        let _ = (space, name, ttl, now, write);
        async { None }
    }

    /// Makes every call that has returned so far durable (a no-op where every call already
    /// is, or where nothing is durable).
    fn sync(&self) -> impl Future<Output = Result<()>> + Send;

    /// Figures about the backend itself, for monitoring: the daemon's `/metrics` shows each
    /// as a gauge. They come from what the backend already knows (no I/O, no waiting), so
    /// they may be as old as the backend's last look. Empty (the default) for a backend
    /// with nothing to add.
    fn gauges(&self) -> Vec<Gauge> {
        Vec::new()
    }
}

/// One figure of [`Backend::gauges`]: a Prometheus-style gauge.
#[derive(Clone, Debug, PartialEq)]
pub struct Gauge {
    /// The metric's name, `hookspool_<backend>_<what>`. Names (and label names) must match
    /// `[a-zA-Z_][a-zA-Z0-9_]*`; `/metrics` leaves out, and logs, a gauge that does not.
    pub name: &'static str,
    /// One line saying what it measures.
    pub help: &'static str,
    /// Label names and values (none for most).
    pub labels: Vec<(&'static str, String)>,
    /// The value now.
    pub value: f64,
}

impl Gauge {
    /// A gauge without labels.
    pub fn new(name: &'static str, help: &'static str, value: f64) -> Self {
        Gauge {
            name,
            help,
            labels: Vec::new(),
            value,
        }
    }

    /// The same gauge with one more label.
    #[must_use]
    pub fn label(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.labels.push((name, value.into()));
        self
    }
}

/// What a backend promises beyond the common core of the [`Backend`] contract. Each
/// backend states its own in [`Backend::capabilities`]; the conformance kit checks the
/// stronger property where a backend claims it and the weaker one where it does not, never
/// neither.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Keys of a queue are exactly 1, 2, 3, … with no gaps, and a batch gets consecutive
    /// keys even when other pushes run at the same time. Without it: keys are unique,
    /// never reused and increase within a batch and from one push to a later one, but a
    /// rolled-back or concurrent push may leave gaps, and concurrent batches may interleave.
    pub gapless_keys: bool,
    /// Several processes (on one machine or many) may open the same storage at once. Then
    /// a lease held by another process is live until it expires, and items may appear
    /// without any call of this process (see [`Backend::changes`]).
    pub shared: bool,
}

impl Capabilities {
    /// One process owns the storage; keys are gapless (the memory, sled and journal
    /// backends).
    pub const EXCLUSIVE: Capabilities = Capabilities {
        gapless_keys: true,
        shared: false,
    };

    /// Shared storage with keys from a sequence (the PostgreSQL backend).
    pub const SHARED_SEQUENCED: Capabilities = Capabilities {
        gapless_keys: false,
        shared: true,
    };
}

/// Checks a transition's precondition against the item. For backend authors: `update`
/// implementations call it before applying the action.
///
/// # Errors
/// [`Error::NotLeaseOwner`], [`Error::PhaseConflict`], or [`Error::InvalidInput`] for a move
/// into `in_flight`.
pub fn check_expect(item: &Item, transition: &Transition) -> Result<()> {
    if let Some(owner) = &transition.expect.lease_owner
        && item.lease.as_ref().is_none_or(|l| &l.owner != owner)
    {
        return Err(Error::NotLeaseOwner {
            key: item.key,
            owner: owner.clone(),
        });
    }
    if let Some(expected) = &transition.expect.phase
        && &item.phase != expected
    {
        return Err(Error::PhaseConflict {
            key: item.key,
            expected: expected.clone(),
            actual: item.phase.clone(),
        });
    }
    if let Action::Move(m) = &transition.action
        && m.phase == Phase::IN_FLIGHT
    {
        return Err(Error::invalid(
            "items enter `in_flight` only through claim, which gives them a lease",
        ));
    }
    Ok(())
}

/// Applies a [`Move`] to an item as the contract describes: the lease is dropped,
/// `not_before` is set on entering `pending`, `error` replaces `last_error` and `metadata`
/// replaces the metadata when given, `updated_at = now`. For backend authors: `update`
/// implementations call it after [`check_expect`].
pub fn apply_move(item: &mut Item, m: Move, now: Timestamp) {
    if m.phase == Phase::PENDING {
        item.not_before = m.not_before.unwrap_or(now);
    }
    item.phase = m.phase;
    item.lease = None;
    if m.error.is_some() {
        item.last_error = m.error;
    }
    if let Some(metadata) = m.metadata {
        item.metadata = metadata;
    }
    item.updated_at = now;
}
