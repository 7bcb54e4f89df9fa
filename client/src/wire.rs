//! The HTTP API's JSON, defined once: every request and answer body of the queue admin and
//! webhook routes. The router (`hookspool-http`) serializes the answers and reads the
//! requests with these types, its OpenAPI document describes them (feature `openapi`), and
//! [`crate::Client`] sends and reads them. The webhook types the API shows as they are
//! ([`Delivery`], [`Attempt`], [`SubscriptionInfo`]) are hookspool-webhooks' own, re-exported
//! here.
//!
//! Conventions: times are milliseconds since the Unix epoch; request bodies refuse unknown
//! fields; an `Option<Option<T>>` field tells "absent: keep" from `null`: clear.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use hookspool::{
    Item, Key, Lease, NewItem, Phase, PhaseCounts, QueueConfig, QueueId, Retain, Retention,
    Timestamp,
};
pub use hookspool_webhooks::{Attempt, Delivery, DeliveryId, SignatureScheme, SubscriptionInfo};
use hookspool_webhooks::{Secret, channel_secret};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use hookspool_webhooks::compact_json;

/// Lifecycle phases: always listed (zero included) in a queue's counts, so that clients need
/// not special-case a missing key.
pub const LIFECYCLE: [Phase; 5] = [
    Phase::PENDING,
    Phase::IN_FLIGHT,
    Phase::DONE,
    Phase::DEAD,
    Phase::EXPIRED,
];

/// Deserializes a field that is present (even as `null`) into `Some`, so that an
/// `Option<T>` field with `#[serde(default)]` tells "absent" (`None`) from "given".
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A request body, or an object inside one, that must be a JSON object. Serde's derived
/// structs also take an array of their fields in order (`[null, null]` for
/// `{"payload": null, "payload_base64": null}`), which no document describes and no client
/// means: this refuses everything but an object.
#[derive(Debug)]
pub struct JsonObject<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for JsonObject<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ObjectVisitor(std::marker::PhantomData))
    }
}

struct ObjectVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ObjectVisitor<T> {
    type Value = JsonObject<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(JsonObject)
    }
}

/// An optional nested object (see [`JsonObject`]).
fn opt_object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    Ok(Option::<JsonObject<T>>::deserialize(d)?.map(|JsonObject(t)| t))
}

/// An optional list of nested objects (see [`JsonObject`]).
fn opt_objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Vec<T>>, D::Error> {
    Ok(Option::<Vec<JsonObject<T>>>::deserialize(d)?
        .map(|items| items.into_iter().map(|JsonObject(t)| t).collect()))
}

/// Integer fields of request bodies. JSON Schema, which OpenAPI 3.1 documents use, counts
/// `2.0` as the integer 2, so the document's `"type": "integer"` admits it: these fields take
/// a number without a fractional part in any spelling (`2`, `2.0`, `2e0`), and refuse `2.5`,
/// negatives and values out of the field's range, as the plain integer types do.
mod whole {
    use std::fmt;
    use std::marker::PhantomData;

    use serde::de::{Error, Unexpected, Visitor};
    use serde::{Deserialize, Deserializer};

    /// 2^64, the first whole number a `u64` cannot hold.
    const U64_END: f64 = 18_446_744_073_709_551_616.0;

    struct Whole<T>(T);

    impl<'de, T: TryFrom<u64>> Deserialize<'de> for Whole<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_u64(WholeVisitor(PhantomData))
        }
    }

    struct WholeVisitor<T>(PhantomData<T>);

    impl<T: TryFrom<u64>> Visitor<'_> for WholeVisitor<T> {
        type Value = Whole<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(
                f,
                "a whole number from 0 to the largest {}",
                std::any::type_name::<T>()
            )
        }

        fn visit_u64<E: Error>(self, v: u64) -> Result<Self::Value, E> {
            T::try_from(v)
                .map(Whole)
                .map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
        }

        fn visit_i64<E: Error>(self, v: i64) -> Result<Self::Value, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(E::invalid_value(Unexpected::Signed(v), &self)),
            }
        }

        fn visit_f64<E: Error>(self, v: f64) -> Result<Self::Value, E> {
            if v.fract() == 0.0 && (0.0..U64_END).contains(&v) {
                // Whole and in range (checked just above): the cast is exact.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                self.visit_u64(v as u64)
            } else {
                Err(E::invalid_value(Unexpected::Float(v), &self))
            }
        }
    }

    /// An optional whole number (absent or `null`: `None`).
    pub(super) fn opt<'de, D: Deserializer<'de>, T: TryFrom<u64>>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        Ok(Option::<Whole<T>>::deserialize(d)?.map(|w| w.0))
    }

    /// A whole number or `null`, present: `Some` (with `#[serde(default)]`, absent is `None`).
    #[allow(clippy::option_option)]
    pub(super) fn present<'de, D: Deserializer<'de>, T: TryFrom<u64>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        opt(d).map(Some)
    }
}

