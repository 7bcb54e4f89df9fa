//! Firing events: one delivery per target, all stored in one atomic push before the call
//! returns; the delivery loop sends them in the background. A fire can carry an
//! idempotency key, so that a retried request fires nothing twice.

use std::future::Future;

use hookspool::{Backend, Error as StoreError, NewItem};

use crate::deliveries::DeliveryId;
use crate::error::{Error, Result};
use crate::hooks::{Hooks, M_EVENT, M_REQUEST_ID, M_SUBSCRIPTION, M_URL, random_hex};
use crate::idempotency::{self, Record};
use crate::subscription::{check_event_name, check_id};
use crate::subscriptions::parse_url;

/// The event name of [`Hooks::fire_test`]'s deliveries.
pub const TEST_EVENT: &str = "hookspool.test";

/// Gives the target URLs of an event at fire time, for [`Hooks::fire_resolved`] (e.g. from
/// the application's own database).
pub trait UrlResolver: Send + Sync {
    /// The URLs that should receive `event`.
    fn resolve(&self, event: &str) -> impl Future<Output = Result<Vec<String>>> + Send;
}

/// Options of [`Hooks::fire_with`]: whose subscriptions an event reaches, the request id it
/// carries, and the idempotency key that makes a retried fire a no-op.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FireOptions {
    /// Reach only this owner's subscriptions (`None`: every matching subscription).
    pub owner: Option<String>,
    /// Send this request id with every request (`x-request-id`); see
    /// [`FireOptions::request_id`].
    pub request_id: Option<RequestId>,
    /// A key naming this request: firing again with the same key (and the same event, owner
    /// and payload) while the key lives ([`crate::HooksOptions::idempotency_ttl`], 24 hours
    /// by default) fires nothing and returns the first fire's delivery ids; the same key
    /// with anything else is [`Error::IdempotencyKeyReused`]. 1 to 255 visible ASCII
    /// characters.
    pub idempotency_key: Option<String>,
}

/// The request id of [`FireOptions`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestId {
    /// This id (1 to 128 characters from `A–Z a–z 0–9 _ - . : /`).
    Given(String),
    /// A new one, `req_` and 20 hex digits, returned in [`Fired::request_id`].
    Generate,
}

impl FireOptions {
    /// Reaches only `owner`'s subscriptions.
    #[must_use]
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Sends this request id with every request.
    #[must_use]
    pub fn request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(RequestId::Given(id.into()));
        self
    }

    /// Sends a new request id with every request (returned in [`Fired::request_id`]).
    #[must_use]
    pub fn generate_request_id(mut self) -> Self {
        self.request_id = Some(RequestId::Generate);
        self
    }

    /// Makes the fire idempotent under `key`.
    #[must_use]
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// What [`Hooks::fire_with`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fired {
    /// One delivery per subscription reached, in subscription id order.
    pub delivery_ids: Vec<DeliveryId>,
    /// The request id every request carries, if one was asked for.
    pub request_id: Option<String>,
    /// Whether this is the result of an earlier fire with the same idempotency key (nothing
    /// was fired now).
    pub replayed: bool,
}

impl<B: Backend> Hooks<B> {
    /// Fires an event to every enabled subscription that wants it. Returns the delivery ids
    /// (none if nobody is subscribed) once every delivery is stored, in one atomic write;
    /// the HTTP requests happen in the background ([`crate::Deliverer`]).
    ///
    /// # Errors
    /// [`Error::InvalidEvent`]; the engine's `PayloadTooLarge`, or `BatchTooLarge` (more
    /// matching subscriptions than the store's batch limit); nothing is stored then.
    pub async fn fire(&self, event: &str, payload: impl Into<Vec<u8>>) -> Result<Vec<DeliveryId>> {
        let fired = self
            .fire_with(event, payload, FireOptions::default())
            .await?;
        Ok(fired.delivery_ids)
    }

    /// Fires an event to one owner's subscriptions only.
    pub async fn notify(
        &self,
        owner: &str,
        event: &str,
        payload: impl Into<Vec<u8>>,
    ) -> Result<Vec<DeliveryId>> {
        let fired = self
            .fire_with(event, payload, FireOptions::default().owner(owner))
            .await?;
        Ok(fired.delivery_ids)
    }

