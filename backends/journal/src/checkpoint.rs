//! The checkpoint file: the whole state (every queue's settings, side strings and slots,
//! not the payloads) as of one log position, so that open replays only the records after
//! it; how it is encoded, read back, and put in place.
//!
//! Layout: `[magic][segment: u64][offset: u64][queues: u32]`, then per queue its settings,
//! next key, in-order tail and phase table, its side strings (bincode), its item count, and
//! its slots in blocks of [`BLOCK`] delta-encoded varints (three more for an item with a
//! note: where it is); last the crc32 of everything
//! after the magic. A checkpoint is written to [`CHECKPOINT_TMP`], synced, then renamed to
//! [`CHECKPOINT_FILE`] and the directory synced: a crash leaves the old one or the new one,
//! never a mix.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::Arc;

use hookspool::{Error, Key, Lease, Result};

use crate::Faults;
use crate::IoOp;
use crate::log::{io_error, sync_dir};
use crate::record::{ConfigRecord, MIN_BLOB, decode_config};
use crate::slots::{HAS_ERROR, HAS_LEASE, HAS_META, HAS_NOTE, Slot};
use crate::state::{Extras, IN_FLIGHT, Queue, QueueHead, Side, State};

pub(crate) const CHECKPOINT_FILE: &str = "checkpoint";
pub(crate) const CHECKPOINT_TMP: &str = "checkpoint.tmp";

/// First bytes of the checkpoint file.
const CHECKPOINT_MAGIC: &[u8; 8] = b"HSPJCKP3";
/// First bytes of a checkpoint written before items had notes: the same layout, in which
/// no slot has [`HAS_NOTE`]. Read, never written. (The bump keeps an older version from
/// misreading a newer checkpoint: it refuses it as not a checkpoint.)
const CHECKPOINT_MAGIC_V2: &[u8; 8] = b"HSPJCKP2";
/// Slots per block of the checkpoint.
const BLOCK: usize = 4096;

/// A checkpoint loaded at open.
pub(crate) struct Loaded {
    /// The log position replay starts at: `(segment, offset)`.
    pub at: (u64, u64),
    pub state: State,
    /// The file's size.
    pub bytes: u64,
}

/// Loads the checkpoint of `dir`, if there is one. A temporary checkpoint left by a crash
/// never counted and is removed.
pub(crate) fn load(dir: &Path) -> Result<Option<Loaded>> {
    let _ = std::fs::remove_file(dir.join(CHECKPOINT_TMP));
    match File::open(dir.join(CHECKPOINT_FILE)) {
        Ok(file) => {
            let bytes = file.metadata().map_err(io_error)?.len();
            let (at, state) = decode(BufReader::with_capacity(1 << 20, file))?;
            Ok(Some(Loaded { at, state, bytes }))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(e)),
    }
}

/// Writes a checkpoint to its temporary name and syncs it; `write` encodes into it (with
/// [`encode`]) and returns what the caller wants back. Returns that and the file's size.
pub(crate) fn write_tmp<T>(
    dir: &Path,
    faults: Option<&Arc<dyn Faults>>,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<T>,
) -> Result<(T, u64)> {
    if let Some(f) = faults {
        f.check(IoOp::Write { len: 0, segment: 0 })
            .map_err(io_error)?;
    }
    let tmp = dir.join(CHECKPOINT_TMP);
    let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp).map_err(io_error)?);
    let value = write(&mut out)?;
    let file = out.into_inner().map_err(|e| io_error(e.into_error()))?;
    if let Some(f) = faults {
        f.check(IoOp::Sync).map_err(io_error)?;
    }
    file.sync_all().map_err(io_error)?;
    let bytes = file.metadata().map_err(io_error)?.len();
    Ok((value, bytes))
}

