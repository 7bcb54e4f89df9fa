//! The commands themselves, over any [`Backend`]: each reads its arguments, calls the
//! [`Store`], and writes a table or JSON.

use std::io::{Read, Write};

use hookspool::{Backend, Error, Item, NewItem, Page, Phase, QueueConfig, QueueId, Secret, Store};

use crate::args::{Command, FetchArgs, QueueCommand, QueueSettings};
use crate::error::CliError;
use crate::format::{
    Table, format_not_before, format_timestamp, format_ttl, mask_secret, payload_preview,
    phase_rows, queue_json, retention_name, write_item_json,
};

/// `dump` reports progress on a terminal every this many items.
pub const DUMP_PROGRESS_EVERY: u64 = 10_000;

/// Where a command reads and writes, and what they are connected to. The binary passes the
/// process's stdio; tests pass buffers.
pub struct Io<'a> {
    /// Results: tables, JSON, keys.
    pub stdout: &'a mut dyn Write,
    /// Prompts, progress and hints (never data, so stdout stays parseable).
    pub stderr: &'a mut dyn Write,
    /// Payloads for `push` and answers to confirmation prompts.
    pub stdin: &'a mut dyn Read,
    /// Whether stdin is a terminal (a person can answer a prompt).
    pub stdin_is_terminal: bool,
    /// Whether stderr is a terminal (progress is worth showing).
    pub stderr_is_terminal: bool,
}

impl std::fmt::Debug for Io<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Io")
            .field("stdin_is_terminal", &self.stdin_is_terminal)
            .field("stderr_is_terminal", &self.stderr_is_terminal)
            .finish_non_exhaustive()
    }
}

/// Runs one command against a store. `json` selects JSON output.
///
/// # Errors
/// Whatever the store reports (unknown queue, invalid id or phase, conflicts, …), refused
/// confirmations, and I/O errors on stdio.
pub async fn run<B: Backend>(
    store: &Store<B>,
    command: Command,
    json: bool,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
    match command {
        Command::Serve(_) => Err(CliError::Input(
            "`serve` runs the daemon; call hookspool_cli::serve::main".to_owned(),
        )),
        Command::Queues => queues(store, json, io).await,
        Command::Queue(cmd) => queue(store, cmd, json, io).await,
        Command::Count { queue, phase } => count(store, &queue, phase.as_deref(), json, io).await,
        Command::Fetch(args) => fetch(store, args, json, io).await,
        Command::Dump { queue } => dump(store, &queue, io).await,
        Command::Reset { queue, yes } => reset(store, &queue, yes, json, io).await,
        Command::Push {
            queue,
            data,
            meta,
            delay,
        } => {
            let queue = QueueId::new(queue)?;
            let payload = match data {
                Some(data) => data.into_bytes(),
                None => read_payload(store, io)?,
            };
            let mut item = NewItem::new(payload);
            item.metadata.extend(meta);
            if let Some(delay) = delay {
                item.not_before = Some(store.now().saturating_add(delay));
            }
            let key = store.push(&queue, item).await?;
            if json {
                let line = serde_json::json!({ "queue": queue.as_str(), "key": key });
                writeln!(io.stdout, "{line}")?;
            } else {
                writeln!(io.stdout, "{key}")?;
            }
            Ok(())
        }
        Command::Delete { queue, key } => {
            let queue = QueueId::new(queue)?;
            if !store.delete(&queue, key).await? {
                return Err(Error::ItemNotFound { queue, key }.into());
            }
            if json {
                let line =
                    serde_json::json!({ "queue": queue.as_str(), "key": key, "deleted": true });
                writeln!(io.stdout, "{line}")?;
            } else {
                writeln!(io.stdout, "deleted item {key} of queue `{queue}`")?;
            }
            Ok(())
        }
        Command::SetPhase {
            queue,
            key,
            phase,
            if_phase,
        } => {
            let queue = QueueId::new(queue)?;
            let phase = Phase::new(phase)?;
            let item = match if_phase {
                Some(expected) => {
                    let expected = Phase::new(expected)?;
                    store.update_phase_if(&queue, key, expected, phase).await?
                }
                None => store.update_phase(&queue, key, phase).await?,
            };
            report_item(&queue, &item, "is now in phase", json, io)
        }
        Command::Replay { queue, key, all } => {
            let queue = QueueId::new(queue)?;
            match key {
                Some(key) if !all => {
                    let item = store.replay(&queue, key).await?;
                    report_item(&queue, &item, "was replayed to phase", json, io)
                }
                _ => {
                    let n = store.replay_dead(&queue).await?;
                    if json {
                        let line = serde_json::json!({ "queue": queue.as_str(), "replayed": n });
                        writeln!(io.stdout, "{line}")?;
                    } else {
                        writeln!(
                            io.stdout,
                            "replayed {n} dead {} of queue `{queue}` to pending",
                            plural(n, "item", "items")
                        )?;
                    }
                    Ok(())
                }
            }
        }
    }
}

