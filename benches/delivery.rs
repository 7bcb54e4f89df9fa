//! Benchmark: how many webhook deliveries per second, end to end (fire → stored → claimed →
//! signed POST → 2xx → recorded done), against a local keep-alive axum receiver that answers
//! 200 at once, on every backend and durability mode; and how long from `fire` to the
//! receiver's receipt, under that load and unloaded (one event at a time). The raw disk
//! baseline is measured in the same run.
//!
//! Two `http-only` cases measure the ceiling underneath: the same client POSTing to the same
//! receiver from as many tasks as the loop's global limit, with nothing stored (signed as a
//! delivery is, and unsigned).
//!
//! A paced case offers a steady load instead (1,000 events/s, one subscription) and measures
//! fire → receipt at that rate: what a service sees in normal running, as opposed to a burst.
//!
//! `cargo bench -p hookspool-benches --bench delivery [-- FILTER]`; counts and runs come from
//! `HOOKSPOOL_BENCH_N_DELIVERY`, `HOOKSPOOL_BENCH_N_LATENCY`, `HOOKSPOOL_BENCH_N_PACED`,
//! `HOOKSPOOL_BENCH_RUNS`.
// Counts and byte sizes stay far below 2^52, where f64 would start rounding them.
#![allow(clippy::cast_precision_loss)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hookspool::{Backend, Phase, QueueId, Store};
use hookspool_webhooks::{
    DeliveryClient, DeliveryConfig, HEADER_WEBHOOK_ID, Hooks, HttpConfig, NetworkPolicy,
    OutcomeKind, SignInput, SignatureScheme, SigningKey, SubscribeOptions, TargetUrl, sign,
};
use tokio::sync::broadcast::error::RecvError;

use common::backends::{AnyStore, Mode, runtime};
use common::daemon::serve_loopback;
use common::raw::{self, percentile_us};
use common::table::{Table, median, micros, millis, pair, rate, ratio_to, rss_mib, spread};
use common::{
    BenchResult, ChildArgs, Metrics, PAYLOAD_LEN, Samples, Settings, child_main, data_root,
    print_footer, print_header, run_case, scratch,
};

fn main() -> BenchResult<()> {
    if child_main(child)? {
        return Ok(());
    }
    parent()
}

const RAW_PER_RECORD: &str = "raw-per-record";
const BURST: &str = "burst";
const ONE_BY_ONE: &str = "one-by-one";
const PACED: &str = "paced";
const HTTP_ONLY: &str = "http-only";

/// Concurrent requests of the `http-only` cases: the delivery loop's default global limit.
fn http_concurrency() -> usize {
    DeliveryConfig::default().concurrency
}

/// The paced case's offered load, in events per second.
const PACED_RATE: u64 = 1_000;

/// The event every case fires.
const EVENT: &str = "order.created";
/// Concurrent tasks firing the burst (a service fires from many request handlers at once).
const PRODUCERS: usize = 4;
/// Subscription counts of the burst cases: one (bounded by the default per-subscription
/// limit of 4 requests in flight) and several (bounded by the global limit of 32).
const SUBSCRIPTIONS: [usize; 2] = [1, 8];
/// How often the idle delivery loop looks for due deliveries (firing wakes it at once).
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// A run that takes longer than this has stalled.
const STALL: Duration = Duration::from_mins(5);

// ---- parent: plans the runs, prints the tables ------------------------------------------

/// One measurement of the plan.
struct Planned {
    id: String,
    case: &'static str,
    mode: Option<Mode>,
    subs: usize,
    n: usize,
}

