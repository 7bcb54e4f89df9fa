//! The queue commands against a running daemon (`--url`): the same commands, output and exit
//! codes as over a data directory, through [`hookspool::client::Client`] instead of a store.
//!
//! Output goes through the helpers of `commands`, so both paths print exactly alike; the
//! server's error messages are the engine's own, so failures read alike too.

use hookspool::client::{Client, QueueUpdate};
use hookspool::{DEFAULT_MAX_PAYLOAD, Error, Phase, QueueConfig, QueueId, Secret, Timestamp};

use crate::args::{Command, QueueCommand};
use crate::commands::{
    DumpOutput, Io, apply_settings, confirm_queue_delete, confirm_reset, fetch_page, new_item,
    print_count, print_created, print_deleted, print_items, print_pushed, print_queue,
    print_queue_deleted, print_queues, print_replayed, print_reset, report_item,
};
use crate::error::CliError;

/// Runs one queue command against the daemon at `url`, sending `token` as the bearer token.
///
/// # Errors
/// [`CliError::Unreachable`] when the daemon does not answer, [`CliError::Unauthorized`] when
/// it refuses the token, [`CliError::Remote`] when it refuses the operation (unknown queue,
/// phase conflict, …), and the local errors of the offline commands (bad id, refused
/// confirmation, I/O).
pub async fn execute(
    url: &str,
    token: Option<String>,
    command: Command,
    json: bool,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
    if matches!(command, Command::Serve(_)) {
        return Err(serve_with_url());
    }
    let client = Client::new(url, token.map(Secret::new))?;
    tracing::debug!(url = client.base_url(), "running against a daemon");
    run(&client, command, json, io)
        .await
        .map_err(|e| from_remote(e, client.base_url()))
}

/// The error for `serve` with `--url`: the daemon runs on a data directory, it does not
/// connect to another one.
pub fn serve_with_url() -> CliError {
    CliError::Input(
        "--url runs the queue commands against a running daemon; `serve` runs the daemon \
         itself on --data-dir: drop --url"
            .to_owned(),
    )
}

/// Gives the client's errors the CLI's words: the base URL the user typed, and a hint about
/// the token on 401.
fn from_remote(e: CliError, base: &str) -> CliError {
    match e {
        CliError::Store(Error::Network { reason, .. }) => CliError::Unreachable {
            url: base.to_owned(),
            reason,
        },
        CliError::Store(Error::Remote {
            status: 401,
            message,
            ..
        }) => CliError::Unauthorized {
            url: base.to_owned(),
            message,
        },
        CliError::Store(Error::Remote {
            status,
            code,
            message,
        }) => CliError::Remote {
            status,
            code,
            message,
        },
        e => e,
    }
}

