//! [`hookspool::Backend::once`] on PostgreSQL: the `names` table's primary key decides who
//! writes a name first, across every process.
//!
//! The first caller inserts the name (with an empty value) and keeps its transaction open
//! while `write` runs, so that everyone else's insert of the same name waits on the row;
//! then it stores the value and commits. A waiter then finds the row and returns its value.
//! If `write` fails, or the process dies, the transaction rolls back and leaves nothing: the
//! next caller writes. The open transaction uses a connection of a pool of its own, so that
//! `write` (which pushes through the main pool) can never wait for a connection held by a
//! caller that waits for `write`.

use std::time::Duration;

use hookspool::{Error, Timestamp};

use crate::PostgresBackend;
use crate::error::{self, map};
use crate::rows::ms;

/// Expired names deleted per call, at most (the cost stays proportional to what expires).
const EXPIRE_BATCH: i64 = 1_000;

impl PostgresBackend {
    pub(crate) async fn once_impl<F, Fut, E>(
        &self,
        space: &str,
        name: &str,
        ttl: Duration,
        now: Timestamp,
        write: F,
    ) -> Result<(Vec<u8>, bool), E>
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<Vec<u8>, E>> + Send,
        E: From<Error> + Send,
    {
        let sql = &self.inner.sql;
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let now_ms = ms(now);
        let db = |e: tokio_postgres::Error| E::from(map(e, None));
        let mut conn = self
            .inner
            .once_pool
            .get()
            .await
            .map_err(|e| E::from(error::pool(e)))?;
        let tx = conn.transaction().await.map_err(db)?;
        let inserted = tx
            .query_opt(&sql.names.insert, &[&space, &name, &now_ms])
            .await
            .map_err(db)?
            .is_some();
        if !inserted {
            // Someone wrote it (we waited for their commit): ours if it expired since.
            let row = tx
                .query_opt(&sql.names.lock, &[&space, &name])
                .await
                .map_err(db)?;
            match row {
                Some(row) => {
                    let created: i64 = row.get(1);
                    if created.saturating_add(ttl_ms) > now_ms {
                        tx.commit().await.map_err(db)?;
                        return Ok((row.get(0), true));
                    }
                    tx.execute(&sql.names.renew, &[&space, &name, &now_ms])
                        .await
                        .map_err(db)?;
                }
                None => {
                    // Deleted (expired) between our insert and our read: insert again.
                    tx.execute(&sql.names.insert, &[&space, &name, &now_ms])
                        .await
                        .map_err(db)?;
                }
            }
        }
        let value = write().await?;
        tx.execute(&sql.names.store, &[&space, &name, &value])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        // Best effort: forget names that expired, oldest first, a batch at a time.
        if let Err(e) = conn
            .execute(
                &sql.names.expire,
                &[&space, &now_ms.saturating_sub(ttl_ms), &EXPIRE_BATCH],
            )
            .await
        {
            tracing::debug!(error = %e, "could not delete expired names yet");
        }
        Ok((value, false))
    }
}
