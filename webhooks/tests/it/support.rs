//! What the integration tests share: serving an axum app on 127.0.0.1:0, and a webhook
//! receiver that records every request and whose answer can be switched mid-test.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use tokio::sync::mpsc;

/// Serves `app` on a free loopback port in the background; returns the address.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// One request as the receiver saw it.
#[derive(Debug)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A receiver whose answer can be switched mid-test.
pub struct Receiver {
    pub url: String,
    pub requests: mpsc::UnboundedReceiver<Received>,
    pub status: Arc<AtomicU16>,
    pub retry_after: Arc<std::sync::Mutex<Option<String>>>,
}

#[derive(Clone)]
struct ReceiverState {
    tx: mpsc::UnboundedSender<Received>,
    status: Arc<AtomicU16>,
    retry_after: Arc<std::sync::Mutex<Option<String>>>,
    location: Option<String>,
}

async fn handle(
    State(s): State<ReceiverState>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let _ = s.tx.send(Received { headers, body });
    let status = StatusCode::from_u16(s.status.load(Ordering::SeqCst)).unwrap();
    let mut out = HeaderMap::new();
    if let Some(ra) = s.retry_after.lock().unwrap().clone() {
        out.insert("retry-after", ra.parse().unwrap());
    }
    if let Some(loc) = &s.location {
        out.insert("location", loc.parse().unwrap());
    }
    (status, out, "receiver says hi")
}

pub async fn receiver(status: u16) -> Receiver {
    receiver_with(status, None).await
}

pub async fn receiver_with(status: u16, location: Option<String>) -> Receiver {
    let (tx, rx) = mpsc::unbounded_channel();
    let status = Arc::new(AtomicU16::new(status));
    let retry_after = Arc::new(std::sync::Mutex::new(None));
    let state = ReceiverState {
        tx,
        status: status.clone(),
        retry_after: retry_after.clone(),
        location,
    };
    let addr = serve(Router::new().fallback(handle).with_state(state)).await;
    Receiver {
        url: format!("http://{addr}/hook"),
        requests: rx,
        status,
        retry_after,
    }
}

impl Receiver {
    pub async fn next(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(10), self.requests.recv())
            .await
            .expect("the receiver got no request in time")
            .expect("receiver closed")
    }

    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    pub fn nothing_more(&mut self) {
        assert!(
            self.requests.try_recv().is_err(),
            "unexpected extra request"
        );
    }
}
