//! A deliberately naive in-memory model of the `Backend` contract, random operation
//! sequences over it, and the runner that compares a real backend with the model after every
//! step.
//!
//! The model is written from the contract text in `src/backend.rs`, not from the memory
//! backend: a queue is a plain `Vec<Item>` in key order, and every operation is a linear scan.
//! That makes it slow and obviously right, which is what a reference needs to be.

use std::collections::BTreeMap;
use std::fmt;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

use super::Factory;
use crate::{
    Action, Backend, Claim, Error, Expect, Item, Key, Lease, Move, NewItem, Page, Phase,
    PhaseCounts, QueueConfig, QueueId, Retention, Selector, SweepReport, Timestamp, Transition,
};

/// The queue ids an [`Op`] can name (its `queue` field is taken modulo this list's length).
pub const QUEUES: [&str; 3] = ["q0", "q1", "q2"];
/// The phases an [`Op`] can name: every built-in one (so that moves into `in_flight` are
/// tried and must be refused) and two of the caller's own.
pub const PHASES: [&str; 7] = [
    "pending",
    "in_flight",
    "done",
    "dead",
    "expired",
    "review",
    "parked",
];
/// The consumers an [`Op`] can name.
pub const OWNERS: [&str; 2] = ["w0", "w1"];
/// The clock's value when a run starts: far enough from zero that rewinding never saturates.
pub const START: Timestamp = Timestamp(1_000_000);
/// Items per page when the runner reads a queue back in full: small, so that the cursor
/// (`Page::after`) is exercised on every comparison.
const READ_PAGE: usize = 7;
/// Environment variable with the number of proptest cases [`model_based`] runs.
pub const CASES_ENV: &str = "HOOKSPOOL_PROPTEST_CASES";
/// Cases [`model_based`] runs when [`CASES_ENV`] is unset.
pub const DEFAULT_CASES: u32 = 64;
/// Longest generated operation sequence (a durable backend syncs on most of them).
pub const MAX_OPS: usize = 40;

/// One item of a [`Op::Push`] batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushSpec {
    /// The payload bytes.
    pub payload: Vec<u8>,
    /// Not handed out before `now + delay_ms` (`None`: due at once).
    pub delay_ms: Option<u64>,
    /// When set, stored as metadata entry `tag`.
    pub tag: Option<u8>,
}

/// Names an item: the `n`-th item the model holds in the queue (modulo the queue's length, so
/// it nearly always hits), or a literal key (which may well be missing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRef {
    /// The `n`-th existing item in key order; key 1 when the queue is empty or missing.
    Nth(u8),
    /// This key, whether it exists or not.
    Raw(Key),
}

/// What a [`Op::Fetch`] or [`Op::Pop`] selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Select {
    /// One item by key.
    Key(KeyRef),
    /// A page; `phase` indexes [`PHASES`].
    Page {
        /// Only this phase (index into [`PHASES`]).
        phase: Option<u8>,
        /// The cursor.
        after: Option<KeyRef>,
        /// Matching items to skip.
        offset: u8,
        /// Most items to return.
        limit: u8,
        /// Newest first.
        reverse: bool,
    },
}

