//! REST Hooks subscriptions, publishing with idempotency keys, the delivery log, and the public
//! inbound callback receiver (`POST /callbacks/{channel}`, authenticated by signatures).
//!
//! Secrets appear in exactly two responses: the one that creates a subscription and the one
//! that rotates its secret, because the caller needs the value once to verify deliveries.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hookspool::Backend;
use hookspool_client::wire::{
    Accepted, Delivery, DeliveryList, JsonObject, NewSubscription, Publish, Published, Removed,
    RotateSecret, SubscriptionChange, SubscriptionInfo, SubscriptionList, TestSent, Unsubscribe,
    rules,
};
use hookspool_webhooks::{DeliveryId, Error, FireOptions, SubscribeOptions, check_idempotency_key};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use utoipa::IntoParams;

use crate::openapi::ApiRoutes;
use crate::{ApiError, ApiJson, ApiPath, ApiQuery, ApiState};

/// Response header set when `POST /events` answers from an earlier request with the same key.
const HEADER_IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// The request header that carries an idempotency key (IETF draft).
const HEADER_IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The bearer-protected routes: REST Hooks, publishing, the delivery log.
pub(crate) fn routes<B: Backend>() -> ApiRoutes<ApiState<B>> {
    ApiRoutes::new()
        .route::<__path_subscribe, _, _>(subscribe::<B>)
        .route::<__path_unsubscribe, _, _>(unsubscribe::<B>)
        .route::<__path_list_subscriptions, _, _>(list_subscriptions::<B>)
        .route::<__path_get_subscription, _, _>(get_subscription::<B>)
        .route::<__path_update_subscription, _, _>(update_subscription::<B>)
        .route::<__path_delete_subscription, _, _>(delete_subscription::<B>)
        .route::<__path_rotate_secret, _, _>(rotate_secret::<B>)
        .route::<__path_test_subscription, _, _>(test_subscription::<B>)
        .route::<__path_publish, _, _>(publish::<B>)
        .route::<__path_list_deliveries, _, _>(list_deliveries::<B>)
        .route::<__path_get_delivery, _, _>(get_delivery::<B>)
        .route::<__path_replay_delivery, _, _>(replay_delivery::<B>)
}

/// The public routes: inbound callbacks, authenticated by their signatures.
pub(crate) fn public_routes<B: Backend>() -> ApiRoutes<ApiState<B>> {
    ApiRoutes::new().route::<__path_callback, _, _>(callback::<B>)
}

// ---- query parameters ---------------------------------------------------------------------

/// `GET /hooks/subscriptions`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only this owner's subscriptions.
    owner: Option<String>,
}

/// `GET /deliveries`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeliveriesQuery {
    /// Only this subscription's deliveries.
    subscription: Option<String>,
    /// At most this many (default 50, at most 500).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
}

/// Most deliveries `GET /deliveries` answers.
const MAX_DELIVERIES: usize = 500;

// ---- REST Hooks ---------------------------------------------------------------------------

/// `POST /hooks/subscribe`: 201 with the new subscription and its secret; 200 with the
/// existing one (without its secret) when the same owner already subscribed the same URL to
/// the same event.
#[utoipa::path(
    post,
    path = "/hooks/subscribe",
    tag = "hooks",
    request_body = NewSubscription,
    responses(
        (status = 201, description = "Subscribed: the subscription with its secret.", body = SubscriptionInfo),
        (status = 200, description = "Already subscribed: the subscription, without its secret.", body = SubscriptionInfo)
    )
)]
async fn subscribe<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiJson(req): ApiJson<NewSubscription>,
) -> Result<Response, ApiError> {
    let options = SubscribeOptions {
        secret: req.secret,
        headers: req.headers,
        scheme: req.scheme,
        owner: req.owner,
        max_in_flight: req.max_in_flight,
        strict_fifo: req.strict_fifo,
    };
    let (sub, created) = state
        .hooks
        .subscribe_or_find(&req.event, &req.target_url, options)
        .await?;
    Ok(if created {
        (
            StatusCode::CREATED,
            Json(SubscriptionInfo::with_secret(&sub)),
        )
            .into_response()
    } else {
        (StatusCode::OK, Json(SubscriptionInfo::of(&sub))).into_response()
    })
}

