//! What the journal writes in its segments: the operations it logs, how one is framed on
//! disk, and the queue-settings layout the checkpoint (`checkpoint`) shares.
//!
//! A segment is a header ([`SEGMENT_MAGIC`], then the segment's number as u64 LE) followed by
//! records `[len: u32 LE][crc32 of body: u32 LE][body: len bytes]`; `len = 0` marks the end of
//! the written part (segments are preallocated with zeros). A body starts with its kind:
//!
//! - [`KIND_OP`]: one [`Op`] in bincode 2;
//! - [`KIND_PUSH`]: a push, laid out so that each item's *blob* (checksum, metadata,
//!   payload) sits at a known offset: the index points at it and reads it with one `pread`;
//! - [`KIND_RELOCATE`]: blobs copied forward out of an old segment by compaction;
//! - [`KIND_NOTED`]: an `Update` or `UpdateMany` that changes items' metadata or errors:
//!   the operation with those left out, then one *note* per update that changed them, a
//!   blob holding the item's metadata (if replaced since its push) and error as they are
//!   after it. The index points at the note, as at the payload's blob, so that neither
//!   stays in memory (see [`Note`]).
//!
//! A blob is `[crc32 of the rest: u32][metadata length: u32][metadata, bincode][payload]`
//! (metadata length 0: no metadata), so that a blob read long after its record was checked
//! is checked again.

use std::collections::BTreeMap;

use bincode::config::{Limit, LittleEndian, Varint};
use hookspool::{
    Claim, Error, Key, QueueConfig, QueueId, Result, Retention, Selector, Timestamp, Transition,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// First bytes of every segment file.
pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"HSPJSEG1";
/// Segment header: magic and the segment number.
pub(crate) const SEGMENT_HEADER: u64 = 16;
/// Record header: length and checksum.
pub(crate) const RECORD_HEADER: usize = 8;
/// Largest record body accepted when reading: a length above it is damage, not data (a push
/// of 10,000 items of 1 MiB would be bigger, but the store's limits keep a batch far below).
pub(crate) const MAX_RECORD: usize = 1 << 30;

/// Body kinds.
pub(crate) const KIND_OP: u8 = 1;
pub(crate) const KIND_PUSH: u8 = 2;
pub(crate) const KIND_RELOCATE: u8 = 3;
pub(crate) const KIND_NOTED: u8 = 4;

/// A note's tag: it holds the item's replaced metadata.
pub(crate) const NOTE_META: u8 = 1;
/// A note's tag: it holds the item's error.
pub(crate) const NOTE_ERROR: u8 = 2;

/// One logged operation other than a push: a mutating backend call with everything it was
/// given, `now` included, so that replaying it on the state it was applied to gives the same
/// result.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Op {
    CreateQueue(#[serde(with = "stored_config")] QueueConfig),
    UpdateQueue(#[serde(with = "stored_config")] QueueConfig),
    DeleteQueue(QueueId),
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
    UpdateMany {
        queue: QueueId,
        updates: Vec<(Key, Transition)>,
        now: Timestamp,
    },
    Sweep {
        queue: QueueId,
        now: Timestamp,
    },
}

/// Queue settings as the journal lays them out (in records and in the checkpoint).
///
/// Before the engine and the webhook layer became separate crates, a queue's signing secret
/// had a field of its own, second in the layout. The slot stays, so that every journal
/// written since still reads: it is written empty, and a secret found in it is read into the
/// metadata entry `secret`, where the webhook layer now keeps a callback channel's secret.
#[derive(Serialize, Deserialize)]
struct StoredConfig {
    id: QueueId,
    legacy_secret: Option<String>,
    ttl_ms: Option<u64>,
    retention: Retention,
    created_at: Timestamp,
    metadata: BTreeMap<String, String>,
}

/// `#[serde(with)]` for a [`QueueConfig`] stored as [`StoredConfig`].
pub(crate) mod stored_config {
    use super::{
        BTreeMap, Deserialize, Deserializer, QueueConfig, Serialize, Serializer, StoredConfig,
    };

    pub(crate) fn serialize<S: Serializer>(c: &QueueConfig, s: S) -> Result<S::Ok, S::Error> {
        StoredConfig {
            id: c.id.clone(),
            legacy_secret: None,
            ttl_ms: c
                .ttl
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            retention: c.retention,
            created_at: c.created_at,
            metadata: c.stored_metadata(),
        }
        .serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<QueueConfig, D::Error> {
        let stored = StoredConfig::deserialize(d)?;
        let mut metadata: BTreeMap<String, String> = stored.metadata;
        if let Some(secret) = stored.legacy_secret {
            metadata.entry("secret".to_owned()).or_insert(secret);
        }
        let mut config = QueueConfig::new(stored.id).with_retention(stored.retention);
        config.ttl = stored.ttl_ms.map(std::time::Duration::from_millis);
        config.created_at = stored.created_at;
        config.metadata = metadata;
        config
            .restore_stored_metadata()
            .map_err(serde::de::Error::custom)?;
        Ok(config)
    }
}

/// A [`QueueConfig`] in the journal's layout, for the checkpoint.
#[derive(Serialize, Deserialize)]
pub(crate) struct ConfigRecord(#[serde(with = "stored_config")] pub(crate) QueueConfig);

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// The bincode settings for reading what the journal wrote (records, blobs' metadata,
/// checkpoint blocks): those of [`config`], with a cap on what one decode may claim. bincode
/// allocates a string or vector for the length it reads before it reads the contents, so
/// without a cap one damaged length (a checksum that holds over garbage, a fuzzed file)
/// asks for exabytes and aborts the process. Nothing the journal writes comes near the cap:
/// a record is at most [`MAX_RECORD`] bytes, and the store's limits keep a batch far below.
pub(crate) fn decode_config()
-> bincode::config::Configuration<LittleEndian, Varint, Limit<MAX_RECORD>> {
    config().with_limit::<MAX_RECORD>()
}

fn encode_error(e: bincode::error::EncodeError) -> Error {
    Error::Backend {
        backend: "journal",
        source: Box::new(e),
    }
}

/// Encodes an operation as a record body.
pub(crate) fn encode(op: &Op) -> Result<Vec<u8>> {
    let mut out = vec![KIND_OP];
    bincode::serde::encode_into_std_write(op, &mut out, config()).map_err(encode_error)?;
    Ok(out)
}

/// Where one blob is inside a record body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlobAt {
    pub at: u32,
    pub len: u32,
}

/// One item of a push record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PushedItem {
    pub not_before: Option<Timestamp>,
    pub blob: BlobAt,
}

/// One item of a relocation record: the item, where its blob was, where it is now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Relocated {
    pub key: Key,
    pub from_segment: u32,
    pub from_offset: u32,
    pub blob: BlobAt,
}

/// What an item's note holds: its metadata, if replaced after its push (otherwise the
/// metadata in its blob stands), and its error, as the update that wrote the note left them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Note {
    pub metadata: Option<BTreeMap<String, String>>,
    pub error: Option<String>,
}

