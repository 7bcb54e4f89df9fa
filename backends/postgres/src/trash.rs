//! Deleting what `reset` and `delete_queue` threw away: their generations' rows go in
//! batches of [`BATCH`], each its own short transaction, in the background, so that neither
//! call holds locks for the time a large queue takes to delete. Rows of a thrown-away
//! generation are invisible to every call from the moment it commits.

use deadpool_postgres::Pool;
use std::sync::Arc;
use tokio::sync::{Notify, watch};

use crate::PostgresBackend;

/// Rows deleted per transaction.
const BATCH: i32 = 5_000;

/// Wakes the backend's cleaner.
pub(crate) fn wake(backend: &PostgresBackend) {
    backend.inner.trash_wake.notify_one();
}

/// Empties the trash whenever woken (and once at start, for what an earlier process left),
/// until `stop` closes.
pub(crate) async fn clean(
    pool: Pool,
    sql: Arc<(String, String)>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<()>,
) {
    loop {
        if let Err(e) = empty(&pool, &sql).await {
            tracing::warn!(error = %e, "could not delete the rows of a reset or deleted queue yet");
        }
        tokio::select! {
            () = wake.notified() => {}
            _ = stop.changed() => return,
        }
    }
}

async fn empty(pool: &Pool, sql: &(String, String)) -> Result<(), String> {
    let (list, empty_one) = sql;
    let conn = pool.get().await.map_err(|e| e.to_string())?;
    let gens: Vec<i64> = conn
        .query(list, &[])
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for generation in gens {
        loop {
            let deleted: i64 = conn
                .query_one(empty_one, &[&generation, &BATCH])
                .await
                .map_err(|e| e.to_string())?
                .get(0);
            if deleted == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    Ok(())
}
