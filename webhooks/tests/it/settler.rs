//! How the delivery loop records outcomes and claims: a request's slot is free once its
//! answer is in, before its outcome is written; outcomes waiting together are written in one
//! `update_many`; nothing is announced before it is written; a strict-FIFO subscription's
//! next request waits for the write; requests go on starting while a claim waits for the
//! disk, and claims do not ask to be durable; an outcome that fails its lease check leaves
//! the rest of its group written; a slow subscription holds back no one else's outcomes. Over the memory backend behind gates that hold
//! the deliveries queue's `update_many` (and, in one test, its claims) until the test opens
//! them, and count them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookspool::{
    Backend, Capabilities, Claim, Item, Key, MemoryBackend, NewItem, PhaseCounts, QueueConfig,
    QueueId, Result, Selector, Store, SweepReport, Timestamp, Transition,
};
use hookspool_webhooks::{
    DELIVERIES_QUEUE, DeliveryConfig, DeliveryOutcome, Hooks, OutcomeKind, SUBSCRIPTIONS_QUEUE,
    SubscribeOptions,
};
use tokio::sync::{Notify, broadcast, oneshot};

use crate::delivery::config;
use crate::delivery_in_flight::gate;
use crate::support::{Receiver, receiver};

/// The memory backend, with the deliveries queue's `update_many` held while the gate is
/// closed (and, with `shared`, said to be shared by several processes, as PostgreSQL is;
/// with `sub_reads`, failing reads of the subscriptions).
#[derive(Debug)]
pub(crate) struct Gated {
    inner: MemoryBackend,
    pub(crate) shared: AtomicBool,
    /// How reads of the subscriptions queue go, how many were asked for and how many
    /// failed.
    pub(crate) sub_reads: Mutex<SubReads>,
    pub(crate) sub_reads_asked: AtomicUsize,
    pub(crate) sub_reads_failed: AtomicUsize,
    closed: AtomicBool,
    opened: Notify,
    /// `update_many` calls on the deliveries queue, and the entries they carried.
    calls: AtomicUsize,
    entries: AtomicUsize,
    /// The keys of each `update_many` call on the deliveries queue, noted as it arrives at
    /// the gate.
    groups: Mutex<Vec<Vec<Key>>>,
    /// Claims of the deliveries queue that pass before the claim gate shuts (`usize::MAX`:
    /// it never does), the claims held there now, and whether any asked to be durable.
    free_claims: AtomicUsize,
    claims_held: AtomicUsize,
    claims_opened: Notify,
    durable_claims: AtomicUsize,
    /// Claims of the deliveries queue made.
    claims: AtomicUsize,
}

impl Default for Gated {
    fn default() -> Self {
        Gated {
            inner: MemoryBackend::default(),
            shared: AtomicBool::new(false),
            sub_reads: Mutex::new(SubReads::Work),
            sub_reads_asked: AtomicUsize::new(0),
            sub_reads_failed: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            opened: Notify::new(),
            calls: AtomicUsize::new(0),
            entries: AtomicUsize::new(0),
            groups: Mutex::new(Vec::new()),
            free_claims: AtomicUsize::new(usize::MAX),
            claims_held: AtomicUsize::new(0),
            claims_opened: Notify::new(),
            durable_claims: AtomicUsize::new(0),
            claims: AtomicUsize::new(0),
        }
    }
}

/// How a [`Gated`] backend answers reads of the subscriptions queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SubReads {
    /// As the memory backend does.
    Work,
    /// With [`hookspool::Error::Unavailable`], as a database that cannot be reached does.
    Unavailable,
    /// With another backend error ([`hookspool::Error::Backend`]).
    Fail,
}

impl Gated {
    /// The error a read of the subscriptions queue fails with now, if it does (counted).
    fn sub_read_failure(&self) -> Option<hookspool::Error> {
        self.sub_reads_asked.fetch_add(1, Ordering::SeqCst);
        let source = "reads of the subscriptions fail (test switch)".into();
        let error = match *self.sub_reads.lock().unwrap() {
            SubReads::Work => return None,
            SubReads::Unavailable => hookspool::Error::Unavailable {
                backend: "gated",
                source,
            },
            SubReads::Fail => hookspool::Error::Backend {
                backend: "gated",
                source,
            },
        };
        self.sub_reads_failed.fetch_add(1, Ordering::SeqCst);
        Some(error)
    }

    fn open(&self) {
        self.closed.store(false, Ordering::SeqCst);
        self.opened.notify_waiters();
    }

