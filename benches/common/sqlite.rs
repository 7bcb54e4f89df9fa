//! SQLite as the outbox a user would otherwise embed (rusqlite with bundled SQLite, WAL,
//! `synchronous=FULL`), doing the work of each hookspool case on a table, so that every
//! hookspool figure can also be printed as a ratio to it, measured in the same run and on the
//! same filesystem.
//!
//! The table is the one of `shared/reference/perf-baseline.md`:
//! `outbox(id INTEGER PRIMARY KEY, payload BLOB, state INTEGER)`, state 0 = pending,
//! 1 = in flight, 2 = done. A push is one `INSERT`, a claim is `SELECT … WHERE state = 0
//! ORDER BY id LIMIT n` plus `UPDATE … SET state = 1` in one `BEGIN IMMEDIATE` transaction,
//! an ack is `UPDATE … SET state = 2`, a pop is the select plus `DELETE`. With
//! `synchronous=FULL` in WAL mode every commit fsyncs the WAL, so a committed transaction is
//! as durable as a hookspool call that returned under its default durability.

use std::path::Path;
use std::sync::{Arc, Barrier, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior};

use super::raw::percentile_us;
use super::{BATCH, BenchResult, Metrics, PAYLOAD_LEN, fill_payload, record_disk};

/// The database file inside a case's directory (SQLite adds `-wal` and `-shm` beside it).
pub const DB_FILE: &str = "outbox.db";
/// How long a connection waits for another one's write lock before failing with `BUSY`;
/// long enough that it never fails during a run.
pub const BUSY_TIMEOUT: Duration = Duration::from_mins(1);

const PENDING: i64 = 0;
const DONE: i64 = 2;

const CREATE_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS outbox(id INTEGER PRIMARY KEY, payload BLOB, state INTEGER)";
/// Only pending rows are indexed: a claim then reads the next pending ids from the index
/// instead of walking past every in-flight and done row kept in the table, and an item
/// leaves the index once, when it is claimed.
const CREATE_PENDING_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(id) WHERE state = 0";
const INSERT: &str = "INSERT INTO outbox(payload, state) VALUES (?1, 0)";
const SELECT_PENDING: &str = "SELECT id, payload FROM outbox WHERE state = 0 ORDER BY id LIMIT ?1";
const MARK_IN_FLIGHT: &str = "UPDATE outbox SET state = 1 WHERE id = ?1 AND state = 0";
const MARK_DONE: &str = "UPDATE outbox SET state = 2 WHERE id = ?1 AND state = 1";
const DELETE: &str = "DELETE FROM outbox WHERE id = ?1";
const COUNT_STATE: &str = "SELECT count(*) FROM outbox WHERE state = ?1";

/// The table's indexes: what a user would create decides what a claim and a count cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    /// The table plus a partial index of the pending rows: the same work as a hookspool
    /// backend, which keeps an index of each phase so that a claim never scans.
    Indexed,
    /// The bare table of `perf-baseline.md` (no index besides the rowid): the fastest
    /// pushes, but a claim walks past every row that is no longer pending.
    Bare,
}

impl Schema {
    /// Both schemas, in table order.
    pub const ALL: [Schema; 2] = [Schema::Indexed, Schema::Bare];

    /// The name used in case ids and child arguments.
    pub fn name(self) -> &'static str {
        match self {
            Schema::Indexed => "indexed",
            Schema::Bare => "bare",
        }
    }

    /// The name printed in tables.
    pub fn label(self) -> &'static str {
        match self {
            Schema::Indexed => "SQLite, pending index",
            Schema::Bare => "SQLite, bare table",
        }
    }

    /// Parses [`Schema::name`].
    pub fn parse(name: &str) -> BenchResult<Schema> {
        Schema::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| format!("unknown SQLite schema {name:?}").into())
    }
}

/// How concurrent producers reach the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writers {
    /// One connection behind a `Mutex`, each producer holding it for its own transaction.
    /// SQLite admits one writer at a time anyway; this is the usual advice for a service
    /// (a single writer connection), and it hands the lock straight to a waiting thread.
    SharedConnection,
    /// A connection per producer thread with [`BUSY_TIMEOUT`]: producers that lose the
    /// race for the WAL write lock sleep in SQLite's busy handler (1 ms up to 100 ms steps)
    /// instead of being woken when the lock is free.
    ConnectionPerThread,
}

impl Writers {
    /// The name used in child arguments.
    pub fn name(self) -> &'static str {
        match self {
            Writers::SharedConnection => "shared",
            Writers::ConnectionPerThread => "per-thread",
        }
    }

    /// Parses [`Writers::name`].
    pub fn parse(name: &str) -> BenchResult<Writers> {
        [Writers::SharedConnection, Writers::ConnectionPerThread]
            .into_iter()
            .find(|w| w.name() == name)
            .ok_or_else(|| format!("unknown SQLite writers {name:?}").into())
    }
}

