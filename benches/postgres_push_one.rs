//! Benchmark: one producer's push on PostgreSQL, taken apart.
//!
//! One producer pushes one item per call, each call its own committed transaction, for a
//! fixed time (`HOOKSPOOL_BENCH_SECS`, default 5 s). Each case runs in its own child
//! process, on one throwaway server (`TestServer`: `fsync=on`, `synchronous_commit=on`), the
//! cases alternating round by round (`HOOKSPOOL_BENCH_RUNS`, default 3; medians printed):
//!
//! - `insert`: the plain one-row `INSERT` into the `postgres` bench's `outbox` table (its
//!   baseline), sent with the push's five parameters (two unused);
//! - `push`: `Store::push` on `PostgresBackend`, what an application calls, the only
//!   backend on its schema (it sends no change notices: nobody else listens);
//! - `push-listened`: the same while a second backend is open on the schema, so that the
//!   first sends its change notices (`NOTIFY`, coalesced, every 5 ms at most), as a node
//!   among several does;
//! - `pool-statement`: the push statement of `statement` (below) sent as `push_rows` sends
//!   it, through the backend's own pool (`PostgresBackend::connection`, `prepare_cached`,
//!   `query_opt`), without the layers above it (`Store`, the combining lane, the notices);
//! - `statement`: the backend's own statement for a push of one item
//!   (`testing::push_one_statement`), prepared and sent by a bare tokio-postgres client: the
//!   item's row, and its count change appended to `count_changes` (schema version 7);
//! - `checks-v16`: the same statement on a table given back version 16's two CHECK
//!   constraints (`items_in_flight_have_a_lease_row`, `items_listed_by_phase`), which
//!   version 17 replaced with a trigger on updates: what checking them on every write cost
//!   a one-row push;
//! - `upsert-counter`: the statement as schema version 6 sent it, and as the backend still
//!   sends it while a snapshot is held open (`testing::push_one_upserting_statement`): the
//!   count as an upsert of the session's counter row;
//! - `no-counter`: the statement without its count: the item's `INSERT … SELECT` from its
//!   queue's row, nothing else;
//! - `row-only`: the item's `INSERT … VALUES` alone, the queue's generation and key
//!   sequence written in as constants (no lookup of the queue);
//! - `row-two-indexes`: the same with `items_by_phase` dropped, so that a pending item
//!   enters two indexes, as the baseline's row does.
//!
//! Each case checks that every push it timed was stored. The neighbours' differences give
//! what each part of the push costs one producer. The statement cases also report the CPU
//! the server spent per push (`/proc/<pid>/schedstat` of the session's server process; the
//! server runs on this machine).
//!
//! `cargo bench -p hookspool-benches --bench postgres_push_one [-- FILTER]`. Without
//! `--bench` (under `cargo test`) a smoke version makes a few pushes per case and times
//! nothing.
// Counts stay far below 2^52, where f64 would start rounding them.
#![allow(clippy::cast_precision_loss)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use hookspool::{NewItem, QueueConfig, QueueId, Retention, Store};
use hookspool_postgres::testing::{TestServer, push_one_statement, push_one_upserting_statement};
use hookspool_postgres::{PostgresBackend, PostgresOptions};
use tokio_postgres::types::{Json, Type};
use tokio_postgres::{Client, Statement};

use common::backends::{QUEUE, runtime};
use common::pg::{
    Run, Worked, check, checkpoint, connect, drive, drop_schema, figures, now_ms, seq, server_info,
    sql_create,
};
use common::table::{Table, median, micros, ratio, spread};
use common::{
    BenchResult, ChildArgs, Metrics, PAYLOAD_LEN, Samples, Settings, child_main, fill_payload,
    payload, print_footer, print_header, run_case,
};

fn main() -> BenchResult<()> {
    if child_main(child)? {
        return Ok(());
    }
    parent()
}

/// The cases, in the order they run in every round: id and what it measures.
const CASES: [(&str, &str); 10] = [
    (
        "insert",
        "plain one-row INSERT into the baseline's `outbox` (2 indexes)",
    ),
    ("push", "hookspool: `Store::push` of one item"),
    (
        "push-listened",
        "the same, another backend listening (change notices sent)",
    ),
    (
        "pool-statement",
        "the same statement through the backend's pool, as `push_rows` sends it",
    ),
    (
        "statement",
        "the backend's push statement, from a bare client (count appended)",
    ),
    (
        "checks-v16",
        "the same, with version 16's two CHECK constraints on the table",
    ),
    (
        "upsert-counter",
        "the same, counted by an upsert of a counter row (version 6's)",
    ),
    ("no-counter", "the statement without its count"),
    (
        "row-only",
        "the item's INSERT … VALUES alone (no queue lookup, no counter)",
    ),
    (
        "row-two-indexes",
        "the same, `items_by_phase` dropped (2 indexes written, as by the INSERT)",
    ),
];