/// One step of a model-based test. Every field is a small index or number, so any value is
/// valid: fuzz targets can build these from arbitrary bytes. Queue, phase and owner fields
/// index [`QUEUES`], [`PHASES`] and [`OWNERS`] (modulo their lengths).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `create_queue` with an optional TTL and retention.
    CreateQueue {
        /// Which queue.
        queue: u8,
        /// Item TTL in milliseconds (0 is treated as 1).
        ttl_ms: Option<u64>,
        /// Ack removes items ([`Retention::Remove`]) instead of keeping them as `done`.
        remove_on_ack: bool,
    },
    /// `update_queue` with new settings.
    UpdateQueue {
        /// Which queue.
        queue: u8,
        /// Item TTL in milliseconds (0 is treated as 1).
        ttl_ms: Option<u64>,
        /// Ack removes items.
        remove_on_ack: bool,
    },
    /// `delete_queue`.
    DeleteQueue {
        /// Which queue.
        queue: u8,
    },
    /// `push` of a batch.
    Push {
        /// Which queue.
        queue: u8,
        /// The batch.
        items: Vec<PushSpec>,
    },
    /// `fetch`.
    Fetch {
        /// Which queue.
        queue: u8,
        /// What to select.
        select: Select,
    },
    /// `pop`.
    Pop {
        /// Which queue.
        queue: u8,
        /// What to select.
        select: Select,
    },
    /// `count`.
    Count {
        /// Which queue.
        queue: u8,
    },
    /// `reset`.
    Reset {
        /// Which queue.
        queue: u8,
    },
    /// `claim` for `lease_ms` from now.
    Claim {
        /// Which queue.
        queue: u8,
        /// Which consumer.
        owner: u8,
        /// Most items.
        limit: u8,
        /// Lease length in milliseconds.
        lease_ms: u64,
    },
    /// Ack through `update`: requires the lease; moves to `done` or removes, by retention.
    Ack {
        /// Which queue.
        queue: u8,
        /// Which item.
        key: KeyRef,
        /// Which consumer.
        owner: u8,
    },
    /// Ack of several items through one `update_many` (a key may repeat: the second ack of
    /// the same item fails on its own).
    AckMany {
        /// Which queue.
        queue: u8,
        /// Which items.
        keys: Vec<KeyRef>,
        /// Which consumer.
        owner: u8,
    },
    /// Nack through `update`: requires the lease; back to pending at `now + retry_ms`.
    Nack {
        /// Which queue.
        queue: u8,
        /// Which item.
        key: KeyRef,
        /// Which consumer.
        owner: u8,
        /// Delay before the retry, in milliseconds.
        retry_ms: u64,
    },
    /// Kill through `update`: requires the lease; moves to `dead`.
    Kill {
        /// Which queue.
        queue: u8,
        /// Which item.
        key: KeyRef,
        /// Which consumer.
        owner: u8,
    },
    /// `update` moving to a phase, optionally compare-and-set on the current phase.
    UpdatePhase {
        /// Which queue.
        queue: u8,
        /// Which item.
        key: KeyRef,
        /// The new phase (index into [`PHASES`]).
        phase: u8,
        /// Required current phase (index into [`PHASES`]).
        expect: Option<u8>,
    },
    /// `update` removing the item, optionally compare-and-set on the current phase.
    Remove {
        /// Which queue.
        queue: u8,
        /// Which item.
        key: KeyRef,
        /// Required current phase (index into [`PHASES`]).
        expect: Option<u8>,
    },
    /// `sweep`.
    Sweep {
        /// Which queue.
        queue: u8,
    },
    /// Moves the clock forward.
    Advance {
        /// By this many milliseconds.
        ms: u64,
    },
    /// Moves the clock backward (the contract says backends must accept it).
    Rewind {
        /// By this many milliseconds.
        ms: u64,
    },
    /// Closes and reopens the backend ([`Factory::reopen`]); the model does not change.
    Reopen,
}

/// What an operation returned, in a form both sides can be compared by. Errors compare by
/// their [`Error::code`], since messages and sources are the backend's own business.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing (`create_queue`, `update_queue`, clock moves, reopen).
    Unit,
    /// A boolean (`delete_queue`).
    Bool(bool),
    /// Keys (`push`).
    Keys(Vec<Key>),
    /// Items (`fetch`, `pop`, `claim`).
    Items(Vec<Item>),
    /// One item (`update`).
    Item(Box<Item>),
    /// Counts (`count`).
    Counts(PhaseCounts),
    /// A number (`reset`).
    Number(u64),
    /// A sweep report.
    Swept(SweepReport),
    /// An error, by code.
    Error(&'static str),
    /// One outcome per entry (`update_many`).
    Each(Vec<Outcome>),
}

impl<T> From<crate::Result<T>> for Outcome
where
    T: Into<Outcome>,
{
    fn from(r: crate::Result<T>) -> Self {
        match r {
            Ok(v) => v.into(),
            Err(e) => Outcome::Error(e.code()),
        }
    }
}

impl From<()> for Outcome {
    fn from((): ()) -> Self {
        Outcome::Unit
    }
}
impl From<bool> for Outcome {
    fn from(b: bool) -> Self {
        Outcome::Bool(b)
    }
}
impl From<Vec<Key>> for Outcome {
    fn from(k: Vec<Key>) -> Self {
        Outcome::Keys(k)
    }
}
impl From<Vec<Item>> for Outcome {
    fn from(i: Vec<Item>) -> Self {
        Outcome::Items(i)
    }
}
impl From<Item> for Outcome {
    fn from(i: Item) -> Self {
        Outcome::Item(Box::new(i))
    }
}
impl From<PhaseCounts> for Outcome {
    fn from(c: PhaseCounts) -> Self {
        Outcome::Counts(c)
    }
}
impl From<u64> for Outcome {
    fn from(n: u64) -> Self {
        Outcome::Number(n)
    }
}
impl From<Vec<crate::Result<()>>> for Outcome {
    fn from(results: Vec<crate::Result<()>>) -> Self {
        Outcome::Each(results.into_iter().map(Outcome::from).collect())
    }
}
impl From<SweepReport> for Outcome {
    fn from(r: SweepReport) -> Self {
        Outcome::Swept(r)
    }
}

/// One queue of the model: its settings, the next key, and its items in key order.
#[derive(Clone, Debug)]
struct ModelQueue {
    config: QueueConfig,
    next_key: Key,
    items: Vec<Item>,
}

