//! Remote subscribe: two hookspools in one process, each behind its own real HTTP server on
//! 127.0.0.1. B subscribes its `orders` channel to A's events; A publishes; A's delivery loop
//! POSTs the signed event to B's `/callbacks/orders`; B's handler runs it.

use std::time::Duration;

use hookspool::{MemoryBackend, QueueId, Store};
use hookspool_client::{Client, Error, NewSubscription, Publish};
use hookspool_http::{ApiConfig, ApiState, router};
use hookspool_webhooks::{CallbackConfig, DeliveryConfig, Hooks, Inbound, Secret, handler_fn};
use tokio::sync::{mpsc, oneshot};

use crate::support::serve;

const TOKEN_A: &str = "a-token-for-the-shop";

/// A running hookspool: its hooks, its address, and what stops its loops.
struct Node {
    hooks: Hooks<MemoryBackend>,
    url: String,
    _stop: oneshot::Sender<()>,
}

/// A: publishes, delivers (loopback allowed, retries after 50 ms), needs a token.
async fn node_a() -> Node {
    let hooks = Hooks::open(Store::new(MemoryBackend::new())).await.unwrap();
    let config = DeliveryConfig {
        poll_interval: Duration::from_millis(20),
        ..crate::loopback_delivery(vec![Duration::from_millis(50); 5])
    };
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(hooks.deliverer(config).unwrap().run(async {
        let _ = stopped.await;
    }));
    let api = ApiConfig {
        tokens: vec![Secret::new(TOKEN_A)],
        ..ApiConfig::default()
    };
    let addr = serve(router(ApiState::new(hooks.clone(), api))).await;
    Node {
        hooks,
        url: format!("http://{addr}"),
        _stop: stop,
    }
}

/// B: receives on its `orders` channel; its handler reports every callback.
async fn node_b() -> (Node, mpsc::UnboundedReceiver<Inbound>) {
    let hooks = Hooks::open(Store::new(MemoryBackend::new())).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let callbacks = hooks
        .callbacks(CallbackConfig::default())
        .unwrap()
        .handle(
            "orders",
            handler_fn(move |msg: Inbound| {
                let _ = tx.send(msg);
                async { Ok(()) }
            }),
        )
        .await
        .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(callbacks.run(async {
        let _ = stopped.await;
    }));
    let addr = serve(router(ApiState::new(hooks.clone(), ApiConfig::default()))).await;
    let node = Node {
        hooks,
        url: format!("http://{addr}"),
        _stop: stop,
    };
    (node, rx)
}

async fn handled(rx: &mut mpsc::UnboundedReceiver<Inbound>) -> Inbound {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("B's handler ran")
        .unwrap()
}

fn orders() -> QueueId {
    QueueId::new("orders").unwrap()
}

#[tokio::test]
async fn b_subscribes_to_a_and_its_handler_runs_a_signed_event() {
    let a = node_a().await;
    let (b, mut calls) = node_b().await;
    let shop = Client::new(&a.url, Some(Secret::new(TOKEN_A))).unwrap();
    let callback_url = format!("{}/callbacks/orders", b.url);
    let sub = shop
        .subscribe_channel(
            &b.hooks,
            &orders(),
            NewSubscription::new("order.*", &callback_url),
        )
        .await
        .unwrap();
    assert_eq!(sub.url, callback_url);
    let channel = b.hooks.store().queue(&orders()).await.unwrap().unwrap();
    let secret =
        hookspool_webhooks::channel_secret(&channel).expect("B's channel now requires signatures");
    assert_eq!(
        sub.secret.as_ref().map(Secret::expose),
        Some(secret.expose()),
        "A signs with the secret B chose"
    );

    let published = shop
        .publish(&Publish::new("order.paid", &serde_json::json!({"id": 42})))
        .await
        .unwrap();
    assert_eq!(published.delivery_ids.len(), 1);
    let msg = handled(&mut calls).await;
    assert_eq!(msg.channel, orders());
    assert_eq!(
        msg.webhook_id.as_deref(),
        Some(published.delivery_ids[0].as_str()),
        "the sender's webhook-id reaches the handler"
    );
    let body: serde_json::Value = msg.json().unwrap();
    assert_eq!(body["id"], 42);

    // An unsigned callback to B's channel is refused and stored nowhere.
    let resp = reqwest::Client::new()
        .post(&callback_url)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(b.hooks.store().count(&orders()).await.unwrap(), 1);
}

#[tokio::test]
async fn subscribing_again_keeps_one_subscription_and_its_signatures_verify() {
    let a = node_a().await;
    let (b, mut calls) = node_b().await;
    let shop = Client::new(&a.url, Some(Secret::new(TOKEN_A))).unwrap();
    let request = NewSubscription::new("order.*", format!("{}/callbacks/orders", b.url));
    let first = shop
        .subscribe_channel(&b.hooks, &orders(), request.clone())
        .await
        .unwrap();
    // B loses its channel's secret (say its data directory was replaced): subscribing again
    // finds the existing subscription on A and rotates it to B's new secret.
    let mut channel = b.hooks.store().queue(&orders()).await.unwrap().unwrap();
    hookspool_webhooks::set_channel_secret(&mut channel, None).unwrap();
    b.hooks.store().update_queue(channel).await.unwrap();
    let again = shop
        .subscribe_channel(&b.hooks, &orders(), request)
        .await
        .unwrap();
    assert_eq!(again.id, first.id, "one subscription, not two");
    assert_eq!(a.hooks.subscriptions().len(), 1);
    let new_secret = b.hooks.store().queue(&orders()).await.unwrap().unwrap();
    let new_secret = hookspool_webhooks::channel_secret(&new_secret).unwrap();
    assert_ne!(
        first.secret.as_ref().map(Secret::expose),
        Some(new_secret.expose())
    );

    shop.publish(&Publish::new(
        "order.shipped",
        &serde_json::json!({"id": 7}),
    ))
    .await
    .unwrap();
    let msg = handled(&mut calls).await;
    assert_eq!(msg.json::<serde_json::Value>().unwrap()["id"], 7);
}

#[tokio::test]
async fn a_wrong_token_or_a_bad_event_is_refused_by_the_remote() {
    let a = node_a().await;
    let (b, _calls) = node_b().await;
    let callback_url = format!("{}/callbacks/orders", b.url);
    let wrong = Client::new(&a.url, Some(Secret::new("not-the-right-token"))).unwrap();
    let e = wrong
        .subscribe_channel(
            &b.hooks,
            &orders(),
            NewSubscription::new("order.*", &callback_url),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Remote { status: 401, .. }), "{e:?}");
    let shop = Client::new(&a.url, Some(Secret::new(TOKEN_A))).unwrap();
    let e = shop
        .subscribe_channel(
            &b.hooks,
            &orders(),
            NewSubscription::new("bad event!", &callback_url),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Remote { status: 400, .. }), "{e:?}");
    let e = shop
        .subscribe_channel(
            &b.hooks,
            &QueueId::new("hookspool.deliveries").unwrap(),
            NewSubscription::new("order.*", &callback_url),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Local(hookspool_webhooks::Error::InvalidInput(_))),
        "{e:?}"
    );
    assert!(a.hooks.subscriptions().is_empty());
}
