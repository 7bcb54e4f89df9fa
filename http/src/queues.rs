//! Queue admin routes: the `hookspool::Store` operations over HTTP (queues, items,
//! counts, a streamed dump, reset, phase changes, replay, push).
//!
//! Items are shown as JSON objects like the CLI's `fetch --json` lines: the payload is
//! embedded as JSON when it parses as JSON, as a string when it is other UTF-8 text, and as
//! `payload_base64` otherwise. A queue's secret is never shown, only whether it has one.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use hookspool::{Backend, Dump, Error, Item, Key, Page, Phase, PhaseCounts, QueueConfig, QueueId};
use hookspool_client::wire::{
    Counts, ItemList, ItemView, NewQueue, PushBody, PushedKeys, QueueInfo, QueueList, QueueUpdate,
    Removed, Replayed, SetPhase, Verified, VerifyRequest, check_metadata, rules,
};
use hookspool_webhooks::{INTERNAL_PREFIX, Secret, SigningKey, set_channel_secret};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::openapi::ApiRoutes;
use crate::{ApiError, ApiJson, ApiPath, ApiQuery, ApiState};

/// Items per page when the request does not say.
const DEFAULT_PAGE_LIMIT: usize = 20;

/// The queue admin routes, relative to where the API router is mounted.
pub(crate) fn routes<B: Backend>() -> ApiRoutes<ApiState<B>> {
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
        .route::<__path_verify, _, _>(verify::<B>)
}

// ---- query parameters -------------------------------------------------------------------

/// `GET /queues/{id}/items`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct FetchQuery {
    /// Only items in this phase.
    #[param(value_type = Option<rules::PhaseName>)]
    phase: Option<String>,
    /// Items to skip.
    #[param(value_type = Option<u64>)]
    offset: Option<usize>,
    /// Most items to answer (default 20); at most the store's `max_batch` (by default
    /// 10,000, the documented maximum).
    #[param(minimum = 1, maximum = 10_000)]
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
    #[param(value_type = Option<rules::PhaseName>)]
    phase: Option<String>,
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
            Ok(counts) => queues.push(QueueInfo::new(&config, counts)),
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
    request_body = NewQueue,
    responses((status = 403, description = "One of hookspool's own queues, read-only here (`internal_queue`)."), 
        (status = 201, description = "The new queue.", body = QueueInfo),
        (status = 409, description = "The queue exists (`queue_exists`).")
    )
)]
async fn create_queue<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiJson(body): ApiJson<NewQueue>,
) -> Result<(StatusCode, Json<QueueInfo>), ApiError> {
    let mut config = QueueConfig::new(QueueId::new(body.id)?);
    writable(&config.id, "created")?;
    config.ttl = body.ttl_ms.map(Duration::from_millis);
    config.retention = body.retention;
    config.retain = body.retain.unwrap_or_default().into();
    check_metadata(&body.metadata).map_err(ApiError::bad_request)?;
    config.metadata = body.metadata;
    if body.secret.as_ref().is_some_and(|s| s.expose().is_empty()) {
        return Err(ApiError::bad_request(
            "`secret` must not be empty (leave it out for none)",
        ));
    }
    if let Some(secret) = &body.secret {
        check_secret(secret)?;
    }
    set_channel_secret(&mut config, body.secret.as_ref())?;
    let config = state.store.create_queue(config).await?;
    let json = QueueInfo::new(&config, PhaseCounts::default());
    Ok((StatusCode::CREATED, Json(json)))
}

/// Refuses a channel secret that is not a Standard Webhooks (`whsec_`) secret with 400
/// `invalid_secret`: stored, it would make every callback into the channel fail as
/// misconfigured (500 `channel_misconfigured`).
fn check_secret(secret: &Secret) -> Result<(), ApiError> {
    SigningKey::from_whsec(secret.expose()).map_err(|e| {
        hookspool_webhooks::Error::InvalidSecret(format!(
            "a channel's `secret` must be a whsec_ secret: {e}"
        ))
    })?;
    Ok(())
}

/// `GET /queues/{id}`: a queue's settings and counts.
#[utoipa::path(
    get,
    path = "/queues/{id}",
    tag = "queues",
    params(("id" = rules::QueueId, Path, description = "The queue id.")),
    responses((status = 200, description = "The queue.", body = QueueInfo), (status = 404, description = "No such queue (`queue_not_found`)."))
)]
async fn show_queue<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<QueueInfo>, ApiError> {
    let id = QueueId::new(id)?;
    let config = require_queue(&state, &id).await?;
    let counts = state.store.counts(&id).await?;
    Ok(Json(QueueInfo::new(&config, counts)))
}

