//! The child's side of a kill -9 run: it works the store (pushes, claims, acks, nacks and
//! deletes) and journals each call that returned `Ok`; and the payloads it pushes, which
//! describe themselves so that the parent can tell a whole one from a torn or mixed-up one.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{CHILD_MAX_LIFETIME, CrashTarget, Place, join, queue_id};
use crate::conformance::support::Rng;
use crate::{Backend, Error, Key, NewItem, QueueConfig, QueueId, Store, Timestamp};

/// The child's side: a store, the journal of what returned, and what it holds.
pub(super) struct Worker<B: Backend> {
    store: Store<B>,
    queue: QueueId,
    owner: String,
    journal: Journal,
    rng: Rng,
    /// Items this child claimed and has not settled.
    held: Vec<Key>,
    /// Items this child acked: it deletes some, so that a backend's space reclamation runs
    /// (and gets killed) too.
    done: Vec<Key>,
    /// Calls made so far (payloads name it).
    n: u64,
}

impl<B: Backend> Worker<B> {
    pub(super) async fn start<T: CrashTarget<Backend = B>>(
        target: &T,
        root: &Path,
        place: &Place,
        mode: &str,
        seed: u64,
    ) -> Self {
        let mut journal = Journal::open(&root.join("journal"));
        let store = Store::new(target.open(place, mode).await);
        let queue = queue_id();
        match store.create_queue(QueueConfig::new(queue.clone())).await {
            Ok(_) | Err(Error::QueueExists(_)) => {}
            Err(e) => panic!("child cannot create the queue: {e}"),
        }
        let owner = format!("worker-{}", std::process::id());
        // Tells the parent the store is open and the queue exists: from here on, kills land
        // in the middle of real work.
        journal.record(&format!("open {owner}"));
        Worker {
            store,
            queue,
            owner,
            journal,
            rng: Rng::new(seed),
            held: Vec::new(),
            done: Vec::new(),
            n: 0,
        }
    }

    /// The operation mix, until killed (or [`CHILD_MAX_LIFETIME`]).
    pub(super) async fn work(&mut self) {
        let started = Instant::now();
        while started.elapsed() < CHILD_MAX_LIFETIME {
            self.n += 1;
            let roll = self.rng.below(100);
            if roll >= 88 && !self.done.is_empty() {
                self.delete_some().await;
            } else if roll < 40 || (self.held.is_empty() && roll >= 65) {
                self.push(roll).await;
            } else if roll < 65 {
                self.claim().await;
            } else if roll < 72 && self.held.len() >= 2 {
                self.ack_batch().await;
            } else {
                self.settle_one(roll).await;
            }
        }
    }

    /// A single push, or a small batch (all or nothing), of payloads of varied sizes.
    async fn push(&mut self, roll: u64) {
        let size = if roll < 30 { 1 } else { 2 + self.rng.below(5) };
        let items = (0..size)
            .map(|i| {
                let len = 16 + self.rng.below(1000) as usize;
                NewItem::new(payload(self.n, i, len)).with_metadata("event", "crash.test")
            })
            .collect();
        let keys = self
            .store
            .push_batch(&self.queue, items)
            .await
            .expect("push");
        self.journal.record(&format!("pushed {}", join(&keys)));
    }

    /// Leases of every length: short ones expire while this child runs (so its own claims
    /// sweep them back), long ones are still open when the kill comes.
    async fn claim(&mut self) {
        let lease = [50, 400, 60_000][self.rng.below(3) as usize];
        let limit = 1 + self.rng.below(8) as usize;
        let items = self
            .store
            .claim(
                &self.queue,
                &self.owner,
                limit,
                Duration::from_millis(lease),
            )
            .await
            .expect("claim");
        let Some(until) = items
            .iter()
            .filter_map(|i| i.lease.as_ref().map(|l| l.until))
            .min()
        else {
            assert!(items.is_empty(), "claimed items have leases");
            return;
        };
        let keys: Vec<Key> = items.iter().map(|i| i.key).collect();
        self.journal
            .record(&format!("claimed {} {}", until.as_millis(), join(&keys)));
        self.held.extend(keys);
    }

    /// An ack or a nack of one held item.
    async fn settle_one(&mut self, roll: u64) {
        let key = self
            .held
            .swap_remove(self.rng.below(self.held.len() as u64) as usize);
        let result = if roll < 85 {
            self.store
                .ack(&self.queue, key, &self.owner)
                .await
                .map(|()| "acked")
        } else {
            let retry_at =
                Timestamp::now().saturating_add(Duration::from_millis(self.rng.below(50)));
            self.store
                .nack(&self.queue, key, &self.owner, retry_at, "crash test nack")
                .await
                .map(|()| "nacked")
        };
        match result {
            Ok(what) => {
                self.journal.record(&format!("{what} {key}"));
                if what == "acked" {
                    self.done.push(key);
                }
            }
            Err(e) => not_ours_any_more(key, &e),
        }
    }

