//! The daemon's settings: everything that turns `hookspool serve`'s flags, its environment
//! variables and its TOML file (in rising priority, flags last) into a checked
//! [`ServeConfig`]: listen address, tokens, backend, delivery and callback loops, callback
//! channels (`[channels.NAME]`) and other hookspools to subscribe to (`[[sources]]`).
//! Running the daemon with them is `serve`'s part.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use hookspool::QueueId;
use hookspool_client::Client;
use hookspool_http::DEFAULT_BODY_LIMIT;
use hookspool_journal::JournalBackend;
use hookspool_sled::SledBackend;
use hookspool_webhooks::{
    CallbackConfig, DeliveryConfig, HttpConfig, INTERNAL_PREFIX, IpNet, NetworkPolicy,
    RetrySchedule, Secret, SigningKey, TargetUrl,
};
use serde::Deserialize;

use super::command::CommandHandler;
use super::console::{ConsoleArgs, ConsoleFile, ConsoleSettings, console};
use super::retention::{RetentionArgs, RetentionConfig, RetentionFile, retention};
use crate::duration::{parse_duration, parse_duration_or_off};
use crate::error::CliError;

/// The delivery loop's claim pause on a database (`--claim-pause`): with one daemon on
/// PostgreSQL it delivered 5.5k/s against 4.7k/s without a pause, the server spending 147 µs
/// per delivery against 211, and publish → receipt took 6.7 ms at the median against 4.6
/// (`benches/daemon_postgres.rs`; 2 ms gave 5.2k/s and 4.8 ms).
const DATABASE_CLAIM_PAUSE: Duration = Duration::from_millis(5);

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

/// Where the daemon keeps its queues.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The journal (a segmented log with group commit, `hookspool-journal`) in the data
    /// directory: durable (the default).
    #[default]
    Journal,
    /// The sled database in the data directory: durable.
    Sled,
    /// In memory: nothing survives a restart. For trying things out and tests.
    Memory,
    /// PostgreSQL at `--database-url`: durable on commit, and shared by any number of
    /// daemons (see the README's "Several hookspools on PostgreSQL").
    Postgres,
}

impl BackendKind {
    /// Which durable backend's files `dir` holds, as each backend tells
    /// ([`JournalBackend::detect`], [`SledBackend::detect`]); `None` for an empty or missing
    /// directory. The journal is asked first: it is the default, and a directory holding
    /// both is read as the journal's.
    pub fn detect(dir: &Path) -> Option<BackendKind> {
        if JournalBackend::detect(dir) {
            Some(BackendKind::Journal)
        } else if SledBackend::detect(dir) {
            Some(BackendKind::Sled)
        } else {
            None
        }
    }
}

/// A threshold that can be turned off (`--database-snapshot-warning`): `None` is `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WarnAfter(pub Option<Duration>);

fn parse_warn_after(text: &str) -> Result<WarnAfter, String> {
    parse_duration_or_off(text).map(WarnAfter)
}

/// `hookspool serve` flags. Each can also come from an environment variable or the config
/// file; flags win over the environment, which wins over the file.
#[derive(Clone, Debug, Default, Args)]
pub struct ServeArgs {
    /// A TOML config file with any of the settings below (same names, `_` for `-`), plus
    /// `[channels.NAME]` tables and `[[sources]]` entries (see the README's Configuration).
    #[arg(long, env = "HOOKSPOOL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to listen on [default: 127.0.0.1:8080]. Use port 0 for any free port (the
    /// address is printed on stdout as `listening on ADDR`).
    #[arg(long, env = "HOOKSPOOL_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Storage backend [default: the one whose files the data directory holds, else journal]:
    /// `journal` or `sled` (durable, in the data directory), or `memory` (nothing survives a
    /// restart).
    #[arg(long, env = "HOOKSPOOL_BACKEND", value_enum)]
    pub backend: Option<BackendKind>,

