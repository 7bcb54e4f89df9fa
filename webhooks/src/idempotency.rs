//! Publish idempotency: a fire with an idempotency key stores what it did under the key, so
//! that the same request again (a client retrying after a timeout) fires nothing and gets the
//! first answer. Keys expire ([`crate::HooksOptions::idempotency_ttl`], 24 hours by
//! default): a key reused after that is a new request, and its record is deleted, so memory
//! and disk hold only the keys of the last day.
//!
//! Records live in [`IDEMPOTENCY_QUEUE`], one item each (the record as JSON, the key in the
//! metadata), pushed in time order; in memory, a map from key to record and a queue of keys
//! by age. Expired keys are dropped from the front of that queue, a batch at a time, at the
//! next keyed fire: the cost is proportional to what expires, never a scan.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::Duration;

use hookspool::{
    Action, Backend, DUMP_PAGE, Expect, Key, NewItem, Page, QueueConfig, QueueId, Store, Timestamp,
    Transition,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::deliveries::DeliveryId;
use crate::error::{Error, Result};
use crate::hooks::Hooks;

/// The queue that holds idempotency records (one item per key).
pub const IDEMPOTENCY_QUEUE: &str = "hookspool.idempotency";
/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;
/// How long a key names its request unless [`crate::HooksOptions::idempotency_ttl`] says
/// otherwise (as Stripe's keys).
pub const DEFAULT_IDEMPOTENCY_TTL: Duration = Duration::from_hours(24);
/// The `Backend::once` space of idempotency keys on shared storage.
const SHARED_SPACE: &str = "hookspool.idempotency";
/// Metadata key of a record item: the idempotency key.
const M_KEY: &str = "key";

/// What a fire with an idempotency key did, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// SHA-256 of event, owner and payload: a key reused for a different request is refused.
    pub(crate) fingerprint: String,
    pub(crate) delivery_ids: Vec<DeliveryId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) request_id: Option<String>,
}

/// A key's record, once the first fire with it has succeeded.
type Cell = Arc<OnceCell<Record>>;

/// The keys of the last `ttl`, loaded from [`IDEMPOTENCY_QUEUE`] at first use.
#[derive(Debug)]
pub(crate) struct Idempotency {
    ttl: Duration,
    state: OnceCell<StdMutex<Keys>>,
}

#[derive(Debug, Default)]
struct Keys {
    /// Each key has its own cell, so two fires with the same key run one after the other
    /// (the second waits for the first and gets its result) while other keys proceed.
    by_key: HashMap<String, Cell>,
    /// Stored records by age: `(created_at, key, item key)`, oldest first.
    ages: VecDeque<(Timestamp, String, Key)>,
    /// Records found at load that a later record of the same key replaced (left by a crash
    /// between an expiry and its deletion): deleted with the next expiry.
    stale: Vec<Key>,
}

impl Idempotency {
    pub(crate) fn new(ttl: Duration) -> Self {
        Idempotency {
            ttl,
            state: OnceCell::new(),
        }
    }

    /// Runs `fire` once per live key: the first call with `key` fires and stores the record;
    /// a later call gets the stored record and `true` ("replayed"). A failed fire stores
    /// nothing, and the next call with the key tries again.
    pub(crate) async fn run<B, F, Fut>(
        &self,
        hooks: &Hooks<B>,
        key: &str,
        fire: F,
    ) -> Result<(Record, bool)>
    where
        B: Backend,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<Record>> + Send,
    {
        let store = hooks.store();
        if store.backend().capabilities().shared {
            return self.run_shared(store, key, fire).await;
        }
        let queue = queue_id()?;
        let keys = self.state.get_or_try_init(|| load(store, &queue)).await?;
        self.expire(store, &queue, keys).await?;
        let cell = {
            let mut keys = keys.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(keys.by_key.entry(key.to_owned()).or_default())
        };
        let mut fresh = false;
        let record = cell
            .get_or_try_init(|| async {
                fresh = true;
                let record = fire().await?;
                // Crash window: the deliveries are stored but the key is not yet; a retry
                // after a crash here fires again (at-least-once, as without a key).
                let bytes = encode(&record)?;
                let item = NewItem::new(bytes).with_metadata(M_KEY, key);
                let at = store.now();
                let item_key = store.push(&queue, item).await?;
                keys.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .ages
                    .push_back((at, key.to_owned(), item_key));
                Ok::<_, Error>(record)
            })
            .await?;
        Ok((record.clone(), !fresh))
    }

