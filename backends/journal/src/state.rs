//! The journal's working state: every queue's settings, counters and indexes, and one
//! 56-byte [`Slot`] per item. Payloads and their metadata stay in the segment files (the
//! slot says where), and so do metadata and errors set after the push: in the item's
//! *note*, a blob that the update which set them wrote (see `record`), which the slot
//! points at too. Only lease owners, held while an item is in flight, are strings in
//! memory (a small side map). Items last changed by an older version of the journal may
//! still have their error and replaced metadata in side maps, until their next change.
//!
//! The state applies operations; it never does I/O. The backend reads blobs before it
//! applies an operation that returns items (see `read`), and replay applies the same
//! operations without reading anything, so a state rebuilt from the log is the state that
//! was live. The checkpoint codec (`checkpoint`) reads and rebuilds it through
//! [`State::queues_by_id`], [`Queue::restore`] and [`State::restore_queue`].
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

use hookspool::{
    Action, Error, Item, Key, Lease, Phase, PhaseCounts, QueueConfig, QueueId, Result, Selector,
    SweepReport, Timestamp, Transition, apply_move, check_expect,
};

use crate::record::{NOTE_ERROR, NOTE_META, PushedItem};
use crate::slots::{HAS_ERROR, HAS_LEASE, HAS_META, HAS_NOTE, IN_ORDER, Slot, Slots};

mod queue;

/// Where an item's blob is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Loc {
    pub segment: u32,
    pub offset: u32,
    pub len: u32,
}

impl Slot {
    /// Where the item's blob is.
    pub(crate) fn loc(&self) -> Loc {
        Loc {
            segment: self.segment,
            offset: self.offset,
            len: self.len,
        }
    }

    /// Where the item's note is, if it has one.
    pub(crate) fn note(&self) -> Option<Loc> {
        self.has(HAS_NOTE).then_some(Loc {
            segment: self.note_segment,
            offset: self.note_offset,
            len: self.note_len,
        })
    }

    fn set_note(&mut self, loc: Option<Loc>) {
        let loc = loc.unwrap_or(Loc {
            segment: 0,
            offset: 0,
            len: 0,
        });
        self.note_segment = loc.segment;
        self.note_offset = loc.offset;
        self.note_len = loc.len;
        self.set(HAS_NOTE, loc.len > 0);
    }
}

/// An item without what is on disk: the payload, and the metadata unless it was replaced
/// after the push; and for an item with a note, its replaced metadata and its error too.
/// (For an item with no note, `item` holds those, from the side maps.)
#[derive(Debug)]
pub(crate) struct Header {
    pub item: Item,
    pub loc: Loc,
    /// The item's note, which holds its replaced metadata and error.
    pub note: Option<Loc>,
    pub replaced_metadata: bool,
    pub has_error: bool,
}

impl Header {
    /// Where everything the item holds on disk is: its blob and its note (what its removal
    /// frees).
    pub(crate) fn stored(&self) -> impl Iterator<Item = Loc> + '_ {
        std::iter::once(self.loc).chain(self.note)
    }

    /// The blobs to read to return the item: its blob (not for a quarantined item, whose
    /// blob is known to be damaged) and its note.
    pub(crate) fn locs(&self) -> impl Iterator<Item = Loc> + '_ {
        let blob = (self.item.phase != Phase::CORRUPT).then_some(self.loc);
        blob.into_iter().chain(self.note)
    }
}

/// Every queue, and the live blob bytes in each segment.
#[derive(Debug, Default)]
pub(crate) struct State {
    queues: HashMap<QueueId, Queue>,
    live: HashMap<u32, u64>,
}

/// One queue: its settings, counters, indexes and slots.
#[derive(Debug)]
pub(crate) struct Queue {
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
    /// Per phase id, where retention's next walk of that phase starts: no item of the phase
    /// has a smaller key (an item entering the phase with a smaller one lowers it). Not kept
    /// across a reopen: the first walk after it starts at the first key.
    prune_from: Vec<Key>,
}

/// What an item carries beside its slot.
#[derive(Debug, Default)]
pub(crate) struct Extras {
    pub lease: Option<Lease>,
    pub error: Option<String>,
    pub metadata: Option<BTreeMap<String, String>>,
}

/// Lease owners, errors and replaced metadata of one queue's items, as the checkpoint
/// stores them.
pub(crate) type Side = (
    Vec<(Key, Lease)>,
    Vec<(Key, String)>,
    Vec<(Key, BTreeMap<String, String>)>,
);

