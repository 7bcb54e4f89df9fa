//! [`PostgresBackend`]: the `Backend` trait over a connection pool, one statement (or one
//! short transaction) per call.

use std::collections::BTreeMap;
use std::sync::Arc;

use deadpool_postgres::{Object, Pool};
use hookspool::{
    Backend, Capabilities, Claim, Error, Gauge, Item, Key, NewItem, Phase, PhaseCounts,
    QueueConfig, QueueId, Result, Selector, SweepReport, Timestamp, Transition,
};
use tokio::sync::broadcast;
use tokio_postgres::types::{Json, ToSql};

use crate::error;
use crate::held;
use crate::notify::Notices;
use crate::rows::{self, ms};
use crate::sql::Sql;

/// How often a call that hit a deadlock or serialization failure is tried again (each try
/// is one whole transaction, rolled back by the server when it failed).
const TRIES: usize = 5;

/// Runs `$body` (an async block's body, on `$conn`, a pooled connection) again, up to
/// [`TRIES`] times, when the server aborted it for a deadlock or a serialization failure.
macro_rules! run {
    ($self:expr, $queue:expr, $conn:ident, $body:block) => {{
        #[allow(unused_mut)] // only a transaction needs it mutable
        let mut $conn = $self.connection().await?;
        let mut tries = 0;
        loop {
            tries += 1;
            let result: std::result::Result<_, $crate::backend::Failure> = async { $body }.await;
            match result {
                Ok(v) => break Ok(v),
                Err($crate::backend::Failure::Sql(e))
                    if tries < $crate::backend::TRIES && $crate::error::is_transient(&e) => {
                    tracing::debug!(error = %e, "retrying a transaction the server aborted");
                }
                Err($crate::backend::Failure::Sql(e)) => break Err($crate::error::map(e, $queue)),
                Err($crate::backend::Failure::Engine(e)) => break Err(e),
            }
        }
    }};
}

mod claims;
mod settle;

/// A [`Backend`] on PostgreSQL: any number of processes, on any number of machines, share
/// its queues. See the crate docs for the schema, the guarantees and the outbox.
#[derive(Clone)]
pub struct PostgresBackend {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) pool: Pool,
    /// Connections that hold a name's transaction open while its write runs (see `once`).
    pub(crate) once_pool: Pool,
    pub(crate) sql: Sql,
    pub(crate) schema: String,
    /// Where the server is (no password), for messages.
    pub(crate) target: String,
    pub(crate) notices: Notices,
    /// Small pushes waiting to be combined (see `combine`).
    pub(crate) lanes: crate::lane::Lanes<crate::combine::Pushes>,
    /// Claims waiting to share a statement (see `gather`).
    pub(crate) gathering: crate::lane::Lanes<crate::gather::Claims>,
    /// Where this process's claimed items are, for their batched acks (see `addresses`).
    pub(crate) addresses: crate::addresses::Addresses,
    pub(crate) changes: broadcast::Sender<QueueId>,
    /// Wakes the task that deletes thrown-away generations.
    pub(crate) trash_wake: Arc<tokio::sync::Notify>,
    /// How old the oldest snapshot on the server was at the last look (see `snapshots`);
    /// `None` before the first look, or when the backend does not look.
    pub(crate) oldest_snapshot: crate::snapshots::Seen,
    /// Where claims and retention's prunes start while a snapshot is held open (see
    /// `held`).
    pub(crate) claims_from: held::Claims,
    pub(crate) prunes_from: held::Prunes,
    /// The counter shards of the pool's sessions meanwhile.
    pub(crate) counter_shards: Arc<held::CounterShards<deadpool_postgres::ObjectId>>,
    /// Set by pushes that appended count changes (see `rollup`).
    pub(crate) pushed: crate::rollup::Pushed,
    /// Dropped with the backend: its background tasks see the channel close and stop.
    pub(crate) _stop: tokio::sync::watch::Sender<()>,
}

impl std::fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("target", &self.inner.target)
            .field("schema", &self.inner.schema)
            .finish_non_exhaustive()
    }
}

impl PostgresBackend {
    /// The schema that holds the tables and functions.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// The server and database (without the password).
    pub fn target(&self) -> &str {
        &self.inner.target
    }

