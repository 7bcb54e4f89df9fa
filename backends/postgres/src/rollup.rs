//! Rolling the count changes up into the counter rows (schema version 7).
//!
//! A push counts its items by appending a row to `count_changes`, a table without indexes:
//! no lookup, no row to update, which is most of what the upsert of a counter row cost a
//! push (see `v7.sql`). A count sums the counter rows and those changes in one snapshot,
//! so it is exact at every moment. This task keeps the changes few: every [`EVERY`] while
//! this process pushes (every [`IDLE_EVERY`] otherwise, for other processes' changes), one
//! statement moves them all into this session's counter rows, unless another process is
//! doing it at that moment; and every [`VACUUM_EVERY`] after it moved some, it vacuums the
//! table, so that the space of the rows it moved is used again. A count then reads a few
//! seconds of pushes' rows at most, however many items the queue holds. The table is made
//! with `vacuum_truncate` off, so that those vacuums take no exclusive lock; at most every
//! [`TRUNCATE_EVERY`] one of them also gives back the table's empty tail (`TRUNCATE`: the
//! server takes that lock only if no one waits, and lets go as soon as someone does), so
//! that a table grown while rows could not be freed (a snapshot held open) shrinks again.
//!
//! Nothing is rolled up while a snapshot is held open (see `held`): a moved row could not
//! be freed until the snapshot ends, and a count would read every one. The backend's own
//! pushes count with the upsert meanwhile, on the counter shards of epochs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::snapshots::Seen;

/// How often changes are rolled up while this process pushes.
pub(crate) const EVERY: Duration = Duration::from_millis(200);
/// How often they are rolled up otherwise (other processes' changes, the SQL functions').
pub(crate) const IDLE_EVERY: Duration = Duration::from_secs(2);
/// How often the table is vacuumed after changes were moved.
pub(crate) const VACUUM_EVERY: Duration = Duration::from_secs(2);
/// How often one of those vacuums also truncates the table's empty tail.
pub(crate) const TRUNCATE_EVERY: Duration = Duration::from_mins(1);

/// Whether this process appended count changes since the last roll-up.
#[derive(Clone, Debug, Default)]
pub(crate) struct Pushed(Arc<AtomicBool>);

impl Pushed {
    pub(crate) fn mark(&self) {
        // A load first: a push that finds the flag set writes nothing (no cache line moves
        // between the producers' cores).
        if !self.0.load(Ordering::Relaxed) {
            self.0.store(true, Ordering::Relaxed);
        }
    }

    fn take(&self) -> bool {
        self.0.swap(false, Ordering::Relaxed)
    }
}

/// What the task needs.
pub(crate) struct Roller {
    pub(crate) pool: Pool,
    /// The statement that moves the changes (`ROLL_UP` in `sql`).
    pub(crate) statement: String,
    pub(crate) vacuum: String,
    /// The same vacuum, with `TRUNCATE`.
    pub(crate) vacuum_truncate: String,
    pub(crate) pushed: Pushed,
    pub(crate) seen: Seen,
}

/// Rolls the changes up and vacuums their table, as the module docs say, until `stop`
/// closes.
pub(crate) async fn run(r: Roller, mut stop: watch::Receiver<()>) {
    let mut last_roll_up = Instant::now();
    let mut last_vacuum = Instant::now();
    let mut last_truncate = Instant::now();
    let mut moved_since_vacuum = 0;
    loop {
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            _ = stop.changed() => return,
        }
        if r.seen.held() || !(r.pushed.take() || last_roll_up.elapsed() >= IDLE_EVERY) {
            continue;
        }
        last_roll_up = Instant::now();
        match roll_up(&r.pool, &r.statement).await {
            Ok(moved) => moved_since_vacuum += moved,
            Err(e) => tracing::debug!(error = %e, "could not roll the count changes up"),
        }
        if moved_since_vacuum > 0 && last_vacuum.elapsed() >= VACUUM_EVERY {
            last_vacuum = Instant::now();
            moved_since_vacuum = 0;
            let vacuum = if last_truncate.elapsed() >= TRUNCATE_EVERY {
                last_truncate = Instant::now();
                &r.vacuum_truncate
            } else {
                &r.vacuum
            };
            // A role that does not own the table only gets a warning from the server;
            // autovacuum (set to run after a thousand changes) does it then.
            if let Err(e) = execute(&r.pool, vacuum).await {
                tracing::debug!(error = %e, "could not vacuum the count changes");
            }
        }
    }
}

/// Moves every count change into this session's counter rows, if no other process is
/// doing it; how many it moved.
pub(crate) async fn roll_up(pool: &Pool, statement: &str) -> Result<i64, String> {
    let conn = pool.get().await.map_err(|e| e.to_string())?;
    conn.query_one(statement, &[])
        .await
        .map(|row| row.get(0))
        .map_err(|e| crate::ServerError::from(e).to_string())
}

pub(crate) async fn execute(pool: &Pool, statement: &str) -> Result<(), String> {
    let conn = pool.get().await.map_err(|e| e.to_string())?;
    conn.batch_execute(statement)
        .await
        .map_err(|e| crate::ServerError::from(e).to_string())
}
