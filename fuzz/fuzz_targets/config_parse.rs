//! Fuzzes the daemon's config file parser: arbitrary text as a `hookspool serve` config
//! file (TOML: settings, `[channels.NAME]` tables, `[[sources]]` entries), resolved and
//! checked as the daemon does (`ServeConfig::from_toml`). A config is accepted or refused
//! with a message, never a panic.

#![no_main]

use std::path::PathBuf;

use hookspool_cli::serve::ServeConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A data directory that does not exist: the backend follows the file alone.
    let dir = PathBuf::from("/nonexistent/hookspool-fuzz-data");
    if let Ok(config) = ServeConfig::from_toml(text, dir) {
        // What is accepted is usable: the listen address and delivery settings hold.
        assert!(
            config.listen.ip().is_loopback() || !config.tokens.is_empty(),
            "a non-loopback address was accepted without a token"
        );
        assert!(
            config.callbacks.concurrency > 0 && !config.callbacks.timeout.is_zero(),
            "zero callback concurrency or timeout was accepted"
        );
        let _ = format!("{config:?}");
    }
});
