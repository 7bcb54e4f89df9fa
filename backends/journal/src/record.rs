//! What the journal writes: the operations it logs, how one is framed on disk, and the
//! checkpoint file.
//!
//! A segment is a header ([`SEGMENT_MAGIC`], then the segment's number as u64 LE) followed by
//! records `[len: u32 LE][crc32 of body: u32 LE][body: len bytes]`; `len = 0` marks the end of
//! the written part (segments are preallocated with zeros). The body is one [`Op`] in bincode 2.

use hookspool::{
    Claim, Error, Key, NewItem, QueueConfig, QueueId, QueueSnapshot, Result, Selector, Timestamp,
    Transition,
};
use serde::{Deserialize, Serialize};

/// First bytes of every segment file.
pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"HSPJSEG1";
/// Segment header: magic and the segment number.
pub(crate) const SEGMENT_HEADER: u64 = 16;
/// Record header: length and checksum.
pub(crate) const RECORD_HEADER: usize = 8;
/// Largest record body accepted when reading: a length above it is damage, not data (a push
/// of 10,000 items of 1 MiB would be bigger, but the store's limits keep a batch far below).
pub(crate) const MAX_RECORD: usize = 1 << 30;
/// First bytes of the checkpoint file.
pub(crate) const CHECKPOINT_MAGIC: &[u8; 8] = b"HSPJCKP1";

/// One logged operation: a mutating backend call with everything it was given, `now`
/// included, so that replaying it on the state it was applied to gives the same result.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Op {
    CreateQueue(QueueConfig),
    UpdateQueue(QueueConfig),
    DeleteQueue(QueueId),
    Push {
        queue: QueueId,
        items: Vec<NewItem>,
        now: Timestamp,
    },
    Pop {
        queue: QueueId,
        selector: Selector,
    },
    Reset(QueueId),
    Update {
        queue: QueueId,
        key: Key,
        transition: Transition,
        now: Timestamp,
    },
    Claim {
        queue: QueueId,
        claim: Claim,
        now: Timestamp,
    },
    Sweep {
        queue: QueueId,
        now: Timestamp,
    },
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes an operation as a record body.
pub(crate) fn encode(op: &Op) -> Result<Vec<u8>> {
    bincode::serde::encode_to_vec(op, config()).map_err(|e| Error::Backend {
        backend: "journal",
        source: Box::new(e),
    })
}

/// The checksum of a body in segment `segment`. The segment number is part of it, so that a
/// record left over from an earlier use of the same bytes (a reused file) never passes as
/// one of this segment's.
pub(crate) fn checksum(segment: u64, body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&segment.to_le_bytes());
    h.update(body);
    h.finalize()
}

/// Frames a body as a record of segment `segment`.
pub(crate) fn frame(segment: u64, body: &[u8]) -> Result<Vec<u8>> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|l| (*l as usize) <= MAX_RECORD)
        .ok_or_else(|| {
            Error::invalid(format!(
                "a journal record of {} bytes is too large",
                body.len()
            ))
        })?;
    let mut out = Vec::with_capacity(RECORD_HEADER + body.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(segment, body).to_le_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

/// What is found at one position of a segment.
#[derive(Debug)]
pub(crate) enum Read<'a> {
    /// A record whose checksum holds; the next one starts `size` bytes further.
    Record { body: &'a [u8], size: usize },
    /// Zeros or the end of the file: nothing more was written here.
    End,
    /// Bytes that are not a valid record: a torn write or damage. `size` is where the next
    /// record would start if the length field is intact (`None` if it is not plausible).
    Bad { size: Option<usize>, why: String },
}

/// Reads the record of segment `segment` at the start of `buf`.
pub(crate) fn read(segment: u64, buf: &[u8]) -> Read<'_> {
    if buf.len() < RECORD_HEADER {
        return if buf.iter().all(|b| *b == 0) {
            Read::End
        } else {
            Read::Bad {
                size: None,
                why: format!("{} stray bytes where a record header should be", buf.len()),
            }
        };
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len == 0 {
        return if crc == 0 {
            Read::End
        } else {
            Read::Bad {
                size: None,
                why: "a record of length 0 with a checksum".to_owned(),
            }
        };
    }
    if len > MAX_RECORD {
        return Read::Bad {
            size: None,
            why: format!("implausible record length {len}"),
        };
    }
    let size = RECORD_HEADER + len;
    let Some(body) = buf.get(RECORD_HEADER..size) else {
        return Read::Bad {
            size: Some(size),
            why: format!(
                "record of {len} bytes cut off after {} bytes",
                buf.len() - RECORD_HEADER
            ),
        };
    };
    if checksum(segment, body) != crc {
        return Read::Bad {
            size: Some(size),
            why: "checksum mismatch".to_owned(),
        };
    }
    Read::Record { body, size }
}

/// Decodes a record body whose checksum held.
pub(crate) fn decode(body: &[u8]) -> Result<Op> {
    bincode::serde::decode_from_slice(body, config())
        .map(|(op, _)| op)
        .map_err(|e| Error::Corrupted {
            what: format!("a journal record passed its checksum but does not decode: {e}"),
        })
}

/// The checkpoint: the whole state as of the start of segment `segment`, whose records (and
/// those of every later segment) are replayed on top of it at open.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    pub segment: u64,
    pub queues: Vec<QueueSnapshot>,
}

