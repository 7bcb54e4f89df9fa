//! What the queue admin HTTP API refuses, against a real server on a loopback port: every bad
//! input's status and JSON error, bearer tokens, the body limit, and writes to hookspool's own
//! queues.

use hookspool_http::ApiConfig;
use hookspool_webhooks::Secret;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::http_queues::{Api, keys, serve};

/// A server with queue `q` holding one item; returns its key.
async fn with_one_item() -> (Api, u64) {
    let api = serve(ApiConfig::default()).await;
    api.ok(
        Method::POST,
        "/queues",
        Some(json!({"id": "q"})),
        StatusCode::CREATED,
    )
    .await;
    let k = keys(
        &api.ok(
            Method::POST,
            "/queues/q/items",
            Some(json!({"payload": 1})),
            StatusCode::CREATED,
        )
        .await,
    )[0];
    (api, k)
}

#[tokio::test]
async fn unknown_ids_and_bad_names_are_json_errors() {
    let (api, k) = with_one_item().await;

    // Unknown queue, everywhere.
    for (method, path, body) in [
        (Method::GET, "/queues/missing", None),
        (
            Method::PATCH,
            "/queues/missing",
            Some(json!({"retention": "keep"})),
        ),
        (Method::GET, "/queues/missing/items", None),
        (
            Method::POST,
            "/queues/missing/items",
            Some(json!({"payload": 1})),
        ),
        (
            Method::POST,
            "/queues/missing/items",
            Some(json!({"items": []})),
        ),
        (Method::GET, "/queues/missing/items/1", None),
        (Method::DELETE, "/queues/missing/items/1", None),
        (Method::GET, "/queues/missing/count", None),
        (Method::POST, "/queues/missing/reset", None),
        (Method::POST, "/queues/missing/replay", None),
        (Method::POST, "/queues/missing/items/1/replay", None),
    ] {
        let msg = api
            .send(method, path, body)
            .await
            .error(StatusCode::NOT_FOUND, "queue_not_found");
        assert!(msg.contains("missing"), "{path}: {msg}");
    }

    // Bad queue ids and phases.
    let msg = api
        .post("/queues", json!({"id": "-bad"}))
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_queue_id");
    assert!(msg.contains("-bad"), "{msg}");
    api.get("/queues/a%20b")
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_queue_id");
    api.get("/queues/q/items?phase=Pending")
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_phase");
    api.get("/queues/q/count?phase=1x")
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_phase");
    api.send(
        Method::PUT,
        &format!("/queues/q/items/{k}/phase"),
        Some(json!({"phase": "NOPE"})),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "invalid_phase");
}