async fn run(
    client: &Client,
    command: Command,
    json: bool,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
    match command {
        Command::Serve(_) => Err(serve_with_url()),
        Command::Queues => print_queues(&client.queues().await?, json, io),
        Command::Queue(cmd) => queue(client, cmd, json, io).await,
        Command::Count { queue, phase } => {
            let queue = QueueId::new(queue)?;
            let phase = phase.map(Phase::new).transpose()?;
            let n = match &phase {
                Some(phase) => client.count_phase(&queue, phase).await?,
                None => client.count(&queue).await?,
            };
            print_count(&queue, phase.as_ref(), n, json, io)
        }
        Command::Fetch(args) => {
            let queue = QueueId::new(args.queue.as_str())?;
            let items = if let Some(key) = args.key {
                let item = client
                    .fetch_key(&queue, key)
                    .await?
                    .ok_or(Error::ItemNotFound {
                        queue: queue.clone(),
                        key,
                    })?;
                vec![item]
            } else {
                client.fetch_page(&queue, &fetch_page(&args)?).await?
            };
            print_items(&items, Timestamp::now(), json, io)
        }
        Command::Dump { queue } => {
            let queue = QueueId::new(queue)?;
            // Also fails early, before any output, when the queue does not exist.
            let total = client.count(&queue).await?;
            let mut out = DumpOutput::new(total, io);
            let mut dump = client.dump(&queue).await?;
            while let Some(item) = dump.next_item().await? {
                out.item(&item, io)?;
            }
            out.finish(io)
        }
        Command::Reset { queue, yes } => {
            let queue = QueueId::new(queue)?;
            let n = client.count(&queue).await?;
            confirm_reset(&queue, n, yes, io)?;
            let removed = client.reset(&queue).await?;
            print_reset(&queue, removed, json, io)
        }
        Command::Push {
            queue,
            data,
            meta,
            delay,
        } => {
            let queue = QueueId::new(queue)?;
            // The daemon's own limit may differ; it answers 413 over it.
            let item = new_item(data, meta, delay, Timestamp::now(), DEFAULT_MAX_PAYLOAD, io)?;
            let key = client.push(&queue, item).await?;
            print_pushed(&queue, key, json, io)
        }
        Command::Delete { queue, key } => {
            let queue = QueueId::new(queue)?;
            if !client.delete(&queue, key).await? {
                return Err(Error::ItemNotFound { queue, key }.into());
            }
            print_deleted(&queue, key, json, io)
        }
        Command::SetPhase {
            queue,
            key,
            phase,
            if_phase,
        } => {
            let queue = QueueId::new(queue)?;
            let phase = Phase::new(phase)?;
            let if_phase = if_phase.map(Phase::new).transpose()?;
            let item = client
                .set_phase(&queue, key, &phase, if_phase.as_ref())
                .await?;
            report_item(&queue, &item, "is now in phase", json, io)
        }
        Command::Replay { queue, key, all } => {
            let queue = QueueId::new(queue)?;
            match key {
                Some(key) if !all => {
                    let item = client.replay(&queue, key).await?;
                    report_item(&queue, &item, "was replayed to phase", json, io)
                }
                _ => {
                    let n = client.replay_dead(&queue).await?;
                    print_replayed(&queue, n, json, io)
                }
            }
        }
    }
}

async fn queue(
    client: &Client,
    command: QueueCommand,
    json: bool,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
    match command {
        QueueCommand::Create { id, settings } => {
            let mut config = QueueConfig::new(QueueId::new(id)?);
            apply_settings(&mut config, settings);
            let queue = client.create_queue(&config).await?;
            if json {
                print_queue(&queue, json, io)
            } else {
                print_created(&queue.id, io)
            }
        }
        QueueCommand::Show { id } => {
            let id = QueueId::new(id)?;
            let queue = client.queue(&id).await?.ok_or(Error::QueueNotFound(id))?;
            print_queue(&queue, json, io)
        }
        QueueCommand::Update {
            id,
            settings,
            no_ttl,
            no_secret,
            remove_meta,
        } => {
            let id = QueueId::new(id)?;
            let mut update = QueueUpdate::default();
            if no_ttl {
                update.ttl = Some(None);
            }
            if no_secret {
                update.secret = Some(None);
            }
            if let Some(ttl) = settings.ttl {
                update.ttl = Some(Some(ttl));
            }
            if let Some(secret) = settings.secret {
                update.secret = Some(Some(Secret::new(secret)));
            }
            if let Some(retention) = settings.retention {
                update.retention = Some(retention.into());
            }
            // The API replaces metadata whole; adding or removing single keys, as offline,
            // starts from the current map.
            if !remove_meta.is_empty() || !settings.meta.is_empty() {
                let current = client
                    .queue(&id)
                    .await?
                    .ok_or_else(|| Error::QueueNotFound(id.clone()))?;
                let mut metadata = current.metadata;
                for key in &remove_meta {
                    metadata.remove(key);
                }
                metadata.extend(settings.meta);
                update.metadata = Some(metadata);
            }
            let queue = client.update_queue(&id, &update).await?;
            print_queue(&queue, json, io)
        }
        QueueCommand::Delete { id, yes } => {
            let id = QueueId::new(id)?;
            let n = client.count(&id).await?;
            confirm_queue_delete(&id, n, yes, io)?;
            if !client.delete_queue(&id).await? {
                return Err(Error::QueueNotFound(id).into());
            }
            print_queue_deleted(&id, n, json, io)
        }
    }
}
