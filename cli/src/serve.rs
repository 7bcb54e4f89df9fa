//! `hookspool serve`: the daemon. The HTTP API and the delivery loop over one data directory,
//! stopped gracefully by SIGTERM or Ctrl-C; its settings come from a TOML file, environment
//! variables and flags (in rising priority), resolved and checked in `config`.
//!
//! Callback channels (`[channels.NAME]` in the config file) are queues that accept
//! `POST /callbacks/NAME`, optionally signed; a channel with a `command` runs it for each
//! callback, with retries ([`command::CommandHandler`]).

pub mod command;
mod config;
mod console;
mod retention;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use hookspool::{Backend, MemoryBackend, QueueConfig, Retain, Store};
use hookspool_client::NewSubscription;
use hookspool_http::{ApiConfig, ApiState, ConsoleConfig, router};
use hookspool_journal::JournalBackend;
use hookspool_sled::SledBackend;
use hookspool_webhooks::{Hooks, HooksOptions, channel_secret, set_channel_secret};

use crate::error::CliError;

pub use config::{
    BackendKind, ChannelConfig, DEFAULT_LISTEN, LogFormat, ServeArgs, ServeConfig, SourceConfig,
};
pub use console::{ConsoleArgs, ConsoleSettings, DEFAULT_CONSOLE_PATH};
pub use retention::{DEFAULT_RETENTION_INTERVAL, RetentionArgs, RetentionConfig};

/// Runs the daemon until `shutdown` completes: opens the data directory, serves the API on
/// `config.listen`, and runs the delivery loop and the callback loop. `ready` is called with
/// the bound address once the API accepts connections. On shutdown: stops accepting, lets
/// requests, deliveries and handler commands in flight finish (up to the grace period; the
/// rest go back to pending), syncs the store, and returns.
///
/// # Errors
/// [`CliError::Locked`] if the directory is in use; store and I/O errors.
pub async fn serve(
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), CliError> {
    match config.backend {
        BackendKind::Sled => {
            std::fs::create_dir_all(&config.data_dir)?;
            let backend = SledBackend::open(&config.data_dir)
                .map_err(|e| CliError::opening(&config.data_dir, e))?;
            serve_on(Store::new(backend), config, shutdown, ready).await
        }
        BackendKind::Journal => {
            let backend = JournalBackend::open(&config.data_dir)
                .map_err(|e| CliError::opening(&config.data_dir, e))?;
            let report = backend.recovery();
            tracing::info!(
                replayed = report.replayed_records,
                truncated_bytes = report.truncated_bytes,
                "journal opened"
            );
            serve_on(Store::new(backend), config, shutdown, ready).await
        }
        BackendKind::Memory => {
            tracing::warn!("memory backend: nothing is kept after the daemon stops");
            serve_on(Store::new(MemoryBackend::new()), config, shutdown, ready).await
        }
        BackendKind::Postgres => {
            let Some(database) = &config.database else {
                return Err(CliError::Input(
                    "--backend postgres needs --database-url".to_owned(),
                ));
            };
            let backend = hookspool_postgres::PostgresBackend::open(database.options()).await?;
            tracing::info!(
                target = backend.target(),
                schema = backend.schema(),
                owner = config.delivery.owner,
                "PostgreSQL backend opened"
            );
            serve_on(Store::new(backend), config, shutdown, ready).await
        }
    }
}

