//! Fuzzes the journal's checkpoint decoder (`hookspool_journal::fuzzing`): arbitrary bytes,
//! as they are and with their trailing checksum made to hold (so that mutations reach the
//! decoder behind it), never panic it; whatever decodes encodes to a checkpoint that decodes
//! to the same position, queues, counts and live bytes, and encodes to as many bytes again.

#![no_main]

use hookspool_journal::fuzzing::{Checkpoint, decode_checkpoint};
use libfuzzer_sys::fuzz_target;

/// `[magic: 8 bytes] … [crc32 of what follows the magic: 4 bytes]`.
const MAGIC_LEN: usize = 8;
const CRC_LEN: usize = 4;

fuzz_target!(|data: &[u8]| {
    if let Ok(checkpoint) = decode_checkpoint(data) {
        round_trip(&checkpoint);
    }
    if data.len() >= MAGIC_LEN + CRC_LEN {
        let mut fixed = data.to_vec();
        let end = fixed.len() - CRC_LEN;
        let crc = crc32fast::hash(&fixed[MAGIC_LEN..end]);
        fixed[end..].copy_from_slice(&crc.to_le_bytes());
        if let Ok(checkpoint) = decode_checkpoint(&fixed) {
            round_trip(&checkpoint);
        }
    }
});

/// Encodes a decoded checkpoint and decodes it again: the same state comes back.
fn round_trip(checkpoint: &Checkpoint) {
    let encoded = match checkpoint.encode() {
        Ok(bytes) => bytes,
        Err(e) => panic!("a decoded checkpoint does not encode: {e}"),
    };
    let again = match decode_checkpoint(&encoded) {
        Ok(c) => c,
        Err(e) => panic!("a re-encoded checkpoint does not decode: {e}"),
    };
    assert_eq!(again.position(), checkpoint.position(), "position changed");
    assert_eq!(again.queues(), checkpoint.queues(), "queues changed");
    assert_eq!(again.counts(), checkpoint.counts(), "counts changed");
    assert_eq!(again.live(), checkpoint.live(), "live bytes changed");
    assert_eq!(again.items(), checkpoint.items(), "item count changed");
    // Side tables are written in hash order, so the bytes may differ; their size may not.
    let twice = match again.encode() {
        Ok(bytes) => bytes,
        Err(e) => panic!("a twice-decoded checkpoint does not encode: {e}"),
    };
    assert_eq!(twice.len(), encoded.len(), "re-encoding changed the size");
}