    /// A connection from the pool, for the application's own work (for example a transaction
    /// to push in with [`PostgresBackend::push_in`]).
    ///
    /// # Errors
    /// [`Error::Backend`] when no connection can be had.
    pub async fn connection(&self) -> Result<Object> {
        let conn = self.inner.pool.get().await.map_err(error::pool)?;
        // While a snapshot is held open, sessions change counter shards every period (see
        // `held::CounterShards`): one statement, only when this one's is due.
        let seen = &self.inner.oldest_snapshot;
        let session = Object::id(&conn);
        let shards = &self.inner.counter_shards;
        if let Some(epoch) = shards.due(&session, seen.held(), seen.full_claim_every()) {
            let stmt = conn
                .prepare_cached(&self.inner.sql.held.move_shard)
                .await
                .map_err(|e| error::map(e, None))?;
            conn.execute(&stmt, &[&epoch])
                .await
                .map_err(|e| error::map(e, None))?;
            shards.moved(session, epoch);
        }
        Ok(conn)
    }

    /// One push statement for `items` (the leaner one for a single item), committed.
    pub(crate) async fn push_rows(
        &self,
        queue: &QueueId,
        items: &[NewItem],
        now: Timestamp,
    ) -> Result<Vec<Key>> {
        let sql = &self.inner.sql;
        // While a snapshot is held open, pushes count with the upsert (see `rollup`).
        let held = self.inner.oldest_snapshot.held();
        let (push, push_one) = if held {
            (&sql.held.push, &sql.held.push_one)
        } else {
            (&sql.push, &sql.push_one)
        };
        let keys = if let [item] = items {
            let metadata = Json(&item.metadata);
            let not_before = item.not_before.map(ms);
            run!(self, Some(queue), conn, {
                let stmt = conn.prepare_cached(push_one).await?;
                let row = conn
                    .query_opt(
                        &stmt,
                        &[
                            &queue.as_str(),
                            &item.payload,
                            &metadata,
                            &not_before,
                            &ms(now),
                        ],
                    )
                    .await?;
                match row {
                    Some(row) => Ok(vec![row.get::<_, i64>(0)]),
                    None => Err(Failure::Engine(Error::QueueNotFound(queue.clone()))),
                }
            })?
        } else {
            let (payloads, metadata, not_before) = push_columns(items);
            run!(self, Some(queue), conn, {
                let stmt = conn.prepare_cached(push).await?;
                let row = conn
                    .query_one(
                        &stmt,
                        &[&queue.as_str(), &payloads, &metadata, &not_before, &ms(now)],
                    )
                    .await?;
                match row.get::<_, Option<Vec<i64>>>(0) {
                    // In batch order: the statement drew them from the sequence in that
                    // order, and returns them in none (see `sql::push`).
                    Some(mut keys) => {
                        keys.sort_unstable();
                        Ok(keys)
                    }
                    None => Err(Failure::Engine(Error::QueueNotFound(queue.clone()))),
                }
            })?
        };
        if !held {
            self.inner.pushed.mark();
        }
        Ok(keys
            .into_iter()
            .map(|k| u64::try_from(k).unwrap_or(0))
            .collect())
    }

    /// Tells other processes that `queue` changed (coalesced, after the fact).
    fn announce(&self, queue: &QueueId) {
        self.inner.notices.add(queue);
    }

    /// Whether `queue` exists (asked only when a query found no rows, to tell an empty
    /// answer from a missing queue).
    async fn exists(
        conn: &Object,
        sql: &Sql,
        queue: &QueueId,
    ) -> std::result::Result<bool, Failure> {
        let stmt = conn.prepare_cached(&sql.queue_exists).await?;
        Ok(conn.query_opt(&stmt, &[&queue.as_str()]).await?.is_some())
    }

    /// `fetch` (or, with `pop`, `pop`) of the selected items: one statement, and a second
    /// only when it found nothing, to tell an empty answer from a missing queue.
    async fn select(&self, queue: &QueueId, selector: &Selector, pop: bool) -> Result<Vec<Item>> {
        let sql = &self.inner.sql;
        let (text, params, reverse) = sql.select(selector, pop);
        run!(self, Some(queue), conn, {
            let stmt = conn.prepare_cached(text).await?;
            let name = queue.as_str();
            let mut all: Vec<&(dyn ToSql + Sync)> = vec![&name];
            all.extend(params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)));
            let rows = conn.query(&stmt, &all).await?;
            if rows.is_empty() && !Self::exists(&conn, sql, queue).await? {
                return Err(Failure::Engine(Error::QueueNotFound(queue.clone())));
            }
            let items = rows.iter().map(rows::item).collect::<Result<Vec<_>>>()?;
            Ok(sorted_by_key(items, reverse))
        })
    }
}

