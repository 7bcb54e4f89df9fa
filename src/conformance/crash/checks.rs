//! The parent's checks after each kill: the store as reopened against the journal of what
//! the children saw return, and the journal itself as the parent reads it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::time::Duration;

use super::worker::{check_payload, payload};
use super::{CrashTarget, Place, queue_id};
use crate::conformance::support::copy_dir;
use crate::{Backend, Item, Key, ManualClock, NewItem, Phase, QueueId, Store, Timestamp};

/// What one post-crash check saw.
#[derive(Default)]
pub(super) struct Checked {
    pub(super) items: usize,
    pub(super) released: u64,
    pub(super) repaired: u64,
    pub(super) findings: Findings,
}

/// Keys lost, and keys the store would hand out again.
#[derive(Default)]
pub(super) struct Findings {
    pub(super) lost: BTreeSet<Key>,
    pub(super) duplicated: BTreeSet<Key>,
}

/// Reopens the store after a kill (a copy at `copy` if the target is copyable) and checks
/// every invariant against the journal.
pub(super) async fn check_round<T: CrashTarget>(
    target: &T,
    mode: &str,
    place: &Place,
    copy: &Path,
    ctx: &str,
    journal: &JournalState,
) -> Checked {
    let at = if target.copyable() {
        if !place.dir.exists() {
            // Killed before the first child got to create the store: nothing is journaled.
            assert_eq!(journal.opens, 0, "{ctx}: the store directory is gone");
            return Checked::default();
        }
        copy_dir(&place.dir, copy);
        Place {
            dir: copy.to_owned(),
            name: place.name.clone(),
        }
    } else {
        target.settle(place).await;
        place.clone()
    };
    let checked = check_store(target, mode, &at, ctx, journal).await;
    if target.copyable() {
        fs::remove_dir_all(copy).expect("remove check copy");
    }
    checked
}

async fn check_store<T: CrashTarget>(
    target: &T,
    mode: &str,
    at: &Place,
    ctx: &str,
    journal: &JournalState,
) -> Checked {
    let backend = target.open(at, mode).await;
    let repaired = target.repaired(&backend);
    let clock = ManualClock::new(Timestamp::now());
    let store = Store::new(backend).with_clock(clock.clone());
    let queue = queue_id();
    if store.queue(&queue).await.expect("get queue").is_none() {
        // Killed before the first child created the queue: then nothing can be journaled.
        assert_eq!(journal.opens, 0, "{ctx}: the queue was created but is gone");
        return Checked {
            repaired,
            ..Checked::default()
        };
    }
    let before = dump_all(&store, &queue).await;
    let findings = check_items(ctx, &before, journal);
    let counts = store.counts(&queue).await.expect("counts");
    assert_eq!(
        counts.0,
        recount(&before),
        "{ctx}: counters differ from a recount"
    );
    let after = check_leases_return(ctx, &store, &clock, &before).await;
    let probe = check_next_key(ctx, &store, &before, journal).await;
    drop(store);
    check_clean_reopen(target, mode, at, ctx, &after, probe).await;
    Checked {
        items: before.len(),
        released: before.iter().filter(|i| i.lease.is_some()).count() as u64,
        repaired,
        findings,
    }
}

/// The item set after a crash: well-formed, and holding everything the journal confirms.
fn check_items(ctx: &str, items: &[Item], journal: &JournalState) -> Findings {
    let mut found = Findings::default();
    for pair in items.windows(2) {
        assert!(
            pair[0].key <= pair[1].key,
            "{ctx}: keys out of order: {} then {}",
            pair[0].key,
            pair[1].key
        );
        if pair[0].key == pair[1].key {
            found.duplicated.insert(pair[0].key);
        }
    }
    for item in items {
        check_item(ctx, item);
    }
    let by_key: BTreeMap<Key, &Item> = items.iter().map(|i| (i.key, i)).collect();
    // Every push that returned Ok is still there, in some phase, unless it was deleted: the
    // child deletes only items whose ack it journaled, and journals `deleting` first. A
    // journaled delete never comes back.
    for key in &journal.pushed {
        let there = by_key.contains_key(key);
        if journal.deleted.contains(key) {
            if there {
                found.duplicated.insert(*key);
            }
        } else if !there && !journal.deleting.contains(key) {
            found.lost.insert(*key);
        }
    }
    // Nothing acked comes back: an acked item stays done (retention Keep, and nothing else
    // moves done items here), so in particular it is not pending; or it was deleted.
    for key in &journal.acked {
        match by_key.get(key) {
            Some(item) if item.phase != Phase::DONE => {
                found.duplicated.insert(*key);
            }
            None if !journal.deleting.contains(key) => {
                found.lost.insert(*key);
            }
            _ => {}
        }
    }
    check_claims(ctx, &by_key, journal, &mut found);
    found
}

