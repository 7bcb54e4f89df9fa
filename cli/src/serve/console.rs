//! The daemon's web console settings: on or off, where, and how long a sign-in lasts. From
//! flags, the environment and the config file's `[console]` table, like every other setting.

use std::time::Duration;

use clap::Args;
use hookspool_http::{DEFAULT_SESSION_TTL, check_console_path};
use serde::Deserialize;

use crate::duration::parse_duration;
use crate::error::CliError;

/// Where the console is served unless told otherwise.
pub const DEFAULT_CONSOLE_PATH: &str = "/ui";

/// `hookspool serve` console flags.
#[derive(Clone, Debug, Default, Args)]
pub struct ConsoleArgs {
    /// Serve no web console.
    #[arg(long, env = "HOOKSPOOL_NO_CONSOLE")]
    pub no_console: bool,
    /// Where the web console is served [default: /ui].
    #[arg(long, env = "HOOKSPOOL_CONSOLE_PATH", value_name = "PATH")]
    pub console_path: Option<String>,
    /// How long a console sign-in lasts [default: 8h].
    #[arg(long, env = "HOOKSPOOL_CONSOLE_SESSION_TTL", value_parser = parse_duration, value_name = "DURATION")]
    pub console_session_ttl: Option<Duration>,
}

/// The config file's `[console]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConsoleFile {
    enabled: Option<bool>,
    path: Option<String>,
    session_ttl: Option<String>,
}

/// The console, checked: where it is served and how long a sign-in lasts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleSettings {
    /// Its path, starting with `/`, without a trailing one (`/ui`).
    pub path: String,
    /// How long a sign-in lasts.
    pub session_ttl: Duration,
}

/// Resolves the console settings (flags over the environment over the file); `None` when
/// it is off.
pub(super) fn console(
    args: ConsoleArgs,
    file: Option<ConsoleFile>,
) -> Result<Option<ConsoleSettings>, CliError> {
    let file = file.unwrap_or_default();
    if args.no_console || file.enabled == Some(false) {
        return Ok(None);
    }
    let (path, setting) = match (args.console_path, file.path) {
        (Some(p), _) => (p, "--console-path"),
        (None, Some(p)) => (p, "config `console.path`"),
        (None, None) => (DEFAULT_CONSOLE_PATH.to_owned(), ""),
    };
    let path =
        check_path(&path).map_err(|e| CliError::Input(format!("{setting} {path:?}: {e}")))?;
    let session_ttl = match (args.console_session_ttl, file.session_ttl) {
        (Some(d), _) => d,
        (None, Some(s)) => parse_duration(&s)
            .map_err(|e| CliError::Input(format!("config `console.session_ttl` = {s:?}: {e}")))?,
        (None, None) => DEFAULT_SESSION_TTL,
    };
    if session_ttl.is_zero() {
        return Err(CliError::Input(
            "the console session length must be more than 0".to_owned(),
        ));
    }
    Ok(Some(ConsoleSettings { path, session_ttl }))
}

/// The API's top-level paths, which a console path must not start with.
const API_PATHS: [&str; 10] = [
    "queues",
    "hooks",
    "events",
    "deliveries",
    "callbacks",
    "metrics",
    "healthz",
    "readyz",
    "verify",
    "openapi.json",
];

/// A console path ([`hookspool_http::check_console_path`]) that is not one of the API's own
/// top-level paths.
fn check_path(path: &str) -> Result<String, String> {
    let checked = check_console_path(path).map_err(|e| e.reason.to_owned())?;
    let first = checked[1..].split('/').next().unwrap_or_default();
    if API_PATHS.contains(&first) {
        return Err(format!("`/{first}` belongs to the API"));
    }
    Ok(checked)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on failure
mod tests {
    use super::*;

    #[test]
    fn the_console_is_on_at_ui_by_default() {
        let c = console(ConsoleArgs::default(), None).unwrap().unwrap();
        assert_eq!(c.path, "/ui");
        assert_eq!(c.session_ttl, DEFAULT_SESSION_TTL);
    }

    #[test]
    fn a_flag_or_the_file_turns_it_off() {
        let args = ConsoleArgs {
            no_console: true,
            ..ConsoleArgs::default()
        };
        assert_eq!(console(args, None).unwrap(), None);
        let file: ConsoleFile = toml::from_str("enabled = false").unwrap();
        assert_eq!(console(ConsoleArgs::default(), Some(file)).unwrap(), None);
    }

    #[test]
    fn paths_are_checked() {
        assert_eq!(check_path("/admin/hooks/").unwrap(), "/admin/hooks");
        for bad in ["ui", "/", "/a//b", "/../x", "/a b", "/queues", "/hooks/ui"] {
            assert!(check_path(bad).is_err(), "{bad} was accepted");
        }
        let file: ConsoleFile = toml::from_str("path = \"nope\"").unwrap();
        let e = console(ConsoleArgs::default(), Some(file)).unwrap_err();
        assert!(e.to_string().contains("console.path"), "{e}");
    }
}