#[tokio::test]
async fn bad_json_bodies_are_400_naming_the_problem() {
    let (api, _k) = with_one_item().await;

    // Malformed JSON, unknown fields (named), wrong types.
    api.raw(Method::POST, "/queues", Some(b"{\"id\": ".to_vec()))
        .await
        .error(StatusCode::BAD_REQUEST, "malformed_json");
    api.raw(Method::POST, "/queues/q/items", Some(b"not json".to_vec()))
        .await
        .error(StatusCode::BAD_REQUEST, "malformed_json");
    for (method, path, body, field) in [
        (
            Method::POST,
            "/queues",
            json!({"id": "x", "colour": "red"}),
            "colour",
        ),
        (Method::PATCH, "/queues/q", json!({"ttl": 5}), "ttl"),
        (
            Method::POST,
            "/queues/q/items",
            json!({"payload": 1, "delay": 5}),
            "delay",
        ),
        (
            Method::POST,
            "/queues/q/items",
            json!({"items": [{"payload": 1, "extra_field": true}]}),
            "extra_field",
        ),
        (
            Method::PUT,
            "/queues/q/items/1/phase",
            json!({"phase": "done", "expected": "dead"}),
            "expected",
        ),
    ] {
        let msg = api
            .send(method, path, Some(body))
            .await
            .error(StatusCode::BAD_REQUEST, "invalid_json");
        assert!(msg.contains(field), "{path}: {msg}");
    }
    for (method, path, body) in [
        (Method::POST, "/queues", json!({"id": 5})),
        (
            Method::POST,
            "/queues",
            json!({"id": "x", "ttl_ms": "soon"}),
        ),
        (
            Method::POST,
            "/queues",
            json!({"id": "x", "retention": "forever"}),
        ),
        (Method::PATCH, "/queues/q", json!({"metadata": ["a"]})),
        (
            Method::POST,
            "/queues/q/items",
            json!({"payload": 1, "delay_ms": -1}),
        ),
        (
            Method::POST,
            "/queues/q/items",
            json!({"items": {"payload": 1}}),
        ),
        (Method::PUT, "/queues/q/items/1/phase", json!({"phase": 1})),
    ] {
        let msg = api
            .send(method, path, Some(body))
            .await
            .error(StatusCode::BAD_REQUEST, "invalid_json");
        assert!(
            msg.contains("invalid type")
                || msg.contains("unknown variant")
                || msg.contains("invalid value"),
            "{path}: {msg}"
        );
    }

    // Bodies that parse but make no sense.
    api.post("/queues/q/items", json!({"metadata": {"a": "b"}}))
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_request");
    api.post(
        "/queues/q/items",
        json!({"payload": 1, "payload_base64": "AA=="}),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "invalid_request");
    api.post("/queues/q/items", json!({"items": [], "payload": 1}))
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_request");
    api.post("/queues", json!({"id": "z", "ttl_ms": 0}))
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_input");
    let long_key = "k".repeat(200);
    api.post(
        "/queues/q/items",
        json!({"payload": 1, "metadata": {long_key: "v"}}),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "invalid_input");
}

