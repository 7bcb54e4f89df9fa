//! A queue's own operations on its slots: its phase table, adding and taking items (the
//! `due` and `ages` sets and the live bytes kept up), the in-order run's cursor, headers,
//! the keys a selector picks, the due keys a claim takes (the in-order run merged with the
//! `due` set), and the sweep (expired leases back to pending, items past their TTL to
//! `expired`). The [`State`](super::State) finds the queue and calls these.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use hookspool::{Error, Item, Key, Phase, QueueConfig, Result, Selector, SweepReport, Timestamp};

use super::{EXPIRED, Extras, Header, PENDING, Queue, add_live, subtract_slot};
use crate::slots::{HAS_ERROR, HAS_LEASE, HAS_META, IN_ORDER, Slot, Slots};

impl Queue {
    pub(super) fn new(config: QueueConfig) -> Self {
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
            prune_from: Vec::new(),
        }
    }

    /// The id of a phase, added to the table if new.
    pub(super) fn phase_id(&mut self, phase: &Phase) -> Result<u16> {
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

    pub(super) fn add(
        &mut self,
        key: Key,
        slot: Slot,
        extras: Extras,
        live: &mut HashMap<u32, u64>,
    ) {
        add_live(live, &slot);
        self.add_indexed(key, slot, extras);
    }

    /// [`Queue::add`] without the live-bytes count (the caller keeps it).
    pub(super) fn add_indexed(&mut self, key: Key, slot: Slot, extras: Extras) {
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
        if let Some(from) = self.prune_from.get_mut(slot.phase as usize) {
            *from = (*from).min(key);
        }
        self.counts[slot.phase as usize] += 1;
        self.slots.insert(key, slot);
    }

    pub(super) fn take(
        &mut self,
        key: Key,
        live: &mut HashMap<u32, u64>,
    ) -> Option<(Slot, Extras)> {
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
        subtract_slot(live, &slot);
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
    pub(super) fn fix_cursor(&mut self) {
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

    pub(super) fn header(&self, key: Key, slot: &Slot) -> Header {
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
            loc: slot.loc(),
            note: slot.note(),
            replaced_metadata: replaced,
            has_error: slot.has(HAS_ERROR),
        }
    }

    /// The keys a selector picks. A page of one phase walks the slots but stops as soon as
    /// no item of the phase can be left: at once for a phase with no items, after the
    /// phase's count of them when the walk starts at an end of the queue, and below the
    /// phase's lowest possible key ([`Queue::prune_from`]) when it walks down. So a page of a
    /// rare or empty phase of a large queue does not read every slot.
    pub(super) fn select(&self, selector: &Selector) -> Vec<Key> {
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
        // How many items of the phase the walk can meet, when that is known, and the
        // phase's lowest possible key.
        let (mut left, lowest) = match phase {
            None => (u64::MAX, 0),
            Some(p) => {
                let count = self.counts[p as usize];
                let from_an_end = page.after.is_none();
                let lowest = self.prune_from.get(p as usize).copied().unwrap_or(0);
                (if from_an_end { count } else { u64::MAX }, lowest)
            }
        };
        if phase.is_some_and(|p| self.counts[p as usize] == 0) {
            return Vec::new();
        }
        let mut keep = move |s: &Slot| {
            if left == 0 {
                return None;
            }
            match phase {
                Some(p) if s.phase != p => Some(false),
                Some(_) => {
                    left -= 1;
                    Some(true)
                }
                None => Some(true),
            }
        };
        if page.reverse {
            self.slots
                .before(page.after)
                .take_while(|(k, _)| *k >= lowest)
                .map_while(|(k, s)| keep(s).map(|kept| (k, kept)))
                .filter(|(_, kept)| *kept)
                .skip(page.offset)
                .take(page.limit)
                .map(|(k, _)| k)
                .collect()
        } else {
            // No item of the phase lies below its lowest possible key: start there.
            let after = match (page.after, lowest.checked_sub(1)) {
                (Some(a), Some(l)) => Some(a.max(l)),
                (a, l) if phase.is_some() => a.or(l),
                (a, _) => a,
            };
            self.slots
                .after(after)
                .map_while(|(k, s)| keep(s).map(|kept| (k, kept)))
                .filter(|(_, kept)| *kept)
                .skip(page.offset)
                .take(page.limit)
                .map(|(k, _)| k)
                .collect()
        }
    }

    /// Due pending items in claim order, at most `limit`.
    pub(super) fn due_keys(&mut self, limit: usize, now: u64) -> Vec<Key> {
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

    pub(super) fn sweep(&mut self, now: u64, live: &mut HashMap<u32, u64>) -> SweepReport {
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
