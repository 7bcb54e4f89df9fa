//! The `hookspool` binary: parses arguments, sets up logging, and hands over to
//! [`hookspool_cli::main_with`] with the sled backend.

use std::process::ExitCode;

use clap::Parser;
use hookspool_cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let hookspool_cli::Command::Serve(args) = cli.command {
        // The daemon sets up its own logging (format from its settings).
        return hookspool_cli::serve::main(args, cli.data_dir);
    }
    // Logs go to stderr, quiet unless HOOKSPOOL_LOG asks (e.g. HOOKSPOOL_LOG=debug).
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOOKSPOOL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    hookspool_cli::main_with(cli, |dir| hookspool_sled::SledBackend::open(dir))
}
