//! The web console's server side over a real server on 127.0.0.1:0: the page and its
//! security headers, sign-in with a token, the session cookie in place of the token, CSRF,
//! expiry and sign-out; and the API routes it added (a subscription's test event, the newest
//! deliveries). The pages themselves are tested in a real Chromium (`cli/tests/console.rs`).

use std::time::Duration;

use hookspool::{MemoryBackend, Store};
use hookspool_http::{ApiConfig, ApiState, ConsoleConfig, console, router};
use hookspool_webhooks::{Hooks, Secret, TEST_EVENT};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{self, receiver};

const TOKEN: &str = "console-test-token-0123";

struct Console {
    base: String,
    http: reqwest::Client,
}

/// The API at the root and the console at `/ui`, over a memory store with the delivery
/// loop running (no retries).
async fn start(tokens: Vec<Secret>, ttl: Duration) -> Console {
    let hooks = Hooks::open(Store::new(MemoryBackend::new())).await.unwrap();
    crate::spawn_loopback_delivery(&hooks);
    let state = ApiState::new(
        hooks,
        ApiConfig {
            tokens,
            ..ApiConfig::default()
        },
    );
    let config = ConsoleConfig {
        session_ttl: ttl,
        ..ConsoleConfig::new("/ui", "")
    };
    let app = console(state.clone(), config).unwrap().merge(router(state));
    let addr = support::serve(app).await;
    Console {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
    }
}

/// Subscribes `url` to `order.paid`; returns the subscription id.
async fn subscribe(c: &Console, url: &str) -> String {
    let body = json!({"event": "order.paid", "target_url": url});
    let a = c
        .call(Method::POST, "/hooks/subscribe", Some(body), &[])
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.json);
    a.json["id"].as_str().unwrap().to_owned()
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    json: Value,
}

impl Console {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Answer {
            status,
            headers,
            json,
        }
    }

    /// Signs in: the cookie (`name=value`) and the CSRF token.
    async fn sign_in(&self) -> (String, String) {
        let a = self
            .call(
                Method::POST,
                "/ui/api/login",
                Some(json!({"token": TOKEN})),
                &[],
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.json);
        let set = a.headers["set-cookie"].to_str().unwrap().to_owned();
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(set.contains(attr), "{set} lacks {attr}");
        }
        let cookie = set.split(';').next().unwrap().to_owned();
        (cookie, a.json["csrf"].as_str().unwrap().to_owned())
    }
}

fn tokens() -> Vec<Secret> {
    vec![Secret::new(TOKEN)]
}

