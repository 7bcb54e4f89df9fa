//! The daemon's retention settings: how long deliveries and callbacks stay once settled, and
//! how often the retention pass runs. From flags, the environment and the config file's
//! `[retention]` table, like every other setting.

use std::time::Duration;

use clap::Args;
use hookspool::Retain;
use hookspool_webhooks::{DEFAULT_DELIVERIES_RETAIN, DEFAULT_IDEMPOTENCY_TTL};
use serde::Deserialize;

use crate::duration::{parse_duration, parse_retain_period};
use crate::error::CliError;

/// How often the retention pass runs unless told otherwise.
pub const DEFAULT_RETENTION_INTERVAL: Duration = Duration::from_secs(1);

/// `hookspool serve` retention flags. Each period is a duration of at least 1s, or
/// `forever`.
#[derive(Clone, Debug, Default, Args)]
pub struct RetentionArgs {
    /// How long a delivered delivery stays (phase `done`) [default: 3d].
    #[arg(
        long,
        env = "HOOKSPOOL_RETAIN_DELIVERIES_DONE",
        value_name = "PERIOD",
        allow_hyphen_values = true
    )]
    pub retain_deliveries_done: Option<String>,
    /// How long a delivery that was given up on stays (phase `dead`) [default: 30d].
    #[arg(
        long,
        env = "HOOKSPOOL_RETAIN_DELIVERIES_DEAD",
        value_name = "PERIOD",
        allow_hyphen_values = true
    )]
    pub retain_deliveries_dead: Option<String>,
    /// How long a handled callback stays, in the channel queues the daemon creates [default:
    /// 3d].
    #[arg(
        long,
        env = "HOOKSPOOL_RETAIN_CALLBACKS_DONE",
        value_name = "PERIOD",
        allow_hyphen_values = true
    )]
    pub retain_callbacks_done: Option<String>,
    /// How long a callback whose handler gave up stays [default: 30d].
    #[arg(
        long,
        env = "HOOKSPOOL_RETAIN_CALLBACKS_DEAD",
        value_name = "PERIOD",
        allow_hyphen_values = true
    )]
    pub retain_callbacks_dead: Option<String>,
    /// How long an idempotency key names its request: a publish that reuses the key within
    /// this period gets the first answer; after it, the key is forgotten and the publish is a
    /// new one [default: 24h]. At least 1s; not `forever`, which would keep every key.
    #[arg(
        long,
        env = "HOOKSPOOL_RETAIN_IDEMPOTENCY_KEYS",
        value_name = "PERIOD",
        allow_hyphen_values = true
    )]
    pub retain_idempotency_keys: Option<String>,
    /// How often the retention pass removes what is old enough, from every queue with a
    /// retention period [default: 1s].
    #[arg(long, env = "HOOKSPOOL_RETENTION_INTERVAL", value_parser = parse_duration, value_name = "DURATION")]
    pub retention_interval: Option<Duration>,
}

/// The config file's `[retention]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RetentionFile {
    deliveries_done: Option<String>,
    deliveries_dead: Option<String>,
    callbacks_done: Option<String>,
    callbacks_dead: Option<String>,
    idempotency_keys: Option<String>,
    interval: Option<String>,
}

/// The daemon's retention, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionConfig {
    /// For `hookspool.deliveries` (set at every start).
    pub deliveries: Retain,
    /// For the callback channel queues the daemon creates.
    pub callbacks: Retain,
    /// How long an idempotency key is remembered.
    pub idempotency_keys: Duration,
    /// Between two retention passes.
    pub interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            deliveries: DEFAULT_DELIVERIES_RETAIN,
            callbacks: DEFAULT_DELIVERIES_RETAIN,
            idempotency_keys: DEFAULT_IDEMPOTENCY_TTL,
            interval: DEFAULT_RETENTION_INTERVAL,
        }
    }
}

/// One period: the flag (or its variable) if given, else the file's, else `default`. `name`
/// is the file's key (`deliveries_done`); the flag is `--retain-` and that with dashes.
fn period(
    flag: Option<String>,
    file: Option<String>,
    name: &str,
    default: Option<Duration>,
) -> Result<Option<Duration>, CliError> {
    let (text, setting) = match (flag, file) {
        (Some(t), _) => (t, format!("--retain-{}", name.replace('_', "-"))),
        (None, Some(t)) => (t, format!("config `retention.{name}`")),
        (None, None) => return Ok(default),
    };
    parse_retain_period(&text).map_err(|e| CliError::Input(format!("{setting}: {e}")))
}

