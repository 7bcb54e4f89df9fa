//! Benchmark: how fast can items be pushed durably? 256-byte payloads from 1 producer (one
//! item per call), from 64 concurrent producers (tokio tasks, one item per call) and in
//! batches of 1024 per call, on every backend and durability mode, each printed as a ratio
//! to the raw disk baseline and to SQLite doing the same pushes (WAL, `synchronous=FULL`),
//! both measured in the same run.
//!
//! `cargo bench -p hookspool-benches --bench push [-- FILTER]`; counts and runs come from
//! `HOOKSPOOL_BENCH_N`, `HOOKSPOOL_BENCH_N_DURABLE`, `HOOKSPOOL_BENCH_N_GROUP`,
//! `HOOKSPOOL_BENCH_RUNS`.
// Counts and byte sizes stay far below 2^52, where f64 would start rounding them.
#![allow(clippy::cast_precision_loss)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use hookspool::{NewItem, QueueId, Retention};

use common::backends::{AnyStore, Mode, create_queue, runtime};
use common::raw::{self, percentile_us};
use common::sqlite::{self, Schema, Writers};
use common::table::{Table, disk, median, micros, p50_ratio_to, rate, ratio_to, rss_mib, spread};
use common::{
    BATCH, BenchResult, ChildArgs, Metrics, PRODUCERS, Samples, Settings, child_main, data_root,
    payload, print_footer, print_header, record_disk, run_case, scratch,
};

fn main() -> BenchResult<()> {
    if child_main(child)? {
        return Ok(());
    }
    parent()
}

// ---- parent: plans the runs, prints the tables ------------------------------------------

/// One measurement of the plan: `id` names it in the samples, `case` tells the child what
/// to run; a hookspool case has a `mode`, a SQLite case a `schema`, a raw case neither.
struct Planned {
    id: String,
    case: &'static str,
    mode: Option<Mode>,
    schema: Option<Schema>,
    n: usize,
}

const RAW_PER_RECORD: &str = "raw-per-record";
const RAW_GROUP: &str = "raw-group";
const RAW_PER_BATCH: &str = "raw-per-batch";
const RAW_ONE_WRITE: &str = "raw-one-write";

/// The push shapes: the hookspool case, the SQLite case doing the same pushes, the shape's
/// description, and the raw baseline it is compared with.
const SHAPES: [(&str, &str, &str, &str, &str); 3] = [
    (
        "push-1",
        "sqlite-push-1",
        "1 producer × 1 item/call",
        RAW_PER_RECORD,
        "fdatasync per record",
    ),
    (
        "push-64",
        "sqlite-push-64",
        "64 tasks × 1 item/call",
        RAW_GROUP,
        "group commit, 64 threads",
    ),
    (
        "push-batch",
        "sqlite-push-batch",
        "1 producer × 1024 items/call",
        RAW_PER_BATCH,
        "fdatasync per 1024",
    ),
];

/// The id of the SQLite case of shape `case` with `schema` in the samples.
fn sqlite_id(case: &str, schema: Schema) -> String {
    format!("sqlite-{case} {}", schema.name())
}