/// The plain in-memory model of the contract. Every method mirrors a [`Backend`] method and
/// is written as directly from the contract's words as possible.
#[derive(Clone, Debug, Default)]
pub struct Model {
    queues: BTreeMap<QueueId, ModelQueue>,
}

fn not_found(id: &QueueId) -> Error {
    Error::QueueNotFound(id.clone())
}

impl Model {
    /// An empty model: no queues.
    pub fn new() -> Self {
        Self::default()
    }

    fn queue(&self, id: &QueueId) -> crate::Result<&ModelQueue> {
        self.queues.get(id).ok_or_else(|| not_found(id))
    }

    fn queue_mut(&mut self, id: &QueueId) -> crate::Result<&mut ModelQueue> {
        self.queues.get_mut(id).ok_or_else(|| not_found(id))
    }

    /// Mirrors [`Backend::create_queue`].
    pub fn create_queue(&mut self, config: QueueConfig) -> crate::Result<()> {
        if self.queues.contains_key(&config.id) {
            return Err(Error::QueueExists(config.id));
        }
        self.queues.insert(
            config.id.clone(),
            ModelQueue {
                config,
                next_key: 1,
                items: Vec::new(),
            },
        );
        Ok(())
    }

    /// Mirrors [`Backend::update_queue`].
    pub fn update_queue(&mut self, mut config: QueueConfig) -> crate::Result<()> {
        let q = self.queue_mut(&config.id.clone())?;
        config.created_at = q.config.created_at;
        q.config = config;
        Ok(())
    }

    /// Mirrors [`Backend::get_queue`].
    pub fn get_queue(&self, id: &QueueId) -> Option<QueueConfig> {
        self.queues.get(id).map(|q| q.config.clone())
    }

    /// Mirrors [`Backend::list_queues`].
    pub fn list_queues(&self) -> Vec<QueueConfig> {
        // A BTreeMap iterates in id order already.
        self.queues.values().map(|q| q.config.clone()).collect()
    }

    /// Mirrors [`Backend::delete_queue`].
    pub fn delete_queue(&mut self, id: &QueueId) -> bool {
        self.queues.remove(id).is_some()
    }

    /// Mirrors [`Backend::push`].
    pub fn push(
        &mut self,
        id: &QueueId,
        items: Vec<NewItem>,
        now: Timestamp,
    ) -> crate::Result<Vec<Key>> {
        let q = self.queue_mut(id)?;
        let mut keys = Vec::new();
        for new in items {
            let key = q.next_key;
            q.next_key += 1;
            q.items.push(Item {
                key,
                payload: new.payload,
                phase: Phase::PENDING,
                attempts: 0,
                created_at: now,
                updated_at: now,
                not_before: new.not_before.unwrap_or(now),
                lease: None,
                last_error: None,
                metadata: new.metadata,
            });
            keys.push(key);
        }
        Ok(keys)
    }

    /// Mirrors [`Backend::fetch`].
    pub fn fetch(&self, id: &QueueId, selector: &Selector) -> crate::Result<Vec<Item>> {
        Ok(select(&self.queue(id)?.items, selector))
    }

    /// Mirrors [`Backend::pop`].
    pub fn pop(&mut self, id: &QueueId, selector: &Selector) -> crate::Result<Vec<Item>> {
        let q = self.queue_mut(id)?;
        let taken = select(&q.items, selector);
        q.items.retain(|i| taken.iter().all(|t| t.key != i.key));
        Ok(taken)
    }

    /// Mirrors [`Backend::count`]: here by counting, which is the point of a model.
    pub fn count(&self, id: &QueueId) -> crate::Result<PhaseCounts> {
        Ok(tally(&self.queue(id)?.items))
    }

    /// Mirrors [`Backend::reset`].
    pub fn reset(&mut self, id: &QueueId) -> crate::Result<u64> {
        let q = self.queue_mut(id)?;
        let n = q.items.len() as u64;
        q.items.clear();
        Ok(n)
    }

