//! The queue model: queue ids, phases, items, timestamps and the selectors the operations take.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// An item's key: assigned by `push`, strictly increasing within a queue (FIFO order), never
/// reused by that queue (not even after `reset`).
pub type Key = u64;

/// Milliseconds since the Unix epoch. All times in the model are wall-clock timestamps so
/// they survive restarts; the clock is injectable (see [`crate::Clock`]) so tests control it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Timestamp(ms)
    }

    /// Builds a timestamp from milliseconds since the epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// This time plus a duration, saturating at the far future.
    #[must_use]
    pub fn saturating_add(self, d: Duration) -> Self {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(ms))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Longest allowed queue id, in bytes.
pub const MAX_QUEUE_ID_LEN: usize = 128;
/// Longest allowed phase name, in bytes.
pub const MAX_PHASE_LEN: usize = 64;

/// A validated queue id.
///
/// **Rule:** 1 to 128 ASCII characters from `A–Z a–z 0–9 _ - .`, starting with a letter or a
/// digit. Ids are case-sensitive. The rule keeps ids safe in URLs, file names and shell
/// commands without quoting.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct QueueId(String);

impl QueueId {
    /// Validates and wraps a queue id.
    ///
    /// # Errors
    /// [`Error::InvalidQueueId`] saying what breaks the rule.
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        let reason = if id.is_empty() {
            Some("must not be empty")
        } else if id.len() > MAX_QUEUE_ID_LEN {
            Some("must be at most 128 characters")
        } else if !id.as_bytes()[0].is_ascii_alphanumeric() {
            Some("must start with a letter or a digit")
        } else if !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            Some("may only contain letters, digits, '_', '-' and '.'")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidQueueId { id, reason }),
            None => Ok(QueueId(id)),
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<&str> for QueueId {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self> {
        QueueId::new(s)
    }
}

impl std::str::FromStr for QueueId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        QueueId::new(s)
    }
}

impl<'de> Deserialize<'de> for QueueId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        QueueId::new(s).map_err(serde::de::Error::custom)
    }
}

/// An item's phase: one of the lifecycle phases or a name of the caller's own.
///
/// Lifecycle: [`Phase::PENDING`] → (claim) → [`Phase::IN_FLIGHT`] → (ack) → [`Phase::DONE`], or
/// (nack / lease expiry) back to pending; the consumer moves items it gives up on to
/// [`Phase::DEAD`]; items older than the queue's TTL go to [`Phase::EXPIRED`].
///
/// **Rule for names:** 1 to 64 characters from `a–z 0–9 _ - .`, starting with a letter.
/// Every phase, built-in or not, can be counted, listed and moved into with `update_phase`
/// (except `in_flight`, which only `claim` enters, so that every in-flight item has a lease).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Phase(std::borrow::Cow<'static, str>);

impl Phase {
    /// Waiting to be handed out (once its not-before time has come).
    pub const PENDING: Phase = Phase(std::borrow::Cow::Borrowed("pending"));
    /// Leased to a consumer by `claim`; returns to pending if the lease expires.
    pub const IN_FLIGHT: Phase = Phase(std::borrow::Cow::Borrowed("in_flight"));
    /// Acknowledged (kept only when the queue's retention is [`Retention::Keep`]).
    pub const DONE: Phase = Phase(std::borrow::Cow::Borrowed("done"));
    /// Given up on; kept for inspection and replay.
    pub const DEAD: Phase = Phase(std::borrow::Cow::Borrowed("dead"));
    /// Older than the queue's TTL before it was handed out; never handed out.
    pub const EXPIRED: Phase = Phase(std::borrow::Cow::Borrowed("expired"));
    /// Quarantined: the backend found the item's stored data damaged (it failed its
    /// checksum) when it read it, and moved it here, with the damage in `last_error`, so that
    /// one bad item stops nothing else. Never handed out; `fetch` and `dump` return it with
    /// an empty payload; remove it with `delete`.
    pub const CORRUPT: Phase = Phase(std::borrow::Cow::Borrowed("corrupt"));

