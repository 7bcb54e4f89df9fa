//! Settling: `update`/`update_many` as one transaction that locks, checks and writes, and
//! batches of one owner's leases in one statement.

use std::collections::BTreeMap;

use hookspool::{
    Action, Error, Item, Key, Phase, QueueId, Result, Timestamp, Transition, apply_move,
    check_expect,
};
use tokio_postgres::types::{Json, ToSql};

use super::{Failure, PostgresBackend};
use crate::rows::{self, key_param, ms};
use crate::sql::Sql;

/// Plans the rest of a transaction's statements with the sizes of the moment, never with a
/// plan kept from earlier calls: a generic plan the server chose while a queue was small
/// finds rows by their generation alone, which reads the whole queue once it has grown (see
/// `v4.sql`). For the settle's statements, which look items up by key: a custom plan costs
/// them nothing the server did not already spend, since it planned them afresh at every call
/// once their table was analyzed.
const CUSTOM_PLANS: &str = "SET LOCAL plan_cache_mode = force_custom_plan";

impl PostgresBackend {
    /// Settles a batch whose every entry expects a lease of `owner` ([`one_owner`]) with
    /// one statement and no lock pass (`settle_leased` in `v5.sql`). The entries it did not
    /// apply (someone else's lease, no lease, no item) go the general way, which reads them
    /// and says why. If that second step fails as a whole (the server gone), the call fails
    /// with the entries the statement applied staying applied, as
    /// [`hookspool::Backend::update_many`] allows: a settled lease is no longer there to
    /// settle again.
    pub(super) async fn settle_leased(
        &self,
        queue: &QueueId,
        owner: String,
        updates: Vec<(Key, Transition)>,
        now: Timestamp,
    ) -> Result<Vec<Result<()>>> {
        // In key order, as the general settle locks its rows.
        let mut order: Vec<&(Key, Transition)> = updates.iter().collect();
        order.sort_unstable_by_key(|(key, _)| *key);
        let keys: Vec<i64> = order.iter().map(|(key, _)| key_param(*key)).collect();
        let sql = &self.inner.sql;
        // The addresses of the claims are taken whichever way the batch goes: its keys are
        // settled (or found not to be this owner's) either way.
        let addresses = self.inner.addresses.take(queue, &keys);
        let applied: Option<Vec<i64>> = if let Some(same) = uniform(&updates) {
            let phase = same.phase();
            run!(self, Some(queue), conn, {
                let row = if let Some(addresses) = &addresses {
                    let stmt = conn.prepare_cached(&sql.settle_located).await?;
                    let params: [&(dyn ToSql + Sync); 6] =
                        [&queue.as_str(), &owner, &keys, addresses, &phase, &ms(now)];
                    conn.query_one(&stmt, &params).await?
                } else {
                    let stmt = conn.prepare_cached(&sql.settle_leased_to).await?;
                    conn.query_one(&stmt, &[&queue.as_str(), &owner, &keys, &phase, &ms(now)])
                        .await?
                };
                Ok(row.get::<_, Option<Vec<i64>>>(0))
            })?
        } else {
            let mut phases: Vec<Option<&str>> = Vec::with_capacity(updates.len());
            let mut not_before = Vec::with_capacity(updates.len());
            let mut errors = Vec::with_capacity(updates.len());
            let mut metadata = Vec::with_capacity(updates.len());
            for (_, transition) in order {
                match &transition.action {
                    Action::Remove => {
                        phases.push(None);
                        not_before.push(None);
                        errors.push(None);
                        metadata.push(None);
                    }
                    Action::Move(m) => {
                        phases.push(Some(m.phase.as_str()));
                        not_before.push(m.not_before.map(ms));
                        errors.push(m.error.as_deref().map(rows::text));
                        metadata.push(m.metadata.as_ref().map(Json));
                    }
                }
            }
            run!(self, Some(queue), conn, {
                let stmt = conn.prepare_cached(&sql.settle_leased).await?;
                let row = conn
                    .query_one(
                        &stmt,
                        &[
                            &queue.as_str(),
                            &owner,
                            &keys,
                            &phases,
                            &not_before,
                            &errors,
                            &metadata,
                            &ms(now),
                        ],
                    )
                    .await?;
                Ok(row.get::<_, Option<Vec<i64>>>(0))
            })?
        };
        let Some(applied) = applied else {
            return Err(Error::QueueNotFound(queue.clone()));
        };
        if !applied.is_empty() {
            self.announce(queue);
        }
        let applied: std::collections::HashSet<i64> = applied.into_iter().collect();
        let (done, rest): (Vec<_>, Vec<_>) = updates
            .into_iter()
            .enumerate()
            .partition(|(_, (key, _))| applied.contains(&key_param(*key)));
        let mut out: Vec<Option<Result<()>>> = Vec::new();
        out.resize_with(done.len() + rest.len(), || None);
        for (i, _) in done {
            out[i] = Some(Ok(()));
        }
        if !rest.is_empty() {
            let (places, rest): (Vec<usize>, Vec<_>) = rest.into_iter().unzip();
            let results = self.settle(queue, rest, now, false).await?;
            for (i, r) in places.into_iter().zip(results) {
                out[i] = Some(r.map(drop));
            }
        }
        out.into_iter()
            .map(|r| r.ok_or_else(|| Error::internal("a settle left an entry without a result")))
            .collect()
    }