fn parent() -> BenchResult<()> {
    let settings = Settings::from_env()?;
    let n = settings.count("HOOKSPOOL_BENCH_N", 100_000, 2_048)?;
    let n_durable = settings.count("HOOKSPOOL_BENCH_N_DURABLE", 2_000, 64)?;
    let n_group = settings.count("HOOKSPOOL_BENCH_N_GROUP", 10_000, 256)?;
    let (root, fs_desc) = data_root(env!("CARGO_TARGET_TMPDIR"))?;
    print_header(
        "push",
        &settings,
        &fs_desc,
        &[
            ("HOOKSPOOL_BENCH_N (batches, memory)", n),
            (
                "HOOKSPOOL_BENCH_N_DURABLE (1 producer, sled per call)",
                n_durable,
            ),
            (
                "HOOKSPOOL_BENCH_N_GROUP (64 producers, sled per call)",
                n_group,
            ),
        ],
    );
    println!("- {}\n", sqlite::describe());

    let mut plan = vec![
        raw_case(RAW_PER_RECORD, n_durable),
        raw_case(RAW_GROUP, n_group),
        raw_case(RAW_PER_BATCH, n),
        raw_case(RAW_ONE_WRITE, n),
    ];
    for mode in Mode::ALL {
        for (case, ..) in SHAPES {
            let n = match (case, mode.waits_for_disk_per_call()) {
                ("push-1", true) => n_durable,
                ("push-64", true) => n_group,
                _ => n,
            };
            let id = format!("{case} {}", mode.name());
            if settings.wants(&id) {
                plan.push(Planned {
                    id,
                    case,
                    mode: Some(mode),
                    schema: None,
                    n,
                });
            }
        }
    }
    // SQLite commits wait for an fsync, so it gets the counts of the durable modes.
    for schema in Schema::ALL {
        for (case, sqlite_case, ..) in SHAPES {
            let n = match case {
                "push-1" => n_durable,
                "push-64" => n_group,
                _ => n,
            };
            let id = sqlite_id(case, schema);
            if settings.wants(&id) {
                plan.push(Planned {
                    id,
                    case: sqlite_case,
                    mode: None,
                    schema: Some(schema),
                    n,
                });
            }
        }
    }

    let mut samples = Samples::default();
    for round in 1..=settings.runs {
        eprintln!("push: round {round}/{}", settings.runs);
        for p in &plan {
            let dir = scratch(&root, &p.id.replace(' ', "-"))?;
            let mut args = vec![
                ("dir", dir.path().display().to_string()),
                ("n", p.n.to_string()),
            ];
            if let Some(mode) = p.mode {
                args.push(("mode", mode.name().to_owned()));
            }
            if let Some(schema) = p.schema {
                args.push(("schema", schema.name().to_owned()));
                args.push(("writers", Writers::SharedConnection.name().to_owned()));
            }
            run_case(&mut samples, &p.id, p.case, &args)?;
        }
    }
    print_raw(&samples, &plan);
    print_push(&samples, &plan);
    print_versus_sqlite(&samples);
    print_footer();
    Ok(())
}

fn raw_case(case: &'static str, n: usize) -> Planned {
    Planned {
        id: case.to_owned(),
        case,
        mode: None,
        schema: None,
        n,
    }
}

fn planned_n(plan: &[Planned], id: &str) -> String {
    plan.iter()
        .find(|p| p.id == id)
        .map_or_else(|| "-".into(), |p| p.n.to_string())
}

fn print_raw(samples: &Samples, plan: &[Planned]) {
    let mut t = Table::new(
        "Raw disk baseline (same run, same filesystem; 256 B records appended to a new file)",
        &[
            "measurement",
            "N",
            "ops/s",
            "µs/op median (min..max)",
            "p50 / p99 µs per call",
            "fdatasyncs",
            "peak RSS MiB",
        ],
    );
    let rows = [
        (RAW_PER_RECORD, "write + fdatasync per record"),
        (
            RAW_GROUP,
            "64 threads, leader/follower group commit (each waits for its fdatasync)",
        ),
        (RAW_PER_BATCH, "write per record, fdatasync per 1024"),
        (RAW_ONE_WRITE, "1024 records per write + fdatasync (info)"),
    ];
    for (id, what) in rows {
        let lat = match (samples.get(id, "p50_us"), samples.get(id, "p99_us")) {
            (Some(a), Some(b)) => format!("{} / {}", micros(a.median), micros(b.median)),
            _ => "-".into(),
        };
        let syncs = median(samples.get(id, "fdatasyncs"), |x| format!("{x:.0}"));
        let syncs = match samples.get(id, "avg_batch") {
            Some(b) => format!("{syncs} (avg batch {:.1})", b.median),
            None if id == RAW_PER_RECORD => planned_n(plan, id),
            None => syncs,
        };
        t.row(vec![
            what.into(),
            planned_n(plan, id),
            median(samples.get(id, "ops_per_s"), rate),
            spread(samples.get(id, "us_per_op"), micros),
            lat,
            syncs,
            rss_mib(samples, id),
        ]);
    }
    t.print();
}

