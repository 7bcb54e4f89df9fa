//! Items: how one shows in an answer, pushes, phase changes, and replays.

use super::*;

/// The lease of an in-flight item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaseView {
    /// The consumer that claimed the item.
    pub owner: String,
    /// When the lease runs out.
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub until: Timestamp,
}

/// An item, as the API, `hookspool fetch --json` and `hookspool dump` show it. The payload
/// is `payload` when it is UTF-8 (embedded as JSON when it parses as JSON, compacted onto
/// one line with its key order kept; else a JSON string), `payload_base64` (standard
/// alphabet, padded) otherwise.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ItemView {
    /// Its key, increasing within the queue.
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub key: Key,
    /// Its phase.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub phase: Phase,
    /// How many times it was claimed.
    pub attempts: u32,
    /// When it was pushed.
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub created_at: Timestamp,
    /// When it last changed.
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub updated_at: Timestamp,
    /// Not handed out before this time.
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub not_before: Timestamp,
    /// Present while the item is in flight.
    pub lease: Option<LeaseView>,
    /// The last recorded error.
    pub last_error: Option<String>,
    /// Its metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The payload when it is UTF-8 text: as JSON when it is JSON, else as a string. (A
    /// present `null` is the JSON payload `null`.)
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub payload: Option<Box<RawValue>>,
    /// The payload when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
}

impl ItemView {
    /// How an item is shown.
    pub fn of(item: &Item) -> Self {
        let (payload, payload_base64) = match std::str::from_utf8(&item.payload) {
            Ok(text) => (Some(text_payload(text)), None),
            Err(_) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(&item.payload)),
            ),
        };
        ItemView {
            key: item.key,
            phase: item.phase.clone(),
            attempts: item.attempts,
            created_at: item.created_at,
            updated_at: item.updated_at,
            not_before: item.not_before,
            lease: item.lease.as_ref().map(|l| LeaseView {
                owner: l.owner.clone(),
                until: l.until,
            }),
            last_error: item.last_error.clone(),
            metadata: item.metadata.clone(),
            payload,
            payload_base64,
        }
    }

    /// The item back, its payload bytes included.
    ///
    /// A JSON payload comes back as shown (compact, object keys in the stored order); a JSON
    /// string is read as text, because text payloads are shown that way (so a payload that
    /// was itself a JSON string literal comes back without its quotes).
    ///
    /// # Errors
    /// What is wrong with the payload fields.
    pub fn into_item(self) -> Result<Item, String> {
        let payload = match (self.payload, self.payload_base64) {
            (Some(raw), None) => {
                let text = raw.get();
                if text.starts_with('"') {
                    serde_json::from_str::<String>(text)
                        .map_err(|e| format!("an item's text payload: {e}"))?
                        .into_bytes()
                } else {
                    text.as_bytes().to_vec()
                }
            }
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|e| format!("an item's payload_base64: {e}"))?,
            _ => return Err("an item needs exactly one of `payload` and `payload_base64`".into()),
        };
        Ok(Item {
            key: self.key,
            payload,
            phase: self.phase,
            attempts: self.attempts,
            created_at: self.created_at,
            updated_at: self.updated_at,
            not_before: self.not_before,
            lease: self.lease.map(|l| Lease {
                owner: l.owner,
                until: l.until,
            }),
            last_error: self.last_error,
            metadata: self.metadata,
        })
    }
}

/// A UTF-8 payload as JSON: itself, compacted, when it is JSON; else a JSON string.
pub(super) fn text_payload(text: &str) -> Box<RawValue> {
    let json = serde_json::from_str::<&RawValue>(text)
        .ok()
        .and_then(|raw| RawValue::from_string(compact_json(raw.get())).ok());
    match json {
        Some(raw) => raw,
        // A JSON string of any text always encodes, and is always valid JSON.
        None => serde_json::value::to_raw_value(text).unwrap_or_else(|_| RawValue::NULL.to_owned()),
    }
}

/// `GET /queues/{id}/items`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ItemList {
    /// The page of items.
    pub items: Vec<ItemView>,
}