    /// Validates a phase name (built-in or user-defined).
    ///
    /// # Errors
    /// [`Error::InvalidPhase`] saying what breaks the rule.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let reason = if name.is_empty() {
            Some("must not be empty")
        } else if name.len() > MAX_PHASE_LEN {
            Some("must be at most 64 characters")
        } else if !name.as_bytes()[0].is_ascii_lowercase() {
            Some("must start with a lowercase letter")
        } else if !name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
        }) {
            Some("may only contain lowercase letters, digits, '_', '-' and '.'")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidPhase { name, reason }),
            None => Ok(match name.as_str() {
                "pending" => Phase::PENDING,
                "in_flight" => Phase::IN_FLIGHT,
                "done" => Phase::DONE,
                "dead" => Phase::DEAD,
                "expired" => Phase::EXPIRED,
                "corrupt" => Phase::CORRUPT,
                _ => Phase(std::borrow::Cow::Owned(name)),
            }),
        }
    }

    /// The phase name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Phase {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Phase::new(s)
    }
}

impl TryFrom<&str> for Phase {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self> {
        Phase::new(s)
    }
}

impl<'de> Deserialize<'de> for Phase {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Phase::new(s).map_err(serde::de::Error::custom)
    }
}

/// What `ack` does with an item.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Retention {
    /// Keep acknowledged items in phase [`Phase::DONE`] (the default: they can be inspected
    /// and counted; remove them with `reset`, `delete` or `pop`).
    #[default]
    Keep,
    /// Remove an item as soon as it is acknowledged.
    Remove,
}

/// How long items stay in the settled phases before the retention pass removes them (see
/// [`crate::Store::prune`] and [`crate::Store::spawn_retention`]). `None`: forever (the
/// default). An item's time in a phase counts from its `updated_at`, the moment it got there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Retain {
    /// How long an item stays in [`Phase::DONE`].
    #[serde(with = "opt_duration_ms")]
    pub done: Option<Duration>,
    /// How long an item stays in [`Phase::DEAD`].
    #[serde(with = "opt_duration_ms")]
    pub dead: Option<Duration>,
    /// How long an item stays in [`Phase::EXPIRED`].
    #[serde(with = "opt_duration_ms")]
    pub expired: Option<Duration>,
}

impl Retain {
    /// The shortest period a queue may keep items for: one second.
    pub const MIN: Duration = Duration::from_secs(1);

    /// Every item kept forever.
    pub const FOREVER: Retain = Retain {
        done: None,
        dead: None,
        expired: None,
    };

    /// Metadata keys under which a backend whose stored layout has no field for these
    /// periods keeps them (see [`QueueConfig::stored_metadata`]), in the order
    /// `done`, `dead`, `expired`. Queue metadata of one's own may not use them.
    pub const METADATA_KEYS: [&str; 3] = [
        "hookspool.retain_done",
        "hookspool.retain_dead",
        "hookspool.retain_expired",
    ];

    /// The phases with a period, each with it.
    pub fn periods(&self) -> impl Iterator<Item = (Phase, Duration)> + use<> {
        [
            (Phase::DONE, self.done),
            (Phase::DEAD, self.dead),
            (Phase::EXPIRED, self.expired),
        ]
        .into_iter()
        .filter_map(|(phase, period)| period.map(|p| (phase, p)))
    }

    /// Whether any phase has a period.
    pub fn is_forever(&self) -> bool {
        *self == Retain::FOREVER
    }

    fn slots(&mut self) -> [&mut Option<Duration>; 3] {
        [&mut self.done, &mut self.dead, &mut self.expired]
    }

    /// Checks every period: at least [`Retain::MIN`].
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the setting.
    pub fn check(&self) -> Result<()> {
        let mut copy = *self;
        for (slot, key) in copy.slots().into_iter().zip(Retain::METADATA_KEYS) {
            if slot.is_some_and(|d| d < Retain::MIN) {
                let name = key.trim_start_matches("hookspool.");
                return Err(Error::invalid(format!(
                    "{name} must be at least 1s (leave it unset to keep items forever)"
                )));
            }
        }
        Ok(())
    }
}

/// A queue's settings.
///
/// Its `Debug` masks metadata values whose key contains `secret` (layers above the engine
/// keep credentials there, such as a callback channel's signing secret).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueConfig {
    /// The queue's id.
    pub id: QueueId,
    /// Optional item TTL: a pending item older than this (since it was pushed) is never handed
    /// out; it moves to phase [`Phase::EXPIRED`], where it stays, counted, until removed.
    #[serde(with = "opt_duration_ms")]
    pub ttl: Option<Duration>,
    /// What `ack` does with an item.
    pub retention: Retention,
    /// How long settled items stay (forever by default).
    #[serde(default)]
    pub retain: Retain,
    /// When the queue was created. Set by `create_queue`; kept by `update_queue`.
    pub created_at: Timestamp,
    /// Free-form metadata.
    pub metadata: BTreeMap<String, String>,
}