    /// Mirrors [`Backend::update`].
    pub fn update(
        &mut self,
        id: &QueueId,
        key: Key,
        transition: Transition,
        now: Timestamp,
    ) -> crate::Result<Item> {
        let q = self.queue_mut(id)?;
        let Some(pos) = q.items.iter().position(|i| i.key == key) else {
            return Err(Error::ItemNotFound {
                queue: id.clone(),
                key,
            });
        };
        let item = &mut q.items[pos];
        // The order of the checks follows `check_expect`, which backends are told to call.
        if let Some(owner) = &transition.expect.lease_owner {
            let holds = matches!(&item.lease, Some(l) if &l.owner == owner);
            if !holds {
                return Err(Error::NotLeaseOwner {
                    key,
                    owner: owner.clone(),
                });
            }
        }
        if let Some(expected) = &transition.expect.phase
            && *expected != item.phase
        {
            return Err(Error::PhaseConflict {
                key,
                expected: expected.clone(),
                actual: item.phase.clone(),
            });
        }
        match transition.action {
            Action::Remove => Ok(q.items.remove(pos)),
            Action::Move(Move {
                phase,
                not_before,
                error,
                metadata,
            }) => {
                if phase == Phase::IN_FLIGHT {
                    return Err(Error::invalid("moving into in_flight"));
                }
                if phase == Phase::PENDING {
                    item.not_before = not_before.unwrap_or(now);
                }
                item.phase = phase;
                item.lease = None;
                if let Some(e) = error {
                    item.last_error = Some(e);
                }
                if let Some(m) = metadata {
                    item.metadata = m;
                }
                item.updated_at = now;
                Ok(item.clone())
            }
        }
    }

    /// Mirrors [`Backend::update_many`]: one `update` after another, each with its own
    /// result; a missing queue fails the call.
    pub fn update_many(
        &mut self,
        id: &QueueId,
        updates: Vec<(Key, Transition)>,
        now: Timestamp,
    ) -> crate::Result<Vec<crate::Result<()>>> {
        self.queue(id)?;
        Ok(updates
            .into_iter()
            .map(|(key, t)| self.update(id, key, t, now).map(drop))
            .collect())
    }

    /// Mirrors [`Backend::sweep`]: expired leases back to pending first, then the TTL, so
    /// that an item released here is expired in the same sweep if it is past its TTL.
    pub fn sweep(&mut self, id: &QueueId, now: Timestamp) -> crate::Result<SweepReport> {
        let q = self.queue_mut(id)?;
        let mut report = SweepReport::default();
        for item in &mut q.items {
            if item.lease.as_ref().is_some_and(|l| l.until <= now) {
                item.phase = Phase::PENDING;
                item.lease = None;
                item.not_before = now;
                item.updated_at = now;
                report.released += 1;
            }
        }
        if let Some(ttl) = q.config.ttl {
            for item in &mut q.items {
                if item.phase == Phase::PENDING && item.created_at.saturating_add(ttl) <= now {
                    item.phase = Phase::EXPIRED;
                    item.updated_at = now;
                    report.expired += 1;
                }
            }
        }
        Ok(report)
    }

    /// Mirrors [`Backend::claim`].
    pub fn claim(
        &mut self,
        id: &QueueId,
        claim: &Claim,
        now: Timestamp,
    ) -> crate::Result<Vec<Item>> {
        self.sweep(id, now)?;
        let q = self.queue_mut(id)?;
        let mut due: Vec<(Timestamp, Key)> = q
            .items
            .iter()
            .filter(|i| i.phase == Phase::PENDING && i.not_before <= now)
            .map(|i| (i.not_before, i.key))
            .collect();
        due.sort_unstable();
        due.truncate(claim.limit);
        let mut out = Vec::new();
        for (_, key) in due {
            if let Some(item) = q.items.iter_mut().find(|i| i.key == key) {
                item.phase = Phase::IN_FLIGHT;
                item.attempts = item.attempts.saturating_add(1);
                item.lease = Some(Lease {
                    owner: claim.owner.clone(),
                    until: claim.lease_until,
                });
                item.updated_at = now;
                out.push(item.clone());
            }
        }
        Ok(out)
    }

    /// Every item of a queue in key order (empty for a missing queue).
    pub fn items(&self, id: &QueueId) -> Vec<Item> {
        self.queues
            .get(id)
            .map(|q| q.items.clone())
            .unwrap_or_default()
    }

    /// Resolves a [`KeyRef`] against the model's current state.
    pub fn resolve(&self, id: &QueueId, key: KeyRef) -> Key {
        match key {
            KeyRef::Raw(k) => k,
            KeyRef::Nth(n) => match self.queues.get(id) {
                Some(q) if !q.items.is_empty() => q.items[usize::from(n) % q.items.len()].key,
                _ => 1,
            },
        }
    }
}

/// What a selector picks out of items held in key order: the naive reading of
/// [`Backend::fetch`]'s contract and [`Page`]'s docs.
pub fn select(items: &[Item], selector: &Selector) -> Vec<Item> {
    match selector {
        Selector::Key(k) => items.iter().filter(|i| i.key == *k).cloned().collect(),
        Selector::Page(page) => {
            let mut matching: Vec<&Item> = items
                .iter()
                .filter(|i| page.phase.as_ref().is_none_or(|p| *p == i.phase))
                .filter(|i| match page.after {
                    None => true,
                    Some(a) if page.reverse => i.key < a,
                    Some(a) => i.key > a,
                })
                .collect();
            matching.sort_by_key(|i| i.key);
            if page.reverse {
                matching.reverse();
            }
            matching
                .into_iter()
                .skip(page.offset)
                .take(page.limit)
                .cloned()
                .collect()
        }
    }
}

