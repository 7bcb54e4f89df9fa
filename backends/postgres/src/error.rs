//! Why [`crate::PostgresBackend::open`] failed, and how server errors map to the engine's.

use hookspool::{Error, QueueId};

/// Why opening the backend failed. Each variant says what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The options are wrong (schema name, pool size, connection string, CA file).
    #[error("invalid PostgreSQL settings: {0}")]
    InvalidOptions(String),
    /// The server could not be reached or refused the login.
    #[error("cannot connect to PostgreSQL at {target}: {source}")]
    Connect {
        /// Host and port (or socket directory) and database, without the password.
        target: String,
        /// What the client saw.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The server is not PostgreSQL (or does not say it is).
    #[error("the server at {target} is not PostgreSQL: it reports {version:?}")]
    NotPostgres {
        /// Where it is.
        target: String,
        /// What `SELECT version()` answered.
        version: String,
    },
    /// PostgreSQL older than 13.
    #[error("PostgreSQL {version} at {target} is too old: hookspool needs 13 or later")]
    TooOld {
        /// Where it is.
        target: String,
        /// Its version.
        version: String,
    },
    /// The schema was migrated by a newer hookspool.
    #[error(
        "schema `{schema}` is at version {found}, newer than this hookspool knows ({supported}): \
         upgrade hookspool, or use another schema"
    )]
    SchemaTooNew {
        /// The schema.
        schema: String,
        /// Its version.
        found: i32,
        /// The newest version this code knows.
        supported: i32,
    },
    /// The schema exists and holds something else.
    #[error(
        "schema `{schema}` (owner `{owner}`) already holds objects that are not hookspool's: \
         choose another schema"
    )]
    ForeignSchema {
        /// The schema.
        schema: String,
        /// Its owner.
        owner: String,
    },
    /// A migration failed; it was rolled back as a whole.
    #[error("migrating schema `{schema}` to version {version} failed: {source}")]
    Migration {
        /// The schema.
        schema: String,
        /// The version being applied.
        version: i32,
        /// The server's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// Any other server error while opening.
    #[error("PostgreSQL error while opening: {0}")]
    Sql(#[from] tokio_postgres::Error),
}

impl From<OpenError> for Error {
    fn from(e: OpenError) -> Self {
        Error::backend("postgres", e)
    }
}

/// SQLSTATE of a missing queue, raised by the schema's functions.
pub(crate) const QUEUE_NOT_FOUND: &str = "HS404";
/// SQLSTATE of a queue id that is taken.
pub(crate) const QUEUE_EXISTS: &str = "HS409";

/// Whether the server aborted the transaction for a conflict that a retry resolves
/// (a deadlock between counter rows, a serialization failure).
pub(crate) fn is_transient(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        c == &tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED
            || c == &tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
    })
}

/// Maps a server error of a call on `queue` to the engine's error.
pub(crate) fn map(e: tokio_postgres::Error, queue: Option<&QueueId>) -> Error {
    if let (Some(code), Some(q)) = (e.code(), queue) {
        match code.code() {
            QUEUE_NOT_FOUND => return Error::QueueNotFound(q.clone()),
            QUEUE_EXISTS => return Error::QueueExists(q.clone()),
            _ => {}
        }
    }
    if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_PARAMETER_VALUE)
        && let Some(db) = e.as_db_error()
    {
        return Error::invalid(db.message().to_owned());
    }
    Error::backend("postgres", e)
}

/// A pool error (no connection to be had) as the engine's error.
pub(crate) fn pool(e: deadpool_postgres::PoolError) -> Error {
    match e {
        deadpool_postgres::PoolError::Backend(e) => map(e, None),
        other => Error::backend("postgres", other),
    }
}
