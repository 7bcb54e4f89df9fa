//! Inbound callbacks: the application's handlers, one per channel, run over the channel's
//! queue with retries ([`Callbacks`]).
//!
//! A callback received on `POST /callbacks/{channel}` (or handed to [`Hooks::receive`]) is an
//! item of the queue named after the channel. [`Callbacks::run`] claims due items with a
//! lease, calls the channel's [`Handler`], and records the outcome in one atomic update:
//! success acknowledges the item (`done`, or removed under `Retention::Remove`), a retryable
//! failure puts it back to `pending` due after the next delay of the retry schedule, and a
//! permanent failure, or a failure after the last attempt, moves it to `dead` with the error,
//! where it waits for `replay`. Attempts are counted by `claim` (the item's `attempts`), so a
//! handler interrupted by a crash or a shutdown has used an attempt: handlers must be
//! idempotent (the `webhook-id` of [`Inbound::webhook_id`] helps with that).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use hookspool::{
    Action, Backend, DUMP_PAGE, Error as StoreError, Expect, Item, Key, Move, NewItem, Page, Phase,
    QueueConfig, QueueId, Store, Timestamp, Transition,
};

use crate::error::{Error, Result};
use crate::hooks::{Hooks, random_unit};
use crate::retry::RetrySchedule;
use crate::secret::Secret;
use crate::signing::{HEADER_WEBHOOK_ID, SigningKey, verify};
use crate::subscription::generate_secret;

/// Metadata key of an inbound item: the sender's `webhook-id`.
pub const META_WEBHOOK_ID: &str = "webhook_id";
/// Metadata key of an inbound item: the request's content type.
pub const META_CONTENT_TYPE: &str = "content_type";
/// Metadata key of a channel's queue that holds the channel's signing secret (a `whsec_`
/// secret): callbacks into the channel must carry a valid Standard Webhooks signature made
/// with it. The engine's `Debug` masks it; the HTTP API and the CLI never show it.
pub const CHANNEL_SECRET: &str = "secret";
/// The prefix of hookspool's own queues (subscriptions, deliveries, idempotency records):
/// never a callback channel.
pub const INTERNAL_PREFIX: &str = "hookspool.";

/// A channel's signing secret: the [`CHANNEL_SECRET`] metadata entry of its queue.
pub fn channel_secret(queue: &QueueConfig) -> Option<Secret> {
    queue.metadata.get(CHANNEL_SECRET).map(Secret::new)
}

/// Sets (or, with `None`, removes) a channel's signing secret on its queue's settings; store
/// them with `Store::update_queue` or `create_queue`. Callbacks are verified with it as a
/// Standard Webhooks (`whsec_`) secret, so nothing else is taken.
///
/// # Errors
/// [`Error::InvalidSecret`] for an empty secret, or one that is not a `whsec_` secret.
pub fn set_channel_secret(queue: &mut QueueConfig, secret: Option<&Secret>) -> Result<()> {
    match secret {
        Some(s) if s.expose().is_empty() => Err(Error::InvalidSecret(
            "a channel's secret must not be empty".to_owned(),
        )),
        Some(s) => {
            if let Err(e) = SigningKey::from_whsec(s.expose()) {
                return Err(Error::InvalidSecret(format!(
                    "a channel's secret must be a Standard Webhooks secret (`whsec_` and \
                     base64): {e}"
                )));
            }
            queue
                .metadata
                .insert(CHANNEL_SECRET.to_owned(), s.expose().to_owned());
            Ok(())
        }
        None => {
            queue.metadata.remove(CHANNEL_SECRET);
            Ok(())
        }
    }
}

/// One received callback, as a [`Handler`] sees it.
#[derive(Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The channel (its queue id).
    pub channel: QueueId,
    /// The item's key in the channel's queue.
    pub key: Key,
    /// The sender's `webhook-id` header, if it sent one: stable across the sender's retries,
    /// so a handler can use it to drop duplicates.
    pub webhook_id: Option<String>,
    /// The request's `content-type`, if any.
    pub content_type: Option<String>,
    /// The request body, as received.
    pub payload: Vec<u8>,
    /// Which attempt this is: 1 for the first.
    pub attempt: u32,
    /// When the callback was received.
    pub received_at: Timestamp,
    /// Every metadata entry of the item (including the two above).
    pub metadata: BTreeMap<String, String>,
}