/// Payloads, metadata and not-before times, as arrays; no array of metadata when no item
/// has any, and none of not-before times when every item is due at once (the statement
/// reads a missing array as NULL for every item).
pub(crate) type PushColumns<'a> = (
    Vec<&'a [u8]>,
    Option<Vec<Json<&'a BTreeMap<String, String>>>>,
    Option<Vec<Option<i64>>>,
);

/// A batch to push as the push statement's array parameters: payloads, metadata and
/// not-before times. The two last are left out when they say nothing (see [`PushColumns`]):
/// the server then neither receives nor parses 1024 empty JSON objects for a batch.
pub(crate) fn push_columns(items: &[NewItem]) -> PushColumns<'_> {
    let payloads = items.iter().map(|i| i.payload.as_slice()).collect();
    let metadata = items
        .iter()
        .any(|i| !i.metadata.is_empty())
        .then(|| items.iter().map(|i| Json(&i.metadata)).collect());
    let not_before = items
        .iter()
        .any(|i| i.not_before.is_some())
        .then(|| items.iter().map(|i| i.not_before.map(ms)).collect());
    (payloads, metadata, not_before)
}

/// Why a call's body failed: a server error (maybe worth another try) or the engine's own.
pub(crate) enum Failure {
    Sql(tokio_postgres::Error),
    Engine(Error),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::Sql(e)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Engine(e)
    }
}

fn sorted_by_key(mut items: Vec<Item>, reverse: bool) -> Vec<Item> {
    items.sort_by_key(|i| i.key);
    if reverse {
        items.reverse();
    }
    items
}

impl Backend for PostgresBackend {
    fn capabilities(&self) -> Capabilities {
        Capabilities::SHARED_SEQUENCED
    }

    fn changes(&self) -> Option<broadcast::Receiver<QueueId>> {
        Some(self.inner.changes.subscribe())
    }

    /// The pool's connections, and the age of the oldest snapshot at the last look (when
    /// the backend looks: [`crate::PostgresOptions::snapshot_warning`]).
    #[allow(clippy::cast_precision_loss)] // connection counts are small
    fn gauges(&self) -> Vec<Gauge> {
        let pool = self.inner.pool.status();
        let mut gauges = vec![
            Gauge::new(
                "hookspool_postgres_connections",
                "Connections of the backend's pool, open and of those idle.",
                pool.size as f64,
            )
            .label("state", "open"),
            Gauge::new(
                "hookspool_postgres_connections",
                "Connections of the backend's pool, open and of those idle.",
                pool.available as f64,
            )
            .label("state", "idle"),
            Gauge::new(
                "hookspool_postgres_connections_max",
                "The most connections the backend's pool opens.",
                pool.max_size as f64,
            ),
            Gauge::new(
                "hookspool_postgres_connection_waiters",
                "Calls waiting for a connection of the backend's pool.",
                pool.waiting as f64,
            ),
        ];
        if let Some(age) = self.inner.oldest_snapshot.get() {
            gauges.push(Gauge::new(
                "hookspool_postgres_oldest_snapshot_seconds",
                "How long the oldest snapshot held by another session of the database had \
                 been open at the backend's last look (0: none). Vacuum frees nothing that \
                 died after it was taken.",
                age.as_secs_f64(),
            ));
            let positioned = if self.inner.oldest_snapshot.held() {
                self.inner.claims_from.positioned()
            } else {
                0
            };
            gauges.push(Gauge::new(
                "hookspool_postgres_claims_from_position",
                "Queues whose claims on this node start where its last claim ended, because \
                 a snapshot is held open (with a full claim at least every second; 0: every \
                 claim reads the due index from its start).",
                positioned as f64,
            ));
        }
        gauges
    }

    async fn create_queue(&self, config: QueueConfig) -> Result<()> {
        let sql = &self.inner.sql;
        run!(self, Some(&config.id), conn, {
            let stmt = conn.prepare_cached(&sql.create_queue).await?;
            conn.execute(
                &stmt,
                &[
                    &config.id.as_str(),
                    &rows::ttl_ms(config.ttl),
                    &rows::retention(config.retention),
                    &ms(config.created_at),
                    &Json(config.stored_metadata()),
                ],
            )
            .await?;
            Ok(())
        })?;
        self.announce(&config.id);
        Ok(())
    }

