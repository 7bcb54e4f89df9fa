//! The commands with `--url`, against the HTTP API served in this process: the same output,
//! errors and exit codes as offline, and what only a network adds (a refused token, no
//! daemon).

use super::*;

const TOKEN: &str = "cli-test-token-0123456789";

/// Serves the HTTP API over `store` on a loopback port, behind [`TOKEN`]; returns its URL.
async fn serve_store(store: &Store<MemoryBackend>) -> String {
    use hookspool_http::{ApiConfig, ApiState, router};
    let hooks = hookspool_webhooks::Hooks::open(store.clone())
        .await
        .unwrap();
    let config = ApiConfig {
        tokens: vec![hookspool_webhooks::Secret::new(TOKEN)],
        ..ApiConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(ApiState::new(hooks, config));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// Runs `args` through `execute` with `--url`; opening a data directory fails the test.
async fn remote(url: &str, token: Option<&str>, args: &str, console: Console) -> Outcome {
    let mut cli = parse(&format!("--url {url} {args}"));
    cli.token = token.map(str::to_owned);
    let mut streams = console.streams();
    let result = execute(
        cli,
        &mut streams.io(),
        |dir| -> hookspool::Result<MemoryBackend> {
            panic!("--url must not open a data directory ({})", dir.display())
        },
    )
    .await;
    streams.outcome(result)
}

#[tokio::test]
async fn url_commands_print_exactly_what_offline_commands_print() {
    let store = store_with_queue().await;
    let url = serve_store(&store).await;
    let r = |args: &'static str| {
        let url = url.clone();
        async move { remote(&url, Some(TOKEN), args, PIPE).await.ok() }
    };
    // Changes through the daemon...
    assert_eq!(r("push q --data {\"id\":1} --meta event=x").await, "1\n");
    assert_eq!(r("push q --data plain").await, "2\n");
    let out = remote(&url, Some(TOKEN), "push q", piped(&[0xff, 0x00]))
        .await
        .ok();
    assert_eq!(out, "3\n");
    assert_eq!(
        r("set-phase q 2 dead").await,
        "item 2 of queue `q` is now in phase `dead`\n"
    );
    r("queue create other --ttl 15m --secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw --meta team=a")
        .await;
    // ...land in the store as offline commands would have made them.
    assert_eq!(
        store.fetch_key(&q(), 3).await.unwrap().unwrap().payload,
        vec![0xff, 0x00]
    );
    assert_eq!(
        store.fetch_key(&q(), 1).await.unwrap().unwrap().metadata["event"],
        "x"
    );

    // Reads print the same bytes both ways, tables and JSON.
    for args in [
        "queues",
        "queues --json",
        "queue show q",
        "queue show other --json",
        "queue show other",
        "count q",
        "count q --phase dead --json",
        "fetch q",
        "fetch q --json",
        "fetch q --phase dead --json",
        "fetch q --reverse --limit 2 --offset 1",
        "fetch q --key 3 --json",
        "dump q",
    ] {
        let offline = cmd(&store, args, PIPE).await.ok();
        let online = remote(&url, Some(TOKEN), args, PIPE).await.ok();
        assert_eq!(online, offline, "{args}");
    }

    // Writes print the same too: each done once online, once offline on a twin item.
    assert_eq!(
        r("replay q 2 --json").await.lines().count(),
        1,
        "one JSON line"
    );
    cmd(&store, "set-phase q 2 dead", PIPE).await.ok();
    assert_eq!(
        r("replay q --all").await,
        "replayed 1 dead item of queue `q` to pending\n"
    );
    assert_eq!(r("delete q 3").await, "deleted item 3 of queue `q`\n");
    let e = remote(&url, Some(TOKEN), "delete q 3", PIPE)
        .await
        .failure();
    assert_eq!(e.to_string(), "queue `q` has no item with key 3");
    assert_eq!(e.exit_code(), EXIT_FAILED);
    let updated = r("queue update other --no-ttl --remove-meta team --meta owner=ops").await;
    assert_eq!(updated, cmd(&store, "queue show other", PIPE).await.ok());
    assert!(updated.contains("metadata   owner=ops"), "{updated}");
    assert!(updated.contains("ttl        -"), "{updated}");
}

#[tokio::test]
async fn url_errors_read_like_offline_errors() {
    let store = store_with_queue().await;
    let url = serve_store(&store).await;
    for args in [
        "count nope",
        "fetch nope",
        "fetch q --key 42",
        "queue show nope",
        "dump nope",
        "set-phase q 1 dead",
    ] {
        let offline = cmd(&store, args, PIPE).await.failure();
        let online = remote(&url, Some(TOKEN), args, PIPE).await.failure();
        assert_eq!(online.to_string(), offline.to_string(), "{args}");
        assert_eq!(online.exit_code(), offline.exit_code(), "{args}");
    }
    store.push(&q(), NewItem::new(b"x".to_vec())).await.unwrap();
    let conflict = remote(
        &url,
        Some(TOKEN),
        "set-phase q 1 dead --if-phase done",
        PIPE,
    )
    .await
    .failure();
    assert!(
        matches!(&conflict, CliError::Remote { status: 409, code, .. } if code == "phase_conflict"),
        "{conflict:?}"
    );
    assert_eq!(
        conflict.to_string(),
        "item 1 is in phase `pending`, not `done`"
    );
}

#[tokio::test]
async fn url_reset_and_queue_delete_ask_first() {
    let store = store_with_queue().await;
    store.push(&q(), NewItem::new(b"x".to_vec())).await.unwrap();
    let url = serve_store(&store).await;
    // Piped stdin without --yes: refused, nothing removed.
    let e = remote(&url, Some(TOKEN), "reset q", PIPE).await.failure();
    assert!(matches!(e, CliError::NotConfirmed(_)), "{e}");
    assert_eq!(store.count(&q()).await.unwrap(), 1);
    // A person says no, then yes.
    let no = remote(&url, Some(TOKEN), "reset q", tty("n\n")).await;
    assert!(
        no.err.contains("Remove all 1 item of queue `q`? [y/N]"),
        "{}",
        no.err
    );
    assert!(matches!(no.failure(), CliError::NotConfirmed(_)));
    let yes = remote(&url, Some(TOKEN), "reset q", tty("y\n")).await.ok();
    assert_eq!(yes, "removed 1 item from queue `q`\n");
    assert_eq!(store.count(&q()).await.unwrap(), 0);

    let e = remote(&url, Some(TOKEN), "queue delete q", PIPE)
        .await
        .failure();
    assert!(matches!(e, CliError::NotConfirmed(_)), "{e}");
    let out = remote(&url, Some(TOKEN), "queue delete q --yes --json", PIPE)
        .await
        .ok();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"queue": "q", "deleted": true, "items": 0})
    );
    assert!(store.queue(&q()).await.unwrap().is_none());
}

