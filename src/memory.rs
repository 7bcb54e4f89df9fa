//! The in-memory backend: the reference implementation of the `Backend` contract, and the
//! fastest. Nothing survives the process.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::backend::{Backend, Capabilities, apply_move, check_expect};
use crate::error::{Error, Result};
use crate::model::{
    Action, Claim, Item, Key, NewItem, Page, Phase, PhaseCounts, QueueConfig, QueueId, Selector,
    SweepReport, Timestamp, Transition,
};

/// Keeps everything in process memory behind one mutex. Not durable: a restart loses it all.
///
/// Cloning gives another handle to the same data.
#[derive(Clone, Default)]
pub struct MemoryBackend {
    state: Arc<Mutex<HashMap<QueueId, QueueState>>>,
}

/// Shows the size, not the contents: items can carry secrets (subscriptions) and are many.
impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("MemoryBackend")
            .field("queues", &state.len())
            .field(
                "items",
                &state.values().map(|q| q.items.len()).sum::<usize>(),
            )
            .finish()
    }
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many items all queues hold together.
    pub fn item_count(&self) -> usize {
        self.lock().values().map(|q| q.items.len()).sum()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<QueueId, QueueState>> {
        // A panic while the lock was held cannot leave a queue half-updated: every mutation
        // below computes what it needs before it touches the indexes. So a poisoned lock
        // still guards consistent data.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn with_queue<T>(
        &self,
        id: &QueueId,
        f: impl FnOnce(&mut QueueState) -> Result<T>,
    ) -> Result<T> {
        let mut state = self.lock();
        let q = state
            .get_mut(id)
            .ok_or_else(|| Error::QueueNotFound(id.clone()))?;
        f(q)
    }
}

/// One queue: its items and the indexes that make claim, paging and counting cheap.
#[derive(Debug)]
struct QueueState {
    config: QueueConfig,
    next_key: Key,
    items: BTreeMap<Key, Item>,
    /// Keys by phase: paging within a phase, and counts (`len`).
    by_phase: BTreeMap<Phase, BTreeSet<Key>>,
    /// Pending items by `(not_before, key)`: the claim order.
    due: BTreeSet<(Timestamp, Key)>,
    /// In-flight items by `(lease.until, key)`: lease expiry.
    leases: BTreeSet<(Timestamp, Key)>,
    /// Pending items by `(created_at, key)`: TTL expiry. Not the same order as keys when the
    /// clock has gone backwards between pushes.
    ages: BTreeSet<(Timestamp, Key)>,
}

impl QueueState {
    fn new(config: QueueConfig) -> Self {
        QueueState {
            config,
            next_key: 1,
            items: BTreeMap::new(),
            by_phase: BTreeMap::new(),
            due: BTreeSet::new(),
            leases: BTreeSet::new(),
            ages: BTreeSet::new(),
        }
    }

    fn insert(&mut self, item: Item) {
        self.by_phase
            .entry(item.phase.clone())
            .or_default()
            .insert(item.key);
        if item.phase == Phase::PENDING {
            self.due.insert((item.not_before, item.key));
            self.ages.insert((item.created_at, item.key));
        }
        if let Some(lease) = &item.lease {
            self.leases.insert((lease.until, item.key));
        }
        self.items.insert(item.key, item);
    }

    fn remove(&mut self, key: Key) -> Option<Item> {
        let item = self.items.remove(&key)?;
        if let Some(set) = self.by_phase.get_mut(&item.phase) {
            set.remove(&key);
            if set.is_empty() {
                self.by_phase.remove(&item.phase);
            }
        }
        self.due.remove(&(item.not_before, key));
        self.ages.remove(&(item.created_at, key));
        if let Some(lease) = &item.lease {
            self.leases.remove(&(lease.until, key));
        }
        Some(item)
    }

