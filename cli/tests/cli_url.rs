//! The queue commands with `--url` against the real daemon binary: the same commands and
//! output as offline, through HTTP, while the daemon holds the data directory; a wrong token
//! and a dead address fail with a message; the daemon then stops cleanly on SIGTERM and the
//! offline commands read back exactly what the daemon showed.
#![allow(clippy::unwrap_used)] // tests may panic on failure

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use support::json_lines;

const BIN: &str = env!("CARGO_BIN_EXE_hookspool");
const TOKEN: &str = "cli-url-token-0123456789";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Starts the daemon with the test's token.
fn start(dir: &Path) -> (std::process::Child, String) {
    support::start(dir, &["--token", TOKEN])
}

/// Runs the binary with `args` (stdin piped, so never a terminal) and a clean environment.
fn run(args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("HOOKSPOOL_URL")
        .env_remove("HOOKSPOOL_TOKEN")
        .env_remove("HOOKSPOOL_DATA_DIR")
        .env_remove("HOOKSPOOL_LOG")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Runs a command that must succeed; returns its stdout.
fn ok(args: &[&str]) -> String {
    let o = run(args, b"", &[]);
    assert!(
        o.status.success(),
        "{args:?} failed ({:?}): {}",
        o.status.code(),
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// Runs a command that must fail with `code`; returns its stderr.
fn fails(args: &[&str], code: i32) -> String {
    let o = run(args, b"", &[]);
    assert_eq!(
        o.status.code(),
        Some(code),
        "{args:?}: stdout {} stderr {}",
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stderr)
}

#[test]
#[allow(clippy::too_many_lines)] // one story, step by step: splitting it would hide the order
fn queue_commands_run_against_the_daemon_and_agree_with_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (mut daemon, addr) = start(&dir);
    let url = format!("http://{addr}");
    let on = |args: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec!["--url".into(), url.clone(), "--token".into(), TOKEN.into()];
        v.extend(args.iter().map(|a| (*a).to_owned()));
        v
    };
    let r = |args: &[&str]| ok(&on(args).iter().map(String::as_str).collect::<Vec<_>>());

    assert_eq!(
        r(&[
            "queue",
            "create",
            "orders",
            "--ttl",
            "1d",
            "--meta",
            "team=billing"
        ]),
        "created queue `orders`\n"
    );
    assert_eq!(r(&["push", "orders", "--data", r#"{"id":1}"#]), "1\n");
    // Flags after the command work too, and stdin carries binary payloads exactly.
    let o = run(
        &[
            "push", "orders", "--url", &url, "--token", TOKEN, "--meta", "k=v",
        ],
        &[0xff, 0x00, 0x80],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "2\n");
    assert_eq!(r(&["push", "orders", "--data", "plain text"]), "3\n");
    assert_eq!(r(&["count", "orders"]), "3\n");

    let lines = json_lines(&r(&["fetch", "orders", "--json"]));
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["payload"], serde_json::json!({"id": 1}));
    assert_eq!(lines[1]["payload_base64"], "/wCA");
    assert_eq!(lines[1]["metadata"]["k"], "v");
    assert_eq!(lines[2]["payload"], "plain text");

    assert_eq!(
        r(&["set-phase", "orders", "1", "dead"]),
        "item 1 of queue `orders` is now in phase `dead`\n"
    );
    assert_eq!(r(&["count", "orders", "--phase", "dead"]), "1\n");
    assert_eq!(
        r(&["replay", "orders", "1"]),
        "item 1 of queue `orders` was replayed to phase `pending`\n"
    );
    let dump = r(&["dump", "orders"]);
    assert_eq!(json_lines(&dump).len(), 3);
    assert_eq!(
        r(&["delete", "orders", "3"]),
        "deleted item 3 of queue `orders`\n"
    );
    let err = fails(
        &on(&["delete", "orders", "3"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        1,
    );
    assert_eq!(err, "error: queue `orders` has no item with key 3\n");
    assert_eq!(
        r(&["set-phase", "orders", "2", "dead", "--if-phase", "pending"]),
        "item 2 of queue `orders` is now in phase `dead`\n"
    );
    assert_eq!(
        r(&["replay", "orders", "--all"]),
        "replayed 1 dead item of queue `orders` to pending\n"
    );
    // Settings change through the daemon as offline: the secret is set, shown masked.
    let shown = r(&[
        "queue",
        "update",
        "orders",
        "--no-ttl",
        "--remove-meta",
        "team",
        "--meta",
        "owner=ops",
        "--secret",
        SECRET,
    ]);
    for line in [
        "ttl        -\n",
        "secret     ****\n",
        "metadata   owner=ops\n",
    ] {
        assert!(shown.contains(line), "{line:?} in {shown}");
    }
    assert!(!shown.contains("MfKQ9r8"), "{shown}");

    // What the daemon shows now, to compare with the offline commands after it stops.
    let reads: Vec<Vec<&str>> = vec![
        vec!["queues"],
        vec!["queues", "--json"],
        vec!["queue", "show", "orders"],
        vec!["queue", "show", "orders", "--json"],
        vec!["count", "orders", "--json"],
        vec!["fetch", "orders"],
        vec!["fetch", "orders", "--json"],
        vec!["fetch", "orders", "--key", "2", "--json"],
        vec!["dump", "orders"],
    ];
    let online: Vec<String> = reads.iter().map(|a| r(a)).collect();

    // The token from the environment works as well as the flag.
    let o = run(
        &["--url", &url, "count", "orders"],
        b"",
        &[("HOOKSPOOL_TOKEN", TOKEN)],
    );
    assert_eq!(text(&o.stdout), "2\n", "{}", text(&o.stderr));

    // A wrong token, and none: refused, with a message naming the daemon and the fix.
    for args in [
        vec![
            "--url",
            url.as_str(),
            "--token",
            "wrong-token-0123456789",
            "queues",
        ],
        vec!["--url", url.as_str(), "queues"],
    ] {
        let err = fails(&args, 1);
        assert!(err.contains("refused the request"), "{err}");
        assert!(err.contains(&addr) && err.contains("--token"), "{err}");
        assert!(!err.contains("wrong-token"), "{err}");
    }
    // While the daemon runs, the offline tool cannot open the directory, and says so.
    let err = fails(&["--data-dir", dir.to_str().unwrap(), "queues"], 3);
    assert!(err.contains("in use"), "{err}");
    // `serve` does not take --url.
    let err = fails(&["--url", &url, "serve"], 2);
    assert!(err.contains("drop --url"), "{err}");

    // reset asks first; --yes confirms.
    let err = fails(
        &on(&["reset", "orders"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        1,
    );
    assert!(err.contains("pass --yes"), "{err}");

    // SIGTERM: the daemon stops cleanly.
    let status = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = daemon.wait().unwrap();
    assert!(exit.success(), "daemon exit {exit:?}");

    // Offline, the same reads print the same bytes.
    let d = dir.to_str().unwrap();
    for (args, online) in reads.iter().zip(&online) {
        let mut offline_args = vec!["--data-dir", d];
        offline_args.extend(args);
        assert_eq!(&ok(&offline_args), online, "{args:?}");
    }

    // And now no daemon answers there: exit code 4 with the URL in the message.
    let err = fails(
        &on(&["count", "orders"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        4,
    );
    assert!(err.contains(&addr) && err.contains("no answer"), "{err}");
}

#[test]
fn reset_with_yes_and_queue_delete_through_the_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (mut daemon, addr) = start(&dir);
    let url = format!("http://{addr}/");
    let base = ["--url", url.as_str(), "--token", TOKEN];
    let r = |args: &[&str]| ok(&[&base[..], args].concat());
    r(&["queue", "create", "jobs"]);
    for i in 0..3 {
        r(&["push", "jobs", "--data", &format!("job {i}")]);
    }
    assert_eq!(
        r(&["reset", "jobs", "--yes"]),
        "removed 3 items from queue `jobs`\n"
    );
    assert_eq!(r(&["count", "jobs"]), "0\n");
    assert_eq!(
        r(&["queue", "delete", "jobs", "--yes", "--json"]),
        "{\"deleted\":true,\"items\":0,\"queue\":\"jobs\"}\n"
    );
    let err = fails(&[&base[..], &["queue", "show", "jobs"]].concat(), 1);
    assert_eq!(err, "error: queue `jobs` does not exist\n");

    Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(daemon.wait().unwrap().success());
}