    /// Connections to PostgreSQL (with `--backend postgres`) [default: 16].
    #[arg(long, env = "HOOKSPOOL_DATABASE_POOL_SIZE", value_name = "N")]
    pub database_pool_size: Option<usize>,

    /// Warn in the log once a session of the database has held a snapshot open this long
    /// (with `--backend postgres`): vacuum frees nothing that died since, so the tables
    /// grow. The warning names the session (process id, application, state). Meanwhile
    /// claims start where this node's last claim ended, so that deliveries keep their pace
    /// (with a full claim every second for what lands behind). `off` never looks
    /// [default: 1m].
    #[arg(long, env = "HOOKSPOOL_DATABASE_SNAPSHOT_WARNING", value_parser = parse_warn_after, value_name = "DURATION|off")]
    pub database_snapshot_warning: Option<WarnAfter>,

    /// This daemon's name among the daemons sharing one database (with `--backend
    /// postgres`): its delivery leases carry it, so that after a restart it takes back its
    /// own deliveries at once and never another daemon's. Keep it stable across restarts and
    /// unique per daemon [default: HOSTNAME:PORT].
    #[arg(long, env = "HOOKSPOOL_NODE_ID", value_name = "NAME")]
    pub node_id: Option<String>,

    /// Set from the global `--database-url` (then `DATABASE_URL`).
    #[arg(skip)]
    pub database_url: Option<String>,

    /// Set from the global `--database-schema`.
    #[arg(skip)]
    pub database_schema: Option<String>,

    /// The URL other services reach this daemon at (used to build callback URLs when
    /// subscribing to other hookspools) [default: http://LISTEN-ADDRESS].
    #[arg(long, env = "HOOKSPOOL_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,

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

    /// Most webhook requests in flight at once [default: 64].
    #[arg(long, env = "HOOKSPOOL_CONCURRENCY", value_name = "N")]
    pub concurrency: Option<usize>,

    /// Most webhook requests in flight to one subscription at once, unless the subscription
    /// sets its own `max_in_flight` [default: 16]. Per daemon: with several
    /// daemons on one database, a subscription may get this many from each.
    #[arg(long, env = "HOOKSPOOL_PER_SUBSCRIPTION", value_name = "N")]
    pub per_subscription: Option<usize>,

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

    /// After a claim of deliveries that found fewer due than it had room for, the least time
    /// from its start to the next claim: each claim then takes what arrived meanwhile, at the
    /// cost of up to this much delay under load (a wake-up later than that is served at
    /// once, and a claim that came back full is followed at once) [default: 5ms with
    /// `--backend postgres`, where every claim is a statement on the server; 0ms otherwise;
    /// at most 1s].
    #[arg(long, env = "HOOKSPOOL_CLAIM_PAUSE", value_parser = parse_duration, value_name = "DURATION")]
    pub claim_pause: Option<Duration>,

    /// How long a channel's handler command may run before it counts as failed and is
    /// retried [default: 30s].
    #[arg(long, env = "HOOKSPOOL_CALLBACK_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    pub callback_timeout: Option<Duration>,

    /// Most handler commands running at once [default: 8].
    #[arg(long, env = "HOOKSPOOL_CALLBACK_CONCURRENCY", value_name = "N")]
    pub callback_concurrency: Option<usize>,

    /// Retention of deliveries and callbacks.
    #[command(flatten)]
    pub retention: RetentionArgs,

    /// The web console.
    #[command(flatten)]
    pub console: ConsoleArgs,
}

/// A `[channels.NAME]` table of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelFile {
    /// A `whsec_` secret: callbacks must carry a valid Standard Webhooks signature.
    secret: Option<String>,
    /// Program and arguments run for each callback (payload on stdin).
    command: Option<Vec<String>>,
}