/// `[magic][crc32 of body][body]`.
pub(crate) fn encode_checkpoint(cp: &Checkpoint) -> Result<Vec<u8>> {
    let body = bincode::serde::encode_to_vec(cp, config()).map_err(|e| Error::Backend {
        backend: "journal",
        source: Box::new(e),
    })?;
    let mut out = Vec::with_capacity(body.len() + 12);
    out.extend_from_slice(CHECKPOINT_MAGIC);
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Reads a checkpoint file's contents.
pub(crate) fn decode_checkpoint(bytes: &[u8]) -> Result<Checkpoint> {
    let bad = |why: &str| Error::Corrupted {
        what: format!("journal checkpoint: {why}"),
    };
    if bytes.len() < 12 || &bytes[..8] != CHECKPOINT_MAGIC {
        return Err(bad("not a checkpoint file (bad magic or too short)"));
    }
    let crc = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let body = &bytes[12..];
    if crc32fast::hash(body) != crc {
        return Err(bad("checksum mismatch"));
    }
    bincode::serde::decode_from_slice(body, config())
        .map(|(cp, _)| cp)
        .map_err(|e| bad(&format!("does not decode: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on failure
mod tests {
    use super::*;

    fn op() -> Op {
        Op::Push {
            queue: QueueId::new("q").unwrap(),
            items: vec![NewItem::new(b"hello".to_vec()).with_metadata("a", "b")],
            now: Timestamp(7),
        }
    }

    #[test]
    fn a_record_round_trips_and_every_cut_or_flip_is_caught() {
        let buf = frame(5, &encode(&op()).unwrap()).unwrap();
        assert!(
            matches!(read(6, &buf), Read::Bad { .. }),
            "a record of another segment does not pass"
        );
        let Read::Record { body, size } = read(5, &buf) else {
            panic!("a whole record reads")
        };
        assert_eq!(size, buf.len());
        assert!(matches!(decode(body).unwrap(), Op::Push { .. }));
        for cut in 1..buf.len() {
            assert!(
                matches!(read(5, &buf[..cut]), Read::Bad { .. }),
                "cut at {cut} is caught"
            );
        }
        for bit in 0..buf.len() * 8 {
            let mut flipped = buf.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(read(5, &flipped), Read::Record { .. }),
                "flip of bit {bit} is caught"
            );
        }
        assert!(matches!(read(5, &[0; 20]), Read::End));
        assert!(matches!(read(5, &[]), Read::End));
    }

    #[test]
    fn a_checkpoint_round_trips_and_damage_is_reported() {
        let cp = Checkpoint {
            segment: 3,
            queues: Vec::new(),
        };
        let bytes = encode_checkpoint(&cp).unwrap();
        assert_eq!(decode_checkpoint(&bytes).unwrap().segment, 3);
        let mut bad = bytes.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(matches!(
            decode_checkpoint(&bad),
            Err(Error::Corrupted { .. })
        ));
    }
}