impl Note {
    pub(crate) fn tag(&self) -> u8 {
        let mut tag = 0;
        if self.metadata.is_some() {
            tag |= NOTE_META;
        }
        if self.error.is_some() {
            tag |= NOTE_ERROR;
        }
        tag
    }

    /// The note in a blob read back and decoded ([`decode_blob`]).
    pub(crate) fn from_blob((metadata, payload): (BTreeMap<String, String>, Vec<u8>)) -> Note {
        let tag = payload.first().copied().unwrap_or(0);
        Note {
            metadata: (tag & NOTE_META != 0).then_some(metadata),
            error: (tag & NOTE_ERROR != 0)
                .then(|| String::from_utf8_lossy(&payload[1..]).into_owned()),
        }
    }
}

/// One note of a noted record: the position of the update that wrote it among the
/// operation's updates, its tag, and where its blob is in the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NoteAt {
    pub index: u32,
    pub tag: u8,
    pub blob: BlobAt,
}

/// A decoded record body.
#[derive(Debug)]
pub(crate) enum Body {
    Op(Op),
    Push {
        queue: QueueId,
        now: Timestamp,
        items: Vec<PushedItem>,
    },
    Relocate {
        queue: QueueId,
        items: Vec<Relocated>,
    },
    /// An `Update` or `UpdateMany` (its moves without metadata or errors) and its notes,
    /// in the order of the updates that wrote them.
    Noted {
        op: Op,
        notes: Vec<NoteAt>,
    },
}

