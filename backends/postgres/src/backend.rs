//! [`PostgresBackend`]: the `Backend` trait over a connection pool, one statement (or one
//! short transaction) per call.

use std::collections::BTreeMap;
use std::sync::Arc;

use deadpool_postgres::{Object, Pool};
use hookspool::{
    Action, Backend, Capabilities, Claim, Error, Item, Key, NewItem, Phase, PhaseCounts,
    QueueConfig, QueueId, Result, Selector, SweepReport, Timestamp, Transition, apply_move,
    check_expect,
};
use tokio::sync::broadcast;
use tokio_postgres::types::{Json, ToSql};

use crate::error::{self, is_transient, map};
use crate::notify::Notices;
use crate::rows::{self, key_param, ms};
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
            let result: std::result::Result<_, Failure> = async { $body }.await;
            match result {
                Ok(v) => break Ok(v),
                Err(Failure::Sql(e)) if tries < TRIES && is_transient(&e) => {
                    tracing::debug!(error = %e, "retrying a transaction the server aborted");
                }
                Err(Failure::Sql(e)) => break Err(map(e, $queue)),
                Err(Failure::Engine(e)) => break Err(e),
            }
        }
    }};
}

/// Plans the rest of a transaction's statements with the sizes of the moment, never with a
/// plan kept from earlier calls: a generic plan the server chose while a queue was small
/// finds rows by their generation alone, which reads the whole queue once it has grown (see
/// `v4.sql`). For the settle's statements, which look items up by key: a custom plan costs
/// them nothing the server did not already spend, since it planned them afresh at every call
/// once their table was analyzed.
const CUSTOM_PLANS: &str = "SET LOCAL plan_cache_mode = force_custom_plan";

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
    pub(crate) lanes: crate::combine::Lanes,
    pub(crate) changes: broadcast::Sender<QueueId>,
    /// Wakes the task that deletes thrown-away generations.
    pub(crate) trash_wake: Arc<tokio::sync::Notify>,
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
        self.inner.pool.get().await.map_err(error::pool)
    }

    /// One push statement for `items` (the leaner one for a single item), committed.
    pub(crate) async fn push_rows(
        &self,
        queue: &QueueId,
        items: &[NewItem],
        now: Timestamp,
    ) -> Result<Vec<Key>> {
        let sql = &self.inner.sql;
        let keys = if let [item] = items {
            let metadata = Json(&item.metadata);
            let not_before = item.not_before.map(ms);
            run!(self, Some(queue), conn, {
                let stmt = conn.prepare_cached(&sql.push_one).await?;
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
                let stmt = conn.prepare_cached(&sql.push).await?;
                let row = conn
                    .query_one(
                        &stmt,
                        &[&queue.as_str(), &payloads, &metadata, &not_before, &ms(now)],
                    )
                    .await?;
                match row.get::<_, Option<Vec<i64>>>(0) {
                    Some(keys) => Ok(keys),
                    None => Err(Failure::Engine(Error::QueueNotFound(queue.clone()))),
                }
            })?
        };
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

    /// Reads, checks and applies `updates` in one transaction: the rows are locked in key
    /// order, the transitions applied in memory in the order given (each seeing those before
    /// it), and the results written with one `UPDATE` and one `DELETE`. With `payloads`, the
    /// items are read whole and returned as they are after their transition (as they were,
    /// for a removal).
    async fn settle(
        &self,
        queue: &QueueId,
        updates: Vec<(Key, Transition)>,
        now: Timestamp,
        payloads: bool,
    ) -> Result<Vec<Result<Item>>> {
        let mut keys = Vec::with_capacity(updates.len());
        for (key, _) in &updates {
            keys.push(key_param(*key));
        }
        keys.sort_unstable();
        keys.dedup();
        let sql = &self.inner.sql;
        let results = run!(self, Some(queue), conn, {
            let tx = conn.transaction().await?;
            let select = if payloads {
                &sql.lock_items
            } else {
                &sql.lock_states
            };
            let stmt = tx.prepare_cached(select).await?;
            // Sent ahead of the first statement (requests go out in the order they are first
            // polled), in the same round trip.
            let ((), rows) = futures_util::future::try_join(
                tx.batch_execute(CUSTOM_PLANS),
                tx.query(&stmt, &[&queue.as_str(), &keys]),
            )
            .await?;
            let Some(generation) = rows.first().map(|r| r.get::<_, i64>("gen")) else {
                let stmt = tx.prepare_cached(&sql.queue_exists).await?;
                if tx.query_opt(&stmt, &[&queue.as_str()]).await?.is_none() {
                    return Err(Failure::Engine(Error::QueueNotFound(queue.clone())));
                }
                let missing = updates
                    .iter()
                    .map(|(key, _)| {
                        Err(Error::ItemNotFound {
                            queue: queue.clone(),
                            key: *key,
                        })
                    })
                    .collect();
                return Ok(missing);
            };
            let mut items: BTreeMap<Key, Option<Item>> = BTreeMap::new();
            for row in &rows {
                let item = rows::item_with(row, payloads)?;
                items.insert(item.key, Some(item));
            }
            let mut changed = std::collections::BTreeSet::new();
            let mut counts = Deltas::default();
            let mut replaced = Replaced::default();
            let mut out = Vec::with_capacity(updates.len());
            for (key, transition) in &updates {
                let Some(Some(item)) = items.get_mut(key) else {
                    out.push(Err(Error::ItemNotFound {
                        queue: queue.clone(),
                        key: *key,
                    }));
                    continue;
                };
                if let Err(e) = check_expect(item, transition) {
                    out.push(Err(e));
                    continue;
                }
                counts.add(item.phase.as_str(), -1);
                match &transition.action {
                    Action::Remove => {
                        out.push(Ok(item.clone()));
                        items.insert(*key, None);
                        changed.insert(*key);
                    }
                    Action::Move(m) => {
                        if m.error.is_some() {
                            replaced.errors.insert(*key);
                        }
                        if m.metadata.is_some() {
                            replaced.metadata.insert(*key);
                        }
                        apply_move(item, m.clone(), now);
                        counts.add(item.phase.as_str(), 1);
                        out.push(Ok(item.clone()));
                        changed.insert(*key);
                    }
                }
            }
            write_back(
                &tx,
                sql,
                generation,
                changed.iter().map(|k| (*k, &items[k])),
                &replaced,
                counts,
            )
            .await?;
            tx.commit().await?;
            Ok(out)
        })?;
        if results.iter().any(Result::is_ok) {
            self.announce(queue);
        }
        Ok(results)
    }
}