    async fn update_queue(&self, config: QueueConfig) -> Result<()> {
        let sql = &self.inner.sql;
        let found = run!(self, Some(&config.id), conn, {
            let stmt = conn.prepare_cached(&sql.update_queue).await?;
            Ok(conn
                .query_one(
                    &stmt,
                    &[
                        &config.id.as_str(),
                        &rows::ttl_ms(config.ttl),
                        &rows::retention(config.retention),
                        &Json(config.stored_metadata()),
                    ],
                )
                .await?
                .get::<_, bool>(0))
        })?;
        if !found {
            return Err(Error::QueueNotFound(config.id));
        }
        if config.ttl.is_some() {
            // A queue that just gained its TTL waits for the cleaner to catch up the pushes
            // that raced the change.
            crate::trash::wake(self);
        }
        self.announce(&config.id);
        Ok(())
    }

    async fn get_queue(&self, id: &QueueId) -> Result<Option<QueueConfig>> {
        let sql = &self.inner.sql;
        run!(self, Some(id), conn, {
            let stmt = conn.prepare_cached(&sql.get_queue).await?;
            let row = conn.query_opt(&stmt, &[&id.as_str()]).await?;
            Ok(row.as_ref().map(rows::queue).transpose()?)
        })
    }

    async fn list_queues(&self) -> Result<Vec<QueueConfig>> {
        let sql = &self.inner.sql;
        run!(self, None, conn, {
            let stmt = conn.prepare_cached(&sql.list_queues).await?;
            let rows = conn.query(&stmt, &[]).await?;
            Ok(rows.iter().map(rows::queue).collect::<Result<Vec<_>>>()?)
        })
    }

    async fn delete_queue(&self, id: &QueueId) -> Result<bool> {
        let sql = &self.inner.sql;
        let deleted = run!(self, Some(id), conn, {
            let stmt = conn.prepare_cached(&sql.delete_queue).await?;
            Ok(conn
                .query_one(&stmt, &[&id.as_str()])
                .await?
                .get::<_, bool>(0))
        })?;
        if deleted {
            self.announce(id);
            crate::trash::wake(self);
        }
        Ok(deleted)
    }

    async fn push(&self, queue: &QueueId, items: Vec<NewItem>, now: Timestamp) -> Result<Vec<Key>> {
        let keys = if items.is_empty() || items.len() > crate::combine::MAX_COMBINED {
            self.push_rows(queue, &items, now).await?
        } else {
            self.push_combined(queue, items, now).await?
        };
        self.announce(queue);
        Ok(keys)
    }

    async fn fetch(&self, queue: &QueueId, selector: &Selector) -> Result<Vec<Item>> {
        self.select(queue, selector, false).await
    }

    async fn pop(&self, queue: &QueueId, selector: &Selector) -> Result<Vec<Item>> {
        let items = self.select(queue, selector, true).await?;
        if !items.is_empty() {
            self.announce(queue);
        }
        Ok(items)
    }

    async fn count(&self, queue: &QueueId) -> Result<PhaseCounts> {
        let sql = &self.inner.sql;
        run!(self, Some(queue), conn, {
            let stmt = conn.prepare_cached(&sql.count).await?;
            let rows = conn.query(&stmt, &[&queue.as_str()]).await?;
            if rows.is_empty() {
                return Err(Failure::Engine(Error::QueueNotFound(queue.clone())));
            }
            let mut counts = PhaseCounts::default();
            for row in rows {
                let (Some(phase), Some(n)) = (
                    row.get::<_, Option<String>>(0),
                    row.get::<_, Option<i64>>(1),
                ) else {
                    continue;
                };
                if n > 0 {
                    let phase = hookspool::Phase::new(phase)
                        .map_err(|e| Error::corrupted(format!("a counter row: {e}")))?;
                    counts.add(&phase, u64::try_from(n).unwrap_or(0));
                }
            }
            Ok(counts)
        })
    }

    async fn reset(&self, queue: &QueueId) -> Result<u64> {
        let sql = &self.inner.sql;
        let removed = run!(self, Some(queue), conn, {
            let stmt = conn.prepare_cached(&sql.reset).await?;
            Ok(conn
                .query_one(&stmt, &[&queue.as_str()])
                .await?
                .get::<_, i64>(0))
        })?;
        self.announce(queue);
        crate::trash::wake(self);
        Ok(u64::try_from(removed).unwrap_or(0))
    }