    async fn pass(&self) {
        loop {
            let opened = self.opened.notified();
            if !self.closed.load(Ordering::SeqCst) {
                return;
            }
            opened.await;
        }
    }
}

/// Delegates every call to the memory backend.
#[derive(Clone, Debug)]
pub(crate) struct GatedBackend(pub(crate) Arc<Gated>);

impl Backend for GatedBackend {
    fn capabilities(&self) -> Capabilities {
        let mut capabilities = self.0.inner.capabilities();
        capabilities.shared = self.0.shared.load(Ordering::SeqCst);
        capabilities
    }
    async fn create_queue(&self, config: QueueConfig) -> Result<()> {
        self.0.inner.create_queue(config).await
    }
    async fn update_queue(&self, config: QueueConfig) -> Result<()> {
        self.0.inner.update_queue(config).await
    }
    async fn get_queue(&self, id: &QueueId) -> Result<Option<QueueConfig>> {
        self.0.inner.get_queue(id).await
    }
    async fn list_queues(&self) -> Result<Vec<QueueConfig>> {
        self.0.inner.list_queues().await
    }
    async fn delete_queue(&self, id: &QueueId) -> Result<bool> {
        self.0.inner.delete_queue(id).await
    }
    async fn push(&self, queue: &QueueId, items: Vec<NewItem>, now: Timestamp) -> Result<Vec<Key>> {
        self.0.inner.push(queue, items, now).await
    }
    async fn fetch(&self, queue: &QueueId, selector: &Selector) -> Result<Vec<Item>> {
        if queue.as_str() == SUBSCRIPTIONS_QUEUE
            && let Some(e) = self.0.sub_read_failure()
        {
            return Err(e);
        }
        self.0.inner.fetch(queue, selector).await
    }
    async fn pop(&self, queue: &QueueId, selector: &Selector) -> Result<Vec<Item>> {
        self.0.inner.pop(queue, selector).await
    }
    async fn count(&self, queue: &QueueId) -> Result<PhaseCounts> {
        self.0.inner.count(queue).await
    }
    async fn reset(&self, queue: &QueueId) -> Result<u64> {
        self.0.inner.reset(queue).await
    }
    async fn update(
        &self,
        queue: &QueueId,
        key: Key,
        transition: Transition,
        now: Timestamp,
    ) -> Result<Item> {
        self.0.inner.update(queue, key, transition, now).await
    }
    async fn update_many(
        &self,
        queue: &QueueId,
        updates: Vec<(Key, Transition)>,
        now: Timestamp,
    ) -> Result<Vec<Result<()>>> {
        if queue.as_str() == DELIVERIES_QUEUE {
            let keys = updates.iter().map(|(key, _)| *key).collect();
            self.0.groups.lock().unwrap().push(keys);
            self.0.pass().await;
            self.0.calls.fetch_add(1, Ordering::SeqCst);
            self.0.entries.fetch_add(updates.len(), Ordering::SeqCst);
        }
        self.0.inner.update_many(queue, updates, now).await
    }
    async fn claim(&self, queue: &QueueId, claim: Claim, now: Timestamp) -> Result<Vec<Item>> {
        if queue.as_str() == DELIVERIES_QUEUE {
            self.0.claims.fetch_add(1, Ordering::SeqCst);
            if claim.durable {
                self.0.durable_claims.fetch_add(1, Ordering::SeqCst);
            }
            let free = self.0.free_claims.load(Ordering::SeqCst);
            if free == 0 {
                let opened = self.0.claims_opened.notified();
                self.0.claims_held.fetch_add(1, Ordering::SeqCst);
                opened.await;
                self.0.claims_held.fetch_sub(1, Ordering::SeqCst);
            } else if free != usize::MAX {
                self.0.free_claims.store(free - 1, Ordering::SeqCst);
            }
        }
        self.0.inner.claim(queue, claim, now).await
    }
    async fn sweep(&self, queue: &QueueId, now: Timestamp) -> Result<SweepReport> {
        self.0.inner.sweep(queue, now).await
    }
    async fn sync(&self) -> Result<()> {
        self.0.inner.sync().await
    }
}

struct Running {
    gate: Arc<Gated>,
    hooks: Hooks<GatedBackend>,
    results: broadcast::Receiver<DeliveryOutcome>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<hookspool_webhooks::Result<()>>,
}

/// Hooks on a gated memory backend, and the gate.
async fn gated() -> (Arc<Gated>, Hooks<GatedBackend>) {
    let gate = Arc::new(Gated::default());
    let store = Store::new(GatedBackend(Arc::clone(&gate)));
    (gate, Hooks::open(store).await.unwrap())
}

