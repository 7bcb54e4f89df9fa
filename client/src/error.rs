//! The client's error type: what the server refused, what never reached it, and what was
//! wrong before anything was sent.

/// Result type of hookspool-client.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a call of [`crate::Client`] can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The API answered with an error status. `code` and `message` are the server's
    /// `{"error": code, "message": text}` (`code` is `invalid_response` when the answer was
    /// not the API's JSON).
    #[error("server answered {status} {code}: {message}")]
    Remote {
        /// The HTTP status, e.g. 404.
        status: u16,
        /// The server's error code, e.g. `queue_not_found` or `unauthorized`.
        code: String,
        /// The server's message.
        message: String,
    },

    /// No answer: the server could not be reached (refused, unresolvable, TLS failure),
    /// timed out, or broke off the answer.
    #[error("cannot reach {url}: {reason}")]
    Network {
        /// The URL that was requested (never with the token).
        url: String,
        /// What went wrong.
        reason: String,
    },

    /// An argument that cannot be sent: a base URL that is not an http(s) URL, a token that
    /// cannot go in a header. Nothing was sent.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// An error of this process's own hookspool (the local side of
    /// [`crate::Client::subscribe_channel`]).
    #[error(transparent)]
    Local(#[from] hookspool_webhooks::Error),
}

impl Error {
    /// Builds an [`Error::InvalidInput`].
    pub fn invalid(what: impl Into<String>) -> Self {
        Error::InvalidInput(what.into())
    }

    /// The server's error code for [`Error::Remote`]; `network`, `invalid_input`, or the
    /// local error's code otherwise.
    pub fn code(&self) -> &str {
        match self {
            Error::Remote { code, .. } => code,
            Error::Network { .. } => "network",
            Error::InvalidInput(_) => "invalid_input",
            Error::Local(e) => e.code(),
        }
    }
}

impl From<hookspool::Error> for Error {
    fn from(e: hookspool::Error) -> Self {
        Error::Local(e.into())
    }
}
