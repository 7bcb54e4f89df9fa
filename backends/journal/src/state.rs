//! The journal's working state: every queue's settings, counters and indexes, and one
//! 48-byte [`Slot`] per item. Payloads and their metadata stay in the segment files (the
//! slot says where); strings that change after a push (lease owners, errors, replaced
//! metadata) are in small side maps, held only for the items that have them.
//!
//! The state applies operations; it never does I/O. The backend reads blobs before it
//! applies an operation that returns items, and replay applies the same operations without
//! reading anything, so a state rebuilt from the log is the state that was live.
//!
//! # Claim order without a per-item index
//!
//! The contract's claim order is `(not_before, key)` over pending items. Most pending items
//! are pushed with `not_before = created_at = now`, by a clock that does not go backwards:
//! in key order they are already in claim order (and in TTL order). Such items form the
//! queue's *in-order run* (flag [`IN_ORDER`]), found by walking the slots from a cursor that
//! only moves forward. Every other pending item (pushed with a delay, or back to pending
//! after a claim or a move) is in the `due` and `ages` sets. Claim merges the two.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};

use hookspool::{
    Action, Error, Item, Key, Lease, Phase, PhaseCounts, QueueConfig, QueueId, Result, Selector,
    SweepReport, Timestamp, Transition, apply_move, check_expect,
};

use crate::record::{ConfigRecord, PushedItem};
use crate::slots::{HAS_ERROR, HAS_LEASE, HAS_META, IN_ORDER, Slot, Slots};

/// Where an item's blob is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Loc {
    pub segment: u32,
    pub offset: u32,
    pub len: u32,
}

/// An item without what is in its blob: the payload, and the metadata unless it was
/// replaced after the push (`metadata` then holds it).
#[derive(Debug)]
pub(crate) struct Header {
    pub item: Item,
    pub loc: Loc,
    pub replaced_metadata: bool,
}

/// Every queue, and the live blob bytes in each segment.
#[derive(Debug, Default)]
pub(crate) struct State {
    queues: HashMap<QueueId, Queue>,
    live: HashMap<u32, u64>,
}

#[derive(Debug)]
struct Queue {
    config: QueueConfig,
    next_key: Key,
    phases: Vec<Phase>,
    phase_ids: HashMap<Phase, u16>,
    counts: Vec<u64>,
    slots: Slots,
    /// The lowest key that may be in the in-order run.
    cursor: Key,
    /// `created_at` of the last item that joined the in-order run.
    tail_created: u64,
    /// Pending items outside the in-order run, by `(not_before, key)` and `(created_at, key)`.
    due: BTreeSet<(u64, Key)>,
    ages: BTreeSet<(u64, Key)>,
    /// In-flight items by `(lease.until, key)`, and their leases.
    leases: BTreeSet<(u64, Key)>,
    lease_of: HashMap<Key, Lease>,
    errors: HashMap<Key, String>,
    metadata: HashMap<Key, BTreeMap<String, String>>,
}

/// What an item carries beside its slot.
#[derive(Debug, Default)]
struct Extras {
    lease: Option<Lease>,
    error: Option<String>,
    metadata: Option<BTreeMap<String, String>>,
}

const PENDING: u16 = 0;
const IN_FLIGHT: u16 = 1;
const EXPIRED: u16 = 4;

fn not_found(queue: &QueueId) -> Error {
    Error::QueueNotFound(queue.clone())
}

impl Queue {
    fn new(config: QueueConfig) -> Self {
        // The contract's phases have fixed ids; user-defined ones are added when first used.
        let phases = vec![
            Phase::PENDING,
            Phase::IN_FLIGHT,
            Phase::DONE,
            Phase::DEAD,
            Phase::EXPIRED,
        ];
        Queue {
            config,
            next_key: 1,
            phase_ids: phases.iter().cloned().zip(0..).collect(),
            counts: vec![0; phases.len()],
            phases,
            slots: Slots::default(),
            cursor: 1,
            tail_created: 0,
            due: BTreeSet::new(),
            ages: BTreeSet::new(),
            leases: BTreeSet::new(),
            lease_of: HashMap::new(),
            errors: HashMap::new(),
            metadata: HashMap::new(),
        }
    }

