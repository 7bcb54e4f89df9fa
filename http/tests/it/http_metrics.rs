//! `GET /metrics`: Prometheus text with items by queue and phase, delivery outcomes and
//! attempt durations, and HTTP requests by route and status.

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use hookspool::{MemoryBackend, Store};
use hookspool_http::{ApiConfig, ApiState, router};
use hookspool_webhooks::{
    DeliveryConfig, Hooks, HttpConfig, NetworkPolicy, OutcomeKind, Secret, SubscribeOptions,
};

async fn serve(app: Router) -> String {
    format!("http://{}", crate::support::serve(app).await)
}

#[tokio::test]
async fn metrics_show_items_deliveries_and_requests() {
    let receiver = serve(Router::new().fallback(|| async { StatusCode::OK })).await;
    let hooks = Hooks::open(Store::new(MemoryBackend::new())).await.unwrap();
    let cfg = DeliveryConfig {
        poll_interval: Duration::from_millis(10),
        http: HttpConfig {
            policy: NetworkPolicy::new().allow_loopback(),
            ..HttpConfig::default()
        },
        ..DeliveryConfig::default()
    };
    let deliverer = hooks.deliverer(cfg).unwrap();
    tokio::spawn(deliverer.run(std::future::pending()));
    let mut results = hooks.results();
    let base = serve(router(ApiState::new(hooks.clone(), ApiConfig::default()))).await;
    let http = reqwest::Client::new();

    let r = http
        .post(format!("{base}/queues"))
        .header("content-type", "application/json")
        .body(r#"{"id": "orders"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http
        .post(format!("{base}/queues/orders/items"))
        .header("content-type", "application/json")
        .body(r#"{"payload": {"n": 1}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    hooks
        .subscribe(
            "ping",
            &format!("{receiver}/hook"),
            SubscribeOptions::default(),
        )
        .await
        .unwrap();
    hooks.fire("ping", b"{}".to_vec()).await.unwrap();
    let o = tokio::time::timeout(Duration::from_secs(10), results.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(o.kind, OutcomeKind::Delivered);

    // A callback on a channel with a handler: one handled outcome.
    let mut handled = hooks.callback_results();
    let callbacks = hooks
        .callbacks(hookspool_webhooks::CallbackConfig::default())
        .unwrap()
        .handle(
            "inbox",
            hookspool_webhooks::handler_fn(|_msg| async { Ok(()) }),
        )
        .await
        .unwrap();
    tokio::spawn(callbacks.run(std::future::pending()));
    let r = http
        .post(format!("{base}/callbacks/inbox"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    tokio::time::timeout(Duration::from_secs(10), handled.recv())
        .await
        .unwrap()
        .unwrap();

    let r = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text().await.unwrap();
    for line in [
        "hookspool_items{queue=\"orders\",phase=\"pending\"} 1",
        "hookspool_items{queue=\"hookspool.deliveries\",phase=\"done\"} 1",
        "hookspool_delivery_outcomes_total{outcome=\"delivered\"} 1",
        "hookspool_delivery_outcomes_total{outcome=\"dead\"} 0",
        "hookspool_callback_outcomes_total{outcome=\"handled\"} 1",
        "hookspool_callback_outcomes_total{outcome=\"dead\"} 0",
        "hookspool_delivery_attempt_duration_seconds_bucket{le=\"+Inf\"} 1",
        "hookspool_delivery_attempt_duration_seconds_count 1",
        "hookspool_http_requests_total{method=\"POST\",route=\"/queues/{id}/items\",status=\"201\"} 1",
        "# TYPE hookspool_delivery_attempt_duration_seconds histogram",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}

#[tokio::test]
async fn metrics_can_require_the_token() {
    let hooks = Hooks::open(Store::new(MemoryBackend::new())).await.unwrap();
    let config = ApiConfig {
        tokens: vec![Secret::new("a-long-enough-token")],
        public_metrics: false,
        ..ApiConfig::default()
    };
    let base = serve(router(ApiState::new(hooks, config))).await;
    let http = reqwest::Client::new();
    let r = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(format!("{base}/metrics"))
        .bearer_auth("a-long-enough-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
