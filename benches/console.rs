//! Benchmark: does a console page over a queue of 1,000,000 items open as fast as over one of
//! 10? The release `hookspool serve` (journal) is started on a data directory filled
//! beforehand (not timed): queue `big` holds `HOOKSPOOL_BENCH_N_CONSOLE` (1,000,000) items of
//! 256 bytes, one in a thousand moved to `dead`; queue `small` holds 10, every other one dead.
//! Each request the console's pages make is then timed over HTTP on loopback with the bearer
//! token, for both queues, interleaved: the page's count, its first page newest first, a
//! page from a cursor in the middle, the `dead` tab, one item, and the overview's queue list.
//! Pages of 5 items, so that the small queue fills them too. Medians of `HOOKSPOOL_BENCH_REQUESTS` (300) requests after a warm-up, and the ratio
//! big ÷ small (1.0 is "as fast").
//!
//! `cargo bench -p hookspool-benches --bench console`. Reads only: the raw disk baseline of
//! the other benches (write syncs) does not apply; the comparison is the same daemon, the
//! same run, the same request on 10 items.
// Counts stay far below 2^52, where f64 would start rounding them.
#![allow(clippy::cast_precision_loss)]

mod common;

use std::time::{Duration, Instant};

use hookspool::{NewItem, Phase, QueueConfig, QueueId, Store};
use hookspool_journal::{Durability, JournalBackend, JournalOptions};

use common::backends::runtime;
use common::daemon::{Daemon, TOKEN, client, daemon_binary};
use common::table::{Table, micros, ratio};
use common::{BATCH, BenchResult, Settings, data_root, load_average, payload, scratch};

/// One in this many items of the big queue is dead.
const DEAD_EVERY: usize = 1_000;
/// The small queue: 10 items, every other one dead.
const SMALL: usize = 10;
const SMALL_DEAD_EVERY: usize = 2;
/// Items per page asked. The console asks 25; 5 here, so that every page holds as many items
/// on the small queue as on the big one (a page costs per item returned, and that is not
/// what is compared).
const PAGE: usize = 5;

fn main() -> BenchResult<()> {
    let settings = Settings::from_env()?;
    let n = settings.count("HOOKSPOOL_BENCH_N_CONSOLE", 1_000_000, 2_000)?;
    let requests = settings.count("HOOKSPOOL_BENCH_REQUESTS", 300, 5)?;
    let (root, fs_desc) = data_root(env!("CARGO_TARGET_TMPDIR"))?;
    println!("## hookspool bench `console`\n");
    println!(
        "- the release daemon (journal) over HTTP on loopback, one client, requests interleaved"
    );
    println!(
        "- big queue: {n} items (HOOKSPOOL_BENCH_N_CONSOLE); {requests} timed requests per case \
         and queue (HOOKSPOOL_BENCH_REQUESTS)"
    );
    println!("- data dir filesystem: {fs_desc}");
    println!("- load average at start: {}\n", load_average());
    let bin = daemon_binary(settings.smoke)?;
    let dir = scratch(&root, "console")?;
    let started = Instant::now();
    runtime()?.block_on(fill(&dir.path().join("console-data"), n))?;
    eprintln!("console: filled {n} items in {:.1?}", started.elapsed());
    let daemon = Daemon::start(&bin, dir.path(), "console", &[], &[])?;
    let figures = runtime()?.block_on(measure(&daemon.base(), n, requests))?;
    daemon.stop()?;

    let mut table = Table::new(
        &format!("Console requests: a queue of {n} items against one of {SMALL} (median, p99)"),
        &["request", "10 items", "big queue", "big ÷ small (median)"],
    );
    for f in figures {
        table.row(vec![
            f.what.to_owned(),
            format!(
                "{} / {} µs",
                micros(f.small.0 * 1e6),
                micros(f.small.1 * 1e6)
            ),
            format!("{} / {} µs", micros(f.big.0 * 1e6), micros(f.big.1 * 1e6)),
            ratio(f.big.0 / f.small.0),
        ]);
    }
    table.print();
    Ok(())
}