    /// Keys of a page, in page order.
    fn select(&self, page: &Page) -> Vec<Key> {
        let bounds = match (page.after, page.reverse) {
            (None, _) => (Bound::Unbounded, Bound::Unbounded),
            (Some(k), false) => (Bound::Excluded(k), Bound::Unbounded),
            (Some(k), true) => (Bound::Unbounded, Bound::Excluded(k)),
        };
        let keys: Box<dyn DoubleEndedIterator<Item = Key> + '_> = match &page.phase {
            None => Box::new(self.items.range(bounds).map(|(k, _)| *k)),
            Some(p) => match self.by_phase.get(p) {
                Some(set) => Box::new(set.range(bounds).copied()),
                None => Box::new(std::iter::empty()),
            },
        };
        if page.reverse {
            keys.rev().skip(page.offset).take(page.limit).collect()
        } else {
            keys.skip(page.offset).take(page.limit).collect()
        }
    }

    fn selected(&self, selector: &Selector) -> Vec<Key> {
        match selector {
            Selector::Key(k) => self
                .items
                .contains_key(k)
                .then_some(*k)
                .into_iter()
                .collect(),
            Selector::Page(page) => self.select(page),
        }
    }

    fn update(
        &mut self,
        queue: &QueueId,
        key: Key,
        transition: Transition,
        now: Timestamp,
    ) -> Result<Item> {
        let missing = || Error::ItemNotFound {
            queue: queue.clone(),
            key,
        };
        let item = self.items.get(&key).ok_or_else(missing)?;
        check_expect(item, &transition)?;
        match transition.action {
            Action::Remove => self.remove(key).ok_or_else(missing),
            Action::Move(m) => {
                let mut item = self.remove(key).ok_or_else(missing)?;
                apply_move(&mut item, m, now);
                self.insert(item.clone());
                Ok(item)
            }
        }
    }

    fn sweep(&mut self, now: Timestamp) -> SweepReport {
        let mut report = SweepReport::default();
        let expired: Vec<Key> = self
            .leases
            .range(..(now, Key::MAX))
            .filter(|(until, _)| *until <= now)
            .map(|(_, k)| *k)
            .collect();
        for key in expired {
            if let Some(mut item) = self.remove(key) {
                item.phase = Phase::PENDING;
                item.lease = None;
                item.not_before = now;
                item.updated_at = now;
                self.insert(item);
                report.released += 1;
            }
        }
        // `created_at + ttl <= now` (saturating, as `Timestamp::saturating_add`) holds exactly
        // for `created_at <= now - ttl`, or for every item at the end of time.
        let cutoff = self.config.ttl.and_then(|ttl| {
            let ttl = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
            if now.as_millis() == u64::MAX {
                Some(u64::MAX)
            } else {
                now.as_millis().checked_sub(ttl)
            }
        });
        if let Some(cutoff) = cutoff {
            let old: Vec<Key> = self
                .ages
                .range(..=(Timestamp(cutoff), Key::MAX))
                .map(|(_, k)| *k)
                .collect();
            for key in old {
                if let Some(mut item) = self.remove(key) {
                    item.phase = Phase::EXPIRED;
                    item.updated_at = now;
                    self.insert(item);
                    report.expired += 1;
                }
            }
        }
        report
    }
}

impl Backend for MemoryBackend {
    fn capabilities(&self) -> Capabilities {
        Capabilities::EXCLUSIVE
    }

    async fn create_queue(&self, config: QueueConfig) -> Result<()> {
        let mut state = self.lock();
        if state.contains_key(&config.id) {
            return Err(Error::QueueExists(config.id));
        }
        state.insert(config.id.clone(), QueueState::new(config));
        Ok(())
    }

    async fn update_queue(&self, mut config: QueueConfig) -> Result<()> {
        self.with_queue(&config.id.clone(), |q| {
            config.created_at = q.config.created_at;
            q.config = config;
            Ok(())
        })
    }

    async fn get_queue(&self, id: &QueueId) -> Result<Option<QueueConfig>> {
        Ok(self.lock().get(id).map(|q| q.config.clone()))
    }

