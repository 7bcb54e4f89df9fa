//! Benchmark: the `hookspool serve` daemon as a service, over HTTP on 127.0.0.1. How many
//! `POST /events` per second it acknowledges durably (each 202 means the deliveries are
//! fdatasync'ed on the default sled backend), with 1 and 16 keep-alive clients; how many
//! deliveries per second reach a local receiver end to end (first publish → last delivery
//! received, the publish phase included); and, for reference, publishing with no subscriber
//! (nothing is stored: the HTTP cost alone) and pushing one item per request with
//! `POST /queues/{id}/items` (durable, no webhook machinery). The raw disk baseline is
//! measured in the same run.
//!
//! `cargo bench -p hookspool-benches --bench daemon [-- FILTER]`. It builds the release
//! `hookspool` binary first (`cargo build --release -p hookspool-cli --bin hookspool`, same
//! target dir) unless `HOOKSPOOL_BIN` names one. Requests per client level come from
//! `DAEMON_BENCH_N` (2,000), runs from `HOOKSPOOL_BENCH_RUNS` (3); every run starts a fresh
//! daemon on a fresh data directory and stops it with SIGTERM, which must exit 0.
// Counts stay far below 2^52, where f64 would start rounding them.
#![allow(clippy::cast_precision_loss)]

mod common;

use std::path::Path;

use serde_json::Value;

use common::daemon::{
    self, Daemon, PATTERN, Receiver, Requests, client, daemon_binary, event_body, event_payload,
    process_cpu_secs, receipt_figures, request, single_delivery_id,
};
use common::raw;
use common::table::{
    Table, cpu_per_op, median, micros, millis, pair, rate, ratio, ratio_to, spread,
};
use common::{
    BenchResult, ChildArgs, Metrics, Samples, Settings, child_main, data_root, print_footer,
    print_header, run_case, scratch,
};

fn main() -> BenchResult<()> {
    if child_main(child)? {
        return Ok(());
    }
    parent()
}

const RAW_PER_RECORD: &str = "raw-per-record";
const RAW_GROUP: &str = "raw-group-commit";
/// `POST /events` with one subscription (the receiver), then wait for every delivery.
const PUBLISH: &str = "publish";
/// `POST /events` with no subscription: nothing is stored, so this is the HTTP cost alone.
const PUBLISH_NO_SUB: &str = "publish-nosub";
/// `POST /queues/bench/items`, one item per request: a durable push without webhooks.
const PUSH: &str = "push";

/// Concurrent keep-alive clients, each with its own connection.
const CLIENTS: [usize; 2] = [1, 16];
/// The queue of the push case.
const QUEUE: &str = "bench";

// ---- parent: builds the daemon, plans the runs, prints the tables ------------------------

/// One measurement of the plan.
struct Planned {
    id: String,
    case: &'static str,
    clients: usize,
    /// The daemon's `--backend` (raw cases: unused).
    backend: &'static str,
}

/// The daemon's durable backends, each measured.
const BACKENDS: [&str; 2] = ["sled", "journal"];

fn parent() -> BenchResult<()> {
    let settings = Settings::from_env()?;
    let n = settings.count("DAEMON_BENCH_N", 2_000, 20)?;
    let (root, fs_desc) = data_root(env!("CARGO_TARGET_TMPDIR"))?;
    let bin = daemon_binary(settings.smoke)?;
    print_header(
        "daemon",
        &settings,
        &fs_desc,
        &[("DAEMON_BENCH_N (requests per case and run)", n)],
    );
    println!(
        "- daemon: `{}` `serve --backend sled|journal --token … --allow-network 127.0.0.0/8`, \
         default settings otherwise (durable: each answer means fdatasync'ed); a fresh daemon \
         and data directory per run, stopped by SIGTERM\n",
        bin.display()
    );

    let mut plan = vec![
        Planned {
            id: RAW_PER_RECORD.into(),
            case: RAW_PER_RECORD,
            clients: 1,
            backend: "-",
        },
        Planned {
            id: RAW_GROUP.into(),
            case: RAW_GROUP,
            clients: 16,
            backend: "-",
        },
    ];
    for backend in BACKENDS {
        for case in [PUBLISH, PUBLISH_NO_SUB, PUSH] {
            // Nothing is stored without a subscription: one backend shows the HTTP cost.
            if case == PUBLISH_NO_SUB && backend != "sled" {
                continue;
            }
            for clients in CLIENTS {
                plan.push(Planned {
                    id: format!("{case} {backend} clients={clients}"),
                    case,
                    clients,
                    backend,
                });
            }
        }
    }
    plan.retain(|p| p.case == RAW_PER_RECORD || p.case == RAW_GROUP || settings.wants(&p.id));

    let mut samples = Samples::default();
    for round in 1..=settings.runs {
        eprintln!("daemon: round {round}/{}", settings.runs);
        for p in &plan {
            let dir = scratch(&root, &p.id.replace([' ', '='], "-"))?;
            let args = [
                ("dir", dir.path().display().to_string()),
                ("n", n.to_string()),
                ("clients", p.clients.to_string()),
                ("bin", bin.display().to_string()),
                ("backend", p.backend.to_owned()),
            ];
            run_case(&mut samples, &p.id, p.case, &args)?;
        }
    }
    print_tables(&samples, &plan, n);
    print_footer();
    Ok(())
}

