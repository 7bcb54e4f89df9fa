//! The delivery HTTP client against real servers on 127.0.0.1: headers as sent, the SSRF
//! policy (nothing reaches a refused address), no redirects, the capped body read, timeouts,
//! `Retry-After`, and the classification of network failures.

// Tests may unwrap (house rule): a failed unwrap is a failed test, with its error printed.
#![allow(clippy::unwrap_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{any, post};
use hookspool_webhooks::{
    DeliveryClient, DeliveryError, HttpConfig, NetworkPolicy, TargetUrl, USER_AGENT,
};

const MIB: usize = 1 << 20;

/// Headers and body of a request.
type Request = (HeaderMap, Vec<u8>);

/// What the receiver saw.
#[derive(Clone, Default)]
struct Seen {
    /// Every request, whatever the route.
    hits: Arc<AtomicUsize>,
    /// Requests to `/target`, where the redirects point.
    target_hits: Arc<AtomicUsize>,
    /// Headers and body of each request to `/hook`.
    hooks: Arc<Mutex<Vec<Request>>>,
}

fn count(seen: &Seen) {
    seen.hits.fetch_add(1, Ordering::SeqCst);
}

async fn hook(State(seen): State<Seen>, headers: HeaderMap, body: Bytes) -> &'static str {
    count(&seen);
    seen.hooks.lock().unwrap().push((headers, body.to_vec()));
    "ok"
}

async fn target(State(seen): State<Seen>) -> &'static str {
    count(&seen);
    seen.target_hits.fetch_add(1, Ordering::SeqCst);
    "followed"
}

fn redirect(seen: &Seen, status: StatusCode) -> impl IntoResponse + use<> {
    count(seen);
    (status, [(header::LOCATION, "/target")], "moved")
}

