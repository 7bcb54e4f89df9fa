//! The outbox in the application's own transaction, on a real PostgreSQL server: events
//! fired (and items pushed) in a transaction are delivered when it commits and never when
//! it rolls back, from Rust (`PostgresBackend::fire_in`, `push_in`) and from a plain SQL
//! session (`SELECT hookspool.fire(…)`), and the SQL `fire` picks exactly the subscriptions
//! `Hooks::fire` picks. Two processes on one database: an idempotency key fires once,
//! concurrent subscribes make one subscription, and a removed subscription's backlog is
//! cancelled while a subscription made again under its id gets its new delivery.

use std::collections::BTreeSet;
use std::time::Duration;

use hookspool::{NewItem, Phase, QueueConfig, QueueId, Store};
use hookspool_postgres::{PostgresBackend, testing};
use hookspool_webhooks::{
    DeliveryConfig, Hooks, HttpConfig, NetworkPolicy, SigningKey, SubscribeOptions,
};
use serde_json::json;

use crate::support::{Receiver, receiver};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A backend on a fresh schema, the webhook side on it, and its delivery loop running.
async fn start() -> (PostgresBackend, Hooks<PostgresBackend>) {
    let backend = PostgresBackend::open(testing::options()).await.unwrap();
    let hooks = Hooks::open(Store::new(backend.clone())).await.unwrap();
    tokio::spawn(
        hooks
            .deliverer(config())
            .unwrap()
            .run(std::future::pending()),
    );
    (backend, hooks)
}

/// The tests' delivery loop: a short poll, requests to loopback allowed.
fn config() -> DeliveryConfig {
    DeliveryConfig {
        poll_interval: Duration::from_millis(20),
        http: HttpConfig {
            timeout: Duration::from_secs(5),
            policy: NetworkPolicy::new().allow_loopback(),
            ..HttpConfig::default()
        },
        ..DeliveryConfig::default()
    }
}

/// Two processes on one schema (each with a backend and a pool of its own).
async fn two_processes() -> (Hooks<PostgresBackend>, Hooks<PostgresBackend>) {
    let options = testing::options();
    let schema = options.schema.clone();
    let a = Hooks::open(Store::new(PostgresBackend::open(options).await.unwrap()))
        .await
        .unwrap();
    let b = Hooks::open(Store::new(
        PostgresBackend::open(
            hookspool_postgres::PostgresOptions::new(testing::TestServer::shared().url())
                .schema(&schema)
                .pool_size(4),
        )
        .await
        .unwrap(),
    ))
    .await
    .unwrap();
    (a, b)
}

/// The body of the next request, after checking its signature with [`SECRET`].
async fn next_verified(rx: &mut Receiver) -> serde_json::Value {
    let req = tokio::time::timeout(Duration::from_secs(10), rx.next())
        .await
        .expect("a request within 10 s");
    let key = SigningKey::from_whsec(SECRET).unwrap();
    let now = hookspool::Timestamp::now().as_millis() / 1000;
    hookspool_webhooks::verify(
        &[&key],
        |n| req.headers.get(n).and_then(|v| v.to_str().ok()),
        &req.body,
        now,
    )
    .expect("the signature verifies");
    serde_json::from_slice(&req.body).unwrap()
}

/// An application table of its own, in the backend's schema so that tests do not meet.
async fn app_table(backend: &PostgresBackend) -> String {
    let table = format!("\"{}\".orders", backend.schema());
    let conn = backend.connection().await.unwrap();
    conn.batch_execute(&format!("CREATE TABLE {table} (id int PRIMARY KEY)"))
        .await
        .unwrap();
    table
}

