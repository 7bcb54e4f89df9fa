//! The HTTP API's inbound callbacks, end to end: a real server on 127.0.0.1:0 receiving
//! Standard Webhooks callbacks, verifying their signatures, and pushing them durably to the
//! channel's queue, or refusing them with the right status.

use hookspool::{QueueConfig, QueueId};
use hookspool_http::ApiConfig;
use hookspool_webhooks::{Secret, SignInput, SignatureScheme, SigningKey, sign};
use reqwest::{Method, StatusCode};

use super::http_hooks::{
    CHANNEL_SECRET, OTHER_SECRET, answer, assert_error, start, start_with, unix_now,
};

/// Signs a callback body as a Standard Webhooks sender would.
fn signed_headers(secret: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    let key = SigningKey::from_whsec(secret).unwrap();
    let input = SignInput {
        delivery_id: "msg_inbound1",
        event: "ping",
        timestamp: unix_now(),
        body,
    };
    sign(SignatureScheme::StandardWebhooks, &[&key], &input).unwrap()
}

#[tokio::test]
async fn callbacks_verify_signatures_and_push_durably() {
    // Tokens configured: callbacks are public, the rest is not.
    let api = start_with(ApiConfig {
        tokens: vec![Secret::new("t0ken")],
        ..ApiConfig::default()
    })
    .await;
    let open = QueueId::new("inbox").unwrap();
    let locked = QueueId::new("signed").unwrap();
    api.store
        .create_queue(QueueConfig::new(open.clone()))
        .await
        .unwrap();
    api.store
        .create_queue({
            let mut q = QueueConfig::new(locked.clone());
            hookspool_webhooks::set_channel_secret(&mut q, Some(&Secret::new(CHANNEL_SECRET)))
                .unwrap();
            q
        })
        .await
        .unwrap();

    // Unsigned, to a channel without a secret: stored with its metadata.
    let resp = api
        .client
        .post(format!("{}/callbacks/inbox", api.base))
        .header("content-type", "text/plain")
        .header("webhook-id", "msg_abc")
        .body("hello")
        .send()
        .await
        .unwrap();
    let a = answer(resp).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.json);
    let key = a.json["key"].as_u64().unwrap();
    let item = api.store.fetch_key(&open, key).await.unwrap().unwrap();
    assert_eq!(item.payload, b"hello");
    assert_eq!(item.metadata["content_type"], "text/plain");
    assert_eq!(item.metadata["webhook_id"], "msg_abc");

    // To a channel with a secret: a good signature is accepted...
    let body = br#"{"ping":1}"#;
    let post = |headers: Vec<(&'static str, String)>| {
        let mut req = api
            .client
            .post(format!("{}/callbacks/signed", api.base))
            .header("content-type", "application/json")
            .body(body.to_vec());
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move { answer(req.send().await.unwrap()).await }
    };
    let a = post(signed_headers(CHANNEL_SECRET, body)).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.json);
    let item = api
        .store
        .fetch_key(&locked, a.json["key"].as_u64().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.payload, body);
    assert_eq!(item.metadata["webhook_id"], "msg_inbound1");

    // ...a wrong signature, a missing one, or a changed body are refused, and nothing is
    // pushed.
    let a = post(signed_headers(OTHER_SECRET, body)).await;
    assert_error(&a, StatusCode::UNAUTHORIZED, "invalid_signature");
    let a = post(Vec::new()).await;
    assert_error(&a, StatusCode::UNAUTHORIZED, "invalid_signature");
    let a = post(signed_headers(CHANNEL_SECRET, b"{\"ping\":2}")).await;
    assert_error(&a, StatusCode::UNAUTHORIZED, "invalid_signature");
    assert_eq!(api.store.count(&locked).await.unwrap(), 1);

    // Unknown channels, and hookspool's own queues, do not exist as channels.
    for channel in ["nope", "hookspool.subscriptions", "Bad%20Id"] {
        let a = api
            .raw(
                Method::POST,
                &format!("/callbacks/{channel}"),
                "text/plain",
                "x",
            )
            .await;
        assert_error(&a, StatusCode::NOT_FOUND, "channel_not_found");
    }
    assert!(api.hooks.subscriptions().is_empty());

    // The protected routes want the token.
    let a = api.call(Method::GET, "/hooks/subscriptions", None).await;
    assert_error(&a, StatusCode::UNAUTHORIZED, "unauthorized");
    let resp = api
        .client
        .get(format!("{}/hooks/subscriptions", api.base))
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

/// A channel whose secret is not a whsec_ secret (`set_channel_secret` refuses one, but an
/// older version stored what it was given) refuses every callback as misconfigured (500),
/// storing nothing.
#[tokio::test]
async fn a_channel_whose_secret_cannot_verify_refuses_callbacks() {
    let api = start().await;
    let broken = QueueId::new("broken").unwrap();
    let mut q = QueueConfig::new(broken.clone());
    let refused = hookspool_webhooks::set_channel_secret(&mut q, Some(&Secret::new("not-whsec")));
    assert!(refused.is_err(), "a secret that cannot verify is refused");
    q.metadata.insert(
        hookspool_webhooks::CHANNEL_SECRET.to_owned(),
        "not-whsec".to_owned(),
    );
    api.store.create_queue(q).await.unwrap();
    let a = api
        .raw(Method::POST, "/callbacks/broken", "text/plain", "x")
        .await;
    assert_error(
        &a,
        StatusCode::INTERNAL_SERVER_ERROR,
        "channel_misconfigured",
    );
    assert_eq!(api.store.count(&broken).await.unwrap(), 0);
}
