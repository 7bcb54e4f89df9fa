//! The journal's memory per retained item (`-- retained`): queues of webhook deliveries in
//! each state, filled once, then reopened in a fresh child in every round.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use hookspool::{Action, Expect, Item, Move, NewItem, Phase, Retention, Transition};

use super::{RETAINED_FILL, RETAINED_MODE, RETAINED_REOPEN, ms};
use crate::common::backends::{AnyStore, OWNER, create_queue, queue_id};
use crate::common::table::{Table, disk, median, micros, rate, spread};
use crate::common::{
    BATCH, BenchResult, Metrics, PAYLOAD_LEN, Samples, Settings, payload, peak_rss_kib,
    record_disk, rss_kib, run_case, scratch,
};

/// What the queue of a retained-memory case holds: `n` webhook deliveries in some state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Retained {
    /// Pushed with a delivery's metadata, never claimed.
    Pending,
    /// Claimed, then acked with `ack_many` (to `done`, metadata as pushed).
    Acked,
    /// Claimed, then settled as delivered: one `update_many` per claimed batch, each entry a
    /// move to `done` that replaces the metadata with the pushed entries plus the attempt
    /// log, and sets an error on every 10th item.
    Delivered,
}

impl Retained {
    /// Every kind, in table order.
    pub(super) const ALL: [Retained; 3] = [Retained::Delivered, Retained::Acked, Retained::Pending];

    /// The name used in case ids (what a filter matches) and child arguments.
    pub(super) fn name(self) -> &'static str {
        match self {
            Retained::Pending => "retained-pending",
            Retained::Acked => "retained-acked",
            Retained::Delivered => "retained-delivered",
        }
    }

    /// Parses [`Retained::name`].
    pub(super) fn parse(name: &str) -> BenchResult<Retained> {
        Retained::ALL
            .into_iter()
            .find(|r| r.name() == name)
            .ok_or_else(|| format!("unknown retained kind {name:?}").into())
    }

    /// The id of step `step` (fill, reopen) in the samples.
    fn id(self, step: &str) -> String {
        format!("{} {step}", self.name())
    }

    /// The phase every item is in once filled.
    fn phase(self) -> Phase {
        match self {
            Retained::Pending => Phase::PENDING,
            Retained::Acked | Retained::Delivered => Phase::DONE,
        }
    }

    /// The name printed in tables.
    fn label(self) -> &'static str {
        match self {
            Retained::Pending => "pending: pushed with delivery metadata, never claimed",
            Retained::Acked => "done via ack_many: claimed and acked, metadata as pushed",
            Retained::Delivered => {
                "done as delivered: metadata replaced (+ attempts, attempt.0001), error on 1 in 10"
            }
        }
    }
}