// ---- string rules, for the document ---------------------------------------------------------

/// The rules of the API's names, ids and request shapes as OpenAPI schemas, for the document only (feature
/// `openapi`): request fields and path and query parameters of these kinds refer to them, so
/// that a client (or a fuzzer) knows what the server takes without trying. The checks
/// themselves are the engine's and hookspool-webhooks' (`QueueId::new`, `Phase::new`,
/// `check_event_name`, `EventPattern::new`, `check_idempotency_key`); a test of
/// hookspool-http holds each pattern against them.
#[cfg(feature = "openapi")]
#[allow(dead_code)] // schema-only types: never built, only named in `value_type`s
pub mod rules {
    /// A schema-only type: a string matching `$pattern`, documented by `$doc` (which is also
    /// the schema's description).
    macro_rules! string_rule {
        ($name:ident, $doc:literal, $pattern:literal) => {
            #[doc = $doc]
            #[derive(Debug)]
            pub struct $name;

            impl utoipa::PartialSchema for $name {
                fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                    utoipa::openapi::ObjectBuilder::new()
                        .schema_type(utoipa::openapi::Type::String)
                        .description(Some($doc))
                        .pattern(Some($pattern))
                        .into()
                }
            }

            impl utoipa::ToSchema for $name {}
        };
    }

    string_rule!(
        QueueId,
        "A queue id: 1 to 128 characters from `A-Z a-z 0-9 _ - .`, starting with a letter or \
         a digit.",
        r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
    );
    string_rule!(
        PhaseName,
        "A phase name: 1 to 64 characters from `a-z 0-9 _ - .`, starting with a letter.",
        r"^[a-z][a-z0-9_.\-]{0,63}$"
    );
    string_rule!(
        EventName,
        "An event name: 1 to 128 characters from `A-Z a-z 0-9 _ - . : /`.",
        r"^[A-Za-z0-9_.:/\-]{1,128}$"
    );
    string_rule!(
        EventPattern,
        "An event pattern: `*`, an event name, or an event name followed by `.*` (every \
         event that starts with the name and a dot).",
        r"^(\*|[A-Za-z0-9_.:/\-]{1,128}(\.\*)?)$"
    );
    string_rule!(
        Owner,
        "An owner (of subscriptions and events): 1 to 128 characters from `A-Z a-z 0-9 _ - :`.",
        r"^[A-Za-z0-9_:\-]{1,128}$"
    );
    string_rule!(
        IdempotencyKey,
        "An idempotency key: 1 to 255 visible ASCII characters.",
        r"^[!-~]{1,255}$"
    );

    /// `DELETE /hooks/unsubscribe`: exactly one of `id` (one subscription) and `target_url`
    /// (every subscription of that URL), and nothing else.
    #[derive(Debug)]
    pub struct Unsubscribe;

    impl utoipa::PartialSchema for Unsubscribe {
        fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
            use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder};
            let only = |field: &str, doc: &str| {
                ObjectBuilder::new()
                    .schema_type(utoipa::openapi::Type::Object)
                    .property(
                        field,
                        ObjectBuilder::new()
                            .schema_type(utoipa::openapi::Type::String)
                            .description(Some(doc)),
                    )
                    .required(field)
                    .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            };
            OneOfBuilder::new()
                .item(only("id", "One subscription, by id (`sub_…`)."))
                .item(only(
                    "target_url",
                    "Every subscription of this URL (`url` is accepted too).",
                ))
                .description(Some(
                    "Exactly one of `id` (one subscription) and `target_url` (every \
                     subscription of that URL).",
                ))
                .into()
        }
    }

    impl utoipa::ToSchema for Unsubscribe {
        fn name() -> std::borrow::Cow<'static, str> {
            "UnsubscribeRequest".into()
        }
    }
}