fn print_tables(samples: &Samples, plan: &[Planned], n: usize) {
    print_baseline(samples, plan, n);
    print_requests(samples, plan, n);
    print_deliveries(samples, plan, n);
    println!(
        "Each client is a keep-alive connection sending its next request when the previous \
         one is answered; payloads are 256-byte JSON values. Latency is per request, as the \
         client sees it. A delivery is received when the receiver (axum on 127.0.0.1 in the \
         measuring process, answering 204) first sees its webhook-id; every published \
         delivery must arrive (else the bench fails), and repeats are counted as duplicates \
         (at-least-once delivery allows them). The clients, the receiver and the daemon share \
         the machine's CPUs; CPU is user + system time from /proc, over the publishing phase \
         (and, with a subscription, until the last delivery arrived), divided by N. Ratio = requests (or deliveries) per second ÷ the raw \
         baseline's records per second. Medians over the runs.\n"
    );
    for p in plan.iter().filter(|p| p.case == PUBLISH) {
        if let Some(d) = samples.get(&p.id, "duplicates")
            && d.max > 0.0
        {
            println!(
                "WARNING: {}: up to {:.0} duplicate deliveries in a run (allowed by \
                 at-least-once delivery, but worth a look)\n",
                p.id, d.max
            );
        }
    }
}

fn print_baseline(samples: &Samples, plan: &[Planned], n: usize) {
    let mut t = Table::new(
        "Raw disk baseline (same run, same filesystem; 256 B records appended to a new file)",
        &[
            "measurement",
            "N",
            "ops/s",
            "µs/op median (min..max)",
            "p50 / p99 µs",
        ],
    );
    for p in plan.iter().filter(|p| p.case == RAW_PER_RECORD) {
        t.row(vec![
            "write + fdatasync per record, 1 writer".into(),
            n.to_string(),
            median(samples.get(&p.id, "ops_per_s"), rate),
            spread(samples.get(&p.id, "us_per_op"), micros),
            pair(samples, &p.id, "p50_us", "p99_us", micros),
        ]);
    }
    for p in plan.iter().filter(|p| p.case == RAW_GROUP) {
        t.row(vec![
            "group commit, 16 threads sharing fdatasyncs".into(),
            n.to_string(),
            median(samples.get(&p.id, "ops_per_s"), rate),
            spread(samples.get(&p.id, "us_per_op"), micros),
            pair(samples, &p.id, "p50_us", "p99_us", micros),
        ]);
    }
    t.print();
}

fn print_requests(samples: &Samples, plan: &[Planned], n: usize) {
    let mut t = Table::new(
        "Requests through the daemon's HTTP API (durable: each answer means fdatasync'ed)",
        &[
            "backend",
            "request",
            "clients",
            "N",
            "requests/s median (min..max)",
            "ratio to fdatasync per record",
            "latency p50 / p99 ms",
            "daemon peak RSS MiB",
            "CPU µs per request: daemon / clients + receiver",
        ],
    );
    for p in plan.iter().filter(|p| is_daemon_case(p.case)) {
        let what = match p.case {
            PUBLISH => "POST /events → 202, 1 subscription",
            PUBLISH_NO_SUB => "POST /events → 202, no subscription (nothing stored)",
            _ => "POST /queues/bench/items → 201, 1 item",
        };
        t.row(vec![
            p.backend.into(),
            what.into(),
            p.clients.to_string(),
            n.to_string(),
            spread(samples.get(&p.id, "ops_per_s"), rate),
            ratio_to(samples, &p.id, RAW_PER_RECORD),
            pair(samples, &p.id, "p50_us", "p99_us", |us| millis(us / 1e3)),
            median(samples.get(&p.id, "daemon_rss_kib"), |k| {
                format!("{:.1}", k / 1024.0)
            }),
            format!(
                "{} / {}",
                cpu_per_op(samples, &p.id, "daemon_cpu_s", n),
                cpu_per_op(samples, &p.id, "bench_cpu_s", n)
            ),
        ]);
    }
    t.print();
}