/// The parameter types every statement case is prepared with: queue, payload, metadata,
/// not-before, now. Cases that do not use some of them still receive them.
const PARAMS: [Type; 5] = [Type::TEXT, Type::BYTEA, Type::JSON, Type::INT8, Type::INT8];

fn parent() -> BenchResult<()> {
    let settings = Settings::from_env()?;
    let runs = settings.runs;
    let secs = settings.count("HOOKSPOOL_BENCH_SECS", 5, 0)?;
    let started = Instant::now();
    eprintln!("postgres_push_one: starting a throwaway PostgreSQL server (initdb) ...");
    let server = TestServer::start();
    let url = server.url().to_owned();
    let info = runtime()?.block_on(server_info(&url))?;

    print_header(
        "postgres_push_one",
        &settings,
        "the throwaway server's data dir",
        &[("HOOKSPOOL_BENCH_SECS (per case)", secs)],
    );
    println!("- server: {info}");
    println!(
        "- client: tokio-postgres on a multi-threaded tokio runtime; one producer, one item \
         per call, each call committed before the next\n"
    );

    let (ms, calls) = if settings.smoke {
        (0, 6)
    } else {
        (secs * 1000, 0)
    };
    let args = vec![
        ("url", url.clone()),
        ("ms", ms.to_string()),
        ("calls", calls.to_string()),
        ("workers", "1".to_owned()),
        ("batch", "1".to_owned()),
        ("n", "0".to_owned()),
    ];
    let plan: Vec<_> = CASES
        .into_iter()
        .filter(|(id, _)| settings.wants(id))
        .collect();
    let mut samples = Samples::default();
    for round in 1..=runs {
        eprintln!("postgres_push_one: round {round}/{runs}");
        for (id, _) in &plan {
            run_case(&mut samples, id, id, &args)?;
        }
    }
    print_summary(&samples, &plan);
    println!(
        "- whole run: {:.0} s (server start included)",
        started.elapsed().as_secs_f64()
    );
    print_footer();
    drop(server);
    Ok(())
}

fn print_summary(samples: &Samples, plan: &[(&str, &str)]) {
    let insert = samples.get("insert", "ops_per_s").map(|s| s.median);
    let mut t = Table::new(
        "One producer, one item per push (medians; min..max)",
        &[
            "case",
            "what",
            "pushes/s",
            "of the INSERT",
            "p50 (µs)",
            "server CPU per push (µs)",
        ],
    );
    for (id, what) in plan {
        let ops = samples.get(id, "ops_per_s");
        let of_insert = match (ops, insert) {
            (Some(o), Some(i)) if i > 0.0 => ratio(o.median / i),
            _ => "-".into(),
        };
        t.row(vec![
            (*id).to_owned(),
            (*what).to_owned(),
            spread(ops, |x| format!("{x:.0}")),
            of_insert,
            median(samples.get(id, "p50_us"), micros),
            median(samples.get(id, "server_cpu_us"), micros),
        ]);
    }
    t.print();
    // What each part costs, as a share of the INSERT's rate: one case against its neighbour.
    let parts = [
        ("the backend's pool", "statement", "pool-statement"),
        ("the layers above the pool", "pool-statement", "push"),
        ("the change notices", "push", "push-listened"),
        ("version 16's CHECK constraints", "statement", "checks-v16"),
        ("the count appended", "no-counter", "statement"),
        (
            "the count as an upsert instead",
            "no-counter",
            "upsert-counter",
        ),
        ("the queue lookup", "row-only", "no-counter"),
        ("the index by phase", "row-two-indexes", "row-only"),
    ];
    for (part, without, with) in parts {
        let (Some(a), Some(b), Some(i)) = (
            samples.get(without, "ops_per_s"),
            samples.get(with, "ops_per_s"),
            insert,
        ) else {
            continue;
        };
        if i > 0.0 {
            println!(
                "- {part}: {:+.2}× of the INSERT's rate ({with} against {without})",
                (b.median - a.median) / i
            );
        }
    }
    println!();
}

// ---- child: one measurement ---------------------------------------------------------------

fn child(case: &str, args: &ChildArgs) -> BenchResult<Metrics> {
    let run = Run::from_args(args)?;
    runtime()?.block_on(async {
        match case {
            "push" => store_push(&run, false).await,
            "push-listened" => store_push(&run, true).await,
            "pool-statement" => pool_statement(&run).await,
            _ => statement(case, &run).await,
        }
    })
}

