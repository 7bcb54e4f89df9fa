//! Every statement the backend sends, rendered once for its schema.

use hookspool::{Phase, Selector};
use tokio_postgres::types::ToSql;

use crate::rows::{
    CLAIMED_COLUMNS, ITEM_COLUMNS, QUEUE_COLUMNS, STATE_COLUMNS, cursor_param, key_param,
};
use crate::schema::render;

/// A statement's parameters after the queue id (`$1`).
pub(crate) type Params = Vec<Box<dyn ToSql + Sync + Send>>;

/// The statements, as text for `prepare_cached`.
pub(crate) struct Sql {
    pub(crate) queue_exists: String,
    pub(crate) create_queue: String,
    pub(crate) update_queue: String,
    pub(crate) get_queue: String,
    pub(crate) list_queues: String,
    pub(crate) delete_queue: String,
    pub(crate) push: String,
    pub(crate) push_one: String,
    pub(crate) push_locked: String,
    pub(crate) count: String,
    /// Rolls the count changes up into the counter rows (see `rollup`).
    pub(crate) roll_up: String,
    pub(crate) vacuum_changes: String,
    pub(crate) vacuum_changes_truncate: String,
    pub(crate) reset: String,
    /// The claim of one consumer or several from the head of the queue (`claim_located`,
    /// schema version 14): owners `$2`, limits `$3` and lease ends `$4`, at `$5`; each row
    /// names its consumer's place and its row's address first.
    pub(crate) claim: String,
    /// The same claim, committed without waiting for its WAL flush (`Claim::durable` false).
    pub(crate) claim_lazy: String,
    /// A small claim of one consumer (`claim`, schema version 13): owner `$2`, at most `$3`
    /// items, leased until `$4`, at `$5`; no addresses (see `claims`).
    pub(crate) claim_small: String,
    /// The same, committed without waiting for its WAL flush.
    pub(crate) claim_small_lazy: String,
    pub(crate) sweep: String,
    /// Retention's step from after key `$5` (the smallest `bigint`: from the start),
    /// returning what it removed and the last key it removed (`prune_after`, schema version
    /// 6; see `held`).
    pub(crate) prune: String,
    /// What the backend runs while a snapshot is held open.
    pub(crate) held: Held,
    pub(crate) lock_items: String,
    pub(crate) lock_states: String,
    pub(crate) write_items: String,
    pub(crate) delete_items: String,
    pub(crate) add_counts: String,
    /// Counts items taken out of flight off their lease rows (`$1`, one entry per item;
    /// schema version 13).
    pub(crate) close_leases: String,
    pub(crate) settle_leased: String,
    /// A batch of one owner's leases all moved to one phase (or all removed; `v8.sql`).
    pub(crate) settle_leased_to: String,
    /// The same with each key's address from its claim (`settle_located`, `v14.sql`).
    pub(crate) settle_located: String,
    pub(crate) empty_trash: String,
    /// Gives the TTL to items a push left without it while their queue gained one.
    pub(crate) catch_up_ttl: String,
    pub(crate) trash: String,
    pub(crate) fire: String,
    /// The first-writer-wins records of `once`.
    pub(crate) names: Names,
    /// Fetch (`[0]`) and pop (`[1]`) of one key.
    by_key: [String; 2],
    /// Pages, indexed by `[pop][reverse][PageFilter]`.
    pages: [[[String; 5]; 2]; 2],
}