    /// The id of a phase, added to the table if new.
    fn phase_id(&mut self, phase: &Phase) -> Result<u16> {
        if let Some(id) = self.phase_ids.get(phase) {
            return Ok(*id);
        }
        let id = u16::try_from(self.phases.len())
            .ok()
            .filter(|id| *id < crate::slots::REMOVED)
            .ok_or_else(|| Error::invalid("a queue of the journal holds at most 65,534 phases"))?;
        self.phases.push(phase.clone());
        self.phase_ids.insert(phase.clone(), id);
        self.counts.push(0);
        Ok(id)
    }

    fn add(&mut self, key: Key, slot: Slot, extras: Extras, live: &mut HashMap<u32, u64>) {
        *live.entry(slot.segment).or_default() += u64::from(slot.len);
        self.add_indexed(key, slot, extras);
    }

    /// [`Queue::add`] without the live-bytes count (the caller keeps it).
    fn add_indexed(&mut self, key: Key, slot: Slot, extras: Extras) {
        if slot.phase == PENDING && !slot.has(IN_ORDER) {
            self.due.insert((slot.not_before, key));
            self.ages.insert((slot.created_at, key));
        }
        if slot.has(IN_ORDER) && key < self.cursor {
            self.cursor = key;
        }
        if let Some(lease) = extras.lease {
            self.leases.insert((lease.until.as_millis(), key));
            self.lease_of.insert(key, lease);
        }
        if let Some(error) = extras.error {
            self.errors.insert(key, error);
        }
        if let Some(metadata) = extras.metadata {
            self.metadata.insert(key, metadata);
        }
        self.counts[slot.phase as usize] += 1;
        self.slots.insert(key, slot);
    }

    fn take(&mut self, key: Key, live: &mut HashMap<u32, u64>) -> Option<(Slot, Extras)> {
        let slot = self.slots.remove(key)?;
        if slot.phase == PENDING && !slot.has(IN_ORDER) {
            self.due.remove(&(slot.not_before, key));
            self.ages.remove(&(slot.created_at, key));
        }
        // The flags say which side maps hold the item: most items are in none.
        let lease = if slot.has(HAS_LEASE) {
            self.lease_of.remove(&key)
        } else {
            None
        };
        if let Some(l) = &lease {
            self.leases.remove(&(l.until.as_millis(), key));
        }
        self.counts[slot.phase as usize] -= 1;
        subtract_live(live, slot.segment, slot.len);
        let error = if slot.has(HAS_ERROR) {
            self.errors.remove(&key)
        } else {
            None
        };
        let metadata = if slot.has(HAS_META) {
            self.metadata.remove(&key)
        } else {
            None
        };
        Some((
            slot,
            Extras {
                lease,
                error,
                metadata,
            },
        ))
    }

    /// Moves the cursor to the first member of the in-order run (or past the last key).
    fn fix_cursor(&mut self) {
        self.cursor = self
            .slots
            .after(Some(self.cursor.saturating_sub(1)))
            .find(|(_, s)| s.has(IN_ORDER))
            .map_or(self.next_key, |(k, _)| k);
    }