/// [`start`], with a receiver subscribed to `order.*` (signed with [`SECRET`]).
async fn start_with_orders() -> (PostgresBackend, Hooks<PostgresBackend>, Receiver) {
    let (backend, hooks) = start().await;
    let rx = receiver(200).await;
    hooks
        .subscribe(
            "order.*",
            &rx.url,
            SubscribeOptions::default().secret(SECRET),
        )
        .await
        .unwrap();
    (backend, hooks, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fire_in_the_application_transaction_commits_or_rolls_back_with_it() {
    let (backend, hooks, mut rx) = start_with_orders().await;
    let table = app_table(&backend).await;

    // Rolled back: the order row and the event go together.
    let mut conn = backend.connection().await.unwrap();
    let tx = conn.transaction().await.unwrap();
    tx.execute(&format!("INSERT INTO {table} VALUES (1)"), &[])
        .await
        .unwrap();
    let ids = backend
        .fire_in(&tx, "order.created", &json!({"id": 1}), None)
        .await
        .unwrap();
    assert_eq!(ids.len(), 1, "one subscription wants it");
    tx.rollback().await.unwrap();

    // Committed.
    let tx = conn.transaction().await.unwrap();
    tx.execute(&format!("INSERT INTO {table} VALUES (2)"), &[])
        .await
        .unwrap();
    let committed = backend
        .fire_in(&tx, "order.created", &json!({"id": 2}), None)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // Deliveries go in key order, so the rolled-back one (smaller key) would come first.
    assert_eq!(next_verified(&mut rx).await, json!({"id": 2}));
    let delivery = hooks
        .delivery(&hookspool_webhooks::DeliveryId::parse(&committed[0]).unwrap())
        .await
        .unwrap()
        .expect("the committed delivery exists");
    assert_eq!(delivery.event, "order.created");
    let rolled_back = hooks
        .delivery(&hookspool_webhooks::DeliveryId::parse(&ids[0]).unwrap())
        .await
        .unwrap();
    assert!(rolled_back.is_none(), "a rolled-back fire leaves nothing");
    rx.nothing_more();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_in_the_application_transaction_is_visible_only_after_commit() {
    let backend = PostgresBackend::open(testing::options()).await.unwrap();
    let store = Store::new(backend.clone());
    let q = QueueId::new("emails").unwrap();
    store
        .create_queue(QueueConfig::new(q.clone()))
        .await
        .unwrap();

    let mut conn = backend.connection().await.unwrap();
    let tx = conn.transaction().await.unwrap();
    let keys = backend
        .push_in(
            &tx,
            &q,
            vec![NewItem::new(b"a".to_vec()), NewItem::new(b"b".to_vec())],
        )
        .await
        .unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(
        store.count_phase(&q, &Phase::PENDING).await.unwrap(),
        0,
        "not before commit"
    );
    tx.rollback().await.unwrap();
    assert_eq!(
        store.count(&q).await.unwrap(),
        0,
        "nothing after a rollback"
    );

    let tx = conn.transaction().await.unwrap();
    let keys = backend
        .push_in(&tx, &q, vec![NewItem::new(b"c".to_vec())])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let items = store
        .fetch_page(&q, hookspool::Page::first(10))
        .await
        .unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].key, keys[0]);
    assert_eq!(items[0].payload, b"c");

    // The store's rules apply: a missing queue and an oversized payload are refused.
    let tx = conn.transaction().await.unwrap();
    let missing = QueueId::new("nope").unwrap();
    assert!(matches!(
        backend
            .push_in(&tx, &missing, vec![NewItem::new(b"x".to_vec())])
            .await,
        Err(hookspool::Error::QueueNotFound(_))
    ));
    tx.rollback().await.unwrap();
    let tx = conn.transaction().await.unwrap();
    let big = vec![0u8; hookspool::DEFAULT_MAX_PAYLOAD + 1];
    assert!(matches!(
        backend.push_in(&tx, &q, vec![NewItem::new(big)]).await,
        Err(hookspool::Error::PayloadTooLarge { .. })
    ));
    tx.rollback().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_fire_from_a_plain_session_commits_or_rolls_back() {
    let (backend, hooks, mut rx) = start_with_orders().await;
    let schema = backend.schema().to_owned();

    // A plain client, as an application in any language would use: no hookspool code.
    let client = testing::client().await;
    client
        .batch_execute(&format!(
            "BEGIN; SELECT \"{schema}\".fire('order.created', '{{\"id\":41}}'); ROLLBACK; \
             BEGIN; SELECT \"{schema}\".fire('order.created', '{{\"id\":42}}'); COMMIT;"
        ))
        .await
        .unwrap();
    assert_eq!(next_verified(&mut rx).await, json!({"id": 42}));

    // Bad input is refused with a message, and nothing is stored.
    let err = client
        .query_one(
            &format!("SELECT \"{schema}\".fire('bad event!', '{{}}')"),
            &[],
        )
        .await
        .unwrap_err();
    let message = err
        .as_db_error()
        .map(|e| e.message().to_owned())
        .unwrap_or_default();
    assert!(message.contains("invalid event name"), "{message}");

    // `push` from SQL, with a JSON payload and metadata.
    let q = QueueId::new("jobs").unwrap();
    hooks
        .store()
        .create_queue(QueueConfig::new(q.clone()))
        .await
        .unwrap();
    let row = client
        .query_one(
            &format!(
                "SELECT \"{schema}\".push('jobs', '{{\"n\":1}}'::jsonb, '{{\"kind\":\"a\"}}')"
            ),
            &[],
        )
        .await
        .unwrap();
    let key: i64 = row.get(0);
    let items = hooks
        .store()
        .fetch_page(&q, hookspool::Page::first(10))
        .await
        .unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].key, u64::try_from(key).unwrap());
    assert_eq!(items[0].payload, br#"{"n": 1}"#);
    assert_eq!(items[0].metadata.get("kind").map(String::as_str), Some("a"));
    let err = client
        .query_one(
            &format!("SELECT \"{schema}\".push('jobs', '\\x00'::bytea, '[1]')"),
            &[],
        )
        .await
        .unwrap_err();
    assert!(
        err.as_db_error()
            .is_some_and(|e| e.message().contains("metadata"))
    );
    rx.nothing_more();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_fire_picks_the_subscriptions_hooks_fire_picks() {
    let backend = PostgresBackend::open(testing::options()).await.unwrap();
    let hooks = Hooks::open(Store::new(backend.clone())).await.unwrap();
    let url = "https://example.com/hook";
    let subs = [
        ("*", None, true),
        ("order.*", None, true),
        ("order.created", Some("acme"), true),
        ("order.*", Some("globex"), true),
        ("order.created", None, false),
        ("invoice.*", Some("acme"), true),
        ("order.created.late", None, true),
    ];
    for (i, (pattern, owner, enabled)) in subs.iter().enumerate() {
        let mut options = SubscribeOptions::default();
        if let Some(o) = owner {
            options = options.owner(*o);
        }
        let sub = hooks
            .subscribe(pattern, &format!("{url}/{i}"), options)
            .await
            .unwrap();
        if !enabled {
            hooks.set_enabled(&sub.id, false).await.unwrap();
        }
    }
    let schema = backend.schema().to_owned();
    let conn = backend.connection().await.unwrap();
    for event in [
        "order.created",
        "order",
        "order.",
        "invoice.paid",
        "order.created.late",
        "x",
    ] {
        for owner in [None, Some("acme"), Some("globex"), Some("nobody")] {
            let rust: BTreeSet<String> = targets(
                &hooks,
                &hooks
                    .fire_with(
                        event,
                        b"{}".to_vec(),
                        owner.map_or_else(Default::default, |o| {
                            hookspool_webhooks::FireOptions::default().owner(o)
                        }),
                    )
                    .await
                    .unwrap()
                    .delivery_ids
                    .iter()
                    .map(|d| d.as_str().to_owned())
                    .collect::<Vec<_>>(),
            )
            .await;
            let row = conn
                .query_one(
                    &format!("SELECT \"{schema}\".fire($1, '{{}}'::jsonb, $2)"),
                    &[&event, &owner],
                )
                .await
                .unwrap();
            let ids: Vec<String> = row.get(0);
            let sql = targets(&hooks, &ids).await;
            assert_eq!(sql, rust, "event {event:?}, owner {owner:?}");
        }
    }
}

/// The subscriptions that the given deliveries go to.
async fn targets(hooks: &Hooks<PostgresBackend>, ids: &[String]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for id in ids {
        let d = hooks
            .delivery(&hookspool_webhooks::DeliveryId::parse(id).unwrap())
            .await
            .unwrap()
            .expect("the delivery exists");
        out.insert(d.subscription.expect("a subscription delivery"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_fires_once_across_processes_sharing_the_database() {
    const KEYS: usize = 40;
    let options = testing::options();
    let schema = options.schema.clone();
    let clock = hookspool::ManualClock::new(hookspool::Timestamp::from_millis(1_700_000_000_000));
    let open = |options: hookspool_postgres::PostgresOptions| {
        let clock = clock.clone();
        async move {
            let backend = PostgresBackend::open(options).await.unwrap();
            let store = Store::new(backend).with_clock(clock);
            let hooks_options = hookspool_webhooks::HooksOptions {
                idempotency_ttl: Duration::from_mins(1),
                ..Default::default()
            };
            Hooks::open_with(store, hooks_options).await.unwrap()
        }
    };
    let a = open(options).await;
    let b = open(
        hookspool_postgres::PostgresOptions::new(testing::TestServer::shared().url())
            .schema(&schema)
            .pool_size(4),
    )
    .await;
    a.subscribe(
        "order.*",
        "https://example.com/a",
        SubscribeOptions::default(),
    )
    .await
    .unwrap();
    a.subscribe("*", "https://example.com/b", SubscribeOptions::default())
        .await
        .unwrap();
    // B sees A's subscriptions (notice or reload) before it fires.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while b.subscriptions().len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "B never saw the subscriptions"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let fire = |hooks: Hooks<PostgresBackend>, key: String| async move {
        hooks
            .fire_with(
                "order.paid",
                br#"{"id":1}"#.to_vec(),
                hookspool_webhooks::FireOptions::default().idempotency_key(key),
            )
            .await
            .unwrap()
    };
    let mut tasks = Vec::new();
    for k in 0..KEYS {
        for hooks in [&a, &b, &a, &b] {
            tasks.push(tokio::spawn(fire(hooks.clone(), format!("key-{k}"))));
        }
    }
    let mut by_key: std::collections::BTreeMap<usize, Vec<hookspool_webhooks::Fired>> =
        std::collections::BTreeMap::new();
    for (i, t) in tasks.into_iter().enumerate() {
        by_key.entry(i / 4).or_default().push(t.await.unwrap());
    }
    for (k, fired) in &by_key {
        let first = fired.iter().filter(|f| !f.replayed).count();
        assert_eq!(first, 1, "key {k}: exactly one of the four fires fired");
        assert!(
            fired
                .iter()
                .all(|f| f.delivery_ids == fired[0].delivery_ids),
            "key {k}: every answer names the same deliveries"
        );
        assert_eq!(fired[0].delivery_ids.len(), 2);
    }
    let deliveries = hookspool::QueueId::new("hookspool.deliveries").unwrap();
    assert_eq!(
        a.store().count(&deliveries).await.unwrap(),
        u64::try_from(KEYS * 2).unwrap(),
        "each key fired once: two deliveries per key, no more"
    );

    // After the key's lifetime, the same key is a new request, on either process.
    clock.advance(Duration::from_secs(61));
    let again = fire(b.clone(), "key-0".to_owned()).await;
    assert!(!again.replayed);
    assert_ne!(again.delivery_ids, by_key[&0][0].delivery_ids);
    let replayed = fire(a.clone(), "key-0".to_owned()).await;
    assert!(replayed.replayed);
    assert_eq!(replayed.delivery_ids, again.delivery_ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_subscribes_on_two_processes_make_one_subscription() {
    let (a, b) = two_processes().await;

    for round in 0..10 {
        let url = format!("https://example.com/{round}");
        let tasks: Vec<_> = [&a, &b, &a, &b]
            .into_iter()
            .map(|h| {
                let (h, url) = (h.clone(), url.clone());
                tokio::spawn(async move {
                    h.subscribe_or_find("order.*", &url, SubscribeOptions::default())
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut ids = BTreeSet::new();
        let mut created = 0;
        for t in tasks {
            let (sub, new) = t.await.unwrap();
            ids.insert(sub.id);
            created += usize::from(new);
        }
        assert_eq!(ids.len(), 1, "round {round}: one subscription, not {ids:?}");
        assert_eq!(created, 1, "round {round}: one subscribe created it");
    }
    let subs = QueueId::new("hookspool.subscriptions").unwrap();
    assert_eq!(a.store().count(&subs).await.unwrap(), 10);

    // An emitter id attached by both at once: one wins, the other is told it exists.
    let (x, y) = tokio::join!(
        a.attach(
            "billing",
            &["invoice.*"],
            "https://example.com/billing",
            SubscribeOptions::default()
        ),
        b.attach(
            "billing",
            &["invoice.*"],
            "https://example.com/billing",
            SubscribeOptions::default()
        ),
    );
    assert!(
        x.is_ok() != y.is_ok(),
        "exactly one attach wins: {:?} / {:?}",
        x.as_ref().map(|s| &s.id),
        y.as_ref().map(|s| &s.id)
    );
    let lost = if x.is_ok() { y } else { x };
    assert!(matches!(
        lost,
        Err(hookspool_webhooks::Error::SubscriptionExists(_))
    ));
    // Detached and attached again at once (within the guard's life) works.
    assert!(a.detach("billing").await.unwrap());
    b.attach(
        "billing",
        &["invoice.*"],
        "https://example.com/billing",
        SubscribeOptions::default(),
    )
    .await
    .expect("attach after detach");
}

/// Process A fires 40 events to its emitter `x` and detaches it; B's delivery loop, started
/// then and claiming 4 at a time, cancels all 40 and sends none (it remembers `x` as removed
/// up to the deliveries queue's highest key). A attaches `x` again and fires: B sends that
/// delivery, whose key is higher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_subscriptions_backlog_is_cancelled_and_its_id_serves_again() {
    const BACKLOG: usize = 40;
    let (a, b) = two_processes().await;
    let mut rx = receiver(200).await;
    let url = rx.url.clone();
    a.attach("x", &["order.paid"], &url, SubscribeOptions::default())
        .await
        .unwrap();
    for n in 0..BACKLOG {
        let ids = a.fire("order.paid", format!(r#"{{"n":{n}}}"#)).await;
        assert_eq!(ids.unwrap().len(), 1);
    }
    assert!(a.detach("x").await.unwrap());

    let mut results = b.results();
    let config = DeliveryConfig {
        claim_batch: 4,
        ..config()
    };
    tokio::spawn(b.deliverer(config).unwrap().run(std::future::pending()));
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), results.recv())
            .await
            .expect("an outcome within 10 s")
            .unwrap()
    };
    for _ in 0..BACKLOG {
        let outcome = next().await;
        assert_eq!(
            outcome.kind,
            hookspool_webhooks::OutcomeKind::Cancelled,
            "{outcome:?}"
        );
    }
    rx.nothing_more();

    a.attach("x", &["order.paid"], &url, SubscribeOptions::default())
        .await
        .unwrap();
    let ids = a.fire("order.paid", r#"{"n":"again"}"#).await.unwrap();
    let outcome = next().await;
    assert_eq!(outcome.delivery_id, ids[0]);
    assert_eq!(
        outcome.kind,
        hookspool_webhooks::OutcomeKind::Delivered,
        "{outcome:?}"
    );
    let got = tokio::time::timeout(Duration::from_secs(10), rx.next())
        .await
        .expect("a request within 10 s");
    assert_eq!(&got.body[..], br#"{"n":"again"}"#);
    rx.nothing_more();
}
