//! Change notices across processes: a backend sends them only while another backend
//! listens on its schema. Alone, its pushes send nothing (a plain `LISTEN` of the channel,
//! which is not a backend's named listener, hears nothing); once a second backend is open,
//! the second hears the first's pushes through `Backend::changes`.

use std::time::Duration;

use futures_util::StreamExt;
use hookspool::{Backend, NewItem, QueueConfig, QueueId, Timestamp};
use hookspool_postgres::{PostgresBackend, testing};
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

/// A plain session that listens on `channel` and passes on the payloads it hears.
async fn plain_listener(
    channel: &str,
) -> (tokio_postgres::Client, mpsc::UnboundedReceiver<String>) {
    let (client, mut connection) =
        tokio_postgres::connect(testing::TestServer::shared().url(), tokio_postgres::NoTls)
            .await
            .expect("connect");
    let (tx, rx) = mpsc::unbounded_channel();
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    tokio::spawn(async move {
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(n) = message {
                let _ = tx.send(n.payload().to_owned());
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN \"{channel}\""))
        .await
        .expect("listen");
    (client, rx)
}

/// Waits (at most 20 s, looking every 20 ms) until `schema` has `n` named listeners.
async fn listeners(client: &tokio_postgres::Client, schema: &str, n: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let found: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&format!("hookspool listener {schema}")],
            )
            .await
            .expect("listeners")
            .get(0);
        if found == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{found} listeners of {schema} after 20 s, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The options of a fresh schema, the first backend open on it, and its queue `q`.
async fn first_backend() -> (
    hookspool_postgres::PostgresOptions,
    PostgresBackend,
    QueueId,
) {
    let options = testing::options();
    let a = PostgresBackend::open(options.clone())
        .await
        .expect("open a");
    let q = QueueId::new("q").expect("queue id");
    a.create_queue(QueueConfig::new(q.clone()))
        .await
        .expect("create");
    (options, a, q)
}

#[tokio::test]
async fn a_backend_notifies_only_while_another_backend_listens() {
    let (options, a, q) = first_backend().await;
    let schema = options.schema.clone();
    let (plain, mut heard) = plain_listener(&schema).await;
    listeners(&plain, &schema, 1).await;

    // Alone: pushes over more than one look (250 ms apart) send nothing.
    for i in 0..15 {
        a.push(
            &q,
            vec![NewItem::new(format!("alone {i}"))],
            Timestamp::now(),
        )
        .await
        .expect("push");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    if let Ok(payload) = heard.try_recv() {
        panic!("a backend alone on its schema sent a notice: {payload}");
    }

    // A second backend listens: the first's pushes reach it, within a look or two.
    let b = PostgresBackend::open(options).await.expect("open b");
    let mut changes = b.changes().expect("the backend has changes");
    listeners(&plain, &schema, 2).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut i = 0;
    loop {
        a.push(
            &q,
            vec![NewItem::new(format!("heard {i}"))],
            Timestamp::now(),
        )
        .await
        .expect("push");
        i += 1;
        if let Ok(Ok(changed)) =
            tokio::time::timeout(Duration::from_millis(50), changes.recv()).await
        {
            assert_eq!(changed, q);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second backend heard nothing of {i} pushes in 20 s"
        );
    }
    let payload = heard
        .recv()
        .await
        .expect("the plain listener heard the notice");
    assert!(payload.ends_with("|q"), "{payload}");
}

/// A change made just after a second backend started listening reaches it. The first
/// backend's sender had looked for listeners at its first push and found none, and it
/// trusts that look for 250 ms; the push made meanwhile is sent at its next look, not
/// dropped (it was, before: a subscription made on one node just after another started
/// reached that one only by its poll).
#[tokio::test]
async fn a_change_made_just_after_another_backend_starts_listening_reaches_it() {
    let (options, a, q) = first_backend().await;
    let schema = options.schema.clone();
    // A's sender looks at its first change, and finds no one else listening.
    a.push(&q, vec![NewItem::new("alone")], Timestamp::now())
        .await
        .expect("push");
    let (plain, _heard) = plain_listener(&schema).await;
    listeners(&plain, &schema, 1).await;

    let b = PostgresBackend::open(options).await.expect("open b");
    let mut changes = b.changes().expect("the backend has changes");
    listeners(&plain, &schema, 2).await;
    a.push(&q, vec![NewItem::new("heard")], Timestamp::now())
        .await
        .expect("push");
    let heard_of = tokio::time::timeout(Duration::from_secs(5), changes.recv())
        .await
        .expect("the second backend heard of the push within 5 s")
        .expect("changes");
    assert_eq!(heard_of, q);
}
