//! Queue admin routes: the [`Store`](crate::Store) operations over HTTP (queues, items,
//! counts, a streamed dump, reset, phase changes, replay, push).
//!
//! Items are shown as JSON objects like the CLI's `fetch --json` lines: the payload is
//! embedded as JSON when it parses as JSON, as a string when it is other UTF-8 text, and as
//! `payload_base64` otherwise. A queue's secret is never shown, only whether it has one.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine as _;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use super::{ApiError, ApiJson, ApiPath, ApiQuery, ApiState};
use crate::backend::Backend;
use crate::error::Error;
use crate::model::{
    Item, Key, NewItem, Page, Phase, PhaseCounts, QueueConfig, QueueId, Retention, Secret,
};
use crate::store::Dump;

/// Items per page when the request does not say.
const DEFAULT_PAGE_LIMIT: usize = 20;

/// Lifecycle phases, always listed (zero included) in a queue's counts so that clients
/// need not special-case a missing key.
const LIFECYCLE: [Phase; 5] = [
    Phase::PENDING,
    Phase::IN_FLIGHT,
    Phase::DONE,
    Phase::DEAD,
    Phase::EXPIRED,
];

/// The queue admin routes, relative to where the API router is mounted.
pub(super) fn routes<B: Backend>() -> Router<ApiState<B>> {
    Router::new()
        .route("/queues", get(list_queues::<B>).post(create_queue::<B>))
        .route(
            "/queues/{id}",
            get(show_queue::<B>)
                .patch(update_queue::<B>)
                .delete(delete_queue::<B>),
        )
        .route(
            "/queues/{id}/items",
            get(fetch_items::<B>).post(push_items::<B>),
        )
        .route(
            "/queues/{id}/items/{key}",
            get(fetch_item::<B>).delete(delete_item::<B>),
        )
        .route("/queues/{id}/items/{key}/phase", put(set_phase::<B>))
        .route("/queues/{id}/items/{key}/replay", post(replay_item::<B>))
        .route("/queues/{id}/count", get(count::<B>))
        .route("/queues/{id}/dump", get(dump::<B>))
        .route("/queues/{id}/reset", post(reset::<B>))
        .route("/queues/{id}/replay", post(replay_dead::<B>))
}

// ---- request bodies -------------------------------------------------------------------------

/// Deserializes a field that is present (even as `null`) into `Some`, so that `Option<T>`
/// fields tell "absent" (`None`, via `#[serde(default)]`) from "given".
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// `POST /queues`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateQueue {
    id: String,
    secret: Option<String>,
    ttl_ms: Option<u64>,
    #[serde(default)]
    retention: Retention,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

/// `PATCH /queues/{id}`: absent fields are kept; `null` clears `secret` and `ttl_ms`.
// The outer `Option` is "given or not", the inner one the value, which may be `null`.
#[allow(clippy::option_option)]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateQueue {
    #[serde(default, deserialize_with = "present")]
    secret: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    ttl_ms: Option<Option<u64>>,
    retention: Option<Retention>,
    metadata: Option<BTreeMap<String, String>>,
}

/// One item to push.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushItem {
    /// Any JSON value, stored as its JSON text (`null` included, hence `present`).
    #[serde(default, deserialize_with = "present")]
    payload: Option<Value>,
    payload_base64: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    delay_ms: Option<u64>,
}

/// `POST /queues/{id}/items`: one item's fields, or `items` for an atomic batch.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushBody {
    #[serde(default, deserialize_with = "present")]
    payload: Option<Value>,
    payload_base64: Option<String>,
    metadata: Option<BTreeMap<String, String>>,
    delay_ms: Option<u64>,
    items: Option<Vec<PushItem>>,
}

/// `PUT /queues/{id}/items/{key}/phase`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetPhase {
    phase: String,
    if_phase: Option<String>,
}

/// `GET /queues/{id}/items`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FetchQuery {
    phase: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
    reverse: Option<bool>,
    after: Option<Key>,
}

/// `GET /queues/{id}/count`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CountQuery {
    phase: Option<String>,
}

// ---- queues ---------------------------------------------------------------------------------

async fn list_queues<B: Backend>(
    State(state): State<ApiState<B>>,
) -> Result<Json<Value>, ApiError> {
    let mut queues = Vec::new();
    for config in state.store.queues().await? {
        // A queue deleted between the listing and its count is simply left out.
        match state.store.counts(&config.id).await {
            Ok(counts) => queues.push(queue_json(&config, &counts)),
            Err(Error::QueueNotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Json(json!({ "queues": queues })))
}

async fn create_queue<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiJson(body): ApiJson<CreateQueue>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut config = QueueConfig::new(QueueId::new(body.id)?);
    config.secret = body.secret.map(secret).transpose()?;
    config.ttl = body.ttl_ms.map(Duration::from_millis);
    config.retention = body.retention;
    config.metadata = body.metadata;
    let config = state.store.create_queue(config).await?;
    let json = queue_json(&config, &PhaseCounts::default());
    Ok((StatusCode::CREATED, Json(json)))
}

async fn show_queue<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let id = QueueId::new(id)?;
    let config = require_queue(&state, &id).await?;
    let counts = state.store.counts(&id).await?;
    Ok(Json(queue_json(&config, &counts)))
}