#[tokio::test]
async fn url_with_a_bad_token_or_no_daemon_says_so() {
    let store = store_with_queue().await;
    let url = serve_store(&store).await;
    for token in [Some("wrong-token-0123456789"), None] {
        let e = remote(&url, token, "queues", PIPE).await.failure();
        assert!(matches!(e, CliError::Unauthorized { .. }), "{e:?}");
        assert_eq!(e.exit_code(), EXIT_FAILED);
        let text = e.to_string();
        assert!(text.contains(&url) && text.contains("--token"), "{text}");
        assert!(!text.contains("wrong-token"), "{text}");
    }

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let e = remote(&dead, Some(TOKEN), "count q", PIPE).await.failure();
    assert!(matches!(e, CliError::Unreachable { .. }), "{e:?}");
    assert_eq!(e.exit_code(), EXIT_UNREACHABLE);
    assert!(e.to_string().contains(&dead), "{e}");

    let e = remote("ftp://example.com", None, "queues", PIPE)
        .await
        .failure();
    assert!(e.to_string().contains("http://"), "{e}");
    let e = remote(&url, Some(TOKEN), "serve", PIPE).await.failure();
    assert!(e.to_string().contains("drop --url"), "{e}");
}

#[test]
fn url_and_token_parse_anywhere_and_serve_keeps_its_own_token() {
    let cli = Cli::try_parse_from([
        "hookspool",
        "fetch",
        "q",
        "--url",
        "http://h:1",
        "--token",
        "t0",
    ])
    .unwrap();
    assert_eq!(cli.url.as_deref(), Some("http://h:1"));
    assert_eq!(cli.token.as_deref(), Some("t0"));
    let cli = Cli::try_parse_from([
        "hookspool",
        "--url",
        "http://h:1",
        "--token",
        "t1",
        "count",
        "q",
    ])
    .unwrap();
    assert_eq!(
        (cli.url.as_deref(), cli.token.as_deref()),
        (Some("http://h:1"), Some("t1"))
    );
    let cli = Cli::try_parse_from(["hookspool", "serve", "--token", "a", "--token", "b"]).unwrap();
    let Command::Serve(args) = cli.command else {
        panic!("not serve")
    };
    assert_eq!(args.tokens, vec!["a".to_owned(), "b".to_owned()]);
}

