//! Subscriptions: who receives which events, how requests to them are signed, and how a
//! subscription is stored as an item of the subscriptions queue.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use hookspool::{Item, Phase, Timestamp};

use crate::error::{Error, Result};
use crate::net::TargetUrl;
use crate::secret::Secret;
use crate::signing::{SignatureScheme, SigningKey};

/// Longest event name or pattern, in bytes.
pub const MAX_EVENT_LEN: usize = 128;
/// Longest subscription id or owner, in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Most extra headers on one subscription.
pub const MAX_EXTRA_HEADERS: usize = 32;

/// Header names a subscription's extra headers may not set: hookspool sets them itself.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "user-agent",
    "host",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "x-hookspool-event",
    "x-webhooks-event",
    "x-webhooks-delivery",
    "x-webhooks-signature",
    "x-hub-signature-256",
    "transfer-encoding",
    "connection",
];

/// Checks an event name: 1 to 128 characters from `A–Z a–z 0–9 _ - . : /`.
///
/// # Errors
/// [`Error::InvalidEvent`] saying what is wrong.
pub fn check_event_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > MAX_EVENT_LEN {
        Some("must be at most 128 characters")
    } else if !name.bytes().all(is_event_byte) {
        Some("may only contain letters, digits, '_', '-', '.', ':' and '/'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidEvent {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

fn is_event_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'/')
}

/// Which events a subscription receives.
///
/// **Rule:** `*` matches every event; a pattern ending in `.*` matches every event that starts
/// with what comes before the `*`, dot included (`order.*` matches `order.paid` and
/// `order.item.added`, not `order` nor `orders.paid`); anything else matches exactly that
/// event name. A `*` anywhere else is refused.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EventPattern(String);

impl EventPattern {
    /// Validates a pattern.
    ///
    /// # Errors
    /// [`Error::InvalidEvent`] saying what is wrong.
    pub fn new(pattern: impl Into<String>) -> Result<Self> {
        let pattern = pattern.into();
        if pattern == "*" {
            return Ok(EventPattern(pattern));
        }
        let name = pattern.strip_suffix(".*").unwrap_or(&pattern);
        if name.contains('*') {
            return Err(Error::InvalidEvent {
                name: pattern,
                reason: "'*' may only be the whole pattern or its last part, as in `order.*`",
            });
        }
        check_event_name(name)?;
        Ok(EventPattern(pattern))
    }

    /// Whether this pattern matches an event name.
    pub fn matches(&self, event: &str) -> bool {
        if self.0 == "*" {
            return true;
        }
        match self.0.strip_suffix('*') {
            Some(prefix) => event.starts_with(prefix) && event.len() > prefix.len(),
            None => self.0 == event,
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EventPattern {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        EventPattern::new(s)
    }
}

impl From<EventPattern> for String {
    fn from(p: EventPattern) -> String {
        p.0
    }
}

/// A subscription: events matching `events` are delivered to `url`, signed with `secret`.
///
/// The HTTP API shows it as a [`SubscriptionInfo`] (without the secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// Its id: generated (`sub_…`), or chosen by the caller (emitters).
    pub id: String,
    /// Where deliveries are POSTed.
    pub url: TargetUrl,
    /// Which events it receives (see [`EventPattern`]).
    pub events: Vec<EventPattern>,
    /// Whose subscription it is: `notify(owner, …)` reaches only that owner's subscriptions.
    pub owner: Option<String>,
    /// How requests are signed.
    pub scheme: SignatureScheme,
    /// The signing secret (`whsec_…` for Standard Webhooks, text for the others).
    pub secret: Secret,
    /// The secret being rotated out, and until when requests are also signed with it.
    pub previous_secret: Option<(Secret, Timestamp)>,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
    /// Disabled subscriptions receive nothing new; their pending deliveries wait.
    pub enabled: bool,
    /// Most requests in flight to this subscription at once (`None`: the loop's default).
    pub max_in_flight: Option<u32>,
    /// Deliver strictly in order: a failing delivery holds back the ones after it.
    pub strict_fifo: bool,
    /// When it was created.
    pub created_at: Timestamp,
}

impl Subscription {
    /// The keys to sign with now: the secret, then the previous one during its grace period.
    ///
    /// # Errors
    /// [`Error::InvalidSecret`] if a stored secret no longer parses (it was checked when set).
    pub fn signing_keys(&self, now: Timestamp) -> Result<Vec<SigningKey>> {
        let mut keys = vec![parse_key(self.scheme, self.secret.expose())?];
        if let Some((old, until)) = &self.previous_secret
            && now < *until
        {
            keys.push(parse_key(self.scheme, old.expose())?);
        }
        Ok(keys)
    }

