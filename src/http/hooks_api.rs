//! REST Hooks subscriptions, publishing with idempotency keys, the delivery log, and the public
//! inbound callback receiver (`POST /callbacks/{channel}`, authenticated by signatures).
//!
//! Secrets appear in exactly two responses: the one that creates a subscription and the one
//! that rotates its secret, because the caller needs the value once to verify deliveries.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, OnceCell};

use super::{ApiError, ApiJson, ApiPath, ApiQuery, ApiState};
use crate::backend::Backend;
use crate::error::Error;
use crate::hooks::{Delivery, DeliveryId, SubscribeOptions, Subscription, SubscriptionUpdate};
use crate::model::{NewItem, Page, QueueConfig, QueueId, Secret, Timestamp};
use crate::signing::{HEADER_WEBHOOK_ID, SigningKey, verify};
use crate::store::{DUMP_PAGE, Store};

/// The queue that records idempotency keys of `POST /events`: one item per key, metadata
/// `key`, payload the JSON [`IdemRecord`] (in the payload, not metadata, because a result with
/// hundreds of delivery ids would exceed the metadata value limit).
const IDEMPOTENCY_QUEUE: &str = "hookspool.idempotency";

/// Queues whose ids start with this are hookspool's own (subscriptions, deliveries,
/// idempotency): an unauthenticated callback must never write into them, as a foreign item in
/// the subscriptions queue would make the registry unreadable.
const INTERNAL_PREFIX: &str = "hookspool.";

/// Longest idempotency key, in bytes.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// Response header set when `POST /events` answers from an earlier request with the same key.
const HEADER_IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// The bearer-protected routes: REST Hooks, publishing, the delivery log.
pub(super) fn routes<B: Backend>() -> Router<ApiState<B>> {
    Router::new()
        .route("/hooks/subscribe", post(subscribe::<B>))
        .route("/hooks/unsubscribe", delete(unsubscribe::<B>))
        .route("/hooks/subscriptions", get(list_subscriptions::<B>))
        .route(
            "/hooks/subscriptions/{id}",
            get(get_subscription::<B>)
                .patch(update_subscription::<B>)
                .delete(delete_subscription::<B>),
        )
        .route(
            "/hooks/subscriptions/{id}/rotate-secret",
            post(rotate_secret::<B>),
        )
        .route("/events", post(publish::<B>))
        .route("/deliveries/{id}", get(get_delivery::<B>))
        .route("/deliveries/{id}/replay", post(replay_delivery::<B>))
        .method_not_allowed_fallback(method_not_allowed)
        // One per router: the idempotency map and the subscribe lock live as long as it.
        .layer(Extension(Arc::new(Shared::default())))
}

/// The public routes: inbound callbacks, authenticated by their signatures.
pub(super) fn public_routes<B: Backend>() -> Router<ApiState<B>> {
    Router::new()
        .route("/callbacks/{channel}", post(callback::<B>))
        .method_not_allowed_fallback(method_not_allowed)
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not accept that method",
    )
}

/// State of this router beyond [`ApiState`].
#[derive(Default)]
struct Shared {
    /// Idempotency records by key, loaded from [`IDEMPOTENCY_QUEUE`] at first use. Each key
    /// has its own cell, so two requests with the same key run one after the other (the
    /// second waits for the first and gets its result) while other keys proceed.
    idempotency: OnceCell<StdMutex<HashMap<String, Arc<OnceCell<IdemRecord>>>>>,
    /// Serializes HTTP subscribes, so "did this subscription exist before" (200 vs 201, and
    /// whether the secret may be shown) is exact.
    subscribe: Mutex<()>,
}

/// What a publish with an idempotency key produced, as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct IdemRecord {
    /// SHA-256 of event, owner and payload: a key reused for a different request is refused.
    fingerprint: String,
    delivery_ids: Vec<DeliveryId>,
}

impl Shared {
    async fn idempotency<B: Backend>(
        &self,
        store: &Store<B>,
    ) -> Result<&StdMutex<HashMap<String, Arc<OnceCell<IdemRecord>>>>, Error> {
        self.idempotency
            .get_or_try_init(|| async {
                let queue = idempotency_queue(store).await?;
                let mut map = HashMap::new();
                let mut after = None;
                loop {
                    let mut page = Page::first(DUMP_PAGE);
                    page.after = after;
                    let items = store.fetch_page(&queue, page).await?;
                    let Some(last) = items.last() else { break };
                    after = Some(last.key);
                    for item in &items {
                        let bad = || {
                            Error::corrupted(format!(
                                "idempotency record {} (queue {IDEMPOTENCY_QUEUE}) cannot be read",
                                item.key
                            ))
                        };
                        let key = item.metadata.get("key").ok_or_else(bad)?;
                        let record: IdemRecord =
                            serde_json::from_slice(&item.payload).map_err(|_| bad())?;
                        map.insert(key.clone(), Arc::new(OnceCell::from(record)));
                    }
                }
                Ok(StdMutex::new(map))
            })
            .await
    }
}

