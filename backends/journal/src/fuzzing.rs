//! Entry points for the fuzz targets (`fuzz/`, `journal_record` and `journal_checkpoint`):
//! the decoders of what the journal reads from disk, which are otherwise private. Not part
//! of the API: hidden from the docs, and free to change with the on-disk format.

use std::collections::BTreeMap;
use std::ops::Range;

use hookspool::{NewItem, PhaseCounts, QueueConfig, QueueId, Result, Timestamp};

use crate::record::{self, Body, Read};
use crate::state::State;
use crate::{checkpoint, record::encode};

/// The checksum of a record body in segment `segment`, as its header stores it.
#[must_use]
pub fn record_checksum(segment: u64, body: &[u8]) -> u32 {
    record::checksum(segment, body)
}

/// Reads the record at the start of `buf` as recovery does for segment `segment`:
/// `Ok(Some((body, size)))` for a record whose checksum holds (its body's range in `buf`,
/// and where the next record starts), `Ok(None)` where nothing more was written.
///
/// # Errors
/// `Corrupted` for bytes that are not a valid record (the reason in its text).
pub fn read_record(segment: u64, buf: &[u8]) -> Result<Option<(Range<usize>, usize)>> {
    match record::read(segment, buf) {
        Read::Record { body, size } => Ok(Some((
            record::RECORD_HEADER..record::RECORD_HEADER + body.len(),
            size,
        ))),
        Read::End => Ok(None),
        Read::Bad { why, .. } => Err(hookspool::Error::Corrupted { what: why }),
    }
}

/// What a record body decoded to.
#[derive(Debug)]
pub struct DecodedBody {
    /// Where each item's blob is in the body (pushes and relocations), or each note (noted
    /// updates).
    pub blobs: Vec<Range<usize>>,
    /// An operation (not a push or relocation) encoded again; for a noted update, its
    /// operation without the notes.
    pub reencoded: Option<Vec<u8>>,
}

/// Decodes a record body (one whose checksum held) as replay does.
///
/// # Errors
/// `Corrupted` for a body that does not decode; `InvalidInput` for a bad queue name.
pub fn decode_body(body: &[u8]) -> Result<DecodedBody> {
    let range = |b: record::BlobAt| b.at as usize..b.at as usize + b.len as usize;
    Ok(match record::decode(body)? {
        Body::Op(op) => DecodedBody {
            blobs: Vec::new(),
            reencoded: Some(encode(&op)?),
        },
        Body::Push { items, .. } => DecodedBody {
            blobs: items.iter().map(|i| range(i.blob)).collect(),
            reencoded: None,
        },
        Body::Relocate { items, .. } => DecodedBody {
            blobs: items.iter().map(|i| range(i.blob)).collect(),
            reencoded: None,
        },
        // The operation of a noted update, encoded again on its own (its notes are blobs).
        Body::Noted { op, notes } => DecodedBody {
            blobs: notes.iter().map(|n| range(n.blob)).collect(),
            reencoded: Some(encode(&op)?),
        },
    })
}

/// Decodes an item's blob: its metadata and payload.
///
/// # Errors
/// `Corrupted` for a blob that fails its checksum or does not decode.
pub fn decode_blob(blob: &[u8]) -> Result<(BTreeMap<String, String>, Vec<u8>)> {
    record::decode_blob(blob)
}

/// Encodes a push of `items` to `queue` as a record body.
///
/// # Errors
/// `InvalidInput` for an item too large for a record.
pub fn encode_push(queue: &QueueId, items: &[NewItem], now: Timestamp) -> Result<Vec<u8>> {
    record::encode_push(queue, items, now).map(|(body, _)| body)
}

/// A decoded checkpoint: the log position it stands for and the state.
#[derive(Debug)]
pub struct Checkpoint {
    at: (u64, u64),
    state: State,
}

/// Decodes the bytes of a `checkpoint` file as open does.
///
/// # Errors
/// `Corrupted` for anything but a whole, consistent checkpoint.
pub fn decode_checkpoint(bytes: &[u8]) -> Result<Checkpoint> {
    let (at, state) = checkpoint::decode(bytes)?;
    Ok(Checkpoint { at, state })
}

impl Checkpoint {
    /// The log position replay starts at: `(segment, offset)`.
    #[must_use]
    pub fn position(&self) -> (u64, u64) {
        self.at
    }

    /// Every queue's settings, ordered by id.
    #[must_use]
    pub fn queues(&self) -> Vec<QueueConfig> {
        self.state.list_queues()
    }

    /// Every queue's counts by phase, ordered by queue id.
    #[must_use]
    pub fn counts(&self) -> Vec<PhaseCounts> {
        self.state
            .list_queues()
            .iter()
            .filter_map(|q| self.state.count(&q.id).ok())
            .collect()
    }

    /// Live blob bytes by segment, ordered by segment.
    #[must_use]
    pub fn live(&self) -> BTreeMap<u32, u64> {
        self.state.live().iter().map(|(s, n)| (*s, *n)).collect()
    }

    /// How many items.
    #[must_use]
    pub fn items(&self) -> usize {
        self.state.item_count()
    }

    /// Encodes the checkpoint again, as a checkpoint of this state is written.
    ///
    /// # Errors
    /// Never for a decoded state, short of an allocation failure (the encoder writes to
    /// memory).
    pub fn encode(&self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        checkpoint::encode(&self.state, self.at.0, self.at.1, &mut out)?;
        Ok(out)
    }
}
