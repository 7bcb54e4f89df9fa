//! Output formatting: aligned tables for people, JSON objects for scripts, and the payload
//! rendering both share.

use std::fmt::Write as _;
use std::io::{self, Write};

use hookspool::{Item, PhaseCounts, Timestamp};
use hookspool_client::QueueInfo;
use hookspool_client::text::compact_json;
use hookspool_client::wire::{ItemView, LIFECYCLE, RetainView};
use serde_json::value::RawValue;

use crate::duration::{format_duration, format_retain_period};

/// Longest payload preview in a table, in characters.
pub const PREVIEW_CHARS: usize = 48;

/// A table of left-aligned columns separated by two spaces.
#[derive(Debug)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: Vec<&'static str>) -> Self {
        Table {
            headers,
            rows: Vec::new(),
        }
    }

    /// Adds a row (as many cells as headers).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Writes the header and the rows. The last column is not padded, so lines carry no
    /// trailing spaces.
    pub fn write(&self, out: &mut dyn Write) -> io::Result<()> {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let header: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    // Writing to a String cannot fail.
                    let _ = write!(line, "{cell:<width$}  ");
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// A timestamp as UTC calendar time to the second, e.g. `2023-11-14 22:13:20`.
pub fn format_timestamp(ts: Timestamp) -> String {
    let ms = ts.as_millis();
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`, restricted to dates after the epoch, which is all a
/// `u64` timestamp can express).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so that leap days fall at the end of each year.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The not-before column: `-` when the item is already due, the time otherwise.
pub fn format_not_before(not_before: Timestamp, now: Timestamp) -> String {
    if not_before <= now {
        "-".to_owned()
    } else {
        format_timestamp(not_before)
    }
}

/// A queue's TTL for a table: the duration, or `-` for none.
pub fn format_ttl(queue: &QueueInfo) -> String {
    queue.ttl.map_or_else(|| "-".to_owned(), format_duration)
}

/// A queue's retention setting as its name.
pub fn retention_name(queue: &QueueInfo) -> &'static str {
    match queue.retention {
        hookspool::Retention::Keep => "keep",
        hookspool::Retention::Remove => "remove",
    }
}

/// A one-line preview of a payload for tables: JSON compacted, text with control characters
/// escaped, cut to [`PREVIEW_CHARS`] with `…`; binary payloads as `<N bytes, binary>`.
pub fn payload_preview(payload: &[u8]) -> String {
    let Ok(text) = std::str::from_utf8(payload) else {
        return format!("<{} bytes, binary>", payload.len());
    };
    let text = match serde_json::from_str::<&RawValue>(text) {
        Ok(raw) => compact_json(raw.get()),
        Err(_) => text.to_owned(),
    };
    let mut preview = String::new();
    for (count, c) in text.chars().enumerate() {
        if count == PREVIEW_CHARS {
            preview.push('…');
            break;
        }
        if c.is_control() {
            preview.extend(c.escape_default());
        } else {
            preview.push(c);
        }
    }
    preview
}

/// Writes an item as one line of JSON: its API form ([`ItemView`]), so that `fetch --json`,
/// `dump` and the daemon's answers are one format.
///
/// Times are milliseconds since the Unix epoch. The payload is `payload` holding the JSON
/// value itself when it parses as JSON, `payload` holding a string when it is other UTF-8
/// text, and `payload_base64` (standard alphabet, padded) otherwise.
pub fn write_item_json(out: &mut dyn Write, item: &Item) -> io::Result<()> {
    serde_json::to_writer(&mut *out, &ItemView::of(item))?;
    writeln!(out)
}

/// Counts for `queue show`: the lifecycle phases first (zero included), then the caller's
/// own phases by name.
pub fn phase_rows(counts: &PhaseCounts) -> Vec<(String, u64)> {
    let mut rows: Vec<(String, u64)> = LIFECYCLE
        .iter()
        .map(|p| (p.as_str().to_owned(), counts.get(p)))
        .collect();
    for (phase, n) in &counts.0 {
        if !LIFECYCLE.contains(phase) {
            rows.push((phase.as_str().to_owned(), *n));
        }
    }
    rows
}

/// A queue's settings and counts as a JSON object (`queues --json`, `queue show --json`).
/// The secret is never printed: only whether there is one. Local and remote queues (`--url`)
/// both arrive here as a [`QueueInfo`], so they print alike.
pub fn queue_json(queue: &QueueInfo) -> serde_json::Value {
    let phases: serde_json::Map<String, serde_json::Value> = phase_rows(&queue.counts)
        .into_iter()
        .map(|(name, n)| (name, n.into()))
        .collect();
    serde_json::json!({
        "id": queue.id.as_str(),
        "items": queue.counts.total(),
        "phases": phases,
        "created_at": queue.created_at,
        "ttl_ms": queue.ttl.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        "retention": retention_name(queue),
        "retain": RetainView::from(queue.retain),
        "has_secret": queue.has_secret,
        "metadata": queue.metadata,
    })
}

/// Retention periods for display: `done 3d, dead 30d, expired forever`.
pub fn format_retain(retain: hookspool::Retain) -> String {
    format!(
        "done {}, dead {}, expired {}",
        format_retain_period(retain.done),
        format_retain_period(retain.dead),
        format_retain_period(retain.expired)
    )
}

/// A secret for display: `****` when set, `-` when not. No characters of it are shown.
pub fn mask_secret(queue: &QueueInfo) -> &'static str {
    if queue.has_secret { "****" } else { "-" }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on failure
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use hookspool::{Phase, QueueConfig, QueueId};
    use hookspool_webhooks::{Secret, set_channel_secret};

    fn item(payload: &[u8]) -> Item {
        Item {
            key: 7,
            payload: payload.to_vec(),
            phase: Phase::new("needs-review").unwrap(),
            attempts: 2,
            created_at: Timestamp(1_000),
            updated_at: Timestamp(2_000),
            not_before: Timestamp(3_000),
            lease: None,
            last_error: Some("boom".into()),
            metadata: BTreeMap::from([("event".to_owned(), "order.paid".to_owned())]),
        }
    }

    fn json_line(item: &Item) -> String {
        let mut out = Vec::new();
        write_item_json(&mut out, item).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn timestamps_are_utc_calendar_time() {
        assert_eq!(format_timestamp(Timestamp(0)), "1970-01-01 00:00:00");
        assert_eq!(
            format_timestamp(Timestamp(1_700_000_000_123)),
            "2023-11-14 22:13:20"
        );
        // A leap day, and the day after it.
        assert_eq!(
            format_timestamp(Timestamp(951_782_400_000)),
            "2000-02-29 00:00:00"
        );
        assert_eq!(
            format_timestamp(Timestamp(951_868_800_000)),
            "2000-03-01 00:00:00"
        );
        // The far future does not overflow.
        assert!(format_timestamp(Timestamp(u64::MAX)).len() > 10);
    }

    /// The exact bytes `fetch --json` and `dump` have always printed: scripts parse them.
    #[test]
    fn item_json_lines_are_byte_for_byte_stable() {
        let head = r#"{"key":7,"phase":"needs-review","attempts":2,"created_at":1000,"updated_at":2000,"not_before":3000,"lease":null,"last_error":"boom","metadata":{"event":"order.paid"},"#;
        for (payload, tail) in [
            (
                &b"{ \"z\": 1,\n \"a\": \"x y\" }"[..],
                r#""payload":{"z":1,"a":"x y"}}"#,
            ),
            (
                &b"plain text\nline two"[..],
                r#""payload":"plain text\nline two"}"#,
            ),
            (&b""[..], r#""payload":""}"#),
            (&[0xff, 0x00, 0x80][..], r#""payload_base64":"/wCA"}"#),
        ] {
            assert_eq!(json_line(&item(payload)), format!("{head}{tail}\n"));
        }
    }

    #[test]
    fn previews_are_short_single_lines() {
        assert_eq!(payload_preview(b"{ \"a\": 1 }"), r#"{"a":1}"#);
        assert_eq!(payload_preview(b"a\nb"), "a\\nb");
        assert_eq!(payload_preview(&[0xff; 10]), "<10 bytes, binary>");
        let long = payload_preview("é".repeat(100).as_bytes());
        assert_eq!(long.chars().count(), PREVIEW_CHARS + 1);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn table_aligns_columns_without_trailing_space() {
        let mut t = Table::new(vec!["KEY", "PHASE", "PAYLOAD"]);
        t.row(vec!["1".into(), "pending".into(), "x".into()]);
        t.row(vec!["100".into(), "done".into(), String::new()]);
        let mut out = Vec::new();
        t.write(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "KEY  PHASE    PAYLOAD\n1    pending  x\n100  done\n"
        );
    }

    #[test]
    fn queue_json_masks_the_secret_and_lists_lifecycle_phases() {
        let mut config = QueueConfig::new(QueueId::new("q").unwrap())
            .with_ttl(std::time::Duration::from_mins(1))
            .with_metadata("team", "billing");
        set_channel_secret(
            &mut config,
            Some(&Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")),
        )
        .unwrap();
        let mut counts = PhaseCounts::default();
        counts.add(&Phase::PENDING, 2);
        counts.add(&Phase::new("review").unwrap(), 1);
        let queue = QueueInfo::new(&config, counts);
        let v = queue_json(&queue);
        assert!(!v.to_string().contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
        assert_eq!(v["has_secret"], true);
        assert_eq!(v["items"], 3);
        assert_eq!(v["ttl_ms"], 60_000);
        assert_eq!(v["retain"]["done_ms"], serde_json::Value::Null, "forever");
        assert_eq!(v["phases"]["pending"], 2);
        assert_eq!(v["phases"]["dead"], 0);
        assert_eq!(v["phases"]["review"], 1);
        assert_eq!(
            v["metadata"],
            serde_json::json!({"team": "billing"}),
            "the secret's metadata entry is not shown"
        );
        assert_eq!(mask_secret(&queue), "****");
    }
}