    /// Fires an event whose every request carries a request id (`x-request-id`: the id
    /// given, or a new one), so that the receiver can tie it to the request that caused it.
    /// Returns the request id and the delivery ids.
    pub async fn emit(
        &self,
        event: &str,
        payload: impl Into<Vec<u8>>,
        request_id: Option<&str>,
    ) -> Result<(String, Vec<DeliveryId>)> {
        let options = match request_id {
            Some(r) => FireOptions::default().request_id(r),
            None => FireOptions::default().generate_request_id(),
        };
        let fired = self.fire_with(event, payload, options).await?;
        let request_id = fired
            .request_id
            .ok_or_else(|| Error::internal("a fire asked for a request id returned none"))?;
        Ok((request_id, fired.delivery_ids))
    }

    /// Fires an event with options: an owner, a request id, an idempotency key (see
    /// [`FireOptions`]).
    ///
    /// # Errors
    /// As [`Hooks::fire`]; [`Error::InvalidInput`] for a bad owner, request id or
    /// idempotency key; [`Error::IdempotencyKeyReused`].
    pub async fn fire_with(
        &self,
        event: &str,
        payload: impl Into<Vec<u8>>,
        options: FireOptions,
    ) -> Result<Fired> {
        let payload = payload.into();
        check_event_name(event)?;
        if let Some(owner) = &options.owner {
            check_id("owner", owner)?;
        }
        let request_id = match options.request_id {
            Some(RequestId::Given(r)) => {
                check_id("request id", &r)?;
                Some(r)
            }
            Some(RequestId::Generate) => Some(format!("req_{}", random_hex(10)?)),
            None => None,
        };
        let owner = options.owner.as_deref();
        let Some(key) = options.idempotency_key else {
            let delivery_ids = self
                .fire_matching(event, &payload, owner, request_id.as_deref())
                .await?;
            return Ok(Fired {
                delivery_ids,
                request_id,
                replayed: false,
            });
        };
        idempotency::check_idempotency_key(&key)?;
        let fingerprint = idempotency::fingerprint(event, owner, &payload);
        let fire = || async {
            let delivery_ids = self
                .fire_matching(event, &payload, owner, request_id.as_deref())
                .await?;
            Ok(Record {
                fingerprint: fingerprint.clone(),
                delivery_ids,
                request_id: request_id.clone(),
            })
        };
        let (record, replayed) = self.inner.idempotency.run(self, &key, fire).await?;
        if record.fingerprint != fingerprint {
            return Err(Error::IdempotencyKeyReused { key });
        }
        Ok(Fired {
            delivery_ids: record.delivery_ids,
            request_id: record.request_id,
            replayed,
        })
    }

    /// Sends one test event to one subscription, whatever events it asked for: event
    /// [`TEST_EVENT`], payload `{"type":"hookspool.test","subscription":ID,"sent_at":MS}`,
    /// signed and retried like any other delivery. For checking that a receiver is reachable
    /// and verifies signatures (the console's "send a test event").
    ///
    /// # Errors
    /// [`Error::SubscriptionNotFound`]; [`Error::InvalidInput`] if the subscription is
    /// disabled (the delivery would wait until it is enabled); as [`Hooks::fire`].
    pub async fn fire_test(&self, subscription: &str) -> Result<DeliveryId> {
        let Some(registered) = self.registered(subscription) else {
            return Err(Error::SubscriptionNotFound(subscription.to_owned()));
        };
        if !registered.sub.enabled {
            return Err(Error::invalid(format!(
                "subscription {subscription} is disabled: enable it to send a test event"
            )));
        }
        let payload = serde_json::json!({
            "type": TEST_EVENT,
            "subscription": subscription,
            "sent_at": self.inner.store.now().0,
        })
        .to_string();
        let item = NewItem::new(payload.as_bytes())
            .with_metadata(M_EVENT, TEST_EVENT)
            .with_metadata(M_SUBSCRIPTION, subscription);
        let mut ids = self.push_deliveries(vec![item], payload.len()).await?;
        ids.pop()
            .ok_or_else(|| Error::internal("a push of one delivery returned no id"))
    }

    async fn fire_matching(
        &self,
        event: &str,
        payload: &[u8],
        owner: Option<&str>,
        request_id: Option<&str>,
    ) -> Result<Vec<DeliveryId>> {
        let targets: Vec<String> = self
            .read_subs()
            .values()
            .filter(|r| r.sub.wants(event, owner))
            .map(|r| r.sub.id.clone())
            .collect();
        let items = targets
            .into_iter()
            .map(|id| {
                let mut item = NewItem::new(payload)
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

    /// Fires an event to URLs directly, without subscriptions. Signed with
    /// [`crate::HooksOptions::direct_secret`] if set.
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
    /// database), as [`Hooks::fire_to`] does.
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
            return Err(StoreError::PayloadTooLarge { size, limit }.into());
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
}