    /// [`Idempotency::run`] on storage shared by several processes: the backend's
    /// first-writer-wins record ([`Backend::once`]) decides, so that a key fires once across
    /// every process, and a process waits for another's fire with the same key.
    async fn run_shared<B, F, Fut>(
        &self,
        store: &Store<B>,
        key: &str,
        fire: F,
    ) -> Result<(Record, bool)>
    where
        B: Backend,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<Record>> + Send,
    {
        let write = || async { encode(&fire().await?) };
        let once: crate::subscriptions::BoxedOnce<'_> =
            Box::pin(
                store
                    .backend()
                    .once(SHARED_SPACE, key, self.ttl, store.now(), write),
            );
        let Some(result) = once.await else {
            return Err(Error::internal(
                "the backend is shared by several processes but keeps no first-writer-wins \
                 records (Backend::once), which idempotency keys need",
            ));
        };
        let (bytes, replayed) = result?;
        let record = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Store(hookspool::Error::corrupted(format!(
                "idempotency record of key {key:?}: {e}"
            )))
        })?;
        Ok((record, replayed))
    }

    /// Forgets the keys older than the TTL and deletes their records (one batched update).
    async fn expire<B: Backend>(
        &self,
        store: &Store<B>,
        queue: &QueueId,
        keys: &StdMutex<Keys>,
    ) -> Result<()> {
        let now = store.now();
        let expired: Vec<Key> = {
            let mut keys = keys.lock().unwrap_or_else(PoisonError::into_inner);
            let mut out = std::mem::take(&mut keys.stale);
            while let Some((at, _, _)) = keys.ages.front()
                && at.saturating_add(self.ttl) <= now
                && out.len() < store.limits().max_batch
            {
                let Some((_, key, item)) = keys.ages.pop_front() else {
                    break;
                };
                keys.by_key.remove(&key);
                out.push(item);
            }
            out
        };
        if expired.is_empty() {
            return Ok(());
        }
        let removals = expired
            .into_iter()
            .map(|k| {
                let t = Transition {
                    expect: Expect::default(),
                    action: Action::Remove,
                };
                (k, t)
            })
            .collect();
        // A record already gone (deleted by hand) fails only its own entry: fine.
        store.update_many(queue, removals).await?;
        Ok(())
    }
}

/// Checks an idempotency key: 1 to [`MAX_IDEMPOTENCY_KEY`] visible ASCII characters.
///
/// # Errors
/// [`Error::InvalidInput`] saying so.
pub fn check_idempotency_key(key: &str) -> Result<()> {
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(Error::invalid(format!(
            "an idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
        )));
    }
    Ok(())
}

/// Hex SHA-256 over the request's parts, each length-prefixed so no two requests collide
/// by shifting bytes between fields. A JSON payload is compared as a JSON value (objects
/// with sorted keys, no spacing), so a retry that spaces or orders it differently is still
/// the same request; any other payload byte for byte.
pub(crate) fn fingerprint(event: &str, owner: Option<&str>, payload: &[u8]) -> String {
    let canonical = serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| serde_json::to_vec(&v).ok());
    let payload = canonical.as_deref().unwrap_or(payload);
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

fn queue_id() -> Result<QueueId> {
    Ok(QueueId::new(IDEMPOTENCY_QUEUE)?)
}

/// Reads every record of the queue (creating it if need be) into memory.
async fn load<B: Backend>(store: &Store<B>, queue: &QueueId) -> Result<StdMutex<Keys>> {
    if store.queue(queue).await?.is_none() {
        match store.create_queue(QueueConfig::new(queue.clone())).await {
            // Another `Hooks` over the same store created it meanwhile: fine.
            Ok(_) | Err(hookspool::Error::QueueExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut found = Vec::new();
    let mut after = None;
    loop {
        let mut page = Page::first(DUMP_PAGE);
        page.after = after;
        let items = store.fetch_page(queue, page).await?;
        let Some(last) = items.last() else { break };
        after = Some(last.key);
        for item in items {
            let bad = || {
                hookspool::Error::corrupted(format!(
                    "idempotency record {} (queue {IDEMPOTENCY_QUEUE}) cannot be read",
                    item.key
                ))
            };
            let key = item.metadata.get(M_KEY).ok_or_else(bad)?.clone();
            let record: Record = serde_json::from_slice(&item.payload).map_err(|_| bad())?;
            found.push((item.created_at, key, item.key, record));
        }
    }
    // Pushed in time order, but a clock may have stepped back between two pushes.
    found.sort_by_key(|(at, _, k, _)| (*at, *k));
    let latest: HashMap<&str, Key> = found
        .iter()
        .map(|(_, key, k, _)| (key.as_str(), *k))
        .collect();
    let latest: HashMap<String, Key> = latest
        .into_iter()
        .map(|(key, k)| (key.to_owned(), k))
        .collect();
    let mut keys = Keys::default();
    for (at, key, item_key, record) in found {
        if latest.get(&key) == Some(&item_key) {
            keys.ages.push_back((at, key.clone(), item_key));
            keys.by_key.insert(key, Arc::new(OnceCell::from(record)));
        } else {
            keys.stale.push(item_key);
        }
    }
    Ok(StdMutex::new(keys))
}

/// A record as stored.
fn encode(record: &Record) -> Result<Vec<u8>> {
    serde_json::to_vec(record)
        .map_err(|e| Error::internal(format!("cannot encode an idempotency record: {e}")))
}