// ---- errors ---------------------------------------------------------------------------------

/// The body of every error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// A short stable code (`queue_not_found`, `invalid_json`, `unauthorized`, …).
    pub error: String,
    /// A sentence saying what is wrong.
    pub message: String,
}

// ---- queues ---------------------------------------------------------------------------------

/// How long settled items of a queue stay, in milliseconds: `null` or absent is forever
/// (each at least 1,000).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RetainView {
    /// How long an item stays in `done`.
    #[serde(default, deserialize_with = "whole::opt")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1000))]
    pub done_ms: Option<u64>,
    /// How long an item stays in `dead`.
    #[serde(default, deserialize_with = "whole::opt")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1000))]
    pub dead_ms: Option<u64>,
    /// How long an item stays in `expired`.
    #[serde(default, deserialize_with = "whole::opt")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1000))]
    pub expired_ms: Option<u64>,
}

impl From<Retain> for RetainView {
    fn from(r: Retain) -> Self {
        RetainView {
            done_ms: r.done.map(millis),
            dead_ms: r.dead.map(millis),
            expired_ms: r.expired.map(millis),
        }
    }
}

impl From<RetainView> for Retain {
    fn from(v: RetainView) -> Self {
        Retain {
            done: v.done_ms.map(Duration::from_millis),
            dead: v.dead_ms.map(Duration::from_millis),
            expired: v.expired_ms.map(Duration::from_millis),
        }
    }
}

/// `POST /queues`: a queue to create.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = CreateQueue))]
#[serde(deny_unknown_fields)]
pub struct NewQueue {
    /// 1 to 128 characters from `A-Z a-z 0-9 _ - .`, starting with a letter or a digit.
    #[cfg_attr(feature = "openapi", schema(value_type = rules::QueueId))]
    pub id: String,
    /// The callback channel's signing secret (a `whsec_` secret): callbacks into the queue
    /// must carry a valid Standard Webhooks signature made with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub secret: Option<Secret>,
    /// Item TTL: a pending item older than this many milliseconds moves to `expired`.
    #[serde(
        default,
        deserialize_with = "whole::opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub ttl_ms: Option<u64>,
    /// What acknowledging an item does.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = RetentionSchema))]
    pub retention: Retention,
    /// How long settled items stay (absent: forever).
    #[serde(
        default,
        deserialize_with = "opt_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub retain: Option<RetainView>,
    /// Free-form metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

impl NewQueue {
    /// The request that creates a queue with these settings. The channel secret, which
    /// `config` keeps in its metadata, travels in `secret`.
    pub fn of(config: &QueueConfig) -> Self {
        let mut metadata = config.metadata.clone();
        metadata.remove(hookspool_webhooks::CHANNEL_SECRET);
        NewQueue {
            id: config.id.as_str().to_owned(),
            secret: channel_secret(config),
            ttl_ms: config.ttl.map(millis),
            retention: config.retention,
            retain: (!config.retain.is_forever()).then(|| config.retain.into()),
            metadata,
        }
    }
}

/// `PATCH /queues/{id}`: the settings to change; absent fields are kept, `null` clears
/// `secret` and `ttl_ms`.
// The outer `Option` is "change or keep", the inner one the new value, which may be "none".
#[allow(clippy::option_option)]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = UpdateQueue))]
#[serde(deny_unknown_fields)]
pub struct QueueUpdate {
    /// `Some(Some(s))` sets the channel's signing secret, `Some(None)` removes it.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub secret: Option<Option<Secret>>,
    /// `Some(Some(d))` sets the item TTL, `Some(None)` removes it (`ttl_ms` in JSON).
    #[serde(
        default,
        rename = "ttl_ms",
        with = "opt_opt_ms",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>, minimum = 1))]
    pub ttl: Option<Option<Duration>>,
    /// A new retention setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<RetentionSchema>))]
    pub retention: Option<Retention>,
    /// New retention periods, replacing all three (a period left out is forever).
    #[serde(
        default,
        deserialize_with = "opt_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub retain: Option<RetainView>,
    /// New metadata, replacing all of the old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
}