/// The idempotency queue, created on first use.
async fn idempotency_queue<B: Backend>(store: &Store<B>) -> Result<QueueId, Error> {
    let id = QueueId::new(IDEMPOTENCY_QUEUE)?;
    if store.queue(&id).await?.is_none() {
        match store.create_queue(QueueConfig::new(id.clone())).await {
            // Another router over the same store created it meanwhile: fine.
            Ok(_) | Err(Error::QueueExists(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(id)
}

// ---- request and response types ----------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeRequest {
    event: String,
    #[serde(alias = "url")]
    target_url: String,
    secret: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    scheme: crate::signing::SignatureScheme,
    owner: Option<String>,
    max_in_flight: Option<u32>,
    #[serde(default)]
    strict_fifo: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnsubscribeRequest {
    id: Option<String>,
    #[serde(alias = "url")]
    target_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    owner: Option<String>,
}

// `max_in_flight` has three cases (unchanged, removed, set), as in `SubscriptionUpdate`.
#[allow(clippy::option_option)]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateRequest {
    #[serde(alias = "target_url")]
    url: Option<String>,
    events: Option<Vec<String>>,
    headers: Option<BTreeMap<String, String>>,
    scheme: Option<crate::signing::SignatureScheme>,
    enabled: Option<bool>,
    /// Absent: unchanged; `null`: no per-subscription limit; a number: that limit.
    #[serde(default, deserialize_with = "present")]
    max_in_flight: Option<Option<u32>>,
    strict_fifo: Option<bool>,
}

/// Deserializes a field that is present (even as `null`) into `Some`, so that absent
/// (`#[serde(default)]`, `None`) and `null` (`Some(None)`) differ.
#[allow(clippy::option_option)]
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateRequest {
    secret: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    event: String,
    payload: serde_json::Value,
    owner: Option<String>,
    idempotency_key: Option<String>,
}

/// A subscription as answered: never its secret, except in the one response that creates
/// or rotates it.
#[derive(Serialize)]
struct SubscriptionView<'a> {
    #[serde(flatten)]
    sub: &'a Subscription,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<&'a str>,
    /// Until when the rotated-out secret still signs requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_secret_expires_at: Option<Timestamp>,
}

impl<'a> SubscriptionView<'a> {
    fn public(sub: &'a Subscription) -> Self {
        SubscriptionView {
            sub,
            secret: None,
            previous_secret_expires_at: sub.previous_secret.as_ref().map(|(_, until)| *until),
        }
    }

    fn with_secret(sub: &'a Subscription) -> Self {
        SubscriptionView {
            secret: Some(sub.secret.expose()),
            ..Self::public(sub)
        }
    }
}

#[derive(Serialize)]
struct SubscriptionList<'a> {
    subscriptions: Vec<SubscriptionView<'a>>,
}

#[derive(Serialize)]
struct Removed {
    removed: usize,
}

#[derive(Serialize)]
struct Published<'a> {
    delivery_ids: &'a [DeliveryId],
}

/// A delivery as answered: the stored view plus its payload when that is JSON (payloads
/// published over HTTP always are).
#[derive(Serialize)]
struct DeliveryView<'a> {
    #[serde(flatten)]
    delivery: &'a Delivery,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<serde_json::Value>,
}

impl<'a> DeliveryView<'a> {
    fn new(delivery: &'a Delivery) -> Self {
        DeliveryView {
            delivery,
            payload: serde_json::from_slice(&delivery.payload).ok(),
        }
    }
}

#[derive(Serialize)]
struct Accepted {
    key: crate::model::Key,
}

// ---- REST Hooks ---------------------------------------------------------------------------

