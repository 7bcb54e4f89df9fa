//! Torn writes and damaged files: the journal's recovery against every cut of its last record,
//! random bit flips in older records, a damaged checkpoint and a missing segment.
//!
//! The test builds a store with a few hundred operations of every kind (pushes of various
//! sizes, batches, claims, acks, nacks, phase changes, a delete, a reset), copies it just
//! before its last operation (a push: one record), then damages copies of the finished store
//! and opens them. The framing (`[len u32 LE][crc32 u32 LE][body]` after a 16-byte segment
//! header, the checksum seeded with the segment number) is parsed here independently, so the
//! test finds record boundaries itself instead of trusting the code under test.

// Helpers outside `#[test]` functions unwrap too: a test fails by panicking, and
// clippy.toml's `allow-unwrap-in-tests` only reaches the test functions themselves.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hookspool::conformance::support::{Rng, copy_dir};
use hookspool::{
    Error, Item, ManualClock, NewItem, Phase, PhaseCounts, QueueConfig, QueueId, Retention, Store,
    Timestamp,
};
use hookspool_journal::{Durability, JournalBackend, JournalOptions};

/// Small segments, so that the log spans several of them; no checkpoint, so every record of
/// the history stays on disk to be damaged.
const SEGMENT_SIZE: u64 = 16 << 10;
const SEGMENT_HEADER: usize = 16;
const RECORD_HEADER: usize = 8;
const START: Timestamp = Timestamp::from_millis(1_700_000_000_000);
/// How many random bit flips in older records.
const FLIPS: u64 = 200;
const SEED: u64 = 0x746f_726e;

/// Periodic durability (returns once written, the close syncs): the test needs what is in
/// the files, not a sync per call, and this keeps it fast.
fn options() -> JournalOptions {
    JournalOptions {
        durability: Durability::Periodic {
            interval: Duration::from_hours(1),
        },
        segment_size: SEGMENT_SIZE,
        preallocate: true,
        checkpoint_bytes: 1 << 40,
        // The records under test must be replayed at open, not covered by a checkpoint.
        checkpoint_on_close: false,
        ..JournalOptions::default()
    }
}

fn skipping() -> JournalOptions {
    JournalOptions {
        skip_corrupt: true,
        ..options()
    }
}

fn qid(name: &str) -> QueueId {
    QueueId::new(name).unwrap()
}

fn open_store(dir: &Path, options: JournalOptions) -> (Store<JournalBackend>, ManualClock) {
    let clock = ManualClock::new(START);
    let backend = JournalBackend::open_with(dir, options).unwrap();
    (Store::new(backend).with_clock(clock.clone()), clock)
}

/// Everything a store holds, queue by queue: settings, every item in full, counters.
type State = Vec<(QueueConfig, Vec<Item>, PhaseCounts)>;

async fn state(store: &Store<JournalBackend>) -> State {
    let mut all = Vec::new();
    for config in store.queues().await.unwrap() {
        let mut dump = store.dump(&config.id);
        let mut items = Vec::new();
        while let Some(page) = dump.next_page().await.unwrap() {
            items.extend(page);
        }
        let counts = store.counts(&config.id).await.unwrap();
        all.push((config, items, counts));
    }
    all
}

/// A payload of `len` bytes that differs from call to call.
fn payload(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 31 + j * 7) as u8).collect()
}