    async fn list_queues(&self) -> Result<Vec<QueueConfig>> {
        let mut all: Vec<QueueConfig> = self.lock().values().map(|q| q.config.clone()).collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    async fn delete_queue(&self, id: &QueueId) -> Result<bool> {
        Ok(self.lock().remove(id).is_some())
    }

    async fn push(&self, queue: &QueueId, items: Vec<NewItem>, now: Timestamp) -> Result<Vec<Key>> {
        self.with_queue(queue, |q| {
            let mut keys = Vec::with_capacity(items.len());
            for new in items {
                let key = q.next_key;
                q.next_key += 1;
                q.insert(Item {
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
                });
                keys.push(key);
            }
            Ok(keys)
        })
    }

    async fn fetch(&self, queue: &QueueId, selector: &Selector) -> Result<Vec<Item>> {
        self.with_queue(queue, |q| {
            Ok(q.selected(selector)
                .into_iter()
                .filter_map(|k| q.items.get(&k).cloned())
                .collect())
        })
    }

    async fn pop(&self, queue: &QueueId, selector: &Selector) -> Result<Vec<Item>> {
        self.with_queue(queue, |q| {
            Ok(q.selected(selector)
                .into_iter()
                .filter_map(|k| q.remove(k))
                .collect())
        })
    }

    async fn count(&self, queue: &QueueId) -> Result<PhaseCounts> {
        self.with_queue(queue, |q| {
            Ok(PhaseCounts(
                q.by_phase
                    .iter()
                    .map(|(p, keys)| (p.clone(), keys.len() as u64))
                    .collect(),
            ))
        })
    }

    async fn reset(&self, queue: &QueueId) -> Result<u64> {
        self.with_queue(queue, |q| {
            let n = q.items.len() as u64;
            q.items.clear();
            q.by_phase.clear();
            q.due.clear();
            q.leases.clear();
            q.ages.clear();
            Ok(n)
        })
    }

    async fn update(
        &self,
        queue: &QueueId,
        key: Key,
        transition: Transition,
        now: Timestamp,
    ) -> Result<Item> {
        self.with_queue(queue, |q| q.update(queue, key, transition, now))
    }

    async fn update_many(
        &self,
        queue: &QueueId,
        updates: Vec<(Key, Transition)>,
        now: Timestamp,
    ) -> Result<Vec<Result<()>>> {
        // One lock for the whole batch: atomic as one step.
        self.with_queue(queue, |q| {
            Ok(updates
                .into_iter()
                .map(|(key, transition)| q.update(queue, key, transition, now).map(drop))
                .collect())
        })
    }

    async fn claim(&self, queue: &QueueId, claim: Claim, now: Timestamp) -> Result<Vec<Item>> {
        self.with_queue(queue, |q| {
            q.sweep(now);
            let keys: Vec<Key> = q
                .due
                .iter()
                .take_while(|(nb, _)| *nb <= now)
                .take(claim.limit)
                .map(|(_, k)| *k)
                .collect();
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                if let Some(mut item) = q.remove(key) {
                    item.phase = Phase::IN_FLIGHT;
                    item.attempts = item.attempts.saturating_add(1);
                    item.lease = Some(crate::model::Lease {
                        owner: claim.owner.clone(),
                        until: claim.lease_until,
                    });
                    item.updated_at = now;
                    q.insert(item.clone());
                    out.push(item);
                }
            }
            Ok(out)
        })
    }

    async fn sweep(&self, queue: &QueueId, now: Timestamp) -> Result<SweepReport> {
        self.with_queue(queue, |q| Ok(q.sweep(now)))
    }

    async fn prune(
        &self,
        queue: &QueueId,
        phase: &Phase,
        before: Timestamp,
        limit: usize,
    ) -> Result<u64> {
        self.with_queue(queue, |q| {
            let old: Vec<Key> = q.by_phase.get(phase).map_or_else(Vec::new, |keys| {
                keys.iter()
                    .take(limit)
                    .take_while(|k| q.items.get(k).is_some_and(|i| i.updated_at <= before))
                    .copied()
                    .collect()
            });
            for key in &old {
                q.remove(*key);
            }
            Ok(old.len() as u64)
        })
    }

    async fn sync(&self) -> Result<()> {
        Ok(())
    }
}
