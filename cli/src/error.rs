//! The CLI's errors and the process exit code each one maps to.

use std::path::{Path, PathBuf};

/// Exit code of a command that succeeded.
pub const EXIT_OK: u8 = 0;
/// Exit code of a command that could not be carried out (unknown queue, bad id or phase,
/// phase conflict, refused confirmation, I/O error, …).
pub const EXIT_FAILED: u8 = 1;
/// Exit code of a usage error: unknown flag, missing argument, unparsable number or duration.
/// clap exits with it on its own.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the data directory is in use by another hookspool process.
pub const EXIT_LOCKED: u8 = 3;
/// Exit code when the daemon given by `--url` (or the database given by `--database-url`)
/// does not answer (connection refused, unknown host, timeout, broken connection).
pub const EXIT_UNREACHABLE: u8 = 4;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The engine refused or failed the operation.
    #[error("{0}")]
    Store(#[from] hookspool::Error),

    /// The webhook layer refused or failed the operation (the daemon's subscriptions,
    /// deliveries and callback channels). Its engine errors arrive as [`CliError::Store`].
    #[error("{0}")]
    Webhooks(hookspool_webhooks::Error),

    /// Another process (or another handle in this one) has the data directory open.
    #[error(
        "data directory {} is in use by another hookspool process; if it is a daemon, run \
         the command through it with --url (or HOOKSPOOL_URL); otherwise stop that process \
         or pass another --data-dir",
        .dir.display()
    )]
    Locked {
        /// The directory, as given on the command line.
        dir: PathBuf,
    },

    /// A command that reads was pointed at a data directory that does not exist. It is not
    /// created, so that a typo in `--data-dir` is not mistaken for an empty store.
    #[error(
        "data directory {} does not exist (check --data-dir or HOOKSPOOL_DATA_DIR; \
         `hookspool queue create` creates it)",
        .dir.display()
    )]
    NoDataDir {
        /// The directory, as given on the command line.
        dir: PathBuf,
    },

    /// A destructive command needs confirmation, and none could be asked for (stdin is not a
    /// terminal) or the answer was no.
    #[error("{0}")]
    NotConfirmed(String),

    /// Bad input caught by the CLI itself (e.g. an empty payload source).
    #[error("{0}")]
    Input(String),

    /// The daemon given by `--url` did not answer.
    #[error(
        "no answer from the hookspool daemon at {url}: {reason} (is `hookspool serve` \
         running there? check --url or HOOKSPOOL_URL)"
    )]
    Unreachable {
        /// The daemon's base URL.
        url: String,
        /// What went wrong (refused, timed out, …).
        reason: String,
    },

    /// The database given by `--database-url` could not be opened: unreachable (the message
    /// names the host), refused the login, not PostgreSQL 13 or later, or its schema is not
    /// one this hookspool can use.
    #[error("{0}")]
    Database(#[from] hookspool_postgres::OpenError),

    /// The daemon given by `--url` refused the API token (missing or wrong).
    #[error(
        "the hookspool daemon at {url} refused the request: {message} (pass --token or set \
         HOOKSPOOL_TOKEN)"
    )]
    Unauthorized {
        /// The daemon's base URL.
        url: String,
        /// The daemon's message.
        message: String,
    },

    /// The daemon given by `--url` refused the operation. The message is the daemon's, which
    /// for engine errors is the same sentence the offline command prints.
    #[error("{message}")]
    Remote {
        /// The HTTP status.
        status: u16,
        /// The daemon's error code (`queue_not_found`, `phase_conflict`, …).
        code: String,
        /// The daemon's message.
        message: String,
    },

    /// The client of `--url` could not make its request: the URL is not an http(s) URL, or
    /// the token cannot be sent. Nothing was sent.
    #[error("{0}")]
    Client(hookspool_client::Error),

    /// Reading stdin or writing stdout/stderr failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<hookspool_webhooks::Error> for CliError {
    /// Unwraps the engine's errors, so that a locked data directory or a missing queue reads
    /// (and exits) the same whichever layer met it.
    fn from(e: hookspool_webhooks::Error) -> Self {
        match e {
            hookspool_webhooks::Error::Store(e) => CliError::Store(e),
            e => CliError::Webhooks(e),
        }
    }
}

impl CliError {
    /// The error for a data directory `dir` that could not be opened: a lock held elsewhere
    /// names the directory as the user gave it (the engine's error names the lock file).
    pub fn opening(dir: &Path, e: hookspool::Error) -> CliError {
        match e {
            hookspool::Error::Locked { .. } => CliError::Locked {
                dir: dir.to_path_buf(),
            },
            e => CliError::Store(e),
        }
    }

    /// The process exit code for this error: [`EXIT_LOCKED`] for a locked data directory,
    /// [`EXIT_UNREACHABLE`] for a daemon or database that does not answer, [`EXIT_FAILED`]
    /// otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Locked { .. } | CliError::Store(hookspool::Error::Locked { .. }) => {
                EXIT_LOCKED
            }
            CliError::Unreachable { .. }
            | CliError::Database(hookspool_postgres::OpenError::Connect { .. })
            | CliError::Store(hookspool::Error::Unavailable { .. }) => EXIT_UNREACHABLE,
            _ => EXIT_FAILED,
        }
    }

    /// Whether this is stdout closing under us (`hookspool dump q | head`): not a failure
    /// worth a message, the reader simply had enough.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Io(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_for_locked() {
        let locked = CliError::Locked {
            dir: PathBuf::from("/tmp/x"),
        };
        assert_eq!(locked.exit_code(), EXIT_LOCKED);
        let engine_locked = CliError::Store(hookspool::Error::Locked { path: "/x".into() });
        assert_eq!(engine_locked.exit_code(), EXIT_LOCKED);
        let other = CliError::Store(hookspool::Error::invalid("nope"));
        assert_eq!(other.exit_code(), EXIT_FAILED);
        let through_webhooks =
            CliError::from(hookspool_webhooks::Error::Store(hookspool::Error::Locked {
                path: "/x".into(),
            }));
        assert_eq!(through_webhooks.exit_code(), EXIT_LOCKED);
        assert!(locked.to_string().contains("/tmp/x"));
        assert!(locked.to_string().contains("another hookspool process"));
    }

    #[test]
    fn unreachable_daemon_has_its_own_exit_code() {
        let e = CliError::Unreachable {
            url: "http://127.0.0.1:1/".into(),
            reason: "connection refused".into(),
        };
        assert_eq!(e.exit_code(), EXIT_UNREACHABLE);
        assert!(e.to_string().contains("http://127.0.0.1:1/"), "{e}");
        let remote = CliError::Remote {
            status: 404,
            code: "queue_not_found".into(),
            message: "queue `q` does not exist".into(),
        };
        assert_eq!(remote.exit_code(), EXIT_FAILED);
        assert_eq!(remote.to_string(), "queue `q` does not exist");
        let denied = CliError::Unauthorized {
            url: "http://h/".into(),
            message: "bad token".into(),
        };
        assert_eq!(denied.exit_code(), EXIT_FAILED);
        assert!(denied.to_string().contains("--token"), "{denied}");
    }

    #[test]
    fn broken_pipe_is_recognised() {
        let e = CliError::Io(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(e.is_broken_pipe());
        assert!(!CliError::Input("x".into()).is_broken_pipe());
    }
}