/// The items whose error or metadata a transition of the batch replaced: only those are
/// written (a row keeps what no transition replaced, so settling never reads them).
#[derive(Default)]
struct Replaced {
    errors: std::collections::BTreeSet<Key>,
    metadata: std::collections::BTreeSet<Key>,
}

/// Payloads, metadata and not-before times, as arrays.
pub(crate) type PushColumns<'a> = (
    Vec<&'a [u8]>,
    Vec<Json<&'a BTreeMap<String, String>>>,
    Vec<Option<i64>>,
);

/// A batch to push as the push statement's array parameters: payloads, metadata and
/// not-before times.
pub(crate) fn push_columns(items: &[NewItem]) -> PushColumns<'_> {
    let mut payloads = Vec::with_capacity(items.len());
    let mut metadata = Vec::with_capacity(items.len());
    let mut not_before = Vec::with_capacity(items.len());
    for item in items {
        payloads.push(item.payload.as_slice());
        metadata.push(Json(&item.metadata));
        not_before.push(item.not_before.map(ms));
    }
    (payloads, metadata, not_before)
}

/// Count changes by phase, from a batch of transitions.
#[derive(Default)]
struct Deltas(BTreeMap<String, i64>);

impl Deltas {
    fn add(&mut self, phase: &str, n: i64) {
        *self.0.entry(phase.to_owned()).or_insert(0) += n;
    }
}

