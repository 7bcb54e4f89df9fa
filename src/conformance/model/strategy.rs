//! Random op sequences for proptest, and [`model_based`], the kit's model-based test.

use std::fmt;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

use super::{
    CASES_ENV, DEFAULT_CASES, KeyRef, MAX_OPS, Op, PHASES, PushSpec, QUEUES, Select, run_ops,
};
use crate::conformance::Factory;

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

/// A phase to move items to or prune: half the time `done` or `dead`, so that a sequence
/// often settles several items in one phase at different times and then prunes it.
fn target_phase() -> impl Strategy<Value = u8> {
    const DONE: u8 = 2;
    const DEAD: u8 = 3;
    debug_assert_eq!(PHASES[usize::from(DONE)], "done");
    debug_assert_eq!(PHASES[usize::from(DEAD)], "dead");
    prop_oneof![1 => Just(DONE), 1 => Just(DEAD), 2 => any::<u8>()]
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
        4 => (queue(), key_ref(), target_phase(), proptest::option::weighted(0.4, any::<u8>()))
            .prop_map(|(queue, key, phase, expect)| Op::UpdatePhase { queue, key, phase, expect }),
        1 => (queue(), key_ref(), proptest::option::weighted(0.4, any::<u8>()))
            .prop_map(|(queue, key, expect)| Op::Remove { queue, key, expect }),
        2 => queue().prop_map(|queue| Op::Sweep { queue }),
        3 => (queue(), target_phase(), 0u64..4_000, 1u8..8).prop_map(
            |(queue, phase, age_ms, limit)| Op::Prune { queue, phase, age_ms, limit }
        ),
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
