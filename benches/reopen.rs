//! Benchmark: what does a big queue cost? Reopen + count with 1,000,000 pending items (the
//! fill is not timed), bytes on disk after the push and after draining, and peak RSS, with
//! the raw disk baseline of the same run (append rates, and a full CRC-checked scan of a
//! plain log holding the same records as the reopen baseline) and SQLite holding the same
//! items (WAL, `synchronous=FULL`).
//!
//! Then the journal's memory per retained item: a queue holding 1,000,000 settled webhook
//! deliveries (claimed, then moved to `done` in batches whose moves replace the metadata with
//! an attempt log, as the webhook layer's `settle` does), closed, reopened in a fresh process
//! and counted; its resident set after that, minus the same process's before the open,
//! divided by the items. Beside it: the same items only pushed (pending), and only acked
//! (`done`, metadata untouched). `-- retained` runs these cases alone.
//!
//! `cargo bench -p hookspool-benches --bench reopen [-- FILTER]`; counts and runs come from
//! `HOOKSPOOL_BENCH_N_REOPEN`, `HOOKSPOOL_BENCH_N`, `HOOKSPOOL_BENCH_N_DURABLE`,
//! `HOOKSPOOL_BENCH_N_RETAINED`, `HOOKSPOOL_BENCH_RUNS`.
// Counts and byte sizes stay far below 2^52, where f64 would start rounding them.
#![allow(clippy::cast_precision_loss)]

mod common;
#[path = "reopen/retained.rs"]
mod retained;

use std::path::Path;
use std::time::{Duration, Instant};

use hookspool::Retention;

use common::backends::{Mode, create_queue, fill, queue_id, runtime};
use common::raw;
use common::sqlite::{self, Schema};
use common::table::{
    Table, disk, median, megabytes, micros, rate, ratio, ratio_to, rss_mib, spread,
};
use common::{
    BATCH, BenchResult, ChildArgs, Metrics, PAYLOAD_LEN, Samples, Settings, child_main, data_root,
    print_footer, print_header, record_disk, run_case, scratch,
};
use retained::{Retained, retained_fill, retained_memory, retained_reopen};

fn main() -> BenchResult<()> {
    if child_main(child)? {
        return Ok(());
    }
    parent()
}

const RAW_PER_RECORD: &str = "raw-per-record";
const RAW_PER_BATCH: &str = "raw-per-batch";
const RAW_SCAN_FILL: &str = "raw-scan-fill";
const RAW_SCAN: &str = "raw-scan";
const FILL: &str = "fill";
const REOPEN: &str = "reopen";
const DRAIN: &str = "drain";
const SQLITE_FILL: &str = "sqlite-fill";
const SQLITE_REOPEN: &str = "sqlite-reopen";
const SQLITE_DRAIN: &str = "sqlite-drain";
const RETAINED_FILL: &str = "retained-fill";
const RETAINED_REOPEN: &str = "retained-reopen";
/// The backend of the retained-memory cases: the journal, synced every 10 ms (the fill is
/// not what is measured; what a reopen holds does not depend on how writes were synced).
const RETAINED_MODE: Mode = Mode::JournalPeriodic;

/// What holds the big queue: a hookspool backend in one of its modes, or SQLite.
#[derive(Clone, Copy, Debug)]
enum Subject {
    Hookspool(Mode),
    Sqlite(Schema),
}

impl Subject {
    /// The subjects measured: the first on-disk mode of each backend (the part of
    /// [`Mode::name`] before its first '-': a backend's modes differ in how writes are
    /// synced, not in what is stored or how it reopens), then SQLite with each schema.
    fn all() -> Vec<Subject> {
        let mut backends: Vec<&str> = Vec::new();
        let mut subjects = Vec::new();
        for mode in Mode::ALL.into_iter().filter(|m| m.on_disk()) {
            let backend = mode.name().split('-').next().unwrap_or_default();
            if !backends.contains(&backend) {
                backends.push(backend);
                subjects.push(Subject::Hookspool(mode));
            }
        }
        subjects.extend(Schema::ALL.map(Subject::Sqlite));
        subjects
    }

    /// The id of step `case` (fill, reopen, drain) of this subject in the samples.
    fn id(self, case: &str) -> String {
        match self {
            Subject::Hookspool(mode) => format!("{case} {}", mode.name()),
            Subject::Sqlite(schema) => format!("sqlite-{case} {}", schema.name()),
        }
    }