/// Writes the final state of every changed item and the count changes: one `UPDATE` for
/// the items that remain, one `DELETE` for those removed, one counter update, sent together.
async fn write_back<'a>(
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &Sql,
    generation: i64,
    changed: impl Iterator<Item = (Key, &'a Option<Item>)>,
    replaced: &Replaced,
    counts: Deltas,
) -> std::result::Result<(), Failure> {
    let mut removed: Vec<i64> = Vec::new();
    let mut cols = Columns::default();
    for (key, item) in changed {
        match item {
            None => removed.push(key_param(key)),
            Some(item) => cols.push(
                key_param(key),
                item,
                replaced.errors.contains(&key),
                replaced.metadata.contains(&key),
            ),
        }
    }
    let (phases, deltas): (Vec<String>, Vec<i64>) =
        counts.0.into_iter().filter(|(_, n)| *n != 0).unzip();
    // The three statements are independent: sent at once, they cost one round trip.
    let update = async {
        if !cols.keys.is_empty() {
            let stmt = tx.prepare_cached(&sql.write_items).await?;
            tx.execute(
                &stmt,
                &[
                    &generation,
                    &cols.keys,
                    &cols.phases,
                    &cols.attempts,
                    &cols.updated_at,
                    &cols.not_before,
                    &cols.owners,
                    &cols.until,
                    &cols.errors,
                    &cols.metadata,
                ],
            )
            .await?;
        }
        Ok::<_, tokio_postgres::Error>(())
    };
    let delete = async {
        if !removed.is_empty() {
            let stmt = tx.prepare_cached(&sql.delete_items).await?;
            tx.execute(&stmt, &[&generation, &removed]).await?;
        }
        Ok(())
    };
    let count = async {
        if !phases.is_empty() {
            let stmt = tx.prepare_cached(&sql.add_counts).await?;
            tx.execute(&stmt, &[&generation, &phases, &deltas]).await?;
        }
        Ok(())
    };
    futures_util::future::try_join3(update, delete, count).await?;
    Ok(())
}

/// The changed columns of several items, as arrays for one `UPDATE … FROM unnest(…)`.
#[derive(Default)]
struct Columns {
    keys: Vec<i64>,
    phases: Vec<String>,
    attempts: Vec<i32>,
    updated_at: Vec<i64>,
    not_before: Vec<i64>,
    owners: Vec<Option<String>>,
    until: Vec<Option<i64>>,
    errors: Vec<Option<String>>,
    metadata: Vec<Option<Json<BTreeMap<String, String>>>>,
}

impl Columns {
    /// One item's columns; its error and metadata only if `error` / `metadata` (else NULL:
    /// the row keeps its own).
    fn push(&mut self, key: i64, item: &Item, error: bool, metadata: bool) {
        self.keys.push(key);
        self.phases.push(item.phase.as_str().to_owned());
        self.attempts
            .push(i32::try_from(item.attempts).unwrap_or(i32::MAX));
        self.updated_at.push(ms(item.updated_at));
        self.not_before.push(ms(item.not_before));
        self.owners
            .push(item.lease.as_ref().map(|l| l.owner.clone()));
        self.until.push(item.lease.as_ref().map(|l| ms(l.until)));
        self.errors.push(
            item.last_error
                .as_deref()
                .filter(|_| error)
                .map(|e| rows::text(e).into_owned()),
        );
        self.metadata
            .push(metadata.then(|| Json(item.metadata.clone())));
    }
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
        let results = self.settle(queue, updates, now, false).await?;
        Ok(results.into_iter().map(|r| r.map(drop)).collect())
    }

    async fn claim(&self, queue: &QueueId, claim: Claim, now: Timestamp) -> Result<Vec<Item>> {
        if claim.owner.contains('\0') {
            return Err(Error::invalid(
                "a consumer name must not contain NUL characters",
            ));
        }
        let limit = i32::try_from(claim.limit).unwrap_or(i32::MAX);
        let sql = &self.inner.sql;
        let text = if claim.durable {
            &sql.claim
        } else {
            &sql.claim_lazy
        };
        run!(self, Some(queue), conn, {
            let stmt = conn.prepare_cached(text).await?;
            let rows = conn
                .query(
                    &stmt,
                    &[
                        &queue.as_str(),
                        &claim.owner,
                        &limit,
                        &ms(claim.lease_until),
                        &ms(now),
                    ],
                )
                .await?;
            let mut items = rows.iter().map(rows::item).collect::<Result<Vec<_>>>()?;
            items.sort_by_key(|i| (i.not_before, i.key));
            Ok(items)
        })
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
        let removed = run!(self, Some(queue), conn, {
            let stmt = conn.prepare_cached(&sql.prune).await?;
            let row = conn
                .query_one(
                    &stmt,
                    &[&queue.as_str(), &phase.as_str(), &ms(before), &limit],
                )
                .await?;
            row.get::<_, Option<i64>>(0)
                .ok_or_else(|| Failure::Engine(Error::QueueNotFound(queue.clone())))
        })?;
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
