//! Two processes on one store they share, without change notices (as when a notice is lost
//! while a connection is down): each loads the other's new subscriptions at its next reload,
//! once a second. A delivery loop that claims a delivery of a subscription it has not loaded
//! yet reads the subscriptions again, and sends it, rather than take it for one removed;
//! a delivery whose subscription is gone from the store is still cancelled. When that read
//! fails, the delivery is neither sent nor cancelled: the loop gives it back to pending as
//! it stops, or, if the store is unavailable, waits and sends it once the read works. The
//! backlog of a removed subscription costs one read of the subscriptions, not one per claim,
//! and a subscription made again under the same id gets its new deliveries.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hookspool::{Phase, QueueId, Store};
use hookspool_webhooks::{
    DELIVERIES_QUEUE, DeliveryId, DeliveryOutcome, Hooks, OutcomeKind, SubscribeOptions,
};

use crate::delivery::config;
use crate::settler::{Gated, GatedBackend, SubReads};
use crate::support::{Receiver, receiver};

/// Process B loads the subscriptions when it opens, and again a second later. Within that
/// second process A subscribes and fires, and B's delivery loop, started then, claims the
/// delivery at once: it must send it (before this change it cancelled it as the delivery of
/// a removed subscription, which the three-daemon test of `hookspool serve` on PostgreSQL
/// met now and then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_claimed_before_its_subscription_is_loaded_is_sent() {
    let (_a, b, _gate, mut rx, ids) = fired_before_b_loads_it().await;
    let (outcome, stop) = first_outcome(&b).await;
    sent(&outcome, &ids[0], &mut rx).await;
    stop.await;
}

/// A fires an event to its subscription and removes the subscription before B opens: B's
/// loop, which never loaded it, reads the subscriptions again when it claims the delivery,
/// does not find it there either, and cancels the delivery without sending it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_whose_subscription_is_gone_from_the_store_is_cancelled() {
    let shared = shared_store();
    let a = Hooks::open(Store::new(shared.clone())).await.unwrap();
    let mut rx = receiver(200).await;
    let sub = a
        .subscribe("order.created", &rx.url, SubscribeOptions::default())
        .await
        .unwrap();
    let ids = a.fire("order.created", b"{}".to_vec()).await.unwrap();
    assert!(a.unsubscribe(&sub.id).await.unwrap());
    let b = Hooks::open(Store::new(shared)).await.unwrap();
    let (outcome, stop) = first_outcome(&b).await;
    assert_eq!(outcome.delivery_id, ids[0]);
    assert_eq!(outcome.kind, OutcomeKind::Cancelled, "{outcome:?}");
    assert_eq!(outcome.error.as_deref(), Some("subscription removed"));
    stop.await;
    rx.nothing_more();
}

/// B claims a delivery of a subscription it has not loaded, and the read of the
/// subscriptions that would tell whether it was made or removed fails with an error that
/// stops the loop. The delivery must not be cancelled (its subscription exists) nor left
/// leased to B until the lease ends: it is back in pending when the loop has stopped, and
/// the next loop, once the reads work, sends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_claimed_while_the_subscriptions_cannot_be_read_is_given_back() {
    let (a, b, gate, mut rx, ids) = fired_before_b_loads_it().await;
    *gate.sub_reads.lock().unwrap() = SubReads::Fail;
    let mut results = b.results();
    let run = b
        .deliverer(config(&[1]))
        .unwrap()
        .run(std::future::pending());
    let stopped = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the loop stops within 10 s");
    let e = stopped.expect_err("the loop stops on the failed read");
    assert!(!e.is_unavailable(), "{e}");
    assert!(e.to_string().contains("test switch"), "{e}");
    assert!(gate.sub_reads_failed.load(Ordering::SeqCst) >= 1);

    let q = QueueId::new(DELIVERIES_QUEUE).unwrap();
    let counts = a.store().counts(&q).await.unwrap();
    assert_eq!(counts.get(&Phase::PENDING), 1, "given back: {counts:?}");
    assert_eq!(counts.get(&Phase::IN_FLIGHT), 0, "{counts:?}");
    assert!(results.try_recv().is_err(), "no outcome announced");
    rx.nothing_more();

    *gate.sub_reads.lock().unwrap() = SubReads::Work;
    let (outcome, stop) = first_outcome(&b).await;
    sent(&outcome, &ids[0], &mut rx).await;
    stop.await;
    rx.nothing_more();
}

/// The same with the store unavailable (a database that cannot be reached): the loop waits
/// and starts again, as it does for any unavailable store, and sends the delivery once,
/// when the subscriptions can be read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_claimed_while_the_store_is_unavailable_is_sent_once_it_is_back() {
    let (_a, b, gate, mut rx, ids) = fired_before_b_loads_it().await;
    *gate.sub_reads.lock().unwrap() = SubReads::Unavailable;
    // The reads work again after two have failed: the loop has claimed, failed and started
    // again at least once by then.
    let back = tokio::spawn(async move {
        while gate.sub_reads_failed.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        *gate.sub_reads.lock().unwrap() = SubReads::Work;
    });
    let (outcome, stop) = first_outcome(&b).await;
    back.await.unwrap();
    sent(&outcome, &ids[0], &mut rx).await;
    stop.await;
    rx.nothing_more();
}

/// Deliveries that A fires to its emitter `x` before it detaches it.
const BACKLOG: u8 = 40;

