//! [`Hooks`]: the webhook side of a store, and what its parts share (the queues, the
//! metadata keys of a delivery, the wake-ups, the outcome streams). Its methods are spread
//! over `subscriptions`, `firing`, `deliveries` and `inbound` by what they do.
//!
//! Everything is stored in the store's backend, in two queues:
//! [`SUBSCRIPTIONS_QUEUE`] (one item per subscription) and [`DELIVERIES_QUEUE`] (one item per
//! delivery: the event payload, with the event name, target, attempt count and attempt log in
//! its metadata). Firing an event writes one delivery per matching subscription in one
//! atomic `push`; the delivery loop claims due deliveries with leases, POSTs them, and records
//! each attempt with the next state in one atomic `update`.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{Mutex, Notify, broadcast};

use hookspool::{
    Action, Backend, DUMP_PAGE, Expect, Item, Move, Page, Phase, QueueConfig, QueueId, Retain,
    Store, Transition,
};

use crate::deliver::{Deliverer, DeliveryConfig, DeliveryOutcome};
use crate::error::{Error, Result};
use crate::idempotency::{DEFAULT_IDEMPOTENCY_TTL, Idempotency};
use crate::inbound;
use crate::secret::Secret;
use crate::stats::{self, DeliveryStatsReader, DeliveryStatsSnapshot};
use crate::subscription::{DEFAULT_ROTATION_GRACE, Registered, from_item, parse_key};

/// The queue that holds subscriptions (one item each).
pub const SUBSCRIPTIONS_QUEUE: &str = "hookspool.subscriptions";
/// The queue that holds deliveries (one item per event and target).
pub const DELIVERIES_QUEUE: &str = "hookspool.deliveries";

/// Final phase of a delivery whose target answered `410 Gone` (its subscription is removed).
pub const GONE: &str = "gone";
/// Final phase of a delivery whose subscription was removed before it was sent.
pub const CANCELLED: &str = "cancelled";

// Metadata keys of a delivery item.
pub(crate) const M_EVENT: &str = "event";
pub(crate) const M_SUBSCRIPTION: &str = "subscription";
pub(crate) const M_URL: &str = "url";
pub(crate) const M_REQUEST_ID: &str = "request_id";
pub(crate) const M_ATTEMPTS: &str = "attempts";
pub(crate) const M_REPLAY_BASE: &str = "replay_base";
pub(crate) const M_ATTEMPT_PREFIX: &str = "attempt.";
pub(crate) const M_ID_NONCE: &str = "id_nonce";

/// Settings of [`Hooks`].
#[derive(Clone, Debug)]
pub struct HooksOptions {
    /// Secret that signs deliveries fired to URLs directly (`fire_to`, `fire_resolved`);
    /// `None`: those are sent unsigned (still with `webhook-id` and `webhook-timestamp`).
    pub direct_secret: Option<Secret>,
    /// How long a rotated-out secret keeps signing requests.
    pub rotation_grace: Duration,
    /// How long an idempotency key names its request ([`crate::FireOptions`]); a key
    /// reused after that is a new request (default 24 hours). Must be more than zero.
    pub idempotency_ttl: Duration,
    /// How long deliveries stay once done, dead or expired (default
    /// [`DEFAULT_DELIVERIES_RETAIN`]: done 3 days, dead 30 days). Set on the deliveries queue
    /// at every open, so this setting, not a change made to the queue since, is what holds.
    pub deliveries_retain: Retain,
    /// How long callbacks stay once handled or dead, for the channel queues hookspool creates
    /// (default the same as deliveries'). A channel queue's own setting, once created, is
    /// changed like any queue's.
    pub callbacks_retain: Retain,
}

/// How long deliveries and callbacks stay unless [`HooksOptions`] says otherwise: done 3
/// days (time to look into what happened), dead 30 days (time to fix the receiver and
/// replay), expired forever.
pub const DEFAULT_DELIVERIES_RETAIN: Retain = Retain {
    done: Some(Duration::from_hours(72)),
    dead: Some(Duration::from_hours(720)),
    expired: None,
};

impl Default for HooksOptions {
    fn default() -> Self {
        HooksOptions {
            direct_secret: None,
            rotation_grace: DEFAULT_ROTATION_GRACE,
            idempotency_ttl: DEFAULT_IDEMPOTENCY_TTL,
            deliveries_retain: DEFAULT_DELIVERIES_RETAIN,
            callbacks_retain: DEFAULT_DELIVERIES_RETAIN,
        }
    }
}

