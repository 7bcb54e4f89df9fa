//! Queue retention over HTTP: set and shown like the other queue settings, bad periods
//! refused with a JSON error naming the setting, and what the retention pass removed shown
//! in the counts and in `/metrics`.

use std::time::Duration;

use hookspool::{ManualClock, MemoryBackend, Store, Timestamp};
use hookspool_http::ApiConfig;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::http_queues::serve_store;

#[tokio::test]
async fn retention_is_set_shown_and_checked_like_other_settings() {
    let api = serve_store(Store::new(MemoryBackend::new()), ApiConfig::default()).await;
    let created = api
        .ok(
            Method::POST,
            "/queues",
            Some(json!({"id": "orders", "retain": {"done_ms": 259_200_000_u64, "dead_ms": null}})),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(
        created["retain"],
        json!({"done_ms": 259_200_000_u64, "dead_ms": null, "expired_ms": null})
    );
    let changed = api
        .ok(
            Method::PATCH,
            "/queues/orders",
            Some(json!({"retain": {"dead_ms": 60_000}})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        changed["retain"],
        json!({"done_ms": null, "dead_ms": 60_000, "expired_ms": null}),
        "PATCH replaces the three periods together"
    );
    let shown = api.get("/queues/orders").await.json();
    assert_eq!(shown["retain"], changed["retain"]);
    assert_eq!(
        api.ok(
            Method::PATCH,
            "/queues/orders",
            Some(json!({"ttl_ms": 5000})),
            StatusCode::OK
        )
        .await["retain"],
        changed["retain"],
        "a PATCH without `retain` keeps it"
    );

    let below = api
        .send(
            Method::PATCH,
            "/queues/orders",
            Some(json!({"retain": {"done_ms": 500}})),
        )
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_input");
    assert!(
        below.contains("retain_done") && below.contains("at least 1s"),
        "{below}"
    );
    for (body, names) in [
        (json!({"retain": {"done_ms": -5}}), "done_ms"),
        (json!({"retain": {"forever_ms": 5}}), "forever_ms"),
    ] {
        let a = api.send(Method::PATCH, "/queues/orders", Some(body)).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        let message = a.json()["message"].as_str().unwrap().to_owned();
        assert!(message.contains(names), "{message}");
    }
    let still = api.get("/queues/orders").await.json();
    assert_eq!(
        still["retain"], changed["retain"],
        "refusals change nothing"
    );
}

#[tokio::test]
async fn what_retention_removed_shows_in_counts_and_metrics() {
    let clock = ManualClock::new(Timestamp::from_millis(1_000_000));
    let store = Store::new(MemoryBackend::new()).with_clock(clock.clone());
    let api = serve_store(store.clone(), ApiConfig::default()).await;
    api.ok(
        Method::POST,
        "/queues",
        Some(json!({"id": "jobs", "retain": {"done_ms": 60_000}})),
        StatusCode::CREATED,
    )
    .await;
    api.ok(
        Method::POST,
        "/queues/jobs/items",
        Some(json!({"items": [{"payload": 1}, {"payload": 2}, {"payload": 3}]})),
        StatusCode::CREATED,
    )
    .await;
    for key in [1, 2] {
        api.ok(
            Method::PUT,
            &format!("/queues/jobs/items/{key}/phase"),
            Some(json!({"phase": "done"})),
            StatusCode::OK,
        )
        .await;
    }
    clock.advance(Duration::from_mins(1));
    assert_eq!(store.prune_all().await.unwrap(), 2);
    let counts = api.get("/queues/jobs/count").await.json();
    assert_eq!(counts["total"], 1, "{counts}");
    assert_eq!(counts["phases"]["done"], 0, "{counts}");
    assert_eq!(counts["pruned"], json!({"done": 2}), "{counts}");
    let metrics = String::from_utf8(api.get("/metrics").await.body).unwrap();
    assert!(
        metrics.contains("hookspool_pruned_total{queue=\"jobs\",phase=\"done\"} 2"),
        "{metrics}"
    );
}