async fn open(run: &Run) -> BenchResult<(Store<PostgresBackend>, QueueId)> {
    let options = PostgresOptions::new(&run.url)
        .schema(&run.schema)
        .pool_size(4);
    let store = Store::new(PostgresBackend::open(options).await?);
    let queue = QueueId::new(QUEUE)?;
    store
        .create_queue(QueueConfig::new(queue.clone()).with_retention(Retention::Keep))
        .await?;
    Ok((store, queue))
}

/// `Store::push` one item at a time; `listened`: with a second backend open on the schema,
/// whose listener makes the first send its change notices.
async fn store_push(run: &Run, listened: bool) -> BenchResult<Metrics> {
    let admin = connect(&run.url).await?;
    let (store, queue) = open(run).await?;
    let other = if listened {
        let options = PostgresOptions::new(&run.url)
            .schema(&run.schema)
            .pool_size(1);
        let other = PostgresBackend::open(options).await?;
        // Its listener connects in the background: wait until the server shows it.
        let name = format!("hookspool listener {}", run.schema);
        let mut tries = 0;
        while admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&name],
            )
            .await?
            .get::<_, i64>(0)
            < 2
        {
            tries += 1;
            if tries > 500 {
                return Err("the second backend's listener did not connect within 5 s".into());
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Some(other)
    } else {
        None
    };
    // Warm-up, not timed: a prepared connection in the pool.
    store.push(&queue, NewItem::new(payload(u64::MAX))).await?;
    checkpoint(&admin).await?;
    let state = vec![(store.clone(), queue.clone())];
    let (worked, secs) = drive(run, state, |w, (store, queue), budget| async move {
        let mut done = Worked::default();
        while budget.more(done.calls.len()) {
            let t = Instant::now();
            store
                .push(&queue, NewItem::new(payload(seq(w, done.calls.len()))))
                .await?;
            done.calls.push(t.elapsed());
            done.rows += 1;
        }
        Ok(done)
    })
    .await?;
    drop(other);
    stored_and_dropped(&admin, run, store, &queue, worked, secs).await
}

/// Checks that a store case stored every push it timed (and its warm-up push), drops its
/// schema, and gives its figures.
async fn stored_and_dropped(
    admin: &Client,
    run: &Run,
    store: Store<PostgresBackend>,
    queue: &QueueId,
    worked: Worked,
    secs: f64,
) -> BenchResult<Metrics> {
    let count = store.count(queue).await?;
    check("items pushed", worked.rows + 1, i64::try_from(count)?)?;
    drop(store);
    drop_schema(admin, &run.schema).await?;
    Ok(figures(worked, secs))
}

/// The backend's push statement through the backend's own pool, as `push_rows` sends it
/// (`PostgresBackend::connection`, `prepare_cached`, `query_opt`), without the layers above.
async fn pool_statement(run: &Run) -> BenchResult<Metrics> {
    let admin = connect(&run.url).await?;
    let (store, queue) = open(run).await?;
    let backend = Arc::clone(store.backend());
    let text = push_one_statement(&run.schema);
    let call = |backend: Arc<PostgresBackend>, text: String, i: u64| async move {
        let mut buf = [0u8; PAYLOAD_LEN];
        fill_payload(&mut buf, i);
        let metadata = Json(BTreeMap::<String, String>::new());
        let not_before: Option<i64> = None;
        let conn = backend.connection().await?;
        let stmt = conn.prepare_cached(&text).await?;
        let row = conn
            .query_opt(
                &stmt,
                &[&QUEUE, &&buf[..], &metadata, &not_before, &now_ms()],
            )
            .await?;
        if row.is_none() {
            return Err::<(), Box<dyn std::error::Error + Send + Sync>>("no key".into());
        }
        Ok(())
    };
    call(Arc::clone(&backend), text.clone(), u64::MAX).await?;
    checkpoint(&admin).await?;
    let state = vec![(Arc::clone(&backend), text)];
    let (worked, secs) = drive(run, state, |w, (backend, text), budget| async move {
        let mut done = Worked::default();
        while budget.more(done.calls.len()) {
            let t = Instant::now();
            call(Arc::clone(&backend), text.clone(), seq(w, done.calls.len())).await?;
            done.calls.push(t.elapsed());
            done.rows += 1;
        }
        Ok(done)
    })
    .await?;
    drop(backend);
    stored_and_dropped(&admin, run, store, &queue, worked, secs).await
}

