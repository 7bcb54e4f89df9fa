//! Queue admin routes: the [`Store`](crate::Store) operations over HTTP (queues, items,
//! counts, a streamed dump, reset, phase changes, replay, push).
//!
//! Items are shown as JSON objects like the CLI's `fetch --json` lines: the payload is
//! embedded as JSON when it parses as JSON, as a string when it is other UTF-8 text, and as
//! `payload_base64` otherwise. A queue's secret is never shown, only whether it has one.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::openapi::{ApiRoutes, RetentionDoc};
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
pub(super) fn routes<B: Backend>() -> ApiRoutes<ApiState<B>> {
    ApiRoutes::new()
        .route::<__path_list_queues, _, _>(list_queues::<B>)
        .route::<__path_create_queue, _, _>(create_queue::<B>)
        .route::<__path_show_queue, _, _>(show_queue::<B>)
        .route::<__path_update_queue, _, _>(update_queue::<B>)
        .route::<__path_delete_queue, _, _>(delete_queue::<B>)
        .route::<__path_fetch_items, _, _>(fetch_items::<B>)
        .route::<__path_push_items, _, _>(push_items::<B>)
        .route::<__path_fetch_item, _, _>(fetch_item::<B>)
        .route::<__path_delete_item, _, _>(delete_item::<B>)
        .route::<__path_set_phase, _, _>(set_phase::<B>)
        .route::<__path_replay_item, _, _>(replay_item::<B>)
        .route::<__path_count, _, _>(count::<B>)
        .route::<__path_dump, _, _>(dump::<B>)
        .route::<__path_reset, _, _>(reset::<B>)
        .route::<__path_replay_dead, _, _>(replay_dead::<B>)
}

// ---- request bodies -------------------------------------------------------------------------

/// Deserializes a field that is present (even as `null`) into `Some`, so that `Option<T>`
/// fields tell "absent" (`None`, via `#[serde(default)]`) from "given".
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// `POST /queues`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateQueue {
    /// 1 to 128 characters from `A-Z a-z 0-9 _ - .`, starting with a letter or a digit.
    id: String,
    /// Signing secret: deliveries from the queue are signed with it, and callbacks into it
    /// must carry a valid signature (then it must be a `whsec_` secret).
    secret: Option<String>,
    /// Item TTL: a pending item older than this is moved to `expired`.
    ttl_ms: Option<u64>,
    #[serde(default)]
    #[schema(value_type = RetentionDoc)]
    retention: Retention,
    /// Free-form metadata.
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

/// `PATCH /queues/{id}`: absent fields are kept; `null` clears `secret` and `ttl_ms`.
// The outer `Option` is "given or not", the inner one the value, which may be `null`.
#[allow(clippy::option_option)]
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateQueue {
    /// The new secret; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    secret: Option<Option<String>>,
    /// The new TTL; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>)]
    ttl_ms: Option<Option<u64>>,
    #[schema(value_type = Option<RetentionDoc>)]
    retention: Option<Retention>,
    /// Replaces the metadata.
    metadata: Option<BTreeMap<String, String>>,
}

/// One item to push: `payload` or `payload_base64`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PushItem {
    /// Any JSON value, stored as its JSON text (`null` included, hence `present`).
    #[serde(default, deserialize_with = "present")]
    payload: Option<Value>,
    /// Binary payload, base64 (standard alphabet, padded).
    payload_base64: Option<String>,
    /// Small string map stored with the item.
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    /// Not handed out before this many milliseconds from now.
    delay_ms: Option<u64>,
}

/// `POST /queues/{id}/items`: one item's fields, or `items` for an atomic batch.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PushBody {
    /// Any JSON value (one item).
    #[serde(default, deserialize_with = "present")]
    payload: Option<Value>,
    /// Binary payload, base64 (one item).
    payload_base64: Option<String>,
    /// Metadata (one item).
    metadata: Option<BTreeMap<String, String>>,
    /// Delay in milliseconds (one item).
    delay_ms: Option<u64>,
    /// A batch, pushed atomically (then none of the fields above).
    items: Option<Vec<PushItem>>,
}