/// `DELETE /hooks/unsubscribe`: by `id` (404 if unknown) or by `target_url` (every
/// subscription of that URL; `removed` may be 0).
#[utoipa::path(
    delete,
    path = "/hooks/unsubscribe",
    tag = "hooks",
    request_body = rules::Unsubscribe,
    responses(
        (status = 200, description = "How many subscriptions were removed.", body = Removed),
        (status = 404, description = "No such subscription (`subscription_not_found`).")
    )
)]
async fn unsubscribe<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiJson(req): ApiJson<Unsubscribe>,
) -> Result<Json<Removed>, ApiError> {
    match (req.id, req.target_url) {
        (Some(id), None) => {
            if state.hooks.unsubscribe(&id).await? {
                Ok(Json(Removed { removed: 1 }))
            } else {
                Err(Error::SubscriptionNotFound(id).into())
            }
        }
        (None, Some(url)) => {
            let removed = state.hooks.deregister_url(&url).await?;
            Ok(Json(Removed {
                removed: removed as u64,
            }))
        }
        _ => Err(ApiError::bad_request(
            "give exactly one of `id` (one subscription) or `target_url` (every subscription \
             of that URL)",
        )),
    }
}

/// `GET /hooks/subscriptions?owner=`: every subscription (of that owner), by id.
#[utoipa::path(
    get,
    path = "/hooks/subscriptions",
    tag = "hooks",
    params(ListQuery),
    responses(
        (status = 200, description = "The subscriptions.", body = SubscriptionList),
        (status = 400, description = "A bad query parameter (`invalid_query`).")
    )
)]
async fn list_subscriptions<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Response {
    let subscriptions = state
        .hooks
        .subscriptions()
        .iter()
        .filter(|s| q.owner.is_none() || s.owner == q.owner)
        .map(SubscriptionInfo::of)
        .collect();
    Json(SubscriptionList { subscriptions }).into_response()
}

fn require_subscription<B: Backend>(
    state: &ApiState<B>,
    id: &str,
) -> Result<hookspool_webhooks::Subscription, ApiError> {
    state
        .hooks
        .subscription(id)
        .ok_or_else(|| Error::SubscriptionNotFound(id.to_owned()).into())
}

/// `GET /hooks/subscriptions/{id}`.
#[utoipa::path(
    get,
    path = "/hooks/subscriptions/{id}",
    tag = "hooks",
    params(("id" = String, Path, description = "The subscription id (`sub_…`).")),
    responses((status = 200, description = "The subscription.", body = SubscriptionInfo), (status = 404, description = "No such subscription (`subscription_not_found`)."))
)]
async fn get_subscription<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let sub = require_subscription(&state, &id)?;
    Ok(Json(SubscriptionInfo::of(&sub)).into_response())
}

/// `PATCH /hooks/subscriptions/{id}`: each field given replaces the current value.
#[utoipa::path(
    patch,
    path = "/hooks/subscriptions/{id}",
    tag = "hooks",
    params(("id" = String, Path, description = "The subscription id (`sub_…`).")),
    request_body = SubscriptionChange,
    responses((status = 200, description = "The subscription as it is now.", body = SubscriptionInfo), (status = 404, description = "No such subscription (`subscription_not_found`)."))
)]
async fn update_subscription<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<SubscriptionChange>,
) -> Result<Response, ApiError> {
    let sub = state.hooks.update(&id, req.into()).await?;
    Ok(Json(SubscriptionInfo::of(&sub)).into_response())
}

/// `DELETE /hooks/subscriptions/{id}`.
#[utoipa::path(
    delete,
    path = "/hooks/subscriptions/{id}",
    tag = "hooks",
    params(("id" = String, Path, description = "The subscription id (`sub_…`).")),
    responses((status = 200, description = "Removed.", body = Removed), (status = 404, description = "No such subscription (`subscription_not_found`)."))
)]
async fn delete_subscription<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Removed>, ApiError> {
    if state.hooks.unsubscribe(&id).await? {
        Ok(Json(Removed { removed: 1 }))
    } else {
        Err(Error::SubscriptionNotFound(id).into())
    }
}

/// `POST /hooks/subscriptions/{id}/rotate-secret`, with an empty body (a new random secret)
/// or `{"secret": "..."}`: the subscription with its new secret.
#[utoipa::path(
    post,
    path = "/hooks/subscriptions/{id}/rotate-secret",
    tag = "hooks",
    params(("id" = String, Path, description = "The subscription id (`sub_…`).")),
    request_body(content = Option<RotateSecret>, description = "Optional: an empty body rotates to a random secret.", content_type = "application/json"),
    responses((status = 200, description = "The subscription with its new secret.", body = SubscriptionInfo), (status = 404, description = "No such subscription (`subscription_not_found`)."))
)]
async fn rotate_secret<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(id): ApiPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|r| bytes_rejection(&r))?;
    let secret = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        // `null` is "no body" too: the document's schema for an optional body admits it.
        parse_json::<Option<JsonObject<RotateSecret>>>(&body)?.and_then(|JsonObject(r)| r.secret)
    };
    require_subscription(&state, &id)?;
    let sub = state.hooks.rotate_secret(&id, secret).await?;
    Ok(Json(SubscriptionInfo::with_secret(&sub)).into_response())
}

