//! Never stuck on one bad record: on the journal, a delivery whose payload is damaged on
//! disk is quarantined (phase `corrupt`, with the damage as its error) when the delivery
//! loop claims it, and every other delivery goes out; a subscription record that cannot be
//! read is quarantined at open instead of stopping it.
//!
//! `HOOKSPOOL_QUARANTINE_EVENTS` sets how many events are fired (default 1,000; the README's
//! figure is from 10,000).

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::Duration;

use hookspool::{NewItem, Page, Phase, QueueId, Store};
use hookspool_journal::JournalBackend;
use hookspool_webhooks::{DELIVERIES_QUEUE, Hooks, SUBSCRIPTIONS_QUEUE, SubscribeOptions};

use crate::delivery::config;
use crate::support::receiver;

fn events() -> usize {
    std::env::var("HOOKSPOOL_QUARANTINE_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000)
}

fn payload(i: usize) -> Vec<u8> {
    format!(r#"{{"n":{i},"mark":"<event {i:06}>"}}"#).into_bytes()
}

/// Flips one byte inside event `i`'s payload, in whichever segment file holds it.
fn damage(dir: &Path, i: usize) {
    let mark = format!("<event {i:06}>").into_bytes();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(mark.len()).position(|w| w == mark) {
            bytes[at + 2] ^= 0x20;
            fs::write(&path, bytes).unwrap();
            return;
        }
    }
    panic!("event {i} is in no file of {}", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_delivery_is_quarantined_and_every_other_one_delivered() {
    let n = events();
    let bad = n / 2;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut rx = receiver(200).await;
    let mut bad_id = None;
    {
        let store = Store::new(JournalBackend::open(&dir).unwrap());
        let hooks = Hooks::open(store.clone()).await.unwrap();
        hooks
            .subscribe("ev", &rx.url, SubscribeOptions::default())
            .await
            .unwrap();
        // A record no subscription can be read from (as an old bug or a hand could leave).
        let subs = QueueId::new(SUBSCRIPTIONS_QUEUE).unwrap();
        store
            .push(&subs, NewItem::new(br#"{"nonsense":true}"#.to_vec()))
            .await
            .unwrap();
        // A delivery record that names neither a subscription nor a URL.
        let deliveries = QueueId::new(DELIVERIES_QUEUE).unwrap();
        store
            .push(&deliveries, NewItem::new(b"{}".to_vec()))
            .await
            .unwrap();
        for i in 0..n {
            let ids = hooks.fire("ev", payload(i)).await.unwrap();
            if i == bad {
                bad_id = Some(ids[0].clone());
            }
        }
        store.sync().await.unwrap();
    }
    damage(&dir, bad);

    let store = Store::new(JournalBackend::open(&dir).unwrap());
    let hooks = Hooks::open(store.clone())
        .await
        .expect("a malformed subscription record does not stop the start");
    assert_eq!(hooks.subscriptions().len(), 1);
    let subs = QueueId::new(SUBSCRIPTIONS_QUEUE).unwrap();
    assert_eq!(store.count_phase(&subs, &Phase::CORRUPT).await.unwrap(), 1);

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let deliverer = hooks.deliverer(config(&[5])).unwrap();
    let task = tokio::spawn(deliverer.run(async {
        let _ = stopped.await;
    }));
    let mut seen = BTreeSet::new();
    while seen.len() < n - 1 {
        let got = tokio::time::timeout(Duration::from_secs(30), rx.requests.recv())
            .await
            .expect("the other deliveries keep coming")
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
        let i = usize::try_from(body["n"].as_u64().unwrap()).unwrap();
        assert_ne!(i, bad, "the damaged payload is never sent");
        assert!(seen.insert(i), "event {i} sent twice");
    }
    // Every delivery sent is recorded done (counted from the store: the results stream
    // keeps only the last 1,024 outcomes for a slow reader).
    let deliveries = QueueId::new(DELIVERIES_QUEUE).unwrap();
    let recorded = async {
        while store.count_phase(&deliveries, &Phase::DONE).await.unwrap() < (n - 1) as u64 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_mins(1), recorded)
        .await
        .expect("every delivery sent is recorded done");
    let _ = stop.send(());
    task.await.unwrap().unwrap();

    let counts = store.counts(&deliveries).await.unwrap();
    assert_eq!(counts.get(&Phase::DONE), (n - 1) as u64, "{counts:?}");
    assert_eq!(
        counts.get(&Phase::CORRUPT),
        2,
        "the damaged payload and the record without a target: {counts:?}"
    );
    // The API shows it, with why; it is deleted on its own.
    let shown = hooks.delivery(&bad_id.unwrap()).await.unwrap().unwrap();
    assert_eq!(shown.state, Phase::CORRUPT);
    let error = shown.last_error.unwrap();
    assert!(error.starts_with("quarantined: "), "{error}");
    let quarantined = store
        .fetch_page(&deliveries, Page::first(10).phase(Phase::CORRUPT))
        .await
        .unwrap();
    let malformed = quarantined[0].last_error.clone().unwrap();
    assert!(
        malformed.contains("no subscription and no URL"),
        "{malformed}"
    );
    for item in quarantined {
        assert!(store.delete(&deliveries, item.key).await.unwrap());
    }
    assert_eq!(store.count(&deliveries).await.unwrap(), (n - 1) as u64);
}