    /// The in-order run, in claim order: `(not_before, key)`, with `created_at`.
    fn in_order(&self) -> impl Iterator<Item = (u64, Key, u64)> + '_ {
        self.slots
            .after(Some(self.cursor.saturating_sub(1)))
            .filter(|(_, s)| s.has(IN_ORDER))
            .map(|(k, s)| (s.not_before, k, s.created_at))
    }

    fn header(&self, key: Key, slot: &Slot) -> Header {
        let replaced = slot.has(HAS_META);
        Header {
            item: Item {
                key,
                payload: Vec::new(),
                phase: self.phases[slot.phase as usize].clone(),
                attempts: slot.attempts,
                created_at: Timestamp(slot.created_at),
                updated_at: Timestamp(slot.updated_at),
                not_before: Timestamp(slot.not_before),
                lease: if slot.has(HAS_LEASE) {
                    self.lease_of.get(&key).cloned()
                } else {
                    None
                },
                last_error: if slot.has(HAS_ERROR) {
                    self.errors.get(&key).cloned()
                } else {
                    None
                },
                metadata: if replaced {
                    self.metadata.get(&key).cloned().unwrap_or_default()
                } else {
                    BTreeMap::new()
                },
            },
            loc: Loc {
                segment: slot.segment,
                offset: slot.offset,
                len: slot.len,
            },
            replaced_metadata: replaced,
        }
    }

    fn select(&self, selector: &Selector) -> Vec<Key> {
        let page = match selector {
            Selector::Key(k) => return self.slots.get(*k).map(|_| *k).into_iter().collect(),
            Selector::Page(page) => page,
        };
        let phase = match &page.phase {
            None => None,
            Some(p) => match self.phase_ids.get(p) {
                Some(id) => Some(*id),
                None => return Vec::new(),
            },
        };
        let keep = |s: &Slot| phase.is_none_or(|p| s.phase == p);
        if page.reverse {
            self.slots
                .before(page.after)
                .filter(|(_, s)| keep(s))
                .skip(page.offset)
                .take(page.limit)
                .map(|(k, _)| k)
                .collect()
        } else {
            self.slots
                .after(page.after)
                .filter(|(_, s)| keep(s))
                .skip(page.offset)
                .take(page.limit)
                .map(|(k, _)| k)
                .collect()
        }
    }

    /// Due pending items in claim order, at most `limit`.
    fn due_keys(&mut self, limit: usize, now: u64) -> Vec<Key> {
        self.fix_cursor();
        let mut run = self.in_order().peekable();
        let mut other = self.due.iter().peekable();
        let mut keys = Vec::new();
        while keys.len() < limit {
            let a = run.peek().map(|(nb, k, _)| (*nb, *k));
            let b = other.peek().map(|(nb, k)| (*nb, *k));
            let next = match (a, b) {
                (Some(a), Some(b)) => a.min(b),
                (Some(x), None) | (None, Some(x)) => x,
                (None, None) => break,
            };
            if next.0 > now {
                break;
            }
            if Some(next) == a {
                run.next();
            } else {
                other.next();
            }
            keys.push(next.1);
        }
        keys
    }

    fn sweep(&mut self, now: u64, live: &mut HashMap<u32, u64>) -> SweepReport {
        let mut report = SweepReport::default();
        let released: Vec<Key> = self
            .leases
            .range(..=(now, Key::MAX))
            .map(|(_, k)| *k)
            .collect();
        for key in released {
            if let Some((mut slot, mut extras)) = self.take(key, live) {
                slot.phase = PENDING;
                slot.set(HAS_LEASE, false);
                slot.set(IN_ORDER, false);
                slot.not_before = now;
                slot.updated_at = now;
                extras.lease = None;
                self.add(key, slot, extras, live);
                report.released += 1;
            }
        }
        // `created_at + ttl <= now` (saturating, as the memory backend reads it).
        let cutoff = self.config.ttl.and_then(|ttl| {
            let ttl = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
            if now == u64::MAX {
                Some(u64::MAX)
            } else {
                now.checked_sub(ttl)
            }
        });
        if let Some(cutoff) = cutoff {
            self.fix_cursor();
            let mut old: Vec<Key> = self
                .in_order()
                .take_while(|(_, _, created)| *created <= cutoff)
                .map(|(_, k, _)| k)
                .collect();
            old.extend(self.ages.range(..=(cutoff, Key::MAX)).map(|(_, k)| *k));
            for key in old {
                if let Some((mut slot, extras)) = self.take(key, live) {
                    slot.phase = EXPIRED;
                    slot.set(IN_ORDER, false);
                    slot.updated_at = now;
                    self.add(key, slot, extras, live);
                    report.expired += 1;
                }
            }
        }
        report
    }
}

fn subtract_live(live: &mut HashMap<u32, u64>, segment: u32, len: u32) {
    if let Some(n) = live.get_mut(&segment) {
        *n = n.saturating_sub(u64::from(len));
        if *n == 0 {
            live.remove(&segment);
        }
    }
}

/// A queue in the state, or `QueueNotFound`.
macro_rules! queue_mut {
    ($self:ident, $id:expr) => {
        $self.queues.get_mut($id).ok_or_else(|| not_found($id))?
    };
}

impl State {
    pub(crate) fn item_count(&self) -> usize {
        self.queues.values().map(|q| q.slots.len()).sum()
    }

    /// Live blob bytes by segment.
    pub(crate) fn live(&self) -> &HashMap<u32, u64> {
        &self.live
    }

    pub(crate) fn has_queue(&self, id: &QueueId) -> bool {
        self.queues.contains_key(id)
    }

    pub(crate) fn create_queue(&mut self, config: QueueConfig) -> Result<()> {
        if self.queues.contains_key(&config.id) {
            return Err(Error::QueueExists(config.id));
        }
        self.queues.insert(config.id.clone(), Queue::new(config));
        Ok(())
    }