/// Puts a synced temporary checkpoint in force: rename, then directory sync (until that
/// sync, a crash may bring the old one back, which the log still completes).
pub(crate) fn install(dir: &Path, faults: Option<&Arc<dyn Faults>>) -> Result<()> {
    std::fs::rename(dir.join(CHECKPOINT_TMP), dir.join(CHECKPOINT_FILE)).map_err(io_error)?;
    sync_dir(dir, faults).map_err(io_error)
}

/// A writer that checksums what goes through it.
struct CrcWrite<W> {
    inner: W,
    hasher: crc32fast::Hasher,
}

impl<W: Write> Write for CrcWrite<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that checksums what comes through it.
struct CrcRead<R> {
    inner: R,
    hasher: crc32fast::Hasher,
}

impl<R: Read> Read for CrcRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn put_var(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        #[allow(clippy::cast_possible_truncation)] // the low 7 bits
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    #[allow(clippy::cast_possible_truncation)]
    out.push(n as u8);
}

fn zigzag(from: u64, to: u64) -> u64 {
    #[allow(clippy::cast_possible_wrap)] // wrapping difference, undone by `unzigzag`
    let d = to.wrapping_sub(from) as i64;
    #[allow(clippy::cast_sign_loss)]
    let z = ((d << 1) ^ (d >> 63)) as u64;
    z
}

fn unzigzag(from: u64, z: u64) -> u64 {
    #[allow(clippy::cast_possible_wrap, clippy::cast_sign_loss)]
    let d = ((z >> 1) as i64 ^ -((z & 1) as i64)) as u64;
    from.wrapping_add(d)
}

fn corrupt(why: impl std::fmt::Display) -> Error {
    Error::Corrupted {
        what: format!("journal checkpoint: {why}"),
    }
}

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

fn put_bytes(w: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(std::io::Error::other)?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(bytes)
}