/// A fires [`BACKLOG`] events to its emitter `x` and detaches it; B's loop, which never
/// loaded `x`, claims 4 deliveries at a time. It reads the subscriptions again once (when it
/// also notes the deliveries queue's highest key), and cancels the rest of the backlog
/// without reading them again: before, each claim read them (10 reads). Then A attaches `x`
/// again and fires: that delivery has a higher key, B reads the subscriptions again, finds
/// the new `x` and sends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_subscriptions_backlog_costs_one_read_of_the_subscriptions() {
    let (a, b, gate) = two_processes().await;
    let mut rx = receiver(200).await;
    let url = rx.url.clone();
    a.attach("x", &["e"], &url, SubscribeOptions::default())
        .await
        .unwrap();
    for n in 0..BACKLOG {
        assert_eq!(a.fire("e", vec![n]).await.unwrap().len(), 1);
    }
    assert!(a.detach("x").await.unwrap());
    assert!(b.subscriptions().is_empty(), "B has not loaded `x`");

    let before = gate.sub_reads_asked.load(Ordering::SeqCst);
    let started = std::time::Instant::now();
    let mut results = b.results();
    let mut config = config(&[1]);
    config.claim_batch = 4;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(b.deliverer(config).unwrap().run(async {
        let _ = stopped.await;
    }));
    for _ in 0..BACKLOG {
        let outcome = next_outcome(&mut results).await;
        assert_eq!(outcome.kind, OutcomeKind::Cancelled, "{outcome:?}");
    }
    // B's loop reads them once. Each process also reloads them every second: at most
    // one more each per second begun (a slow machine; the drain takes milliseconds).
    let reads = gate.sub_reads_asked.load(Ordering::SeqCst) - before;
    let seconds = usize::try_from(started.elapsed().as_secs()).unwrap();
    assert!(
        reads <= 1 + 2 * (seconds + 1),
        "{reads} reads of the subscriptions in {seconds} s for a backlog of {BACKLOG} \
         claimed 4 at a time"
    );
    rx.nothing_more();

    a.attach("x", &["e"], &url, SubscribeOptions::default())
        .await
        .unwrap();
    let ids = a.fire("e", b"{}".to_vec()).await.unwrap();
    let outcome = next_outcome(&mut results).await;
    sent(&outcome, &ids[0], &mut rx).await;
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    rx.nothing_more();
}

/// Process B opens (and loads the subscriptions: none); then process A subscribes a
/// receiver to `order.created` and fires it, within the second before B's next reload.
/// Returns both, the store's switches, the receiver and the delivery ids.
async fn fired_before_b_loads_it() -> (
    Hooks<GatedBackend>,
    Hooks<GatedBackend>,
    Arc<Gated>,
    Receiver,
    Vec<DeliveryId>,
) {
    let (a, b, gate) = two_processes().await;
    let rx = receiver(200).await;
    a.subscribe("order.created", &rx.url, SubscribeOptions::default())
        .await
        .unwrap();
    let ids = a.fire("order.created", b"{}".to_vec()).await.unwrap();
    assert_eq!(ids.len(), 1, "A matched its own subscription");
    assert!(b.subscriptions().is_empty(), "B has not loaded it");
    (a, b, gate, rx, ids)
}

/// `outcome` is the delivery `id`, sent, and `rx` got its request.
async fn sent(outcome: &DeliveryOutcome, id: &DeliveryId, rx: &mut Receiver) {
    assert_eq!(&outcome.delivery_id, id);
    assert_eq!(outcome.kind, OutcomeKind::Delivered, "{outcome:?}");
    let got = tokio::time::timeout(Duration::from_secs(10), rx.next())
        .await
        .expect("a request within 10 s");
    assert_eq!(&got.body[..], b"{}");
}

/// Processes B, then A, on one shared store (and its switches), their first reads of the
/// subscriptions over: each process reads them as it opens and at once again in the task
/// that follows the other processes' changes, and next a second later.
async fn two_processes() -> (Hooks<GatedBackend>, Hooks<GatedBackend>, Arc<Gated>) {
    let shared = shared_store();
    let gate = Arc::clone(&shared.0);
    let b = Hooks::open(Store::new(shared.clone())).await.unwrap();
    reads_asked(&gate, 2).await;
    let a = Hooks::open(Store::new(shared)).await.unwrap();
    reads_asked(&gate, 4).await;
    (a, b, gate)
}

/// The next outcome announced on `results`, within 10 s.
async fn next_outcome(
    results: &mut tokio::sync::broadcast::Receiver<DeliveryOutcome>,
) -> DeliveryOutcome {
    tokio::time::timeout(Duration::from_secs(10), results.recv())
        .await
        .expect("an outcome within 10 s")
        .unwrap()
}

/// Waits until `n` reads of the subscriptions have been asked for in all.
async fn reads_asked(gate: &Gated, n: usize) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while gate.sub_reads_asked.load(Ordering::SeqCst) < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the first reads of the subscriptions within 10 s");
}

/// The memory backend, said to be shared by several processes (as PostgreSQL is), with its
/// gates open and no change notices: what one `Hooks` on it writes, another reads.
fn shared_store() -> GatedBackend {
    let gate = Arc::new(Gated::default());
    gate.shared.store(true, Ordering::SeqCst);
    GatedBackend(gate)
}

/// Starts `hooks`' delivery loop and waits for its first outcome; returns it, and what
/// stops the loop (which must end without an error).
async fn first_outcome(
    hooks: &Hooks<GatedBackend>,
) -> (DeliveryOutcome, impl Future<Output = ()> + use<>) {
    let mut results = hooks.results();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(hooks.deliverer(config(&[1])).unwrap().run(async {
        let _ = stopped.await;
    }));
    let outcome = next_outcome(&mut results).await;
    let stop = async move {
        let _ = stop.send(());
        task.await.unwrap().unwrap();
    };
    (outcome, stop)
}