    /// The child case running step `case` for this subject.
    fn child_case(self, case: &'static str) -> &'static str {
        match (self, case) {
            (Subject::Hookspool(_), _) => case,
            (Subject::Sqlite(_), FILL) => SQLITE_FILL,
            (Subject::Sqlite(_), REOPEN) => SQLITE_REOPEN,
            (Subject::Sqlite(_), _) => SQLITE_DRAIN,
        }
    }

    /// The name printed in tables.
    fn label(self) -> &'static str {
        match self {
            Subject::Hookspool(mode) => mode.label(),
            Subject::Sqlite(schema) => schema.label(),
        }
    }

    /// A scratch directory name.
    fn dir_name(self) -> String {
        self.id("data").replace(' ', "-")
    }

    /// Runs step `case` of this subject on `dir` holding `n` items.
    fn run(
        self,
        samples: &mut Samples,
        case: &'static str,
        dir: &tempfile::TempDir,
        n: usize,
    ) -> BenchResult<()> {
        let mut args = vec![
            ("dir", dir.path().display().to_string()),
            ("n", n.to_string()),
        ];
        match self {
            Subject::Hookspool(mode) => args.push(("mode", mode.name().into())),
            Subject::Sqlite(schema) => args.push(("schema", schema.name().into())),
        }
        run_case(samples, &self.id(case), self.child_case(case), &args)
    }
}

/// The ids of SQLite's step `case` with each schema, for ratio columns.
fn sqlite_ids(case: &str) -> Vec<String> {
    Schema::ALL
        .into_iter()
        .map(|s| Subject::Sqlite(s).id(case))
        .collect()
}

/// `a / b` of the median `key` of cases `a` and `b`.
fn key_ratio(samples: &Samples, a: &str, b: &str, key: &str) -> String {
    match (samples.get(a, key), samples.get(b, key)) {
        (Some(x), Some(y)) if y.median > 0.0 => ratio(x.median / y.median),
        _ => "-".into(),
    }
}

fn parent() -> BenchResult<()> {
    let settings = Settings::from_env()?;
    let n_big = settings.count("HOOKSPOOL_BENCH_N_REOPEN", 1_000_000, 4_096)?;
    let n = settings.count("HOOKSPOOL_BENCH_N", 100_000, 2_048)?;
    let n_durable = settings.count("HOOKSPOOL_BENCH_N_DURABLE", 2_000, 64)?;
    let n_retained = settings.count("HOOKSPOOL_BENCH_N_RETAINED", 1_000_000, 2_048)?;
    let (root, fs_desc) = data_root(env!("CARGO_TARGET_TMPDIR"))?;
    print_header(
        "reopen",
        &settings,
        &fs_desc,
        &[
            ("HOOKSPOOL_BENCH_N_REOPEN (queue size)", n_big),
            ("HOOKSPOOL_BENCH_N (raw per-1024 baseline)", n),
            (
                "HOOKSPOOL_BENCH_N_DURABLE (raw per-record baseline)",
                n_durable,
            ),
            (
                "HOOKSPOOL_BENCH_N_RETAINED (memory per retained item)",
                n_retained,
            ),
        ],
    );
    let subjects: Vec<Subject> = Subject::all()
        .into_iter()
        .filter(|s| settings.wants(&s.id(REOPEN)))
        .collect();
    let memory = settings.wants("fill memory");
    let retained: Vec<Retained> = Retained::ALL
        .into_iter()
        .filter(|r| settings.wants(r.name()))
        .collect();
    // A filter that selects only retained cases (`-- retained`) skips the big queue and its
    // raw baselines; any other filter runs them as before.
    if !subjects.is_empty() || memory || retained.is_empty() {
        let counts = BigCounts {
            n_big,
            n,
            n_durable,
        };
        big_queue(&settings, &root, &subjects, memory, counts)?;
    }
    if !retained.is_empty() {
        retained_memory(&settings, &root, &retained, n_retained)?;
    }
    print_footer();
    Ok(())
}

/// The counts of the big-queue cases.
#[derive(Clone, Copy, Debug)]
struct BigCounts {
    /// Items in the big queue.
    n_big: usize,
    /// Records of the raw per-1024 baseline.
    n: usize,
    /// Records of the raw per-record baseline.
    n_durable: usize,
}