/// `POST /hooks/subscribe`: 201 with the new subscription and its secret; 200 with the
/// existing one (without its secret) when the same owner already subscribed the same URL to
/// the same event.
async fn subscribe<B: Backend>(
    State(state): State<ApiState<B>>,
    Extension(shared): Extension<Arc<Shared>>,
    ApiJson(req): ApiJson<SubscribeRequest>,
) -> Result<Response, ApiError> {
    let options = SubscribeOptions {
        secret: req.secret.map(Secret::new),
        headers: req.headers,
        scheme: req.scheme,
        owner: req.owner,
        max_in_flight: req.max_in_flight,
        strict_fifo: req.strict_fifo,
    };
    let _guard = shared.subscribe.lock().await;
    let known: HashSet<String> = state
        .hooks
        .subscriptions()
        .into_iter()
        .map(|s| s.id)
        .collect();
    let sub = state
        .hooks
        .subscribe(&req.event, &req.target_url, options)
        .await?;
    Ok(if known.contains(&sub.id) {
        (StatusCode::OK, Json(SubscriptionView::public(&sub))).into_response()
    } else {
        (
            StatusCode::CREATED,
            Json(SubscriptionView::with_secret(&sub)),
        )
            .into_response()
    })
}

/// `DELETE /hooks/unsubscribe`: by `id` (404 if unknown) or by `target_url` (every
/// subscription of that URL; `removed` may be 0).
async fn unsubscribe<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiJson(req): ApiJson<UnsubscribeRequest>,
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
            Ok(Json(Removed { removed }))
        }
        _ => Err(ApiError::bad_request(
            "give exactly one of `id` (one subscription) or `target_url` (every subscription \
             of that URL)",
        )),
    }
}

/// `GET /hooks/subscriptions?owner=`: every subscription (of that owner), by id.
async fn list_subscriptions<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Response {
    let subs: Vec<Subscription> = state
        .hooks
        .subscriptions()
        .into_iter()
        .filter(|s| q.owner.is_none() || s.owner == q.owner)
        .collect();
    Json(SubscriptionList {
        subscriptions: subs.iter().map(SubscriptionView::public).collect(),
    })
    .into_response()
}

fn require_subscription<B: Backend>(
    state: &ApiState<B>,
    id: &str,
) -> Result<Subscription, ApiError> {
    state
        .hooks
        .subscription(id)
        .ok_or_else(|| Error::SubscriptionNotFound(id.to_owned()).into())
}

/// `GET /hooks/subscriptions/{id}`.
async fn get_subscription<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let sub = require_subscription(&state, &id)?;
    Ok(Json(SubscriptionView::public(&sub)).into_response())
}

/// `PATCH /hooks/subscriptions/{id}`: each field given replaces the current value.
async fn update_subscription<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateRequest>,
) -> Result<Response, ApiError> {
    let update = SubscriptionUpdate {
        url: req.url,
        events: req.events,
        headers: req.headers,
        scheme: req.scheme,
        enabled: req.enabled,
        max_in_flight: req.max_in_flight,
        strict_fifo: req.strict_fifo,
    };
    let sub = state.hooks.update(&id, update).await?;
    Ok(Json(SubscriptionView::public(&sub)).into_response())
}

/// `DELETE /hooks/subscriptions/{id}`.
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
async fn rotate_secret<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(id): ApiPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|r| bytes_rejection(&r))?;
    let secret = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        parse_json::<RotateRequest>(&body)?.secret.map(Secret::new)
    };
    require_subscription(&state, &id)?;
    let sub = state.hooks.rotate_secret(&id, secret).await?;
    Ok(Json(SubscriptionView::with_secret(&sub)).into_response())
}

// ---- publishing ---------------------------------------------------------------------------

/// `POST /events`: 202 with the delivery ids once every delivery is stored. With an
/// `idempotency_key`, a repeated request answers the first one's result and fires nothing.
async fn publish<B: Backend>(
    State(state): State<ApiState<B>>,
    Extension(shared): Extension<Arc<Shared>>,
    ApiJson(req): ApiJson<PublishRequest>,
) -> Result<Response, ApiError> {
    let payload = serde_json::to_vec(&req.payload).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("could not encode the payload: {e}"),
        )
    })?;
    let (hooks, req, payload) = (&state.hooks, &req, &payload);
    let fire = move || async move {
        match &req.owner {
            Some(owner) => hooks.notify(owner, &req.event, payload.clone()).await,
            None => hooks.fire(&req.event, payload.clone()).await,
        }
    };
    let Some(key) = &req.idempotency_key else {
        let ids = fire().await?;
        return Ok(published(&ids, false));
    };
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::bad_request(format!(
            "idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
        )));
    }
    let fingerprint = fingerprint(&req.event, req.owner.as_deref(), payload);
    let map = shared.idempotency(&state.store).await?;
    let cell = {
        let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(map.entry(key.clone()).or_default())
    };
    let mut fresh = false;
    let (fresh_ref, store, fingerprint_ref) = (&mut fresh, &state.store, &fingerprint);
    // Concurrent requests with this key wait here for the first; if it fails (bad input,
    // storage error) the cell stays empty and the next one tries.
    let record = cell
        .get_or_try_init(move || async move {
            *fresh_ref = true;
            let delivery_ids = fire().await?;
            let record = IdemRecord {
                fingerprint: fingerprint_ref.clone(),
                delivery_ids,
            };
            // Crash window: the deliveries are stored but the key is not yet; a retry after
            // a crash here fires again (at-least-once, as without a key).
            let bytes = serde_json::to_vec(&record)
                .map_err(|e| Error::invalid(format!("cannot encode idempotency record: {e}")))?;
            let queue = idempotency_queue(store).await?;
            store
                .push(
                    &queue,
                    NewItem::new(bytes).with_metadata("key", key.as_str()),
                )
                .await?;
            Ok::<_, Error>(record)
        })
        .await?;
    if record.fingerprint != fingerprint {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this idempotency_key was used for a different event, owner or payload",
        ));
    }
    Ok(published(&record.delivery_ids, !fresh))
}