/// Counts items by phase by looking at each one.
pub fn tally(items: &[Item]) -> PhaseCounts {
    let mut counts = PhaseCounts::default();
    for item in items {
        counts.add(&item.phase, 1);
    }
    counts
}

fn queue_id(index: u8) -> QueueId {
    let name = QUEUES[usize::from(index) % QUEUES.len()];
    QueueId::new(name).unwrap_or_else(|e| panic!("model queue id {name:?} is invalid: {e}"))
}

fn phase(index: u8) -> Phase {
    let name = PHASES[usize::from(index) % PHASES.len()];
    Phase::new(name).unwrap_or_else(|e| panic!("model phase {name:?} is invalid: {e}"))
}

fn owner(index: u8) -> String {
    OWNERS[usize::from(index) % OWNERS.len()].to_owned()
}

fn queue_config(
    queue: u8,
    ttl_ms: Option<u64>,
    remove_on_ack: bool,
    now: Timestamp,
) -> QueueConfig {
    let mut config = QueueConfig::new(queue_id(queue)).with_metadata("made-at", now.to_string());
    config.created_at = now;
    config.ttl = ttl_ms.map(|ms| std::time::Duration::from_millis(ms.max(1)));
    config.retention = if remove_on_ack {
        Retention::Remove
    } else {
        Retention::Keep
    };
    config
}

/// Turns an op's selector into a real one, resolving key references against the model.
fn selector(model: &Model, id: &QueueId, select: &Select) -> Selector {
    match select {
        Select::Key(k) => Selector::Key(model.resolve(id, *k)),
        Select::Page {
            phase: p,
            after,
            offset,
            limit,
            reverse,
        } => Selector::Page(Page {
            phase: p.map(phase),
            after: after.map(|a| model.resolve(id, a)),
            offset: usize::from(*offset),
            limit: usize::from(*limit),
            reverse: *reverse,
        }),
    }
}

fn leased(owner: String, action: Action) -> Transition {
    Transition {
        expect: Expect {
            phase: Some(Phase::IN_FLIGHT),
            lease_owner: Some(owner),
        },
        action,
    }
}

/// A backend under test together with the model and the clock.
struct Harness<'f, F: Factory> {
    factory: &'f F,
    backend: Option<F::Backend>,
    model: Model,
    now: Timestamp,
}