fn print_deliveries(samples: &Samples, plan: &[Planned], n: usize) {
    let mut t = Table::new(
        "Webhook deliveries end to end (first publish → last delivery received, publishing \
         included), 1 subscription, default delivery settings",
        &[
            "backend",
            "publishing clients",
            "N",
            "deliveries/s median (min..max)",
            "ratio to fdatasync per record",
            "publish → receipt p50 / p99 ms",
            "duplicates (max of runs)",
        ],
    );
    for p in plan.iter().filter(|p| p.case == PUBLISH) {
        let e2e_ratio = match (
            samples.get(&p.id, "e2e_per_s"),
            samples.get(RAW_PER_RECORD, "ops_per_s"),
        ) {
            (Some(a), Some(b)) if b.median > 0.0 => ratio(a.median / b.median),
            _ => "-".into(),
        };
        t.row(vec![
            p.backend.into(),
            p.clients.to_string(),
            n.to_string(),
            spread(samples.get(&p.id, "e2e_per_s"), rate),
            e2e_ratio,
            pair(samples, &p.id, "receipt_p50_ms", "receipt_p99_ms", millis),
            samples
                .get(&p.id, "duplicates")
                .map_or_else(|| "-".into(), |s| format!("{:.0}", s.max)),
        ]);
    }
    t.print();
}

fn is_daemon_case(case: &str) -> bool {
    matches!(case, PUBLISH | PUBLISH_NO_SUB | PUSH)
}

// ---- child: one measurement -------------------------------------------------------------

fn child(case: &str, args: &ChildArgs) -> BenchResult<Metrics> {
    let dir = args.path("dir")?;
    let n = args.usize("n")?;
    let clients = args.usize("clients")?;
    match case {
        RAW_PER_RECORD => raw::per_record(&dir, n),
        RAW_GROUP => raw::group_commit(&dir, n, clients),
        _ if is_daemon_case(case) => {
            let bin = args.path("bin")?;
            let backend = args.str("backend")?;
            measure_daemon(case, &bin, backend, &dir, n, clients)
        }
        _ => Err(format!("unknown case {case:?}").into()),
    }
}

/// Starts a daemon (and for [`PUBLISH`] a receiver), sends `n` requests from `clients`
/// clients, waits for the deliveries, stops the daemon with SIGTERM and checks the receipts.
fn measure_daemon(
    case: &str,
    bin: &Path,
    backend: &str,
    dir: &Path,
    n: usize,
    clients: usize,
) -> BenchResult<Metrics> {
    let receiver = Receiver::start()?;
    let daemon = Daemon::start(bin, dir, "daemon", &[], &["--backend", backend])?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let base = daemon.base();
    let published = rt.block_on(async {
        let setup = client()?;
        let kind = match case {
            PUBLISH => {
                let sub = serde_json::json!({
                    "event": PATTERN,
                    "target_url": format!("http://{}/hook", receiver.addr),
                });
                request(&setup, &format!("{base}/hooks/subscribe"), &sub, 201).await?;
                Requests {
                    path: "/events".into(),
                    body: event_body,
                    expect: 202,
                    answer: |a| single_delivery_id(a).map(Some),
                }
            }
            PUSH => {
                let queue = serde_json::json!({ "id": QUEUE });
                request(&setup, &format!("{base}/queues"), &queue, 201).await?;
                Requests {
                    path: format!("/queues/{QUEUE}/items"),
                    body: |seq| Ok(serde_json::json!({ "payload": event_payload(seq)? })),
                    expect: 201,
                    answer: |_| Ok(None),
                }
            }
            _ => Requests {
                path: "/events".into(),
                body: event_body,
                expect: 202,
                answer: no_delivery,
            },
        };
        let cpu_before = (daemon.cpu_secs(), process_cpu_secs("self", false));
        let published = daemon::publish_all(std::slice::from_ref(&base), clients, n, &kind).await?;
        if case == PUBLISH {
            receiver.wait_for(n).await?;
        }
        let cpu_after = (daemon.cpu_secs(), process_cpu_secs("self", false));
        Ok::<_, common::BoxError>((published, cpu_before, cpu_after))
    });
    // Read before stopping: the daemon's own high-water mark of resident memory.
    let rss = daemon.peak_rss_kib();
    // Stopped whatever happened, so that no daemon outlives a failed run.
    let stopped = daemon.stop();
    let (published, before, after) = published?;
    stopped?;

    let mut m = published.metrics();
    if let Some(kib) = rss {
        m.insert("daemon_rss_kib".into(), kib);
    }
    let cpu = [
        ("daemon_cpu_s", after.0.zip(before.0)),
        ("bench_cpu_s", after.1.zip(before.1)),
    ];
    for (key, secs) in cpu {
        if let Some((a, b)) = secs {
            m.insert(key.into(), a - b);
        }
    }
    if case == PUBLISH {
        // Checked after the daemon stopped, so a late repeat is counted too.
        let receipts = receiver.check(&published)?;
        receipt_figures(&mut m, &receipts, &published);
    }
    Ok(m)
}

/// The body of publish `seq`.
/// A publish with no subscription must create no delivery.
fn no_delivery(answer: &Value) -> BenchResult<Option<String>> {
    if answer["delivery_ids"] == serde_json::json!([]) {
        Ok(None)
    } else {
        Err(format!("no subscription, yet deliveries: {answer}").into())
    }
}