/// One item is well-formed: a known phase, a lease exactly when in flight, a whole payload.
fn check_item(ctx: &str, item: &Item) {
    assert!(
        [Phase::PENDING, Phase::IN_FLIGHT, Phase::DONE].contains(&item.phase),
        "{ctx}: item {} in unexpected phase {}",
        item.key,
        item.phase
    );
    assert_eq!(
        item.phase == Phase::IN_FLIGHT,
        item.lease.is_some(),
        "{ctx}: item {} is in phase {} with lease {:?}",
        item.key,
        item.phase,
        item.lease
    );
    check_payload(ctx, item.key, &item.payload);
}

/// An item whose last journaled event is a claim is still leased (by that claim or a later
/// one), or was settled or released by a call the kill kept out of the journal.
fn check_claims(
    ctx: &str,
    by_key: &BTreeMap<Key, &Item>,
    journal: &JournalState,
    found: &mut Findings,
) {
    for (key, event) in &journal.last {
        if let Event::Claimed(until) = event {
            let Some(item) = by_key.get(key) else {
                found.lost.insert(*key);
                continue;
            };
            if let Some(lease) = &item.lease {
                assert!(
                    lease.until >= *until,
                    "{ctx}: item {key} is leased until {} but the journaled claim leased it \
                     until {until}",
                    lease.until
                );
            }
        }
    }
}

/// Past every lease, each item whose lease was open is pending again with its attempts kept,
/// and nothing else changes. Returns the items after the sweep.
async fn check_leases_return<B: Backend>(
    ctx: &str,
    store: &Store<B>,
    clock: &ManualClock,
    before: &[Item],
) -> Vec<Item> {
    let queue = queue_id();
    let open_leases = before.iter().filter(|i| i.lease.is_some()).count() as u64;
    clock.set(Timestamp::now().saturating_add(Duration::from_hours(365 * 24)));
    let report = store.sweep(&queue).await.expect("sweep");
    assert_eq!(report.released, open_leases, "{ctx}: sweep released");
    assert_eq!(report.expired, 0, "{ctx}: no TTL, nothing expires");
    let after = dump_all(store, &queue).await;
    assert_eq!(
        after.len(),
        before.len(),
        "{ctx}: sweep changed the item set"
    );
    for (was, now) in before.iter().zip(&after) {
        if was.phase == Phase::IN_FLIGHT {
            assert_eq!(now.key, was.key, "{ctx}: sweep changed the keys");
            assert_eq!(
                now.phase,
                Phase::PENDING,
                "{ctx}: item {} not released",
                was.key
            );
            assert_eq!(now.lease, None, "{ctx}: item {} kept its lease", was.key);
            assert_eq!(
                now.attempts, was.attempts,
                "{ctx}: item {} attempts",
                was.key
            );
        } else {
            assert_eq!(now, was, "{ctx}: sweep changed item {}", was.key);
        }
    }
    let counts = store.counts(&queue).await.expect("counts");
    assert_eq!(
        counts.0,
        recount(&after),
        "{ctx}: counters differ from a recount after the sweep"
    );
    after
}

/// The key counter survived the crash: the next key is above every existing one and every
/// journaled one (a returned-but-unjournaled push may have taken more). Returns the new key.
async fn check_next_key<B: Backend>(
    ctx: &str,
    store: &Store<B>,
    items: &[Item],
    journal: &JournalState,
) -> Key {
    let max_key = items
        .last()
        .map(|i| i.key)
        .into_iter()
        .chain(journal.pushed.last().copied())
        .max()
        .unwrap_or(0);
    // Payloads of call 0 are probes: the children count their calls from 1.
    let probe = store
        .push(&queue_id(), NewItem::new(payload(0, 0, 8)))
        .await
        .expect("probe push");
    assert!(
        probe > max_key,
        "{ctx}: next key {probe} is not above {max_key}"
    );
    probe
}