/// Fills a journal queue with `n` items of each kind in `kinds` (once), then reopens each in
/// a fresh child in every round, and prints what the reopened store holds in memory per item.
pub(super) fn retained_memory(
    settings: &Settings,
    root: &Path,
    kinds: &[Retained],
    n: usize,
) -> BenchResult<()> {
    let mut samples = Samples::default();
    let args = |kind: Retained, dir: &tempfile::TempDir| {
        vec![
            ("dir", dir.path().display().to_string()),
            ("n", n.to_string()),
            ("kind", kind.name().to_owned()),
        ]
    };
    eprintln!("reopen: filling the retained-memory queues");
    let mut dirs = Vec::with_capacity(kinds.len());
    for &kind in kinds {
        let dir = scratch(root, kind.name())?;
        run_case(
            &mut samples,
            &kind.id("fill"),
            RETAINED_FILL,
            &args(kind, &dir),
        )?;
        dirs.push((kind, dir));
    }
    for round in 1..=settings.runs {
        eprintln!("reopen: retained round {round}/{}", settings.runs);
        for (kind, dir) in &dirs {
            run_case(
                &mut samples,
                &kind.id("reopen"),
                RETAINED_REOPEN,
                &args(*kind, dir),
            )?;
        }
    }

    let kib_mib = |k: f64| format!("{:.1}", k / 1024.0);
    let bytes = |b: f64| format!("{b:.0}");
    let mut t = Table::new(
        &format!(
            "Memory per retained item: {} with {n} items, closed, then reopened + counted in a \
             fresh process",
            RETAINED_MODE.label()
        ),
        &[
            "the queue holds",
            "fill items/s (1 run)",
            "disk after close MB (apparent / alloc)",
            "open + count ms",
            "RSS before open MiB",
            "RSS after reopen MiB",
            "peak RSS MiB",
            "B/item: (RSS after − before) ÷ N, median (min..max)",
            "peak B/item: (peak − before) ÷ N",
        ],
    );
    for (kind, _) in &dirs {
        let (fill_id, id) = (kind.id("fill"), kind.id("reopen"));
        t.row(vec![
            kind.label().into(),
            median(samples.get(&fill_id, "ops_per_s"), rate),
            disk(&samples, &fill_id, "disk"),
            median(samples.get(&id, "total_ms"), micros),
            median(samples.get(&id, "base_rss_kib"), kib_mib),
            median(samples.get(&id, "rss_kib"), kib_mib),
            median(samples.get(&id, "hwm_kib"), kib_mib),
            spread(samples.get(&id, "rss_per_item_b"), bytes),
            median(samples.get(&id, "hwm_per_item_b"), bytes),
        ]);
    }
    t.print();
    let meta = |key: &str| {
        samples
            .get(&Retained::Delivered.id("fill"), key)
            .map_or_else(|| "-".into(), |s| format!("{:.0}", s.median))
    };
    println!(
        "B/item = bytes per retained item: the resident set (VmRSS in /proc/self/status) of \
         the child after opening the closed store and counting its queue, minus the same \
         child's just before the open (its runtime already started), divided by N; peak uses \
         VmHWM instead (replay and checkpoint loading included). It is what the open store \
         holds per item, plus what the allocator kept of what the open freed; the journal's \
         index slot is 56 B an item (backends/journal/src/slots.rs; metadata and errors set \
         after the push are in notes on disk), and the target of the issue is near it \
         (≤ 64 B). Every item has a \
         {PAYLOAD_LEN} B payload and the metadata event, subscription, request_id \
         ({} B of keys + values); a delivered one then has attempts and attempt.0001 (a JSON \
         attempt record: number, time, status 200, duration, response snippet; {} B of \
         metadata in all), and 1 in 10 an error of {} B. Fill: push {BATCH} per call, claim \
         {BATCH} per call, settle each claimed batch with one call (ack_many, or update_many \
         whose moves go to done with the new metadata); the store is closed (dropped) after \
         the fill.\n",
        meta("pushed_meta_b"),
        meta("settled_meta_b"),
        meta("error_b"),
    );
    Ok(())
}

/// The event names the deliveries cycle through.
const EVENTS: [&str; 4] = [
    "order.created",
    "order.paid",
    "invoice.finalized",
    "customer.updated",
];

