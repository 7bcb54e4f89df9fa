//! The raw disk baseline: what the filesystem under the data directory can do with no queue
//! engine at all (the methods of `shared/reference/perf-baseline.md`). Every hookspool figure
//! is printed as a ratio to one of these, measured in the same run and directory.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::Path;
use std::sync::{Arc, Barrier, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use super::{BATCH, BenchResult, Metrics, PAYLOAD_LEN, fill_payload};

fn append_file(dir: &Path, name: &str) -> BenchResult<File> {
    Ok(OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))?)
}

/// Percentile `p` (0..=100) of latencies, in µs.
pub fn percentile_us(lat: &mut [Duration], p: usize) -> f64 {
    if lat.is_empty() {
        return f64::NAN;
    }
    lat.sort_unstable();
    let idx = (lat.len() * p / 100).min(lat.len() - 1);
    lat[idx].as_secs_f64() * 1e6
}

fn latency_metrics(m: &mut Metrics, lat: &mut [Duration]) {
    m.insert("p50_us".into(), percentile_us(lat, 50));
    m.insert("p99_us".into(), percentile_us(lat, 99));
}

/// `n` appends of one record, each `write` + `fdatasync` (the per-op durable limit).
pub fn per_record(dir: &Path, n: usize) -> BenchResult<Metrics> {
    let mut file = append_file(dir, "per-record.log")?;
    let mut buf = [0u8; PAYLOAD_LEN];
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for seq in 0..n as u64 {
        fill_payload(&mut buf, seq);
        let t = Instant::now();
        file.write_all(&buf)?;
        file.sync_data()?;
        lat.push(t.elapsed());
    }
    let secs = start.elapsed().as_secs_f64();
    let mut m = Metrics::from([("ops".into(), n as f64), ("secs".into(), secs)]);
    latency_metrics(&mut m, &mut lat);
    Ok(m)
}

