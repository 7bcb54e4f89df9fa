//! `GET /openapi.json`: a public OpenAPI 3 document that describes exactly the routes the
//! router serves, with the bearer scheme, the error body and the real request and response
//! shapes.

use std::collections::BTreeSet;

use hookspool::{MemoryBackend, Store};
use hookspool_http::{ApiConfig, ApiState, openapi, router};
use hookspool_webhooks::{Hooks, Secret};
use serde_json::{Value, json};

const TOKEN: &str = "openapi-test-token-0123";

/// The API's routes as issue 4 lists them (plus `/openapi.json` itself). Kept by hand on
/// purpose: a route added to or dropped from the router changes the document, and this list
/// makes that a visible, reviewed change.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/queues"),
    ("POST", "/queues"),
    ("GET", "/queues/{id}"),
    ("PATCH", "/queues/{id}"),
    ("DELETE", "/queues/{id}"),
    ("GET", "/queues/{id}/items"),
    ("POST", "/queues/{id}/items"),
    ("GET", "/queues/{id}/items/{key}"),
    ("DELETE", "/queues/{id}/items/{key}"),
    ("PUT", "/queues/{id}/items/{key}/phase"),
    ("POST", "/verify"),
    ("POST", "/queues/{id}/items/{key}/replay"),
    ("GET", "/queues/{id}/count"),
    ("GET", "/queues/{id}/dump"),
    ("POST", "/queues/{id}/reset"),
    ("POST", "/queues/{id}/replay"),
    ("POST", "/hooks/subscribe"),
    ("DELETE", "/hooks/unsubscribe"),
    ("GET", "/hooks/subscriptions"),
    ("GET", "/hooks/subscriptions/{id}"),
    ("PATCH", "/hooks/subscriptions/{id}"),
    ("DELETE", "/hooks/subscriptions/{id}"),
    ("POST", "/hooks/subscriptions/{id}/rotate-secret"),
    ("POST", "/hooks/subscriptions/{id}/test"),
    ("POST", "/events"),
    ("GET", "/deliveries"),
    ("GET", "/deliveries/{id}"),
    ("POST", "/deliveries/{id}/replay"),
    ("POST", "/callbacks/{channel}"),
];

/// Routes that need no bearer token (with the default `public_metrics`).
const PUBLIC: &[&str] = &[
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/callbacks/{channel}",
];

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

fn config(public_metrics: bool) -> ApiConfig {
    ApiConfig {
        tokens: vec![Secret::new(TOKEN)],
        public_metrics,
        ..ApiConfig::default()
    }
}

/// A server over a fresh memory store; its base URL.
async fn serve(config: ApiConfig) -> String {
    let hooks = Hooks::open(Store::new(MemoryBackend::new())).await.unwrap();
    let app = router(ApiState::new(hooks, config));
    format!("http://{}", crate::support::serve(app).await)
}

/// The served document, fetched without a token.
async fn fetch_doc(base: &str) -> Value {
    let r = reqwest::get(format!("{base}/openapi.json")).await.unwrap();
    assert_eq!(r.status(), 200, "/openapi.json is public");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let text = r.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Every (METHOD, path, operation) of the document.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if METHODS.contains(&method.to_uppercase().as_str()) {
                out.push((method.to_uppercase(), path.clone(), op.clone()));
            }
        }
    }
    out
}

/// The path with each `{param}` replaced by a dummy of its documented type.
fn concrete(path: &str, op: &Value) -> String {
    let mut out = path.to_owned();
    for p in op["parameters"].as_array().into_iter().flatten() {
        if p["in"] == "path" {
            let name = p["name"].as_str().unwrap();
            let dummy = if p["schema"]["type"] == "integer" {
                "1"
            } else {
                "dummy"
            };
            out = out.replace(&format!("{{{name}}}"), dummy);
        }
    }
    assert!(!out.contains('{'), "{path}: undocumented path parameter");
    out
}

/// The router's own "no such route" answer (as opposed to a handler's 404 for a missing id).
fn is_fallback(status: u16, body: &str) -> bool {
    status == 405
        || (status == 404
            && serde_json::from_str::<Value>(body)
                .is_ok_and(|v| v["error"] == "not_found" && v["message"] == "no such endpoint"))
}