/// A pseudo-random 64-bit value of `seq` (splitmix64), for ids that differ per item.
fn mix(seq: u64) -> u64 {
    let mut z = seq.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Delivery `seq` as pushed: a payload and the metadata the webhook layer fires with.
fn delivery(seq: usize) -> NewItem {
    let s = seq as u64;
    NewItem::new(payload(s))
        .with_metadata("event", EVENTS[seq % EVENTS.len()])
        .with_metadata("subscription", format!("sub_{:016x}", mix(s % 8)))
        .with_metadata("request_id", format!("req_{:016x}", mix(s)))
}

/// The metadata of a delivered item, as the webhook layer's `settle` writes it: what it was
/// pushed with, the attempt count and the record of the (first, successful) attempt.
fn delivered_metadata(item: &Item) -> BTreeMap<String, String> {
    let mut metadata = item.metadata.clone();
    let h = mix(item.key);
    let record = serde_json::json!({
        "number": 1,
        "at": 1_767_225_600_000_u64 + item.key,
        "status": 200,
        "error": null,
        "duration_ms": 5 + h % 200,
        "response": format!("{{\"received\":true,\"status\":\"ok\",\"id\":\"evt_{h:016x}\"}}"),
    });
    metadata.insert("attempts".into(), "1".into());
    metadata.insert("attempt.0001".into(), record.to_string());
    metadata
}

/// The error of every 10th delivered item (~80 bytes, as a failed earlier attempt leaves).
fn delivery_error(key: u64) -> String {
    format!(
        "request timed out: no response within 30s from https://hooks.example.com/in/{:08x}",
        mix(key) >> 32
    )
}

/// Bytes of metadata keys and values.
fn metadata_bytes(metadata: &BTreeMap<String, String>) -> usize {
    metadata.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// Creates the queue (retention `Keep`: settled items stay, in `done`), pushes `n`
/// deliveries, settles them as `kind` says, and closes the store.
pub(super) async fn retained_fill(kind: Retained, dir: &Path, n: usize) -> BenchResult<Metrics> {
    let store = RETAINED_MODE.open(dir)?;
    let queue = create_queue(&store, Retention::Keep).await?;
    let start = Instant::now();
    let mut pushed = 0;
    while pushed < n {
        let len = BATCH.min(n - pushed);
        let items = (pushed..pushed + len).map(delivery).collect();
        store.push_batch(&queue, items).await?;
        pushed += len;
    }
    let mut m = Metrics::new();
    let (mut settled, mut settled_meta, mut errors, mut error_bytes) = (0, 0, 0, 0);
    while kind != Retained::Pending && settled < n {
        let claimed = store.claim(&queue, BATCH).await?;
        if claimed.is_empty() {
            return Err(format!("claimed nothing after settling {settled} of {n}").into());
        }
        settled += claimed.len();
        if kind == Retained::Acked {
            let keys: Vec<_> = claimed.iter().map(|i| i.key).collect();
            store.ack_many(&queue, &keys).await?;
            continue;
        }
        let mut updates = Vec::with_capacity(claimed.len());
        for item in &claimed {
            let metadata = delivered_metadata(item);
            settled_meta += metadata_bytes(&metadata);
            let mut mv = Move::to(Phase::DONE).metadata(metadata);
            if item.key % 10 == 0 {
                let error = delivery_error(item.key);
                errors += 1;
                error_bytes += error.len();
                mv = mv.error(error);
            }
            let transition = Transition {
                expect: Expect {
                    phase: Some(Phase::IN_FLIGHT),
                    lease_owner: Some(OWNER.into()),
                },
                action: Action::Move(mv),
            };
            updates.push((item.key, transition));
        }
        store.update_many(&queue, updates).await?;
    }
    store.sync().await?;
    let secs = start.elapsed().as_secs_f64();
    let held = store.count_phase(&queue, &kind.phase()).await?;
    if held != n as u64 {
        return Err(format!("{held} items in {}, expected {n}", kind.phase()).into());
    }
    m.insert("ops".into(), n as f64);
    m.insert("secs".into(), secs);
    m.insert(
        "pushed_meta_b".into(),
        metadata_bytes(&delivery(0).metadata) as f64,
    );
    if settled > 0 && settled_meta > 0 {
        m.insert(
            "settled_meta_b".into(),
            settled_meta as f64 / settled as f64,
        );
    }
    if errors > 0 {
        m.insert("error_b".into(), error_bytes as f64 / f64::from(errors));
    }
    let closing = Instant::now();
    drop(store);
    m.insert("close_ms".into(), ms(closing.elapsed()));
    record_disk(&mut m, "disk", dir)?;
    Ok(m)
}

/// Reopens the filled store in this fresh process, counts it, and reports the resident set
/// before the open and after the count (the store still open), per item.
pub(super) async fn retained_reopen(kind: Retained, dir: &Path, n: usize) -> BenchResult<Metrics> {
    let queue = queue_id()?;
    let base = rss_kib()?;
    let start = Instant::now();
    let store: AnyStore = RETAINED_MODE.open(dir)?;
    let opened = start.elapsed();
    let count = store.count(&queue).await?;
    let total = start.elapsed();
    let (rss, hwm) = (rss_kib()?, peak_rss_kib()?);
    if count != n as u64 {
        return Err(format!("reopened store counts {count} items, expected {n}").into());
    }
    let held = store.count_phase(&queue, &kind.phase()).await?;
    if held != n as u64 {
        return Err(format!("reopened store has {held} items in {}", kind.phase()).into());
    }
    drop(store);
    let per_item = |kib: f64| (kib - base) * 1024.0 / n as f64;
    Ok(Metrics::from([
        ("open_ms".into(), ms(opened)),
        ("count_ms".into(), ms(total.saturating_sub(opened))),
        ("total_ms".into(), ms(total)),
        ("base_rss_kib".into(), base),
        ("rss_kib".into(), rss),
        ("hwm_kib".into(), hwm),
        ("rss_per_item_b".into(), per_item(rss)),
        ("hwm_per_item_b".into(), per_item(hwm)),
    ]))
}
