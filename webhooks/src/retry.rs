//! The retry schedule of webhook deliveries: how long to wait before each further attempt,
//! with jitter and a clamped `Retry-After`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default jitter: each delay is spread uniformly over ±20 % (Svix's `JITTER_DELTA`).
pub const DEFAULT_JITTER: f64 = 0.2;
/// Default ceiling of a delay asked for with `Retry-After`.
pub const DEFAULT_RETRY_AFTER_MAX: Duration = Duration::from_hours(24);

/// The delays of the standard schedule (Svix, Standard Webhooks): after an immediate first
/// attempt, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h — 8 attempts over about 27.5 hours.
pub const STANDARD_DELAYS: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_mins(5),
    Duration::from_mins(30),
    Duration::from_hours(2),
    Duration::from_hours(5),
    Duration::from_hours(10),
    Duration::from_hours(10),
];

/// When to try a failed delivery again.
///
/// The first attempt is immediate; `delays[i]` is the wait before attempt `i + 2`, so a
/// schedule makes `delays.len() + 1` attempts in all. Each delay is spread by ±`jitter` so that
/// deliveries that failed together do not retry together.
///
/// Serialized with the delays in milliseconds, e.g.
/// `{"delays_ms":[5000,15000,45000],"jitter":0.0,"retry_after_max_ms":86400000}`; missing
/// fields take the [`standard`](RetrySchedule::standard) values and a `jitter` outside
/// `[0, 1]` is rejected.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ScheduleRepr", into = "ScheduleRepr")]
pub struct RetrySchedule {
    /// Wait before attempt `i + 2` (attempt 1 is immediate).
    pub delays: Vec<Duration>,
    /// Relative spread of each delay: `0.2` means ±20 %. Values outside `[0, 1]` are treated
    /// as the nearest bound.
    pub jitter: f64,
    /// A `Retry-After` hint never makes a wait longer than this.
    pub retry_after_max: Duration,
}

impl RetrySchedule {
    /// The default: immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, with ±20 %
    /// jitter (8 attempts).
    pub fn standard() -> Self {
        Self {
            delays: STANDARD_DELAYS.to_vec(),
            jitter: DEFAULT_JITTER,
            retry_after_max: DEFAULT_RETRY_AFTER_MAX,
        }
    }

    /// A short schedule for receivers that are either up or not: 3 retries after 5 s, 15 s
    /// and 45 s (5 s × 3ⁿ), no jitter. (The schedule of the Go REST Hooks library, hence the
    /// name.)
    pub fn go_resthooks() -> Self {
        Self {
            jitter: 0.0,
            ..Self::exponential(Duration::from_secs(5), 3, 3)
        }
    }

    /// `retries` delays `base`, `base × factor`, `base × factor²`, … (saturating), with the
    /// default ±20 % jitter.
    pub fn exponential(base: Duration, factor: u32, retries: usize) -> Self {
        let mut delays = Vec::with_capacity(retries);
        let mut delay = base;
        for _ in 0..retries {
            delays.push(delay);
            delay = delay.saturating_mul(factor);
        }
        Self {
            delays,
            jitter: DEFAULT_JITTER,
            retry_after_max: DEFAULT_RETRY_AFTER_MAX,
        }
    }

    /// Attempts in all, the immediate first one included: `delays.len() + 1`.
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.delays.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1)
    }

    /// The wait before the next attempt after `attempts_done` attempts were made (0 before the
    /// first one, which is immediate), or `None` when no attempt is left.
    ///
    /// The scheduled delay is jittered as `delay × (1 + jitter × (2·rand01 − 1))`; pass a
    /// uniform random number in `[0, 1)` as `rand01` (tests pass fixed ones; values outside are
    /// clamped, NaN counts as 0.5). A `retry_after` from the response can lengthen the wait up
    /// to twice the scheduled delay and never beyond `retry_after_max`; it never shortens it
    /// (Svix's clamp to `[scheduled, 2 × scheduled]`).
    pub fn next_delay(
        &self,
        attempts_done: u32,
        retry_after: Option<Duration>,
        rand01: f64,
    ) -> Option<Duration> {
        let Some(index) = attempts_done.checked_sub(1) else {
            return Some(Duration::ZERO);
        };
        let scheduled = *self.delays.get(usize::try_from(index).ok()?)?;
        let base = jittered(scheduled, self.jitter, rand01);
        Some(match retry_after {
            Some(hint) => {
                let hint = hint
                    .min(scheduled.saturating_mul(2))
                    .min(self.retry_after_max);
                base.max(hint)
            }
            None => base,
        })
    }
}