fn parent() -> BenchResult<()> {
    let settings = Settings::from_env()?;
    let n = settings.count("HOOKSPOOL_BENCH_N_DELIVERY", 2_000, 40)?;
    let n_lat = settings.count("HOOKSPOOL_BENCH_N_LATENCY", 200, 10)?;
    let n_paced = settings.count("HOOKSPOOL_BENCH_N_PACED", 5_000, 100)?;
    let (root, fs_desc) = data_root(env!("CARGO_TARGET_TMPDIR"))?;
    print_header(
        "delivery",
        &settings,
        &fs_desc,
        &[
            ("HOOKSPOOL_BENCH_N_DELIVERY (deliveries per burst)", n),
            ("HOOKSPOOL_BENCH_N_LATENCY (events fired one by one)", n_lat),
            ("HOOKSPOOL_BENCH_N_PACED (events fired at 1,000/s)", n_paced),
        ],
    );

    let mut plan = vec![Planned {
        id: RAW_PER_RECORD.into(),
        case: RAW_PER_RECORD,
        mode: None,
        subs: 0,
        n,
    }];
    // `subs` says whether requests are signed (1) or not (0).
    for signed in [1, 0] {
        plan.push(Planned {
            id: format!(
                "{HTTP_ONLY} {}",
                if signed == 1 { "signed" } else { "unsigned" }
            ),
            case: HTTP_ONLY,
            mode: None,
            subs: signed,
            n,
        });
    }
    for mode in Mode::ALL {
        for subs in SUBSCRIPTIONS {
            plan.push(Planned {
                id: format!("{BURST} {} subs={subs}", mode.name()),
                case: BURST,
                mode: Some(mode),
                subs,
                n,
            });
        }
        plan.push(Planned {
            id: format!("{ONE_BY_ONE} {}", mode.name()),
            case: ONE_BY_ONE,
            mode: Some(mode),
            subs: 1,
            n: n_lat,
        });
        plan.push(Planned {
            id: format!("{PACED} {}", mode.name()),
            case: PACED,
            mode: Some(mode),
            subs: 1,
            n: n_paced,
        });
    }
    plan.retain(|p| p.case == RAW_PER_RECORD || settings.wants(&p.id));

    let mut samples = Samples::default();
    for round in 1..=settings.runs {
        eprintln!("delivery: round {round}/{}", settings.runs);
        for p in &plan {
            let dir = scratch(&root, &p.id.replace([' ', '='], "-"))?;
            let mut args = vec![
                ("dir", dir.path().display().to_string()),
                ("n", p.n.to_string()),
                ("subs", p.subs.to_string()),
            ];
            if let Some(mode) = p.mode {
                args.push(("mode", mode.name().to_owned()));
            }
            run_case(&mut samples, &p.id, p.case, &args)?;
        }
    }
    print_tables(&samples, &plan);
    print_footer();
    Ok(())
}

fn print_tables(samples: &Samples, plan: &[Planned]) {
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
    if let Some(p) = plan.iter().find(|p| p.case == RAW_PER_RECORD) {
        t.row(vec![
            "write + fdatasync per record".into(),
            p.n.to_string(),
            median(samples.get(&p.id, "ops_per_s"), rate),
            spread(samples.get(&p.id, "us_per_op"), micros),
            pair(samples, &p.id, "p50_us", "p99_us", micros),
        ]);
    }
    t.print();

    let mut t = Table::new(
        "Webhook delivery, end to end (fire → signed POST → 200 → done), burst of N deliveries \
         fired by 4 tasks, default DeliveryConfig (but loopback allowed, poll 10 ms)",
        &[
            "backend / mode",
            "subscriptions",
            "N",
            "deliveries/s median (min..max)",
            "ratio to fdatasync per record",
            "deliveries stored/s while firing",
            "fire → receipt p50 / p99 ms",
            "non-2xx outcomes",
            "peak RSS MiB",
        ],
    );
    for p in plan.iter().filter(|p| p.case == BURST) {
        let Some(mode) = p.mode else { continue };
        t.row(vec![
            mode.label().into(),
            p.subs.to_string(),
            p.n.to_string(),
            spread(samples.get(&p.id, "ops_per_s"), rate),
            ratio_to(samples, &p.id, RAW_PER_RECORD),
            median(samples.get(&p.id, "fire_per_s"), rate),
            pair(samples, &p.id, "p50_ms", "p99_ms", millis),
            median(samples.get(&p.id, "failed"), |x| format!("{x:.0}")),
            rss_mib(samples, &p.id),
        ]);
    }
    t.print();

    let mut t = Table::new(
        "Unloaded latency: one event at a time, the next fired once the previous is done",
        &[
            "backend / mode",
            "N",
            "fire → receipt p50 / p99 ms",
            "fire → done p50 / p99 ms",
        ],
    );
    for p in plan.iter().filter(|p| p.case == ONE_BY_ONE) {
        let Some(mode) = p.mode else { continue };
        t.row(vec![
            mode.label().into(),
            p.n.to_string(),
            pair(samples, &p.id, "p50_ms", "p99_ms", millis),
            pair(samples, &p.id, "done_p50_ms", "done_p99_ms", millis),
        ]);
    }
    t.print();
    print_http_only(samples, plan);
    print_paced(samples, plan);
    println!(
        "A delivery is one subscription's copy of one event: each fire stores one delivery per \
         subscription in one atomic write, so with 8 subscriptions N/8 events are fired. \
         The time runs from the first fire call to the last delivery recorded done. \
         Latency is from the start of the fire call to the receiver getting the request (or \
         to the loop reporting it done); under the burst it is mostly time spent queued \
         behind earlier deliveries. Ratio = deliveries/s ÷ the raw baseline's records/s. The \
         receiver runs in the measured process, on its own thread. Medians over the runs.\n"
    );
}

