//! The settler: records the outcomes of finished requests in groups. A request task hands its
//! outcome over and frees its slot at once; the settler writes every outcome that is waiting
//! in one `update_many` (one record and one sync on the journal), then, once they are durable,
//! announces them on the results stream and ends the subscriptions that answered 410.

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use hookspool::{Backend, Error as StoreError, Key, Transition};

use super::{DeliveryOutcome, OutcomeKind};
use crate::hooks::Hooks;

/// Most outcomes written in one `update_many` (fewer if the store's batch limit is lower).
const MAX_GROUP: usize = 256;

/// An outcome to record: the delivery's transition, and what to announce once it is durable.
pub(super) struct Settle {
    pub(super) key: Key,
    pub(super) transition: Transition,
    pub(super) outcome: DeliveryOutcome,
    /// Told once the outcome is recorded (or could not be): a strict-FIFO subscription's next
    /// delivery waits for it, so that a crash can never leave a later delivery settled behind
    /// an earlier one that is sent again.
    pub(super) recorded: Option<oneshot::Sender<()>>,
}

/// The handle the loop and its request tasks send outcomes through.
pub(super) type Settles = mpsc::UnboundedSender<Settle>;

/// Starts the settler; it runs until every [`Settles`] handle is dropped and what they sent
/// is recorded.
pub(super) fn spawn<B: Backend>(hooks: Hooks<B>) -> (Settles, JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, tokio::spawn(run(hooks, rx)))
}

async fn run<B: Backend>(hooks: Hooks<B>, mut rx: mpsc::UnboundedReceiver<Settle>) {
    let group = MAX_GROUP.min(hooks.store().limits().max_batch).max(1);
    let mut batch = Vec::with_capacity(group);
    while rx.recv_many(&mut batch, group).await > 0 {
        record(&hooks, std::mem::take(&mut batch)).await;
    }
}

/// Writes one group of outcomes, then announces each one that was recorded (or whose
/// delivery had moved on under the loop, as a single settle would).
async fn record<B: Backend>(hooks: &Hooks<B>, batch: Vec<Settle>) {
    let mut updates = Vec::with_capacity(batch.len());
    let mut outcomes = Vec::with_capacity(batch.len());
    // Dropped at the end, which tells the waiters whatever happened.
    let mut recorded = Vec::new();
    for s in batch {
        updates.push((s.key, s.transition));
        outcomes.push((s.key, s.outcome));
        recorded.extend(s.recorded);
    }
    let results = match hooks
        .store()
        .update_many(&hooks.inner.deliveries_queue, updates)
        .await
    {
        Ok(results) => results,
        Err(e) => {
            // Not recorded: the leases run out and the deliveries are tried again.
            tracing::error!(deliveries = outcomes.len(), error = %e, "could not record delivery attempts");
            return;
        }
    };
    for ((key, outcome), result) in outcomes.into_iter().zip(results) {
        match result {
            Ok(()) => {}
            Err(
                e @ (StoreError::NotLeaseOwner { .. }
                | StoreError::PhaseConflict { .. }
                | StoreError::ItemNotFound { .. }),
            ) => {
                tracing::warn!(key, error = %e, "delivery changed under the loop; leaving it");
            }
            Err(e) => {
                tracing::error!(key, error = %e, "could not record a delivery attempt");
                continue;
            }
        }
        if outcome.kind == OutcomeKind::Gone
            && let Some(sub) = &outcome.subscription
            && let Err(e) = hooks.unsubscribe(sub).await
        {
            tracing::error!(subscription = %sub, error = %e, "could not remove a subscription that answered 410");
        }
        tracing::debug!(delivery = %outcome.delivery_id, attempt = outcome.attempt, status = ?outcome.status, kind = ?outcome.kind, "delivery attempt");
        hooks.announce(outcome);
    }
}