/// The webhook side of hookspool: subscriptions, firing events, inspecting and replaying
/// deliveries. Cheap to clone. Run the delivery loop with [`Hooks::deliverer`].
pub struct Hooks<B: Backend> {
    pub(crate) inner: Arc<Inner<B>>,
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

pub(crate) struct Inner<B: Backend> {
    pub(crate) store: Store<B>,
    pub(crate) options: HooksOptions,
    pub(crate) subs_queue: QueueId,
    pub(crate) deliveries_queue: QueueId,
    /// Makes delivery ids unique across re-creations of the deliveries queue.
    pub(crate) nonce: String,
    /// Subscriptions by id, with their item keys. Never held across an `.await`.
    pub(crate) subs: RwLock<BTreeMap<String, Arc<Registered>>>,
    /// Serializes registry changes (check-then-write), so `subscribe` is idempotent.
    pub(crate) registry_write: Mutex<()>,
    /// Wakes the delivery loop when something is fired or replayed.
    pub(crate) wake: Notify,
    /// Wakes the callback loop when a callback is received.
    pub(crate) inbound_wake: Notify,
    pub(crate) callback_results: broadcast::Sender<inbound::CallbackResult>,
    /// Handler outcomes since the process started: handled, retrying, dead.
    pub(crate) callback_counts: [std::sync::atomic::AtomicU64; 3],
    pub(crate) results: broadcast::Sender<DeliveryOutcome>,
    /// Idempotency keys of keyed fires.
    pub(crate) idempotency: Idempotency,
    pub(crate) stats: Arc<stats::DeliveryStats>,
}

impl<B: Backend> Hooks<B> {
    /// Opens the webhook side of a store: creates its two queues if needed and loads the
    /// subscriptions.
    ///
    /// # Errors
    /// Backend errors; [`Error::Store`] ([`hookspool::Error::Corrupted`]) for a subscription record that cannot be read.
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
        if options.idempotency_ttl.is_zero() {
            return Err(Error::invalid(
                "the idempotency key lifetime must be more than zero",
            ));
        }
        options.deliveries_retain.check()?;
        options.callbacks_retain.check()?;
        let subs_queue = QueueId::new(SUBSCRIPTIONS_QUEUE)?;
        let deliveries_queue = QueueId::new(DELIVERIES_QUEUE)?;
        ensure_queue(&store, &subs_queue, None).await?;
        let nonce = ensure_queue(&store, &deliveries_queue, Some(random_hex(4)?)).await?;
        set_retain(&store, &deliveries_queue, options.deliveries_retain).await?;
        let subs = load_subs(&store, &subs_queue).await?;
        let (results, _) = broadcast::channel(1024);
        let idempotency = Idempotency::new(options.idempotency_ttl);
        let hooks = Hooks {
            inner: Arc::new(Inner {
                idempotency,
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
                stats: Arc::default(),
            }),
        };
        if hooks.inner.store.backend().capabilities().shared {
            tokio::spawn(follow_others(Arc::downgrade(&hooks.inner)));
        }
        Ok(hooks)
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

    /// A handle that reads the same statistics as [`Hooks::delivery_stats`] without keeping
    /// the store open: for a sampler that must not outlive the application's `Hooks`.
    pub fn delivery_stats_reader(&self) -> DeliveryStatsReader {
        DeliveryStatsReader(Arc::clone(&self.inner.stats))
    }

    /// Announces an outcome: statistics, then the results stream.
    pub(crate) fn announce(&self, outcome: DeliveryOutcome) {
        self.inner.stats.record(&outcome);
        let _ = self.inner.results.send(outcome);
    }