/// [`serve`] over an open store.
async fn serve_on<B: Backend>(
    store: Store<B>,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), CliError> {
    let options = HooksOptions {
        deliveries_retain: config.retention.deliveries,
        callbacks_retain: config.retention.callbacks,
        idempotency_ttl: config.retention.idempotency_keys,
        ..HooksOptions::default()
    };
    let hooks = Hooks::open_with(store.clone(), options).await?;
    let deliverer = hooks.deliverer(config.delivery.clone())?;
    let mut callbacks = hooks.callbacks(config.callbacks.clone())?;
    for channel in &config.channels {
        open_channel(&store, channel, config.retention.callbacks).await?;
        if let Some(handler) = &channel.handler {
            callbacks = callbacks
                .handle(channel.id.as_str(), handler.clone())
                .await?;
        }
    }
    let api = ApiConfig {
        tokens: config.tokens.clone(),
        body_limit: config.body_limit,
        ..ApiConfig::default()
    };
    let state = ApiState::new(hooks.clone(), api);
    let mut app = router(state.clone());
    if let Some(settings) = &config.console {
        let console_config = ConsoleConfig {
            session_ttl: settings.session_ttl,
            // Behind HTTPS the session cookie is only ever sent over HTTPS.
            secure_cookie: config
                .public_url
                .as_deref()
                .is_some_and(|u| u.starts_with("https://")),
            ..ConsoleConfig::new(settings.path.as_str(), "")
        };
        let console = hookspool_http::console(state, console_config)
            .map_err(|e| CliError::Input(e.to_string()))?;
        app = console.merge(app);
    }
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    if let Some(db) = &config.database {
        tracing::info!(%addr, schema = db.schema, "hookspool serving on PostgreSQL");
    } else {
        tracing::info!(%addr, data_dir = %config.data_dir.display(), "hookspool serving");
    }
    if let Some(settings) = &config.console {
        tracing::info!("web console at http://{addr}{}/", settings.path);
    }
    ready(addr);

    // One shutdown signal, seen by the server and both loops.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    for src in config.sources.clone() {
        tokio::spawn(subscribe_source(
            hooks.clone(),
            src,
            public_url.clone(),
            stopped(stop_rx.clone()),
        ));
    }
    // Removes settled deliveries and callbacks once their retention period is over (and
    // items of any queue with a period of its own); stopped when this function returns.
    let retention = store.spawn_retention(config.retention.interval);
    let delivery_task = tokio::spawn(deliverer.run(stopped(stop_rx.clone())));
    let callback_task = tokio::spawn(callbacks.run(stopped(stop_rx.clone())));
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(stopped(stop_rx))
        .await;
    let joined = |r: Result<hookspool_webhooks::Result<()>, tokio::task::JoinError>, what: &str| {
        r.map_err(|e| CliError::Input(format!("the {what} loop failed: {e}")))
    };
    let delivery_result = joined(delivery_task.await, "delivery")?;
    let callback_result = joined(callback_task.await, "callback")?;
    retention.stop().await;
    tracing::info!("hookspool stopped");
    served?;
    delivery_result?;
    callback_result?;
    store.sync().await?;
    Ok(())
}

/// Subscribes a channel to another hookspool, trying again with a growing pause (1 s up to
/// 1 min) until it succeeds or the daemon stops: the other side may start after us.
async fn subscribe_source<B: Backend>(
    hooks: Hooks<B>,
    src: SourceConfig,
    public_url: String,
    stop: impl Future<Output = ()>,
) {
    let callback_url = src.callback_url.clone().unwrap_or_else(|| {
        format!(
            "{}/callbacks/{}",
            public_url.trim_end_matches('/'),
            src.channel
        )
    });
    let mut request = NewSubscription::new(&src.event, &callback_url);
    if let Some(owner) = &src.owner {
        request = request.owner(owner);
    }
    let attempts = async {
        let mut pause = Duration::from_secs(1);
        loop {
            match src
                .client
                .subscribe_channel(&hooks, &src.channel, request.clone())
                .await
            {
                Ok(sub) => {
                    tracing::info!(remote = src.client.base_url(), channel = %src.channel,
                        event = %src.event, subscription = %sub.id, "subscribed to a source");
                    return;
                }
                Err(e) => {
                    tracing::warn!(remote = src.client.base_url(), channel = %src.channel,
                        error = %e, retry_in = ?pause, "could not subscribe to a source");
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_mins(1));
        }
    };
    tokio::select! {
        () = attempts => {}
        () = stop => {}
    }
}

/// Creates a channel's queue, or sets its secret, as configured. A secret set earlier (for
/// example by an operator through the API) is kept when the config names none.
async fn open_channel<B: Backend>(
    store: &Store<B>,
    channel: &ChannelConfig,
    retain: Retain,
) -> Result<(), CliError> {
    let existing = match store.queue(&channel.id).await? {
        None => {
            let mut q = QueueConfig::new(channel.id.clone()).with_retain(retain);
            set_channel_secret(&mut q, channel.secret.as_ref())?;
            match store.create_queue(q).await {
                Ok(_) => return Ok(()),
                // Another daemon on the same database created it a moment ago.
                Err(hookspool::Error::QueueExists(_)) => store.queue(&channel.id).await?,
                Err(e) => return Err(e.into()),
            }
        }
        found => found,
    };
    match existing {
        None => {}
        Some(mut q) => {
            if let Some(secret) = &channel.secret
                && channel_secret(&q).as_ref() != Some(secret)
            {
                set_channel_secret(&mut q, Some(secret))?;
                store.update_queue(q).await?;
            }
        }
    }
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
    let shutdown = {
        let _runtime = runtime.enter();
        shutdown_signal()
    };
    let result = runtime.block_on(serve(config, shutdown, |addr| {
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
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Completes on SIGTERM or Ctrl-C (SIGINT).
fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    // Registered now, before the daemon says it is listening: a SIGTERM that comes right
    // after that line must stop it gracefully, not kill it (the default action).
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    async move {
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        #[cfg(unix)]
        let term = async {
            match term {
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
}
