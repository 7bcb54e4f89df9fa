//! Webhook delivery on top of the queue engine: subscriptions, `fire` / `notify` / `emit`,
//! and the delivery loop ([`Deliverer`]).
//!
//! Everything is stored in the store's backend, in two queues:
//! [`SUBSCRIPTIONS_QUEUE`] (one item per subscription) and [`DELIVERIES_QUEUE`] (one item per
//! delivery: the event payload, with the event name, target, attempt count and attempt log in
//! its metadata). Firing an event writes one delivery per matching subscription in one
//! atomic `push`; the delivery loop claims due deliveries with leases, POSTs them, and records
//! each attempt with the next state in one atomic `update`.

mod deliver;
mod inbound;
#[cfg(feature = "client")]
mod remote;
mod stats;
mod subscription;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, Notify, broadcast};

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::{
    Action, Expect, Item, Key, Move, NewItem, Page, Phase, QueueConfig, QueueId, Secret, Timestamp,
    Transition,
};
use crate::net::TargetUrl;
use crate::store::{DUMP_PAGE, Store};

pub use deliver::{Deliverer, DeliveryConfig, DeliveryOutcome, OutcomeKind};
pub use inbound::{
    CallbackConfig, CallbackOutcome, CallbackResult, Callbacks, Handler, HandlerError, HandlerFn,
    Inbound, META_CONTENT_TYPE, META_WEBHOOK_ID, handler_fn,
};
pub use stats::{DURATION_BUCKETS, DeliveryStatsSnapshot};
pub use subscription::{
    DEFAULT_ROTATION_GRACE, EventPattern, MAX_EVENT_LEN, MAX_EXTRA_HEADERS, SubscribeOptions,
    Subscription, SubscriptionUpdate, check_event_name,
};

use subscription::{
    check_headers, check_id, from_item, generate_secret, parse_key, phase_of, to_metadata,
};

/// The queue that holds subscriptions (one item each).
pub const SUBSCRIPTIONS_QUEUE: &str = "hookspool.subscriptions";
/// The queue that holds deliveries (one item per event and target).
pub const DELIVERIES_QUEUE: &str = "hookspool.deliveries";

/// Final phase of a delivery whose target answered `410 Gone` (its subscription is removed).
pub const GONE: &str = "gone";
/// Final phase of a delivery whose subscription was removed before it was sent.
pub const CANCELLED: &str = "cancelled";

// Metadata keys of a delivery item.
const M_EVENT: &str = "event";
const M_SUBSCRIPTION: &str = "subscription";
const M_URL: &str = "url";
const M_REQUEST_ID: &str = "request_id";
const M_ATTEMPTS: &str = "attempts";
const M_REPLAY_BASE: &str = "replay_base";
const M_ATTEMPT_PREFIX: &str = "attempt.";
const M_ID_NONCE: &str = "id_nonce";

/// A delivery's id: the `webhook-id` of every request for it, stable across retries and
/// restarts. It encodes the delivery's key in [`DELIVERIES_QUEUE`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeliveryId(String);

impl DeliveryId {
    fn new(nonce: &str, key: Key) -> Self {
        DeliveryId(format!("msg_{nonce}{key:016x}"))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses an id given back by a caller.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if it is not a hookspool delivery id.
    pub fn parse(s: &str) -> Result<Self> {
        let ok = s.len() == 4 + 8 + 16
            && s.starts_with("msg_")
            && s[4..].bytes().all(|b| b.is_ascii_hexdigit());
        if ok {
            Ok(DeliveryId(s.to_owned()))
        } else {
            Err(Error::invalid(format!(
                "{s:?} is not a delivery id (msg_ and 24 hex digits)"
            )))
        }
    }

    fn key(&self, nonce: &str) -> Option<Key> {
        let rest = self.0.strip_prefix("msg_")?;
        let (n, key) = rest.split_at_checked(8)?;
        if n != nonce {
            return None;
        }
        Key::from_str_radix(key, 16).ok()
    }
}

impl std::fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One recorded attempt of a delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1 for the first attempt.
    pub number: u32,
    /// When the request was sent.
    pub at: Timestamp,
    /// The response status, if a response came.
    pub status: Option<u16>,
    /// The error class and message, if the attempt failed.
    pub error: Option<String>,
    /// How long the request took, in milliseconds.
    pub duration_ms: u64,
    /// The start of the response body (at most 1 KiB, lossy UTF-8).
    pub response: String,
}

