//! The web console in a real headless Chromium, driven over WebDriver (Debian's
//! `chromium` and `chromium-driver`), against the real `hookspool serve` on 127.0.0.1:0 and
//! real receivers. Every action is clicked on the page and its effect checked through the
//! API. A screenshot of each page is written to the target directory (and to
//! `docs/console/` with `HOOKSPOOL_UPDATE_SCREENSHOTS=1`, for the README).
#![allow(clippy::unwrap_used)] // tests may panic on failure

mod support;
#[path = "console/webdriver.rs"]
mod webdriver;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hookspool_webhooks::{SigningKey, verify};
use reqwest::Method;
use serde_json::{Value, json};
use webdriver::Browser;

const TOKEN: &str = "console-e2e-token-0123456789";

/// `hookspool serve` with a token, loopback targets allowed, short retries.
struct Daemon {
    child: Child,
    url: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start(extra: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec![
            "--token",
            TOKEN,
            "--allow-network",
            "127.0.0.0/8",
            "--retry-schedule",
            "10ms",
        ];
        args.extend_from_slice(extra);
        let (child, addr) = support::start_with(
            &dir.path().join("data"),
            &args,
            std::iter::empty::<(&str, &str)>(),
            Stdio::null(),
        );
        Daemon {
            child,
            url: format!("http://{addr}"),
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    /// An API call with the bearer token: status and JSON body.
    async fn api(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        let (status, v) = self.api(Method::GET, path, None).await;
        assert!(status.is_success(), "GET {path}: {status} {v}");
        v
    }

    /// Polls `GET path` until `ok` holds for its JSON (at most 10 s).
    async fn until(&self, path: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..500 {
            let (_, v) = self.api(Method::GET, path, None).await;
            if ok(&v) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{what}: GET {path} never matched");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A receiver on 127.0.0.1:0 answering `status` (switchable); it keeps the test events it
/// got, headers and body.
struct Receiver {
    url: String,
    status: Arc<AtomicU16>,
    tests: TestEvents,
}

type TestEvents = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

async fn receiver(status: u16) -> Receiver {
    async fn hook(
        State((status, tests)): State<(Arc<AtomicU16>, TestEvents)>,
        headers: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        if String::from_utf8_lossy(&body).contains("\"hookspool.test\"") {
            tests.lock().unwrap().push((headers, body));
        }
        StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap()
    }
    let status = Arc::new(AtomicU16::new(status));
    let tests = TestEvents::default();
    let app = Router::new()
        .fallback(hook)
        .with_state((status.clone(), tests.clone()));
    let url = serve(app).await;
    Receiver {
        url: format!("{url}/hook"),
        status,
        tests,
    }
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// Where screenshots go: the target directory, and `docs/console/` when asked.
fn shot_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots")];
    if std::env::var_os("HOOKSPOOL_UPDATE_SCREENSHOTS").is_some() {
        dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/console"));
    }
    for d in &dirs {
        std::fs::create_dir_all(d).unwrap();
    }
    dirs
}

async fn shot(browser: &Browser, name: &str) {
    // Whatever the page shows was rendered as text, not as a stringified object.
    let text = browser.page_text().await;
    assert!(!text.contains("[object "), "{name}: {text}");
    for dir in shot_dirs() {
        browser.screenshot(&dir.join(format!("{name}.png"))).await;
    }
}

/// Signs in through the form.
async fn sign_in(b: &Browser, token: &str) {
    b.type_into("#token", token).await;
    b.click_on("form.login button[type=submit]").await;
}

/// Every form field on the page has a label.
async fn all_fields_labelled(b: &Browser) {
    let unlabelled = b
        .eval(
            "return [...document.querySelectorAll('input, select')]\
               .filter(e => e.type !== 'hidden' && e.labels.length === 0).map(e => e.id || e.name);",
            json!([]),
        )
        .await;
    assert_eq!(unlabelled, json!([]), "fields without a label");
}

/// What the browser test works on: the daemon, the browser, two receivers and what was
/// made through the API.
struct World {
    d: Daemon,
    b: Browser,
    ui: String,
    ok: Receiver,
    failing: Receiver,
    good: String,
    bad: String,
    dead_id: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_console_action_works_in_a_real_browser() {
    let ok = receiver(200).await;
    let failing = receiver(500).await;
    let d = Daemon::start(&[]);
    let b = Browser::start(1280, 800).await;
    let ui = format!("{}/ui/", d.url);
    sign_in_flow(&b, &ui).await;
    let (good, bad, dead_id) = seed(&d, &ok, &failing).await;
    let w = World {
        d,
        b,
        ui,
        ok,
        failing,
        good,
        bad,
        dead_id,
    };
    overview(&w).await;
    queue_page(&w).await;
    item_page(&w).await;
    queue_actions(&w).await;
    internal_queues(&w).await;
    subscription_pages(&w).await;
    delivery_page(&w).await;
    delete_subscription(&w).await;
    forged_requests(&w).await;
    phone_width(&w).await;
    keyboard(&w).await;
    sign_out(&w).await;
}

/// The sign-in form: a wrong token, then the right one.
async fn sign_in_flow(b: &Browser, ui: &str) {
    b.goto(ui).await;
    b.find("#token").await;
    all_fields_labelled(b).await;
    shot(b, "sign-in").await;
    sign_in(b, "this-is-not-the-token").await;
    b.find_text("#flash .msg.error", "not one of this server's API tokens")
        .await;
    assert!(
        b.all("#nav:not([hidden])").await.is_empty(),
        "signed in with a wrong token"
    );
    sign_in(b, TOKEN).await;
    b.find_text("main h1", "Overview").await;
    // The session is a cookie that script on the page cannot read.
    let cookies = b.eval("return document.cookie;", json!([])).await;
    assert_eq!(cookies, "", "the session cookie is visible to script");
}

/// Data to look at, made through the API: a queue of 30 items, a subscription that works
/// and one that fails, an event, and the failing delivery dead. Returns the two
/// subscriptions' ids and the dead delivery's.
async fn seed(d: &Daemon, ok: &Receiver, failing: &Receiver) -> (String, String, String) {
    let (s, _) = d
        .api(Method::POST, "/queues", Some(json!({"id": "orders"})))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let items: Vec<Value> = (1..=30)
        .map(|n| json!({"payload": {"order": n, "total": n * 100}}))
        .collect();
    let (s, pushed) = d
        .api(
            Method::POST,
            "/queues/orders/items",
            Some(json!({"items": items})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{pushed}");
    let subscribe = |url: &str, event: &str| json!({"event": event, "target_url": url});
    let (_, good) = d
        .api(
            Method::POST,
            "/hooks/subscribe",
            Some(subscribe(&ok.url, "order.*")),
        )
        .await;
    let good = good["id"].as_str().unwrap().to_owned();
    let (_, bad) = d
        .api(
            Method::POST,
            "/hooks/subscribe",
            Some(subscribe(&failing.url, "order.paid")),
        )
        .await;
    let bad = bad["id"].as_str().unwrap().to_owned();
    let (s, fired) = d
        .api(
            Method::POST,
            "/events",
            Some(json!({"event": "order.paid", "payload": {"id": 7}})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{fired}");
    // The failing subscription's delivery dies after its two attempts.
    let dead_id = {
        let list = d.get(&format!("/deliveries?subscription={bad}")).await;
        list["deliveries"][0]["id"].as_str().unwrap().to_owned()
    };
    d.until(
        &format!("/deliveries/{dead_id}"),
        "the failing delivery dies",
        |v| v["state"] == "dead",
    )
    .await;

    (good, bad, dead_id)
}

/// Overview: queues with counts, the failing subscription (live refresh).
async fn overview(w: &World) {
    let World { b, bad, .. } = w;
    b.find_text("main table td a", "orders").await;
    b.find_text("main", bad).await;
    b.find_text("#chart-summary", "1 delivered, 2 failed attempts")
        .await;
    shot(b, "overview").await;
}

/// A queue: pages by cursor, newest first or oldest first, by phase.
async fn queue_page(w: &World) {
    let World { b, ui, .. } = w;
    b.goto(&format!("{ui}#/queues/orders")).await;
    b.find_text("main h1", "Queue orders").await;
    let first = b.find("main tbody tr td a").await;
    assert_eq!(b.text(&first).await, "30", "newest first by default");
    b.count_is("main tbody tr", 25).await;
    b.click_on("a[rel=next]").await;
    // The second page holds the 5 oldest.
    b.count_is("main tbody tr", 5).await;
    let keys = b.all("main tbody tr td:first-child a").await;
    assert_eq!(b.text(&keys[0]).await, "5");
    // Oldest first, from the top.
    b.goto(&format!("{ui}#/queues/orders?order=oldest")).await;
    b.count_is("main tbody tr", 25).await;
    let keys = b.all("main tbody tr td:first-child a").await;
    assert_eq!(b.text(&keys[0]).await, "1");
    all_fields_labelled(b).await;
    shot(b, "queue").await;
}

/// An item: details, move to a phase, replay, delete.
async fn item_page(w: &World) {
    let World { d, b, ui, .. } = w;
    b.goto(&format!("{ui}#/queues/orders/items/3")).await;
    b.find_text("#payload", "\"order\": 3").await;
    shot(b, "item").await;
    b.eval(
        "const s = document.getElementById('move-phase'); s.value = 'dead'; \
         s.dispatchEvent(new Event('change'));",
        json!([]),
    )
    .await;
    b.click_on("#move").await;
    b.find_text("#flash", "moved to dead").await;
    d.until("/queues/orders/items/3", "item 3 dead", |v| {
        v["phase"] == "dead"
    })
    .await;
    b.find_text("main dd", "dead").await;
    // Replay shows once the page sees it dead.
    let replay = b.find("#replay:not([hidden])").await;
    b.click(&replay).await;
    b.find_text("#flash", "went back to pending").await;
    d.until("/queues/orders/items/3", "item 3 pending", |v| {
        v["phase"] == "pending"
    })
    .await;
    b.click_on("#delete").await;
    b.find_text("#delete", "Really delete?").await;
    b.click_on("#delete").await;
    b.find_text("#flash", "Item 3 deleted").await;
    let (s, _) = d.api(Method::GET, "/queues/orders/items/3", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// A queue's actions: replay all dead; reset only with the typed confirmation.
async fn queue_actions(w: &World) {
    let World { d, b, ui, .. } = w;
    for key in [4, 5] {
        let (s, v) = d
            .api(
                Method::PUT,
                &format!("/queues/orders/items/{key}/phase"),
                Some(json!({"phase": "dead"})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    b.goto(&format!("{ui}#/queues/orders")).await;
    b.find_text("main h1", "Queue orders").await;
    b.click_on("main .panel button").await;
    b.find_text("#flash", "2 dead items of orders went back to pending")
        .await;
    let c = d.get("/queues/orders/count").await;
    assert_eq!(c["phases"]["dead"], 0);
    assert_eq!(c["total"], 29);
    b.type_into("#reset-confirm", "order").await;
    b.click_on("#reset").await;
    b.find_text("#flash .msg.error", "type the queue id").await;
    assert_eq!(
        d.get("/queues/orders/count").await["total"],
        29,
        "reset without confirmation"
    );
    b.type_into("#reset-confirm", "orders").await;
    b.click_on("#reset").await;
    b.find_text("#flash", "29 items removed").await;
    assert_eq!(d.get("/queues/orders/count").await["total"], 0);
}

/// Hookspool's own queues refuse changes, and the page says why.
async fn internal_queues(w: &World) {
    let World { d, b, ui, .. } = w;
    b.goto(&format!("{ui}#/queues/hookspool.deliveries")).await;
    b.find_text("main h1", "hookspool.deliveries").await;
    b.type_into("#reset-confirm", "hookspool.deliveries").await;
    b.click_on("#reset").await;
    b.find_text("#flash .msg.error", "hookspool").await;
    assert!(
        d.get("/queues/hookspool.deliveries/count").await["total"]
            .as_u64()
            .unwrap()
            >= 2
    );
}

/// Subscriptions: filters, then one subscription's actions.
async fn subscription_pages(w: &World) {
    let World {
        d,
        b,
        ui,
        ok,
        good,
        bad,
        ..
    } = w;
    b.goto(&format!("{ui}#/subscriptions")).await;
    b.find_text("main tbody", bad).await;
    assert_eq!(b.all("main tbody tr").await.len(), 2);
    b.type_into("#filter-url", &ok.url).await;
    b.click_on("form[role=search] button").await;
    b.find_text("main tbody", good).await;
    assert_eq!(b.all("main tbody tr").await.len(), 1, "the URL filter");
    all_fields_labelled(b).await;
    shot(b, "subscriptions").await;

    b.goto(&format!("{ui}#/subscriptions/{good}")).await;
    b.find_text("#toggle", "Disable").await;
    b.click_on("#toggle").await;
    b.find_text("#enabled", "no").await;
    assert_eq!(
        d.get(&format!("/hooks/subscriptions/{good}")).await["enabled"],
        false
    );
    b.click_on("#toggle").await;
    b.find_text("#enabled", "yes").await;
    assert_eq!(
        d.get(&format!("/hooks/subscriptions/{good}")).await["enabled"],
        true
    );
    b.click_on("#rotate").await;
    let secret = b.find("#new-secret").await;
    let secret = b.text(&secret).await;
    assert!(secret.starts_with("whsec_"), "{secret}");
    b.click_on("#test").await;
    b.find_text("#flash", "Test event sent").await;
    for _ in 0..500 {
        if !ok.tests.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The test event arrived once, signed with the secret the page showed.
    let tests = ok.tests.lock().unwrap().clone();
    assert_eq!(tests.len(), 1, "the test event did not arrive once");
    let (headers, body) = &tests[0];
    let key = SigningKey::from_whsec(&secret).unwrap();
    let lookup = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    verify(&[&key], lookup, body, now).unwrap();
    b.find_text("main tbody", "hookspool.test").await;
    shot(b, "subscription").await;
}

/// A delivery: find by id, the attempt timeline, replay.
async fn delivery_page(w: &World) {
    let World {
        d,
        b,
        ui,
        failing,
        dead_id,
        ..
    } = w;
    b.goto(&format!("{ui}#/deliveries")).await;
    b.type_into("#delivery-id", dead_id).await;
    b.click_on("form[role=search] button").await;
    b.find_text("main h1", dead_id).await;
    b.find_text("main tbody", "500").await;
    assert_eq!(b.all("main tbody tr").await.len(), 2, "two attempts");
    shot(b, "delivery").await;
    failing.status.store(200, Ordering::SeqCst);
    b.click_on("#replay:not([hidden])").await;
    b.find_text("#flash", "goes out again").await;
    d.until(
        &format!("/deliveries/{dead_id}"),
        "the replayed delivery is delivered",
        |v| v["state"] == "done",
    )
    .await;
    b.find_text("#state", "done").await;
}

/// Delete a subscription.
async fn delete_subscription(w: &World) {
    let World { d, b, ui, bad, .. } = w;
    b.goto(&format!("{ui}#/subscriptions/{bad}")).await;
    b.click_on("#delete").await;
    b.find_text("#delete", "Really delete?").await;
    b.click_on("#delete").await;
    b.find_text("main h1", "Subscriptions").await;
    let (s, _) = d
        .api(Method::GET, &format!("/hooks/subscriptions/{bad}"), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// A forged request from another page of the same browser.
async fn forged_requests(w: &World) {
    let World { d, b, ui, .. } = w;
    d.api(
        Method::POST,
        "/queues/orders/items",
        Some(json!({"items": [{"payload": 1}]})),
    )
    .await;
    // The page is on 127.0.0.1 too, so the session cookie would go along; the browser says
    // where the request comes from, and the server refuses it. Nothing changes.
    let answer = forged_reset(b, &d.url, "orders").await;
    assert!(
        answer.contains("cross_origin"),
        "the forged reset was not refused: {answer}"
    );
    assert_eq!(
        d.get("/queues/orders/count").await["total"],
        1,
        "the forged reset ran"
    );
    // Nor can script on the console's own origin change anything without the CSRF token.
    b.goto(ui).await;
    b.find_text("main h1", "Overview").await;
    let answer = b
        .eval_async(
            "const done = arguments[arguments.length - 1]; \
             fetch('/queues/orders/reset', {method: 'POST', credentials: 'same-origin'}) \
               .then(r => r.json()).then(j => done(j.error));",
            json!([]),
        )
        .await;
    assert_eq!(answer, "csrf_failed");
    assert_eq!(d.get("/queues/orders/count").await["total"], 1);
}

/// Opens a page of another origin that posts a form resetting `queue` on the daemon at
/// `base`; returns the text the browser then shows (the daemon's answer).
async fn forged_reset(b: &Browser, base: &str, queue: &str) -> String {
    let target = format!("{base}/queues/{queue}/reset");
    let attacker = serve(Router::new().fallback(move || {
        let target = target.clone();
        async move {
            axum::response::Html(format!(
                "<form id=f method=post action=\"{target}\" enctype=\"text/plain\">\
                 <input name=x value=y></form>\
                 <script>document.getElementById('f').submit()</script>"
            ))
        }
    }))
    .await;
    b.goto(&attacker).await;
    let mut body = String::new();
    for _ in 0..500 {
        body = b.page_text().await;
        if body.contains("\"error\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    body
}

/// A phone-width window: nothing wider than the screen.
async fn phone_width(w: &World) {
    let World {
        b,
        ui,
        good,
        dead_id,
        ..
    } = w;
    b.set_size(390, 844).await;
    // Each page, once its content is there: nothing wider than the window.
    let pages = [
        (String::new(), "main h1", "Overview"),
        ("#/queues/orders".to_owned(), "main h1", "Queue orders"),
        ("#/subscriptions".to_owned(), "main h1", "Subscriptions"),
        (format!("#/subscriptions/{good}"), "#enabled", "yes"),
        (format!("#/deliveries/{dead_id}"), "#state", "done"),
    ];
    for (hash, css, text) in pages {
        b.goto(&format!("{ui}{hash}")).await;
        b.find_text(css, text).await;
        let overflow = b
            .eval(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
                json!([]),
            )
            .await;
        assert!(
            overflow.as_i64().unwrap() <= 0,
            "{hash}: the page scrolls sideways by {overflow} px"
        );
    }
    b.goto(&format!("{ui}#/subscriptions/{good}")).await;
    b.find_text("#enabled", "yes").await;
    shot(b, "phone-subscription").await;
    b.set_size(1280, 800).await;
}

/// Keyboard: the skip link comes first, then the navigation.
async fn keyboard(w: &World) {
    let World { b, ui, .. } = w;
    b.goto(ui).await;
    b.find_text("main h1", "Overview").await;
    b.eval("document.activeElement.blur(); window.focus();", json!([]))
        .await;
    let first = b
        .eval(
            "const l = document.querySelector('.skip'); l.focus(); return document.activeElement.textContent;",
            json!([]),
        )
        .await;
    assert_eq!(first, "Skip to content");
    b.keys("\u{E004}").await;
    let next = b
        .eval("return document.activeElement.textContent;", json!([]))
        .await;
    assert_eq!(next, "hookspool");
}

/// Sign out.
async fn sign_out(w: &World) {
    let World { d, b, .. } = w;
    b.click_on("#signout:not([hidden])").await;
    b.find("#token").await;
    let (s, _) = d.api(Method::GET, "/queues", None).await;
    assert_eq!(s, StatusCode::OK, "the token still works for the API");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_asks_to_sign_in_again() {
    let d = Daemon::start(&["--console-session-ttl", "300ms"]);
    let b = Browser::start(1280, 800).await;
    b.goto(&format!("{}/ui/", d.url)).await;
    sign_in(&b, TOKEN).await;
    // Signed in: the overview loads or, if the session ended first, the form says so.
    b.find("main h1").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    b.goto(&format!("{}/ui/#/subscriptions", d.url)).await;
    b.find_text("main", "Your session has ended").await;
    b.find("#token").await;
    shot(&b, "session-expired").await;
    sign_in(&b, TOKEN).await;
    b.find_text("main h1", "Subscriptions").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_request_changes_nothing_on_a_daemon_without_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = support::start(&dir.path().join("data"), &[]);
    let daemon = Daemon {
        child,
        url: format!("http://{addr}"),
        http: reqwest::Client::new(),
        _dir: dir,
    };
    let (s, _) = daemon
        .api(Method::POST, "/queues", Some(json!({"id": "orders"})))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    daemon
        .api(
            Method::POST,
            "/queues/orders/items",
            Some(json!({"payload": 1})),
        )
        .await;
    let b = Browser::start(1280, 800).await;
    let answer = forged_reset(&b, &daemon.url, "orders").await;
    assert!(answer.contains("cross_origin"), "{answer}");
    assert_eq!(
        daemon.get("/queues/orders/count").await["total"],
        1,
        "the forged reset ran"
    );
    // The console itself works without signing in.
    b.goto(&format!("{}/ui/", daemon.url)).await;
    b.find_text("main table", "orders").await;
    assert!(b.all("#signout:not([hidden])").await.is_empty());
}

#[tokio::test]
async fn the_console_can_be_turned_off() {
    let d = Daemon::start(&["--no-console"]);
    let resp = reqwest::get(format!("{}/ui/", d.url)).await.unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let d = Daemon::start(&["--console-path", "/admin/console"]);
    let resp = reqwest::get(format!("{}/admin/console/", d.url))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.text().await.unwrap().contains("/admin/console/app.js"));
}