fn published(ids: &[DeliveryId], replayed: bool) -> Response {
    let mut resp = (StatusCode::ACCEPTED, Json(Published { delivery_ids: ids })).into_response();
    if replayed {
        resp.headers_mut()
            .insert(HEADER_IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    resp
}

/// Hex SHA-256 over the request's parts, each length-prefixed so no two requests collide
/// by shifting bytes between fields.
fn fingerprint(event: &str, owner: Option<&str>, payload: &[u8]) -> String {
    let mut h = Sha256::new();
    for part in [event.as_bytes(), owner.unwrap_or("\0").as_bytes(), payload] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.finalize()
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            use std::fmt::Write;
            let _ = write!(s, "{b:02x}");
            s
        })
}

// ---- delivery log -------------------------------------------------------------------------

async fn require_delivery<B: Backend>(
    state: &ApiState<B>,
    id: &DeliveryId,
) -> Result<Delivery, ApiError> {
    state.hooks.delivery(id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "delivery_not_found",
            format!("no delivery with id {id}"),
        )
    })
}

/// `GET /deliveries/{id}`: state, event, subscription, next attempt and every attempt.
async fn get_delivery<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id = DeliveryId::parse(&id)?;
    let delivery = require_delivery(&state, &id).await?;
    Ok(Json(DeliveryView::new(&delivery)).into_response())
}

/// `POST /deliveries/{id}/replay`: a dead, gone or cancelled delivery goes back to pending
/// (409 for any other state); answers the delivery as it is now.
async fn replay_delivery<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id = DeliveryId::parse(&id)?;
    require_delivery(&state, &id).await?;
    state.hooks.replay(&id).await?;
    let delivery = require_delivery(&state, &id).await?;
    Ok(Json(DeliveryView::new(&delivery)).into_response())
}

// ---- inbound callbacks --------------------------------------------------------------------

/// `POST /callbacks/{channel}`: the channel is a queue. If it has a secret the request must
/// carry a valid Standard Webhooks signature (401 otherwise, nothing stored). The raw body is
/// pushed into the queue with its `webhook-id` and content type as metadata, and 202 answers
/// only after the push returned, so the request is durable under the backend's durability.
async fn callback<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(channel): ApiPath<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let no_channel = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "channel_not_found",
            format!("no callback channel {channel:?}"),
        )
    };
    if channel.starts_with(INTERNAL_PREFIX) {
        return Err(no_channel());
    }
    let queue_id = QueueId::new(channel.as_str()).map_err(|_| no_channel())?;
    let queue = state.store.queue(&queue_id).await?.ok_or_else(no_channel)?;
    let body = body.map_err(|r| bytes_rejection(&r))?;
    if let Some(secret) = &queue.secret {
        let key = SigningKey::from_whsec(secret.expose()).map_err(|_| {
            tracing::error!(channel = %channel, "the channel's secret is not a whsec_ secret");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "channel_misconfigured",
                "the channel's secret is not a Standard Webhooks (whsec_) secret",
            )
        })?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let lookup = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        verify(&[&key], lookup, &body, now).map_err(|e| {
            ApiError::new(StatusCode::UNAUTHORIZED, "invalid_signature", e.to_string())
        })?;
    }
    let mut item = NewItem::new(body.to_vec());
    for (name, meta) in [
        (HEADER_WEBHOOK_ID, "webhook_id"),
        (header::CONTENT_TYPE.as_str(), "content_type"),
    ] {
        if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
            item = item.with_metadata(meta, v);
        }
    }
    let key = state.store.push(&queue_id, item).await?;
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
