//! End to end with the real `hookspool` binary: two daemons doing pubsub, a kill -9 between
//! publish and delivery, and a SIGTERM that loses nothing. Every daemon runs on its own data
//! directory and a free port on 127.0.0.1; receivers are real HTTP servers in this process.
#![allow(clippy::unwrap_used)] // tests may panic on failure

mod support;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hookspool::{Phase, QueueId};
use hookspool_client::{Client, NewSubscription, Publish};
use hookspool_webhooks::Secret;

use support::free_port;

const TOKEN: &str = "e2e-token-0123456789";

/// A daemon process and where it listens.
struct Daemon {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Daemon {
    /// Starts `hookspool serve` on `data` with a free loopback port and `extra` flags.
    fn start(data: &Path, extra: &[&str]) -> Daemon {
        Self::start_env(data, extra, &[])
    }

    /// As [`Daemon::start`], with extra environment variables; its log goes to a file.
    fn start_env(data: &Path, extra: &[&str], env: &[(&str, &Path)]) -> Daemon {
        let log = data.with_extension(format!("{}.log", std::process::id()));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut args = vec!["--token", TOKEN];
        args.extend_from_slice(extra);
        let mut env: Vec<(&str, &std::ffi::OsStr)> =
            env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
        env.push(("HOOKSPOOL_LOG", std::ffi::OsStr::new("info")));
        let (child, addr) = support::start_with(data, &args, env, log_file.into());
        Daemon {
            child,
            url: format!("http://{addr}"),
            log,
        }
    }

    fn client(&self) -> Client {
        Client::new(&self.url, Some(Secret::new(TOKEN))).unwrap()
    }

    /// SIGTERM, and the exit status must be 0.
    fn stop(mut self) {
        support::signal(&self.child, "-TERM");
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "exit {status:?}; log: {}",
            read(&self.log)
        );
    }

    /// SIGKILL: no chance to clean up.
    fn kill9(mut self) {
        support::signal(&self.child, "-KILL");
        self.child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Polls `check` every 20 ms until it returns `Some`, for at most 30 s.
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A receiver that records the `webhook-id` of every request, answering 204 after `delay`.
#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<HashMap<String, usize>>>,
}

impl Receiver {
    fn listen(&self, listener: tokio::net::TcpListener, delay: Duration) {
        async fn hook(
            State((r, delay)): State<(Receiver, Duration)>,
            headers: HeaderMap,
        ) -> StatusCode {
            tokio::time::sleep(delay).await;
            if let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()) {
                *r.seen.lock().unwrap().entry(id.to_owned()).or_default() += 1;
            }
            StatusCode::NO_CONTENT
        }
        let app = Router::new()
            .route("/hook", post(hook))
            .with_state((self.clone(), delay));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    }

    fn ids(&self) -> BTreeSet<String> {
        self.seen.lock().unwrap().keys().cloned().collect()
    }
}

async fn publish_n(client: &Client, n: usize) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for i in 0..n {
        let p = client
            .publish(&Publish::new("order.paid", &serde_json::json!({ "n": i })))
            .await
            .unwrap();
        assert_eq!(p.delivery_ids.len(), 1);
        ids.extend(p.delivery_ids.iter().map(|id| id.as_str().to_owned()));
    }
    ids
}

/// Waits until every delivery of `ids` is recorded done. A receiver sees a delivery before
/// its outcome is written (the loop's settler writes outcomes in groups, after the answer),
/// so a receipt alone does not mean done yet.
async fn all_done(client: &Client, ids: &BTreeSet<String>) {
    eventually("every delivery to be recorded done", async || {
        for id in ids {
            let d = client.delivery(id).await.unwrap().unwrap();
            if d.state != Phase::DONE {
                return None;
            }
        }
        Some(())
    })
    .await;
}

