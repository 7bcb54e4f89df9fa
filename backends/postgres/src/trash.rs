//! Deleting what `reset` and `delete_queue` threw away: their generations' rows go in
//! batches of [`BATCH`], each its own short transaction, in the background, so that neither
//! call holds locks for the time a large queue takes to delete. Rows of a thrown-away
//! generation are invisible to every call from the moment it commits. A generation is
//! forgotten (and a deleted queue's key sequence dropped) once its rows are gone and the
//! grace period ([`crate::PostgresOptions::trash_grace`]) has passed, so that a push that
//! read it just before it was thrown away has landed and been deleted too.
//!
//! The same task gives the TTL, once the same grace period has passed, to the items that
//! pushes racing a queue's gain of a TTL left without it (`catch_up_ttl`, see `v3.sql`).

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{Notify, watch};

use crate::PostgresBackend;

/// Rows deleted per transaction.
const BATCH: i32 = 5_000;

/// Wakes the backend's cleaner.
pub(crate) fn wake(backend: &PostgresBackend) {
    backend.inner.trash_wake.notify_one();
}

/// What the cleaner runs: the statements listing and emptying the trash, and the grace.
pub(crate) struct Cleaner {
    pub(crate) pool: Pool,
    pub(crate) list: String,
    pub(crate) empty_one: String,
    pub(crate) catch_up_ttl: String,
    pub(crate) grace: Duration,
    pub(crate) wake: Arc<Notify>,
}

/// Empties the trash whenever woken (and at start, for what an earlier process left), and
/// again while generations wait out their grace period, until `stop` closes.
pub(crate) async fn clean(cleaner: Cleaner, mut stop: watch::Receiver<()>) {
    loop {
        let waiting = match empty(&cleaner).await {
            Ok(left) => left,
            Err(e) => {
                tracing::warn!(error = %e, "could not delete the rows of a reset or deleted queue, or catch up a TTL, yet");
                true
            }
        };
        let recheck = if waiting {
            cleaner
                .grace
                .clamp(Duration::from_millis(50), Duration::from_secs(10))
        } else {
            Duration::MAX
        };
        tokio::select! {
            () = cleaner.wake.notified() => {}
            () = sleep(recheck) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn sleep(d: Duration) {
    if d == Duration::MAX {
        std::future::pending::<()>().await;
    } else {
        tokio::time::sleep(d).await;
    }
}

/// Empties every generation in the trash and catches up the TTL gains past their grace
/// period; whether any generation or gain is still waiting out its grace period.
async fn empty(cleaner: &Cleaner) -> Result<bool, String> {
    let conn = cleaner.pool.get().await.map_err(|e| e.to_string())?;
    let grace = i64::try_from(cleaner.grace.as_millis()).unwrap_or(i64::MAX);
    let gens: Vec<i64> = conn
        .query(&cleaner.list, &[])
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for generation in &gens {
        loop {
            let deleted: i64 = conn
                .query_one(&cleaner.empty_one, &[generation, &BATCH, &grace])
                .await
                .map_err(|e| e.to_string())?
                .get(0);
            if deleted == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    let gains_waiting: bool = conn
        .query_one(&cleaner.catch_up_ttl, &[&grace])
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    if gens.is_empty() {
        return Ok(gains_waiting);
    }
    let left = conn
        .query(&cleaner.list, &[])
        .await
        .map_err(|e| e.to_string())?;
    Ok(gains_waiting || !left.is_empty())
}
