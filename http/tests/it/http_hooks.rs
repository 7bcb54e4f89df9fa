//! The HTTP API's REST Hooks, publishing, delivery log and inbound callbacks, end to end: the
//! real router served on 127.0.0.1:0, a real axum receiver, the delivery loop, and reqwest.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hookspool::{MemoryBackend, QueueConfig, QueueId, Store};
use hookspool_http::{ApiConfig, ApiState, router};
use hookspool_webhooks::{
    DELIVERIES_QUEUE, DeliveryConfig, Hooks, HttpConfig, NetworkPolicy, RetrySchedule, SigningKey,
    verify,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{self, receiver};

pub(super) const CHANNEL_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub(super) const OTHER_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// The API over a memory store, with the delivery loop running.
pub(super) struct Api {
    pub(super) base: String,
    pub(super) client: reqwest::Client,
    pub(super) store: Store<MemoryBackend>,
    pub(super) hooks: Hooks<MemoryBackend>,
}

async fn serve(hooks: &Hooks<MemoryBackend>, config: ApiConfig) -> String {
    let addr = support::serve(router(ApiState::new(hooks.clone(), config))).await;
    format!("http://{addr}")
}

pub(super) async fn start_with(config: ApiConfig) -> Api {
    let store = Store::new(MemoryBackend::new());
    let hooks = Hooks::open(store.clone()).await.unwrap();
    // No retries: a failed attempt is final, so a dead delivery can be replayed at once.
    let delivery = DeliveryConfig {
        poll_interval: Duration::from_millis(10),
        schedule: RetrySchedule {
            delays: Vec::new(),
            jitter: 0.0,
            ..RetrySchedule::standard()
        },
        http: HttpConfig {
            timeout: Duration::from_secs(5),
            policy: NetworkPolicy::new().allow_loopback(),
            ..HttpConfig::default()
        },
        ..DeliveryConfig::default()
    };
    let deliverer = hooks.deliverer(delivery).unwrap();
    tokio::spawn(deliverer.run(std::future::pending()));
    let base = serve(&hooks, config).await;
    Api {
        base,
        client: reqwest::Client::new(),
        store,
        hooks,
    }
}

pub(super) async fn start() -> Api {
    start_with(ApiConfig::default()).await
}

/// A response: status, headers and the body parsed as JSON.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) headers: reqwest::header::HeaderMap,
    pub(super) json: Value,
}

impl Api {
    pub(super) async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        answer(req.send().await.unwrap()).await
    }

    pub(super) async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> Answer {
        let req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body.to_owned());
        answer(req.send().await.unwrap()).await
    }

    async fn subscribe(&self, event: &str, url: &str) -> Value {
        let a = self
            .call(
                Method::POST,
                "/hooks/subscribe",
                Some(json!({"event": event, "target_url": url})),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.json);
        a.json
    }

    /// Polls the delivery log until the delivery reaches `state`.
    async fn wait_state(&self, id: &str, state: &str) -> Value {
        let poll = async {
            loop {
                let a = self
                    .call(Method::GET, &format!("/deliveries/{id}"), None)
                    .await;
                assert_eq!(a.status, StatusCode::OK, "{}", a.json);
                if a.json["state"] == state {
                    return a.json;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), poll)
            .await
            .unwrap_or_else(|_| panic!("delivery {id} never reached {state}"))
    }
}

