//! `hookspool_client::Client` against the real router served on 127.0.0.1:0: every method
//! round-trips through HTTP, errors carry the status and the server's code, a wrong token is
//! the typed 401, and a dead address is the network error naming the URL.

use std::collections::BTreeMap;
use std::time::Duration;

use hookspool::{
    MemoryBackend, NewItem, Page, Phase, QueueConfig, QueueId, Retention, Store, Timestamp,
};
use hookspool_client::{Client, Error, NewSubscription, Publish, QueueUpdate};
use hookspool_http::{ApiConfig, ApiState, router};
use hookspool_webhooks::{Hooks, Secret};

use crate::support::{self, receiver};

const TOKEN: &str = "client-test-token-0123456789";

/// The API over a fresh memory store, behind a token, served under `prefix` ("" for none);
/// returns the base URL and the store (to check what the client did).
async fn serve_api(prefix: &str) -> (String, Store<MemoryBackend>, Hooks<MemoryBackend>) {
    let store = Store::new(MemoryBackend::new());
    let hooks = Hooks::open(store.clone()).await.unwrap();
    let config = ApiConfig {
        tokens: vec![Secret::new(TOKEN)],
        ..ApiConfig::default()
    };
    let api = router(ApiState::new(hooks.clone(), config));
    let app = if prefix.is_empty() {
        api
    } else {
        axum::Router::new().nest(prefix, api)
    };
    let addr = support::serve(app).await;
    (format!("http://{addr}{prefix}"), store, hooks)
}

async fn client() -> (Client, Store<MemoryBackend>) {
    let (base, store, _) = serve_api("").await;
    (Client::new(&base, Some(Secret::new(TOKEN))).unwrap(), store)
}

fn q(id: &str) -> QueueId {
    QueueId::new(id).unwrap()
}

/// Asserts a remote error with this status and code.
fn remote<T: std::fmt::Debug>(
    result: hookspool_client::Result<T>,
    status: u16,
    code: &str,
) -> String {
    match result {
        Err(Error::Remote {
            status: s,
            code: c,
            message,
        }) => {
            assert_eq!((s, c.as_str()), (status, code), "{message}");
            assert!(!message.is_empty());
            message
        }
        other => panic!("expected a remote {status} {code}, got {other:?}"),
    }
}