    /// A batched ack: one call for several held items, each ack that succeeded journaled.
    async fn ack_batch(&mut self) {
        let take = self.held.len().min(2 + self.rng.below(3) as usize);
        let keys: Vec<Key> = self.held.drain(..take).collect();
        let results = self
            .store
            .ack_many(&self.queue, &keys, &self.owner)
            .await
            .expect("ack_many");
        for (key, result) in keys.iter().zip(results) {
            match result {
                Ok(()) => {
                    self.journal.record(&format!("acked {key}"));
                    self.done.push(*key);
                }
                Err(e) => not_ours_any_more(*key, &e),
            }
        }
    }

    /// Deletes of acked items, keeping up with the acks. Each is journaled before the call
    /// (`deleting`, so that the parent knows the item may be gone) and after it.
    async fn delete_some(&mut self) {
        for _ in 0..self.done.len().min(4) {
            let key = self
                .done
                .swap_remove(self.rng.below(self.done.len() as u64) as usize);
            self.journal.record(&format!("deleting {key}"));
            let existed = self.store.delete(&self.queue, key).await.expect("delete");
            assert!(existed, "{key} was acked and not deleted, yet it is gone");
            self.journal.record(&format!("deleted {key}"));
        }
    }
}

/// A settle that failed because the item is not this child's any more: its lease ran out
/// before the call (and if this child claimed it again and settled that claim first, it may
/// even be deleted). Any other error fails the child.
fn not_ours_any_more(key: Key, e: &Error) {
    if !matches!(
        e,
        Error::NotLeaseOwner { .. } | Error::PhaseConflict { .. } | Error::ItemNotFound { .. }
    ) {
        panic!("settling item {key}: {e}");
    }
}

/// The child's append-only record of calls that returned `Ok`.
struct Journal(File);

impl Journal {
    fn open(path: &Path) -> Self {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open journal");
        // Cut a torn last line (a kill in the middle of a write) so that every line in the
        // file is whole and the next child's lines do not glue onto it.
        let content = fs::read(path).expect("read journal");
        let whole = content
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        if whole < content.len() {
            file.set_len(whole as u64).expect("truncate journal");
        }
        Journal(file)
    }

    /// Appends one line in a single write and syncs it: once this returns, the parent sees
    /// the line after the kill.
    fn record(&mut self, line: &str) {
        self.0
            .write_all(format!("{line}\n").as_bytes())
            .expect("write journal");
        self.0.sync_data().expect("sync journal");
    }
}

/// Payload `i` of the child's `n`-th call: a header saying what it is, then `len` filler
/// bytes that depend on `n` and `i`, so [`check_payload`] can tell a whole payload from a
/// torn or mixed-up one.
pub(super) fn payload(n: u64, i: u64, len: usize) -> Vec<u8> {
    let mut bytes = format!("p{n}.{i}.{len}:").into_bytes();
    bytes.resize(bytes.len() + len, filler(n, i));
    bytes
}

fn filler(n: u64, i: u64) -> u8 {
    b'a' + ((n * 7 + i) % 26) as u8
}

/// Checks that `bytes` is a whole payload made by [`payload`].
pub(super) fn check_payload(ctx: &str, key: Key, bytes: &[u8]) {
    let bad = || panic!("{ctx}: item {key} has a damaged payload: {bytes:?}");
    let Some(colon) = bytes.iter().position(|b| *b == b':') else {
        bad()
    };
    let header = std::str::from_utf8(&bytes[..colon]).unwrap_or_else(|_| bad());
    let nums: Vec<u64> = header
        .strip_prefix('p')
        .unwrap_or_else(|| bad())
        .split('.')
        .map(|w| w.parse().unwrap_or_else(|_| bad()))
        .collect();
    let [n, i, len] = nums[..] else { bad() };
    let body = &bytes[colon + 1..];
    if body.len() as u64 != len || body.iter().any(|b| *b != filler(n, i)) {
        bad();
    }
}

#[cfg(test)]
mod tests {
    use super::{check_payload, payload};

    #[test]
    fn payloads_check_whole_and_catch_torn_or_mixed_ones() {
        let p = payload(12, 3, 40);
        check_payload("t", 1, &p);
        let torn = std::panic::catch_unwind(|| check_payload("t", 1, &p[..p.len() - 1]));
        assert!(torn.is_err(), "a torn payload passed");
        let mut mixed = p.clone();
        let last = mixed.len() - 1;
        mixed[last] = payload(12, 4, 1)[payload(12, 4, 1).len() - 1];
        let mixed = std::panic::catch_unwind(|| check_payload("t", 1, &mixed));
        assert!(mixed.is_err(), "a mixed-up payload passed");
    }
}
