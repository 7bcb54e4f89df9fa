//! hookspool-http: the hookspool HTTP API as an axum [`Router`] that an application mounts
//! under any prefix and wraps with its own layers (queue admin, REST Hooks subscriptions,
//! publishing, the delivery log, inbound callbacks, metrics, health), its OpenAPI
//! document, and the web [`console()`] to serve beside it. `hookspool serve` serves exactly
//! these.
//!
//! A thin adapter: each handler reads a request body of [`hookspool_client::wire`], calls the
//! engine's `Store` or hookspool-webhooks' `Hooks`, and answers with a wire type; errors
//! become statuses in one place ([`ApiError`]'s `From` impls), and a missing queue, item,
//! subscription or delivery is a 404 from the typed not-found errors.
//!
//! Every error is JSON `{"error": code, "message": text}` with the right status
//! ([`ApiError`]); request bodies reject unknown fields, naming them. Everything but
//! `/healthz`, `/readyz` and `/callbacks/{channel}` (which use signatures) requires
//! `Authorization: Bearer <token>` when tokens are configured (`/metrics` too, unless
//! [`ApiConfig::public_metrics`]), or a console session cookie whose changes carry the
//! session's CSRF token ([`console::session`]). A change a browser sends from another
//! origin is refused (403 `cross_origin`), with or without tokens. `GET /openapi.json`,
//! public too, is the OpenAPI document of the routes, generated from the handlers'
//! attributes and types ([`openapi()`]).
//!
//! # Example
//!
//! ```no_run
//! use hookspool::{MemoryBackend, Store};
//! use hookspool_http::{ApiConfig, ApiState, router};
//! use hookspool_webhooks::Hooks;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let hooks = Hooks::open(Store::new(MemoryBackend::new())).await?;
//! let app = axum::Router::new().nest("/hookspool", router(ApiState::new(hooks, ApiConfig::default())));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Modules
//!
//! `queues` (the queue admin routes), `hooks_api` (subscriptions, publishing, deliveries,
//! callbacks), `metrics` (`GET /metrics` and the request counter), `openapi` (routes and
//! their document registered in one place, `ApiRoutes::route`), `error` ([`ApiError`] and the
//! extractors whose rejections are API errors), [`mod@console`] (the web console: its page and
//! assets embedded in the binary, [`console::session`] sign-in and CSRF, [`console::stats`]
//! the overview's outcome chart and failing subscriptions). No features.

pub mod console;
mod error;
mod hooks_api;
mod metrics;
mod openapi;
mod queues;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Extension, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

pub use console::{
    ConsoleConfig, ConsolePathError, DEFAULT_SESSION_TTL, check_console_path, console,
};
pub use error::{ApiError, ApiJson, ApiPath, ApiQuery};

use hookspool::{Backend, Store};
use hookspool_webhooks::{Hooks, Secret};
use openapi::ApiRoutes;

/// Default largest request body: 2 MiB (a 1 MiB payload, JSON-escaped, fits).
pub const DEFAULT_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// Settings of the API.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Bearer tokens that are accepted. Empty: no authentication (for an application that
    /// mounts the router behind its own auth layer; the daemon refuses that on a non-loopback
    /// address).
    pub tokens: Vec<Secret>,
    /// Largest request body in bytes (default [`DEFAULT_BODY_LIMIT`]).
    pub body_limit: usize,
    /// Whether `GET /metrics` is served without a token (default `true`).
    pub public_metrics: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            tokens: Vec::new(),
            body_limit: DEFAULT_BODY_LIMIT,
            public_metrics: true,
        }
    }
}

/// What every handler reaches: the store, the webhook side, the settings.
pub struct ApiState<B: Backend> {
    /// The queue API.
    pub store: Store<B>,
    /// Subscriptions, publishing, deliveries.
    pub hooks: Hooks<B>,
    /// The API's settings.
    pub config: Arc<ApiConfig>,
    metrics: Arc<metrics::HttpMetrics>,
    /// Console sessions, which the bearer check accepts in place of a token.
    sessions: Arc<console::session::Sessions>,
}

impl<B: Backend> Clone for ApiState<B> {
    fn clone(&self) -> Self {
        ApiState {
            store: self.store.clone(),
            hooks: self.hooks.clone(),
            config: Arc::clone(&self.config),
            metrics: Arc::clone(&self.metrics),
            sessions: Arc::clone(&self.sessions),
        }
    }
}

impl<B: Backend> ApiState<B> {
    /// State over a store and its webhook side.
    pub fn new(hooks: Hooks<B>, config: ApiConfig) -> Self {
        ApiState {
            store: hooks.store().clone(),
            hooks,
            config: Arc::new(config),
            metrics: Arc::default(),
            sessions: Arc::default(),
        }
    }
}