    async fn update(
        &self,
        queue: &QueueId,
        key: Key,
        transition: Transition,
        now: Timestamp,
    ) -> Result<Item> {
        let mut results = self
            .settle(queue, vec![(key, transition)], now, true)
            .await?;
        results
            .pop()
            .unwrap_or_else(|| Err(Error::internal("a settle of one item returned no result")))
    }

    async fn update_many(
        &self,
        queue: &QueueId,
        updates: Vec<(Key, Transition)>,
        now: Timestamp,
    ) -> Result<Vec<Result<()>>> {
        if updates.is_empty() {
            return match self.get_queue(queue).await? {
                Some(_) => Ok(Vec::new()),
                None => Err(Error::QueueNotFound(queue.clone())),
            };
        }
        if let Some(owner) = settle::one_owner(&updates) {
            return self.settle_leased(queue, owner, updates, now).await;
        }
        let results = self.settle(queue, updates, now, false).await?;
        Ok(results.into_iter().map(|r| r.map(drop)).collect())
    }

    async fn claim(&self, queue: &QueueId, claim: Claim, now: Timestamp) -> Result<Vec<Item>> {
        if claim.owner.contains('\0') {
            return Err(Error::invalid(
                "a consumer name must not contain NUL characters",
            ));
        }
        let seen = &self.inner.oldest_snapshot;
        let plan = self
            .inner
            .claims_from
            .plan(queue, seen.held(), seen.full_claim_every());
        let limit = claim.limit;
        let items = match plan {
            held::Plan::Full => self.claim_gathered(queue, claim, now).await?,
            held::Plan::After(p) => self.claim_after(queue, &claim, now, p).await?,
        };
        self.inner
            .claims_from
            .advance(queue, held::claimed_up_to(&items, limit, ms(now)));
        Ok(items)
    }

    async fn sweep(&self, queue: &QueueId, now: Timestamp) -> Result<SweepReport> {
        let sql = &self.inner.sql;
        run!(self, Some(queue), conn, {
            let stmt = conn.prepare_cached(&sql.sweep).await?;
            let row = conn.query_one(&stmt, &[&queue.as_str(), &ms(now)]).await?;
            Ok(SweepReport {
                released: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
                expired: u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
            })
        })
    }

    async fn prune(
        &self,
        queue: &QueueId,
        phase: &Phase,
        before: Timestamp,
        limit: usize,
    ) -> Result<u64> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = &self.inner.sql;
        let seen = &self.inner.oldest_snapshot;
        let step = (queue.clone(), phase.clone());
        // A full step starts before every key; while a snapshot is held, the others start
        // where the last one ended (and every step says where it ended).
        let after = match self
            .inner
            .prunes_from
            .plan(&step, seen.held(), seen.full_prune_every())
        {
            held::Plan::Full => i64::MIN,
            held::Plan::After(key) => key,
        };
        let (removed, last) = run!(self, Some(queue), conn, {
            let stmt = conn.prepare_cached(&sql.prune).await?;
            let row = conn
                .query_one(
                    &stmt,
                    &[
                        &queue.as_str(),
                        &phase.as_str(),
                        &ms(before),
                        &limit,
                        &after,
                    ],
                )
                .await?;
            let removed = row
                .get::<_, Option<i64>>(0)
                .ok_or_else(|| Failure::Engine(Error::QueueNotFound(queue.clone())))?;
            Ok((removed, row.get::<_, Option<i64>>(1)))
        })?;
        self.inner.prunes_from.advance(&step, last);
        Ok(u64::try_from(removed).unwrap_or(0))
    }

    async fn once<F, Fut, E>(
        &self,
        space: &str,
        name: &str,
        ttl: std::time::Duration,
        now: Timestamp,
        write: F,
    ) -> Option<std::result::Result<(Vec<u8>, bool), E>>
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = std::result::Result<Vec<u8>, E>> + Send,
        E: From<Error> + Send,
    {
        Some(self.once_impl(space, name, ttl, now, write).await)
    }

    async fn sync(&self) -> Result<()> {
        // Every call commits with `synchronous_commit = on` before it returns.
        Ok(())
    }
}