/// One of the statement cases: the text it sends, and the query counting what it stored.
async fn statement(case: &str, run: &Run) -> BenchResult<Metrics> {
    let admin = connect(&run.url).await?;
    let s = format!("\"{}\"", run.schema);
    let (text, stored) = if case == "insert" {
        sql_create(&admin, &run.schema).await?;
        (
            format!(
                "INSERT INTO {s}.outbox (queue, phase, payload, not_before) VALUES ($1, 0, $2, $5)"
            ),
            format!("SELECT count(*) FROM {s}.outbox"),
        )
    } else {
        let (store, _) = open(run).await?;
        drop(store);
        let row = admin
            .query_one(
                &format!("SELECT gen, key_seq::text FROM {s}.queues WHERE id = $1"),
                &[&QUEUE],
            )
            .await?;
        let (generation, key_seq): (i64, String) = (row.get(0), row.get(1));
        let text = match case {
            "statement" => push_one_statement(&run.schema),
            "checks-v16" => {
                admin
                    .batch_execute(&format!(
                        "ALTER TABLE {s}.items \
                         ADD CONSTRAINT items_in_flight_have_a_lease_row \
                             CHECK (lease_id IS NOT NULL OR phase <> 'in_flight'), \
                         ADD CONSTRAINT items_listed_by_phase \
                             CHECK (CASE WHEN phase IN ('in_flight', 'done') THEN listed IS NULL \
                                    ELSE listed IS NOT DISTINCT FROM phase END)"
                    ))
                    .await?;
                push_one_statement(&run.schema)
            }
            "upsert-counter" => push_one_upserting_statement(&run.schema),
            "no-counter" => format!("{INSERT_ITEM} {SELECT_FROM_QUEUE} RETURNING key"),
            "row-only" | "row-two-indexes" => {
                if case == "row-two-indexes" {
                    admin
                        .batch_execute(&format!("DROP INDEX {s}.items_by_phase"))
                        .await?;
                }
                format!(
                    "{INSERT_ITEM} VALUES ({generation}, nextval('{key_seq}'), 'pending', \
                     $5::bigint, $5, coalesce($4::bigint, $5), $3::json, $2::bytea, NULL) \
                     RETURNING key"
                )
            }
            other => return Err(format!("unknown case {other:?}").into()),
        };
        (
            text.replace("{schema}", &s),
            format!("SELECT count(*) FROM {s}.items WHERE gen = {generation}"),
        )
    };
    let client = Arc::new(connect(&run.url).await?);
    let stmt = client.prepare_typed(&text, &PARAMS).await?;
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await?
        .get(0);
    // Warm-up, not timed: the plan is made and cached.
    push_call(&client, &stmt, u64::MAX).await?;
    checkpoint(&admin).await?;
    let cpu_before = server_cpu_ns(pid)?;
    let state = vec![(Arc::clone(&client), stmt)];
    let (worked, secs) = drive(run, state, |w, (client, stmt), budget| async move {
        let mut done = Worked::default();
        while budget.more(done.calls.len()) {
            let t = Instant::now();
            push_call(&client, &stmt, seq(w, done.calls.len())).await?;
            done.calls.push(t.elapsed());
            done.rows += 1;
        }
        Ok(done)
    })
    .await?;
    let cpu = server_cpu_ns(pid)? - cpu_before;
    let rows: i64 = admin.query_one(&stored, &[]).await?.get(0);
    check("items pushed", worked.rows + 1, rows)?;
    let pushes = worked.rows as f64;
    let mut m = figures(worked, secs);
    if pushes > 0.0 {
        m.insert("server_cpu_us".into(), cpu as f64 / 1e3 / pushes);
    }
    drop(client);
    drop_schema(&admin, &run.schema).await?;
    Ok(m)
}

/// One call of a statement case: payload `i`, no metadata, due now.
async fn push_call(client: &Client, stmt: &Statement, i: u64) -> BenchResult<()> {
    let mut buf = [0u8; PAYLOAD_LEN];
    fill_payload(&mut buf, i);
    let metadata = Json(BTreeMap::<String, String>::new());
    let not_before: Option<i64> = None;
    client
        .execute(
            stmt,
            &[&QUEUE, &&buf[..], &metadata, &not_before, &now_ms()],
        )
        .await?;
    Ok(())
}

/// The item's columns, as the backend's push writes them.
const INSERT_ITEM: &str = "INSERT INTO {schema}.items (gen, key, phase, created_at, updated_at, \
     not_before, metadata, payload, ttl_from)";
/// The item's values from its queue's row, as the backend's push reads them.
const SELECT_FROM_QUEUE: &str = "SELECT gen, nextval(key_seq), 'pending', $5::bigint, $5, \
     coalesce($4::bigint, $5), $3::json, $2::bytea, \
     CASE WHEN ttl_ms IS NOT NULL THEN $5::bigint END \
     FROM {schema}.queues WHERE id = $1::text";

/// CPU time the process `pid` has used, in ns (`/proc/<pid>/schedstat`'s first field).
fn server_cpu_ns(pid: i32) -> BenchResult<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .map_err(|e| format!("cannot read the server process's CPU time (pid {pid}): {e}"))?;
    Ok(text
        .split_whitespace()
        .next()
        .ok_or("empty schedstat")?
        .parse()?)
}
