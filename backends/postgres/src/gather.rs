//! One claim for several consumers: claims of one queue that this process's consumers make
//! while two of its claims of that queue run wait in the queue's lane (`lane`, as small
//! pushes do in `combine`), and leave together in one call of `claim_located` (schema version
//! 14; `claim_for` before it) when one of those ends.
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

use hookspool::{Claim, Item, QueueId, Result, Timestamp};

use crate::backend::PostgresBackend;
use crate::lane::{self, Lanes, Shared, Waiter, again};

/// Most items one shared claim asks for; the consumers beyond wait for the next.
const MAX_ITEMS: usize = 8192;

/// Claims, as calls that share statements.
pub(crate) struct Claims;

impl Shared for Claims {
    type Ask = Claim;
    type Answer = Vec<Item>;
    const MAX: [usize; 2] = [MAX_ITEMS, usize::MAX];
    const DROPPED: &'static str = "a shared claim was dropped before its answer came (the \
                                   runtime is shutting down): its items may be leased until \
                                   the lease runs out";

    fn size(claim: &Claim) -> [usize; 2] {
        [claim.limit, 0]
    }

    fn lanes(backend: &PostgresBackend) -> &Lanes<Self> {
        &backend.inner.gathering
    }

    async fn alone(
        backend: &PostgresBackend,
        queue: &QueueId,
        claim: Claim,
        now: Timestamp,
    ) -> Result<Vec<Item>> {
        let mut shares = backend.claim_shared(queue, &[&claim], now).await?;
        Ok(shares.pop().unwrap_or_default())
    }

    /// One shared statement for `batch` (two claims or more), then each waiter's answer.
    async fn batch(backend: &PostgresBackend, queue: &QueueId, batch: Vec<Waiter<Self>>) {
        let now = batch.iter().map(|w| w.now).min().unwrap_or_default();
        let claims: Vec<&Claim> = batch.iter().map(|w| &w.ask).collect();
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
}

impl PostgresBackend {
    /// Claims for `claim` with its own statement if fewer than two claims of `queue` run
    /// in this process, or else in the shared statement of the claims that wait for one of
    /// them to end.
    pub(crate) async fn claim_gathered(
        &self,
        queue: &QueueId,
        claim: Claim,
        now: Timestamp,
    ) -> Result<Vec<Item>> {
        lane::call::<Claims>(self, queue, claim, now).await
    }
}