/// A push, in one statement: `$1` queue, `$2` payloads, `$3` metadata (NULL, or a NULL
/// element: none), `$4` not-before times (NULL, or a NULL element: now), `$5` now. Returns
/// the keys (`{keys}`), or NULL for a missing queue.
///
/// Keys come from the queue's sequence in batch order. The arrays are unnested in a select
/// list, where several set-returning functions run in lockstep (a shorter or NULL array
/// gives NULLs) and their rows stream out in order, rather than in `FROM`, which would
/// first copy each array's rows into a store of its own (1.9% of the server's
/// instructions for a batch of 1024). The one row of `q` joined to those rows has no join
/// condition, so the only plan is a nested loop, which passes them on in their order, and
/// `nextval` runs on each row as it passes; until 2026-12-07 an `ORDER BY` of the arrays'
/// ordinality said so explicitly, at the price of sorting every item's row, payload
/// included (2.5% of those instructions). `tests/plans.rs` checks that the plans of the
/// push statements have that shape and no sort, and that what a batch stored matches the
/// keys it returned.
///
/// The pending count is written here, not by a trigger (`{counted}`: [`Counter`]).
/// `ttl_from` is set only in a queue with a TTL, so that only its items enter the TTL index.
/// `{lock}` is [`LOCK_QUEUE`] or nothing (see [`push`] and [`push_locked`]).
const PUSH_TEMPLATE: &str = "\
WITH q AS (
    SELECT gen, key_seq, ttl_ms FROM {schema}.queues WHERE id = $1{lock}
), ins AS (
    INSERT INTO {schema}.items (gen, key, phase, created_at, updated_at, not_before, metadata, payload,
                                ttl_from)
    SELECT q.gen, nextval(q.key_seq), 'pending', $5, $5, coalesce(u.nb, $5),
           coalesce(u.m, '{}'::json), u.p, CASE WHEN q.ttl_ms IS NOT NULL THEN $5::bigint END
    FROM q, (SELECT unnest($2::bytea[]) AS p, unnest($3::json[]) AS m,
                    unnest($4::bigint[]) AS nb) AS u
    RETURNING gen, key
), counted AS (
    {counted}
)
SELECT CASE WHEN EXISTS (SELECT 1 FROM q)
    THEN coalesce((SELECT {keys} FROM ins), '{}') END";

/// The backend's push of a single item: the same as [`push`] for a batch of one, without
/// the arrays, the sort and the aggregate, which cost a push of one item 11–17% of
/// its time on the server. `$1` queue, `$2` payload, `$3` metadata, `$4` not-before (NULL:
/// now), `$5` now. Returns the key, or no row for a missing queue.
const PUSH_ONE_TEMPLATE: &str = "\
WITH ins AS (
    INSERT INTO {schema}.items (gen, key, phase, created_at, updated_at, not_before, metadata, payload,
                                ttl_from)
    SELECT gen, nextval(key_seq), 'pending', $5::bigint, $5, coalesce($4::bigint, $5), $3::json,
           $2::bytea, CASE WHEN ttl_ms IS NOT NULL THEN $5::bigint END
    FROM {schema}.queues WHERE id = $1::text
    RETURNING gen, key
), counted AS (
    {counted}
)
SELECT key FROM ins";

/// How a push counts its items as pending (`{counted}` in [`PUSH_TEMPLATE`] and
/// [`PUSH_ONE_TEMPLATE`]).
#[derive(Clone, Copy)]
pub(crate) enum Counter {
    /// A row appended to `count_changes` (schema version 7), which the backend rolls up
    /// into the counter rows (see `rollup`): no index to look up, no row to update.
    Append,
    /// An upsert of this session's counter row (up to schema version 6; while a snapshot is
    /// held open, where a rolled-up change could not be freed and a count would read every
    /// one since; see `held`).
    Upsert,
}

impl Counter {
    /// The statement that counts `n` items of the CTE `from` (with what follows it) as
    /// pending.
    fn statement(self, n: &str, from: &str) -> String {
        match self {
            Counter::Append => format!(
                "INSERT INTO {{schema}}.count_changes (gen, phase, n)
    SELECT gen, 'pending', {n} FROM {from}"
            ),
            Counter::Upsert => format!(
                "INSERT INTO {{schema}}.counts AS c (gen, phase, shard, n)
    SELECT gen, 'pending', {{schema}}.shard(), {n} FROM {from}
    ON CONFLICT (gen, phase, shard) DO UPDATE SET n = c.n + excluded.n"
            ),
        }
    }
}