/// A publishes, B (subscribed to A through `[[sources]]` in its config file) receives on its
/// `orders` channel, verifies the signature, and its handler command runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_do_pubsub_through_a_handler_command() {
    let dir = tempfile::tempdir().unwrap();
    let a = Daemon::start(
        &dir.path().join("a"),
        &[
            "--allow-network",
            "127.0.0.0/8",
            "--retry-schedule",
            "100ms,100ms,100ms",
        ],
    );
    let out = dir.path().join("handled");
    std::fs::create_dir(&out).unwrap();
    let config = dir.path().join("b.toml");
    std::fs::write(
        &config,
        format!(
            "[channels.orders]\n\
             command = [\"sh\", \"-c\", \"cat > \\\"$OUT/$HOOKSPOOL_WEBHOOK_ID.json\\\"\"]\n\
             [[sources]]\nurl = \"{}\"\ntoken = \"{TOKEN}\"\nevent = \"order.*\"\n\
             channel = \"orders\"\n",
            a.url
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    // The handler command inherits B's environment: $OUT is where it writes.
    let b = Daemon::start_env(
        &dir.path().join("b"),
        &["--config", &config],
        &[("OUT", &out)],
    );

    let shop = a.client();
    eventually("B's subscription on A", async || {
        (shop.list_subscriptions(None).await.unwrap().len() == 1).then_some(())
    })
    .await;
    let published = shop
        .publish(&Publish::new("order.paid", &serde_json::json!({"id": 42})))
        .await
        .unwrap();
    let id = published.delivery_ids[0].as_str().to_owned();
    let file = out.join(format!("{id}.json"));
    let body = eventually("B's handler to write the event", async || {
        let text = std::fs::read_to_string(&file).ok()?;
        (!text.is_empty()).then_some(text)
    })
    .await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["id"], 42, "the handler got the published payload");

    let billing = b.client();
    let orders = QueueId::new("orders").unwrap();
    let counts = eventually("the callback to be acknowledged", async || {
        let c = billing.counts(&orders).await.unwrap();
        (c.get(&Phase::DONE) == 1).then_some(c)
    })
    .await;
    assert_eq!(counts.total(), 1, "{counts:?}");
    let channel = billing.queue(&orders).await.unwrap().unwrap();
    assert!(channel.has_secret, "B's channel requires signatures");
    all_done(&shop, &BTreeSet::from([id])).await;
    b.stop();
    a.stop();
}

/// Published, acknowledged as stored, then the daemon is SIGKILLed before the receiver is up.
/// After a restart the deliveries still happen, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_between_publish_and_delivery_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("a");
    let flags = [
        "--allow-network",
        "127.0.0.0/8",
        "--retry-schedule",
        "100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,1s,1s,1s,1s,1s,1s,1s,1s,1s",
    ];
    let a = Daemon::start(&data, &flags);
    let port = free_port();
    let client = a.client();
    client
        .subscribe(&NewSubscription::new(
            "order.*",
            format!("http://127.0.0.1:{port}/hook"),
        ))
        .await
        .unwrap();
    let ids = publish_n(&client, 10).await;
    a.kill9();

    let a = Daemon::start(&data, &flags);
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    receiver.listen(listener, Duration::ZERO);
    eventually("every delivery at the receiver", async || {
        (receiver.ids() == ids).then_some(())
    })
    .await;
    let client = a.client();
    all_done(&client, &ids).await;
    let seen = receiver.seen.lock().unwrap().clone();
    assert!(
        seen.values().all(|n| *n == 1),
        "each delivered once: {seen:?}"
    );
    a.stop();
}

/// SIGTERM while deliveries are in flight to a slow receiver and more are waiting: exit 0,
/// and after a restart every delivery arrives and every pushed item is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("a");
    let flags = ["--allow-network", "127.0.0.0/8", "--concurrency", "4"];
    let a = Daemon::start(&data, &flags);
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    receiver.listen(listener, Duration::from_millis(200));
    let client = a.client();
    client
        .subscribe(&NewSubscription::new("order.*", url))
        .await
        .unwrap();
    let jobs = QueueId::new("jobs").unwrap();
    client
        .create_queue(&hookspool::QueueConfig::new(jobs.clone()))
        .await
        .unwrap();
    for i in 0..20u8 {
        client
            .push(&jobs, hookspool::NewItem::new(vec![i]))
            .await
            .unwrap();
    }
    let ids = publish_n(&client, 20).await;
    a.stop();

    let a = Daemon::start(&data, &flags);
    let client = a.client();
    assert_eq!(
        client.count(&jobs).await.unwrap(),
        20,
        "every pushed item kept"
    );
    eventually("every delivery at the receiver", async || {
        (receiver.ids() == ids).then_some(())
    })
    .await;
    all_done(&client, &ids).await;
    a.stop();
}
