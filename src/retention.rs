//! Retention: removing items that have stayed in a settled phase longer than their queue's
//! [`Retain`] periods, a little at a time, in the background.
//!
//! A pass asks the backend to [`Backend::prune`] each phase with a period, in batches of
//! [`PRUNE_BATCH`], up to a budget per queue, so that no pass holds anything for long and
//! its cost follows what it removes, never the size of the queue. What was removed is
//! counted (per queue and phase, since the store was made), for `/metrics` and the counts the
//! API shows.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::{Phase, QueueId, Retain, Timestamp};
use crate::store::Store;

/// Items one `prune` call of a backend removes at most.
pub const PRUNE_BATCH: usize = 1_000;

/// Items one retention pass removes at most from one queue; what is left goes in the next
/// pass (a backlog, say after retention was first turned on, drains over several passes
/// instead of in one long one).
pub const PRUNE_BUDGET: u64 = 20_000;

/// Items removed by retention, by queue and phase, since the store was made.
#[derive(Debug, Default)]
pub(crate) struct Pruned(Mutex<BTreeMap<QueueId, BTreeMap<Phase, u64>>>);

impl Pruned {
    fn add(&self, queue: &QueueId, phase: &Phase, n: u64) {
        if n == 0 {
            return;
        }
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *all.entry(queue.clone())
            .or_default()
            .entry(phase.clone())
            .or_insert(0) += n;
    }

    fn of(&self, queue: &QueueId) -> BTreeMap<Phase, u64> {
        let all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        all.get(queue).cloned().unwrap_or_default()
    }

    fn all(&self) -> BTreeMap<QueueId, BTreeMap<Phase, u64>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The oldest `updated_at` an item of a phase kept for `period` may have and stay, at `now`.
fn cutoff(now: Timestamp, period: Duration) -> Timestamp {
    let period = u64::try_from(period.as_millis()).unwrap_or(u64::MAX);
    Timestamp::from_millis(now.as_millis().saturating_sub(period))
}

impl<B: Backend> Store<B> {
    /// One retention pass over one queue: removes the items its [`Retain`] periods let go
    /// (those whose `updated_at` is at least the period ago), at most [`PRUNE_BUDGET`].
    /// Returns how many it removed, by phase.
    ///
    /// # Errors
    /// [`Error::QueueNotFound`], or the backend's error.
    pub async fn prune(&self, queue: &QueueId) -> Result<BTreeMap<Phase, u64>> {
        let config = self
            .backend()
            .get_queue(queue)
            .await?
            .ok_or_else(|| Error::QueueNotFound(queue.clone()))?;
        self.prune_with(queue, &config.retain).await
    }

    async fn prune_with(&self, queue: &QueueId, retain: &Retain) -> Result<BTreeMap<Phase, u64>> {
        let mut removed = BTreeMap::new();
        let mut budget = PRUNE_BUDGET;
        for (phase, period) in retain.periods() {
            let before = cutoff(self.now(), period);
            let mut total = 0;
            while budget > 0 {
                let limit = usize::try_from(budget).map_or(PRUNE_BATCH, |b| b.min(PRUNE_BATCH));
                let n = self.backend().prune(queue, &phase, before, limit).await?;
                total += n;
                budget = budget.saturating_sub(n);
                if n < limit as u64 {
                    break;
                }
            }
            self.pruned.add(queue, &phase, total);
            if total > 0 {
                removed.insert(phase, total);
            }
        }
        Ok(removed)
    }

    /// One retention pass over every queue with a [`Retain`] period. A queue deleted
    /// meanwhile is skipped. Returns how many items it removed in all.
    ///
    /// # Errors
    /// The backend's error (the pass stops at the first).
    pub async fn prune_all(&self) -> Result<u64> {
        let mut total = 0;
        for config in self.queues().await? {
            if config.retain.is_forever() {
                continue;
            }
            match self.prune_with(&config.id, &config.retain).await {
                Ok(removed) => total += removed.values().sum::<u64>(),
                Err(Error::QueueNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    /// Items retention removed from `queue` since this store was made, by phase.
    pub fn pruned(&self, queue: &QueueId) -> BTreeMap<Phase, u64> {
        self.pruned.of(queue)
    }

    /// Items retention removed since this store was made, by queue and phase.
    pub fn pruned_all(&self) -> BTreeMap<QueueId, BTreeMap<Phase, u64>> {
        self.pruned.all()
    }

    /// Runs a retention pass ([`Store::prune_all`]) every `interval`, on the current tokio
    /// runtime, until the returned handle is dropped or [`RetentionTask::stop`]ped. A pass
    /// that fails is logged (`tracing` warning) and the next one runs as planned: a backend
    /// that is down for a while (a database restarting) costs only the passes it misses.
    pub fn spawn_retention(&self, interval: Duration) -> RetentionTask {
        let store = self.clone();
        let handle = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match store.prune_all().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(removed = n, "retention pass"),
                    Err(e) => {
                        tracing::warn!(error = %e, "retention pass failed; next in {interval:?}");
                    }
                }
            }
        });
        RetentionTask(Some(handle))
    }
}

/// The background retention of [`Store::spawn_retention`]; dropping it stops it.
#[derive(Debug)]
pub struct RetentionTask(Option<tokio::task::JoinHandle<()>>);

impl RetentionTask {
    /// Stops it and waits until it has: a pass under way is cancelled between two backend
    /// calls, each of which takes effect whole or not at all.
    pub async fn stop(mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
            let _ = handle.await;
        }
    }
}

impl Drop for RetentionTask {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
        }
    }
}