/// The push of one item, counted by `counter`.
pub(crate) fn push_one(counter: Counter) -> String {
    PUSH_ONE_TEMPLATE.replace("{counted}", &counter.statement("1", "ins"))
}

/// Locks the queue row against `reset` and `delete_queue` (which take it exclusively) until
/// the transaction ends.
const LOCK_QUEUE: &str = " FOR KEY SHARE";

/// The backend's own push, a statement of its own (autocommit). It takes no lock on the
/// queue row: many concurrent pushes to one queue would all write that row's lock and
/// contend on it. A push that read the generation just before a `reset` (or
/// `delete_queue`) committed lands in the old generation, and is removed with it: it ran
/// at the same time as the reset, so it counts as before it. The trash keeps the old
/// generation for a grace period, so that its row is deleted too.
///
/// It counts the items from the length of the payloads' array (the `INSERT` writes one row
/// for each, or fails whole) rather than from the rows it inserted, and returns the keys in
/// no particular order (the caller sorts them): for a batch of 1024, grouping the inserted
/// rows and sorting their keys cost the server 0.5 of its 8 ms.
pub(crate) fn push(counter: Counter) -> String {
    PUSH_TEMPLATE
        .replace("{lock}", "")
        .replace(
            "{counted}",
            &counter.statement("cardinality($2)", "q WHERE cardinality($2) > 0"),
        )
        .replace("{keys}", "array_agg(key)")
}

/// A push inside a transaction that may stay open (the application's, through `push_in`
/// and the SQL functions): the queue row stays locked until it commits, so that `reset`
/// and `delete_queue` wait for it rather than throw its item away after the grace period.
/// It appends its count change: a transaction that stays open holds no counter row.
pub(crate) fn push_locked() -> String {
    PUSH_TEMPLATE
        .replace("{lock}", LOCK_QUEUE)
        .replace(
            "{counted}",
            &Counter::Append.statement("count(*)", "ins GROUP BY gen"),
        )
        .replace("{keys}", "array_agg(key ORDER BY key)")
}

/// Adds `$3` to the counts of phases `$2` of generation `$1` in this session's shard: the
/// body of the SQL function `add_counts`, sent as it is, since a function call would cost a
/// settle several times what this statement does. Rows are locked in phase order.
const ADD_COUNTS: &str = "\
INSERT INTO {schema}.counts AS c (gen, phase, shard, n)
SELECT $1, u.phase, {schema}.shard(), sum(u.delta)
FROM unnest($2::text[], $3::bigint[]) AS u(phase, delta)
GROUP BY u.phase HAVING sum(u.delta) <> 0 ORDER BY u.phase
ON CONFLICT (gen, phase, shard) DO UPDATE SET n = c.n + excluded.n";

/// The statements the backend runs while a snapshot is held open (schema version 6; see
/// `held`).
pub(crate) struct Held {
    /// The claim from after a position, without a sweep (`claim_after`): `$6` and `$7` are
    /// the `not_before` and key of the position.
    pub(crate) claim_after: String,
    pub(crate) claim_after_lazy: String,
    /// Moves this session to its counter shard of epoch `$1` (0: its own).
    pub(crate) move_shard: String,
    /// Folds the counter rows of epochs into their sessions' own shards.
    pub(crate) fold_counts: String,
    /// The pushes, counted by the upsert of the counter row (see [`Counter::Upsert`]).
    pub(crate) push: String,
    pub(crate) push_one: String,
}