impl fmt::Debug for Inbound {
    /// The payload is shown by size only: it is the sender's data, not log material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbound")
            .field("channel", &self.channel)
            .field("key", &self.key)
            .field("webhook_id", &self.webhook_id)
            .field("content_type", &self.content_type)
            .field("payload_len", &self.payload.len())
            .field("attempt", &self.attempt)
            .field("received_at", &self.received_at)
            .finish_non_exhaustive()
    }
}

impl Inbound {
    fn from_item(channel: &QueueId, item: Item) -> Self {
        Inbound {
            channel: channel.clone(),
            key: item.key,
            webhook_id: item.metadata.get(META_WEBHOOK_ID).cloned(),
            content_type: item.metadata.get(META_CONTENT_TYPE).cloned(),
            payload: item.payload,
            attempt: item.attempts,
            received_at: item.created_at,
            metadata: item.metadata,
        }
    }

    /// The payload parsed as JSON.
    ///
    /// # Errors
    /// A [`HandlerError::permanent`]: a body that is not the expected JSON will not become so
    /// on a retry.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> std::result::Result<T, HandlerError> {
        serde_json::from_slice(&self.payload).map_err(|e| {
            HandlerError::permanent(format!("the payload is not the expected JSON: {e}"))
        })
    }
}

/// Why a handler failed, and whether trying again may help.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerError {
    message: String,
    retry: bool,
}

impl HandlerError {
    /// A failure worth retrying (a dependency is down, a timeout): the item is tried again
    /// after the next delay of the schedule, and is dead after the last attempt.
    pub fn retry(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            retry: true,
        }
    }

    /// A failure no retry can fix (a malformed payload): the item goes to `dead` at once.
    pub fn permanent(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            retry: false,
        }
    }

    /// The message, as recorded in the item's `last_error`.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the item will be tried again (attempts permitting).
    pub fn is_retryable(&self) -> bool {
        self.retry
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HandlerError {}

/// Processes the callbacks of one channel. Called once per attempt; it must be idempotent,
/// since an attempt cut off by a crash is made again.
///
/// ```
/// use hookspool_webhooks::{Handler, HandlerError, Inbound};
///
/// struct PrintOrders;
///
/// impl Handler for PrintOrders {
///     async fn handle(&self, msg: Inbound) -> Result<(), HandlerError> {
///         let order: serde_json::Value = msg.json()?;
///         println!("order {} (attempt {})", order["id"], msg.attempt);
///         Ok(())
///     }
/// }
/// ```
pub trait Handler: Send + Sync + 'static {
    /// Handles one callback. `Ok` acknowledges it; an error retries it or ends it in `dead`
    /// (see [`HandlerError`]). A panic counts as a retryable failure.
    fn handle(
        &self,
        msg: Inbound,
    ) -> impl Future<Output = std::result::Result<(), HandlerError>> + Send;
}

/// A [`Handler`] made of an async closure: `handler_fn(|msg| async move { … })`.
pub fn handler_fn<F, Fut>(f: F) -> HandlerFn<F>
where
    F: Fn(Inbound) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<(), HandlerError>> + Send + 'static,
{
    HandlerFn(f)
}

/// See [`handler_fn`].
#[derive(Clone)]
pub struct HandlerFn<F>(F);

impl<F> fmt::Debug for HandlerFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HandlerFn")
    }
}

impl<F, Fut> Handler for HandlerFn<F>
where
    F: Fn(Inbound) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<(), HandlerError>> + Send + 'static,
{
    fn handle(
        &self,
        msg: Inbound,
    ) -> impl Future<Output = std::result::Result<(), HandlerError>> + Send {
        (self.0)(msg)
    }
}

type BoxedOutcome = Pin<Box<dyn Future<Output = std::result::Result<(), HandlerError>> + Send>>;

/// [`Handler`] with the future boxed, so handlers of different types share one map.
trait ErasedHandler: Send + Sync {
    fn call(self: Arc<Self>, msg: Inbound) -> BoxedOutcome;
}

