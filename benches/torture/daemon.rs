//! The `daemon` target: `hookspool serve` under publishing clients, killed and restarted.
//!
//! One data directory (the journal, the default backend) and one receiver on 127.0.0.1 for
//! the whole run: the bench receiver, verifying every request's signature with the
//! subscription's key. Each cycle starts the daemon, lets [`CLIENTS`] keep-alive clients
//! publish (each its next event as soon as the last is answered) while the daemon also
//! delivers, and SIGKILLs it at a random moment. At the end a last daemon runs until every
//! publish that was answered 202 has been delivered, and stops with SIGTERM (exit 0).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hookspool::conformance::support::Rng;

use crate::Outcome;
use crate::common::daemon::{
    Daemon, Receiver, TOKEN, client, event_body, request, single_delivery_id, subscribe,
};
use crate::common::{BenchResult, scratch};

/// Publishing clients.
const CLIENTS: usize = 8;
/// Tries to start the daemon before giving up on a cycle.
const START_TRIES: usize = 3;
/// The last daemon delivers what is left until no delivery has arrived for this long ...
const STALLED: Duration = Duration::from_secs(30);
/// ... or for this long at most.
const DRAIN_MAX: Duration = Duration::from_mins(20);

/// Runs `cycles` kill cycles of `bin serve`.
pub fn torture(bin: &Path, root: &Path, cycles: usize, seed: u64) -> BenchResult<Outcome> {
    let scratch = scratch(root, "torture-daemon")?;
    let dir = scratch.path();
    let receiver = Receiver::start()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut rng = Rng::new(seed ^ 0xDAE);
    let next = Arc::new(AtomicUsize::new(0));
    let mut acked: HashSet<String> = HashSet::new();
    let mut failed_starts = 0;
    let started = Instant::now();
    for cycle in 0..cycles {
        let daemon = start(bin, dir, &mut failed_starts)?;
        if cycle == 0 {
            let url = format!("http://{}/hook", receiver.addr);
            receiver.verify_with(rt.block_on(subscribe(&daemon.base(), &url))?);
        }
        // One cycle in five is killed within 20 ms of listening, the others within 400.
        let window = if rng.below(5) == 0 { 20 } else { 400 };
        let delay = Duration::from_millis(rng.below(window));
        acked.extend(rt.block_on(publish_until_killed(daemon, delay, &next))?);
        crate::progress("daemon", cycle, acked.len());
    }
    let daemon = start(bin, dir, &mut failed_starts)?;
    let drained = rt.block_on(drain(&receiver, &acked));
    let arrivals = receiver.arrivals();
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| !arrivals.contains_key(*id))
        .collect();
    let (lost, undelivered) = rt.block_on(classify(&daemon.base(), &missing))?;
    daemon.stop()?;
    let duplicated = arrivals.values().map(|n| n - 1).sum();
    let unacknowledged = arrivals.keys().filter(|id| !acked.contains(*id)).count();
    Ok(Outcome {
        cycles,
        acknowledged: acked.len(),
        lost,
        duplicated,
        duplicates_fail: false,
        failed_starts,
        elapsed: started.elapsed(),
        notes: format!(
            "{CLIENTS} publishing clients, journal; {} publishes sent; duplicated = deliveries \
             received again after a kill (at least once); {unacknowledged} delivered whose 202 \
             the kill cut off; {} bad signatures; the last daemon delivered the rest in {:.0} s \
             ({undelivered} still pending when it stopped)",
            next.load(Ordering::Relaxed),
            receiver.bad_signatures(),
            drained.as_secs_f64()
        ),
    })
}

/// Starts the daemon on the run's data directory, trying again after a failed start.
fn start(bin: &Path, dir: &Path, failed_starts: &mut usize) -> BenchResult<Daemon> {
    let mut last = String::new();
    for _ in 0..START_TRIES {
        match Daemon::start(bin, dir, "torture", &[], &[]) {
            Ok(daemon) => return Ok(daemon),
            Err(e) => {
                eprintln!("torture daemon: failed start: {e}");
                *failed_starts += 1;
                last = e.to_string();
            }
        }
    }
    Err(format!("the daemon did not start {START_TRIES} times in a row: {last}").into())
}

/// Publishes from [`CLIENTS`] clients until `delay` has passed, SIGKILLs the daemon, and
/// returns the delivery ids of the publishes answered 202.
async fn publish_until_killed(
    daemon: Daemon,
    delay: Duration,
    next: &Arc<AtomicUsize>,
) -> BenchResult<Vec<String>> {
    let url = format!("{}/events", daemon.base());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let (url, next, http) = (url.clone(), Arc::clone(next), client()?);
        tasks.spawn(async move {
            let mut ids = Vec::new();
            loop {
                let body = event_body(next.fetch_add(1, Ordering::Relaxed))?;
                // An error is the kill (the connection goes): what was not answered 202 is
                // not acknowledged.
                let Ok(answer) = request(&http, &url, &body, 202).await else {
                    return Ok::<_, crate::common::BoxError>(ids);
                };
                ids.push(single_delivery_id(&answer)?);
            }
        });
    }
    tokio::time::sleep(delay).await;
    daemon.kill9()?;
    let mut acked = Vec::new();
    while let Some(ids) = tasks.join_next().await {
        acked.extend(ids??);
    }
    Ok(acked)
}

/// Waits until every acknowledged delivery arrived, or none arrived for [`STALLED`] (or
/// [`DRAIN_MAX`] passed); how long it took.
async fn drain(receiver: &Receiver, acked: &HashSet<String>) -> Duration {
    let started = Instant::now();
    let (mut seen, mut progress) = (0, Instant::now());
    while progress.elapsed() < STALLED && started.elapsed() < DRAIN_MAX {
        let arrivals = receiver.arrivals();
        if acked.iter().all(|id| arrivals.contains_key(id)) {
            break;
        }
        if arrivals.len() > seen {
            (seen, progress) = (arrivals.len(), Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    started.elapsed()
}

/// Asks the daemon at `base` about each acknowledged delivery that never arrived: one it
/// does not know is lost; one it still holds is only undelivered. Returns both counts.
async fn classify(base: &str, missing: &[&String]) -> BenchResult<(usize, usize)> {
    let http = client()?;
    let (mut lost, mut held) = (0, 0);
    for id in missing {
        let resp = http
            .get(format!("{base}/deliveries/{id}"))
            .bearer_auth(TOKEN)
            .send()
            .await?;
        match resp.status().as_u16() {
            404 => lost += 1,
            200 => held += 1,
            status => return Err(format!("GET /deliveries/{id}: {status}").into()),
        }
    }
    Ok((lost, held))
}
