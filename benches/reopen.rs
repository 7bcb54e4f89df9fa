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

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use hookspool::{Action, Expect, Item, Move, NewItem, Phase, Retention, Transition};

use common::backends::{AnyStore, Mode, OWNER, create_queue, fill, queue_id, runtime};
use common::raw;
use common::sqlite::{self, Schema};
use common::table::{
    Table, disk, median, megabytes, micros, rate, ratio, ratio_to, rss_mib, spread,
};
use common::{
    BATCH, BenchResult, ChildArgs, Metrics, PAYLOAD_LEN, Samples, Settings, child_main, data_root,
    payload, peak_rss_kib, print_footer, print_header, record_disk, rss_kib, run_case, scratch,
};

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

// ---- memory per retained item ------------------------------------------------------------

/// What the queue of a retained-memory case holds: `n` webhook deliveries in some state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retained {
    /// Pushed with a delivery's metadata, never claimed.
    Pending,
    /// Claimed, then acked with `ack_many` (to `done`, metadata as pushed).
    Acked,
    /// Claimed, then settled as delivered: one `update_many` per claimed batch, each entry a
    /// move to `done` that replaces the metadata with the pushed entries plus the attempt
    /// log, and sets an error on every 10th item.
    Delivered,
}

impl Retained {
    /// Every kind, in table order.
    const ALL: [Retained; 3] = [Retained::Delivered, Retained::Acked, Retained::Pending];

    /// The name used in case ids (what a filter matches) and child arguments.
    fn name(self) -> &'static str {
        match self {
            Retained::Pending => "retained-pending",
            Retained::Acked => "retained-acked",
            Retained::Delivered => "retained-delivered",
        }
    }

    /// Parses [`Retained::name`].
    fn parse(name: &str) -> BenchResult<Retained> {
        Retained::ALL
            .into_iter()
            .find(|r| r.name() == name)
            .ok_or_else(|| format!("unknown retained kind {name:?}").into())
    }

    /// The id of step `step` (fill, reopen) in the samples.
    fn id(self, step: &str) -> String {
        format!("{} {step}", self.name())
    }

    /// The phase every item is in once filled.
    fn phase(self) -> Phase {
        match self {
            Retained::Pending => Phase::PENDING,
            Retained::Acked | Retained::Delivered => Phase::DONE,
        }
    }

    /// The name printed in tables.
    fn label(self) -> &'static str {
        match self {
            Retained::Pending => "pending: pushed with delivery metadata, never claimed",
            Retained::Acked => "done via ack_many: claimed and acked, metadata as pushed",
            Retained::Delivered => {
                "done as delivered: metadata replaced (+ attempts, attempt.0001), error on 1 in 10"
            }
        }
    }
}