/// One line for a bench header: which SQLite is measured, and how it is set up.
pub fn describe() -> String {
    format!(
        "SQLite {} (rusqlite, bundled), journal_mode=WAL, synchronous=FULL, \
         table outbox(id INTEGER PRIMARY KEY, payload BLOB, state INTEGER), prepared statements",
        rusqlite::version()
    )
}

/// Opens (creating if needed) the outbox database in `dir`: WAL, `synchronous=FULL`, the
/// table, and the index of `schema`. Checks that both pragmas took effect, since SQLite
/// ignores a journal mode it cannot use instead of failing.
pub fn open(dir: &Path, schema: Schema) -> BenchResult<Connection> {
    let conn = Connection::open(dir.join(DB_FILE))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!("SQLite refused WAL mode (journal_mode is {mode})").into());
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    let sync: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0))?;
    if sync != 2 {
        return Err(format!("SQLite synchronous is {sync}, not FULL (2)").into());
    }
    conn.execute_batch(CREATE_TABLE)?;
    if schema == Schema::Indexed {
        conn.execute_batch(CREATE_PENDING_INDEX)?;
    }
    Ok(conn)
}

/// `LIMIT` argument of a claim or pop of one batch.
fn batch_limit() -> BenchResult<i64> {
    Ok(i64::try_from(BATCH)?)
}

fn insert(conn: &Connection, payload: &[u8]) -> BenchResult<()> {
    conn.prepare_cached(INSERT)?.execute([payload])?;
    Ok(())
}

/// Inserts `len` items numbered from `first` in one `BEGIN IMMEDIATE` transaction.
fn insert_batch(conn: &mut Connection, first: usize, len: usize) -> BenchResult<()> {
    let mut buf = [0u8; PAYLOAD_LEN];
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut stmt = tx.prepare_cached(INSERT)?;
        for seq in first..first + len {
            fill_payload(&mut buf, seq as u64);
            stmt.execute([&buf[..]])?;
        }
    }
    tx.commit()?;
    Ok(())
}

fn count_state(conn: &Connection, state: i64) -> BenchResult<u64> {
    let n: i64 = conn.query_row(COUNT_STATE, [state], |r| r.get(0))?;
    Ok(u64::try_from(n)?)
}

/// Checks that `expect` rows are pending, closes the database and records its disk usage
/// (with the last connection closed SQLite checkpoints and removes the WAL).
fn finish(conn: Connection, dir: &Path, expect: usize, m: &mut Metrics) -> BenchResult<()> {
    let count = count_state(&conn, PENDING)?;
    if count != expect as u64 {
        return Err(format!("inserted {expect} rows but {count} are pending").into());
    }
    conn.close().map_err(|(_, e)| e)?;
    record_disk(m, "disk", dir)?;
    Ok(())
}

fn latency(m: &mut Metrics, lat: &mut [Duration]) {
    m.insert("p50_us".into(), percentile_us(lat, 50));
    m.insert("p99_us".into(), percentile_us(lat, 99));
}

/// One producer, one `INSERT` per autocommit transaction (durable when it returns).
pub fn push_per_call(dir: &Path, schema: Schema, n: usize) -> BenchResult<Metrics> {
    let conn = open(dir, schema)?;
    let mut buf = [0u8; PAYLOAD_LEN];
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for seq in 0..n {
        fill_payload(&mut buf, seq as u64);
        let t = Instant::now();
        insert(&conn, &buf)?;
        lat.push(t.elapsed());
    }
    let secs = start.elapsed().as_secs_f64();
    let mut m = Metrics::from([("ops".into(), n as f64), ("secs".into(), secs)]);
    latency(&mut m, &mut lat);
    finish(conn, dir, n, &mut m)?;
    Ok(m)
}