/// `PUT /queues/{id}/items/{key}/phase`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SetPhase {
    /// The new phase.
    phase: String,
    /// Only if the item is in this phase now (409 otherwise).
    if_phase: Option<String>,
}

/// A text payload: embedded JSON, or a string.
#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum PayloadView {
    /// Valid JSON, shown as stored.
    Json(Box<serde_json::value::RawValue>),
    /// Other text.
    Text(String),
}

impl PayloadView {
    /// The view of a UTF-8 payload.
    pub(super) fn of(text: &str) -> Self {
        match serde_json::from_str::<&serde_json::value::RawValue>(text)
            .ok()
            .and_then(|raw| {
                serde_json::value::RawValue::from_string(crate::text::compact_json(raw.get())).ok()
            }) {
            Some(raw) => PayloadView::Json(raw),
            None => PayloadView::Text(text.to_owned()),
        }
    }
}

/// `GET /queues/{id}/items`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct FetchQuery {
    /// Only items in this phase.
    phase: Option<String>,
    /// Items to skip.
    offset: Option<usize>,
    /// Most items to answer (default 20).
    limit: Option<usize>,
    /// Newest first.
    reverse: Option<bool>,
    /// Only items after this key (before it, with `reverse`).
    #[param(value_type = Option<u64>)]
    after: Option<Key>,
}

/// `GET /queues/{id}/count`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct CountQuery {
    /// Count only this phase.
    phase: Option<String>,
}

// ---- response bodies ------------------------------------------------------------------------

/// A queue's settings and counts. The secret is never shown: only whether there is one.
#[derive(Serialize, ToSchema)]
struct QueueView {
    /// The queue's id.
    id: String,
    /// Whether the queue has a signing secret.
    secret: bool,
    /// Item TTL in milliseconds.
    ttl_ms: Option<u64>,
    #[schema(value_type = RetentionDoc)]
    retention: Retention,
    /// Milliseconds since the Unix epoch.
    created_at: u64,
    /// Free-form metadata.
    metadata: BTreeMap<String, String>,
    /// Items in every phase.
    items: u64,
    /// Items by phase: the lifecycle phases always (zero included), then any other.
    #[schema(value_type = BTreeMap<String, u64>)]
    phases: serde_json::Map<String, Value>,
}

/// `GET /queues`.
#[derive(Serialize, ToSchema)]
struct QueueList {
    /// Every queue, by id.
    queues: Vec<QueueView>,
}

/// The lease of an in-flight item.
#[derive(Serialize, ToSchema)]
struct LeaseView {
    /// The consumer that claimed the item.
    owner: String,
    /// When the lease runs out (ms since the Unix epoch).
    until: u64,
}

/// An item. Times are milliseconds since the Unix epoch. The payload is `payload` when it is
/// UTF-8 (embedded as JSON when it parses as JSON, else a string), `payload_base64` otherwise.
#[derive(Serialize, ToSchema)]
struct ItemView {
    /// Its key, increasing within the queue.
    #[schema(value_type = u64)]
    key: Key,
    /// Its phase.
    phase: String,
    /// How many times it was claimed.
    attempts: u32,
    /// When it was pushed.
    created_at: u64,
    /// When it last changed.
    updated_at: u64,
    /// Not handed out before this time.
    not_before: u64,
    /// Present while the item is in flight.
    lease: Option<LeaseView>,
    /// The last recorded error.
    last_error: Option<String>,
    /// Its metadata.
    metadata: BTreeMap<String, String>,
    /// The payload when it is UTF-8 text: as JSON when it is JSON (as stored, key order
    /// kept, on one line), else as a string.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    payload: Option<PayloadView>,
    /// The payload when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_base64: Option<String>,
}

/// `GET /queues/{id}/items`.
#[derive(Serialize, ToSchema)]
struct ItemList {
    /// The page of items.
    items: Vec<ItemView>,
}

/// `POST /queues/{id}/items`.
#[derive(Serialize, ToSchema)]
struct PushedKeys {
    /// The new items' keys, in order.
    #[schema(value_type = Vec<u64>)]
    keys: Vec<Key>,
}