    /// Whether it receives `event` (and, when `owner` is given, belongs to that owner).
    pub fn wants(&self, event: &str, owner: Option<&str>) -> bool {
        self.enabled
            && owner.is_none_or(|o| self.owner.as_deref() == Some(o))
            && self.events.iter().any(|p| p.matches(event))
    }
}

/// A subscription as the HTTP API shows it (and the client reads it): everything but the
/// secret, which only the answer that creates or rotates it carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = SubscriptionView))]
pub struct SubscriptionInfo {
    /// Its id (`sub_…`, or the emitter id given to `attach`).
    pub id: String,
    /// Where deliveries are POSTed.
    pub url: String,
    /// The event patterns it receives: `*`, `prefix.*` or an exact name.
    pub events: Vec<String>,
    /// Whose subscription it is.
    pub owner: Option<String>,
    /// How requests are signed.
    pub scheme: SignatureScheme,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Whether it receives new events.
    pub enabled: bool,
    /// Most requests in flight to it at once (`None`: the delivery loop's default).
    pub max_in_flight: Option<u32>,
    /// Whether deliveries go strictly in order (a failing one holds back the ones after it).
    pub strict_fifo: bool,
    /// When it was created (ms since the Unix epoch).
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub created_at: Timestamp,
    /// The signing secret: only in the answer that creates the subscription or rotates its
    /// secret (its `Debug` masks it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub secret: Option<Secret>,
    /// Until when the rotated-out secret still signs requests (ms since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>))]
    pub previous_secret_expires_at: Option<Timestamp>,
}

impl SubscriptionInfo {
    /// How the API shows `sub` to anyone: without its secret.
    pub fn of(sub: &Subscription) -> Self {
        SubscriptionInfo {
            id: sub.id.clone(),
            url: sub.url.as_str().to_owned(),
            events: sub.events.iter().map(|p| p.as_str().to_owned()).collect(),
            owner: sub.owner.clone(),
            scheme: sub.scheme,
            headers: sub.headers.clone(),
            enabled: sub.enabled,
            max_in_flight: sub.max_in_flight,
            strict_fifo: sub.strict_fifo,
            created_at: sub.created_at,
            secret: None,
            previous_secret_expires_at: sub.previous_secret.as_ref().map(|(_, until)| *until),
        }
    }

    /// How the API shows `sub` to whoever created it or rotated its secret: with the secret.
    pub fn with_secret(sub: &Subscription) -> Self {
        SubscriptionInfo {
            secret: Some(sub.secret.clone()),
            ..Self::of(sub)
        }
    }
}

/// Options for `subscribe` and `attach`.
#[derive(Clone, Debug, Default)]
pub struct SubscribeOptions {
    /// The signing secret; generated when absent (32 random bytes, `whsec_` form).
    pub secret: Option<Secret>,
    /// Extra request headers (names are case-insensitive; hookspool's own are refused).
    pub headers: BTreeMap<String, String>,
    /// How requests are signed (default Standard Webhooks).
    pub scheme: SignatureScheme,
    /// The owner, for `notify`.
    pub owner: Option<String>,
    /// Most requests in flight at once to this subscription.
    pub max_in_flight: Option<u32>,
    /// Deliver strictly in order.
    pub strict_fifo: bool,
}

impl SubscribeOptions {
    /// Sets the secret.
    #[must_use]
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = Some(Secret::new(secret));
        self
    }

    /// Adds an extra header.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Sets the signature scheme.
    #[must_use]
    pub fn scheme(mut self, scheme: SignatureScheme) -> Self {
        self.scheme = scheme;
        self
    }

    /// Sets the owner.
    #[must_use]
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Limits the requests in flight to this subscription.
    #[must_use]
    pub fn max_in_flight(mut self, n: u32) -> Self {
        self.max_in_flight = Some(n);
        self
    }

    /// Delivers strictly in order.
    #[must_use]
    pub fn strict_fifo(mut self, on: bool) -> Self {
        self.strict_fifo = on;
        self
    }
}

/// Changes to a subscription: each `Some` field replaces the current value.
#[derive(Clone, Debug, Default)]
pub struct SubscriptionUpdate {
    /// A new target URL.
    pub url: Option<String>,
    /// New event patterns.
    pub events: Option<Vec<String>>,
    /// New extra headers.
    pub headers: Option<BTreeMap<String, String>>,
    /// A new signature scheme (keep the secret compatible with it).
    pub scheme: Option<SignatureScheme>,
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// A new per-subscription concurrency limit (`Some(None)` removes it).
    pub max_in_flight: Option<Option<u32>>,
    /// Strict ordering on or off.
    pub strict_fifo: Option<bool>,
}

