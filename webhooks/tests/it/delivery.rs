//! Webhook delivery end to end: real axum receivers on 127.0.0.1:0, the real HTTP client, the
//! delivery loop, and a manual store clock to step through retry schedules without sleeping.
//! (Requests in flight, their limits and a graceful stop: `delivery_in_flight.rs`.)

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use hookspool::{ManualClock, MemoryBackend, Phase, Store, Timestamp};
use hookspool_webhooks::{
    DeliveryConfig, DeliveryOutcome, Error, Hooks, HooksOptions, HttpConfig, NetworkPolicy,
    OutcomeKind, RetrySchedule, Secret, SignatureScheme, SigningKey, SubscribeOptions,
    SubscriptionInfo, SubscriptionUpdate, UrlResolver,
};
use tokio::sync::{broadcast, oneshot};

use crate::support::{Received, receiver, receiver_with};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const T0: Timestamp = Timestamp(1_700_000_000_000);

/// Settings for tests: loopback allowed, quick polling, short timeouts, no jitter.
pub(crate) fn config(delays: &[u64]) -> DeliveryConfig {
    DeliveryConfig {
        poll_interval: Duration::from_millis(10),
        schedule: RetrySchedule {
            delays: delays.iter().map(|s| Duration::from_secs(*s)).collect(),
            jitter: 0.0,
            ..RetrySchedule::standard()
        },
        http: HttpConfig {
            timeout: Duration::from_secs(5),
            policy: NetworkPolicy::new().allow_loopback(),
            ..HttpConfig::default()
        },
        ..DeliveryConfig::default()
    }
}

pub(crate) struct Running {
    pub(crate) hooks: Hooks<MemoryBackend>,
    pub(crate) clock: ManualClock,
    results: broadcast::Receiver<DeliveryOutcome>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<hookspool_webhooks::Result<()>>>,
}

pub(crate) async fn start(config: DeliveryConfig) -> Running {
    start_with(config, HooksOptions::default()).await
}

pub(crate) async fn start_with(config: DeliveryConfig, options: HooksOptions) -> Running {
    let clock = ManualClock::new(T0);
    let store = Store::new(MemoryBackend::new()).with_clock(clock.clone());
    let hooks = Hooks::open_with(store, options).await.unwrap();
    let results = hooks.results();
    let (stop, stopped) = oneshot::channel::<()>();
    let deliverer = hooks.deliverer(config).unwrap();
    let task = tokio::spawn(deliverer.run(async {
        let _ = stopped.await;
    }));
    Running {
        hooks,
        clock,
        results,
        stop: Some(stop),
        task: Some(task),
    }
}

impl Running {
    pub(crate) async fn outcome(&mut self) -> DeliveryOutcome {
        tokio::time::timeout(Duration::from_secs(10), self.results.recv())
            .await
            .expect("no outcome in time")
            .expect("results closed")
    }