async fn update_queue<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateQueue>,
) -> Result<Json<Value>, ApiError> {
    let id = QueueId::new(id)?;
    let mut config = require_queue(&state, &id).await?;
    if let Some(s) = body.secret {
        config.secret = s.map(secret).transpose()?;
    }
    if let Some(ttl) = body.ttl_ms {
        config.ttl = ttl.map(Duration::from_millis);
    }
    if let Some(retention) = body.retention {
        config.retention = retention;
    }
    if let Some(metadata) = body.metadata {
        config.metadata = metadata;
    }
    let config = state.store.update_queue(config).await?;
    let counts = state.store.counts(&id).await?;
    Ok(Json(queue_json(&config, &counts)))
}

async fn delete_queue<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = QueueId::new(id)?;
    if state.store.delete_queue(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::QueueNotFound(id).into())
    }
}

// ---- items ----------------------------------------------------------------------------------

async fn push_items<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<PushBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = QueueId::new(id)?;
    let now = state.store.now();
    let items = match body.items {
        Some(items) => {
            if body.payload.is_some()
                || body.payload_base64.is_some()
                || body.metadata.is_some()
                || body.delay_ms.is_some()
            {
                return Err(ApiError::bad_request(
                    "give either `items` (a batch) or one item's fields \
                     (`payload`/`payload_base64`, `metadata`, `delay_ms`), not both",
                ));
            }
            items
        }
        None => vec![PushItem {
            payload: body.payload,
            payload_base64: body.payload_base64,
            metadata: body.metadata.unwrap_or_default(),
            delay_ms: body.delay_ms,
        }],
    };
    let items = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| new_item(item, now).map_err(|e| in_batch(e, i)))
        .collect::<Result<Vec<_>, ApiError>>()?;
    let keys = state.store.push_batch(&id, items).await?;
    Ok((StatusCode::CREATED, Json(json!({ "keys": keys }))))
}

/// Names the batch position in an error about one item of it.
fn in_batch(mut e: ApiError, index: usize) -> ApiError {
    e.message = format!("item {index}: {}", e.message);
    e
}

fn new_item(item: PushItem, now: crate::model::Timestamp) -> Result<NewItem, ApiError> {
    let payload = match (item.payload, item.payload_base64) {
        (Some(value), None) => serde_json::to_vec(&value)
            .map_err(|e| ApiError::bad_request(format!("payload cannot be stored: {e}")))?,
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "`payload_base64` is not valid base64 (standard alphabet, padded): {e}"
                ))
            })?,
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give `payload` or `payload_base64`, not both",
            ));
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "missing `payload` (any JSON value) or `payload_base64` (binary)",
            ));
        }
    };
    let mut new = NewItem::new(payload);
    new.metadata = item.metadata;
    if let Some(ms) = item.delay_ms {
        new.not_before = Some(now.saturating_add(Duration::from_millis(ms)));
    }
    Ok(new)
}

async fn fetch_items<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<FetchQuery>,
) -> Result<Json<Value>, ApiError> {
    let id = QueueId::new(id)?;
    let max = state.store.limits().max_batch;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE_LIMIT.min(max));
    if limit == 0 || limit > max {
        return Err(ApiError::bad_request(format!(
            "`limit` must be between 1 and {max}, got {limit}"
        )));
    }
    let page = Page {
        phase: q.phase.map(Phase::new).transpose()?,
        after: q.after,
        offset: q.offset.unwrap_or(0),
        limit,
        reverse: q.reverse.unwrap_or(false),
    };
    let items = state.store.fetch_page(&id, page).await?;
    let items: Vec<Value> = items.iter().map(item_json).collect();
    Ok(Json(json!({ "items": items })))
}

async fn fetch_item<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath((id, key)): ApiPath<(String, Key)>,
) -> Result<Json<Value>, ApiError> {
    let id = QueueId::new(id)?;
    match state.store.fetch_key(&id, key).await? {
        Some(item) => Ok(Json(item_json(&item))),
        None => Err(Error::ItemNotFound { queue: id, key }.into()),
    }
}

async fn delete_item<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath((id, key)): ApiPath<(String, Key)>,
) -> Result<StatusCode, ApiError> {
    let id = QueueId::new(id)?;
    if state.store.delete(&id, key).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::ItemNotFound { queue: id, key }.into())
    }
}

async fn set_phase<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath((id, key)): ApiPath<(String, Key)>,
    ApiJson(body): ApiJson<SetPhase>,
) -> Result<Json<Value>, ApiError> {
    let id = QueueId::new(id)?;
    let phase = Phase::new(body.phase)?;
    let item = match body.if_phase {
        Some(expected) => {
            let expected = Phase::new(expected)?;
            state
                .store
                .update_phase_if(&id, key, expected, phase)
                .await?
        }
        None => state.store.update_phase(&id, key, phase).await?,
    };
    Ok(Json(item_json(&item)))
}

