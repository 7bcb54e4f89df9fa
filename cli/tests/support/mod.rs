//! What the binary tests share: the real `hookspool` binary, a daemon started on a free
//! loopback port (its address read from its `listening on ADDR` line), and signals.
// Each test binary uses part of this module.
#![allow(dead_code, clippy::unwrap_used)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The binary under test.
pub fn hookspool() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hookspool"))
}

/// Starts `hookspool --data-dir DIR serve --listen 127.0.0.1:0 EXTRA…` with a clean
/// `HOOKSPOOL_*` environment plus `env`, stderr to `stderr`; returns the child and its
/// address once it accepts connections.
pub fn start_with<K: AsRef<OsStr>, V: AsRef<OsStr>>(
    dir: &Path,
    extra: &[&str],
    env: impl IntoIterator<Item = (K, V)>,
    stderr: Stdio,
) -> (Child, String) {
    let mut cmd = hookspool();
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("HOOKSPOOL_") {
            cmd.env_remove(name);
        }
    }
    let mut child = cmd
        .arg("--data-dir")
        .arg(dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .env("HOOKSPOOL_LOG", "warn")
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, addr)
}

/// [`start_with`] with no extra environment and stderr discarded.
pub fn start(dir: &Path, extra: &[&str]) -> (Child, String) {
    start_with(
        dir,
        extra,
        std::iter::empty::<(&str, &str)>(),
        Stdio::null(),
    )
}

/// Sends `signal` (`-TERM`, `-KILL`) to the child.
pub fn signal(child: &Child, signal: &str) {
    let ok = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {signal} failed");
}

/// SIGTERM.
pub fn sigterm(child: &Child) {
    signal(child, "-TERM");
}

/// A free loopback port with nothing listening on it (released, for a server that starts
/// later).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Each line of `text` as JSON.
pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// A schema of the shared PostgreSQL test server for this test alone.
pub fn pg_schema(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("e2e_{test}_{}_{nanos}", std::process::id())
}
