//! `hookspool serve`: the daemon. The HTTP API and the delivery loop over one data directory,
//! configured from a TOML file, environment variables and flags (in rising priority), stopped
//! gracefully by SIGTERM or Ctrl-C.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use hookspool::http::{ApiConfig, ApiState, DEFAULT_BODY_LIMIT, router};
use hookspool::{
    DeliveryConfig, Hooks, HttpConfig, IpNet, NetworkPolicy, RetrySchedule, Secret, Store,
};
use serde::Deserialize;

use crate::duration::parse_duration;
use crate::error::CliError;

/// Where the daemon listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// How logs are written (to stderr).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// `hookspool serve` flags. Each can also come from an environment variable or the config
/// file; flags win over the environment, which wins over the file.
#[derive(Clone, Debug, Default, Args)]
pub struct ServeArgs {
    /// A TOML config file with any of the settings below (same names, `_` for `-`).
    #[arg(long, env = "HOOKSPOOL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to listen on [default: 127.0.0.1:8080]. Use port 0 for any free port (the
    /// address is printed on stdout as `listening on ADDR`).
    #[arg(long, env = "HOOKSPOOL_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// A bearer token the API accepts (repeat, or comma-separate in the environment). Needed
    /// to listen on anything but loopback.
    #[arg(
        long = "token",
        env = "HOOKSPOOL_TOKENS",
        value_delimiter = ',',
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub tokens: Vec<String>,

    /// A network that deliveries may reach although it is private or loopback, e.g.
    /// 10.1.0.0/16 (repeat, or comma-separate). By default such targets are refused.
    #[arg(
        long = "allow-network",
        env = "HOOKSPOOL_ALLOW_NETWORKS",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    pub allow_networks: Vec<String>,

    /// Log format [default: human]. The level comes from HOOKSPOOL_LOG (default `info`).
    #[arg(long, env = "HOOKSPOOL_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Largest request body in bytes [default: 2097152].
    #[arg(long, env = "HOOKSPOOL_BODY_LIMIT", value_name = "BYTES")]
    pub body_limit: Option<usize>,

    /// Most webhook requests in flight at once [default: 32].
    #[arg(long, env = "HOOKSPOOL_CONCURRENCY", value_name = "N")]
    pub concurrency: Option<usize>,

    /// Delays between delivery attempts, comma-separated [default:
    /// 5s,5m,30m,2h,5h,10h,10h]; ±20 % jitter is applied.
    #[arg(
        long,
        env = "HOOKSPOOL_RETRY_SCHEDULE",
        value_delimiter = ',',
        value_parser = parse_duration,
        value_name = "DURATIONS"
    )]
    pub retry_schedule: Vec<Duration>,

    /// How long a graceful stop waits for requests in flight [default: 10s].
    #[arg(long, env = "HOOKSPOOL_SHUTDOWN_GRACE", value_parser = parse_duration, value_name = "DURATION")]
    pub shutdown_grace: Option<Duration>,
}

/// The config file's shape: the same settings as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    tokens: Option<Vec<String>>,
    allow_networks: Option<Vec<String>>,
    log_format: Option<LogFormat>,
    body_limit: Option<usize>,
    concurrency: Option<usize>,
    retry_schedule: Option<Vec<String>>,
    shutdown_grace: Option<String>,
}

/// The daemon's settings, resolved from file, environment and flags and checked.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The listen address.
    pub listen: SocketAddr,
    /// Accepted bearer tokens (masked in `Debug`).
    pub tokens: Vec<Secret>,
    /// Networks deliveries may reach although private.
    pub allow_networks: Vec<IpNet>,
    /// Log format.
    pub log_format: LogFormat,
    /// Largest request body.
    pub body_limit: usize,
    /// Delivery loop settings.
    pub delivery: DeliveryConfig,
}