/// A delivery as stored: what was sent where, its state and its attempts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// Its id.
    pub id: DeliveryId,
    /// The event name.
    pub event: String,
    /// The subscription it goes to (`None` for deliveries fired to a URL directly).
    pub subscription: Option<String>,
    /// The URL, for deliveries fired to a URL directly.
    pub url: Option<String>,
    /// The request id given to `emit`, if any.
    pub request_id: Option<String>,
    /// `pending` (waiting or scheduled for a retry), `in_flight`, `done`, `dead`, `gone` or
    /// `cancelled`.
    pub state: Phase,
    /// When the next attempt is due, for a pending delivery.
    pub next_attempt: Option<Timestamp>,
    /// When it was fired.
    pub created_at: Timestamp,
    /// The last error.
    pub last_error: Option<String>,
    /// Every recorded attempt, oldest first.
    pub attempts: Vec<Attempt>,
    /// The payload.
    #[serde(skip)]
    pub payload: Vec<u8>,
}

/// Gives the target URLs of an event at fire time, for `fire_resolved` (e.g. from the
/// application's own database).
pub trait UrlResolver: Send + Sync {
    /// The URLs that should receive `event`.
    fn resolve(&self, event: &str) -> impl Future<Output = Result<Vec<String>>> + Send;
}

/// Settings of [`Hooks`].
#[derive(Clone, Debug)]
pub struct HooksOptions {
    /// Secret that signs deliveries fired to URLs directly (`fire_to`, `fire_resolved`);
    /// `None`: those are sent unsigned (still with `webhook-id` and `webhook-timestamp`).
    pub direct_secret: Option<Secret>,
    /// How long a rotated-out secret keeps signing requests.
    pub rotation_grace: Duration,
}

impl Default for HooksOptions {
    fn default() -> Self {
        HooksOptions {
            direct_secret: None,
            rotation_grace: DEFAULT_ROTATION_GRACE,
        }
    }
}

/// The webhook side of hookspool: subscriptions, firing events, inspecting and replaying
/// deliveries. Cheap to clone. Run the delivery loop with [`Hooks::deliverer`].
pub struct Hooks<B: Backend> {
    inner: Arc<Inner<B>>,
}

impl<B: Backend> Clone for Hooks<B> {
    fn clone(&self) -> Self {
        Hooks {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<B: Backend> std::fmt::Debug for Hooks<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("store", &self.inner.store)
            .finish_non_exhaustive()
    }
}

struct Inner<B: Backend> {
    store: Store<B>,
    options: HooksOptions,
    subs_queue: QueueId,
    deliveries_queue: QueueId,
    /// Makes delivery ids unique across re-creations of the deliveries queue.
    nonce: String,
    /// Subscriptions by id, with their item keys. Never held across an `.await`.
    subs: RwLock<BTreeMap<String, (Key, Subscription)>>,
    /// Serializes registry changes (check-then-write), so `subscribe` is idempotent.
    registry_write: Mutex<()>,
    /// Wakes the delivery loop when something is fired or replayed.
    wake: Notify,
    /// Wakes the callback loop when a callback is received.
    inbound_wake: Notify,
    callback_results: broadcast::Sender<inbound::CallbackResult>,
    /// Handler outcomes since the process started: handled, retrying, dead.
    callback_counts: [std::sync::atomic::AtomicU64; 3],
    results: broadcast::Sender<DeliveryOutcome>,
    stats: stats::DeliveryStats,
}

impl<B: Backend> Hooks<B> {
    /// Opens the webhook side of a store: creates its two queues if needed and loads the
    /// subscriptions.
    ///
    /// # Errors
    /// Backend errors; [`Error::Corrupted`] for a subscription record that cannot be read.
    pub async fn open(store: Store<B>) -> Result<Self> {
        Self::open_with(store, HooksOptions::default()).await
    }

