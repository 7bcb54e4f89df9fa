//! Shared plumbing of the bench binaries: settings from the environment, one child process
//! per measurement (so peak RSS belongs to that case alone), the data directory, payloads,
//! statistics, disk usage, the raw disk baseline ([`raw`]), the backends under test
//! ([`backends`]) and markdown tables ([`table`]).
//!
//! Each bench binary includes this module with `mod common;` and uses a subset of it, hence
//! the `dead_code` allowance below.
#![allow(dead_code)]

pub mod backends;
pub mod daemon;
pub mod pg;
pub mod raw;
pub mod sqlite;
pub mod table;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Payload size of every pushed item and raw record.
pub const PAYLOAD_LEN: usize = 256;
/// Items per batch: batched pushes, claims, pops and the per-batch raw baseline.
pub const BATCH: usize = 1024;
/// Concurrent producers in the group-commit cases.
pub const PRODUCERS: usize = 64;

/// Any error; a benchmark only reports it and stops.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Result of a benchmark step.
pub type BenchResult<T> = Result<T, BoxError>;
/// One measurement's figures by name (`ops`, `secs`, `peak_rss_kib`, ...).
pub type Metrics = BTreeMap<String, f64>;

/// The first argument of a re-executed bench binary that runs one measurement.
const CHILD_FLAG: &str = "--hookspool-bench-child";
/// Prefix of the lines in which a child reports its figures on stdout.
const RESULT_PREFIX: &str = "RESULT ";

/// How this bench run was asked to behave.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Runs per measurement (the tables show their median and min..max).
    pub runs: usize,
    /// True when not started by `cargo bench` (no `--bench` argument, e.g. `cargo test
    /// --all-targets`): tiny counts and one run, to prove the bench works, not to time it.
    pub smoke: bool,
    /// Case names must contain one of these (from `cargo bench --bench X -- FILTER`).
    filters: Vec<String>,
}

impl Settings {
    /// Reads the command line and `HOOKSPOOL_BENCH_RUNS`.
    pub fn from_env() -> BenchResult<Self> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let smoke = !args.iter().any(|a| a == "--bench");
        let filters = args.into_iter().filter(|a| !a.starts_with('-')).collect();
        let runs = if smoke {
            1
        } else {
            env_usize("HOOKSPOOL_BENCH_RUNS", 3)?.max(1)
        };
        Ok(Settings {
            runs,
            smoke,
            filters,
        })
    }

    /// A count from the environment variable `var`, `default` if unset, `smoke` in smoke mode.
    pub fn count(&self, var: &str, default: usize, smoke: usize) -> BenchResult<usize> {
        if self.smoke {
            Ok(smoke)
        } else {
            Ok(env_usize(var, default)?.max(1))
        }
    }

    /// Whether the case named `name` was selected by the filters (all are, without filters).
    pub fn wants(&self, name: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| name.contains(f.as_str()))
    }
}

fn env_usize(var: &str, default: usize) -> BenchResult<usize> {
    match std::env::var(var) {
        Ok(v) => Ok(v
            .replace('_', "")
            .parse()
            .map_err(|e| format!("{var}={v:?} is not a count: {e}"))?),
        Err(std::env::VarError::NotPresent) => Ok(default),
        Err(e) => Err(format!("{var}: {e}").into()),
    }
}

/// The arguments of a child measurement: `key=value` pairs.
#[derive(Debug, Default)]
pub struct ChildArgs(BTreeMap<String, String>);

impl ChildArgs {
    /// The string value of `key`.
    pub fn str(&self, key: &str) -> BenchResult<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("child argument {key}= missing").into())
    }

    /// The count value of `key`.
    pub fn usize(&self, key: &str) -> BenchResult<usize> {
        let v = self.str(key)?;
        Ok(v.parse()
            .map_err(|e| format!("child argument {key}={v:?}: {e}"))?)
    }

    /// The path value of `key`.
    pub fn path(&self, key: &str) -> BenchResult<PathBuf> {
        self.str(key).map(PathBuf::from)
    }
}

/// If this process is a measurement child, runs `run(case, args)`, prints its figures plus
/// the peak RSS for the parent, and returns `true`; otherwise returns `false` at once.
pub fn child_main(run: impl FnOnce(&str, &ChildArgs) -> BenchResult<Metrics>) -> BenchResult<bool> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some(CHILD_FLAG) {
        return Ok(false);
    }
    let case = args.get(1).ok_or("child started without a case name")?;
    let mut parsed = ChildArgs::default();
    for arg in &args[2..] {
        let (k, v) = arg
            .split_once('=')
            .ok_or_else(|| format!("child argument {arg:?} is not key=value"))?;
        parsed.0.insert(k.to_owned(), v.to_owned());
    }
    let mut metrics = run(case, &parsed)?;
    // Read last: VmHWM is the high-water mark of this process's resident set.
    metrics.insert("peak_rss_kib".into(), peak_rss_kib()?);
    for (k, v) in &metrics {
        println!("{RESULT_PREFIX}{k} {v}");
    }
    Ok(true)
}

