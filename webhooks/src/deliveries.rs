//! Deliveries as stored and as the API shows them: ids, the attempt log, inspection and
//! replay.

use hookspool::{
    Action, Backend, DUMP_PAGE, Error as StoreError, Expect, Item, Key, Move, Page, Phase,
    Timestamp, Transition,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hooks::{
    CANCELLED, GONE, Hooks, M_ATTEMPT_PREFIX, M_EVENT, M_REPLAY_BASE, M_REQUEST_ID, M_SUBSCRIPTION,
    M_URL, attempts_made,
};

/// How many of the newest deliveries [`Hooks::recent_deliveries`] reads at most.
pub const RECENT_SCAN: usize = 2_000;
/// Deliveries per page read by [`Hooks::recent_deliveries`].
const RECENT_PAGE: usize = 250;

/// A delivery's id: the `webhook-id` of every request for it, stable across retries and
/// restarts. It encodes the delivery's key in [`crate::DELIVERIES_QUEUE`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeliveryId(String);

/// `msg_` and 24 hex digits, as [`DeliveryId::parse`] takes it.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for DeliveryId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .pattern(Some("^msg_[0-9A-Fa-f]{24}$"))
            .examples(["msg_f637f5da0000000000000001"])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for DeliveryId {}

impl DeliveryId {
    pub(crate) fn new(nonce: &str, key: Key) -> Self {
        // `format!("msg_{nonce}{key:016x}")`, written out: it runs twice per delivery, and
        // the formatting machinery cost more than everything else here together.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut id = String::with_capacity(4 + nonce.len() + 16);
        id.push_str("msg_");
        id.push_str(nonce);
        for shift in (0..16).rev() {
            id.push(char::from(HEX[((key >> (shift * 4)) & 0xf) as usize]));
        }
        DeliveryId(id)
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

    /// The delivery's key in the deliveries queue whose id nonce is `nonce`; `None` for an
    /// id made by another deliveries queue.
    pub(crate) fn key(&self, nonce: &str) -> Option<Key> {
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

impl TryFrom<String> for DeliveryId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        DeliveryId::parse(&s)
    }
}

impl From<DeliveryId> for String {
    fn from(id: DeliveryId) -> String {
        id.0
    }
}

/// One recorded attempt of a delivery: how it is kept in the delivery's record, and how the
/// HTTP API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Attempt {
    /// 1 for the first attempt.
    pub number: u32,
    /// When the request was sent (ms since the Unix epoch).
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub at: Timestamp,
    /// The response status, if a response came.
    pub status: Option<u16>,
    /// The error class and message, if the attempt failed.
    pub error: Option<String>,
    /// How long the request took, in milliseconds.
    pub duration_ms: u64,
    /// The start of the response body (at most 1 KiB, lossy UTF-8).
    #[serde(default)]
    pub response: String,
}

/// A delivery: what was sent where, its state and its attempts. What
/// [`Hooks::delivery`] returns, and what the HTTP API sends (`GET /deliveries/{id}`).
///
/// In JSON the payload is the `payload` field, as JSON, when it is valid JSON (payloads
/// published over HTTP always are); otherwise the field is absent, and a delivery read back
/// from JSON has an empty payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = DeliveryView))]
pub struct Delivery {
    /// Its id (`msg_…`): the `webhook-id` of every request for it.
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
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub state: Phase,
    /// When the next attempt is due, for a pending delivery (ms since the Unix epoch).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>))]
    pub next_attempt: Option<Timestamp>,
    /// When it was fired (ms since the Unix epoch).
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub created_at: Timestamp,
    /// The last error.
    pub last_error: Option<String>,
    /// Every recorded attempt, oldest first.
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    /// The payload, byte for byte as fired.
    #[serde(
        default,
        skip_serializing_if = "json_payload::is_not_json",
        with = "json_payload"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub payload: Vec<u8>,
}

/// A payload in JSON as the JSON text it is (never re-encoded: key order and spacing kept).
mod json_payload {
    use serde::de::Error as _;
    use serde::ser::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::value::RawValue;

    /// Whether the payload is absent from JSON: it is not valid JSON text.
    #[allow(clippy::ptr_arg)] // serde's `skip_serializing_if` hands us `&Vec<u8>`
    pub(super) fn is_not_json(payload: &Vec<u8>) -> bool {
        raw(payload).is_none()
    }

    fn raw(payload: &[u8]) -> Option<&RawValue> {
        std::str::from_utf8(payload)
            .ok()
            .and_then(|text| serde_json::from_str::<&RawValue>(text).ok())
    }

    /// Shown on one line, spacing removed, everything else as stored.
    #[allow(clippy::ptr_arg)] // serde's `with` hands us `&Vec<u8>`
    pub(super) fn serialize<S: Serializer>(payload: &Vec<u8>, s: S) -> Result<S::Ok, S::Error> {
        let raw = raw(payload).ok_or_else(|| S::Error::custom("the payload is not JSON"))?;
        RawValue::from_string(crate::json::compact_json(raw.get()))
            .map_err(S::Error::custom)?
            .serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let raw = Box::<RawValue>::deserialize(d).map_err(D::Error::custom)?;
        Ok(raw.get().as_bytes().to_vec())
    }
}

impl<B: Backend> Hooks<B> {
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
    /// [`Error::DeliveryNotFound`] if there is no such delivery.
    pub async fn attempts(&self, id: &DeliveryId) -> Result<Vec<Attempt>> {
        self.delivery(id)
            .await?
            .map(|d| d.attempts)
            .ok_or_else(|| Error::DeliveryNotFound(id.to_string()))
    }

    /// Sends a dead (or gone, or cancelled) delivery again: it goes back to pending, due now,
    /// with a fresh retry schedule; its attempt log is kept. Returns the delivery as it is
    /// now.
    ///
    /// # Errors
    /// [`Error::DeliveryNotFound`] if there is no such delivery; the engine's
    /// `PhaseConflict` if it is not dead, gone or cancelled.
    pub async fn replay(&self, id: &DeliveryId) -> Result<Delivery> {
        let missing = || Error::DeliveryNotFound(id.to_string());
        let key = id.key(&self.inner.nonce).ok_or_else(missing)?;
        let store = &self.inner.store;
        let q = &self.inner.deliveries_queue;
        let item = store.fetch_key(q, key).await?.ok_or_else(missing)?;
        let phase = item.phase.clone();
        if phase != Phase::DEAD && phase.as_str() != GONE && phase.as_str() != CANCELLED {
            return Err(StoreError::PhaseConflict {
                key,
                expected: Phase::DEAD,
                actual: phase,
            }
            .into());
        }
        let mut metadata = item.metadata;
        let done = attempts_made(&metadata);
        metadata.insert(M_REPLAY_BASE.to_owned(), done.to_string());
        let transition = Transition {
            // Only from the phase it was read in: a concurrent replay or delete wins.
            expect: Expect {
                phase: Some(phase),
                lease_owner: None,
            },
            action: Action::Move(Move::to(Phase::PENDING).metadata(metadata)),
        };
        let item = match store.update(q, key, transition).await {
            Err(StoreError::ItemNotFound { .. }) => return Err(missing()),
            result => result?,
        };
        self.inner.wake.notify_one();
        Ok(self.view(item))
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
                Ok(_) => n += 1,
                // Replayed, changed or removed meanwhile: not ours to replay.
                Err(
                    Error::DeliveryNotFound(_) | Error::Store(StoreError::PhaseConflict { .. }),
                ) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// The newest deliveries, newest first: at most `limit`, and only `subscription`'s if
    /// given. Reads at most [`RECENT_SCAN`] of the newest deliveries to find them (a
    /// subscription with few recent deliveries may get fewer than `limit`), so the cost
    /// does not grow with the queue.
    pub async fn recent_deliveries(
        &self,
        subscription: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        let store = &self.inner.store;
        let q = &self.inner.deliveries_queue;
        let mut found = Vec::new();
        let mut after = None;
        let mut scanned = 0;
        while found.len() < limit && scanned < RECENT_SCAN {
            let mut page = Page::first(RECENT_PAGE.min(RECENT_SCAN - scanned)).reverse();
            page.after = after;
            let items = store.fetch_page(q, page).await?;
            let Some(last) = items.last() else { break };
            after = Some(last.key);
            scanned += items.len();
            for item in items {
                let wanted = subscription.is_none_or(|s| {
                    item.metadata.get(M_SUBSCRIPTION).map(String::as_str) == Some(s)
                });
                if wanted && found.len() < limit {
                    found.push(self.view(item));
                }
            }
        }
        Ok(found)
    }

    /// The delivery an item of the deliveries queue stands for.
    pub(crate) fn view(&self, item: Item) -> Delivery {
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
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on failure
mod tests {
    use super::*;

    /// The id written out by hand is the `msg_{nonce}{key:016x}` it replaced, parses, and
    /// gives its key back, at both ends of the key range.
    #[test]
    fn an_id_is_its_nonce_and_its_key_in_hex() {
        for key in [0, 1, 0xabc, 0x0123_4567_89ab_cdef, u64::MAX] {
            let id = DeliveryId::new("0a1b2c3d", key);
            assert_eq!(id.as_str(), format!("msg_0a1b2c3d{key:016x}"));
            assert_eq!(DeliveryId::parse(id.as_str()).unwrap(), id);
            assert_eq!(id.key("0a1b2c3d"), Some(key));
        }
    }
}
