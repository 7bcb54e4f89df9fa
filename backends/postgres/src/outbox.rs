//! The outbox in the application's transaction: push items and fire events on a
//! transaction the application opened, so that they commit or roll back with its own
//! writes. Nothing is visible to any consumer until the transaction commits.

use hookspool::{Key, Limits, NewItem, QueueId, Result};
use tokio_postgres::Transaction;

use crate::PostgresBackend;
use crate::error::map;
use crate::rows::ms;

impl PostgresBackend {
    /// Pushes `items` to `queue` inside the application's transaction `tx` (opened on any
    /// connection to the same database, for example one from
    /// [`PostgresBackend::connection`]). Checked as [`hookspool::Store::push_batch`] checks
    /// them, with the default [`Limits`]. Returns their keys; the items become visible, and
    /// the delivery loops of every process wake, when `tx` commits. A rollback leaves
    /// nothing behind but a gap in the keys.
    ///
    /// # Errors
    /// [`hookspool::Error::QueueNotFound`]; the limits' errors; [`hookspool::Error::Backend`] for the server's.
    pub async fn push_in(
        &self,
        tx: &Transaction<'_>,
        queue: &QueueId,
        items: Vec<NewItem>,
    ) -> Result<Vec<Key>> {
        Limits::default().check_items(&items)?;
        let now = hookspool::Timestamp::now();
        let (payloads, metadata, not_before) = crate::backend::push_columns(&items);
        let sql = &self.inner.sql;
        let row = tx
            .query_one(
                &sql.push_locked,
                &[&queue.as_str(), &payloads, &metadata, &not_before, &ms(now)],
            )
            .await
            .map_err(|e| map(e, Some(queue)))?;
        let Some(keys) = row.get::<_, Option<Vec<i64>>>(0) else {
            return Err(hookspool::Error::QueueNotFound(queue.clone()));
        };
        self.notify_in(tx, queue.as_str()).await?;
        self.inner.pushed.mark();
        Ok(keys
            .into_iter()
            .map(|k| u64::try_from(k).unwrap_or(0))
            .collect())
    }

    /// Fires `event` inside the application's transaction `tx`, through the schema's
    /// `fire` function: one delivery per enabled subscription that wants it (exact name,
    /// `prefix.*` or `*`; only `owner`'s subscriptions when given), exactly as
    /// `Hooks::fire` matches them. Returns the delivery ids (`msg_…`), which exist once
    /// `tx` commits. The webhook queues must exist (`hookspool serve` or `Hooks::open` ran
    /// on this schema once).
    ///
    /// # Errors
    /// [`hookspool::Error::InvalidInput`] for a bad event name, owner or payload;
    /// [`hookspool::Error::QueueNotFound`] when the webhook queues do not exist yet;
    /// [`hookspool::Error::Backend`] for the server's.
    pub async fn fire_in(
        &self,
        tx: &Transaction<'_>,
        event: &str,
        payload: &serde_json::Value,
        owner: Option<&str>,
    ) -> Result<Vec<String>> {
        let deliveries = QueueId::new("hookspool.deliveries")?;
        let row = tx
            .query_one(&self.inner.sql.fire, &[&event, payload, &owner])
            .await
            .map_err(|e| map(e, Some(&deliveries)))?;
        Ok(row.get(0))
    }

    /// Queues a wake-up of every process for when `tx` commits.
    async fn notify_in(&self, tx: &Transaction<'_>, queue: &str) -> Result<()> {
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&self.inner.schema, &format!("sql|{queue}")],
        )
        .await
        .map_err(|e| map(e, None))?;
        Ok(())
    }
}
