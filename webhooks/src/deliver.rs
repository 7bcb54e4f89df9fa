//! The delivery loop: claims due deliveries, POSTs them signed ([`attempt`]), records each
//! attempt with the delivery's next state in one atomic update, and reports outcomes. The
//! outcomes of requests that finish close together are recorded together ([`settler`]): one
//! `update_many`, so one durable write for the group rather than one per delivery.

mod attempt;
mod removed;
mod settler;

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
use crate::hooks::{CANCELLED, Hooks, M_EVENT, M_SUBSCRIPTION, attempts_made};
use crate::net::{DeliveryClient, HttpConfig};
use crate::retry::RetrySchedule;
use crate::subscription::Registered;
use attempt::Attempter;

/// Most attempt records kept in a delivery's log (the oldest are dropped beyond this).
pub const MAX_ATTEMPT_RECORDS: usize = 48;
/// How much of a response body is kept in the attempt log.
pub const RESPONSE_PREFIX: usize = 1024;
/// How long a delivery of a disabled subscription waits before it is looked at again.
const DISABLED_RECHECK: Duration = Duration::from_mins(1);

/// Settings of the delivery loop.
#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    /// Most requests in flight at once (default 64).
    pub concurrency: usize,
    /// Most requests in flight to one subscription at once, unless the subscription sets its
    /// own `max_in_flight` (default 16).
    pub per_subscription: usize,
    /// Most deliveries claimed in one go (default 64).
    pub claim_batch: usize,
    /// How long a claimed delivery stays leased (default 5 minutes). Must be longer than the
    /// HTTP timeout.
    pub lease: Duration,
    /// How often to look for due deliveries when idle (default 500 ms). Firing and replaying
    /// wake the loop at once, and it wakes on its own when a retry it scheduled falls due.
    pub poll_interval: Duration,
    /// After a claim that found fewer due deliveries than it had room for, the least time
    /// from its start to the start of the next claim (default zero: claim again at once).
    /// Under a steady stream of events the loop otherwise claims back to back, a few
    /// deliveries each time; a pause lets each claim take what arrived meanwhile, at the
    /// cost of up to this much delay. Worth it where a claim costs a round trip to a
    /// database (`hookspool serve --backend postgres` sets 5 ms); a claim that came back
    /// full is followed at once.
    pub claim_pause: Duration,
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
            concurrency: 64,
            per_subscription: 16,
            claim_batch: 64,
            lease: Duration::from_mins(5),
            poll_interval: Duration::from_millis(500),
            claim_pause: Duration::ZERO,
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
        // The claim under way, if any. A claim waits for a durable write, so it runs beside
        // everything else: requests that finish meanwhile free their slots and the deliveries
        // waiting for them start, instead of all of it stopping for the disk.
        let mut claiming: Option<Claiming> = None;
        // The last claim found nothing due: wait for a wake-up, a finished request or the
        // next poll before claiming again.
        let mut idle = false;
        // The last claim came back with room to spare: no claim starts before this time
        // (`DeliveryConfig::claim_pause` after it started).
        let mut pause_until: Option<tokio::time::Instant> = None;
        // What the claim under way asked for, and when it started.
        let mut asked = (0, tokio::time::Instant::now());
        let result = loop {
            lp.start_waiting();
            let now = tokio::time::Instant::now();
            let paused = pause_until.is_some_and(|until| until > now);
            if claiming.is_none()
                && !idle
                && !paused
                && let Some((claim, limit)) = lp.start_claim()
            {
                claiming = Some(claim);
                asked = (limit, now);
            }
            let wait = lp.idle_wait();
            let step = tokio::select! {
                biased;
                () = shutdown.as_mut() => {
                    stopping = true;
                    break Ok(());
                }
                claimed = next_claim(&mut claiming), if claiming.is_some() => {
                    claiming = None;
                    match claimed {
                        Ok(items) => {
                            idle = items.is_empty();
                            let pause = lp.d.config.claim_pause;
                            pause_until = (items.len() < asked.0 && !pause.is_zero())
                                .then(|| asked.1 + pause);
                            lp.admit_all(items).await
                        }
                        Err(e) => Err(e.into()),
                    }
                }
                Some(done) = lp.tasks.join_next_with_id(), if !lp.tasks.is_empty() => {
                    idle = false;
                    lp.finished_all(done).await
                }
                () = lp.d.hooks.inner.wake.notified(), if claiming.is_none() => {
                    idle = false;
                    Ok(())
                }
                () = tokio::time::sleep(wait), if claiming.is_none() => {
                    idle = false;
                    Ok(())
                }
                () = tokio::time::sleep_until(pause_until.unwrap_or(now)),
                    if claiming.is_none() && paused && !idle => Ok(()),
            };
            if let Err(e) = step {
                break Err(e);
            }
        };
        // A claim still under way leased its deliveries to us: hold them, so that the stop
        // below gives them back at once rather than at the end of their lease.
        if let Some(claim) = claiming.take()
            && let Ok(items) = claim.await
        {
            lp.held.extend(items.iter().map(|item| item.key));
        }
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
    /// Where finished requests send their outcomes, and the settler that records them.
    settles: Option<settler::Settles>,
    settler: Option<tokio::task::JoinHandle<()>>,
    /// The settings, shared by the request tasks.
    config: std::sync::Arc<DeliveryConfig>,
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
    /// Subscriptions found removed on shared storage, and up to which key.
    removed: removed::Removed,
}