/// A store on a clock that stands still, so that two of them made apart in time print alike.
fn still_store() -> Store<MemoryBackend> {
    let clock = hookspool::ManualClock::new(hookspool::Timestamp(1_700_000_000_000));
    Store::new(MemoryBackend::new()).with_clock(clock)
}

/// A still store with the same queues as `of` (hookspool's own, which a daemon makes on
/// start, with their random nonces).
async fn twin(of: &Store<MemoryBackend>) -> Store<MemoryBackend> {
    let twin = still_store();
    for config in of.queues().await.unwrap() {
        twin.create_queue(config).await.unwrap();
    }
    twin
}

/// What a script of commands printed and how each ended, one entry per command.
async fn transcript<A: Admin>(admin: &A, script: &[(&str, &[u8], bool)]) -> Vec<String> {
    let mut lines = Vec::new();
    for (args, stdin, terminal) in script {
        let console = Console {
            stdin: stdin.to_vec(),
            stdin_is_terminal: *terminal,
            stderr_is_terminal: *terminal,
        };
        let o = cmd(admin, args, console).await;
        let end = match &o.result {
            Ok(()) => "ok".to_owned(),
            Err(e) => format!("exit {}: {e}", e.exit_code()),
        };
        lines.push(format!("$ {args}\n{}{}=> {end}", o.out, o.err));
    }
    lines
}

/// Every queue command, its failures included, is the same code over [`Admin`]: a script run
/// on a store and on a client of a daemon over a twin store prints the same, line by line.
#[tokio::test]
async fn one_script_prints_alike_through_a_store_and_through_a_daemon() {
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let create =
        format!("queue create orders --ttl 15m --secret {SECRET} --retention remove --meta team=a");
    let no: &[u8] = b"";
    let script: Vec<(&str, &[u8], bool)> = vec![
        ("queues", no, false),
        (&create, no, false),
        ("queue create orders", no, false),
        ("queue create jobs --json", no, false),
        ("queue create x --meta secret=s", no, false),
        ("queue show orders", no, false),
        ("queue show orders --json", no, false),
        (
            "queue update orders --no-ttl --remove-meta team --meta owner=ops",
            no,
            false,
        ),
        ("queue update orders --no-secret --json", no, false),
        ("queue update nope --ttl 1m", no, false),
        ("queue update nope --meta a=b", no, false),
        ("queue show nope", no, false),
        ("push orders --data {\"id\":1} --meta event=x", no, false),
        ("push orders --data plain", no, false),
        ("push orders --json", &[0xff, 0x00, 0x80], false),
        ("push nope --data x", no, false),
        ("count orders", no, false),
        ("count orders --phase pending --json", no, false),
        ("count nope", no, false),
        ("fetch orders", no, false),
        ("fetch orders --json --reverse --limit 2", no, false),
        ("fetch orders --offset 1 --phase pending", no, false),
        ("fetch orders --key 2 --json", no, false),
        ("fetch orders --key 42", no, false),
        ("set-phase orders 2 dead", no, false),
        ("set-phase orders 1 done --if-phase dead", no, false),
        ("set-phase orders 3 dead --json", no, false),
        ("set-phase orders 9 dead", no, false),
        ("replay orders 2", no, false),
        ("replay orders 1", no, false),
        ("replay orders --all --json", no, false),
        ("dump orders", no, false),
        ("dump nope", no, false),
        ("delete orders 1", no, false),
        ("delete orders 1 --json", no, false),
        ("reset orders", b"n\n", true),
        ("reset orders", b"y\n", true),
        ("queue delete orders", no, false),
        ("queue delete orders --yes --json", no, false),
        ("queues", no, false),
        ("queues --json", no, false),
    ];

    let served = still_store();
    let url = serve_store(&served).await;
    let local = transcript(&twin(&served).await, &script).await;
    let client =
        hookspool_client::Client::new(&url, Some(hookspool_webhooks::Secret::new(TOKEN))).unwrap();
    let remote = transcript(&client, &script).await;
    for (local, remote) in local.iter().zip(&remote) {
        assert_eq!(remote, local);
    }
    assert_eq!(remote.len(), script.len());
    // The script did what it says, on both sides.
    let all = local.concat();
    for seen in [
        "=> exit 1: queue `orders` already exists",
        "secret     ****",
        "=> exit 1: item 1 is in phase `pending`, not `dead`",
        "{\"queue\":\"orders\",\"replayed\":1}",
        "Remove all 2 items of queue `orders`? [y/N] => exit 1",
    ] {
        assert!(all.contains(seen), "{seen}: {all}");
    }
    for entry in &local {
        let printed = entry.split_once('\n').map_or("", |(_, printed)| printed);
        assert!(
            !printed.contains("MfKQ9r8"),
            "the secret is never printed: {entry}"
        );
    }
}