impl Held {
    fn new(schema: &str) -> Self {
        let r = |s: &str| render(s, schema);
        Held {
            claim_after: r(&claim_after(false)),
            claim_after_lazy: r(&claim_after(true)),
            move_shard: r("SELECT set_config('hookspool.counter_shard', \
                 (current_setting('hookspool.counter_shard')::integer % {counter_shards} \
                 + {counter_shards} * $1::integer)::text, false)"),
            fold_counts: r(FOLD_COUNTS),
            push: r(&push(Counter::Upsert)),
            push_one: r(&push_one(Counter::Upsert)),
        }
    }
}

/// Moves the counts of the shards of epochs (see `held::CounterShards`) to the shards they
/// came from, in one transaction: a count sums every shard, so it reads the same before and
/// after. Only for queues that still exist (the trash deletes the counts of the others).
const FOLD_COUNTS: &str = "\
WITH moved AS (
    DELETE FROM {schema}.counts
    WHERE shard >= {counter_shards} AND gen IN (SELECT gen FROM {schema}.queues)
    RETURNING gen, phase, shard % {counter_shards} AS shard, n
)
INSERT INTO {schema}.counts AS c (gen, phase, shard, n)
SELECT gen, phase, shard, sum(n) FROM moved GROUP BY gen, phase, shard
ORDER BY gen, phase, shard
ON CONFLICT (gen, phase, shard) DO UPDATE SET n = c.n + excluded.n";

/// The counts of queue `$1` by phase: its counter rows and the count changes not yet
/// rolled up (schema version 7), in one snapshot. No row: no such queue.
const COUNT: &str = "\
SELECT c.phase, sum(c.n)::bigint
FROM {schema}.queues q
LEFT JOIN (
    SELECT gen, phase, n FROM {schema}.counts
    UNION ALL SELECT gen, phase, n FROM {schema}.count_changes
) c ON c.gen = q.gen
WHERE q.id = $1 GROUP BY c.phase";

/// Rolls every count change up into this session's counter rows, in one transaction (a
/// count reads the same before and after), if this session gets the turn: a
/// transaction-level advisory lock, so that two processes do not wait on each other's
/// rows. The changes of generations no queue has any more are dropped. Returns how many
/// changes it took (0: none, or not its turn).
const ROLL_UP: &str = "\
WITH turn AS (
    SELECT pg_try_advisory_xact_lock(hashtextextended('hookspool count changes {schema_name}', 0)) AS mine
), moved AS (
    DELETE FROM {schema}.count_changes WHERE (SELECT mine FROM turn) RETURNING gen, phase, n
), rolled AS (
    INSERT INTO {schema}.counts AS c (gen, phase, shard, n)
    SELECT m.gen, m.phase, {schema}.shard(), sum(m.n)
    FROM moved m JOIN {schema}.queues q ON q.gen = m.gen
    GROUP BY m.gen, m.phase HAVING sum(m.n) <> 0
    ORDER BY m.gen, m.phase
    ON CONFLICT (gen, phase, shard) DO UPDATE SET n = c.n + excluded.n
)
SELECT count(*) FROM moved";

/// A CTE that takes the rows of a CTE `gone` (deleted items) off the counts.
const UNCOUNT: &str = ", uncounted AS (INSERT INTO {schema}.counts AS c (gen, phase, shard, n) \
     SELECT gen, phase, {schema}.shard(), -count(*) FROM gone GROUP BY gen, phase \
     ORDER BY gen, phase ON CONFLICT (gen, phase, shard) DO UPDATE SET n = c.n + excluded.n)";

/// `, set_config(…)` that makes a statement's transaction commit without waiting for its
/// WAL flush (`Claim::durable` false), or nothing. `synchronous_commit` is read when the
/// statement's transaction commits, so setting it anywhere in the statement is enough
/// (`true`: for this transaction only). A later synchronous commit flushes the WAL up to
/// itself, this claim's commit included.
fn lazily(lazy: bool) -> &'static str {
    if lazy {
        ", set_config('synchronous_commit', 'off', true)"
    } else {
        ""
    }
}

