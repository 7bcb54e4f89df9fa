//! Data directories written before the engine, the webhooks, the HTTP API and the client
//! became separate crates still open, with everything in them: a queue's signing secret
//! (then a field of its own, now the `secret` metadata entry), items, subscriptions,
//! deliveries and idempotency records. The directories were made by the `hookspool` binary
//! of that time (`tests/fixtures/make.sh`): a journal closed cleanly (its state in the
//! checkpoint), a journal whose daemon was killed (its state only in the log, replayed), and
//! a sled store.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hookspool::{Backend, ManualClock, Phase, QueueId, Retention, Store, Timestamp};
use hookspool_journal::JournalBackend;
use hookspool_sled::SledBackend;
use hookspool_webhooks::{FireOptions, Hooks, IDEMPOTENCY_QUEUE, channel_secret};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Unpacks a fixture into a fresh directory (the stores write to it: a lock file, a
/// checkpoint at close).
fn unpack(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.tar.gz"));
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(tmp.path())
        .status()
        .unwrap();
    assert!(status.success(), "unpacking {}", tarball.display());
    tmp
}

async fn check_everything<B: Backend>(backend: B) {
    let clock = ManualClock::new(Timestamp::now());
    let store = Store::new(backend).with_clock(clock.clone());
    let orders = QueueId::new("orders").unwrap();
    let config = store.queue(&orders).await.unwrap().expect("queue `orders`");
    assert_eq!(channel_secret(&config).unwrap().expose(), SECRET);
    assert_eq!(config.metadata["team"], "billing");
    assert_eq!(config.ttl, Some(Duration::from_hours(1)));
    assert_eq!(config.retention, Retention::Keep);
    assert!(
        !format!("{config:?}").contains("MfKQ9r8"),
        "the secret stays out of Debug"
    );
    let one = store.fetch_key(&orders, 1).await.unwrap().unwrap();
    assert_eq!(one.payload, br#"{"id":1}"#);
    assert_eq!(one.metadata["event"], "order.paid");
    let two = store.fetch_key(&orders, 2).await.unwrap().unwrap();
    assert_eq!(
        (two.payload.as_slice(), two.phase),
        (&br#"{"id":2}"#[..], Phase::DEAD)
    );

    let hooks = Hooks::open(store.clone()).await.unwrap();
    let subs = hooks.subscriptions();
    assert_eq!(subs.len(), 1, "{subs:?}");
    assert_eq!(subs[0].secret.expose(), SECRET);
    assert_eq!(subs[0].owner.as_deref(), Some("acme"));

    // The publish was kept with its idempotency key: the same request again, within the
    // key's lifetime, fires nothing and answers the stored ids, which name a delivery that
    // is in the log with its attempts.
    let records = store
        .fetch_page(
            &QueueId::new(IDEMPOTENCY_QUEUE).unwrap(),
            hookspool::Page::first(10),
        )
        .await
        .unwrap();
    assert_eq!(records.len(), 1);
    clock.set(records[0].created_at.saturating_add(Duration::from_mins(1)));
    let again = hooks
        .fire_with(
            "order.paid",
            br#"{"id":42}"#.to_vec(),
            FireOptions::default().idempotency_key("order-42"),
        )
        .await
        .unwrap();
    assert!(again.replayed);
    let delivery = hooks
        .delivery(&again.delivery_ids[0])
        .await
        .unwrap()
        .expect("the delivery the record names");
    assert_eq!(delivery.event, "order.paid");
    assert_eq!(delivery.payload, br#"{"id":42}"#);
    assert_eq!(delivery.subscription.as_deref(), Some(subs[0].id.as_str()));
}

#[tokio::test]
async fn a_journal_closed_cleanly_opens() {
    let dir = unpack("journal-clean");
    assert!(JournalBackend::detect(dir.path()));
    assert!(!SledBackend::detect(dir.path()));
    check_everything(JournalBackend::open(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn a_journal_left_by_kill_9_replays_and_opens() {
    let dir = unpack("journal-killed");
    assert!(
        !dir.path().join("checkpoint").exists(),
        "nothing but the log"
    );
    check_everything(JournalBackend::open(dir.path()).unwrap()).await;
    // And again after this version's own clean close (a checkpoint in the new layout).
    check_everything(JournalBackend::open(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn a_sled_store_opens() {
    let dir = unpack("sled");
    assert!(SledBackend::detect(dir.path()));
    assert!(!JournalBackend::detect(dir.path()));
    check_everything(SledBackend::open(dir.path()).unwrap()).await;
}
