//! Tests of reading item data: bounded rounds, cached data read on the calling thread and the
//! rest on a blocking one, short reads, and the non-blocking fast path and when it turns off.
#![allow(clippy::unwrap_used)] // tests may panic on failure

use std::path::Path;
use std::sync::atomic::AtomicUsize;

use hookspool::{Backend, NewItem, Page, QueueConfig, Store, Timestamp};

use super::*;
use crate::{JournalBackend, JournalOptions};

/// Needs item 1's blob again in every step before step `finish_at`, as if the item
/// moved each time; then finishes with it.
struct Restless {
    queue: QueueId,
    steps: usize,
    finish_at: usize,
}

impl Call for Restless {
    type Out = (usize, Vec<u8>);

    fn step(&mut self, _: &Inner, st: &mut State, blobs: &mut Blobs) -> Result<Step<Self::Out>> {
        self.steps += 1;
        let locs: Vec<Loc> = st
            .header(&self.queue, 1)?
            .map(|h| h.loc)
            .into_iter()
            .collect();
        if self.steps < self.finish_at {
            return Ok(Step::Need(locs));
        }
        match blobs.take(&locs)? {
            Taken::All(found) => Ok(Step::Done((self.steps, found[0].1.clone()))),
            Taken::Missing(missing) => Ok(Step::Need(missing)),
            Taken::Damaged(_) => Err(Error::corrupted("item 1 of the test")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_keeps_finding_changes_is_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let backend = JournalBackend::open(tmp.path()).unwrap();
    let queue = QueueId::new("q").unwrap();
    backend
        .create_queue(QueueConfig::new(queue.clone()))
        .await
        .unwrap();
    let item = NewItem::new(b"x".to_vec());
    backend
        .push(&queue, vec![item], Timestamp(1))
        .await
        .unwrap();
    let restless = |finish_at| Restless {
        queue: queue.clone(),
        steps: 0,
        finish_at,
    };
    let inner = backend.inner();
    // In the last round that reads without the lock...
    let (steps, payload) = run(inner, restless(ROUNDS)).await.unwrap();
    assert_eq!((steps, payload.as_slice()), (ROUNDS, &b"x"[..]));
    // ... or after it, reading once more under the lock, which the next step sees.
    let (steps, payload) = run(inner, restless(ROUNDS + 2)).await.unwrap();
    assert_eq!((steps, payload.as_slice()), (ROUNDS + 2, &b"x"[..]));
    // Never more: a step that still lacks what it just read is a bug, not a loop.
    match run(inner, restless(usize::MAX)).await {
        Err(Error::Internal { .. }) => {}
        other => panic!("expected Internal, got {other:?}"),
    }
}

/// A payload that names its index, 1 KiB.
fn payload(i: usize) -> Vec<u8> {
    let mut p = format!("<{i:05}>").into_bytes();
    p.resize(1024, b'.');
    p
}

fn check(items: &[Item], keys: std::ops::RangeInclusive<u64>) {
    let keys: Vec<u64> = keys.collect();
    assert_eq!(items.iter().map(|i| i.key).collect::<Vec<_>>(), keys);
    for item in items {
        assert_eq!(
            item.payload,
            payload(item.key as usize - 1),
            "item {}",
            item.key
        );
    }
}

/// Queue `q` with `n` items, reopened: reading them takes a read from the segment file
/// (what was appended in this process would be copied from the log's memory).
async fn reopened(dir: &Path, n: usize, options: &JournalOptions) -> Store<JournalBackend> {
    let store = Store::new(JournalBackend::open_with(dir, options.clone()).unwrap());
    let q = QueueId::new("q").unwrap();
    store
        .create_queue(QueueConfig::new(q.clone()))
        .await
        .unwrap();
    let items = (0..n).map(|i| NewItem::new(payload(i))).collect();
    store.push_batch(&q, items).await.unwrap();
    drop(store);
    Store::new(JournalBackend::open_with(dir, options.clone()).unwrap())
}

/// (`preadv2` calls, blobs they served, hand-offs to a blocking thread) so far.
fn counts(store: &Store<JournalBackend>) -> (usize, usize, usize) {
    let c = &store.backend().inner().files.counts;
    (
        c.tries.load(Ordering::Relaxed),
        c.served.load(Ordering::Relaxed),
        c.handoffs.load(Ordering::Relaxed),
    )
}

/// Drops `dir`'s segment files from the page cache (they are synced, so clean).
#[cfg(target_os = "linux")]
fn evict(dir: &Path) {
    use rustix::fs::{Advice, fadvise};
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if crate::log::segment_number(&path.file_name().unwrap().to_string_lossy()).is_some() {
            let file = std::fs::File::open(&path).unwrap();
            fadvise(&file, 0, None, Advice::DontNeed).unwrap();
        }
    }
}

/// Data in the page cache is read on the calling thread, with no hand-off; what is not
/// (a segment not open yet, a segment dropped from the cache) is read on a blocking
/// thread, and is then cached for the next call.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_data_is_read_on_the_calling_thread_and_the_rest_on_a_blocking_one() {
    let tmp = tempfile::tempdir().unwrap();
    let store = reopened(tmp.path(), 100, &JournalOptions::default()).await;
    let q = QueueId::new("q").unwrap();
    let all = || store.fetch_page(&q, Page::first(100));

    // The segment is not open yet: the fast path does not open files.
    check(&all().await.unwrap(), 1..=100);
    assert_eq!(counts(&store), (0, 0, 1));

    // Open now, and just read: in the page cache.
    check(&all().await.unwrap(), 1..=100);
    if !store.backend().inner().files.nowait.load(Ordering::Relaxed) {
        // This file system has no RWF_NOWAIT: tried once, then never again.
        eprintln!(
            "no RWF_NOWAIT in {}: the fast path is off",
            tmp.path().display()
        );
        assert_eq!(counts(&store), (1, 0, 2));
        check(&all().await.unwrap(), 1..=100);
        assert_eq!(counts(&store), (1, 0, 3));
        return;
    }
    // One run of nearby blobs, one call, no hand-off.
    assert_eq!(counts(&store), (1, 100, 1));
    let one = store.fetch_key(&q, 50).await.unwrap().unwrap();
    check(&[one], 50..=50);
    let claimed = store
        .claim(&q, "c", 10, std::time::Duration::from_mins(1))
        .await
        .unwrap();
    check(&claimed, 1..=10);
    assert_eq!(counts(&store), (3, 111, 1));

    // Dropped from the cache: the fast path misses (EAGAIN) and a blocking thread reads,
    // which brings the data back into the cache for the next call. The missed read may
    // start readahead that a fast disk finishes before the read returns, and then it is
    // served after all: a miss must be seen in one of a few tries.
    let mut missed = false;
    for _ in 0..TRIES {
        evict(tmp.path());
        let (tries, served, handoffs) = counts(&store);
        check(&all().await.unwrap(), 1..=100);
        let now = counts(&store);
        if now == (tries + 1, served + 100, handoffs) {
            continue;
        }
        assert_eq!((now.0, now.2), (tries + 1, handoffs + 1));
        let (_, served, _) = counts(&store);
        check(&all().await.unwrap(), 1..=100);
        assert_eq!(counts(&store), (tries + 2, served + 100, handoffs + 1));
        missed = true;
        break;
    }
    assert!(
        missed,
        "the fast path never missed in {TRIES} tries after an eviction"
    );
}

/// How often a test that needs the page cache in a given state tries to get it there.
const TRIES: usize = 5;

/// Counts the reads the hook sees.
#[derive(Debug, Default)]
struct CountReads(AtomicUsize);

impl Faults for CountReads {
    fn check(&self, op: IoOp) -> std::io::Result<()> {
        if matches!(op, IoOp::Read { .. }) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// A fault hook may block, so with one set every read goes to a blocking thread, where
/// the hook sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_fault_hook_every_read_is_handed_off_and_seen_by_it() {
    let tmp = tempfile::tempdir().unwrap();
    let hook = Arc::new(CountReads::default());
    let options = JournalOptions {
        faults: Some(hook.clone()),
        ..JournalOptions::default()
    };
    let store = reopened(tmp.path(), 100, &options).await;
    let q = QueueId::new("q").unwrap();
    for _ in 0..3 {
        check(
            &store.fetch_page(&q, Page::first(100)).await.unwrap(),
            1..=100,
        );
    }
    let one = store.fetch_key(&q, 7).await.unwrap().unwrap();
    check(&[one], 7..=7);
    assert_eq!(counts(&store), (0, 0, 4));
    assert_eq!(hook.0.load(Ordering::Relaxed), 4);
}

/// The blobs of the run [`a_short_read_serves_only_whole_blobs`] reads: two in the first
/// page, one across the first two, one in the third.
fn four_blobs_in_three_pages() -> Vec<Loc> {
    let loc = |offset, len| Loc {
        segment: 1,
        offset,
        len,
    };
    vec![
        loc(0, 1000),
        loc(1000, 3096),
        loc(4000, 2000),
        loc(8192, 100),
    ]
}

/// However much of a run a read returned, a blob is found in it only if it lies wholly
/// inside, and then whole: never in part.
#[test]
fn a_short_buffer_holds_only_the_blobs_wholly_inside_it() {
    let locs = four_blobs_in_three_pages();
    let runs = runs(&locs);
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    let buf: Vec<u8> = (0..run.len()).map(|i| i as u8).collect();
    // (bytes returned, how many blobs lie wholly inside them)
    for (n, whole) in [
        (0, 0),
        (999, 0),
        (1000, 1),
        (4095, 1),
        (4096, 2),
        (5999, 2),
        (6000, 3),
        (8192, 3),
        (8291, 3),
        (8292, 4),
    ] {
        for (i, &loc) in locs.iter().enumerate() {
            let found = run.blob(&buf[..n], loc);
            if i < whole {
                let from = loc.offset as usize;
                assert_eq!(
                    found,
                    Some(&buf[from..from + loc.len as usize]),
                    "{n} bytes"
                );
            } else {
                assert_eq!(found, None, "{n} bytes, blob {i}");
            }
        }
    }
}

/// Of a run the kernel returned in part (the rest not cached), the blobs wholly inside
/// what it returned are taken, and the others are left for the blocking read.
///
/// Only the first page is cached when the read starts, but the non-blocking read may
/// itself start readahead of the rest, and on a fast disk that can finish before the
/// read returns (CI saw it once). So each try may get one, two or all three pages;
/// whichever it got, the taken blobs are those wholly inside it (the split for each
/// length is checked exactly above), and at least one try of [`TRIES`] must be short.
#[cfg(target_os = "linux")]
#[test]
fn a_short_read_serves_only_whole_blobs() {
    use rustix::fs::{Advice, fadvise};

    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join(segment_name(1));
    std::fs::write(&path, vec![7u8; 4 * 4096]).unwrap();
    std::fs::File::open(&path).unwrap().sync_all().unwrap();
    let locs = four_blobs_in_three_pages();
    let mut short = 0;
    for _ in 0..TRIES {
        // Only the first page cached: read through a handle without readahead.
        let own = std::fs::File::open(&path).unwrap();
        fadvise(&own, 0, None, Advice::DontNeed).unwrap();
        fadvise(&own, 0, None, Advice::Random).unwrap();
        own.read_exact_at(&mut [0; 4096], 0).unwrap();

        let files = Files::new(tmp.path().to_path_buf());
        files.get(1).unwrap();
        let mut blobs = Blobs::default();
        let left = blobs.read_cached(&files, locs.clone());
        if !files.nowait.load(Ordering::Relaxed) {
            eprintln!("no RWF_NOWAIT in {}: nothing to test", tmp.path().display());
            assert_eq!(left, locs);
            return;
        }
        let mut taken: Vec<Loc> = blobs.0.keys().copied().collect();
        taken.sort_unstable();
        // One page returned: two blobs; two pages: three; all three pages: all four.
        let k = taken.len();
        assert!(
            (2..=4).contains(&k),
            "{k} blobs taken of a run whose first page is cached"
        );
        assert_eq!(taken, &locs[..k]);
        assert_eq!(left, &locs[k..]);
        short += usize::from(k < 4);
    }
    assert!(short > 0, "no short read in {TRIES} tries");
}

/// A run the budget cannot hold is left for the blocking read; one file not open yet
/// too, without a try.
#[cfg(target_os = "linux")]
#[test]
fn the_fast_path_keeps_to_its_budget_and_opens_no_file() {
    let tmp = tempfile::tempdir().unwrap();
    for segment in [1, 2] {
        std::fs::write(tmp.path().join(segment_name(segment)), vec![7u8; 1 << 20]).unwrap();
    }
    let files = Files::new(tmp.path().to_path_buf());
    files.get(1).unwrap();
    let loc = |segment, offset, len| Loc {
        segment,
        offset,
        len,
    };
    let big = loc(1, 0, u32::try_from(NOWAIT_BUDGET).unwrap() + 1);
    let small = loc(1, 900_000, 100);
    let closed = loc(2, 0, 100);
    let mut blobs = Blobs::default();
    let left = blobs.read_cached(&files, vec![closed, small, big]);
    if !files.nowait.load(Ordering::Relaxed) {
        eprintln!("no RWF_NOWAIT in {}: nothing to test", tmp.path().display());
        return;
    }
    assert_eq!(left, vec![big, closed]);
    assert_eq!(blobs.0.keys().copied().collect::<Vec<_>>(), vec![small]);
    assert_eq!(files.counts.tries.load(Ordering::Relaxed), 1);
}

/// The errors that say RWF_NOWAIT cannot work here turn the fast path off; the others
/// (EAGAIN above all) concern one read.
#[cfg(target_os = "linux")]
#[test]
fn errors_that_turn_the_fast_path_off() {
    use rustix::io::Errno;
    for e in [Errno::NOSYS, Errno::PERM, Errno::OPNOTSUPP, Errno::INVAL] {
        assert_eq!(nowait_error(e), Nowait::Unsupported, "{e}");
    }
    for e in [Errno::AGAIN, Errno::INTR, Errno::IO, Errno::BADF] {
        assert_eq!(nowait_error(e), Nowait::NotNow, "{e}");
    }
}

/// On a file system without RWF_NOWAIT (tmpfs, here), the backend tries once and then
/// reads everything from disk on a blocking thread.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_rwf_nowait_the_backend_stops_trying() {
    let Ok(tmp) = tempfile::tempdir_in("/dev/shm") else {
        eprintln!("no /dev/shm: nothing to test");
        return;
    };
    let store = reopened(tmp.path(), 100, &JournalOptions::default()).await;
    let q = QueueId::new("q").unwrap();
    for _ in 0..3 {
        check(
            &store.fetch_page(&q, Page::first(100)).await.unwrap(),
            1..=100,
        );
    }
    if store.backend().inner().files.nowait.load(Ordering::Relaxed) {
        eprintln!("this kernel's tmpfs has RWF_NOWAIT: nothing to test");
        return;
    }
    assert_eq!(counts(&store), (1, 0, 3));
}