fn too_large(what: &str) -> Error {
    Error::invalid(format!("{what} is too large for a journal record"))
}

fn put_u32(out: &mut Vec<u8>, n: usize, what: &str) -> Result<()> {
    let n = u32::try_from(n).map_err(|_| too_large(what))?;
    out.extend_from_slice(&n.to_le_bytes());
    Ok(())
}

fn put_queue(out: &mut Vec<u8>, queue: &QueueId) {
    let name = queue.as_str().as_bytes();
    // Queue ids are at most 128 bytes (validated by `QueueId::new`).
    out.extend_from_slice(&u16::try_from(name.len()).unwrap_or(u16::MAX).to_le_bytes());
    out.extend_from_slice(name);
}

/// Appends a blob: `[crc][meta len][meta][payload]`.
/// The shortest item blob [`put_blob`] writes: its checksum and its metadata's length, with
/// no metadata and no payload. Anything shorter is damage.
pub(crate) const MIN_BLOB: u32 = 8;

pub(crate) fn put_blob(
    out: &mut Vec<u8>,
    metadata: &BTreeMap<String, String>,
    payload: &[u8],
) -> Result<BlobAt> {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    let meta = if metadata.is_empty() {
        Vec::new()
    } else {
        bincode::serde::encode_to_vec(metadata, config()).map_err(encode_error)?
    };
    put_u32(out, meta.len(), "metadata")?;
    out.extend_from_slice(&meta);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[at + 4..]);
    out[at..at + 4].copy_from_slice(&crc.to_le_bytes());
    let len = u32::try_from(out.len() - at).map_err(|_| too_large("an item"))?;
    let at = u32::try_from(at).map_err(|_| too_large("a push"))?;
    Ok(BlobAt { at, len })
}

/// Decodes a blob read back from a segment.
pub(crate) fn decode_blob(blob: &[u8]) -> Result<(BTreeMap<String, String>, Vec<u8>)> {
    let bad = |why: &str| Error::Corrupted {
        what: format!("journal item data: {why}"),
    };
    if blob.len() < 8 {
        return Err(bad("too short"));
    }
    let crc = u32::from_le_bytes([blob[0], blob[1], blob[2], blob[3]]);
    if crc32fast::hash(&blob[4..]) != crc {
        return Err(bad("checksum mismatch"));
    }
    let meta_len = u32::from_le_bytes([blob[4], blob[5], blob[6], blob[7]]) as usize;
    let meta = blob
        .get(8..8 + meta_len)
        .ok_or_else(|| bad("metadata length past the end"))?;
    let metadata = if meta.is_empty() {
        BTreeMap::new()
    } else {
        bincode::serde::decode_from_slice(meta, decode_config())
            .map(|(m, _)| m)
            .map_err(|e| bad(&format!("metadata does not decode: {e}")))?
    };
    Ok((metadata, blob[8 + meta_len..].to_vec()))
}

/// Encodes a push: `[kind][queue][now][count]` then per item
/// `[has not_before: u8][not_before: u64]?[blob len: u32][blob]`. Returns the body and each
/// item's blob position.
pub(crate) fn encode_push(
    queue: &QueueId,
    items: &[hookspool::NewItem],
    now: Timestamp,
) -> Result<(Vec<u8>, Vec<PushedItem>)> {
    let size: usize = items.iter().map(|i| i.payload.len() + 32).sum();
    let mut out = Vec::with_capacity(size + 160);
    out.push(KIND_PUSH);
    put_queue(&mut out, queue);
    out.extend_from_slice(&now.as_millis().to_le_bytes());
    put_u32(&mut out, items.len(), "a push")?;
    let mut pushed = Vec::with_capacity(items.len());
    for item in items {
        match item.not_before {
            Some(t) => {
                out.push(1);
                out.extend_from_slice(&t.as_millis().to_le_bytes());
            }
            None => out.push(0),
        }
        let len_at = out.len();
        out.extend_from_slice(&[0; 4]);
        let blob = put_blob(&mut out, &item.metadata, &item.payload)?;
        out[len_at..len_at + 4].copy_from_slice(&blob.len.to_le_bytes());
        pushed.push(PushedItem {
            not_before: item.not_before,
            blob,
        });
    }
    Ok((out, pushed))
}