/// A few hundred operations of every kind on three queues. Returns every payload pushed.
async fn workload(store: &Store<JournalBackend>, clock: &ManualClock) -> BTreeSet<Vec<u8>> {
    let orders = qid("orders");
    let events = qid("events");
    let scratch = qid("scratch");
    store
        .create_queue(QueueConfig::new(orders.clone()).with_metadata("team", "shop"))
        .await
        .unwrap();
    store
        .create_queue(QueueConfig::new(events.clone()).with_retention(Retention::Remove))
        .await
        .unwrap();
    store
        .create_queue(QueueConfig::new(scratch.clone()))
        .await
        .unwrap();
    let sizes = [1, 17, 200, 1500, 64, 3000, 5];
    let mut pushed = BTreeSet::new();
    let mut leased = Vec::new();
    for i in 0..260 {
        clock.advance(Duration::from_millis(3));
        match i % 9 {
            0..=2 => {
                let p = payload(i, sizes[i % sizes.len()]);
                pushed.insert(p.clone());
                let item = NewItem::new(p).with_metadata("i", i.to_string());
                store.push(&orders, item).await.unwrap();
            }
            3 => {
                let items: Vec<NewItem> =
                    (0..3).map(|j| NewItem::new(payload(i + j, 40))).collect();
                pushed.extend(items.iter().map(|n| n.payload.clone()));
                store.push_batch(&events, items).await.unwrap();
            }
            4 => {
                let claimed = store
                    .claim(&orders, "worker", 2, Duration::from_secs(30))
                    .await
                    .unwrap();
                leased.extend(claimed.iter().map(|c| c.key));
                let claimed = store
                    .claim(&events, "worker", 1, Duration::from_secs(30))
                    .await
                    .unwrap();
                for item in claimed {
                    store.ack(&events, item.key, "worker").await.unwrap();
                }
            }
            5 => {
                if let Some(key) = leased.pop() {
                    store.ack(&orders, key, "worker").await.unwrap();
                }
            }
            6 => {
                if let Some(key) = leased.pop() {
                    let retry_at = store.now().saturating_add(Duration::from_millis(5));
                    store
                        .nack(&orders, key, "worker", retry_at, "receiver said 503")
                        .await
                        .unwrap();
                }
            }
            7 => {
                let head = store.fetch(&orders).await.unwrap();
                if let Some(item) = head {
                    let phase = if i % 2 == 0 {
                        Phase::DEAD
                    } else {
                        Phase::new("parked").unwrap()
                    };
                    store.update_phase(&orders, item.key, phase).await.unwrap();
                }
            }
            _ => {
                let p = payload(i, 300);
                pushed.insert(p.clone());
                store.push(&scratch, NewItem::new(p)).await.unwrap();
            }
        }
        if i == 130 {
            let head = store.fetch(&orders).await.unwrap().unwrap();
            assert!(store.delete(&orders, head.key).await.unwrap());
        }
        if i == 200 {
            assert!(store.reset(&scratch).await.unwrap() > 0);
        }
    }
    pushed
}

/// The last operation: one push, one record.
fn last_item() -> NewItem {
    NewItem::new(b"the last push, torn at every byte".to_vec()).with_metadata("last", "yes")
}

/// The probe pushed after recovery to show the store takes writes.
fn probe() -> NewItem {
    NewItem::new(b"probe".to_vec())
}

/// One record as found in a segment file.
#[derive(Clone, Copy, Debug)]
struct Record {
    segment: u64,
    start: usize,
    end: usize,
}

fn segment_files(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().ok()?;
            let n = name
                .strip_prefix("journal-")?
                .strip_suffix(".log")?
                .parse()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// The records of one segment, read with the documented framing; every checksum must hold.
fn parse_segment(segment: u64, bytes: &[u8]) -> Vec<Record> {
    assert_eq!(&bytes[..8], b"HSPJSEG1", "segment {segment} magic");
    assert_eq!(
        bytes[8..16],
        segment.to_le_bytes(),
        "segment {segment} number"
    );
    let mut records = Vec::new();
    let mut pos = SEGMENT_HEADER;
    while pos + RECORD_HEADER <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap());
        if len == 0 {
            assert_eq!(crc, 0, "segment {segment} offset {pos}: end marker");
            break;
        }
        let end = pos + RECORD_HEADER + len;
        let mut h = crc32fast::Hasher::new();
        h.update(&segment.to_le_bytes());
        h.update(&bytes[pos + RECORD_HEADER..end]);
        assert_eq!(
            h.finalize(),
            crc,
            "segment {segment} offset {pos}: checksum"
        );
        records.push(Record {
            segment,
            start: pos,
            end,
        });
        pos = end;
    }
    assert!(
        bytes[pos..].iter().all(|b| *b == 0),
        "segment {segment}: only zeros after the written part"
    );
    records
}

fn all_records(dir: &Path) -> Vec<Record> {
    segment_files(dir)
        .into_iter()
        .flat_map(|(n, path)| parse_segment(n, &fs::read(path).unwrap()))
        .collect()
}

/// The finished store and what the checks compare against.
struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    /// The store after every operation, closed.
    store: PathBuf,
    /// The state before the last operation, and after it.
    before_last: State,
    full: State,
    /// `before_last` plus the probe, and the probe's key.
    with_probe: State,
    probe_key: u64,
    pushed: BTreeSet<Vec<u8>>,
}

async fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_owned();
    let dir = root.join("store");
    let (store, clock) = open_store(&dir, options());
    let mut pushed = workload(&store, &clock).await;
    drop(store);

    // The state before the last operation, and what the probe push does to it, on copies.
    let before_dir = root.join("before-last");
    copy_dir(&dir, &before_dir);
    let before_end = *all_records(&before_dir).last().unwrap();
    let (store, _) = open_store(&before_dir, options());
    let before_last = state(&store).await;
    let probe_key = store.push(&qid("orders"), probe()).await.unwrap();
    drop(store);
    let (store, _) = open_store(&before_dir, options());
    let with_probe = state(&store).await;
    drop(store);

    let (store, clock) = open_store(&dir, options());
    clock.advance(Duration::from_secs(1));
    store.push(&qid("orders"), last_item()).await.unwrap();
    pushed.insert(last_item().payload);
    let full = state(&store).await;
    drop(store);

    // The last operation is exactly the last record: the copy ends where that record starts.
    let records = all_records(&dir);
    let last = *records.last().unwrap();
    assert_eq!(
        (before_end.segment, before_end.end),
        (last.segment, last.start),
        "the last push is one record at the end of the log"
    );
    assert!(
        segment_files(&dir).len() >= 4,
        "the history spans several segments"
    );
    Fixture {
        _tmp: tmp,
        root,
        store: dir,
        before_last,
        full,
        with_probe,
        probe_key,
        pushed,
    }
}

/// A copy of the finished store with segment `segment`'s file replaced by `bytes`.
fn damaged_copy(fx: &Fixture, name: &str, file: &str, bytes: &[u8]) -> PathBuf {
    let dir = fx.root.join(name);
    let _ = fs::remove_dir_all(&dir);
    copy_dir(&fx.store, &dir);
    fs::write(dir.join(file), bytes).unwrap();
    dir
}

fn segment_file(n: u64) -> String {
    format!("journal-{n:010}.log")
}

/// The last record cut at every byte offset, by truncating the file and by zeroing the rest
/// of it (segments are preallocated): each opens, reports the cut, holds exactly the state
/// before the last operation, takes a new push and keeps it across another reopen.
#[tokio::test(flavor = "current_thread")]
async fn last_record_torn_at_every_byte_recovers_the_state_before_it() {
    let fx = fixture().await;
    let records = all_records(&fx.store);
    let last = *records.last().unwrap();
    let file = segment_file(last.segment);
    let original = fs::read(fx.store.join(&file)).unwrap();
    let mut cases = 0;
    for offset in last.start..last.end {
        for zeroed in [false, true] {
            let ctx = format!(
                "cut at offset {offset} ({} of the record's {} bytes kept, {})",
                offset - last.start,
                last.end - last.start,
                if zeroed {
                    "rest zeroed"
                } else {
                    "file truncated"
                }
            );
            let mut bytes = original.clone();
            if zeroed {
                bytes[offset..].fill(0);
            } else {
                bytes.truncate(offset);
            }
            let dir = damaged_copy(&fx, "torn", &file, &bytes);

            let (store, _) = open_store(&dir, options());
            let report = store.backend().recovery().clone();
            if bytes.get(last.start..last.end) == Some(&original[last.start..last.end]) {
                // Zeroing bytes that were zeros already leaves the record whole.
                assert_eq!(report.truncated_bytes, 0, "{ctx}: nothing was cut");
                assert!(
                    state(&store).await == fx.full,
                    "{ctx}: the whole record replays"
                );
                continue;
            }
            // A cut that left only zeros of the record is indistinguishable from no record.
            let left_something = bytes[last.start..offset].iter().any(|b| *b != 0);
            if left_something {
                let expected = bytes.len() - last.start;
                assert_eq!(report.truncated_bytes, expected as u64, "{ctx}: truncated");
            } else {
                assert_eq!(report.truncated_bytes, 0, "{ctx}: nothing to truncate");
            }
            assert_eq!(
                report.replayed_records,
                records.len() as u64 - 1,
                "{ctx}: replayed"
            );
            assert_eq!(report.skipped_records, 0, "{ctx}: skipped");
            assert!(
                state(&store).await == fx.before_last,
                "{ctx}: the state is not the one before the last push"
            );

            let key = store.push(&qid("orders"), probe()).await.unwrap();
            assert_eq!(key, fx.probe_key, "{ctx}: the probe's key");
            drop(store);
            let (store, _) = open_store(&dir, options());
            assert_eq!(
                store.backend().recovery().truncated_bytes,
                0,
                "{ctx}: the second reopen found a torn tail"
            );
            assert!(
                state(&store).await == fx.with_probe,
                "{ctx}: the state after the probe and a reopen"
            );
            cases += 1;
        }
    }
    assert!(cases > last.end - last.start, "{cases} cases");
}

