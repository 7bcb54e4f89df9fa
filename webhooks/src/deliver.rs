//! The delivery loop: claims due deliveries, POSTs them signed, records each attempt with
//! the delivery's next state in one atomic update, and reports outcomes.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::time::Duration;

use tokio::task::JoinSet;

use hookspool::{
    Action, Backend, DUMP_PAGE, Error as StoreError, Expect, Item, Key, Move, Page, Phase,
    Timestamp, Transition,
};

use crate::deliveries::DeliveryId;
use crate::error::{Error, Result};
use crate::hooks::{
    CANCELLED, GONE, Hooks, M_ATTEMPT_PREFIX, M_ATTEMPTS, M_EVENT, M_REPLAY_BASE, M_REQUEST_ID,
    M_SUBSCRIPTION, M_URL, attempts_made, random_unit,
};
use crate::net::{DeliveryClient, HttpConfig, TargetUrl};
use crate::retry::RetrySchedule;
use crate::signing::{SignInput, SignatureScheme, SigningKey, sign};
use crate::subscription::{Subscription, parse_key};

/// Most attempt records kept in a delivery's log (the oldest are dropped beyond this).
pub const MAX_ATTEMPT_RECORDS: usize = 48;
/// How much of a response body is kept in the attempt log.
pub const RESPONSE_PREFIX: usize = 1024;
/// How long a delivery of a disabled subscription waits before it is looked at again.
const DISABLED_RECHECK: Duration = Duration::from_mins(1);

/// Settings of the delivery loop.
#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    /// Most requests in flight at once (default 32).
    pub concurrency: usize,
    /// Most requests in flight to one subscription at once, unless the subscription sets its
    /// own `max_in_flight` (default 4).
    pub per_subscription: usize,
    /// Most deliveries claimed in one go (default 64).
    pub claim_batch: usize,
    /// How long a claimed delivery stays leased (default 5 minutes). Must be longer than the
    /// HTTP timeout.
    pub lease: Duration,
    /// How often to look for due deliveries when idle (default 500 ms). Firing and replaying
    /// wake the loop at once, and it wakes on its own when a retry it scheduled falls due.
    pub poll_interval: Duration,
    /// The retry schedule (default [`RetrySchedule::standard`]).
    pub schedule: RetrySchedule,
    /// Whether 4xx answers other than 410 and 429, and 3xx answers (redirects are not
    /// followed), are retried (default `true`); if not, they end the delivery as dead.
    pub retry_client_errors: bool,
    /// HTTP client settings: timeouts, network policy (SSRF), response cap.
    pub http: HttpConfig,
    /// How long a graceful stop waits for requests in flight (default 10 s).
    pub shutdown_grace: Duration,
    /// The lease owner name (default `hookspool-deliverer`). On storage shared by several
    /// processes, give each process a name of its own that stays the same across its
    /// restarts (`hookspool serve` uses `hookspool-deliverer@NODE-ID`): a restarted process
    /// then takes back its own deliveries at once.
    pub owner: String,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            concurrency: 32,
            per_subscription: 4,
            claim_batch: 64,
            lease: Duration::from_mins(5),
            poll_interval: Duration::from_millis(500),
            schedule: RetrySchedule::standard(),
            retry_client_errors: true,
            http: HttpConfig::default(),
            shutdown_grace: Duration::from_secs(10),
            owner: "hookspool-deliverer".to_owned(),
        }
    }
}

/// What happened to a delivery after one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutcomeKind {
    /// A 2xx answer: done.
    Delivered,
    /// Failed; the next attempt is due at this time.
    Retrying {
        /// When the next attempt is due.
        at: Timestamp,
    },
    /// Failed for the last time (or could not be retried): dead, kept for replay.
    Dead,
    /// `410 Gone`: the subscription was removed and the delivery ended.
    Gone,
    /// The subscription was removed before the delivery was sent.
    Cancelled,
}

