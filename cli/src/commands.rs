//! The commands themselves, over any [`Backend`]: each reads its arguments, calls the
//! [`Store`], and writes a table or JSON. The output helpers here are shared with the
//! `--url` path (`remote`), so that both print exactly alike.

use std::io::{Read, Write};
use std::time::Duration;

use hookspool::client::QueueInfo;
use hookspool::{
    Backend, Error, Item, NewItem, Page, Phase, QueueConfig, QueueId, Secret, Store, Timestamp,
};

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
            let limit = store.limits().max_payload;
            let item = new_item(data, meta, delay, store.now(), limit, io)?;
            let key = store.push(&queue, item).await?;
            print_pushed(&queue, key, json, io)
        }
        Command::Delete { queue, key } => {
            let queue = QueueId::new(queue)?;
            if !store.delete(&queue, key).await? {
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
                    print_replayed(&queue, n, json, io)
                }
            }
        }
    }
}

async fn queues<B: Backend>(store: &Store<B>, json: bool, io: &mut Io<'_>) -> Result<(), CliError> {
    let configs = store.queues().await?;
    let mut list = Vec::with_capacity(configs.len());
    for config in &configs {
        list.push(QueueInfo::new(config, store.counts(&config.id).await?));
    }
    print_queues(&list, json, io)
}