/// `n` appends of one record per `write`, with one `fdatasync` per `every` records and one
/// at the end (included in the time).
pub fn per_batch(dir: &Path, n: usize, every: usize) -> BenchResult<Metrics> {
    let mut file = append_file(dir, "per-batch.log")?;
    let mut buf = [0u8; PAYLOAD_LEN];
    let mut syncs = 0u64;
    let start = Instant::now();
    for i in 0..n {
        fill_payload(&mut buf, i as u64);
        file.write_all(&buf)?;
        if (i + 1) % every == 0 || i + 1 == n {
            file.sync_data()?;
            syncs += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Metrics::from([
        ("ops".into(), n as f64),
        ("secs".into(), secs),
        ("fdatasyncs".into(), syncs as f64),
    ]))
}

/// `n` records appended [`BATCH`] at a time in one `write` + one `fdatasync` per batch (what
/// a log that frames a whole batch into one buffer can reach).
pub fn one_write_per_batch(dir: &Path, n: usize) -> BenchResult<Metrics> {
    let mut file = append_file(dir, "one-write.log")?;
    let mut buf = vec![0u8; PAYLOAD_LEN * BATCH];
    let start = Instant::now();
    let mut done = 0;
    while done < n {
        let len = BATCH.min(n - done);
        for (i, rec) in buf.chunks_mut(PAYLOAD_LEN).take(len).enumerate() {
            fill_payload(rec, (done + i) as u64);
        }
        file.write_all(&buf[..len * PAYLOAD_LEN])?;
        file.sync_data()?;
        done += len;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Metrics::from([
        ("ops".into(), n as f64),
        ("secs".into(), secs),
    ]))
}

/// Leader/follower group commit: records waiting to be made durable, and whether a
/// leader is writing and syncing right now.
#[derive(Default)]
struct Group {
    buf: Vec<u8>,
    appended: u64,
    durable: u64,
    flushing: bool,
    syncs: u64,
    failed: Option<String>,
}

struct GroupLog {
    file: File,
    state: Mutex<Group>,
    done: Condvar,
}

impl GroupLog {
    fn lock(&self) -> MutexGuard<'_, Group> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `rec` and returns once it is fdatasync'ed. Whoever finds no flush in flight
    /// becomes the leader: it writes everything buffered so far and syncs it, while the
    /// others wait, so one fdatasync covers every record that arrived meanwhile.
    fn append_durable(&self, rec: &[u8]) -> BenchResult<()> {
        let mut g = self.lock();
        g.buf.extend_from_slice(rec);
        g.appended += 1;
        let mine = g.appended;
        loop {
            if let Some(e) = &g.failed {
                return Err(e.clone().into());
            }
            if g.durable >= mine {
                return Ok(());
            }
            if g.flushing {
                g = self.done.wait(g).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            g.flushing = true;
            let batch = std::mem::take(&mut g.buf);
            let upto = g.appended;
            drop(g);
            let res = (&self.file)
                .write_all(&batch)
                .and_then(|()| self.file.sync_data());
            g = self.lock();
            g.flushing = false;
            g.syncs += 1;
            match res {
                Ok(()) => g.durable = upto,
                Err(e) => g.failed = Some(e.to_string()),
            }
            self.done.notify_all();
        }
    }
}

/// `n` records appended by `threads` threads, each waiting until its record is durable,
/// sharing fdatasyncs through leader/follower group commit.
pub fn group_commit(dir: &Path, n: usize, threads: usize) -> BenchResult<Metrics> {
    let log = Arc::new(GroupLog {
        file: append_file(dir, "group.log")?,
        state: Mutex::new(Group::default()),
        done: Condvar::new(),
    });
    let per = n.div_ceil(threads);
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (log, barrier) = (Arc::clone(&log), Arc::clone(&barrier));
            thread::spawn(move || -> BenchResult<Vec<Duration>> {
                let mut buf = [0u8; PAYLOAD_LEN];
                let mut lat = Vec::with_capacity(per);
                barrier.wait();
                for i in 0..per {
                    fill_payload(&mut buf, (t * per + i) as u64);
                    let start = Instant::now();
                    log.append_durable(&buf)?;
                    lat.push(start.elapsed());
                }
                Ok(lat)
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut lat = Vec::with_capacity(per * threads);
    for h in handles {
        lat.extend(h.join().map_err(|_| "group-commit thread panicked")??);
    }
    let secs = start.elapsed().as_secs_f64();
    let syncs = log.lock().syncs;
    let ops = (per * threads) as f64;
    let mut m = Metrics::from([
        ("ops".into(), ops),
        ("secs".into(), secs),
        ("fdatasyncs".into(), syncs as f64),
        ("avg_batch".into(), ops / syncs.max(1) as f64),
    ]);
    latency_metrics(&mut m, &mut lat);
    Ok(m)
}

/// Writes `n` framed records (`[len u32 LE][crc32 u32 LE][payload]`, a batch per write, one
/// fdatasync at the end) for [`scan`]: the naive log's reopen baseline.
pub fn scan_fill(dir: &Path, n: usize) -> BenchResult<Metrics> {
    let mut file = append_file(dir, "scan.log")?;
    let frame = 8 + PAYLOAD_LEN;
    let mut buf = vec![0u8; frame * BATCH];
    let mut rec = [0u8; PAYLOAD_LEN];
    let start = Instant::now();
    let mut done = 0;
    while done < n {
        let len = BATCH.min(n - done);
        for (i, out) in buf.chunks_mut(frame).take(len).enumerate() {
            fill_payload(&mut rec, (done + i) as u64);
            out[..4].copy_from_slice(&(PAYLOAD_LEN as u32).to_le_bytes());
            out[4..8].copy_from_slice(&crc32fast::hash(&rec).to_le_bytes());
            out[8..].copy_from_slice(&rec);
        }
        file.write_all(&buf[..len * frame])?;
        done += len;
    }
    file.sync_data()?;
    Ok(Metrics::from([
        ("ops".into(), n as f64),
        ("secs".into(), start.elapsed().as_secs_f64()),
    ]))
}

/// Opens the log [`scan_fill`] wrote and reads it all, checking every CRC, to count its
/// records: what a reopen that trusts nothing costs.
pub fn scan(dir: &Path, expect: usize) -> BenchResult<Metrics> {
    let start = Instant::now();
    let mut reader = BufReader::with_capacity(1 << 20, File::open(dir.join("scan.log"))?);
    let mut head = [0u8; 8];
    let mut rec = vec![0u8; PAYLOAD_LEN];
    let mut count = 0usize;
    loop {
        match reader.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        rec.resize(len, 0);
        reader.read_exact(&mut rec)?;
        if crc32fast::hash(&rec) != crc {
            return Err(format!("record {count} fails its CRC").into());
        }
        count += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    if count != expect {
        return Err(format!("scan counted {count} records, expected {expect}").into());
    }
    Ok(Metrics::from([
        ("items".into(), count as f64),
        ("total_ms".into(), secs * 1e3),
    ]))
}
