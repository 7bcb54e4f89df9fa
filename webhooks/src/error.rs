//! The webhook layer's error type: the engine's errors, plus what only webhooks can get
//! wrong (subscriptions, deliveries, URLs, secrets, event names, idempotency keys).

/// Result type of hookspool-webhooks.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a webhook operation.
///
/// Absence is not an error where a caller asks "is there one?" ([`crate::Hooks::delivery`]
/// and [`crate::Hooks::subscription`] give `None`); it is where a caller acts on something
/// that must exist (replay, update, rotate), as [`Error::DeliveryNotFound`] and
/// [`Error::SubscriptionNotFound`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error of the queue engine underneath (a missing queue, a conflict, a full batch,
    /// a damaged record, a poisoned backend, …).
    #[error(transparent)]
    Store(#[from] hookspool::Error),

    /// No subscription (or emitter) has this id.
    #[error("no subscription with id `{0}`")]
    SubscriptionNotFound(String),

    /// `attach` (or `subscribe` with an explicit id) used an id that is already taken.
    #[error("a subscription with id `{0}` already exists")]
    SubscriptionExists(String),

    /// No delivery has this id (it was never fired here, or its record is gone).
    #[error("no delivery with id `{0}`")]
    DeliveryNotFound(String),

    /// No callback channel of this name: no such queue, not a queue id, or one of
    /// hookspool's own queues.
    #[error("no callback channel {0:?}")]
    ChannelNotFound(String),

    /// A callback without a valid signature for its channel. Nothing was stored.
    #[error("{0}")]
    InvalidSignature(crate::signing::VerifyError),

    /// A channel whose secret cannot verify signatures (not a `whsec_` secret): every
    /// callback into it is refused until its secret is fixed.
    #[error("the secret of channel `{0}` is not a Standard Webhooks (whsec_) secret")]
    ChannelMisconfigured(String),

    /// A webhook target URL that cannot be used. `reason` says why.
    #[error("invalid target URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A signing secret that cannot be used (malformed `whsec_` value, too short, empty).
    #[error("invalid signing secret: {0}")]
    InvalidSecret(String),

    /// An event name or pattern that breaks the naming rule.
    #[error("invalid event name {name:?}: {reason}")]
    InvalidEvent {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// An argument that is out of range or contradicts another one. The message says which.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A publish reused an idempotency key, within its lifetime, for a different event,
    /// owner or payload. Nothing was fired.
    #[error(
        "idempotency key {key:?} was used for a different event, owner or payload \
         (a key names one request until it expires)"
    )]
    IdempotencyKeyReused {
        /// The key.
        key: String,
    },

    /// A fault inside hookspool-webhooks (the operating system gave no random bytes, the
    /// HTTP client could not be built, a stored record contradicts itself). Never the
    /// caller's input.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Whether the storage could not be reached ([`hookspool::Error::Unavailable`]): the
    /// loops wait and try again instead of stopping.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Store(hookspool::Error::Unavailable { .. }))
    }

    /// Builds an [`Error::InvalidInput`] with a description.
    pub fn invalid(what: impl Into<String>) -> Self {
        Error::InvalidInput(what.into())
    }

    /// Builds an [`Error::Internal`] with a description.
    pub fn internal(what: impl Into<String>) -> Self {
        Error::Internal(what.into())
    }

    /// A short stable code for the variant (the engine's own code for [`Error::Store`]), for
    /// JSON error bodies and exit codes.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Store(e) => e.code(),
            Error::SubscriptionNotFound(_) => "subscription_not_found",
            Error::SubscriptionExists(_) => "subscription_exists",
            Error::DeliveryNotFound(_) => "delivery_not_found",
            Error::ChannelNotFound(_) => "channel_not_found",
            Error::InvalidSignature(_) => "invalid_signature",
            Error::ChannelMisconfigured(_) => "channel_misconfigured",
            Error::InvalidUrl { .. } => "invalid_url",
            Error::InvalidSecret(_) => "invalid_secret",
            Error::InvalidEvent { .. } => "invalid_event",
            Error::InvalidInput(_) => "invalid_input",
            Error::IdempotencyKeyReused { .. } => "idempotency_key_reused",
            Error::Internal(_) => "internal",
        }
    }

    /// The engine's error, if this is one.
    pub fn as_store(&self) -> Option<&hookspool::Error> {
        match self {
            Error::Store(e) => Some(e),
            _ => None,
        }
    }
}