/// `PATCH /queues/{id}`: changes the fields given.
#[utoipa::path(
    patch,
    path = "/queues/{id}",
    tag = "queues",
    params(("id" = rules::QueueId, Path, description = "The queue id.")),
    request_body = QueueUpdate,
    responses((status = 403, description = "One of hookspool's own queues, read-only here (`internal_queue`)."), (status = 200, description = "The queue as it is now.", body = QueueInfo), (status = 404, description = "No such queue (`queue_not_found`)."))
)]
async fn update_queue<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<QueueUpdate>,
) -> Result<Json<QueueInfo>, ApiError> {
    let id = QueueId::new(id)?;
    writable(&id, "changed")?;
    let mut config = require_queue(&state, &id).await?;
    // (An empty secret is refused by `apply_to`, in its own words.)
    if let Some(Some(secret)) = &body.secret
        && !secret.expose().is_empty()
    {
        check_secret(secret)?;
    }
    body.apply_to(&mut config).map_err(ApiError::bad_request)?;
    let config = state.store.update_queue(config).await?;
    let counts = state.store.counts(&id).await?;
    Ok(Json(QueueInfo::new(&config, counts)))
}

/// `DELETE /queues/{id}`: deletes a queue and its items.
#[utoipa::path(
    delete,
    path = "/queues/{id}",
    tag = "queues",
    params(("id" = rules::QueueId, Path, description = "The queue id.")),
    responses((status = 403, description = "One of hookspool's own queues, read-only here (`internal_queue`)."), (status = 204, description = "Deleted."), (status = 404, description = "No such queue (`queue_not_found`)."))
)]
async fn delete_queue<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = QueueId::new(id)?;
    writable(&id, "deleted")?;
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
    params(("id" = rules::QueueId, Path, description = "The queue id.")),
    request_body = PushBody,
    responses((status = 403, description = "One of hookspool's own queues, read-only here (`internal_queue`)."), 
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
    writable(&id, "pushed to")?;
    let now = state.store.now();
    let batch = body.items.is_some();
    let items = body
        .into_items()
        .map_err(ApiError::bad_request)?
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            item.into_new_item(now).map_err(|e| {
                // Names the batch position in an error about one item of it.
                if batch {
                    ApiError::bad_request(format!("item {i}: {e}"))
                } else {
                    ApiError::bad_request(e)
                }
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let keys = state.store.push_batch(&id, items).await?;
    Ok((StatusCode::CREATED, Json(PushedKeys { keys })))
}

/// `GET /queues/{id}/items`: a page of items.
#[utoipa::path(
    get,
    path = "/queues/{id}/items",
    tag = "queues",
    params(("id" = rules::QueueId, Path, description = "The queue id."), FetchQuery),
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
    let items = items.iter().map(ItemView::of).collect();
    Ok(Json(ItemList { items }))
}

/// `GET /queues/{id}/items/{key}`: one item.
#[utoipa::path(
    get,
    path = "/queues/{id}/items/{key}",
    tag = "queues",
    params(("id" = rules::QueueId, Path, description = "The queue id."), ("key" = u64, Path, description = "The item key.")),
    responses((status = 200, description = "The item.", body = ItemView), (status = 404, description = "No such queue or item (`queue_not_found`, `item_not_found`)."))
)]
async fn fetch_item<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath((id, key)): ApiPath<(String, Key)>,
) -> Result<Json<ItemView>, ApiError> {
    let id = QueueId::new(id)?;
    match state.store.fetch_key(&id, key).await? {
        Some(item) => Ok(Json(ItemView::of(&item))),
        None => Err(Error::ItemNotFound { queue: id, key }.into()),
    }
}

/// `DELETE /queues/{id}/items/{key}`: removes one item.
#[utoipa::path(
    delete,
    path = "/queues/{id}/items/{key}",
    tag = "queues",
    params(("id" = rules::QueueId, Path, description = "The queue id."), ("key" = u64, Path, description = "The item key.")),
    responses((status = 403, description = "One of hookspool's own queues, read-only here (`internal_queue`)."), (status = 204, description = "Deleted."), (status = 404, description = "No such queue or item (`queue_not_found`, `item_not_found`)."))
)]
async fn delete_item<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath((id, key)): ApiPath<(String, Key)>,
) -> Result<StatusCode, ApiError> {
    let id = QueueId::new(id)?;
    writable(&id, "deleted from")?;
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
    params(("id" = rules::QueueId, Path, description = "The queue id."), ("key" = u64, Path, description = "The item key.")),
    request_body = SetPhase,
    responses((status = 403, description = "One of hookspool's own queues, read-only here (`internal_queue`)."), 
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
    writable(&id, "changed")?;
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
    Ok(Json(ItemView::of(&item)))
}

/// `POST /queues/{id}/items/{key}/replay`: a dead item goes back to pending.
#[utoipa::path(
    post,
    path = "/queues/{id}/items/{key}/replay",
    tag = "queues",
    params(("id" = rules::QueueId, Path, description = "The queue id."), ("key" = u64, Path, description = "The item key.")),
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
    Ok(Json(ItemView::of(&item)))
}