/// `threads` OS threads sharing `n` items (rounded up to a multiple), each inserting one
/// item per autocommit transaction, reaching the database as `writers` says. A call's
/// latency includes waiting for the connection or the write lock.
pub fn push_concurrent(
    dir: &Path,
    schema: Schema,
    n: usize,
    threads: usize,
    writers: Writers,
) -> BenchResult<Metrics> {
    let shared = Arc::new(Mutex::new(open(dir, schema)?));
    let per = n.div_ceil(threads);
    let barrier = Arc::new(Barrier::new(threads + 1));
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        // Connections are opened before the clock starts, as a pool would have them.
        let own = match writers {
            Writers::SharedConnection => None,
            Writers::ConnectionPerThread => Some(open(dir, schema)?),
        };
        let (shared, barrier) = (Arc::clone(&shared), Arc::clone(&barrier));
        handles.push(thread::spawn(move || -> BenchResult<Vec<Duration>> {
            let mut buf = [0u8; PAYLOAD_LEN];
            let mut lat = Vec::with_capacity(per);
            barrier.wait();
            for i in 0..per {
                fill_payload(&mut buf, (t * per + i) as u64);
                let start = Instant::now();
                if let Some(conn) = &own {
                    insert(conn, &buf)?;
                } else {
                    let conn = shared.lock().unwrap_or_else(PoisonError::into_inner);
                    insert(&conn, &buf)?;
                }
                lat.push(start.elapsed());
            }
            Ok(lat)
        }));
    }
    barrier.wait();
    let start = Instant::now();
    let mut lat = Vec::with_capacity(per * threads);
    for h in handles {
        lat.extend(h.join().map_err(|_| "SQLite producer thread panicked")??);
    }
    let secs = start.elapsed().as_secs_f64();
    let ops = per * threads;
    let mut m = Metrics::from([("ops".into(), ops as f64), ("secs".into(), secs)]);
    latency(&mut m, &mut lat);
    let conn = Arc::try_unwrap(shared)
        .map_err(|_| "a producer still holds the connection")?
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    finish(conn, dir, ops, &mut m)?;
    Ok(m)
}

/// One producer, transactions of [`BATCH`] inserts; the latency is one transaction's.
pub fn push_batches(dir: &Path, schema: Schema, n: usize) -> BenchResult<Metrics> {
    let mut conn = open(dir, schema)?;
    let mut lat = Vec::with_capacity(n / BATCH + 1);
    let start = Instant::now();
    let mut done = 0;
    while done < n {
        let len = BATCH.min(n - done);
        let t = Instant::now();
        insert_batch(&mut conn, done, len)?;
        lat.push(t.elapsed());
        done += len;
    }
    let secs = start.elapsed().as_secs_f64();
    let mut m = Metrics::from([("ops".into(), n as f64), ("secs".into(), secs)]);
    latency(&mut m, &mut lat);
    finish(conn, dir, n, &mut m)?;
    Ok(m)
}

/// Inserts `n` pending items in transactions of [`BATCH`] (a pre-fill, or the timed fill
/// of the reopen bench), closes the database and records its disk usage.
pub fn fill(dir: &Path, schema: Schema, n: usize) -> BenchResult<Metrics> {
    let mut conn = open(dir, schema)?;
    let start = Instant::now();
    let mut done = 0;
    while done < n {
        let len = BATCH.min(n - done);
        insert_batch(&mut conn, done, len)?;
        done += len;
    }
    let secs = start.elapsed().as_secs_f64();
    let mut m = Metrics::from([("ops".into(), n as f64), ("secs".into(), secs)]);
    finish(conn, dir, n, &mut m)?;
    Ok(m)
}

/// Reads the next [`BATCH`] pending rows (id and payload, as a claim returns items) into
/// `out`, inside the caller's transaction.
fn select_pending(conn: &Connection, out: &mut Vec<(i64, Vec<u8>)>) -> BenchResult<()> {
    out.clear();
    let mut stmt = conn.prepare_cached(SELECT_PENDING)?;
    let mut rows = stmt.query([batch_limit()?])?;
    while let Some(row) = rows.next()? {
        out.push((row.get(0)?, row.get(1)?));
    }
    Ok(())
}

/// Runs `sql` (one `?1` id parameter) for each of `rows`, requiring each to change one row.
fn each_row(conn: &Connection, sql: &str, rows: &[(i64, Vec<u8>)]) -> BenchResult<()> {
    let mut stmt = conn.prepare_cached(sql)?;
    for (id, _) in rows {
        if stmt.execute([id])? != 1 {
            return Err(format!("{sql:?} did not change row {id}").into());
        }
    }
    Ok(())
}

/// How a claimed batch is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ack {
    /// One `UPDATE` per autocommit transaction: one durable commit per item, like a
    /// hookspool `ack` call.
    PerItem,
    /// The whole claimed batch in one transaction.
    PerBatch,
}