/// A claim of queue `$1` for owner `$2`, at most `$3` items, leased until `$4`, at `$5`,
/// from after the position `($6, $7)` (`claim_after`); `lazy` as in [`lazily`].
fn claim_after(lazy: bool) -> String {
    format!(
        "SELECT {CLAIMED_COLUMNS} FROM {{schema}}.claim_after($1, $2, $3, $4, $5, $6, $7){}",
        lazily(lazy)
    )
}

/// A claim of queue `$1` from its head for one consumer or several (see [`Sql::claim`]);
/// `lazy` as in [`lazily`].
fn claim(lazy: bool) -> String {
    format!(
        "SELECT who, address, {CLAIMED_COLUMNS} FROM {{schema}}.claim_located($1, $2, $3, $4, $5){}",
        lazily(lazy)
    )
}

/// A small claim of one consumer (see [`Sql::claim_small`]); `lazy` as in [`lazily`].
fn claim_small(lazy: bool) -> String {
    format!(
        "SELECT {CLAIMED_COLUMNS} FROM {{schema}}.claim($1, $2, $3, $4, $5){}",
        lazily(lazy)
    )
}

/// The generation of queue `$1`, as a subquery.
const GEN: &str = "(SELECT gen FROM {schema}.queues WHERE id = $1)";

/// The phase a page is limited to, as its statement names it. The indexes by phase read
/// `listed`, the phase as they list it (NULL for `in_flight` and `done`; schema version 15,
/// `v15.sql`, so that an ack changes no indexed column). `items_by_phase` leaves out
/// `pending` too, which has `items_pending` (version 9, `v9.sql`): a statement that a kept
/// plan may run for any of the phases it holds names that condition, so that the plan can
/// use the index; the other phases are named as constants, so that the server can plan each
/// its own way (`pending` through `items_pending`, `done` along the primary key). Items in
/// flight are in no index by phase since version 13 (`v13.sql`): their page looks up the
/// keys of the generation's lease rows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum PageFilter {
    /// Every phase.
    None = 0,
    /// A phase in `items_by_phase`, given as `$5`.
    Indexed = 1,
    InFlight = 2,
    Done = 3,
    Pending = 4,
}

impl PageFilter {
    const ALL: [PageFilter; 5] = [
        Self::None,
        Self::Indexed,
        Self::InFlight,
        Self::Done,
        Self::Pending,
    ];

    fn of(phase: Option<&Phase>) -> Self {
        match phase {
            None => Self::None,
            Some(p) if *p == Phase::PENDING => Self::Pending,
            Some(p) if *p == Phase::IN_FLIGHT => Self::InFlight,
            Some(p) if *p == Phase::DONE => Self::Done,
            Some(_) => Self::Indexed,
        }
    }

    /// The phase, as the statement names it (`NULL`: every phase).
    fn phase(self) -> &'static str {
        match self {
            Self::None => "NULL",
            Self::Indexed => "$5",
            Self::InFlight => "'in_flight'",
            Self::Done => "'done'",
            Self::Pending => "'pending'",
        }
    }

    /// The page statement's condition on the phase.
    fn condition(self) -> &'static str {
        match self {
            Self::None => "",
            Self::Indexed => " AND listed = $5 AND listed <> 'pending'",
            Self::InFlight => {
                " AND phase = 'in_flight' AND key = ANY (ARRAY(\
                 SELECT unnest(keys) FROM {schema}.leases \
                 WHERE gen = (SELECT gen FROM {schema}.queues WHERE id = $1)))"
            }
            Self::Done => " AND phase = 'done'",
            Self::Pending => " AND listed = 'pending'",
        }
    }
}

/// The statements of `once`'s records (`names`).
pub(crate) struct Names {
    pub(crate) insert: String,
    pub(crate) lock: String,
    pub(crate) renew: String,
    pub(crate) store: String,
    pub(crate) expire: String,
}