/// Encodes a relocation of blobs (each given with its key and old position).
pub(crate) fn encode_relocate(
    queue: &QueueId,
    blobs: &[(Key, u32, u32, &[u8])],
) -> Result<(Vec<u8>, Vec<Relocated>)> {
    let size: usize = blobs.iter().map(|b| b.3.len() + 24).sum();
    let mut out = Vec::with_capacity(size + 160);
    out.push(KIND_RELOCATE);
    put_queue(&mut out, queue);
    put_u32(&mut out, blobs.len(), "a relocation")?;
    let mut moved = Vec::with_capacity(blobs.len());
    for &(key, from_segment, from_offset, blob) in blobs {
        out.extend_from_slice(&key.to_le_bytes());
        out.extend_from_slice(&from_segment.to_le_bytes());
        out.extend_from_slice(&from_offset.to_le_bytes());
        put_u32(&mut out, blob.len(), "an item")?;
        let at = u32::try_from(out.len()).map_err(|_| too_large("a relocation"))?;
        out.extend_from_slice(blob);
        moved.push(Relocated {
            key,
            from_segment,
            from_offset,
            blob: BlobAt {
                at,
                len: u32::try_from(blob.len()).map_err(|_| too_large("an item"))?,
            },
        });
    }
    Ok((out, moved))
}

/// Encodes an `Update` or `UpdateMany` whose moves no longer carry metadata or errors, with
/// the notes `notes` (each with the position of its update): `[kind][op length: u32][op]
/// [count: u32]` then per note `[index: u32][tag: u8][blob length: u32][blob]`. Returns the
/// body and where each note's blob is.
pub(crate) fn encode_noted(op: &Op, notes: &[(u32, &Note)]) -> Result<(Vec<u8>, Vec<NoteAt>)> {
    let encoded = bincode::serde::encode_to_vec(op, config()).map_err(encode_error)?;
    let mut out = Vec::with_capacity(encoded.len() + 16 + notes.len() * 256);
    out.push(KIND_NOTED);
    put_u32(&mut out, encoded.len(), "an update")?;
    out.extend_from_slice(&encoded);
    put_u32(&mut out, notes.len(), "an update")?;
    let mut placed = Vec::with_capacity(notes.len());
    for &(index, note) in notes {
        let tag = note.tag();
        out.extend_from_slice(&index.to_le_bytes());
        out.push(tag);
        let len_at = out.len();
        out.extend_from_slice(&[0; 4]);
        let mut payload = Vec::with_capacity(1 + note.error.as_ref().map_or(0, String::len));
        payload.push(tag);
        if let Some(error) = &note.error {
            payload.extend_from_slice(error.as_bytes());
        }
        let empty = BTreeMap::new();
        let blob = put_blob(&mut out, note.metadata.as_ref().unwrap_or(&empty), &payload)?;
        out[len_at..len_at + 4].copy_from_slice(&blob.len.to_le_bytes());
        placed.push(NoteAt { index, tag, blob });
    }
    Ok((out, placed))
}

/// Reads fixed-size fields off the front of a body.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let bytes = self
            .buf
            .get(self.pos..self.pos + n)
            .ok_or_else(|| Error::Corrupted {
                what: "a journal record ends early".to_owned(),
            })?;
        self.pos += n;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn queue(&mut self) -> Result<QueueId> {
        let len = self.u16()? as usize;
        let name = std::str::from_utf8(self.take(len)?).map_err(|e| Error::Corrupted {
            what: format!("a journal record names a queue that is not UTF-8: {e}"),
        })?;
        QueueId::new(name)
    }

    /// An item's blob: at least [`MIN_BLOB`] bytes long.
    fn item_blob(&mut self) -> Result<BlobAt> {
        let blob = self.blob()?;
        if blob.len < MIN_BLOB {
            return Err(Error::Corrupted {
                what: format!(
                    "a journal record holds an item's data of {} bytes, shorter than any item's",
                    blob.len
                ),
            });
        }
        Ok(blob)
    }

    fn blob(&mut self) -> Result<BlobAt> {
        let len = self.u32()?;
        let at = u32::try_from(self.pos).map_err(|_| too_large("a record"))?;
        self.take(len as usize)?;
        Ok(BlobAt { at, len })
    }
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

