//! The real `hookspool` binary's queue commands on PostgreSQL, and a database that cannot be
//! reached at start (for `serve` too): what a new user meets first. The daemons sharing a
//! database are in `postgres.rs`.
#![allow(clippy::unwrap_used)] // tests may panic on failure

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use hookspool_postgres::testing::TestServer;
use support::{free_port, json_lines, pg_schema as schema};

// ---- no database at start -----------------------------------------------------------------

/// Waits for `child` to exit (at most 60 s: it must not hang); returns its output.
fn finish(mut child: Child, what: &str) -> Output {
    let deadline = Instant::now() + Duration::from_mins(1);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what} did not exit; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// The binary with a clean `HOOKSPOOL_*` environment (and no `DATABASE_URL`).
fn hookspool() -> std::process::Command {
    let mut cmd = support::hookspool();
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("HOOKSPOOL_") {
            cmd.env_remove(name);
        }
    }
    cmd.env_remove("DATABASE_URL");
    cmd
}

/// `serve` and a queue command on a database nobody listens for: both exit non-zero at
/// once, naming the host and port they tried.
#[test]
fn unreachable_database_fails_at_start() {
    let port = free_port();
    let url = format!("postgresql://postgres@127.0.0.1:{port}/postgres");
    let target = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();

    let child = hookspool()
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &url])
        .args(["--node-id", "nowhere"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = finish(child, "serve");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success(), "serve: {stdout} {stderr}");
    assert!(!stdout.contains("listening on"), "{stdout}");
    assert!(stderr.contains(&target), "serve names {target}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    println!("serve: exit {:?}: {}", out.status.code(), stderr.trim());

    let child = hookspool()
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--database-url", &url, "queues"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = finish(child, "queues");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "queues: {stderr}");
    assert!(stderr.contains(&target), "queues names {target}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    println!("queues: exit {:?}: {}", out.status.code(), stderr.trim());
    assert!(!dir.path().join("data").exists(), "no data dir is made");
}

// ---- the CLI on a database -----------------------------------------------------------------

/// Runs `hookspool --database-url URL --database-schema SCHEMA ARGS…` with `stdin` piped in.
fn cli(db: &(String, String), args: &[&str], stdin: &[u8]) -> Output {
    let mut child = cli_spawn(db, args);
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    finish(child, &format!("{args:?}"))
}

/// Starts the command with stdin, stdout and stderr piped.
fn cli_spawn(db: &(String, String), args: &[&str]) -> Child {
    hookspool()
        .args(["--database-url", &db.0, "--database-schema", &db.1])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The output of a command that must succeed.
fn ok(db: &(String, String), args: &[&str]) -> String {
    checked(cli(db, args, b""), args)
}

fn checked(o: Output, args: &[&str]) -> String {
    assert!(
        o.status.success(),
        "{args:?} failed ({:?}): {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// `queue create`, `push`, `count`, `fetch`, `dump`, `reset`, `delete` and `queue delete`
/// with `--database-url`; then processes at once on the same database, none locked out.
#[test]
#[allow(clippy::too_many_lines)] // one story, step by step: splitting it would hide the order
fn cli_queue_commands_on_the_database() {
    let db = (TestServer::shared().url().to_owned(), schema("cli"));
    assert_eq!(
        ok(&db, &["queue", "create", "orders"]),
        "created queue `orders`\n"
    );
    let first = ok(
        &db,
        &[
            "push",
            "orders",
            "--data",
            r#"{"id":1}"#,
            "--meta",
            "event=order.paid",
        ],
    );
    let o = cli(&db, &["push", "orders"], b"plain text from stdin");
    let second = checked(o, &["push", "orders"]);
    let keys: Vec<u64> = [&first, &second]
        .iter()
        .map(|s| s.trim().parse().unwrap())
        .collect();
    assert!(keys[0] < keys[1], "{keys:?}");
    assert_eq!(ok(&db, &["count", "orders"]), "2\n");
    assert_eq!(ok(&db, &["count", "orders", "--phase", "pending"]), "2\n");
    assert_eq!(ok(&db, &["count", "orders", "--phase", "done"]), "0\n");

    let items = json_lines(&ok(&db, &["fetch", "orders", "--json"]));
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["key"], keys[0]);
    assert_eq!(items[0]["phase"], "pending");
    assert_eq!(items[0]["payload"]["id"], 1);
    assert_eq!(items[0]["metadata"]["event"], "order.paid");
    assert_eq!(items[1]["key"], keys[1]);
    assert_eq!(items[1]["payload"], "plain text from stdin");
    let table = ok(&db, &["fetch", "orders"]);
    assert_eq!(table.lines().count(), 3, "{table}");
    assert!(
        table.lines().nth(1).unwrap().ends_with(r#"{"id":1}"#),
        "{table}"
    );
    let dump = json_lines(&ok(&db, &["dump", "orders"]));
    assert_eq!(dump, items, "dump writes the same objects as fetch --json");
    let queues: serde_json::Value = serde_json::from_str(&ok(&db, &["queues", "--json"])).unwrap();
    let orders = queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["id"] == "orders")
        .unwrap_or_else(|| panic!("{queues}"));
    assert_eq!(orders["items"], 2);

    // reset asks first, and nobody can answer on a pipe.
    let o = cli(&db, &["reset", "orders"], b"y\n");
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--yes"));
    assert_eq!(ok(&db, &["count", "orders"]), "2\n", "nothing removed");
    assert_eq!(
        ok(&db, &["reset", "orders", "--yes"]),
        "removed 2 items from queue `orders`\n"
    );
    assert_eq!(ok(&db, &["count", "orders"]), "0\n");

    let third: u64 = ok(&db, &["push", "orders", "--data", "c"])
        .trim()
        .parse()
        .unwrap();
    assert!(
        third > keys[1],
        "keys are not reused after a reset: {third}"
    );
    ok(&db, &["push", "orders", "--data", "d"]);
    assert_eq!(
        ok(&db, &["delete", "orders", &third.to_string()]),
        format!("deleted item {third} of queue `orders`\n")
    );
    let o = cli(&db, &["delete", "orders", &third.to_string()], b"");
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        format!("error: queue `orders` has no item with key {third}\n")
    );
    assert_eq!(ok(&db, &["count", "orders"]), "1\n");
    ok(&db, &["queue", "delete", "orders", "--yes"]);
    let o = cli(&db, &["count", "orders"], b"");
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "error: queue `orders` does not exist\n"
    );

    // No lock: one process waits on its stdin (its database open) while two more run to the
    // end, started together; then the first one gets its payload.
    ok(&db, &["queue", "create", "shared"]);
    let mut waiting = cli_spawn(&db, &["push", "shared"]);
    let others: Vec<Child> = ["b", "c"]
        .iter()
        .map(|data| cli_spawn(&db, &["push", "shared", "--data", data]))
        .collect();
    let mut keys = BTreeSet::new();
    for child in others {
        let out = checked(finish(child, "push"), &["push", "shared"]);
        keys.insert(out.trim().parse::<u64>().unwrap());
    }
    waiting.stdin.take().unwrap().write_all(b"a").unwrap();
    let out = checked(finish(waiting, "push"), &["push", "shared"]);
    keys.insert(out.trim().parse::<u64>().unwrap());
    assert_eq!(keys.len(), 3, "three keys: {keys:?}");
    assert_eq!(ok(&db, &["count", "shared"]), "3\n");
    let payloads: BTreeSet<String> = json_lines(&ok(&db, &["dump", "shared"]))
        .iter()
        .map(|v| v["payload"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(payloads, BTreeSet::from(["a", "b", "c"].map(String::from)));
}
