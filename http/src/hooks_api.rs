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
use axum::{Extension, Json};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, OnceCell};
use utoipa::{IntoParams, ToSchema};

use super::openapi::{ApiRoutes, DeliveryDoc, SignatureSchemeDoc, SubscriptionDoc};
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
pub(super) fn routes<B: Backend>() -> ApiRoutes<ApiState<B>> {
    ApiRoutes::new()
        .route::<__path_subscribe, _, _>(subscribe::<B>)
        .route::<__path_unsubscribe, _, _>(unsubscribe::<B>)
        .route::<__path_list_subscriptions, _, _>(list_subscriptions::<B>)
        .route::<__path_get_subscription, _, _>(get_subscription::<B>)
        .route::<__path_update_subscription, _, _>(update_subscription::<B>)
        .route::<__path_delete_subscription, _, _>(delete_subscription::<B>)
        .route::<__path_rotate_secret, _, _>(rotate_secret::<B>)
        .route::<__path_publish, _, _>(publish::<B>)
        .route::<__path_get_delivery, _, _>(get_delivery::<B>)
        .route::<__path_replay_delivery, _, _>(replay_delivery::<B>)
        // One per router: the idempotency map and the subscribe lock live as long as it.
        .map_router(|r| r.layer(Extension(Arc::new(Shared::default()))))
}

/// The public routes: inbound callbacks, authenticated by their signatures.
pub(super) fn public_routes<B: Backend>() -> ApiRoutes<ApiState<B>> {
    ApiRoutes::new().route::<__path_callback, _, _>(callback::<B>)
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

/// `POST /hooks/subscribe`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SubscribeRequest {
    /// The event pattern: `*`, `prefix.*` or an exact event name.
    event: String,
    /// Where deliveries are POSTed (`url` is accepted too).
    #[serde(alias = "url")]
    target_url: String,
    /// The signing secret (`whsec_…` for Standard Webhooks); generated when absent.
    secret: Option<String>,
    /// Extra request headers.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    #[schema(value_type = SignatureSchemeDoc)]
    scheme: crate::signing::SignatureScheme,
    /// Whose subscription it is (`POST /events` with `owner` reaches only theirs).
    owner: Option<String>,
    /// Most requests in flight to it at once.
    max_in_flight: Option<u32>,
    /// Deliver strictly in order.
    #[serde(default)]
    strict_fifo: bool,
}

/// `DELETE /hooks/unsubscribe`: exactly one of `id` and `target_url`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UnsubscribeRequest {
    /// One subscription.
    id: Option<String>,
    /// Every subscription of this URL (`url` is accepted too).
    #[serde(alias = "url")]
    target_url: Option<String>,
}

/// `GET /hooks/subscriptions`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only this owner's subscriptions.
    owner: Option<String>,
}

/// `PATCH /hooks/subscriptions/{id}`: each field given replaces the current value.
// `max_in_flight` has three cases (unchanged, removed, set), as in `SubscriptionUpdate`.
#[allow(clippy::option_option)]
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateRequest {
    /// Where deliveries are POSTed (`target_url` is accepted too).
    #[serde(alias = "target_url")]
    url: Option<String>,
    /// Event patterns.
    events: Option<Vec<String>>,
    /// Extra request headers.
    headers: Option<BTreeMap<String, String>>,
    #[schema(value_type = Option<SignatureSchemeDoc>)]
    scheme: Option<crate::signing::SignatureScheme>,
    /// Disabled subscriptions receive nothing new.
    enabled: Option<bool>,
    /// Absent: unchanged; `null`: no per-subscription limit; a number: that limit.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>)]
    max_in_flight: Option<Option<u32>>,
    /// Deliver strictly in order.
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

/// `POST /hooks/subscriptions/{id}/rotate-secret` (or an empty body).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RotateRequest {
    /// The new secret; a random one when absent.
    secret: Option<String>,
}

/// `POST /events`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    /// The event name.
    event: String,
    /// Any JSON value: the body of every delivery, exactly as sent here.
    #[schema(value_type = serde_json::Value)]
    payload: Box<serde_json::value::RawValue>,
    /// Deliver only to this owner's subscriptions.
    owner: Option<String>,
    /// 1 to 255 visible ASCII characters: a repeated request answers the first one's
    /// result and delivers nothing more.
    idempotency_key: Option<String>,
}