/// `queues`: a table (or a JSON array) of every queue.
pub(crate) fn print_queues(
    queues: &[QueueInfo],
    json: bool,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
    if json {
        let list = queues.iter().map(queue_json).collect();
        writeln!(io.stdout, "{}", serde_json::Value::Array(list))?;
        return Ok(());
    }
    if queues.is_empty() {
        writeln!(io.stdout, "no queues")?;
        return Ok(());
    }
    let mut table = Table::new(vec!["ID", "ITEMS", "CREATED (UTC)", "TTL", "RETENTION"]);
    for queue in queues {
        table.row(vec![
            queue.id.to_string(),
            queue.counts.total().to_string(),
            format_timestamp(queue.created_at),
            format_ttl(queue),
            retention_name(queue).to_owned(),
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
                print_created(&config.id, io)
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
            confirm_queue_delete(&id, n, yes, io)?;
            if !store.delete_queue(&id).await? {
                return Err(Error::QueueNotFound(id).into());
            }
            print_queue_deleted(&id, n, json, io)
        }
    }
}

/// `queue create` without `--json`.
pub(crate) fn print_created(id: &QueueId, io: &mut Io<'_>) -> Result<(), CliError> {
    writeln!(io.stdout, "created queue `{id}`")?;
    Ok(())
}

/// Asks before `queue delete` removes a queue of `n` items.
pub(crate) fn confirm_queue_delete(
    id: &QueueId,
    n: u64,
    yes: bool,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
    confirm(
        io,
        yes,
        &format!(
            "Delete queue `{id}` and its {n} {}?",
            plural(n, "item", "items")
        ),
        &format!("not deleting queue `{id}`"),
    )
}

/// What `queue delete` prints once the queue is gone.
pub(crate) fn print_queue_deleted(
    id: &QueueId,
    n: u64,
    json: bool,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
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

/// Applies `queue create`/`queue update` flags to a queue's settings.
pub(crate) fn apply_settings(config: &mut QueueConfig, settings: QueueSettings) {
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
    print_queue(&QueueInfo::new(config, counts), json, io)
}

/// `queue show` (and `queue update`, `queue create --json`): settings and counts by phase.
pub(crate) fn print_queue(queue: &QueueInfo, json: bool, io: &mut Io<'_>) -> Result<(), CliError> {
    if json {
        writeln!(io.stdout, "{}", queue_json(queue))?;
        return Ok(());
    }
    let metadata = if queue.metadata.is_empty() {
        "-".to_owned()
    } else {
        queue
            .metadata
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let out = &mut *io.stdout;
    writeln!(out, "queue      {}", queue.id)?;
    writeln!(out, "created    {} UTC", format_timestamp(queue.created_at))?;
    writeln!(out, "ttl        {}", format_ttl(queue))?;
    writeln!(out, "retention  {}", retention_name(queue))?;
    writeln!(out, "secret     {}", mask_secret(queue))?;
    writeln!(out, "metadata   {metadata}")?;
    writeln!(out, "items      {}", queue.counts.total())?;
    let rows = phase_rows(&queue.counts);
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
    print_count(&queue, phase.as_ref(), n, json, io)
}

/// What `count` prints.
pub(crate) fn print_count(
    queue: &QueueId,
    phase: Option<&Phase>,
    n: u64,
    json: bool,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
    if json {
        let line = serde_json::json!({
            "queue": queue.as_str(),
            "phase": phase.map(Phase::as_str),
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
    let queue = QueueId::new(args.queue.as_str())?;
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
        store.fetch_page(&queue, fetch_page(&args)?).await?
    };
    print_items(&items, store.now(), json, io)
}

/// The `fetch` selection as a `Page` (without `--key`).
pub(crate) fn fetch_page(args: &FetchArgs) -> Result<Page, CliError> {
    let mut page = Page::first(args.limit).offset(args.offset);
    if let Some(phase) = &args.phase {
        page = page.phase(Phase::new(phase.as_str())?);
    }
    if args.reverse {
        page = page.reverse();
    }
    Ok(page)
}

/// What `fetch` prints: a table (not-before times relative to `now`) or JSON lines.
pub(crate) fn print_items(
    items: &[Item],
    now: Timestamp,
    json: bool,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
    if json {
        for item in items {
            write_item_json(io.stdout, item)?;
        }
        return Ok(());
    }
    if items.is_empty() {
        writeln!(io.stdout, "no items")?;
        return Ok(());
    }
    let mut table = Table::new(vec![
        "KEY",
        "PHASE",
        "ATTEMPTS",
        "CREATED (UTC)",
        "NOT BEFORE",
        "PAYLOAD",
    ]);
    for item in items {
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
    let mut out = DumpOutput::new(total, io);
    let mut pages = store.dump(&queue);
    while let Some(page) = pages.next_page().await? {
        for item in &page {
            out.item(item, io)?;
        }
    }
    out.finish(io)
}

/// What `dump` writes: one JSON line per item on stdout, and progress on a terminal's stderr
/// for large queues.
pub(crate) struct DumpOutput {
    total: u64,
    written: u64,
    progress: bool,
}

impl DumpOutput {
    /// Output for a dump of about `total` items.
    pub(crate) fn new(total: u64, io: &Io<'_>) -> Self {
        DumpOutput {
            total,
            written: 0,
            progress: io.stderr_is_terminal && total >= DUMP_PROGRESS_EVERY,
        }
    }

    /// Writes one item.
    pub(crate) fn item(&mut self, item: &Item, io: &mut Io<'_>) -> Result<(), CliError> {
        write_item_json(io.stdout, item)?;
        self.written += 1;
        if self.progress && self.written.is_multiple_of(DUMP_PROGRESS_EVERY) {
            // `\r` rewrites one status line instead of scrolling the terminal.
            write!(
                io.stderr,
                "\rdumped {} of about {} items",
                self.written, self.total
            )?;
            io.stderr.flush()?;
        }
        Ok(())
    }

    /// Ends the progress line.
    pub(crate) fn finish(self, io: &mut Io<'_>) -> Result<(), CliError> {
        if self.progress {
            writeln!(io.stderr, "\rdumped {} items{:20}", self.written, "")?;
        }
        Ok(())
    }
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
    confirm_reset(&queue, n, yes, io)?;
    let removed = store.reset(&queue).await?;
    print_reset(&queue, removed, json, io)
}

/// Asks before `reset` removes `n` items.
pub(crate) fn confirm_reset(
    queue: &QueueId,
    n: u64,
    yes: bool,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
    confirm(
        io,
        yes,
        &format!(
            "Remove all {n} {} of queue `{queue}`?",
            plural(n, "item", "items")
        ),
        &format!("not resetting queue `{queue}`"),
    )
}

/// What `reset` prints.
pub(crate) fn print_reset(
    queue: &QueueId,
    removed: u64,
    json: bool,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
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

/// The item `push` pushes: `--data` or stdin, `--meta`, `--delay` from `now`.
pub(crate) fn new_item(
    data: Option<String>,
    meta: Vec<(String, String)>,
    delay: Option<Duration>,
    now: Timestamp,
    limit: usize,
    io: &mut Io<'_>,
) -> Result<NewItem, CliError> {
    let payload = match data {
        Some(data) => data.into_bytes(),
        None => read_payload(limit, io)?,
    };
    let mut item = NewItem::new(payload);
    item.metadata.extend(meta);
    if let Some(delay) = delay {
        item.not_before = Some(now.saturating_add(delay));
    }
    Ok(item)
}

/// What `push` prints.
pub(crate) fn print_pushed(
    queue: &QueueId,
    key: u64,
    json: bool,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
    if json {
        let line = serde_json::json!({ "queue": queue.as_str(), "key": key });
        writeln!(io.stdout, "{line}")?;
    } else {
        writeln!(io.stdout, "{key}")?;
    }
    Ok(())
}

/// What `delete` prints.
pub(crate) fn print_deleted(
    queue: &QueueId,
    key: u64,
    json: bool,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
    if json {
        let line = serde_json::json!({ "queue": queue.as_str(), "key": key, "deleted": true });
        writeln!(io.stdout, "{line}")?;
    } else {
        writeln!(io.stdout, "deleted item {key} of queue `{queue}`")?;
    }
    Ok(())
}

/// What `replay --all` prints.
pub(crate) fn print_replayed(
    queue: &QueueId,
    n: u64,
    json: bool,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
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

/// Reads the payload for `push` from stdin, at most one byte over `limit` so that an endless
/// stream cannot exhaust memory.
fn read_payload(limit: usize, io: &mut Io<'_>) -> Result<Vec<u8>, CliError> {
    if io.stdin_is_terminal {
        writeln!(
            io.stderr,
            "reading the payload from stdin; end it with Ctrl-D (or pass --data)"
        )?;
    }
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

/// What `set-phase` and `replay KEY` print: the item's new phase, or the item as JSON.
pub(crate) fn report_item(
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