/// A subscription as the registry holds it: its item key in the subscriptions queue, and
/// its signing keys derived once, when it was registered, rather than from the `whsec_`
/// text on every request. Shared (`Arc`) with the delivery loop's requests, which thus
/// never copy a subscription.
#[derive(Debug)]
pub(crate) struct Registered {
    /// The item that stores it.
    pub(crate) key: hookspool::Key,
    pub(crate) sub: Subscription,
    /// The key of `secret`, and of `previous_secret` with the end of its grace period;
    /// `None` if a stored secret does not parse (signing then says why).
    keys: Option<(SigningKey, Option<(SigningKey, Timestamp)>)>,
}

impl Registered {
    pub(crate) fn new(key: hookspool::Key, sub: Subscription) -> std::sync::Arc<Self> {
        let current = parse_key(sub.scheme, sub.secret.expose()).ok();
        let previous = match &sub.previous_secret {
            None => Some(None),
            Some((old, until)) => parse_key(sub.scheme, old.expose())
                .ok()
                .map(|k| Some((k, *until))),
        };
        let keys = current.zip(previous);
        std::sync::Arc::new(Registered { key, sub, keys })
    }

    /// The keys to sign with at `now`, as [`Subscription::signing_keys`] gives them.
    ///
    /// # Errors
    /// [`Error::InvalidSecret`] if a stored secret does not parse.
    pub(crate) fn signing_keys(&self, now: Timestamp) -> Result<Vec<&SigningKey>> {
        let Some((current, previous)) = &self.keys else {
            // Says which secret and why.
            self.sub.signing_keys(now)?;
            return Err(Error::InvalidSecret(
                "a stored secret does not parse".into(),
            ));
        };
        let mut keys = vec![current];
        if let Some((old, until)) = previous
            && now < *until
        {
            keys.push(old);
        }
        Ok(keys)
    }
}

/// Parses a secret for a scheme, mapping the error to [`Error::InvalidSecret`].
pub(crate) fn parse_key(scheme: SignatureScheme, secret: &str) -> Result<SigningKey> {
    SigningKey::for_scheme(scheme, secret).map_err(|e| Error::InvalidSecret(e.to_string()))
}

/// A fresh random secret in `whsec_` form.
pub(crate) fn generate_secret() -> Result<Secret> {
    let key = SigningKey::generate().map_err(|e| Error::internal(e.to_string()))?;
    Ok(Secret::new(key.to_whsec()))
}

pub(crate) fn check_id(what: &str, id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > MAX_ID_LEN
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':'))
    {
        return Err(Error::invalid(format!(
            "{what} {id:?} must be 1 to {MAX_ID_LEN} characters from letters, digits, '_', '-' \
             and ':'"
        )));
    }
    Ok(())
}

pub(crate) fn check_headers(headers: &BTreeMap<String, String>) -> Result<()> {
    if headers.len() > MAX_EXTRA_HEADERS {
        return Err(Error::invalid(format!(
            "at most {MAX_EXTRA_HEADERS} extra headers are allowed, got {}",
            headers.len()
        )));
    }
    for (name, value) in headers {
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            return Err(Error::invalid(format!(
                "header name {name:?} is not a valid HTTP header name"
            )));
        }
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(Error::invalid(format!(
                "header {name:?} is set by hookspool itself and cannot be overridden"
            )));
        }
        if value.len() > 4096
            || !value
                .bytes()
                .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
        {
            return Err(Error::invalid(format!(
                "the value of header {name:?} must be at most 4096 visible ASCII characters"
            )));
        }
    }
    Ok(())
}

// ---- storage --------------------------------------------------------------------------------
//
// A subscription is one item of the subscriptions queue: phase `active` or `disabled`, an empty
// payload, and these metadata entries. An update rewrites the metadata in one atomic `update`.

/// Phase of an enabled subscription's item.
pub(crate) fn active() -> Phase {
    Phase::new("active").unwrap_or(Phase::PENDING)
}

/// Phase of a disabled subscription's item.
pub(crate) fn disabled() -> Phase {
    Phase::new("disabled").unwrap_or(Phase::PENDING)
}

pub(crate) fn phase_of(sub: &Subscription) -> Phase {
    if sub.enabled { active() } else { disabled() }
}

