//! Benchmark: how fast can a consumer take items off a queue? Claim 1024, ack each one, per
//! round, from a pre-filled queue (the fill is not timed), on every backend and durability
//! mode, each printed as a ratio to the raw disk baseline measured in the same run.
//!
//! `cargo bench -p hookspool-benches --bench claim_ack [-- FILTER]`; counts and runs come
//! from `HOOKSPOOL_BENCH_N`, `HOOKSPOOL_BENCH_N_DURABLE`, `HOOKSPOOL_BENCH_RUNS`.
// Counts and byte sizes stay far below 2^52, where f64 would start rounding them.
#![allow(clippy::cast_precision_loss)]

mod common;

use std::path::Path;
use std::time::Instant;

use hookspool::{Phase, Retention};

use common::backends::{Mode, create_queue, fill, runtime};
use common::raw::{self, percentile_us};
use common::table::{Table, disk, median, micros, p50_ratio_to, rate, ratio_to, rss_mib, spread};
use common::{
    BATCH, BenchResult, ChildArgs, Metrics, Samples, Settings, child_main, data_root, print_footer,
    print_header, record_disk, run_case, scratch,
};

fn main() -> BenchResult<()> {
    if child_main(child)? {
        return Ok(());
    }
    parent()
}

const RAW_PER_RECORD: &str = "raw-per-record";
const RAW_PER_BATCH: &str = "raw-per-batch";
const CLAIM_ACK: &str = "claim-ack";

fn parent() -> BenchResult<()> {
    let settings = Settings::from_env()?;
    let n = settings.count("HOOKSPOOL_BENCH_N", 100_000, 2_048)?;
    let n_durable = settings.count("HOOKSPOOL_BENCH_N_DURABLE", 2_000, 64)?;
    let (root, fs_desc) = data_root(env!("CARGO_TARGET_TMPDIR"))?;
    print_header(
        "claim_ack",
        &settings,
        &fs_desc,
        &[
            ("HOOKSPOOL_BENCH_N (batches, memory)", n),
            (
                "HOOKSPOOL_BENCH_N_DURABLE (sled: one ack per call)",
                n_durable,
            ),
        ],
    );

    let mut plan: Vec<Planned<'_>> = vec![
        (RAW_PER_RECORD.into(), RAW_PER_RECORD, None, n_durable),
        (RAW_PER_BATCH.into(), RAW_PER_BATCH, None, n),
    ];
    for mode in Mode::ALL {
        let id = format!("{CLAIM_ACK} {}", mode.name());
        let n = if mode.waits_for_disk_per_call() {
            n_durable
        } else {
            n
        };
        if settings.wants(&id) {
            plan.push((id, CLAIM_ACK, Some(mode), n));
        }
    }

    let mut samples = Samples::default();
    for round in 1..=settings.runs {
        eprintln!("claim_ack: round {round}/{}", settings.runs);
        for (id, case, mode, n) in &plan {
            let dir = scratch(&root, &id.replace(' ', "-"))?;
            let mut args = vec![
                ("dir", dir.path().display().to_string()),
                ("n", n.to_string()),
            ];
            if let Some(mode) = mode {
                args.push(("mode", mode.name().to_owned()));
            }
            run_case(&mut samples, id, case, &args)?;
        }
    }
    print_tables(&samples, &plan);
    print_footer();
    Ok(())
}

/// One measurement of the plan: its id, child case, mode and count.
type Planned<'a> = (String, &'a str, Option<Mode>, usize);