/// Fills a journal queue with `n` items of each kind in `kinds` (once), then reopens each in
/// a fresh child in every round, and prints what the reopened store holds in memory per item.
fn retained_memory(
    settings: &Settings,
    root: &Path,
    kinds: &[Retained],
    n: usize,
) -> BenchResult<()> {
    let mut samples = Samples::default();
    let args = |kind: Retained, dir: &tempfile::TempDir| {
        vec![
            ("dir", dir.path().display().to_string()),
            ("n", n.to_string()),
            ("kind", kind.name().to_owned()),
        ]
    };
    eprintln!("reopen: filling the retained-memory queues");
    let mut dirs = Vec::with_capacity(kinds.len());
    for &kind in kinds {
        let dir = scratch(root, kind.name())?;
        run_case(
            &mut samples,
            &kind.id("fill"),
            RETAINED_FILL,
            &args(kind, &dir),
        )?;
        dirs.push((kind, dir));
    }
    for round in 1..=settings.runs {
        eprintln!("reopen: retained round {round}/{}", settings.runs);
        for (kind, dir) in &dirs {
            run_case(
                &mut samples,
                &kind.id("reopen"),
                RETAINED_REOPEN,
                &args(*kind, dir),
            )?;
        }
    }

    let kib_mib = |k: f64| format!("{:.1}", k / 1024.0);
    let bytes = |b: f64| format!("{b:.0}");
    let mut t = Table::new(
        &format!(
            "Memory per retained item: {} with {n} items, closed, then reopened + counted in a \
             fresh process",
            RETAINED_MODE.label()
        ),
        &[
            "the queue holds",
            "fill items/s (1 run)",
            "disk after close MB (apparent / alloc)",
            "open + count ms",
            "RSS before open MiB",
            "RSS after reopen MiB",
            "peak RSS MiB",
            "B/item: (RSS after − before) ÷ N, median (min..max)",
            "peak B/item: (peak − before) ÷ N",
        ],
    );
    for (kind, _) in &dirs {
        let (fill_id, id) = (kind.id("fill"), kind.id("reopen"));
        t.row(vec![
            kind.label().into(),
            median(samples.get(&fill_id, "ops_per_s"), rate),
            disk(&samples, &fill_id, "disk"),
            median(samples.get(&id, "total_ms"), micros),
            median(samples.get(&id, "base_rss_kib"), kib_mib),
            median(samples.get(&id, "rss_kib"), kib_mib),
            median(samples.get(&id, "hwm_kib"), kib_mib),
            spread(samples.get(&id, "rss_per_item_b"), bytes),
            median(samples.get(&id, "hwm_per_item_b"), bytes),
        ]);
    }
    t.print();
    let meta = |key: &str| {
        samples
            .get(&Retained::Delivered.id("fill"), key)
            .map_or_else(|| "-".into(), |s| format!("{:.0}", s.median))
    };
    println!(
        "B/item = bytes per retained item: the resident set (VmRSS in /proc/self/status) of \
         the child after opening the closed store and counting its queue, minus the same \
         child's just before the open (its runtime already started), divided by N; peak uses \
         VmHWM instead (replay and checkpoint loading included). It is what the open store \
         holds per item, plus what the allocator kept of what the open freed; the journal's \
         index slot is 56 B an item (backends/journal/src/slots.rs; metadata and errors set \
         after the push are in notes on disk), and the target of the issue is near it \
         (≤ 64 B). Every item has a \
         {PAYLOAD_LEN} B payload and the metadata event, subscription, request_id \
         ({} B of keys + values); a delivered one then has attempts and attempt.0001 (a JSON \
         attempt record: number, time, status 200, duration, response snippet; {} B of \
         metadata in all), and 1 in 10 an error of {} B. Fill: push {BATCH} per call, claim \
         {BATCH} per call, settle each claimed batch with one call (ack_many, or update_many \
         whose moves go to done with the new metadata); the store is closed (dropped) after \
         the fill.\n",
        meta("pushed_meta_b"),
        meta("settled_meta_b"),
        meta("error_b"),
    );
    Ok(())
}

/// The event names the deliveries cycle through.
const EVENTS: [&str; 4] = [
    "order.created",
    "order.paid",
    "invoice.finalized",
    "customer.updated",
];

