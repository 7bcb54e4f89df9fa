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

    /// A fault inside hookspool or a backend: an invariant that does not hold, or a backend
    /// breaking the [`crate::Backend`] contract (for example returning fewer keys than items
    /// pushed). Never the caller's input; worth a bug report. `what` says what was found.
    #[error("internal error: {what}")]
    Internal {
        /// What was found.
        what: String,
    },

    /// The storage cannot be reached right now (a database server that is down or
    /// restarting, a connection lost, no connection free in time). Nothing was changed, or
    /// the call's effect is unknown as after a crash; retrying later is the remedy. Over
    /// HTTP: 503.
    #[error("{backend} backend unavailable: {source}")]
    Unavailable {
        /// Which backend.
        backend: &'static str,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
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

    /// Builds an [`Error::Internal`] with a description.
    pub fn internal(what: impl Into<String>) -> Self {
        Error::Internal { what: what.into() }
    }

    /// Builds an [`Error::InvalidInput`] with a description.
    pub fn invalid(what: impl Into<String>) -> Self {
        Error::InvalidInput(what.into())
    }

    /// Whether this error belongs to one entry of [`crate::Backend::update_many`] (a failed
    /// precondition: the item is missing, in another phase, leased to someone else, or the
    /// move is not allowed) rather than to the whole call. [`Error::Internal`],
    /// [`Error::Corrupted`] and the backend's own failures fail the whole call.
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
            Error::Internal { .. } => "internal",
            Error::Unavailable { .. } => "unavailable",
            Error::Backend { .. } => "backend",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn faults_fail_the_whole_call_not_one_entry() {
        assert!(!Error::internal("x").fails_one_entry());
        assert!(!Error::corrupted("x").fails_one_entry());
        assert!(Error::invalid("x").fails_one_entry());
        assert_eq!(Error::internal("x").code(), "internal");
    }
}