impl Default for RetrySchedule {
    /// [`RetrySchedule::standard`].
    fn default() -> Self {
        Self::standard()
    }
}

/// `delay × (1 + jitter × (2·rand01 − 1))`, with both inputs forced into `[0, 1]`.
fn jittered(delay: Duration, jitter: f64, rand01: f64) -> Duration {
    let jitter = if jitter.is_nan() {
        0.0
    } else {
        jitter.clamp(0.0, 1.0)
    };
    let rand01 = if rand01.is_nan() {
        0.5
    } else {
        rand01.clamp(0.0, 1.0)
    };
    let factor = 1.0 + jitter * (2.0 * rand01 - 1.0);
    // Cannot fail for a factor in [0, 2] unless the delay is near Duration::MAX.
    Duration::try_from_secs_f64(delay.as_secs_f64() * factor).unwrap_or(delay)
}

/// The serialized form: durations as whole milliseconds.
#[derive(Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ScheduleRepr {
    delays_ms: Vec<u64>,
    jitter: f64,
    retry_after_max_ms: u64,
}

impl Default for ScheduleRepr {
    fn default() -> Self {
        RetrySchedule::standard().into()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl From<RetrySchedule> for ScheduleRepr {
    fn from(s: RetrySchedule) -> Self {
        Self {
            delays_ms: s.delays.into_iter().map(millis).collect(),
            jitter: s.jitter,
            retry_after_max_ms: millis(s.retry_after_max),
        }
    }
}

impl TryFrom<ScheduleRepr> for RetrySchedule {
    type Error = String;

    fn try_from(r: ScheduleRepr) -> Result<Self, Self::Error> {
        if !(0.0..=1.0).contains(&r.jitter) {
            return Err(format!("jitter must be between 0 and 1, got {}", r.jitter));
        }
        Ok(Self {
            delays: r.delays_ms.into_iter().map(Duration::from_millis).collect(),
            jitter: r.jitter,
            retry_after_max: Duration::from_millis(r.retry_after_max_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// `a` and `b` within a microsecond (float rounding of the jitter factor).
    fn close(a: Duration, b: Duration) -> bool {
        a.abs_diff(b) <= Duration::from_micros(1)
    }

    #[test]
    fn standard_schedule_exact_values_without_jitter_offset() {
        let s = RetrySchedule::standard();
        assert_eq!(s.max_attempts(), 8);
        assert_eq!(
            s.next_delay(0, None, 0.5),
            Some(Duration::ZERO),
            "first attempt immediate"
        );
        let expected = [
            secs(5),
            secs(300),
            secs(1800),
            secs(7200),
            secs(18_000),
            secs(36_000),
            secs(36_000),
        ];
        for (done, want) in (1u32..).zip(expected) {
            assert_eq!(
                s.next_delay(done, None, 0.5),
                Some(want),
                "after {done} attempts"
            );
        }
        assert_eq!(s.next_delay(8, None, 0.5), None, "no attempt after the 8th");
        assert_eq!(s.next_delay(u32::MAX, None, 0.5), None);
        assert_eq!(RetrySchedule::default(), s);
    }

    #[test]
    fn jitter_spans_plus_minus_twenty_percent() {
        let s = RetrySchedule::standard();
        for (done, base) in (1u32..).zip(STANDARD_DELAYS) {
            let low = s.next_delay(done, None, 0.0).unwrap();
            let high = s.next_delay(done, None, 0.999_999).unwrap();
            assert!(close(low, base.mul_f64(0.8)), "{low:?} vs {base:?}");
            assert!(
                high <= base.mul_f64(1.2) && high > base.mul_f64(1.199),
                "{high:?}"
            );
            for r in [0.1, 0.3, 0.7, 0.9] {
                let d = s.next_delay(done, None, r).unwrap();
                assert!(d >= low && d <= high, "{d:?} outside [{low:?}, {high:?}]");
            }
        }
        // Out-of-range inputs are clamped, never a panic.
        assert!(close(s.next_delay(1, None, -3.0).unwrap(), secs(4)));
        assert!(close(s.next_delay(1, None, 7.0).unwrap(), secs(6)));
        assert_eq!(s.next_delay(1, None, f64::NAN), Some(secs(5)));
        let wild = RetrySchedule {
            jitter: 5.0,
            ..RetrySchedule::standard()
        };
        assert_eq!(wild.next_delay(1, None, 0.0), Some(Duration::ZERO));
    }

    #[test]
    fn go_resthooks_is_five_seconds_times_three_to_the_n() {
        let s = RetrySchedule::go_resthooks();
        assert_eq!(s.delays, vec![secs(5), secs(15), secs(45)]);
        assert_eq!(s.max_attempts(), 4);
        // No jitter: the random number does not matter.
        for r in [0.0, 0.5, 0.999] {
            assert_eq!(s.next_delay(1, None, r), Some(secs(5)));
            assert_eq!(s.next_delay(2, None, r), Some(secs(15)));
            assert_eq!(s.next_delay(3, None, r), Some(secs(45)));
        }
        assert_eq!(s.next_delay(4, None, 0.5), None);
    }

    #[test]
    fn exponential_saturates_instead_of_overflowing() {
        let s = RetrySchedule::exponential(secs(1), 2, 4);
        assert_eq!(s.delays, vec![secs(1), secs(2), secs(4), secs(8)]);
        assert!((s.jitter - DEFAULT_JITTER).abs() < f64::EPSILON);
        let huge = RetrySchedule::exponential(secs(u64::MAX / 2), 10, 3);
        assert_eq!(huge.delays[2], Duration::MAX);
        assert!(huge.next_delay(3, None, 0.9).is_some());
        assert_eq!(RetrySchedule::exponential(secs(1), 2, 0).max_attempts(), 1);
    }

    #[test]
    fn retry_after_is_clamped_between_scheduled_and_twice_scheduled() {
        let s = RetrySchedule::standard();
        // Scheduled 5 min after the 2nd attempt.
        assert_eq!(
            s.next_delay(2, Some(secs(10)), 0.5),
            Some(secs(300)),
            "never shorter"
        );
        assert_eq!(
            s.next_delay(2, Some(secs(420)), 0.5),
            Some(secs(420)),
            "honoured"
        );
        assert_eq!(s.next_delay(2, Some(secs(600)), 0.5), Some(secs(600)));
        assert_eq!(
            s.next_delay(2, Some(secs(9999)), 0.5),
            Some(secs(600)),
            "at most 2x"
        );
        assert_eq!(s.next_delay(2, Some(Duration::MAX), 0.5), Some(secs(600)));
        // A hint above the jittered delay wins; below it, the jittered delay stands.
        assert_eq!(s.next_delay(2, Some(secs(250)), 0.0), Some(secs(250)));
        assert!(close(
            s.next_delay(2, Some(secs(100)), 0.0).unwrap(),
            secs(240)
        ));
        // retry_after_max caps the hint (but not the schedule itself).
        let capped = RetrySchedule {
            retry_after_max: secs(60),
            ..RetrySchedule::standard()
        };
        assert_eq!(capped.next_delay(1, Some(secs(8)), 0.5), Some(secs(8)));
        assert_eq!(capped.next_delay(2, Some(secs(500)), 0.5), Some(secs(300)));
        // After the last attempt there is nothing to wait for, hint or not.
        assert_eq!(s.next_delay(8, Some(secs(5)), 0.5), None);
    }

    #[test]
    fn serde_uses_milliseconds_and_validates_jitter() {
        let s = RetrySchedule::go_resthooks();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"{"delays_ms":[5000,15000,45000],"jitter":0.0,"retry_after_max_ms":86400000}"#
        );
        let back: RetrySchedule = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);

        let partial: RetrySchedule = serde_json::from_str(r#"{"delays_ms":[1500]}"#).unwrap();
        assert_eq!(partial.delays, vec![Duration::from_millis(1500)]);
        assert!((partial.jitter - DEFAULT_JITTER).abs() < f64::EPSILON);
        assert_eq!(partial.retry_after_max, DEFAULT_RETRY_AFTER_MAX);
        let empty: RetrySchedule = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, RetrySchedule::standard());

        for bad in [
            r#"{"jitter":1.5}"#,
            r#"{"jitter":-0.1}"#,
            r#"{"delay_ms":[1]}"#,
        ] {
            assert!(serde_json::from_str::<RetrySchedule>(bad).is_err(), "{bad}");
        }
    }
}