pub(super) async fn answer(resp: reqwest::Response) -> Answer {
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text:?}"));
    Answer {
        status,
        headers,
        json,
    }
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Asserts a JSON error answer with its status and code.
#[track_caller]
pub(super) fn assert_error(a: &Answer, status: StatusCode, code: &str) {
    assert_eq!(a.status, status, "{}", a.json);
    assert_eq!(a.json["error"], code, "{}", a.json);
    assert!(a.json["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(
        a.headers["content-type"], "application/json",
        "errors are JSON"
    );
}

#[tokio::test]
async fn subscribe_publish_delivers_signed_and_logs_done() {
    let api = start().await;
    let mut rx = receiver(200).await;

    let sub = api.subscribe("order.paid", &rx.url).await;
    let sub_id = sub["id"].as_str().unwrap().to_owned();
    let secret = sub["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(sub["events"], json!(["order.paid"]));
    assert_eq!(sub["url"], rx.url);
    assert_eq!(sub["enabled"], true);
    assert_eq!(sub["scheme"], "standard_webhooks");

    let a = api
        .call(
            Method::POST,
            "/events",
            Some(json!({"event": "order.paid", "payload": {"order": 42}})),
        )
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.json);
    let ids = a.json["delivery_ids"].as_array().unwrap().clone();
    assert_eq!(ids.len(), 1);
    let id = ids[0].as_str().unwrap();

    // The receiver gets the payload, signed with the secret the subscribe answered.
    let got = rx.next().await;
    let key = SigningKey::from_whsec(&secret).unwrap();
    let lookup = |name: &str| got.headers.get(name).and_then(|v| v.to_str().ok());
    verify(&[&key], lookup, &got.body, unix_now()).unwrap();
    assert_eq!(lookup("webhook-id"), Some(id));
    let body: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(body, json!({"order": 42}));

    // The delivery log shows it done, with the attempt.
    let d = api.wait_state(id, "done").await;
    assert_eq!(d["id"], id);
    assert_eq!(d["event"], "order.paid");
    assert_eq!(d["subscription"], sub_id.as_str());
    assert_eq!(d["payload"], json!({"order": 42}));
    let attempts = d["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["status"], 200);
    assert!(attempts[0]["duration_ms"].is_u64());
    assert!(attempts[0]["error"].is_null());

    // A done delivery cannot be replayed.
    let a = api
        .call(Method::POST, &format!("/deliveries/{id}/replay"), None)
        .await;
    assert_error(&a, StatusCode::CONFLICT, "phase_conflict");

    // The secret is not shown again: not by get, list, or a repeated subscribe.
    let a = api
        .call(Method::GET, &format!("/hooks/subscriptions/{sub_id}"), None)
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json["id"], sub_id.as_str());
    assert!(a.json.get("secret").is_none(), "{}", a.json);
    let a = api.call(Method::GET, "/hooks/subscriptions", None).await;
    assert_eq!(a.json["subscriptions"].as_array().unwrap().len(), 1);
    assert!(!a.json.to_string().contains(&secret));
    let a = api
        .call(
            Method::POST,
            "/hooks/subscribe",
            Some(json!({"event": "order.paid", "target_url": rx.url})),
        )
        .await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "a duplicate answers the existing one"
    );
    assert_eq!(a.json["id"], sub_id.as_str());
    assert!(a.json.get("secret").is_none(), "{}", a.json);
}