impl QueueUpdate {
    /// Applies the change to a queue's settings, as the API does: each field given replaces
    /// the current value; new `metadata` replaces the metadata whole but keeps the channel
    /// secret, which has a field of its own.
    ///
    /// # Errors
    /// What is wrong, before anything changes: an empty secret, or `metadata` with the key
    /// that holds the channel secret.
    pub fn apply_to(&self, config: &mut QueueConfig) -> Result<(), String> {
        if let Some(Some(secret)) = &self.secret
            && secret.expose().is_empty()
        {
            return Err("`secret` must not be empty (use null to remove it)".into());
        }
        if let Some(metadata) = &self.metadata {
            check_metadata(metadata)?;
        }
        if let Some(ttl) = self.ttl {
            config.ttl = ttl;
        }
        if let Some(retention) = self.retention {
            config.retention = retention;
        }
        if let Some(retain) = self.retain {
            config.retain = retain.into();
        }
        let secret = match &self.secret {
            Some(new) => new.clone(),
            None => channel_secret(config),
        };
        if let Some(metadata) = &self.metadata {
            config.metadata.clone_from(metadata);
        }
        // Cannot fail: an empty secret was refused above.
        hookspool_webhooks::set_channel_secret(config, secret.as_ref()).map_err(|e| e.to_string())
    }
}

/// Checks metadata given in a request: the channel secret has a field of its own, so its
/// metadata key is not the caller's to set or clear.
///
/// # Errors
/// Says so, naming the key.
pub fn check_metadata(metadata: &BTreeMap<String, String>) -> Result<(), String> {
    if metadata.contains_key(hookspool_webhooks::CHANNEL_SECRET) {
        return Err(format!(
            "metadata key `{}` holds the queue's signing secret: set it with `secret`",
            hookspool_webhooks::CHANNEL_SECRET
        ));
    }
    Ok(())
}

/// `Option<Option<Duration>>` as absent / `null` / milliseconds.
mod opt_opt_ms {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    #[allow(clippy::ref_option, clippy::option_option)] // serde's `with` hands us `&Option<T>`
    pub(super) fn serialize<S: Serializer>(
        v: &Option<Option<Duration>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(Some(d)) => s.serialize_some(&super::millis(*d)),
            _ => s.serialize_none(),
        }
    }

    #[allow(clippy::option_option)]
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<Duration>>, D::Error> {
        Ok(Some(
            super::whole::opt::<D, u64>(d)?.map(Duration::from_millis),
        ))
    }
}

/// What acknowledging an item of the queue does: `keep` (it stays, in `done`) or `remove`.
#[cfg(feature = "openapi")]
#[derive(utoipa::ToSchema)]
#[schema(as = Retention)]
#[allow(dead_code)] // the engine has no `ToSchema`; this only names its two values
#[serde(rename_all = "snake_case")]
enum RetentionSchema {
    /// Acknowledged items stay, in phase `done`.
    Keep,
    /// Acknowledged items are removed.
    Remove,
}

/// A queue as the API shows it: its settings and its item counts. The channel secret is
/// never sent, only whether there is one ([`QueueInfo::has_secret`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "QueueView", try_from = "QueueView")]
pub struct QueueInfo {
    /// The queue's id.
    pub id: QueueId,
    /// Whether it has a channel signing secret.
    pub has_secret: bool,
    /// The item TTL.
    pub ttl: Option<Duration>,
    /// What acknowledging an item does.
    pub retention: Retention,
    /// How long settled items stay.
    pub retain: Retain,
    /// When the queue was created.
    pub created_at: Timestamp,
    /// Free-form metadata (the channel secret is not part of it here).
    pub metadata: BTreeMap<String, String>,
    /// Item counts by phase (phases with no items are absent).
    pub counts: PhaseCounts,
}

impl QueueInfo {
    /// The view of a queue's settings and counts, as the API and the CLI show it.
    pub fn new(config: &QueueConfig, counts: PhaseCounts) -> Self {
        let mut metadata = config.metadata.clone();
        let has_secret = metadata
            .remove(hookspool_webhooks::CHANNEL_SECRET)
            .is_some();
        QueueInfo {
            id: config.id.clone(),
            has_secret,
            ttl: config.ttl,
            retention: config.retention,
            retain: config.retain,
            created_at: config.created_at,
            metadata,
            counts,
        }
    }
}