impl Names {
    fn new(schema: &str) -> Self {
        let r = |s: &str| render(s, schema);
        Names {
            insert: r(
                "INSERT INTO {schema}.names (space, name, value, created_at) \
                 VALUES ($1, $2, '', $3) ON CONFLICT (space, name) DO NOTHING RETURNING 1",
            ),
            lock: r("SELECT value, created_at FROM {schema}.names \
                 WHERE space = $1 AND name = $2 FOR UPDATE"),
            renew: r("UPDATE {schema}.names SET value = '', created_at = $3 \
                 WHERE space = $1 AND name = $2"),
            store: r("UPDATE {schema}.names SET value = $3 WHERE space = $1 AND name = $2"),
            expire: r(
                "DELETE FROM {schema}.names WHERE (space, name) IN (SELECT space, name \
                 FROM {schema}.names WHERE space = $1 AND created_at <= $2 \
                 ORDER BY created_at LIMIT $3 FOR UPDATE SKIP LOCKED)",
            ),
        }
    }
}

impl Sql {
    pub(crate) fn new(schema: &str) -> Self {
        let r = |s: &str| render(s, schema);
        let page = |pop: bool, reverse: bool, filter: PageFilter| {
            let (cmp, start, order) = if reverse {
                ("<", "9223372036854775807", "DESC")
            } else {
                (">", "0", "ASC")
            };
            let phase = filter.phase();
            let condition = filter.condition();
            let filter = format!(
                "gen = {GEN} AND key {cmp} coalesce($2::bigint, {start}){condition} \
                 ORDER BY key {order} OFFSET $3 LIMIT $4"
            );
            if pop {
                // A function that plans its statement at every call (see `v4.sql`), with
                // the phase's value in hand.
                r(&format!(
                    "SELECT {ITEM_COLUMNS} FROM {{schema}}.pop_page($1, $2, $3, $4, {reverse}, {phase})"
                ))
            } else {
                r(&format!(
                    "SELECT {ITEM_COLUMNS} FROM {{schema}}.items WHERE {filter}"
                ))
            }
        };
        let by_filter = |pop, reverse| PageFilter::ALL.map(|f| page(pop, reverse, f));
        let by_reverse = |pop| [by_filter(pop, false), by_filter(pop, true)];
        Sql {
            queue_exists: r("SELECT 1 FROM {schema}.queues WHERE id = $1"),
            create_queue: r("SELECT {schema}.create_queue($1, $2, $3, $4, $5)"),
            update_queue: r("SELECT {schema}.update_queue($1, $2, $3, $4)"),
            get_queue: r(&format!(
                "SELECT {QUEUE_COLUMNS} FROM {{schema}}.queues WHERE id = $1"
            )),
            list_queues: r(&format!(
                "SELECT {QUEUE_COLUMNS} FROM {{schema}}.queues ORDER BY id COLLATE \"C\""
            )),
            delete_queue: r("SELECT {schema}.delete_queue($1)"),
            push: r(&push(Counter::Append)),
            push_one: r(&push_one(Counter::Append)),
            push_locked: r(&push_locked()),
            count: r(COUNT),
            roll_up: r(ROLL_UP),
            vacuum_changes: r("VACUUM (SKIP_LOCKED) {schema}.count_changes"),
            vacuum_changes_truncate: r("VACUUM (SKIP_LOCKED, TRUNCATE) {schema}.count_changes"),
            reset: r("SELECT {schema}.reset($1)"),
            claim: r(&claim(false)),
            claim_lazy: r(&claim(true)),
            claim_small: r(&claim_small(false)),
            claim_small_lazy: r(&claim_small(true)),
            sweep: r("SELECT released, expired FROM {schema}.sweep($1, $2)"),
            prune: r("SELECT removed, last FROM {schema}.prune_after($1, $2, $3, $4, $5)"),
            held: Held::new(schema),
            lock_items: r(&format!(
                "SELECT {ITEM_COLUMNS}, gen, lease_id FROM {{schema}}.items \
                 WHERE gen = {GEN} AND key = ANY($2) ORDER BY key FOR UPDATE"
            )),
            lock_states: r(&format!(
                "SELECT {STATE_COLUMNS}, gen, lease_id FROM {{schema}}.items \
                 WHERE gen = {GEN} AND key = ANY($2) ORDER BY key FOR UPDATE"
            )),
            write_items: r("UPDATE {schema}.items i SET phase = u.phase, \
                 listed = CASE WHEN u.phase IN ('in_flight', 'done') THEN NULL ELSE u.phase END, \
                 attempts = u.attempts, \
                 updated_at = u.updated_at, not_before = u.not_before, lease_owner = u.owner, \
                 lease_until = u.until, last_error = coalesce(u.error, i.last_error), \
                 metadata = coalesce(u.metadata, i.metadata), \
                 ttl_from = CASE WHEN u.phase = 'pending' THEN i.created_at END \
                 FROM unnest($2::bigint[], $3::text[], $4::integer[], $5::bigint[], \
                 $6::bigint[], $7::text[], $8::bigint[], $9::text[], $10::json[]) \
                 AS u(key, phase, attempts, updated_at, not_before, owner, until, error, metadata) \
                 WHERE i.gen = $1 AND i.key = u.key"),
            delete_items: r("DELETE FROM {schema}.items WHERE gen = $1 AND key = ANY($2)"),
            add_counts: r(ADD_COUNTS),
            close_leases: r("SELECT {schema}.close_leases($1)"),
            settle_leased: r("SELECT {schema}.settle_leased($1, $2, $3, $4, $5, $6, $7, $8)"),
            settle_leased_to: r("SELECT {schema}.settle_leased_to($1, $2, $3, $4, $5)"),
            settle_located: r("SELECT {schema}.settle_located($1, $2, $3, $4, $5, $6)"),
            empty_trash: r("SELECT {schema}.empty_trash($1, $2, $3)"),
            catch_up_ttl: r("SELECT {schema}.catch_up_ttl($1)"),
            trash: r("SELECT gen FROM {schema}.trash ORDER BY gen"),
            fire: r("SELECT {schema}.fire($1, $2::jsonb, $3)"),
            names: Names::new(schema),
            by_key: [
                r(&format!(
                    "SELECT {ITEM_COLUMNS} FROM {{schema}}.items WHERE gen = {GEN} AND key = $2"
                )),
                r(&format!(
                    "WITH gone AS (DELETE FROM {{schema}}.items WHERE gen = {GEN} AND key = $2 \
                     RETURNING *){UNCOUNT} SELECT {ITEM_COLUMNS} FROM gone"
                )),
            ],
            pages: [by_reverse(false), by_reverse(true)],
        }
    }

    /// The statement of a fetch (or pop) with this selector, its parameters after the queue
    /// id, and whether the items come newest first.
    pub(crate) fn select(&self, selector: &Selector, pop: bool) -> (&str, Params, bool) {
        match selector {
            Selector::Key(key) => {
                let params: Params = vec![Box::new(key_param(*key))];
                (&self.by_key[usize::from(pop)], params, false)
            }
            Selector::Page(page) => {
                let after = page.after.map(cursor_param);
                let offset = i64::try_from(page.offset).unwrap_or(i64::MAX);
                let limit = i64::try_from(page.limit).unwrap_or(i64::MAX);
                let mut params: Params = vec![Box::new(after), Box::new(offset), Box::new(limit)];
                let filter = PageFilter::of(page.phase.as_ref());
                if let (PageFilter::Indexed, Some(phase)) = (filter, &page.phase) {
                    params.push(Box::new(phase.as_str().to_owned()));
                }
                let text =
                    &self.pages[usize::from(pop)][usize::from(page.reverse)][filter as usize];
                (text, params, page.reverse)
            }
        }
    }
}