#[tokio::test]
async fn a_dead_delivery_is_replayed_over_http() {
    let api = start().await;
    let mut rx = receiver(200).await;
    rx.set_status(500);
    api.subscribe("job.failed", &rx.url).await;
    let a = api
        .call(
            Method::POST,
            "/events",
            Some(json!({"event": "job.failed", "payload": null})),
        )
        .await;
    let id = a.json["delivery_ids"][0].as_str().unwrap().to_owned();
    rx.next().await;
    let d = api.wait_state(&id, "dead").await;
    assert_eq!(d["attempts"][0]["status"], 500);
    assert!(d["last_error"].is_string());

    rx.set_status(200);
    let a = api
        .call(Method::POST, &format!("/deliveries/{id}/replay"), None)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    assert_ne!(a.json["state"], "dead");
    rx.next().await;
    let d = api.wait_state(&id, "done").await;
    let attempts = d["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "the attempt log is kept: {d}");
    assert_eq!(attempts[1]["status"], 200);
}

#[tokio::test]
async fn subscription_crud_and_rotation() {
    let api = start().await;
    let rx = receiver(200).await;
    let a = api
        .call(
            Method::POST,
            "/hooks/subscribe",
            Some(json!({
                "event": "user.*", "target_url": rx.url, "owner": "acme",
                "secret": CHANNEL_SECRET, "headers": {"x-tenant": "acme"}
            })),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.json);
    assert_eq!(a.json["secret"], CHANNEL_SECRET);
    assert_eq!(a.json["owner"], "acme");
    let id = a.json["id"].as_str().unwrap().to_owned();
    api.subscribe("other.event", &format!("{}/b", rx.url)).await;

    // Listing by owner.
    let a = api
        .call(Method::GET, "/hooks/subscriptions?owner=acme", None)
        .await;
    let subs = a.json["subscriptions"].as_array().unwrap();
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0]["id"], id.as_str());
    let a = api.call(Method::GET, "/hooks/subscriptions", None).await;
    assert_eq!(a.json["subscriptions"].as_array().unwrap().len(), 2);

    // PATCH changes what it names and nothing else.
    let a = api
        .call(
            Method::PATCH,
            &format!("/hooks/subscriptions/{id}"),
            Some(json!({"enabled": false, "events": ["user.created", "user.deleted"]})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    assert_eq!(a.json["enabled"], false);
    assert_eq!(a.json["events"], json!(["user.created", "user.deleted"]));
    assert_eq!(a.json["owner"], "acme");
    assert_eq!(a.json["headers"], json!({"x-tenant": "acme"}));
    assert!(!api.hooks.subscription(&id).unwrap().enabled);

    // Rotation answers the new secret once; the old one keeps signing for a while.
    let a = api
        .call(
            Method::POST,
            &format!("/hooks/subscriptions/{id}/rotate-secret"),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    let new = a.json["secret"].as_str().unwrap();
    assert!(new.starts_with("whsec_") && new != CHANNEL_SECRET);
    assert!(a.json["previous_secret_expires_at"].is_u64());
    assert_eq!(api.hooks.subscription(&id).unwrap().secret.expose(), new);
    let a = api
        .call(
            Method::POST,
            &format!("/hooks/subscriptions/{id}/rotate-secret"),
            Some(json!({"secret": OTHER_SECRET})),
        )
        .await;
    assert_eq!(a.json["secret"], OTHER_SECRET);

    // Delete by id, then unsubscribe by URL.
    let a = api
        .call(Method::DELETE, &format!("/hooks/subscriptions/{id}"), None)
        .await;
    assert_eq!(a.json, json!({"removed": 1}));
    let a = api
        .call(Method::GET, &format!("/hooks/subscriptions/{id}"), None)
        .await;
    assert_error(&a, StatusCode::NOT_FOUND, "subscription_not_found");
    let a = api
        .call(
            Method::DELETE,
            "/hooks/unsubscribe",
            Some(json!({"target_url": format!("{}/b", rx.url)})),
        )
        .await;
    assert_eq!(a.json, json!({"removed": 1}));
    assert!(api.hooks.subscriptions().is_empty());
}

#[tokio::test]
async fn the_idempotency_key_header_is_the_same_key() {
    let api = start().await;
    let mut rx = receiver(200).await;
    api.subscribe("invoice.sent", &rx.url).await;
    let post = |key: &'static str, body: Value| {
        let req = api
            .client
            .post(format!("{}/events", api.base))
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(body.to_string());
        async move { answer(req.send().await.unwrap()).await }
    };
    let body = json!({"event": "invoice.sent", "payload": [1, 2]});

    // The draft's quoted form, then the bare form of the same key, then the body field.
    let first = post("\"h-1\"", body.clone()).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.json);
    assert!(first.headers.get("idempotent-replayed").is_none());
    let bare = post("h-1", body.clone()).await;
    assert_eq!(bare.status, StatusCode::ACCEPTED, "{}", bare.json);
    assert_eq!(bare.json, first.json);
    assert_eq!(bare.headers["idempotent-replayed"], "true");
    let mut in_body = body.clone();
    in_body["idempotency_key"] = json!("h-1");
    let field = api.call(Method::POST, "/events", Some(in_body)).await;
    assert_eq!(field.json, first.json);

    // One delivery, one request at the receiver.
    let deliveries = QueueId::new(DELIVERIES_QUEUE).unwrap();
    assert_eq!(api.store.count(&deliveries).await.unwrap(), 1);
    let id = first.json["delivery_ids"][0].as_str().unwrap();
    api.wait_state(id, "done").await;
    assert_eq!(rx.next().await.headers["webhook-id"], id);

    // The same key for another request: 422, nothing fired.
    let other = post("h-1", json!({"event": "invoice.sent", "payload": [9]})).await;
    assert_error(
        &other,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    );
    // A header and a body naming different keys, an unclosed quote, an empty key: 400.
    let mut both = body.clone();
    both["idempotency_key"] = json!("h-2");
    for (key, body) in [("h-3", both), ("\"h-4", body.clone()), ("\"\"", body)] {
        let a = post(key, body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{key}: {}", a.json);
        assert!(a.json["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(api.store.count(&deliveries).await.unwrap(), 1);
    assert!(rx.requests.try_recv().is_err(), "fired more than once");
}

#[tokio::test]
async fn idempotency_key_returns_the_same_ids_and_fires_once() {
    let api = start().await;
    let mut rx = receiver(200).await;
    api.subscribe("invoice.sent", &rx.url).await;
    let body = json!({"event": "invoice.sent", "payload": [1, 2], "idempotency_key": "k-1"});

    let first = api.call(Method::POST, "/events", Some(body.clone())).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.json);
    assert!(first.headers.get("idempotent-replayed").is_none());
    let again = api.call(Method::POST, "/events", Some(body.clone())).await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.json, first.json);
    assert_eq!(again.headers["idempotent-replayed"], "true");

    // Two concurrent requests with a fresh key: one fires, both answer its ids.
    let body2 = json!({"event": "invoice.sent", "payload": 3, "idempotency_key": "k-2"});
    let (a, b) = tokio::join!(
        api.call(Method::POST, "/events", Some(body2.clone())),
        api.call(Method::POST, "/events", Some(body2.clone())),
    );
    assert_eq!(a.json, b.json);
    assert_ne!(a.json, first.json);

    // Exactly two deliveries exist and the receiver gets exactly two requests.
    let deliveries = QueueId::new(DELIVERIES_QUEUE).unwrap();
    assert_eq!(api.store.count(&deliveries).await.unwrap(), 2);
    let id1 = first.json["delivery_ids"][0].as_str().unwrap();
    let id2 = a.json["delivery_ids"][0].as_str().unwrap();
    api.wait_state(id1, "done").await;
    api.wait_state(id2, "done").await;
    let mut seen = [rx.next().await, rx.next().await]
        .map(|r| r.headers["webhook-id"].to_str().unwrap().to_owned());
    seen.sort();
    let mut want = [id1.to_owned(), id2.to_owned()];
    want.sort();
    assert_eq!(seen, want);
    assert!(rx.requests.try_recv().is_err(), "fired more than once");

    // The same key for a different request is refused.
    let other = json!({"event": "invoice.sent", "payload": [9], "idempotency_key": "k-1"});
    let a = api.call(Method::POST, "/events", Some(other)).await;
    assert_error(
        &a,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    );

    // Keys are durable: a new router over the same store (as after a restart) loads them.
    let base = serve(&api.hooks, ApiConfig::default()).await;
    let restarted = Api {
        base,
        client: api.client.clone(),
        store: api.store.clone(),
        hooks: api.hooks.clone(),
    };
    let a = restarted.call(Method::POST, "/events", Some(body)).await;
    assert_eq!(a.json, first.json);
    assert_eq!(a.headers["idempotent-replayed"], "true");
    assert_eq!(api.store.count(&deliveries).await.unwrap(), 2);
}

/// Bad requests with JSON bodies (`""`: no body), and the status and code each must get.
const BAD_INPUTS: &[(&str, &str, &str, u16, &str)] = &[
    (
        "POST",
        "/hooks/subscribe",
        r#"{"event": "a", "target_url": "http://example.com/h", "bogus": 1}"#,
        400,
        "invalid_json",
    ),
    (
        "POST",
        "/hooks/subscribe",
        r#"{"event": 5, "target_url": "http://example.com/h"}"#,
        400,
        "invalid_json",
    ),
    (
        "POST",
        "/hooks/subscribe",
        r#"{"event": "a", "target_url": "not a url"}"#,
        400,
        "invalid_url",
    ),
    (
        "POST",
        "/hooks/subscribe",
        r#"{"event": "a", "target_url": "ftp://example.com/h"}"#,
        400,
        "invalid_url",
    ),
    (
        "POST",
        "/hooks/subscribe",
        r#"{"event": "bad event!", "target_url": "http://example.com/h"}"#,
        400,
        "invalid_event",
    ),
    (
        "POST",
        "/hooks/subscribe",
        r#"{"event": "a", "target_url": "http://example.com/h", "secret": "whsec_!!"}"#,
        400,
        "invalid_secret",
    ),
    (
        "POST",
        "/hooks/subscribe",
        r#"{"event": "a", "target_url": "http://example.com/h", "scheme": "rot13"}"#,
        400,
        "invalid_json",
    ),
    (
        "POST",
        "/hooks/subscribe",
        r#"{"event": "a", "target_url": "http://example.com/h", "owner": "a b"}"#,
        400,
        "invalid_input",
    ),
    (
        "POST",
        "/hooks/subscribe",
        r#"{"event": "a", "target_url": "http://example.com/h", "headers": {"webhook-id": "x"}}"#,
        400,
        "invalid_input",
    ),
    ("DELETE", "/hooks/unsubscribe", "{}", 400, "invalid_request"),
    (
        "DELETE",
        "/hooks/unsubscribe",
        r#"{"id": "sub_nope"}"#,
        404,
        "subscription_not_found",
    ),
    (
        "GET",
        "/hooks/subscriptions/sub_nope",
        "",
        404,
        "subscription_not_found",
    ),
    (
        "PATCH",
        "/hooks/subscriptions/sub_nope",
        r#"{"enabled": true}"#,
        404,
        "subscription_not_found",
    ),
    (
        "DELETE",
        "/hooks/subscriptions/sub_nope",
        "",
        404,
        "subscription_not_found",
    ),
    (
        "POST",
        "/hooks/subscriptions/sub_nope/rotate-secret",
        "",
        404,
        "subscription_not_found",
    ),
    (
        "GET",
        "/hooks/subscriptions?bogus=1",
        "",
        400,
        "invalid_query",
    ),
    ("GET", "/hooks/subscribe", "", 405, "method_not_allowed"),
    (
        "POST",
        "/events",
        r#"{"event": "a b", "payload": 1}"#,
        400,
        "invalid_event",
    ),
    ("POST", "/events", r#"{"event": "a"}"#, 400, "invalid_json"),
    (
        "POST",
        "/events",
        r#"{"event": "a", "payload": 1, "owner": "no way"}"#,
        400,
        "invalid_input",
    ),
    (
        "POST",
        "/events",
        r#"{"event": "a", "payload": 1, "idempotency_key": ""}"#,
        400,
        "invalid_request",
    ),
    ("GET", "/deliveries/not-an-id", "", 400, "invalid_input"),
    (
        "GET",
        "/deliveries/msg_00000000ffffffffffffffff",
        "",
        404,
        "delivery_not_found",
    ),
    (
        "POST",
        "/deliveries/msg_00000000ffffffffffffffff/replay",
        "",
        404,
        "delivery_not_found",
    ),
];

#[tokio::test]
async fn every_bad_input_gets_its_status_and_a_json_error() {
    let api = start().await;
    for (method, path, body, status, code) in BAD_INPUTS {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let body = (!body.is_empty()).then(|| serde_json::from_str::<Value>(body).unwrap());
        let status = StatusCode::from_u16(*status).unwrap();
        let a = api.call(method.clone(), path, body.clone()).await;
        assert_eq!(a.status, status, "{method} {path} {body:?}: {}", a.json);
        assert_error(&a, status, code);
    }

    // The unknown field is named.
    let a = api
        .call(
            Method::POST,
            "/hooks/subscribe",
            Some(json!({"event": "a", "target_url": "http://example.com/h", "bogus": 1})),
        )
        .await;
    assert!(
        a.json["message"].as_str().unwrap().contains("bogus"),
        "{}",
        a.json
    );

    // Malformed JSON, a wrong content type, a malformed rotate body.
    let a = api
        .raw(Method::POST, "/events", "application/json", "{\"event\":")
        .await;
    assert_error(&a, StatusCode::BAD_REQUEST, "malformed_json");
    let a = api.raw(Method::POST, "/events", "text/plain", "{}").await;
    assert_error(
        &a,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let rx = receiver(200).await;
    let id = api.subscribe("a", &rx.url).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/hooks/subscriptions/{id}/rotate-secret");
    let a = api.raw(Method::POST, &path, "application/json", "{").await;
    assert_error(&a, StatusCode::BAD_REQUEST, "malformed_json");
    let a = api
        .raw(Method::POST, &path, "application/json", r#"{"sekret": 1}"#)
        .await;
    assert_error(&a, StatusCode::BAD_REQUEST, "invalid_json");
    assert!(a.json["message"].as_str().unwrap().contains("sekret"));
    let a = api
        .raw(
            Method::POST,
            &path,
            "application/json",
            r#"{"secret": "whsec_x"}"#,
        )
        .await;
    assert_error(&a, StatusCode::BAD_REQUEST, "invalid_secret");
    // A failed rotation changed nothing.
    assert!(
        api.hooks
            .subscription(&id)
            .unwrap()
            .previous_secret
            .is_none()
    );
    // Bad input stored nothing.
    let deliveries = QueueId::new(DELIVERIES_QUEUE).unwrap();
    assert_eq!(api.store.count(&deliveries).await.unwrap(), 0);
}

#[tokio::test]
async fn oversize_bodies_get_413() {
    let api = start_with(ApiConfig {
        body_limit: 1024,
        ..ApiConfig::default()
    })
    .await;
    api.store
        .create_queue(QueueConfig::new(QueueId::new("inbox").unwrap()))
        .await
        .unwrap();
    let big = "x".repeat(4096);
    let a = api
        .call(
            Method::POST,
            "/events",
            Some(json!({"event": "a", "payload": big})),
        )
        .await;
    assert_error(&a, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    let a = api
        .raw(Method::POST, "/callbacks/inbox", "text/plain", &big)
        .await;
    assert_error(&a, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    let inbox = QueueId::new("inbox").unwrap();
    assert_eq!(api.store.count(&inbox).await.unwrap(), 0);
}

/// A published payload is delivered byte for byte as the publisher wrote it (key order and
/// spacing kept), shown in the delivery log on one line in that order, and an idempotent
/// retry that spaces the same JSON differently is still the same request.
#[tokio::test]
async fn payloads_are_delivered_exactly_as_published() {
    let api = start().await;
    let mut rx = receiver(200).await;
    api.subscribe("doc.saved", &rx.url).await;
    let payload = "{ \"zeta\": 1,\n  \"alpha\": [true, \"a b\"] }";
    let body = format!(
        "{{\"event\": \"doc.saved\", \"idempotency_key\": \"doc-1\", \"payload\": {payload}}}"
    );
    let first = api
        .raw(Method::POST, "/events", "application/json", &body)
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.json);
    let got = rx.next().await;
    assert_eq!(
        got.body,
        payload.as_bytes(),
        "the body is the publisher's bytes"
    );

    let id = first.json["delivery_ids"][0].as_str().unwrap();
    api.wait_state(id, "done").await;
    let log = api
        .client
        .get(format!("{}/deliveries/{id}", api.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        log.contains(r#""payload":{"zeta":1,"alpha":[true,"a b"]}"#),
        "key order kept in the log: {log}"
    );

    let respaced = format!(
        "{{\"event\": \"doc.saved\", \"idempotency_key\": \"doc-1\", \"payload\": {}}}",
        r#"{"alpha":[true,"a b"],"zeta":1}"#
    );
    let again = api
        .raw(Method::POST, "/events", "application/json", &respaced)
        .await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.json);
    assert_eq!(
        again.json, first.json,
        "the same JSON value is the same request"
    );
    assert_eq!(again.headers["idempotent-replayed"], "true");
}