impl QueueConfig {
    /// Settings with no TTL, [`Retention::Keep`] and no metadata.
    pub fn new(id: QueueId) -> Self {
        QueueConfig {
            id,
            ttl: None,
            retention: Retention::Keep,
            retain: Retain::FOREVER,
            created_at: Timestamp(0),
            metadata: BTreeMap::new(),
        }
    }

    /// Sets the item TTL.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Sets what `ack` does.
    #[must_use]
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Sets how long settled items stay.
    #[must_use]
    pub fn with_retain(mut self, retain: Retain) -> Self {
        self.retain = retain;
        self
    }

    /// The metadata to store for a backend whose stored layout has no field for
    /// [`QueueConfig::retain`]: `metadata` plus each period set, in milliseconds, under
    /// [`Retain::METADATA_KEYS`]. [`QueueConfig::restore_stored_metadata`] reverses it. The
    /// journal and sled layouts were fixed before retention existed; this keeps every store
    /// written before readable, with no new layout.
    pub fn stored_metadata(&self) -> BTreeMap<String, String> {
        let mut metadata = self.metadata.clone();
        let mut retain = self.retain;
        for (slot, key) in retain.slots().into_iter().zip(Retain::METADATA_KEYS) {
            if let Some(period) = slot {
                metadata.insert(key.to_owned(), period.as_millis().to_string());
            }
        }
        metadata
    }

    /// Moves what [`QueueConfig::stored_metadata`] added from `metadata` back into `retain`.
    ///
    /// # Errors
    /// [`Error::Corrupted`] for an entry that is not a number of milliseconds.
    pub fn restore_stored_metadata(&mut self) -> Result<()> {
        for (slot, key) in self.retain.slots().into_iter().zip(Retain::METADATA_KEYS) {
            *slot = match self.metadata.remove(key) {
                None => None,
                Some(ms) => Some(Duration::from_millis(ms.parse().map_err(|_| {
                    Error::corrupted(format!(
                        "queue `{}`: stored {key} is {ms:?}, not milliseconds",
                        self.id
                    ))
                })?)),
            };
        }
        Ok(())
    }

    /// Adds a metadata entry.
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
}

impl fmt::Debug for QueueConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueConfig")
            .field("id", &self.id)
            .field("ttl", &self.ttl)
            .field("retention", &self.retention)
            .field("retain", &self.retain)
            .field("created_at", &self.created_at)
            .field("metadata", &masked(&self.metadata))
            .finish()
    }
}

/// Metadata as `Debug` shows it: values whose key contains `secret` masked.
fn masked(metadata: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    metadata
        .iter()
        .map(|(k, v)| {
            let v = if k.contains("secret") {
                "****"
            } else {
                v.as_str()
            };
            (k.as_str(), v)
        })
        .collect()
}

mod opt_duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    #[allow(clippy::ref_option)] // serde's `with` hands us `&Option<T>`
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// The lease of an in-flight item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The consumer that claimed the item.
    pub owner: String,
    /// When the lease runs out and the item returns to pending.
    pub until: Timestamp,
}

/// A stored item.
///
/// Its `Debug` masks metadata values whose key contains `secret` (layers above the engine
/// keep credentials there, such as a subscription's signing secret).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Assigned by `push`; increasing within the queue.
    pub key: Key,
    /// The payload, any bytes (JSON is the common case).
    pub payload: Vec<u8>,
    /// The item's phase.
    pub phase: Phase,
    /// How many times the item has been claimed (an expired lease counts as an attempt).
    pub attempts: u32,
    /// When it was pushed.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// It is not handed out by `claim` before this time.
    pub not_before: Timestamp,
    /// Present exactly while the item is in phase `in_flight`.
    pub lease: Option<Lease>,
    /// The error recorded by the last `nack` (or set with a phase change).
    pub last_error: Option<String>,
    /// Small string map: event name, delivery id, headers.
    pub metadata: BTreeMap<String, String>,
}

impl fmt::Debug for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Item")
            .field("key", &self.key)
            .field("payload", &String::from_utf8_lossy(&self.payload))
            .field("phase", &self.phase)
            .field("attempts", &self.attempts)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .field("not_before", &self.not_before)
            .field("lease", &self.lease)
            .field("last_error", &self.last_error)
            .field("metadata", &masked(&self.metadata))
            .finish()
    }
}