/// A `[[sources]]` entry of the config file: another hookspool to subscribe a channel to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceFile {
    /// The other hookspool's API base URL.
    url: String,
    /// Its API token.
    token: Option<String>,
    /// The event pattern to subscribe to (`order.paid`, `order.*`, `*`).
    event: String,
    /// Our channel that receives the events (a `[channels.NAME]`).
    channel: String,
    /// Where the other hookspool reaches our callback endpoint [default:
    /// PUBLIC-URL/callbacks/CHANNEL].
    callback_url: Option<String>,
    /// The subscription's owner on the other side.
    owner: Option<String>,
}

/// Another hookspool whose events one of our channels receives, checked.
#[derive(Clone, Debug)]
pub struct SourceConfig {
    /// The other hookspool's API client (its token is masked in `Debug`).
    pub client: Client,
    /// The event pattern.
    pub event: String,
    /// Our channel.
    pub channel: QueueId,
    /// Our callback URL as the other side reaches it; `None`: from the public URL.
    pub callback_url: Option<String>,
    /// The subscription's owner on the other side.
    pub owner: Option<String>,
}

/// A callback channel of the daemon, checked.
#[derive(Clone, Debug)]
pub struct ChannelConfig {
    /// The channel's queue.
    pub id: QueueId,
    /// The signing secret callbacks must be signed with, if any (masked in `Debug`).
    pub secret: Option<Secret>,
    /// What runs for each callback; `None`: callbacks are only stored (consume them through
    /// the queue API).
    pub handler: Option<CommandHandler>,
}

/// The config file's shape: the same settings as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    backend: Option<BackendKind>,
    database_url: Option<String>,
    database_schema: Option<String>,
    database_pool_size: Option<usize>,
    database_snapshot_warning: Option<String>,
    node_id: Option<String>,
    public_url: Option<String>,
    listen: Option<String>,
    tokens: Option<Vec<String>>,
    allow_networks: Option<Vec<String>>,
    log_format: Option<LogFormat>,
    body_limit: Option<usize>,
    concurrency: Option<usize>,
    per_subscription: Option<usize>,
    retry_schedule: Option<Vec<String>>,
    shutdown_grace: Option<String>,
    claim_pause: Option<String>,
    callback_timeout: Option<String>,
    callback_concurrency: Option<usize>,
    channels: Option<BTreeMap<String, ChannelFile>>,
    sources: Option<Vec<SourceFile>>,
    retention: Option<RetentionFile>,
    console: Option<ConsoleFile>,
}

/// The daemon's settings, resolved from file, environment and flags and checked.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The storage backend.
    pub backend: BackendKind,
    /// The database of the `postgres` backend.
    pub database: Option<DatabaseConfig>,
    /// The URL this daemon is reached at, if set.
    pub public_url: Option<String>,
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
    /// Callback channels.
    pub channels: Vec<ChannelConfig>,
    /// Other hookspools our channels subscribe to at start.
    pub sources: Vec<SourceConfig>,
    /// Callback loop settings (the retry schedule is the delivery one).
    pub callbacks: CallbackConfig,
    /// How long deliveries and callbacks stay once settled.
    pub retention: RetentionConfig,
    /// The web console, unless it is off.
    pub console: Option<ConsoleSettings>,
}

/// Where the `postgres` backend keeps the queues. Its `Debug` masks the password.
#[derive(Clone)]
pub struct DatabaseConfig {
    /// The connection string.
    pub url: String,
    /// The schema [default: `hookspool`].
    pub schema: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// The age of a snapshot from which the backend warns about it (`None`: never).
    pub snapshot_warning: Option<Duration>,
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &hookspool_postgres::redact(&self.url))
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("snapshot_warning", &self.snapshot_warning)
            .finish()
    }
}