// ---- whole-queue operations -----------------------------------------------------------------

/// `GET /queues/{id}/count`: items by phase.
#[utoipa::path(
    get,
    path = "/queues/{id}/count",
    tag = "queues",
    params(("id" = rules::QueueId, Path, description = "The queue id."), CountQuery),
    responses((status = 200, description = "The counts.", body = Counts), (status = 404, description = "No such queue (`queue_not_found`)."))
)]
async fn count<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<CountQuery>,
) -> Result<Json<Counts>, ApiError> {
    let id = QueueId::new(id)?;
    let phase = q.phase.map(Phase::new).transpose()?;
    let counts = state.store.counts(&id).await?;
    let pruned = state.store.pruned(&id);
    let mut out = match &phase {
        Some(phase) => Counts::one(&counts, phase),
        None => Counts::all(&counts),
    };
    out.pruned = pruned
        .into_iter()
        .filter(|(p, _)| phase.as_ref().is_none_or(|asked| asked == p))
        .map(|(p, n)| (p.as_str().to_owned(), n))
        .collect();
    Ok(Json(out))
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
    params(("id" = rules::QueueId, Path, description = "The queue id.")),
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
        serde_json::to_writer(&mut out, &ItemView::of(item))?;
        out.push(b'\n');
    }
    Ok(out)
}

/// `POST /queues/{id}/reset`: removes every item (keys are not reused).
#[utoipa::path(
    post,
    path = "/queues/{id}/reset",
    tag = "queues",
    params(("id" = rules::QueueId, Path, description = "The queue id.")),
    responses((status = 403, description = "One of hookspool's own queues, read-only here (`internal_queue`)."), (status = 200, description = "How many items were removed.", body = Removed), (status = 404, description = "No such queue (`queue_not_found`)."))
)]
async fn reset<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Removed>, ApiError> {
    let id = QueueId::new(id)?;
    writable(&id, "reset")?;
    let removed = state.store.reset(&id).await?;
    Ok(Json(Removed { removed }))
}

/// `POST /verify`: checks the stored data of every item of every queue (one request for
/// the whole store: it takes as long as reading everything), and with `quarantine` moves each
/// damaged item to the phase `corrupt`. Damage is an answer, not an error: 200 either way.
#[utoipa::path(
    post,
    path = "/verify",
    tag = "queues",
    request_body = VerifyRequest,
    responses((status = 200, description = "What was checked, and the damage found by queue and key.", body = Verified))
)]
async fn verify<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiJson(req): ApiJson<VerifyRequest>,
) -> Result<Json<Verified>, ApiError> {
    let report = state.store.verify(req.quarantine, |_| {}).await?;
    if !report.is_clean() {
        tracing::error!(
            damaged = report.damaged.len(),
            quarantined = report.quarantined,
            "verify found damaged items"
        );
    }
    Ok(Json(report.into()))
}

/// `POST /queues/{id}/replay`: every dead item goes back to pending.
#[utoipa::path(
    post,
    path = "/queues/{id}/replay",
    tag = "queues",
    params(("id" = rules::QueueId, Path, description = "The queue id.")),
    responses((status = 200, description = "How many items were replayed.", body = Replayed), (status = 404, description = "No such queue (`queue_not_found`)."))
)]
async fn replay_dead<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Replayed>, ApiError> {
    let id = QueueId::new(id)?;
    let replayed = state.store.replay_dead(&id).await?;
    Ok(Json(Replayed { replayed }))
}

// ---- helpers --------------------------------------------------------------------------------

/// Refuses a write to one of hookspool's own queues (`hookspool.subscriptions`,
/// `hookspool.deliveries`, …): their records are written by the webhook layer only, and one
/// written by hand could stop the daemon at its next start. Reads, and replaying dead items,
/// stay allowed.
fn writable(id: &QueueId, what: &str) -> Result<(), ApiError> {
    if id.as_str().starts_with(INTERNAL_PREFIX) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "internal_queue",
            format!(
                "`{id}` is one of hookspool's own queues: it cannot be {what} through the \
                 queue API (use the /hooks and /deliveries endpoints; reads and replaying dead \
                 items are allowed; the daemon's retention settings, such as \
                 --retain-deliveries-done, set how long deliveries stay)"
            ),
        ));
    }
    Ok(())
}

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