/// A queue's settings and counts, in JSON.
#[derive(Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = QueueView))]
struct QueueView {
    /// The queue's id.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    id: QueueId,
    /// Whether the queue has a channel signing secret (its value is never shown).
    secret: bool,
    /// Item TTL in milliseconds.
    ttl_ms: Option<u64>,
    #[cfg_attr(feature = "openapi", schema(value_type = RetentionSchema))]
    retention: Retention,
    /// How long settled items stay.
    #[serde(default)]
    retain: RetainView,
    /// Milliseconds since the Unix epoch.
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    created_at: Timestamp,
    /// Free-form metadata.
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    /// Items in every phase.
    #[serde(default)]
    items: u64,
    /// Items by phase: the lifecycle phases always (zero included), then any other.
    phases: BTreeMap<String, u64>,
}

impl From<QueueInfo> for QueueView {
    fn from(q: QueueInfo) -> Self {
        QueueView {
            id: q.id,
            secret: q.has_secret,
            ttl_ms: q.ttl.map(millis),
            retention: q.retention,
            retain: q.retain.into(),
            created_at: q.created_at,
            metadata: q.metadata,
            items: q.counts.total(),
            phases: phases_json(&q.counts),
        }
    }
}

impl TryFrom<QueueView> for QueueInfo {
    type Error = String;
    fn try_from(v: QueueView) -> Result<Self, String> {
        Ok(QueueInfo {
            id: v.id,
            has_secret: v.secret,
            ttl: v.ttl_ms.map(Duration::from_millis),
            retention: v.retention,
            retain: v.retain.into(),
            created_at: v.created_at,
            metadata: v.metadata,
            counts: counts_from(v.phases)?,
        })
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for QueueInfo {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <QueueView as utoipa::PartialSchema>::schema()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for QueueInfo {
    fn name() -> std::borrow::Cow<'static, str> {
        <QueueView as utoipa::ToSchema>::name()
    }

    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        <QueueView as utoipa::ToSchema>::schemas(schemas);
    }
}

/// `GET /queues`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueueList {
    /// Every queue, by id.
    pub queues: Vec<QueueInfo>,
}

/// `GET /queues/{id}/count`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = CountView))]
pub struct Counts {
    /// Items counted.
    pub total: u64,
    /// By phase: the lifecycle phases (zero included) and any other, or only the phase asked
    /// for with `?phase=`.
    pub phases: BTreeMap<String, u64>,
    /// Items the retention pass removed since the server started, by phase (no longer in
    /// `phases`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pruned: BTreeMap<String, u64>,
}

impl Counts {
    /// Every phase of a queue's counts.
    pub fn all(counts: &PhaseCounts) -> Self {
        Counts {
            total: counts.total(),
            phases: phases_json(counts),
            pruned: BTreeMap::new(),
        }
    }

    /// One phase of a queue's counts.
    pub fn one(counts: &PhaseCounts, phase: &Phase) -> Self {
        let n = counts.get(phase);
        Counts {
            total: n,
            phases: BTreeMap::from([(phase.as_str().to_owned(), n)]),
            pruned: BTreeMap::new(),
        }
    }

    /// The counts as the engine keeps them (phases with no items left out).
    ///
    /// # Errors
    /// A phase name that is not valid.
    pub fn to_phase_counts(&self) -> Result<PhaseCounts, String> {
        counts_from(self.phases.clone())
    }
}

/// Counts by phase: the lifecycle phases always (zero included), then the caller's own.
fn phases_json(counts: &PhaseCounts) -> BTreeMap<String, u64> {
    let mut phases: BTreeMap<String, u64> = LIFECYCLE
        .iter()
        .map(|p| (p.as_str().to_owned(), counts.get(p)))
        .collect();
    for (phase, n) in &counts.0 {
        phases.insert(phase.as_str().to_owned(), *n);
    }
    phases
}

/// Counts as the engine keeps them: the API lists lifecycle phases with zero, the engine
/// leaves empty phases out.
fn counts_from(phases: BTreeMap<String, u64>) -> Result<PhaseCounts, String> {
    let mut counts = PhaseCounts::default();
    for (name, n) in phases {
        if n > 0 {
            let phase =
                Phase::new(name).map_err(|e| format!("a count of an invalid phase: {e}"))?;
            counts.add(&phase, n);
        }
    }
    Ok(counts)
}