    /// A delivery loop over this store (see [`Deliverer::run`]).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for bad settings.
    pub fn deliverer(&self, config: DeliveryConfig) -> Result<Deliverer<B>> {
        Deliverer::new(self.clone(), config)
    }
}

/// Every subscription of the store, by id, with its item key.
pub(crate) async fn load_subs<B: Backend>(
    store: &Store<B>,
    subs_queue: &QueueId,
) -> Result<BTreeMap<String, Arc<Registered>>> {
    let mut subs = BTreeMap::new();
    let mut after = None;
    loop {
        let mut page = Page::first(DUMP_PAGE);
        page.after = after;
        let items = store.fetch_page(subs_queue, page).await?;
        let Some(last) = items.last() else { break };
        after = Some(last.key);
        for item in &items {
            if item.phase == Phase::CORRUPT {
                continue;
            }
            match from_item(item) {
                Ok(sub) => {
                    subs.insert(sub.id.clone(), Registered::new(item.key, sub));
                }
                Err(e) => quarantine_record(store, subs_queue, item, &e).await?,
            }
        }
    }
    Ok(subs)
}

/// Moves a record of one of hookspool's own queues that cannot be read (malformed, or
/// written by hand) to [`Phase::CORRUPT`], with why, and says so in the log: one bad record
/// must not stop the daemon from starting. Someone else moving it first is fine.
pub(crate) async fn quarantine_record<B: Backend>(
    store: &Store<B>,
    queue: &QueueId,
    item: &Item,
    error: &Error,
) -> Result<()> {
    tracing::error!(%queue, key = item.key, %error, "malformed record quarantined");
    let transition = Transition {
        expect: Expect {
            phase: Some(item.phase.clone()),
            lease_owner: None,
        },
        action: Action::Move(Move::to(Phase::CORRUPT).error(format!("quarantined: {error}"))),
    };
    match store.update(queue, item.key, transition).await {
        Ok(_)
        | Err(
            hookspool::Error::PhaseConflict { .. }
            | hookspool::Error::ItemNotFound { .. }
            | hookspool::Error::NotLeaseOwner { .. },
        ) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// How often a process sharing its storage reloads the subscriptions even without a change
/// notice (notices can be lost while a connection is down).
pub(crate) const SHARED_RELOAD: Duration = Duration::from_secs(1);

/// On storage shared with other processes: follows their changes. A notice about the
/// subscriptions queue reloads the subscriptions; one about the deliveries queue (or any
/// other, such as a callback channel) wakes the loops at once instead of at their next poll.
/// Without notices, the subscriptions are reloaded every [`SHARED_RELOAD`] anyway. Stops
/// when the `Hooks` are dropped.
async fn follow_others<B: Backend>(inner: std::sync::Weak<Inner<B>>) {
    let mut changes = match inner.upgrade() {
        Some(i) => i.store.backend().changes(),
        None => return,
    };
    let mut tick = tokio::time::interval(SHARED_RELOAD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let reload = tokio::select! {
            _ = tick.tick() => true,
            notice = async {
                match changes.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => match notice {
                Ok(queue) => {
                    let Some(i) = inner.upgrade() else { return };
                    if queue == i.subs_queue {
                        true
                    } else {
                        if queue == i.deliveries_queue {
                            i.wake.notify_one();
                        } else {
                            i.inbound_wake.notify_one();
                        }
                        false
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if let Some(i) = inner.upgrade() {
                        i.wake.notify_one();
                        i.inbound_wake.notify_one();
                    }
                    true
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if reload {
            let Some(i) = inner.upgrade() else { return };
            // Not while this process changes a subscription: its write and the map update
            // happen under this lock, so a reload never puts back what it just replaced.
            let _registry = i.registry_write.lock().await;
            match load_subs(&i.store, &i.subs_queue).await {
                Ok(subs) => {
                    *i.subs
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = subs;
                }
                Err(e) => tracing::warn!(error = %e, "could not reload the subscriptions"),
            }
        }
    }
}

/// Creates a queue if it does not exist. For the deliveries queue (`nonce` given), makes
/// sure the queue records an id nonce and returns the recorded one. Several processes
/// opening one shared store at once may race to create it: the one that loses reads what
/// the winner created (its nonce included, which creation stores atomically).
async fn ensure_queue<B: Backend>(
    store: &Store<B>,
    id: &QueueId,
    nonce: Option<String>,
) -> Result<Option<String>> {
    match create_queue_with(store, id, nonce.as_ref()).await {
        Err(Error::Store(hookspool::Error::QueueExists(_))) => {}
        other => return other.map(|()| nonce),
    }
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
    // Created and deleted again meanwhile: create it now.
    create_queue_with(store, id, nonce.as_ref()).await?;
    Ok(nonce)
}

/// Gives an internal queue the retention periods of the options, if it has others.
async fn set_retain<B: Backend>(store: &Store<B>, id: &QueueId, retain: Retain) -> Result<()> {
    if let Some(q) = store.queue(id).await?
        && q.retain != retain
    {
        store.update_queue(q.with_retain(retain)).await?;
    }
    Ok(())
}

async fn create_queue_with<B: Backend>(
    store: &Store<B>,
    id: &QueueId,
    nonce: Option<&String>,
) -> Result<()> {
    let mut config = QueueConfig::new(id.clone());
    if let Some(n) = nonce {
        config = config.with_metadata(M_ID_NONCE, n.clone());
    }
    store.create_queue(config).await?;
    Ok(())
}

/// HTTP attempts made so far, from a delivery's metadata.
pub(crate) fn attempts_made(m: &BTreeMap<String, String>) -> u32 {
    m.get(M_ATTEMPTS).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// `n` random bytes as lower-case hex.
pub(crate) fn random_hex(n: usize) -> Result<String> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf)
        .map_err(|e| Error::internal(format!("the operating system gave no random bytes: {e}")))?;
    Ok(buf.iter().fold(String::with_capacity(2 * n), |mut s, b| {
        use std::fmt::Write;
        let _ = write!(s, "{b:02x}");
        s
    }))
}

/// A random number in [0, 1), for jitter.
pub(crate) fn random_unit() -> f64 {
    let mut buf = [0u8; 8];
    if getrandom::fill(&mut buf).is_err() {
        return 0.5;
    }
    #[allow(clippy::cast_precision_loss)] // 53 bits of a random u64 are plenty for jitter
    let x = (u64::from_le_bytes(buf) >> 11) as f64 / (1u64 << 53) as f64;
    x
}
