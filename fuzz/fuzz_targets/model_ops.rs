//! Fuzzes the memory backend against the conformance kit's model: arbitrary bytes become an
//! operation sequence (`hookspool::conformance::model::Op`), which `run_ops` applies to both
//! and compares after every step. Any divergence panics, which libFuzzer reports as a crash.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use hookspool::conformance::MemoryFactory;
use hookspool::conformance::model::{KeyRef, Op, PushSpec, Select, run_ops};
use libfuzzer_sys::fuzz_target;

/// Longest sequence one input runs: long enough for claim → expiry → reclaim stories, short
/// enough that each input runs in well under a millisecond.
const MAX_OPS: usize = 64;
/// Largest push batch and payload: the model compares whole queues after every step, so big
/// ones only slow the fuzzer down without reaching new code.
const MAX_BATCH: usize = 8;
const MAX_PAYLOAD: usize = 16;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut ops = Vec::new();
    while ops.len() < MAX_OPS {
        match FuzzOp::arbitrary(&mut u) {
            Ok(op) => ops.push(op.build()),
            Err(_) => break,
        }
    }
    run_ops(&MemoryFactory, &ops);
});

/// Milliseconds: mostly small (so leases, TTLs and retries interact within a sequence),
/// sometimes anything (so saturating arithmetic at the far end is exercised too).
#[derive(Arbitrary, Debug)]
enum Millis {
    Small(u16),
    Any(u64),
}