impl DatabaseConfig {
    /// The backend's options.
    pub fn options(&self) -> hookspool_postgres::PostgresOptions {
        hookspool_postgres::PostgresOptions::new(self.url.clone())
            .schema(self.schema.clone())
            .pool_size(self.pool_size)
            .snapshot_warning(self.snapshot_warning)
    }
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
        Self::resolve_file(args, file, data_dir)
    }

    /// Resolves the settings of a config file's text alone (no flags, no environment but
    /// `DATABASE_URL`), checked as [`ServeConfig::resolve`] checks a file: the entry point
    /// of the fuzz target `config_parse` (`fuzz/`), not part of the API.
    ///
    /// # Errors
    /// As [`ServeConfig::resolve`].
    #[doc(hidden)]
    pub fn from_toml(text: &str, data_dir: PathBuf) -> Result<Self, CliError> {
        let file = parse_file(text, Path::new("(text)"))?;
        Self::resolve_file(ServeArgs::default(), file, data_dir)
    }

    fn resolve_file(
        mut args: ServeArgs,
        mut file: FileConfig,
        data_dir: PathBuf,
    ) -> Result<Self, CliError> {
        let settings = StorageSettings::take(&mut args, &mut file);
        let (concurrency, per_subscription) = in_flight_limits(&args, &file)?;
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
        let allow_networks = networks(args.allow_networks, file.allow_networks)?;
        let schedule = retry_delays(args.retry_schedule, file.retry_schedule)?;
        let shutdown_grace = duration_setting(
            "shutdown_grace",
            args.shutdown_grace,
            file.shutdown_grace,
            Duration::from_secs(10),
        )?;
        let mut policy = NetworkPolicy::new();
        for net in &allow_networks {
            policy = policy.allow(*net);
        }
        let mut delivery = DeliveryConfig {
            concurrency,
            per_subscription,
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
        let mut callbacks = callback_config(
            args.callback_concurrency.or(file.callback_concurrency),
            args.callback_timeout,
            file.callback_timeout,
            &delivery,
        )?;
        let channels = file
            .channels
            .unwrap_or_default()
            .into_iter()
            .map(|(name, c)| channel(&name, c))
            .collect::<Result<Vec<_>, _>>()?;
        let public_url = args.public_url.or(file.public_url);
        if let Some(url) = &public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(CliError::Input(format!(
                "public URL {url:?} must start with http:// or https://"
            )));
        }
        let sources = sources(file.sources, &channels, listen, public_url.as_deref())?;
        let retention = retention(args.retention, file.retention)?;
        let console = console(args.console, file.console)?;
        let (backend, database) =
            storage(settings, &data_dir, listen, &mut delivery, &mut callbacks)?;
        delivery.claim_pause = claim_pause(args.claim_pause, file.claim_pause, backend)?;
        Ok(ServeConfig {
            data_dir,
            backend,
            database,
            public_url,
            listen,
            tokens: tokens.into_iter().map(Secret::new).collect(),
            allow_networks,
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            body_limit: args
                .body_limit
                .or(file.body_limit)
                .unwrap_or(DEFAULT_BODY_LIMIT),
            delivery,
            channels,
            sources,
            callbacks,
            retention,
            console,
        })
    }
}

/// The storage settings, from flags, environment and file.
struct StorageSettings {
    backend: Option<BackendKind>,
    /// A database named by a flag, HOOKSPOOL_DATABASE_URL or the file (not `DATABASE_URL`).
    url_named: bool,
    url: Option<String>,
    schema: Option<String>,
    pool_size: Option<usize>,
    /// The flag's (or environment's) snapshot warning, else the file's text.
    snapshot_warning: Option<WarnAfter>,
    snapshot_warning_file: Option<String>,
    node_id: Option<String>,
}

