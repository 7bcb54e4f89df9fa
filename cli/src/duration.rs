//! Human durations on the command line: `500ms`, `30s`, `15m`, `2h`, `1d`, and sums like `1h30m`.

use std::time::Duration;

/// Units accepted by [`parse_duration`], longest suffix first so that `ms` is not read as `m`.
const UNITS: [(&str, u64); 5] = [
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

/// Parses a duration such as `500ms`, `30s`, `15m`, `2h`, `1d` or `1h30m`.
///
/// Every number needs a unit (a bare `30` is ambiguous, so it is refused), and the total must
/// fit in `u64` milliseconds.
///
/// # Errors
/// A message saying what is wrong, suitable for clap's `value_parser`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration; use e.g. 30s, 15m, 2h, 500ms or 1d".to_owned());
    }
    let mut total_ms: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "invalid duration {text:?}: expected a number at {rest:?}"
            ));
        }
        let (number, after) = rest.split_at(digits);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("invalid duration {text:?}: {number} is too large"))?;
        if after.starts_with(['.', ',']) {
            return Err(format!(
                "invalid duration {text:?}: fractions are not supported (write 1h30m, not 1.5h)"
            ));
        }
        let unit_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(unit_len);
        let Some(&(_, ms_per_unit)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(if unit.is_empty() {
                format!("invalid duration {text:?}: {number} needs a unit (ms, s, m, h or d)")
            } else {
                format!("invalid duration {text:?}: unknown unit {unit:?} (use ms, s, m, h or d)")
            });
        };
        total_ms = number
            .checked_mul(ms_per_unit)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(|| format!("invalid duration {text:?}: too large"))?;
        rest = after;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Parses how long items stay in a phase: a duration of at least 1s (see [`parse_duration`])
/// or `forever`. `None` is forever.
///
/// # Errors
/// A message saying what is wrong: a negative value, less than a second, or not a duration.
pub fn parse_retain_period(text: &str) -> Result<Option<Duration>, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("forever") {
        return Ok(None);
    }
    if text.starts_with('-') {
        return Err(format!(
            "{text:?} is negative; give a duration of at least 1s, or `forever`"
        ));
    }
    let period = parse_duration(text).map_err(|e| format!("{e}, or `forever`"))?;
    if period < hookspool::Retain::MIN {
        return Err(format!(
            "{text:?} is less than 1s; give at least 1s, or `forever`"
        ));
    }
    Ok(Some(period))
}

/// Parses a duration (see [`parse_duration`]) or `off`. `None` is off.
///
/// # Errors
/// A message saying what is wrong, suitable for clap's `value_parser`.
pub fn parse_duration_or_off(text: &str) -> Result<Option<Duration>, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    parse_duration(text)
        .map(Some)
        .map_err(|e| format!("{e}, or `off`"))
}

/// Formats a retention period as [`parse_retain_period`] reads it.
pub fn format_retain_period(period: Option<Duration>) -> String {
    period.map_or_else(|| "forever".to_owned(), format_duration)
}

/// Formats a duration the way [`parse_duration`] reads it, largest units first, e.g.
/// `1h30m`, `15m`, `500ms`; `0s` for zero. Sub-millisecond parts are dropped.
pub fn format_duration(duration: Duration) -> String {
    let mut ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for &(name, size) in UNITS.iter().rev() {
        let n = ms / size;
        if n > 0 {
            out.push_str(&n.to_string());
            out.push_str(name);
            ms %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_mins(15)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_hours(2)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_hours(24)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn parses_sums_and_surrounding_space() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_mins(90)));
        assert_eq!(
            parse_duration(" 1m1s1ms "),
            Ok(Duration::from_millis(61_001))
        );
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        for (bad, reason) in [
            ("", "empty"),
            ("30", "needs a unit"),
            ("10x", "unknown unit"),
            ("m", "expected a number"),
            ("1h 30m", "expected a number"),
            ("-5s", "expected a number"),
            ("99999999999999999999s", "too large"),
            ("999999999999999999d", "too large"),
            ("1.5h", "fractions are not supported"),
        ] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.contains(reason), "{bad:?}: {err}");
        }
    }

    #[test]
    fn retain_periods_are_at_least_a_second_or_forever() {
        assert_eq!(parse_retain_period("forever"), Ok(None));
        assert_eq!(
            parse_retain_period("3d"),
            Ok(Some(Duration::from_hours(72)))
        );
        assert_eq!(parse_retain_period("1s"), Ok(Some(Duration::from_secs(1))));
        for (bad, reason) in [
            ("-5s", "is negative"),
            ("500ms", "less than 1s"),
            ("0s", "less than 1s"),
            ("soon", "expected a number"),
        ] {
            let err = parse_retain_period(bad).expect_err(bad);
            assert!(
                err.contains(reason) && err.contains("forever"),
                "{bad:?}: {err}"
            );
        }
        assert_eq!(format_retain_period(None), "forever");
        assert_eq!(format_retain_period(Some(Duration::from_hours(72))), "3d");
    }

    #[test]
    fn formats_largest_units_first() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_mins(15)), "15m");
        assert_eq!(format_duration(Duration::from_mins(90)), "1h30m");
        assert_eq!(
            format_duration(Duration::from_millis(90_061_001)),
            "1d1h1m1s1ms"
        );
    }

    #[test]
    fn format_then_parse_round_trips() {
        for ms in [1, 999, 1_000, 61_001, 3_600_000, 86_400_000, 123_456_789] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{ms}");
        }
    }
}