/// Runs one measurement in a fresh child process (this same binary) and returns its figures.
pub fn measure(case: &str, args: &[(&str, String)]) -> BenchResult<Metrics> {
    let exe = std::env::current_exe()?;
    let output = Command::new(exe)
        .arg(CHILD_FLAG)
        .arg(case)
        .args(args.iter().map(|(k, v)| format!("{k}={v}")))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    if !output.status.success() {
        return Err(format!("measurement {case} {args:?} failed: {}", output.status).into());
    }
    let mut metrics = Metrics::new();
    for line in output.stdout.lines() {
        let line = line?;
        if let Some(rest) = line.strip_prefix(RESULT_PREFIX) {
            let (k, v) = rest
                .split_once(' ')
                .ok_or_else(|| format!("bad result line {line:?}"))?;
            metrics.insert(k.to_owned(), v.parse()?);
        }
    }
    Ok(metrics)
}

/// The high-water mark of this process's resident set (`VmHWM`), in KiB.
pub fn peak_rss_kib() -> BenchResult<f64> {
    status_kib("VmHWM")
}

/// This process's resident set now (`VmRSS`), in KiB.
pub fn rss_kib() -> BenchResult<f64> {
    status_kib("VmRSS")
}

/// A `kB` figure of `/proc/self/status`, such as `VmRSS` or `VmHWM`.
fn status_kib(field: &str) -> BenchResult<f64> {
    let status = fs::read_to_string("/proc/self/status")?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .ok_or_else(|| format!("no {field} in /proc/self/status"))?
        .trim()
        .trim_end_matches("kB")
        .trim();
    Ok(kib.parse()?)
}

/// Where the data directories go: `$HOOKSPOOL_BENCH_DIR`, else `default` (the bench passes
/// Cargo's `CARGO_TARGET_TMPDIR`, inside the target dir). Refuses a RAM filesystem, where
/// fdatasync costs nothing and every ratio would be meaningless. Returns the directory and a
/// description of its filesystem for the report.
pub fn data_root(default: &str) -> BenchResult<(PathBuf, String)> {
    let dir = std::env::var_os("HOOKSPOOL_BENCH_DIR")
        .map_or_else(|| PathBuf::from(default), PathBuf::from)
        .join("hookspool-bench");
    fs::create_dir_all(&dir)?;
    let dir = dir.canonicalize()?;
    let (mount, fstype, source) = filesystem_of(&dir)?;
    if matches!(fstype.as_str(), "tmpfs" | "ramfs" | "devtmpfs") {
        return Err(format!(
            "{} is on {fstype}: the raw disk baseline needs a real disk; \
             set HOOKSPOOL_BENCH_DIR to a directory on one",
            dir.display()
        )
        .into());
    }
    let desc = format!("{fstype} ({source} mounted on {})", mount.display());
    Ok((dir, desc))
}

/// The mount point, filesystem type and source of the filesystem holding `path`, from the
/// longest matching mount point in `/proc/self/mountinfo`.
fn filesystem_of(path: &Path) -> BenchResult<(PathBuf, String, String)> {
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    let mut best: Option<(PathBuf, String, String)> = None;
    for line in info.lines() {
        // `id parent major:minor root mount-point options [optional...] - fstype source ...`
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount) = left.split(' ').nth(4) else {
            continue;
        };
        let mount = PathBuf::from(mount.replace("\\040", " "));
        let mut rest = right.split(' ');
        let (Some(fstype), Some(source)) = (rest.next(), rest.next()) else {
            continue;
        };
        let longer = best
            .as_ref()
            .is_none_or(|(b, _, _)| mount.as_os_str().len() >= b.as_os_str().len());
        if path.starts_with(&mount) && longer {
            best = Some((mount, fstype.to_owned(), source.to_owned()));
        }
    }
    best.ok_or_else(|| format!("no mount point holds {}", path.display()).into())
}

/// A fresh, empty directory under `root`, removed when dropped.
pub fn scratch(root: &Path, name: &str) -> BenchResult<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix(&format!("{name}-"))
        .tempdir_in(root)?)
}

/// The payload of item or record `seq`: its number, then pseudo-random bytes (so that no
/// layer can compress it).
pub fn payload(seq: u64) -> Vec<u8> {
    let mut buf = vec![0; PAYLOAD_LEN];
    fill_payload(&mut buf, seq);
    buf
}

/// Fills `buf` as [`payload`] does, without allocating.
pub fn fill_payload(buf: &mut [u8], seq: u64) {
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in buf.chunks_mut(8) {
        // xorshift64
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    if let Some(head) = buf.get_mut(..8) {
        head.copy_from_slice(&seq.to_le_bytes());
    }
}

/// Bytes of the files under `dir`: `(apparent size, allocated blocks × 512)`.
pub fn disk_usage(dir: &Path) -> io::Result<(u64, u64)> {
    let mut total = (0, 0);
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            let (a, b) = disk_usage(&entry.path())?;
            total.0 += a;
            total.1 += b;
        } else {
            total.0 += meta.len();
            total.1 += meta.blocks() * 512;
        }
    }
    Ok(total)
}

