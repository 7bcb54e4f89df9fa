//! `hookspool serve` as a real process: it starts, answers on its port, refuses unsafe
//! settings, and stops cleanly on SIGTERM.
#![allow(clippy::unwrap_used)] // tests may panic on failure

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::{hookspool, sigterm, start};

/// A minimal HTTP/1.1 GET; returns the status line and the body.
fn get(addr: &str, path: &str, token: Option<&str>) -> (String, String) {
    request(addr, "GET", path, token, None)
}

/// A minimal HTTP/1.1 request, with a JSON body if given; returns the status line and the
/// body.
fn request(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    json: Option<&str>,
) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let body = json.map_or(String::new(), |j| {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{j}",
            j.len()
        )
    });
    let end = if json.is_some() { "" } else { "\r\n" };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n{end}{body}"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.lines().next().unwrap_or_default().to_owned();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

#[test]
fn serve_answers_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let token = "test-token-0123456789";
    let (mut child, addr) = start(dir.path(), &["--token", token]);
    let (status, body) = get(&addr, "/healthz", None);
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "ok");
    let (status, body) = get(&addr, "/readyz", None);
    assert!(status.contains("200"), "{status}: {body}");
    let (status, body) = get(&addr, "/no/such/endpoint", Some(token));
    assert!(status.contains("404"), "{status}");
    assert!(body.contains("\"error\""), "errors are JSON: {body}");

    sigterm(&child);
    let exit = child.wait().unwrap();
    assert!(
        exit.success(),
        "SIGTERM ends the daemon with exit code 0, got {exit:?}"
    );
    // The data directory is released: the offline CLI can open it now.
    let out = hookspool()
        .arg("--data-dir")
        .arg(dir.path())
        .args(["queues", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("hookspool.deliveries"));
}

#[test]
fn serve_refuses_a_public_address_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = hookspool()
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env_remove("HOOKSPOOL_TOKENS")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without an API token"), "{err}");
}

#[test]
fn serve_refuses_a_bad_retention_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hookspool.toml");
    std::fs::write(&config, "[retention]\ndeliveries_done = \"100ms\"\n").unwrap();
    for (args, names) in [
        (
            vec!["--retain-deliveries-dead", "-3d"],
            "--retain-deliveries-dead",
        ),
        (
            vec!["--config", config.to_str().unwrap()],
            "retention.deliveries_done",
        ),
        (
            vec!["--retain-idempotency-keys", "forever"],
            "idempotency keys cannot be kept `forever`",
        ),
        (
            vec!["--retain-idempotency-keys", "500ms"],
            "--retain-idempotency-keys",
        ),
    ] {
        let out = hookspool()
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "a bad setting: {err}");
        assert!(err.contains(names), "{args:?}: {err}");
    }
}