/// Every item of `state` carries a payload that was pushed: damaged bytes never pass as data.
fn assert_only_pushed_payloads(ctx: &str, state: &State, pushed: &BTreeSet<Vec<u8>>) {
    for (config, items, _) in state {
        for item in items {
            assert!(
                pushed.contains(&item.payload) || item.payload == probe().payload,
                "{ctx}: queue {} item {} has a payload that was never pushed",
                config.id,
                item.key
            );
        }
    }
}

/// Opens a damaged copy: without `skip_corrupt` it must fail with `Corrupted` naming
/// `place`; with it, it must open, count at least one skipped record, cut nothing, and hold
/// only payloads that were pushed, with counters that match a recount.
async fn check_damage_is_reported(ctx: &str, fx: &Fixture, dir: &Path, place: &str) {
    match JournalBackend::open_with(dir, options()) {
        Err(Error::Corrupted { what }) => {
            assert!(
                what.contains(place),
                "{ctx}: {what:?} does not name {place}"
            );
        }
        Ok(b) => panic!("{ctx}: opened a damaged log: {:?}", b.recovery()),
        Err(e) => panic!("{ctx}: expected Corrupted, got {e}"),
    }
    let backend = match JournalBackend::open_with(dir, skipping()) {
        Ok(b) => b,
        Err(e) => panic!("{ctx}: skip_corrupt did not open: {e}"),
    };
    let report = backend.recovery().clone();
    assert!(report.skipped_records >= 1, "{ctx}: {report:?}");
    assert_eq!(report.truncated_bytes, 0, "{ctx}: {report:?}");
    let store = Store::new(backend);
    let opened = state(&store).await;
    assert_only_pushed_payloads(ctx, &opened, &fx.pushed);
    for (config, items, counts) in &opened {
        let mut recount = PhaseCounts::default();
        for item in items {
            recount.add(&item.phase, 1);
        }
        assert_eq!(counts, &recount, "{ctx}: queue {} counters", config.id);
    }
}

/// Flips one random bit of `record` in bits `from..` of it; returns the copy and a context.
fn flip_in(
    fx: &Fixture,
    rng: &mut Rng,
    record: Record,
    bits: std::ops::Range<usize>,
    case: u64,
) -> (PathBuf, String) {
    let within = bits.start + rng.below((bits.end - bits.start) as u64) as usize;
    let bit = record.start * 8 + within;
    let file = segment_file(record.segment);
    let mut bytes = fs::read(fx.store.join(&file)).unwrap();
    bytes[bit / 8] ^= 1 << (bit % 8);
    let ctx = format!(
        "case {case}: bit {within} of the record at segment {} offset {} ({} bytes)",
        record.segment,
        record.start,
        record.end - record.start
    );
    (damaged_copy(fx, "flipped", &file, &bytes), ctx)
}

/// Random single-bit flips in the checksum or body of older records (ones followed by
/// another record of their segment): open refuses the log with `Corrupted` naming the
/// segment and the record's offset; with `skip_corrupt` it opens, counts what it skipped,
/// and returns only data that was pushed.
#[tokio::test(flavor = "current_thread")]
async fn bit_flips_in_older_records_are_reported_never_returned() {
    let fx = fixture().await;
    let records = all_records(&fx.store);
    let older: Vec<Record> = records
        .windows(2)
        .filter(|w| w[0].segment == w[1].segment)
        .map(|w| w[0])
        .collect();
    let mut rng = Rng::new(SEED);
    for case in 0..FLIPS {
        let record = older[rng.below(older.len() as u64) as usize];
        // Bits 32.. of a record: its checksum and its body.
        let (dir, ctx) = flip_in(
            &fx,
            &mut rng,
            record,
            32..(record.end - record.start) * 8,
            case,
        );
        let place = format!("segment {} offset {}", record.segment, record.start);
        check_damage_is_reported(&ctx, &fx, &dir, &place).await;
    }
}