/// Starts the receiver on 127.0.0.1:0.
async fn receiver() -> (SocketAddr, Seen) {
    let seen = Seen::default();
    let app = Router::new()
        .route("/hook", post(hook))
        .route("/target", any(target))
        .route(
            "/302",
            post(|State(seen): State<Seen>| async move { redirect(&seen, StatusCode::FOUND) }),
        )
        .route(
            "/308",
            post(|State(seen): State<Seen>| async move {
                redirect(&seen, StatusCode::PERMANENT_REDIRECT)
            }),
        )
        .route(
            "/big",
            post(|State(seen): State<Seen>| async move {
                count(&seen);
                vec![b'x'; MIB]
            }),
        )
        .route(
            "/never",
            post(|State(seen): State<Seen>| async move {
                count(&seen);
                std::future::pending::<()>().await;
            }),
        )
        .route(
            "/busy",
            post(|State(seen): State<Seen>| async move {
                count(&seen);
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, "120")],
                )
            }),
        )
        .route(
            "/busy-date",
            post(|State(seen): State<Seen>| async move {
                count(&seen);
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, "Thu, 01 Jan 1970 00:00:00 GMT")],
                )
            }),
        )
        .route(
            "/peer",
            post(
                |State(seen): State<Seen>, ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                    count(&seen);
                    peer.port().to_string()
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    (addr, seen)
}

fn url(addr: SocketAddr, path: &str) -> TargetUrl {
    TargetUrl::parse(&format!("http://{addr}{path}")).unwrap()
}

fn loopback_client() -> DeliveryClient {
    DeliveryClient::new(HttpConfig {
        policy: NetworkPolicy::new().allow_loopback(),
        ..HttpConfig::default()
    })
    .unwrap()
}

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn post_delivers_headers_and_body_as_sent() {
    let (addr, seen) = receiver().await;
    let client = loopback_client();
    let sent = headers(&[
        ("content-type", "application/json"),
        ("webhook-id", "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"),
        (
            "webhook-signature",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ),
        ("x-hookspool-event", "order.created"),
        ("x-multi", "one"),
        ("x-multi", "two"),
    ]);
    let body = br#"{"id":1}"#.to_vec();
    let response = client
        .post(&url(addr, "/hook"), &sent, body.clone())
        .await
        .unwrap();

    assert_eq!(response.status, 200);
    assert!(response.is_success());
    assert_eq!(response.body_prefix, b"ok");
    assert_eq!(response.retry_after, None);
    let hooks = seen.hooks.lock().unwrap();
    assert_eq!(hooks.len(), 1);
    let (got, got_body) = &hooks[0];
    assert_eq!(got_body, &body);
    for (name, value) in &sent {
        if name != "x-multi" {
            assert_eq!(got[name.as_str()], value.as_str(), "{name}");
        }
    }
    let multi: Vec<_> = got.get_all("x-multi").iter().collect();
    assert_eq!(multi, ["one", "two"]);
    assert_eq!(
        got[header::USER_AGENT],
        format!("hookspool/{}", env!("CARGO_PKG_VERSION")).as_str()
    );
    assert_eq!(got[header::USER_AGENT], USER_AGENT);
}

#[tokio::test]
async fn connections_are_kept_alive_between_posts() {
    let (addr, _seen) = receiver().await;
    let client = loopback_client();
    let first = client.post(&url(addr, "/peer"), &[], vec![]).await.unwrap();
    let second = client.post(&url(addr, "/peer"), &[], vec![]).await.unwrap();
    assert_eq!(first.status, 200);
    assert_eq!(
        first.body_prefix, second.body_prefix,
        "the second request came from another client port: a new connection"
    );
}

/// A listener on a loopback port that must never see a connection.
fn untouched_listener() -> (std::net::TcpListener, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

fn assert_never_connected(listener: &std::net::TcpListener) {
    // A connect completes in the kernel's backlog even if nobody accepts: an empty backlog
    // after the call returned means no connection was ever attempted.
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the refused target was connected to: {other:?}"),
    }
}

#[tokio::test]
async fn default_policy_refuses_loopback_literals_before_connecting() {
    let (listener, port) = untouched_listener();
    let client = DeliveryClient::new(HttpConfig::default()).unwrap();
    for (target, host, addr) in [
        (
            format!("http://127.0.0.1:{port}/"),
            "127.0.0.1",
            "127.0.0.1",
        ),
        (format!("http://0x7f.1:{port}/"), "127.0.0.1", "127.0.0.1"),
        (
            format!("http://[::ffff:127.0.0.1]:{port}/"),
            "[::ffff:7f00:1]",
            "::ffff:127.0.0.1",
        ),
    ] {
        let err = client
            .post(&TargetUrl::parse(&target).unwrap(), &[], b"{}".to_vec())
            .await
            .unwrap_err();
        assert_eq!(
            err,
            DeliveryError::Forbidden {
                host: host.to_owned(),
                addr: addr.parse::<IpAddr>().unwrap(),
            },
            "{target}"
        );
        assert_eq!(err.class(), "forbidden");
        assert!(!err.is_retryable());
    }
    assert_never_connected(&listener);
}

#[tokio::test]
async fn default_policy_refuses_localhost_after_dns_resolution() {
    let (listener, port) = untouched_listener();
    let client = DeliveryClient::new(HttpConfig::default()).unwrap();
    let err = client
        .post(
            &TargetUrl::parse(&format!("http://localhost:{port}/hook")).unwrap(),
            &[],
            b"{}".to_vec(),
        )
        .await
        .unwrap_err();
    match &err {
        DeliveryError::Forbidden { host, addr } => {
            assert_eq!(host, "localhost");
            assert!(addr.is_loopback(), "{addr}");
        }
        other => panic!("expected Forbidden, got {other:?}"),
    }
    assert!(err.to_string().contains("localhost"));
    assert_never_connected(&listener);
}

#[tokio::test]
async fn allow_loopback_lets_loopback_through_by_address_and_by_name() {
    let (addr, seen) = receiver().await;
    let client = loopback_client();
    let by_address = client.post(&url(addr, "/hook"), &[], vec![]).await.unwrap();
    assert_eq!(by_address.status, 200);
    let by_name = TargetUrl::parse(&format!("http://localhost:{}/hook", addr.port())).unwrap();
    let response = client.post(&by_name, &[], vec![]).await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(seen.hooks.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn redirects_are_returned_not_followed() {
    let (addr, seen) = receiver().await;
    let client = loopback_client();
    for (path, status) in [("/302", 302), ("/308", 308)] {
        let response = client
            .post(&url(addr, path), &[], b"{}".to_vec())
            .await
            .unwrap();
        assert_eq!(response.status, status);
        assert!(!response.is_success());
        assert_eq!(response.body_prefix, b"moved");
    }
    assert_eq!(seen.hits.load(Ordering::SeqCst), 2);
    assert_eq!(
        seen.target_hits.load(Ordering::SeqCst),
        0,
        "a redirect target was requested"
    );
}

#[tokio::test]
async fn response_body_is_capped() {
    let (addr, _seen) = receiver().await;
    let response = loopback_client()
        .post(&url(addr, "/big"), &[], vec![])
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.body_prefix, vec![b'x'; 1024]);

    let tiny = DeliveryClient::new(HttpConfig {
        max_response_body: 10,
        policy: NetworkPolicy::new().allow_loopback(),
        ..HttpConfig::default()
    })
    .unwrap();
    let response = tiny.post(&url(addr, "/big"), &[], vec![]).await.unwrap();
    assert_eq!(response.body_prefix, b"xxxxxxxxxx");
    let none = DeliveryClient::new(HttpConfig {
        max_response_body: 0,
        policy: NetworkPolicy::new().allow_loopback(),
        ..HttpConfig::default()
    })
    .unwrap();
    let response = none.post(&url(addr, "/big"), &[], vec![]).await.unwrap();
    assert_eq!((response.status, response.body_prefix.len()), (200, 0));
}

/// A raw server announcing a 1 GiB body, sending 1 MiB of it, then stalling: a client that
/// tried to read the whole body would hit its timeout; a capped read returns at once.
#[tokio::test]
async fn capped_read_does_not_wait_for_the_rest_of_a_huge_body() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buf).unwrap();
            assert!(n > 0, "client closed before sending a request");
            request.extend_from_slice(&buf[..n]);
        }
        socket
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1073741824\r\n\r\n")
            .unwrap();
        let chunk = vec![b'y'; 64 * 1024];
        for _ in 0..16 {
            if socket.write_all(&chunk).is_err() {
                return; // the client hung up: what a capped read does
            }
        }
        // Stall until the client closes the connection.
        while matches!(socket.read(&mut buf), Ok(n) if n > 0) {}
    });
    let client = DeliveryClient::new(HttpConfig {
        timeout: Duration::from_secs(3),
        policy: NetworkPolicy::new().allow_loopback(),
        ..HttpConfig::default()
    })
    .unwrap();
    let response = client.post(&url(addr, "/"), &[], vec![]).await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.body_prefix, vec![b'y'; 1024]);
    assert!(response.duration < Duration::from_secs(3));
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let (addr, seen) = receiver().await;
    let client = DeliveryClient::new(HttpConfig {
        timeout: Duration::from_millis(200),
        policy: NetworkPolicy::new().allow_loopback(),
        ..HttpConfig::default()
    })
    .unwrap();
    let started = std::time::Instant::now();
    let err = client
        .post(&url(addr, "/never"), &[], vec![])
        .await
        .unwrap_err();
    assert_eq!(err, DeliveryError::Timeout);
    assert_eq!(err.class(), "timeout");
    assert!(err.is_retryable());
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        seen.hits.load(Ordering::SeqCst),
        1,
        "the request did arrive"
    );
}