async fn send(base: &str, method: &str, path: &str, token: bool) -> (u16, String) {
    let http = reqwest::Client::new();
    let mut req = http
        .request(method.parse().unwrap(), format!("{base}{path}"))
        .header("content-type", "application/json")
        .body("{}");
    if token {
        req = req.bearer_auth(TOKEN);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Resolves `$ref`s and `allOf`s into (property names, required names, additionalProperties).
fn shape(doc: &Value, schema: &Value) -> (BTreeSet<String>, BTreeSet<String>, Value) {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.strip_prefix("#/components/schemas/").unwrap();
        return shape(doc, &doc["components"]["schemas"][name]);
    }
    let mut props: BTreeSet<String> = schema["properties"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let mut required: BTreeSet<String> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    for part in schema["allOf"].as_array().into_iter().flatten() {
        let (p, r, _) = shape(doc, part);
        props.extend(p);
        required.extend(r);
    }
    (props, required, schema["additionalProperties"].clone())
}

/// Asserts that a real JSON answer has only documented fields and every required one.
fn assert_matches(doc: &Value, schema_name: &str, answer: &Value) {
    let (props, required, _) = shape(
        doc,
        &json!({ "$ref": format!("#/components/schemas/{schema_name}") }),
    );
    assert!(!props.is_empty(), "{schema_name}: no properties documented");
    let keys: BTreeSet<String> = answer.as_object().unwrap().keys().cloned().collect();
    let undocumented: Vec<_> = keys.difference(&props).collect();
    assert!(
        undocumented.is_empty(),
        "{schema_name}: fields {undocumented:?} are served but not documented: {answer}"
    );
    let missing: Vec<_> = required.difference(&keys).collect();
    assert!(
        missing.is_empty(),
        "{schema_name}: required fields {missing:?} are missing from {answer}"
    );
}

#[tokio::test]
async fn the_document_is_public_openapi_3_and_lists_exactly_the_routes() {
    let base = serve(config(true)).await;
    let doc = fetch_doc(&base).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "hookspool");
    assert_eq!(
        doc,
        serde_json::to_value(openapi(&config(true))).unwrap(),
        "the served document is the one `openapi()` builds"
    );

    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(m, p, _)| (m, p))
        .collect();
    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(documented, expected);

    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(bearer["type"], "http");
    assert_eq!(bearer["scheme"], "bearer");
    let error_body = &doc["components"]["schemas"]["ErrorBody"];
    for field in ["error", "message"] {
        assert_eq!(
            error_body["properties"][field]["type"], "string",
            "{error_body}"
        );
    }
    assert_eq!(error_body["required"], json!(["error", "message"]));

    for (method, path, op) in operations(&doc) {
        let public = PUBLIC.contains(&path.as_str());
        let security = op.get("security");
        if public {
            assert!(
                security.is_none(),
                "{method} {path} is public: {security:?}"
            );
        } else {
            assert_eq!(
                security,
                Some(&json!([{ "bearer": [] }])),
                "{method} {path} needs the token"
            );
            assert!(
                op["responses"]["401"].is_object(),
                "{method} {path}: no 401"
            );
        }
        assert!(
            op["operationId"].is_string(),
            "{method} {path}: no operationId"
        );
        let responses = op["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{method} {path}: no success answer documented"
        );
        for (status, response) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path} {status}: errors are ErrorBody"
                );
            }
        }
        if op["requestBody"]["content"]["application/json"].is_object() {
            for status in ["400", "413", "415"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path}: a JSON body can give {status}"
                );
            }
        }
    }
}

#[tokio::test]
async fn every_documented_route_is_served_and_no_other_method_is() {
    let base = serve(config(true)).await;
    let doc = fetch_doc(&base).await;
    let ops = operations(&doc);
    assert_eq!(ops.len(), ROUTES.len());
    for (method, path, op) in &ops {
        let url = concrete(path, op);
        let (status, body) = send(&base, method, &url, true).await;
        assert!(
            !is_fallback(status, &body),
            "{method} {path} ({url}) is documented but not served: {status} {body}"
        );
        if !PUBLIC.contains(&path.as_str()) {
            let (status, body) = send(&base, method, &url, false).await;
            assert_eq!(status, 401, "{method} {url} without a token: {body}");
        }
    }
    // The reverse: on every documented path, each method the document does not list is
    // refused by the router itself, so no route is served undocumented there.
    for path in doc["paths"].as_object().unwrap().keys() {
        let item = &doc["paths"][path];
        let op = item.as_object().unwrap().values().next().unwrap();
        let url = concrete(path, op);
        for method in METHODS {
            if item.get(method.to_lowercase()).is_some() {
                continue;
            }
            let (status, body) = send(&base, method, &url, true).await;
            assert_eq!(
                status, 405,
                "{method} {url} is served but not documented: {body}"
            );
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["error"], "method_not_allowed", "{body}");
        }
    }
    // And the detector above does see the router's fallback.
    let (status, body) = send(&base, "GET", "/not/a/route", true).await;
    assert!(is_fallback(status, &body), "{status} {body}");
}