/// One item to push: `payload` or `payload_base64`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PushItem {
    /// Any JSON value, stored as its JSON text (`null` included).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub payload: Option<serde_json::Value>,
    /// A binary payload, base64 (standard alphabet, padded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
    /// A small string map stored with the item.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Not handed out before this many milliseconds from now.
    #[serde(
        default,
        deserialize_with = "whole::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub delay_ms: Option<u64>,
}

impl PushItem {
    /// An item to push as the client sends it: the payload in base64 (any bytes arrive
    /// exactly), `not_before` as a delay from `now`.
    pub fn of(item: NewItem, now: Timestamp) -> Self {
        PushItem {
            payload: None,
            payload_base64: Some(base64::engine::general_purpose::STANDARD.encode(&item.payload)),
            metadata: item.metadata,
            delay_ms: item
                .not_before
                .filter(|at| *at > now)
                .map(|at| at.as_millis() - now.as_millis()),
        }
    }

    /// The item to store, due `delay_ms` after `now`.
    ///
    /// # Errors
    /// What is wrong with the payload fields.
    pub fn into_new_item(self, now: Timestamp) -> Result<NewItem, String> {
        let payload = match (self.payload, self.payload_base64) {
            (Some(value), None) => {
                serde_json::to_vec(&value).map_err(|e| format!("payload cannot be stored: {e}"))?
            }
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|e| {
                    format!("`payload_base64` is not valid base64 (standard alphabet, padded): {e}")
                })?,
            (Some(_), Some(_)) => return Err("give `payload` or `payload_base64`, not both".into()),
            (None, None) => {
                return Err(
                    "missing `payload` (any JSON value) or `payload_base64` (binary)".into(),
                );
            }
        };
        let mut new = NewItem::new(payload);
        new.metadata = self.metadata;
        if let Some(ms) = self.delay_ms {
            new.not_before = Some(now.saturating_add(Duration::from_millis(ms)));
        }
        Ok(new)
    }
}

/// `POST /queues/{id}/items`: one item's fields, or `items` for an atomic batch.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PushBody {
    /// Any JSON value (one item).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub payload: Option<serde_json::Value>,
    /// A binary payload, base64 (one item).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
    /// Metadata (one item).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Delay in milliseconds (one item).
    #[serde(
        default,
        deserialize_with = "whole::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub delay_ms: Option<u64>,
    /// A batch, pushed atomically (then none of the fields above).
    #[serde(
        default,
        deserialize_with = "opt_objects",
        skip_serializing_if = "Option::is_none"
    )]
    pub items: Option<Vec<PushItem>>,
}

impl PushBody {
    /// The items the body asks to push.
    ///
    /// # Errors
    /// A body with both `items` and one item's fields.
    pub fn into_items(self) -> Result<Vec<PushItem>, String> {
        match self.items {
            Some(items) => {
                if self.payload.is_some()
                    || self.payload_base64.is_some()
                    || self.metadata.is_some()
                    || self.delay_ms.is_some()
                {
                    return Err("give either `items` (a batch) or one item's fields \
                                (`payload`/`payload_base64`, `metadata`, `delay_ms`), not both"
                        .into());
                }
                Ok(items)
            }
            None => Ok(vec![PushItem {
                payload: self.payload,
                payload_base64: self.payload_base64,
                metadata: self.metadata.unwrap_or_default(),
                delay_ms: self.delay_ms,
            }]),
        }
    }
}

/// `POST /queues/{id}/items`: the new items' keys, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PushedKeys {
    /// The new items' keys, in order.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<u64>))]
    pub keys: Vec<Key>,
}

/// `PUT /queues/{id}/items/{key}/phase`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetPhase {
    /// The new phase.
    #[cfg_attr(feature = "openapi", schema(value_type = rules::PhaseName))]
    pub phase: String,
    /// Only if the item is in this phase now (409 `phase_conflict` otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<rules::PhaseName>))]
    pub if_phase: Option<String>,
}

/// How many items or subscriptions were removed (`POST /queues/{id}/reset`,
/// `DELETE /hooks/unsubscribe`, `DELETE /hooks/subscriptions/{id}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Removed {
    /// How many were removed.
    pub removed: u64,
}

/// `POST /queues/{id}/replay`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = ReplayedView))]
pub struct Replayed {
    /// Dead items moved back to pending.
    pub replayed: u64,
}
