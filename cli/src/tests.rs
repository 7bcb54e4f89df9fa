//! Command tests over the memory backend: every command's output and failure, without a
//! process or a data directory (the binary's own tests in `tests/cli.rs` cover those).

use std::path::Path;

use clap::Parser;
use hookspool::{Limits, MemoryBackend, NewItem, Phase, QueueId, Store};
use hookspool_webhooks::channel_secret;

use super::*;

/// What one command printed and returned.
struct Outcome {
    out: String,
    err: String,
    result: Result<(), CliError>,
}

impl Outcome {
    fn ok(self) -> String {
        if let Err(e) = &self.result {
            panic!("command failed: {e}; stderr: {}", self.err);
        }
        self.out
    }

    fn failure(self) -> CliError {
        match self.result {
            Ok(()) => panic!("command succeeded; stdout: {}", self.out),
            Err(e) => e,
        }
    }
}

struct Console {
    stdin: Vec<u8>,
    stdin_is_terminal: bool,
    stderr_is_terminal: bool,
}

const PIPE: Console = Console {
    stdin: Vec::new(),
    stdin_is_terminal: false,
    stderr_is_terminal: false,
};

fn tty(answer: &str) -> Console {
    Console {
        stdin: answer.as_bytes().to_vec(),
        stdin_is_terminal: true,
        stderr_is_terminal: true,
    }
}

fn piped(stdin: &[u8]) -> Console {
    Console {
        stdin: stdin.to_vec(),
        ..PIPE
    }
}

impl Console {
    /// The streams of one command: this stdin, and buffers for what it prints.
    fn streams(self) -> Streams {
        Streams {
            stdin: std::io::Cursor::new(self.stdin),
            out: Vec::new(),
            err: Vec::new(),
            stdin_is_terminal: self.stdin_is_terminal,
            stderr_is_terminal: self.stderr_is_terminal,
        }
    }
}

struct Streams {
    stdin: std::io::Cursor<Vec<u8>>,
    out: Vec<u8>,
    err: Vec<u8>,
    stdin_is_terminal: bool,
    stderr_is_terminal: bool,
}

impl Streams {
    fn io(&mut self) -> Io<'_> {
        Io {
            stdout: &mut self.out,
            stderr: &mut self.err,
            stdin: &mut self.stdin,
            stdin_is_terminal: self.stdin_is_terminal,
            stderr_is_terminal: self.stderr_is_terminal,
        }
    }

    fn outcome(self, result: Result<(), CliError>) -> Outcome {
        Outcome {
            out: String::from_utf8(self.out).unwrap(),
            err: String::from_utf8(self.err).unwrap(),
            result,
        }
    }
}

/// Runs `args` through [`run`] over `admin`: a store, or a client of a daemon.
async fn cmd<A: Admin>(admin: &A, args: &str, console: Console) -> Outcome {
    let cli = parse(args);
    let mut streams = console.streams();
    let result = run(admin, cli.command, cli.json, &mut streams.io()).await;
    streams.outcome(result)
}

async fn store_with_queue() -> Store<MemoryBackend> {
    let store = Store::new(MemoryBackend::new());
    cmd(&store, "queue create q", PIPE).await.ok();
    store
}

fn q() -> QueueId {
    QueueId::new("q").unwrap()
}

fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

#[tokio::test]
async fn create_and_show_a_queue_with_masked_secret() {
    let store = Store::new(MemoryBackend::new());
    let out = cmd(
        &store,
        "queue create orders --ttl 15m --secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw --retention remove --meta team=billing",
        PIPE,
    )
    .await
    .ok();
    assert_eq!(out, "created queue `orders`\n");
    let out = cmd(&store, "queue show orders", PIPE).await.ok();
    assert!(out.contains("ttl        15m"), "{out}");
    assert!(out.contains("retention  remove"), "{out}");
    assert!(out.contains("secret     ****"), "{out}");
    assert!(out.contains("metadata   team=billing\n"), "{out}");
    assert!(out.contains("items      0"), "{out}");
    assert!(!out.contains("hush"), "{out}");
    let v: serde_json::Value =
        serde_json::from_str(&cmd(&store, "queue show orders --json", PIPE).await.ok()).unwrap();
    assert_eq!(v["ttl_ms"], 900_000);
    assert_eq!(v["has_secret"], true);
    assert!(!v.to_string().contains("hush"));
    let stored = store
        .queue(&QueueId::new("orders").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        channel_secret(&stored).unwrap().expose(),
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    );

    let e = cmd(&store, "queue create orders", PIPE).await.failure();
    assert!(
        matches!(e, CliError::Store(hookspool::Error::QueueExists(_))),
        "{e}"
    );
}