/// The API router. Mount it with `Router::nest("/prefix", router(state))` or serve it as is.
///
/// `GET /openapi.json` (public) serves the OpenAPI document of exactly these routes.
pub fn router<B: Backend>(state: ApiState<B>) -> Router {
    let body_limit = state.config.body_limit;
    let auth_state = state.clone();
    let (api, doc) = routes::<B>(&state.config, |protected| {
        protected.route_layer(middleware::from_fn_with_state(auth_state, auth::<B>))
    });
    api.method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(middleware::from_fn(same_origin_changes))
        .layer(Extension(Arc::new(doc)))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track::<B>,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// The OpenAPI document of the API with these settings (what `GET /openapi.json` serves):
/// for an application that publishes it or generates a client without running a server.
pub fn openapi(config: &ApiConfig) -> utoipa::openapi::OpenApi {
    routes::<hookspool::MemoryBackend>(config, |protected| protected).1
}

/// Every route and its document. `protect` layers the bearer check on the protected routes
/// (it needs the state, which [`openapi()`] does not have).
fn routes<B: Backend>(
    config: &ApiConfig,
    protect: impl FnOnce(Router<ApiState<B>>) -> Router<ApiState<B>>,
) -> (Router<ApiState<B>>, utoipa::openapi::OpenApi) {
    let metrics_route =
        ApiRoutes::new().route::<metrics::__path_metrics, _, _>(metrics::metrics::<B>);
    let (protected_metrics, public_metrics) = if config.public_metrics {
        (ApiRoutes::new(), metrics_route)
    } else {
        (metrics_route, ApiRoutes::new())
    };
    let protected = ApiRoutes::new()
        .merge(queues::routes::<B>())
        .merge(hooks_api::routes::<B>())
        .merge(protected_metrics);
    // The document says what this server asks: without tokens nothing needs one.
    let protected = if config.tokens.is_empty() {
        protected
    } else {
        protected.bearer_protected()
    }
    .map_router(protect);
    let public = ApiRoutes::new()
        .route::<__path_healthz, _, _>(healthz)
        .route::<__path_readyz, _, _>(readyz::<B>)
        .route::<openapi::__path_openapi_json, _, _>(openapi::openapi_json)
        .merge(public_metrics)
        .merge(hooks_api::public_routes::<B>());
    protected.merge(public).finish()
}

/// `GET /healthz`: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "The process answers.", body = String, content_type = "text/plain", example = "ok"))
)]
async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: ready when the store answers and can still make writes durable; a store
/// poisoned by a failed write or sync (a full disk) answers 503 saying that the daemon needs
/// a restart.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "The store answers.", body = String, content_type = "text/plain", example = "ready"),
        (status = 503, description = "The store is locked by another process (`locked`), its database cannot be reached (`unavailable`), or a write or sync failed (a full disk) and the daemon must be restarted (`poisoned`). With `Retry-After`.")
    )
)]
async fn readyz<B: Backend>(State(state): State<ApiState<B>>) -> Result<&'static str, ApiError> {
    state.store.queues().await?;
    state.store.sync().await?;
    Ok("ready")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not accept that method",
    )
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

/// The API's authentication: a bearer token (compared in constant time per token), or a
/// console session cookie whose changes carry the session's CSRF token
/// ([`console::session`]).
async fn auth<B: Backend>(State(state): State<ApiState<B>>, req: Request, next: Next) -> Response {
    if state.config.tokens.is_empty() {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let ok = given.is_some_and(|given| {
        state
            .config
            .tokens
            .iter()
            .any(|t| constant_time_eq(t.expose().as_bytes(), given.as_bytes()))
    });
    if ok {
        return next.run(req).await;
    }
    let refusal = match state.sessions.check(req.method(), req.headers()) {
        console::session::Check::Valid { csrf_ok: true } => return next.run(req).await,
        console::session::Check::Valid { csrf_ok: false } => ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf_failed",
            "a change made with a console session must carry the session's CSRF token in `x-hookspool-csrf`",
        ),
        console::session::Check::Expired => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "session_expired",
            "the console session has ended: sign in again",
        ),
        console::session::Check::None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send `Authorization: Bearer <token>` with a valid token",
        ),
    };
    let mut resp = refusal.into_response();
    if resp.status() == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    resp
}

/// Refuses a change (any method but `GET`, `HEAD`, `OPTIONS`) that a browser sends from
/// another origin: a page elsewhere cannot make an operator's browser reset a queue, with or
/// without a session cookie, even on a daemon without tokens. Browsers say where a request
/// comes from (`Sec-Fetch-Site`, else `Origin`); other clients send neither and pass.
async fn same_origin_changes(req: Request, next: Next) -> Response {
    let changes = !matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    if changes && from_another_origin(req.headers()) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_origin",
            "a browser request from another origin may not change anything here",
        )
        .into_response();
    }
    next.run(req).await
}

/// Whether a browser says the request comes from a page of another origin.
fn from_another_origin(headers: &axum::http::HeaderMap) -> bool {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    match text(HEADER_FETCH_SITE) {
        Some(site) => site != "same-origin" && site != "none",
        None => match (text(header::ORIGIN.as_str()), text(header::HOST.as_str())) {
            (Some(origin), Some(host)) => {
                origin.split_once("://").map(|(_, rest)| rest) != Some(host)
            }
            _ => false,
        },
    }
}

/// The header in which browsers say whose page sent a request.
const HEADER_FETCH_SITE: &str = "sec-fetch-site";

/// Compares two byte strings without an early exit on the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