/// `POST /hooks/subscriptions/{id}/test`: sends the subscription one signed test event
/// (`hookspool.test`), whatever events it asked for; 202 with the delivery id, whose
/// outcome `GET /deliveries/{id}` shows.
#[utoipa::path(
    post,
    path = "/hooks/subscriptions/{id}/test",
    tag = "hooks",
    params(("id" = String, Path, description = "The subscription id (`sub_…`).")),
    responses(
        (status = 202, description = "The test delivery is stored and will be sent.", body = TestSent),
        (status = 400, description = "The subscription is disabled (`invalid_input`)."),
        (status = 404, description = "No such subscription (`subscription_not_found`).")
    )
)]
async fn test_subscription<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    require_subscription(&state, &id)?;
    let delivery_id = state.hooks.fire_test(&id).await?;
    Ok((StatusCode::ACCEPTED, Json(TestSent { delivery_id })).into_response())
}

// ---- publishing ---------------------------------------------------------------------------

/// `POST /events`: 202 with the delivery ids once every delivery is stored. With an
/// `idempotency_key`, a repeated request answers the first one's result and fires nothing.
#[utoipa::path(
    post,
    path = "/events",
    tag = "events",
    request_body = Publish,
    responses(
        (status = 202, description = "Every delivery is stored. With `idempotent-replayed: true`, \
                                      the answer of an earlier request with the same key.", body = Published,
         headers(("idempotent-replayed" = String, description = "`true` when the answer is an earlier request's"))),
        (status = 400, description = "A malformed idempotency key, or a header and a body field that name different keys."),
        (status = 422, description = "The idempotency key was used for a different request (`idempotency_key_reused`)."),
        (status = 503, description = "Nothing was stored: the storage is unavailable, or a write failed (a full disk) and the daemon must be restarted (`poisoned`). With `Retry-After`.")
    ),
    params(("Idempotency-Key" = Option<String>, Header,
            description = "The idempotency key (as in the IETF draft: a quoted string, or bare); \
                           the same as the body's `idempotency_key`."))
)]
async fn publish<B: Backend>(
    State(state): State<ApiState<B>>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<Publish>,
) -> Result<Response, ApiError> {
    // Delivered exactly as sent (key order and spacing kept): receivers may verify or
    // hash the body as their publisher wrote it.
    let payload = req.payload.get().as_bytes().to_vec();
    let key = idempotency_key(&headers, req.idempotency_key)?;
    let options = FireOptions {
        owner: req.owner,
        idempotency_key: key,
        ..FireOptions::default()
    };
    let fired = state.hooks.fire_with(&req.event, payload, options).await?;
    let mut resp = (
        StatusCode::ACCEPTED,
        Json(Published {
            delivery_ids: fired.delivery_ids,
            replayed: fired.replayed,
        }),
    )
        .into_response();
    if fired.replayed {
        resp.headers_mut()
            .insert(HEADER_IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(resp)
}

/// The request's idempotency key: the `Idempotency-Key` header (IETF
/// draft-ietf-httpapi-idempotency-key-header: a structured-field string, `"…"`; a bare value
/// as Stripe sends it is taken too) or the body's `idempotency_key`. Both may be given if they
/// agree.
fn idempotency_key(headers: &HeaderMap, body: Option<String>) -> Result<Option<String>, ApiError> {
    let header = match headers.get(HEADER_IDEMPOTENCY_KEY) {
        None => None,
        Some(value) => {
            let text = value.to_str().map_err(|_| {
                ApiError::bad_request("the Idempotency-Key header must be visible ASCII")
            })?;
            let key = match text.strip_prefix('"') {
                Some(rest) => rest
                    .strip_suffix('"')
                    .filter(|k| !k.contains(['"', '\\']))
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "the Idempotency-Key header opens a quoted string it does not \
                             close (or escapes in it, which keys cannot hold)",
                        )
                    })?,
                None => text,
            };
            Some(key.to_owned())
        }
    };
    let key = match (header, body) {
        (Some(h), Some(b)) if h != b => {
            return Err(ApiError::bad_request(format!(
                "the Idempotency-Key header ({h:?}) and the body's idempotency_key ({b:?}) \
                 name different keys: send one"
            )));
        }
        (Some(k), _) | (None, Some(k)) => Some(k),
        (None, None) => None,
    };
    if let Some(key) = &key {
        check_idempotency_key(key).map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    Ok(key)
}

// ---- delivery log -------------------------------------------------------------------------

