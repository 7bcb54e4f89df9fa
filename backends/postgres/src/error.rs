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
    #[error("cannot connect to PostgreSQL at {target}: {}", describe(source))]
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
    #[error(
        "migrating schema `{schema}` to version {version} failed: {}",
        describe(source)
    )]
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
    #[error("PostgreSQL error while opening: {}", describe(.0))]
    Sql(#[from] tokio_postgres::Error),
}

impl From<OpenError> for Error {
    fn from(e: OpenError) -> Self {
        Error::backend("postgres", e)
    }
}

/// What a client error says, with the detail tokio-postgres keeps in its source: the
/// server's message (and SQLSTATE), or the socket's error.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    match std::error::Error::source(e) {
        Some(inner) => format!("{e}: {inner}"),
        None => e.to_string(),
    }
}

/// A server or connection error with a message that says what happened (tokio-postgres's
/// own `Display` says only "db error").
#[derive(Debug)]
pub struct ServerError {
    message: String,
    source: tokio_postgres::Error,
}

impl ServerError {
    /// The client's error.
    pub fn client_error(&self) -> &tokio_postgres::Error {
        &self.source
    }
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl From<tokio_postgres::Error> for ServerError {
    fn from(source: tokio_postgres::Error) -> Self {
        ServerError {
            message: describe(&source),
            source,
        }
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
    if is_unavailable(&e) {
        return Error::Unavailable {
            backend: "postgres",
            source: Box::new(ServerError::from(e)),
        };
    }
    if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_PARAMETER_VALUE)
        && let Some(db) = e.as_db_error()
    {
        return Error::invalid(db.message().to_owned());
    }
    Error::backend("postgres", ServerError::from(e))
}

/// Whether the error means the server cannot be reached right now: the connection is
/// gone, could not be made, or the server is shutting down or starting up.
fn is_unavailable(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // Class 08: connection exceptions; 57P0x: the server is going away or not up yet.
        Some(code) => {
            let c = code.code();
            c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03")
        }
        // No SQLSTATE: the error came from the socket (refused, reset, timed out), not from
        // the server's answer.
        None => e.as_db_error().is_none(),
    }
}

/// A pool error (no connection to be had) as the engine's error: the server cannot be
/// reached, or every connection stayed busy past the wait timeout.
pub(crate) fn pool(e: deadpool_postgres::PoolError) -> Error {
    match e {
        deadpool_postgres::PoolError::Backend(e)
        | deadpool_postgres::PoolError::PostCreateHook(deadpool_postgres::HookError::Backend(e)) => {
            map(e, None)
        }
        other => Error::Unavailable {
            backend: "postgres",
            source: Box::new(other),
        },
    }
}