/// The ceiling: HTTP alone, nothing stored.
fn print_http_only(samples: &Samples, plan: &[Planned]) {
    let title = format!(
        "HTTP alone, nothing stored: the delivery client POSTing N requests of 256 B to the \
         same receiver from {} tasks (the loop's default global limit), with a delivery's \
         headers",
        http_concurrency()
    );
    let mut t = Table::new(
        &title,
        &[
            "requests",
            "N",
            "requests/s median (min..max)",
            "ratio to fdatasync per record",
            "non-2xx",
        ],
    );
    for p in plan.iter().filter(|p| p.case == HTTP_ONLY) {
        t.row(vec![
            if p.subs == 1 {
                "signed (Standard Webhooks)".into()
            } else {
                "unsigned".into()
            },
            p.n.to_string(),
            spread(samples.get(&p.id, "ops_per_s"), rate),
            ratio_to(samples, &p.id, RAW_PER_RECORD),
            median(samples.get(&p.id, "failed"), |x| format!("{x:.0}")),
        ]);
    }
    t.print();
}

/// The paced case's table.
fn print_paced(samples: &Samples, plan: &[Planned]) {
    let mut t = Table::new(
        "Steady load: events fired at 1,000/s (one subscription), each fire on its own task",
        &[
            "backend / mode",
            "N",
            "fire → receipt p50 / p99 ms",
            "offered / achieved fires/s",
        ],
    );
    for p in plan.iter().filter(|p| p.case == PACED) {
        let Some(mode) = p.mode else { continue };
        t.row(vec![
            mode.label().into(),
            p.n.to_string(),
            pair(samples, &p.id, "p50_ms", "p99_ms", millis),
            format!(
                "{} / {}",
                rate(PACED_RATE as f64),
                median(samples.get(&p.id, "fire_per_s"), rate)
            ),
        ]);
    }
    t.print();
}

// ---- child: one measurement -------------------------------------------------------------

fn child(case: &str, args: &ChildArgs) -> BenchResult<Metrics> {
    let dir = args.path("dir")?;
    let n = args.usize("n")?;
    if case == RAW_PER_RECORD {
        return raw::per_record(&dir, n);
    }
    let subs = args.usize("subs")?;
    if case == HTTP_ONLY {
        let receiver = Receiver::start()?;
        return runtime()?.block_on(http_only(&receiver, n, subs == 1));
    }
    let mode = Mode::parse(args.str("mode")?)?;
    let receiver = Receiver::start()?;
    let rt = runtime()?;
    rt.block_on(async {
        match mode.open(&dir)? {
            AnyStore::Memory(s) => measure(case, s, &receiver, n, subs).await,
            AnyStore::Sled(s) => measure(case, s, &receiver, n, subs).await,
            AnyStore::Journal(s) => measure(case, s, &receiver, n, subs).await,
        }
    })
}

