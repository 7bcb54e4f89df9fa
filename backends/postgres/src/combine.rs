//! Group commit for small pushes: pushes of a few items each (a single item, or an event's
//! deliveries to a few subscriptions) to one queue, made at the same time by many tasks,
//! share statements and commits.
//!
//! A push of at most [`MAX_COMBINED`] items is a call of its queue's lane (`lane`): it runs
//! its own statement at once while fewer than two push statements of its queue are running
//! (so one producer waits for nothing but its own commit). Beyond that it waits, and
//! whenever a running statement ends, everything waiting leaves in one `push` statement of
//! all their items (each caller's items together and in its order, callers in arrival
//! order), and each waiter gets its own keys or error. Every push is still durable when its
//! call returns, and still all or nothing: the statement that carried it has committed, or
//! none of it has.
//!
//! With 16 producers pushing one item at a time, this makes 16 commits into a few: the
//! server's cost of a push is mostly per statement and per commit, not per row (see the
//! README's PostgreSQL figures).
//!
//! A combined statement that fails is tried again push by push, unless the failure is one
//! every push shares (the server unreachable, the queue missing): one push the server refuses
//! fails alone. A push whose caller gave up (its future dropped) before its statement left
//! is not made; one whose caller gives up later is made all the same, and its outcome is
//! then unknown to that caller.

use hookspool::{Error, Key, NewItem, QueueId, Result, Timestamp};

use crate::backend::PostgresBackend;
use crate::lane::{self, Lanes, Shared, Waiter, again};

/// The largest push that is combined with others; a larger one is efficient as it is and
/// runs its own statement.
pub(crate) const MAX_COMBINED: usize = 64;
/// Most items one combined statement carries; the rest wait for the next.
const MAX_ITEMS: usize = 1024;
/// Most payload bytes one combined statement carries (one push alone may exceed it).
const MAX_BYTES: usize = 8 << 20;

/// Small pushes, as calls that share statements.
pub(crate) struct Pushes;

impl Shared for Pushes {
    type Ask = Vec<NewItem>;
    type Answer = Vec<Key>;
    const MAX: [usize; 2] = [MAX_ITEMS, MAX_BYTES];
    const DROPPED: &'static str = "a combined push was dropped before its answer came (the \
                                   runtime is shutting down): it may or may not have been stored";

    fn size(items: &Vec<NewItem>) -> [usize; 2] {
        [items.len(), items.iter().map(|i| i.payload.len()).sum()]
    }

    fn lanes(backend: &PostgresBackend) -> &Lanes<Self> {
        &backend.inner.lanes
    }

    async fn alone(
        backend: &PostgresBackend,
        queue: &QueueId,
        items: Vec<NewItem>,
        now: Timestamp,
    ) -> Result<Vec<Key>> {
        backend.push_rows(queue, &items, now).await
    }

    /// One combined statement for `batch`, then each waiter's answer.
    async fn batch(backend: &PostgresBackend, queue: &QueueId, batch: Vec<Waiter<Self>>) {
        // The latest of the callers' clocks: every item is due by the time the statement
        // runs.
        let now = batch.iter().map(|w| w.now).max().unwrap_or_default();
        // Every waiter's items in one list; each waiter keeps its clock and its part of it.
        let mut all = Vec::new();
        let mut parts = Vec::with_capacity(batch.len());
        for w in batch {
            let start = all.len();
            all.extend(w.ask);
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
}

impl PostgresBackend {
    /// Pushes `items` (at most [`MAX_COMBINED`]), combined with others' small pushes to the
    /// same queue when its queue already has two push statements running.
    pub(crate) async fn push_combined(
        &self,
        queue: &QueueId,
        items: Vec<NewItem>,
        now: Timestamp,
    ) -> Result<Vec<Key>> {
        lane::call::<Pushes>(self, queue, items, now).await
    }
}

/// Whether a failure is every push's, not one push's: retrying push by push would only
/// fail again.
fn shared(e: &Error) -> bool {
    matches!(e, Error::Unavailable { .. } | Error::QueueNotFound(_))
}