#[tokio::test]
async fn bad_paths_queries_and_sizes_are_json_errors() {
    let (api, _k) = with_one_item().await;

    // Oversize payload (over the store's 1 MiB, under the 2 MiB body limit).
    let big = "x".repeat(hookspool::DEFAULT_MAX_PAYLOAD + 1);
    api.post("/queues/q/items", json!({ "payload": big }))
        .await
        .error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    // Paths and queries.
    let msg = api
        .get("/queues/q/items/abc")
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_path");
    assert!(msg.contains("abc") || msg.contains("parse"), "{msg}");
    api.send(Method::DELETE, "/queues/q/items/-1", None)
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_path");
    let msg = api
        .get("/queues/q/items?colour=red")
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_query");
    assert!(msg.contains("colour"), "{msg}");
    api.get("/queues/q/items?limit=many")
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_query");
    api.get("/queues/q/items?limit=0")
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_request");
    api.get(&format!(
        "/queues/q/items?limit={}",
        hookspool::DEFAULT_MAX_BATCH + 1
    ))
    .await
    .error(StatusCode::BAD_REQUEST, "invalid_request");
    api.get("/queues/q/items/99")
        .await
        .error(StatusCode::NOT_FOUND, "item_not_found");
    api.get("/no/such/endpoint")
        .await
        .error(StatusCode::NOT_FOUND, "not_found");

    // A body without a JSON content type.
    let resp = api
        .client
        .post(format!("{}/queues", api.base))
        .body(r#"{"id":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(v["error"], "unsupported_media_type");

    // Nothing above changed the queue.
    let count = api
        .ok(Method::GET, "/queues/q/count", None, StatusCode::OK)
        .await;
    assert_eq!(count["total"], 1);
}

#[tokio::test]
async fn tokens_guard_everything_but_health() {
    let mut api = serve(ApiConfig {
        tokens: vec![Secret::new("t0ken")],
        ..ApiConfig::default()
    })
    .await;
    let health = api.get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK);

    let msg = api
        .get("/queues")
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(msg.contains("Bearer"), "{msg}");
    api.post("/queues", json!({"id": "q"}))
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");

    api.token = Some("wrong".to_owned());
    api.get("/queues")
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");
    api.token = Some("t0ke".to_owned());
    api.get("/queues")
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");

    api.token = Some("t0ken".to_owned());
    api.ok(
        Method::POST,
        "/queues",
        Some(json!({"id": "q"})),
        StatusCode::CREATED,
    )
    .await;
    let list = api.ok(Method::GET, "/queues", None, StatusCode::OK).await;
    assert!(
        list["queues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["id"] == "q")
    );
    assert_eq!(api.get("/healthz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn body_over_the_limit_is_413_json() {
    let api = serve(ApiConfig {
        body_limit: 1024,
        ..ApiConfig::default()
    })
    .await;
    api.ok(
        Method::POST,
        "/queues",
        Some(json!({"id": "q"})),
        StatusCode::CREATED,
    )
    .await;
    let small = "x".repeat(500);
    api.ok(
        Method::POST,
        "/queues/q/items",
        Some(json!({ "payload": small })),
        StatusCode::CREATED,
    )
    .await;
    let big = "x".repeat(2000);
    api.post("/queues/q/items", json!({ "payload": big }))
        .await
        .error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    let count = api
        .ok(Method::GET, "/queues/q/count", None, StatusCode::OK)
        .await;
    assert_eq!(count["total"], 1);
}

#[tokio::test]
async fn hookspools_own_queues_refuse_writes_and_allow_reads() {
    let api = serve(ApiConfig::default()).await;
    let writes = [
        (
            Method::POST,
            "/queues/hookspool.subscriptions/items",
            Some(json!({"payload": {}})),
        ),
        (Method::DELETE, "/queues/hookspool.deliveries", None),
        (Method::POST, "/queues/hookspool.deliveries/reset", None),
        (
            Method::PATCH,
            "/queues/hookspool.deliveries",
            Some(json!({})),
        ),
        (
            Method::PUT,
            "/queues/hookspool.deliveries/items/1/phase",
            Some(json!({"phase": "done"})),
        ),
        (Method::DELETE, "/queues/hookspool.deliveries/items/1", None),
        (
            Method::POST,
            "/queues",
            Some(json!({"id": "hookspool.mine"})),
        ),
    ];
    for (method, path, body) in writes {
        let a = api.send(method.clone(), path, body).await;
        let message = a.error(StatusCode::FORBIDDEN, "internal_queue");
        assert!(
            message.contains("hookspool's own queues"),
            "{method} {path}: {message}"
        );
    }
    // Nothing changed: both queues are there, empty, and reads work.
    for queue in ["hookspool.subscriptions", "hookspool.deliveries"] {
        let info = api
            .ok(
                Method::GET,
                &format!("/queues/{queue}"),
                None,
                StatusCode::OK,
            )
            .await;
        assert_eq!(info["id"], queue, "{info}");
        let counts = api
            .ok(
                Method::GET,
                &format!("/queues/{queue}/count"),
                None,
                StatusCode::OK,
            )
            .await;
        assert_eq!(counts["total"], 0, "{counts}");
    }
    let a = api.get("/queues/hookspool.mine").await;
    a.error(StatusCode::NOT_FOUND, "queue_not_found");
    // The OpenAPI document says so for every refused route.
    let doc = api
        .ok(Method::GET, "/openapi.json", None, StatusCode::OK)
        .await;
    for (path, method) in [
        ("/queues", "post"),
        ("/queues/{id}", "patch"),
        ("/queues/{id}", "delete"),
        ("/queues/{id}/items", "post"),
        ("/queues/{id}/items/{key}", "delete"),
        ("/queues/{id}/items/{key}/phase", "put"),
        ("/queues/{id}/reset", "post"),
    ] {
        let answer = &doc["paths"][path][method]["responses"]["403"];
        assert!(
            answer.is_object(),
            "{method} {path}: no 403 in the OpenAPI document"
        );
    }
}
