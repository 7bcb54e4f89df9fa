//! The web console: a page in the browser to see and fix queues, subscriptions and
//! deliveries, served beside the API.
//!
//! Everything it shows and does goes through the API's own routes (the same store
//! operations, the same errors, shown as messages on the page); it adds only what a browser
//! needs: the page and its script and style, embedded in the binary (nothing is fetched
//! from elsewhere), a sign-in that trades the API token for a session cookie
//! ([`session`]), and the overview's statistics ([`stats`]).
//!
//! Every console response carries a strict Content-Security-Policy (scripts, styles and
//! requests only from this origin; no inline script; no framing).
//!
//! # Mounting it in one's own application
//!
//! ```no_run
//! use hookspool::{MemoryBackend, Store};
//! use hookspool_http::{ApiConfig, ApiState, ConsoleConfig, console, router};
//! use hookspool_webhooks::Hooks;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let hooks = Hooks::open(Store::new(MemoryBackend::new())).await?;
//! // One state for both, so that the API accepts the console's sessions.
//! let state = ApiState::new(hooks, ApiConfig::default());
//! let app = axum::Router::new()
//!     .nest("/hookspool", router(state.clone()))
//!     .merge(console(state, ConsoleConfig::new("/admin/hooks", "/hookspool"))?);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```

pub mod session;
pub mod stats;

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hookspool::Backend;
use serde::{Deserialize, Serialize};

use crate::{ApiError, ApiJson, ApiState};
use session::SESSION_COOKIE;
use stats::ConsoleStats;

/// How long a console session lasts unless configured.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_hours(8);

/// The policy every console response carries: nothing but this origin, no inline script.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// Where the console is and how its sessions behave.
#[derive(Clone, Debug)]
pub struct ConsoleConfig {
    /// The path the console is served at, e.g. `/ui` (see [`check_console_path`]).
    pub path: String,
    /// The path the browser reaches the API at: `""` when the API router is served at the
    /// root, `/hookspool` when it is nested there.
    pub api_base: String,
    /// How long a sign-in lasts (default [`DEFAULT_SESSION_TTL`]).
    pub session_ttl: Duration,
    /// Mark the session cookie `Secure` (only sent over HTTPS): set it when the console is
    /// reached over HTTPS, for example behind a TLS-terminating proxy.
    pub secure_cookie: bool,
}

impl ConsoleConfig {
    /// The console at `path`, the API at `api_base`, with the default session length.
    pub fn new(path: impl Into<String>, api_base: impl Into<String>) -> Self {
        ConsoleConfig {
            path: path.into(),
            api_base: api_base.into().trim_end_matches('/').to_owned(),
            session_ttl: DEFAULT_SESSION_TTL,
            secure_cookie: false,
        }
    }
}

/// A console path [`console()`] cannot serve at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsolePathError {
    /// The path given.
    pub path: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl std::fmt::Display for ConsolePathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "console path {:?}: {}", self.path, self.reason)
    }
}

impl std::error::Error for ConsolePathError {}

/// Checks a console path and returns it without a trailing `/`: `/` then segments of
/// letters, digits, `-`, `_` and `.` (`/ui`, `/admin/hooks`). The root is refused (that is
/// where an API served as is lives).
///
/// # Errors
/// [`ConsolePathError`] saying what is wrong.
pub fn check_console_path(path: &str) -> Result<String, ConsolePathError> {
    let refuse = |reason| {
        Err(ConsolePathError {
            path: path.to_owned(),
            reason,
        })
    };
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() && path.starts_with('/') {
        return refuse("must be below the root: e.g. /ui");
    }
    let Some(rest) = trimmed.strip_prefix('/') else {
        return refuse("must start with `/`, e.g. /ui");
    };
    let ok = rest.split('/').all(|seg| {
        !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    });
    if !ok {
        return refuse("may only hold segments of letters, digits, `-`, `_` and `.`");
    }
    Ok(trimmed.to_owned())
}

struct ConsoleState<B: Backend> {
    api: ApiState<B>,
    config: std::sync::Arc<ConsoleConfig>,
    index: std::sync::Arc<str>,
    stats: ConsoleStats,
}

impl<B: Backend> Clone for ConsoleState<B> {
    fn clone(&self) -> Self {
        ConsoleState {
            api: self.api.clone(),
            config: std::sync::Arc::clone(&self.config),
            index: std::sync::Arc::clone(&self.index),
            stats: self.stats.clone(),
        }
    }
}

