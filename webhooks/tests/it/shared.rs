//! Two processes on one store they share, without change notices (as when a notice is lost
//! while a connection is down): each loads the other's new subscriptions at its next reload,
//! once a second. A delivery loop that claims a delivery of a subscription it has not loaded
//! yet reads the subscriptions again, and sends it, rather than take it for one removed;
//! a delivery whose subscription is gone from the store is still cancelled.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hookspool::Store;
use hookspool_webhooks::{DeliveryOutcome, Hooks, OutcomeKind, SubscribeOptions};

use crate::delivery::config;
use crate::settler::{Gated, GatedBackend};
use crate::support::receiver;

/// Process B loads the subscriptions when it opens, and again a second later. Within that
/// second process A subscribes and fires, and B's delivery loop, started then, claims the
/// delivery at once: it must send it (before this change it cancelled it as the delivery of
/// a removed subscription, which the three-daemon test of `hookspool serve` on PostgreSQL
/// met now and then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_claimed_before_its_subscription_is_loaded_is_sent() {
    let shared = shared_store();
    let b = Hooks::open(Store::new(shared.clone())).await.unwrap();
    // B's first reload runs as it opens; the next is a second later.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let a = Hooks::open(Store::new(shared)).await.unwrap();
    let mut rx = receiver(200).await;
    a.subscribe("order.created", &rx.url, SubscribeOptions::default())
        .await
        .unwrap();
    let ids = a.fire("order.created", b"{}".to_vec()).await.unwrap();
    assert_eq!(ids.len(), 1, "A matched its own subscription");

    let (outcome, stop) = first_outcome(&b).await;
    assert_eq!(outcome.delivery_id, ids[0]);
    assert_eq!(
        outcome.kind,
        OutcomeKind::Delivered,
        "B sent the delivery of the subscription A made: {outcome:?}"
    );
    let got = tokio::time::timeout(Duration::from_secs(10), rx.next())
        .await
        .expect("a request within 10 s");
    assert_eq!(&got.body[..], b"{}");
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
    let outcome = tokio::time::timeout(Duration::from_secs(10), results.recv())
        .await
        .expect("an outcome within 10 s")
        .unwrap();
    let stop = async move {
        let _ = stop.send(());
        task.await.unwrap().unwrap();
    };
    (outcome, stop)
}
