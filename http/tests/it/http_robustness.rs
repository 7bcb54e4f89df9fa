//! What schemathesis found against the daemon's OpenAPI document (issue 12), pinned: bodies
//! are JSON objects only, integer fields take `2.0` as JSON Schema does, `null` is an empty
//! rotate-secret body, and the document states the rules the server checks (patterns,
//! ranges, one of two fields, any payload, the bearer scheme only with tokens).

use hookspool::{MemoryBackend, Store};
use hookspool_http::{ApiConfig, ApiState, openapi, router};
use hookspool_webhooks::{Hooks, Secret};
use serde_json::{Value, json};

/// A server over a fresh memory store without tokens; its base URL.
async fn serve() -> String {
    let hooks = Hooks::open(Store::new(MemoryBackend::new())).await.unwrap();
    let app = router(ApiState::new(hooks, ApiConfig::default()));
    format!("http://{}", crate::support::serve(app).await)
}

/// Sends a raw JSON body; the status and the answer as JSON (`null` when there is none).
async fn send(base: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .request(method.parse().unwrap(), format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn request_bodies_and_objects_inside_them_must_be_json_objects() {
    let base = serve().await;
    assert_eq!(
        send(&base, "POST", "/queues", r#"{"id": "q"}"#).await.0,
        201
    );
    // Serde's structs would take these arrays as their fields in order.
    for (method, path, body) in [
        ("POST", "/queues/q/items", "[null, null]"),
        ("POST", "/queues/q/items", r#"{"items": [[null]]}"#),
        ("POST", "/queues", r#"["r"]"#),
        (
            "POST",
            "/queues",
            r#"{"id": "r", "retain": [null, null, null]}"#,
        ),
        ("PATCH", "/queues/q", r#"{"retain": [1000]}"#),
        (
            "POST",
            "/hooks/subscribe",
            r#"["*", "http://example.com/"]"#,
        ),
    ] {
        let (status, answer) = send(&base, method, path, body).await;
        assert_eq!(status, 400, "{method} {path} {body}: {answer}");
        assert_eq!(answer["error"], "invalid_json", "{method} {path} {body}");
        assert!(
            answer["message"]
                .as_str()
                .unwrap()
                .contains("a JSON object"),
            "{answer}"
        );
    }
    let (_, counts) = send(&base, "GET", "/queues/q/count", "").await;
    assert_eq!(counts["total"], 0, "nothing was pushed");
    // Objects still work, nested ones included.
    let (status, answer) = send(
        &base,
        "POST",
        "/queues/q/items",
        r#"{"items": [{"payload": 1}, {"payload": 2}]}"#,
    )
    .await;
    assert_eq!((status, answer), (201, json!({"keys": [1, 2]})));
}

#[tokio::test]
async fn integer_fields_take_whole_numbers_in_any_spelling() {
    let base = serve().await;
    let (status, queue) = send(
        &base,
        "POST",
        "/queues",
        r#"{"id": "q", "ttl_ms": 6e4, "retain": {"done_ms": 1000.0}}"#,
    )
    .await;
    assert_eq!(status, 201, "{queue}");
    assert_eq!(queue["ttl_ms"], 60_000);
    assert_eq!(queue["retain"]["done_ms"], 1000);
    let (status, _) = send(
        &base,
        "POST",
        "/queues/q/items",
        r#"{"payload": 1, "delay_ms": 2.0}"#,
    )
    .await;
    assert_eq!(status, 201);
    let (status, answer) = send(&base, "PATCH", "/queues/q", r#"{"ttl_ms": 1.0e3}"#).await;
    assert_eq!((status, &answer["ttl_ms"]), (200, &json!(1000)), "{answer}");
    // A fraction, a negative number, or one out of the field's range is still refused.
    for body in [
        r#"{"payload": 1, "delay_ms": 2.5}"#,
        r#"{"payload": 1, "delay_ms": -1}"#,
        r#"{"payload": 1, "delay_ms": -1.0}"#,
        r#"{"payload": 1, "delay_ms": 1e20}"#,
    ] {
        let (status, answer) = send(&base, "POST", "/queues/q/items", body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"], "invalid_json", "{body}");
        assert!(
            answer["message"].as_str().unwrap().contains("delay_ms"),
            "names the field: {answer}"
        );
    }
    let sub = r#"{"event": "*", "target_url": "http://example.com/", "max_in_flight": 4.0}"#;
    let (status, answer) = send(&base, "POST", "/hooks/subscribe", sub).await;
    assert_eq!(
        (status, &answer["max_in_flight"]),
        (201, &json!(4)),
        "{answer}"
    );
    let id = answer["id"].as_str().unwrap().to_owned();
    let path = format!("/hooks/subscriptions/{id}");
    let (status, _) = send(&base, "PATCH", &path, r#"{"max_in_flight": 4294967296.0}"#).await;
    assert_eq!(status, 400, "over u32");
    let (status, answer) = send(&base, "PATCH", &path, r#"{"max_in_flight": 7.0}"#).await;
    assert_eq!(
        (status, &answer["max_in_flight"]),
        (200, &json!(7)),
        "{answer}"
    );
}

#[tokio::test]
async fn a_null_rotate_secret_body_is_an_empty_one() {
    let base = serve().await;
    let sub = r#"{"event": "*", "target_url": "http://example.com/"}"#;
    let (_, created) = send(&base, "POST", "/hooks/subscribe", sub).await;
    let path = format!(
        "/hooks/subscriptions/{}/rotate-secret",
        created["id"].as_str().unwrap()
    );
    let (status, rotated) = send(&base, "POST", &path, "null").await;
    assert_eq!(status, 200, "{rotated}");
    assert_ne!(rotated["secret"], created["secret"], "a new random secret");
    let (status, answer) = send(&base, "POST", &path, "[null]").await;
    assert_eq!((status, &answer["error"]), (400, &json!("invalid_json")));
}

#[tokio::test]
async fn the_document_states_the_rules_the_server_checks() {
    let doc = serde_json::to_value(openapi(&ApiConfig::default())).unwrap();
    let schemas = &doc["components"]["schemas"];
    for name in [
        "QueueId",
        "PhaseName",
        "EventName",
        "EventPattern",
        "Owner",
        "IdempotencyKey",
    ] {
        let pattern = schemas[name]["pattern"].as_str().unwrap_or_default();
        assert!(
            pattern.starts_with('^') && pattern.ends_with('$'),
            "{name}: {pattern:?}"
        );
    }
    assert_eq!(
        schemas["DeliveryId"]["pattern"], "^msg_[0-9A-Fa-f]{24}$",
        "{}",
        schemas["DeliveryId"]
    );
    let items = &doc["paths"]["/queues/{id}/items"]["get"]["parameters"];
    let param = |name: &str| {
        items
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["schema"]
            .clone()
    };
    assert_eq!(param("id")["$ref"], "#/components/schemas/QueueId");
    assert_eq!(param("phase")["$ref"], "#/components/schemas/PhaseName");
    assert_eq!(
        (
            param("limit")["minimum"].clone(),
            param("limit")["maximum"].clone()
        ),
        (json!(1), json!(10_000))
    );
    // Unsigned integers carry their whole range, not int64's.
    assert_eq!(param("after")["maximum"], json!(u64::MAX));
    assert_eq!(param("offset")["maximum"], json!(u64::MAX));
    let key = &doc["paths"]["/queues/{id}/items/{key}"]["get"]["parameters"][1]["schema"];
    assert_eq!(
        (key["minimum"].clone(), key["maximum"].clone()),
        (json!(0), json!(u64::MAX))
    );
    let sub = &schemas["SubscribeRequest"]["properties"];
    assert_eq!(sub["max_in_flight"]["minimum"], 1);
    assert_eq!(sub["max_in_flight"]["maximum"], u32::MAX);
    assert_eq!(
        schemas["RetainView"]["properties"]["done_ms"]["minimum"],
        1000
    );
    // Exactly one of two fields.
    let unsubscribe = &schemas["UnsubscribeRequest"]["oneOf"];
    assert_eq!(unsubscribe.as_array().unwrap().len(), 2, "{unsubscribe}");
    // Any JSON payload, any callback body.
    let publish = &schemas["PublishRequest"]["properties"]["payload"];
    assert!(publish.get("type").is_none(), "any JSON value: {publish}");
    let callback = &doc["paths"]["/callbacks/{channel}"]["post"]["requestBody"]["content"]["*/*"];
    assert!(
        callback["schema"].get("type").is_none(),
        "any body: {callback}"
    );
}

#[tokio::test]
async fn the_document_asks_for_a_token_exactly_when_the_server_does() {
    let open = serde_json::to_value(openapi(&ApiConfig::default())).unwrap();
    let with_tokens = serde_json::to_value(openapi(&ApiConfig {
        tokens: vec![Secret::new("robustness-token-0123")],
        ..ApiConfig::default()
    }))
    .unwrap();
    let queues = |doc: &Value| doc["paths"]["/queues"]["get"].clone();
    assert!(queues(&open).get("security").is_none(), "{}", queues(&open));
    assert!(queues(&open)["responses"].get("401").is_none());
    assert_eq!(queues(&with_tokens)["security"], json!([{ "bearer": [] }]));
    assert!(queues(&with_tokens)["responses"].get("401").is_some());
    // And the server without tokens indeed answers without one.
    let base = serve().await;
    assert_eq!(send(&base, "GET", "/queues", "").await.0, 200);
}