/// Writes `state` as of log position `(segment, offset)`. Returns the items written.
pub(crate) fn encode(
    state: &State,
    segment: u64,
    offset: u64,
    out: impl Write,
) -> std::io::Result<u64> {
    let mut w = CrcWrite {
        inner: out,
        hasher: crc32fast::Hasher::new(),
    };
    w.inner.write_all(CHECKPOINT_MAGIC)?;
    w.write_all(&segment.to_le_bytes())?;
    w.write_all(&offset.to_le_bytes())?;
    let queues = state.queues_by_id();
    w.write_all(
        &u32::try_from(queues.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    )?;
    let mut items = 0;
    for q in queues {
        let head = q.head();
        put_bytes(&mut w, &to_bytes(&ConfigRecord(head.config))?)?;
        w.write_all(&head.next_key.to_le_bytes())?;
        w.write_all(&head.tail_created.to_le_bytes())?;
        put_bytes(&mut w, &to_bytes(&head.phases)?)?;
        put_bytes(&mut w, &to_bytes(&q.side())?)?;
        w.write_all(&(q.len() as u64).to_le_bytes())?;
        let mut block = Vec::with_capacity(BLOCK * 16);
        let mut in_block = 0;
        let mut prev = (0u64, Slot::new(0));
        for (key, s) in q.items() {
            put_var(&mut block, key - prev.0);
            put_var(
                &mut block,
                zigzag(u64::from(prev.1.segment), u64::from(s.segment)),
            );
            put_var(
                &mut block,
                zigzag(u64::from(prev.1.offset), u64::from(s.offset)),
            );
            put_var(&mut block, u64::from(s.len));
            put_var(&mut block, u64::from(s.phase));
            put_var(&mut block, u64::from(s.flags));
            put_var(&mut block, u64::from(s.attempts));
            put_var(&mut block, zigzag(prev.1.created_at, s.created_at));
            put_var(&mut block, zigzag(s.created_at, s.updated_at));
            put_var(&mut block, zigzag(s.created_at, s.not_before));
            if let Some(note) = s.note() {
                put_var(
                    &mut block,
                    zigzag(u64::from(s.segment), u64::from(note.segment)),
                );
                put_var(
                    &mut block,
                    zigzag(u64::from(s.offset), u64::from(note.offset)),
                );
                put_var(&mut block, u64::from(note.len));
            }
            prev = (key, *s);
            in_block += 1;
            items += 1;
            if in_block == BLOCK {
                put_bytes(&mut w, &block)?;
                block.clear();
                in_block = 0;
                prev = (0, Slot::new(0));
            }
        }
        if in_block > 0 {
            put_bytes(&mut w, &block)?;
        }
    }
    let crc = w.hasher.clone().finalize();
    w.inner.write_all(&crc.to_le_bytes())?;
    w.inner.flush()?;
    Ok(items)
}

/// Reads a checkpoint written by [`encode`]: the log position replay starts at, and the
/// state.
pub(crate) fn decode(input: impl Read) -> Result<((u64, u64), State)> {
    let mut r = CrcRead {
        inner: input,
        hasher: crc32fast::Hasher::new(),
    };
    let mut magic = [0; 8];
    r.inner
        .read_exact(&mut magic)
        .map_err(|e| corrupt(format!("too short: {e}")))?;
    if &magic != CHECKPOINT_MAGIC && &magic != CHECKPOINT_MAGIC_V2 {
        return Err(corrupt("not a checkpoint file (bad magic)"));
    }
    let segment = read_u64(&mut r)?;
    let offset = read_u64(&mut r)?;
    let queues = read_u32(&mut r)?;
    let mut state = State::default();
    let mut buf = Vec::new();
    for _ in 0..queues {
        let q = read_queue(&mut state, &mut r, &mut buf)?;
        let id = q.id().clone();
        if !state.restore_queue(q) {
            return Err(corrupt(format!("queue `{id}` appears twice")));
        }
    }
    let want = r.hasher.clone().finalize();
    let mut crc = [0; 4];
    r.inner
        .read_exact(&mut crc)
        .map_err(|e| corrupt(format!("ends early: {e}")))?;
    if u32::from_le_bytes(crc) != want {
        return Err(corrupt("checksum mismatch"));
    }
    Ok(((segment, offset), state))
}

/// Reads one queue of a checkpoint (its live bytes are added to `state`'s).
fn read_queue(state: &mut State, r: &mut impl Read, buf: &mut Vec<u8>) -> Result<Queue> {
    let ConfigRecord(config) = decode_bytes(r, buf)?;
    let next_key = read_u64(r)?;
    if next_key == 0 {
        // Keys start at 1 (found by `journal_open`: a queue restored with 0 handed out key 0,
        // which the next checkpoint, rightly, could not read back).
        return Err(corrupt(format!(
            "queue `{}`: its next key is 0 (keys start at 1)",
            config.id
        )));
    }
    let tail_created = read_u64(r)?;
    let phases = decode_bytes(r, buf)?;
    let mut q = Queue::restore(QueueHead {
        config,
        next_key,
        tail_created,
        phases,
    })
    .ok_or_else(|| corrupt("a queue's phase table is damaged"))?;
    let (leases, errors, metadata): Side = decode_bytes(r, buf)?;
    let mut leases: HashMap<Key, Lease> = leases.into_iter().collect();
    let mut errors: HashMap<Key, String> = errors.into_iter().collect();
    let mut metadata: HashMap<Key, BTreeMap<String, String>> = metadata.into_iter().collect();
    let count = read_u64(r)?;
    let mut read = 0;
    let mut last_key = 0;
    let mut run = (0u32, 0u64);
    while read < count {
        read_block(r, buf)?;
        let mut c = VarCursor { buf, pos: 0 };
        let mut prev = (0u64, Slot::new(0));
        while c.pos < buf.len() {
            let (key, s) = decode_slot(&mut c, prev)?;
            if key <= last_key || key >= q.next_key() || s.phase as usize >= q.phase_count() {
                return Err(corrupt(format!(
                    "queue `{}`: item {key} is out of order, out of range or in no phase",
                    q.id()
                )));
            }
            last_key = key;
            let mut extras = Extras::default();
            if s.has(HAS_LEASE) {
                extras.lease = leases.remove(&key);
            }
            // An item with a note has its error and replaced metadata there.
            if s.has(HAS_ERROR) && !s.has(HAS_NOTE) {
                extras.error = errors.remove(&key);
            }
            if s.has(HAS_META) && !s.has(HAS_NOTE) {
                extras.metadata = metadata.remove(&key);
            }
            if (s.phase == IN_FLIGHT) != extras.lease.is_some() {
                return Err(corrupt(format!(
                    "queue `{}`: item {key} is in flight without a lease or leased outside \
                     in_flight",
                    q.id()
                )));
            }
            // Live bytes are counted per run of one segment, not per item.
            if run.0 != s.segment {
                if run.1 > 0 {
                    state.restore_live(run.0, run.1);
                }
                run = (s.segment, 0);
            }
            run.1 += u64::from(s.len);
            if let Some(note) = s.note() {
                state.restore_live(note.segment, u64::from(note.len));
            }
            q.restore_item(key, s, extras);
            prev = (key, s);
            read += 1;
        }
    }
    if run.1 > 0 {
        state.restore_live(run.0, run.1);
    }
    if read != count || !leases.is_empty() || !errors.is_empty() || !metadata.is_empty() {
        return Err(corrupt(format!(
            "queue `{}`: item count or side tables do not match",
            q.id()
        )));
    }
    q.finish_restore();
    Ok(q)
}

/// Decodes one slot, delta-encoded against the one before it in its block.
fn decode_slot(c: &mut VarCursor<'_>, prev: (Key, Slot)) -> Result<(Key, Slot)> {
    let key = prev
        .0
        .checked_add(c.next()?)
        .ok_or_else(|| corrupt("an item's key is past the largest key"))?;
    let mut s = Slot::new(key);
    s.segment = narrow(unzigzag(u64::from(prev.1.segment), c.next()?))?;
    s.offset = narrow(unzigzag(u64::from(prev.1.offset), c.next()?))?;
    s.len = narrow(c.next()?)?;
    // Every blob starts with its checksum and its metadata's length (`record::put_blob`).
    // A shorter one is damage, and must not count as an item in a segment that holds no
    // bytes of it (found by `journal_open`: such a slot, pointing at a segment that was not
    // there, opened once and then not again).
    if s.len < MIN_BLOB {
        return Err(corrupt(format!(
            "item {key}'s data is {} bytes, shorter than any item's",
            s.len
        )));
    }
    s.phase = u16::try_from(c.next()?).map_err(corrupt)?;
    s.flags = u8::try_from(c.next()?).map_err(corrupt)?;
    s.attempts = narrow(c.next()?)?;
    s.created_at = unzigzag(prev.1.created_at, c.next()?);
    s.updated_at = unzigzag(s.created_at, c.next()?);
    s.not_before = unzigzag(s.created_at, c.next()?);
    if s.has(HAS_NOTE) {
        s.note_segment = narrow(unzigzag(u64::from(s.segment), c.next()?))?;
        s.note_offset = narrow(unzigzag(u64::from(s.offset), c.next()?))?;
        s.note_len = narrow(c.next()?)?;
        if s.note_len == 0 {
            return Err(corrupt(format!("item {key} has an empty note")));
        }
    }
    Ok((key, s))
}

fn narrow(n: u64) -> Result<u32> {
    u32::try_from(n).map_err(corrupt)
}

fn read_u64(r: &mut impl Read) -> Result<u64> {
    let mut b = [0; 8];
    r.read_exact(&mut b)
        .map_err(|e| corrupt(format!("ends early: {e}")))?;
    Ok(u64::from_le_bytes(b))
}

fn read_u32(r: &mut impl Read) -> Result<u32> {
    let mut b = [0; 4];
    r.read_exact(&mut b)
        .map_err(|e| corrupt(format!("ends early: {e}")))?;
    Ok(u32::from_le_bytes(b))
}

/// Reads a length-prefixed block into `buf`. The buffer grows as the bytes arrive, so a
/// damaged length in a short file costs no more memory than the file.
fn read_block(r: &mut impl Read, buf: &mut Vec<u8>) -> Result<()> {
    let len = read_u32(r)? as usize;
    if len > 1 << 30 {
        return Err(corrupt(format!("implausible block length {len}")));
    }
    buf.clear();
    r.take(len as u64)
        .read_to_end(buf)
        .map_err(|e| corrupt(format!("cannot be read: {e}")))?;
    if buf.len() < len {
        return Err(corrupt(format!(
            "ends early: a block of {len} bytes has {}",
            buf.len()
        )));
    }
    Ok(())
}

fn decode_bytes<T: serde::de::DeserializeOwned>(r: &mut impl Read, buf: &mut Vec<u8>) -> Result<T> {
    read_block(r, buf)?;
    bincode::serde::decode_from_slice(buf, decode_config())
        .map(|(v, _)| v)
        .map_err(|e| corrupt(format!("does not decode: {e}")))
}

struct VarCursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl VarCursor<'_> {
    fn next(&mut self) -> Result<u64> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| corrupt("a block ends inside a number"))?;
            self.pos += 1;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(corrupt("a number is too long"))
    }
}