    /// As [`Hooks::open`], with options.
    pub async fn open_with(store: Store<B>, options: HooksOptions) -> Result<Self> {
        if let Some(secret) = &options.direct_secret {
            parse_key(
                crate::signing::SignatureScheme::StandardWebhooks,
                secret.expose(),
            )?;
        }
        let subs_queue = QueueId::new(SUBSCRIPTIONS_QUEUE)?;
        let deliveries_queue = QueueId::new(DELIVERIES_QUEUE)?;
        ensure_queue(&store, &subs_queue, None).await?;
        let nonce = ensure_queue(&store, &deliveries_queue, Some(random_hex(4)?)).await?;
        let mut subs = BTreeMap::new();
        let mut after = None;
        loop {
            let mut page = Page::first(DUMP_PAGE);
            page.after = after;
            let items = store.fetch_page(&subs_queue, page).await?;
            let Some(last) = items.last() else { break };
            after = Some(last.key);
            for item in &items {
                let sub = from_item(item)?;
                subs.insert(sub.id.clone(), (item.key, sub));
            }
        }
        let (results, _) = broadcast::channel(1024);
        Ok(Hooks {
            inner: Arc::new(Inner {
                store,
                options,
                subs_queue,
                deliveries_queue,
                nonce: nonce.unwrap_or_default(),
                subs: RwLock::new(subs),
                registry_write: Mutex::new(()),
                wake: Notify::new(),
                inbound_wake: Notify::new(),
                callback_results: broadcast::channel(1024).0,
                callback_counts: Default::default(),
                results,
                stats: stats::DeliveryStats::default(),
            }),
        })
    }

    /// The store underneath.
    pub fn store(&self) -> &Store<B> {
        &self.inner.store
    }

    /// A stream of delivery outcomes (every attempt's result, and whether it is final).
    /// Receivers that fall behind by more than 1,024 outcomes miss the oldest (the attempt
    /// log keeps them all durably).
    pub fn results(&self) -> broadcast::Receiver<DeliveryOutcome> {
        self.inner.results.subscribe()
    }

    /// Delivery statistics of this process's delivery loops (outcomes by kind, attempt
    /// durations), for metrics.
    pub fn delivery_stats(&self) -> DeliveryStatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// Announces an outcome: statistics, then the results stream.
    fn announce(&self, outcome: DeliveryOutcome) {
        self.inner.stats.record(&outcome);
        let _ = self.inner.results.send(outcome);
    }

    // ---- subscriptions ------------------------------------------------------------------

