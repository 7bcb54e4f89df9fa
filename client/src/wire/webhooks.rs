//! Webhooks: subscriptions, secret rotation, and publishing.

#[cfg(feature = "openapi")]
use super::rules;
use super::{
    BTreeMap, Delivery, DeliveryId, Deserialize, Key, RawValue, Secret, Serialize, SignatureScheme,
    SubscriptionInfo, whole,
};

/// `POST /hooks/subscribe`: a subscription to create.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = SubscribeRequest))]
#[serde(deny_unknown_fields)]
pub struct NewSubscription {
    /// The event name or pattern: `*`, `prefix.*` or an exact event name.
    #[cfg_attr(feature = "openapi", schema(value_type = rules::EventPattern))]
    pub event: String,
    /// Where deliveries are POSTed (`url` is accepted too).
    #[serde(alias = "url")]
    pub target_url: String,
    /// The signing secret (`whsec_…` for Standard Webhooks); generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub secret: Option<Secret>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// How requests are signed (default `standard_webhooks`).
    #[serde(default)]
    pub scheme: SignatureScheme,
    /// Whose subscription it is (publishing with an owner reaches only theirs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<rules::Owner>))]
    pub owner: Option<String>,
    /// Most requests in flight to it at once.
    #[serde(
        default,
        deserialize_with = "whole::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub max_in_flight: Option<u32>,
    /// Deliver strictly in order.
    #[serde(default)]
    pub strict_fifo: bool,
}

impl NewSubscription {
    /// A subscription of `target_url` to `event`, with the server's defaults otherwise.
    pub fn new(event: impl Into<String>, target_url: impl Into<String>) -> Self {
        NewSubscription {
            event: event.into(),
            target_url: target_url.into(),
            ..NewSubscription::default()
        }
    }

    /// Sets the owner.
    #[must_use]
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Sets the signing secret.
    #[must_use]
    pub fn secret(mut self, secret: Secret) -> Self {
        self.secret = Some(secret);
        self
    }
}

/// `DELETE /hooks/unsubscribe`: exactly one of `id` and `target_url`.
#[cfg_attr(
    feature = "openapi",
    doc = "(Its schema is [`rules::Unsubscribe`], which says so.)"
)]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unsubscribe {
    /// One subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Every subscription of this URL (`url` is accepted too).
    #[serde(default, alias = "url", skip_serializing_if = "Option::is_none")]
    pub target_url: Option<String>,
}

/// `PATCH /hooks/subscriptions/{id}`: each field given replaces the current value.
// `max_in_flight` has three cases (unchanged, removed, set).
#[allow(clippy::option_option)]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = UpdateRequest))]
#[serde(deny_unknown_fields)]
pub struct SubscriptionChange {
    /// Where deliveries are POSTed (`target_url` is accepted too).
    #[serde(default, alias = "target_url", skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Event patterns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<rules::EventPattern>>))]
    pub events: Option<Vec<String>>,
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    /// How requests are signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<SignatureScheme>,
    /// Disabled subscriptions receive nothing new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Absent: unchanged; `null`: no per-subscription limit; a number: that limit.
    #[serde(
        default,
        deserialize_with = "whole::present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u32>, minimum = 1))]
    pub max_in_flight: Option<Option<u32>>,
    /// Deliver strictly in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict_fifo: Option<bool>,
}

impl From<SubscriptionChange> for hookspool_webhooks::SubscriptionUpdate {
    fn from(c: SubscriptionChange) -> Self {
        hookspool_webhooks::SubscriptionUpdate {
            url: c.url,
            events: c.events,
            headers: c.headers,
            scheme: c.scheme,
            enabled: c.enabled,
            max_in_flight: c.max_in_flight,
            strict_fifo: c.strict_fifo,
        }
    }
}

/// `POST /hooks/subscriptions/{id}/rotate-secret` (or an empty body).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = RotateRequest))]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// The new secret; a random one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub secret: Option<Secret>,
}

/// `GET /hooks/subscriptions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubscriptionList {
    /// The subscriptions, by id.
    pub subscriptions: Vec<SubscriptionInfo>,
}

/// `GET /deliveries`: the newest deliveries, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryList {
    /// The deliveries found, newest first.
    pub deliveries: Vec<Delivery>,
}

/// `POST /hooks/subscriptions/{id}/test`: the test delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TestSent {
    /// The test delivery's id (`msg_…`).
    pub delivery_id: DeliveryId,
}

/// `POST /events`: an event to publish.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = PublishRequest))]
#[serde(deny_unknown_fields)]
pub struct Publish {
    /// The event name.
    #[cfg_attr(feature = "openapi", schema(value_type = rules::EventName))]
    pub event: String,
    /// Any JSON value: the body of every delivery, byte for byte as sent.
    #[cfg_attr(feature = "openapi", schema(value_type = serde_json::Value))]
    pub payload: Box<RawValue>,
    /// Deliver only to this owner's subscriptions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<rules::Owner>))]
    pub owner: Option<String>,
    /// 1 to 255 visible ASCII characters: a repeated request with this key (within 24
    /// hours, by default) answers the first one's result and delivers nothing more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<rules::IdempotencyKey>))]
    pub idempotency_key: Option<String>,
}

impl Publish {
    /// An event for every matching subscription, without an idempotency key.
    pub fn new(event: impl Into<String>, payload: &serde_json::Value) -> Self {
        Publish {
            event: event.into(),
            // Any `Value` encodes to valid JSON.
            payload: serde_json::value::to_raw_value(payload)
                .unwrap_or_else(|_| RawValue::NULL.to_owned()),
            owner: None,
            idempotency_key: None,
        }
    }

    /// Delivers only to this owner's subscriptions.
    #[must_use]
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Sets the idempotency key.
    #[must_use]
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// `POST /events`: the answer (with the header `idempotent-replayed: true` when it is an
/// earlier request's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Published {
    /// One delivery per subscription reached (`msg_…`).
    pub delivery_ids: Vec<DeliveryId>,
    /// Whether this is the answer of an earlier request with the same idempotency key
    /// (from the `idempotent-replayed` header; not in the JSON).
    #[serde(skip)]
    pub replayed: bool,
}

/// `POST /callbacks/{channel}`: the stored callback's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Accepted {
    /// The stored item's key in the channel's queue.
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub key: Key,
}
