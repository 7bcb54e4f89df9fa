//! Runs the real `hookspool` binary on a temporary data directory: what people and scripts
//! see (stdout, stderr, exit codes), data surviving from one process to the next, and the
//! data-directory lock.

#![allow(clippy::unwrap_used)] // tests may panic on failure

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use support::json_lines;

const BIN: &str = env!("CARGO_BIN_EXE_hookspool");

/// Runs the binary on `dir` with `args`, feeding `stdin` through a pipe (so stdin is never a
/// terminal here).
fn run(dir: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("HOOKSPOOL_DATA_DIR")
        .env_remove("HOOKSPOOL_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hookspool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin)
        .expect("write stdin");
    child.wait_with_output().expect("wait for hookspool")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// Runs a command that must succeed; returns its stdout.
fn ok(dir: &Path, args: &[&str]) -> String {
    let o = run(dir, args, b"");
    assert!(
        o.status.success(),
        "{args:?} failed ({:?}): {}",
        o.status.code(),
        stderr(&o)
    );
    stdout(&o)
}

/// Runs a command that must fail with `code`; returns its stderr.
fn fails(dir: &Path, args: &[&str], code: i32) -> String {
    let o = run(dir, args, b"");
    assert_eq!(
        o.status.code(),
        Some(code),
        "{args:?}: stdout {} stderr {}",
        stdout(&o),
        stderr(&o)
    );
    stderr(&o)
}

fn data_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    (tmp, dir)
}

/// A channel secret that is not a Standard Webhooks one is refused offline too (every
/// callback into the queue would be refused), naming what is wrong; nothing is created.
#[test]
fn a_queue_secret_that_is_not_whsec_is_refused() {
    let (_tmp, dir) = data_dir();
    for bad in ["whsec_x", "not base64!"] {
        let err = fails(&dir, &["queue", "create", "orders", "--secret", bad], 1);
        assert!(err.contains("Standard Webhooks secret"), "{bad}: {err}");
        assert!(!err.contains(bad), "the secret is echoed: {err}");
    }
    ok(&dir, &["queue", "create", "orders"]);
    let err = fails(
        &dir,
        &["queue", "update", "orders", "--secret", "whsec_x"],
        1,
    );
    assert!(err.contains("Standard Webhooks secret"), "{err}");
}

#[test]
fn create_push_count_fetch_and_dump_across_processes() {
    let (_tmp, dir) = data_dir();
    assert_eq!(
        ok(
            &dir,
            &[
                "queue",
                "create",
                "orders",
                "--ttl",
                "1d",
                "--secret",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
            ]
        ),
        "created queue `orders`\n"
    );
    assert_eq!(
        ok(
            &dir,
            &[
                "push",
                "orders",
                "--data",
                r#"{"id":1}"#,
                "--meta",
                "event=order.paid"
            ]
        ),
        "1\n"
    );
    let o = run(&dir, &["push", "orders"], b"plain text from stdin");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "2\n");
    let o = run(&dir, &["push", "orders"], &[0xff, 0xfe, 0x00]);
    assert_eq!(stdout(&o), "3\n");

    assert_eq!(ok(&dir, &["count", "orders"]), "3\n");
    assert_eq!(ok(&dir, &["count", "orders", "--phase", "pending"]), "3\n");
    assert_eq!(ok(&dir, &["count", "orders", "--phase", "done"]), "0\n");

    let table = ok(&dir, &["fetch", "orders"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[0].starts_with("KEY  PHASE    ATTEMPTS"), "{table}");
    assert!(lines[1].starts_with("1    pending  0") && lines[1].ends_with(r#"{"id":1}"#));
    assert!(lines[2].ends_with("plain text from stdin"), "{table}");
    assert!(lines[3].ends_with("<3 bytes, binary>"), "{table}");

    let items = json_lines(&ok(&dir, &["fetch", "orders", "--json"]));
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["key"], 1);
    assert_eq!(items[0]["phase"], "pending");
    assert_eq!(items[0]["attempts"], 0);
    assert_eq!(items[0]["payload"]["id"], 1);
    assert_eq!(items[0]["metadata"]["event"], "order.paid");
    assert!(items[0]["lease"].is_null());
    assert!(items[0]["last_error"].is_null());
    assert!(items[0]["created_at"].as_u64().unwrap() > 1_600_000_000_000);
    assert_eq!(items[0]["created_at"], items[0]["updated_at"]);
    assert_eq!(items[1]["payload"], "plain text from stdin");
    assert_eq!(items[2]["payload_base64"], "//4A");

    let reversed = json_lines(&ok(
        &dir,
        &["fetch", "orders", "--json", "--reverse", "--limit", "1"],
    ));
    assert_eq!(reversed.len(), 1);
    assert_eq!(reversed[0]["key"], 3);

    let dump = json_lines(&ok(&dir, &["dump", "orders"]));
    assert_eq!(dump, items, "dump writes the same objects as fetch --json");

    let show = ok(&dir, &["queue", "show", "orders"]);
    assert!(show.contains("items      3"), "{show}");
    assert!(
        show.contains("secret     ****") && !show.contains("whsec_x"),
        "{show}"
    );
    let queues: serde_json::Value = serde_json::from_str(&ok(&dir, &["queues", "--json"])).unwrap();
    assert_eq!(queues[0]["id"], "orders");
    assert_eq!(queues[0]["items"], 3);
    assert_eq!(queues[0]["ttl_ms"], 86_400_000);
}

#[test]
fn set_phase_compare_and_set_conflict_fails_clearly() {
    let (_tmp, dir) = data_dir();
    ok(&dir, &["queue", "create", "q"]);
    ok(&dir, &["push", "q", "--data", "x"]);
    assert_eq!(
        ok(
            &dir,
            &["set-phase", "q", "1", "review", "--if-phase", "pending"]
        ),
        "item 1 of queue `q` is now in phase `review`\n"
    );
    let err = fails(
        &dir,
        &["set-phase", "q", "1", "done", "--if-phase", "pending"],
        1,
    );
    assert_eq!(err, "error: item 1 is in phase `review`, not `pending`\n");
    assert_eq!(ok(&dir, &["count", "q", "--phase", "review"]), "1\n");

    ok(&dir, &["set-phase", "q", "1", "dead"]);
    ok(&dir, &["replay", "q", "1"]);
    assert_eq!(ok(&dir, &["count", "q", "--phase", "pending"]), "1\n");
}

#[test]
fn reset_refuses_without_yes_when_stdin_is_not_a_terminal() {
    let (_tmp, dir) = data_dir();
    ok(&dir, &["queue", "create", "q"]);
    ok(&dir, &["push", "q", "--data", "a"]);
    ok(&dir, &["push", "q", "--data", "b"]);
    // Even a "y" on piped stdin is not a confirmation.
    let o = run(&dir, &["reset", "q"], b"y\n");
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.starts_with("error: not resetting queue `q`"), "{err}");
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(ok(&dir, &["count", "q"]), "2\n", "nothing was lost");

    assert_eq!(
        ok(&dir, &["reset", "q", "--yes"]),
        "removed 2 items from queue `q`\n"
    );
    assert_eq!(ok(&dir, &["count", "q"]), "0\n");
    // Keys are not reused after a reset.
    assert_eq!(ok(&dir, &["push", "q", "--data", "c"]), "3\n");
}

#[test]
fn delete_an_item_and_a_queue() {
    let (_tmp, dir) = data_dir();
    ok(&dir, &["queue", "create", "q"]);
    ok(&dir, &["push", "q", "--data", "a"]);
    ok(&dir, &["push", "q", "--data", "b"]);
    assert_eq!(
        ok(&dir, &["delete", "q", "1"]),
        "deleted item 1 of queue `q`\n"
    );
    let err = fails(&dir, &["delete", "q", "1"], 1);
    assert_eq!(err, "error: queue `q` has no item with key 1\n");
    let keys: Vec<u64> = json_lines(&ok(&dir, &["fetch", "q", "--json"]))
        .iter()
        .map(|v| v["key"].as_u64().unwrap())
        .collect();
    assert_eq!(keys, [2]);

    let err = fails(&dir, &["queue", "delete", "q"], 1);
    assert!(err.contains("--yes"), "{err}");
    ok(&dir, &["queue", "delete", "q", "--yes"]);
    let err = fails(&dir, &["count", "q"], 1);
    assert_eq!(err, "error: queue `q` does not exist\n");
}

#[test]
fn bad_input_fails_with_a_message_and_never_panics() {
    let (_tmp, dir) = data_dir();
    ok(&dir, &["queue", "create", "q"]);
    let err = fails(&dir, &["count", "a/b"], 1);
    assert!(err.starts_with("error: invalid queue id \"a/b\""), "{err}");
    let err = fails(&dir, &["fetch", "q", "--phase", "NotAPhase"], 1);
    assert!(err.starts_with("error: invalid phase name"), "{err}");
    let err = fails(&dir, &["count", "missing"], 1);
    assert_eq!(err, "error: queue `missing` does not exist\n");
    // Usage errors are clap's: exit code 2.
    fails(&dir, &["delete", "q", "abc"], 2);
    fails(&dir, &["push", "q", "--delay", "soon"], 2);
    fails(&dir, &["frobnicate"], 2);
    for o in [
        run(&dir, &["delete", "q", "abc"], b""),
        run(&dir, &["count", "\u{7f}"], b""),
    ] {
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    }
}

#[test]
fn read_commands_do_not_create_a_missing_data_dir() {
    let (_tmp, dir) = data_dir();
    for args in [
        &["queues"][..],
        &["count", "q"],
        &["dump", "q"],
        &["fetch", "q"],
    ] {
        let err = fails(&dir, args, 1);
        assert!(err.contains(&dir.display().to_string()), "{err}");
        assert!(err.contains("does not exist"), "{err}");
    }
    assert!(!dir.exists());
}

#[test]
fn a_data_dir_in_use_is_reported_with_its_own_exit_code() {
    let (_tmp, dir) = data_dir();
    ok(&dir, &["queue", "create", "q"]);
    let held =
        hookspool_journal::JournalBackend::open(&dir).expect("open the data dir in the test");
    let err = fails(&dir, &["count", "q"], 3);
    assert!(err.starts_with("error: data directory "), "{err}");
    assert!(err.contains(&dir.display().to_string()), "{err}");
    assert!(err.contains("in use by another hookspool process"), "{err}");
    drop(held);
    assert_eq!(
        ok(&dir, &["count", "q"]),
        "0\n",
        "usable again once released"
    );
}

#[test]
fn every_command_has_help_with_an_example() {
    let (_tmp, dir) = data_dir();
    let commands: &[&[&str]] = &[
        &["queues"],
        &["queue", "create"],
        &["queue", "show"],
        &["queue", "update"],
        &["queue", "delete"],
        &["count"],
        &["fetch"],
        &["dump"],
        &["reset"],
        &["push"],
        &["delete"],
        &["set-phase"],
        &["replay"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.push("--help");
        let help = ok(&dir, &args);
        assert!(help.contains("Example:"), "{command:?}: {help}");
    }
    let top = ok(&dir, &["--help"]);
    assert!(
        top.contains("Examples:")
            && top.contains("Exit codes:")
            && top.contains("3  the data directory"),
        "{top}"
    );
    assert!(!dir.exists(), "--help touches nothing");
}

#[test]
fn dump_streams_a_large_queue_and_stops_quietly_when_the_reader_leaves() {
    use std::io::{BufRead, BufReader};

    let (_tmp, dir) = data_dir();
    ok(&dir, &["queue", "create", "big"]);
    let total = 12_000;
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = hookspool::Store::new(hookspool_journal::JournalBackend::open(&dir).unwrap());
        let queue = hookspool::QueueId::new("big").unwrap();
        runtime.block_on(async {
            for chunk in (0..total).collect::<Vec<u32>>().chunks(5_000) {
                let items = chunk
                    .iter()
                    .map(|i| hookspool::NewItem::new(format!("{{\"n\":{i}}}")))
                    .collect();
                store.push_batch(&queue, items).await.unwrap();
            }
        });
    }

    let dump = ok(&dir, &["dump", "big"]);
    let lines = json_lines(&dump);
    assert_eq!(lines.len(), total as usize);
    assert_eq!(lines[0]["payload"]["n"], 0);
    assert_eq!(lines[total as usize - 1]["key"], u64::from(total));
    assert_eq!(lines[total as usize - 1]["payload"]["n"], total - 1);

    // `hookspool dump big | head -1`: the reader closes the pipe after one line.
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(&dir)
        .args(["dump", "big"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with(r#"{"key":1,"#), "{first}");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "", "no error message for a closed pipe");
}

#[test]
fn hookspools_own_queues_refuse_writes() {
    let (_tmp, dir) = data_dir();
    ok(&dir, &["queue", "create", "q"]);
    let writes: [&[&str]; 7] = [
        &["queue", "create", "hookspool.mine"],
        &["queue", "update", "hookspool.deliveries", "--ttl", "1h"],
        &["queue", "delete", "hookspool.deliveries", "--yes"],
        &["push", "hookspool.subscriptions", "--data", "{}"],
        &["delete", "hookspool.deliveries", "1"],
        &["set-phase", "hookspool.deliveries", "1", "done"],
        &["reset", "hookspool.deliveries", "--yes"],
    ];
    for args in writes {
        let err = fails(&dir, args, 1);
        assert!(
            err.contains("is one of hookspool's own queues"),
            "{args:?}: {err}"
        );
    }
    // Nothing was created, and reads are not refused (here: the queue does not exist).
    let err = fails(&dir, &["count", "hookspool.mine"], 1);
    assert_eq!(err, "error: queue `hookspool.mine` does not exist\n");
    let listed = ok(&dir, &["queues", "--json"]);
    assert!(!listed.contains("hookspool.mine"), "{listed}");
}

#[test]
fn queue_retention_is_set_shown_and_checked() {
    let (_tmp, dir) = data_dir();
    ok(&dir, &["queue", "create", "q", "--retain-done", "3d"]);
    let shown = ok(&dir, &["queue", "show", "q"]);
    assert!(
        shown.contains("retain     done 3d, dead forever, expired forever"),
        "{shown}"
    );
    ok(&dir, &["queue", "update", "q", "--retain-dead", "30d"]);
    let json: serde_json::Value =
        serde_json::from_str(&ok(&dir, &["queue", "show", "q", "--json"])).unwrap();
    assert_eq!(
        json["retain"],
        serde_json::json!({"done_ms": 259_200_000_u64, "dead_ms": 2_592_000_000_u64, "expired_ms": null}),
        "a period not given to `update` keeps its value"
    );
    ok(&dir, &["queue", "update", "q", "--retain-done", "forever"]);
    let shown = ok(&dir, &["queue", "show", "q"]);
    assert!(shown.contains("done forever, dead 30d"), "{shown}");
    for (value, reason) in [
        ("500ms", "less than 1s"),
        ("-1d", "negative"),
        ("soon", "expected a number"),
    ] {
        let err = fails(&dir, &["queue", "update", "q", "--retain-dead", value], 2);
        assert!(
            err.contains("--retain-dead") && err.contains(reason),
            "{value}: {err}"
        );
    }
}
