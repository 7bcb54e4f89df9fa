//! Group commit for single pushes: pushes of one item each to one queue, made at the same
//! time by many tasks, share statements and commits.
//!
//! A single push runs its own statement at once while fewer than [`RUNNING`] push statements
//! of its queue are running (so one producer waits for nothing but its own commit). Beyond
//! that it waits in its queue's lane; whenever a running statement ends, everything waiting
//! leaves in one `push` statement of the whole batch (keys in arrival order), and each
//! waiter gets its own key or error. Every item is still durable when its call returns: the
//! statement that carried it has committed.
//!
//! With 16 producers pushing one item at a time, this makes 16 commits into a few: the
//! server's cost of a push is mostly per statement and per commit, not per row (see the
//! README's PostgreSQL figures).
//!
//! A combined statement that fails is tried again item by item, unless the failure is one
//! every item shares (the server unreachable, the queue missing): one item the server refuses
//! fails alone. A waiter whose caller gave up (its future dropped) still has its item pushed:
//! as with any push whose statement was sent, its outcome is then unknown to that caller.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use hookspool::{Error, Key, NewItem, QueueId, Result, Timestamp};
use tokio::sync::oneshot;

use crate::backend::PostgresBackend;

/// Push statements of one queue that run at once before further single pushes wait to be
/// combined. Two: while one statement's commit waits for its WAL flush, the next one runs.
const RUNNING: usize = 2;
/// Most items one combined statement carries; the rest wait for the next.
const MAX_ITEMS: usize = 1024;
/// Most payload bytes one combined statement carries (one item alone may exceed it).
const MAX_BYTES: usize = 8 << 20;

/// The lanes of the queues that have single pushes running.
#[derive(Default)]
pub(crate) struct Lanes(Mutex<HashMap<QueueId, Lane>>);

#[derive(Default)]
struct Lane {
    /// Push statements running (the callers' own and the combined ones).
    running: usize,
    waiting: Vec<Waiter>,
}

struct Waiter {
    item: NewItem,
    now: Timestamp,
    reply: oneshot::Sender<Result<Key>>,
}

impl Lanes {
    fn lock(&self) -> MutexGuard<'_, HashMap<QueueId, Lane>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next batch of `queue`'s waiters, for a statement that ended; none (and one
    /// running statement fewer) when nobody waits.
    fn next(&self, queue: &QueueId) -> Option<Vec<Waiter>> {
        let mut lanes = self.lock();
        let lane = lanes.get_mut(queue)?;
        if lane.waiting.is_empty() {
            lane.running -= 1;
            if lane.running == 0 {
                lanes.remove(queue);
            }
            return None;
        }
        let mut bytes = 0;
        let mut n = 0;
        for w in &lane.waiting {
            if n == MAX_ITEMS || (n > 0 && bytes + w.item.payload.len() > MAX_BYTES) {
                break;
            }
            bytes += w.item.payload.len();
            n += 1;
        }
        Some(lane.waiting.drain(..n).collect())
    }
}

/// A running statement's place in its lane: when it ends (or its caller gives up), the
/// waiters, if any, leave in a combined statement of their own.
struct Turn<'a> {
    backend: &'a PostgresBackend,
    queue: &'a QueueId,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let Some(batch) = self.backend.inner.lanes.next(self.queue) else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(drain(self.backend.clone(), self.queue.clone(), batch));
        } else {
            // Outside a runtime nothing can run the batch: its waiters are told (their
            // receivers see the senders dropped) and the lane gives the place back.
            drop(batch);
            while let Some(more) = self.backend.inner.lanes.next(self.queue) {
                drop(more);
            }
        }
    }
}

impl PostgresBackend {
    /// Pushes one item, combined with others' single pushes to the same queue when its
    /// queue already has [`RUNNING`] push statements running.
    pub(crate) async fn push_combined(
        &self,
        queue: &QueueId,
        item: NewItem,
        now: Timestamp,
    ) -> Result<Key> {
        let waiting = {
            let mut lanes = self.inner.lanes.lock();
            let lane = lanes.entry(queue.clone()).or_default();
            if lane.running < RUNNING {
                lane.running += 1;
                Ok(item)
            } else {
                let (reply, answer) = oneshot::channel();
                lane.waiting.push(Waiter { item, now, reply });
                Err(answer)
            }
        };
        match waiting {
            Ok(item) => {
                let _turn = Turn {
                    backend: self,
                    queue,
                };
                one(self
                    .push_rows(queue, std::slice::from_ref(&item), now)
                    .await)
            }
            Err(answer) => answer.await.unwrap_or_else(|_| {
                Err(Error::internal(
                    "a combined push was dropped before it ran (the runtime is shutting down)",
                ))
            }),
        }
    }
}

/// Runs batches of `queue`'s waiters until none is left.
async fn drain(backend: PostgresBackend, queue: QueueId, mut batch: Vec<Waiter>) {
    loop {
        push_batch(&backend, &queue, batch).await;
        match backend.inner.lanes.next(&queue) {
            Some(next) => batch = next,
            None => return,
        }
    }
}

/// One combined statement for `batch`, then each waiter's answer.
async fn push_batch(backend: &PostgresBackend, queue: &QueueId, batch: Vec<Waiter>) {
    // The latest of the callers' clocks: every item is due by the time the statement runs.
    let now = batch.iter().map(|w| w.now).max().unwrap_or_default();
    let (items, replies): (Vec<NewItem>, Vec<_>) = batch
        .into_iter()
        .map(|w| (w.item, (w.reply, w.now)))
        .unzip();
    let n = items.len();
    if n == 1 {
        let result = one(backend.push_rows(queue, &items, now).await);
        if let Some((reply, _)) = replies.into_iter().next() {
            let _ = reply.send(result);
        }
        return;
    }
    match backend.push_rows(queue, &items, now).await {
        Ok(keys) if keys.len() == n => {
            for ((reply, _), key) in replies.into_iter().zip(keys) {
                let _ = reply.send(Ok(key));
            }
        }
        Ok(keys) => {
            for (reply, _) in replies {
                let _ = reply.send(Err(Error::internal(format!(
                    "a combined push of {n} items returned {} keys",
                    keys.len()
                ))));
            }
        }
        Err(e) if shared(&e) => {
            for (reply, _) in replies {
                let _ = reply.send(Err(again(&e)));
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, items = n, "a combined push failed; pushing its items one by one");
            for ((reply, now), item) in replies.into_iter().zip(&items) {
                let result = backend
                    .push_rows(queue, std::slice::from_ref(item), now)
                    .await;
                let _ = reply.send(one(result));
            }
        }
    }
}

/// The key of a push of one item.
fn one(keys: Result<Vec<Key>>) -> Result<Key> {
    keys?
        .first()
        .copied()
        .ok_or_else(|| Error::internal("a push of one item returned no key"))
}

/// Whether a failure is every item's, not one item's: retrying item by item would only
/// fail again.
fn shared(e: &Error) -> bool {
    matches!(e, Error::Unavailable { .. } | Error::QueueNotFound(_))
}

/// The same failure for another waiter (errors are not `Clone`: sources become messages).
fn again(e: &Error) -> Error {
    match e {
        Error::QueueNotFound(q) => Error::QueueNotFound(q.clone()),
        Error::Unavailable { backend, source } => Error::Unavailable {
            backend,
            source: source.to_string().into(),
        },
        Error::Backend { backend, source } => Error::Backend {
            backend,
            source: source.to_string().into(),
        },
        other => Error::backend("postgres", other.to_string()),
    }
}