/// Subscribes `rx` to event `e`.
async fn subscribe(hooks: &Hooks<GatedBackend>, rx: &Receiver) {
    hooks
        .subscribe("e", &rx.url, SubscribeOptions::default())
        .await
        .unwrap();
}

async fn start() -> Running {
    let (gate, hooks) = gated().await;
    running(gate, hooks, config(&[5]))
}

/// Starts a delivery loop with `config`.
fn running(gate: Arc<Gated>, hooks: Hooks<GatedBackend>, config: DeliveryConfig) -> Running {
    let results = hooks.results();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(hooks.deliverer(config).unwrap().run(async {
        let _ = stopped.await;
    }));
    Running {
        gate,
        hooks,
        results,
        stop,
        task,
    }
}

impl Running {
    /// The next outcome announced on the results stream.
    async fn outcome(&mut self) -> DeliveryOutcome {
        tokio::time::timeout(Duration::from_secs(10), self.results.recv())
            .await
            .expect("no outcome in time")
            .unwrap()
    }

    /// Stops the loop gracefully; it must end without an error.
    async fn finish(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// Subscribes `rx` to `e`, shuts the outcome gate, fires `n` events and waits until `rx` has
/// answered them all: their outcomes are then held at the gate.
async fn answered_with_writes_held(run: &Running, rx: &mut Receiver, n: u8) {
    subscribe(&run.hooks, rx).await;
    run.gate.closed.store(true, Ordering::SeqCst);
    for n in 0..n {
        run.hooks.fire("e", vec![b'0' + n]).await.unwrap();
    }
    for _ in 0..n {
        rx.next().await;
    }
}

async fn done_count(hooks: &Hooks<GatedBackend>) -> u64 {
    let q = QueueId::new(DELIVERIES_QUEUE).unwrap();
    hooks
        .store()
        .count_phase(&q, &hookspool::Phase::DONE)
        .await
        .unwrap()
}

#[tokio::test]
async fn slots_free_before_outcomes_are_written_and_outcomes_are_written_together() {
    let mut rx = receiver(200).await;
    let mut run = start().await;
    // One request at a time to this subscription: each next one can only start once the
    // slot of the one before is free.
    run.hooks
        .subscribe("e", &rx.url, SubscribeOptions::default().max_in_flight(1))
        .await
        .unwrap();
    run.gate.closed.store(true, Ordering::SeqCst);
    for n in 0..4 {
        run.hooks.fire("e", vec![b'0' + n]).await.unwrap();
    }
    // All four are sent while no outcome can be written.
    for _ in 0..4 {
        rx.next().await;
    }
    assert_eq!(run.gate.calls.load(Ordering::SeqCst), 0);
    assert!(
        matches!(
            run.results.try_recv(),
            Err(broadcast::error::TryRecvError::Empty)
        ),
        "an outcome was announced before it was written"
    );
    assert_eq!(done_count(&run.hooks).await, 0);

    run.gate.open();
    for _ in 0..4 {
        let outcome = run.outcome().await;
        assert!(outcome.is_final(), "{outcome:?}");
    }
    assert_eq!(done_count(&run.hooks).await, 4);
    let (calls, entries) = (
        run.gate.calls.load(Ordering::SeqCst),
        run.gate.entries.load(Ordering::SeqCst),
    );
    assert_eq!(entries, 4, "each outcome written once");
    assert!(
        calls < 4,
        "four outcomes waiting together took {calls} writes"
    );
    rx.nothing_more();
    run.finish().await;
}

#[tokio::test]
async fn strict_fifo_sends_the_next_only_once_the_outcome_before_is_written() {
    let mut rx = receiver(200).await;
    let mut run = start().await;
    run.hooks
        .subscribe(
            "seq",
            &rx.url,
            SubscribeOptions::default().strict_fifo(true),
        )
        .await
        .unwrap();
    run.gate.closed.store(true, Ordering::SeqCst);
    for n in 1..=2 {
        run.hooks.fire("seq", vec![b'0' + n]).await.unwrap();
    }
    assert_eq!(&rx.next().await.body[..], b"1");
    // The first is answered but its outcome is held: the second waits.
    tokio::time::sleep(Duration::from_millis(100)).await;
    rx.nothing_more();
    run.gate.open();
    assert_eq!(&rx.next().await.body[..], b"2");
    for _ in 0..2 {
        run.outcome().await;
    }
    assert_eq!(done_count(&run.hooks).await, 2);
    run.finish().await;
}

#[tokio::test]
async fn a_graceful_stop_writes_every_outcome_it_was_handed() {
    let mut rx = receiver(200).await;
    let run = start().await;
    answered_with_writes_held(&run, &mut rx, 3).await;
    let _ = run.stop.send(());
    // The stop waits on the held writes; open the gate a moment later.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !run.task.is_finished(),
        "the stop did not wait for the outcomes"
    );
    run.gate.open();
    run.task.await.unwrap().unwrap();
    assert_eq!(
        done_count(&run.hooks).await,
        3,
        "every answered delivery is recorded done, none put back"
    );
}

/// A claim waits for a durable write on most backends; the loop goes on meanwhile. Three
/// deliveries to a subscription that takes one at a time are claimed together; the loop's
/// next claim is held at the gate, and all three are sent while it is held (a loop that
/// waited for its claim would send only the first). No claim of the loop asks to be durable:
/// its attempt counts live in what it settles.
#[tokio::test]
async fn requests_go_on_starting_while_a_claim_waits() {
    let mut rx = receiver(200).await;
    let (gate, hooks) = gated().await;
    hooks
        .subscribe("e", &rx.url, SubscribeOptions::default().max_in_flight(1))
        .await
        .unwrap();
    for n in 0..3 {
        hooks.fire("e", vec![b'0' + n]).await.unwrap();
    }
    gate.free_claims.store(1, Ordering::SeqCst);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(hooks.deliverer(config(&[5])).unwrap().run(async {
        let _ = stopped.await;
    }));
    for n in 0..3 {
        let got = tokio::time::timeout(Duration::from_secs(10), rx.next())
            .await
            .unwrap_or_else(|_| panic!("delivery {n} was not sent while a claim was held"));
        assert_eq!(&got.body[..], &[b'0' + n][..]);
        assert_eq!(
            gate.claims_held.load(Ordering::SeqCst),
            1,
            "the loop's second claim is held at the gate"
        );
    }
    assert_eq!(gate.durable_claims.load(Ordering::SeqCst), 0);
    // A stop while the claim is held: the loop waits for the claim to end and gives back
    // what it took (a fourth delivery, fired while the claim was held), unsent.
    hooks.fire("e", vec![b'3']).await.unwrap();
    let _ = stop.send(());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !task.is_finished(),
        "the stop waits for the claim under way"
    );
    gate.free_claims.store(usize::MAX, Ordering::SeqCst);
    gate.claims_opened.notify_waiters();
    task.await.unwrap().unwrap();
    rx.nothing_more();
    let q = QueueId::new(DELIVERIES_QUEUE).unwrap();
    for (phase, n) in [
        (hookspool::Phase::DONE, 3),
        (hookspool::Phase::PENDING, 1),
        (hookspool::Phase::IN_FLIGHT, 0),
    ] {
        let got = hooks.store().count_phase(&q, &phase).await.unwrap();
        assert_eq!(got, n, "deliveries in {phase}");
    }
}