#[tokio::test]
async fn metrics_needs_the_token_in_the_document_exactly_when_it_does_in_the_router() {
    for public in [true, false] {
        let base = serve(config(public)).await;
        let doc = fetch_doc(&base).await;
        let documented_secure = doc["paths"]["/metrics"]["get"].get("security").is_some();
        let (status, _) = send(&base, "GET", "/metrics", false).await;
        assert_eq!(documented_secure, !public);
        assert_eq!(status, if public { 200 } else { 401 });
    }
}

#[tokio::test]
async fn request_schemas_reject_unknown_fields() {
    let doc = serde_json::to_value(openapi(&ApiConfig::default())).unwrap();
    let mut checked = 0;
    for (method, path, op) in operations(&doc) {
        let Some(schema) = op["requestBody"]["content"]["application/json"]
            .get("schema")
            .cloned()
        else {
            continue;
        };
        // `rotate-secret` takes an optional body: `null` or the object; `unsubscribe` one of
        // two objects.
        let schema = match schema["$ref"].as_str() {
            Some(r) => doc["components"]["schemas"][r.rsplit('/').next().unwrap()].clone(),
            None => schema,
        };
        let objects = match schema["oneOf"].as_array() {
            Some(alts) => alts
                .iter()
                .filter(|s| s["type"] != "null")
                .cloned()
                .collect(),
            None => vec![schema],
        };
        for object in objects {
            let (props, _, additional) = shape(&doc, &object);
            assert!(!props.is_empty(), "{method} {path}: no fields documented");
            assert_eq!(
                additional,
                json!(false),
                "{method} {path}: the body rejects unknown fields, the schema must say so"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 10, "every JSON request body was checked");
    let (_, _, additional) = shape(&doc, &json!({"$ref": "#/components/schemas/PushItem"}));
    assert_eq!(
        additional,
        json!(false),
        "batch items reject unknown fields too"
    );
}

#[tokio::test]
async fn real_answers_have_the_documented_shape() {
    let base = serve(config(true)).await;
    let doc = fetch_doc(&base).await;
    let call = |method: &'static str, path: String, body: Value| {
        let base = base.clone();
        async move {
            let r = reqwest::Client::new()
                .request(method.parse().unwrap(), format!("{base}{path}"))
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
            (status, v)
        }
    };

    let (status, queue) = call(
        "POST",
        "/queues".into(),
        json!({"id": "orders", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}),
    )
    .await;
    assert_eq!(status, 201, "{queue}");
    assert_matches(&doc, "QueueView", &queue);
    let (status, list) = call("GET", "/queues".into(), json!(null)).await;
    assert_eq!(status, 200, "{list}");
    assert_matches(&doc, "QueueList", &list);
    let (status, keys) = call(
        "POST",
        "/queues/orders/items".into(),
        json!({"payload": {"n": 1}}),
    )
    .await;
    assert_eq!(status, 201, "{keys}");
    assert_matches(&doc, "PushedKeys", &keys);
    let key = keys["keys"][0].as_u64().unwrap();
    let (_, item) = call("GET", format!("/queues/orders/items/{key}"), json!(null)).await;
    assert_matches(&doc, "ItemView", &item);
    let (_, count) = call("GET", "/queues/orders/count".into(), json!(null)).await;
    assert_matches(&doc, "CountView", &count);

    let (status, sub) = call(
        "POST",
        "/hooks/subscribe".into(),
        json!({"event": "ping", "target_url": "https://example.com/hook"}),
    )
    .await;
    assert_eq!(status, 201, "{sub}");
    assert!(sub["secret"].is_string(), "{sub}");
    assert_matches(&doc, "SubscriptionView", &sub);
    let (status, published) = call(
        "POST",
        "/events".into(),
        json!({"event": "ping", "payload": {"hello": "world"}}),
    )
    .await;
    assert_eq!(status, 202, "{published}");
    assert_matches(&doc, "Published", &published);
    let id = published["delivery_ids"][0].as_str().unwrap();
    let (status, delivery) = call("GET", format!("/deliveries/{id}"), json!(null)).await;
    assert_eq!(status, 200, "{delivery}");
    assert_matches(&doc, "DeliveryView", &delivery);

    let (status, error) = call("GET", "/queues/nope".into(), json!(null)).await;
    assert_eq!(status, 404);
    assert_matches(&doc, "ErrorBody", &error);
}