impl<F: Factory> Harness<'_, F> {
    fn backend(&self) -> &F::Backend {
        match &self.backend {
            Some(b) => b,
            None => panic!("model runner: the backend was lost during a reopen"),
        }
    }

    /// Applies one op to both sides and returns (backend outcome, model outcome).
    #[allow(clippy::too_many_lines)] // one arm per op reads better than a dispatch table
    async fn apply(&mut self, op: &Op) -> (Outcome, Outcome) {
        let now = self.now;
        match op {
            Op::CreateQueue {
                queue,
                ttl_ms,
                remove_on_ack,
            } => {
                let config = queue_config(*queue, *ttl_ms, *remove_on_ack, now);
                let real = self.backend().create_queue(config.clone()).await.into();
                (real, self.model.create_queue(config).into())
            }
            Op::UpdateQueue {
                queue,
                ttl_ms,
                remove_on_ack,
            } => {
                // A different created_at on purpose: update_queue must keep the stored one.
                let config = queue_config(*queue, *ttl_ms, *remove_on_ack, now);
                let real = self.backend().update_queue(config.clone()).await.into();
                (real, self.model.update_queue(config).into())
            }
            Op::DeleteQueue { queue } => {
                let id = queue_id(*queue);
                let real = self.backend().delete_queue(&id).await.into();
                (real, self.model.delete_queue(&id).into())
            }
            Op::Push { queue, items } => {
                let id = queue_id(*queue);
                let batch: Vec<NewItem> = items
                    .iter()
                    .map(|s| {
                        let mut item = NewItem::new(s.payload.clone());
                        if let Some(d) = s.delay_ms {
                            item = item.not_before(Timestamp(now.0.saturating_add(d)));
                        }
                        if let Some(t) = s.tag {
                            item = item.with_metadata("tag", t.to_string());
                        }
                        item
                    })
                    .collect();
                let real = self.backend().push(&id, batch.clone(), now).await.into();
                (real, self.model.push(&id, batch, now).into())
            }
            Op::Fetch { queue, select } => {
                let id = queue_id(*queue);
                let sel = selector(&self.model, &id, select);
                let real = self.backend().fetch(&id, &sel).await.into();
                (real, self.model.fetch(&id, &sel).into())
            }
            Op::Pop { queue, select } => {
                let id = queue_id(*queue);
                let sel = selector(&self.model, &id, select);
                let real = self.backend().pop(&id, &sel).await.into();
                (real, self.model.pop(&id, &sel).into())
            }
            Op::Count { queue } => {
                let id = queue_id(*queue);
                let real = self.backend().count(&id).await.into();
                (real, self.model.count(&id).into())
            }
            Op::Reset { queue } => {
                let id = queue_id(*queue);
                let real = self.backend().reset(&id).await.into();
                (real, self.model.reset(&id).into())
            }
            Op::Claim {
                queue,
                owner: o,
                limit,
                lease_ms,
            } => {
                let id = queue_id(*queue);
                let claim = Claim {
                    owner: owner(*o),
                    limit: usize::from(*limit),
                    lease_until: Timestamp(now.0.saturating_add(*lease_ms)),
                };
                let real = self.backend().claim(&id, claim.clone(), now).await.into();
                (real, self.model.claim(&id, &claim, now).into())
            }
            Op::Ack {
                queue,
                key,
                owner: o,
            } => {
                let id = queue_id(*queue);
                let key = self.model.resolve(&id, *key);
                let action = self.ack_action(&id);
                self.update(&id, key, leased(owner(*o), action)).await
            }
            Op::AckMany {
                queue,
                keys,
                owner: o,
            } => {
                let id = queue_id(*queue);
                let action = self.ack_action(&id);
                let updates: Vec<(Key, Transition)> = keys
                    .iter()
                    .map(|k| {
                        (
                            self.model.resolve(&id, *k),
                            leased(owner(*o), action.clone()),
                        )
                    })
                    .collect();
                let real = self
                    .backend()
                    .update_many(&id, updates.clone(), now)
                    .await
                    .into();
                (real, self.model.update_many(&id, updates, now).into())
            }
            Op::Nack {
                queue,
                key,
                owner: o,
                retry_ms,
            } => {
                let id = queue_id(*queue);
                let key = self.model.resolve(&id, *key);
                // A nack also replaces the metadata, so the model test covers that too.
                let action = Move::to(Phase::PENDING)
                    .not_before(Timestamp(now.0.saturating_add(*retry_ms)))
                    .error(format!("nack at {now}"))
                    .metadata(BTreeMap::from([("nacked_at".to_owned(), now.to_string())]))
                    .into();
                self.update(&id, key, leased(owner(*o), action)).await
            }
            Op::Kill {
                queue,
                key,
                owner: o,
            } => {
                let id = queue_id(*queue);
                let key = self.model.resolve(&id, *key);
                let action = Move::to(Phase::DEAD)
                    .error(format!("killed at {now}"))
                    .into();
                self.update(&id, key, leased(owner(*o), action)).await
            }
            Op::UpdatePhase {
                queue,
                key,
                phase: p,
                expect,
            } => {
                let id = queue_id(*queue);
                let key = self.model.resolve(&id, *key);
                let transition = Transition {
                    expect: Expect {
                        phase: expect.map(phase),
                        lease_owner: None,
                    },
                    action: Action::Move(Move::to(phase(*p))),
                };
                self.update(&id, key, transition).await
            }
            Op::Remove { queue, key, expect } => {
                let id = queue_id(*queue);
                let key = self.model.resolve(&id, *key);
                let transition = Transition {
                    expect: Expect {
                        phase: expect.map(phase),
                        lease_owner: None,
                    },
                    action: Action::Remove,
                };
                self.update(&id, key, transition).await
            }
            Op::Sweep { queue } => {
                let id = queue_id(*queue);
                let real = self.backend().sweep(&id, now).await.into();
                (real, self.model.sweep(&id, now).into())
            }
            Op::Advance { ms } => {
                self.now = Timestamp(now.0.saturating_add(*ms));
                (Outcome::Unit, Outcome::Unit)
            }
            Op::Rewind { ms } => {
                self.now = Timestamp(now.0.saturating_sub(*ms));
                (Outcome::Unit, Outcome::Unit)
            }
            Op::Reopen => {
                if let Some(b) = self.backend.take() {
                    self.backend = Some(self.factory.reopen(b).await);
                }
                (Outcome::Unit, Outcome::Unit)
            }
        }
    }

    /// Ack follows the queue's retention, as `Store::ack` does.
    fn ack_action(&self, id: &QueueId) -> Action {
        let remove = self
            .model
            .get_queue(id)
            .is_some_and(|c| c.retention == Retention::Remove);
        if remove {
            Action::Remove
        } else {
            Action::Move(Move::to(Phase::DONE))
        }
    }

    async fn update(&mut self, id: &QueueId, key: Key, t: Transition) -> (Outcome, Outcome) {
        let real = self
            .backend()
            .update(id, key, t.clone(), self.now)
            .await
            .into();
        (real, self.model.update(id, key, t, self.now).into())
    }

    /// Compares every queue's settings, items and counts with the model.
    async fn check_state(&self, step: usize, op: &Op) {
        let b = self.backend();
        let listed = match b.list_queues().await {
            Ok(l) => l,
            Err(e) => panic!("after step {step} ({op:?}): list_queues failed: {e}"),
        };
        assert_eq!(
            listed,
            self.model.list_queues(),
            "after step {step} ({op:?}): list_queues differs from the model"
        );
        for index in 0..QUEUES.len() {
            let id = queue_id(index as u8);
            let config = match b.get_queue(&id).await {
                Ok(c) => c,
                Err(e) => panic!("after step {step} ({op:?}): get_queue({id}) failed: {e}"),
            };
            assert_eq!(
                config,
                self.model.get_queue(&id),
                "after step {step} ({op:?}): get_queue({id}) differs from the model"
            );
            if config.is_none() {
                continue;
            }
            let items = read_all(b, &id)
                .await
                .unwrap_or_else(|e| panic!("after step {step} ({op:?}): reading {id}: {e}"));
            let expected = self.model.items(&id);
            assert!(
                items == expected,
                "after step {step} ({op:?}): items of {id} differ from the model\n backend: {items:#?}\n model: {expected:#?}"
            );
            let counts = match b.count(&id).await {
                Ok(c) => c,
                Err(e) => panic!("after step {step} ({op:?}): count({id}) failed: {e}"),
            };
            assert_eq!(
                counts,
                tally(&expected),
                "after step {step} ({op:?}): count({id}) differs from the items it holds"
            );
        }
    }
}