/// With a claim pause, a claim that found less than it had room for is followed by the next
/// only once the pause has passed since it started, however many events wake the loop
/// meanwhile: ten events fired 10 ms apart are taken by one claim, where without the pause
/// every event (and every 10 ms poll) starts a claim of its own.
#[tokio::test]
async fn after_a_claim_with_room_to_spare_the_next_waits_for_the_pause() {
    let mut rx = receiver(200).await;
    let (gate, hooks) = gated().await;
    subscribe(&hooks, &rx).await;
    let config = DeliveryConfig {
        claim_pause: Duration::from_millis(300),
        ..config(&[5])
    };
    let run = running(gate, hooks, config);
    for n in 0..10 {
        run.hooks.fire("e", vec![b'0' + n]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut bodies: Vec<u8> = Vec::new();
    for _ in 0..10 {
        bodies.extend_from_slice(&rx.next().await.body);
    }
    // The loop's first claim (empty, as it starts), the one the pause held back that took
    // all ten, and at most one more if firing them took longer than the pause.
    let claims = run.gate.claims.load(Ordering::SeqCst);
    assert!(claims <= 3, "{claims} claims for 10 events fired in 100 ms");
    bodies.sort_unstable();
    assert_eq!(bodies, b"0123456789");
    run.finish().await;
    rx.nothing_more();
}

/// A claim that came back full is followed at once, pause or not: ten due events, claims of
/// four, and a pause far longer than the test's patience.
#[tokio::test]
async fn a_full_claim_is_followed_at_once_despite_the_pause() {
    let mut rx = receiver(200).await;
    let (gate, hooks) = gated().await;
    subscribe(&hooks, &rx).await;
    for n in 0..10 {
        hooks.fire("e", vec![b'0' + n]).await.unwrap();
    }
    let config = DeliveryConfig {
        claim_pause: Duration::from_hours(1),
        claim_batch: 4,
        ..config(&[5])
    };
    let run = running(gate, hooks, config);
    for _ in 0..10 {
        rx.next().await;
    }
    let claims = run.gate.claims.load(Ordering::SeqCst);
    assert_eq!(claims, 3, "claims of 4, 4 and 2");
    run.finish().await;
}

/// The outcomes of one group are checked one by one: a delivery moved away under the loop
/// (here by an operator, while its answer waited to be written) fails its lease check, and
/// every other outcome of the same `update_many` is written. Nothing is sent again.
#[tokio::test]
async fn an_outcome_that_fails_its_lease_check_leaves_the_rest_of_its_group_written() {
    let mut rx = receiver(200).await;
    let mut run = start().await;
    answered_with_writes_held(&run, &mut rx, 4).await;
    // The settler's first group waits at the gate; the other outcomes reach its channel
    // a moment after their answers, and will all be the second group.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let q = QueueId::new(DELIVERIES_QUEUE).unwrap();
    let in_flight: Vec<Key> = run
        .hooks
        .store()
        .fetch_page(
            &q,
            hookspool::Page::first(10).phase(hookspool::Phase::IN_FLIGHT),
        )
        .await
        .unwrap()
        .iter()
        .map(|item| item.key)
        .collect();
    assert_eq!(in_flight.len(), 4);
    let first = run.gate.groups.lock().unwrap()[0].clone();
    let rest: Vec<Key> = in_flight
        .iter()
        .copied()
        .filter(|key| !first.contains(key))
        .collect();
    // Of two groups of four outcomes, one holds at least two: move one of its deliveries.
    let group = if first.len() >= 2 { &first } else { &rest };
    assert!(group.len() >= 2, "groups {first:?} and {rest:?}");
    let moved = group[0];
    let parked = hookspool::Phase::new("parked").unwrap();
    run.hooks
        .store()
        .update_phase(&q, moved, parked.clone())
        .await
        .unwrap();

    run.gate.open();
    for _ in 0..3 {
        let outcome = run.outcome().await;
        assert_eq!(outcome.kind, OutcomeKind::Delivered, "{outcome:?}");
    }
    // Wait for the group with the moved delivery to be written in full.
    let groups = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if run.gate.entries.load(Ordering::SeqCst) == 4 {
                break run.gate.groups.lock().unwrap().clone();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    assert!(
        groups.iter().any(|g| g.contains(&moved) && g.len() >= 2),
        "the moved delivery was not written with others: {groups:?}"
    );
    assert_eq!(
        done_count(&run.hooks).await,
        3,
        "the rest of its group is done"
    );
    let item = run
        .hooks
        .store()
        .fetch_key(&q, moved)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        item.phase, parked,
        "the moved delivery stays where it was put"
    );
    rx.nothing_more();
    run.finish().await;
}

/// Outcomes are written by one settler for every subscription, and a request that is still
/// waiting for its answer is not in it: a subscription whose receiver does not answer holds
/// back no other subscription's outcomes.
#[tokio::test]
async fn a_slow_subscription_does_not_hold_back_the_others_outcomes() {
    let mut slow = gate().await;
    let mut fast = receiver(200).await;
    let mut run = start().await;
    run.hooks
        .subscribe("slow", &slow.url, SubscribeOptions::default())
        .await
        .unwrap();
    run.hooks
        .subscribe("fast", &fast.url, SubscribeOptions::default())
        .await
        .unwrap();
    run.hooks.fire("slow", b"s".to_vec()).await.unwrap();
    slow.arrived().await;
    for n in 0..3 {
        run.hooks.fire("fast", vec![b'0' + n]).await.unwrap();
    }
    for _ in 0..3 {
        fast.next().await;
        let outcome = run.outcome().await;
        assert_eq!(outcome.kind, OutcomeKind::Delivered, "{outcome:?}");
    }
    assert_eq!(
        done_count(&run.hooks).await,
        3,
        "the fast subscription's outcomes are written while the slow one's request waits"
    );
    slow.release.add_permits(1);
    let outcome = run.outcome().await;
    assert_eq!(outcome.kind, OutcomeKind::Delivered, "{outcome:?}");
    assert_eq!(done_count(&run.hooks).await, 4);
    fast.nothing_more();
    run.finish().await;
}