/// A subscription as answered: never its secret, except in the one response that creates
/// or rotates it.
#[derive(Serialize, ToSchema)]
struct SubscriptionView<'a> {
    #[serde(flatten)]
    #[schema(value_type = SubscriptionDoc)]
    sub: &'a Subscription,
    /// The signing secret: only when the subscription is created or its secret rotated.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<&'a str>,
    /// Until when the rotated-out secret still signs requests (ms since the Unix epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>)]
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

/// `GET /hooks/subscriptions`.
#[derive(Serialize, ToSchema)]
struct SubscriptionList<'a> {
    /// The subscriptions, by id.
    subscriptions: Vec<SubscriptionView<'a>>,
}

/// How many subscriptions were removed.
#[derive(Serialize, ToSchema)]
struct Removed {
    /// Subscriptions removed.
    removed: usize,
}

/// `POST /events`.
#[derive(Serialize, ToSchema)]
struct Published<'a> {
    /// One delivery per subscription reached (`msg_…`).
    #[schema(value_type = Vec<String>)]
    delivery_ids: &'a [DeliveryId],
}

/// A delivery as answered: the stored view plus its payload when that is JSON (payloads
/// published over HTTP always are).
#[derive(Serialize, ToSchema)]
struct DeliveryView<'a> {
    #[serde(flatten)]
    #[schema(value_type = DeliveryDoc)]
    delivery: &'a Delivery,
    /// The payload, when it is JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    payload: Option<super::queues::PayloadView>,
}

impl<'a> DeliveryView<'a> {
    fn new(delivery: &'a Delivery) -> Self {
        DeliveryView {
            delivery,
            payload: std::str::from_utf8(&delivery.payload)
                .ok()
                .map(super::queues::PayloadView::of)
                .filter(|p| matches!(p, super::queues::PayloadView::Json(_))),
        }
    }
}

/// `POST /callbacks/{channel}`.
#[derive(Serialize, ToSchema)]
struct Accepted {
    /// The stored item's key in the channel's queue.
    #[schema(value_type = u64)]
    key: crate::model::Key,
}

// ---- REST Hooks ---------------------------------------------------------------------------

/// `POST /hooks/subscribe`: 201 with the new subscription and its secret; 200 with the
/// existing one (without its secret) when the same owner already subscribed the same URL to
/// the same event.
#[utoipa::path(
    post,
    path = "/hooks/subscribe",
    tag = "hooks",
    request_body = SubscribeRequest,
    responses(
        (status = 201, description = "Subscribed: the subscription with its secret.", body = SubscriptionView),
        (status = 200, description = "Already subscribed: the subscription, without its secret.", body = SubscriptionView)
    )
)]
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
#[utoipa::path(
    delete,
    path = "/hooks/unsubscribe",
    tag = "hooks",
    request_body = UnsubscribeRequest,
    responses(
        (status = 200, description = "How many subscriptions were removed.", body = Removed),
        (status = 404, description = "No such subscription (`subscription_not_found`).")
    )
)]
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
#[utoipa::path(
    get,
    path = "/hooks/subscriptions/{id}",
    tag = "hooks",
    params(("id" = String, Path, description = "The subscription id (`sub_…`).")),
    responses((status = 200, description = "The subscription.", body = SubscriptionView), (status = 404, description = "No such subscription (`subscription_not_found`)."))
)]
async fn get_subscription<B: Backend>(
    State(state): State<ApiState<B>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let sub = require_subscription(&state, &id)?;
    Ok(Json(SubscriptionView::public(&sub)).into_response())
}

