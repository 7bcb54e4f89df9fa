//! The `hookspool` binary: parses arguments, sets up logging, and hands over to
//! [`hookspool_cli::main_with`] with the backend the data directory holds (sled or journal).

use std::io::Write;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use hookspool_cli::Cli;

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let hookspool_cli::Command::Serve(args) = cli.command {
        // `--url` on the command line is a mistake; HOOKSPOOL_URL in the environment is the
        // client's setting and does not concern the daemon.
        if matches.value_source("url") == Some(ValueSource::CommandLine) {
            let _ = writeln!(
                std::io::stderr(),
                "error: {}",
                hookspool_cli::serve_with_url()
            );
            return ExitCode::from(hookspool_cli::EXIT_USAGE);
        }
        // The daemon sets up its own logging (format from its settings).
        let mut args = args;
        args.database_url = cli.database_url;
        args.database_schema = cli.database_schema;
        return hookspool_cli::serve::main(*args, cli.data_dir);
    }
    if cli.token.is_none() {
        cli.token = std::env::var("HOOKSPOOL_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
    }
    // Logs go to stderr, quiet unless HOOKSPOOL_LOG asks (e.g. HOOKSPOOL_LOG=debug).
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOOKSPOOL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    // The offline commands open whichever durable store the directory holds (the journal for
    // a new one, as the daemon does).
    if hookspool_cli::serve::BackendKind::detect(&cli.data_dir)
        == Some(hookspool_cli::serve::BackendKind::Sled)
    {
        return hookspool_cli::main_with(cli, |dir| hookspool_sled::SledBackend::open(dir));
    }
    hookspool_cli::main_with(cli, |dir| hookspool_journal::JournalBackend::open(dir))
}
