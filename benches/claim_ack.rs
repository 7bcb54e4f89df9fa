//! Benchmark: how fast can a consumer take items off a queue? Claim 1024, ack each one, per
//! round, from a pre-filled queue (the fill is not timed), on every backend and durability
//! mode, each printed as a ratio to the raw disk baseline and to SQLite doing the same claims
//! and acks (WAL, `synchronous=FULL`), both measured in the same run.
//!
//! `cargo bench -p hookspool-benches --bench claim_ack [-- FILTER]`; counts and runs come
//! from `HOOKSPOOL_BENCH_N`, `HOOKSPOOL_BENCH_N_DURABLE`, `HOOKSPOOL_BENCH_RUNS`.
// Counts and byte sizes stay far below 2^52, where f64 would start rounding them.
#![allow(clippy::cast_precision_loss)]

mod common;

use std::path::Path;
use std::time::Instant;

use hookspool::{Key, Phase, Retention};

use common::backends::{Mode, create_queue, fill, runtime};
use common::raw::{self, percentile_us};
use common::sqlite::{self, Ack, Schema};
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
/// Claim 1024, then ack all 1024 at once (concurrent calls, so the backend's group commit can
/// share syncs among them): what a consumer that batches does with hookspool's API, and the
/// like-for-like comparison with SQLite acking 1024 per transaction.
const CLAIM_ACK_CONCURRENT: &str = "claim-ack-concurrent";
/// Claim 1024, then ack all 1024 in one `ack_many` call (the batched ack: one record and one
/// sync on the journal): the like-for-like comparison with SQLite acking 1024 per
/// transaction.
const CLAIM_ACK_BATCH: &str = "claim-ack-batch";
/// SQLite: claim 1024 per transaction, then one transaction per ack (what hookspool's
/// claim + ack case does: one durable `ack` call per item).
const SQLITE_ACK_EACH: &str = "sqlite-claim-ack-1";
/// SQLite: claim 1024 per transaction, then ack the 1024 in one transaction ("popping 1024
/// per transaction", the issue's reference for batched claim + ack).
const SQLITE_ACK_BATCH: &str = "sqlite-claim-ack-batch";
/// The SQLite cases with their acks, table labels and counts' names.
const SQLITE_CASES: [(&str, Ack, &str); 2] = [
    (
        SQLITE_ACK_EACH,
        Ack::PerItem,
        "SQLite: claim 1024/tx, 1 ack/tx",
    ),
    (
        SQLITE_ACK_BATCH,
        Ack::PerBatch,
        "SQLite: claim 1024/tx, 1024 acks/tx",
    ),
];
/// The claim needs the pending index: with `Retention::Keep` semantics (acked rows stay, as
/// done) a bare table makes every claim walk past all the rows acked before it.
const SQLITE_SCHEMA: Schema = Schema::Indexed;

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
                "HOOKSPOOL_BENCH_N_DURABLE (sled, SQLite: one ack per call)",
                n_durable,
            ),
        ],
    );
    println!("- {}\n", sqlite::describe());

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
        let id = format!("{CLAIM_ACK_CONCURRENT} {}", mode.name());
        // sled serializes its writers: 10,000 items keep its runs short.
        let n_concurrent = if matches!(mode, Mode::SledImmediate | Mode::SledPeriodic) {
            n.min(10_000)
        } else {
            n
        };
        if settings.wants(&id) {
            plan.push((id, CLAIM_ACK_CONCURRENT, Some(mode), n_concurrent));
        }
        // sled has no batched update of its own (the default applies one update, and one
        // sync, per entry): its per-call count.
        let id = format!("{CLAIM_ACK_BATCH} {}", mode.name());
        let n_batch = if matches!(mode, Mode::SledImmediate | Mode::SledPeriodic) {
            n_durable
        } else {
            settings.count("HOOKSPOOL_BENCH_N", 100_000, 2_048)?
        };
        if settings.wants(&id) {
            plan.push((id, CLAIM_ACK_BATCH, Some(mode), n_batch));
        }
    }
    for (case, ack, _) in SQLITE_CASES {
        // One commit per ack waits for an fsync per item, as sled Immediate's acks do.
        let n = if ack == Ack::PerItem { n_durable } else { n };
        if settings.wants(case) {
            plan.push((case.into(), case, None, n));
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
            "ratio to SQLite 1 ack/tx",
            "ratio to SQLite 1024 acks/tx",
            "peak RSS MiB",
            "disk after MB (apparent / alloc)",
        ],
    );
    // Hookspool rows (every mode of `Mode::ALL`, as planned), then SQLite's.
    for (id, case, mode, n) in plan {
        let (label, vs_each, vs_batch) = match mode {
            Some(mode) => (
                if *case == CLAIM_ACK_CONCURRENT {
                    format!("{}, 1024 concurrent acks", mode.label())
                } else if *case == CLAIM_ACK_BATCH {
                    format!("{}, 1024 acks per call (ack_many)", mode.label())
                } else {
                    format!("{}, 1 ack at a time", mode.label())
                },
                ratio_to(samples, id, SQLITE_ACK_EACH),
                ratio_to(samples, id, SQLITE_ACK_BATCH),
            ),
            None => match SQLITE_CASES.iter().find(|c| c.0 == *case) {
                Some((_, _, label)) => ((*label).to_owned(), "-".into(), "-".into()),
                None => continue,
            },
        };
        t.row(vec![
            label,
            n.to_string(),
            median(samples.get(id, "ops_per_s"), rate),
            spread(samples.get(id, "us_per_op"), micros),
            ratio_to(samples, id, RAW_PER_RECORD),
            ratio_to(samples, id, RAW_PER_BATCH),
            latency(samples, id),
            p50_ratio_to(samples, id, RAW_PER_RECORD),
            vs_each,
            vs_batch,
            rss_mib(samples, id),
            disk(samples, id, "disk"),
        ]);
    }
    t.print();
    println!(
        "An item is one claim share plus one ack call (each ack is its own durable write in \
         the Immediate modes; \"1024 concurrent acks\" sends a claimed batch's acks at once, \
         so group commit shares syncs among them; \"1024 acks per call\" acks a claimed \
         batch with one `ack_many` call, whose latency is that call's); a \
         batched mode's time includes its final sync(). Ratio = items/s ÷ the raw baseline's \
         records/s, or ÷ SQLite's items/s; the p50 ratio compares one ack call with one \
         write + fdatasync (robust to stalls caused by other processes). SQLite (pending \
         index, WAL, synchronous=FULL): a claim is one BEGIN IMMEDIATE transaction that \
         selects the next 1024 rows with state = 0 (id and payload) and sets state = 1; an \
         ack sets state = 2 and keeps the row (as retention Keep does), one autocommit \
         UPDATE per item or all 1024 in one transaction; its ack latency is one ack \
         commit's. The peak RSS includes the untimed pre-fill.\n"
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
        CLAIM_ACK | CLAIM_ACK_CONCURRENT | CLAIM_ACK_BATCH => {
            let mode = Mode::parse(args.str("mode")?)?;
            let style = match case {
                CLAIM_ACK => Acks::OneAtATime,
                CLAIM_ACK_CONCURRENT => Acks::Concurrent,
                _ => Acks::OneCall,
            };
            runtime()?.block_on(claim_ack(mode, &dir, n, style))
        }
        SQLITE_ACK_EACH => sqlite::claim_ack(&dir, SQLITE_SCHEMA, n, Ack::PerItem),
        SQLITE_ACK_BATCH => sqlite::claim_ack(&dir, SQLITE_SCHEMA, n, Ack::PerBatch),
        _ => Err(format!("unknown case {case:?}").into()),
    }
}

/// How a claimed batch is acked.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Acks {
    /// One `ack` call after another.
    OneAtATime,
    /// All `ack` calls at once.
    Concurrent,
    /// One `ack_many` call.
    OneCall,
}

async fn claim_ack(mode: Mode, dir: &Path, n: usize, style: Acks) -> BenchResult<Metrics> {
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
        if style == Acks::OneCall {
            let keys: Vec<Key> = items.iter().map(|i| i.key).collect();
            let t = Instant::now();
            store.ack_many(&queue, &keys).await?;
            ack_lat.push(t.elapsed());
        } else if style == Acks::Concurrent {
            let mut acks = tokio::task::JoinSet::new();
            for item in &items {
                let (store, queue, key) = (store.clone(), queue.clone(), item.key);
                acks.spawn(async move {
                    let t = Instant::now();
                    store.ack(&queue, key).await.map(|()| t.elapsed())
                });
            }
            while let Some(done) = acks.join_next().await {
                ack_lat.push(done??);
            }
        } else {
            for item in &items {
                let t = Instant::now();
                store.ack(&queue, item.key).await?;
                ack_lat.push(t.elapsed());
            }
        }
        done += items.len();
    }
    // For a periodic mode, the acks are durable only once this returns.
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
