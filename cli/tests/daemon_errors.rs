//! Bad input against the real `hookspool serve` process: each gets the right 4xx and a JSON
//! body `{"error": code, "message": text}`, and the daemon still stops cleanly on SIGTERM.
#![allow(clippy::unwrap_used)] // tests may panic on failure

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::{sigterm, start};

const TOKEN: &str = "daemon-errors-token-0123";

/// One answer: status code and body.
struct Answer {
    status: u16,
    body: String,
}

/// A minimal HTTP/1.1 request over a fresh connection (`Connection: close`, so the answer
/// ends when the server closes). `headers` are extra `Name: value` lines.
fn request(addr: &str, method: &str, path: &str, headers: &[&str], body: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) and close before reading a large body: a failed write of
    // the body is not the test's concern, the answer is.
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // A reset after the answer arrived (the server closed with our body unread).
            Err(_) if !out.is_empty() => break,
            Err(e) => panic!("{method} {path}: no answer: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {path}: not an HTTP answer: {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: bad status line in {head:?}"));
    Answer {
        status,
        body: body.to_owned(),
    }
}

const AUTH: &str = "Authorization: Bearer daemon-errors-token-0123";
const JSON: &str = "Content-Type: application/json";

/// A request with the valid token and a JSON body.
fn json_request(addr: &str, method: &str, path: &str, body: &str) -> Answer {
    request(addr, method, path, &[AUTH, JSON], body.as_bytes())
}

/// Asserts the status and a JSON error body with string `error` and `message`, the code as
/// expected; returns the message.
fn assert_error(what: &str, answer: &Answer, status: u16, code: &str) -> String {
    assert_eq!(
        answer.status, status,
        "{what}: expected status {status}, got {} with body {}",
        answer.status, answer.body
    );
    let v: Value = serde_json::from_str(&answer.body).unwrap_or_else(|e| {
        panic!(
            "{what}: the error body is not JSON ({e}): {:?}",
            answer.body
        )
    });
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("{what}: the error body is not an object: {v}"));
    let error = obj
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{what}: `error` is missing or not a string: {v}"));
    let message = obj
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{what}: `message` is missing or not a string: {v}"));
    assert_eq!(error, code, "{what}: wrong error code in {v}");
    assert!(!message.is_empty(), "{what}: empty message in {v}");
    message.to_owned()
}

#[test]
fn every_bad_input_gets_its_4xx_and_a_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = start(dir.path(), &["--token", TOKEN, "--body-limit", "1024"]);
    let a = &addr;

    // Set-up: a plain queue with an item, and a callback channel with a whsec_ secret.
    let r = json_request(a, "POST", "/queues", r#"{"id": "orders"}"#);
    assert_eq!(r.status, 201, "{}", r.body);
    let r = json_request(
        a,
        "POST",
        "/queues/orders/items",
        r#"{"payload": {"n": 1}}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let r = json_request(
        a,
        "POST",
        "/queues",
        &format!(r#"{{"id": "inbox", "secret": "{secret}"}}"#),
    );
    assert_eq!(r.status, 201, "{}", r.body);

    let r = json_request(a, "POST", "/queues", r#"{"id": "broken""#);
    assert_error("malformed JSON", &r, 400, "malformed_json");

    let r = json_request(a, "POST", "/queues", r#"{"id": "q2", "colour": "red"}"#);
    let message = assert_error("unknown field", &r, 400, "invalid_json");
    assert!(
        message.contains("colour"),
        "unknown field: the message names the field: {message}"
    );

    let r = json_request(a, "POST", "/queues", r#"{"id": 42}"#);
    let message = assert_error("wrong type", &r, 400, "invalid_json");
    assert!(
        message.contains("id") || message.contains("string"),
        "wrong type: the message says what is wrong: {message}"
    );

    let big = format!(r#"{{"payload": "{}"}}"#, "x".repeat(2048));
    let r = json_request(a, "POST", "/queues/orders/items", &big);
    assert_error("oversize body (limit 1024)", &r, 413, "body_too_large");

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let body = br#"{"hello": "world"}"#;
    let r = request(
        a,
        "POST",
        "/callbacks/inbox",
        &[
            JSON,
            "webhook-id: msg_test",
            &format!("webhook-timestamp: {now}"),
            "webhook-signature: v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ],
        body,
    );
    assert_error("bad signature on a callback", &r, 401, "invalid_signature");
    let r = request(a, "POST", "/callbacks/inbox", &[JSON], body);
    assert_error("unsigned callback", &r, 401, "invalid_signature");
    let r = request(a, "GET", "/queues/inbox/count", &[AUTH], b"");
    assert!(
        r.status == 200 && r.body.contains(r#""total":0"#),
        "a refused callback stores nothing: {} {}",
        r.status,
        r.body
    );

    let r = request(a, "GET", "/queues", &[], b"");
    assert_error("missing token", &r, 401, "unauthorized");
    let r = request(
        a,
        "GET",
        "/queues",
        &["Authorization: Bearer not-the-right-token-at-all"],
        b"",
    );
    assert_error("wrong token", &r, 401, "unauthorized");

    let r = request(a, "GET", "/queues/no-such-queue", &[AUTH], b"");
    assert_error("unknown queue", &r, 404, "queue_not_found");
    let r = request(a, "GET", "/queues/orders/items/999999", &[AUTH], b"");
    assert_error("unknown item key", &r, 404, "item_not_found");
    let r = request(a, "GET", "/hooks/subscriptions/sub_nope", &[AUTH], b"");
    assert_error("unknown subscription id", &r, 404, "subscription_not_found");
    let r = request(
        a,
        "GET",
        "/deliveries/msg_00000000000000000000ffff",
        &[AUTH],
        b"",
    );
    assert_error("unknown delivery id", &r, 404, "delivery_not_found");

    let r = request(a, "GET", "/no/such/endpoint", &[AUTH], b"");
    assert_error("unknown route", &r, 404, "not_found");
    let r = request(a, "PUT", "/queues", &[AUTH], b"");
    assert_error("wrong method on /queues", &r, 405, "method_not_allowed");
    let r = request(a, "GET", "/events", &[AUTH], b"");
    assert_error("wrong method on /events", &r, 405, "method_not_allowed");

    sigterm(&child);
    let exit = child.wait().unwrap();
    assert!(
        exit.success(),
        "SIGTERM ends the daemon with exit code 0, got {exit:?}"
    );
}
