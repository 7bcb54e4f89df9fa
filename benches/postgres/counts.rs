//! The count cases of the `postgres` bench: `count` on queues of 10k and 1M items against
//! `count(*)` on plain tables of as many rows. The queues are filled once per run (the
//! parent's [`run_counts`]), then every case times calls on them (the child's
//! [`count_case`]); the tables show whether the time grows with the queue. One more case
//! times `count` on the small queue while [`BUSY_PRODUCERS`] producers push one item at a
//! time to another queue of the schema: a count reads the count changes of pushes not yet
//! rolled up into the counter rows (schema version 7), and the dead rows of those rolled up
//! since the last vacuum.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hookspool::{NewItem, QueueConfig, QueueId, Store};
use hookspool_postgres::PostgresBackend;

use super::{FILL_BATCH, FILL_PRODUCERS, hs_fill, hs_open, hs_queue, yes_no};
use crate::common::backends::QUEUE;
use crate::common::pg::{Worked, check, checkpoint, connect, figures, sql_create, sql_fill};
use crate::common::table::{Table, median, micros, rate, ratio, spread};
use crate::common::{
    BenchResult, ChildArgs, Metrics, Samples, Settings, measure, payload, run_case,
};

/// The large count queue when filling the default 1M would take longer than
/// [`FILL_BUDGET`].
const COUNT_FALLBACK: usize = 200_000;
const FILL_BUDGET: Duration = Duration::from_mins(1);
/// How long each count measurement calls `count` (after a warm-up), at least [`COUNT_MIN_CALLS`].
const COUNT_TIME: Duration = Duration::from_secs(1);
const COUNT_MIN_CALLS: usize = 5;
/// The largest `count(*)` a full run times on the plain table (it scans every row).
const COUNT_MAX_CALLS: usize = 20_000;

/// The count cases: `(id, which queue)`.
pub(super) const COUNTS: [(&str, Size); 5] = [
    ("sql-count-small", Size::Small),
    ("sql-count-large", Size::Large),
    ("hs-count-small", Size::Small),
    ("hs-count-large", Size::Large),
    ("hs-count-busy", Size::Small),
];

/// Producers pushing (one item per call) to another queue during `hs-count-busy`.
const BUSY_PRODUCERS: usize = 4;
/// How long they push before the count is timed: the roll-ups and vacuums reach their pace.
const BUSY_WARMUP: Duration = Duration::from_secs(3);

/// Which of the two count queues.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Size {
    Small,
    Large,
}

impl Size {
    fn name(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Large => "large",
        }
    }
}

/// The hookspool schema and the plain SQL schemas of the count cases.
const COUNT_HS_SCHEMA: &str = "count_hs";

fn count_sql_schema(size: Size) -> String {
    format!("count_sql_{}", size.name())
}

fn count_queue(size: Size) -> String {
    format!("count-{}", size.name())
}

/// Fills the count queues once, then runs every count case `settings.runs` times. Returns
/// the fill's figures.
pub(super) fn run_counts(
    settings: &Settings,
    url: &str,
    small_n: usize,
    count_n: usize,
    samples: &mut Samples,
) -> BenchResult<Metrics> {
    eprint!("  fill the count queues ({small_n} and {count_n} items) ... ");
    let started = Instant::now();
    let fill_batch = if settings.smoke { 100 } else { FILL_BATCH };
    let m = measure(
        "fill-count",
        &[
            ("url", url.to_owned()),
            ("small", small_n.to_string()),
            ("large", count_n.to_string()),
            ("batch", fill_batch.to_string()),
        ],
    )?;
    eprintln!("{:.2} s", started.elapsed().as_secs_f64());
    let large = m.get("large_n").copied().unwrap_or(0.0);
    for round in 1..=settings.runs {
        eprintln!("postgres: count round {round}/{}", settings.runs);
        for (id, size) in COUNTS {
            if !settings.wants(id) {
                continue;
            }
            let expect = match size {
                Size::Small => small_n.to_string(),
                Size::Large => format!("{large:.0}"),
            };
            let calls = if settings.smoke { 3 } else { 0 };
            run_case(
                samples,
                id,
                id,
                &[
                    ("url", url.to_owned()),
                    ("size", size.name().to_owned()),
                    ("expect", expect),
                    ("calls", calls.to_string()),
                ],
            )?;
        }
    }
    Ok(m)
}