/// Every item of a queue, read through small cursor pages (so `Page::after` is exercised).
pub async fn read_all<B: Backend>(backend: &B, id: &QueueId) -> crate::Result<Vec<Item>> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = Page {
            after,
            ..Page::first(READ_PAGE)
        };
        let items = backend.fetch(id, &Selector::Page(page)).await?;
        let n = items.len();
        after = items.last().map(|i| i.key);
        all.extend(items);
        if n < READ_PAGE {
            return Ok(all);
        }
    }
}

/// Applies `ops` to a fresh backend from `factory` and to a fresh [`Model`], comparing each
/// op's result and then the full state (every queue's settings, items and counts) after every
/// step. Builds its own tokio runtime, so call it from synchronous code.
///
/// # Panics
/// On the first divergence, naming the step and the op.
pub fn run_ops<F: Factory>(factory: &F, ops: &[Op]) {
    let runtime = super::__private::runtime();
    runtime.block_on(async {
        let mut h = Harness {
            factory,
            backend: Some(factory.create().await),
            model: Model::new(),
            now: START,
        };
        for (step, op) in ops.iter().enumerate() {
            let (real, model) = h.apply(op).await;
            assert_eq!(
                real, model,
                "step {step} ({op:?}): the backend's result (left) differs from the model's (right)"
            );
            h.check_state(step, op).await;
        }
    });
}

fn key_ref() -> impl Strategy<Value = KeyRef> {
    prop_oneof![
        4 => any::<u8>().prop_map(KeyRef::Nth),
        1 => (0u64..60).prop_map(KeyRef::Raw),
    ]
}

fn select_strategy() -> impl Strategy<Value = Select> {
    prop_oneof![
        1 => key_ref().prop_map(Select::Key),
        3 => (
            proptest::option::of(any::<u8>()),
            proptest::option::weighted(0.3, key_ref()),
            prop_oneof![1 => Just(0u8), 2 => 1u8..4],
            0u8..6,
            any::<bool>(),
        )
            .prop_map(|(phase, after, offset, limit, reverse)| Select::Page {
                phase,
                after,
                offset,
                limit,
                reverse,
            }),
    ]
}

fn push_spec() -> impl Strategy<Value = PushSpec> {
    (
        proptest::collection::vec(any::<u8>(), 0..8),
        proptest::option::weighted(0.3, 0u64..3_000),
        proptest::option::weighted(0.3, any::<u8>()),
    )
        .prop_map(|(payload, delay_ms, tag)| PushSpec {
            payload,
            delay_ms,
            tag,
        })
}