pub(crate) fn to_metadata(sub: &Subscription) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("id".to_owned(), sub.id.clone());
    m.insert("url".to_owned(), sub.url.as_str().to_owned());
    let events: Vec<&str> = sub.events.iter().map(EventPattern::as_str).collect();
    m.insert("events".to_owned(), events.join(" "));
    if let Some(owner) = &sub.owner {
        m.insert("owner".to_owned(), owner.clone());
    }
    m.insert("scheme".to_owned(), sub.scheme.as_str().to_owned());
    m.insert("secret".to_owned(), sub.secret.expose().to_owned());
    if let Some((old, until)) = &sub.previous_secret {
        m.insert("previous_secret".to_owned(), old.expose().to_owned());
        m.insert("previous_until".to_owned(), until.as_millis().to_string());
    }
    if !sub.headers.is_empty() {
        let headers = serde_json::to_string(&sub.headers).unwrap_or_default();
        m.insert("headers".to_owned(), headers);
    }
    if let Some(n) = sub.max_in_flight {
        m.insert("max_in_flight".to_owned(), n.to_string());
    }
    if sub.strict_fifo {
        m.insert("strict_fifo".to_owned(), "true".to_owned());
    }
    m.insert(
        "created_at".to_owned(),
        sub.created_at.as_millis().to_string(),
    );
    m
}

pub(crate) fn from_item(item: &Item) -> Result<Subscription> {
    let bad = |what: &str| {
        Error::Store(hookspool::Error::corrupted(format!(
            "subscription record {} (queue {}): {what}",
            item.key,
            crate::SUBSCRIPTIONS_QUEUE
        )))
    };
    let m = &item.metadata;
    let get = |k: &str| m.get(k).ok_or_else(|| bad(&format!("missing `{k}`")));
    let scheme = match get("scheme")?.as_str() {
        "standard_webhooks" => SignatureScheme::StandardWebhooks,
        "webhooks_emitter" => SignatureScheme::WebhooksEmitter,
        "github" => SignatureScheme::GitHub,
        other => return Err(bad(&format!("unknown scheme `{other}`"))),
    };
    let events = get("events")?
        .split(' ')
        .map(EventPattern::new)
        .collect::<Result<Vec<_>>>()
        .map_err(|_| bad("bad event pattern"))?;
    let number = |k: &str| -> Result<Option<u64>> {
        m.get(k)
            .map(|v| v.parse::<u64>().map_err(|_| bad(&format!("bad `{k}`"))))
            .transpose()
    };
    let previous_secret = match (m.get("previous_secret"), number("previous_until")?) {
        (Some(s), Some(until)) => Some((Secret::new(s.clone()), Timestamp(until))),
        _ => None,
    };
    let headers = match m.get("headers") {
        Some(h) => serde_json::from_str(h).map_err(|_| bad("bad `headers`"))?,
        None => BTreeMap::new(),
    };
    Ok(Subscription {
        id: get("id")?.clone(),
        url: TargetUrl::parse(get("url")?).map_err(|_| bad("bad `url`"))?,
        events,
        owner: m.get("owner").cloned(),
        scheme,
        secret: Secret::new(get("secret")?.clone()),
        previous_secret,
        headers,
        enabled: item.phase != disabled(),
        max_in_flight: number("max_in_flight")?
            .map(|n| u32::try_from(n).map_err(|_| bad("bad `max_in_flight`")))
            .transpose()?,
        strict_fifo: m.get("strict_fifo").is_some_and(|v| v == "true"),
        created_at: Timestamp(number("created_at")?.unwrap_or(0)),
    })
}

/// How long requests are also signed with the previous secret after a rotation.
pub const DEFAULT_ROTATION_GRACE: Duration = Duration::from_hours(24);

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> EventPattern {
        EventPattern::new(s).unwrap()
    }

    #[test]
    fn pattern_rule() {
        assert!(p("*").matches("anything.at.all"));
        assert!(p("order.*").matches("order.paid"));
        assert!(p("order.*").matches("order.item.added"));
        assert!(!p("order.*").matches("order"));
        assert!(!p("order.*").matches("orders.paid"));
        assert!(!p("order.*").matches("order."));
        assert!(p("order.paid").matches("order.paid"));
        assert!(!p("order.paid").matches("order.paid.late"));
        for bad in ["", "order*", "*.paid", "or*der", "a b", "order.**"] {
            assert!(EventPattern::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn event_names() {
        assert!(check_event_name("invoice:created/v2").is_ok());
        assert!(matches!(
            check_event_name("order.*"),
            Err(Error::InvalidEvent { .. })
        ));
        assert!(check_event_name(&"e".repeat(129)).is_err());
    }

    #[test]
    fn headers_are_checked() {
        let ok = BTreeMap::from([("X-Tenant".to_owned(), "acme".to_owned())]);
        assert!(check_headers(&ok).is_ok());
        for (n, v) in [
            ("Content-Type", "x"),
            ("webhook-signature", "x"),
            ("bad name", "x"),
            ("X-Ok", "line\nbreak"),
        ] {
            let h = BTreeMap::from([(n.to_owned(), v.to_owned())]);
            assert!(check_headers(&h).is_err(), "{n:?}: {v:?}");
        }
    }
}
