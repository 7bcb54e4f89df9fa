//! The compact per-item index: one fixed-size [`Slot`] per item (no key, no payload, no
//! strings), in chunks of 256 consecutive keys.
//!
//! Keys are assigned consecutively and consumed mostly in order, so a chunk is usually full
//! and costs `256 × size_of::<Slot>()` bytes with no per-item overhead: 56 bytes an item. A
//! chunk whose items are mostly removed is compacted (removed slots dropped, its vector
//! shrunk), so a sparse queue (a few dead items among many removed ones) does not pay for
//! the keys it no longer holds.

use std::collections::BTreeMap;

use hookspool::Key;

/// Keys per chunk, as a shift.
const CHUNK_BITS: u32 = 8;
const CHUNK_MASK: u64 = (1 << CHUNK_BITS) - 1;

/// `phase` of a removed slot (left in its chunk until the chunk is compacted).
pub(crate) const REMOVED: u16 = u16::MAX;

/// Item is a member of the queue's in-order pending run (see `state`).
pub(crate) const IN_ORDER: u8 = 1;
/// The item has a lease (in the queue's lease map).
pub(crate) const HAS_LEASE: u8 = 2;
/// The item has a `last_error` (in the queue's error map).
pub(crate) const HAS_ERROR: u8 = 4;
/// The item's metadata was replaced after its push (in its note, or, for an item last
/// changed by an older version of the journal, in the queue's metadata map); otherwise it
/// is the metadata stored with the payload.
pub(crate) const HAS_META: u8 = 8;
/// The item has a *note*: a second blob, written by the update that last changed its
/// metadata or error, which holds them (see `record`). Without it, those live in the
/// queue's side maps (flags [`HAS_META`], [`HAS_ERROR`]), as older versions kept them.
pub(crate) const HAS_NOTE: u8 = 16;

/// Everything about an item that is not a string or the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    pub created_at: u64,
    pub updated_at: u64,
    pub not_before: u64,
    /// Where the item's blob (checksum, metadata, payload) is: segment, offset, length.
    pub segment: u32,
    pub offset: u32,
    pub len: u32,
    /// Where the item's note is, when it has one ([`HAS_NOTE`]): segment, offset, length.
    pub note_segment: u32,
    pub note_offset: u32,
    pub note_len: u32,
    pub attempts: u32,
    /// Index into the queue's phase table; [`REMOVED`] for a removed slot.
    pub phase: u16,
    pub flags: u8,
    /// The key's low bits (the chunk gives the rest).
    low: u8,
}

impl Slot {
    /// A slot for the item with key `key`.
    pub(crate) fn new(key: Key) -> Self {
        Slot {
            created_at: 0,
            updated_at: 0,
            not_before: 0,
            segment: 0,
            offset: 0,
            len: 0,
            note_segment: 0,
            note_offset: 0,
            note_len: 0,
            attempts: 0,
            phase: 0,
            flags: 0,
            #[allow(clippy::cast_possible_truncation)] // masked to 8 bits
            low: (key & CHUNK_MASK) as u8,
        }
    }

    pub(crate) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    pub(crate) fn set(&mut self, flag: u8, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }

    fn live(&self) -> bool {
        self.phase != REMOVED
    }
}

#[derive(Debug, Default)]
struct Chunk {
    /// Ordered by `low`; removed slots stay until the chunk is compacted.
    slots: Vec<Slot>,
    live: u32,
}

impl Chunk {
    fn find(&self, low: u8) -> Option<usize> {
        // A full chunk that was never compacted is indexed directly.
        if self.slots.len() == 1 << CHUNK_BITS {
            return Some(low as usize);
        }
        self.slots.binary_search_by_key(&low, |s| s.low).ok()
    }

    /// Drops removed slots once they outnumber the live ones.
    fn compact(&mut self) {
        let dead = self.slots.len() as u32 - self.live;
        if dead > self.live && self.slots.len() >= 16 {
            self.slots.retain(Slot::live);
            self.slots.shrink_to_fit();
        }
    }
}

/// The slots of one queue, by key.
#[derive(Debug, Default)]
pub(crate) struct Slots {
    chunks: BTreeMap<u64, Chunk>,
    len: usize,
}