    /// Subscribes `url` to an event (or pattern, see [`EventPattern`]). Idempotent: if the
    /// same owner already subscribed the same URL to the same event, that subscription is
    /// returned and nothing changes.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`], [`Error::InvalidEvent`], [`Error::InvalidSecret`],
    /// [`Error::InvalidInput`] (owner, headers).
    pub async fn subscribe(
        &self,
        event: &str,
        url: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription> {
        let pattern = EventPattern::new(event)?;
        let url = parse_url(url)?;
        let _guard = self.inner.registry_write.lock().await;
        let existing = self.read_subs().values().find_map(|(_, s)| {
            (s.url == url && s.owner == options.owner && s.events == [pattern.clone()])
                .then(|| s.clone())
        });
        if let Some(sub) = existing {
            return Ok(sub);
        }
        let id = format!("sub_{}", random_hex(10)?);
        self.insert_subscription(id, vec![pattern], url, options)
            .await
    }

    /// Attaches a named emitter (webhooks_emitter's `attach` / `attach_many`): a
    /// subscription with the id you choose, for one or more events.
    ///
    /// # Errors
    /// [`Error::SubscriptionExists`] if the id is taken; as [`Hooks::subscribe`] otherwise.
    pub async fn attach(
        &self,
        id: &str,
        events: &[&str],
        url: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription> {
        check_id("emitter id", id)?;
        if events.is_empty() {
            return Err(Error::invalid("attach needs at least one event"));
        }
        let patterns = events
            .iter()
            .map(|e| EventPattern::new(*e))
            .collect::<Result<Vec<_>>>()?;
        let url = parse_url(url)?;
        let _guard = self.inner.registry_write.lock().await;
        if self.read_subs().contains_key(id) {
            return Err(Error::SubscriptionExists(id.to_owned()));
        }
        self.insert_subscription(id.to_owned(), patterns, url, options)
            .await
    }

    /// Detaches a named emitter (removes the subscription). `false` if there was none.
    pub async fn detach(&self, id: &str) -> Result<bool> {
        self.unsubscribe(id).await
    }

    async fn insert_subscription(
        &self,
        id: String,
        events: Vec<EventPattern>,
        url: TargetUrl,
        options: SubscribeOptions,
    ) -> Result<Subscription> {
        if let Some(owner) = &options.owner {
            check_id("owner", owner)?;
        }
        check_headers(&options.headers)?;
        if options.max_in_flight == Some(0) {
            return Err(Error::invalid("max_in_flight must be at least 1"));
        }
        let secret = match options.secret {
            Some(s) => {
                parse_key(options.scheme, s.expose())?;
                s
            }
            None => generate_secret()?,
        };
        let sub = Subscription {
            id,
            url,
            events,
            owner: options.owner,
            scheme: options.scheme,
            secret,
            previous_secret: None,
            headers: options.headers,
            enabled: true,
            max_in_flight: options.max_in_flight,
            strict_fifo: options.strict_fifo,
            created_at: self.inner.store.now(),
        };
        let store = &self.inner.store;
        let item = NewItem {
            payload: Vec::new(),
            metadata: to_metadata(&sub),
            not_before: None,
        };
        let key = store.push(&self.inner.subs_queue, item).await?;
        // A crash here leaves the item `pending`, which loading reads as enabled.
        store
            .update_phase(&self.inner.subs_queue, key, phase_of(&sub))
            .await?;
        self.write_subs().insert(sub.id.clone(), (key, sub.clone()));
        Ok(sub)
    }

    /// Removes a subscription. Its deliveries not yet sent end as `cancelled`. `false` if
    /// there was none.
    pub async fn unsubscribe(&self, id: &str) -> Result<bool> {
        let _guard = self.inner.registry_write.lock().await;
        self.remove_subscription(id).await
    }

    async fn remove_subscription(&self, id: &str) -> Result<bool> {
        let Some(key) = self.read_subs().get(id).map(|(k, _)| *k) else {
            return Ok(false);
        };
        self.inner.store.delete(&self.inner.subs_queue, key).await?;
        self.write_subs().remove(id);
        Ok(true)
    }

    /// Removes `url` from every event at once (Cap'n Hook's deregister); returns how many
    /// subscriptions were removed.
    pub async fn deregister_url(&self, url: &str) -> Result<usize> {
        let url = parse_url(url)?;
        let _guard = self.inner.registry_write.lock().await;
        let ids: Vec<String> = self
            .read_subs()
            .values()
            .filter(|(_, s)| s.url == url)
            .map(|(_, s)| s.id.clone())
            .collect();
        for id in &ids {
            self.remove_subscription(id).await?;
        }
        Ok(ids.len())
    }

    /// Every subscription, ordered by id.
    pub fn subscriptions(&self) -> Vec<Subscription> {
        self.read_subs().values().map(|(_, s)| s.clone()).collect()
    }

    /// One subscription.
    pub fn subscription(&self, id: &str) -> Option<Subscription> {
        self.read_subs().get(id).map(|(_, s)| s.clone())
    }

    /// Changes a subscription.
    ///
    /// # Errors
    /// [`Error::SubscriptionNotFound`]; as [`Hooks::subscribe`] for the new values.
    pub async fn update(&self, id: &str, update: SubscriptionUpdate) -> Result<Subscription> {
        let _guard = self.inner.registry_write.lock().await;
        let mut sub = self.require(id)?;
        if let Some(url) = update.url {
            sub.url = parse_url(&url)?;
        }
        if let Some(events) = update.events {
            if events.is_empty() {
                return Err(Error::invalid("a subscription needs at least one event"));
            }
            sub.events = events
                .into_iter()
                .map(EventPattern::new)
                .collect::<Result<_>>()?;
        }
        if let Some(headers) = update.headers {
            check_headers(&headers)?;
            sub.headers = headers;
        }
        if let Some(scheme) = update.scheme {
            parse_key(scheme, sub.secret.expose())?;
            sub.scheme = scheme;
        }
        if let Some(enabled) = update.enabled {
            sub.enabled = enabled;
        }
        if let Some(n) = update.max_in_flight {
            if n == Some(0) {
                return Err(Error::invalid("max_in_flight must be at least 1"));
            }
            sub.max_in_flight = n;
        }
        if let Some(fifo) = update.strict_fifo {
            sub.strict_fifo = fifo;
        }
        self.save(sub).await
    }

    /// Enables or disables a subscription. A disabled subscription gets no new deliveries;
    /// its pending ones wait until it is enabled again.
    pub async fn set_enabled(&self, id: &str, enabled: bool) -> Result<Subscription> {
        self.update(
            id,
            SubscriptionUpdate {
                enabled: Some(enabled),
                ..SubscriptionUpdate::default()
            },
        )
        .await
    }

    /// Rotates a subscription's secret (a new random one when `new` is `None`). For the
    /// rotation grace period ([`HooksOptions::rotation_grace`]) requests carry signatures
    /// with both the new and the old secret (Standard Webhooks; the other schemes carry one
    /// signature, with the new secret).
    pub async fn rotate_secret(&self, id: &str, new: Option<Secret>) -> Result<Subscription> {
        let _guard = self.inner.registry_write.lock().await;
        let mut sub = self.require(id)?;
        let new = match new {
            Some(s) => {
                parse_key(sub.scheme, s.expose())?;
                s
            }
            None => generate_secret()?,
        };
        let until = self
            .inner
            .store
            .now()
            .saturating_add(self.inner.options.rotation_grace);
        sub.previous_secret = Some((std::mem::replace(&mut sub.secret, new), until));
        self.save(sub).await
    }

    async fn save(&self, sub: Subscription) -> Result<Subscription> {
        let key = self
            .read_subs()
            .get(&sub.id)
            .map(|(k, _)| *k)
            .ok_or_else(|| Error::SubscriptionNotFound(sub.id.clone()))?;
        let action = Move::to(phase_of(&sub)).metadata(to_metadata(&sub));
        let transition = Transition {
            expect: Expect::default(),
            action: Action::Move(action),
        };
        self.inner
            .store
            .update(&self.inner.subs_queue, key, transition)
            .await?;
        self.write_subs().insert(sub.id.clone(), (key, sub.clone()));
        if sub.enabled {
            self.inner.wake.notify_one();
        }
        Ok(sub)
    }

    fn require(&self, id: &str) -> Result<Subscription> {
        self.subscription(id)
            .ok_or_else(|| Error::SubscriptionNotFound(id.to_owned()))
    }

    fn read_subs(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, (Key, Subscription)>> {
        self.inner
            .subs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_subs(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, (Key, Subscription)>> {
        self.inner
            .subs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    // ---- firing -------------------------------------------------------------------------

    /// Fires an event to every enabled subscription that wants it. Returns the delivery ids
    /// (none if nobody is subscribed) once every delivery is stored, in one atomic write;
    /// the HTTP requests happen in the background ([`Deliverer`]).
    ///
    /// # Errors
    /// [`Error::InvalidEvent`], [`Error::PayloadTooLarge`], [`Error::BatchTooLarge`] (more
    /// matching subscriptions than the store's batch limit); nothing is stored then.
    pub async fn fire(&self, event: &str, payload: impl Into<Vec<u8>>) -> Result<Vec<DeliveryId>> {
        self.fire_matching(event, payload.into(), None, None).await
    }

    /// Fires an event to one owner's subscriptions only (go-resthooks' `Notify`).
    pub async fn notify(
        &self,
        owner: &str,
        event: &str,
        payload: impl Into<Vec<u8>>,
    ) -> Result<Vec<DeliveryId>> {
        check_id("owner", owner)?;
        self.fire_matching(event, payload.into(), Some(owner), None)
            .await
    }

    /// Emits an event (webhooks_emitter's `emit`): like `fire`, and every request carries the
    /// request id (generated when `None`), which is returned.
    pub async fn emit(
        &self,
        event: &str,
        payload: impl Into<Vec<u8>>,
        request_id: Option<&str>,
    ) -> Result<(String, Vec<DeliveryId>)> {
        let request_id = match request_id {
            Some(r) => {
                check_id("request id", r)?;
                r.to_owned()
            }
            None => format!("req_{}", random_hex(10)?),
        };
        let ids = self
            .fire_matching(event, payload.into(), None, Some(&request_id))
            .await?;
        Ok((request_id, ids))
    }

    async fn fire_matching(
        &self,
        event: &str,
        payload: Vec<u8>,
        owner: Option<&str>,
        request_id: Option<&str>,
    ) -> Result<Vec<DeliveryId>> {
        check_event_name(event)?;
        let targets: Vec<String> = self
            .read_subs()
            .values()
            .filter(|(_, s)| s.wants(event, owner))
            .map(|(_, s)| s.id.clone())
            .collect();
        let items = targets
            .into_iter()
            .map(|id| {
                let mut item = NewItem::new(payload.clone())
                    .with_metadata(M_EVENT, event)
                    .with_metadata(M_SUBSCRIPTION, id);
                if let Some(r) = request_id {
                    item = item.with_metadata(M_REQUEST_ID, r);
                }
                item
            })
            .collect();
        self.push_deliveries(items, payload.len()).await
    }

    /// Fires an event to URLs directly, without subscriptions (Cap'n Hook's `fire!` to a URL
    /// or a list). Signed with [`HooksOptions::direct_secret`] if set.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for any bad URL (nothing is stored then); as [`Hooks::fire`].
    pub async fn fire_to(
        &self,
        urls: &[&str],
        event: &str,
        payload: impl Into<Vec<u8>>,
    ) -> Result<Vec<DeliveryId>> {
        check_event_name(event)?;
        let payload = payload.into();
        let urls = urls
            .iter()
            .map(|u| parse_url(u))
            .collect::<Result<Vec<_>>>()?;
        let items = urls
            .iter()
            .map(|u| {
                NewItem::new(payload.clone())
                    .with_metadata(M_EVENT, event)
                    .with_metadata(M_URL, u.as_str())
            })
            .collect();
        self.push_deliveries(items, payload.len()).await
    }

    /// Fires an event to the URLs a resolver gives (for example from the application's own
    /// database).
    pub async fn fire_resolved<R: UrlResolver>(
        &self,
        resolver: &R,
        event: &str,
        payload: impl Into<Vec<u8>>,
    ) -> Result<Vec<DeliveryId>> {
        check_event_name(event)?;
        let urls = resolver.resolve(event).await?;
        let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
        self.fire_to(&urls, event, payload).await
    }

    async fn push_deliveries(&self, items: Vec<NewItem>, size: usize) -> Result<Vec<DeliveryId>> {
        let limit = self.inner.store.limits().max_payload;
        if size > limit {
            return Err(Error::PayloadTooLarge { size, limit });
        }
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let keys = self
            .inner
            .store
            .push_batch(&self.inner.deliveries_queue, items)
            .await?;
        self.inner.wake.notify_one();
        Ok(keys
            .into_iter()
            .map(|k| DeliveryId::new(&self.inner.nonce, k))
            .collect())
    }

    // ---- deliveries ---------------------------------------------------------------------

    /// A delivery with its state and attempt log, or `None`.
    pub async fn delivery(&self, id: &DeliveryId) -> Result<Option<Delivery>> {
        let Some(key) = id.key(&self.inner.nonce) else {
            return Ok(None);
        };
        let item = self
            .inner
            .store
            .fetch_key(&self.inner.deliveries_queue, key)
            .await?;
        Ok(item.map(|item| self.view(item)))
    }

    /// The recorded attempts of a delivery, oldest first.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if there is no such delivery.
    pub async fn attempts(&self, id: &DeliveryId) -> Result<Vec<Attempt>> {
        self.delivery(id)
            .await?
            .map(|d| d.attempts)
            .ok_or_else(|| Error::invalid(format!("no delivery with id {id}")))
    }

    /// Sends a dead (or gone, or cancelled) delivery again: it goes back to pending, due now,
    /// with a fresh retry schedule; its attempt log is kept.
    ///
    /// # Errors
    /// [`Error::PhaseConflict`] if it is not in a final failed state;
    /// [`Error::InvalidInput`] if there is no such delivery.
    pub async fn replay(&self, id: &DeliveryId) -> Result<()> {
        let key = id
            .key(&self.inner.nonce)
            .ok_or_else(|| Error::invalid(format!("no delivery with id {id}")))?;
        let store = &self.inner.store;
        let q = &self.inner.deliveries_queue;
        let item = store
            .fetch_key(q, key)
            .await?
            .ok_or_else(|| Error::invalid(format!("no delivery with id {id}")))?;
        let phase = item.phase.clone();
        if phase != Phase::DEAD && phase.as_str() != GONE && phase.as_str() != CANCELLED {
            return Err(Error::PhaseConflict {
                key,
                expected: Phase::DEAD,
                actual: phase,
            });
        }
        let mut metadata = item.metadata;
        let done = attempts_made(&metadata);
        metadata.insert(M_REPLAY_BASE.to_owned(), done.to_string());
        let transition = Transition {
            expect: Expect {
                phase: Some(phase),
                lease_owner: None,
            },
            action: Action::Move(Move::to(Phase::PENDING).metadata(metadata)),
        };
        store.update(q, key, transition).await?;
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Replays every dead delivery of a subscription; returns how many.
    pub async fn replay_subscription(&self, subscription: &str) -> Result<u64> {
        let store = &self.inner.store;
        let q = &self.inner.deliveries_queue;
        let mut after = None;
        let mut mine = Vec::new();
        loop {
            let mut page = Page::first(DUMP_PAGE).phase(Phase::DEAD);
            page.after = after;
            let items = store.fetch_page(q, page).await?;
            let Some(last) = items.last() else { break };
            after = Some(last.key);
            mine.extend(
                items
                    .iter()
                    .filter(|i| {
                        i.metadata.get(M_SUBSCRIPTION).map(String::as_str) == Some(subscription)
                    })
                    .map(|i| i.key),
            );
        }
        let mut n = 0;
        for key in mine {
            match self.replay(&DeliveryId::new(&self.inner.nonce, key)).await {
                Ok(()) => n += 1,
                Err(Error::PhaseConflict { .. } | Error::ItemNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    fn view(&self, item: Item) -> Delivery {
        let m = &item.metadata;
        let attempts = m
            .iter()
            .filter(|(k, _)| k.starts_with(M_ATTEMPT_PREFIX))
            .filter_map(|(_, v)| serde_json::from_str::<Attempt>(v).ok())
            .collect();
        Delivery {
            id: DeliveryId::new(&self.inner.nonce, item.key),
            event: m.get(M_EVENT).cloned().unwrap_or_default(),
            subscription: m.get(M_SUBSCRIPTION).cloned(),
            url: m.get(M_URL).cloned(),
            request_id: m.get(M_REQUEST_ID).cloned(),
            next_attempt: (item.phase == Phase::PENDING).then_some(item.not_before),
            state: item.phase,
            created_at: item.created_at,
            last_error: item.last_error,
            attempts,
            payload: item.payload,
        }
    }

    /// A delivery loop over this store (see [`Deliverer::run`]).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for bad settings.
    pub fn deliverer(&self, config: DeliveryConfig) -> Result<Deliverer<B>> {
        Deliverer::new(self.clone(), config)
    }
}

fn parse_url(url: &str) -> Result<TargetUrl> {
    TargetUrl::parse(url).map_err(|e| Error::InvalidUrl {
        url: url.to_owned(),
        reason: e.to_string(),
    })
}

/// Creates a queue if it does not exist. For the deliveries queue (`nonce` given), makes
/// sure the queue records an id nonce and returns the recorded one.
async fn ensure_queue<B: Backend>(
    store: &Store<B>,
    id: &QueueId,
    nonce: Option<String>,
) -> Result<Option<String>> {
    if let Some(q) = store.queue(id).await? {
        let Some(nonce) = nonce else { return Ok(None) };
        if let Some(existing) = q.metadata.get(M_ID_NONCE) {
            return Ok(Some(existing.clone()));
        }
        store
            .update_queue(q.with_metadata(M_ID_NONCE, nonce.clone()))
            .await?;
        return Ok(Some(nonce));
    }
    let mut config = QueueConfig::new(id.clone());
    if let Some(n) = &nonce {
        config = config.with_metadata(M_ID_NONCE, n.clone());
    }
    store.create_queue(config).await?;
    Ok(nonce)
}

/// HTTP attempts made so far, from a delivery's metadata.
fn attempts_made(m: &BTreeMap<String, String>) -> u32 {
    m.get(M_ATTEMPTS).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// `n` random bytes as lower-case hex.
fn random_hex(n: usize) -> Result<String> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(|e| Error::invalid(format!("no randomness: {e}")))?;
    Ok(buf.iter().fold(String::with_capacity(2 * n), |mut s, b| {
        use std::fmt::Write;
        let _ = write!(s, "{b:02x}");
        s
    }))
}

/// A random number in [0, 1), for jitter.
fn random_unit() -> f64 {
    let mut buf = [0u8; 8];
    if getrandom::fill(&mut buf).is_err() {
        return 0.5;
    }
    #[allow(clippy::cast_precision_loss)] // 53 bits of a random u64 are plenty for jitter
    let x = (u64::from_le_bytes(buf) >> 11) as f64 / (1u64 << 53) as f64;
    x
}