/// `GET /deliveries`: the newest deliveries, newest first, optionally one subscription's.
/// Reads at most the newest 2,000 deliveries to find them, so its cost does not grow with
/// the log.
#[utoipa::path(
    get,
    path = "/deliveries",
    tag = "deliveries",
    params(DeliveriesQuery),
    responses((status = 200, description = "The deliveries found, newest first.", body = DeliveryList), (status = 400, description = "A limit of 0 or above 500 (`invalid_input`)."))
)]
async fn list_deliveries<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiQuery(query): ApiQuery<DeliveriesQuery>,
) -> Result<Response, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_DELIVERIES {
        return Err(Error::invalid(format!(
            "limit must be between 1 and {MAX_DELIVERIES}, got {limit}"
        ))
        .into());
    }
    let deliveries = state
        .hooks
        .recent_deliveries(query.subscription.as_deref(), limit)
        .await?;
    Ok(Json(DeliveryList { deliveries }).into_response())
}

/// `GET /deliveries/{id}`: state, event, subscription, next attempt and every attempt.
#[utoipa::path(
    get,
    path = "/deliveries/{id}",
    tag = "deliveries",
    params(("id" = DeliveryId, Path, description = "The delivery id (`msg_…`).")),
    responses((status = 200, description = "The delivery.", body = Delivery), (status = 404, description = "No such delivery (`delivery_not_found`)."))
)]
async fn get_delivery<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id = DeliveryId::parse(&id)?;
    let delivery = state
        .hooks
        .delivery(&id)
        .await?
        .ok_or_else(|| Error::DeliveryNotFound(id.to_string()))?;
    Ok(Json(delivery).into_response())
}

/// `POST /deliveries/{id}/replay`: a dead, gone or cancelled delivery goes back to pending
/// (409 for any other state); answers the delivery as it is now.
#[utoipa::path(
    post,
    path = "/deliveries/{id}/replay",
    tag = "deliveries",
    params(("id" = DeliveryId, Path, description = "The delivery id (`msg_…`).")),
    responses(
        (status = 200, description = "The delivery as it is now.", body = Delivery),
        (status = 404, description = "No such delivery (`delivery_not_found`)."),
        (status = 409, description = "The delivery is not dead, gone or cancelled (`phase_conflict`).")
    )
)]
async fn replay_delivery<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id = DeliveryId::parse(&id)?;
    let delivery = state.hooks.replay(&id).await?;
    Ok(Json(delivery).into_response())
}

// ---- inbound callbacks --------------------------------------------------------------------

/// `POST /callbacks/{channel}`: the channel is a queue. If it has a secret the request must
/// carry a valid Standard Webhooks signature (401 otherwise, nothing stored). The raw body is
/// pushed into the queue with its `webhook-id` and content type as metadata, and 202 answers
/// only after the push returned, so the request is durable under the backend's durability.
#[utoipa::path(
    post,
    path = "/callbacks/{channel}",
    tag = "callbacks",
    description = "The channel is a queue. If it has a secret, the request must carry a valid \
                   Standard Webhooks signature. The raw body is pushed into the queue with its \
                   `webhook-id` and content type as metadata; 202 answers once it is stored. \
                   Public: no bearer token, the signature authenticates.",
    params(
        ("channel" = rules::QueueId, Path, description = "The channel: a queue id."),
        ("webhook-id" = Option<String>, Header, description = "Standard Webhooks message id."),
        ("webhook-timestamp" = Option<String>, Header, description = "Standard Webhooks timestamp (seconds)."),
        ("webhook-signature" = Option<String>, Header, description = "Standard Webhooks signature(s), `v1,<base64>`.")
    ),
    request_body(content = serde_json::Value, description = "Any body, stored as it is.", content_type = "*/*"),
    responses(
        (status = 202, description = "Stored.", body = Accepted),
        (status = 401, description = "No valid signature (`invalid_signature`)."),
        (status = 404, description = "No such channel (`channel_not_found`).")
    )
)]
async fn callback<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(channel): ApiPath<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let channel = state.hooks.callback_channel(&channel).await?;
    let body = body.map_err(|r| bytes_rejection(&r))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let lookup = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let key = state
        .hooks
        .receive_signed(&channel, lookup, &body, now)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(Accepted { key })).into_response())
}

// ---- helpers ------------------------------------------------------------------------------

/// A raw body that could not be read: 413 over the limit, 400 otherwise.
fn bytes_rejection(r: &BytesRejection) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the request body is over the size limit",
        )
    } else {
        ApiError::new(r.status(), "invalid_body", r.body_text())
    }
}

/// Parses a JSON body read as bytes, with the same codes as [`ApiJson`].
fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let code = if e.is_data() {
            "invalid_json"
        } else {
            "malformed_json"
        };
        ApiError::new(
            StatusCode::BAD_REQUEST,
            code,
            format!("failed to parse the request body: {e}"),
        )
    })
}