async fn measure<B: Backend>(
    case: &str,
    store: Store<B>,
    receiver: &Receiver,
    n: usize,
    subs: usize,
) -> BenchResult<Metrics> {
    let hooks = Hooks::open(store).await?;
    for i in 0..subs {
        let url = format!("http://{}/hook/{i}", receiver.addr);
        hooks
            .subscribe(EVENT, &url, SubscribeOptions::default())
            .await?;
    }
    let config = DeliveryConfig {
        poll_interval: POLL_INTERVAL,
        http: HttpConfig {
            policy: NetworkPolicy::new().allow_loopback(),
            ..HttpConfig::default()
        },
        ..DeliveryConfig::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let deliverer = hooks.deliverer(config)?;
    let running = tokio::spawn(deliverer.run(async {
        let _ = stopped.await;
    }));
    let m = match case {
        BURST => burst(&hooks, receiver, n, subs).await?,
        ONE_BY_ONE => one_by_one(&hooks, receiver, n).await?,
        PACED => paced(&hooks, receiver, n).await?,
        _ => return Err(format!("unknown case {case:?}").into()),
    };
    let _ = stop.send(());
    running.await??;
    hooks.store().sync().await?;
    Ok(m)
}

/// A 256-byte JSON payload (the size of every other bench's records).
fn event_payload(seq: usize) -> Vec<u8> {
    let head = format!("{{\"seq\":{seq},\"pad\":\"");
    let pad = PAYLOAD_LEN.saturating_sub(head.len() + 2);
    format!("{head}{}\"}}", "x".repeat(pad)).into_bytes()
}

/// Fires `n` deliveries (`n / subs` events) from [`PRODUCERS`] tasks as fast as they go, and
/// waits until every one is done.
async fn burst<B: Backend>(
    hooks: &Hooks<B>,
    receiver: &Receiver,
    n: usize,
    subs: usize,
) -> BenchResult<Metrics> {
    let events = n.div_ceil(subs);
    let n = events * subs;
    // Subscribed before the first fire, so no outcome is missed.
    let results = hooks.results();
    let start = Instant::now();
    let mut producers: tokio::task::JoinSet<hookspool_webhooks::Result<Vec<(String, Instant)>>> =
        tokio::task::JoinSet::new();
    for p in 0..PRODUCERS {
        let hooks = hooks.clone();
        producers.spawn(async move {
            let mut fired = Vec::new();
            for seq in (p..events).step_by(PRODUCERS) {
                let at = Instant::now();
                for id in hooks.fire(EVENT, event_payload(seq)).await? {
                    fired.push((id.as_str().to_owned(), at));
                }
            }
            Ok(fired)
        });
    }
    let mut fired_at = HashMap::with_capacity(n);
    while let Some(r) = producers.join_next().await {
        fired_at.extend(r??);
    }
    let fire_secs = start.elapsed().as_secs_f64();
    let (delivered, failed) = wait_done(hooks, results, n).await?;
    let secs = start.elapsed().as_secs_f64();
    if fired_at.len() != n || delivered < n {
        return Err(format!(
            "{} fired, {delivered} delivered, {n} expected",
            fired_at.len()
        )
        .into());
    }
    let mut lat = receiver.latencies(&fired_at)?;
    Ok(Metrics::from([
        ("ops".into(), n as f64),
        ("secs".into(), secs),
        ("fire_per_s".into(), n as f64 / fire_secs),
        ("failed".into(), failed as f64),
        ("p50_ms".into(), percentile_us(&mut lat, 50) / 1e3),
        ("p99_ms".into(), percentile_us(&mut lat, 99) / 1e3),
    ]))
}

/// Waits until `n` deliveries are reported delivered; returns how many were, and how many
/// other outcomes (retries, failures) came. If the results stream lagged, falls back to the
/// store's count of done deliveries.
async fn wait_done<B: Backend>(
    hooks: &Hooks<B>,
    mut results: tokio::sync::broadcast::Receiver<hookspool_webhooks::DeliveryOutcome>,
    n: usize,
) -> BenchResult<(usize, usize)> {
    let (mut delivered, mut failed) = (0, 0);
    let deadline = tokio::time::Instant::now() + STALL;
    while delivered < n {
        match tokio::time::timeout_at(deadline, results.recv()).await {
            Err(_) => return Err(format!("stalled after {delivered} of {n} deliveries").into()),
            Ok(Ok(o)) if o.kind == OutcomeKind::Delivered => delivered += 1,
            Ok(Ok(_)) => failed += 1,
            Ok(Err(RecvError::Lagged(_))) => {
                let q = QueueId::new(hookspool_webhooks::DELIVERIES_QUEUE)?;
                loop {
                    let done = hooks.store().count_phase(&q, &Phase::DONE).await?;
                    if done >= n as u64 {
                        return Ok((n, failed));
                    }
                    if tokio::time::Instant::now() > deadline {
                        return Err(format!("stalled after {done} of {n} deliveries").into());
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            Ok(Err(RecvError::Closed)) => return Err("the results stream closed".into()),
        }
    }
    Ok((delivered, failed))
}

/// Fires `n` events one at a time, each once the previous one is done.
async fn one_by_one<B: Backend>(
    hooks: &Hooks<B>,
    receiver: &Receiver,
    n: usize,
) -> BenchResult<Metrics> {
    let mut results = hooks.results();
    let mut fired_at = HashMap::with_capacity(n);
    let mut done_lat = Vec::with_capacity(n);
    let start = Instant::now();
    for seq in 0..n {
        let at = Instant::now();
        let ids = hooks.fire(EVENT, event_payload(seq)).await?;
        let [id] = ids.as_slice() else {
            return Err(format!("one subscription, but {} deliveries", ids.len()).into());
        };
        loop {
            let o = tokio::time::timeout(STALL, results.recv()).await??;
            if o.delivery_id == *id && o.is_final() {
                if o.kind != OutcomeKind::Delivered {
                    return Err(format!("{id} ended as {:?}", o.kind).into());
                }
                break;
            }
        }
        done_lat.push(at.elapsed());
        fired_at.insert(id.as_str().to_owned(), at);
    }
    let secs = start.elapsed().as_secs_f64();
    let mut lat = receiver.latencies(&fired_at)?;
    Ok(Metrics::from([
        ("ops".into(), n as f64),
        ("secs".into(), secs),
        ("p50_ms".into(), percentile_us(&mut lat, 50) / 1e3),
        ("p99_ms".into(), percentile_us(&mut lat, 99) / 1e3),
        ("done_p50_ms".into(), percentile_us(&mut done_lat, 50) / 1e3),
        ("done_p99_ms".into(), percentile_us(&mut done_lat, 99) / 1e3),
    ]))
}

/// Fires `n` events at [`PACED_RATE`] per second, each on a task of its own (a slow fire does
/// not hold back the schedule), and waits until every one is delivered.
async fn paced<B: Backend>(
    hooks: &Hooks<B>,
    receiver: &Receiver,
    n: usize,
) -> BenchResult<Metrics> {
    let results = hooks.results();
    let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 / PACED_RATE));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut fires: tokio::task::JoinSet<hookspool_webhooks::Result<(Vec<String>, Instant)>> =
        tokio::task::JoinSet::new();
    let start = Instant::now();
    for seq in 0..n {
        ticks.tick().await;
        let hooks = hooks.clone();
        fires.spawn(async move {
            let at = Instant::now();
            let ids = hooks.fire(EVENT, event_payload(seq)).await?;
            Ok((ids.iter().map(|id| id.as_str().to_owned()).collect(), at))
        });
    }
    let fire_secs = start.elapsed().as_secs_f64();
    let mut fired_at = HashMap::with_capacity(n);
    while let Some(r) = fires.join_next().await {
        let (ids, at) = r??;
        fired_at.extend(ids.into_iter().map(|id| (id, at)));
    }
    let (delivered, _) = wait_done(hooks, results, n).await?;
    if fired_at.len() != n || delivered < n {
        return Err(format!(
            "{} fired, {delivered} delivered, {n} expected",
            fired_at.len()
        )
        .into());
    }
    let mut lat = receiver.latencies(&fired_at)?;
    Ok(Metrics::from([
        ("ops".into(), n as f64),
        ("secs".into(), start.elapsed().as_secs_f64()),
        ("fire_per_s".into(), n as f64 / fire_secs),
        ("p50_ms".into(), percentile_us(&mut lat, 50) / 1e3),
        ("p99_ms".into(), percentile_us(&mut lat, 99) / 1e3),
    ]))
}

/// Sends `n` requests as the delivery loop would, minus everything it stores: the same
/// client, payload and headers (signed with one key when `signed`), [`http_concurrency`] at
/// a time.
async fn http_only(receiver: &Receiver, n: usize, signed: bool) -> BenchResult<Metrics> {
    let client = Arc::new(DeliveryClient::new(HttpConfig {
        policy: NetworkPolicy::new().allow_loopback(),
        ..HttpConfig::default()
    })?);
    let url = Arc::new(TargetUrl::parse(&format!(
        "http://{}/hook/0",
        receiver.addr
    ))?);
    let key = Arc::new(SigningKey::generate()?);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks: tokio::task::JoinSet<BenchResult<usize>> = tokio::task::JoinSet::new();
    for _ in 0..http_concurrency() {
        let (client, url, key, next) = (
            Arc::clone(&client),
            Arc::clone(&url),
            Arc::clone(&key),
            Arc::clone(&next),
        );
        tasks.spawn(async move {
            let mut failed = 0;
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= n {
                    return Ok(failed);
                }
                let id = format!("msg_{seq:024x}");
                let body = event_payload(seq);
                let mut headers = vec![
                    ("content-type".to_owned(), "application/json".to_owned()),
                    ("x-hookspool-event".to_owned(), EVENT.to_owned()),
                ];
                let timestamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_secs();
                if signed {
                    let input = SignInput {
                        delivery_id: &id,
                        event: EVENT,
                        timestamp,
                        body: &body,
                    };
                    let signed = sign(SignatureScheme::StandardWebhooks, &[&key], &input)?;
                    headers.extend(signed.into_iter().map(|(k, v)| (k.to_owned(), v)));
                } else {
                    headers.push((HEADER_WEBHOOK_ID.to_owned(), id));
                    headers.push(("webhook-timestamp".to_owned(), timestamp.to_string()));
                }
                let response = client.post(&url, &headers, body).await?;
                if !response.is_success() {
                    failed += 1;
                }
            }
        });
    }
    let mut failed = 0;
    while let Some(r) = tasks.join_next().await {
        failed += r??;
    }
    let secs = start.elapsed().as_secs_f64();
    // Every id once: a request the client says was answered must have arrived.
    if receiver.received() < n {
        return Err(format!("{} of {n} requests received", receiver.received()).into());
    }
    Ok(Metrics::from([
        ("ops".into(), n as f64),
        ("secs".into(), secs),
        ("failed".into(), failed as f64),
    ]))
}

// ---- the receiver -----------------------------------------------------------------------

/// A keep-alive HTTP receiver on 127.0.0.1 that answers 200 at once and records when each
/// `webhook-id` first arrived. It runs on its own thread and runtime, as a separate server
/// would, and lives until the process exits.
struct Receiver {
    addr: std::net::SocketAddr,
    first_seen: Seen,
}

/// When each `webhook-id` first arrived.
type Seen = Arc<Mutex<HashMap<String, Instant>>>;

impl Receiver {
    fn start() -> BenchResult<Receiver> {
        let first_seen: Seen = Arc::default();
        let app = Router::new()
            .route("/hook/{sub}", post(receive))
            .with_state(Arc::clone(&first_seen));
        let addr = serve_loopback(app)?;
        Ok(Receiver { addr, first_seen })
    }

    /// How many distinct `webhook-id`s arrived.
    fn received(&self) -> usize {
        self.first_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Fire → first receipt of every delivery in `fired_at`.
    fn latencies(&self, fired_at: &HashMap<String, Instant>) -> BenchResult<Vec<Duration>> {
        let seen = self
            .first_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        fired_at
            .iter()
            .map(|(id, at)| {
                seen.get(id)
                    .map(|t| t.saturating_duration_since(*at))
                    .ok_or_else(|| format!("{id} was done but never received").into())
            })
            .collect()
    }
}

async fn receive(State(seen): State<Seen>, headers: HeaderMap, _body: Bytes) -> StatusCode {
    let now = Instant::now();
    if let Some(id) = headers.get(HEADER_WEBHOOK_ID).and_then(|v| v.to_str().ok()) {
        seen.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id.to_owned())
            .or_insert(now);
    }
    StatusCode::OK
}
