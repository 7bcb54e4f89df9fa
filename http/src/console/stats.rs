//! What the console's overview shows beyond the counts: delivery outcomes over the last 15
//! minutes, and the subscriptions failing right now.
//!
//! A background task samples the delivery loop's cumulative statistics every [`STEP`] into
//! a ring of [`POINTS`] points, and follows the results stream to keep, per subscription,
//! the failures since its last success. Both are bounded: the ring by its length, the
//! failure table by `MAX_FAILING` entries. The task never holds the store (only its
//! statistics and its results stream), and ends when the console is dropped or the store's
//! `Hooks` are.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hookspool::Backend;
use hookspool_webhooks::{DeliveryOutcome, DeliveryStatsSnapshot, Hooks, OutcomeKind};
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;

/// Time between two points of the chart.
pub const STEP: Duration = Duration::from_secs(10);
/// Points kept: 15 minutes.
pub const POINTS: usize = 90;
/// Most subscriptions tracked as failing.
const MAX_FAILING: usize = 10_000;
/// A subscription counts as failing while its last failure is this recent.
const FAILING_WINDOW: Duration = Duration::from_mins(15);

/// One point of the chart: outcomes during the `secs` seconds that ended at `at`.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Point {
    /// End of the interval (ms since the Unix epoch).
    pub at: u64,
    /// Its length: [`STEP`], or less for the last point, which is the interval still
    /// running.
    pub secs: f64,
    /// Deliveries that succeeded.
    pub delivered: u64,
    /// Attempts that failed (to be retried, dead, or gone).
    pub failed: u64,
}

/// A subscription whose recent attempts failed.
#[derive(Clone, Debug, Serialize)]
pub struct Failing {
    /// The subscription id.
    pub subscription: String,
    /// Failed attempts since its last success.
    pub failures: u64,
    /// The last error class (`timeout`, `http_503`, …).
    pub last_error: Option<String>,
    /// The last response status, if a response came.
    pub last_status: Option<u16>,
    /// When it last failed (ms since the Unix epoch).
    pub last_at: u64,
}

/// What `GET {console}/api/stats` answers.
#[derive(Clone, Debug, Serialize)]
pub struct StatsView {
    /// Seconds per point.
    pub step_secs: u64,
    /// Oldest first; the last is the interval still running.
    pub points: Vec<Point>,
    /// Most failures first.
    pub failing: Vec<Failing>,
}

#[derive(Default)]
struct State {
    points: VecDeque<Point>,
    failing: BTreeMap<String, Failing>,
    /// Totals at the end of the last point, and when that was.
    last: (u64, u64),
    last_at: Option<std::time::Instant>,
}

/// Delivered and failed outcomes since the process started.
type Totals = Arc<dyn Fn() -> (u64, u64) + Send + Sync>;

/// The console's statistics, filled by a background task.
#[derive(Clone)]
pub(crate) struct ConsoleStats {
    state: Arc<Mutex<State>>,
    totals: Totals,
    /// Dropped with the last clone: the sampling task sees it go and ends at once, rather
    /// than at its next tick.
    _alive: Arc<tokio::sync::watch::Sender<()>>,
}

impl ConsoleStats {
    /// Starts the sampling task (on the current tokio runtime, if there is one).
    pub(crate) fn start<B: Backend>(hooks: &Hooks<B>) -> Self {
        // Reads the statistics without holding the store: the task below may outlive the
        // console until its runtime polls it again.
        let reader = hooks.delivery_stats_reader();
        let read: Totals = Arc::new(move || totals(&reader.snapshot()));
        let state = State {
            last: read(),
            last_at: Some(std::time::Instant::now()),
            ..State::default()
        };
        let (alive, gone) = tokio::sync::watch::channel(());
        let console = ConsoleStats {
            state: Arc::new(Mutex::new(state)),
            totals: read,
            _alive: Arc::new(alive),
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sample(
                Arc::clone(&console.totals),
                Arc::downgrade(&console.state),
                hooks.results(),
                gone,
            ));
        }
        console
    }

    pub(crate) fn view(&self) -> StatsView {
        let state = lock(&self.state);
        let since = now_ms().saturating_sub(millis(FAILING_WINDOW));
        let mut failing: Vec<Failing> = state
            .failing
            .values()
            .filter(|f| f.last_at >= since)
            .cloned()
            .collect();
        failing.sort_by(|a, b| {
            b.failures
                .cmp(&a.failures)
                .then(a.subscription.cmp(&b.subscription))
        });
        let mut points: Vec<Point> = state.points.iter().copied().collect();
        if let Some(since) = state.last_at {
            points.push(point(state.last, (self.totals)(), since.elapsed()));
        }
        StatsView {
            step_secs: STEP.as_secs(),
            points,
            failing,
        }
    }
}

