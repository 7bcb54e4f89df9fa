//! hookspool-postgres: a [`hookspool::Backend`] on PostgreSQL, so that several hookspool
//! processes, on one machine or many, share one set of queues, and applications push items
//! and fire events **in their own transactions** (the outbox's real promise: the event
//! commits with the business change, or neither does).
//!
//! - **Schema.** Everything lives in one Postgres schema (default `hookspool`,
//!   [`PostgresOptions::schema`]): tables `queues`, `items`, `counts` and `count_changes`,
//!   `names` (the first-writer-wins records of [`hookspool::Backend::once`]), `trash`,
//!   `migrations`, and SQL functions. Versioned migrations are applied by
//!   [`PostgresBackend::open`] under an advisory lock, so several processes may start at
//!   once; a schema from a newer hookspool, or one holding other objects, is refused with
//!   an [`OpenError`] that says so.
//! - **Calls.** Each trait method is one statement or one short transaction: `push` one
//!   plain statement (no lock on the queue row; a leaner one for a single item, and pushes
//!   of up to 64 items to one queue made while two of its push statements run share the next
//!   one: group commit, `combine`); `claim`
//!   one function call (a sweep, then `FOR UPDATE SKIP LOCKED` in
//!   `(not_before, key)` order on a partial index of due pending items, then the lease
//!   written to the rows locked, found by address, and one row in `leases` with the
//!   claim's lease end and keys, through which the sweep finds expired leases and which
//!   the acks count down and delete; it sends back only the columns its
//!   caller does not already know, not the phase, the lease or the update time, and each
//!   row's address; claims of one queue that this process's consumers make while two of
//!   them run wait, and leave together in one call of `claim_located`, each consumer with
//!   its own share and lease: `gather`; a consumer alone asking for fewer than 64 items,
//!   as the delivery loop does, calls version 13's `claim`, which returns no addresses
//!   and costs the server less per call, and its items are acked by key); `update_many`
//!   one transaction of one `SELECT … FOR UPDATE`, one `UPDATE` and one `DELETE` (plus
//!   the counter update, sent with them), or, for 32 entries or more of one owner's leases
//!   (a large `ack_many`), one statement that writes without reading first, finding each
//!   row at the address its claim returned (kept by the backend until the ack,
//!   `addresses`) and by key when that address no longer holds it; `fetch`/`pop`/`dump`
//!   page by key;
//!   `reset` and `delete_queue` move the queue to a new generation in a short transaction,
//!   and the old rows are deleted in batches in the background; `prune` (retention) one
//!   call of the function `prune_phase` (one `DELETE` of the phase's head, found through the
//!   `(gen, listed, key)` index, or along the primary key for `done`, reading no payload);
//!   a `pop` of a page one call of `pop_page`. Durable on return: committed with
//!   `synchronous_commit = on`.
//! - **Counts** come from sharded counter rows (one per session shard, queue generation and
//!   phase) and, since schema version 7, from the count changes that pushes append, summed
//!   on read in one snapshot: exact, O(1) in the queue's size, and no single hot row for
//!   every writer to wait on. Claims, settles, pops and prunes add to their session's
//!   counter rows in their own transaction. Each pooled connection takes a shard no other
//!   hookspool session holds when it connects (a session advisory lock on one of 64);
//!   other sessions use their process id's. A push instead appends a row to
//!   `count_changes` (a table without indexes: cheaper for a push than the counter row's
//!   upsert), and every backend rolls those rows up into its counter rows every 200 ms
//!   while it pushes and vacuums the table (`rollup`), so that a count reads a few seconds
//!   of pushes' changes at most.
//! - **Migrations** are versioned ([`SCHEMA_VERSION`]) and applied when the backend opens,
//!   under an advisory lock: version 1 made the schema, version 2 gave each session a
//!   counter shard of its own, version 3 indexes items by age (for the TTL sweep) only in
//!   queues with a TTL, version 4 plans the statements of the claim, the sweep, a pop of a
//!   page and the prune afresh at every call (a plan kept from when a queue was small read
//!   the whole queue once it had grown; the settle's transaction does the same with
//!   `SET LOCAL`), version 5 has a claim lock its rows before it leases them (claims
//!   running at once no longer race row by row for the same end of the due index) and
//!   leaves `in_flight` and `done` out of the index by phase (a claim and an ack no longer
//!   add an entry to it; pages of those two phases read the lease index and the primary
//!   key) and settles a batch of 32 or more entries of one owner's leases (a large
//!   `ack_many`) in one statement, without reading the rows first, version 6 adds what
//!   the backend does while a snapshot is held open (below), version 7 has pushes
//!   count by appending to `count_changes` (above), and version 8 has a claim lease the
//!   rows it locked by their address (`ctid`, a TID scan) instead of by key, and applies a
//!   batch of one owner's leases that all move to one phase (an `ack_many`) with
//!   `settle_leased_to`, which takes the keys and that phase instead of five arrays, and
//!   version 9 pages pending items by key through an index of their own (`items_pending`,
//!   two integers an entry), which `items_by_phase` then leaves out, and version 10 (functions
//!   only) has a claim lease its rows in its own body (its rows are no longer kept twice on
//!   their way out) and hands a batched ack its keys through a sub-select (the planner no
//!   longer weighs each key), and version 11 (a function only) adds `claim_for`, one claim
//!   for several consumers (below), and version 12 (a function only) gives the applications'
//!   push (`push_many`) the backend's batch statement, which draws keys in batch order
//!   without sorting its rows, and version 13 finds expired leases through a row per claim
//!   (`leases`: the lease end, how many of its items are still in flight, their keys)
//!   instead of an index entry per claimed item (`items_leases` is dropped; a rule keeps
//!   every item in flight named in a row), and pages in-flight items through those rows,
//!   and version 14 (functions only) has a claim return each leased row's address
//!   (`claim_located`, for one consumer or several) and a batched ack find its rows at
//!   those addresses (`settle_located`), instead of looking each key up in the primary key,
//!   and version 15 has the indexes of the items name `listed` (the phase as they list it,
//!   NULL for `in_flight` and `done`; a rule keeps it true to `phase`) instead of `phase`,
//!   so that an ack, which changes no indexed column, is written in place (a HOT update, no
//!   new index entry) when its page has room, and version 16 (functions only) has the
//!   claims read their due items, and the TTL sweep its expired ones, with sorting turned
//!   off for that one statement, so that they go through `items_due` and `items_ttl`
//!   whatever the table's statistics say (statistics taken while the queues were drained
//!   had a claim read and sort every pending item), and version 17 keeps the two rules of
//!   an item's row (in flight only with a lease row; `listed` true to `phase`) with a row
//!   trigger after updates (`items_rules`) instead of CHECK constraints, which PostgreSQL
//!   prepared afresh for every statement writing the table, a push included (a quarter of
//!   the server's instructions for a push of one item); no insert can break them, since
//!   every push writes a pending item with no lease and `listed` at its default.
//! - **A snapshot held open** by another session (a forgotten transaction, a long report)
//!   keeps vacuum from freeing what died after it. The backend looks for one
//!   ([`PostgresOptions::snapshot_warning`]), warns naming the session, and reports its age
//!   as a gauge. Meanwhile every statement that reads an index from its start would read
//!   the entries of everything that died since, and every counter row would drag its old
//!   versions along, so each call would cost more than the last. So, while it sees one:
//!   - claims of each queue start where this backend's last one ended (`claim_after`,
//!     without a sweep), with a full claim at least every second that takes what became due
//!     behind that point and releases expired leases: those items come up to a second late,
//!     the one departure from `(not_before, key)` order;
//!   - retention's prunes do the same (`prune_after`), with a full one once per the
//!     warning's threshold (a minute by default);
//!   - each pooled session moves its counter rows to a shard of its own for each second
//!     (counts stay exact: they sum every shard), folded back once the snapshot is gone;
//!   - its pushes count with the counter rows' upsert, not with count changes, and it rolls
//!     none up: a rolled-up change could not be freed until the snapshot ends, and a count
//!     would read every one.
//!
//!   The README's "A snapshot held open" measures it.
//! - **Keys** come from a sequence per queue: never reused, increasing within a batch and
//!   from one push to a later one, but a rolled-back push leaves a gap and concurrent
//!   batches may interleave ([`hookspool::Capabilities::gapless_keys`] is `false`; the
//!   conformance kit checks exactly that). A transaction that commits late may make a
//!   smaller key visible after a larger one.
//! - **Several processes.** [`hookspool::Capabilities::shared`]: leases are live across
//!   processes until they expire; every change is announced after it commits with one
//!   coalesced `NOTIFY` on the schema's channel, and [`hookspool::Backend::changes`] passes
//!   other processes' notices on (the webhook layer wakes its loops and reloads
//!   subscriptions on them, with a fallback poll). A backend sends notices only while
//!   another one listens on the schema: their listening connections are named
//!   (`application_name` `hookspool listener <schema>`), and it looks for one in
//!   `pg_stat_activity` (`notify`). Changes made while it found none are kept for its next
//!   look (at most 250 ms later), which sends them to a listener that started meanwhile.
//! - **The outbox.** [`PostgresBackend::push_in`] and [`PostgresBackend::fire_in`] write
//!   inside a transaction the application opened; from any language, the SQL functions
//!   `hookspool.push(queue, payload, metadata, not_before)` and `hookspool.fire(event,
//!   payload, owner)` do the same inside the caller's `BEGIN … COMMIT`.
//! - **Connections.** tokio-postgres with a deadpool pool ([`PostgresOptions::pool_size`],
//!   16 by default), TLS through rustls when `sslmode` asks for it. A server that cannot be
//!   reached gives [`hookspool::Error::Unavailable`] (503 over HTTP), and the pool reconnects
//!   by itself when it is back.
//! - **Old snapshots.** A session that holds a snapshot open stops vacuum from freeing the
//!   rows that died since, and claims slow down (see the README's PostgreSQL soak). Every
//!   backend logs a warning naming it (process id, application, state) once it is a minute
//!   old ([`PostgresOptions::snapshot_warning`] changes that or turns it off), and says
//!   so once it is gone, with the `REINDEX` that gives the indexes' space back;
//!   [`PostgresBackend::oldest_snapshot`] answers on demand with an [`OldSnapshot`].
//! - **Gauges.** [`hookspool::Backend::gauges`] gives the pool's connections (open, idle,
//!   the most, calls waiting) and the oldest snapshot's age at the last look; the daemon's
//!   `/metrics` shows them.
//!
//! **It is not** a way to share a journal or sled directory: this backend keeps everything
//! in the database.
//!
//! # Example
//!
//! ```no_run
//! use hookspool::{NewItem, QueueConfig, QueueId, Store};
//! use hookspool_postgres::{PostgresBackend, PostgresOptions};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let backend = PostgresBackend::open(PostgresOptions::new("postgresql://app@db/app")).await?;
//! let store = Store::new(backend.clone());
//! let emails = QueueId::new("emails")?;
//! store.create_queue(QueueConfig::new(emails.clone())).await?;
//!
//! // In the application's own transaction: both rows commit, or neither.
//! let mut conn = backend.connection().await?;
//! let tx = conn.transaction().await?;
//! tx.execute("INSERT INTO users (email) VALUES ($1)", &[&"ada@example.com"]).await?;
//! backend.push_in(&tx, &emails, vec![NewItem::new(b"welcome ada".to_vec())]).await?;
//! tx.commit().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! - `testing`: the `testing` module, a throwaway PostgreSQL server for tests and benchmarks.
//!
//! # Modules
//!
//! [`PostgresBackend`] (open, the trait, the outbox calls), [`PostgresOptions`],
//! [`OpenError`], [`ServerError`] and [`OldSnapshot`]; inside: `schema` (migrations and the
//! server checks), `sql/v1.sql` … `sql/v17.sql` (tables, functions, and each version's
//! reasons), `sql` (the statements), `backend` (with `backend/claims` and
//! `backend/settle`), `addresses` (where this process's claimed items are, for their
//! acks), `outbox`, `lane` (calls of one kind and queue that wait while two
//! run, then share a statement), `combine` (group commit of small pushes, through `lane`),
//! `gather` (one claim for several consumers, through `lane`), `notify` (notices across
//! processes), `rollup` (count changes into counter rows), `trash` (deleting thrown-away
//! generations), `snapshots` (the oldest snapshot on the server), `held` (what the backend
//! does while one is held open), `connect` (TLS and the pool).

mod addresses;
mod backend;
mod combine;
mod connect;
mod error;
mod gather;
mod held;
mod lane;
mod notify;
mod once;
mod open;
mod options;
mod outbox;
mod rollup;
mod rows;
mod schema;
mod snapshots;
mod sql;
mod trash;

#[cfg(feature = "testing")]
pub mod testing;

pub use backend::PostgresBackend;
pub use error::{OpenError, ServerError};
pub use options::{
    DEFAULT_POOL_SIZE, DEFAULT_SCHEMA, DEFAULT_SNAPSHOT_WARNING, PostgresOptions, redact,
};
pub use schema::SCHEMA_VERSION;
pub use snapshots::OldSnapshot;
