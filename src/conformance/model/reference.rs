//! The model itself: a queue is a `Vec<Item>` in key order, and every method is a linear
//! scan written from the words of the [`Backend`] contract.

use std::collections::BTreeMap;

use super::KeyRef;
#[cfg(doc)]
use crate::Backend;
use crate::{
    Action, Claim, Error, Item, Key, Lease, Move, NewItem, Phase, PhaseCounts, QueueConfig,
    QueueId, Selector, SweepReport, Timestamp, Transition,
};

/// One queue of the model: its settings, the next key, and its items in key order.
#[derive(Clone, Debug)]
struct ModelQueue {
    config: QueueConfig,
    next_key: Key,
    items: Vec<Item>,
}

/// The plain in-memory model of the contract. Every method mirrors a [`Backend`] method and
/// is written as directly from the contract's words as possible.
#[derive(Clone, Debug, Default)]
pub struct Model {
    queues: BTreeMap<QueueId, ModelQueue>,
}

fn not_found(id: &QueueId) -> Error {
    Error::QueueNotFound(id.clone())
}

impl Model {
    /// An empty model: no queues.
    pub fn new() -> Self {
        Self::default()
    }

    fn queue(&self, id: &QueueId) -> crate::Result<&ModelQueue> {
        self.queues.get(id).ok_or_else(|| not_found(id))
    }

    fn queue_mut(&mut self, id: &QueueId) -> crate::Result<&mut ModelQueue> {
        self.queues.get_mut(id).ok_or_else(|| not_found(id))
    }

    /// Mirrors [`Backend::create_queue`].
    pub fn create_queue(&mut self, config: QueueConfig) -> crate::Result<()> {
        if self.queues.contains_key(&config.id) {
            return Err(Error::QueueExists(config.id));
        }
        self.queues.insert(
            config.id.clone(),
            ModelQueue {
                config,
                next_key: 1,
                items: Vec::new(),
            },
        );
        Ok(())
    }

    /// Mirrors [`Backend::update_queue`].
    pub fn update_queue(&mut self, mut config: QueueConfig) -> crate::Result<()> {
        let q = self.queue_mut(&config.id.clone())?;
        config.created_at = q.config.created_at;
        q.config = config;
        Ok(())
    }

    /// Mirrors [`Backend::get_queue`].
    pub fn get_queue(&self, id: &QueueId) -> Option<QueueConfig> {
        self.queues.get(id).map(|q| q.config.clone())
    }

    /// Mirrors [`Backend::list_queues`].
    pub fn list_queues(&self) -> Vec<QueueConfig> {
        // A BTreeMap iterates in id order already.
        self.queues.values().map(|q| q.config.clone()).collect()
    }

    /// Mirrors [`Backend::delete_queue`].
    pub fn delete_queue(&mut self, id: &QueueId) -> bool {
        self.queues.remove(id).is_some()
    }