impl ServeConfig {
    /// Resolves the settings: the file (if any) first, then environment and flags on top.
    ///
    /// # Errors
    /// [`CliError::Input`] naming the bad setting; a non-loopback listen address without a
    /// token is refused.
    pub fn resolve(args: ServeArgs, data_dir: PathBuf) -> Result<Self, CliError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let listen = match (args.listen, file.listen) {
            (Some(a), _) => a,
            (None, Some(s)) => s
                .parse()
                .map_err(|e| CliError::Input(format!("config `listen` = {s:?}: {e}")))?,
            (None, None) => DEFAULT_LISTEN
                .parse()
                .map_err(|e| CliError::Input(format!("{e}")))?,
        };
        let tokens: Vec<String> = if args.tokens.is_empty() {
            file.tokens.unwrap_or_default()
        } else {
            args.tokens
        };
        if tokens.iter().any(|t| t.len() < 16) {
            return Err(CliError::Input(
                "API tokens must be at least 16 characters".to_owned(),
            ));
        }
        if !listen.ip().is_loopback() && tokens.is_empty() {
            return Err(CliError::Input(format!(
                "refusing to listen on {listen} without an API token: pass --token (or \
                 HOOKSPOOL_TOKENS), or listen on a loopback address"
            )));
        }
        let networks = if args.allow_networks.is_empty() {
            file.allow_networks.unwrap_or_default()
        } else {
            args.allow_networks
        };
        let allow_networks = networks
            .iter()
            .map(|n| {
                n.parse::<IpNet>()
                    .map_err(|e| CliError::Input(format!("allowed network {n:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let schedule = if args.retry_schedule.is_empty() {
            match file.retry_schedule {
                Some(list) => list
                    .iter()
                    .map(|d| {
                        parse_duration(d).map_err(|e| {
                            CliError::Input(format!("config `retry_schedule` entry {d:?}: {e}"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                None => RetrySchedule::standard().delays,
            }
        } else {
            args.retry_schedule
        };
        let shutdown_grace = match (args.shutdown_grace, file.shutdown_grace) {
            (Some(d), _) => d,
            (None, Some(s)) => parse_duration(&s)
                .map_err(|e| CliError::Input(format!("config `shutdown_grace` = {s:?}: {e}")))?,
            (None, None) => Duration::from_secs(10),
        };
        let mut policy = NetworkPolicy::new();
        for net in &allow_networks {
            policy = policy.allow(*net);
        }
        let delivery = DeliveryConfig {
            concurrency: args.concurrency.or(file.concurrency).unwrap_or(32),
            schedule: RetrySchedule {
                delays: schedule,
                ..RetrySchedule::standard()
            },
            http: HttpConfig {
                policy,
                ..HttpConfig::default()
            },
            shutdown_grace,
            ..DeliveryConfig::default()
        };
        Ok(ServeConfig {
            data_dir,
            listen,
            tokens: tokens.into_iter().map(Secret::new).collect(),
            allow_networks,
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            body_limit: args
                .body_limit
                .or(file.body_limit)
                .unwrap_or(DEFAULT_BODY_LIMIT),
            delivery,
        })
    }
}

fn read_file(path: &Path) -> Result<FileConfig, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Input(format!("cannot read config file {}: {e}", path.display())))?;
    toml::from_str(&text)
        .map_err(|e| CliError::Input(format!("config file {}: {e}", path.display())))
}

/// Runs the daemon until `shutdown` completes: opens the data directory, serves the API on
/// `config.listen` and runs the delivery loop. `ready` is called with the bound address once
/// the API accepts connections. On shutdown: stops accepting, lets requests and deliveries in
/// flight finish (deliveries up to the grace period; the rest go back to pending), syncs the
/// store, and returns.
///
/// # Errors
/// [`CliError::Locked`] if the directory is in use; store and I/O errors.
pub async fn serve(
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), CliError> {
    std::fs::create_dir_all(&config.data_dir)?;
    let backend = hookspool_sled::SledBackend::open(&config.data_dir).map_err(|e| match e {
        hookspool::Error::Locked { .. } => CliError::Locked {
            dir: config.data_dir.clone(),
        },
        e => CliError::Store(e),
    })?;
    let store = Store::new(backend);
    let hooks = Hooks::open(store.clone()).await?;
    let deliverer = hooks.deliverer(config.delivery.clone())?;
    let api = ApiConfig {
        tokens: config.tokens.clone(),
        body_limit: config.body_limit,
        ..ApiConfig::default()
    };
    let app = router(ApiState::new(hooks, api));
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "hookspool serving");
    ready(addr);

    // One shutdown signal, seen by both the server and the delivery loop.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let loop_task = tokio::spawn(deliverer.run(stopped(stop_rx.clone())));
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(stopped(stop_rx))
        .await;
    let loop_result = loop_task
        .await
        .map_err(|e| CliError::Input(format!("the delivery loop failed: {e}")))?;
    tracing::info!("hookspool stopped");
    served?;
    loop_result?;
    store.sync().await?;
    Ok(())
}

/// The process for `hookspool serve`: logging, a multi-threaded runtime, SIGTERM / Ctrl-C.
pub fn main(args: ServeArgs, data_dir: PathBuf) -> ExitCode {
    let config = match ServeConfig::resolve(args, data_dir) {
        Ok(c) => c,
        Err(e) => return crate::report(Err(e)),
    };
    init_logging(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return crate::report(Err(CliError::Io(e))),
    };
    let result = runtime.block_on(serve(config, shutdown_signal(), |addr| {
        // Scripts and tests read the address from here (useful with port 0).
        println!("listening on {addr}");
    }));
    crate::report(result)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOOKSPOOL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Completes on SIGTERM or Ctrl-C (SIGINT).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on failure
mod tests {
    use super::*;

    #[test]
    fn non_loopback_without_token_is_refused() {
        let args = ServeArgs {
            listen: Some("0.0.0.0:8080".parse().unwrap()),
            ..ServeArgs::default()
        };
        let e = ServeConfig::resolve(args, PathBuf::from("d")).unwrap_err();
        assert!(e.to_string().contains("without an API token"), "{e}");
        let args = ServeArgs {
            listen: Some("0.0.0.0:8080".parse().unwrap()),
            tokens: vec!["a-long-enough-token".to_owned()],
            ..ServeArgs::default()
        };
        assert!(ServeConfig::resolve(args, PathBuf::from("d")).is_ok());
    }

    #[test]
    fn file_settings_apply_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hookspool.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9999\"\nretry_schedule = [\"1s\", \"2m\"]\nconcurrency = 7\n\
             allow_networks = [\"10.1.0.0/16\"]\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            concurrency: Some(9),
            ..ServeArgs::default()
        };
        let c = ServeConfig::resolve(args, PathBuf::from("d")).unwrap();
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(
            c.delivery.schedule.delays,
            [Duration::from_secs(1), Duration::from_mins(2)]
        );
        assert_eq!(c.delivery.concurrency, 9, "the flag wins over the file");
        assert!(c.delivery.http.policy.permits("10.1.2.3".parse().unwrap()));

        std::fs::write(&path, "lisen = \"x\"\n").unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        };
        let e = ServeConfig::resolve(args, PathBuf::from("d")).unwrap_err();
        assert!(
            e.to_string().contains("lisen"),
            "an unknown setting is named: {e}"
        );
    }

    #[test]
    fn tokens_are_masked_in_debug() {
        let args = ServeArgs {
            tokens: vec!["a-very-secret-token-1".to_owned()],
            ..ServeArgs::default()
        };
        let c = ServeConfig::resolve(args, PathBuf::from("d")).unwrap();
        assert!(!format!("{c:?}").contains("a-very-secret-token-1"));
    }
}