async fn replay_item<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath((id, key)): ApiPath<(String, Key)>,
) -> Result<Json<Value>, ApiError> {
    let id = QueueId::new(id)?;
    let item = state.store.replay(&id, key).await?;
    Ok(Json(item_json(&item)))
}

// ---- whole-queue operations -----------------------------------------------------------------

async fn count<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<CountQuery>,
) -> Result<Json<Value>, ApiError> {
    let id = QueueId::new(id)?;
    let phase = q.phase.map(Phase::new).transpose()?;
    let counts = state.store.counts(&id).await?;
    let body = match phase {
        Some(phase) => {
            let n = counts.get(&phase);
            json!({ "total": n, "phases": { phase.as_str(): n } })
        }
        None => json!({ "total": counts.total(), "phases": phases_json(&counts) }),
    };
    Ok(Json(body))
}

/// Streams every item as one JSON line each, a page at a time: memory use does not grow with
/// the queue. A storage error mid-stream ends the body early (the status was already sent);
/// the client sees a truncated body, never a partial line passed off as complete.
async fn dump<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id = QueueId::new(id)?;
    // Checked up front so that a missing queue is a 404, not an empty 200.
    require_queue(&state, &id).await?;
    let pages = futures_util::stream::unfold(
        Some(state.store.dump(&id)),
        |dump: Option<Dump<B>>| async move {
            let mut dump = dump?;
            match dump.next_page().await {
                Ok(Some(items)) => Some((ndjson(&items), Some(dump))),
                Ok(None) => None,
                Err(e) => {
                    tracing::error!(error = %e, "queue dump failed mid-stream");
                    Some((Err(std::io::Error::other(e)), None))
                }
            }
        },
    );
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(pages),
    )
        .into_response())
}

fn ndjson(items: &[Item]) -> Result<Vec<u8>, std::io::Error> {
    let mut out = Vec::new();
    for item in items {
        serde_json::to_writer(&mut out, &item_json(item))?;
        out.push(b'\n');
    }
    Ok(out)
}

async fn reset<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let id = QueueId::new(id)?;
    let removed = state.store.reset(&id).await?;
    Ok(Json(json!({ "removed": removed })))
}

async fn replay_dead<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let id = QueueId::new(id)?;
    let replayed = state.store.replay_dead(&id).await?;
    Ok(Json(json!({ "replayed": replayed })))
}

// ---- helpers --------------------------------------------------------------------------------

async fn require_queue<B: Backend>(
    state: &ApiState<B>,
    id: &QueueId,
) -> Result<QueueConfig, ApiError> {
    state
        .store
        .queue(id)
        .await?
        .ok_or_else(|| Error::QueueNotFound(id.clone()).into())
}

fn secret(s: String) -> Result<Secret, ApiError> {
    if s.is_empty() {
        return Err(ApiError::bad_request(
            "`secret` must not be empty (use null to remove it)",
        ));
    }
    Ok(Secret::new(s))
}

/// Counts by phase: the lifecycle phases always (zero included), then the caller's own.
fn phases_json(counts: &PhaseCounts) -> serde_json::Map<String, Value> {
    let mut phases: serde_json::Map<String, Value> = LIFECYCLE
        .iter()
        .map(|p| (p.as_str().to_owned(), counts.get(p).into()))
        .collect();
    for (phase, n) in &counts.0 {
        phases.insert(phase.as_str().to_owned(), (*n).into());
    }
    phases
}

/// A queue's settings and counts. The secret is never shown: only whether there is one.
fn queue_json(config: &QueueConfig, counts: &PhaseCounts) -> Value {
    json!({
        "id": config.id.as_str(),
        "secret": config.secret.is_some(),
        "ttl_ms": config.ttl.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        "retention": config.retention,
        "created_at": config.created_at,
        "metadata": config.metadata,
        "items": counts.total(),
        "phases": phases_json(counts),
    })
}

/// An item as JSON. Times are milliseconds since the Unix epoch.
fn item_json(item: &Item) -> Value {
    let mut v = json!({
        "key": item.key,
        "phase": item.phase.as_str(),
        "attempts": item.attempts,
        "created_at": item.created_at,
        "updated_at": item.updated_at,
        "not_before": item.not_before,
        "lease": item.lease,
        "last_error": item.last_error,
        "metadata": item.metadata,
    });
    let (field, payload) = match std::str::from_utf8(&item.payload) {
        Ok(text) => (
            "payload",
            serde_json::from_str::<Value>(text).unwrap_or_else(|_| Value::from(text)),
        ),
        Err(_) => (
            "payload_base64",
            Value::from(base64::engine::general_purpose::STANDARD.encode(&item.payload)),
        ),
    };
    if let Value::Object(map) = &mut v {
        map.insert(field.to_owned(), payload);
    }
    v
}