#[tokio::test]
async fn retry_after_is_parsed_from_seconds_and_dates() {
    let (addr, _seen) = receiver().await;
    let client = loopback_client();
    let busy = client.post(&url(addr, "/busy"), &[], vec![]).await.unwrap();
    assert_eq!(busy.status, 503);
    assert_eq!(busy.retry_after, Some(Duration::from_mins(2)));
    let dated = client
        .post(&url(addr, "/busy-date"), &[], vec![])
        .await
        .unwrap();
    assert_eq!(dated.status, 429);
    assert_eq!(
        dated.retry_after,
        Some(Duration::ZERO),
        "a past date means now"
    );
}

#[tokio::test]
async fn connection_refused_is_a_retryable_connect_error() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let err = loopback_client()
        .post(&url(closed, "/"), &[], vec![])
        .await
        .unwrap_err();
    assert!(matches!(err, DeliveryError::Connect(_)), "{err:?}");
    assert_eq!(err.class(), "connect");
    assert!(err.is_retryable());
    assert!(
        !err.to_string().contains(&closed.port().to_string()),
        "the URL leaked into the message: {err}"
    );
}

#[tokio::test]
async fn an_unknown_host_is_a_dns_error() {
    let err = DeliveryClient::new(HttpConfig::default())
        .unwrap()
        .post(
            &TargetUrl::parse("http://no-such-host.invalid/").unwrap(),
            &[],
            vec![],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, DeliveryError::Dns(_)), "{err:?}");
    assert_eq!(err.class(), "dns");
    assert!(err.to_string().contains("no-such-host.invalid"));
}

#[tokio::test]
async fn an_invalid_header_is_refused_before_sending() {
    let (addr, seen) = receiver().await;
    let err = loopback_client()
        .post(
            &url(addr, "/hook"),
            &headers(&[("webhook-signature", "v1,abc\r\nx-injected: 1")]),
            vec![],
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        DeliveryError::InvalidHeader {
            name: "webhook-signature".to_owned()
        }
    );
    assert!(!err.to_string().contains("abc"));
    assert_eq!(seen.hits.load(Ordering::SeqCst), 0);
}
