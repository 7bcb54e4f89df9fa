//! Delivery statistics kept by the delivery loop: outcomes by kind and a histogram of attempt
//! durations, for metrics. In memory, since the process started.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::deliver::{DeliveryOutcome, OutcomeKind};

/// Upper bounds of the attempt-duration histogram buckets, in seconds.
pub const DURATION_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 15.0];

const KINDS: [&str; 5] = ["delivered", "retrying", "dead", "gone", "cancelled"];

/// Counters updated as outcomes happen.
#[derive(Debug, Default)]
pub(crate) struct DeliveryStats {
    outcomes: [AtomicU64; 5],
    buckets: [AtomicU64; DURATION_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl DeliveryStats {
    pub(crate) fn record(&self, outcome: &DeliveryOutcome) {
        let i = match outcome.kind {
            OutcomeKind::Delivered => 0,
            OutcomeKind::Retrying { .. } => 1,
            OutcomeKind::Dead => 2,
            OutcomeKind::Gone => 3,
            OutcomeKind::Cancelled => 4,
        };
        self.outcomes[i].fetch_add(1, Ordering::Relaxed);
        if outcome.attempt == 0 {
            return; // nothing was sent
        }
        let secs = outcome.duration.as_secs_f64();
        for (bound, bucket) in DURATION_BUCKETS.iter().zip(&self.buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(outcome.duration.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> DeliveryStatsSnapshot {
        DeliveryStatsSnapshot {
            outcomes: KINDS
                .iter()
                .zip(&self.outcomes)
                .map(|(k, c)| (*k, c.load(Ordering::Relaxed)))
                .collect(),
            buckets: DURATION_BUCKETS
                .iter()
                .zip(&self.buckets)
                .map(|(b, c)| (*b, c.load(Ordering::Relaxed)))
                .collect(),
            count: self.count.load(Ordering::Relaxed),
            sum: Duration::from_micros(self.sum_micros.load(Ordering::Relaxed)),
        }
    }
}

/// Reads a store's delivery statistics without holding the store
/// ([`crate::Hooks::delivery_stats_reader`]).
#[derive(Clone, Debug)]
pub struct DeliveryStatsReader(pub(crate) std::sync::Arc<DeliveryStats>);

impl DeliveryStatsReader {
    /// The statistics now, as [`crate::Hooks::delivery_stats`] gives them.
    pub fn snapshot(&self) -> DeliveryStatsSnapshot {
        self.0.snapshot()
    }
}

/// Delivery statistics since the process started.
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryStatsSnapshot {
    /// Attempt outcomes by kind (`delivered`, `retrying`, `dead`, `gone`, `cancelled`).
    pub outcomes: Vec<(&'static str, u64)>,
    /// Cumulative histogram of attempt durations: (upper bound in seconds, attempts ≤ it).
    pub buckets: Vec<(f64, u64)>,
    /// Attempts measured.
    pub count: u64,
    /// Their total duration.
    pub sum: Duration,
}