/// `GET /queues/{id}/count`.
#[derive(Serialize, ToSchema)]
struct CountView {
    /// Items counted.
    total: u64,
    /// By phase (the asked one only, with `?phase=`).
    #[schema(value_type = BTreeMap<String, u64>)]
    phases: serde_json::Map<String, Value>,
}

/// `POST /queues/{id}/reset`.
#[derive(Serialize, ToSchema)]
struct ResetView {
    /// Items removed.
    removed: u64,
}

/// `POST /queues/{id}/replay`.
#[derive(Serialize, ToSchema)]
struct ReplayedView {
    /// Dead items moved back to pending.
    replayed: u64,
}

// ---- queues ---------------------------------------------------------------------------------

/// `GET /queues`: every queue with its counts.
#[utoipa::path(
    get,
    path = "/queues",
    tag = "queues",
    responses((status = 200, description = "Every queue, by id.", body = QueueList))
)]
async fn list_queues<B: Backend>(
    State(state): State<ApiState<B>>,
) -> Result<Json<QueueList>, ApiError> {
    let mut queues = Vec::new();
    for config in state.store.queues().await? {
        // A queue deleted between the listing and its count is simply left out.
        match state.store.counts(&config.id).await {
            Ok(counts) => queues.push(queue_json(&config, &counts)),
            Err(Error::QueueNotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Json(QueueList { queues }))
}

/// `POST /queues`: creates a queue.
#[utoipa::path(
    post,
    path = "/queues",
    tag = "queues",
    request_body = CreateQueue,
    responses(
        (status = 201, description = "The new queue.", body = QueueView),
        (status = 409, description = "The queue exists (`queue_exists`).")
    )
)]
async fn create_queue<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiJson(body): ApiJson<CreateQueue>,
) -> Result<(StatusCode, Json<QueueView>), ApiError> {
    let mut config = QueueConfig::new(QueueId::new(body.id)?);
    config.secret = body.secret.map(secret).transpose()?;
    config.ttl = body.ttl_ms.map(Duration::from_millis);
    config.retention = body.retention;
    config.metadata = body.metadata;
    let config = state.store.create_queue(config).await?;
    let json = queue_json(&config, &PhaseCounts::default());
    Ok((StatusCode::CREATED, Json(json)))
}

/// `GET /queues/{id}`: a queue's settings and counts.
#[utoipa::path(
    get,
    path = "/queues/{id}",
    tag = "queues",
    params(("id" = String, Path, description = "The queue id.")),
    responses((status = 200, description = "The queue.", body = QueueView), (status = 404, description = "No such queue (`queue_not_found`)."))
)]
async fn show_queue<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<QueueView>, ApiError> {
    let id = QueueId::new(id)?;
    let config = require_queue(&state, &id).await?;
    let counts = state.store.counts(&id).await?;
    Ok(Json(queue_json(&config, &counts)))
}

/// `PATCH /queues/{id}`: changes the fields given.
#[utoipa::path(
    patch,
    path = "/queues/{id}",
    tag = "queues",
    params(("id" = String, Path, description = "The queue id.")),
    request_body = UpdateQueue,
    responses((status = 200, description = "The queue as it is now.", body = QueueView), (status = 404, description = "No such queue (`queue_not_found`)."))
)]
async fn update_queue<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateQueue>,
) -> Result<Json<QueueView>, ApiError> {
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

/// `DELETE /queues/{id}`: deletes a queue and its items.
#[utoipa::path(
    delete,
    path = "/queues/{id}",
    tag = "queues",
    params(("id" = String, Path, description = "The queue id.")),
    responses((status = 204, description = "Deleted."), (status = 404, description = "No such queue (`queue_not_found`)."))
)]
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