/// Pre-fills `n` items (not timed), then until all are done: claims [`BATCH`] pending rows
/// in one `BEGIN IMMEDIATE` transaction (select, mark in flight, commit) and acks them
/// (marks them done, keeping the rows like hookspool's `Retention::Keep`) as `ack` says.
/// The latency is one ack commit's.
pub fn claim_ack(dir: &Path, schema: Schema, n: usize, ack: Ack) -> BenchResult<Metrics> {
    fill(dir, schema, n)?;
    let mut conn = open(dir, schema)?;
    let mut claimed = Vec::with_capacity(BATCH);
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    let mut done = 0;
    while done < n {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        select_pending(&tx, &mut claimed)?;
        each_row(&tx, MARK_IN_FLIGHT, &claimed)?;
        tx.commit()?;
        if claimed.is_empty() {
            return Err(format!("claim found nothing after {done} of {n} items").into());
        }
        match ack {
            Ack::PerItem => {
                let mut stmt = conn.prepare_cached(MARK_DONE)?;
                for (id, _) in &claimed {
                    let t = Instant::now();
                    if stmt.execute([id])? != 1 {
                        return Err(format!("ack of row {id} changed nothing").into());
                    }
                    lat.push(t.elapsed());
                }
            }
            Ack::PerBatch => {
                let t = Instant::now();
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                each_row(&tx, MARK_DONE, &claimed)?;
                tx.commit()?;
                lat.push(t.elapsed());
            }
        }
        done += claimed.len();
    }
    let secs = start.elapsed().as_secs_f64();
    let acked = count_state(&conn, DONE)?;
    if acked != n as u64 {
        return Err(format!("acked {n} rows but {acked} are done").into());
    }
    let mut m = Metrics::from([("ops".into(), n as f64), ("secs".into(), secs)]);
    latency(&mut m, &mut lat);
    conn.close().map_err(|(_, e)| e)?;
    record_disk(&mut m, "disk", dir)?;
    Ok(m)
}

/// Opens the database [`fill`] wrote and counts its pending rows. SQLite keeps no row
/// count: the count reads the pending index (or the whole table, bare).
pub fn reopen_count(dir: &Path, schema: Schema, n: usize) -> BenchResult<Metrics> {
    let start = Instant::now();
    let conn = open(dir, schema)?;
    let opened = start.elapsed();
    let count = count_state(&conn, PENDING)?;
    let total = start.elapsed();
    if count != n as u64 {
        return Err(format!("reopened database counts {count} pending rows, expected {n}").into());
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok(Metrics::from([
        ("open_ms".into(), ms(opened)),
        ("count_ms".into(), ms(total.saturating_sub(opened))),
        ("total_ms".into(), ms(total)),
    ]))
}

fn pragma_i64(conn: &Connection, name: &str) -> BenchResult<f64> {
    let v: i64 = conn.pragma_query_value(None, name, |r| r.get(0))?;
    Ok(v as f64)
}

/// Opens the database [`fill`] wrote and pops everything, [`BATCH`] rows per
/// `BEGIN IMMEDIATE` transaction (select, delete, commit), like hookspool's drain with
/// `Retention::Remove`. Then records the disk usage at each step of giving space back:
/// `disk_drained` with the connection still open (the WAL as the automatic checkpoints left
/// it), `disk_truncated` after `PRAGMA wal_checkpoint(TRUNCATE)`, `disk` after closing, and
/// `disk_vacuumed` after a `VACUUM` (only that shrinks the database file: freed pages stay in
/// it, on its freelist, counted in `free_pages`).
pub fn drain(dir: &Path, schema: Schema, n: usize) -> BenchResult<Metrics> {
    let mut conn = open(dir, schema)?;
    let mut popped = Vec::with_capacity(BATCH);
    let start = Instant::now();
    let mut done = 0;
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        select_pending(&tx, &mut popped)?;
        each_row(&tx, DELETE, &popped)?;
        tx.commit()?;
        if popped.is_empty() {
            break;
        }
        done += popped.len();
    }
    let secs = start.elapsed().as_secs_f64();
    if done != n {
        return Err(format!("drained {done} rows, expected {n}").into());
    }
    let left: i64 = conn.query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))?;
    if left != 0 {
        return Err(format!("{left} rows left after draining").into());
    }
    let mut m = Metrics::from([("ops".into(), n as f64), ("secs".into(), secs)]);
    record_disk(&mut m, "disk_drained", dir)?;
    m.insert("free_pages".into(), pragma_i64(&conn, "freelist_count")?);
    m.insert("pages".into(), pragma_i64(&conn, "page_count")?);
    // The result row is (busy, WAL frames, frames checkpointed); busy = 1 would mean a
    // reader blocked it, which cannot happen with one connection.
    let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
    if busy != 0 {
        return Err("wal_checkpoint(TRUNCATE) was blocked".into());
    }
    record_disk(&mut m, "disk_truncated", dir)?;
    conn.close().map_err(|(_, e)| e)?;
    record_disk(&mut m, "disk", dir)?;
    let conn = open(dir, schema)?;
    conn.execute_batch("VACUUM")?;
    conn.close().map_err(|(_, e)| e)?;
    record_disk(&mut m, "disk_vacuumed", dir)?;
    Ok(m)
}