/// An item to push.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewItem {
    /// The payload.
    pub payload: Vec<u8>,
    /// Metadata to store with it.
    pub metadata: BTreeMap<String, String>,
    /// Not handed out before this time (`None`: due at once).
    pub not_before: Option<Timestamp>,
}

impl NewItem {
    /// An item with this payload, no metadata, due at once.
    pub fn new(payload: impl Into<Vec<u8>>) -> Self {
        NewItem {
            payload: payload.into(),
            ..NewItem::default()
        }
    }

    /// Adds a metadata entry.
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Schedules the item: it is not claimed before `at`.
    #[must_use]
    pub fn not_before(mut self, at: Timestamp) -> Self {
        self.not_before = Some(at);
        self
    }
}

/// A page of items: which phase, where to start, how many, in which direction.
///
/// Items are ordered by key. `after` is a cursor (the last key of the previous page) and is
/// the cheap way to page through a large queue; `offset` skips that many matching items
/// after the cursor and costs time proportional to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// Only items in this phase (`None`: every phase).
    pub phase: Option<Phase>,
    /// Start after this key (before it, when `reverse`).
    pub after: Option<Key>,
    /// Skip this many matching items first.
    pub offset: usize,
    /// At most this many items.
    pub limit: usize,
    /// Newest first.
    pub reverse: bool,
}

impl Page {
    /// The first `limit` items of every phase, oldest first.
    pub fn first(limit: usize) -> Self {
        Page {
            phase: None,
            after: None,
            offset: 0,
            limit,
            reverse: false,
        }
    }

    /// Restricts the page to one phase.
    #[must_use]
    pub fn phase(mut self, phase: Phase) -> Self {
        self.phase = Some(phase);
        self
    }

    /// Skips `offset` matching items.
    #[must_use]
    pub fn offset(mut self, offset: usize) -> Self {
        self.offset = offset;
        self
    }

    /// Starts after this key.
    #[must_use]
    pub fn after(mut self, key: Key) -> Self {
        self.after = Some(key);
        self
    }

    /// Newest first.
    #[must_use]
    pub fn reverse(mut self) -> Self {
        self.reverse = true;
        self
    }
}

/// What `fetch` and `pop` select.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Selector {
    /// The item with this key, whatever its phase.
    Key(Key),
    /// A page of items.
    Page(Page),
}

/// A `claim` request: lease up to `limit` due pending items to `owner` until `lease_until`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The consumer taking the items; `ack`/`nack` must name the same owner.
    pub owner: String,
    /// At most this many items.
    pub limit: usize,
    /// When the leases run out.
    pub lease_until: Timestamp,
    /// Whether the claim must be durable when `claim` returns (`true` for
    /// [`crate::Store::claim`]). With `false` a backend may return before the claim is
    /// stored durably: a crash can then undo it, and the items are pending again with their
    /// attempt not counted, as if they had never been claimed. Any durable write that
    /// returns after the claim makes the claim durable too. Either way the items it returns
    /// are durable themselves (a push still waiting for its sync is waited for). A backend
    /// that cannot tell the two apart treats every claim as durable. Not part of a stored
    /// record.
    #[serde(skip, default = "durable_by_default")]
    pub durable: bool,
}

fn durable_by_default() -> bool {
    true
}

/// What a phase change requires of the item before it is applied (compare-and-set).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expect {
    /// The item must be in this phase.
    pub phase: Option<Phase>,
    /// The item must be leased to this owner (implies phase `in_flight`).
    pub lease_owner: Option<String>,
}

/// What a phase change does to the item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Move the item (see [`Move`]).
    Move(Move),
    /// Remove the item.
    Remove,
}

/// Moves an item to `phase`. Leaving `in_flight` drops the lease. Entering `pending` sets
/// `not_before` (to the given time, or to now). `error`, when given, replaces `last_error`;
/// `metadata`, when given, replaces the item's metadata (all of it). Moving into `in_flight`
/// is refused: only `claim` leases items. Staying in the same phase is allowed (to change
/// only the error or the metadata).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    /// The new phase.
    pub phase: Phase,
    /// For `pending`: not handed out before this time.
    pub not_before: Option<Timestamp>,
    /// A new `last_error`.
    pub error: Option<String>,
    /// New metadata, replacing the old.
    pub metadata: Option<BTreeMap<String, String>>,
}

impl Move {
    /// A move to `phase` that changes nothing else.
    pub fn to(phase: Phase) -> Self {
        Move {
            phase,
            not_before: None,
            error: None,
            metadata: None,
        }
    }