fn print_push(samples: &Samples, plan: &[Planned]) {
    let mut t = Table::new(
        "Push (256 B payloads; a periodic mode's time includes its final sync())",
        &[
            "backend / mode",
            "shape",
            "N",
            "ops/s",
            "µs/op median (min..max)",
            "p50 / p99 µs per call",
            "ratio to raw",
            "p50 ratio",
            "raw baseline",
            "ratio to SQLite (index / bare)",
            "peak RSS MiB",
            "disk after push MB (apparent / alloc)",
        ],
    );
    // Hookspool rows first (every mode of `Mode::ALL`, as planned), then SQLite's.
    let rows = plan
        .iter()
        .filter(|p| p.mode.is_some())
        .chain(plan.iter().filter(|p| p.schema.is_some()));
    for p in rows {
        let Some((case, _, shape, base, base_name)) =
            SHAPES.iter().find(|s| s.0 == p.case || s.1 == p.case)
        else {
            continue;
        };
        let (label, vs_sqlite) = match (p.mode, p.schema) {
            (Some(mode), _) => (mode.label(), versus_sqlite(samples, &p.id, case)),
            (None, Some(schema)) => (schema.label(), "-".into()),
            (None, None) => continue,
        };
        let lat = match (samples.get(&p.id, "p50_us"), samples.get(&p.id, "p99_us")) {
            (Some(a), Some(b)) => format!("{} / {}", micros(a.median), micros(b.median)),
            _ => "-".into(),
        };
        t.row(vec![
            label.into(),
            (*shape).into(),
            p.n.to_string(),
            median(samples.get(&p.id, "ops_per_s"), rate),
            spread(samples.get(&p.id, "us_per_op"), micros),
            lat,
            ratio_to(samples, &p.id, base),
            if *case == "push-batch" {
                "-".into()
            } else {
                p50_ratio_to(samples, &p.id, base)
            },
            (*base_name).into(),
            vs_sqlite,
            rss_mib(samples, &p.id),
            disk(samples, &p.id, "disk"),
        ]);
    }
    t.print();
    println!(
        "ops/s = items per second; ratio = ops/s ÷ the raw baseline's ops/s (>1 means faster \
         than the disk limit, possible only when not syncing per call); p50 ratio = the raw \
         baseline's median call latency ÷ this case's (robust to stalls caused by other \
         processes sharing the disk); ratio to SQLite = hookspool ops/s ÷ SQLite's ops/s for \
         the same shape, with the pending index / with the bare table. SQLite: one call = one \
         transaction (autocommit INSERT, or BEGIN IMMEDIATE + 1024 INSERTs + COMMIT), each \
         durable at commit (WAL fsync'ed, synchronous=FULL). 64 producers = 64 OS threads \
         sharing one connection behind a Mutex, each holding it for its own one-INSERT \
         transaction (SQLite admits one writer at a time; a connection per thread with a busy \
         timeout makes the losers sleep in the busy handler instead). \"pending index\" = \
         CREATE INDEX … ON outbox(id) WHERE state = 0, what a claim needs so as not to scan \
         (hookspool keeps such an index too); \"bare table\" = perf-baseline.md's table alone. \
         Disk usage is measured after the store or database is closed (closing SQLite's last \
         connection checkpoints and removes the WAL).\n"
    );
}

/// `a× / b×`: the ops/s of hookspool case `id` ÷ SQLite's of shape `case`, with each schema.
fn versus_sqlite(samples: &Samples, id: &str, case: &str) -> String {
    let ratios: Vec<String> = Schema::ALL
        .into_iter()
        .map(|schema| ratio_to(samples, id, &sqlite_id(case, schema)))
        .collect();
    ratios.join(" / ")
}

/// One row per shape, one column per hookspool mode (whatever `Mode::ALL` holds), each cell
/// that mode's ops/s as ratios to the raw baseline and to SQLite: the targets at a
/// glance.
fn print_versus_sqlite(samples: &Samples) {
    let mut header = vec![
        "shape".to_owned(),
        "raw ops/s".to_owned(),
        "SQLite ops/s (index / bare)".to_owned(),
        "SQLite ÷ raw (index)".to_owned(),
    ];
    header.extend(
        Mode::ALL
            .iter()
            .map(|m| format!("{}: ops/s, ÷ raw, ÷ SQLite (index / bare)", m.label())),
    );
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut t = Table::new(
        "Push versus the raw disk and SQLite (same run, medians)",
        &header,
    );
    for (case, _, shape, base, _) in SHAPES {
        let indexed = sqlite_id(case, Schema::Indexed);
        let sqlite_rates: Vec<String> = Schema::ALL
            .into_iter()
            .map(|s| median(samples.get(&sqlite_id(case, s), "ops_per_s"), rate))
            .collect();
        let mut row = vec![
            shape.to_owned(),
            median(samples.get(base, "ops_per_s"), rate),
            sqlite_rates.join(" / "),
            ratio_to(samples, &indexed, base),
        ];
        for mode in Mode::ALL {
            let id = format!("{case} {}", mode.name());
            row.push(if samples.count(&id) == 0 {
                "-".into()
            } else {
                format!(
                    "{}, {}, {}",
                    median(samples.get(&id, "ops_per_s"), rate),
                    ratio_to(samples, &id, base),
                    versus_sqlite(samples, &id, case)
                )
            });
        }
        t.row(row);
    }
    t.print();
}