/// The daemon runs the retention pass: an item settled in a queue that keeps `done` items
/// for 1s is removed about a second later, and the removal is counted. (It polls for at
/// most 10 s; a daemon that never prunes fails here.)
#[test]
fn serve_removes_settled_items_once_their_retention_is_over() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = start(dir.path(), &["--retention-interval", "50ms"]);
    let (status, body) = request(
        &addr,
        "POST",
        "/queues",
        None,
        Some(r#"{"id":"orders","retain":{"done_ms":1000}}"#),
    );
    assert!(status.contains("201"), "{status}: {body}");
    let (status, body) = request(
        &addr,
        "POST",
        "/queues/orders/items",
        None,
        Some(r#"{"items":[{"payload":"a"},{"payload":"b"}]}"#),
    );
    assert!(status.contains("201"), "{status}: {body}");
    let keys: serde_json::Value = serde_json::from_str(&body).unwrap();
    let first = keys["keys"][0].as_u64().unwrap();
    let (status, body) = request(
        &addr,
        "PUT",
        &format!("/queues/orders/items/{first}/phase"),
        None,
        Some(r#"{"phase":"done"}"#),
    );
    assert!(
        status.contains("200") || status.contains("204"),
        "{status}: {body}"
    );

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let counts = loop {
        let (status, body) = get(&addr, "/queues/orders/count", None);
        assert!(status.contains("200"), "{status}: {body}");
        let counts: serde_json::Value = serde_json::from_str(&body).unwrap();
        // The removal is counted just after it is made: wait for both.
        let counted = counts["pruned"]["done"] == 1;
        if (counts["total"] == 1 && counted) || std::time::Instant::now() > deadline {
            break counts;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        counts["total"], 1,
        "the done item was not removed: {counts}"
    );
    assert_eq!(counts["phases"]["pending"], 1, "{counts}");
    assert_eq!(
        counts["pruned"]["done"], 1,
        "the removal is counted: {counts}"
    );
    sigterm(&child);
    assert!(child.wait().unwrap().success());
}

#[test]
fn serve_reports_a_data_directory_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let (mut first, _) = start(dir.path(), &[]);
    let out = hookspool()
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    sigterm(&first);
    assert!(first.wait().unwrap().success());
}

#[test]
fn serve_help_documents_every_setting() {
    let out = hookspool().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--listen",
        "--token",
        "--allow-network",
        "--log-format",
        "--body-limit",
        "--concurrency",
        "--per-subscription",
        "--retry-schedule",
        "--shutdown-grace",
        "--backend",
        "--public-url",
        "--callback-timeout",
        "--callback-concurrency",
        "--retain-deliveries-done",
        "--retain-deliveries-dead",
        "--retain-callbacks-done",
        "--retain-callbacks-dead",
        "--retain-idempotency-keys",
        "--retention-interval",
        "--database-pool-size",
        "--database-snapshot-warning",
        "--node-id",
        "--claim-pause",
        "[channels.NAME]",
        "[[sources]]",
        "/openapi.json",
        "HOOKSPOOL_TOKENS",
    ] {
        assert!(help.contains(flag), "serve --help lacks {flag}");
    }
}

/// The default backend is the journal: the daemon runs on it; afterwards the offline tool
/// finds the journal's files and opens it, and asking the daemon for sled on it is refused.
#[test]
fn serve_runs_on_the_journal_and_the_cli_follows_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = start(dir.path(), &[]);
    let (status, body) = get(&addr, "/readyz", None);
    assert!(status.contains("200"), "{status}: {body}");
    sigterm(&child);
    assert!(child.wait().unwrap().success());
    assert!(
        hookspool_journal::JournalBackend::detect(dir.path()),
        "the journal's files are there"
    );
    let out = hookspool()
        .arg("--data-dir")
        .arg(dir.path())
        .args(["queues", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("hookspool.deliveries"));

    let out = hookspool()
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--backend", "sled"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds a journal store"), "{err}");
}

/// `--backend sled` still works: the daemon runs on sled, the offline tool and a restarted
/// daemon (no flag) find sled's files and use them, and asking for the journal is refused.
#[test]
fn serve_runs_on_sled_when_asked_and_both_follow_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = start(dir.path(), &["--backend", "sled"]);
    let (status, body) = get(&addr, "/readyz", None);
    assert!(status.contains("200"), "{status}: {body}");
    sigterm(&child);
    assert!(child.wait().unwrap().success());
    assert!(
        hookspool_sled::SledBackend::detect(dir.path()),
        "sled's files"
    );
    assert!(
        !hookspool_journal::JournalBackend::detect(dir.path()),
        "no journal"
    );
    let out = hookspool()
        .arg("--data-dir")
        .arg(dir.path())
        .args(["queues", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("hookspool.deliveries"));
    let (mut child, addr) = start(dir.path(), &[]);
    let (status, body) = get(&addr, "/readyz", None);
    assert!(status.contains("200"), "restart on sled: {status}: {body}");
    sigterm(&child);
    assert!(child.wait().unwrap().success());

    let out = hookspool()
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--backend", "journal"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds a sled store"), "{err}");
}