impl Millis {
    fn get(self) -> u64 {
        match self {
            Millis::Small(ms) => u64::from(ms),
            Millis::Any(ms) => ms,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum FuzzKey {
    Nth(u8),
    Small(u8),
    Any(u64),
}

impl FuzzKey {
    fn build(self) -> KeyRef {
        match self {
            FuzzKey::Nth(n) => KeyRef::Nth(n),
            FuzzKey::Small(k) => KeyRef::Raw(u64::from(k)),
            FuzzKey::Any(k) => KeyRef::Raw(k),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct FuzzPush {
    payload: Vec<u8>,
    delay_ms: Option<Millis>,
    tag: Option<u8>,
}

impl FuzzPush {
    fn build(self) -> PushSpec {
        PushSpec {
            payload: self.payload.into_iter().take(MAX_PAYLOAD).collect(),
            delay_ms: self.delay_ms.map(Millis::get),
            tag: self.tag,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum FuzzSelect {
    Key(FuzzKey),
    Page {
        phase: Option<u8>,
        after: Option<FuzzKey>,
        offset: u8,
        limit: u8,
        reverse: bool,
    },
}

impl FuzzSelect {
    fn build(self) -> Select {
        match self {
            FuzzSelect::Key(k) => Select::Key(k.build()),
            FuzzSelect::Page {
                phase,
                after,
                offset,
                limit,
                reverse,
            } => Select::Page {
                phase,
                after: after.map(FuzzKey::build),
                offset,
                limit,
                reverse,
            },
        }
    }
}

/// Mirrors [`Op`] field for field, in types `arbitrary` can generate.
#[derive(Arbitrary, Debug)]
enum FuzzOp {
    CreateQueue {
        queue: u8,
        ttl_ms: Option<Millis>,
        remove_on_ack: bool,
    },
    UpdateQueue {
        queue: u8,
        ttl_ms: Option<Millis>,
        remove_on_ack: bool,
    },
    DeleteQueue {
        queue: u8,
    },
    Push {
        queue: u8,
        items: Vec<FuzzPush>,
    },
    Fetch {
        queue: u8,
        select: FuzzSelect,
    },
    Pop {
        queue: u8,
        select: FuzzSelect,
    },
    Count {
        queue: u8,
    },
    Reset {
        queue: u8,
    },
    Claim {
        queue: u8,
        owner: u8,
        limit: u8,
        lease_ms: Millis,
    },
    Ack {
        queue: u8,
        key: FuzzKey,
        owner: u8,
    },
    AckMany {
        queue: u8,
        keys: Vec<FuzzKey>,
        owner: u8,
    },
    Nack {
        queue: u8,
        key: FuzzKey,
        owner: u8,
        retry_ms: Millis,
    },
    Kill {
        queue: u8,
        key: FuzzKey,
        owner: u8,
    },
    UpdatePhase {
        queue: u8,
        key: FuzzKey,
        phase: u8,
        expect: Option<u8>,
    },
    Remove {
        queue: u8,
        key: FuzzKey,
        expect: Option<u8>,
    },
    Sweep {
        queue: u8,
    },
    Advance {
        ms: Millis,
    },
    Rewind {
        ms: Millis,
    },
    Reopen,
    Prune {
        queue: u8,
        phase: u8,
        age_ms: Millis,
        limit: u8,
    },
}

impl FuzzOp {
    // One arm per operation, each a field-for-field translation: splitting
    // it would only scatter the list.
    #[expect(
        clippy::too_many_lines,
        reason = "a flat, one-arm-per-variant translation"
    )]
    fn build(self) -> Op {
        match self {
            FuzzOp::CreateQueue {
                queue,
                ttl_ms,
                remove_on_ack,
            } => Op::CreateQueue {
                queue,
                ttl_ms: ttl_ms.map(Millis::get),
                remove_on_ack,
            },
            FuzzOp::UpdateQueue {
                queue,
                ttl_ms,
                remove_on_ack,
            } => Op::UpdateQueue {
                queue,
                ttl_ms: ttl_ms.map(Millis::get),
                remove_on_ack,
            },
            FuzzOp::DeleteQueue { queue } => Op::DeleteQueue { queue },
            FuzzOp::Push { queue, items } => Op::Push {
                queue,
                items: items
                    .into_iter()
                    .take(MAX_BATCH)
                    .map(FuzzPush::build)
                    .collect(),
            },
            FuzzOp::Fetch { queue, select } => Op::Fetch {
                queue,
                select: select.build(),
            },
            FuzzOp::Pop { queue, select } => Op::Pop {
                queue,
                select: select.build(),
            },
            FuzzOp::Count { queue } => Op::Count { queue },
            FuzzOp::Reset { queue } => Op::Reset { queue },
            FuzzOp::Claim {
                queue,
                owner,
                limit,
                lease_ms,
            } => Op::Claim {
                queue,
                owner,
                limit,
                lease_ms: lease_ms.get(),
            },
            FuzzOp::Ack { queue, key, owner } => Op::Ack {
                queue,
                key: key.build(),
                owner,
            },
            FuzzOp::AckMany { queue, keys, owner } => Op::AckMany {
                queue,
                // A handful is enough to mix successes and failures in one call.
                keys: keys.into_iter().take(8).map(FuzzKey::build).collect(),
                owner,
            },
            FuzzOp::Nack {
                queue,
                key,
                owner,
                retry_ms,
            } => Op::Nack {
                queue,
                key: key.build(),
                owner,
                retry_ms: retry_ms.get(),
            },
            FuzzOp::Kill { queue, key, owner } => Op::Kill {
                queue,
                key: key.build(),
                owner,
            },
            FuzzOp::UpdatePhase {
                queue,
                key,
                phase,
                expect,
            } => Op::UpdatePhase {
                queue,
                key: key.build(),
                phase,
                expect,
            },
            FuzzOp::Remove { queue, key, expect } => Op::Remove {
                queue,
                key: key.build(),
                expect,
            },
            FuzzOp::Sweep { queue } => Op::Sweep { queue },
            FuzzOp::Advance { ms } => Op::Advance { ms: ms.get() },
            FuzzOp::Rewind { ms } => Op::Rewind { ms: ms.get() },
            FuzzOp::Reopen => Op::Reopen,
            FuzzOp::Prune {
                queue,
                phase,
                age_ms,
                limit,
            } => Op::Prune {
                queue,
                phase,
                age_ms: age_ms.get(),
                limit,
            },
        }
    }
}