#[tokio::test]
async fn the_page_and_its_assets_come_with_a_strict_policy() {
    let c = start(tokens(), Duration::from_mins(1)).await;
    for (path, kind) in [
        ("/ui", "text/html"),
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let resp = c
            .http
            .get(format!("{}{path}", c.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let h = resp.headers().clone();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
        let body = resp.text().await.unwrap();
        if kind == "text/html" {
            assert!(
                body.contains(r#"<script src="/ui/app.js" defer></script>"#),
                "{body}"
            );
            assert!(
                body.contains(r#"<meta name="hookspool-api" content="">"#),
                "{body}"
            );
            // No inline script or style: the policy would block it.
            assert!(
                !body.contains("<script>") && !body.contains("style="),
                "{body}"
            );
        }
    }
    // Another method is the API's 405 JSON.
    for (method, path) in [
        (Method::DELETE, "/ui/app.js"),
        (Method::GET, "/ui/api/login"),
    ] {
        let a = c.call(method, path, None, &[]).await;
        assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(a.json["error"], "method_not_allowed", "{path}");
    }
    // The API is unchanged beside it.
    let a = c.call(Method::GET, "/queues", None, &[]).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_wrong_token_gets_no_session() {
    let c = start(tokens(), Duration::from_mins(1)).await;
    let a = c
        .call(
            Method::POST,
            "/ui/api/login",
            Some(json!({"token": "not-the-token-at-all"})),
            &[],
        )
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.json["error"], "unauthorized");
    assert!(a.headers.get("set-cookie").is_none());
    let a = c
        .call(
            Method::POST,
            "/ui/api/login",
            Some(json!({"tok": TOKEN})),
            &[],
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.json);
    let a = c.call(Method::GET, "/ui/api/session", None, &[]).await;
    assert_eq!(a.json, json!({"auth_required": true, "signed_in": false}));
    // A made-up session cookie is no session.
    let fake = format!("hookspool_session={}", "ab".repeat(32));
    let a = c
        .call(Method::GET, "/queues", None, &[("cookie", &fake)])
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.json["error"], "unauthorized");
}

#[tokio::test]
async fn a_session_reads_freely_and_changes_only_with_its_csrf_token() {
    let c = start(tokens(), Duration::from_mins(1)).await;
    let (cookie, csrf) = c.sign_in().await;
    let a = c
        .call(Method::GET, "/ui/api/session", None, &[("cookie", &cookie)])
        .await;
    assert_eq!(a.json["signed_in"], true);
    assert_eq!(a.json["csrf"], csrf.as_str());
    let a = c
        .call(Method::GET, "/queues", None, &[("cookie", &cookie)])
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    let a = c
        .call(Method::GET, "/ui/api/stats", None, &[("cookie", &cookie)])
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    assert_eq!(a.json["step_secs"], 10);

    // A cross-site request carries the cookie but cannot know the token.
    let create = json!({"id": "orders"});
    for headers in [
        vec![("cookie", cookie.as_str())],
        vec![("cookie", cookie.as_str()), ("x-hookspool-csrf", "0000")],
    ] {
        let a = c
            .call(Method::POST, "/queues", Some(create.clone()), &headers)
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.json);
        assert_eq!(a.json["error"], "csrf_failed");
    }
    let a = c
        .call(Method::GET, "/queues", None, &[("cookie", &cookie)])
        .await;
    let ids: Vec<&str> = a.json["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["id"].as_str().unwrap())
        .collect();
    assert!(
        !ids.contains(&"orders"),
        "a refused change was applied: {ids:?}"
    );

    let with_csrf = [
        ("cookie", cookie.as_str()),
        ("x-hookspool-csrf", csrf.as_str()),
    ];
    let a = c
        .call(Method::POST, "/queues", Some(create), &with_csrf)
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.json);

    // Signed out: the cookie is worth nothing, and the answer clears it.
    let a = c
        .call(Method::POST, "/ui/api/logout", None, &with_csrf)
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert!(
        a.headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let a = c
        .call(Method::GET, "/queues", None, &[("cookie", &cookie)])
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    // The bearer token works as before.
    let bearer = format!("Bearer {TOKEN}");
    let a = c
        .call(Method::GET, "/queues", None, &[("authorization", &bearer)])
        .await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn an_expired_session_is_told_to_sign_in_again() {
    let c = start(tokens(), Duration::from_millis(50)).await;
    let (cookie, _) = c.sign_in().await;
    tokio::time::sleep(Duration::from_millis(80)).await;
    let a = c
        .call(Method::GET, "/queues", None, &[("cookie", &cookie)])
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.json["error"], "session_expired", "{}", a.json);
    let a = c
        .call(Method::GET, "/ui/api/session", None, &[("cookie", &cookie)])
        .await;
    assert_eq!(a.json["signed_in"], false);
}

#[tokio::test]
async fn without_tokens_the_console_needs_no_sign_in() {
    let c = start(Vec::new(), Duration::from_mins(1)).await;
    let a = c.call(Method::GET, "/ui/api/session", None, &[]).await;
    assert_eq!(a.json, json!({"auth_required": false, "signed_in": true}));
    let a = c.call(Method::GET, "/ui/api/stats", None, &[]).await;
    assert_eq!(a.status, StatusCode::OK);
    let a = c
        .call(
            Method::POST,
            "/ui/api/login",
            Some(json!({"token": TOKEN})),
            &[],
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.json["error"], "no_auth");
}

#[tokio::test]
async fn a_test_event_reaches_the_subscription_and_is_listed_with_its_deliveries() {
    let c = start(Vec::new(), Duration::from_mins(1)).await;
    let mut ok = receiver(200).await;
    let failing = receiver(500).await;
    let id = subscribe(&c, &ok.url).await;
    let bad_id = subscribe(&c, &failing.url).await;

    let a = c
        .call(
            Method::POST,
            &format!("/hooks/subscriptions/{id}/test"),
            None,
            &[],
        )
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.json);
    let delivery = a.json["delivery_id"].as_str().unwrap().to_owned();
    let got = ok.next().await;
    assert_eq!(got.headers["webhook-id"], delivery.as_str());
    assert!(got.headers.contains_key("webhook-signature"));
    let body: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(body["type"], TEST_EVENT);
    assert_eq!(body["subscription"], id.as_str());

    // A fired event: one delivery each; the list is newest first and filters by subscription.
    let a = c
        .call(
            Method::POST,
            "/events",
            Some(json!({"event": "order.paid", "payload": {"n": 1}})),
            &[],
        )
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.json);
    let a = c
        .call(
            Method::GET,
            &format!("/deliveries?subscription={id}"),
            None,
            &[],
        )
        .await;
    let listed: Vec<&str> = a.json["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["event"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["order.paid", TEST_EVENT]);
    let a = c
        .call(
            Method::GET,
            &format!("/deliveries?subscription={bad_id}"),
            None,
            &[],
        )
        .await;
    assert_eq!(
        a.json["deliveries"].as_array().unwrap().len(),
        1,
        "{}",
        a.json
    );
    assert_eq!(a.json["deliveries"][0]["event"], "order.paid");
    let a = c.call(Method::GET, "/deliveries?limit=2", None, &[]).await;
    assert_eq!(a.json["deliveries"].as_array().unwrap().len(), 2);
    for bad in [
        "/deliveries?limit=0",
        "/deliveries?limit=501",
        "/deliveries?color=red",
    ] {
        let a = c.call(Method::GET, bad, None, &[]).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}: {}", a.json);
    }
}

#[tokio::test]
async fn failing_subscriptions_show_and_a_test_event_is_refused_where_it_cannot_go() {
    let c = start(Vec::new(), Duration::from_mins(1)).await;
    let failing = receiver(500).await;
    let bad_id = subscribe(&c, &failing.url).await;
    let mut ok = receiver(200).await;
    let id = subscribe(&c, &ok.url).await;
    let event = json!({"event": "order.paid", "payload": {}});
    let a = c.call(Method::POST, "/events", Some(event), &[]).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.json);
    ok.next().await;

    // Only the failing one shows on the overview once its attempt failed.
    let stats = async {
        loop {
            let a = c.call(Method::GET, "/ui/api/stats", None, &[]).await;
            if let Some(f) = a.json["failing"].as_array().filter(|f| !f.is_empty()) {
                assert_eq!(f.len(), 1, "{}", a.json);
                return f[0].clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let f = tokio::time::timeout(Duration::from_secs(10), stats)
        .await
        .unwrap();
    assert_eq!(f["subscription"], bad_id.as_str());
    assert_eq!(f["last_status"], 500);
    assert_eq!(f["failures"], 1);
    // Long before the first 10 s point, the interval still running counts both outcomes.
    let point = async {
        loop {
            let a = c.call(Method::GET, "/ui/api/stats", None, &[]).await;
            let points = a.json["points"].as_array().unwrap().clone();
            assert_eq!(points.len(), 1, "{}", a.json);
            if points[0]["delivered"] == 1 && points[0]["failed"] == 1 {
                return points[0].clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let p = tokio::time::timeout(Duration::from_secs(5), point)
        .await
        .unwrap();
    assert!(p["secs"].as_f64().unwrap() < 10.0, "{p}");

    // Refusals: no such subscription; a disabled one.
    let a = c
        .call(
            Method::POST,
            "/hooks/subscriptions/sub_nope/test",
            None,
            &[],
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = c
        .call(
            Method::PATCH,
            &format!("/hooks/subscriptions/{id}"),
            Some(json!({"enabled": false})),
            &[],
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    let a = c
        .call(
            Method::POST,
            &format!("/hooks/subscriptions/{id}/test"),
            None,
            &[],
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(
        a.json["message"].as_str().unwrap().contains("disabled"),
        "{}",
        a.json
    );
}

#[tokio::test]
async fn the_console_mounts_under_any_path_beside_a_nested_api() {
    let hooks = Hooks::open(Store::new(MemoryBackend::new())).await.unwrap();
    let state = ApiState::new(hooks, ApiConfig::default());
    let app = axum::Router::new()
        .nest("/hookspool", router(state.clone()))
        .merge(console(state, ConsoleConfig::new("/admin/hooks/", "/hookspool/")).unwrap());
    let base = format!("http://{}", support::serve(app).await);
    let page = reqwest::get(format!("{base}/admin/hooks/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(r#"<meta name="hookspool-api" content="/hookspool">"#),
        "{page}"
    );
    assert!(page.contains(r#"href="/admin/hooks/app.css""#), "{page}");
    let css = reqwest::get(format!("{base}/admin/hooks/app.css"))
        .await
        .unwrap();
    assert_eq!(css.status(), StatusCode::OK);
    let q = reqwest::get(format!("{base}/hookspool/queues"))
        .await
        .unwrap();
    assert_eq!(q.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_browser_request_from_another_origin_changes_nothing_even_without_tokens() {
    let c = start(Vec::new(), Duration::from_mins(1)).await;
    let host = c.base.trim_start_matches("http://").to_owned();
    let same_origin = format!("http://{host}");
    let create = |id: &str| Some(json!({ "id": id }));
    for headers in [
        vec![("sec-fetch-site", "cross-site")],
        vec![("sec-fetch-site", "same-site")],
        vec![("origin", "http://127.0.0.1:1")],
        vec![("origin", "null")],
    ] {
        let a = c
            .call(Method::POST, "/queues", create("forged"), &headers)
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{headers:?}: {}", a.json);
        assert_eq!(a.json["error"], "cross_origin");
        let a = c
            .call(
                Method::POST,
                "/ui/api/login",
                Some(json!({"token": "x"})),
                &headers,
            )
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{headers:?}: {}", a.json);
    }
    let a = c
        .call(
            Method::GET,
            "/queues",
            None,
            &[("sec-fetch-site", "cross-site")],
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "reads stay allowed");
    let ids: Vec<String> = a.json["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(!ids.contains(&"forged".to_owned()), "{ids:?}");
    // The console's own page, a browser's address bar, and clients that are not browsers.
    for (i, headers) in [
        vec![("sec-fetch-site", "same-origin")],
        vec![("sec-fetch-site", "none")],
        vec![("origin", same_origin.as_str())],
        vec![],
    ]
    .into_iter()
    .enumerate()
    {
        let a = c
            .call(
                Method::POST,
                "/queues",
                create(&format!("ok-{i}")),
                &headers,
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{headers:?}: {}", a.json);
    }
}

#[tokio::test]
async fn a_console_path_that_cannot_be_served_is_refused() {
    let hooks = Hooks::open(Store::new(MemoryBackend::new())).await.unwrap();
    let state = ApiState::new(hooks, ApiConfig::default());
    for (bad, why) in [
        ("/", "below the root"),
        ("", "start with"),
        ("ui", "start with"),
        ("/a//b", "segments"),
        ("/ui/{id}", "segments"),
        ("/../x", "segments"),
    ] {
        let e = console(state.clone(), ConsoleConfig::new(bad, "")).unwrap_err();
        assert!(e.to_string().contains(why), "{bad}: {e}");
    }
    assert!(console(state, ConsoleConfig::new("/admin/hooks/", "")).is_ok());
}

#[tokio::test]
async fn a_dropped_console_lets_its_store_go() {
    use tokio::sync::broadcast::error::TryRecvError;
    use tower::ServiceExt;
    let hooks = Hooks::open(Store::new(MemoryBackend::new())).await.unwrap();
    // Closed once the last `Hooks` (which holds the results' sender) is gone.
    let mut rx = hooks.results();
    let state = ApiState::new(hooks, ApiConfig::default());
    let app = console(state.clone(), ConsoleConfig::new("/ui", ""))
        .unwrap()
        .merge(router(state));
    for path in ["/ui/", "/ui/api/stats", "/queues"] {
        let request = axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap();
        let answer = app.clone().oneshot(request).await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{path}");
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(
        rx.try_recv().err(),
        Some(TryRecvError::Empty),
        "the app holds it"
    );
    drop(app);
    let mut seen = rx.try_recv().err();
    for _ in 0..200 {
        if seen == Some(TryRecvError::Closed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        seen = rx.try_recv().err();
    }
    assert_eq!(
        seen,
        Some(TryRecvError::Closed),
        "the store outlives the app"
    );
}