/// Fills the data directory: `big` with `n` items, one in [`DEAD_EVERY`] moved to `dead`;
/// `small` with [`SMALL`], one in [`SMALL_DEAD_EVERY`] dead.
async fn fill(data: &std::path::Path, n: usize) -> BenchResult<()> {
    let options = JournalOptions {
        durability: Durability::Periodic {
            interval: Duration::from_millis(10),
        },
        ..JournalOptions::default()
    };
    let store = Store::new(JournalBackend::open_with(data, options)?);
    for (name, count, every) in [("big", n, DEAD_EVERY), ("small", SMALL, SMALL_DEAD_EVERY)] {
        let q = QueueId::new(name)?;
        store.create_queue(QueueConfig::new(q.clone())).await?;
        let mut done = 0;
        while done < count {
            let len = BATCH.min(count - done);
            let items = (done..done + len)
                .map(|seq| NewItem::new(payload(seq as u64)))
                .collect();
            let keys = store.push_batch(&q, items).await?;
            for (i, key) in keys.into_iter().enumerate() {
                if (done + i) % every == every / 2 {
                    store.update_phase(&q, key, Phase::DEAD).await?;
                }
            }
            done += len;
        }
    }
    store.sync().await?;
    Ok(())
}

/// One request's figures: (median, p99) in seconds, for each queue.
struct Figure {
    what: &'static str,
    small: (f64, f64),
    big: (f64, f64),
}

async fn measure(base: &str, n: usize, requests: usize) -> BenchResult<Vec<Figure>> {
    let http = client()?;
    let middle = n / 2;
    let cases: [(&'static str, &str); 7] = [
        ("the queue page's count", "/queues/{q}/count"),
        (
            "the queue page's first page (newest first)",
            "/queues/{q}/items?limit={page}&reverse=true",
        ),
        (
            "the next page from a cursor in the middle",
            "/queues/{q}/items?limit={page}&reverse=true&after={after}",
        ),
        (
            "the dead tab (newest first)",
            "/queues/{q}/items?limit={page}&reverse=true&phase=dead",
        ),
        (
            "the expired tab (empty)",
            "/queues/{q}/items?limit={page}&reverse=true&phase=expired",
        ),
        ("one item", "/queues/{q}/items/{key}"),
        ("the overview's queue list (both queues)", "/queues"),
    ];
    let mut out = Vec::new();
    for (what, path) in cases {
        let url = |q: &str, size: usize| {
            let after = if size == SMALL { SMALL / 2 + 1 } else { middle };
            format!(
                "{base}{}",
                path.replace("{q}", q)
                    .replace("{after}", &after.to_string())
                    .replace("{key}", &(size / 2).to_string())
                    .replace("{page}", &PAGE.to_string())
            )
        };
        let small_url = url("small", SMALL);
        let big_url = url("big", n);
        // Warm-up, then interleaved: the machine's noise falls on both alike.
        for _ in 0..requests.min(20) {
            get(&http, &small_url).await?;
            get(&http, &big_url).await?;
        }
        let mut small = Vec::with_capacity(requests);
        let mut big = Vec::with_capacity(requests);
        for _ in 0..requests {
            small.push(get(&http, &small_url).await?);
            big.push(get(&http, &big_url).await?);
        }
        out.push(Figure {
            what,
            small: percentiles(&mut small),
            big: percentiles(&mut big),
        });
    }
    Ok(out)
}

/// Times one GET; an answer other than 200 stops the bench.
async fn get(http: &reqwest::Client, url: &str) -> BenchResult<f64> {
    let t = Instant::now();
    let resp = http.get(url).bearer_auth(TOKEN).send().await?;
    let status = resp.status();
    let body = resp.bytes().await?;
    let secs = t.elapsed().as_secs_f64();
    if status.as_u16() != 200 {
        return Err(format!("GET {url}: {status}: {}", String::from_utf8_lossy(&body)).into());
    }
    Ok(secs)
}

fn percentiles(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |per_mille: usize| v[(v.len() - 1) * per_mille / 1000];
    (at(500), at(990))
}
