//! The runner: applies each [`Op`] to a backend and to the [`Model`], and compares their
//! results and then their whole state after every step.

use std::collections::BTreeMap;

use super::{Model, OWNERS, Op, Outcome, PHASES, QUEUES, READ_PAGE, START, Select, tally};
use crate::conformance::Factory;
use crate::{
    Action, Backend, Claim, Expect, Item, Key, Move, NewItem, Page, Phase, QueueConfig, QueueId,
    Retention, Selector, Timestamp, Transition,
};

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
                    // Half the consumers claim without waiting for durability: the
                    // outcome must be the same.
                    durable: o % 2 == 0,
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
            Op::Prune {
                queue,
                phase: p,
                age_ms,
                limit,
            } => {
                let id = queue_id(*queue);
                let p = phase(*p);
                let before = Timestamp(now.0.saturating_sub(*age_ms));
                let limit = usize::from(*limit);
                let real = self.backend().prune(&id, &p, before, limit).await.into();
                (real, self.model.prune(&id, &p, before, limit).into())
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
    // One thread: the ops run one after another anyway, and a runtime of its own per run
    // (a fuzz target makes one per input) costs less without worker threads to start.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("model runner: cannot build a tokio runtime: {e}"),
    };
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
