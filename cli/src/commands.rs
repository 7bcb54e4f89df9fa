//! The commands, each written once over [`Admin`]: it reads its arguments, calls the queues
//! (a data directory's store, or a daemon's API with `--url`), and writes a table or JSON.
//! Which side runs a command changes nothing here, so both print exactly alike.

use std::io::{Read, Write};
use std::time::Duration;

use hookspool::{Error, Item, NewItem, Page, Phase, QueueConfig, QueueId, Timestamp};
use hookspool_client::{QueueInfo, QueueUpdate};
use hookspool_webhooks::{CHANNEL_SECRET, INTERNAL_PREFIX, Secret, set_channel_secret};

use crate::admin::{Admin, ItemStream};
use crate::args::{Command, FetchArgs, QueueCommand, QueueSettings};
use crate::error::CliError;
use crate::format::{
    Table, format_not_before, format_retain, format_timestamp, format_ttl, mask_secret,
    payload_preview, phase_rows, queue_json, retention_name, write_item_json,
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

/// `reset`: asks first (unless `yes`), then removes every item of `queue`.
async fn reset<A: Admin>(
    admin: &A,
    queue: String,
    yes: bool,
    json: bool,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
    let queue = QueueId::new(queue)?;
    writable(&queue, "reset")?;
    let n = admin.count(&queue, None).await?;
    confirm(
        io,
        yes,
        &format!("Remove all {n} {} of queue `{queue}`?", items(n)),
        &format!("not resetting queue `{queue}`"),
    )?;
    let removed = admin.reset(&queue).await?;
    let line = serde_json::json!({ "queue": queue.as_str(), "removed": removed });
    report(
        io,
        json,
        &line,
        format_args!("removed {removed} {} from queue `{queue}`", items(removed)),
    )
}

/// Refuses a write to one of hookspool's own queues (`hookspool.subscriptions`,
/// `hookspool.deliveries`, …): the webhook layer alone writes their records, and one written
/// by hand could stop the daemon at its next start. Reads and `replay` stay allowed.
fn writable(queue: &QueueId, what: &str) -> Result<(), CliError> {
    if queue.as_str().starts_with(INTERNAL_PREFIX) {
        return Err(CliError::Input(format!(
            "`{queue}` is one of hookspool's own queues: it cannot be {what} with the queue \
             commands (reads and `replay` are allowed; subscriptions and deliveries are managed \
             through the daemon's /hooks and /deliveries endpoints, and how long deliveries stay \
             by `hookspool serve --retain-deliveries-done` and the like)"
        )));
    }
    Ok(())
}

/// Runs one queue command against `admin`: a [`hookspool::Store`] for a data directory, a
/// [`hookspool_client::Client`] for a daemon. `json` selects JSON output.
///
/// # Errors
/// Whatever `admin` reports (unknown queue, invalid id or phase, conflicts, a daemon that
/// does not answer, …), refused confirmations, and I/O errors on stdio.
pub async fn run<A: Admin>(
    admin: &A,
    command: Command,
    json: bool,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
    match command {
        Command::Serve(_) => Err(CliError::Input(
            "`serve` runs the daemon; call hookspool_cli::serve::main".to_owned(),
        )),
        Command::Queues => print_queues(&admin.queues().await?, json, io),
        Command::Queue(cmd) => queue(admin, cmd, json, io).await,
        Command::Count { queue, phase } => {
            let queue = QueueId::new(queue)?;
            let phase = phase.map(Phase::new).transpose()?;
            let n = admin.count(&queue, phase.as_ref()).await?;
            let line = serde_json::json!({
                "queue": queue.as_str(),
                "phase": phase.as_ref().map(Phase::as_str),
                "count": n,
            });
            report(io, json, &line, format_args!("{n}"))
        }
        Command::Fetch(args) => fetch(admin, &args, json, io).await,
        Command::Dump { queue } => dump(admin, &queue, io).await,
        Command::Reset { queue, yes } => reset(admin, queue, yes, json, io).await,
        Command::Verify { quarantine } => verify(admin, quarantine, json, io).await,
        Command::Push {
            queue,
            data,
            meta,
            delay,
        } => {
            let queue = QueueId::new(queue)?;
            writable(&queue, "pushed to")?;
            let item = new_item(data, meta, delay, admin.now(), admin.max_payload(), io)?;
            let key = admin.push(&queue, item).await?;
            let line = serde_json::json!({ "queue": queue.as_str(), "key": key });
            report(io, json, &line, format_args!("{key}"))
        }
        Command::Delete { queue, key } => {
            let queue = QueueId::new(queue)?;
            writable(&queue, "deleted from")?;
            if !admin.delete(&queue, key).await? {
                return Err(Error::ItemNotFound { queue, key }.into());
            }
            let line = serde_json::json!({ "queue": queue.as_str(), "key": key, "deleted": true });
            report(
                io,
                json,
                &line,
                format_args!("deleted item {key} of queue `{queue}`"),
            )
        }
        Command::SetPhase {
            queue,
            key,
            phase,
            if_phase,
        } => {
            let queue = QueueId::new(queue)?;
            writable(&queue, "changed")?;
            let phase = Phase::new(phase)?;
            let if_phase = if_phase.map(Phase::new).transpose()?;
            let item = admin.update_phase(&queue, key, phase, if_phase).await?;
            report_item(&queue, &item, "is now in phase", json, io)
        }
        Command::Replay { queue, key, all } => {
            let queue = QueueId::new(queue)?;
            match key {
                Some(key) if !all => {
                    let item = admin.replay(&queue, key).await?;
                    report_item(&queue, &item, "was replayed to phase", json, io)
                }
                _ => {
                    let n = admin.replay_dead(&queue).await?;
                    let line = serde_json::json!({ "queue": queue.as_str(), "replayed": n });
                    report(
                        io,
                        json,
                        &line,
                        format_args!(
                            "replayed {n} dead {} of queue `{queue}` to pending",
                            items(n)
                        ),
                    )
                }
            }
        }
    }
}

/// Writes a command's result: `line` as one line of JSON, or `text` for people.
fn report(
    io: &mut Io<'_>,
    json: bool,
    line: &serde_json::Value,
    text: std::fmt::Arguments<'_>,
) -> Result<(), CliError> {
    if json {
        writeln!(io.stdout, "{line}")?;
    } else {
        writeln!(io.stdout, "{text}")?;
    }
    Ok(())
}

/// `queues`: a table (or a JSON array) of every queue.
fn print_queues(queues: &[QueueInfo], json: bool, io: &mut Io<'_>) -> Result<(), CliError> {
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

async fn queue<A: Admin>(
    admin: &A,
    command: QueueCommand,
    json: bool,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
    match command {
        QueueCommand::Create { id, settings } => {
            let id = QueueId::new(id)?;
            writable(&id, "created")?;
            let queue = admin.create_queue(new_queue(id, settings)?).await?;
            if json {
                print_queue(&queue, json, io)
            } else {
                writeln!(io.stdout, "created queue `{}`", queue.id)?;
                Ok(())
            }
        }
        QueueCommand::Show { id } => {
            let id = QueueId::new(id)?;
            let queue = admin.queue(&id).await?.ok_or(Error::QueueNotFound(id))?;
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
            writable(&id, "changed")?;
            let update =
                queue_update(admin, &id, settings, no_ttl, no_secret, &remove_meta).await?;
            let queue = admin.update_queue(&id, update).await?;
            print_queue(&queue, json, io)
        }
        QueueCommand::Delete { id, yes } => {
            let id = QueueId::new(id)?;
            writable(&id, "deleted")?;
            let n = admin.count(&id, None).await?;
            confirm(
                io,
                yes,
                &format!("Delete queue `{id}` and its {n} {}?", items(n)),
                &format!("not deleting queue `{id}`"),
            )?;
            if !admin.delete_queue(&id).await? {
                return Err(Error::QueueNotFound(id).into());
            }
            let line = serde_json::json!({ "queue": id.as_str(), "deleted": true, "items": n });
            report(
                io,
                json,
                &line,
                format_args!("deleted queue `{id}` and its {n} {}", items(n)),
            )
        }
    }
}

/// `verify`: every damaged item on a line (queue, key, what), then a summary; progress on
/// stderr when it is a terminal. Damage found is exit 1.
async fn verify<A: Admin>(
    admin: &A,
    quarantine: bool,
    json: bool,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
    let show_progress = io.stderr_is_terminal;
    let mut last_shown = 0;
    let report = {
        let stderr = &mut *io.stderr;
        admin
            .verify(quarantine, |n| {
                if show_progress && n >= last_shown + DUMP_PROGRESS_EVERY {
                    last_shown = n;
                    let _ = write!(stderr, "\rchecked {n} items");
                }
            })
            .await?
    };
    if show_progress && last_shown > 0 {
        writeln!(io.stderr)?;
    }
    if json {
        for d in &report.damaged {
            let line = serde_json::json!({
                "queue": d.queue.as_str(), "key": d.key, "error": d.error,
            });
            writeln!(io.stdout, "{line}")?;
        }
    } else {
        for d in &report.damaged {
            let key = d.key.map_or_else(|| "?".to_owned(), |k| k.to_string());
            writeln!(io.stdout, "{} {key}: {}", d.queue, d.error)?;
        }
    }
    let summary = format!(
        "checked {} items in {} queues: {} damaged{}",
        report.items,
        report.queues,
        report.damaged.len(),
        if quarantine {
            format!(", {} quarantined", report.quarantined)
        } else {
            String::new()
        }
    );
    if report.is_clean() {
        writeln!(io.stderr, "{summary}")?;
        Ok(())
    } else {
        // Printed as the error, with exit code 1.
        Err(CliError::Input(summary))
    }
}

/// The queue `queue create` creates.
fn new_queue(id: QueueId, settings: QueueSettings) -> Result<QueueConfig, CliError> {
    check_meta_keys(settings.meta.iter().map(|(key, _)| key))?;
    let secret = secret_arg(settings.secret.clone())?;
    let mut config = QueueConfig::new(id);
    config.ttl = settings.ttl;
    if let Some(retention) = settings.retention {
        config.retention = retention.into();
    }
    config.retain = settings.retain_over(config.retain);
    config.metadata.extend(settings.meta);
    set_channel_secret(&mut config, secret.as_ref())?;
    Ok(config)
}

/// The change `queue update` asks for. Metadata is replaced whole (as the API does it), so
/// adding or removing single entries starts from the queue's current metadata.
async fn queue_update<A: Admin>(
    admin: &A,
    id: &QueueId,
    settings: QueueSettings,
    no_ttl: bool,
    no_secret: bool,
    remove_meta: &[String],
) -> Result<QueueUpdate, CliError> {
    check_meta_keys(settings.meta.iter().map(|(key, _)| key).chain(remove_meta))?;
    let secret = secret_arg(settings.secret.clone())?;
    let changes_meta = !(remove_meta.is_empty() && settings.meta.is_empty());
    let current = if changes_meta || settings.sets_retain() {
        Some(
            admin
                .queue(id)
                .await?
                .ok_or_else(|| Error::QueueNotFound(id.clone()))?,
        )
    } else {
        None
    };
    // The API replaces the three periods together: those not given keep their value.
    let retain = current
        .as_ref()
        .filter(|_| settings.sets_retain())
        .map(|q| settings.retain_over(q.retain).into());
    let metadata = current.filter(|_| changes_meta).map(|q| {
        let mut metadata = q.metadata;
        for key in remove_meta {
            metadata.remove(key);
        }
        metadata.extend(settings.meta);
        metadata
    });
    // clap refuses `--ttl` with `--no-ttl` and `--secret` with `--no-secret`.
    Ok(QueueUpdate {
        secret: secret.map(Some).or(no_secret.then_some(None)),
        ttl: settings.ttl.map(Some).or(no_ttl.then_some(None)),
        retention: settings.retention.map(Into::into),
        retain,
        metadata,
    })
}

/// `--secret`, which must not be empty: an empty secret would refuse every callback.
fn secret_arg(secret: Option<String>) -> Result<Option<Secret>, CliError> {
    match secret {
        Some(s) if s.is_empty() => Err(CliError::Input(
            "--secret must not be empty (--no-secret removes the secret)".to_owned(),
        )),
        s => Ok(s.map(Secret::new)),
    }
}

/// Refuses `--meta` / `--remove-meta` on the metadata entry that holds the channel secret:
/// writing it there would set or drop the secret behind the user's back (and the daemon
/// refuses it too).
fn check_meta_keys<'a>(mut keys: impl Iterator<Item = &'a String>) -> Result<(), CliError> {
    if keys.any(|key| key == CHANNEL_SECRET) {
        return Err(CliError::Input(format!(
            "metadata key `{CHANNEL_SECRET}` holds the queue's signing secret: set it with \
             --secret, remove it with --no-secret"
        )));
    }
    Ok(())
}

/// `queue show` (and `queue update`, `queue create --json`): settings and counts by phase.
fn print_queue(queue: &QueueInfo, json: bool, io: &mut Io<'_>) -> Result<(), CliError> {
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
    writeln!(out, "retain     {}", format_retain(queue.retain))?;
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

async fn fetch<A: Admin>(
    admin: &A,
    args: &FetchArgs,
    json: bool,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
    let queue = QueueId::new(args.queue.as_str())?;
    let items = if let Some(key) = args.key {
        let item = admin
            .fetch_key(&queue, key)
            .await?
            .ok_or(Error::ItemNotFound {
                queue: queue.clone(),
                key,
            })?;
        vec![item]
    } else {
        admin.fetch_page(&queue, fetch_page(args)?).await?
    };
    print_items(&items, admin.now(), json, io)
}

/// The `fetch` selection as a `Page` (without `--key`).
fn fetch_page(args: &FetchArgs) -> Result<Page, CliError> {
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
fn print_items(
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
        table.row(vec![
            item.key.to_string(),
            item.phase.to_string(),
            item.attempts.to_string(),
            format_timestamp(item.created_at),
            format_not_before(item.not_before, now),
            payload_preview(&item.payload),
        ]);
    }
    table.write(io.stdout)?;
    Ok(())
}

/// `dump`: one JSON line per item on stdout, and progress on a terminal's stderr for large
/// queues.
async fn dump<A: Admin>(admin: &A, queue: &str, io: &mut Io<'_>) -> Result<(), CliError> {
    let queue = QueueId::new(queue)?;
    // Also fails early, before any output, when the queue does not exist.
    let total = admin.count(&queue, None).await?;
    let progress = io.stderr_is_terminal && total >= DUMP_PROGRESS_EVERY;
    let mut items = admin.dump(&queue).await?;
    let mut written: u64 = 0;
    while let Some(item) = items.next_item().await? {
        write_item_json(io.stdout, &item)?;
        written += 1;
        if progress && written.is_multiple_of(DUMP_PROGRESS_EVERY) {
            // `\r` rewrites one status line instead of scrolling the terminal.
            write!(io.stderr, "\rdumped {written} of about {total} items")?;
            io.stderr.flush()?;
        }
    }
    if progress {
        writeln!(io.stderr, "\rdumped {written} items{:20}", "")?;
    }
    Ok(())
}

/// The item `push` pushes: `--data` or stdin, `--meta`, `--delay` from `now`.
fn new_item(
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

/// "item" or "items", for `n` of them.
fn items(n: u64) -> &'static str {
    if n == 1 { "item" } else { "items" }
}