// ---- items ----------------------------------------------------------------------------------

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
fn text_payload(text: &str) -> Box<RawValue> {
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

// ---- webhooks -------------------------------------------------------------------------------

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

/// `DELETE /hooks/unsubscribe`: exactly one of `id` and `target_url` (its schema is
/// [`rules::Unsubscribe`], which says so).
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on failure
mod tests {
    use super::*;

    fn item(payload: &[u8]) -> Item {
        Item {
            key: 7,
            payload: payload.to_vec(),
            phase: Phase::new("needs-review").unwrap(),
            attempts: 2,
            created_at: Timestamp::from_millis(1_000),
            updated_at: Timestamp::from_millis(2_000),
            not_before: Timestamp::from_millis(3_000),
            lease: Some(Lease {
                owner: "w".into(),
                until: Timestamp::from_millis(4_000),
            }),
            last_error: Some("boom".into()),
            metadata: BTreeMap::from([("event".to_owned(), "order.paid".to_owned())]),
        }
    }

    fn json(item: &Item) -> serde_json::Value {
        serde_json::to_value(ItemView::of(item)).unwrap()
    }

    #[test]
    fn an_item_has_every_field() {
        let v = json(&item(b"{}"));
        assert_eq!(v["key"], 7);
        assert_eq!(v["phase"], "needs-review");
        assert_eq!(v["attempts"], 2);
        assert_eq!(v["created_at"], 1_000);
        assert_eq!(v["updated_at"], 2_000);
        assert_eq!(v["not_before"], 3_000);
        assert_eq!(v["lease"]["owner"], "w");
        assert_eq!(v["lease"]["until"], 4_000);
        assert_eq!(v["last_error"], "boom");
        assert_eq!(v["metadata"]["event"], "order.paid");
    }

    #[test]
    fn json_payloads_are_embedded_compact_with_key_order_kept() {
        let text =
            serde_json::to_string(&ItemView::of(&item(b"{ \"z\": 1,\n \"a\": \"x y\" }"))).unwrap();
        assert!(text.contains(r#""payload":{"z":1,"a":"x y"}"#), "{text}");
        assert!(!text.contains("payload_base64"), "{text}");
    }

    #[test]
    fn text_and_binary_payloads() {
        assert_eq!(
            json(&item(b"plain\nline two"))["payload"],
            "plain\nline two"
        );
        assert_eq!(json(&item(b""))["payload"], "");
        let v = json(&item(&[0xff, 0x00, 0x80]));
        assert!(v.get("payload").is_none());
        assert_eq!(v["payload_base64"], "/wCA");
    }

    #[test]
    fn items_come_back_from_each_payload_form() {
        for payload in [
            &br#"{"a":1,"b":[true]}"#[..],
            b"two\nlines",
            b"null",
            &[0xff, 0x00, 0x80],
        ] {
            let text = serde_json::to_string(&ItemView::of(&item(payload))).unwrap();
            let view: ItemView = serde_json::from_str(&text).unwrap();
            assert_eq!(view.into_item().unwrap(), item(payload), "{text}");
        }
        let bad: ItemView = serde_json::from_str(
            r#"{"key":1,"phase":"pending","attempts":0,"created_at":1,"updated_at":2,
                "not_before":3,"lease":null,"last_error":null,"payload":1,"payload_base64":"AA=="}"#,
        )
        .unwrap();
        assert!(bad.into_item().is_err());
    }

    #[test]
    fn queues_show_whether_there_is_a_secret_never_the_secret() {
        let mut config = QueueConfig::new(QueueId::new("q").unwrap())
            .with_ttl(Duration::from_mins(1))
            .with_metadata("team", "billing");
        hookspool_webhooks::set_channel_secret(
            &mut config,
            Some(&Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")),
        )
        .unwrap();
        let mut counts = PhaseCounts::default();
        counts.add(&Phase::PENDING, 2);
        counts.add(&Phase::new("review").unwrap(), 1);
        let info = QueueInfo::new(&config, counts.clone());
        let v = serde_json::to_value(&info).unwrap();
        assert!(!v.to_string().contains("MfKQ9r8"), "{v}");
        assert_eq!(v["secret"], true);
        assert_eq!(v["items"], 3);
        assert_eq!(v["ttl_ms"], 60_000);
        assert_eq!(v["phases"]["pending"], 2);
        assert_eq!(v["phases"]["dead"], 0);
        assert_eq!(v["phases"]["review"], 1);
        assert_eq!(v["metadata"]["team"], "billing");
        let back: QueueInfo = serde_json::from_value(v).unwrap();
        assert_eq!(back, info);
        assert_eq!(back.counts, counts);
    }

    #[test]
    fn a_queue_update_tells_absent_from_null() {
        let u: QueueUpdate = serde_json::from_str(r#"{"ttl_ms": null}"#).unwrap();
        assert_eq!(u.ttl, Some(None));
        assert_eq!(u.secret, None);
        let u: QueueUpdate = serde_json::from_str(r#"{"ttl_ms": 5, "secret": null}"#).unwrap();
        assert_eq!(u.ttl, Some(Some(Duration::from_millis(5))));
        assert_eq!(u.secret, Some(None));
        let text = serde_json::to_string(&QueueUpdate {
            ttl: Some(None),
            ..QueueUpdate::default()
        })
        .unwrap();
        assert_eq!(text, r#"{"ttl_ms":null}"#);
        assert!(serde_json::from_str::<QueueUpdate>(r#"{"tll_ms": 1}"#).is_err());
    }

    #[test]
    fn an_update_keeps_the_secret_unless_it_changes_it() {
        let secret = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let mut config = QueueConfig::new(QueueId::new("q").unwrap()).with_metadata("a", "1");
        hookspool_webhooks::set_channel_secret(&mut config, Some(&secret)).unwrap();
        let metadata = BTreeMap::from([("b".to_owned(), "2".to_owned())]);
        QueueUpdate {
            metadata: Some(metadata.clone()),
            ttl: Some(Some(Duration::from_secs(1))),
            ..QueueUpdate::default()
        }
        .apply_to(&mut config)
        .unwrap();
        assert_eq!(channel_secret(&config), Some(secret));
        assert_eq!(
            QueueInfo::new(&config, PhaseCounts::default()).metadata,
            metadata
        );
        assert_eq!(config.ttl, Some(Duration::from_secs(1)));
        QueueUpdate {
            secret: Some(None),
            ..QueueUpdate::default()
        }
        .apply_to(&mut config)
        .unwrap();
        assert_eq!(channel_secret(&config), None);
        for bad in [
            QueueUpdate {
                secret: Some(Some(Secret::new(""))),
                ..QueueUpdate::default()
            },
            QueueUpdate {
                metadata: Some(BTreeMap::from([("secret".to_owned(), "x".to_owned())])),
                ..QueueUpdate::default()
            },
        ] {
            let before = config.clone();
            assert!(bad.apply_to(&mut config).is_err());
            assert_eq!(config, before, "nothing changes");
        }
    }
}

// ---- verify ---------------------------------------------------------------------------------

/// `POST /verify`: check every item's stored data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// Move each damaged item to the phase `corrupt`, with what is wrong as its error.
    #[serde(default)]
    pub quarantine: bool,
}

/// Damage `POST /verify` found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DamageView {
    /// The queue.
    pub queue: String,
    /// The item (absent when the backend cannot tell which one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<u64>,
    /// What is wrong.
    pub error: String,
}

/// `POST /verify`: what was checked and found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Verified {
    /// Queues checked.
    pub queues: u64,
    /// Items checked.
    pub items: u64,
    /// Damage, by queue and key.
    pub damaged: Vec<DamageView>,
    /// Damaged items moved to `corrupt` by this request.
    pub quarantined: u64,
}

impl From<hookspool::VerifyReport> for Verified {
    fn from(r: hookspool::VerifyReport) -> Self {
        Verified {
            queues: r.queues,
            items: r.items,
            damaged: r
                .damaged
                .into_iter()
                .map(|d| DamageView {
                    queue: d.queue.as_str().to_owned(),
                    key: d.key,
                    error: d.error,
                })
                .collect(),
            quarantined: r.quarantined,
        }
    }
}

impl TryFrom<Verified> for hookspool::VerifyReport {
    type Error = String;

    fn try_from(v: Verified) -> Result<Self, String> {
        let damaged = v
            .damaged
            .into_iter()
            .map(|d| {
                Ok(hookspool::Damage {
                    queue: QueueId::new(d.queue).map_err(|e| e.to_string())?,
                    key: d.key,
                    error: d.error,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(hookspool::VerifyReport {
            queues: v.queues,
            items: v.items,
            damaged,
            quarantined: v.quarantined,
        })
    }
}