/// A clean close and reopen keeps exactly what was there, the probe push included, and has
/// nothing to repair.
async fn check_clean_reopen<T: CrashTarget>(
    target: &T,
    mode: &str,
    at: &Place,
    ctx: &str,
    items: &[Item],
    probe: Key,
) {
    let backend = target.open(at, mode).await;
    assert_eq!(
        target.repaired(&backend),
        0,
        "{ctx}: a clean close left something to repair"
    );
    let store = Store::new(backend);
    let reopened = dump_all(&store, &queue_id()).await;
    assert_eq!(reopened.len(), items.len() + 1, "{ctx}: reopen item count");
    assert_eq!(
        &reopened[..items.len()],
        items,
        "{ctx}: reopen changed items"
    );
    assert_eq!(
        reopened[items.len()].key,
        probe,
        "{ctx}: reopen lost the probe"
    );
}

async fn dump_all<B: Backend>(store: &Store<B>, queue: &QueueId) -> Vec<Item> {
    let mut dump = store.dump(queue);
    let mut items = Vec::new();
    while let Some(page) = dump.next_page().await.expect("dump page") {
        items.extend(page);
    }
    items
}

fn recount(items: &[Item]) -> BTreeMap<Phase, u64> {
    let mut counts = BTreeMap::new();
    for item in items {
        *counts.entry(item.phase.clone()).or_insert(0) += 1;
    }
    counts
}

// ---- the journal, as the parent reads it -------------------------------------------------

/// What the journal says returned `Ok`, over all rounds so far.
#[derive(Default)]
pub(super) struct JournalState {
    pub(super) opens: usize,
    pub(super) pushed: BTreeSet<Key>,
    pub(super) acked: BTreeSet<Key>,
    /// Items a delete was called for (it may have returned before the kill, unjournaled).
    pub(super) deleting: BTreeSet<Key>,
    pub(super) deleted: BTreeSet<Key>,
    pub(super) claims: u64,
    pub(super) nacked: u64,
    /// The last journaled event of each key.
    pub(super) last: BTreeMap<Key, Event>,
}

pub(super) enum Event {
    Pushed,
    Claimed(Timestamp),
    Acked,
    Nacked,
    Deleting,
    Deleted,
}

impl JournalState {
    pub(super) fn read(path: &Path) -> Self {
        let text = fs::read_to_string(path).unwrap_or_default();
        let mut state = JournalState::default();
        // A line without its newline was torn by the kill: not a confirmed record.
        let whole = text.rfind('\n').map_or("", |i| &text[..=i]);
        for line in whole.lines() {
            let mut words = line.split(' ');
            let verb = words.next().unwrap_or_default();
            if verb == "open" {
                // `open <owner>`: a child had the store open and the queue created.
                state.opens += 1;
                continue;
            }
            let nums: Vec<u64> = words
                .map(|w| {
                    w.parse()
                        .unwrap_or_else(|_| panic!("bad journal line {line:?}"))
                })
                .collect();
            state.apply(verb, &nums, line);
        }
        state
    }

    fn apply(&mut self, verb: &str, nums: &[u64], line: &str) {
        let key = || {
            *nums
                .first()
                .unwrap_or_else(|| panic!("bad journal line {line:?}"))
        };
        match verb {
            "pushed" => {
                for &key in nums {
                    assert!(self.pushed.insert(key), "key {key} pushed twice");
                    self.last.insert(key, Event::Pushed);
                }
            }
            "claimed" => {
                self.claims += 1;
                let until = Timestamp::from_millis(key());
                for &key in &nums[1..] {
                    self.last.insert(key, Event::Claimed(until));
                }
            }
            "acked" => {
                self.acked.insert(key());
                self.last.insert(key(), Event::Acked);
            }
            "nacked" => {
                self.nacked += 1;
                self.last.insert(key(), Event::Nacked);
            }
            "deleting" => {
                self.deleting.insert(key());
                self.last.insert(key(), Event::Deleting);
            }
            "deleted" => {
                self.deleted.insert(key());
                self.last.insert(key(), Event::Deleted);
            }
            _ => panic!("bad journal line {line:?}"),
        }
    }
}