/// `PATCH /hooks/subscriptions/{id}`: each field given replaces the current value.
#[utoipa::path(
    patch,
    path = "/hooks/subscriptions/{id}",
    tag = "hooks",
    params(("id" = String, Path, description = "The subscription id (`sub_…`).")),
    request_body = UpdateRequest,
    responses((status = 200, description = "The subscription as it is now.", body = SubscriptionView), (status = 404, description = "No such subscription (`subscription_not_found`)."))
)]
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
    request_body(content = Option<RotateRequest>, description = "Optional: an empty body rotates to a random secret.", content_type = "application/json"),
    responses((status = 200, description = "The subscription with its new secret.", body = SubscriptionView), (status = 404, description = "No such subscription (`subscription_not_found`)."))
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
        parse_json::<RotateRequest>(&body)?.secret.map(Secret::new)
    };
    require_subscription(&state, &id)?;
    let sub = state.hooks.rotate_secret(&id, secret).await?;
    Ok(Json(SubscriptionView::with_secret(&sub)).into_response())
}

// ---- publishing ---------------------------------------------------------------------------

/// `POST /events`: 202 with the delivery ids once every delivery is stored. With an
/// `idempotency_key`, a repeated request answers the first one's result and fires nothing.
#[utoipa::path(
    post,
    path = "/events",
    tag = "events",
    request_body = PublishRequest,
    responses(
        (status = 202, description = "Every delivery is stored. With `idempotent-replayed: true`, \
                                      the answer of an earlier request with the same key.", body = Published,
         headers(("idempotent-replayed" = String, description = "`true` when the answer is an earlier request's"))),
        (status = 422, description = "The idempotency key was used for a different request (`idempotency_key_reused`).")
    )
)]
async fn publish<B: Backend>(
    State(state): State<ApiState<B>>,
    Extension(shared): Extension<Arc<Shared>>,
    ApiJson(req): ApiJson<PublishRequest>,
) -> Result<Response, ApiError> {
    // Delivered exactly as sent (key order and spacing kept): receivers may verify or
    // hash the body as their publisher wrote it.
    let payload = req.payload.get().as_bytes().to_vec();
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
    // Compared as JSON values, so a retry that spaces or orders the payload differently is
    // still the same request.
    let canonical = serde_json::from_str::<serde_json::Value>(req.payload.get())
        .and_then(|v| serde_json::to_vec(&v))
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("could not encode the payload: {e}"),
            )
        })?;
    let fingerprint = fingerprint(&req.event, req.owner.as_deref(), &canonical);
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
#[utoipa::path(
    get,
    path = "/deliveries/{id}",
    tag = "deliveries",
    params(("id" = String, Path, description = "The delivery id (`msg_…`).")),
    responses((status = 200, description = "The delivery.", body = DeliveryView), (status = 404, description = "No such delivery (`delivery_not_found`)."))
)]
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
#[utoipa::path(
    post,
    path = "/deliveries/{id}/replay",
    tag = "deliveries",
    params(("id" = String, Path, description = "The delivery id (`msg_…`).")),
    responses(
        (status = 200, description = "The delivery as it is now.", body = DeliveryView),
        (status = 404, description = "No such delivery (`delivery_not_found`)."),
        (status = 409, description = "The delivery is not dead, gone or cancelled (`phase_conflict`).")
    )
)]
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
#[utoipa::path(
    post,
    path = "/callbacks/{channel}",
    tag = "callbacks",
    description = "The channel is a queue. If it has a secret, the request must carry a valid \
                   Standard Webhooks signature. The raw body is pushed into the queue with its \
                   `webhook-id` and content type as metadata; 202 answers once it is stored. \
                   Public: no bearer token, the signature authenticates.",
    params(
        ("channel" = String, Path, description = "The channel: a queue id."),
        ("webhook-id" = Option<String>, Header, description = "Standard Webhooks message id."),
        ("webhook-timestamp" = Option<String>, Header, description = "Standard Webhooks timestamp (seconds)."),
        ("webhook-signature" = Option<String>, Header, description = "Standard Webhooks signature(s), `v1,<base64>`.")
    ),
    request_body(content = String, description = "Any body, stored as it is.", content_type = "*/*"),
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
        (HEADER_WEBHOOK_ID, crate::hooks::META_WEBHOOK_ID),
        (
            header::CONTENT_TYPE.as_str(),
            crate::hooks::META_CONTENT_TYPE,
        ),
    ] {
        if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
            item = item.with_metadata(meta, v);
        }
    }
    let key = state.hooks.receive(&queue_id, item).await?;
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