/// The console's routes at `config.path`: the page (`PATH` and `PATH/`), its assets, and
/// `PATH/api/…` (session and statistics). Merge it into the router that serves the API with
/// the same `state`, so that the API accepts the console's sessions.
///
/// Call it inside a tokio runtime: it starts the task that samples delivery statistics. Its
/// routes must not overlap the application's (axum refuses overlapping routes when they are
/// merged).
///
/// # Errors
/// [`ConsolePathError`] for a path [`check_console_path`] refuses.
pub fn console<B: Backend>(
    state: ApiState<B>,
    mut config: ConsoleConfig,
) -> Result<Router, ConsolePathError> {
    config.path = check_console_path(&config.path)?;
    let index = INDEX_HTML
        .replace("{{path}}", &html_attr(&config.path))
        .replace("{{api}}", &html_attr(&config.api_base));
    let sampler = ConsoleStats::start(&state.hooks);
    let p = config.path.clone();
    let console = ConsoleState {
        api: state.clone(),
        config: std::sync::Arc::new(config),
        index: index.into(),
        stats: sampler,
    };
    // Another method on a console path answers the API's 405 JSON, not an empty one.
    let m405 = crate::method_not_allowed;
    let protected = Router::new()
        .route(
            &format!("{p}/api/stats"),
            get(stats_view::<B>).fallback(m405),
        )
        .route(&format!("{p}/api/logout"), post(logout::<B>).fallback(m405))
        .route_layer(middleware::from_fn_with_state(state, crate::auth::<B>));
    Ok(Router::new()
        .route(&p, get(index_page::<B>).fallback(m405))
        .route(&format!("{p}/"), get(index_page::<B>).fallback(m405))
        .route(&format!("{p}/app.js"), get(app_js).fallback(m405))
        .route(&format!("{p}/app.css"), get(app_css).fallback(m405))
        .route(
            &format!("{p}/api/session"),
            get(session_view::<B>).fallback(m405),
        )
        .route(&format!("{p}/api/login"), post(login::<B>).fallback(m405))
        .merge(protected)
        .with_state(console)
        .layer(middleware::from_fn(crate::same_origin_changes))
        .layer(middleware::map_response(secure_headers)))
}

/// Headers on every console response.
async fn secure_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

async fn index_page<B: Backend>(State(c): State<ConsoleState<B>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        c.index.to_string(),
    )
        .into_response()
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // The assets change with the binary; a short cache keeps upgrades visible.
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// `GET {console}/api/session`.
#[derive(Serialize)]
struct SessionView {
    /// Whether the API needs a token (else the console works without signing in).
    auth_required: bool,
    /// Whether this browser is signed in.
    signed_in: bool,
    /// Whether the browser's session has just ended (it should sign in again).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    ended: bool,
    /// The CSRF token to send in `x-hookspool-csrf` with every change.
    #[serde(skip_serializing_if = "Option::is_none")]
    csrf: Option<String>,
}

async fn session_view<B: Backend>(
    State(c): State<ConsoleState<B>>,
    headers: HeaderMap,
) -> Response {
    let auth_required = !c.api.config.tokens.is_empty();
    let ended = matches!(
        c.api.sessions.check(&Method::GET, &headers),
        session::Check::Expired
    );
    let csrf = c.api.sessions.csrf_of(&headers);
    axum::Json(SessionView {
        auth_required,
        signed_in: !auth_required || csrf.is_some(),
        ended,
        csrf,
    })
    .into_response()
}

/// `POST {console}/api/login`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    token: String,
}

async fn login<B: Backend>(
    State(c): State<ConsoleState<B>>,
    ApiJson(login): ApiJson<Login>,
) -> Result<Response, ApiError> {
    let tokens = &c.api.config.tokens;
    if tokens.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "no_auth",
            "this server has no API tokens: the console needs no sign-in",
        ));
    }
    let ok = tokens
        .iter()
        .any(|t| crate::constant_time_eq(t.expose().as_bytes(), login.token.as_bytes()));
    if !ok {
        tracing::info!("console sign-in refused: wrong token");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "that is not one of this server's API tokens",
        ));
    }
    let (id, csrf) = c.api.sessions.start(c.config.session_ttl).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("no random bytes for a session: {e}"),
        )
    })?;
    let cookie = format!(
        "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        c.config.session_ttl.as_secs().max(1),
        if c.config.secure_cookie {
            "; Secure"
        } else {
            ""
        }
    );
    let mut resp = axum::Json(SessionView {
        auth_required: true,
        signed_in: true,
        ended: false,
        csrf: Some(csrf),
    })
    .into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|_| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "bad cookie")
        })?,
    );
    Ok(resp)
}

/// `POST {console}/api/logout`: ends the session (the auth layer has checked its CSRF
/// token) and clears the cookie.
async fn logout<B: Backend>(State(c): State<ConsoleState<B>>, headers: HeaderMap) -> Response {
    c.api.sessions.end(&headers);
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let cleared = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&cleared) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// `GET {console}/api/stats`.
async fn stats_view<B: Backend>(State(c): State<ConsoleState<B>>) -> Response {
    axum::Json(c.stats.view()).into_response()
}

/// `s` safe inside a double-quoted HTML attribute.
fn html_attr(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