/// Records `dir`'s disk usage in `m` as `<prefix>_bytes` and `<prefix>_alloc_bytes`.
pub fn record_disk(m: &mut Metrics, prefix: &str, dir: &Path) -> io::Result<()> {
    let (apparent, alloc) = disk_usage(dir)?;
    m.insert(format!("{prefix}_bytes"), apparent as f64);
    m.insert(format!("{prefix}_alloc_bytes"), alloc as f64);
    Ok(())
}

/// Median and range of one figure over the runs.
#[derive(Clone, Copy, Debug)]
pub struct Summary {
    /// The median (mean of the middle two for an even count).
    pub median: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
}

impl Summary {
    /// Summarizes `values`; `None` if empty.
    pub fn of(values: &[f64]) -> Option<Summary> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        let (&min, &max) = (v.first()?, v.last()?);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            f64::midpoint(v[mid - 1], v[mid])
        };
        Some(Summary { median, min, max })
    }
}

/// The runs of every measurement, by case name, in the order they were first recorded.
#[derive(Debug, Default)]
pub struct Samples {
    order: Vec<String>,
    runs: BTreeMap<String, Vec<Metrics>>,
}

impl Samples {
    /// Adds one run of `case`, deriving `ops_per_s` and `us_per_op` from `ops` and `secs`.
    pub fn add(&mut self, case: &str, mut m: Metrics) {
        if let (Some(&ops), Some(&secs)) = (m.get("ops"), m.get("secs"))
            && ops > 0.0
            && secs > 0.0
        {
            m.insert("ops_per_s".into(), ops / secs);
            m.insert("us_per_op".into(), secs * 1e6 / ops);
        }
        if !self.runs.contains_key(case) {
            self.order.push(case.to_owned());
        }
        self.runs.entry(case.to_owned()).or_default().push(m);
    }

    /// The summary of figure `key` of `case` over its runs.
    pub fn get(&self, case: &str, key: &str) -> Option<Summary> {
        let runs = self.runs.get(case)?;
        let values: Vec<f64> = runs.iter().filter_map(|m| m.get(key).copied()).collect();
        Summary::of(&values)
    }

    /// Figure `key` of `num` divided by that of `den`, run by run: the `i`-th run of each
    /// (cases run in rounds, every case once per round, so these are pairs from the same
    /// round). Runs missing the figure on either side are left out.
    pub fn ratios(&self, num: &str, den: &str, key: &str) -> Vec<f64> {
        let (Some(num), Some(den)) = (self.runs.get(num), self.runs.get(den)) else {
            return Vec::new();
        };
        num.iter()
            .zip(den)
            .filter_map(|(n, d)| Some((n.get(key)?, d.get(key)?)))
            .filter(|&(_, &d)| d > 0.0)
            .map(|(n, d)| n / d)
            .collect()
    }

    /// The number of runs recorded for `case`.
    pub fn count(&self, case: &str) -> usize {
        self.runs.get(case).map_or(0, Vec::len)
    }
}

/// Runs `case` in a child and records it, printing progress on stderr.
pub fn run_case(
    samples: &mut Samples,
    label: &str,
    case: &str,
    args: &[(&str, String)],
) -> BenchResult<()> {
    let started = Instant::now();
    eprint!("  {label} ... ");
    let m = measure(case, args)?;
    eprintln!("{:.2} s", started.elapsed().as_secs_f64());
    samples.add(label, m);
    Ok(())
}

/// Prints what, where and how this run measures, so its tables can be read later.
pub fn print_header(bench: &str, settings: &Settings, fs_desc: &str, counts: &[(&str, usize)]) {
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    println!("## hookspool bench `{bench}`\n");
    if settings.smoke {
        println!("SMOKE RUN (no `--bench` argument): tiny counts, figures mean nothing.\n");
    }
    println!(
        "- runs per figure: {} (median, min..max); payload {PAYLOAD_LEN} B",
        settings.runs
    );
    let counts: Vec<String> = counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("- counts: {}", counts.join(", "));
    println!("- data dir filesystem: {fs_desc}");
    println!(
        "- machine: {cpus} CPUs, Linux {}; each figure measured in its own child process",
        kernel.trim()
    );
    println!("- load average at start: {}", load_average());
    println!();
}

/// Prints the load average at the end: other processes on a 2-CPU machine skew figures,
/// and a reader of the tables should be able to tell.
pub fn print_footer() {
    println!("- load average at end: {}\n", load_average());
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "unknown".into(),
        |l| l.split(' ').take(3).collect::<Vec<_>>().join(" "),
    )
}
