//! The engine's error type: one enum whose variants are facts a caller can branch on.

use crate::model::{Key, Phase, QueueId};

/// Result type used throughout hookspool.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a queue operation.
///
/// Absence is not an error: popping an empty queue is `Ok(None)`, fetching an unknown key is
/// `Ok(None)`. Errors are for calls that cannot be carried out as asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The named queue does not exist (create it first with `create_queue`).
    #[error("queue `{0}` does not exist")]
    QueueNotFound(QueueId),

    /// `create_queue` was called with an id that is already taken.
    #[error("queue `{0}` already exists")]
    QueueExists(QueueId),

    /// The item with this key does not exist in the queue (it was never pushed, or has been
    /// popped, deleted, reset or purged).
    #[error("queue `{queue}` has no item with key {key}")]
    ItemNotFound {
        /// The queue that was searched.
        queue: QueueId,
        /// The key that was not found.
        key: Key,
    },

    /// A queue id that breaks the naming rule (see [`QueueId`]).
    #[error("invalid queue id {id:?}: {reason}")]
    InvalidQueueId {
        /// The rejected id, as given.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A phase name that breaks the naming rule (see [`Phase`]).
    #[error("invalid phase name {name:?}: {reason}")]
    InvalidPhase {
        /// The rejected name, as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// An argument that is out of range or contradicts another one. The message says which.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A payload larger than the configured limit (default 1 MiB). Nothing was stored.
    #[error("payload of {size} bytes is over the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The payload's size in bytes.
        size: usize,
        /// The configured limit.
        limit: usize,
    },

    /// A batch with more items than the configured limit. Nothing was stored.
    #[error("batch of {len} items is over the limit of {limit} items")]
    BatchTooLarge {
        /// How many items the batch had.
        len: usize,
        /// The configured limit.
        limit: usize,
    },

    /// A compare-and-set phase change found the item in another phase. Nothing was changed.
    #[error("item {key} is in phase `{actual}`, not `{expected}`")]
    PhaseConflict {
        /// The item's key.
        key: Key,
        /// The phase the caller required.
        expected: Phase,
        /// The phase the item is actually in.
        actual: Phase,
    },

    /// `ack` or `nack` by a consumer that does not hold the item's lease (it expired and the
    /// item was given back, or another consumer claimed it since). Nothing was changed.
    #[error("item {key} is not leased to `{owner}`")]
    NotLeaseOwner {
        /// The item's key.
        key: Key,
        /// The consumer that tried to settle the item.
        owner: String,
    },

    /// Stored data failed its checksum or could not be decoded. The corrupt record is never
    /// returned as data. `what` says where it was found.
    #[error("corrupt data: {what}")]
    Corrupted {
        /// Where the corruption was found and how.
        what: String,
    },

    /// The data directory is in use by another process (or another handle in this one).
    #[error("data directory {path} is locked by another process; stop it or use another directory")]
    Locked {
        /// The directory that is locked.
        path: String,
    },

    /// An earlier durable write failed (for example an fsync error). The backend no longer
    /// trusts its state; every later call fails with this error until it is reopened.
    #[error("backend is poisoned after an earlier write failure: {reason}")]
    Poisoned {
        /// The failure that poisoned the backend.
        reason: String,
    },

    /// No subscription (or emitter) has this id.
    #[error("no subscription with id `{0}`")]
    SubscriptionNotFound(String),

    /// `attach` (or `subscribe` with an explicit id) used an id that is already taken.
    #[error("a subscription with id `{0}` already exists")]
    SubscriptionExists(String),

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

    /// A hookspool HTTP API answered a request of `hookspool::client::Client` with an
    /// error status. `code` and `message` are the server's `{"error": code, "message": text}`
    /// (`code` is `invalid_response` when the answer was not the API's JSON).
    #[error("server answered {status} {code}: {message}")]
    Remote {
        /// The HTTP status, e.g. 404.
        status: u16,
        /// The server's error code, e.g. `queue_not_found` or `unauthorized`.
        code: String,
        /// The server's message.
        message: String,
    },

    /// A request of `hookspool::client::Client` got no answer: the server could not be
    /// reached (refused, unresolvable, TLS failure), timed out, or broke off the response.
    #[error("cannot reach {url}: {reason}")]
    Network {
        /// The URL that was requested (never with the token).
        url: String,
        /// What went wrong.
        reason: String,
    },

    /// A failure inside a backend that fits no other variant (I/O errors, a lost connection).
    #[error("{backend} backend error: {source}")]
    Backend {
        /// Name of the backend, e.g. `"sled"`.
        backend: &'static str,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl Error {
    /// Wraps a backend-specific error.
    pub fn backend(
        backend: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Error::Backend {
            backend,
            source: source.into(),
        }
    }

    /// Builds a [`Error::Corrupted`] with a description.
    pub fn corrupted(what: impl Into<String>) -> Self {
        Error::Corrupted { what: what.into() }
    }

    /// Builds an [`Error::InvalidInput`] with a description.
    pub fn invalid(what: impl Into<String>) -> Self {
        Error::InvalidInput(what.into())
    }

    /// Whether this error belongs to one entry of [`crate::Backend::update_many`] (a failed
    /// precondition: the item is missing, in another phase, leased to someone else, or the
    /// move is not allowed) rather than to the whole call.
    pub fn fails_one_entry(&self) -> bool {
        matches!(
            self,
            Error::ItemNotFound { .. }
                | Error::PhaseConflict { .. }
                | Error::NotLeaseOwner { .. }
                | Error::InvalidInput(_)
        )
    }

    /// A short stable code for the variant, for JSON error bodies and exit codes.
    pub fn code(&self) -> &'static str {
        match self {
            Error::QueueNotFound(_) => "queue_not_found",
            Error::QueueExists(_) => "queue_exists",
            Error::ItemNotFound { .. } => "item_not_found",
            Error::InvalidQueueId { .. } => "invalid_queue_id",
            Error::InvalidPhase { .. } => "invalid_phase",
            Error::InvalidInput(_) => "invalid_input",
            Error::PayloadTooLarge { .. } => "payload_too_large",
            Error::BatchTooLarge { .. } => "batch_too_large",
            Error::PhaseConflict { .. } => "phase_conflict",
            Error::NotLeaseOwner { .. } => "not_lease_owner",
            Error::Corrupted { .. } => "corrupted",
            Error::Locked { .. } => "locked",
            Error::Poisoned { .. } => "poisoned",
            Error::SubscriptionNotFound(_) => "subscription_not_found",
            Error::SubscriptionExists(_) => "subscription_exists",
            Error::InvalidUrl { .. } => "invalid_url",
            Error::InvalidSecret(_) => "invalid_secret",
            Error::InvalidEvent { .. } => "invalid_event",
            Error::Remote { .. } => "remote",
            Error::Network { .. } => "network",
            Error::Backend { .. } => "backend",
        }
    }
}