#[tokio::test]
async fn update_changes_only_what_is_given() {
    let store = Store::new(MemoryBackend::new());
    cmd(
        &store,
        "queue create q --ttl 1h --secret whsec_YW5vdGhlci1zZWNyZXQta2V5LW9mLTMyLWJ5dGVzISE= --meta a=1 --meta b=2",
        PIPE,
    )
    .await
    .ok();
    cmd(
        &store,
        "queue update q --no-ttl --remove-meta a --meta c=3",
        PIPE,
    )
    .await
    .ok();
    let config = store.queue(&q()).await.unwrap().unwrap();
    assert_eq!(config.ttl, None);
    assert_eq!(
        channel_secret(&config).unwrap().expose(),
        "whsec_YW5vdGhlci1zZWNyZXQta2V5LW9mLTMyLWJ5dGVzISE="
    );
    let shown = cmd(&store, "queue show q", PIPE).await.ok();
    assert!(shown.contains("metadata   b=2, c=3\n"), "{shown}");
    cmd(&store, "queue update q --no-secret", PIPE).await.ok();
    let config = store.queue(&q()).await.unwrap().unwrap();
    assert_eq!(channel_secret(&config), None);
    assert_eq!(config.metadata.len(), 2, "{:?}", config.metadata);
}

/// The channel secret is the queue's `secret` metadata entry: `--meta` cannot write it
/// behind `--secret`'s back, and an empty secret is refused (it would refuse every callback).
#[tokio::test]
async fn the_secret_entry_is_set_only_through_secret_flags() {
    let store = store_with_queue().await;
    for args in [
        "queue create x --meta secret=abc",
        "queue update q --meta secret=abc",
        "queue update q --remove-meta secret",
        "queue create x --secret=",
        "queue update q --secret=",
    ] {
        let e = cmd(&store, args, PIPE).await.failure();
        assert!(matches!(e, CliError::Input(_)), "{args}: {e:?}");
        assert!(e.to_string().contains("secret"), "{args}: {e}");
    }
    assert!(
        store
            .queue(&QueueId::new("x").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    let config = store.queue(&q()).await.unwrap().unwrap();
    assert_eq!(channel_secret(&config), None);
}

#[tokio::test]
async fn queues_lists_every_queue_with_counts() {
    let store = Store::new(MemoryBackend::new());
    assert_eq!(cmd(&store, "queues", PIPE).await.ok(), "no queues\n");
    assert_eq!(cmd(&store, "queues --json", PIPE).await.ok(), "[]\n");
    cmd(&store, "queue create a --ttl 2h", PIPE).await.ok();
    cmd(&store, "queue create b", PIPE).await.ok();
    cmd(&store, "push b --data x", PIPE).await.ok();
    let out = cmd(&store, "queues", PIPE).await.ok();
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("ID  ITEMS  CREATED (UTC)"), "{out}");
    assert!(
        lines[1].starts_with("a   0") && lines[1].contains("2h"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("b   1") && lines[2].ends_with("keep"),
        "{out}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&cmd(&store, "queues --json", PIPE).await.ok()).unwrap();
    assert_eq!(v[0]["id"], "a");
    assert_eq!(v[1]["items"], 1);
}

#[tokio::test]
async fn push_from_data_and_stdin_prints_keys() {
    let store = store_with_queue().await;
    assert_eq!(
        cmd(&store, "push q --data hello --meta event=x", PIPE)
            .await
            .ok(),
        "1\n"
    );
    let binary = [0u8, 159, 146, 150];
    assert_eq!(cmd(&store, "push q", piped(&binary)).await.ok(), "2\n");
    let out = cmd(&store, "push q --json", piped(b"{\"a\":1}")).await.ok();
    assert_eq!(out, "{\"key\":3,\"queue\":\"q\"}\n");
    let one = store.fetch_key(&q(), 1).await.unwrap().unwrap();
    assert_eq!(one.payload, b"hello");
    assert_eq!(one.metadata["event"], "x");
    let two = store.fetch_key(&q(), 2).await.unwrap().unwrap();
    assert_eq!(two.payload, binary);
}

#[tokio::test]
async fn push_with_delay_sets_not_before() {
    let store = store_with_queue().await;
    cmd(&store, "push q --data x --delay 1h", PIPE).await.ok();
    let item = store.fetch_key(&q(), 1).await.unwrap().unwrap();
    let ahead = item.not_before.as_millis() - item.created_at.as_millis();
    assert!((3_599_000..=3_600_000).contains(&ahead), "{ahead}");
    let out = cmd(&store, "fetch q", PIPE).await.ok();
    let row = out.lines().nth(1).unwrap();
    assert!(!row.contains(" - "), "not-before is shown as a time: {row}");
}

#[tokio::test]
async fn push_refuses_oversized_stdin_and_unknown_queue() {
    let store = store_with_queue().await.with_limits(Limits {
        max_payload: 8,
        ..Limits::default()
    });
    let e = cmd(&store, "push q", piped(&[b'x'; 100])).await.failure();
    assert!(e.to_string().contains("over the limit of 8 bytes"), "{e}");
    let e = cmd(&store, "push q --data 123456789", PIPE).await.failure();
    assert!(matches!(
        e,
        CliError::Store(hookspool::Error::PayloadTooLarge { .. })
    ));
    let e = cmd(&store, "push nope --data x", PIPE).await.failure();
    assert_eq!(e.to_string(), "queue `nope` does not exist");
    assert_eq!(store.count(&q()).await.unwrap(), 0);
}

#[tokio::test]
async fn bad_queue_ids_and_phases_fail_with_a_reason() {
    let store = store_with_queue().await;
    for args in [
        "count _bad",
        "fetch a/b",
        "dump ../x",
        "push é --data x",
        "queue show .x",
    ] {
        let e = cmd(&store, args, PIPE).await.failure();
        assert!(
            matches!(e, CliError::Store(hookspool::Error::InvalidQueueId { .. })),
            "{args}: {e}"
        );
        assert_eq!(e.exit_code(), EXIT_FAILED);
    }
    for args in [
        "count q --phase Pending",
        "fetch q --phase 1x",
        "set-phase q 1 BAD",
    ] {
        let e = cmd(&store, args, PIPE).await.failure();
        assert!(
            e.to_string().starts_with("invalid phase name"),
            "{args}: {e}"
        );
    }
}

#[tokio::test]
async fn count_by_phase() {
    let store = store_with_queue().await;
    for _ in 0..3 {
        cmd(&store, "push q --data x", PIPE).await.ok();
    }
    cmd(&store, "set-phase q 2 review", PIPE).await.ok();
    assert_eq!(cmd(&store, "count q", PIPE).await.ok(), "3\n");
    assert_eq!(
        cmd(&store, "count q --phase pending", PIPE).await.ok(),
        "2\n"
    );
    assert_eq!(
        cmd(&store, "count q --phase review", PIPE).await.ok(),
        "1\n"
    );
    assert_eq!(cmd(&store, "count q --phase dead", PIPE).await.ok(), "0\n");
    let v = json_lines(
        &cmd(&store, "count q --phase review --json", PIPE)
            .await
            .ok(),
    );
    assert_eq!(v[0]["count"], 1);
    assert_eq!(v[0]["phase"], "review");
}

#[tokio::test]
async fn fetch_pages_by_phase_offset_limit_and_direction() {
    let store = store_with_queue().await;
    for i in 1..=5 {
        cmd(&store, &format!("push q --data {{\"n\":{i}}}"), PIPE)
            .await
            .ok();
    }
    cmd(&store, "set-phase q 4 dead", PIPE).await.ok();

    let out = cmd(&store, "fetch q --limit 2", PIPE).await.ok();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(
        lines[0],
        "KEY  PHASE    ATTEMPTS  CREATED (UTC)        NOT BEFORE  PAYLOAD"
    );
    assert!(lines[1].starts_with("1    pending  0"), "{out}");
    assert!(lines[1].ends_with("  -           {\"n\":1}"), "{out}");

    let keys = |out: &str| -> Vec<u64> {
        json_lines(out)
            .iter()
            .map(|v| v["key"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(
        keys(
            &cmd(&store, "fetch q --json --offset 1 --limit 2", PIPE)
                .await
                .ok()
        ),
        [2, 3]
    );
    assert_eq!(
        keys(
            &cmd(&store, "fetch q --json --reverse --limit 2", PIPE)
                .await
                .ok()
        ),
        [5, 4]
    );
    assert_eq!(
        keys(&cmd(&store, "fetch q --json --phase dead", PIPE).await.ok()),
        [4]
    );
    assert_eq!(
        keys(&cmd(&store, "fetch q --json --key 3", PIPE).await.ok()),
        [3]
    );
    assert_eq!(
        cmd(&store, "fetch q --phase done", PIPE).await.ok(),
        "no items\n"
    );

    let v = json_lines(&cmd(&store, "fetch q --json --key 4", PIPE).await.ok());
    assert_eq!(v[0]["phase"], "dead");
    assert_eq!(v[0]["payload"]["n"], 4);

    let e = cmd(&store, "fetch q --key 99", PIPE).await.failure();
    assert_eq!(e.to_string(), "queue `q` has no item with key 99");
    let e = cmd(&store, "fetch q --limit 100000", PIPE).await.failure();
    assert!(e.to_string().contains("page limit"), "{e}");
}

#[tokio::test]
async fn dump_writes_every_item_and_shows_progress_on_a_terminal() {
    let store = store_with_queue().await;
    let total = DUMP_PROGRESS_EVERY as usize + 1;
    let batch: Vec<NewItem> = (0..total).map(|i| NewItem::new(i.to_string())).collect();
    let (first, rest) = batch.split_at(total / 2);
    store.push_batch(&q(), first.to_vec()).await.unwrap();
    store.push_batch(&q(), rest.to_vec()).await.unwrap();

    let on_tty = cmd(&store, "dump q", tty("")).await;
    let err = on_tty.err.clone();
    let out = on_tty.ok();
    let lines = json_lines(&out);
    assert_eq!(lines.len(), total);
    for (i, v) in lines.iter().enumerate() {
        assert_eq!(v["key"], i as u64 + 1);
        assert_eq!(v["payload"], i as u64, "numbers are JSON");
    }
    assert!(
        err.contains(&format!(
            "dumped {DUMP_PROGRESS_EVERY} of about {total} items"
        )),
        "{err}"
    );
    assert!(err.contains(&format!("dumped {total} items")), "{err}");

    let piped = cmd(&store, "dump q", PIPE).await;
    assert!(piped.err.is_empty());
    assert_eq!(piped.ok(), out);
    let e = cmd(&store, "dump nope", PIPE).await.failure();
    assert_eq!(e.to_string(), "queue `nope` does not exist");
}

#[tokio::test]
async fn reset_needs_confirmation() {
    let store = store_with_queue().await;
    cmd(&store, "push q --data a", PIPE).await.ok();
    cmd(&store, "push q --data b", PIPE).await.ok();

    let e = cmd(&store, "reset q", PIPE).await.failure();
    assert!(
        e.to_string()
            .contains("stdin is not a terminal; pass --yes"),
        "{e}"
    );
    assert_eq!(store.count(&q()).await.unwrap(), 2);

    let refused = cmd(&store, "reset q", tty("n\n")).await;
    assert_eq!(refused.err, "Remove all 2 items of queue `q`? [y/N] ");
    assert!(matches!(refused.failure(), CliError::NotConfirmed(_)));
    assert_eq!(store.count(&q()).await.unwrap(), 2);

    let empty_answer = cmd(&store, "reset q", tty("")).await;
    assert!(empty_answer.result.is_err());
    assert_eq!(store.count(&q()).await.unwrap(), 2);

    let out = cmd(&store, "reset q", tty("yes\n")).await.ok();
    assert_eq!(out, "removed 2 items from queue `q`\n");
    assert_eq!(store.count(&q()).await.unwrap(), 0);

    cmd(&store, "push q --data c", PIPE).await.ok();
    let v = json_lines(&cmd(&store, "reset q --yes --json", PIPE).await.ok());
    assert_eq!(v[0]["removed"], 1);
}

#[tokio::test]
async fn queue_delete_needs_confirmation() {
    let store = store_with_queue().await;
    cmd(&store, "push q --data a", PIPE).await.ok();
    let e = cmd(&store, "queue delete q", PIPE).await.failure();
    assert!(e.to_string().contains("pass --yes"), "{e}");
    assert!(store.queue(&q()).await.unwrap().is_some());
    let asked = cmd(&store, "queue delete q", tty("y\n")).await;
    assert_eq!(asked.err, "Delete queue `q` and its 1 item? [y/N] ");
    assert_eq!(asked.ok(), "deleted queue `q` and its 1 item\n");
    assert!(store.queue(&q()).await.unwrap().is_none());
    let e = cmd(&store, "queue delete q --yes", PIPE).await.failure();
    assert_eq!(e.to_string(), "queue `q` does not exist");
}

#[tokio::test]
async fn delete_one_item() {
    let store = store_with_queue().await;
    cmd(&store, "push q --data a", PIPE).await.ok();
    assert_eq!(
        cmd(&store, "delete q 1", PIPE).await.ok(),
        "deleted item 1 of queue `q`\n"
    );
    let e = cmd(&store, "delete q 1", PIPE).await.failure();
    assert_eq!(e.to_string(), "queue `q` has no item with key 1");
}

#[tokio::test]
async fn set_phase_with_compare_and_set() {
    let store = store_with_queue().await;
    cmd(&store, "push q --data a", PIPE).await.ok();
    let out = cmd(&store, "set-phase q 1 review --if-phase pending", PIPE)
        .await
        .ok();
    assert_eq!(out, "item 1 of queue `q` is now in phase `review`\n");
    let e = cmd(&store, "set-phase q 1 done --if-phase pending", PIPE)
        .await
        .failure();
    assert_eq!(e.to_string(), "item 1 is in phase `review`, not `pending`");
    let item = store.fetch_key(&q(), 1).await.unwrap().unwrap();
    assert_eq!(item.phase, Phase::new("review").unwrap());

    let v = json_lines(&cmd(&store, "set-phase q 1 done --json", PIPE).await.ok());
    assert_eq!(v[0]["phase"], "done");
    let e = cmd(&store, "set-phase q 1 in_flight", PIPE).await.failure();
    assert!(e.to_string().contains("in_flight"), "{e}");
    let e = cmd(&store, "set-phase q 9 done", PIPE).await.failure();
    assert_eq!(e.to_string(), "queue `q` has no item with key 9");
}

#[tokio::test]
async fn replay_moves_dead_items_back() {
    let store = store_with_queue().await;
    for _ in 0..3 {
        cmd(&store, "push q --data a", PIPE).await.ok();
    }
    for key in 1..=3 {
        cmd(&store, &format!("set-phase q {key} dead"), PIPE)
            .await
            .ok();
    }
    let out = cmd(&store, "replay q 2", PIPE).await.ok();
    assert_eq!(out, "item 2 of queue `q` was replayed to phase `pending`\n");
    let e = cmd(&store, "replay q 2", PIPE).await.failure();
    assert_eq!(e.to_string(), "item 2 is in phase `pending`, not `dead`");
    let out = cmd(&store, "replay q --all", PIPE).await.ok();
    assert_eq!(out, "replayed 2 dead items of queue `q` to pending\n");
    assert_eq!(store.count_phase(&q(), &Phase::PENDING).await.unwrap(), 3);
}

fn parse(args: &str) -> Cli {
    Cli::try_parse_from(std::iter::once("hookspool").chain(args.split_whitespace()))
        .unwrap_or_else(|e| panic!("{args}: {e}"))
}

async fn exec<F>(args: &str, open: F) -> Result<(), CliError>
where
    F: FnOnce(&Path) -> hookspool::Result<MemoryBackend>,
{
    let mut streams = PIPE.streams();
    execute(parse(args), &mut streams.io(), open).await
}

#[tokio::test]
async fn execute_refuses_a_missing_data_dir_except_to_create_a_queue() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let d = dir.display();
    for args in [
        "queues",
        "count q",
        "fetch q",
        "dump q",
        "reset q --yes",
        "queue show q",
    ] {
        let e = exec(&format!("--data-dir {d} {args}"), |_| {
            panic!("must not open a missing directory")
        })
        .await
        .unwrap_err();
        assert!(matches!(e, CliError::NoDataDir { .. }), "{args}: {e}");
        assert!(e.to_string().contains(&d.to_string()), "{e}");
    }
    assert!(!dir.exists());
    exec(&format!("--data-dir {d} queue create q"), |p| {
        std::fs::create_dir_all(p).unwrap();
        Ok(MemoryBackend::new())
    })
    .await
    .unwrap();
    assert!(dir.is_dir());

    let file = tmp.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let e = exec(&format!("--data-dir {} queues", file.display()), |_| {
        Ok(MemoryBackend::new())
    })
    .await
    .unwrap_err();
    assert!(e.to_string().contains("is not a directory"), "{e}");
}

#[tokio::test]
async fn execute_reports_a_locked_data_dir_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().display().to_string();
    let e = exec(&format!("--data-dir {d} queues"), |p| {
        Err(hookspool::Error::Locked {
            path: p.display().to_string(),
        })
    })
    .await
    .unwrap_err();
    assert_eq!(e.exit_code(), EXIT_LOCKED);
    assert_eq!(
        e.to_string(),
        format!(
            "data directory {d} is in use by another hookspool process; if it is a daemon, run \
             the command through it with --url (or HOOKSPOOL_URL); otherwise stop that process \
             or pass another --data-dir"
        )
    );
}

// `--url`: the same commands through the HTTP API.
mod url;
