//! How the delivery loop records outcomes: a request's slot is free once its answer is in,
//! before its outcome is written; outcomes waiting together are written in one `update_many`;
//! nothing is announced before it is written; a strict-FIFO subscription's next request waits
//! for the write. Over the memory backend behind a gate that holds every `update_many` of
//! the deliveries queue until the test opens it, and counts them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use hookspool::{
    Backend, Capabilities, Claim, Item, Key, MemoryBackend, NewItem, PhaseCounts, QueueConfig,
    QueueId, Result, Selector, Store, SweepReport, Timestamp, Transition,
};
use hookspool_webhooks::{DELIVERIES_QUEUE, DeliveryOutcome, Hooks, SubscribeOptions};
use tokio::sync::{Notify, broadcast, oneshot};

use crate::delivery::config;
use crate::support::receiver;

/// The memory backend, with the deliveries queue's `update_many` held while the gate is
/// closed.
#[derive(Debug, Default)]
struct Gated {
    inner: MemoryBackend,
    closed: AtomicBool,
    opened: Notify,
    /// `update_many` calls on the deliveries queue, and the entries they carried.
    calls: AtomicUsize,
    entries: AtomicUsize,
}

impl Gated {
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
struct GatedBackend(Arc<Gated>);

impl Backend for GatedBackend {
    fn capabilities(&self) -> Capabilities {
        self.0.inner.capabilities()
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
            self.0.pass().await;
            self.0.calls.fetch_add(1, Ordering::SeqCst);
            self.0.entries.fetch_add(updates.len(), Ordering::SeqCst);
        }
        self.0.inner.update_many(queue, updates, now).await
    }
    async fn claim(&self, queue: &QueueId, claim: Claim, now: Timestamp) -> Result<Vec<Item>> {
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

async fn start() -> Running {
    let gate = Arc::new(Gated::default());
    let store = Store::new(GatedBackend(Arc::clone(&gate)));
    let hooks = Hooks::open(store).await.unwrap();
    let results = hooks.results();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(hooks.deliverer(config(&[5])).unwrap().run(async {
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
        let outcome = tokio::time::timeout(Duration::from_secs(10), run.results.recv())
            .await
            .unwrap()
            .unwrap();
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
    let _ = run.stop.send(());
    run.task.await.unwrap().unwrap();
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
        tokio::time::timeout(Duration::from_secs(10), run.results.recv())
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(done_count(&run.hooks).await, 2);
    let _ = run.stop.send(());
    run.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_graceful_stop_writes_every_outcome_it_was_handed() {
    let mut rx = receiver(200).await;
    let run = start().await;
    run.hooks
        .subscribe("e", &rx.url, SubscribeOptions::default())
        .await
        .unwrap();
    run.gate.closed.store(true, Ordering::SeqCst);
    for n in 0..3 {
        run.hooks.fire("e", vec![b'0' + n]).await.unwrap();
    }
    for _ in 0..3 {
        rx.next().await;
    }
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