impl<H: Handler> ErasedHandler for H {
    fn call(self: Arc<Self>, msg: Inbound) -> BoxedOutcome {
        Box::pin(async move { self.handle(msg).await })
    }
}

/// Settings of [`Callbacks`].
#[derive(Clone, Debug)]
pub struct CallbackConfig {
    /// Most handler calls running at once, over all channels (default 8).
    pub concurrency: usize,
    /// How long one handler call may take before it counts as a retryable failure
    /// (default 30 s).
    pub timeout: Duration,
    /// The retry schedule (default [`RetrySchedule::standard`]): delays between attempts;
    /// after the last one a failing item is dead.
    pub schedule: RetrySchedule,
    /// How often to look for due items when idle (default 1 s). [`Hooks::receive`] (and so
    /// `POST /callbacks/{channel}`) wakes the loop at once; it also wakes on its own when a
    /// retry it scheduled falls due.
    pub poll_interval: Duration,
    /// How long a graceful stop waits for handler calls in flight (default 10 s); the rest
    /// are cut off and go back to pending.
    pub shutdown_grace: Duration,
    /// The lease owner name (default `hookspool-callbacks`).
    pub owner: String,
}

impl Default for CallbackConfig {
    fn default() -> Self {
        CallbackConfig {
            concurrency: 8,
            timeout: Duration::from_secs(30),
            schedule: RetrySchedule::standard(),
            poll_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(10),
            owner: "hookspool-callbacks".to_owned(),
        }
    }
}

/// What happened to an inbound item after one handler call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallbackOutcome {
    /// The handler succeeded.
    Handled,
    /// It failed; the next attempt is due at this time.
    Retrying {
        /// When.
        at: Timestamp,
    },
    /// It failed for good: the item is dead.
    Dead,
}

/// One handler call's result, as sent on [`Hooks::callback_results`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallbackResult {
    /// The channel.
    pub channel: QueueId,
    /// The item's key in the channel's queue.
    pub key: Key,
    /// Which attempt this was (1 for the first).
    pub attempt: u32,
    /// What happens to the item next.
    pub outcome: CallbackOutcome,
    /// The handler's error, if it failed.
    pub error: Option<String>,
}

/// The loop that runs channel handlers over their queues. Build it with [`Hooks::callbacks`],
/// register handlers with [`Callbacks::handle`], then [`Callbacks::run`] it.
///
/// One loop per store and channel: on start it takes back every item of its channels left in
/// flight by a previous process.
pub struct Callbacks<B: Backend> {
    hooks: Hooks<B>,
    config: CallbackConfig,
    handlers: BTreeMap<QueueId, Arc<dyn ErasedHandler>>,
}

