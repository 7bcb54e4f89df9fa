//! Fuzzes the journal's recovery: the bytes become the files of a data directory (segments
//! and a checkpoint), which is opened with `JournalBackend::open_with`. Opening must give an
//! error or a consistent store, never a panic or a hang: if it opens, every queue's counts
//! match a recount of its dump (where the dump reads), a push lands, and the store closes
//! (writing a checkpoint) and opens again to the same queues, counts and items.
//!
//! Input layout (seeds in `fuzz/seeds/journal_open/`, written by `examples/make_seeds.rs`):
//! a flags byte, then files `[tag: u8][len: u16 LE][len bytes]` until the input ends
//! (a short last file takes what is left). Tag 0 is the checkpoint, 1 to 250 the segment of
//! that number, 251 to 253 segments numbered at the ends of the ranges (`u32::MAX`,
//! `u32::MAX + 1`, `u64::MAX`), 254 a leftover `checkpoint.tmp`, 255 a file whose name only
//! looks like a segment's. Flags: bit 0 opens with `skip_corrupt`; bits 1, 2 and 3 make the
//! records' checksums, the checkpoint's checksum and the segments' headers hold, so that
//! mutations get past them to the decoders and to replay.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use hookspool::{Item, ManualClock, NewItem, PhaseCounts, QueueConfig, QueueId, Store, Timestamp};
use hookspool_journal::fuzzing::record_checksum;
use hookspool_journal::{Durability, JournalBackend, JournalOptions};
use libfuzzer_sys::fuzz_target;

const SKIP_CORRUPT: u8 = 1;
const FIX_RECORDS: u8 = 2;
const FIX_CHECKPOINT: u8 = 4;
const FIX_HEADERS: u8 = 8;

const SEGMENT_MAGIC: &[u8; 8] = b"HSPJSEG1";
const SEGMENT_HEADER: usize = 16;
/// The checkpoint's checksum covers what follows its 8-byte magic.
const CHECKPOINT_MAGIC_LEN: usize = 8;

/// The clock every store here runs on: a fixed time, so that an input replays exactly.
const NOW: Timestamp = Timestamp(1_700_000_000_000);

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
});

/// This process's scratch directory: on tmpfs where there is one (an fsync there costs
/// nothing), else in the temporary directory.
static SCRATCH: LazyLock<PathBuf> = LazyLock::new(|| {
    let base = Path::new("/dev/shm");
    let base = if base.is_dir() {
        base.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    base.join(format!("hookspool-fuzz-open-{}", std::process::id()))
});

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let dir = SCRATCH.join("data");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the scratch directory");
    while let Some((&tag, after)) = rest.split_first() {
        let (len, after) = match after {
            [a, b, more @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), more),
            _ => (after.len(), &[][..]),
        };
        let (bytes, after) = after.split_at(len.min(after.len()));
        write_file(&dir, tag, bytes, flags);
        rest = after;
    }
    let options = JournalOptions {
        durability: Durability::Immediate,
        // Small segments, not preallocated: a push rotates now and then, and costs little.
        segment_size: 64 << 10,
        preallocate: false,
        skip_corrupt: flags & SKIP_CORRUPT != 0,
        ..JournalOptions::default()
    };
    exercise(&dir, &options);
    let _ = std::fs::remove_dir_all(&dir);
});

fn write_file(dir: &Path, tag: u8, bytes: &[u8], flags: u8) {
    let mut bytes = bytes.to_vec();
    let name = match tag {
        0 => {
            if flags & FIX_CHECKPOINT != 0 && bytes.len() >= CHECKPOINT_MAGIC_LEN + 4 {
                let end = bytes.len() - 4;
                let crc = crc32fast::hash(&bytes[CHECKPOINT_MAGIC_LEN..end]);
                bytes[end..].copy_from_slice(&crc.to_le_bytes());
            }
            "checkpoint".to_owned()
        }
        254 => "checkpoint.tmp".to_owned(),
        255 => "journal-12x.log".to_owned(),
        _ => {
            let n = match tag {
                251 => u64::from(u32::MAX),
                252 => u64::from(u32::MAX) + 1,
                253 => u64::MAX,
                n => u64::from(n),
            };
            fix_segment(&mut bytes, n, flags);
            format!("journal-{n:010}.log")
        }
    };
    std::fs::write(dir.join(name), bytes).expect("a file in the scratch directory");
}