    pub(crate) fn update_queue(&mut self, mut config: QueueConfig) -> Result<()> {
        let q = queue_mut!(self, &config.id);
        config.created_at = q.config.created_at;
        q.config = config;
        Ok(())
    }

    pub(crate) fn get_queue(&self, id: &QueueId) -> Option<QueueConfig> {
        self.queues.get(id).map(|q| q.config.clone())
    }

    pub(crate) fn list_queues(&self) -> Vec<QueueConfig> {
        let mut all: Vec<QueueConfig> = self.queues.values().map(|q| q.config.clone()).collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    pub(crate) fn delete_queue(&mut self, id: &QueueId) -> bool {
        let Some(q) = self.queues.remove(id) else {
            return false;
        };
        for (_, slot) in q.slots.after(None) {
            subtract_live(&mut self.live, slot.segment, slot.len);
        }
        true
    }

    /// Adds pushed items whose blobs are in segment `segment` at `base + blob.at`.
    pub(crate) fn push(
        &mut self,
        queue: &QueueId,
        items: &[PushedItem],
        now: Timestamp,
        segment: u32,
        base: u64,
    ) -> Result<Vec<Key>> {
        let q = queue_mut!(self, queue);
        let now = now.as_millis();
        let mut keys = Vec::with_capacity(items.len());
        for item in items {
            let key = q.next_key;
            q.next_key += 1;
            let mut slot = Slot::new(key);
            slot.created_at = now;
            slot.updated_at = now;
            slot.not_before = item.not_before.map_or(now, Timestamp::as_millis);
            slot.segment = segment;
            slot.offset = u32::try_from(base + u64::from(item.blob.at))
                .map_err(|_| Error::invalid("a journal segment is larger than 4 GiB"))?;
            slot.len = item.blob.len;
            slot.phase = PENDING;
            // Joins the in-order run if that keeps the run in claim and TTL order.
            let in_order = slot.not_before == now && now >= q.tail_created;
            if in_order {
                q.tail_created = now;
            }
            slot.set(IN_ORDER, in_order);
            q.add(key, slot, Extras::default(), &mut self.live);
            keys.push(key);
        }
        Ok(keys)
    }

    /// The keys a selector selects.
    pub(crate) fn select(&self, queue: &QueueId, selector: &Selector) -> Result<Vec<Key>> {
        let q = self.queues.get(queue).ok_or_else(|| not_found(queue))?;
        Ok(q.select(selector))
    }

    /// An item without its blob.
    pub(crate) fn header(&self, queue: &QueueId, key: Key) -> Result<Option<Header>> {
        let q = self.queues.get(queue).ok_or_else(|| not_found(queue))?;
        Ok(q.slots.get(key).map(|s| q.header(key, s)))
    }

    /// Removes items; returns how many were there.
    pub(crate) fn remove(&mut self, queue: &QueueId, keys: &[Key]) -> Result<usize> {
        let q = queue_mut!(self, queue);
        let mut n = 0;
        for key in keys {
            n += usize::from(q.take(*key, &mut self.live).is_some());
        }
        Ok(n)
    }

    pub(crate) fn count(&self, queue: &QueueId) -> Result<PhaseCounts> {
        let q = self.queues.get(queue).ok_or_else(|| not_found(queue))?;
        Ok(PhaseCounts(
            q.phases
                .iter()
                .zip(&q.counts)
                .filter(|(_, n)| **n > 0)
                .map(|(p, n)| (p.clone(), *n))
                .collect(),
        ))
    }

    pub(crate) fn reset(&mut self, queue: &QueueId) -> Result<u64> {
        let q = queue_mut!(self, queue);
        for (_, slot) in q.slots.after(None) {
            subtract_live(&mut self.live, slot.segment, slot.len);
        }
        let n = q.slots.len() as u64;
        q.slots.clear();
        q.counts.iter_mut().for_each(|c| *c = 0);
        q.due.clear();
        q.ages.clear();
        q.leases.clear();
        q.lease_of.clear();
        q.errors.clear();
        q.metadata.clear();
        q.cursor = q.next_key;
        Ok(n)
    }

    /// Checks and applies a transition; returns the item's header as it is now (as it was,
    /// for a removal). Nothing changes on error.
    pub(crate) fn update(
        &mut self,
        queue: &QueueId,
        key: Key,
        transition: Transition,
        now: Timestamp,
    ) -> Result<Header> {
        let q = queue_mut!(self, queue);
        let slot = *q.slots.get(key).ok_or_else(|| Error::ItemNotFound {
            queue: queue.clone(),
            key,
        })?;
        let mut header = q.header(key, &slot);
        check_expect(&header.item, &transition)?;
        let m = match transition.action {
            Action::Remove => {
                q.take(key, &mut self.live);
                return Ok(header);
            }
            Action::Move(m) => m,
        };
        let phase = q.phase_id(&m.phase)?;
        let replaces_metadata = m.metadata.is_some();
        apply_move(&mut header.item, m, now);
        let (mut slot, _) = q
            .take(key, &mut self.live)
            .ok_or_else(|| Error::ItemNotFound {
                queue: queue.clone(),
                key,
            })?;
        let item = &header.item;
        slot.phase = phase;
        slot.not_before = item.not_before.as_millis();
        slot.updated_at = item.updated_at.as_millis();
        slot.set(IN_ORDER, false);
        slot.set(HAS_LEASE, false);
        slot.set(HAS_ERROR, item.last_error.is_some());
        header.replaced_metadata |= replaces_metadata;
        slot.set(HAS_META, header.replaced_metadata);
        let extras = Extras {
            lease: None,
            error: item.last_error.clone(),
            metadata: header.replaced_metadata.then(|| item.metadata.clone()),
        };
        q.add(key, slot, extras, &mut self.live);
        Ok(header)
    }

    /// The keys `claim` would lease (after its sweep), in claim order.
    pub(crate) fn claimable(
        &mut self,
        queue: &QueueId,
        limit: usize,
        now: Timestamp,
    ) -> Result<Vec<Key>> {
        let q = queue_mut!(self, queue);
        Ok(q.due_keys(limit, now.as_millis()))
    }

    /// Leases the given (claimable) items; returns their headers as they are now.
    pub(crate) fn lease(
        &mut self,
        queue: &QueueId,
        keys: &[Key],
        owner: &str,
        until: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<Header>> {
        let q = queue_mut!(self, queue);
        let mut out = Vec::with_capacity(keys.len());
        for &key in keys {
            let Some((mut slot, mut extras)) = q.take(key, &mut self.live) else {
                continue;
            };
            slot.phase = IN_FLIGHT;
            slot.attempts = slot.attempts.saturating_add(1);
            slot.updated_at = now.as_millis();
            slot.set(IN_ORDER, false);
            slot.set(HAS_LEASE, true);
            extras.lease = Some(Lease {
                owner: owner.to_owned(),
                until,
            });
            q.add(key, slot, extras, &mut self.live);
            out.push(q.header(key, &slot));
        }
        Ok(out)
    }

    pub(crate) fn sweep(&mut self, queue: &QueueId, now: Timestamp) -> Result<SweepReport> {
        let q = queue_mut!(self, queue);
        Ok(q.sweep(now.as_millis(), &mut self.live))
    }

    /// Points items whose blob was at `(from_segment, from_offset)` at its new place.
    /// Returns how many still were there (an item removed since is skipped).
    pub(crate) fn relocate(&mut self, queue: &QueueId, moves: &[(Key, u32, u32, Loc)]) -> usize {
        let Some(q) = self.queues.get_mut(queue) else {
            return 0;
        };
        let mut n = 0;
        for &(key, from_segment, from_offset, to) in moves {
            if let Some(slot) = q.slots.get_mut(key)
                && (slot.segment, slot.offset) == (from_segment, from_offset)
            {
                subtract_live(&mut self.live, slot.segment, slot.len);
                slot.segment = to.segment;
                slot.offset = to.offset;
                slot.len = to.len;
                *self.live.entry(to.segment).or_default() += u64::from(to.len);
                n += 1;
            }
        }
        n
    }

    /// Blob bytes of a queue's items in segments before `first`.
    pub(crate) fn queue_bytes_before(&self, queue: &QueueId, first: u64) -> u64 {
        self.queues.get(queue).map_or(0, |q| {
            q.slots
                .after(None)
                .filter(|(_, s)| u64::from(s.segment) < first)
                .map(|(_, s)| u64::from(s.len))
                .sum()
        })
    }

    /// Every item whose blob is in `segment`: queue, key, where.
    pub(crate) fn in_segment(&self, segment: u32) -> Vec<(QueueId, Key, Loc)> {
        let mut out = Vec::new();
        for (id, q) in &self.queues {
            for (key, s) in q.slots.after(None) {
                if s.segment == segment {
                    out.push((
                        id.clone(),
                        key,
                        Loc {
                            segment: s.segment,
                            offset: s.offset,
                            len: s.len,
                        },
                    ));
                }
            }
        }
        out
    }
}

// ---- checkpoint encoding ----

/// First bytes of the checkpoint file.
pub(crate) const CHECKPOINT_MAGIC: &[u8; 8] = b"HSPJCKP2";
/// Slots per block of the checkpoint.
const BLOCK: usize = 4096;

/// Lease owners, errors and replaced metadata of one queue.
type Side = (
    Vec<(Key, Lease)>,
    Vec<(Key, String)>,
    Vec<(Key, BTreeMap<String, String>)>,
);

/// A writer that checksums what goes through it.
pub(crate) struct CrcWrite<W> {
    pub inner: W,
    pub hasher: crc32fast::Hasher,
    pub bytes: u64,
}

impl<W: Write> Write for CrcWrite<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
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

impl State {
    /// Writes the state as of log position `(segment, offset)`:
    /// `[magic][segment][offset][queues…][crc32 of everything after the magic]`. Returns the
    /// items written.
    pub(crate) fn write_checkpoint(
        &self,
        segment: u64,
        offset: u64,
        out: impl Write,
    ) -> std::io::Result<u64> {
        let mut w = CrcWrite {
            inner: out,
            hasher: crc32fast::Hasher::new(),
            bytes: 0,
        };
        w.inner.write_all(CHECKPOINT_MAGIC)?;
        w.write_all(&segment.to_le_bytes())?;
        w.write_all(&offset.to_le_bytes())?;
        let mut ids: Vec<&QueueId> = self.queues.keys().collect();
        ids.sort();
        w.write_all(&u32::try_from(ids.len()).unwrap_or(u32::MAX).to_le_bytes())?;
        let mut items = 0;
        for id in ids {
            let q = &self.queues[id];
            put_bytes(&mut w, &encode(&ConfigRecord(q.config.clone()))?)?;
            w.write_all(&q.next_key.to_le_bytes())?;
            w.write_all(&q.tail_created.to_le_bytes())?;
            put_bytes(&mut w, &encode(&q.phases)?)?;
            let side: Side = (
                q.lease_of.iter().map(|(k, l)| (*k, l.clone())).collect(),
                q.errors.iter().map(|(k, e)| (*k, e.clone())).collect(),
                q.metadata.iter().map(|(k, m)| (*k, m.clone())).collect(),
            );
            put_bytes(&mut w, &encode(&side)?)?;
            w.write_all(&(q.slots.len() as u64).to_le_bytes())?;
            let mut block = Vec::with_capacity(BLOCK * 16);
            let mut in_block = 0;
            let mut prev = (0u64, Slot::new(0));
            for (key, s) in q.slots.after(None) {
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

    /// Reads a checkpoint written by [`State::write_checkpoint`]: the log position replay
    /// starts at, and the state.
    pub(crate) fn read_checkpoint(input: impl Read) -> Result<((u64, u64), State)> {
        let mut r = CrcRead {
            inner: input,
            hasher: crc32fast::Hasher::new(),
        };
        let mut magic = [0; 8];
        r.inner
            .read_exact(&mut magic)
            .map_err(|e| corrupt(format!("too short: {e}")))?;
        if &magic != CHECKPOINT_MAGIC {
            return Err(corrupt("not a checkpoint file (bad magic)"));
        }
        let segment = read_u64(&mut r)?;
        let offset = read_u64(&mut r)?;
        let queues = read_u32(&mut r)?;
        let mut state = State::default();
        let mut buf = Vec::new();
        for _ in 0..queues {
            let q = state.read_queue(&mut r, &mut buf)?;
            let id = q.config.id.clone();
            if state.queues.insert(id.clone(), q).is_some() {
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
}

impl State {
    /// Reads one queue of a checkpoint (its live bytes are added to the state's).
    fn read_queue(&mut self, r: &mut impl Read, buf: &mut Vec<u8>) -> Result<Queue> {
        let ConfigRecord(config) = decode_bytes(r, buf)?;
        let mut q = Queue::new(config);
        q.next_key = read_u64(r)?;
        q.tail_created = read_u64(r)?;
        q.phases = decode_bytes(r, buf)?;
        q.phase_ids = q.phases.iter().cloned().zip(0..).collect();
        q.counts = vec![0; q.phases.len()];
        if q.phases.get(..5) != Queue::new(q.config.clone()).phases.get(..5)
            || q.phase_ids.len() != q.phases.len()
        {
            return Err(corrupt("a queue's phase table is damaged"));
        }
        let (leases, errors, metadata): Side = decode_bytes(r, buf)?;
        let mut leases: HashMap<Key, Lease> = leases.into_iter().collect();
        let mut errors: HashMap<Key, String> = errors.into_iter().collect();
        let mut metadata: HashMap<Key, BTreeMap<String, String>> = metadata.into_iter().collect();
        let count = read_u64(r)?;
        q.cursor = q.next_key;
        let mut read = 0;
        let mut last_key = 0;
        let mut run = (0u32, 0u64);
        while read < count {
            read_block(r, buf)?;
            let mut c = VarCursor { buf, pos: 0 };
            let mut prev = (0u64, Slot::new(0));
            while c.pos < buf.len() {
                let (key, s) = decode_slot(&mut c, prev)?;
                if key <= last_key || key >= q.next_key || s.phase as usize >= q.phases.len() {
                    return Err(corrupt(format!(
                        "queue `{}`: item {key} is out of order, out of range or in no phase",
                        q.config.id
                    )));
                }
                last_key = key;
                let mut extras = Extras::default();
                if s.has(HAS_LEASE) {
                    extras.lease = leases.remove(&key);
                }
                if s.has(HAS_ERROR) {
                    extras.error = errors.remove(&key);
                }
                if s.has(HAS_META) {
                    extras.metadata = metadata.remove(&key);
                }
                if (s.phase == IN_FLIGHT) != extras.lease.is_some() {
                    return Err(corrupt(format!(
                        "queue `{}`: item {key} is in flight without a lease or leased outside \
                         in_flight",
                        q.config.id
                    )));
                }
                // Live bytes are counted per run of one segment, not per item.
                if run.0 != s.segment {
                    if run.1 > 0 {
                        *self.live.entry(run.0).or_default() += run.1;
                    }
                    run = (s.segment, 0);
                }
                run.1 += u64::from(s.len);
                q.add_indexed(key, s, extras);
                prev = (key, s);
                read += 1;
            }
        }
        if run.1 > 0 {
            *self.live.entry(run.0).or_default() += run.1;
        }
        if read != count || !leases.is_empty() || !errors.is_empty() || !metadata.is_empty() {
            return Err(corrupt(format!(
                "queue `{}`: item count or side tables do not match",
                q.config.id
            )));
        }
        q.slots.shrink();
        q.fix_cursor();
        Ok(q)
    }
}

/// Decodes one slot, delta-encoded against the one before it in its block.
fn decode_slot(c: &mut VarCursor<'_>, prev: (Key, Slot)) -> Result<(Key, Slot)> {
    let key = prev.0 + c.next()?;
    let mut s = Slot::new(key);
    s.segment = narrow(unzigzag(u64::from(prev.1.segment), c.next()?))?;
    s.offset = narrow(unzigzag(u64::from(prev.1.offset), c.next()?))?;
    s.len = narrow(c.next()?)?;
    s.phase = u16::try_from(c.next()?).map_err(corrupt)?;
    s.flags = u8::try_from(c.next()?).map_err(corrupt)?;
    s.attempts = narrow(c.next()?)?;
    s.created_at = unzigzag(prev.1.created_at, c.next()?);
    s.updated_at = unzigzag(s.created_at, c.next()?);
    s.not_before = unzigzag(s.created_at, c.next()?);
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

/// Reads a length-prefixed block into `buf`.
fn read_block(r: &mut impl Read, buf: &mut Vec<u8>) -> Result<()> {
    let len = read_u32(r)? as usize;
    if len > 1 << 30 {
        return Err(corrupt(format!("implausible block length {len}")));
    }
    buf.clear();
    buf.resize(len, 0);
    r.read_exact(buf)
        .map_err(|e| corrupt(format!("ends early: {e}")))
}

fn decode_bytes<T: serde::de::DeserializeOwned>(r: &mut impl Read, buf: &mut Vec<u8>) -> Result<T> {
    read_block(r, buf)?;
    bincode::serde::decode_from_slice(buf, bincode_config())
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

fn encode<T: serde::Serialize>(value: &T) -> std::io::Result<Vec<u8>> {
    bincode::serde::encode_to_vec(value, bincode_config()).map_err(std::io::Error::other)
}