// ---- child: one measurement ---------------------------------------------------------------

fn child(case: &str, args: &ChildArgs) -> BenchResult<Metrics> {
    let dir = args.path("dir")?;
    let n = args.usize("n")?;
    match case {
        RAW_PER_RECORD => raw::per_record(&dir, n),
        RAW_GROUP => raw::group_commit(&dir, n, PRODUCERS),
        RAW_PER_BATCH => raw::per_batch(&dir, n, BATCH),
        RAW_ONE_WRITE => raw::one_write_per_batch(&dir, n),
        "push-1" | "push-64" | "push-batch" => {
            let mode = Mode::parse(args.str("mode")?)?;
            runtime()?.block_on(push_case(case, mode, &dir, n))
        }
        "sqlite-push-1" | "sqlite-push-64" | "sqlite-push-batch" => {
            let schema = Schema::parse(args.str("schema")?)?;
            match case {
                "sqlite-push-1" => sqlite::push_per_call(&dir, schema, n),
                "sqlite-push-64" => {
                    let writers = Writers::parse(args.str("writers")?)?;
                    sqlite::push_concurrent(&dir, schema, n, PRODUCERS, writers)
                }
                _ => sqlite::push_batches(&dir, schema, n),
            }
        }
        _ => Err(format!("unknown case {case:?}").into()),
    }
}

async fn push_case(case: &str, mode: Mode, dir: &Path, n: usize) -> BenchResult<Metrics> {
    let store = mode.open(dir)?;
    let queue = create_queue(&store, Retention::Keep).await?;
    let start = Instant::now();
    let (ops, mut lat) = match case {
        "push-1" => (n, push_one_producer(&store, &queue, n).await?),
        "push-64" => push_producers(&store, &queue, n).await?,
        _ => (n, push_batches(&store, &queue, n).await?),
    };
    // For a periodic mode, pushes are durable only once this returns.
    store.sync().await?;
    let secs = start.elapsed().as_secs_f64();

    let count = store.count(&queue).await?;
    if count != ops as u64 {
        return Err(format!("pushed {ops} items but the queue counts {count}").into());
    }
    let mut m = Metrics::from([("ops".into(), ops as f64), ("secs".into(), secs)]);
    if !lat.is_empty() {
        m.insert("p50_us".into(), percentile_us(&mut lat, 50));
        m.insert("p99_us".into(), percentile_us(&mut lat, 99));
    }
    if mode.on_disk() {
        drop(store);
        record_disk(&mut m, "disk", dir)?;
    }
    Ok(m)
}

/// One producer, one item per call; returns each call's latency.
async fn push_one_producer(
    store: &AnyStore,
    queue: &QueueId,
    n: usize,
) -> BenchResult<Vec<Duration>> {
    let mut lat = Vec::with_capacity(n);
    for seq in 0..n {
        let item = NewItem::new(payload(seq as u64));
        let t = Instant::now();
        store.push(queue, item).await?;
        lat.push(t.elapsed());
    }
    Ok(lat)
}

/// [`PRODUCERS`] tasks sharing `n` items (rounded up to a multiple), one item per call;
/// returns how many were pushed and each call's latency.
async fn push_producers(
    store: &AnyStore,
    queue: &QueueId,
    n: usize,
) -> BenchResult<(usize, Vec<Duration>)> {
    let per = n.div_ceil(PRODUCERS);
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..PRODUCERS {
        let (store, queue) = (store.clone(), queue.clone());
        tasks.spawn(async move {
            let mut lat = Vec::with_capacity(per);
            for i in 0..per {
                let item = NewItem::new(payload((p * per + i) as u64));
                let t = Instant::now();
                store.push(&queue, item).await?;
                lat.push(t.elapsed());
            }
            Ok::<_, hookspool::Error>(lat)
        });
    }
    let mut lat = Vec::with_capacity(per * PRODUCERS);
    while let Some(done) = tasks.join_next().await {
        lat.extend(done??);
    }
    Ok((per * PRODUCERS, lat))
}

/// One producer, [`BATCH`] items per call; returns each call's latency.
async fn push_batches(store: &AnyStore, queue: &QueueId, n: usize) -> BenchResult<Vec<Duration>> {
    let mut lat = Vec::with_capacity(n / BATCH + 1);
    let mut done = 0;
    while done < n {
        let len = BATCH.min(n - done);
        let items = common::backends::batch(done, len);
        let t = Instant::now();
        store.push_batch(queue, items).await?;
        lat.push(t.elapsed());
        done += len;
    }
    Ok(lat)
}