/// One random op, weighted towards the item operations. With `rewind`, some clock moves go
/// backwards ([`Op::Rewind`]); without, they all go forward.
pub fn op_strategy(rewind: bool) -> impl Strategy<Value = Op> {
    let queue = || 0u8..(QUEUES.len() as u8);
    let ttl = || proptest::option::weighted(0.5, 500u64..5_000);
    prop_oneof![
        1 => (queue(), ttl(), any::<bool>()).prop_map(|(queue, ttl_ms, remove_on_ack)| {
            Op::CreateQueue { queue, ttl_ms, remove_on_ack }
        }),
        1 => (queue(), ttl(), any::<bool>()).prop_map(|(queue, ttl_ms, remove_on_ack)| {
            Op::UpdateQueue { queue, ttl_ms, remove_on_ack }
        }),
        1 => queue().prop_map(|queue| Op::DeleteQueue { queue }),
        8 => (queue(), proptest::collection::vec(push_spec(), 1..5))
            .prop_map(|(queue, items)| Op::Push { queue, items }),
        3 => (queue(), select_strategy()).prop_map(|(queue, select)| Op::Fetch { queue, select }),
        3 => (queue(), select_strategy()).prop_map(|(queue, select)| Op::Pop { queue, select }),
        1 => queue().prop_map(|queue| Op::Count { queue }),
        1 => queue().prop_map(|queue| Op::Reset { queue }),
        6 => (queue(), any::<u8>(), 0u8..5, 1u64..4_000).prop_map(|(queue, owner, limit, lease_ms)| {
            Op::Claim { queue, owner, limit, lease_ms }
        }),
        4 => (queue(), key_ref(), any::<u8>()).prop_map(|(queue, key, owner)| {
            Op::Ack { queue, key, owner }
        }),
        2 => (queue(), proptest::collection::vec(key_ref(), 0..6), any::<u8>())
            .prop_map(|(queue, keys, owner)| Op::AckMany { queue, keys, owner }),
        3 => (queue(), key_ref(), any::<u8>(), 0u64..3_000).prop_map(|(queue, key, owner, retry_ms)| {
            Op::Nack { queue, key, owner, retry_ms }
        }),
        2 => (queue(), key_ref(), any::<u8>()).prop_map(|(queue, key, owner)| {
            Op::Kill { queue, key, owner }
        }),
        4 => (queue(), key_ref(), any::<u8>(), proptest::option::weighted(0.4, any::<u8>()))
            .prop_map(|(queue, key, phase, expect)| Op::UpdatePhase { queue, key, phase, expect }),
        1 => (queue(), key_ref(), proptest::option::weighted(0.4, any::<u8>()))
            .prop_map(|(queue, key, expect)| Op::Remove { queue, key, expect }),
        2 => queue().prop_map(|queue| Op::Sweep { queue }),
        5 => (0u64..3_000).prop_map(|ms| Op::Advance { ms }),
        1 => (0u64..2_000).prop_map(move |ms| if rewind { Op::Rewind { ms } } else { Op::Advance { ms } }),
        2 => Just(Op::Reopen),
    ]
}

/// Random op sequences of up to [`MAX_OPS`] ops, each starting by creating `q0` (no TTL) and
/// `q1` (a TTL), so that most ops hit a queue that exists. `rewind` as for [`op_strategy`].
pub fn ops_strategy(rewind: bool) -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op_strategy(rewind), 0..=MAX_OPS).prop_map(|ops| {
        let mut all = vec![
            Op::CreateQueue {
                queue: 0,
                ttl_ms: None,
                remove_on_ack: false,
            },
            Op::CreateQueue {
                queue: 1,
                ttl_ms: Some(2_000),
                remove_on_ack: false,
            },
        ];
        all.extend(ops);
        all
    })
}

/// Cases to run: [`CASES_ENV`] if set to a number, else [`DEFAULT_CASES`].
pub fn cases() -> u32 {
    std::env::var(CASES_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

/// Runs [`run_ops`] on [`cases`] random op sequences, shrinking a failure to a minimal
/// sequence. The clock mostly moves forward and sometimes jumps back, since the contract says
/// backends must accept time going backwards. Synchronous: it builds a runtime per case.
///
/// # Panics
/// With the minimal failing op sequence and the divergence it shows.
pub fn model_based<F: Factory>(factory: &F) {
    run_model(factory, true);
}

fn run_model<F: Factory>(factory: &F, rewind: bool) {
    let config = Config {
        cases: cases(),
        // The kit runs in other people's crates: never write regression files into them.
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&ops_strategy(rewind), |ops| {
        run_ops(factory, &ops);
        Ok::<(), TestCaseError>(())
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, ops)) => {
            panic!(
                "model-based test failed: {reason}\nminimal op sequence:\n{}",
                OpList(&ops)
            )
        }
        Err(TestError::Abort(reason)) => panic!("model-based test aborted: {reason}"),
    }
}

/// Prints an op sequence one numbered op per line.
struct OpList<'a>(&'a [Op]);

impl fmt::Display for OpList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, op) in self.0.iter().enumerate() {
            writeln!(f, "  {i:>3}: {op:?}")?;
        }
        Ok(())
    }
}