#[tokio::test]
async fn queue_settings_round_trip() {
    let (client, store) = client().await;
    let orders = q("orders");
    let config = QueueConfig::new(orders.clone())
        .with_ttl(Duration::from_mins(15))
        .with_retention(Retention::Remove)
        .with_metadata("team", "billing");
    let mut config = config;
    hookspool_webhooks::set_channel_secret(
        &mut config,
        Some(&Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")),
    )
    .unwrap();
    let created = client.create_queue(&config).await.unwrap();
    assert_eq!(created.id, orders);
    assert!(created.has_secret);
    assert_eq!(created.ttl, Some(Duration::from_mins(15)));
    assert_eq!(created.retention, Retention::Remove);
    assert_eq!(created.metadata["team"], "billing");
    assert_eq!(created.counts.total(), 0);
    // What the server stored is what was asked, secret included.
    let stored = store.queue(&orders).await.unwrap().unwrap();
    assert_eq!(
        hookspool_webhooks::channel_secret(&stored),
        Some(Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))
    );
    assert_eq!(created.created_at, stored.created_at);

    remote(client.create_queue(&config).await, 409, "queue_exists");

    let shown = client.queue(&orders).await.unwrap().unwrap();
    assert_eq!(shown, created);
    assert_eq!(client.queue(&q("nope")).await.unwrap(), None);
    let listed = client.queues().await.unwrap();
    assert!(listed.iter().any(|info| info == &created), "{listed:?}");

    let update = QueueUpdate {
        ttl: Some(None),
        secret: Some(None),
        retention: Some(Retention::Keep),
        retain: Some(hookspool_client::wire::RetainView {
            done_ms: Some(3_600_000),
            ..Default::default()
        }),
        metadata: Some(BTreeMap::from([("owner".to_owned(), "ops".to_owned())])),
    };
    let updated = client.update_queue(&orders, &update).await.unwrap();
    assert_eq!(
        updated.retain.done,
        Some(std::time::Duration::from_hours(1)),
        "the typed client sets and reads retention"
    );
    assert!(!updated.has_secret);
    assert_eq!(updated.ttl, None);
    assert_eq!(updated.retention, Retention::Keep);
    assert_eq!(updated.metadata.len(), 1);
    assert_eq!(updated.metadata["owner"], "ops");
    // An empty update keeps everything.
    let same = client
        .update_queue(&orders, &QueueUpdate::default())
        .await
        .unwrap();
    assert_eq!(same, updated);
    remote(
        client
            .update_queue(&q("nope"), &QueueUpdate::default())
            .await,
        404,
        "queue_not_found",
    );

    assert!(client.delete_queue(&orders).await.unwrap());
    assert!(!client.delete_queue(&orders).await.unwrap());
    assert_eq!(store.queue(&orders).await.unwrap(), None);
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // one story, step by step: splitting it would hide the order
async fn items_round_trip_with_exact_payloads() {
    let (client, store) = client().await;
    let id = q("jobs");
    client
        .create_queue(&QueueConfig::new(id.clone()))
        .await
        .unwrap();

    let json = br#"{"a":1,"b":[true,null]}"#.to_vec();
    let text = b"plain text\nwith a newline".to_vec();
    let binary = vec![0xff, 0x00, 0x80, b'\n'];
    let k1 = client
        .push(&id, NewItem::new(json.clone()).with_metadata("event", "x"))
        .await
        .unwrap();
    let keys = client
        .push_batch(
            &id,
            vec![NewItem::new(text.clone()), NewItem::new(binary.clone())],
        )
        .await
        .unwrap();
    assert_eq!(keys.len(), 2);
    let (k2, k3) = (keys[0], keys[1]);
    assert!(k1 < k2 && k2 < k3);
    // Stored byte for byte (base64 on the wire).
    for (key, payload) in [(k1, &json), (k2, &text), (k3, &binary)] {
        let stored = store.fetch_key(&id, key).await.unwrap().unwrap();
        assert_eq!(&stored.payload, payload);
        // And read back the same way.
        let fetched = client.fetch_key(&id, key).await.unwrap().unwrap();
        assert_eq!(&fetched.payload, payload);
        assert_eq!(fetched, stored);
    }
    assert_eq!(client.fetch_key(&id, 999).await.unwrap(), None);
    remote(
        client.fetch_key(&q("nope"), 1).await,
        404,
        "queue_not_found",
    );

    // A scheduled item: the delay is sent relative to now and applied by the server.
    let before = Timestamp::now();
    let later = client
        .push(
            &id,
            NewItem::new(b"later".to_vec())
                .not_before(before.saturating_add(Duration::from_mins(1))),
        )
        .await
        .unwrap();
    let scheduled = store.fetch_key(&id, later).await.unwrap().unwrap();
    assert!(scheduled.not_before.as_millis() >= before.as_millis() + 55_000);

    // Pages: every phase, one phase, offset, limit, reverse, after.
    let all = client.fetch_page(&id, &Page::first(10)).await.unwrap();
    assert_eq!(
        all.iter().map(|i| i.key).collect::<Vec<_>>(),
        vec![k1, k2, k3, later]
    );
    let newest = client
        .fetch_page(&id, &Page::first(1).reverse())
        .await
        .unwrap();
    assert_eq!(newest[0].key, later);
    let skipped = client
        .fetch_page(&id, &Page::first(2).offset(1))
        .await
        .unwrap();
    assert_eq!(
        skipped.iter().map(|i| i.key).collect::<Vec<_>>(),
        vec![k2, k3]
    );
    let after = client
        .fetch_page(&id, &Page::first(10).after(k3))
        .await
        .unwrap();
    assert_eq!(after.iter().map(|i| i.key).collect::<Vec<_>>(), vec![later]);
    remote(
        client.fetch_page(&id, &Page::first(0)).await,
        400,
        "invalid_request",
    );

    // Phases: set, compare-and-set, replay one, replay all dead.
    let dead = client.update_phase(&id, k1, &Phase::DEAD).await.unwrap();
    assert_eq!((dead.key, dead.phase.clone()), (k1, Phase::DEAD));
    let review = Phase::new("review").unwrap();
    let msg = remote(
        client.update_phase_if(&id, k2, &Phase::DEAD, &review).await,
        409,
        "phase_conflict",
    );
    assert!(msg.contains("pending"), "{msg}");
    let moved = client
        .update_phase_if(&id, k2, &Phase::PENDING, &review)
        .await
        .unwrap();
    assert_eq!(moved.phase, review);
    assert_eq!(
        store.fetch_key(&id, k2).await.unwrap().unwrap().phase,
        review
    );
    remote(
        client.update_phase(&id, 999, &Phase::DEAD).await,
        404,
        "item_not_found",
    );

    let counts = client.counts(&id).await.unwrap();
    assert_eq!(counts, store.counts(&id).await.unwrap());
    assert_eq!(client.count(&id).await.unwrap(), 4);
    assert_eq!(client.count_phase(&id, &Phase::DEAD).await.unwrap(), 1);
    assert_eq!(client.count_phase(&id, &review).await.unwrap(), 1);
    assert_eq!(client.count_phase(&id, &Phase::DONE).await.unwrap(), 0);
    remote(client.count(&q("nope")).await, 404, "queue_not_found");

    let replayed = client.replay(&id, k1).await.unwrap();
    assert_eq!(replayed.phase, Phase::PENDING);
    remote(client.replay(&id, k1).await, 409, "phase_conflict");
    client.update_phase(&id, k1, &Phase::DEAD).await.unwrap();
    client.update_phase(&id, k3, &Phase::DEAD).await.unwrap();
    assert_eq!(client.replay_dead(&id).await.unwrap(), 2);
    assert_eq!(client.count_phase(&id, &Phase::DEAD).await.unwrap(), 0);

    // Delete one, then reset the rest.
    assert!(client.delete(&id, k3).await.unwrap());
    assert!(!client.delete(&id, k3).await.unwrap());
    assert_eq!(client.reset(&id).await.unwrap(), 3);
    assert_eq!(store.count(&id).await.unwrap(), 0);
    remote(client.reset(&q("nope")).await, 404, "queue_not_found");
}

#[tokio::test]
async fn dump_streams_every_item_across_pages() {
    let (client, store) = client().await;
    let id = q("big");
    client
        .create_queue(&QueueConfig::new(id.clone()))
        .await
        .unwrap();
    // More than two server pages (DUMP_PAGE items each), with every payload form, so the
    // answer arrives in several chunks and lines straddle chunk boundaries.
    let n = 2 * hookspool::DUMP_PAGE + 17;
    let items: Vec<NewItem> = (0..n)
        .map(|i| match i % 3 {
            0 => NewItem::new(format!(r#"{{"i":{i}}}"#).into_bytes()),
            1 => NewItem::new(format!("text {i}").into_bytes()),
            _ => NewItem::new(vec![0xfe, (i % 251) as u8]),
        })
        .collect();
    let keys = store.push_batch(&id, items).await.unwrap();

    let mut dump = client.dump(&id).await.unwrap();
    let mut seen = Vec::new();
    while let Some(item) = dump.next_item().await.unwrap() {
        seen.push(item);
    }
    assert_eq!(seen.len(), n);
    assert_eq!(seen.iter().map(|i| i.key).collect::<Vec<_>>(), keys);
    for item in [&seen[0], &seen[1], &seen[n - 1]] {
        let stored = store.fetch_key(&id, item.key).await.unwrap().unwrap();
        assert_eq!(item, &stored);
    }
    // After the end it stays at the end.
    assert_eq!(dump.next_item().await.unwrap(), None);

    let mut bytes = 0;
    let counted = client
        .dump_each(&id, |item| {
            bytes += item.payload.len();
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(counted, n as u64);
    assert_eq!(bytes, seen.iter().map(|i| i.payload.len()).sum::<usize>());
    // An error from the callback stops the dump and comes back as is.
    let stopped = client
        .dump_each(&id, |_| Err(Error::invalid("stop here")))
        .await;
    assert!(matches!(stopped, Err(Error::InvalidInput(m)) if m == "stop here"));

    assert!(matches!(
        client.dump(&q("nope")).await,
        Err(Error::Remote { status: 404, ref code, .. }) if code == "queue_not_found"
    ));
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // one story, step by step: splitting it would hide the order
async fn subscribe_publish_and_follow_the_delivery() {
    let (base, _store, hooks) = serve_api("").await;
    let client = Client::new(&base, Some(Secret::new(TOKEN))).unwrap();
    let mut rx = receiver(200).await;
    crate::spawn_loopback_delivery(&hooks);

    let sub = client
        .subscribe(&NewSubscription::new("order.*", &rx.url).owner("acme"))
        .await
        .unwrap();
    assert!(sub.id.starts_with("sub_"), "{}", sub.id);
    assert_eq!(sub.url, rx.url);
    assert_eq!(sub.events, vec!["order.*".to_owned()]);
    assert_eq!(sub.owner.as_deref(), Some("acme"));
    assert!(sub.enabled);
    let secret = sub
        .secret
        .clone()
        .expect("a new subscription shows its secret");
    assert!(secret.expose().starts_with("whsec_"));
    assert!(
        !format!("{sub:?}").contains(secret.expose()),
        "Debug masks it"
    );
    // The same subscription again: the existing one, without its secret.
    let again = client
        .subscribe(&NewSubscription::new("order.*", &rx.url).owner("acme"))
        .await
        .unwrap();
    assert_eq!(
        (again.id.as_str(), again.secret.as_ref()),
        (sub.id.as_str(), None)
    );
    remote(
        client
            .subscribe(&NewSubscription::new("bad event!", &rx.url))
            .await,
        400,
        "invalid_event",
    );

    let listed = client.list_subscriptions(None).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, sub.id);
    assert_eq!(listed[0].secret, None);
    assert_eq!(
        client.list_subscriptions(Some("acme")).await.unwrap().len(),
        1
    );
    assert!(
        client
            .list_subscriptions(Some("other"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        client.subscription(&sub.id).await.unwrap().map(|s| s.id),
        Some(sub.id.clone())
    );
    assert_eq!(client.subscription("sub_nope").await.unwrap(), None);

    let chosen = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    let rotated = client.rotate_secret(&sub.id, Some(&chosen)).await.unwrap();
    assert_eq!(rotated.secret, Some(chosen));
    assert!(rotated.previous_secret_expires_at.is_some());
    let random = client.rotate_secret(&sub.id, None).await.unwrap();
    assert!(
        random
            .secret
            .is_some_and(|s| s.expose().starts_with("whsec_"))
    );

    // Publish: one delivery, which the loop delivers; the log shows the attempt.
    let event = Publish::new("order.paid", &serde_json::json!({"id": 7}));
    let published = client.publish(&event.clone().owner("acme")).await.unwrap();
    assert_eq!(published.delivery_ids.len(), 1);
    assert!(!published.replayed);
    let request = rx.next().await;
    assert_eq!(&request.body[..], br#"{"id":7}"#);
    let id = &published.delivery_ids[0];
    let delivered = wait_for_state(&client, id, "done").await;
    assert_eq!(delivered.event, "order.paid");
    assert_eq!(delivered.subscription.as_deref(), Some(sub.id.as_str()));
    assert_eq!(delivered.payload, br#"{"id":7}"#);
    assert_eq!(delivered.attempts.len(), 1);
    assert_eq!(delivered.attempts[0].status, Some(200));
    assert_eq!(
        client
            .delivery("msg_00000000ffffffffffffffff")
            .await
            .unwrap(),
        None
    );
    remote(client.delivery("not-an-id").await, 400, "invalid_input");

    // Another owner's event reaches nobody.
    let none = client.publish(&event.clone().owner("other")).await.unwrap();
    assert!(none.delivery_ids.is_empty());
    // An idempotency key: the repeat returns the first result and delivers nothing more.
    let keyed = event.clone().idempotency_key("order-7-paid");
    let first = client.publish(&keyed).await.unwrap();
    let repeat = client.publish(&keyed).await.unwrap();
    assert_eq!(repeat.delivery_ids, first.delivery_ids);
    assert!(repeat.replayed && !first.replayed);
    rx.next().await;
    wait_for_state(&client, &first.delivery_ids[0], "done").await;
    rx.nothing_more();
    let reused =
        Publish::new("order.paid", &serde_json::json!({"id": 8})).idempotency_key("order-7-paid");
    remote(client.publish(&reused).await, 422, "idempotency_key_reused");

    // A test event, and the newest deliveries of the subscription, newest first.
    let test = client.test_subscription(&sub.id).await.unwrap();
    assert!(String::from_utf8_lossy(&rx.next().await.body).contains("hookspool.test"));
    wait_for_state(&client, &test, "done").await;
    let newest = client.deliveries(Some(&sub.id), 10).await.unwrap();
    let ids: Vec<&str> = newest.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(
        ids,
        [test.as_str(), first.delivery_ids[0].as_str(), id.as_str()]
    );
    assert_eq!(client.deliveries(None, 1).await.unwrap().len(), 1);
    remote(client.deliveries(None, 0).await, 400, "invalid_input");
    remote(
        client.test_subscription("sub_nope").await,
        404,
        "subscription_not_found",
    );

    assert!(client.unsubscribe(&sub.id).await.unwrap());
    assert!(!client.unsubscribe(&sub.id).await.unwrap());
    client
        .subscribe(&NewSubscription::new("a", &rx.url))
        .await
        .unwrap();
    client
        .subscribe(&NewSubscription::new("b", &rx.url))
        .await
        .unwrap();
    assert_eq!(client.unsubscribe_url(&rx.url).await.unwrap(), 2);
    assert!(client.list_subscriptions(None).await.unwrap().is_empty());
}

/// Polls the delivery log until the delivery reaches `state` (bounded: 10 s).
async fn wait_for_state(
    client: &Client,
    id: &hookspool_webhooks::DeliveryId,
    state: &str,
) -> hookspool_client::Delivery {
    for _ in 0..1000 {
        let d = client.delivery(id.as_str()).await.unwrap().unwrap();
        if d.state.as_str() == state {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("delivery {id} never reached {state}");
}

#[tokio::test]
async fn a_prefix_in_the_base_url_is_kept() {
    let (base, store, _) = serve_api("/hookspool").await;
    assert!(base.ends_with("/hookspool"));
    // With and without the trailing slash.
    for base in [base.clone(), format!("{base}/")] {
        let client = Client::new(&base, Some(Secret::new(TOKEN))).unwrap();
        assert!(client.base_url().ends_with("/hookspool/"));
        let _ = client.queues().await.unwrap();
    }
    let client = Client::new(&base, Some(Secret::new(TOKEN))).unwrap();
    client
        .create_queue(&QueueConfig::new(q("p")))
        .await
        .unwrap();
    assert!(store.queue(&q("p")).await.unwrap().is_some());
}

#[tokio::test]
async fn a_wrong_or_missing_token_is_the_typed_401() {
    let (base, _, _) = serve_api("").await;
    for token in [Some(Secret::new("wrong-token-0123456789")), None] {
        let client = Client::new(&base, token).unwrap();
        let message = remote(client.queues().await, 401, "unauthorized");
        assert!(message.contains("Bearer"), "{message}");
        let e = client.count(&q("x")).await.unwrap_err();
        assert!(matches!(e, Error::Remote { status: 401, .. }), "{e:?}");
        assert_eq!(e.code(), "unauthorized");
        let shown = format!("{e} {e:?} {client:?}");
        assert!(!shown.contains(TOKEN), "{shown}");
        assert!(
            !shown.contains("wrong-token"),
            "the token never shows: {shown}"
        );
    }
}

#[tokio::test]
async fn a_dead_address_is_the_network_error_naming_the_url() {
    // A port that was just free: nothing listens there.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = Client::new(&format!("http://{addr}"), Some(Secret::new(TOKEN))).unwrap();
    match client.queues().await {
        Err(Error::Network { url, reason }) => {
            assert_eq!(url, format!("http://{addr}/queues"));
            assert!(reason.contains("connect"), "{reason}");
            assert!(!reason.contains(TOKEN));
        }
        other => panic!("expected a network error, got {other:?}"),
    }
    let e = client.count(&q("x")).await.unwrap_err();
    assert_eq!(e.code(), "network");
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
}

#[tokio::test]
async fn something_that_is_not_the_api_is_an_invalid_response() {
    // A server that answers every request with plain text, not the API's JSON.
    let app = axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::BAD_GATEWAY,
            "<html>bad gateway</html>",
        )
    });
    let addr = support::serve(app).await;
    let client = Client::new(&format!("http://{addr}"), None).unwrap();
    let message = remote(client.queues().await, 502, "invalid_response");
    assert!(message.contains("bad gateway"), "{message}");

    let ok_text = axum::Router::new().fallback(|| async { "not json" });
    let addr = support::serve(ok_text).await;
    let client = Client::new(&format!("http://{addr}"), None).unwrap();
    remote(client.queues().await, 200, "invalid_response");
}

#[test]
fn bad_base_urls_are_refused_with_a_clear_error() {
    for bad in [
        "ftp://h/",
        "127.0.0.1:8080",
        "http://u:p@h/",
        "http://h/?x=1",
    ] {
        let e = Client::new(bad, None).unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "{bad}: {e}");
        assert!(e.to_string().contains(bad.trim_end_matches('/')), "{e}");
    }
}