/// One attempt's result, as sent on the results stream ([`Hooks::results`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryOutcome {
    /// The delivery.
    pub delivery_id: DeliveryId,
    /// Its subscription (`None` for deliveries fired to a URL directly).
    pub subscription: Option<String>,
    /// The event name.
    pub event: String,
    /// The attempt number (1 for the first; 0 when nothing was sent).
    pub attempt: u32,
    /// The response status, if a response came.
    pub status: Option<u16>,
    /// The error class (`timeout`, `connect`, `dns`, `forbidden`, `http_503`, …) if it failed.
    pub error: Option<String>,
    /// How long the request took.
    pub duration: Duration,
    /// What happens next.
    pub kind: OutcomeKind,
}

impl DeliveryOutcome {
    /// Whether this is the delivery's last outcome (nothing more will be attempted unless it
    /// is replayed).
    pub fn is_final(&self) -> bool {
        !matches!(self.kind, OutcomeKind::Retrying { .. })
    }
}

/// The delivery loop. Build it with [`Hooks::deliverer`] and run it with [`Deliverer::run`].
///
/// One loop per store and process: on start it takes back every delivery left in flight by
/// a previous process (a crash), so two loops on one store would take each other's
/// deliveries. On storage shared by several processes
/// ([`hookspool::Capabilities::shared`]), each process runs one loop under an owner name of
/// its own ([`DeliveryConfig::owner`]), and takes back only the deliveries leased to that
/// name; other processes' leases are left to expire.
pub struct Deliverer<B: Backend> {
    hooks: Hooks<B>,
    config: DeliveryConfig,
    client: std::sync::Arc<DeliveryClient>,
}

impl<B: Backend> Clone for Deliverer<B> {
    fn clone(&self) -> Self {
        Deliverer {
            hooks: self.hooks.clone(),
            config: self.config.clone(),
            client: std::sync::Arc::clone(&self.client),
        }
    }
}

impl<B: Backend> std::fmt::Debug for Deliverer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliverer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What a finished request task tells the loop.
struct Done {
    key: Key,
    subscription: Option<String>,
    /// When the delivery will be retried, if it will.
    retry_at: Option<Timestamp>,
    /// Whether its subscription is strict FIFO (a retry then blocks what follows).
    fifo: bool,
}

impl<B: Backend> Deliverer<B> {
    pub(super) fn new(hooks: Hooks<B>, config: DeliveryConfig) -> Result<Self> {
        if config.concurrency == 0 || config.per_subscription == 0 || config.claim_batch == 0 {
            return Err(Error::invalid(
                "concurrency, per_subscription and claim_batch must be at least 1",
            ));
        }
        if config.lease <= config.http.timeout {
            return Err(Error::invalid(format!(
                "the lease ({:?}) must be longer than the HTTP timeout ({:?})",
                config.lease, config.http.timeout
            )));
        }
        let client = DeliveryClient::new(config.http.clone())
            .map_err(|e| Error::internal(format!("cannot build the HTTP client: {e}")))?;
        Ok(Deliverer {
            hooks,
            config,
            client: std::sync::Arc::new(client),
        })
    }

    /// Runs until `shutdown` completes, then stops gracefully: no new claims, requests in
    /// flight get up to `shutdown_grace` to finish (their outcome is recorded), the rest are
    /// released back to pending without counting an attempt.
    ///
    /// On start, deliveries left in flight by a previous process go back to pending, and the
    /// schedule of each continues from its recorded attempt count.
    ///
    /// # Errors
    /// Backend errors that stop the loop (for example a poisoned backend).
    ///
    /// When the storage cannot be reached ([`Error::is_unavailable`]: a database server
    /// down or restarting), the loop gives back what it can, waits (100 ms, doubling up to
    /// 5 s) and starts again, taking back its own leases; it stops only on shutdown or on
    /// another error.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        tokio::pin!(shutdown);
        let mut restarts = crate::restarts::Restarts::new("delivery");
        loop {
            let (result, stopping) = self.clone().run_once(shutdown.as_mut()).await;
            if let Some(done) = restarts.after(result, stopping, shutdown.as_mut()).await {
                return done;
            }
        }
    }

    /// One run of the loop, until shutdown (then the flag is `true`: `shutdown` has
    /// completed and must not be polled again) or an error.
    async fn run_once(
        self,
        mut shutdown: std::pin::Pin<&mut (impl Future<Output = ()> + Send)>,
    ) -> (Result<()>, bool) {
        let mut lp = match Loop::new(self).await {
            Ok(lp) => lp,
            Err(e) => return (Err(e), false),
        };
        let mut stopping = false;
        let result = loop {
            lp.start_waiting();
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
                    lp.finished_all(done).await
                }
                () = lp.d.hooks.inner.wake.notified(), if idle => Ok(()),
                () = tokio::time::sleep(wait), if idle => Ok(()),
                () = std::future::ready(()), if !idle => Ok(()),
            };
            if let Err(e) = step {
                break Err(e);
            }
        };
        // Even when the loop ends on an error, give back what it holds (best effort: the
        // error may be the backend's).
        let stopped = lp.stop().await;
        (result.and(stopped), stopping)
    }
}