    pub(crate) async fn stop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

fn header<'a>(r: &'a Received, name: &str) -> &'a str {
    r.headers
        .get(name)
        .unwrap_or_else(|| panic!("missing header {name}"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn fire_delivers_a_signed_request_and_records_it() {
    let mut rx = receiver(200).await;
    let mut run = start(config(&[5])).await;
    let sub = run
        .hooks
        .subscribe(
            "order.*",
            &rx.url,
            SubscribeOptions::default().secret(SECRET),
        )
        .await
        .unwrap();
    let ids = run
        .hooks
        .fire("order.paid", br#"{"id":42}"#.to_vec())
        .await
        .unwrap();
    assert_eq!(ids.len(), 1);

    let req = rx.next().await;
    assert_eq!(&req.body[..], br#"{"id":42}"#);
    assert_eq!(header(&req, "webhook-id"), ids[0].as_str());
    assert_eq!(header(&req, "x-hookspool-event"), "order.paid");
    assert_eq!(header(&req, "content-type"), "application/json");
    assert!(header(&req, "user-agent").starts_with("hookspool/"));
    assert_eq!(
        header(&req, "webhook-timestamp"),
        (T0.as_millis() / 1000).to_string()
    );
    // A receiver verifies with the public `verify`.
    let key = SigningKey::from_whsec(SECRET).unwrap();
    let now = T0.as_millis() / 1000;
    hookspool_webhooks::verify(
        &[&key],
        |n| req.headers.get(n).and_then(|v| v.to_str().ok()),
        &req.body,
        now,
    )
    .expect("signature verifies");

    let outcome = run.outcome().await;
    assert_eq!(outcome.kind, OutcomeKind::Delivered);
    assert_eq!(outcome.delivery_id, ids[0]);
    assert_eq!(outcome.subscription.as_deref(), Some(sub.id.as_str()));
    assert_eq!((outcome.attempt, outcome.status), (1, Some(200)));
    assert!(outcome.is_final());

    let d = run.hooks.delivery(&ids[0]).await.unwrap().unwrap();
    assert_eq!(d.state, Phase::DONE);
    assert_eq!(d.attempts.len(), 1);
    assert_eq!(d.attempts[0].status, Some(200));
    assert_eq!(d.attempts[0].response, "receiver says hi");
    run.stop().await;
    rx.nothing_more();
}

#[tokio::test]
async fn failures_retry_on_the_schedule_then_die_and_replay_sends_again() {
    let mut rx = receiver(503).await;
    let mut run = start(config(&[5, 300])).await;
    run.hooks
        .subscribe("ping", &rx.url, SubscribeOptions::default())
        .await
        .unwrap();
    let id = run
        .hooks
        .fire("ping", b"{}".to_vec())
        .await
        .unwrap()
        .remove(0);

    rx.next().await;
    let o = run.outcome().await;
    assert_eq!(
        o.kind,
        OutcomeKind::Retrying {
            at: T0.saturating_add(Duration::from_secs(5))
        }
    );
    assert_eq!(o.error.as_deref(), Some("http_503"));
    // Not due yet: nothing is sent until the clock reaches the retry time.
    run.clock.advance(Duration::from_millis(4_999));
    tokio::time::sleep(Duration::from_millis(50)).await;
    rx.nothing_more();
    run.clock.advance(Duration::from_millis(1));
    rx.next().await;
    let o = run.outcome().await;
    assert_eq!(o.attempt, 2);
    assert!(matches!(o.kind, OutcomeKind::Retrying { .. }));
    run.clock.advance(Duration::from_mins(5));
    rx.next().await;
    let o = run.outcome().await;
    assert_eq!(
        (o.attempt, o.kind.clone()),
        (3, OutcomeKind::Dead),
        "three attempts, then dead"
    );

    let d = run.hooks.delivery(&id).await.unwrap().unwrap();
    assert_eq!(d.state, Phase::DEAD);
    let numbers: Vec<u32> = d.attempts.iter().map(|a| a.number).collect();
    assert_eq!(numbers, [1, 2, 3]);

    rx.set_status(200);
    let replayed = run.hooks.replay(&id).await.unwrap();
    assert_eq!(replayed.id, id, "replay answers the delivery as it is now");
    assert_eq!(replayed.attempts.len(), 3, "its attempt log is kept");
    rx.next().await;
    let o = run.outcome().await;
    assert_eq!((o.attempt, o.kind), (4, OutcomeKind::Delivered));
    assert!(
        matches!(
            run.hooks.replay(&id).await,
            Err(Error::Store(hookspool::Error::PhaseConflict { .. }))
        ),
        "only dead deliveries replay"
    );
    // An id of no delivery (well formed, another queue's nonce or a key never used).
    let unknown = hookspool_webhooks::DeliveryId::parse("msg_00000000ffffffffffffffff").unwrap();
    for e in [
        run.hooks.replay(&unknown).await.unwrap_err(),
        run.hooks.attempts(&unknown).await.unwrap_err(),
    ] {
        assert!(matches!(e, Error::DeliveryNotFound(_)), "{e}");
        assert_eq!(e.code(), "delivery_not_found");
    }
    assert!(run.hooks.delivery(&unknown).await.unwrap().is_none());
    run.stop().await;
}

#[tokio::test]
async fn retry_after_is_honoured_within_the_clamp() {
    let mut rx = receiver(429).await;
    *rx.retry_after.lock().unwrap() = Some("8".to_owned());
    let mut run = start(config(&[5, 5])).await;
    run.hooks
        .subscribe("ping", &rx.url, SubscribeOptions::default())
        .await
        .unwrap();
    run.hooks.fire("ping", b"{}".to_vec()).await.unwrap();
    rx.next().await;
    let o = run.outcome().await;
    assert_eq!(
        o.kind,
        OutcomeKind::Retrying {
            at: T0.saturating_add(Duration::from_secs(8))
        }
    );
    // A Retry-After far beyond twice the scheduled delay is clamped to 2 × 5 s.
    *rx.retry_after.lock().unwrap() = Some("3600".to_owned());
    run.clock.advance(Duration::from_secs(8));
    rx.next().await;
    let o = run.outcome().await;
    let now = T0.saturating_add(Duration::from_secs(8));
    assert_eq!(
        o.kind,
        OutcomeKind::Retrying {
            at: now.saturating_add(Duration::from_secs(10))
        }
    );
    run.stop().await;
}

#[tokio::test]
async fn gone_410_removes_the_subscription() {
    let mut rx = receiver(410).await;
    let mut run = start(config(&[5])).await;
    let sub = run
        .hooks
        .subscribe("ping", &rx.url, SubscribeOptions::default())
        .await
        .unwrap();
    let id = run
        .hooks
        .fire("ping", b"{}".to_vec())
        .await
        .unwrap()
        .remove(0);
    rx.next().await;
    let o = run.outcome().await;
    assert_eq!(o.kind, OutcomeKind::Gone);
    assert!(
        run.hooks.subscription(&sub.id).is_none(),
        "410 removes the subscription"
    );
    assert_eq!(
        run.hooks
            .delivery(&id)
            .await
            .unwrap()
            .unwrap()
            .state
            .as_str(),
        "gone"
    );
    assert!(
        run.hooks
            .fire("ping", b"{}".to_vec())
            .await
            .unwrap()
            .is_empty()
    );
    run.stop().await;
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let mut target = receiver(200).await;
    let mut rx = receiver_with(308, Some(target.url.clone())).await;
    let mut run = start(config(&[5])).await;
    run.hooks
        .subscribe("ping", &rx.url, SubscribeOptions::default())
        .await
        .unwrap();
    run.hooks.fire("ping", b"{}".to_vec()).await.unwrap();
    rx.next().await;
    let o = run.outcome().await;
    assert_eq!(o.status, Some(308));
    assert!(
        matches!(o.kind, OutcomeKind::Retrying { .. }),
        "a redirect is a failed attempt"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    target.nothing_more();
    run.stop().await;
}

#[tokio::test]
async fn loopback_targets_are_refused_by_default() {
    let mut rx = receiver(200).await;
    let mut cfg = config(&[5]);
    cfg.http.policy = NetworkPolicy::new();
    let mut run = start(cfg).await;
    run.hooks
        .subscribe("ping", &rx.url, SubscribeOptions::default())
        .await
        .unwrap();
    let id = run
        .hooks
        .fire("ping", b"{}".to_vec())
        .await
        .unwrap()
        .remove(0);
    let o = run.outcome().await;
    assert_eq!(o.kind, OutcomeKind::Dead, "a refused target is not retried");
    assert!(
        o.error.as_deref().unwrap().starts_with("forbidden"),
        "{:?}",
        o.error
    );
    assert_eq!(
        run.hooks.delivery(&id).await.unwrap().unwrap().state,
        Phase::DEAD
    );
    rx.nothing_more();
    run.stop().await;
}

#[tokio::test]
async fn subscribing_twice_delivers_once_and_notify_reaches_only_the_owner() {
    let mut a = receiver(200).await;
    let mut b = receiver(200).await;
    let mut run = start(config(&[5])).await;
    let opts = |owner: &str| SubscribeOptions::default().owner(owner);
    let s1 = run
        .hooks
        .subscribe("invoice.paid", &a.url, opts("alice"))
        .await
        .unwrap();
    let s2 = run
        .hooks
        .subscribe("invoice.paid", &a.url, opts("alice"))
        .await
        .unwrap();
    assert_eq!(
        s1.id, s2.id,
        "subscribe is idempotent on (owner, event, url)"
    );
    run.hooks
        .subscribe("invoice.paid", &b.url, opts("bob"))
        .await
        .unwrap();

    let ids = run.hooks.fire("invoice.paid", b"1".to_vec()).await.unwrap();
    assert_eq!(ids.len(), 2, "one delivery per subscription");
    a.next().await;
    b.next().await;
    run.outcome().await;
    run.outcome().await;

    let ids = run
        .hooks
        .notify("bob", "invoice.paid", b"2".to_vec())
        .await
        .unwrap();
    assert_eq!(ids.len(), 1);
    assert_eq!(&b.next().await.body[..], b"2");
    run.outcome().await;
    a.nothing_more();
    run.stop().await;
}

#[tokio::test]
async fn emitters_attach_detach_and_emit_with_a_request_id() {
    let mut rx = receiver(200).await;
    let mut run = start(config(&[5])).await;
    let opts = SubscribeOptions::default()
        .scheme(SignatureScheme::WebhooksEmitter)
        .secret("secret");
    run.hooks
        .attach(
            "audit",
            &["user.created", "user.deleted"],
            &rx.url,
            opts.clone(),
        )
        .await
        .unwrap();
    assert!(matches!(
        run.hooks.attach("audit", &["x"], &rx.url, opts).await,
        Err(Error::SubscriptionExists(id)) if id == "audit"
    ));
    let (request_id, ids) = run
        .hooks
        .emit("user.deleted", br#"{"u":1}"#.to_vec(), Some("req-1"))
        .await
        .unwrap();
    assert_eq!((request_id.as_str(), ids.len()), ("req-1", 1));
    let req = rx.next().await;
    assert_eq!(header(&req, "x-webhooks-event"), "user.deleted");
    assert_eq!(header(&req, "x-request-id"), "req-1");
    let key = SigningKey::from_text("secret").unwrap();
    hookspool_webhooks::verify_emitter(&key, header(&req, "x-webhooks-signature"), &req.body)
        .unwrap();
    run.outcome().await;

    assert!(run.hooks.detach("audit").await.unwrap());
    assert!(!run.hooks.detach("audit").await.unwrap());
    assert!(
        run.hooks
            .emit("user.deleted", b"{}".to_vec(), None)
            .await
            .unwrap()
            .1
            .is_empty()
    );
    run.stop().await;
}

struct FromDb(Vec<String>);

impl UrlResolver for FromDb {
    async fn resolve(&self, _event: &str) -> hookspool_webhooks::Result<Vec<String>> {
        Ok(self.0.clone())
    }
}

#[tokio::test]
async fn fire_to_urls_and_through_a_resolver_without_a_registry() {
    let mut a = receiver(200).await;
    let mut b = receiver(200).await;
    let options = HooksOptions {
        direct_secret: Some(Secret::new(SECRET)),
        ..HooksOptions::default()
    };
    let mut run = start_with(config(&[5]), options).await;
    let ids = run
        .hooks
        .fire_to(&[&a.url, &b.url], "ping", b"x".to_vec())
        .await
        .unwrap();
    assert_eq!(ids.len(), 2);
    let key = SigningKey::from_whsec(SECRET).unwrap();
    for req in [a.next().await, b.next().await] {
        hookspool_webhooks::verify(
            &[&key],
            |n| req.headers.get(n).and_then(|v| v.to_str().ok()),
            &req.body,
            T0.as_millis() / 1000,
        )
        .expect("direct deliveries are signed with the direct secret");
    }
    run.outcome().await;
    run.outcome().await;
    let resolver = FromDb(vec![a.url.clone()]);
    let ids = run
        .hooks
        .fire_resolved(&resolver, "ping", b"y".to_vec())
        .await
        .unwrap();
    assert_eq!(ids.len(), 1);
    assert_eq!(&a.next().await.body[..], b"y");
    run.outcome().await;
    b.nothing_more();
    run.stop().await;
}

#[tokio::test]
async fn key_rotation_sends_both_signatures_during_the_grace_period() {
    let mut rx = receiver(200).await;
    let mut run = start(config(&[5])).await;
    let sub = run
        .hooks
        .subscribe("ping", &rx.url, SubscribeOptions::default().secret(SECRET))
        .await
        .unwrap();
    let rotated = run.hooks.rotate_secret(&sub.id, None).await.unwrap();
    assert_ne!(rotated.secret, sub.secret);
    run.hooks.fire("ping", b"{}".to_vec()).await.unwrap();
    let req = rx.next().await;
    assert_eq!(header(&req, "webhook-signature").split(' ').count(), 2);
    let now = T0.as_millis() / 1000;
    for secret in [SECRET, rotated.secret.expose()] {
        let key = SigningKey::from_whsec(secret).unwrap();
        hookspool_webhooks::verify(
            &[&key],
            |n| req.headers.get(n).and_then(|v| v.to_str().ok()),
            &req.body,
            now,
        )
        .expect("either secret verifies");
    }
    run.outcome().await;
    // After the grace period only the new signature is sent.
    run.clock
        .advance(Duration::from_hours(24) + Duration::from_secs(1));
    run.hooks.fire("ping", b"{}".to_vec()).await.unwrap();
    let req = rx.next().await;
    assert_eq!(header(&req, "webhook-signature").split(' ').count(), 1);
    run.stop().await;
}

#[tokio::test]
async fn disabled_subscriptions_get_nothing_and_updates_apply() {
    let mut rx = receiver(200).await;
    let mut other = receiver(200).await;
    let mut run = start(config(&[5])).await;
    let sub = run
        .hooks
        .subscribe("ping", &rx.url, SubscribeOptions::default())
        .await
        .unwrap();
    run.hooks.set_enabled(&sub.id, false).await.unwrap();
    assert!(
        run.hooks
            .fire("ping", b"{}".to_vec())
            .await
            .unwrap()
            .is_empty()
    );
    let update = SubscriptionUpdate {
        url: Some(other.url.clone()),
        enabled: Some(true),
        headers: Some(BTreeMap::from([("X-Tenant".to_owned(), "acme".to_owned())])),
        ..SubscriptionUpdate::default()
    };
    run.hooks.update(&sub.id, update).await.unwrap();
    run.hooks.fire("ping", b"{}".to_vec()).await.unwrap();
    let req = other.next().await;
    assert_eq!(header(&req, "x-tenant"), "acme");
    run.outcome().await;
    rx.nothing_more();
    assert_eq!(run.hooks.deregister_url(&other.url).await.unwrap(), 1);
    assert!(run.hooks.subscriptions().is_empty());
    run.stop().await;
}

#[tokio::test]
async fn strict_fifo_holds_back_what_follows_a_failing_delivery() {
    let mut rx = receiver(503).await;
    let mut run = start(config(&[5, 5, 5])).await;
    run.hooks
        .subscribe(
            "seq",
            &rx.url,
            SubscribeOptions::default().strict_fifo(true),
        )
        .await
        .unwrap();
    for n in 1..=3 {
        run.hooks
            .fire("seq", format!("{n}").into_bytes())
            .await
            .unwrap();
    }
    assert_eq!(&rx.next().await.body[..], b"1");
    run.outcome().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    rx.nothing_more();
    rx.set_status(200);
    run.clock.advance(Duration::from_secs(5));
    let order: Vec<Bytes> = vec![
        rx.next().await.body,
        rx.next().await.body,
        rx.next().await.body,
    ];
    assert_eq!(
        order,
        [&b"1"[..], b"2", b"3"],
        "the failed head goes first, then the rest in order"
    );
    run.stop().await;
}

#[tokio::test]
async fn bad_input_is_refused_with_typed_errors_and_nothing_is_stored() {
    let run = start(config(&[5])).await;
    let h = &run.hooks;
    let opts = SubscribeOptions::default;
    for url in [
        "ftp://x.example/hook",
        "not a url",
        "http://",
        "http://user:pw@x.example/",
    ] {
        assert!(
            matches!(
                h.subscribe("e", url, opts()).await,
                Err(Error::InvalidUrl { .. })
            ),
            "{url}"
        );
    }
    assert!(matches!(
        h.subscribe("or*der", "https://x.example/", opts()).await,
        Err(Error::InvalidEvent { .. })
    ));
    for bad in ["whsec_", "whsec_!!!", "whsec_c2hvcnQ="] {
        assert!(
            matches!(
                h.subscribe("e", "https://x.example/", opts().secret(bad))
                    .await,
                Err(Error::InvalidSecret(_))
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        h.update("sub_nope", SubscriptionUpdate::default()).await,
        Err(Error::SubscriptionNotFound(_))
    ));
    assert!(matches!(
        h.fire("order.*", b"{}".to_vec()).await,
        Err(Error::InvalidEvent { .. })
    ));
    h.subscribe("e", "https://x.example/", opts())
        .await
        .unwrap();
    let big = vec![b'x'; hookspool::DEFAULT_MAX_PAYLOAD + 1];
    assert!(matches!(
        h.fire("e", big).await,
        Err(Error::Store(hookspool::Error::PayloadTooLarge { .. }))
    ));
    assert!(matches!(
        h.fire_to(&["https://ok.example/", "gopher://x"], "e", b"{}".to_vec())
            .await,
        Err(Error::InvalidUrl { .. })
    ));
    let q = hookspool::QueueId::new(hookspool_webhooks::DELIVERIES_QUEUE).unwrap();
    assert_eq!(
        h.store().count(&q).await.unwrap(),
        0,
        "no failed call stored anything"
    );
    assert_eq!(h.subscriptions().len(), 1);
}

#[tokio::test]
async fn a_restart_continues_the_schedule_from_the_recorded_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let mut rx = receiver(503).await;
    let clock = ManualClock::new(T0);
    let open = || async {
        let backend = hookspool_sled::SledBackend::open(dir.path()).unwrap();
        Hooks::open(Store::new(backend).with_clock(clock.clone()))
            .await
            .unwrap()
    };
    let run = |hooks: Hooks<hookspool_sled::SledBackend>| {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(hooks.deliverer(config(&[5, 300, 300])).unwrap().run(async {
            let _ = stopped.await;
        }));
        (stop, task)
    };

    let hooks = open().await;
    hooks
        .subscribe("ping", &rx.url, SubscribeOptions::default())
        .await
        .unwrap();
    let id = hooks.fire("ping", b"{}".to_vec()).await.unwrap().remove(0);
    let mut results = hooks.results();
    let (stop, task) = run(hooks.clone());
    rx.next().await;
    assert!(matches!(
        results.recv().await.unwrap().kind,
        OutcomeKind::Retrying { .. }
    ));
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    drop((hooks, results));

    // A new process: the retry is still due at T0 + 5 s, and it is attempt 2, not 1.
    let hooks = open().await;
    let d = hooks.delivery(&id).await.unwrap().unwrap();
    assert_eq!(
        d.next_attempt,
        Some(T0.saturating_add(Duration::from_secs(5)))
    );
    let mut results = hooks.results();
    let (stop, task) = run(hooks.clone());
    clock.advance(Duration::from_secs(5));
    rx.next().await;
    let o = results.recv().await.unwrap();
    assert_eq!(o.attempt, 2);
    let at = T0.saturating_add(Duration::from_secs(5 + 300));
    assert_eq!(
        o.kind,
        OutcomeKind::Retrying { at },
        "the second delay of the schedule"
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn secrets_never_show_in_debug_output() {
    let run = start_with(
        config(&[5]),
        HooksOptions {
            direct_secret: Some(Secret::new(SECRET)),
            ..HooksOptions::default()
        },
    )
    .await;
    let sub = run
        .hooks
        .subscribe(
            "e",
            "https://x.example/",
            SubscribeOptions::default().secret(SECRET),
        )
        .await
        .unwrap();
    let rotated = run.hooks.rotate_secret(&sub.id, None).await.unwrap();
    let key = SigningKey::from_whsec(SECRET).unwrap();
    let shown = format!("{rotated:?} {sub:?} {key:?} {:?}", run.hooks);
    for secret in [
        SECRET,
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        rotated.secret.expose(),
    ] {
        assert!(!shown.contains(secret), "a secret in Debug output: {shown}");
    }
    let json = serde_json::to_string(&SubscriptionInfo::of(&rotated)).unwrap();
    assert!(
        !json.contains("whsec_"),
        "a secret in serialized output: {json}"
    );
}

/// The whole default schedule (8 attempts over about 33 hours, ±20 % jitter) on tokio's paused
/// clock: the store reads tokio's clock, so the loop's waits and the recorded times agree.
#[tokio::test(start_paused = true)]
async fn the_default_schedule_runs_on_the_paused_clock() {
    let mut rx = receiver(500).await;
    let store = Store::new(MemoryBackend::new()).with_clock(hookspool::TokioClock::starting_at(T0));
    let hooks = Hooks::open(store).await.unwrap();
    let mut results = hooks.results();
    let cfg = DeliveryConfig {
        // Long enough that no timer but the schedule's matters while a request is on the wire.
        poll_interval: Duration::from_hours(24),
        lease: Duration::from_hours(48),
        http: HttpConfig {
            timeout: Duration::from_hours(24),
            policy: NetworkPolicy::new().allow_loopback(),
            ..HttpConfig::default()
        },
        ..DeliveryConfig::default()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(hooks.deliverer(cfg).unwrap().run(async {
        let _ = stopped.await;
    }));
    hooks
        .subscribe("ping", &rx.url, SubscribeOptions::default())
        .await
        .unwrap();
    let id = hooks.fire("ping", b"{}".to_vec()).await.unwrap().remove(0);
    let mut announced = Vec::new();
    // Virtual time: a deadline of days passes in no real time once nothing else is pending.
    let day = Duration::from_hours(24);
    loop {
        tokio::time::timeout(day, rx.requests.recv())
            .await
            .unwrap()
            .unwrap();
        let o = tokio::time::timeout(day, results.recv())
            .await
            .unwrap()
            .unwrap();
        match o.kind {
            OutcomeKind::Retrying { at } => announced.push(at),
            OutcomeKind::Dead => break,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    let attempts = hooks.attempts(&id).await.unwrap();
    assert_eq!(attempts.len(), 8, "the default schedule makes 8 attempts");
    let schedule = RetrySchedule::standard();
    for (i, pair) in attempts.windows(2).enumerate() {
        let gap = pair[1].at.as_millis() - pair[0].at.as_millis();
        let d = u64::try_from(schedule.delays[i].as_millis()).unwrap();
        assert!(
            gap >= d * 8 / 10 && gap <= d * 12 / 10 + 1_000,
            "attempt {} came {gap} ms after the previous; the schedule says {d} ms ± 20 %",
            i + 2
        );
        assert_eq!(
            pair[1].at, announced[i],
            "the attempt is made when it was announced"
        );
    }
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn replay_subscription_sends_every_dead_delivery_of_that_subscription_again() {
    let mut rx = receiver(400).await;
    let mut other = receiver(400).await;
    let mut cfg = config(&[5]);
    cfg.retry_client_errors = false;
    let mut run = start(cfg).await;
    let sub = run
        .hooks
        .subscribe("ping", &rx.url, SubscribeOptions::default())
        .await
        .unwrap();
    run.hooks
        .subscribe("ping", &other.url, SubscribeOptions::default())
        .await
        .unwrap();
    run.hooks.fire("ping", b"1".to_vec()).await.unwrap();
    run.hooks.fire("ping", b"2".to_vec()).await.unwrap();
    for _ in 0..4 {
        let o = run.outcome().await;
        assert_eq!(
            (o.status, o.kind),
            (Some(400), OutcomeKind::Dead),
            "a 400 is final when 4xx are not retried"
        );
    }
    for _ in 0..2 {
        rx.next().await;
        other.next().await;
    }
    rx.set_status(200);
    assert_eq!(run.hooks.replay_subscription(&sub.id).await.unwrap(), 2);
    let mut bodies = vec![rx.next().await.body, rx.next().await.body];
    bodies.sort();
    assert_eq!(bodies, [&b"1"[..], b"2"]);
    for _ in 0..2 {
        assert_eq!(run.outcome().await.kind, OutcomeKind::Delivered);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    other.nothing_more();
    run.stop().await;
}