/// Resolves the retention settings (flags over the environment over the file).
pub(super) fn retention(
    args: RetentionArgs,
    file: Option<RetentionFile>,
) -> Result<RetentionConfig, CliError> {
    let file = file.unwrap_or_default();
    let d = DEFAULT_DELIVERIES_RETAIN;
    let deliveries = Retain {
        done: period(
            args.retain_deliveries_done,
            file.deliveries_done,
            "deliveries_done",
            d.done,
        )?,
        dead: period(
            args.retain_deliveries_dead,
            file.deliveries_dead,
            "deliveries_dead",
            d.dead,
        )?,
        expired: d.expired,
    };
    let callbacks = Retain {
        done: period(
            args.retain_callbacks_done,
            file.callbacks_done,
            "callbacks_done",
            d.done,
        )?,
        dead: period(
            args.retain_callbacks_dead,
            file.callbacks_dead,
            "callbacks_dead",
            d.dead,
        )?,
        expired: d.expired,
    };
    let idempotency_keys = period(
        args.retain_idempotency_keys,
        file.idempotency_keys,
        "idempotency_keys",
        Some(DEFAULT_IDEMPOTENCY_TTL),
    )?
    .ok_or_else(|| {
        CliError::Input(
            "idempotency keys cannot be kept `forever` (every key would stay); \
             give a period such as 24h"
                .to_owned(),
        )
    })?;
    let interval = match (args.retention_interval, file.interval) {
        (Some(i), _) => i,
        (None, Some(s)) => parse_duration(&s)
            .map_err(|e| CliError::Input(format!("config `retention.interval` = {s:?}: {e}")))?,
        (None, None) => DEFAULT_RETENTION_INTERVAL,
    };
    if interval.is_zero() {
        return Err(CliError::Input(
            "the retention interval must be more than zero".to_owned(),
        ));
    }
    Ok(RetentionConfig {
        deliveries,
        callbacks,
        idempotency_keys,
        interval,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(toml_text: &str) -> Result<RetentionFile, String> {
        toml::from_str(toml_text).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_flags_and_file_combine_flags_first() {
        assert_eq!(
            retention(RetentionArgs::default(), None).ok(),
            Some(RetentionConfig::default())
        );
        let args = RetentionArgs {
            retain_deliveries_done: Some("1h".to_owned()),
            ..RetentionArgs::default()
        };
        let f = file(
            "deliveries_done = \"2h\"\ndeliveries_dead = \"forever\"\n\
             idempotency_keys = \"1h\"\ninterval = \"5s\"",
        )
        .ok();
        let got = retention(args, f).ok();
        assert_eq!(
            got,
            Some(RetentionConfig {
                deliveries: Retain {
                    done: Some(Duration::from_hours(1)),
                    dead: None,
                    expired: None,
                },
                callbacks: DEFAULT_DELIVERIES_RETAIN,
                idempotency_keys: Duration::from_hours(1),
                interval: Duration::from_secs(5),
            })
        );
    }

    #[test]
    fn bad_periods_name_the_setting() {
        let args = RetentionArgs {
            retain_callbacks_dead: Some("-1d".to_owned()),
            ..RetentionArgs::default()
        };
        let err = retention(args, None).expect_err("negative").to_string();
        assert!(
            err.contains("--retain-callbacks-dead") && err.contains("negative"),
            "{err}"
        );
        let f = file("deliveries_done = \"200ms\"").ok();
        let err = retention(RetentionArgs::default(), f)
            .expect_err("below a second")
            .to_string();
        assert!(
            err.contains("retention.deliveries_done") && err.contains("less than 1s"),
            "{err}"
        );
        let args = RetentionArgs {
            retain_idempotency_keys: Some("forever".to_owned()),
            ..RetentionArgs::default()
        };
        let err = retention(args, None).expect_err("forever").to_string();
        assert!(
            err.contains("idempotency keys") && err.contains("forever"),
            "{err}"
        );
        let f = file("idempotency_keys = \"0s\"").ok();
        let err = retention(RetentionArgs::default(), f)
            .expect_err("zero")
            .to_string();
        assert!(err.contains("retention.idempotency_keys"), "{err}");
        let err = file("deliveries_forever = \"1d\"").expect_err("unknown key");
        assert!(err.contains("deliveries_forever"), "{err}");
    }
}