impl StorageSettings {
    /// The flags' settings, else the file's.
    fn take(args: &mut ServeArgs, file: &mut FileConfig) -> Self {
        StorageSettings {
            backend: args.backend.or(file.backend),
            url_named: args.database_url.is_some() || file.database_url.is_some(),
            url: args.database_url.take().or(file.database_url.take()),
            schema: args.database_schema.take().or(file.database_schema.take()),
            pool_size: args.database_pool_size.or(file.database_pool_size),
            snapshot_warning: args.database_snapshot_warning,
            snapshot_warning_file: file.database_snapshot_warning.take(),
            node_id: args.node_id.take().or(file.node_id.take()),
        }
    }
}

/// The backend, and the database of the `postgres` one. A database named by a flag,
/// HOOKSPOOL_DATABASE_URL or the file chooses `postgres` when no backend is asked for;
/// `DATABASE_URL` (the generic variable many platforms set) is only read once `--backend
/// postgres` asks for a database. On a database, the lease owners of the delivery and
/// callback loops carry the node id.
fn storage(
    s: StorageSettings,
    data_dir: &Path,
    listen: SocketAddr,
    delivery: &mut DeliveryConfig,
    callbacks: &mut CallbackConfig,
) -> Result<(BackendKind, Option<DatabaseConfig>), CliError> {
    let backend = if s.backend.is_none() && s.url_named {
        BackendKind::Postgres
    } else {
        backend(s.backend, data_dir)?
    };
    if backend != BackendKind::Postgres {
        return Ok((backend, None));
    }
    let url = s
        .url
        .or_else(|| std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()));
    let Some(url) = url else {
        return Err(CliError::Input(
            "--backend postgres needs a database: pass --database-url (or set \
             HOOKSPOOL_DATABASE_URL or DATABASE_URL)"
                .to_owned(),
        ));
    };
    let pool_size = s.pool_size.unwrap_or(hookspool_postgres::DEFAULT_POOL_SIZE);
    if pool_size == 0 {
        return Err(CliError::Input(
            "the database pool size must be at least 1".to_owned(),
        ));
    }
    let snapshot_warning = match (s.snapshot_warning, s.snapshot_warning_file) {
        (Some(WarnAfter(after)), _) => after,
        (None, Some(text)) => parse_duration_or_off(&text).map_err(|e| {
            CliError::Input(format!(
                "config `database_snapshot_warning` = {text:?}: {e}"
            ))
        })?,
        (None, None) => Some(hookspool_postgres::DEFAULT_SNAPSHOT_WARNING),
    };
    let node = s.node_id.unwrap_or_else(|| default_node_id(listen.port()));
    delivery.owner = format!("{}@{node}", delivery.owner);
    callbacks.owner = format!("{}@{node}", callbacks.owner);
    let schema = s
        .schema
        .unwrap_or_else(|| hookspool_postgres::DEFAULT_SCHEMA.to_owned());
    Ok((
        backend,
        Some(DatabaseConfig {
            url,
            schema,
            pool_size,
            snapshot_warning,
        }),
    ))
}

/// `HOSTNAME:PORT`: stable across restarts of a daemon on a fixed port. On port 0 (any free
/// port) no name is stable, so the process id keeps daemons apart; such a daemon's own
/// leases are then taken back by lease expiry after a restart, like anyone else's.
fn default_node_id(port: u16) -> String {
    if port == 0 {
        format!("{}:pid{}", hostname(), std::process::id())
    } else {
        format!("{}:{port}", hostname())
    }
}

/// This machine's name, for the default node id.
fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The backend: as asked, if the data directory does not hold another one's files; else the
/// one it holds; else the journal.
fn backend(asked: Option<BackendKind>, dir: &Path) -> Result<BackendKind, CliError> {
    let found = BackendKind::detect(dir);
    match (asked, found) {
        (Some(k @ (BackendKind::Memory | BackendKind::Postgres)), _) => Ok(k),
        (Some(a), Some(f)) if a != f => {
            let (a, f) = (
                format!("{a:?}").to_lowercase(),
                format!("{f:?}").to_lowercase(),
            );
            Err(CliError::Input(format!(
                "data directory {} holds a {f} store, not {a}: pass --backend {f} or use \
                 another directory",
                dir.display()
            )))
        }
        (Some(a), _) => Ok(a),
        (None, Some(f)) => Ok(f),
        (None, None) => Ok(BackendKind::Journal),
    }
}