/// The summary's count rows: the median time per call at each size, and how hookspool's
/// grows from the small queue to the large one (the target: it does not).
pub(super) fn count_rows(table: &mut Table, samples: &Samples, fill: &Metrics, smoke: bool) {
    let small = fill.get("small_n").copied().unwrap_or(0.0);
    let large = fill.get("large_n").copied().unwrap_or(0.0);
    let time = |id: &str| samples.get(id, "p50_us");
    let growth = match (time("hs-count-small"), time("hs-count-large")) {
        (Some(at_small), Some(at_large)) if at_small.median > 0.0 => {
            Some(at_large.median / at_small.median)
        }
        _ => None,
    };
    for (size, items) in [(Size::Small, small), (Size::Large, large)] {
        let base = time(&format!("sql-count-{}", size.name()));
        let hs = time(&format!("hs-count-{}", size.name()));
        let speedup = match (base, hs) {
            (Some(base), Some(hs)) if hs.median > 0.0 => ratio(base.median / hs.median),
            _ => "-".into(),
        };
        let (target, met) = match (size, growth) {
            (Size::Small, _) => ("(the reference for the next row)".to_owned(), "-".into()),
            (Size::Large, Some(growth)) => (
                format!(
                    "time at {} ≈ time at {} (≤ 1.25×): {}",
                    count_label(items),
                    count_label(small),
                    ratio(growth)
                ),
                if smoke {
                    "-".into()
                } else {
                    yes_no(growth <= 1.25)
                },
            ),
            (Size::Large, None) => ("time ≈ the row above".to_owned(), "-".into()),
        };
        table.row(vec![
            format!("count, {} items (µs per call)", count_label(items)),
            format!("{} µs", median(base, micros)),
            format!("{} µs", median(hs, micros)),
            speedup,
            "-".into(),
            target,
            met,
        ]);
    }
    let busy = time("hs-count-busy");
    table.row(vec![
        format!(
            "count, {} items, while {BUSY_PRODUCERS} producers push to another queue (µs per call)",
            count_label(small)
        ),
        "-".into(),
        format!("{} µs", median(busy, micros)),
        "-".into(),
        "-".into(),
        "reported".into(),
        "-".into(),
    ]);
}