    /// Sets `not_before` (used when the new phase is `pending`).
    #[must_use]
    pub fn not_before(mut self, at: Timestamp) -> Self {
        self.not_before = Some(at);
        self
    }

    /// Records an error as the item's `last_error`.
    #[must_use]
    pub fn error(mut self, error: impl Into<String>) -> Self {
        self.error = Some(error.into());
        self
    }

    /// Replaces the item's metadata.
    #[must_use]
    pub fn metadata(mut self, metadata: BTreeMap<String, String>) -> Self {
        self.metadata = Some(metadata);
        self
    }
}

impl From<Move> for Action {
    fn from(m: Move) -> Self {
        Action::Move(m)
    }
}

/// A phase change: `expect` is checked and `action` applied in one atomic step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The precondition.
    pub expect: Expect,
    /// The change.
    pub action: Action,
}

impl Transition {
    /// Removes the item if it is in `phase`.
    pub fn remove_from(phase: Phase) -> Self {
        Transition {
            expect: Expect {
                phase: Some(phase),
                lease_owner: None,
            },
            action: Action::Remove,
        }
    }
}

/// Item counts by phase, as kept by the backend's counters. Phases with no items are absent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseCounts(pub BTreeMap<Phase, u64>);

impl PhaseCounts {
    /// Items in every phase.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// Items in one phase.
    pub fn get(&self, phase: &Phase) -> u64 {
        self.0.get(phase).copied().unwrap_or(0)
    }

    /// Adds `n` to a phase's count (used by backends).
    pub fn add(&mut self, phase: &Phase, n: u64) {
        *self.0.entry(phase.clone()).or_insert(0) += n;
    }

    /// Subtracts `n` from a phase's count, dropping the entry at zero (used by backends).
    pub fn sub(&mut self, phase: &Phase, n: u64) {
        if let Some(c) = self.0.get_mut(phase) {
            *c = c.saturating_sub(n);
            if *c == 0 {
                self.0.remove(phase);
            }
        }
    }
}

/// What a `sweep` (or the sweep at the start of `claim`) did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepReport {
    /// In-flight items whose lease had run out, returned to pending.
    pub released: u64,
    /// Pending items older than the queue's TTL, moved to `expired`.
    pub expired: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_id_rule() {
        for ok in ["a", "orders", "Orders.v1", "0-x_y", &"a".repeat(128)] {
            assert!(QueueId::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".a", "a b", "a/b", "é", &"a".repeat(129), "a\0"] {
            assert!(
                matches!(QueueId::new(bad), Err(Error::InvalidQueueId { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn phase_rule_and_builtins() {
        assert_eq!(Phase::new("pending").ok(), Some(Phase::PENDING));
        assert_eq!(Phase::new("in_flight").ok(), Some(Phase::IN_FLIGHT));
        assert!(Phase::new("needs-review").is_ok());
        for bad in ["", "Pending", "1x", "a b", "_x", &"a".repeat(65)] {
            assert!(
                matches!(Phase::new(bad), Err(Error::InvalidPhase { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn queue_debug_masks_secret_metadata() {
        let q = QueueConfig::new(QueueId::new("q").unwrap())
            .with_metadata("secret", "whsec_supersecret")
            .with_metadata("team", "billing");
        let shown = format!("{q:?}");
        assert!(!shown.contains("supersecret"), "{shown}");
        assert!(shown.contains("billing"), "{shown}");
    }

    #[test]
    fn item_debug_masks_secret_metadata() {
        let item = Item {
            key: 1,
            payload: b"{}".to_vec(),
            phase: Phase::PENDING,
            attempts: 0,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
            not_before: Timestamp(0),
            lease: None,
            last_error: None,
            metadata: BTreeMap::from([
                ("secret".to_owned(), "whsec_hidden".to_owned()),
                ("previous_secret".to_owned(), "whsec_old".to_owned()),
                ("event".to_owned(), "order.paid".to_owned()),
            ]),
        };
        let shown = format!("{item:?}");
        assert!(!shown.contains("whsec_"), "{shown}");
        assert!(shown.contains("order.paid"));
    }

    #[test]
    fn phase_counts_drop_zero_entries() {
        let mut c = PhaseCounts::default();
        c.add(&Phase::PENDING, 2);
        c.sub(&Phase::PENDING, 2);
        assert!(c.0.is_empty());
        assert_eq!(c.total(), 0);
    }
}
