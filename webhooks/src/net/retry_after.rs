//! `Retry-After`: the delay a receiver asks for, in seconds or as an HTTP date.

use std::time::{Duration, SystemTime};

/// Parses a `Retry-After` header value into a delay from `now`.
///
/// Accepts delay-seconds (`"120"`) and an HTTP-date in the IMF-fixdate form every current
/// server sends (`"Sun, 06 Nov 1994 08:49:37 GMT"`); a date in the past gives zero. The
/// obsolete RFC 850 and asctime date forms and anything else give `None` (treated as absent).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds is a delay beyond any clamp: saturate.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = parse_imf_fixdate(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses `"Sun, 06 Nov 1994 08:49:37 GMT"` (RFC 9110 §5.6.7 IMF-fixdate).
fn parse_imf_fixdate(s: &str) -> Option<SystemTime> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (weekday, rest) = s.split_once(", ")?;
    if weekday.len() != 3 {
        return None;
    }
    let mut parts = rest.split(' ');
    let day = digits(parts.next()?, 2)?;
    let month_name = parts.next()?;
    let month = MONTHS.iter().position(|m| *m == month_name)? + 1;
    let year = digits(parts.next()?, 4)?;
    let mut clock = parts.next()?.split(':');
    let hour = digits(clock.next()?, 2)?;
    let minute = digits(clock.next()?, 2)?;
    let second = digits(clock.next()?, 2)?;
    if clock.next().is_some() || parts.next()? != "GMT" || parts.next().is_some() {
        return None;
    }
    let month = u32::try_from(month).ok()?;
    if year < 1970 || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    // 60 admits a leap second; it lands on the next minute, which is close enough for a delay.
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + u64::from(hour * 3600 + minute * 60 + second);
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// A field of exactly `len` ASCII digits.
fn digits(s: &str, len: usize) -> Option<u32> {
    if s.len() == len && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a valid date on or after it (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: u32, month: u32, day: u32) -> u64 {
    let y = u64::from(if month <= 2 { year - 1 } else { year });
    let era = y / 400;
    let yoe = y - era * 400;
    let m = u64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + u64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on failure
mod tests {
    use super::*;

    /// Unix time of Thu, 29 Feb 2024 12:00:00 GMT.
    const LEAP_DAY_NOON: u64 = 1_709_208_000;
    /// Unix time of Fri, 01 Jan 2100 00:00:00 GMT.
    const YEAR_2100: u64 = 4_102_444_800;

    #[test]
    fn retry_after_parses_seconds_and_imf_fixdate() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_mins(2)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:51:37 GMT", now),
            Some(Duration::from_mins(2))
        );
        assert_eq!(
            parse_retry_after("Mon, 07 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_hours(24))
        );
        // A date in the past means "now".
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        // A leap day and a year boundary, against known Unix times.
        let epoch = SystemTime::UNIX_EPOCH;
        assert_eq!(
            parse_retry_after("Thu, 29 Feb 2024 12:00:00 GMT", epoch),
            Some(Duration::from_secs(LEAP_DAY_NOON))
        );
        assert_eq!(
            parse_retry_after("Fri, 01 Jan 2100 00:00:00 GMT", epoch),
            Some(Duration::from_secs(YEAR_2100))
        );
        for bad in [
            "",
            "-5",
            "1.5",
            "soon",
            "Sunday, 06-Nov-94 08:49:37 GMT", // RFC 850: not supported
            "Sun Nov  6 08:49:37 1994",       // asctime: not supported
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "Sun, 29 Feb 2023 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }
}