    /// Reads, checks and applies `updates` in one transaction: the rows are locked in key
    /// order, the transitions applied in memory in the order given (each seeing those before
    /// it), and the results written with one `UPDATE` and one `DELETE`. With `payloads`, the
    /// items are read whole and returned as they are after their transition (as they were,
    /// for a removal).
    pub(super) async fn settle(
        &self,
        queue: &QueueId,
        updates: Vec<(Key, Transition)>,
        now: Timestamp,
        payloads: bool,
    ) -> Result<Vec<Result<Item>>> {
        let mut keys: Vec<i64> = updates.iter().map(|(key, _)| key_param(*key)).collect();
        keys.sort_unstable();
        keys.dedup();
        self.inner.addresses.forget(queue, keys.iter().copied());
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
            let Locked {
                mut items,
                lease_rows,
            } = locked_items(&rows, payloads)?;
            // The lease rows of the items this batch takes out of flight, one entry each.
            let mut closed: Vec<i64> = Vec::new();
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
                if item.phase == Phase::IN_FLIGHT
                    && let Some(&id) = lease_rows.get(key)
                {
                    closed.push(id);
                }
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
                &closed,
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

/// The items a settle locked, by key (`None` once removed), and the lease row each item in
/// flight is named in.
struct Locked {
    items: BTreeMap<Key, Option<Item>>,
    lease_rows: BTreeMap<Key, i64>,
}

fn locked_items(rows: &[tokio_postgres::Row], payloads: bool) -> Result<Locked> {
    let mut locked = Locked {
        items: BTreeMap::new(),
        lease_rows: BTreeMap::new(),
    };
    for row in rows {
        let item = rows::item_with(row, payloads)?;
        if let Some(id) = row.get::<_, Option<i64>>("lease_id") {
            locked.lease_rows.insert(item.key, id);
        }
        locked.items.insert(item.key, Some(item));
    }
    Ok(locked)
}

/// The least entries of a batch that [`PostgresBackend::settle_leased`] takes. In smaller
/// groups (the delivery loop's, 10-20 outcomes at 5k deliveries/s) its one statement cost
/// the server more per delivery than the locking transaction (150 against 144 µs of CPU in
/// the daemon bench), for no gain in throughput; from 64 entries up it is 7-12% faster.
const LEASED_MIN: usize = 32;

/// The owner whose leases every entry of `updates` expects, if the batch is one that
/// [`PostgresBackend::settle_leased`] applies as it is: at least [`LEASED_MIN`] entries,
/// every one expecting a lease of that one owner (and, if a phase, `in_flight`), none moving
/// an item into `in_flight` (refused), no key twice (later entries would have to see
/// earlier ones).
pub(super) fn one_owner(updates: &[(Key, Transition)]) -> Option<String> {
    if updates.len() < LEASED_MIN {
        return None;
    }
    let owner = updates.first()?.1.expect.lease_owner.as_ref()?;
    if owner.contains('\0') {
        return None;
    }
    let mut keys = std::collections::HashSet::with_capacity(updates.len());
    for (key, t) in updates {
        let fits = t.expect.lease_owner.as_ref() == Some(owner)
            && t.expect
                .phase
                .as_ref()
                .is_none_or(|p| *p == Phase::IN_FLIGHT)
            && !matches!(&t.action, Action::Move(m) if m.phase == Phase::IN_FLIGHT)
            && keys.insert(*key);
        if !fits {
            return None;
        }
    }
    Some(owner.clone())
}

/// What every entry of a [`one_owner`] batch does, when the entries differ in nothing else
/// (see [`uniform`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Same<'a> {
    /// Moves its item to this phase, setting no not-before time, error or metadata.
    MoveTo(&'a str),
    /// Removes its item.
    Remove,
}

impl<'a> Same<'a> {
    fn of(t: &'a Transition) -> Option<Self> {
        match &t.action {
            Action::Remove => Some(Same::Remove),
            Action::Move(m)
                if m.not_before.is_none() && m.error.is_none() && m.metadata.is_none() =>
            {
                Some(Same::MoveTo(m.phase.as_str()))
            }
            Action::Move(_) => None,
        }
    }

    /// The phase, as `settle_leased_to` takes it (NULL: removed).
    fn phase(self) -> Option<&'a str> {
        match self {
            Same::MoveTo(phase) => Some(phase),
            Same::Remove => None,
        }
    }
}

/// What every entry of a [`one_owner`] batch does, if they all do the same thing, as in an
/// `ack_many`: applied by `settle_leased_to` (`v8.sql`), which takes the keys and one phase
/// instead of an array per field. `None` when any entry differs, or sets a not-before time,
/// an error or metadata.
fn uniform(updates: &[(Key, Transition)]) -> Option<Same<'_>> {
    let first = Same::of(&updates.first()?.1)?;
    updates
        .iter()
        .all(|(_, t)| Same::of(t) == Some(first))
        .then_some(first)
}

/// The items whose error or metadata a transition of the batch replaced: only those are
/// written (a row keeps what no transition replaced, so settling never reads them).
#[derive(Default)]
struct Replaced {
    errors: std::collections::BTreeSet<Key>,
    metadata: std::collections::BTreeSet<Key>,
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
/// the items that remain, one `DELETE` for those removed, one counter update, and the
/// items taken out of flight counted off their lease rows (`closed`), sent together.
async fn write_back<'a>(
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &Sql,
    generation: i64,
    changed: impl Iterator<Item = (Key, &'a Option<Item>)>,
    replaced: &Replaced,
    counts: Deltas,
    closed: &[i64],
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
    let close = async {
        if !closed.is_empty() {
            let stmt = tx.prepare_cached(&sql.close_leases).await?;
            tx.execute(&stmt, &[&closed]).await?;
        }
        Ok(())
    };
    futures_util::future::try_join4(update, delete, count, close).await?;
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
