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

mod items;
mod queues;
mod webhooks;

pub use items::*;
pub use queues::*;
pub use webhooks::*;

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

#[cfg(test)]
mod tests;