/// Makes a segment's header, and the checksum of each record whose length fits, hold.
fn fix_segment(bytes: &mut [u8], n: u64, flags: u8) {
    if bytes.len() < SEGMENT_HEADER {
        return;
    }
    if flags & FIX_HEADERS != 0 {
        bytes[..8].copy_from_slice(SEGMENT_MAGIC);
        bytes[8..16].copy_from_slice(&n.to_le_bytes());
    }
    if flags & FIX_RECORDS == 0 {
        return;
    }
    let mut pos = SEGMENT_HEADER;
    while let Some(header) = bytes.get(pos..pos + 8) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let end = pos + 8 + len;
        if len == 0 || end > bytes.len() {
            break;
        }
        let crc = record_checksum(n, &bytes[pos + 8..end]);
        bytes[pos + 4..pos + 8].copy_from_slice(&crc.to_le_bytes());
        pos = end;
    }
}

/// A queue as a caller sees it: settings, counts, and its items if they all read.
#[derive(Debug, PartialEq)]
struct QueueView {
    config: QueueConfig,
    counts: PhaseCounts,
    items: Option<Vec<Item>>,
}

fn exercise(dir: &Path, options: &JournalOptions) {
    let Ok(backend) = JournalBackend::open_with(dir, options.clone()) else {
        return;
    };
    let store = Store::new(backend).with_clock(ManualClock::new(NOW));
    let before = RUNTIME.block_on(async {
        let queues = view(&store).await;
        let queue = if let Some(q) = queues.first() {
            q.config.id.clone()
        } else {
            let id = QueueId::new("fuzz").expect("a valid queue id");
            if let Err(e) = store.create_queue(QueueConfig::new(id.clone())).await {
                panic!("creating a queue in an empty store failed: {e}");
            }
            id
        };
        // A push may be refused (a queue out of keys, say), never panic.
        let _ = store.push(&queue, NewItem::new(b"fuzz".to_vec())).await;
        view(&store).await
    });
    drop(store);
    let backend = match JournalBackend::open_with(dir, options.clone()) {
        Ok(b) => b,
        Err(e) => panic!("a store that opened and closed does not open again: {e}"),
    };
    let store = Store::new(backend).with_clock(ManualClock::new(NOW));
    let after = RUNTIME.block_on(view(&store));
    assert_eq!(after, before, "the store changed across a close and reopen");
}

/// Every queue: settings, counts (checked against a recount of the dump) and items.
async fn view(store: &Store<JournalBackend>) -> Vec<QueueView> {
    let queues = match store.queues().await {
        Ok(q) => q,
        Err(e) => panic!("listing the queues of an open store failed: {e}"),
    };
    let mut out = Vec::with_capacity(queues.len());
    for config in queues {
        // Dumped first: reading an item whose data is damaged quarantines it (it moves to
        // `corrupt`), so the counts to compare are those after the read.
        let items = dump(store, &config.id).await;
        let counts = match store.counts(&config.id).await {
            Ok(c) => c,
            Err(e) => panic!("counting a listed queue failed: {e}"),
        };
        if let Some(items) = &items {
            let mut recount = PhaseCounts::default();
            for item in items {
                *recount.0.entry(item.phase.clone()).or_default() += 1;
            }
            assert_eq!(recount, counts, "counts differ from a recount of the dump");
        }
        out.push(QueueView {
            config,
            counts,
            items,
        });
    }
    out
}

/// Every item of a queue, or `None` if one does not read (damaged data is reported as
/// `Corrupted`; any error is fine here, only a panic is a finding).
async fn dump(store: &Store<JournalBackend>, queue: &QueueId) -> Option<Vec<Item>> {
    let mut dump = store.dump(queue);
    let mut items = Vec::new();
    loop {
        match dump.next_page().await {
            Ok(Some(page)) => items.extend(page),
            Ok(None) => return Some(items),
            Err(_) => return None,
        }
    }
}
