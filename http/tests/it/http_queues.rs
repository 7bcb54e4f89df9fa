//! The queue admin HTTP API against a real server on a loopback port: the whole queue and
//! item flow. (Bad input, tokens and the body limit: `http_queues_refused.rs`.)

use hookspool::{MemoryBackend, Store};
use hookspool_http::{ApiConfig, ApiState, router};
use hookspool_webhooks::Hooks;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

/// A channel secret, and another: Standard Webhooks (`whsec_`) secrets, as the API requires.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OTHER_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// A running API over a fresh memory store.
pub(crate) struct Api {
    pub(crate) base: String,
    pub(crate) client: Client,
    pub(crate) token: Option<String>,
}

pub(crate) async fn serve(config: ApiConfig) -> Api {
    serve_store(Store::new(MemoryBackend::new()), config).await
}

/// A running API over `store`.
pub(crate) async fn serve_store(store: Store<MemoryBackend>, config: ApiConfig) -> Api {
    let hooks = Hooks::open(store).await.unwrap();
    let addr = crate::support::serve(router(ApiState::new(hooks, config))).await;
    Api {
        base: format!("http://{addr}"),
        client: Client::new(),
        token: None,
    }
}

/// An answer: status, content type, raw body.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    content_type: String,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts a JSON error with this status and code; returns its message.
    pub(crate) fn error(&self, status: StatusCode, code: &str) -> String {
        let v = self.json();
        assert_eq!(self.status, status, "{v}");
        assert!(self.content_type.starts_with("application/json"), "{v}");
        assert_eq!(v["error"], code, "{v}");
        v["message"].as_str().unwrap().to_owned()
    }
}

impl Api {
    pub(crate) async fn raw(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Answer {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = resp.bytes().await.unwrap().to_vec();
        Answer {
            status,
            content_type,
            body,
        }
    }

    pub(crate) async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.raw(method, path, body.map(|b| serde_json::to_vec(&b).unwrap()))
            .await
    }

    pub(crate) async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None).await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(Method::POST, path, Some(body)).await
    }

    /// Sends and asserts the status; returns the JSON body (`null` when empty).
    pub(crate) async fn ok(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        status: StatusCode,
    ) -> Value {
        let a = self.send(method, path, body).await;
        assert_eq!(
            a.status,
            status,
            "{path}: {}",
            String::from_utf8_lossy(&a.body)
        );
        if a.body.is_empty() {
            Value::Null
        } else {
            a.json()
        }
    }
}

pub(crate) fn keys(v: &Value) -> Vec<u64> {
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_u64().unwrap())
        .collect()
}