/// `POST /queues/{id}/items`: pushes one item, or a batch atomically.
#[utoipa::path(
    post,
    path = "/queues/{id}/items",
    tag = "queues",
    params(("id" = String, Path, description = "The queue id.")),
    request_body = PushBody,
    responses(
        (status = 201, description = "Stored: the new keys.", body = PushedKeys),
        (status = 404, description = "No such queue (`queue_not_found`)."),
        (status = 413, description = "The body, a payload or the batch is over its limit \
                                      (`body_too_large`, `payload_too_large`, `batch_too_large`).")
    )
)]
async fn push_items<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<PushBody>,
) -> Result<(StatusCode, Json<PushedKeys>), ApiError> {
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
    Ok((StatusCode::CREATED, Json(PushedKeys { keys })))
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

/// `GET /queues/{id}/items`: a page of items.
#[utoipa::path(
    get,
    path = "/queues/{id}/items",
    tag = "queues",
    params(("id" = String, Path, description = "The queue id."), FetchQuery),
    responses(
        (status = 200, description = "The page.", body = ItemList),
        (status = 400, description = "A bad query parameter (`invalid_query`, `invalid_request`)."),
        (status = 404, description = "No such queue (`queue_not_found`).")
    )
)]
async fn fetch_items<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<FetchQuery>,
) -> Result<Json<ItemList>, ApiError> {
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
    let items = items.iter().map(item_json).collect();
    Ok(Json(ItemList { items }))
}

/// `GET /queues/{id}/items/{key}`: one item.
#[utoipa::path(
    get,
    path = "/queues/{id}/items/{key}",
    tag = "queues",
    params(("id" = String, Path, description = "The queue id."), ("key" = u64, Path, description = "The item key.")),
    responses((status = 200, description = "The item.", body = ItemView), (status = 404, description = "No such queue or item (`queue_not_found`, `item_not_found`)."))
)]
async fn fetch_item<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath((id, key)): ApiPath<(String, Key)>,
) -> Result<Json<ItemView>, ApiError> {
    let id = QueueId::new(id)?;
    match state.store.fetch_key(&id, key).await? {
        Some(item) => Ok(Json(item_json(&item))),
        None => Err(Error::ItemNotFound { queue: id, key }.into()),
    }
}

/// `DELETE /queues/{id}/items/{key}`: removes one item.
#[utoipa::path(
    delete,
    path = "/queues/{id}/items/{key}",
    tag = "queues",
    params(("id" = String, Path, description = "The queue id."), ("key" = u64, Path, description = "The item key.")),
    responses((status = 204, description = "Deleted."), (status = 404, description = "No such queue or item (`queue_not_found`, `item_not_found`)."))
)]
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

/// `PUT /queues/{id}/items/{key}/phase`: moves an item to a phase.
#[utoipa::path(
    put,
    path = "/queues/{id}/items/{key}/phase",
    tag = "queues",
    params(("id" = String, Path, description = "The queue id."), ("key" = u64, Path, description = "The item key.")),
    request_body = SetPhase,
    responses(
        (status = 200, description = "The item as it is now.", body = ItemView),
        (status = 404, description = "No such queue or item (`queue_not_found`, `item_not_found`)."),
        (status = 409, description = "The item is not in `if_phase` (`phase_conflict`).")
    )
)]
async fn set_phase<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath((id, key)): ApiPath<(String, Key)>,
    ApiJson(body): ApiJson<SetPhase>,
) -> Result<Json<ItemView>, ApiError> {
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

/// `POST /queues/{id}/items/{key}/replay`: a dead item goes back to pending.
#[utoipa::path(
    post,
    path = "/queues/{id}/items/{key}/replay",
    tag = "queues",
    params(("id" = String, Path, description = "The queue id."), ("key" = u64, Path, description = "The item key.")),
    responses(
        (status = 200, description = "The item as it is now.", body = ItemView),
        (status = 404, description = "No such queue or item (`queue_not_found`, `item_not_found`)."),
        (status = 409, description = "The item is not dead (`phase_conflict`).")
    )
)]
async fn replay_item<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath((id, key)): ApiPath<(String, Key)>,
) -> Result<Json<ItemView>, ApiError> {
    let id = QueueId::new(id)?;
    let item = state.store.replay(&id, key).await?;
    Ok(Json(item_json(&item)))
}