impl<B: Backend> Loop<B> {
    async fn new(d: Deliverer<B>) -> Result<Self> {
        let (settles, settler) = settler::spawn(d.hooks.clone());
        let config = std::sync::Arc::new(d.config.clone());
        let mut lp = Loop {
            d,
            tasks: JoinSet::new(),
            settles: Some(settles),
            settler: Some(settler),
            config,
            held: HashSet::new(),
            running: HashMap::new(),
            waiting: BTreeMap::new(),
            blocked: HashMap::new(),
            spawned: HashMap::new(),
            due: std::collections::BTreeSet::new(),
            removed: removed::Removed::default(),
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
                        && let Some(r) = sub_of(&item).and_then(|s| self.hooks().registered(s))
                        && r.sub.strict_fifo
                        && attempts_made(&item.metadata) > 0
                    {
                        let entry = self
                            .blocked
                            .entry(r.sub.id.clone())
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

    /// Starts a claim of as many due deliveries as there is room for (none when there is no
    /// room), and says how many it asked for. The claim owns what it needs, so the loop goes
    /// on while it waits for the disk.
    fn start_claim(&self) -> Option<(Claiming, usize)> {
        let room = self.d.config.concurrency.saturating_sub(self.in_use());
        if room == 0 {
            return None;
        }
        let store = self.hooks().store().clone();
        let queue = self.hooks().inner.deliveries_queue.clone();
        let owner = self.d.config.owner.clone();
        let limit = room.min(self.d.config.claim_batch);
        let lease = self.d.config.lease;
        let claim: Claiming =
            Box::pin(async move { store.claim_without_sync(&queue, &owner, limit, lease).await });
        Some((claim, limit))
    }

    /// Takes in what a claim returned. Requests that finished while it ran only made room,
    /// so what was claimed still fits within the limits.
    ///
    /// On storage shared with other processes, a delivery may name a subscription that
    /// another process made after this one last loaded them (it reloads on that process's
    /// notice, or every second): the subscriptions are read again before any delivery is
    /// cancelled as one of a removed subscription, unless an earlier read showed it to be
    /// one (see [`removed`]). If that read fails, the claimed deliveries are held, so that
    /// the loop gives them back as it stops.
    async fn admit_all(&mut self, items: Vec<Item>) -> Result<()> {
        let unknown = |item: &Item| {
            sub_of(item).is_some_and(|s| {
                self.hooks().registered(s).is_none() && !self.removed.covers(s, item.key)
            })
        };
        if items.iter().any(unknown)
            && let Err(e) = self.read_subs_again(&items).await
        {
            self.held.extend(items.iter().map(|item| item.key));
            return Err(e);
        }
        for item in items {
            self.admit(item).await?;
        }
        Ok(())
    }

    /// On shared storage: reads the deliveries queue's highest key, then every
    /// subscription, and notes the subscriptions of `items` that the read did not find as
    /// removed up to that key.
    async fn read_subs_again(&mut self, items: &[Item]) -> Result<()> {
        let hooks = self.hooks().clone();
        if !hooks.store().backend().capabilities().shared {
            return Ok(());
        }
        let newest = Page {
            reverse: true,
            ..Page::first(1)
        };
        let newest = hooks
            .store()
            .fetch_page(&hooks.inner.deliveries_queue, newest)
            .await?;
        hooks.reload_shared_subs().await?;
        if let Some(up_to) = newest.first().map(|item| item.key) {
            for sub in items.iter().filter_map(sub_of) {
                if hooks.registered(sub).is_none() {
                    self.removed.note(sub, up_to);
                }
            }
        }
        Ok(())
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
        let Some(registered) = self.hooks().registered(&sub_id) else {
            self.settle_unsent(
                item,
                Move::to(phase(CANCELLED)).error("subscription removed"),
                OutcomeKind::Cancelled,
            )
            .await?;
            return Ok(());
        };
        let sub = &registered.sub;
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
        if self.waiting.is_empty() {
            return;
        }
        // Taken out while its deliveries start (`spawn` does not look at it), so that no
        // subscription id is copied to walk it.
        let mut waiting = std::mem::take(&mut self.waiting);
        for (id, queue) in &mut waiting {
            let registered = self.hooks().registered(id);
            let sub = registered.as_deref().map(|r| &r.sub);
            let fifo = sub.is_some_and(|s| s.strict_fifo);
            let limit = match sub {
                Some(s) if s.strict_fifo => 1,
                Some(s) => s
                    .max_in_flight
                    .map_or(self.d.config.per_subscription, |n| n as usize),
                None => self.d.config.per_subscription,
            };
            while self.running.get(id).copied().unwrap_or(0) < limit {
                // Strict FIFO: oldest key first (a retried delivery may wait behind later
                // ones). Others start in the order they were claimed.
                let next = if fifo && queue.len() > 1 {
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
                self.spawn(item, registered.clone());
            }
        }
        waiting.retain(|_, queue| !queue.is_empty());
        self.waiting = waiting;
    }

    fn spawn(&mut self, item: Item, sub: Option<std::sync::Arc<Registered>>) {
        let Some(settles) = self.settles.clone() else {
            // Only while stopping, when nothing is spawned.
            return;
        };
        if let Some(r) = &sub {
            match self.running.get_mut(&r.sub.id) {
                Some(n) => *n += 1,
                None => {
                    self.running.insert(r.sub.id.clone(), 1);
                }
            }
        }
        let ctx = Attempter {
            hooks: self.hooks().clone(),
            client: self.d.client.clone(),
            config: std::sync::Arc::clone(&self.config),
            settles,
        };
        let key = item.key;
        let sub_id = sub.as_ref().map(|r| r.sub.id.clone());
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
        // A task that finished before it was aborted handed its outcome to the settler.
        while let Some(done) = self.tasks.join_next_with_id().await {
            if done.is_ok() {
                self.finished(done).await?;
            }
        }
        // Every outcome handed over is recorded before anything held is let go: a delivery
        // that was sent is never put back as if it had not been.
        self.settles = None;
        if let Some(settler) = self.settler.take()
            && let Err(e) = settler.await
        {
            tracing::error!(error = %e, "the delivery settler failed");
        }
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

/// A claim under way (see [`Loop::start_claim`]).
type Claiming = std::pin::Pin<Box<dyn Future<Output = hookspool::Result<Vec<Item>>> + Send>>;

/// What the claim under way returns; never ready when there is none.
async fn next_claim(claiming: &mut Option<Claiming>) -> hookspool::Result<Vec<Item>> {
    match claiming {
        Some(claim) => claim.await,
        None => std::future::pending().await,
    }
}

fn sub_of(item: &Item) -> Option<&str> {
    item.metadata.get(M_SUBSCRIPTION).map(String::as_str)
}

fn phase(name: &str) -> Phase {
    Phase::new(name).unwrap_or(Phase::DEAD)
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