fn item_keys(v: &Value) -> Vec<u64> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn queue_crud_never_echoes_the_secret() {
    let api = serve(ApiConfig::default()).await;
    let created = api
        .post(
            "/queues",
            json!({"id": "orders", "secret": SECRET, "ttl_ms": 60000,
                   "retention": "remove", "metadata": {"team": "billing"}}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert!(!String::from_utf8_lossy(&created.body).contains("MfKQ9r8"));
    let v = created.json();
    assert_eq!(v["id"], "orders");
    assert_eq!(v["secret"], true);
    assert_eq!(v["ttl_ms"], 60000);
    assert_eq!(v["retention"], "remove");
    assert_eq!(v["metadata"]["team"], "billing");
    assert_eq!(v["items"], 0);
    assert_eq!(v["phases"]["pending"], 0);

    api.post("/queues", json!({"id": "orders"}))
        .await
        .error(StatusCode::CONFLICT, "queue_exists");
    api.ok(
        Method::POST,
        "/queues",
        Some(json!({"id": "plain"})),
        StatusCode::CREATED,
    )
    .await;

    let list = api.ok(Method::GET, "/queues", None, StatusCode::OK).await;
    let ids: Vec<&str> = list["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"orders") && ids.contains(&"plain"), "{ids:?}");
    let listed =
        &list["queues"].as_array().unwrap()[ids.iter().position(|i| *i == "orders").unwrap()];
    assert_eq!(listed["secret"], true);
    assert!(!list.to_string().contains("MfKQ9r8"));

    // PATCH changes only what it names; null clears.
    let patched = api
        .ok(
            Method::PATCH,
            "/queues/orders",
            Some(json!({"secret": null, "retention": "keep"})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(patched["secret"], false);
    assert_eq!(patched["retention"], "keep");
    assert_eq!(patched["ttl_ms"], 60000);
    assert_eq!(patched["metadata"]["team"], "billing");
    assert_eq!(patched["created_at"], v["created_at"]);
    let shown = api
        .ok(Method::GET, "/queues/orders", None, StatusCode::OK)
        .await;
    assert_eq!(shown, patched);
    let patched = api
        .ok(
            Method::PATCH,
            "/queues/orders",
            Some(json!({"ttl_ms": null, "secret": OTHER_SECRET})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(patched["ttl_ms"], Value::Null);
    assert_eq!(patched["secret"], true);

    api.ok(
        Method::DELETE,
        "/queues/orders",
        None,
        StatusCode::NO_CONTENT,
    )
    .await;
    api.send(Method::DELETE, "/queues/orders", None)
        .await
        .error(StatusCode::NOT_FOUND, "queue_not_found");
    api.get("/queues/orders")
        .await
        .error(StatusCode::NOT_FOUND, "queue_not_found");
}

/// A secret that is not a Standard Webhooks (`whsec_`) secret is refused on create and on
/// update (400 `invalid_secret`), so that no channel is left refusing every callback as
/// misconfigured (500). Found by the `http_request` fuzz target.
#[tokio::test]
async fn a_secret_that_cannot_verify_callbacks_is_refused() {
    let api = serve(ApiConfig::default()).await;
    for bad in ["s3cr3t", "whsec_topsecret", "whsec_c2hvcnQ="] {
        api.post("/queues", json!({"id": "chan", "secret": bad}))
            .await
            .error(StatusCode::BAD_REQUEST, "invalid_secret");
    }
    api.get("/queues/chan")
        .await
        .error(StatusCode::NOT_FOUND, "queue_not_found");
    api.ok(
        Method::POST,
        "/queues",
        Some(json!({"id": "chan"})),
        StatusCode::CREATED,
    )
    .await;
    api.send(
        Method::PATCH,
        "/queues/chan",
        Some(json!({"secret": "s3cr3t"})),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "invalid_secret");
    let shown = api
        .ok(Method::GET, "/queues/chan", None, StatusCode::OK)
        .await;
    assert_eq!(shown["secret"], false, "the refused secret was not stored");
    let accepted = api
        .raw(Method::POST, "/callbacks/chan", Some(b"{}".to_vec()))
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED);
}

/// The channel secret has a field of its own: its metadata key is refused, on create and on
/// update, and replacing the metadata keeps the secret.
#[tokio::test]
async fn the_secret_is_not_the_callers_metadata() {
    let api = serve(ApiConfig::default()).await;
    api.ok(
        Method::POST,
        "/queues",
        Some(json!({"id": "chan", "secret": SECRET})),
        StatusCode::CREATED,
    )
    .await;
    api.post(
        "/queues",
        json!({"id": "meta", "metadata": {"secret": "x"}}),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "invalid_request");
    api.send(
        Method::PATCH,
        "/queues/chan",
        Some(json!({"metadata": {"secret": "x"}})),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "invalid_request");
    let kept = api
        .ok(
            Method::PATCH,
            "/queues/chan",
            Some(json!({"metadata": {"team": "ops"}})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(kept["secret"], true, "{kept}");
    assert_eq!(kept["metadata"], json!({"team": "ops"}));
}

/// A server with queue `q` holding five items: JSON, binary, and a batch of text, `null`
/// and a delayed number. Returns their keys.
async fn seeded() -> (Api, u64, u64, [u64; 3]) {
    let api = serve(ApiConfig::default()).await;
    api.ok(
        Method::POST,
        "/queues",
        Some(json!({"id": "q"})),
        StatusCode::CREATED,
    )
    .await;

    // One JSON item, one binary item, then an atomic batch.
    let one = api
        .ok(
            Method::POST,
            "/queues/q/items",
            Some(json!({"payload": {"order": 1, "tags": ["a"]}, "metadata": {"event": "order.paid"}})),
            StatusCode::CREATED,
        )
        .await;
    let k1 = keys(&one)[0];
    let bin = api
        .ok(
            Method::POST,
            "/queues/q/items",
            Some(json!({"payload_base64": "/wD+"})),
            StatusCode::CREATED,
        )
        .await;
    let k2 = keys(&bin)[0];
    let batch = api
        .ok(
            Method::POST,
            "/queues/q/items",
            Some(json!({"items": [
                {"payload": "text"},
                {"payload": null},
                {"payload": 3, "delay_ms": 3_600_000},
            ]})),
            StatusCode::CREATED,
        )
        .await;
    let bk = keys(&batch);
    assert_eq!(bk.len(), 3);
    assert!(k1 < k2 && k2 < bk[0] && bk[0] < bk[1] && bk[1] < bk[2]);
    (api, k1, k2, [bk[0], bk[1], bk[2]])
}

#[tokio::test]
async fn push_and_fetch_pages() {
    let (api, k1, k2, bk) = seeded().await;

    // A batch with one bad item stores nothing.
    api.post(
        "/queues/q/items",
        json!({"items": [{"payload": 1}, {"payload_base64": "not base64!"}]}),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "invalid_request");

    let item = api
        .ok(
            Method::GET,
            &format!("/queues/q/items/{k1}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(item["payload"], json!({"order": 1, "tags": ["a"]}));
    assert_eq!(item["phase"], "pending");
    assert_eq!(item["metadata"]["event"], "order.paid");
    let item = api
        .ok(
            Method::GET,
            &format!("/queues/q/items/{k2}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(item["payload_base64"], "/wD+");
    assert!(item.get("payload").is_none());
    let delayed = api
        .ok(
            Method::GET,
            &format!("/queues/q/items/{}", bk[2]),
            None,
            StatusCode::OK,
        )
        .await;
    // The delay counts from when the server read the request, a moment before the push
    // stamped `created_at` (the two clock reads may straddle a millisecond).
    let (not_before, created) = (
        delayed["not_before"].as_u64().unwrap(),
        delayed["created_at"].as_u64().unwrap(),
    );
    assert!(
        (created + 3_600_000 - 1_000..=created + 3_600_000).contains(&not_before),
        "not_before {not_before}, created {created}"
    );

    // Pages: default order, limit, offset, reverse, cursor.
    let all = api
        .ok(Method::GET, "/queues/q/items", None, StatusCode::OK)
        .await;
    assert_eq!(item_keys(&all), vec![k1, k2, bk[0], bk[1], bk[2]]);
    assert_eq!(all["items"][2]["payload"], "text");
    assert_eq!(all["items"][3]["payload"], Value::Null);
    let page = api
        .ok(
            Method::GET,
            "/queues/q/items?limit=2&offset=1",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(item_keys(&page), vec![k2, bk[0]]);
    let page = api
        .ok(
            Method::GET,
            "/queues/q/items?reverse=true&limit=2",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(item_keys(&page), vec![bk[2], bk[1]]);
    let page = api
        .ok(
            Method::GET,
            &format!("/queues/q/items?after={}", bk[0]),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(item_keys(&page), vec![bk[1], bk[2]]);
}

#[tokio::test]
async fn phase_changes_and_counts() {
    let (api, k1, k2, bk) = seeded().await;

    // Phase changes, with compare-and-set.
    let moved = api
        .ok(
            Method::PUT,
            &format!("/queues/q/items/{k1}/phase"),
            Some(json!({"phase": "dead"})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(moved["phase"], "dead");
    api.ok(
        Method::PUT,
        &format!("/queues/q/items/{k2}/phase"),
        Some(json!({"phase": "dead", "if_phase": "pending"})),
        StatusCode::OK,
    )
    .await;
    let conflict = api
        .send(
            Method::PUT,
            &format!("/queues/q/items/{}/phase", bk[0]),
            Some(json!({"phase": "done", "if_phase": "dead"})),
        )
        .await
        .error(StatusCode::CONFLICT, "phase_conflict");
    assert!(
        conflict.contains("pending") && conflict.contains("dead"),
        "{conflict}"
    );
    api.ok(
        Method::PUT,
        &format!("/queues/q/items/{}/phase", bk[0]),
        Some(json!({"phase": "needs-review"})),
        StatusCode::OK,
    )
    .await;
    api.send(
        Method::PUT,
        &format!("/queues/q/items/{}/phase", bk[1]),
        Some(json!({"phase": "in_flight"})),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "invalid_input");

    let count = api
        .ok(Method::GET, "/queues/q/count", None, StatusCode::OK)
        .await;
    assert_eq!(count["total"], 5);
    assert_eq!(count["phases"]["dead"], 2);
    assert_eq!(count["phases"]["pending"], 2);
    assert_eq!(count["phases"]["needs-review"], 1);
    assert_eq!(count["phases"]["done"], 0);
    let dead = api
        .ok(
            Method::GET,
            "/queues/q/count?phase=dead",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(dead, json!({"total": 2, "phases": {"dead": 2}}));
    let dead_items = api
        .ok(
            Method::GET,
            "/queues/q/items?phase=dead",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(item_keys(&dead_items), vec![k1, k2]);
    let shown = api.ok(Method::GET, "/queues/q", None, StatusCode::OK).await;
    assert_eq!(shown["items"], 5);
    assert_eq!(shown["phases"]["dead"], 2);
}

#[tokio::test]
async fn replay_dump_delete_and_reset() {
    let (api, k1, k2, bk) = seeded().await;
    for k in [k1, k2] {
        api.ok(
            Method::PUT,
            &format!("/queues/q/items/{k}/phase"),
            Some(json!({"phase": "dead"})),
            StatusCode::OK,
        )
        .await;
    }

    // Replay one dead item, then all; a live item cannot be replayed.
    let replayed = api
        .ok(
            Method::POST,
            &format!("/queues/q/items/{k1}/replay"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(replayed["phase"], "pending");
    api.send(Method::POST, &format!("/queues/q/items/{k1}/replay"), None)
        .await
        .error(StatusCode::CONFLICT, "phase_conflict");
    let all = api
        .ok(Method::POST, "/queues/q/replay", None, StatusCode::OK)
        .await;
    assert_eq!(all, json!({"replayed": 1}));
    let count = api
        .ok(
            Method::GET,
            "/queues/q/count?phase=dead",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(count["total"], 0);

    // The dump: one JSON object per line, oldest first.
    let dump = api.get("/queues/q/dump").await;
    assert_eq!(dump.status, StatusCode::OK);
    assert_eq!(dump.content_type, "application/x-ndjson");
    let text = String::from_utf8(dump.body).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines
            .iter()
            .map(|l| l["key"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![k1, k2, bk[0], bk[1], bk[2]]
    );
    assert_eq!(lines[0]["payload"]["order"], 1);

    // Delete one item, then reset the rest.
    api.ok(
        Method::DELETE,
        &format!("/queues/q/items/{k2}"),
        None,
        StatusCode::NO_CONTENT,
    )
    .await;
    api.send(Method::DELETE, &format!("/queues/q/items/{k2}"), None)
        .await
        .error(StatusCode::NOT_FOUND, "item_not_found");
    api.get(&format!("/queues/q/items/{k2}"))
        .await
        .error(StatusCode::NOT_FOUND, "item_not_found");
    let reset = api
        .ok(Method::POST, "/queues/q/reset", None, StatusCode::OK)
        .await;
    assert_eq!(reset, json!({"removed": 4}));
    let count = api
        .ok(Method::GET, "/queues/q/count", None, StatusCode::OK)
        .await;
    assert_eq!(count["total"], 0);
    let empty = api.get("/queues/q/dump").await;
    assert_eq!(empty.status, StatusCode::OK);
    assert!(empty.body.is_empty());
}

#[tokio::test]
async fn dump_streams_every_page() {
    let api = serve(ApiConfig::default()).await;
    api.ok(
        Method::POST,
        "/queues",
        Some(json!({"id": "big"})),
        StatusCode::CREATED,
    )
    .await;
    // More than two dump pages, so that the stream really pages.
    let n = hookspool::DUMP_PAGE * 2 + 7;
    let items: Vec<Value> = (0..n).map(|i| json!({"payload": {"i": i}})).collect();
    let pushed = api
        .ok(
            Method::POST,
            "/queues/big/items",
            Some(json!({ "items": items })),
            StatusCode::CREATED,
        )
        .await;
    let pushed = keys(&pushed);
    let dump = api.get("/queues/big/dump").await;
    assert_eq!(dump.status, StatusCode::OK);
    let text = String::from_utf8(dump.body).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), n);
    for (i, (line, key)) in lines.iter().zip(&pushed).enumerate() {
        assert_eq!(line["key"].as_u64().unwrap(), *key);
        assert_eq!(line["payload"]["i"].as_u64().unwrap(), i as u64);
    }
    api.get("/queues/nope/dump")
        .await
        .error(StatusCode::NOT_FOUND, "queue_not_found");
}