/// The delivery loop's claim pause: the flag's, else the file's, else [`DATABASE_CLAIM_PAUSE`]
/// on PostgreSQL and none on the backends in this process (whose claims cost microseconds).
fn claim_pause(
    flag: Option<Duration>,
    file: Option<String>,
    backend: BackendKind,
) -> Result<Duration, CliError> {
    let default = if backend == BackendKind::Postgres {
        DATABASE_CLAIM_PAUSE
    } else {
        Duration::ZERO
    };
    let pause = duration_setting("claim_pause", flag, file, default)?;
    if pause > MAX_CLAIM_PAUSE {
        return Err(CliError::Input(format!(
            "the claim pause ({pause:?}) must be at most 1s: under load every delivery may \
             wait that long before it is claimed"
        )));
    }
    Ok(pause)
}

/// The longest claim pause `serve` accepts.
const MAX_CLAIM_PAUSE: Duration = Duration::from_secs(1);

/// A duration setting: the flag's, else the file's (`name` in it, parsed), else `default`.
fn duration_setting(
    name: &str,
    flag: Option<Duration>,
    file: Option<String>,
    default: Duration,
) -> Result<Duration, CliError> {
    match (flag, file) {
        (Some(d), _) => Ok(d),
        (None, Some(s)) => {
            parse_duration(&s).map_err(|e| CliError::Input(format!("config `{name}` = {s:?}: {e}")))
        }
        (None, None) => Ok(default),
    }
}

/// The allowed networks: the flags', else the file's.
fn networks(flags: Vec<String>, file: Option<Vec<String>>) -> Result<Vec<IpNet>, CliError> {
    let list = if flags.is_empty() {
        file.unwrap_or_default()
    } else {
        flags
    };
    list.iter()
        .map(|n| {
            n.parse::<IpNet>()
                .map_err(|e| CliError::Input(format!("allowed network {n:?}: {e}")))
        })
        .collect()
}

/// The retry delays: the flags', else the file's, else the standard schedule.
fn retry_delays(
    flags: Vec<Duration>,
    file: Option<Vec<String>>,
) -> Result<Vec<Duration>, CliError> {
    if !flags.is_empty() {
        return Ok(flags);
    }
    match file {
        Some(list) => list
            .iter()
            .map(|d| {
                parse_duration(d).map_err(|e| {
                    CliError::Input(format!("config `retry_schedule` entry {d:?}: {e}"))
                })
            })
            .collect(),
        None => Ok(RetrySchedule::standard().delays),
    }
}

/// The delivery loop's limits on requests in flight, in total and per subscription: the
/// loop's defaults where unset, and never zero (a loop allowed no request would never send).
/// A flag wins over the file.
fn in_flight_limits(args: &ServeArgs, file: &FileConfig) -> Result<(usize, usize), CliError> {
    let defaults = DeliveryConfig::default();
    let concurrency = args
        .concurrency
        .or(file.concurrency)
        .unwrap_or(defaults.concurrency);
    let per_subscription = args
        .per_subscription
        .or(file.per_subscription)
        .unwrap_or(defaults.per_subscription);
    for (name, value) in [
        ("concurrency", concurrency),
        ("per-subscription", per_subscription),
    ] {
        if value == 0 {
            return Err(CliError::Input(format!(
                "{name} must be at least 1 (it is the most webhook requests in flight)"
            )));
        }
    }
    Ok((concurrency, per_subscription))
}

