//! One claim for several consumers: claims of one queue that this process's consumers make
//! while two of its claims of that queue run wait, and leave together in one call of
//! `claim_for` (schema version 11) when one of those ends.
//!
//! Consumers claiming at the same time each start at the head of the due index, and each
//! steps over the rows the others hold locked and over the entries of rows just claimed:
//! with four consumers, the server spent 11-14% more instructions per item claimed and acked
//! than with one (see the README). Here at most two claim statements of a queue run at once
//! in a process (while one commits, the next runs), and the claims that queue up behind them
//! share one statement, one sweep, one count and one commit. With one statement at a time,
//! the server's instructions per item fell to what one consumer costs, but the consumers
//! waited for each other's commits and the rate fell; with two they fell by 4% and the rate
//! held or rose (see the README). A consumer alone (the delivery loop) never waits.
//!
//! In the shared statement each consumer gets its own lease (owner, end) and its share of
//! the due items in `(not_before, key)` order, the first to wait the first items: the items
//! of all of them are the due items a claim of their summed limits would take. The
//! statement runs at the earliest of their clocks, so no consumer gets an item that is not
//! due by its own, or an expired lease released before its own time. It is durable when any
//! of them asked for a durable claim. A failure is every consumer's (the server, the queue):
//! each gets it. A consumer whose caller gave up before the statement was sent is left out;
//! one that gives up later has its items leased until its lease runs out, as with any
//! claim whose statement was sent.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use hookspool::{Claim, Error, Item, QueueId, Result, Timestamp};
use tokio::sync::oneshot;

use crate::backend::PostgresBackend;
use crate::combine::again;

/// Claim statements of one queue that run at once before further claims wait to share one.
const RUNNING: usize = 2;
/// Most items one shared claim asks for; the consumers beyond wait for the next.
const MAX_ITEMS: usize = 8192;

/// The queues whose claims are running in this process, with the claims waiting.
#[derive(Default)]
pub(crate) struct Gathering(Mutex<HashMap<QueueId, Lane>>);

#[derive(Default)]
struct Lane {
    /// Claim statements running (the callers' own and the shared ones).
    running: usize,
    waiting: Vec<Waiter>,
}

struct Waiter {
    claim: Claim,
    now: Timestamp,
    reply: oneshot::Sender<Result<Vec<Item>>>,
}

impl Gathering {
    fn lock(&self) -> MutexGuard<'_, HashMap<QueueId, Lane>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next claims of `queue` to share a statement, for one that ended; none (and one
    /// running statement fewer) when nobody waits.
    fn next(&self, queue: &QueueId) -> Option<Vec<Waiter>> {
        let mut lanes = self.lock();
        let lane = lanes.get_mut(queue)?;
        // A caller that gave up before its statement was sent is not claimed for.
        lane.waiting.retain(|w| !w.reply.is_closed());
        if lane.waiting.is_empty() {
            lane.running -= 1;
            if lane.running == 0 {
                lanes.remove(queue);
            }
            return None;
        }
        let waiting = &mut lane.waiting;
        let (mut items, mut n) = (0, 0);
        for w in waiting.iter() {
            if n > 0 && items + w.claim.limit > MAX_ITEMS {
                break;
            }
            items += w.claim.limit;
            n += 1;
        }
        Some(waiting.drain(..n).collect())
    }
}

/// A running claim's place: when it ends (or its caller gives up), the claims waiting
/// behind it leave in a shared statement.
struct Turn<'a> {
    backend: &'a PostgresBackend,
    queue: &'a QueueId,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let Some(batch) = self.backend.inner.gathering.next(self.queue) else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(drain(self.backend.clone(), self.queue.clone(), batch));
        } else {
            // Outside a runtime nothing can run the batch: its waiters are told (their
            // receivers see the senders dropped) and the queue is no longer running.
            drop(batch);
            while let Some(more) = self.backend.inner.gathering.next(self.queue) {
                drop(more);
            }
        }
    }
}

impl PostgresBackend {
    /// Claims for `claim` with its own statement if no claim of `queue` runs in this
    /// process, or else in the shared statement of the claims that wait for it to end.
    pub(crate) async fn claim_gathered(
        &self,
        queue: &QueueId,
        claim: Claim,
        now: Timestamp,
    ) -> Result<Vec<Item>> {
        let waiting = {
            let mut lanes = self.inner.gathering.lock();
            let lane = lanes.entry(queue.clone()).or_default();
            if lane.running < RUNNING {
                lane.running += 1;
                Ok(claim)
            } else {
                let (reply, answer) = oneshot::channel();
                lane.waiting.push(Waiter { claim, now, reply });
                Err(answer)
            }
        };
        match waiting {
            Ok(claim) => {
                let _turn = Turn {
                    backend: self,
                    queue,
                };
                self.claim_alone(queue, &claim, now, None).await
            }
            Err(answer) => answer.await.unwrap_or_else(|_| {
                Err(Error::internal(
                    "a shared claim was dropped before its answer came (the runtime is \
                     shutting down): its items may be leased until the lease runs out",
                ))
            }),
        }
    }
}

/// Runs shared claims of `queue` until none waits.
async fn drain(backend: PostgresBackend, queue: QueueId, mut batch: Vec<Waiter>) {
    loop {
        claim_batch(&backend, &queue, batch).await;
        match backend.inner.gathering.next(&queue) {
            Some(next) => batch = next,
            None => return,
        }
    }
}

/// One shared statement for `batch` (one claim alone when it is one), then each waiter's
/// answer.
async fn claim_batch(backend: &PostgresBackend, queue: &QueueId, batch: Vec<Waiter>) {
    if let [only] = batch.as_slice() {
        let items = backend
            .claim_alone(queue, &only.claim, only.now, None)
            .await;
        if let Some(only) = batch.into_iter().next() {
            let _ = only.reply.send(items);
        }
        return;
    }
    let now = batch.iter().map(|w| w.now).min().unwrap_or_default();
    let claims: Vec<&Claim> = batch.iter().map(|w| &w.claim).collect();
    match backend.claim_shared(queue, &claims, now).await {
        Ok(shares) => {
            for (w, items) in batch.into_iter().zip(shares) {
                let _ = w.reply.send(Ok(items));
            }
        }
        Err(e) => {
            for w in batch {
                let _ = w.reply.send(Err(again(&e)));
            }
        }
    }
}
