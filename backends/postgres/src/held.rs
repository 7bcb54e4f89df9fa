//! Claims, prunes and counter shards while a snapshot is held open.
//!
//! While another session holds a snapshot open, vacuum can free no row version that died
//! after it was taken, and the server cannot mark their index entries dead. A statement
//! that reads an index from its start then reads those entries again at every call:
//! - a claim, the due index's entries of every item claimed since (and in its sweep the
//!   entries of the lease rows deleted since whose lease end has passed: one per claim,
//!   since schema version 13, where it was one per item);
//! - retention's prune, the primary key's entries of every item it removed since, and of
//!   every version the items it passes over left behind;
//!
//! and every addition to a counter row finds the row through all its versions since.
//! Each call then costs more than the last (see `v6.sql` for the figures). While the
//! backend sees such a snapshot (one at least as old as
//! [`crate::PostgresOptions::snapshot_warning`] at the watcher's last look), it remembers,
//! per queue, where its last call ended, and the next starts after it (`claim_after`, which
//! does not sweep, and `prune_after`). Every so often it runs the full statement instead,
//! which takes what landed behind the position since:
//! - for claims, at least every [`FULL_EVERY`]: an item whose push committed late, one
//!   pushed with a `not_before` already past, a claim rolled back; and the sweep releases
//!   expired leases. The order of claims then holds only up to those items, which come at
//!   most that late;
//! - for prunes, once per the warning's threshold (a minute by default): an item that
//!   reached the phase after items with larger keys (a delivery that succeeded on a later
//!   attempt). Retention can wait, and a full step reads everything removed since the
//!   snapshot was taken.
//!
//! Counter rows move to new shards every period instead ([`CounterShards`]). Once no
//! snapshot is that old, the positions are forgotten, every call is the full one again, and
//! the counter rows are folded back.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use hookspool::{Item, Phase, QueueId};

use crate::rows::{key_param, ms};

/// The longest time between two full claims of a queue while a snapshot is held.
pub(crate) const FULL_EVERY: Duration = Duration::from_secs(1);

/// A position in claim order: `not_before` in milliseconds, then the key.
pub(crate) type ClaimPosition = (i64, i64);

/// What a call runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plan<P> {
    /// The full statement, from the start of its index (a claim with its sweep).
    Full,
    /// From after the position.
    After(P),
}

/// Per `K` (a queue, or a queue's phase): the position up to which this backend's calls
/// have done everything, and when its last full call started.
#[derive(Debug)]
pub(crate) struct Positions<K, P>(Mutex<HashMap<K, Bound<P>>>);