async fn queues<B: Backend>(store: &Store<B>, json: bool, io: &mut Io<'_>) -> Result<(), CliError> {
    let configs = store.queues().await?;
    if json {
        let mut list = Vec::with_capacity(configs.len());
        for config in &configs {
            list.push(queue_json(config, &store.counts(&config.id).await?));
        }
        writeln!(io.stdout, "{}", serde_json::Value::Array(list))?;
        return Ok(());
    }
    if configs.is_empty() {
        writeln!(io.stdout, "no queues")?;
        return Ok(());
    }
    let mut table = Table::new(vec!["ID", "ITEMS", "CREATED (UTC)", "TTL", "RETENTION"]);
    for config in &configs {
        table.row(vec![
            config.id.to_string(),
            store.count(&config.id).await?.to_string(),
            format_timestamp(config.created_at),
            format_ttl(config),
            retention_name(config).to_owned(),
        ]);
    }
    table.write(io.stdout)?;
    Ok(())
}

async fn queue<B: Backend>(
    store: &Store<B>,
    command: QueueCommand,
    json: bool,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
    match command {
        QueueCommand::Create { id, settings } => {
            let mut config = QueueConfig::new(QueueId::new(id)?);
            apply_settings(&mut config, settings);
            let config = store.create_queue(config).await?;
            if json {
                show_queue(store, &config, json, io).await
            } else {
                writeln!(io.stdout, "created queue `{}`", config.id)?;
                Ok(())
            }
        }
        QueueCommand::Show { id } => {
            let id = QueueId::new(id)?;
            let config = store.queue(&id).await?.ok_or(Error::QueueNotFound(id))?;
            show_queue(store, &config, json, io).await
        }
        QueueCommand::Update {
            id,
            settings,
            no_ttl,
            no_secret,
            remove_meta,
        } => {
            let id = QueueId::new(id)?;
            let mut config = store.queue(&id).await?.ok_or(Error::QueueNotFound(id))?;
            if no_ttl {
                config.ttl = None;
            }
            if no_secret {
                config.secret = None;
            }
            for key in &remove_meta {
                config.metadata.remove(key);
            }
            apply_settings(&mut config, settings);
            let config = store.update_queue(config).await?;
            show_queue(store, &config, json, io).await
        }
        QueueCommand::Delete { id, yes } => {
            let id = QueueId::new(id)?;
            let n = store.count(&id).await?;
            confirm(
                io,
                yes,
                &format!(
                    "Delete queue `{id}` and its {n} {}?",
                    plural(n, "item", "items")
                ),
                &format!("not deleting queue `{id}`"),
            )?;
            if !store.delete_queue(&id).await? {
                return Err(Error::QueueNotFound(id).into());
            }
            if json {
                let line = serde_json::json!({ "queue": id.as_str(), "deleted": true, "items": n });
                writeln!(io.stdout, "{line}")?;
            } else {
                writeln!(
                    io.stdout,
                    "deleted queue `{id}` and its {n} {}",
                    plural(n, "item", "items")
                )?;
            }
            Ok(())
        }
    }
}

