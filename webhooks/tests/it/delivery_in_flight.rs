//! Requests in flight: the per-subscription limit, and a graceful stop that waits for them,
//! or releases those the grace period cuts off so that they are sent again. Real receivers
//! on 127.0.0.1:0 that hold each request until the test lets it go.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use hookspool::Phase;
use hookspool_webhooks::{OutcomeKind, SubscribeOptions};
use tokio::sync::mpsc;

use crate::delivery::{config, start};
use crate::support::serve;

/// A receiver that holds every request until the test lets it go, counting how many are
/// held at once.
pub(crate) struct Gate {
    pub(crate) url: String,
    arrived: mpsc::UnboundedReceiver<()>,
    pub(crate) release: Arc<tokio::sync::Semaphore>,
    peak: Arc<std::sync::atomic::AtomicUsize>,
}

#[derive(Clone)]
struct GateState {
    arrived: mpsc::UnboundedSender<()>,
    release: Arc<tokio::sync::Semaphore>,
    held: Arc<std::sync::atomic::AtomicUsize>,
    peak: Arc<std::sync::atomic::AtomicUsize>,
}

async fn gated(State(s): State<GateState>) -> StatusCode {
    let now = s.held.fetch_add(1, Ordering::SeqCst) + 1;
    s.peak.fetch_max(now, Ordering::SeqCst);
    let _ = s.arrived.send(());
    s.release.acquire().await.unwrap().forget();
    s.held.fetch_sub(1, Ordering::SeqCst);
    StatusCode::OK
}

pub(crate) async fn gate() -> Gate {
    let (tx, arrived) = mpsc::unbounded_channel();
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let state = GateState {
        arrived: tx,
        release: release.clone(),
        held: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        peak: peak.clone(),
    };
    let addr = serve(Router::new().fallback(gated).with_state(state)).await;
    Gate {
        url: format!("http://{addr}/hook"),
        arrived,
        release,
        peak,
    }
}

impl Gate {
    pub(crate) async fn arrived(&mut self) {
        tokio::time::timeout(Duration::from_secs(10), self.arrived.recv())
            .await
            .expect("no request arrived in time")
            .unwrap();
    }
}

#[tokio::test]
async fn per_subscription_concurrency_is_limited() {
    let mut g = gate().await;
    let mut run = start(config(&[5])).await;
    run.hooks
        .subscribe("ping", &g.url, SubscribeOptions::default().max_in_flight(2))
        .await
        .unwrap();
    for _ in 0..5 {
        run.hooks.fire("ping", b"{}".to_vec()).await.unwrap();
    }
    g.arrived().await;
    g.arrived().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        g.arrived.try_recv().is_err(),
        "a third request while two are in flight"
    );
    g.release.add_permits(5);
    for _ in 0..5 {
        assert_eq!(run.outcome().await.kind, OutcomeKind::Delivered);
    }
    assert_eq!(g.peak.load(Ordering::SeqCst), 2);
    run.stop().await;
}

#[tokio::test]
async fn graceful_stop_releases_requests_cut_off_by_the_grace_period() {
    let mut g = gate().await;
    let mut cfg = config(&[5]);
    cfg.shutdown_grace = Duration::from_millis(100);
    let mut run = start(cfg).await;
    run.hooks
        .subscribe("ping", &g.url, SubscribeOptions::default())
        .await
        .unwrap();
    let id = run
        .hooks
        .fire("ping", b"{}".to_vec())
        .await
        .unwrap()
        .remove(0);
    g.arrived().await;
    run.stop().await;
    let d = run.hooks.delivery(&id).await.unwrap().unwrap();
    assert_eq!(d.state, Phase::PENDING, "released back to pending");
    assert!(
        d.attempts.is_empty(),
        "a cut-off request is not counted as an attempt"
    );
    g.release.add_permits(1);
}

#[tokio::test]
async fn graceful_stop_waits_for_requests_in_flight() {
    let mut g = gate().await;
    let mut run = start(config(&[5])).await;
    run.hooks
        .subscribe("ping", &g.url, SubscribeOptions::default())
        .await
        .unwrap();
    let id = run
        .hooks
        .fire("ping", b"{}".to_vec())
        .await
        .unwrap()
        .remove(0);
    g.arrived().await;
    let release = g.release.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        release.add_permits(1);
    });
    run.stop().await;
    assert_eq!(
        run.hooks.delivery(&id).await.unwrap().unwrap().state,
        Phase::DONE
    );
}