impl<K, P> Default for Positions<K, P> {
    fn default() -> Self {
        Positions(Mutex::new(HashMap::new()))
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Bound<P> {
    after: Option<P>,
    full_at: Instant,
}

/// Where the claims of each queue start.
pub(crate) type Claims = Positions<QueueId, ClaimPosition>;

/// Where retention's prunes of each queue's phase start (after a key).
pub(crate) type Prunes = Positions<(QueueId, Phase), i64>;

impl<K: Hash + Eq + Clone, P: Ord + Copy> Positions<K, P> {
    /// What the next call for `key` runs: `held` says whether a snapshot is held open (when
    /// not, every position is forgotten), and `every` is the longest time between two full
    /// calls.
    pub(crate) fn plan(&self, key: &K, held: bool, every: Duration) -> Plan<P> {
        let mut bounds = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !held {
            bounds.clear();
            return Plan::Full;
        }
        let now = Instant::now();
        match bounds.get_mut(key) {
            Some(Bound {
                after: Some(p),
                full_at,
            }) if now.duration_since(*full_at) < every => Plan::After(*p),
            Some(b) => {
                b.full_at = now;
                Plan::Full
            }
            None => {
                bounds.insert(
                    key.clone(),
                    Bound {
                        after: None,
                        full_at: now,
                    },
                );
                Plan::Full
            }
        }
    }

    /// Moves the position for `key` to `to`, if that is further: it never moves back. Does
    /// nothing when no snapshot was held when the call was planned, or the positions were
    /// forgotten since.
    pub(crate) fn advance(&self, key: &K, to: Option<P>) {
        let mut bounds = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bound) = bounds.get_mut(key) {
            bound.after = bound.after.max(to);
        }
    }

    /// How many keys have a position: their calls start from it.
    pub(crate) fn positioned(&self) -> usize {
        let bounds = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        bounds.values().filter(|b| b.after.is_some()).count()
    }
}

/// The number of epochs counter shards go through before they come round again: the
/// largest shard, [`crate::connect::COUNTER_SHARDS`] times this, stays a 32-bit integer.
const EPOCHS: u128 = 30_000_000;

/// The counter shards of the pool's sessions while a snapshot is held open.
///
/// Every statement that changes phases adds to its session's counter row of the queue's
/// generation and phase. Under a held snapshot each addition leaves the row's old version
/// behind, and finding the row (`ON CONFLICT` looks it up) visits every version since the
/// snapshot was taken: every addition costs more than the last. So while the backend sees
/// such a snapshot, each session moves to a new shard every period (the claims' full-claim
/// period, a second by default): `base + COUNTER_SHARDS × epoch`, where `base` is the shard
/// it took when it connected, so that no two sessions share one. A count sums every shard
/// of the generation, so it stays exact. Once no snapshot is held, sessions go back to their
/// own shard, and the watcher folds the rows of the epochs into them (`fold_counts`).
/// `S` names a session: the pool's object id.
#[derive(Debug)]
pub(crate) struct CounterShards<S>(Mutex<ShardState<S>>);

#[derive(Debug)]
struct ShardState<S> {
    /// When this backend first saw the snapshot it sees held now.
    since: Option<Instant>,
    /// The epoch of each session not on its own shard.
    sessions: HashMap<S, i32>,
    /// Sessions have written to shards of epochs since the last fold.
    to_fold: bool,
}

impl<S> Default for CounterShards<S> {
    fn default() -> Self {
        CounterShards(Mutex::new(ShardState {
            since: None,
            sessions: HashMap::new(),
            to_fold: false,
        }))
    }
}

impl<S: Hash + Eq> CounterShards<S> {
    /// The epoch `session` must move to before its next statement, if it is not on it (0:
    /// its own shard): `held` and `every` as for [`Positions::plan`].
    pub(crate) fn due(&self, session: &S, held: bool, every: Duration) -> Option<i32> {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let want = if held {
            let since = *state.since.get_or_insert_with(Instant::now);
            state.to_fold = true;
            let epoch = since.elapsed().as_nanos() / every.as_nanos().max(1) % EPOCHS;
            1 + i32::try_from(epoch).unwrap_or(0)
        } else {
            state.since = None;
            0
        };
        let have = state.sessions.get(session).copied().unwrap_or(0);
        (have != want).then_some(want)
    }

    /// Records that `session` moved to `epoch`.
    pub(crate) fn moved(&self, session: S, epoch: i32) {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if epoch == 0 {
            state.sessions.remove(&session);
        } else {
            state.sessions.insert(session, epoch);
        }
    }

    /// Whether the rows of epochs are to be folded now: once no snapshot is `held` any
    /// more, after sessions wrote to them. Say [`CounterShards::fold_failed`] if it fails.
    pub(crate) fn take_fold(&self, held: bool) -> bool {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        !held && std::mem::take(&mut state.to_fold)
    }

    /// The fold did not happen: try again at the next look.
    pub(crate) fn fold_failed(&self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .to_fold = true;
    }
}

/// Where a claim at `now` (milliseconds) of up to `limit` items that took `items` leaves
/// everything due taken up to: the last item in claim order, or, when fewer than `limit`
/// came (everything due and not locked by another session was taken), just before `now`,
/// where items pushed later begin.
pub(crate) fn claimed_up_to(items: &[Item], limit: usize, now: i64) -> Option<ClaimPosition> {
    let last = items
        .iter()
        .map(|i| (ms(i.not_before), key_param(i.key)))
        .max();
    if items.len() < limit {
        last.max(Some((now.saturating_sub(1), i64::MAX)))
    } else {
        last
    }
}

#[cfg(test)]
mod tests {
    use hookspool::{Key, Phase, Timestamp};

    use super::*;

    fn item(key: Key, not_before: u64) -> Item {
        Item {
            key,
            payload: Vec::new(),
            metadata: std::collections::BTreeMap::new(),
            phase: Phase::IN_FLIGHT,
            attempts: 1,
            created_at: Timestamp::from_millis(0),
            updated_at: Timestamp::from_millis(0),
            not_before: Timestamp::from_millis(not_before),
            lease: None,
            last_error: None,
        }
    }

    fn queue() -> QueueId {
        QueueId::new("q").expect("queue id")
    }

