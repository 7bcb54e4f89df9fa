//! [`PostgresOptions`]: where the database is, which schema, how many connections.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::OpenError;

/// The schema used when none is given.
pub const DEFAULT_SCHEMA: &str = "hookspool";
/// Connections in the pool when no size is given.
pub const DEFAULT_POOL_SIZE: usize = 16;
/// The age of a snapshot from which the backend warns about it, unless told otherwise.
pub const DEFAULT_SNAPSHOT_WARNING: Duration = Duration::from_mins(1);

/// Settings of [`crate::PostgresBackend::open`].
///
/// Its `Debug` masks the password of the connection string.
#[derive(Clone)]
pub struct PostgresOptions {
    /// A connection string: a URL (`postgresql://user:password@host:5432/db?sslmode=require`)
    /// or `key=value` pairs (`host=/var/run/postgresql dbname=app`), as libpq takes them.
    /// `sslmode=require` makes the connection use TLS (rustls, checked against the Mozilla
    /// root certificates and [`PostgresOptions::ca_file`]); the default `prefer` uses TLS
    /// when the server offers it.
    pub url: String,
    /// The Postgres schema that holds every table and function (default `hookspool`):
    /// 1 to 63 characters from `a–z 0–9 _`, starting with a letter or `_`.
    pub schema: String,
    /// Most connections open at once (default 16).
    pub pool_size: usize,
    /// A PEM file of extra root certificates to trust for TLS (a private CA).
    pub ca_file: Option<PathBuf>,
    /// How long to wait for a connection to the server (default 10 s).
    pub connect_timeout: Duration,
    /// How long the rows of a reset or deleted queue's generation are looked for after it
    /// was thrown away (default 60 s): a push that read the generation just before lands
    /// in it, and is deleted with it, within that time. Tests shorten it.
    pub trash_grace: Duration,
    /// How old the oldest snapshot on the server may get before the backend logs a warning
    /// naming the session that holds it (default 1 min; `None`: it never looks). It looks
    /// every half of this, at most every 30 s and at least every 100 ms. See
    /// [`crate::PostgresBackend::oldest_snapshot`]. While it sees such a snapshot, claims
    /// of each queue start where this backend's last claim ended, with a full claim at
    /// least every second (see the crate docs); `None` turns that off too.
    pub snapshot_warning: Option<Duration>,
}

impl PostgresOptions {
    /// Options for this connection string, with the default schema and pool size.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresOptions {
            url: url.into(),
            schema: DEFAULT_SCHEMA.to_owned(),
            pool_size: DEFAULT_POOL_SIZE,
            ca_file: None,
            connect_timeout: Duration::from_secs(10),
            trash_grace: Duration::from_mins(1),
            snapshot_warning: Some(DEFAULT_SNAPSHOT_WARNING),
        }
    }

    /// Uses this schema.
    #[must_use]
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Keeps at most this many connections.
    #[must_use]
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// Warns in the log once a session has held a snapshot open this long (`None`: never
    /// looks). See [`PostgresOptions::snapshot_warning`].
    #[must_use]
    pub fn snapshot_warning(mut self, after: Option<Duration>) -> Self {
        self.snapshot_warning = after;
        self
    }

    /// Trusts the root certificates of this PEM file too.
    #[must_use]
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    pub(crate) fn check(&self) -> Result<(), OpenError> {
        check_schema_name(&self.schema)?;
        if self.pool_size == 0 {
            return Err(OpenError::InvalidOptions(
                "the pool size must be at least 1".to_owned(),
            ));
        }
        Ok(())
    }
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &redact(&self.url))
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("ca_file", &self.ca_file)
            .field("connect_timeout", &self.connect_timeout)
            .field("trash_grace", &self.trash_grace)
            .field("snapshot_warning", &self.snapshot_warning)
            .finish()
    }
}

/// A connection string with its password replaced by `****` (URL or `key=value` form).
pub fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((userinfo, host)) = rest.split_once('@')
            && let Some((user, _)) = userinfo.split_once(':')
        {
            return format!("{scheme}://{user}:****@{host}");
        }
        return url.to_owned();
    }
    url.split_whitespace()
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=****"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn check_schema_name(name: &str) -> Result<(), OpenError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.starts_with("pg_");
    if ok {
        Ok(())
    } else {
        Err(OpenError::InvalidOptions(format!(
            "invalid schema name {name:?}: 1 to 63 characters from a-z, 0-9 and '_', starting \
             with a letter or '_', and not starting with 'pg_'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgresql://app:s3cret@db:5432/x"),
            "postgresql://app:****@db:5432/x"
        );
        assert_eq!(
            redact("host=db password=s3cret user=app"),
            "host=db password=**** user=app"
        );
        let shown = format!("{:?}", PostgresOptions::new("postgres://u:hunter2@h/d"));
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn schema_names_are_checked() {
        for ok in ["hookspool", "_x", "a1_b"] {
            assert!(check_schema_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Hook", "1a", "a-b", "pg_x", &"a".repeat(64), "a;drop"] {
            assert!(check_schema_name(bad).is_err(), "{bad}");
        }
    }
}
