//! Benchmark: what does a big queue cost? Reopen + count with 1,000,000 pending items (the
//! fill is not timed), bytes on disk after the push and after draining, and peak RSS, with
//! the raw disk baseline of the same run (append rates, and a full CRC-checked scan of a
//! plain log holding the same records as the reopen baseline).
//!
//! `cargo bench -p hookspool-benches --bench reopen [-- FILTER]`; counts and runs come from
//! `HOOKSPOOL_BENCH_N_REOPEN`, `HOOKSPOOL_BENCH_N`, `HOOKSPOOL_BENCH_N_DURABLE`,
//! `HOOKSPOOL_BENCH_RUNS`.
// Counts and byte sizes stay far below 2^52, where f64 would start rounding them.
#![allow(clippy::cast_precision_loss)]

mod common;

use std::path::Path;
use std::time::Instant;

use hookspool::Retention;

use common::backends::{Mode, create_queue, fill, queue_id, runtime};
use common::raw;
use common::table::{
    Table, disk, median, megabytes, micros, rate, ratio, ratio_to, rss_mib, spread,
};
use common::{
    BATCH, BenchResult, ChildArgs, Metrics, PAYLOAD_LEN, Samples, Settings, child_main, data_root,
    print_footer, print_header, record_disk, run_case, scratch,
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

/// The durable mode reopened (the mode changes how writes are synced, not what is stored).
const DURABLE: Mode = Mode::SledImmediate;

#[allow(clippy::too_many_lines)] // one straight sequence: plan, run, print
fn parent() -> BenchResult<()> {
    let settings = Settings::from_env()?;
    let n_big = settings.count("HOOKSPOOL_BENCH_N_REOPEN", 1_000_000, 4_096)?;
    let n = settings.count("HOOKSPOOL_BENCH_N", 100_000, 2_048)?;
    let n_durable = settings.count("HOOKSPOOL_BENCH_N_DURABLE", 2_000, 64)?;
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
        ],
    );
    let sled_id = |case: &str| format!("{case} {}", DURABLE.name());
    let sled = settings.wants(&sled_id(REOPEN));
    let memory = settings.wants("fill memory");
    let mut samples = Samples::default();
    let big = |dir: &tempfile::TempDir| {
        vec![
            ("dir", dir.path().display().to_string()),
            ("n", n_big.to_string()),
        ]
    };

    // Filled once, reopened every round, drained at the end: filling is the slow part.
    eprintln!("reopen: filling");
    let scan_dir = scratch(&root, RAW_SCAN)?;
    run_case(&mut samples, RAW_SCAN_FILL, RAW_SCAN_FILL, &big(&scan_dir))?;
    let sled_dir = scratch(&root, DURABLE.name())?;
    if sled {
        let mut args = big(&sled_dir);
        args.push(("mode", DURABLE.name().into()));
        run_case(&mut samples, &sled_id(FILL), FILL, &args)?;
    }
    for round in 1..=settings.runs {
        eprintln!("reopen: round {round}/{}", settings.runs);
        for (case, count) in [(RAW_PER_RECORD, n_durable), (RAW_PER_BATCH, n)] {
            let dir = scratch(&root, case)?;
            let args = [
                ("dir", dir.path().display().to_string()),
                ("n", count.to_string()),
            ];
            run_case(&mut samples, case, case, &args)?;
        }
        run_case(&mut samples, RAW_SCAN, RAW_SCAN, &big(&scan_dir))?;
        if sled {
            let mut args = big(&sled_dir);
            args.push(("mode", DURABLE.name().into()));
            run_case(&mut samples, &sled_id(REOPEN), REOPEN, &args)?;
        }
        if memory {
            let dir = scratch(&root, Mode::Memory.name())?;
            let mut args = big(&dir);
            args.push(("mode", Mode::Memory.name().into()));
            run_case(&mut samples, "fill memory", FILL, &args)?;
        }
    }
    if sled {
        eprintln!("reopen: draining");
        let mut args = big(&sled_dir);
        args.push(("mode", DURABLE.name().into()));
        run_case(&mut samples, &sled_id(DRAIN), DRAIN, &args)?;
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

    let mut t = Table::new(
        "Reopen + count (warm page cache: the data was just written)",
        &[
            "backend",
            "items",
            "open ms",
            "count ms",
            "open + count ms median (min..max)",
            "time ÷ raw scan",
            "peak RSS MiB",
        ],
    );
    if sled {
        let id = sled_id(REOPEN);
        let scan = samples.get(RAW_SCAN, "total_ms");
        let total = samples.get(&id, "total_ms");
        let vs = match (total, scan) {
            (Some(a), Some(b)) if b.median > 0.0 => ratio(a.median / b.median),
            _ => "-".into(),
        };
        t.row(vec![
            "sled".into(),
            n_big.to_string(),
            median(samples.get(&id, "open_ms"), micros),
            median(samples.get(&id, "count_ms"), micros),
            spread(total, micros),
            vs,
            rss_mib(&samples, &id),
        ]);
    }
    t.print();

    let payload_mb = megabytes((n_big * PAYLOAD_LEN) as f64);
    let mut t = Table::new(
        &format!(
            "Space and memory with {n_big} items ({payload_mb} MB of payload); \
             fill = push in batches of 1024, drain = pop pages of 1024"
        ),
        &[
            "backend",
            "fill items/s",
            "fill ratio to fdatasync per 1024",
            "peak RSS MiB after fill",
            "disk after push MB (apparent / alloc)",
            "drain items/s",
            "drain ratio to fdatasync per 1024",
            "peak RSS MiB drain",
            "disk after drain MB (apparent / alloc)",
        ],
    );
    if sled {
        let (fill_id, drain_id) = (sled_id(FILL), sled_id(DRAIN));
        t.row(vec![
            format!("{} (fill: 1 run)", DURABLE.label()),
            median(samples.get(&fill_id, "ops_per_s"), rate),
            ratio_to(&samples, &fill_id, RAW_PER_BATCH),
            rss_mib(&samples, &fill_id),
            disk(&samples, &fill_id, "disk"),
            median(samples.get(&drain_id, "ops_per_s"), rate),
            ratio_to(&samples, &drain_id, RAW_PER_BATCH),
            rss_mib(&samples, &drain_id),
            disk(&samples, &drain_id, "disk"),
        ]);
    }
    if memory {
        let id = "fill memory";
        t.row(vec![
            format!("memory ({} runs)", samples.count(id)),
            median(samples.get(id, "ops_per_s"), rate),
            ratio_to(&samples, id, RAW_PER_BATCH),
            spread(samples.get(id, "peak_rss_kib"), |k| {
                format!("{:.1}", k / 1024.0)
            }),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
        ]);
    }
    t.print();
    println!(
        "Disk usage is measured with the store closed. The sled store is filled once, \
         reopened in every round, and drained once after the last round.\n"
    );
    print_footer();
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
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
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
