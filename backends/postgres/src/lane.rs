//! Lanes: calls of one kind to one queue that this process makes while [`RUNNING`] of them
//! run wait in the queue's lane, and whenever a running statement ends, the calls waiting
//! leave together in one statement. Small pushes share statements this way (`combine`), and
//! so do claims (`gather`); [`Shared`] says what differs between them.
//!
//! When a call finds fewer than [`RUNNING`] statements of its kind and queue running, it
//! runs its own at once (so a caller alone waits for nothing but its own statement).
//! Otherwise it waits, and when a running statement ends (or its caller gives up) the
//! callers waiting leave in one batch, as many as [`Shared::MAX`] allows, in arrival
//! order; the next batch leaves when that one ends, until none waits. A caller that gave
//! up before its batch left is left out of it. One that gives up later has its call made
//! all the same, and its outcome is then unknown to it, as with any call whose statement
//! was sent.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};

use hookspool::{Error, QueueId, Result, Timestamp};
use tokio::sync::oneshot;

use crate::backend::PostgresBackend;

/// Statements of one kind and queue that run at once before further calls wait: two, so
/// that while one statement's commit waits for its WAL flush, the next one runs.
const RUNNING: usize = 2;

/// A kind of call that shares statements.
pub(crate) trait Shared: Sized + Send + 'static {
    /// What one caller asks for (the items it pushes, its claim).
    type Ask: Send + 'static;
    /// What one caller gets back.
    type Answer: Send + 'static;
    /// The most one batch carries, in the two measures of [`Shared::size`]; the first
    /// waiter of a batch always goes, whatever its size.
    const MAX: [usize; 2];
    /// What a caller is told when its answer never came (the runtime shutting down).
    const DROPPED: &'static str;
    /// The size of one caller's call toward [`Shared::MAX`].
    fn size(ask: &Self::Ask) -> [usize; 2];
    /// The lanes of this kind of call in `backend`.
    fn lanes(backend: &PostgresBackend) -> &Lanes<Self>;
    /// One caller's call, in a statement of its own.
    fn alone(
        backend: &PostgresBackend,
        queue: &QueueId,
        ask: Self::Ask,
        now: Timestamp,
    ) -> impl Future<Output = Result<Self::Answer>> + Send;
    /// The shared statement of `batch` (at least two waiters), and each waiter's answer.
    fn batch(
        backend: &PostgresBackend,
        queue: &QueueId,
        batch: Vec<Waiter<Self>>,
    ) -> impl Future<Output = ()> + Send;
}

/// A caller waiting for its batch.
pub(crate) struct Waiter<S: Shared> {
    pub(crate) ask: S::Ask,
    /// The caller's clock.
    pub(crate) now: Timestamp,
    pub(crate) reply: oneshot::Sender<Result<S::Answer>>,
}

/// The lanes of the queues that have calls of kind `S` running in this process.
pub(crate) struct Lanes<S: Shared>(Mutex<HashMap<QueueId, Lane<S>>>);

impl<S: Shared> Default for Lanes<S> {
    fn default() -> Self {
        Lanes(Mutex::new(HashMap::new()))
    }
}

struct Lane<S: Shared> {
    /// Statements running (the callers' own and the shared ones).
    running: usize,
    waiting: Vec<Waiter<S>>,
}

impl<S: Shared> Lanes<S> {
    fn lock(&self) -> MutexGuard<'_, HashMap<QueueId, Lane<S>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next batch of `queue`'s waiters, for a statement that ended; none (and one
    /// running statement fewer) when nobody waits.
    fn next(&self, queue: &QueueId) -> Option<Vec<Waiter<S>>> {
        let mut lanes = self.lock();
        let lane = lanes.get_mut(queue)?;
        // A caller that gave up before its batch left is not called for.
        lane.waiting.retain(|w| !w.reply.is_closed());
        if lane.waiting.is_empty() {
            lane.running -= 1;
            if lane.running == 0 {
                lanes.remove(queue);
            }
            return None;
        }
        let mut taken = [0, 0];
        let mut n = 0;
        for w in &lane.waiting {
            let size = S::size(&w.ask);
            if n > 0 && (0..2).any(|i| taken[i] + size[i] > S::MAX[i]) {
                break;
            }
            taken = [taken[0] + size[0], taken[1] + size[1]];
            n += 1;
        }
        Some(lane.waiting.drain(..n).collect())
    }
}

/// A running statement's place in its lane: when it ends (or its caller gives up), the
/// waiters, if any, leave in a batch of their own.
struct Turn<'a, S: Shared> {
    backend: &'a PostgresBackend,
    queue: &'a QueueId,
    kind: std::marker::PhantomData<S>,
}

impl<S: Shared> Drop for Turn<'_, S> {
    fn drop(&mut self) {
        let lanes = S::lanes(self.backend);
        let Some(batch) = lanes.next(self.queue) else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(drain::<S>(self.backend.clone(), self.queue.clone(), batch));
        } else {
            // Outside a runtime nothing can run the batch: its waiters are told (their
            // receivers see the senders dropped) and the lane gives the place back.
            drop(batch);
            while let Some(more) = lanes.next(self.queue) {
                drop(more);
            }
        }
    }
}

/// Makes `ask`'s call: with a statement of its own if fewer than [`RUNNING`] of its kind
/// and queue run, or else in the batch it waits for.
pub(crate) async fn call<S: Shared>(
    backend: &PostgresBackend,
    queue: &QueueId,
    ask: S::Ask,
    now: Timestamp,
) -> Result<S::Answer> {
    let waiting = {
        let mut lanes = S::lanes(backend).lock();
        let lane = lanes.entry(queue.clone()).or_insert_with(|| Lane {
            running: 0,
            waiting: Vec::new(),
        });
        if lane.running < RUNNING {
            lane.running += 1;
            Ok(ask)
        } else {
            let (reply, answer) = oneshot::channel();
            lane.waiting.push(Waiter { ask, now, reply });
            Err(answer)
        }
    };
    match waiting {
        Ok(ask) => {
            let _turn = Turn::<S> {
                backend,
                queue,
                kind: std::marker::PhantomData,
            };
            S::alone(backend, queue, ask, now).await
        }
        Err(answer) => answer
            .await
            .unwrap_or_else(|_| Err(Error::internal(S::DROPPED))),
    }
}

/// Runs batches of `queue`'s waiters until none is left.
async fn drain<S: Shared>(backend: PostgresBackend, queue: QueueId, mut batch: Vec<Waiter<S>>) {
    loop {
        if batch.len() == 1 {
            if let Some(only) = batch.pop() {
                let answer = S::alone(&backend, &queue, only.ask, only.now).await;
                let _ = only.reply.send(answer);
            }
        } else {
            S::batch(&backend, &queue, batch).await;
        }
        match S::lanes(&backend).next(&queue) {
            Some(next) => batch = next,
            None => return,
        }
    }
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
