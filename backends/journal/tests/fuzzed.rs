//! Data directories the fuzz targets (`fuzz/`: `journal_open`, `journal_checkpoint`) found
//! to crash the journal at open, written here byte by byte: each must be refused with
//! `Corrupted`, never panic or abort the process.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use hookspool::Error;
use hookspool_journal::JournalBackend;

const CHECKPOINT_MAGIC: &[u8; 8] = b"HSPJCKP2";
const SEGMENT_MAGIC: &[u8; 8] = b"HSPJSEG1";

/// A checkpoint file: magic, the log position, the queue count, `body`, and the crc32 of
/// everything after the magic.
fn write_checkpoint(dir: &Path, segment: u64, offset: u64, queues: u32, body: &[u8]) {
    let mut bytes = CHECKPOINT_MAGIC.to_vec();
    bytes.extend_from_slice(&segment.to_le_bytes());
    bytes.extend_from_slice(&offset.to_le_bytes());
    bytes.extend_from_slice(&queues.to_le_bytes());
    bytes.extend_from_slice(body);
    let crc = crc32fast::hash(&bytes[CHECKPOINT_MAGIC.len()..]);
    bytes.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(dir.join("checkpoint"), bytes).unwrap();
}

/// An empty segment file: its header only.
fn write_segment(dir: &Path, n: u64) {
    let mut bytes = SEGMENT_MAGIC.to_vec();
    bytes.extend_from_slice(&n.to_le_bytes());
    std::fs::write(dir.join(format!("journal-{n:010}.log")), bytes).unwrap();
}

fn assert_corrupted(dir: &Path) {
    match JournalBackend::open(dir) {
        Err(Error::Corrupted { .. }) => {}
        Err(e) => panic!("expected Corrupted, got {e}"),
        Ok(_) => panic!("a damaged directory opened"),
    }
}

/// A checkpoint that starts at the last segment number `u64` has, with that segment there:
/// open computed the next segment's number as `u64::MAX + 1` and panicked.
#[test]
fn a_checkpoint_at_the_last_segment_number_is_corrupted() {
    let tmp = tempfile::tempdir().unwrap();
    write_checkpoint(tmp.path(), u64::MAX, 16, 0, &[]);
    write_segment(tmp.path(), u64::MAX);
    assert_corrupted(tmp.path());
}

/// A checkpoint whose first queue's settings claim a name of 2^56 bytes: bincode asked for
/// that much memory before reading the name, and the process aborted.
#[test]
fn a_checkpoint_claiming_a_huge_string_is_corrupted() {
    let tmp = tempfile::tempdir().unwrap();
    // The queue's settings block: its id, a string whose u64 length (bincode varint 253)
    // is far past the block's end.
    let mut settings = vec![253];
    settings.extend_from_slice(&(1_u64 << 56).to_le_bytes());
    settings.extend_from_slice(b"orders");
    let mut body = u32::try_from(settings.len())
        .unwrap()
        .to_le_bytes()
        .to_vec();
    body.extend_from_slice(&settings);
    write_checkpoint(tmp.path(), 1, 16, 1, &body);
    write_segment(tmp.path(), 1);
    assert_corrupted(tmp.path());
}

/// A checkpoint that starts inside its segment's 16-byte header, its segment not there yet:
/// the first open took it (nothing to replay) and created the segment, and the next open
/// read the segment's header as a record and refused the store. Now the first open refuses
/// it, with what is wrong, whether the segment is there or not.
#[test]
fn a_checkpoint_starting_inside_a_segment_header_is_corrupted() {
    for with_segment in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        write_checkpoint(tmp.path(), 2, 0, 0, &[]);
        if with_segment {
            write_segment(tmp.path(), 2);
        }
        match JournalBackend::open(tmp.path()) {
            Err(Error::Corrupted { what }) => assert!(what.contains("header"), "{what}"),
            Err(e) => panic!("expected Corrupted, got {e}"),
            Ok(_) => panic!("a checkpoint starting at offset 0 opened"),
        }
    }
}

/// A checkpoint that starts at offset 1,256 of segment 2, whose file holds a single byte: the
/// empty-last-segment rule (a header that never made it) removed the file and appended
/// from offset 16 of a new segment 2, behind the checkpoint's position, so the next open
/// skipped every record written in between (found by `journal_open`: the quarantine of
/// items whose data was gone came back as another one). A segment the checkpoint points
/// past the header of must hold that much.
#[test]
fn a_checkpoint_start_in_a_segment_without_its_header_is_corrupted() {
    for segment in [&[0u8][..], &[0; 16], &[]] {
        let tmp = tempfile::tempdir().unwrap();
        write_checkpoint(tmp.path(), 2, 1256, 0, &[]);
        std::fs::write(tmp.path().join("journal-0000000002.log"), segment).unwrap();
        assert_corrupted(tmp.path());
    }
}

/// The rule itself still holds where the checkpoint starts right after the header: an
/// empty last segment whose header never made it is removed and created again.
#[test]
fn an_empty_segment_at_the_checkpoint_start_opens() {
    let tmp = tempfile::tempdir().unwrap();
    write_checkpoint(tmp.path(), 2, 16, 0, &[]);
    std::fs::write(tmp.path().join("journal-0000000002.log"), [0u8; 16]).unwrap();
    JournalBackend::open(tmp.path()).unwrap();
}
