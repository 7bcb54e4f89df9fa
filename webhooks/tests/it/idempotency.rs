//! Publish idempotency as an option of firing: a key names one request for its lifetime,
//! across `Hooks` instances over the same store, and expires after it.

use std::time::Duration;

use hookspool::{ManualClock, MemoryBackend, QueueId, Store, Timestamp};
use hookspool_webhooks::{
    DELIVERIES_QUEUE, Error, FireOptions, Hooks, HooksOptions, IDEMPOTENCY_QUEUE, SubscribeOptions,
};

const TTL: Duration = Duration::from_hours(24);

async fn hooks(store: Store<MemoryBackend>) -> Hooks<MemoryBackend> {
    let options = HooksOptions {
        idempotency_ttl: TTL,
        ..HooksOptions::default()
    };
    let hooks = Hooks::open_with(store, options).await.unwrap();
    if hooks.subscriptions().is_empty() {
        hooks
            .subscribe(
                "order.*",
                "https://shop.example/hooks",
                SubscribeOptions::default(),
            )
            .await
            .unwrap();
    }
    hooks
}

fn keyed(key: &str) -> FireOptions {
    FireOptions::default().idempotency_key(key)
}

async fn stored(hooks: &Hooks<MemoryBackend>, queue: &str) -> u64 {
    let q = QueueId::new(queue).unwrap();
    hooks.store().count(&q).await.unwrap()
}

#[tokio::test]
async fn a_repeated_key_fires_nothing_and_returns_the_first_answer() {
    let h = hooks(Store::new(MemoryBackend::new())).await;
    let first = h
        .fire_with("order.paid", br#"{"id":1,"total":5}"#.to_vec(), keyed("k1"))
        .await
        .unwrap();
    assert!(!first.replayed);
    assert_eq!(first.delivery_ids.len(), 1);
    // The same JSON value, spaced and ordered differently: the same request.
    let again = h
        .fire_with(
            "order.paid",
            b"{ \"total\": 5, \"id\": 1 }".to_vec(),
            keyed("k1"),
        )
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.delivery_ids, first.delivery_ids);
    assert_eq!(stored(&h, DELIVERIES_QUEUE).await, 1, "fired once");
    assert_eq!(stored(&h, IDEMPOTENCY_QUEUE).await, 1, "one record per key");
}

#[tokio::test]
async fn a_key_reused_for_another_request_is_refused_and_fires_nothing() {
    let h = hooks(Store::new(MemoryBackend::new())).await;
    h.fire_with("order.paid", b"{}".to_vec(), keyed("k1"))
        .await
        .unwrap();
    for (event, payload, options) in [
        ("order.paid", &b"{\"id\":2}"[..], keyed("k1")),
        ("order.sent", b"{}", keyed("k1")),
        ("order.paid", b"{}", keyed("k1").owner("acme")),
    ] {
        let e = h
            .fire_with(event, payload.to_vec(), options)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::IdempotencyKeyReused { key } if key == "k1"),
            "{e}"
        );
        assert_eq!(e.code(), "idempotency_key_reused");
    }
    assert_eq!(stored(&h, DELIVERIES_QUEUE).await, 1);
}

#[tokio::test]
async fn keys_are_remembered_across_a_reopen_of_the_webhook_side() {
    let store = Store::new(MemoryBackend::new());
    let first = hooks(store.clone())
        .await
        .fire_with("order.paid", b"[1]".to_vec(), keyed("k1"))
        .await
        .unwrap();
    // A new `Hooks` over the same store (a restarted process) loads the records.
    let again = hooks(store)
        .await
        .fire_with("order.paid", b"[1]".to_vec(), keyed("k1"))
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.delivery_ids, first.delivery_ids);
}

#[tokio::test]
async fn an_expired_key_is_a_new_request_and_its_record_is_deleted() {
    let clock = ManualClock::new(Timestamp::from_millis(1_000_000));
    let store = Store::new(MemoryBackend::new()).with_clock(clock.clone());
    let h = hooks(store).await;
    let first = h
        .fire_with("order.paid", b"{}".to_vec(), keyed("old"))
        .await
        .unwrap();
    clock.advance(TTL.saturating_sub(Duration::from_millis(1)));
    assert!(
        h.fire_with("order.paid", b"{}".to_vec(), keyed("old"))
            .await
            .unwrap()
            .replayed,
        "still alive a millisecond before its lifetime ends"
    );
    clock.advance(Duration::from_millis(1));
    let again = h
        .fire_with("order.paid", b"{}".to_vec(), keyed("old"))
        .await
        .unwrap();
    assert!(!again.replayed, "expired: fired again");
    assert_ne!(again.delivery_ids, first.delivery_ids);
    assert_eq!(
        stored(&h, IDEMPOTENCY_QUEUE).await,
        1,
        "the expired record is gone, the new one stored"
    );
    // Memory and disk hold only live keys: many keys over a long time leave one day's worth.
    for i in 0..50 {
        h.fire_with("order.paid", b"{}".to_vec(), keyed(&format!("k{i}")))
            .await
            .unwrap();
        clock.advance(Duration::from_hours(1));
    }
    assert_eq!(stored(&h, IDEMPOTENCY_QUEUE).await, 24);
}

#[tokio::test]
async fn concurrent_requests_with_one_key_fire_once() {
    let h = hooks(Store::new(MemoryBackend::new())).await;
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move {
                h.fire_with("order.paid", b"{}".to_vec(), keyed("same"))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().delivery_ids);
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    assert_eq!(stored(&h, DELIVERIES_QUEUE).await, 1);
}

#[tokio::test]
async fn bad_keys_and_options_are_refused_before_anything_is_stored() {
    let h = hooks(Store::new(MemoryBackend::new())).await;
    for bad in [String::new(), "has space".to_owned(), "x".repeat(256)] {
        let e = h
            .fire_with("order.paid", b"{}".to_vec(), keyed(&bad))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "{bad:?}: {e}");
    }
    let e = Hooks::open_with(
        Store::new(MemoryBackend::new()),
        HooksOptions {
            idempotency_ttl: Duration::ZERO,
            ..HooksOptions::default()
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e}");
    assert_eq!(stored(&h, DELIVERIES_QUEUE).await, 0);
}

#[tokio::test]
async fn emit_generates_a_request_id_and_keeps_it_on_replay() {
    let h = hooks(Store::new(MemoryBackend::new())).await;
    let options = FireOptions::default()
        .generate_request_id()
        .idempotency_key("k");
    let first = h
        .fire_with("order.paid", b"{}".to_vec(), options.clone())
        .await
        .unwrap();
    let id = first.request_id.clone().unwrap();
    assert!(id.starts_with("req_"), "{id}");
    let again = h
        .fire_with("order.paid", b"{}".to_vec(), options)
        .await
        .unwrap();
    assert_eq!(
        again.request_id,
        Some(id),
        "the first request's id, not a new one"
    );
}