fn count_label(n: f64) -> String {
    if n >= 1e6 && n % 1e6 == 0.0 {
        format!("{:.0}M", n / 1e6)
    } else if n >= 1e3 && n % 1e3 == 0.0 {
        format!("{:.0}k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

/// The count cases, and how the queues were filled.
pub(super) fn print_counts(samples: &Samples, (m, small_n, asked): &(Metrics, usize, usize)) {
    let large = m.get("large_n").copied().unwrap_or(0.0);
    if large < *asked as f64 {
        println!(
            "NOTE: filling {asked} items through the backend was projected to take over {} s, \
             so the large count queue holds {} items instead.\n",
            FILL_BUDGET.as_secs(),
            count_label(large)
        );
    }
    println!(
        "- count queues filled through `Store::push_batch` ({FILL_PRODUCERS} producers × \
         {} items per call): {small_n} + {large} items in {:.1} s ({} items/s); the \
         plain tables by INSERT … SELECT generate_series in {:.1} s\n",
        m.get("batch").copied().unwrap_or(f64::NAN),
        m.get("hs_fill_secs").copied().unwrap_or(f64::NAN),
        rate(m.get("hs_fill_rate").copied().unwrap_or(f64::NAN)),
        m.get("sql_fill_secs").copied().unwrap_or(f64::NAN),
    );
    let mut t = Table::new(
        "count: time per call",
        &[
            "case",
            "items",
            "runs",
            "µs per call, median of each run's median (min..max)",
            "µs p99",
            "calls per run",
        ],
    );
    for (id, size) in COUNTS {
        let n = match size {
            Size::Small => *small_n as f64,
            Size::Large => large,
        };
        t.row(vec![
            if id.starts_with("sql") {
                "SQL: SELECT count(*) FROM outbox WHERE queue = $1".into()
            } else if id == "hs-count-busy" {
                format!(
                    "hookspool: Store::count, {BUSY_PRODUCERS} producers pushing to another queue \
                     ({} pushes/s)",
                    median(samples.get(id, "busy_pushes_per_s"), |x| format!("{x:.0}"))
                )
            } else {
                "hookspool: Store::count".into()
            },
            count_label(n),
            samples.count(id).to_string(),
            spread(samples.get(id, "p50_us"), micros),
            median(samples.get(id, "p99_us"), micros),
            median(samples.get(id, "ops"), |x| format!("{x:.0}")),
        ]);
    }
    t.print();
}

/// Fills the count queues once: hookspool's through the backend (so that its counters are
/// right), the plain tables with one INSERT each. The large queue gets `large` items, or
/// [`COUNT_FALLBACK`] when the first [`COUNT_FALLBACK`] took long enough that `large` would
/// take over [`FILL_BUDGET`].
pub(super) async fn fill_count(args: &ChildArgs) -> BenchResult<Metrics> {
    let url = args.str("url")?;
    let small = args.usize("small")?;
    let asked = args.usize("large")?;
    let batch = args.usize("batch")?.max(1);
    let admin = connect(url).await?;
    let store = hs_open(url, COUNT_HS_SCHEMA, FILL_PRODUCERS + 4).await?;
    let small_q = hs_queue(&store, &count_queue(Size::Small)).await?;
    let large_q = hs_queue(&store, &count_queue(Size::Large)).await?;

    let t = Instant::now();
    hs_fill(&store, &small_q, 0, small, batch).await?;
    let first = asked.min(COUNT_FALLBACK);
    hs_fill(&store, &large_q, 0, first, batch).await?;
    let mut large = first;
    let projected = t.elapsed().mul_f64(asked as f64 / (small + first) as f64);
    if asked > first && projected <= FILL_BUDGET {
        hs_fill(&store, &large_q, first, asked - first, batch).await?;
        large = asked;
    }
    let hs_secs = t.elapsed().as_secs_f64();
    check(
        "small queue",
        small,
        i64::try_from(store.count(&small_q).await?)?,
    )?;
    check(
        "large queue",
        large,
        i64::try_from(store.count(&large_q).await?)?,
    )?;
    drop(store);

    let t = Instant::now();
    for (size, n) in [(Size::Small, small), (Size::Large, large)] {
        let schema = count_sql_schema(size);
        sql_create(&admin, &schema).await?;
        sql_fill(&admin, &schema, n).await?;
        admin
            .batch_execute(&format!("VACUUM ANALYZE {schema}.outbox"))
            .await?;
    }
    let sql_secs = t.elapsed().as_secs_f64();
    checkpoint(&admin).await?;
    Ok(Metrics::from([
        ("batch".into(), batch as f64),
        ("small_n".into(), small as f64),
        ("large_n".into(), large as f64),
        ("hs_fill_secs".into(), hs_secs),
        ("hs_fill_rate".into(), (small + large) as f64 / hs_secs),
        ("sql_fill_secs".into(), sql_secs),
    ]))
}

/// Times `count` (hookspool) or `count(*)` (plain SQL) on one of the filled queues: a
/// warm-up, then calls for [`COUNT_TIME`] (at least [`COUNT_MIN_CALLS`]), or `calls` calls
/// in a smoke run. Reports the median and p99 time per call.
pub(super) async fn count_case(case: &str, args: &ChildArgs) -> BenchResult<Metrics> {
    let url = args.str("url")?;
    let size = if args.str("size")? == "small" {
        Size::Small
    } else {
        Size::Large
    };
    let expect = args.usize("expect")?;
    let fixed = args.usize("calls")?;
    let more = |calls: usize, start: Instant| {
        if fixed > 0 {
            calls < fixed
        } else {
            calls < COUNT_MIN_CALLS || (start.elapsed() < COUNT_TIME && calls < COUNT_MAX_CALLS)
        }
    };
    let mut lat = Vec::new();
    let start;
    if case.starts_with("sql") {
        let client = connect(url).await?;
        let stmt = client
            .prepare(&format!(
                "SELECT count(*) FROM {}.outbox WHERE queue = $1",
                count_sql_schema(size)
            ))
            .await?;
        for _ in 0..2 {
            let n: i64 = client.query_one(&stmt, &[&QUEUE]).await?.get(0);
            check("count(*)", expect, n)?;
        }
        start = Instant::now();
        while more(lat.len(), start) {
            let t = Instant::now();
            let n: i64 = client.query_one(&stmt, &[&QUEUE]).await?.get(0);
            lat.push(t.elapsed());
            check("count(*)", expect, n)?;
        }
    } else {
        let busy = case == "hs-count-busy";
        let store = hs_open(url, COUNT_HS_SCHEMA, 2 + BUSY_PRODUCERS).await?;
        let queue = QueueId::new(count_queue(size))?;
        let producers = if busy {
            Some(Busy::start(&store, fixed > 0).await?)
        } else {
            None
        };
        for _ in 0..20 {
            check("count", expect, i64::try_from(store.count(&queue).await?)?)?;
        }
        start = Instant::now();
        while more(lat.len(), start) {
            let t = Instant::now();
            let n = store.count(&queue).await?;
            lat.push(t.elapsed());
            check("count", expect, i64::try_from(n)?)?;
        }
        if let Some(producers) = producers {
            let elapsed = start.elapsed().as_secs_f64();
            let pushed = producers.stop().await?;
            let mut m = figures(
                Worked {
                    rows: lat.len(),
                    calls: lat,
                    ..Worked::default()
                },
                elapsed,
            );
            m.insert("busy_pushes_per_s".into(), pushed as f64 / elapsed);
            return Ok(m);
        }
    }
    Ok(figures(
        Worked {
            rows: lat.len(),
            calls: lat,
            ..Worked::default()
        },
        start.elapsed().as_secs_f64(),
    ))
}

/// The producers of `hs-count-busy`: one item per call to the queue `count-busy`, until
/// stopped.
struct Busy {
    stop: Arc<AtomicBool>,
    /// Pushes made since the count started being timed.
    pushed: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<BenchResult<()>>>,
}

impl Busy {
    /// Starts the producers and lets them push for [`BUSY_WARMUP`] (not in a smoke run).
    async fn start(store: &Store<PostgresBackend>, smoke: bool) -> BenchResult<Self> {
        // Made by the first round, used by the next.
        let queue = QueueId::new("count-busy")?;
        match store.create_queue(QueueConfig::new(queue.clone())).await {
            Ok(_) | Err(hookspool::Error::QueueExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let stop = Arc::new(AtomicBool::new(false));
        let counting = Arc::new(AtomicBool::new(false));
        let pushed = Arc::new(AtomicU64::new(0));
        let tasks = (0..BUSY_PRODUCERS)
            .map(|p| {
                let (store, queue) = (store.clone(), queue.clone());
                let (stop, counting, pushed) = (
                    Arc::clone(&stop),
                    Arc::clone(&counting),
                    Arc::clone(&pushed),
                );
                tokio::spawn(async move {
                    let mut i = 0_u64;
                    while !stop.load(Ordering::Relaxed) {
                        store
                            .push(&queue, NewItem::new(payload((p as u64) << 40 | i)))
                            .await?;
                        i += 1;
                        if counting.load(Ordering::Relaxed) {
                            pushed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        if !smoke {
            tokio::time::sleep(BUSY_WARMUP).await;
        }
        counting.store(true, Ordering::Relaxed);
        Ok(Busy {
            stop,
            pushed,
            tasks,
        })
    }

    /// Stops the producers; how many pushes they made while the count was timed.
    async fn stop(self) -> BenchResult<u64> {
        let pushed = self.pushed.load(Ordering::Relaxed);
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await??;
        }
        Ok(pushed)
    }
}