#[allow(clippy::too_many_lines)] // one straight sequence: plan, run, print
fn big_queue(
    settings: &Settings,
    root: &Path,
    subjects: &[Subject],
    memory: bool,
    counts: BigCounts,
) -> BenchResult<()> {
    let BigCounts {
        n_big,
        n,
        n_durable,
    } = counts;
    println!("- {}\n", sqlite::describe());
    let mut samples = Samples::default();
    let big = |dir: &tempfile::TempDir| {
        vec![
            ("dir", dir.path().display().to_string()),
            ("n", n_big.to_string()),
        ]
    };

    // Filled once, reopened every round, drained at the end: filling is the slow part.
    eprintln!("reopen: filling");
    let scan_dir = scratch(root, RAW_SCAN)?;
    run_case(&mut samples, RAW_SCAN_FILL, RAW_SCAN_FILL, &big(&scan_dir))?;
    let mut dirs = Vec::with_capacity(subjects.len());
    for &subject in subjects {
        let dir = scratch(root, &subject.dir_name())?;
        subject.run(&mut samples, FILL, &dir, n_big)?;
        dirs.push((subject, dir));
    }
    for round in 1..=settings.runs {
        eprintln!("reopen: round {round}/{}", settings.runs);
        for (case, count) in [(RAW_PER_RECORD, n_durable), (RAW_PER_BATCH, n)] {
            let dir = scratch(root, case)?;
            let args = [
                ("dir", dir.path().display().to_string()),
                ("n", count.to_string()),
            ];
            run_case(&mut samples, case, case, &args)?;
        }
        run_case(&mut samples, RAW_SCAN, RAW_SCAN, &big(&scan_dir))?;
        for (subject, dir) in &dirs {
            subject.run(&mut samples, REOPEN, dir, n_big)?;
        }
        if memory {
            let dir = scratch(root, Mode::Memory.name())?;
            let mut args = big(&dir);
            args.push(("mode", Mode::Memory.name().into()));
            run_case(&mut samples, "fill memory", FILL, &args)?;
        }
    }
    eprintln!("reopen: draining");
    for (subject, dir) in &dirs {
        subject.run(&mut samples, DRAIN, dir, n_big)?;
    }

    let mut t = Table::new(
        "Raw disk baseline (same run, same filesystem)",
        &[
            "measurement",
            "N",
            "ops/s",
            "µs/op or ms median (min..max)",
            "peak RSS MiB",
        ],
    );
    for (id, what, count) in [
        (
            RAW_PER_RECORD,
            "append 256 B, write + fdatasync per record",
            n_durable,
        ),
        (
            RAW_PER_BATCH,
            "append 256 B, write per record, fdatasync per 1024",
            n,
        ),
        (
            RAW_SCAN_FILL,
            "write framed log ([len][crc32][256 B]), 1024 per write, 1 fdatasync (1 run)",
            n_big,
        ),
    ] {
        t.row(vec![
            what.into(),
            count.to_string(),
            median(samples.get(id, "ops_per_s"), rate),
            format!("{} µs/op", spread(samples.get(id, "us_per_op"), micros)),
            rss_mib(&samples, id),
        ]);
    }
    t.row(vec![
        "open + read the whole framed log, check every CRC, count (warm cache)".into(),
        n_big.to_string(),
        "-".into(),
        format!("{} ms", spread(samples.get(RAW_SCAN, "total_ms"), micros)),
        rss_mib(&samples, RAW_SCAN),
    ]);
    t.print();

    let sqlite_reopens = sqlite_ids(REOPEN);
    let mut t = Table::new(
        "Reopen + count (warm page cache: the data was just written)",
        &[
            "backend",
            "items",
            "open ms",
            "count ms",
            "open + count ms median (min..max)",
            "time ÷ raw scan",
            "time ÷ SQLite (index / bare)",
            "peak RSS MiB",
        ],
    );
    for (subject, _) in &dirs {
        let id = subject.id(REOPEN);
        let vs_sqlite = match subject {
            Subject::Hookspool(_) => sqlite_reopens
                .iter()
                .map(|s| key_ratio(&samples, &id, s, "total_ms"))
                .collect::<Vec<_>>()
                .join(" / "),
            Subject::Sqlite(_) => "-".into(),
        };
        t.row(vec![
            subject.label().into(),
            n_big.to_string(),
            median(samples.get(&id, "open_ms"), micros),
            median(samples.get(&id, "count_ms"), micros),
            spread(samples.get(&id, "total_ms"), micros),
            key_ratio(&samples, &id, RAW_SCAN, "total_ms"),
            vs_sqlite,
            rss_mib(&samples, &id),
        ]);
    }
    t.print();
    println!(
        "A hookspool backend opens and counts its queue; SQLite opens the database (pragmas \
         included) and runs SELECT count(*) FROM outbox WHERE state = 0, which reads the \
         pending index (or, bare, the whole table): SQLite keeps no row count. Time ratios: \
         >1 means slower.\n"
    );

    let payload_bytes = (n_big * PAYLOAD_LEN) as f64;
    let payload_mb = megabytes(payload_bytes);
    let sqlite_fills = sqlite_ids(FILL);
    let sqlite_drains = sqlite_ids(DRAIN);
    let mut t = Table::new(
        &format!(
            "Space and memory with {n_big} items ({payload_mb} MB of payload); \
             fill = push in batches of 1024, drain = pop pages of 1024"
        ),
        &[
            "backend",
            "fill items/s",
            "fill ratio to fdatasync per 1024",
            "fill ratio to SQLite (index / bare)",
            "peak RSS MiB after fill",
            "disk after push MB (apparent / alloc)",
            "alloc ÷ payload",
            "drain items/s",
            "drain ratio to fdatasync per 1024",
            "drain ratio to SQLite (index / bare)",
            "peak RSS MiB drain",
            "disk after drain MB (apparent / alloc)",
        ],
    );
    for (subject, _) in &dirs {
        let (fill_id, drain_id) = (subject.id(FILL), subject.id(DRAIN));
        let versus = |id: &str, bases: &[String]| match subject {
            Subject::Hookspool(_) => bases
                .iter()
                .map(|b| ratio_to(&samples, id, b))
                .collect::<Vec<_>>()
                .join(" / "),
            Subject::Sqlite(_) => "-".into(),
        };
        let per_payload = samples
            .get(&fill_id, "disk_alloc_bytes")
            .map_or_else(|| "-".into(), |b| ratio(b.median / payload_bytes));
        t.row(vec![
            format!("{} (fill, drain: 1 run)", subject.label()),
            median(samples.get(&fill_id, "ops_per_s"), rate),
            ratio_to(&samples, &fill_id, RAW_PER_BATCH),
            versus(&fill_id, &sqlite_fills),
            rss_mib(&samples, &fill_id),
            disk(&samples, &fill_id, "disk"),
            per_payload,
            median(samples.get(&drain_id, "ops_per_s"), rate),
            ratio_to(&samples, &drain_id, RAW_PER_BATCH),
            versus(&drain_id, &sqlite_drains),
            rss_mib(&samples, &drain_id),
            disk(&samples, &drain_id, "disk"),
        ]);
    }
    if memory {
        let id = "fill memory";
        let mut row = vec![
            format!("memory ({} runs)", samples.count(id)),
            median(samples.get(id, "ops_per_s"), rate),
            ratio_to(&samples, id, RAW_PER_BATCH),
            "-".into(),
            spread(samples.get(id, "peak_rss_kib"), |k| {
                format!("{:.1}", k / 1024.0)
            }),
        ];
        row.resize(12, "-".into());
        t.row(row);
    }
    t.print();
    println!(
        "Disk usage is measured with the store closed (SQLite: the last connection closed, \
         which checkpoints and removes the WAL). Each store is filled once, reopened in every \
         round, and drained once after the last round. SQLite's drain pops 1024 rows per \
         BEGIN IMMEDIATE transaction (SELECT … WHERE state = 0 ORDER BY id LIMIT 1024, then \
         DELETE each).\n"
    );

    let sqlite_drained: Vec<Schema> = dirs
        .iter()
        .filter_map(|(s, _)| match s {
            Subject::Sqlite(schema) => Some(*schema),
            Subject::Hookspool(_) => None,
        })
        .collect();
    if !sqlite_drained.is_empty() {
        let mut t = Table::new(
            "SQLite: giving the space back after draining (MB, apparent / alloc; database + WAL + shm)",
            &[
                "schema",
                "after fill (closed)",
                "drained, still open",
                "+ wal_checkpoint(TRUNCATE)",
                "+ close",
                "+ VACUUM",
                "free pages / pages before VACUUM",
            ],
        );
        for schema in sqlite_drained {
            let subject = Subject::Sqlite(schema);
            let (fill_id, drain_id) = (subject.id(FILL), subject.id(DRAIN));
            let pages = match (
                samples.get(&drain_id, "free_pages"),
                samples.get(&drain_id, "pages"),
            ) {
                (Some(f), Some(p)) => format!("{:.0} / {:.0}", f.median, p.median),
                _ => "-".into(),
            };
            t.row(vec![
                schema.label().into(),
                disk(&samples, &fill_id, "disk"),
                disk(&samples, &drain_id, "disk_drained"),
                disk(&samples, &drain_id, "disk_truncated"),
                disk(&samples, &drain_id, "disk"),
                disk(&samples, &drain_id, "disk_vacuumed"),
                pages,
            ]);
        }
        t.print();
        println!(
            "Deleted rows' pages go to the database file's freelist, to be reused by later \
             inserts: the file does not shrink until VACUUM (or auto_vacuum, off by default). \
             The WAL keeps its largest size while a connection is open unless checkpointed \
             with TRUNCATE (or journal_size_limit is set); closing the last connection \
             removes it.\n"
        );
    }
    Ok(())
}