/// Decodes a record body whose checksum held. Blobs are not copied: their positions in the
/// body are returned.
pub(crate) fn decode(body: &[u8]) -> Result<Body> {
    let mut c = Cursor { buf: body, pos: 1 };
    match body.first() {
        Some(&KIND_OP) => bincode::serde::decode_from_slice(&body[1..], decode_config())
            .map(|(op, _)| Body::Op(op))
            .map_err(|e| Error::Corrupted {
                what: format!("a journal record passed its checksum but does not decode: {e}"),
            }),
        Some(&KIND_PUSH) => {
            let queue = c.queue()?;
            let now = Timestamp(c.u64()?);
            let n = c.u32()? as usize;
            let mut items = Vec::with_capacity(n.min(body.len() / 9));
            for _ in 0..n {
                let not_before = match c.u8()? {
                    0 => None,
                    _ => Some(Timestamp(c.u64()?)),
                };
                items.push(PushedItem {
                    not_before,
                    blob: c.item_blob()?,
                });
            }
            Ok(Body::Push { queue, now, items })
        }
        Some(&KIND_RELOCATE) => {
            let queue = c.queue()?;
            let n = c.u32()? as usize;
            let mut items = Vec::with_capacity(n.min(body.len() / 20));
            for _ in 0..n {
                let key = c.u64()?;
                let from_segment = c.u32()?;
                let from_offset = c.u32()?;
                items.push(Relocated {
                    key,
                    from_segment,
                    from_offset,
                    blob: c.item_blob()?,
                });
            }
            Ok(Body::Relocate { queue, items })
        }
        Some(&KIND_NOTED) => {
            let bad = |why: &str| Error::Corrupted {
                what: format!("a journal record of notes {why}"),
            };
            let len = c.u32()? as usize;
            let (op, _): (Op, usize) =
                bincode::serde::decode_from_slice(c.take(len)?, decode_config())
                    .map_err(|e| bad(&format!("does not decode: {e}")))?;
            let updates = match &op {
                Op::Update { .. } => 1,
                Op::UpdateMany { updates, .. } => updates.len(),
                _ => return Err(bad("holds an operation that takes no notes")),
            };
            let n = c.u32()? as usize;
            let mut notes: Vec<NoteAt> = Vec::with_capacity(n.min(body.len() / 9));
            for _ in 0..n {
                let index = c.u32()?;
                let tag = c.u8()?;
                if index as usize >= updates || notes.last().is_some_and(|l| l.index >= index) {
                    return Err(bad("names its updates out of order or out of range"));
                }
                if tag == 0 || tag & !(NOTE_META | NOTE_ERROR) != 0 {
                    return Err(bad(&format!("has a note with the unknown tag {tag}")));
                }
                notes.push(NoteAt {
                    index,
                    tag,
                    blob: c.blob()?,
                });
            }
            Ok(Body::Noted { op, notes })
        }
        other => Err(Error::Corrupted {
            what: format!("a journal record of unknown kind {other:?}"),
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on failure
mod tests {
    use super::*;
    use hookspool::NewItem;

    fn op() -> Vec<u8> {
        let items = vec![
            NewItem::new(b"hello".to_vec()).with_metadata("a", "b"),
            NewItem::new(b"world".to_vec()).not_before(Timestamp(9)),
        ];
        encode_push(&QueueId::new("q").unwrap(), &items, Timestamp(7))
            .unwrap()
            .0
    }

    #[test]
    fn a_record_round_trips_and_every_cut_or_flip_is_caught() {
        let buf = frame(5, &op()).unwrap();
        assert!(
            matches!(read(6, &buf), Read::Bad { .. }),
            "a record of another segment does not pass"
        );
        let Read::Record { body, size } = read(5, &buf) else {
            panic!("a whole record reads")
        };
        assert_eq!(size, buf.len());
        let Body::Push { queue, now, items } = decode(body).unwrap() else {
            panic!("a push decodes as a push")
        };
        assert_eq!((queue.as_str(), now), ("q", Timestamp(7)));
        assert_eq!(items[1].not_before, Some(Timestamp(9)));
        let blob = |i: usize| {
            let b = items[i].blob;
            decode_blob(&body[b.at as usize..(b.at + b.len) as usize]).unwrap()
        };
        assert_eq!(blob(0).1, b"hello");
        assert_eq!(blob(0).0.get("a").map(String::as_str), Some("b"));
        assert_eq!(blob(1), (BTreeMap::new(), b"world".to_vec()));
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
    fn a_damaged_blob_is_caught_on_its_own() {
        let mut out = Vec::new();
        let b = put_blob(&mut out, &BTreeMap::new(), b"payload").unwrap();
        assert_eq!(decode_blob(&out).unwrap().1, b"payload");
        for bit in 0..(b.len as usize) * 8 {
            let mut flipped = out.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_blob(&flipped).is_err(),
                "flip of bit {bit} is caught"
            );
        }
    }

    /// A length that claims more than any record holds is an error, not an allocation
    /// (before the cap, this body made bincode ask for 7 EB and abort the process). Found
    /// by the `journal_record` fuzz target.
    #[test]
    fn a_huge_length_in_an_operation_is_an_error_not_an_allocation() {
        let mut body = vec![KIND_OP, 2]; // DeleteQueue(QueueId)
        body.push(253); // a u64 string length follows (bincode varint)
        body.extend_from_slice(&0x6473_7265_6472_6f06_u64.to_le_bytes());
        body.extend_from_slice(b"orders");
        assert!(matches!(decode(&body), Err(Error::Corrupted { .. })));

        let mut blob = vec![0; 4];
        blob.extend_from_slice(&11_u32.to_le_bytes()); // metadata: 11 bytes
        blob.extend_from_slice(&[1, 253]); // one entry, its key's length a u64
        blob.extend_from_slice(&(u64::MAX / 2).to_le_bytes());
        let crc = crc32fast::hash(&blob[4..]);
        blob[..4].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(decode_blob(&blob), Err(Error::Corrupted { .. })));
    }

    #[test]
    fn a_noted_update_round_trips_with_its_notes() {
        let queue = QueueId::new("q").unwrap();
        let op = Op::UpdateMany {
            queue: queue.clone(),
            updates: vec![
                (3, Transition::remove_from(hookspool::Phase::DONE)),
                (4, Transition::remove_from(hookspool::Phase::DONE)),
            ],
            now: Timestamp(5),
        };
        let meta: BTreeMap<String, String> = [("k".to_owned(), "v".to_owned())].into();
        let both = Note {
            metadata: Some(meta.clone()),
            error: Some("boom".to_owned()),
        };
        let error_only = Note {
            metadata: None,
            error: Some(String::new()),
        };
        let (body, placed) = encode_noted(&op, &[(0, &both), (1, &error_only)]).unwrap();
        let Body::Noted { op: back, notes } = decode(&body).unwrap() else {
            panic!("a noted record decodes as one")
        };
        assert!(matches!(back, Op::UpdateMany { updates, .. } if updates.len() == 2));
        assert_eq!(notes, placed);
        let note = |i: usize| {
            let b = notes[i].blob;
            Note::from_blob(decode_blob(&body[b.at as usize..(b.at + b.len) as usize]).unwrap())
        };
        assert_eq!(note(0), both);
        assert_eq!(note(1), error_only);
        assert_eq!(notes[0].tag, NOTE_META | NOTE_ERROR);

        // A note for an update the operation does not have is damage.
        let (body, _) = encode_noted(&op, &[(2, &both)]).unwrap();
        assert!(matches!(decode(&body), Err(Error::Corrupted { .. })));
        let pop = Op::Reset(queue);
        let (body, _) = encode_noted(&pop, &[]).unwrap();
        assert!(matches!(decode(&body), Err(Error::Corrupted { .. })));
    }

    #[test]
    fn a_relocation_round_trips() {
        let mut blob = Vec::new();
        put_blob(&mut blob, &BTreeMap::new(), b"x").unwrap();
        let (body, moved) =
            encode_relocate(&QueueId::new("q").unwrap(), &[(3, 1, 40, &blob[..])]).unwrap();
        let Body::Relocate { items, .. } = decode(&body).unwrap() else {
            panic!("a relocation decodes as one")
        };
        assert_eq!(items, moved);
        assert_eq!(items[0].key, 3);
    }
}