fn apply_settings(config: &mut QueueConfig, settings: QueueSettings) {
    if let Some(ttl) = settings.ttl {
        config.ttl = Some(ttl);
    }
    if let Some(secret) = settings.secret {
        config.secret = Some(Secret::new(secret));
    }
    if let Some(retention) = settings.retention {
        config.retention = retention.into();
    }
    config.metadata.extend(settings.meta);
}

async fn show_queue<B: Backend>(
    store: &Store<B>,
    config: &QueueConfig,
    json: bool,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
    let counts = store.counts(&config.id).await?;
    if json {
        writeln!(io.stdout, "{}", queue_json(config, &counts))?;
        return Ok(());
    }
    let metadata = if config.metadata.is_empty() {
        "-".to_owned()
    } else {
        config
            .metadata
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let out = &mut *io.stdout;
    writeln!(out, "queue      {}", config.id)?;
    writeln!(
        out,
        "created    {} UTC",
        format_timestamp(config.created_at)
    )?;
    writeln!(out, "ttl        {}", format_ttl(config))?;
    writeln!(out, "retention  {}", retention_name(config))?;
    writeln!(out, "secret     {}", mask_secret(config))?;
    writeln!(out, "metadata   {metadata}")?;
    writeln!(out, "items      {}", counts.total())?;
    let rows = phase_rows(&counts);
    let width = rows.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    for (name, n) in rows {
        writeln!(out, "  {name:<width$}  {n}")?;
    }
    Ok(())
}

async fn count<B: Backend>(
    store: &Store<B>,
    queue: &str,
    phase: Option<&str>,
    json: bool,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
    let queue = QueueId::new(queue)?;
    let phase = phase.map(Phase::new).transpose()?;
    let n = match &phase {
        Some(phase) => store.count_phase(&queue, phase).await?,
        None => store.count(&queue).await?,
    };
    if json {
        let line = serde_json::json!({
            "queue": queue.as_str(),
            "phase": phase.as_ref().map(Phase::as_str),
            "count": n,
        });
        writeln!(io.stdout, "{line}")?;
    } else {
        writeln!(io.stdout, "{n}")?;
    }
    Ok(())
}

async fn fetch<B: Backend>(
    store: &Store<B>,
    args: FetchArgs,
    json: bool,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
    let queue = QueueId::new(args.queue)?;
    let items = if let Some(key) = args.key {
        let item = store
            .fetch_key(&queue, key)
            .await?
            .ok_or(Error::ItemNotFound {
                queue: queue.clone(),
                key,
            })?;
        vec![item]
    } else {
        let mut page = Page::first(args.limit).offset(args.offset);
        if let Some(phase) = args.phase {
            page = page.phase(Phase::new(phase)?);
        }
        if args.reverse {
            page = page.reverse();
        }
        store.fetch_page(&queue, page).await?
    };
    if json {
        for item in &items {
            write_item_json(io.stdout, item)?;
        }
        return Ok(());
    }
    if items.is_empty() {
        writeln!(io.stdout, "no items")?;
        return Ok(());
    }
    let now = store.now();
    let mut table = Table::new(vec![
        "KEY",
        "PHASE",
        "ATTEMPTS",
        "CREATED (UTC)",
        "NOT BEFORE",
        "PAYLOAD",
    ]);
    for item in &items {
        table.row(item_row(item, now));
    }
    table.write(io.stdout)?;
    Ok(())
}

fn item_row(item: &Item, now: hookspool::Timestamp) -> Vec<String> {
    vec![
        item.key.to_string(),
        item.phase.to_string(),
        item.attempts.to_string(),
        format_timestamp(item.created_at),
        format_not_before(item.not_before, now),
        payload_preview(&item.payload),
    ]
}

async fn dump<B: Backend>(store: &Store<B>, queue: &str, io: &mut Io<'_>) -> Result<(), CliError> {
    let queue = QueueId::new(queue)?;
    // Also fails early, before any output, when the queue does not exist.
    let total = store.count(&queue).await?;
    let progress = io.stderr_is_terminal && total >= DUMP_PROGRESS_EVERY;
    let mut written: u64 = 0;
    let mut pages = store.dump(&queue);
    while let Some(page) = pages.next_page().await? {
        for item in &page {
            write_item_json(io.stdout, item)?;
            written += 1;
            if progress && written.is_multiple_of(DUMP_PROGRESS_EVERY) {
                // `\r` rewrites one status line instead of scrolling the terminal.
                write!(io.stderr, "\rdumped {written} of about {total} items")?;
                io.stderr.flush()?;
            }
        }
    }
    if progress {
        writeln!(io.stderr, "\rdumped {written} items{:20}", "")?;
    }
    Ok(())
}

async fn reset<B: Backend>(
    store: &Store<B>,
    queue: &str,
    yes: bool,
    json: bool,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
    let queue = QueueId::new(queue)?;
    let n = store.count(&queue).await?;
    confirm(
        io,
        yes,
        &format!(
            "Remove all {n} {} of queue `{queue}`?",
            plural(n, "item", "items")
        ),
        &format!("not resetting queue `{queue}`"),
    )?;
    let removed = store.reset(&queue).await?;
    if json {
        let line = serde_json::json!({ "queue": queue.as_str(), "removed": removed });
        writeln!(io.stdout, "{line}")?;
    } else {
        writeln!(
            io.stdout,
            "removed {removed} {} from queue `{queue}`",
            plural(removed, "item", "items")
        )?;
    }
    Ok(())
}

/// Reads the payload for `push` from stdin, at most one byte over the store's limit so that
/// an endless stream cannot exhaust memory.
fn read_payload<B: Backend>(store: &Store<B>, io: &mut Io<'_>) -> Result<Vec<u8>, CliError> {
    if io.stdin_is_terminal {
        writeln!(
            io.stderr,
            "reading the payload from stdin; end it with Ctrl-D (or pass --data)"
        )?;
    }
    let limit = store.limits().max_payload;
    let mut payload = Vec::new();
    io.stdin.take(limit as u64 + 1).read_to_end(&mut payload)?;
    if payload.len() > limit {
        return Err(CliError::Input(format!(
            "payload on stdin is over the limit of {limit} bytes; nothing was pushed"
        )));
    }
    Ok(payload)
}

/// Asks `question` on the terminal unless `yes`. Refuses when nobody can answer (stdin is
/// not a terminal): a destructive command in a script must say `--yes` explicitly.
fn confirm(io: &mut Io<'_>, yes: bool, question: &str, refusal: &str) -> Result<(), CliError> {
    if yes {
        return Ok(());
    }
    if !io.stdin_is_terminal {
        return Err(CliError::NotConfirmed(format!(
            "{refusal}: this needs confirmation, and stdin is not a terminal; pass --yes to \
             confirm"
        )));
    }
    write!(io.stderr, "{question} [y/N] ")?;
    io.stderr.flush()?;
    let answer = read_line(io.stdin)?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err(CliError::NotConfirmed(format!(
            "{refusal}: not confirmed, nothing was changed"
        )))
    }
}

/// Reads one line byte by byte: a buffered reader could swallow input meant for later.
fn read_line(input: &mut dyn Read) -> Result<String, CliError> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 1024 && input.read(&mut byte)? == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

fn report_item(
    queue: &QueueId,
    item: &Item,
    what: &str,
    json: bool,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
    if json {
        write_item_json(io.stdout, item)?;
    } else {
        writeln!(
            io.stdout,
            "item {} of queue `{queue}` {what} `{}`",
            item.key, item.phase
        )?;
    }
    Ok(())
}

fn plural<'a>(n: u64, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}