fn child(case: &str, args: &ChildArgs) -> BenchResult<Metrics> {
    let dir = args.path("dir")?;
    let n = args.usize("n")?;
    match case {
        RAW_PER_RECORD => raw::per_record(&dir, n),
        RAW_PER_BATCH => raw::per_batch(&dir, n, BATCH),
        RAW_SCAN_FILL => raw::scan_fill(&dir, n),
        RAW_SCAN => raw::scan(&dir, n),
        SQLITE_FILL | SQLITE_REOPEN | SQLITE_DRAIN => {
            let schema = Schema::parse(args.str("schema")?)?;
            match case {
                SQLITE_FILL => sqlite::fill(&dir, schema, n),
                SQLITE_REOPEN => sqlite::reopen_count(&dir, schema, n),
                _ => sqlite::drain(&dir, schema, n),
            }
        }
        RETAINED_FILL | RETAINED_REOPEN => {
            let kind = Retained::parse(args.str("kind")?)?;
            let rt = runtime()?;
            match case {
                RETAINED_FILL => rt.block_on(retained_fill(kind, &dir, n)),
                _ => rt.block_on(retained_reopen(kind, &dir, n)),
            }
        }
        FILL | REOPEN | DRAIN => {
            let mode = Mode::parse(args.str("mode")?)?;
            let rt = runtime()?;
            match case {
                FILL => rt.block_on(fill_case(mode, &dir, n)),
                REOPEN => rt.block_on(reopen_case(mode, &dir, n)),
                _ => rt.block_on(drain_case(mode, &dir, n)),
            }
        }
        _ => Err(format!("unknown case {case:?}").into()),
    }
}