async fn sample(
    totals: Totals,
    state: Weak<Mutex<State>>,
    mut results: tokio::sync::broadcast::Receiver<DeliveryOutcome>,
    mut gone: tokio::sync::watch::Receiver<()>,
) {
    let mut tick = tokio::time::interval(STEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            // The console was dropped.
            _ = gone.changed() => return,
            _ = tick.tick() => {
                let Some(state) = state.upgrade() else { return };
                let now = totals();
                let mut state = lock(&state);
                let elapsed = state.last_at.map_or(STEP, |t| t.elapsed());
                let p = point(state.last, now, elapsed);
                state.last = now;
                state.last_at = Some(std::time::Instant::now());
                // One slot is the running interval's.
                if state.points.len() >= POINTS - 1 {
                    state.points.pop_front();
                }
                state.points.push_back(p);
            }
            outcome = results.recv() => match outcome {
                Ok(outcome) => {
                    let Some(state) = state.upgrade() else { return };
                    record(&mut lock(&state), outcome);
                }
                // Outcomes missed under load: the counts above still have them.
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
        }
    }
}

/// The point from totals `before` to totals `now`, `elapsed` apart.
fn point(before: (u64, u64), now: (u64, u64), elapsed: Duration) -> Point {
    Point {
        at: now_ms(),
        secs: elapsed.as_secs_f64(),
        delivered: now.0.saturating_sub(before.0),
        failed: now.1.saturating_sub(before.1),
    }
}

/// Delivered, and failed (retrying, dead or gone), since the process started.
fn totals(stats: &DeliveryStatsSnapshot) -> (u64, u64) {
    let of = |kind: &str| {
        stats
            .outcomes
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    };
    (of("delivered"), of("retrying") + of("dead") + of("gone"))
}

fn record(state: &mut State, outcome: DeliveryOutcome) {
    let Some(sub) = outcome.subscription else {
        return;
    };
    match outcome.kind {
        OutcomeKind::Delivered => {
            state.failing.remove(&sub);
        }
        OutcomeKind::Retrying { .. } | OutcomeKind::Dead | OutcomeKind::Gone => {
            if !state.failing.contains_key(&sub) && state.failing.len() >= MAX_FAILING {
                // Make room by forgetting the failure seen longest ago.
                if let Some(oldest) = state
                    .failing
                    .values()
                    .min_by_key(|f| f.last_at)
                    .map(|f| f.subscription.clone())
                {
                    state.failing.remove(&oldest);
                }
            }
            let entry = state.failing.entry(sub.clone()).or_insert_with(|| Failing {
                subscription: sub,
                failures: 0,
                last_error: None,
                last_status: None,
                last_at: 0,
            });
            entry.failures += 1;
            entry.last_error = outcome.error;
            entry.last_status = outcome.status;
            entry.last_at = now_ms();
        }
        OutcomeKind::Cancelled => {}
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookspool_webhooks::DeliveryId;

    fn outcome(sub: &str, kind: OutcomeKind, status: Option<u16>) -> DeliveryOutcome {
        DeliveryOutcome {
            delivery_id: DeliveryId::parse("msg_000000000000000000000001").unwrap_or_else(|e| {
                panic!("{e}");
            }),
            subscription: Some(sub.to_owned()),
            event: "e".to_owned(),
            attempt: 1,
            status,
            error: status.map(|s| format!("http_{s}")),
            duration: Duration::from_millis(3),
            kind,
        }
    }

    #[test]
    fn a_subscription_fails_until_its_next_success() {
        let mut state = State::default();
        let retry = || OutcomeKind::Retrying {
            at: hookspool::Timestamp(0),
        };
        record(&mut state, outcome("a", retry(), Some(500)));
        record(&mut state, outcome("a", OutcomeKind::Dead, Some(503)));
        record(&mut state, outcome("b", retry(), Some(500)));
        record(&mut state, outcome("c", OutcomeKind::Cancelled, None));
        let a = &state.failing["a"];
        assert_eq!((a.failures, a.last_status), (2, Some(503)));
        assert_eq!(a.last_error.as_deref(), Some("http_503"));
        assert!(
            !state.failing.contains_key("c"),
            "a cancellation is no failure"
        );
        record(&mut state, outcome("a", OutcomeKind::Delivered, Some(200)));
        assert_eq!(state.failing.keys().collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn the_failure_table_is_bounded() {
        let mut state = State::default();
        for i in 0..=MAX_FAILING {
            record(
                &mut state,
                outcome(&format!("s{i}"), OutcomeKind::Dead, Some(500)),
            );
        }
        assert_eq!(state.failing.len(), MAX_FAILING);
    }

    #[tokio::test]
    async fn the_sampler_never_holds_the_store() {
        use tokio::sync::broadcast::error::TryRecvError;
        let hooks = Hooks::open(hookspool::Store::new(hookspool::MemoryBackend::new()))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // Closed once the last `Hooks` (which holds the results' sender) is gone.
        let mut rx = hooks.results();
        let console = ConsoleStats::start(&hooks);
        tokio::time::sleep(Duration::from_millis(5)).await;
        // The store goes with the application's `Hooks`, though the console is alive and
        // its task has never been polled since.
        drop(hooks);
        assert_eq!(rx.try_recv().err(), Some(TryRecvError::Closed));
        assert_eq!(
            console.view().points.len(),
            1,
            "the running interval still reads"
        );
    }

    #[test]
    fn a_point_counts_what_happened_since_the_last() {
        let p = point((10, 2), (25, 3), Duration::from_secs(10));
        assert_eq!((p.delivered, p.failed), (15, 1));
        assert!((p.secs - 10.0).abs() < f64::EPSILON);
    }
}