/// The damage [`bit_flips_in_older_records_are_reported_never_returned`] leaves out: a flip
/// in the length field of any older record, a flip anywhere in the last record of a segment
/// that is not the last one, and an older record zeroed whole (a lost page). Each must be
/// reported like the others; with `skip_corrupt` the store must open.
#[tokio::test(flavor = "current_thread")]
async fn damaged_lengths_segment_ends_and_zeroed_records_are_reported() {
    let fx = fixture().await;
    let records = all_records(&fx.store);
    let older = &records[..records.len() - 1];
    let segment_ends: Vec<Record> = records
        .windows(2)
        .filter(|w| w[0].segment != w[1].segment)
        .map(|w| w[0])
        .collect();
    let mut rng = Rng::new(SEED + 2);
    for case in 0..60 {
        // Even cases: the length field (bits 0..32) of any older record; odd cases: any bit
        // of a record that ends its segment.
        let (record, bits) = if case % 2 == 0 {
            (older[rng.below(older.len() as u64) as usize], 0..32)
        } else {
            let r = segment_ends[rng.below(segment_ends.len() as u64) as usize];
            (r, 0..(r.end - r.start) * 8)
        };
        let (dir, ctx) = flip_in(&fx, &mut rng, record, bits, case);
        let place = format!("segment {} offset {}", record.segment, record.start);
        check_damage_is_reported(&ctx, &fx, &dir, &place).await;
    }
    // A whole older record of the last segment zeroed: valid records follow it.
    let last = records.last().unwrap();
    let victim = records
        .iter()
        .rev()
        .find(|r| r.segment == last.segment && r.end < last.start)
        .unwrap();
    let file = segment_file(victim.segment);
    let mut bytes = fs::read(fx.store.join(&file)).unwrap();
    bytes[victim.start..victim.end].fill(0);
    let dir = damaged_copy(&fx, "zeroed", &file, &bytes);
    let place = format!("segment {} offset {}", victim.segment, victim.start);
    check_damage_is_reported("zeroed record", &fx, &dir, &place).await;
}

/// A flipped bit anywhere in the checkpoint file: open refuses with `Corrupted`.
#[tokio::test(flavor = "current_thread")]
async fn bit_flips_in_the_checkpoint_are_reported() {
    let fx = fixture().await;
    let dir = fx.root.join("checkpointed");
    copy_dir(&fx.store, &dir);
    // Immediate durability: under `options()`'s hour-long periodic interval, `checkpoint()`
    // waits for the next periodic sync (see journal.rs,
    // `checkpoint_under_periodic_durability_does_not_wait_for_the_interval`).
    let immediate = JournalOptions {
        durability: Durability::Immediate,
        ..options()
    };
    let (store, _) = open_store(&dir, immediate);
    store.backend().checkpoint().await.unwrap();
    drop(store);
    let checkpoint = fs::read(dir.join("checkpoint")).unwrap();
    let mut rng = Rng::new(SEED + 1);
    for case in 0..40 {
        let bit = rng.below(checkpoint.len() as u64 * 8) as usize;
        let mut bytes = checkpoint.clone();
        bytes[bit / 8] ^= 1 << (bit % 8);
        let copy = fx.root.join("checkpoint-flipped");
        let _ = fs::remove_dir_all(&copy);
        copy_dir(&dir, &copy);
        fs::write(copy.join("checkpoint"), &bytes).unwrap();
        for options in [options(), skipping()] {
            match JournalBackend::open_with(&copy, options) {
                Err(Error::Corrupted { what }) => {
                    assert!(what.contains("checkpoint"), "case {case}: {what:?}");
                }
                Ok(_) => panic!("case {case}: bit {bit}: opened with a damaged checkpoint"),
                Err(e) => panic!("case {case}: bit {bit}: expected Corrupted, got {e}"),
            }
        }
    }
    // The undamaged checkpoint opens to the state of the full log, replaying nothing.
    let (full, _) = open_store(&fx.store, options());
    let full_state = state(&full).await;
    drop(full);
    let (store, _) = open_store(&dir, options());
    assert_eq!(store.backend().recovery().replayed_records, 0);
    assert!(state(&store).await == full_state);
}

/// A segment missing from the middle of the log (or the first one) is reported, not
/// silently skipped over.
#[tokio::test(flavor = "current_thread")]
async fn a_missing_segment_is_reported() {
    let fx = fixture().await;
    let segments = segment_files(&fx.store);
    let middle = segments[segments.len() / 2].0;
    let first = segments[0].0;
    for missing in [middle, first] {
        let dir = fx.root.join(format!("missing-{missing}"));
        copy_dir(&fx.store, &dir);
        fs::remove_file(dir.join(segment_file(missing))).unwrap();
        for options in [options(), skipping()] {
            match JournalBackend::open_with(&dir, options) {
                Err(Error::Corrupted { what }) => assert!(
                    what.contains(&format!("segment {missing}")),
                    "segment {missing}: {what:?}"
                ),
                Ok(_) => panic!("opened without segment {missing}"),
                Err(e) => panic!("segment {missing}: expected Corrupted, got {e}"),
            }
        }
    }
}
