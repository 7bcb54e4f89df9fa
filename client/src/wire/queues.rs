//! Queues: settings, retention, and counts by phase.

use super::*;

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
pub(super) mod opt_opt_ms {
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
pub(super) enum RetentionSchema {
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
pub(super) struct QueueView {
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
pub(super) fn phases_json(counts: &PhaseCounts) -> BTreeMap<String, u64> {
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
pub(super) fn counts_from(phases: BTreeMap<String, u64>) -> Result<PhaseCounts, String> {
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