/// The loop's state: requests running, deliveries held back, strict-FIFO blocks.
struct Loop<B: Backend> {
    d: Deliverer<B>,
    tasks: JoinSet<Done>,
    /// Keys claimed and not yet finished (running or waiting).
    held: HashSet<Key>,
    running: HashMap<String, usize>,
    waiting: BTreeMap<String, VecDeque<Item>>,
    /// Strict-FIFO subscriptions whose head delivery failed: (head key, retry time).
    blocked: HashMap<String, (Key, Timestamp)>,
    /// What each running request task works on, to clean up after a task that panicked.
    spawned: HashMap<tokio::task::Id, (Key, Option<String>)>,
    /// Times at which deliveries this loop put back become due: the idle loop wakes then
    /// instead of waiting for the next poll.
    due: std::collections::BTreeSet<Timestamp>,
}

impl<B: Backend> Loop<B> {
    async fn new(d: Deliverer<B>) -> Result<Self> {
        let mut lp = Loop {
            d,
            tasks: JoinSet::new(),
            held: HashSet::new(),
            running: HashMap::new(),
            waiting: BTreeMap::new(),
            blocked: HashMap::new(),
            spawned: HashMap::new(),
            due: std::collections::BTreeSet::new(),
        };
        lp.recover().await?;
        Ok(lp)
    }

    fn hooks(&self) -> &Hooks<B> {
        &self.d.hooks
    }