/// The callback loop's settings: the delivery loop's retry schedule and grace period.
fn callback_config(
    concurrency: Option<usize>,
    flag_timeout: Option<Duration>,
    file_timeout: Option<String>,
    delivery: &DeliveryConfig,
) -> Result<CallbackConfig, CliError> {
    let timeout = duration_setting(
        "callback_timeout",
        flag_timeout,
        file_timeout,
        Duration::from_secs(30),
    )?;
    let concurrency = concurrency.unwrap_or(8);
    if concurrency == 0 || timeout.is_zero() {
        return Err(CliError::Input(
            "callback concurrency and timeout must be more than zero".to_owned(),
        ));
    }
    Ok(CallbackConfig {
        concurrency,
        timeout,
        schedule: delivery.schedule.clone(),
        shutdown_grace: delivery.shutdown_grace,
        ..CallbackConfig::default()
    })
}

/// Checks the `[[sources]]` entries.
fn sources(
    list: Option<Vec<SourceFile>>,
    channels: &[ChannelConfig],
    listen: SocketAddr,
    public_url: Option<&str>,
) -> Result<Vec<SourceConfig>, CliError> {
    let sources = list
        .unwrap_or_default()
        .into_iter()
        .map(|src| source(src, channels))
        .collect::<Result<Vec<_>, _>>()?;
    if listen.ip().is_unspecified()
        && public_url.is_none()
        && sources.iter().any(|s| s.callback_url.is_none())
    {
        return Err(CliError::Input(format!(
            "listening on {listen}, the callback URL for [[sources]] cannot be guessed: set \
             public_url (or --public-url), or callback_url on each source"
        )));
    }
    Ok(sources)
}

/// Checks one `[[sources]]` entry.
fn source(src: SourceFile, channels: &[ChannelConfig]) -> Result<SourceConfig, CliError> {
    let bad = |why: String| CliError::Input(format!("config source {:?}: {why}", src.url));
    let channel = QueueId::new(src.channel.as_str()).map_err(|e| bad(e.to_string()))?;
    if !channels.iter().any(|c| c.id == channel) {
        return Err(bad(format!(
            "channel {:?} is not configured: add a [channels.{}] table",
            src.channel, src.channel
        )));
    }
    let client =
        Client::new(&src.url, src.token.map(Secret::new)).map_err(|e| bad(e.to_string()))?;
    if let Some(url) = &src.callback_url {
        TargetUrl::parse(url).map_err(|e| bad(format!("callback_url: {e}")))?;
    }
    Ok(SourceConfig {
        client,
        event: src.event,
        channel,
        callback_url: src.callback_url,
        owner: src.owner,
    })
}

/// Checks one `[channels.NAME]` table.
fn channel(name: &str, c: ChannelFile) -> Result<ChannelConfig, CliError> {
    let bad = |why: String| CliError::Input(format!("config channel {name:?}: {why}"));
    if name.starts_with(INTERNAL_PREFIX) {
        return Err(bad(format!(
            "names starting with `{INTERNAL_PREFIX}` are reserved"
        )));
    }
    let id = QueueId::new(name).map_err(|e| bad(e.to_string()))?;
    let secret = match c.secret {
        Some(s) => {
            SigningKey::from_whsec(&s)
                .map_err(|e| bad(format!("`secret` is not a whsec_ secret: {e}")))?;
            Some(Secret::new(s))
        }
        None => None,
    };
    let handler = match c.command {
        Some(argv) => Some(
            CommandHandler::new(&argv)
                .ok_or_else(|| bad("`command` must name a program".to_owned()))?,
        ),
        None => None,
    };
    Ok(ChannelConfig {
        id,
        secret,
        handler,
    })
}

fn read_file(path: &Path) -> Result<FileConfig, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Input(format!("cannot read config file {}: {e}", path.display())))?;
    parse_file(&text, path)
}

fn parse_file(text: &str, path: &Path) -> Result<FileConfig, CliError> {
    toml::from_str(text)
        .map_err(|e| CliError::Input(format!("config file {}: {e}", path.display())))
}

#[cfg(test)]
mod tests;
