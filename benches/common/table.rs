//! Markdown tables and number formats for the bench reports (they are pasted into notes).

use super::{Samples, Summary};

/// A markdown table, printed with aligned columns.
#[derive(Debug)]
pub struct Table {
    title: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table.
    pub fn new(title: &str, header: &[&str]) -> Self {
        Table {
            title: title.to_owned(),
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells print empty).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Prints the table on stdout.
    pub fn print(&self) {
        let cols = self.header.len();
        let mut width: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in width.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let padded: Vec<String> = (0..cols)
                .map(|i| {
                    let cell = cells.get(i).map_or("", String::as_str);
                    let pad = width[i].saturating_sub(cell.chars().count());
                    format!("{cell}{}", " ".repeat(pad))
                })
                .collect();
            println!("| {} |", padded.join(" | "));
        };
        println!("### {}\n", self.title);
        line(&self.header);
        let rule: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
        println!("|-{}-|", rule.join("-|-"));
        for row in &self.rows {
            line(row);
        }
        println!();
    }
}

/// A rate: `5.21k`, `1.49M`.
pub fn rate(x: f64) -> String {
    if !x.is_finite() {
        "-".into()
    } else if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// A duration in µs (or ms), with precision fitting its size.
pub fn micros(x: f64) -> String {
    if !x.is_finite() {
        "-".into()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// A size in MB (10^6 bytes, as the baseline document reports them).
pub fn megabytes(bytes: f64) -> String {
    if bytes.is_finite() {
        format!("{:.1}", bytes / 1e6)
    } else {
        "-".into()
    }
}

/// `median (min..max)` with `fmt`, or `-`.
pub fn spread(s: Option<Summary>, fmt: fn(f64) -> String) -> String {
    s.map_or_else(
        || "-".into(),
        |s| format!("{} ({}..{})", fmt(s.median), fmt(s.min), fmt(s.max)),
    )
}

/// The median with `fmt`, or `-`.
pub fn median(s: Option<Summary>, fmt: fn(f64) -> String) -> String {
    s.map_or_else(|| "-".into(), |s| fmt(s.median))
}

/// `ratio×`, with enough decimals to show small ratios.
pub fn ratio(x: f64) -> String {
    if !x.is_finite() {
        "-".into()
    } else if x >= 10.0 {
        format!("{x:.1}×")
    } else if x >= 1.0 {
        format!("{x:.2}×")
    } else if x >= 0.01 {
        format!("{x:.3}×")
    } else {
        format!("{x:.4}×")
    }
}

/// The ratio of the median ops/s of `case` to that of `baseline`.
pub fn ratio_to(samples: &Samples, case: &str, baseline: &str) -> String {
    match (
        samples.get(case, "ops_per_s"),
        samples.get(baseline, "ops_per_s"),
    ) {
        (Some(a), Some(b)) if b.median > 0.0 => ratio(a.median / b.median),
        _ => "-".into(),
    }
}

/// The ratio of the median p50 call latency of `baseline` to that of `case` (>1: `case`'s
/// typical call is faster). Unlike the throughput ratio, a few stalls caused by other
/// processes sharing the disk barely move it.
pub fn p50_ratio_to(samples: &Samples, case: &str, baseline: &str) -> String {
    match (samples.get(case, "p50_us"), samples.get(baseline, "p50_us")) {
        (Some(a), Some(b)) if a.median > 0.0 => ratio(b.median / a.median),
        _ => "-".into(),
    }
}

/// Peak RSS in MiB (median over runs) of `case`.
pub fn rss_mib(samples: &Samples, case: &str) -> String {
    median(samples.get(case, "peak_rss_kib"), |k| {
        format!("{:.1}", k / 1024.0)
    })
}

/// `apparent / allocated` MB of a disk figure `prefix` of `case`, medians.
pub fn disk(samples: &Samples, case: &str, prefix: &str) -> String {
    let apparent = samples.get(case, &format!("{prefix}_bytes"));
    let alloc = samples.get(case, &format!("{prefix}_alloc_bytes"));
    match (apparent, alloc) {
        (Some(a), Some(b)) => format!("{} / {}", megabytes(a.median), megabytes(b.median)),
        _ => "-".into(),
    }
}

/// `a / b` of two figures of `case`, medians over the runs.
pub fn pair(samples: &Samples, case: &str, a: &str, b: &str, fmt: fn(f64) -> String) -> String {
    match (samples.get(case, a), samples.get(case, b)) {
        (Some(a), Some(b)) => format!("{} / {}", fmt(a.median), fmt(b.median)),
        _ => "-".into(),
    }
}

/// Milliseconds with precision fitting their size.
pub fn millis(x: f64) -> String {
    if !x.is_finite() {
        "-".into()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// CPU microseconds per operation: the median of the CPU seconds `key` of `case` over `n`.
pub fn cpu_per_op(samples: &Samples, case: &str, key: &str, n: usize) -> String {
    #[allow(clippy::cast_precision_loss)]
    samples.get(case, key).map_or_else(
        || "-".into(),
        |s| format!("{:.0}", s.median / n as f64 * 1e6),
    )
}
