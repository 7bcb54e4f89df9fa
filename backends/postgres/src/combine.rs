//! Group commit for small pushes: pushes of a few items each (a single item, or an event's
//! deliveries to a few subscriptions) to one queue, made at the same time by many tasks,
//! share statements and commits.
//!
//! A push of at most [`MAX_COMBINED`] items runs its own statement at once while fewer than
//! [`RUNNING`] push statements of its queue are running (so one producer waits for nothing
//! but its own commit). Beyond that it waits in its queue's lane; whenever a running
//! statement ends, everything waiting leaves in one `push` statement of all their items (each
//! caller's items together and in its order, callers in arrival order), and each waiter gets
//! its own keys or error. Every push is still durable when its call returns, and still all
//! or nothing: the statement that carried it has committed, or none of it has.
//!
//! With 16 producers pushing one item at a time, this makes 16 commits into a few: the
//! server's cost of a push is mostly per statement and per commit, not per row (see the
//! README's PostgreSQL figures).
//!
//! A combined statement that fails is tried again push by push, unless the failure is one
//! every push shares (the server unreachable, the queue missing): one push the server refuses
//! fails alone. A waiter whose caller gave up (its future dropped) still has its items pushed:
//! as with any push whose statement was sent, its outcome is then unknown to that caller.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use hookspool::{Error, Key, NewItem, QueueId, Result, Timestamp};
use tokio::sync::oneshot;

use crate::backend::PostgresBackend;

/// Push statements of one queue that run at once before further small pushes wait to be
/// combined. Two: while one statement's commit waits for its WAL flush, the next one runs.
const RUNNING: usize = 2;
/// The largest push that is combined with others; a larger one is efficient as it is and
/// runs its own statement.
pub(crate) const MAX_COMBINED: usize = 64;
/// Most items one combined statement carries; the rest wait for the next.
const MAX_ITEMS: usize = 1024;
/// Most payload bytes one combined statement carries (one push alone may exceed it).
const MAX_BYTES: usize = 8 << 20;

/// The lanes of the queues that have small pushes running.
#[derive(Default)]
pub(crate) struct Lanes(Mutex<HashMap<QueueId, Lane>>);

#[derive(Default)]
struct Lane {
    /// Push statements running (the callers' own and the combined ones).
    running: usize,
    waiting: Vec<Waiter>,
}

struct Waiter {
    items: Vec<NewItem>,
    now: Timestamp,
    reply: oneshot::Sender<Result<Vec<Key>>>,
}

impl Waiter {
    fn bytes(&self) -> usize {
        self.items.iter().map(|i| i.payload.len()).sum()
    }
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
        let (mut items, mut bytes, mut n) = (0, 0, 0);
        for w in &lane.waiting {
            if n > 0 && (items + w.items.len() > MAX_ITEMS || bytes + w.bytes() > MAX_BYTES) {
                break;
            }
            items += w.items.len();
            bytes += w.bytes();
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
    /// Pushes `items` (at most [`MAX_COMBINED`]), combined with others' small pushes to the
    /// same queue when its queue already has [`RUNNING`] push statements running.
    pub(crate) async fn push_combined(
        &self,
        queue: &QueueId,
        items: Vec<NewItem>,
        now: Timestamp,
    ) -> Result<Vec<Key>> {
        let waiting = {
            let mut lanes = self.inner.lanes.lock();
            let lane = lanes.entry(queue.clone()).or_default();
            if lane.running < RUNNING {
                lane.running += 1;
                Ok(items)
            } else {
                let (reply, answer) = oneshot::channel();
                lane.waiting.push(Waiter { items, now, reply });
                Err(answer)
            }
        };
        match waiting {
            Ok(items) => {
                let _turn = Turn {
                    backend: self,
                    queue,
                };
                self.push_rows(queue, &items, now).await
            }
            Err(answer) => answer.await.unwrap_or_else(|_| {
                Err(Error::internal(
                    "a combined push was dropped before its answer came (the runtime is \
                     shutting down): it may or may not have been stored",
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
    // Every waiter's items in one list; each waiter keeps its clock and its part of it.
    let mut all = Vec::new();
    let mut parts = Vec::with_capacity(batch.len());
    for w in batch {
        let start = all.len();
        all.extend(w.items);
        parts.push((w.reply, w.now, start..all.len()));
    }
    match backend.push_rows(queue, &all, now).await {
        Ok(keys) if keys.len() == all.len() => {
            for (reply, _, part) in parts {
                let _ = reply.send(Ok(keys[part].to_vec()));
            }
        }
        Ok(keys) => {
            for (reply, _, _) in parts {
                let _ = reply.send(Err(Error::internal(format!(
                    "a combined push of {} items returned {} keys",
                    all.len(),
                    keys.len()
                ))));
            }
        }
        Err(e) if parts.len() == 1 => {
            if let Some((reply, _, _)) = parts.pop() {
                let _ = reply.send(Err(e));
            }
        }
        Err(e) if shared(&e) => {
            for (reply, _, _) in parts {
                let _ = reply.send(Err(again(&e)));
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, pushes = parts.len(), "a combined push failed; pushing its parts one by one");
            for (reply, now, part) in parts {
                let _ = reply.send(backend.push_rows(queue, &all[part], now).await);
            }
        }
    }
}

/// Whether a failure is every push's, not one push's: retrying push by push would only
/// fail again.
fn shared(e: &Error) -> bool {
    matches!(e, Error::Unavailable { .. } | Error::QueueNotFound(_))
}

/// The same failure for another waiter (errors are not `Clone`: sources become messages).
pub(crate) fn again(e: &Error) -> Error {
    match e {
        Error::QueueNotFound(q) => Error::QueueNotFound(q.clone()),
        Error::InvalidInput(m) => Error::InvalidInput(m.clone()),
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