/// What a queue is besides its items: what the checkpoint stores ahead of its slots.
pub(crate) struct QueueHead {
    pub config: QueueConfig,
    pub next_key: Key,
    pub tail_created: u64,
    pub phases: Vec<Phase>,
}

const PENDING: u16 = 0;
pub(crate) const IN_FLIGHT: u16 = 1;
const EXPIRED: u16 = 4;

fn not_found(queue: &QueueId) -> Error {
    Error::QueueNotFound(queue.clone())
}

/// Counts an item's blob and note as live.
fn add_live(live: &mut HashMap<u32, u64>, slot: &Slot) {
    *live.entry(slot.segment).or_default() += u64::from(slot.len);
    if let Some(note) = slot.note() {
        *live.entry(note.segment).or_default() += u64::from(note.len);
    }
}

/// Counts an item's blob and note as dead.
fn subtract_slot(live: &mut HashMap<u32, u64>, slot: &Slot) {
    subtract_live(live, slot.segment, slot.len);
    if let Some(note) = slot.note() {
        subtract_live(live, note.segment, note.len);
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

/// The checkpoint's view of a queue: what it writes, and how it rebuilds one.
impl Queue {
    pub(crate) fn head(&self) -> QueueHead {
        QueueHead {
            config: self.config.clone(),
            next_key: self.next_key,
            tail_created: self.tail_created,
            phases: self.phases.clone(),
        }
    }

    pub(crate) fn side(&self) -> Side {
        (
            self.lease_of.iter().map(|(k, l)| (*k, l.clone())).collect(),
            self.errors.iter().map(|(k, e)| (*k, e.clone())).collect(),
            self.metadata.iter().map(|(k, m)| (*k, m.clone())).collect(),
        )
    }

    /// Every item's slot, in key order.
    pub(crate) fn items(&self) -> impl Iterator<Item = (Key, &Slot)> + '_ {
        self.slots.after(None)
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// An empty queue from its head, to be filled with [`Queue::restore_item`] in key
    /// order. `None` if the phase table is not one a queue can have (the contract's phases
    /// first, at their fixed ids, then distinct user phases).
    pub(crate) fn restore(head: QueueHead) -> Option<Queue> {
        let mut q = Queue::new(head.config);
        if head.phases.get(..q.phases.len()) != Some(&q.phases[..]) {
            return None;
        }
        q.phase_ids = head.phases.iter().cloned().zip(0..).collect();
        if q.phase_ids.len() != head.phases.len() {
            return None;
        }
        q.counts = vec![0; head.phases.len()];
        q.phases = head.phases;
        q.next_key = head.next_key;
        q.tail_created = head.tail_created;
        // `add_indexed` lowers the cursor to the first in-order item it is given.
        q.cursor = q.next_key;
        Some(q)
    }

    /// Adds an item read from a checkpoint (its live bytes are the caller's to count:
    /// [`State::restore_live`]).
    pub(crate) fn restore_item(&mut self, key: Key, slot: Slot, extras: Extras) {
        self.add_indexed(key, slot, extras);
    }

    /// Done adding items: spare capacity released, the in-order cursor placed.
    pub(crate) fn finish_restore(&mut self) {
        self.slots.shrink();
        self.fix_cursor();
    }

    pub(crate) fn id(&self) -> &QueueId {
        &self.config.id
    }

    pub(crate) fn next_key(&self) -> Key {
        self.next_key
    }

    pub(crate) fn phase_count(&self) -> usize {
        self.phases.len()
    }
}

/// A queue in the state, or `QueueNotFound`.
macro_rules! queue_mut {
    ($self:ident, $id:expr) => {
        $self.queues.get_mut($id).ok_or_else(|| not_found($id))?
    };
}

impl State {
    /// Every queue, ordered by id.
    pub(crate) fn queues_by_id(&self) -> Vec<&Queue> {
        let mut all: Vec<&Queue> = self.queues.values().collect();
        all.sort_by(|a, b| a.config.id.cmp(&b.config.id));
        all
    }

    /// Adds a queue rebuilt from a checkpoint; `false` (and nothing added) if its id is
    /// taken.
    pub(crate) fn restore_queue(&mut self, q: Queue) -> bool {
        match self.queues.entry(q.config.id.clone()) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(q);
                true
            }
        }
    }

    /// Counts `bytes` of restored blobs as live in `segment`.
    pub(crate) fn restore_live(&mut self, segment: u32, bytes: u64) {
        *self.live.entry(segment).or_default() += bytes;
    }

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
            subtract_slot(&mut self.live, slot);
        }
        true
    }

    /// Refuses a push of `n` items to a queue whose keys would run out (its next key, as a
    /// damaged or crafted store may hold, too close to `u64::MAX`): checked before the push's
    /// record is written, so that no record the state cannot apply reaches the log.
    pub(crate) fn check_keys(&self, queue: &QueueId, n: usize) -> Result<()> {
        match self.queues.get(queue) {
            Some(q) if q.next_key.checked_add(n as u64).is_none() => Err(Error::invalid(format!(
                "queue `{queue}` has run out of keys"
            ))),
            _ => Ok(()),
        }
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
        // Replay applies logged pushes through here too: a log whose keys run out is refused,
        // never wrapped around.
        self.check_keys(queue, items.len())?;
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
                // Segment sizes are checked at open to be at most 4 GiB.
                .map_err(|_| Error::internal("a journal segment is larger than 4 GiB"))?;
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

    /// The blobs and notes to read for pending items `keys`, in order: each one's blob, then
    /// its note if it has one, as [`Header::locs`] lists them (a missing key is skipped).
    pub(crate) fn item_locs(&self, queue: &QueueId, keys: &[Key]) -> Result<Vec<Loc>> {
        let q = self.queues.get(queue).ok_or_else(|| not_found(queue))?;
        Ok(keys
            .iter()
            .filter_map(|k| q.slots.get(*k))
            .flat_map(|s| std::iter::once(s.loc()).chain(s.note()))
            .collect())
    }

    /// Where an item's note is, if it is there and has one.
    pub(crate) fn note_of(&self, queue: &QueueId, key: Key) -> Option<Loc> {
        self.queues.get(queue)?.slots.get(key)?.note()
    }

    /// Points an item at the note its last update wrote (see [`State::update`]); an item
    /// removed since is skipped.
    pub(crate) fn set_note(&mut self, queue: &QueueId, key: Key, loc: Loc) {
        let Some(slot) = self
            .queues
            .get_mut(queue)
            .and_then(|q| q.slots.get_mut(key))
        else {
            return;
        };
        if let Some(old) = slot.note() {
            subtract_live(&mut self.live, old.segment, old.len);
        }
        slot.set_note(Some(loc));
        *self.live.entry(loc.segment).or_default() += u64::from(loc.len);
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

    /// Up to `limit` keys of items in `phase` with `updated_at ≤ before`, in key order from
    /// where the last walk of the phase stopped, up to the first younger one (see
    /// `Backend::prune`). The caller removes them before it lets go of the state. Each item
    /// of another phase is passed over once per walk of a phase, not once per call.
    pub(crate) fn prunable(
        &mut self,
        queue: &QueueId,
        phase: &Phase,
        before: Timestamp,
        limit: usize,
    ) -> Result<Vec<Key>> {
        let q = queue_mut!(self, queue);
        let Some(&phase) = q.phase_ids.get(phase) else {
            return Ok(Vec::new());
        };
        let i = usize::from(phase);
        if q.prune_from.len() <= i {
            q.prune_from.resize(i + 1, 0);
        }
        let mut keys = Vec::new();
        let mut stop = q.next_key;
        for (key, slot) in q.slots.after(q.prune_from[i].checked_sub(1)) {
            if slot.phase != phase {
                continue;
            }
            if slot.updated_at > before.as_millis() || keys.len() == limit {
                stop = key;
                break;
            }
            keys.push(key);
        }
        q.prune_from[i] = stop;
        Ok(keys)
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
            subtract_slot(&mut self.live, slot);
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
    ///
    /// `note` is the tag of the note this update writes, if it writes one (a move that sets
    /// metadata or an error): the move's metadata and error are then ignored (they are in
    /// the note), the item's flags follow the tag, and its old note (or side-map strings)
    /// are dropped. The item points at no note until [`State::set_note`] places the new
    /// one, once the record is appended (replay: once it is read), under the same hold of
    /// the state. Without a note, a move that sets metadata or an error is one logged by an
    /// older version of the journal, and those go to the side maps as they did then.
    pub(crate) fn update(
        &mut self,
        queue: &QueueId,
        key: Key,
        transition: Transition,
        now: Timestamp,
        note: Option<u8>,
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
        let mut m = m;
        if note.is_some() {
            m.metadata = None;
            m.error = None;
        } else if slot.has(HAS_NOTE) && (m.metadata.is_some() || m.error.is_some()) {
            return Err(Error::Corrupted {
                what: format!(
                    "journal: item {key} of queue `{queue}` has a note, and a logged update \
                     changes its metadata or error without one"
                ),
            });
        }
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
        let extras = if let Some(tag) = note {
            header.replaced_metadata = tag & NOTE_META != 0;
            header.has_error = tag & NOTE_ERROR != 0;
            header.note = None;
            header.item.metadata = BTreeMap::new();
            header.item.last_error = None;
            slot.set_note(None);
            Extras::default()
        } else if slot.has(HAS_NOTE) {
            // A move that sets neither: both stay in the note, and the flags as they were.
            Extras::default()
        } else {
            header.replaced_metadata |= replaces_metadata;
            header.has_error = item.last_error.is_some();
            Extras {
                lease: None,
                error: item.last_error.clone(),
                metadata: header.replaced_metadata.then(|| item.metadata.clone()),
            }
        };
        slot.set(HAS_ERROR, header.has_error);
        slot.set(HAS_META, header.replaced_metadata);
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

    /// Points items whose blob or note was at `(from_segment, from_offset)` at its new
    /// place. Returns how many still were there (an item removed since is skipped).
    pub(crate) fn relocate(&mut self, queue: &QueueId, moves: &[(Key, u32, u32, Loc)]) -> usize {
        let Some(q) = self.queues.get_mut(queue) else {
            return 0;
        };
        let mut n = 0;
        for &(key, from_segment, from_offset, to) in moves {
            let Some(slot) = q.slots.get_mut(key) else {
                continue;
            };
            let from = (from_segment, from_offset);
            if (slot.segment, slot.offset) == from {
                subtract_live(&mut self.live, slot.segment, slot.len);
                slot.segment = to.segment;
                slot.offset = to.offset;
                slot.len = to.len;
            } else if let Some(note) = slot.note().filter(|l| (l.segment, l.offset) == from) {
                subtract_live(&mut self.live, note.segment, note.len);
                slot.set_note(Some(to));
            } else {
                continue;
            }
            *self.live.entry(to.segment).or_default() += u64::from(to.len);
            n += 1;
        }
        n
    }

    /// Blob bytes of a queue's items in segments before `first`.
    pub(crate) fn queue_bytes_before(&self, queue: &QueueId, first: u64) -> u64 {
        self.queues.get(queue).map_or(0, |q| {
            q.slots
                .after(None)
                .flat_map(|(_, s)| std::iter::once(s.loc()).chain(s.note()))
                .filter(|l| u64::from(l.segment) < first)
                .map(|l| u64::from(l.len))
                .sum()
        })
    }

    /// Every blob and note in `segment`: queue, key of its item, where.
    pub(crate) fn in_segment(&self, segment: u32) -> Vec<(QueueId, Key, Loc)> {
        let mut out = Vec::new();
        for (id, q) in &self.queues {
            for (key, s) in q.slots.after(None) {
                for loc in std::iter::once(s.loc()).chain(s.note()) {
                    if loc.segment == segment {
                        out.push((id.clone(), key, loc));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on failure
mod tests {
    use super::*;
    use crate::record::BlobAt;

    /// Found by the `journal_open` fuzz target: a checkpoint whose queue's next key is
    /// `u64::MAX`, then a push, overflowed the key (a panic with overflow checks, keys wrapping
    /// around without). A push that would run out of keys is now refused, whole, and changes
    /// nothing.
    #[test]
    fn a_push_past_the_last_key_is_refused_and_changes_nothing() {
        let mut st = State::default();
        let id = QueueId::new("q").unwrap();
        st.create_queue(QueueConfig::new(id.clone())).unwrap();
        st.queues.get_mut(&id).unwrap().next_key = u64::MAX - 2;
        let item = PushedItem {
            not_before: None,
            blob: BlobAt { at: 0, len: 4 },
        };
        let now = Timestamp(1_000);
        assert_eq!(
            st.push(&id, &[item], now, 1, 0).unwrap(),
            [u64::MAX - 2],
            "the last keys are handed out"
        );
        for n in [2, 3] {
            assert!(st.check_keys(&id, n).is_err());
            let err = st.push(&id, &vec![item; n], now, 1, 0).unwrap_err();
            assert!(err.to_string().contains("run out of keys"), "{err}");
        }
        assert_eq!(st.queues[&id].next_key, u64::MAX - 1, "nothing was taken");
        assert_eq!(st.push(&id, &[item], now, 1, 0).unwrap(), [u64::MAX - 1]);
        assert!(st.check_keys(&id, 1).is_err(), "u64::MAX is never a key");
    }
}