// ---- whole-queue operations -----------------------------------------------------------------

/// `GET /queues/{id}/count`: items by phase.
#[utoipa::path(
    get,
    path = "/queues/{id}/count",
    tag = "queues",
    params(("id" = String, Path, description = "The queue id."), CountQuery),
    responses((status = 200, description = "The counts.", body = CountView), (status = 404, description = "No such queue (`queue_not_found`)."))
)]
async fn count<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<CountQuery>,
) -> Result<Json<CountView>, ApiError> {
    let id = QueueId::new(id)?;
    let phase = q.phase.map(Phase::new).transpose()?;
    let counts = state.store.counts(&id).await?;
    let body = match phase {
        Some(phase) => {
            let n = counts.get(&phase);
            let mut phases = serde_json::Map::new();
            phases.insert(phase.as_str().to_owned(), n.into());
            CountView { total: n, phases }
        }
        None => CountView {
            total: counts.total(),
            phases: phases_json(&counts),
        },
    };
    Ok(Json(body))
}

/// `GET /queues/{id}/dump`: every item, as JSON lines.
///
/// Streams every item as one JSON line each, a page at a time: memory use does not grow with
/// the queue. A storage error mid-stream ends the body early (the status was already sent);
/// the client sees a truncated body, never a partial line passed off as complete.
#[utoipa::path(
    get,
    path = "/queues/{id}/dump",
    tag = "queues",
    params(("id" = String, Path, description = "The queue id.")),
    responses(
        (status = 200, description = "Every item, one JSON object a line.", body = ItemView, content_type = "application/x-ndjson"),
        (status = 404, description = "No such queue (`queue_not_found`).")
    )
)]
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

/// `POST /queues/{id}/reset`: removes every item (keys are not reused).
#[utoipa::path(
    post,
    path = "/queues/{id}/reset",
    tag = "queues",
    params(("id" = String, Path, description = "The queue id.")),
    responses((status = 200, description = "How many items were removed.", body = ResetView), (status = 404, description = "No such queue (`queue_not_found`)."))
)]
async fn reset<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ResetView>, ApiError> {
    let id = QueueId::new(id)?;
    let removed = state.store.reset(&id).await?;
    Ok(Json(ResetView { removed }))
}

/// `POST /queues/{id}/replay`: every dead item goes back to pending.
#[utoipa::path(
    post,
    path = "/queues/{id}/replay",
    tag = "queues",
    params(("id" = String, Path, description = "The queue id.")),
    responses((status = 200, description = "How many items were replayed.", body = ReplayedView), (status = 404, description = "No such queue (`queue_not_found`)."))
)]
async fn replay_dead<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ReplayedView>, ApiError> {
    let id = QueueId::new(id)?;
    let replayed = state.store.replay_dead(&id).await?;
    Ok(Json(ReplayedView { replayed }))
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
fn queue_json(config: &QueueConfig, counts: &PhaseCounts) -> QueueView {
    QueueView {
        id: config.id.as_str().to_owned(),
        secret: config.secret.is_some(),
        ttl_ms: config
            .ttl
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        retention: config.retention,
        created_at: config.created_at.as_millis(),
        metadata: config.metadata.clone(),
        items: counts.total(),
        phases: phases_json(counts),
    }
}

/// An item as JSON. Times are milliseconds since the Unix epoch.
fn item_json(item: &Item) -> ItemView {
    let (payload, payload_base64) = match std::str::from_utf8(&item.payload) {
        Ok(text) => (Some(PayloadView::of(text)), None),
        Err(_) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(&item.payload)),
        ),
    };
    ItemView {
        key: item.key,
        phase: item.phase.as_str().to_owned(),
        attempts: item.attempts,
        created_at: item.created_at.as_millis(),
        updated_at: item.updated_at.as_millis(),
        not_before: item.not_before.as_millis(),
        lease: item.lease.as_ref().map(|l| LeaseView {
            owner: l.owner.clone(),
            until: l.until.as_millis(),
        }),
        last_error: item.last_error.clone(),
        metadata: item.metadata.clone(),
        payload,
        payload_base64,
    }
}
