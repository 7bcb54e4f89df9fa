//! The `hookspool` command-line tool as a library: argument types, the commands, and the
//! process entry point, so that tests drive exactly what the binary runs.
//!
//! The tool works offline on a data directory (`--data-dir`, default `./hookspool-data`):
//! it opens the store itself, so the directory must not be open in another process (that
//! process holds its lock; the tool then exits with [`EXIT_LOCKED`]). With `--url` the queue
//! commands go through a running daemon's HTTP API instead (over
//! [`hookspool_client::Client`]), with the same output; a daemon that does not answer gives
//! [`EXIT_UNREACHABLE`].
//!
//! Commands: `serve` (the daemon, in [`serve`]), `queues`, `queue create|show|update|delete`,
//! `count`, `fetch`, `dump`, `reset`, `push`, `delete`, `set-phase`, `replay`. Tables by
//! default, `--json` for scripts.
//!
//! # Map of the crate
//!
//! - `args`: the command line as clap types.
//! - `admin`: [`Admin`], the queue operations the commands need, and its implementation over
//!   a data directory's [`hookspool::Store`].
//! - `remote`: [`Admin`] over a daemon's [`hookspool_client::Client`] (`--url`), with the
//!   wording of what only a network can do (no answer, a refused token).
//! - `commands`: every queue command, written once over [`Admin`]; `--url` only picks the
//!   implementation, so both sides print alike.
//! - `format`: tables and JSON; `duration`: `15m`-style durations; `error`: [`CliError`] and
//!   the exit codes.
//! - [`serve`]: the daemon. `serve::config` resolves its settings (TOML file, environment,
//!   flags, channels, sources), with `serve::retention` and `serve::console` (the web
//!   console: on or off, its path, how long a sign-in lasts); `serve` runs it;
//!   [`serve::command`] is the handler that runs a command per callback.
//!
//! Which durable backend a data directory holds is for each backend to tell
//! (`JournalBackend::detect`, `SledBackend::detect`); [`serve::BackendKind::detect`] asks
//! them.

mod admin;
mod args;
mod commands;
mod duration;
mod error;
mod format;
mod remote;
pub mod serve;

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use hookspool::{Backend, Store};

pub use admin::{Admin, ItemStream};
pub use args::{Cli, Command, FetchArgs, QueueCommand, QueueSettings, RetentionArg};
pub use commands::{DUMP_PROGRESS_EVERY, Io, run};
pub use duration::{format_duration, format_retain_period, parse_duration, parse_retain_period};
pub use error::{CliError, EXIT_FAILED, EXIT_LOCKED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE};
pub use remote::serve_with_url;

/// Opens the data directory with `open` and runs the command, or, with `--url`, runs it
/// against that daemon, or, with `--database-url`, on that PostgreSQL database (and never
/// calls `open` then).
///
/// Only `queue create` may create a missing data directory; every other command refuses it
/// ([`CliError::NoDataDir`]), so that a mistyped `--data-dir` is not read as an empty store.
/// A directory locked by another process gives [`CliError::Locked`] naming it.
///
/// # Errors
/// See [`CliError`].
pub async fn execute<B, F>(cli: Cli, io: &mut Io<'_>, open: F) -> Result<(), CliError>
where
    B: Backend,
    F: FnOnce(&Path) -> hookspool::Result<B>,
{
    let Cli {
        data_dir: dir,
        url,
        database_url,
        database_schema,
        token,
        json,
        command,
    } = cli;
    if let Some(url) = url {
        if matches!(command, Command::Serve(_)) {
            return Err(serve_with_url());
        }
        let client = remote::connect(&url, token)?;
        tracing::debug!(url = client.base_url(), "running against a daemon");
        return run(&client, command, json, io).await;
    }
    if let Some(database_url) = database_url {
        let mut options = hookspool_postgres::PostgresOptions::new(database_url).pool_size(2);
        if let Some(schema) = database_schema {
            options = options.schema(schema);
        }
        let backend = hookspool_postgres::PostgresBackend::open(options).await?;
        tracing::debug!(target = backend.target(), "running against a database");
        return run(&Store::new(backend), command, json, io).await;
    }
    let creates = matches!(command, Command::Queue(QueueCommand::Create { .. }));
    match std::fs::metadata(&dir) {
        Ok(meta) if !meta.is_dir() => {
            return Err(CliError::Input(format!(
                "data directory {} is not a directory",
                dir.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !creates => {
            return Err(CliError::NoDataDir { dir });
        }
        // Anything else (exists, or will be created, or unreadable): `open` reports it.
        _ => {}
    }
    tracing::debug!(dir = %dir.display(), "opening data directory");
    let backend = open(&dir).map_err(|e| CliError::opening(&dir, e))?;
    let store = Store::new(backend);
    run(&store, command, json, io).await?;
    // Under a periodic durability setting this is what makes the command's effect durable
    // before the process exits; under the default it is a no-op.
    store.sync().await?;
    Ok(())
}

/// The whole process after argument parsing: runs [`execute`] on the real stdio in a
/// single-threaded runtime, prints `error: <message>` on failure, and returns the exit code.
pub fn main_with<B, F>(cli: Cli, open: F) -> ExitCode
where
    B: Backend,
    F: FnOnce(&Path) -> hookspool::Result<B>,
{
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return report(Err(CliError::Io(e))),
    };
    let stdin = std::io::stdin();
    let stderr = std::io::stderr();
    let mut io_in = stdin.lock();
    let mut io_err = stderr.lock();
    // Buffered: `dump` writes a line per item.
    let mut io_out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut io = Io {
        stdin_is_terminal: std::io::stdin().is_terminal(),
        stderr_is_terminal: std::io::stderr().is_terminal(),
        stdout: &mut io_out,
        stderr: &mut io_err,
        stdin: &mut io_in,
    };
    // `io` borrows the streams; its last use ends the borrow so they can be flushed.
    let result = runtime.block_on(execute(cli, &mut io, open));
    // Flush even after an error, so that what was printed before it is not lost.
    let flushed = io_out.flush().map_err(CliError::Io);
    drop(io_err);
    report(result.and(flushed))
}

/// Prints the error (if any) as `error: <message>` on stderr and picks the exit code.
fn report(result: Result<(), CliError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::from(EXIT_OK),
        // The reader of our stdout went away (`| head`): stop quietly.
        Err(e) if e.is_broken_pipe() => ExitCode::from(EXIT_OK),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on failure
mod tests;

// The README's examples use every crate of the workspace, as this one does: they are
// compiled (and the runnable ones run) as this crate's doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