    /// After a crash: deliveries still in flight go back to pending (no attempt is counted:
    /// the attempt count lives in the metadata, written only with a recorded outcome), and
    /// strict-FIFO subscriptions with a failed head are blocked again. On storage shared by
    /// several processes, only deliveries leased to this loop's own owner name (this node,
    /// before it restarted) go back: another node's leases are live until they expire, and
    /// then any node's claim takes them.
    async fn recover(&mut self) -> Result<()> {
        let store = self.hooks().store().clone();
        let q = self.hooks().inner.deliveries_queue.clone();
        let now = store.now();
        let shared = store.backend().capabilities().shared;
        for phase in [Phase::IN_FLIGHT, Phase::PENDING] {
            let mut after = None;
            loop {
                let mut page = Page::first(DUMP_PAGE).phase(phase.clone());
                page.after = after;
                let items = store.fetch_page(&q, page).await?;
                let Some(last) = items.last() else { break };
                after = Some(last.key);
                for item in items {
                    if phase == Phase::IN_FLIGHT {
                        let expect = if shared {
                            if item
                                .lease
                                .as_ref()
                                .is_none_or(|l| l.owner != self.d.config.owner)
                            {
                                continue;
                            }
                            self.leased()
                        } else {
                            Expect {
                                phase: Some(Phase::IN_FLIGHT),
                                lease_owner: None,
                            }
                        };
                        let transition = Transition {
                            expect,
                            action: Action::Move(Move::to(Phase::PENDING)),
                        };
                        match store.settle(&q, item.key, transition).await {
                            Ok(())
                            | Err(
                                StoreError::PhaseConflict { .. }
                                | StoreError::ItemNotFound { .. }
                                | StoreError::NotLeaseOwner { .. },
                            ) => {}
                            Err(e) => return Err(e.into()),
                        }
                    } else if item.not_before > now
                        && let Some(sub) = sub_of(&item).and_then(|s| self.hooks().subscription(s))
                        && sub.strict_fifo
                        && attempts_made(&item.metadata) > 0
                    {
                        let entry = self
                            .blocked
                            .entry(sub.id.clone())
                            .or_insert((item.key, item.not_before));
                        if item.key < entry.0 {
                            *entry = (item.key, item.not_before);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// How long the idle loop waits: until the next retry it knows of, or one poll interval.
    fn idle_wait(&mut self) -> Duration {
        let now = self.hooks().store().now();
        // Times already reached were just claimed (or someone else took the delivery).
        self.due = self
            .due
            .split_off(&Timestamp(now.as_millis().saturating_add(1)));
        let poll = self.d.config.poll_interval;
        self.due.first().map_or(poll, |at| {
            Duration::from_millis(at.as_millis() - now.as_millis()).min(poll)
        })
    }

    fn in_use(&self) -> usize {
        self.tasks.len() + self.waiting.values().map(VecDeque::len).sum::<usize>()
    }

    /// Claims as many due deliveries as there is room for; returns how many.
    async fn claim(&mut self) -> Result<usize> {
        let room = self.d.config.concurrency.saturating_sub(self.in_use());
        if room == 0 {
            return Ok(0);
        }
        let items = self
            .hooks()
            .store()
            .claim(
                &self.hooks().inner.deliveries_queue,
                &self.d.config.owner,
                room.min(self.d.config.claim_batch),
                self.d.config.lease,
            )
            .await?;
        let n = items.len();
        for item in items {
            self.admit(item).await?;
        }
        Ok(n)
    }

    /// Decides what to do with a claimed delivery: start it, hold it, or put it back.
    async fn admit(&mut self, item: Item) -> Result<()> {
        if !self.held.insert(item.key) {
            // Our own lease ran out while it waited and we claimed it again: already ours.
            return Ok(());
        }
        let Some(sub_id) = sub_of(&item).map(str::to_owned) else {
            self.spawn(item, None);
            return Ok(());
        };
        let Some(sub) = self.hooks().subscription(&sub_id) else {
            self.settle_unsent(
                item,
                Move::to(phase(CANCELLED)).error("subscription removed"),
                OutcomeKind::Cancelled,
            )
            .await?;
            return Ok(());
        };
        if !sub.enabled {
            let at = self.hooks().store().now().saturating_add(DISABLED_RECHECK);
            self.release(item, Some(at)).await?;
            return Ok(());
        }
        if let Some((head, until)) = self.blocked.get(&sub.id).copied() {
            if item.key > head {
                self.release(item, Some(until)).await?;
                return Ok(());
            }
            if item.key == head {
                self.blocked.remove(&sub.id);
            }
        }
        self.waiting
            .entry(sub.id.clone())
            .or_default()
            .push_back(item);
        Ok(())
    }

    /// Starts waiting deliveries of every subscription that has room.
    fn start_waiting(&mut self) {
        let subs: Vec<String> = self.waiting.keys().cloned().collect();
        for id in subs {
            let limit = self.limit_of(&id);
            loop {
                let running = self.running.get(&id).copied().unwrap_or(0);
                if running >= limit {
                    break;
                }
                let Some(queue) = self.waiting.get_mut(&id) else {
                    break;
                };
                // Strict FIFO: oldest key first.
                let next = if queue.len() > 1 {
                    let (i, _) = queue
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, it)| it.key)
                        .unwrap_or((0, &queue[0]));
                    queue.remove(i)
                } else {
                    queue.pop_front()
                };
                let Some(item) = next else { break };
                let sub = self.hooks().subscription(&id);
                self.spawn(item, sub);
            }
            if self.waiting.get(&id).is_some_and(VecDeque::is_empty) {
                self.waiting.remove(&id);
            }
        }
    }

    fn limit_of(&self, sub_id: &str) -> usize {
        match self.hooks().subscription(sub_id) {
            Some(s) if s.strict_fifo => 1,
            Some(s) => s
                .max_in_flight
                .map_or(self.d.config.per_subscription, |n| n as usize),
            None => self.d.config.per_subscription,
        }
    }

    fn spawn(&mut self, item: Item, sub: Option<Subscription>) {
        if let Some(s) = &sub {
            *self.running.entry(s.id.clone()).or_insert(0) += 1;
        }
        let ctx = Attempter {
            hooks: self.hooks().clone(),
            client: self.d.client.clone(),
            config: self.d.config.clone(),
        };
        let key = item.key;
        let sub_id = sub.as_ref().map(|s| s.id.clone());
        let handle = self
            .tasks
            .spawn(async move { ctx.attempt(item, sub).await });
        self.spawned.insert(handle.id(), (key, sub_id));
    }

    /// Handles a finished request task, and every other one that finished meanwhile: the
    /// next claim then fills all the room they left in one go (a claim costs a durable
    /// write, so one per finished request would bound the loop by the disk).
    async fn finished_all(
        &mut self,
        first: std::result::Result<(tokio::task::Id, Done), tokio::task::JoinError>,
    ) -> Result<()> {
        self.finished(first).await?;
        while let Some(done) = self.tasks.try_join_next_with_id() {
            self.finished(done).await?;
        }
        Ok(())
    }

    async fn finished(
        &mut self,
        done: std::result::Result<(tokio::task::Id, Done), tokio::task::JoinError>,
    ) -> Result<()> {
        let done = match done {
            Ok((id, done)) => {
                self.spawned.remove(&id);
                done
            }
            // A request task that panicked (or was aborted): free its slot and put the
            // delivery back to pending, so that it is tried again.
            Err(e) => {
                tracing::error!(error = %e, "a delivery task failed");
                if let Some((key, sub)) = self.spawned.remove(&e.id()) {
                    self.held.remove(&key);
                    if let Some(n) = sub.and_then(|s| self.running.get_mut(&s)) {
                        *n = n.saturating_sub(1);
                    }
                    self.release_key(key, None).await?;
                }
                return Ok(());
            }
        };
        self.held.remove(&done.key);
        if let Some(at) = done.retry_at {
            self.due.insert(at);
        }
        if let Some(sub) = &done.subscription {
            if let Some(n) = self.running.get_mut(sub) {
                *n = n.saturating_sub(1);
            }
            if let Some(until) = done.retry_at.filter(|_| done.fifo) {
                self.blocked.insert(sub.clone(), (done.key, until));
                // Hold back what waits behind the failed head.
                if let Some(queue) = self.waiting.remove(sub) {
                    for item in queue {
                        self.release(item, Some(until)).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Puts a claimed delivery back to pending without counting an attempt.
    async fn release(&mut self, item: Item, at: Option<Timestamp>) -> Result<()> {
        self.release_key(item.key, at).await
    }

    async fn release_key(&mut self, key: Key, at: Option<Timestamp>) -> Result<()> {
        self.held.remove(&key);
        if let Some(at) = at {
            self.due.insert(at);
        }
        let mut mv = Move::to(Phase::PENDING);
        mv.not_before = at;
        let transition = Transition {
            expect: self.leased(),
            action: Action::Move(mv),
        };
        ignore_lost_lease(
            self.hooks()
                .store()
                .settle(&self.hooks().inner.deliveries_queue, key, transition)
                .await,
        )
    }

    async fn settle_unsent(&mut self, item: Item, mv: Move, kind: OutcomeKind) -> Result<()> {
        self.held.remove(&item.key);
        let transition = Transition {
            expect: self.leased(),
            action: Action::Move(mv),
        };
        ignore_lost_lease(
            self.hooks()
                .store()
                .settle(&self.hooks().inner.deliveries_queue, item.key, transition)
                .await,
        )?;
        let outcome = DeliveryOutcome {
            delivery_id: DeliveryId::new(&self.hooks().inner.nonce, item.key),
            subscription: sub_of(&item).map(str::to_owned),
            event: item.metadata.get(M_EVENT).cloned().unwrap_or_default(),
            attempt: 0,
            status: None,
            error: Some("subscription removed".to_owned()),
            duration: Duration::ZERO,
            kind,
        };
        self.hooks().announce(outcome);
        Ok(())
    }

    fn leased(&self) -> Expect {
        Expect {
            phase: Some(Phase::IN_FLIGHT),
            lease_owner: Some(self.d.config.owner.clone()),
        }
    }

    /// Graceful stop: wait for requests in flight up to the grace period, then release
    /// everything still held.
    async fn stop(mut self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.d.config.shutdown_grace;
        while !self.tasks.is_empty() {
            match tokio::time::timeout_at(deadline, self.tasks.join_next_with_id()).await {
                Ok(Some(done)) => self.finished(done).await?,
                Ok(None) | Err(_) => break,
            }
        }
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        let waiting: Vec<Item> = std::mem::take(&mut self.waiting)
            .into_values()
            .flatten()
            .collect();
        for item in waiting {
            self.release(item, None).await?;
        }
        // Requests cut off by the deadline: their items are still leased to us.
        let cut: Vec<Key> = self.held.drain().collect();
        let q = self.hooks().inner.deliveries_queue.clone();
        for key in cut {
            let transition = Transition {
                expect: self.leased(),
                action: Action::Move(Move::to(Phase::PENDING)),
            };
            ignore_lost_lease(self.hooks().store().settle(&q, key, transition).await)?;
        }
        Ok(self.hooks().store().sync().await?)
    }
}

/// Runs one attempt of one delivery; shared by the request tasks.
struct Attempter<B: Backend> {
    hooks: Hooks<B>,
    client: std::sync::Arc<DeliveryClient>,
    config: DeliveryConfig,
}

impl<B: Backend> Attempter<B> {
    async fn attempt(self, item: Item, sub: Option<Subscription>) -> Done {
        let key = item.key;
        let subscription = sub.as_ref().map(|s| s.id.clone());
        let fifo = sub.as_ref().is_some_and(|s| s.strict_fifo);
        if let Some(why) = malformed(&item, sub.as_ref()) {
            // Trying again cannot help, and it must not hold up the others.
            self.quarantine(key, &why).await;
            return Done {
                key,
                subscription,
                retry_at: None,
                fifo,
            };
        }
        let retry_at = match self.try_attempt(item, sub.as_ref()).await {
            Ok(at) => at,
            Err(e) => {
                // Not recorded: the lease runs out and the delivery is tried again.
                tracing::error!(key, error = %e, "could not record a delivery attempt");
                None
            }
        };
        Done {
            key,
            subscription,
            retry_at,
            fifo,
        }
    }

    /// Moves a delivery whose record cannot be used to [`Phase::CORRUPT`], with why, and
    /// says so in the log.
    async fn quarantine(&self, key: Key, error: &str) {
        tracing::error!(key, error = %error, "delivery record malformed: quarantined");
        let transition = Transition {
            expect: Expect {
                phase: Some(Phase::IN_FLIGHT),
                lease_owner: Some(self.config.owner.clone()),
            },
            action: Action::Move(Move::to(Phase::CORRUPT).error(format!("quarantined: {error}"))),
        };
        let q = &self.hooks.inner.deliveries_queue;
        if let Err(e) = self.hooks.store().settle(q, key, transition).await {
            tracing::error!(key, error = %e, "could not quarantine a delivery");
        }
    }

    async fn try_attempt(
        &self,
        item: Item,
        sub: Option<&Subscription>,
    ) -> Result<Option<Timestamp>> {
        let store = self.hooks.store();
        let inner = &self.hooks.inner;
        let id = DeliveryId::new(&inner.nonce, item.key);
        let event = item.metadata.get(M_EVENT).cloned().unwrap_or_default();
        let url = match (sub, item.metadata.get(M_URL)) {
            (Some(s), _) => s.url.clone(),
            (None, Some(u)) => TargetUrl::parse(u).map_err(|e| Error::InvalidUrl {
                url: u.clone(),
                reason: e.to_string(),
            })?,
            (None, None) => {
                return Err(StoreError::corrupted(format!("delivery {id} has no target")).into());
            }
        };
        let started = store.now();
        let headers = self.headers(&item, sub, &id, &event, started)?;
        let number = attempts_made(&item.metadata) + 1;
        let clock = std::time::Instant::now();
        let result = self.client.post(&url, &headers, item.payload.clone()).await;
        let elapsed = clock.elapsed();

        let (status, error, response, retry_after) = match &result {
            Ok(r) => (
                Some(r.status),
                (!(200..300).contains(&r.status)).then(|| format!("http_{}", r.status)),
                String::from_utf8_lossy(&r.body_prefix[..r.body_prefix.len().min(RESPONSE_PREFIX)])
                    .into_owned(),
                r.retry_after,
            ),
            Err(e) => (
                None,
                Some(format!("{}: {e}", e.class())),
                String::new(),
                None,
            ),
        };
        let kind = match &result {
            Ok(r) if (200..300).contains(&r.status) => OutcomeKind::Delivered,
            Ok(r) if r.status == 410 => OutcomeKind::Gone,
            Ok(r) => {
                // 429 and 5xx always; other 4xx and 3xx (redirects are not followed) by setting.
                let retryable =
                    r.status == 429 || r.status >= 500 || self.config.retry_client_errors;
                self.next(retryable, number, &item, retry_after)
            }
            Err(e) => self.next(e.is_retryable(), number, &item, None),
        };

        let record = super::Attempt {
            number,
            at: started,
            status,
            error: error.clone(),
            duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            response,
        };
        let mv = settle(&item, &kind, record);
        let transition = Transition {
            expect: Expect {
                phase: Some(Phase::IN_FLIGHT),
                lease_owner: Some(self.config.owner.clone()),
            },
            action: Action::Move(mv),
        };
        // The outcome is durable before anyone hears of it.
        ignore_lost_lease(
            store
                .settle(&inner.deliveries_queue, item.key, transition)
                .await,
        )?;
        if kind == OutcomeKind::Gone
            && let Some(s) = sub
        {
            self.hooks.unsubscribe(&s.id).await?;
        }
        let retry_at = match &kind {
            OutcomeKind::Retrying { at } => Some(*at),
            _ => None,
        };
        let outcome = DeliveryOutcome {
            delivery_id: id,
            subscription: sub.map(|s| s.id.clone()),
            event,
            attempt: number,
            status,
            error,
            duration: elapsed,
            kind,
        };
        tracing::debug!(delivery = %outcome.delivery_id, attempt = number, status = ?outcome.status, kind = ?outcome.kind, "delivery attempt");
        self.hooks.announce(outcome);
        Ok(retry_at)
    }

    fn next(
        &self,
        retryable: bool,
        number: u32,
        item: &Item,
        retry_after: Option<Duration>,
    ) -> OutcomeKind {
        if !retryable {
            return OutcomeKind::Dead;
        }
        let base: u32 = item
            .metadata
            .get(M_REPLAY_BASE)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        match self.config.schedule.next_delay(
            number.saturating_sub(base),
            retry_after,
            random_unit(),
        ) {
            Some(delay) => OutcomeKind::Retrying {
                at: self.hooks.store().now().saturating_add(delay),
            },
            None => OutcomeKind::Dead,
        }
    }

    /// The request headers: content type, event name, the subscription's extra headers, the
    /// request id (emit), and the signature headers of the scheme.
    fn headers(
        &self,
        item: &Item,
        sub: Option<&Subscription>,
        id: &DeliveryId,
        event: &str,
        now: Timestamp,
    ) -> Result<Vec<(String, String)>> {
        let mut headers = vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("x-hookspool-event".to_owned(), event.to_owned()),
        ];
        if let Some(r) = item.metadata.get(M_REQUEST_ID) {
            headers.push(("x-request-id".to_owned(), r.clone()));
        }
        let (scheme, keys): (SignatureScheme, Vec<SigningKey>) = if let Some(s) = sub {
            for (k, v) in &s.headers {
                headers.push((k.to_ascii_lowercase(), v.clone()));
            }
            (s.scheme, s.signing_keys(now)?)
        } else {
            let Some(secret) = &self.hooks.inner.options.direct_secret else {
                // Unsigned, but still with the id receivers deduplicate on.
                headers.push(("webhook-id".to_owned(), id.to_string()));
                headers.push((
                    "webhook-timestamp".to_owned(),
                    (now.as_millis() / 1000).to_string(),
                ));
                return Ok(headers);
            };
            let scheme = SignatureScheme::StandardWebhooks;
            (scheme, vec![parse_key(scheme, secret.expose())?])
        };
        let refs: Vec<&SigningKey> = keys.iter().collect();
        let input = SignInput {
            delivery_id: id.as_str(),
            event,
            timestamp: now.as_millis() / 1000,
            body: &item.payload,
        };
        // The id and the event name were checked when the delivery was made.
        let signed = sign(scheme, &refs, &input).map_err(|e| Error::internal(e.to_string()))?;
        headers.extend(signed.into_iter().map(|(k, v)| (k.to_owned(), v)));
        Ok(headers)
    }
}

/// The move that records an attempt: the next phase, the attempt count and the attempt log
/// in the metadata, and the error.
fn settle(item: &Item, kind: &OutcomeKind, record: super::Attempt) -> Move {
    let mut metadata = item.metadata.clone();
    metadata.insert(M_ATTEMPTS.to_owned(), record.number.to_string());
    metadata.insert(
        format!("{M_ATTEMPT_PREFIX}{:04}", record.number),
        serde_json::to_string(&record).unwrap_or_default(),
    );
    trim_attempts(&mut metadata);
    let mv = match kind {
        OutcomeKind::Delivered => Move::to(Phase::DONE),
        OutcomeKind::Retrying { at } => Move::to(Phase::PENDING).not_before(*at),
        OutcomeKind::Dead => Move::to(Phase::DEAD),
        OutcomeKind::Gone => Move::to(phase(GONE)),
        OutcomeKind::Cancelled => Move::to(phase(CANCELLED)),
    };
    let mut mv = mv.metadata(metadata);
    // The error stays the last one recorded when this attempt has none. Passing it along
    // (rather than leaving it unset, which keeps it too) spares a backend that keeps both
    // on disk a read of the old ones (the journal's notes).
    mv.error = record.error.or_else(|| item.last_error.clone());
    mv
}

/// Why a delivery's record cannot be sent, ever: it names no subscription and no URL, or a
/// URL that is not one. (A subscription that is gone is not this: such deliveries end as
/// `gone`.)
fn malformed(item: &Item, sub: Option<&Subscription>) -> Option<String> {
    if sub.is_some() || sub_of(item).is_some() {
        return None;
    }
    match item.metadata.get(M_URL) {
        None => Some("the delivery record names no subscription and no URL".to_owned()),
        Some(u) => TargetUrl::parse(u)
            .err()
            .map(|e| format!("the delivery record's URL {u:?} is not valid: {e}")),
    }
}

fn sub_of(item: &Item) -> Option<&str> {
    item.metadata.get(M_SUBSCRIPTION).map(String::as_str)
}

fn phase(name: &str) -> Phase {
    Phase::new(name).unwrap_or(Phase::DEAD)
}

/// Keeps the attempt log within [`MAX_ATTEMPT_RECORDS`] entries (oldest dropped).
fn trim_attempts(metadata: &mut BTreeMap<String, String>) {
    let records: Vec<String> = metadata
        .keys()
        .filter(|k| k.starts_with(M_ATTEMPT_PREFIX))
        .cloned()
        .collect();
    if records.len() > MAX_ATTEMPT_RECORDS {
        for k in &records[..records.len() - MAX_ATTEMPT_RECORDS] {
            metadata.remove(k);
        }
    }
}

/// A settle that finds the lease gone (it expired and the item was taken back) is not an
/// error of the loop: the delivery is tried again by whoever holds it now.
fn ignore_lost_lease(r: hookspool::Result<()>) -> Result<()> {
    match r {
        Ok(()) => Ok(()),
        Err(
            e @ (StoreError::NotLeaseOwner { .. }
            | StoreError::PhaseConflict { .. }
            | StoreError::ItemNotFound { .. }),
        ) => {
            tracing::warn!(error = %e, "delivery changed under the loop; leaving it");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