    /// Mirrors [`Backend::push`].
    pub fn push(
        &mut self,
        id: &QueueId,
        items: Vec<NewItem>,
        now: Timestamp,
    ) -> crate::Result<Vec<Key>> {
        let q = self.queue_mut(id)?;
        let mut keys = Vec::new();
        for new in items {
            let key = q.next_key;
            q.next_key += 1;
            q.items.push(Item {
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
    }

    /// Mirrors [`Backend::fetch`].
    pub fn fetch(&self, id: &QueueId, selector: &Selector) -> crate::Result<Vec<Item>> {
        Ok(select(&self.queue(id)?.items, selector))
    }

    /// Mirrors [`Backend::pop`].
    pub fn pop(&mut self, id: &QueueId, selector: &Selector) -> crate::Result<Vec<Item>> {
        let q = self.queue_mut(id)?;
        let taken = select(&q.items, selector);
        q.items.retain(|i| taken.iter().all(|t| t.key != i.key));
        Ok(taken)
    }

    /// Mirrors [`Backend::count`]: here by counting, which is the point of a model.
    pub fn count(&self, id: &QueueId) -> crate::Result<PhaseCounts> {
        Ok(tally(&self.queue(id)?.items))
    }

    /// Mirrors [`Backend::reset`].
    pub fn reset(&mut self, id: &QueueId) -> crate::Result<u64> {
        let q = self.queue_mut(id)?;
        let n = q.items.len() as u64;
        q.items.clear();
        Ok(n)
    }

    /// Mirrors [`Backend::update`].
    pub fn update(
        &mut self,
        id: &QueueId,
        key: Key,
        transition: Transition,
        now: Timestamp,
    ) -> crate::Result<Item> {
        let q = self.queue_mut(id)?;
        let Some(pos) = q.items.iter().position(|i| i.key == key) else {
            return Err(Error::ItemNotFound {
                queue: id.clone(),
                key,
            });
        };
        let item = &mut q.items[pos];
        // The order of the checks follows `check_expect`, which backends are told to call.
        if let Some(owner) = &transition.expect.lease_owner {
            let holds = matches!(&item.lease, Some(l) if &l.owner == owner);
            if !holds {
                return Err(Error::NotLeaseOwner {
                    key,
                    owner: owner.clone(),
                });
            }
        }
        if let Some(expected) = &transition.expect.phase
            && *expected != item.phase
        {
            return Err(Error::PhaseConflict {
                key,
                expected: expected.clone(),
                actual: item.phase.clone(),
            });
        }
        match transition.action {
            Action::Remove => Ok(q.items.remove(pos)),
            Action::Move(Move {
                phase,
                not_before,
                error,
                metadata,
            }) => {
                if phase == Phase::IN_FLIGHT {
                    return Err(Error::invalid("moving into in_flight"));
                }
                if phase == Phase::PENDING {
                    item.not_before = not_before.unwrap_or(now);
                }
                item.phase = phase;
                item.lease = None;
                if let Some(e) = error {
                    item.last_error = Some(e);
                }
                if let Some(m) = metadata {
                    item.metadata = m;
                }
                item.updated_at = now;
                Ok(item.clone())
            }
        }
    }

    /// Mirrors [`Backend::update_many`]: one `update` after another, each with its own
    /// result; a missing queue fails the call.
    pub fn update_many(
        &mut self,
        id: &QueueId,
        updates: Vec<(Key, Transition)>,
        now: Timestamp,
    ) -> crate::Result<Vec<crate::Result<()>>> {
        self.queue(id)?;
        Ok(updates
            .into_iter()
            .map(|(key, t)| self.update(id, key, t, now).map(drop))
            .collect())
    }

    /// Mirrors [`Backend::sweep`]: expired leases back to pending first, then the TTL, so
    /// that an item released here is expired in the same sweep if it is past its TTL.
    pub fn sweep(&mut self, id: &QueueId, now: Timestamp) -> crate::Result<SweepReport> {
        let q = self.queue_mut(id)?;
        let mut report = SweepReport::default();
        for item in &mut q.items {
            if item.lease.as_ref().is_some_and(|l| l.until <= now) {
                item.phase = Phase::PENDING;
                item.lease = None;
                item.not_before = now;
                item.updated_at = now;
                report.released += 1;
            }
        }
        if let Some(ttl) = q.config.ttl {
            for item in &mut q.items {
                if item.phase == Phase::PENDING && item.created_at.saturating_add(ttl) <= now {
                    item.phase = Phase::EXPIRED;
                    item.updated_at = now;
                    report.expired += 1;
                }
            }
        }
        Ok(report)
    }

    /// Mirrors [`Backend::prune`]: the phase's first `limit` items in key order, up to the
    /// first one that reached the phase after `before`, each removed as an `update` that
    /// expects the phase would remove it.
    pub fn prune(
        &mut self,
        id: &QueueId,
        phase: &Phase,
        before: Timestamp,
        limit: usize,
    ) -> crate::Result<u64> {
        let old: Vec<Key> = self
            .queue(id)?
            .items
            .iter()
            .filter(|i| i.phase == *phase)
            .take(limit)
            .take_while(|i| i.updated_at <= before)
            .map(|i| i.key)
            .collect();
        let mut removed = 0;
        for key in old {
            if self
                .update(id, key, Transition::remove_from(phase.clone()), before)
                .is_ok()
            {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Mirrors [`Backend::claim`].
    pub fn claim(
        &mut self,
        id: &QueueId,
        claim: &Claim,
        now: Timestamp,
    ) -> crate::Result<Vec<Item>> {
        self.sweep(id, now)?;
        let q = self.queue_mut(id)?;
        let mut due: Vec<(Timestamp, Key)> = q
            .items
            .iter()
            .filter(|i| i.phase == Phase::PENDING && i.not_before <= now)
            .map(|i| (i.not_before, i.key))
            .collect();
        due.sort_unstable();
        due.truncate(claim.limit);
        let mut out = Vec::new();
        for (_, key) in due {
            if let Some(item) = q.items.iter_mut().find(|i| i.key == key) {
                item.phase = Phase::IN_FLIGHT;
                item.attempts = item.attempts.saturating_add(1);
                item.lease = Some(Lease {
                    owner: claim.owner.clone(),
                    until: claim.lease_until,
                });
                item.updated_at = now;
                out.push(item.clone());
            }
        }
        Ok(out)
    }

    /// Every item of a queue in key order (empty for a missing queue).
    pub fn items(&self, id: &QueueId) -> Vec<Item> {
        self.queues
            .get(id)
            .map(|q| q.items.clone())
            .unwrap_or_default()
    }

    /// Resolves a [`KeyRef`] against the model's current state.
    pub fn resolve(&self, id: &QueueId, key: KeyRef) -> Key {
        match key {
            KeyRef::Raw(k) => k,
            KeyRef::Nth(n) => match self.queues.get(id) {
                Some(q) if !q.items.is_empty() => q.items[usize::from(n) % q.items.len()].key,
                _ => 1,
            },
        }
    }
}

/// What a selector picks out of items held in key order: the naive reading of
/// [`Backend::fetch`]'s contract and [`Page`](crate::Page)'s docs.
pub fn select(items: &[Item], selector: &Selector) -> Vec<Item> {
    match selector {
        Selector::Key(k) => items.iter().filter(|i| i.key == *k).cloned().collect(),
        Selector::Page(page) => {
            let mut matching: Vec<&Item> = items
                .iter()
                .filter(|i| page.phase.as_ref().is_none_or(|p| *p == i.phase))
                .filter(|i| match page.after {
                    None => true,
                    Some(a) if page.reverse => i.key < a,
                    Some(a) => i.key > a,
                })
                .collect();
            matching.sort_by_key(|i| i.key);
            if page.reverse {
                matching.reverse();
            }
            matching
                .into_iter()
                .skip(page.offset)
                .take(page.limit)
                .cloned()
                .collect()
        }
    }
}

/// Counts items by phase by looking at each one.
pub fn tally(items: &[Item]) -> PhaseCounts {
    let mut counts = PhaseCounts::default();
    for item in items {
        counts.add(&item.phase, 1);
    }
    counts
}