    #[test]
    fn without_a_held_snapshot_every_call_is_full_and_positions_are_forgotten() {
        let claims = Claims::default();
        let q = queue();
        assert_eq!(claims.plan(&q, true, FULL_EVERY), Plan::Full);
        claims.advance(&q, Some((100, 7)));
        assert_eq!(claims.positioned(), 1);
        assert_eq!(claims.plan(&q, true, FULL_EVERY), Plan::After((100, 7)));
        assert_eq!(claims.plan(&q, false, FULL_EVERY), Plan::Full);
        assert_eq!(claims.positioned(), 0);
        // Forgotten: the next call under a snapshot starts from the beginning again.
        assert_eq!(claims.plan(&q, true, FULL_EVERY), Plan::Full);
        // A call planned while no snapshot was held records nothing.
        let other = QueueId::new("other").expect("queue id");
        claims.advance(&other, Some((100, 9)));
        assert_eq!(claims.plan(&other, true, FULL_EVERY), Plan::Full);
    }

    #[test]
    fn a_position_never_moves_back() {
        let prunes = Prunes::default();
        let done = (queue(), Phase::DONE);
        assert_eq!(prunes.plan(&done, true, FULL_EVERY), Plan::Full);
        prunes.advance(&done, Some(40));
        prunes.advance(&done, Some(12));
        prunes.advance(&done, None);
        assert_eq!(prunes.plan(&done, true, FULL_EVERY), Plan::After(40));
        // Another phase of the same queue has its own.
        let dead = (queue(), Phase::DEAD);
        assert_eq!(prunes.plan(&dead, true, FULL_EVERY), Plan::Full);
    }

    #[test]
    fn a_claim_ends_at_its_last_item_or_just_before_now_when_fewer_came() {
        // A full batch: the last item in claim order, whatever order the rows came in.
        let batch = [item(5, 200), item(3, 100), item(4, 200)];
        assert_eq!(claimed_up_to(&batch, 3, 900), Some((200, 5)));
        // Fewer than asked for: everything due at 900 was taken.
        assert_eq!(claimed_up_to(&batch, 10, 900), Some((899, i64::MAX)));
        assert_eq!(claimed_up_to(&[], 10, 900), Some((899, i64::MAX)));
        // An item due after `now` - 1 (a `now` earlier than an item's time, as tests pass).
        assert_eq!(claimed_up_to(&[item(8, 950)], 10, 900), Some((950, 8)));
        // Nothing asked, nothing taken: no position.
        assert_eq!(claimed_up_to(&[], 0, 900), None);
        // The start of time: no underflow.
        assert_eq!(claimed_up_to(&[], 1, i64::MIN), Some((i64::MIN, i64::MAX)));
    }

    #[test]
    fn sessions_move_to_a_new_shard_each_period_while_held_and_back_after() {
        let shards = CounterShards::<u32>::default();
        let (a, b) = (1, 2);
        assert_eq!(
            shards.due(&a, false, Duration::MAX),
            None,
            "on its own shard"
        );
        assert!(!shards.take_fold(false), "nothing to fold");
        // Held: the first period is epoch 1, for every session.
        assert_eq!(shards.due(&a, true, Duration::MAX), Some(1));
        shards.moved(a, 1);
        assert_eq!(shards.due(&a, true, Duration::MAX), None);
        assert_eq!(shards.due(&b, true, Duration::MAX), Some(1));
        assert!(!shards.take_fold(true), "no fold while held");
        // With periods of a nanosecond, the epoch moves on at every look.
        assert_ne!(shards.due(&a, true, Duration::from_nanos(1)), None);
        // Released: back to the own shard, and the epochs' rows are folded, once.
        assert_eq!(shards.due(&a, false, Duration::MAX), Some(0));
        shards.moved(a, 0);
        assert_eq!(shards.due(&a, false, Duration::MAX), None);
        assert_eq!(shards.due(&b, false, Duration::MAX), None, "b never moved");
        assert!(shards.take_fold(false));
        assert!(!shards.take_fold(false));
        shards.fold_failed();
        assert!(shards.take_fold(false), "a failed fold comes again");
    }

    #[test]
    fn a_full_call_comes_again_once_the_period_has_passed() {
        let claims = Claims::default();
        let q = queue();
        assert_eq!(claims.plan(&q, true, Duration::ZERO), Plan::Full);
        claims.advance(&q, Some((10, 1)));
        // With no time between full calls, every call is a full one.
        assert_eq!(claims.plan(&q, true, Duration::ZERO), Plan::Full);
        assert_eq!(claims.plan(&q, true, Duration::MAX), Plan::After((10, 1)));
    }
}