fn print_tables(samples: &Samples, plan: &[Planned<'_>]) {
    let mut t = Table::new(
        "Raw disk baseline (same run, same filesystem; 256 B records appended to a new file)",
        &[
            "measurement",
            "N",
            "ops/s",
            "µs/op median (min..max)",
            "p50 / p99 µs",
            "peak RSS MiB",
        ],
    );
    for (id, what) in [
        (RAW_PER_RECORD, "write + fdatasync per record"),
        (RAW_PER_BATCH, "write per record, fdatasync per 1024"),
    ] {
        let n = plan.iter().find(|p| p.0 == id).map_or(0, |p| p.3);
        t.row(vec![
            what.into(),
            n.to_string(),
            median(samples.get(id, "ops_per_s"), rate),
            spread(samples.get(id, "us_per_op"), micros),
            latency(samples, id),
            rss_mib(samples, id),
        ]);
    }
    t.print();

    let mut t = Table::new(
        "Claim + ack (claim 1024, ack each; default retention Keep: acked items move to done)",
        &[
            "backend / mode",
            "N",
            "items/s",
            "µs/item median (min..max)",
            "ratio to fdatasync per record",
            "ratio to fdatasync per 1024",
            "ack p50 / p99 µs",
            "ack p50 ratio to fdatasync p50",
            "peak RSS MiB",
            "disk after MB (apparent / alloc)",
        ],
    );
    for (id, _, mode, n) in plan {
        let Some(mode) = mode else { continue };
        t.row(vec![
            mode.label().into(),
            n.to_string(),
            median(samples.get(id, "ops_per_s"), rate),
            spread(samples.get(id, "us_per_op"), micros),
            ratio_to(samples, id, RAW_PER_RECORD),
            ratio_to(samples, id, RAW_PER_BATCH),
            latency(samples, id),
            p50_ratio_to(samples, id, RAW_PER_RECORD),
            rss_mib(samples, id),
            disk(samples, id, "disk"),
        ]);
    }
    t.print();
    println!(
        "An item is one claim share plus one ack call (each ack is its own durable write in \
         sled Immediate); a batched mode's time includes its final sync(). Ratio = items/s ÷ \
         the raw baseline's records/s; the p50 ratio compares one ack call with one \
         write + fdatasync (robust to stalls caused by other processes). The peak RSS includes the untimed pre-fill.\n"
    );
}

/// `p50 / p99` µs, medians over the runs.
fn latency(samples: &Samples, id: &str) -> String {
    match (samples.get(id, "p50_us"), samples.get(id, "p99_us")) {
        (Some(a), Some(b)) => format!("{} / {}", micros(a.median), micros(b.median)),
        _ => "-".into(),
    }
}

fn child(case: &str, args: &ChildArgs) -> BenchResult<Metrics> {
    let dir = args.path("dir")?;
    let n = args.usize("n")?;
    match case {
        RAW_PER_RECORD => raw::per_record(&dir, n),
        RAW_PER_BATCH => raw::per_batch(&dir, n, BATCH),
        CLAIM_ACK => {
            let mode = Mode::parse(args.str("mode")?)?;
            runtime()?.block_on(claim_ack(mode, &dir, n))
        }
        _ => Err(format!("unknown case {case:?}").into()),
    }
}

async fn claim_ack(mode: Mode, dir: &Path, n: usize) -> BenchResult<Metrics> {
    let store = mode.open(dir)?;
    let queue = create_queue(&store, Retention::Keep).await?;
    fill(&store, &queue, n).await?;

    let mut ack_lat = Vec::with_capacity(n);
    let start = Instant::now();
    let mut done = 0;
    while done < n {
        let items = store.claim(&queue, BATCH).await?;
        if items.is_empty() {
            return Err(format!("claim found nothing after {done} of {n} items").into());
        }
        for item in &items {
            let t = Instant::now();
            store.ack(&queue, item.key).await?;
            ack_lat.push(t.elapsed());
        }
        done += items.len();
    }
    // For a batched mode, the acks are durable only once this returns.
    store.sync().await?;
    let secs = start.elapsed().as_secs_f64();

    let acked = store.count_phase(&queue, &Phase::DONE).await?;
    if acked != n as u64 {
        return Err(format!("acked {n} items but {acked} are done").into());
    }
    let mut m = Metrics::from([
        ("ops".into(), n as f64),
        ("secs".into(), secs),
        ("p50_us".into(), percentile_us(&mut ack_lat, 50)),
        ("p99_us".into(), percentile_us(&mut ack_lat, 99)),
    ]);
    if mode.on_disk() {
        drop(store);
        record_disk(&mut m, "disk", dir)?;
    }
    Ok(m)
}