impl Slots {
    /// How many items.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn get(&self, key: Key) -> Option<&Slot> {
        let chunk = self.chunks.get(&(key >> CHUNK_BITS))?;
        #[allow(clippy::cast_possible_truncation)]
        let slot = &chunk.slots[chunk.find((key & CHUNK_MASK) as u8)?];
        slot.live().then_some(slot)
    }

    pub(crate) fn get_mut(&mut self, key: Key) -> Option<&mut Slot> {
        let chunk = self.chunks.get_mut(&(key >> CHUNK_BITS))?;
        #[allow(clippy::cast_possible_truncation)]
        let i = chunk.find((key & CHUNK_MASK) as u8)?;
        let slot = &mut chunk.slots[i];
        slot.live().then_some(slot)
    }

    /// Adds an item. `slot` must have been made by `Slot::new(key)`; the key must not be
    /// present. Appending keys in increasing order (pushes, restores) is the fast path.
    pub(crate) fn insert(&mut self, key: Key, slot: Slot) {
        debug_assert_ne!(slot.phase, REMOVED);
        let id = key >> CHUNK_BITS;
        // Pushes and restores go to the last chunk.
        let chunk = match self.chunks.last_entry() {
            Some(last) if *last.key() == id => last.into_mut(),
            _ => self.chunks.entry(id).or_default(),
        };
        match chunk.slots.last() {
            Some(last) if last.low >= slot.low => {
                let at = chunk.slots.partition_point(|s| s.low < slot.low);
                if chunk.slots.get(at).is_some_and(|s| s.low == slot.low) {
                    // A removed slot with this key: reuse it.
                    chunk.slots[at] = slot;
                } else {
                    chunk.slots.insert(at, slot);
                }
            }
            _ => chunk.slots.push(slot),
        }
        chunk.live += 1;
        self.len += 1;
    }

    /// Removes an item, returning its slot.
    pub(crate) fn remove(&mut self, key: Key) -> Option<Slot> {
        let id = key >> CHUNK_BITS;
        let chunk = self.chunks.get_mut(&id)?;
        #[allow(clippy::cast_possible_truncation)]
        let i = chunk.find((key & CHUNK_MASK) as u8)?;
        let slot = chunk.slots[i];
        if !slot.live() {
            return None;
        }
        chunk.slots[i].phase = REMOVED;
        chunk.live -= 1;
        self.len -= 1;
        if chunk.live == 0 {
            self.chunks.remove(&id);
        } else {
            chunk.compact();
        }
        Some(slot)
    }

    pub(crate) fn clear(&mut self) {
        self.chunks.clear();
        self.len = 0;
    }

    /// Items with keys after `after` (or all), in key order.
    pub(crate) fn after(&self, after: Option<Key>) -> impl Iterator<Item = (Key, &Slot)> + '_ {
        let first = after.map_or(0, |k| k >> CHUNK_BITS);
        self.chunks
            .range(first..)
            .flat_map(|(id, c)| {
                c.slots
                    .iter()
                    .filter(|s| s.live())
                    .map(move |s| ((id << CHUNK_BITS) | u64::from(s.low), s))
            })
            .skip_while(move |(k, _)| after.is_some_and(|a| *k <= a))
    }

    /// Items with keys before `before` (or all), in reverse key order.
    pub(crate) fn before(&self, before: Option<Key>) -> impl Iterator<Item = (Key, &Slot)> + '_ {
        let last = before.map_or(u64::MAX, |k| k >> CHUNK_BITS);
        self.chunks
            .range(..=last)
            .rev()
            .flat_map(|(id, c)| {
                c.slots
                    .iter()
                    .rev()
                    .filter(|s| s.live())
                    .map(move |s| ((id << CHUNK_BITS) | u64::from(s.low), s))
            })
            .skip_while(move |(k, _)| before.is_some_and(|b| *k >= b))
    }

    /// Releases spare capacity (after a restore).
    pub(crate) fn shrink(&mut self) {
        for chunk in self.chunks.values_mut() {
            chunk.slots.shrink_to_fit();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn slot(key: Key) -> Slot {
        let mut s = Slot::new(key);
        s.attempts = u32::try_from(key).unwrap();
        s
    }

    #[test]
    fn slots_behave_like_an_ordered_map() {
        let mut slots = Slots::default();
        let mut model = BTreeMap::new();
        // Deterministic pseudo-random operations over keys spanning several chunks.
        let mut x: u64 = 12345;
        let mut next = 1;
        for _ in 0..20_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let r = (x >> 33) % 10;
            if r < 5 {
                slots.insert(next, slot(next));
                model.insert(next, next);
                next += 1;
            } else if next > 1 {
                let key = 1 + (x >> 20) % (next - 1);
                assert_eq!(
                    slots.remove(key).map(|s| u64::from(s.attempts)),
                    model.remove(&key)
                );
            }
            if r == 9 && next > 1 {
                let key = 1 + (x >> 24) % (next - 1);
                assert_eq!(
                    slots.get(key).map(|s| u64::from(s.attempts)),
                    model.get(&key).copied()
                );
                let fwd: Vec<Key> = slots.after(Some(key)).take(5).map(|(k, _)| k).collect();
                let want: Vec<Key> = model.range(key + 1..).take(5).map(|(k, _)| *k).collect();
                assert_eq!(fwd, want);
                let back: Vec<Key> = slots.before(Some(key)).take(5).map(|(k, _)| k).collect();
                let want: Vec<Key> = model.range(..key).rev().take(5).map(|(k, _)| *k).collect();
                assert_eq!(back, want);
            }
            assert_eq!(slots.len(), model.len());
        }
        let all: Vec<Key> = slots.after(None).map(|(k, _)| k).collect();
        assert_eq!(all, model.keys().copied().collect::<Vec<_>>());
    }

    /// The index is all an item costs in memory: its metadata and error are on disk (in its
    /// blob, or its note), whatever it has been through.
    #[test]
    fn a_slot_is_56_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 56);
    }
}
