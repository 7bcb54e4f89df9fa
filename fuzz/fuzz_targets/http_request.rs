//! Fuzzes the HTTP API's request path: the router of `hookspool-http` with its extractors,
//! and the web console merged beside it at `/ui` (sign-in, sessions, CSRF), over a fresh
//! memory store, fed arbitrary requests (method, path and query, headers,
//! body) through `tower::ServiceExt::oneshot`. No request may panic it or get a server
//! error: on the memory backend nothing is locked or unreachable, so the API's only
//! documented 5xx (503 `locked` or `unavailable`) cannot happen, and a 500 is a finding.
//! Every error answer must be the documented JSON `{"error": code, "message": text}`.
//!
//! Input layout (seeds in `fuzz/seeds/http_request/`): a flags byte, then up to
//! [`MAX_REQUESTS`] requests separated by a line `%%`, run in order on one store, each
//!
//! ```text
//! METHOD /path?query
//! Header-Name: value
//!
//! body
//! ```
//!
//! Flag bit 0 serves the router with a bearer token configured (and sends it when bit 1 is
//! set too); bit 2 adds `content-type: application/json` to every request.
//!
//! Building the router costs about 20 ms (its OpenAPI document), the requests of an input
//! well under one, so each of the two routers (with and without a token) serves
//! [`INPUTS_PER_APP`] inputs before it is built anew over a fresh store: an input mostly
//! runs on the state it makes itself, and one whose crash does not reproduce alone
//! depended on what inputs before it left.

#![no_main]

use std::sync::{LazyLock, Mutex, PoisonError};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use hookspool::{MemoryBackend, Store};
use hookspool_http::{ApiConfig, ApiState, ConsoleConfig, console, router};
use hookspool_webhooks::{Hooks, Secret};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

const WITH_TOKEN: u8 = 1;
const SEND_TOKEN: u8 = 2;
const JSON_TYPE: u8 = 4;
const TOKEN: &str = "fuzz-token-0123456789";
/// Requests per input: enough to create something and then use it.
const MAX_REQUESTS: usize = 8;
/// A small body limit, so that the limit itself is within the fuzzer's reach.
const BODY_LIMIT: usize = 16 << 10;
const SEPARATOR: &[u8] = b"\n%%\n";
/// Inputs one router (and its store) serves before it is replaced.
const INPUTS_PER_APP: u32 = 256;

/// The two routers (without and with a token), each with the inputs it has served.
static APPS: Mutex<[Option<(Router, u32)>; 2]> = Mutex::new([None, None]);

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
});

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    RUNTIME.block_on(run(flags, rest));
});

async fn run(flags: u8, input: &[u8]) {
    let with_token = flags & WITH_TOKEN != 0;
    let app = app(with_token).await;
    for text in split(input).take(MAX_REQUESTS) {
        let Some(mut request) = parse(text) else {
            continue;
        };
        if flags & (WITH_TOKEN | SEND_TOKEN) == WITH_TOKEN | SEND_TOKEN {
            request.headers_mut().insert(
                axum::http::header::AUTHORIZATION,
                HeaderValue::from_static("Bearer fuzz-token-0123456789"),
            );
        }
        if flags & JSON_TYPE != 0 {
            request.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        let described = format!("{} {}", request.method(), request.uri());
        let response = match app.clone().oneshot(request).await {
            Ok(r) => r,
            Err(e) => match e {},
        };
        let status = response.status();
        let body = match axum::body::to_bytes(response.into_body(), usize::MAX).await {
            Ok(b) => b,
            Err(e) => panic!("{described}: the answer's body fails: {e}"),
        };
        check(&described, status, &body);
    }
}

/// The router to serve an input with: the last one, or a new one over a fresh store.
async fn app(with_token: bool) -> Router {
    let slot = usize::from(with_token);
    {
        let mut apps = APPS.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((app, served)) = &mut apps[slot]
            && *served < INPUTS_PER_APP
        {
            *served += 1;
            return app.clone();
        }
    }
    // The old router is gone: let the runtime run what its drop woke (the console's
    // sampling task ends then), which it does only while an input waits on something.
    APPS.lock().unwrap_or_else(PoisonError::into_inner)[slot] = None;
    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    let hooks = match Hooks::open(Store::new(MemoryBackend::new())).await {
        Ok(h) => h,
        Err(e) => panic!("hooks over a memory store do not open: {e}"),
    };
    let config = ApiConfig {
        tokens: if with_token {
            vec![Secret::new(TOKEN.to_owned())]
        } else {
            Vec::new()
        },
        body_limit: BODY_LIMIT,
        public_metrics: true,
    };
    let state = ApiState::new(hooks, config);
    let console = match console(state.clone(), ConsoleConfig::new("/ui", "")) {
        Ok(c) => c,
        Err(e) => panic!("the console does not mount at /ui: {e}"),
    };
    let app = console.merge(router(state));
    APPS.lock().unwrap_or_else(PoisonError::into_inner)[slot] = Some((app.clone(), 1));
    app
}

/// A server error is a finding unless documented; an error answer must be the API's JSON.
fn check(request: &str, status: StatusCode, body: &[u8]) {
    if !status.is_client_error() && !status.is_server_error() {
        return;
    }
    let text = String::from_utf8_lossy(body);
    let Ok(serde_json::Value::Object(error)) = serde_json::from_slice(body) else {
        panic!("{request}: {status} without a JSON error body: {text}");
    };
    let code = error.get("error").and_then(serde_json::Value::as_str);
    assert!(
        code.is_some()
            && error
                .get("message")
                .is_some_and(serde_json::Value::is_string),
        "{request}: {status} with a body that is not {{error, message}}: {text}"
    );
    if status.is_server_error() {
        let documented = status == StatusCode::SERVICE_UNAVAILABLE
            && matches!(code, Some("locked" | "unavailable"));
        assert!(documented, "{request}: server error {status}: {text}");
    }
}

/// The requests of an input.
fn split(input: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(input);
    std::iter::from_fn(move || {
        let text = rest?;
        let Some(at) = text.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) else {
            rest = None;
            return Some(text);
        };
        rest = Some(&text[at + SEPARATOR.len()..]);
        Some(&text[..at])
    })
}

/// One request: `METHOD TARGET` on the first line, headers until an empty line, the body
/// after it. `None` where no request can be built (an invalid method or target); an
/// invalid header line is left out.
fn parse(text: &[u8]) -> Option<Request<Body>> {
    let (head, body) = match text.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&text[..at], &text[at + 2..]),
        None => (text, &[][..]),
    };
    let mut lines = head.split(|b| *b == b'\n');
    let first = lines.next()?;
    let space = first.iter().position(|b| *b == b' ')?;
    let method = Method::from_bytes(&first[..space]).ok()?;
    let uri = Uri::try_from(&first[space + 1..]).ok()?;
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::from(body.to_vec()))
        .ok()?;
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let value = line[colon + 1..]
            .strip_prefix(b" ")
            .unwrap_or(&line[colon + 1..]);
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            request.headers_mut().append(name, value);
        }
    }
    Some(request)
}
