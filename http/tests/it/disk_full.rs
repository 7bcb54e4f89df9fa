//! A disk that fills up under the daemon: the journal's writes fail (through its fault hook,
//! with `ENOSPC`, as a full file system fails them), publishing answers 503 JSON with
//! `Retry-After`, `/readyz` fails and says a restart is needed, and everything answered 2xx
//! before is in the store when it is opened again.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hookspool::Store;
use hookspool_http::{ApiConfig, ApiState, router};
use hookspool_journal::{Faults, IoOp, JournalBackend, JournalOptions};
use hookspool_webhooks::{DeliveryId, Hooks, SubscribeOptions};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Fails every write of records while `full` is set, as a full disk would.
#[derive(Debug, Default)]
struct Disk {
    full: AtomicBool,
}

impl Faults for Disk {
    fn check(&self, op: IoOp) -> std::io::Result<()> {
        match op {
            IoOp::Write { .. } | IoOp::CreateSegment if self.full.load(Ordering::SeqCst) => {
                Err(std::io::Error::from_raw_os_error(28)) // ENOSPC
            }
            _ => Ok(()),
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_fails_readiness_and_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let disk = Arc::new(Disk::default());
    let options = JournalOptions {
        faults: Some(disk.clone()),
        ..JournalOptions::default()
    };
    let store = Store::new(JournalBackend::open_with(&dir, options).unwrap());
    let hooks = Hooks::open(store).await.unwrap();
    hooks
        .subscribe(
            "ev",
            "https://example.com/hook",
            SubscribeOptions::default(),
        )
        .await
        .unwrap();
    let addr = crate::support::serve(router(ApiState::new(hooks, ApiConfig::default()))).await;
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    let publish = async |n: u32| {
        http.post(format!("{base}/events"))
            .header("content-type", "application/json")
            .body(json!({"event": "ev", "payload": {"n": n}}).to_string())
            .send()
            .await
            .unwrap()
    };

    let mut acknowledged: Vec<DeliveryId> = Vec::new();
    for n in 0..5 {
        let r = publish(n).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        acknowledged.push(serde_json::from_value(body["delivery_ids"][0].clone()).unwrap());
    }
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);

    disk.full.store(true, Ordering::SeqCst);
    let r = publish(5).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "5");
    let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(body["error"], "poisoned", "{body}");
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = serde_json::from_slice(&ready.bytes().await.unwrap()).unwrap();
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("restart the daemon") && message.contains("No space left"),
        "{message}"
    );

    // Space is freed: the journal stays poisoned by design (it no longer trusts what it has
    // in memory) until it is reopened.
    disk.full.store(false, Ordering::SeqCst);
    assert_eq!(publish(6).await.status(), StatusCode::SERVICE_UNAVAILABLE);

    // A restart (the directory opened again; a copy here, as this process still holds the
    // lock) has every acknowledged event.
    let copy = tmp.path().join("restarted");
    copy_dir(&dir, &copy);
    let hooks = Hooks::open(Store::new(JournalBackend::open(&copy).unwrap()))
        .await
        .unwrap();
    for id in &acknowledged {
        let delivery = hooks.delivery(id).await.unwrap();
        assert!(delivery.is_some(), "acknowledged delivery {id} lost");
    }
    hooks
        .fire("ev", b"{}".to_vec())
        .await
        .expect("the reopened store takes writes again");
}