impl<B: Backend> fmt::Debug for Callbacks<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Callbacks")
            .field("config", &self.config)
            .field("channels", &self.handlers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl<B: Backend> Hooks<B> {
    /// The queue of callback channel `channel`, as a request names it: a valid queue id,
    /// not one of hookspool's own queues, that exists.
    ///
    /// # Errors
    /// [`Error::ChannelNotFound`] otherwise; the store's errors.
    pub async fn callback_channel(&self, channel: &str) -> Result<QueueConfig> {
        let missing = || Error::ChannelNotFound(channel.to_owned());
        if channel.starts_with(INTERNAL_PREFIX) {
            // An unauthenticated callback must never write into hookspool's own queues: a
            // foreign item in the subscriptions queue would make the registry unreadable.
            return Err(missing());
        }
        let id = QueueId::new(channel).map_err(|_| missing())?;
        self.store().queue(&id).await?.ok_or_else(missing)
    }

    /// Receives a callback request into its channel: if the channel has a secret, the
    /// request must carry a valid Standard Webhooks signature of `body` (`headers` looks a
    /// header up by its lower-case name; `now` is the receiver's Unix time in seconds), else
    /// nothing is stored. The body is stored as it is, with the sender's `webhook-id` and
    /// `content-type` as metadata ([`META_WEBHOOK_ID`], [`META_CONTENT_TYPE`]); returns its
    /// key once the push is durable. What `POST /callbacks/{channel}` does.
    ///
    /// # Errors
    /// [`Error::InvalidSignature`] (nothing stored); [`Error::ChannelMisconfigured`] if the
    /// channel's secret is not a `whsec_` secret; the store's errors.
    pub async fn receive_signed<H, S>(
        &self,
        channel: &QueueConfig,
        headers: H,
        body: &[u8],
        now: u64,
    ) -> Result<Key>
    where
        H: Fn(&str) -> Option<S>,
        S: AsRef<str>,
    {
        if let Some(secret) = channel_secret(channel) {
            let key = SigningKey::from_whsec(secret.expose())
                .map_err(|_| Error::ChannelMisconfigured(channel.id.to_string()))?;
            verify(&[&key], &headers, body, now).map_err(Error::InvalidSignature)?;
        }
        let mut item = NewItem::new(body.to_vec());
        for (name, meta) in [
            (HEADER_WEBHOOK_ID, META_WEBHOOK_ID),
            ("content-type", META_CONTENT_TYPE),
        ] {
            if let Some(v) = headers(name) {
                item = item.with_metadata(meta, v.as_ref());
            }
        }
        self.receive(&channel.id, item).await
    }

    /// Stores a received callback durably in `channel`'s queue and wakes the callback loop.
    /// Returns the item's key once the push is durable (under the backend's durability).
    ///
    /// # Errors
    /// The engine's `QueueNotFound` if the channel has no queue; the store's validation
    /// errors.
    pub async fn receive(&self, channel: &QueueId, item: NewItem) -> Result<Key> {
        let key = self.store().push(channel, item).await?;
        self.inner.inbound_wake.notify_one();
        Ok(key)
    }

    /// The channel's signing secret, set first (a new `whsec_` secret, stored on the
    /// channel's queue, which is created if need be) if it has no usable one. What a
    /// channel subscribed to another hookspool gives that hookspool to sign with.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for one of hookspool's own queues (`hookspool.` prefix);
    /// the store's errors.
    pub async fn ensure_channel_secret(&self, channel: &QueueId) -> Result<Secret> {
        if channel.as_str().starts_with(INTERNAL_PREFIX) {
            return Err(Error::invalid(format!(
                "{channel} is one of hookspool's own queues, not a callback channel"
            )));
        }
        let store = self.store();
        loop {
            if let Some(mut q) = store.queue(channel).await? {
                let usable =
                    channel_secret(&q).filter(|s| SigningKey::from_whsec(s.expose()).is_ok());
                if let Some(s) = usable {
                    return Ok(s);
                }
                let secret = generate_secret()?;
                set_channel_secret(&mut q, Some(&secret))?;
                store.update_queue(q).await?;
                return Ok(secret);
            }
            let secret = generate_secret()?;
            let mut q =
                QueueConfig::new(channel.clone()).with_retain(self.inner.options.callbacks_retain);
            set_channel_secret(&mut q, Some(&secret))?;
            match store.create_queue(q).await {
                Ok(_) => return Ok(secret),
                // Created meanwhile by someone else: use theirs (next round).
                Err(StoreError::QueueExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A stream of handler results (every call's outcome). Receivers that fall behind by
    /// more than 1,024 results miss the oldest (the items keep their state durably).
    pub fn callback_results(&self) -> tokio::sync::broadcast::Receiver<CallbackResult> {
        self.inner.callback_results.subscribe()
    }

    /// How many handler calls ended each way since the process started:
    /// `[("handled", n), ("retrying", n), ("dead", n)]`, for metrics.
    pub fn callback_stats(&self) -> [(&'static str, u64); 3] {
        let c = &self.inner.callback_counts;
        let get = |i: usize| c[i].load(std::sync::atomic::Ordering::Relaxed);
        [("handled", get(0)), ("retrying", get(1)), ("dead", get(2))]
    }

    /// A callback loop with these settings; add handlers with [`Callbacks::handle`].
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a zero concurrency, timeout or poll interval.
    pub fn callbacks(&self, config: CallbackConfig) -> Result<Callbacks<B>> {
        if config.concurrency == 0 || config.timeout.is_zero() || config.poll_interval.is_zero() {
            return Err(Error::invalid(
                "callback concurrency, timeout and poll interval must be more than zero",
            ));
        }
        Ok(Callbacks {
            hooks: self.clone(),
            config,
            handlers: BTreeMap::new(),
        })
    }
}

impl<B: Backend> Callbacks<B> {
    /// Registers the handler of `channel`, creating the channel's queue (without a secret) if
    /// it does not exist. Give the channel a secret ([`set_channel_secret`], or subscribe it
    /// to another hookspool with `hookspool_client::Client::subscribe_channel`) to require
    /// signed callbacks.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a channel name that is not a valid queue id, one of
    /// hookspool's own queues (`hookspool.` prefix), or one that already has a handler.
    pub async fn handle(mut self, channel: &str, handler: impl Handler) -> Result<Self> {
        let id = QueueId::new(channel)?;
        if channel.starts_with(INTERNAL_PREFIX) {
            return Err(Error::invalid(format!(
                "{channel:?} is one of hookspool's own queues, not a callback channel"
            )));
        }
        if self.handlers.contains_key(&id) {
            return Err(Error::invalid(format!(
                "channel {channel:?} already has a handler"
            )));
        }
        let store = self.hooks.store();
        if store.queue(&id).await?.is_none() {
            let retain = self.hooks.inner.options.callbacks_retain;
            match store
                .create_queue(QueueConfig::new(id.clone()).with_retain(retain))
                .await
            {
                Ok(_) | Err(StoreError::QueueExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.handlers.insert(id, Arc::new(handler));
        Ok(self)
    }

    /// The channels with a handler.
    pub fn channels(&self) -> impl Iterator<Item = &QueueId> {
        self.handlers.keys()
    }

    /// Runs until `shutdown` completes, then stops gracefully: no new claims, handler calls
    /// in flight get up to `shutdown_grace` to finish (their outcome is recorded), the rest
    /// are cut off and go back to pending (the attempt counts).
    ///
    /// On start, items of these channels left in flight by a previous process go back to
    /// pending.
    ///
    /// # Errors
    /// Backend errors that stop the loop (for example a poisoned backend).
    ///
    /// When the storage cannot be reached (a database server down or restarting), the loop
    /// waits (100 ms, doubling up to 5 s) and starts again, taking back its own leases, as
    /// the delivery loop does.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        tokio::pin!(shutdown);
        let mut restarts = crate::restarts::Restarts::new("callback");
        loop {
            let (result, stopping) = self.run_once(shutdown.as_mut()).await;
            if let Some(done) = restarts.after(result, stopping, shutdown.as_mut()).await {
                return done;
            }
        }
    }

    /// One run of the loop, until shutdown (the flag is then `true`: `shutdown` has
    /// completed) or an error.
    async fn run_once(
        &self,
        mut shutdown: std::pin::Pin<&mut (impl Future<Output = ()> + Send)>,
    ) -> (Result<()>, bool) {
        let mut lp = CallbackLoop {
            store: self.hooks.store().clone(),
            hooks: self.hooks.clone(),
            config: self.config.clone(),
            handlers: self.handlers.clone(),
            tasks: JoinSet::new(),
            running: HashMap::new(),
            due: BTreeSet::new(),
            next_channel: 0,
        };
        if let Err(e) = lp.recover().await {
            return (Err(e), false);
        }
        let mut stopping = false;
        let result = loop {
            let claimed = match lp.claim().await {
                Ok(n) => n,
                Err(e) => break Err(e),
            };
            let idle = claimed == 0;
            let wait = lp.idle_wait();
            let step = tokio::select! {
                biased;
                () = shutdown.as_mut() => {
                    stopping = true;
                    break Ok(());
                }
                Some(done) = lp.tasks.join_next_with_id(), if !lp.tasks.is_empty() => {
                    lp.finished(done).await
                }
                () = lp.hooks.inner.inbound_wake.notified(), if idle => Ok(()),
                () = tokio::time::sleep(wait), if idle => Ok(()),
                () = std::future::ready(()), if !idle => Ok(()),
            };
            if let Err(e) = step {
                break Err(e);
            }
        };
        let stopped = lp.stop().await;
        (result.and(stopped), stopping)
    }
}

/// What a handler task hands back.
struct Finished {
    channel: QueueId,
    key: Key,
    attempt: u32,
    result: std::result::Result<(), HandlerError>,
}

struct CallbackLoop<B: Backend> {
    hooks: Hooks<B>,
    store: Store<B>,
    config: CallbackConfig,
    handlers: BTreeMap<QueueId, Arc<dyn ErasedHandler>>,
    tasks: JoinSet<Finished>,
    /// What each task works on: (channel, key, attempt), to record a panic.
    running: HashMap<tokio::task::Id, (QueueId, Key, u32)>,
    /// Times at which items this loop put back become due.
    due: BTreeSet<Timestamp>,
    /// Where the next claim round starts, so no channel starves the others.
    next_channel: usize,
}

impl<B: Backend> CallbackLoop<B> {
    fn leased(&self) -> Expect {
        Expect {
            phase: Some(Phase::IN_FLIGHT),
            lease_owner: Some(self.config.owner.clone()),
        }
    }

    /// Items left in flight by a previous process go back to pending at once, rather than
    /// when their lease runs out.
    async fn recover(&mut self) -> Result<()> {
        for channel in self.handlers.keys() {
            let mut after = None;
            loop {
                let mut page = Page::first(DUMP_PAGE).phase(Phase::IN_FLIGHT);
                page.after = after;
                let items = self.store.fetch_page(channel, page).await?;
                let Some(last) = items.last() else { break };
                after = Some(last.key);
                for item in items {
                    let transition = Transition {
                        expect: self.leased(),
                        action: Action::Move(Move::to(Phase::PENDING)),
                    };
                    ignore_lost(self.store.settle(channel, item.key, transition).await)?;
                }
            }
        }
        Ok(())
    }

    /// Claims due items, channel by channel in rotation, while there is room.
    async fn claim(&mut self) -> Result<usize> {
        let channels: Vec<QueueId> = self.handlers.keys().cloned().collect();
        if channels.is_empty() {
            return Ok(0);
        }
        let mut claimed = 0;
        for i in 0..channels.len() {
            let room = self.config.concurrency.saturating_sub(self.tasks.len());
            if room == 0 {
                break;
            }
            let channel = &channels[(self.next_channel + i) % channels.len()];
            let lease = self.config.timeout.saturating_add(Duration::from_secs(30));
            let items = match self
                .store
                .claim(channel, &self.config.owner, room, lease)
                .await
            {
                Ok(items) => items,
                // Deleted by an operator while we run: nothing to do until it comes back.
                Err(StoreError::QueueNotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            claimed += items.len();
            for item in items {
                self.spawn(channel, item);
            }
        }
        self.next_channel = (self.next_channel + 1) % channels.len();
        Ok(claimed)
    }

    fn spawn(&mut self, channel: &QueueId, item: Item) {
        let Some(handler) = self.handlers.get(channel).cloned() else {
            return;
        };
        let key = item.key;
        let attempt = item.attempts;
        let msg = Inbound::from_item(channel, item);
        let timeout = self.config.timeout;
        let task_channel = channel.clone();
        let handle = self.tasks.spawn(async move {
            let result = match tokio::time::timeout(timeout, handler.call(msg)).await {
                Ok(r) => r,
                Err(_) => Err(HandlerError::retry(format!(
                    "the handler did not finish within {timeout:?}"
                ))),
            };
            Finished {
                channel: task_channel,
                key,
                attempt,
                result,
            }
        });
        self.running
            .insert(handle.id(), (channel.clone(), key, attempt));
    }

    /// Records a finished (or panicked) handler call.
    async fn finished(
        &mut self,
        done: std::result::Result<(tokio::task::Id, Finished), tokio::task::JoinError>,
    ) -> Result<()> {
        let finished = match done {
            Ok((id, f)) => {
                self.running.remove(&id);
                f
            }
            Err(e) => {
                let Some((channel, key, attempt)) = self.running.remove(&e.id()) else {
                    return Ok(());
                };
                let message = if e.is_panic() {
                    "the handler panicked"
                } else {
                    "the handler was cancelled"
                };
                Finished {
                    channel,
                    key,
                    attempt,
                    result: Err(HandlerError::retry(message)),
                }
            }
        };
        let outcome = self.record(&finished).await?;
        match &outcome {
            Some(CallbackOutcome::Retrying { at }) => {
                self.due.insert(*at);
                tracing::warn!(channel = %finished.channel, key = finished.key,
                    attempt = finished.attempt, retry_at = at.as_millis(),
                    error = finished.result.as_ref().err().map(HandlerError::message),
                    "callback handler failed; will retry");
            }
            Some(CallbackOutcome::Dead) => {
                tracing::warn!(channel = %finished.channel, key = finished.key,
                    attempt = finished.attempt,
                    error = finished.result.as_ref().err().map(HandlerError::message),
                    "callback handler failed for good; the item is dead");
            }
            Some(CallbackOutcome::Handled) | None => {}
        }
        if let Some(outcome) = outcome {
            let slot = match outcome {
                CallbackOutcome::Handled => 0,
                CallbackOutcome::Retrying { .. } => 1,
                CallbackOutcome::Dead => 2,
            };
            self.hooks.inner.callback_counts[slot]
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = self.hooks.inner.callback_results.send(CallbackResult {
                channel: finished.channel,
                key: finished.key,
                attempt: finished.attempt,
                outcome,
                error: finished.result.err().map(|e| e.message),
            });
        }
        Ok(())
    }

    /// Writes a call's outcome: ack, retry later, or dead. `None` if the item is no longer
    /// ours (its lease ran out, an operator changed it).
    async fn record(&self, f: &Finished) -> Result<Option<CallbackOutcome>> {
        let error = match &f.result {
            Ok(()) => {
                return ignore_lost(self.store.ack(&f.channel, f.key, &self.config.owner).await)
                    .map(|r| r.map(|()| CallbackOutcome::Handled));
            }
            Err(e) => e,
        };
        let next = if error.retry {
            self.config
                .schedule
                .next_delay(f.attempt, None, random_unit())
        } else {
            None
        };
        let (action, outcome) = match next {
            Some(delay) => {
                let at = self.store.now().saturating_add(delay);
                (
                    Move::to(Phase::PENDING)
                        .not_before(at)
                        .error(&error.message),
                    CallbackOutcome::Retrying { at },
                )
            }
            None => (
                Move::to(Phase::DEAD).error(&error.message),
                CallbackOutcome::Dead,
            ),
        };
        let transition = Transition {
            expect: self.leased(),
            action: action.into(),
        };
        ignore_lost(self.store.settle(&f.channel, f.key, transition).await)
            .map(|r| r.map(|()| outcome))
    }

    /// How long the idle loop waits: until the next retry it knows of, or one poll interval.
    fn idle_wait(&mut self) -> Duration {
        let now = self.store.now();
        self.due = self
            .due
            .split_off(&Timestamp(now.as_millis().saturating_add(1)));
        let poll = self.config.poll_interval;
        self.due.first().map_or(poll, |at| {
            Duration::from_millis(at.as_millis() - now.as_millis()).min(poll)
        })
    }

    async fn stop(mut self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.config.shutdown_grace;
        while !self.tasks.is_empty() {
            match tokio::time::timeout_at(deadline, self.tasks.join_next_with_id()).await {
                Ok(Some(done)) => self.finished(done).await?,
                Ok(None) | Err(_) => break,
            }
        }
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        // Calls cut off by the deadline: their items are still leased to us.
        for (channel, key, _) in std::mem::take(&mut self.running).into_values() {
            let transition = Transition {
                expect: self.leased(),
                action: Action::Move(Move::to(Phase::PENDING).error("cut off by shutdown")),
            };
            ignore_lost(self.store.settle(&channel, key, transition).await)?;
        }
        Ok(self.store.sync().await?)
    }
}

/// `Ok(None)` for the errors that mean the item is no longer ours to record.
fn ignore_lost<T>(r: hookspool::Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(
            StoreError::ItemNotFound { .. }
            | StoreError::NotLeaseOwner { .. }
            | StoreError::PhaseConflict { .. }
            | StoreError::QueueNotFound(_),
        ) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