fn to_bytes<T: serde::Serialize>(value: &T) -> std::io::Result<Vec<u8>> {
    bincode::serde::encode_to_vec(value, bincode_config()).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A queue whose next key is 0 is damage (found by `journal_open`: restored, it handed
    /// out key 0, and the checkpoint written next could not be read back).
    #[test]
    fn a_queue_whose_next_key_is_zero_is_corrupted() {
        let mut state = State::default();
        state
            .create_queue(hookspool::QueueConfig::new(
                hookspool::QueueId::new("events").unwrap(),
            ))
            .unwrap();
        let mut bytes = Vec::new();
        encode(&state, 1, 16, &mut bytes).unwrap();
        assert!(decode(&bytes[..]).is_ok(), "as written, it reads back");
        // magic, segment, offset, queue count; then the settings block; then the next key.
        let at = 28;
        let settings = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let next_key = at + 4 + settings;
        assert_eq!(bytes[next_key..next_key + 8], 1u64.to_le_bytes());
        bytes[next_key..next_key + 8].copy_from_slice(&0u64.to_le_bytes());
        let end = bytes.len() - 4;
        let crc = crc32fast::hash(&bytes[CHECKPOINT_MAGIC.len()..end]);
        bytes[end..].copy_from_slice(&crc.to_le_bytes());
        match decode(&bytes[..]) {
            Err(Error::Corrupted { what }) => assert!(what.contains("next key is 0"), "{what}"),
            other => panic!("expected Corrupted, got {:?}", other.map(|(at, _)| at)),
        }
    }

    /// A slot whose data is shorter than a blob's header is damage (found by `journal_open`).
    #[test]
    fn a_slot_shorter_than_a_blob_is_corrupted() {
        for (len, ok) in [(0, false), (7, false), (8, true)] {
            let mut block = Vec::new();
            for n in [1, 0, 0, len, 0, 0, 0, 0, 0, 0] {
                put_var(&mut block, n);
            }
            let mut c = VarCursor {
                buf: &block,
                pos: 0,
            };
            let decoded = decode_slot(&mut c, (0, Slot::new(0)));
            assert_eq!(decoded.is_ok(), ok, "a slot of {len} bytes");
        }
    }

    /// A key delta that overflows the key is damage, not a panic (found by the
    /// `journal_checkpoint` fuzz target: overflow checks are on in its builds).
    #[test]
    fn a_key_past_the_largest_key_is_corrupted() {
        let mut block = Vec::new();
        put_var(&mut block, u64::MAX);
        let mut c = VarCursor {
            buf: &block,
            pos: 0,
        };
        let prev = (5, Slot::new(5));
        assert!(matches!(
            decode_slot(&mut c, prev),
            Err(Error::Corrupted { .. })
        ));
    }
}