/// Creates the queue (retention `Remove`, as an outbox drains) and pushes `n` items.
async fn fill_case(mode: Mode, dir: &Path, n: usize) -> BenchResult<Metrics> {
    let store = mode.open(dir)?;
    let queue = create_queue(&store, Retention::Remove).await?;
    let start = Instant::now();
    fill(&store, &queue, n).await?;
    let secs = start.elapsed().as_secs_f64();
    let count = store.count(&queue).await?;
    if count != n as u64 {
        return Err(format!("pushed {n} items but the queue counts {count}").into());
    }
    let mut m = Metrics::from([("ops".into(), n as f64), ("secs".into(), secs)]);
    if mode.on_disk() {
        drop(store);
        record_disk(&mut m, "disk", dir)?;
    }
    Ok(m)
}

/// Opens the filled store and counts its queue.
async fn reopen_case(mode: Mode, dir: &Path, n: usize) -> BenchResult<Metrics> {
    let queue = queue_id()?;
    let start = Instant::now();
    let store = mode.open(dir)?;
    let opened = start.elapsed();
    let count = store.count(&queue).await?;
    let total = start.elapsed();
    if count != n as u64 {
        return Err(format!("reopened store counts {count} items, expected {n}").into());
    }
    Ok(Metrics::from([
        ("open_ms".into(), ms(opened)),
        ("count_ms".into(), ms(total.saturating_sub(opened))),
        ("total_ms".into(), ms(total)),
    ]))
}

/// Opens the filled store and pops everything, a page of [`BATCH`] per call.
async fn drain_case(mode: Mode, dir: &Path, n: usize) -> BenchResult<Metrics> {
    let queue = queue_id()?;
    let store = mode.open(dir)?;
    let start = Instant::now();
    let mut popped = 0;
    loop {
        let page = store.pop_pending(&queue, BATCH).await?;
        if page.is_empty() {
            break;
        }
        popped += page.len();
    }
    store.sync().await?;
    let secs = start.elapsed().as_secs_f64();
    if popped != n {
        return Err(format!("drained {popped} items, expected {n}").into());
    }
    let left = store.count(&queue).await?;
    if left != 0 {
        return Err(format!("{left} items left after draining").into());
    }
    let mut m = Metrics::from([("ops".into(), n as f64), ("secs".into(), secs)]);
    drop(store);
    record_disk(&mut m, "disk", dir)?;
    Ok(m)
}

/// A duration in milliseconds.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