/// A pseudo-random 64-bit value of `seq` (splitmix64), for ids that differ per item.
fn mix(seq: u64) -> u64 {
    let mut z = seq.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Delivery `seq` as pushed: a payload and the metadata the webhook layer fires with.
fn delivery(seq: usize) -> NewItem {
    let s = seq as u64;
    NewItem::new(payload(s))
        .with_metadata("event", EVENTS[seq % EVENTS.len()])
        .with_metadata("subscription", format!("sub_{:016x}", mix(s % 8)))
        .with_metadata("request_id", format!("req_{:016x}", mix(s)))
}

/// The metadata of a delivered item, as the webhook layer's `settle` writes it: what it was
/// pushed with, the attempt count and the record of the (first, successful) attempt.
fn delivered_metadata(item: &Item) -> BTreeMap<String, String> {
    let mut metadata = item.metadata.clone();
    let h = mix(item.key);
    let record = serde_json::json!({
        "number": 1,
        "at": 1_767_225_600_000_u64 + item.key,
        "status": 200,
        "error": null,
        "duration_ms": 5 + h % 200,
        "response": format!("{{\"received\":true,\"status\":\"ok\",\"id\":\"evt_{h:016x}\"}}"),
    });
    metadata.insert("attempts".into(), "1".into());
    metadata.insert("attempt.0001".into(), record.to_string());
    metadata
}

/// The error of every 10th delivered item (~80 bytes, as a failed earlier attempt leaves).
fn delivery_error(key: u64) -> String {
    format!(
        "request timed out: no response within 30s from https://hooks.example.com/in/{:08x}",
        mix(key) >> 32
    )
}

/// Bytes of metadata keys and values.
fn metadata_bytes(metadata: &BTreeMap<String, String>) -> usize {
    metadata.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// Creates the queue (retention `Keep`: settled items stay, in `done`), pushes `n`
/// deliveries, settles them as `kind` says, and closes the store.
async fn retained_fill(kind: Retained, dir: &Path, n: usize) -> BenchResult<Metrics> {
    let store = RETAINED_MODE.open(dir)?;
    let queue = create_queue(&store, Retention::Keep).await?;
    let start = Instant::now();
    let mut pushed = 0;
    while pushed < n {
        let len = BATCH.min(n - pushed);
        let items = (pushed..pushed + len).map(delivery).collect();
        store.push_batch(&queue, items).await?;
        pushed += len;
    }
    let mut m = Metrics::new();
    let (mut settled, mut settled_meta, mut errors, mut error_bytes) = (0, 0, 0, 0);
    while kind != Retained::Pending && settled < n {
        let claimed = store.claim(&queue, BATCH).await?;
        if claimed.is_empty() {
            return Err(format!("claimed nothing after settling {settled} of {n}").into());
        }
        settled += claimed.len();
        if kind == Retained::Acked {
            let keys: Vec<_> = claimed.iter().map(|i| i.key).collect();
            store.ack_many(&queue, &keys).await?;
            continue;
        }
        let mut updates = Vec::with_capacity(claimed.len());
        for item in &claimed {
            let metadata = delivered_metadata(item);
            settled_meta += metadata_bytes(&metadata);
            let mut mv = Move::to(Phase::DONE).metadata(metadata);
            if item.key % 10 == 0 {
                let error = delivery_error(item.key);
                errors += 1;
                error_bytes += error.len();
                mv = mv.error(error);
            }
            let transition = Transition {
                expect: Expect {
                    phase: Some(Phase::IN_FLIGHT),
                    lease_owner: Some(OWNER.into()),
                },
                action: Action::Move(mv),
            };
            updates.push((item.key, transition));
        }
        store.update_many(&queue, updates).await?;
    }
    store.sync().await?;
    let secs = start.elapsed().as_secs_f64();
    let held = store.count_phase(&queue, &kind.phase()).await?;
    if held != n as u64 {
        return Err(format!("{held} items in {}, expected {n}", kind.phase()).into());
    }
    m.insert("ops".into(), n as f64);
    m.insert("secs".into(), secs);
    m.insert(
        "pushed_meta_b".into(),
        metadata_bytes(&delivery(0).metadata) as f64,
    );
    if settled > 0 && settled_meta > 0 {
        m.insert(
            "settled_meta_b".into(),
            settled_meta as f64 / settled as f64,
        );
    }
    if errors > 0 {
        m.insert("error_b".into(), error_bytes as f64 / f64::from(errors));
    }
    let closing = Instant::now();
    drop(store);
    m.insert("close_ms".into(), ms(closing.elapsed()));
    record_disk(&mut m, "disk", dir)?;
    Ok(m)
}

/// Reopens the filled store in this fresh process, counts it, and reports the resident set
/// before the open and after the count (the store still open), per item.
async fn retained_reopen(kind: Retained, dir: &Path, n: usize) -> BenchResult<Metrics> {
    let queue = queue_id()?;
    let base = rss_kib()?;
    let start = Instant::now();
    let store: AnyStore = RETAINED_MODE.open(dir)?;
    let opened = start.elapsed();
    let count = store.count(&queue).await?;
    let total = start.elapsed();
    let (rss, hwm) = (rss_kib()?, peak_rss_kib()?);
    if count != n as u64 {
        return Err(format!("reopened store counts {count} items, expected {n}").into());
    }
    let held = store.count_phase(&queue, &kind.phase()).await?;
    if held != n as u64 {
        return Err(format!("reopened store has {held} items in {}", kind.phase()).into());
    }
    drop(store);
    let per_item = |kib: f64| (kib - base) * 1024.0 / n as f64;
    Ok(Metrics::from([
        ("open_ms".into(), ms(opened)),
        ("count_ms".into(), ms(total.saturating_sub(opened))),
        ("total_ms".into(), ms(total)),
        ("base_rss_kib".into(), base),
        ("rss_kib".into(), rss),
        ("hwm_kib".into(), hwm),
        ("rss_per_item_b".into(), per_item(rss)),
        ("hwm_per_item_b".into(), per_item(hwm)),
    ]))
}

/// A duration in milliseconds.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
