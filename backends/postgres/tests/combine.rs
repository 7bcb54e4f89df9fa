//! Group commit of small pushes: many tasks pushing one item (or a few) each to one queue
//! share statements and commits, each still gets its own keys (in the order of its own calls)
//! and its own error, each push stays all or nothing, and one push the server refuses fails
//! alone.

use std::collections::BTreeMap;

use hookspool::{Error, NewItem, QueueId};
use hookspool_postgres::testing;
use tokio::task::JoinSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_single_pushes_share_commits_and_each_gets_its_own_key() {
    const TASKS: usize = 64;
    const EACH: usize = 20;
    let (store, q, schema) = testing::store_with_queue("q").await;
    let mut tasks = JoinSet::new();
    for t in 0..TASKS {
        let (store, q) = (store.clone(), q.clone());
        tasks.spawn(async move {
            let mut keys = Vec::new();
            for i in 0..EACH {
                let payload = format!("task {t} item {i}").into_bytes();
                let key = store
                    .push(&q, NewItem::new(payload.clone()))
                    .await
                    .expect("push");
                keys.push((key, payload));
            }
            keys
        });
    }
    let mut pushed = BTreeMap::new();
    while let Some(keys) = tasks.join_next().await {
        let keys = keys.expect("task");
        // Each task's keys increase from one of its pushes to the next.
        assert!(
            keys.windows(2).all(|w| w[0].0 < w[1].0),
            "one task's keys out of order: {keys:?}"
        );
        for (key, payload) in keys {
            assert!(
                pushed.insert(key, payload).is_none(),
                "key {key} given twice"
            );
        }
    }
    assert_eq!(pushed.len(), TASKS * EACH);
    assert_eq!(store.count(&q).await.expect("count"), (TASKS * EACH) as u64);
    for (key, payload) in &pushed {
        let item = store
            .fetch_key(&q, *key)
            .await
            .expect("fetch")
            .expect("a pushed item is stored under its key");
        assert_eq!(&item.payload, payload, "item {key}");
    }
    let commits = testing::writing_transactions(&testing::client().await, &schema, "true").await;
    assert!(
        commits > 0 && commits <= i64::try_from(TASKS * EACH / 4).expect("small"),
        "{} single pushes from {TASKS} tasks at once took {commits} transactions",
        TASKS * EACH
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_small_batches_share_commits_and_each_stays_whole_and_in_order() {
    const TASKS: usize = 48;
    const CALLS: usize = 10;
    const EACH: usize = 3;
    let (store, q, schema) = testing::store_with_queue("q").await;
    let mut tasks = JoinSet::new();
    for t in 0..TASKS {
        let (store, q) = (store.clone(), q.clone());
        tasks.spawn(async move {
            let mut pushed = Vec::new();
            for c in 0..CALLS {
                let payloads: Vec<Vec<u8>> = (0..EACH)
                    .map(|i| format!("task {t} call {c} item {i}").into_bytes())
                    .collect();
                let items = payloads.iter().cloned().map(NewItem::new).collect();
                let keys = store.push_batch(&q, items).await.expect("push_batch");
                pushed.push((keys, payloads));
            }
            pushed
        });
    }
    let mut stored = BTreeMap::new();
    while let Some(pushed) = tasks.join_next().await {
        let mut last = 0;
        for (keys, payloads) in pushed.expect("task") {
            // A call's keys increase, and come after those of the task's earlier calls.
            assert_eq!(keys.len(), EACH);
            assert!(
                keys[0] > last && keys.windows(2).all(|w| w[0] < w[1]),
                "{keys:?}"
            );
            last = keys[EACH - 1];
            for (key, payload) in keys.into_iter().zip(payloads) {
                assert!(
                    stored.insert(key, payload).is_none(),
                    "key {key} given twice"
                );
            }
        }
    }
    assert_eq!(
        store.count(&q).await.expect("count"),
        (TASKS * CALLS * EACH) as u64
    );
    for (key, payload) in &stored {
        let item = store.fetch_key(&q, *key).await.expect("fetch");
        assert_eq!(
            item.map(|i| i.payload).as_ref(),
            Some(payload),
            "item {key}"
        );
    }
    let commits = testing::writing_transactions(&testing::client().await, &schema, "true").await;
    assert!(
        commits > 0 && commits <= i64::try_from(TASKS * CALLS / 4).expect("small"),
        "{} pushes of {EACH} items from {TASKS} tasks at once took {commits} transactions",
        TASKS * CALLS
    );
}

#[tokio::test]
async fn an_item_the_server_refuses_fails_alone_when_its_push_was_combined() {
    let (store, q, schema) = testing::store_with_queue("q").await;
    let admin = testing::client().await;
    // A refusal of one payload, and a wait (on an advisory lock this test holds) for
    // payloads starting with `hold`: those two keep the queue's running statements busy
    // while the others wait to be combined.
    admin
        .batch_execute(&format!(
            "CREATE FUNCTION \"{schema}\".refuse() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF NEW.payload = 'poison'::bytea THEN
                     RAISE EXCEPTION 'this test refuses the poison payload';
                 END IF;
                 IF position('hold'::bytea IN NEW.payload) = 1 THEN
                     PERFORM pg_advisory_xact_lock_shared(7001);
                 END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER refuse BEFORE INSERT ON \"{schema}\".items
                 FOR EACH ROW EXECUTE FUNCTION \"{schema}\".refuse();
             SELECT pg_advisory_lock(7001);"
        ))
        .await
        .expect("trigger");
    let push = |payload: &str| {
        let (store, q, payload) = (store.clone(), q.clone(), payload.as_bytes().to_vec());
        async move { (payload.clone(), store.push(&q, NewItem::new(payload)).await) }
    };
    let mut held = JoinSet::new();
    held.spawn(push("hold 1"));
    held.spawn(push("hold 2"));
    // Both held pushes are running (waiting for the lock) before the others start.
    loop {
        let waiting: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_locks \
                 WHERE locktype = 'advisory' AND objid = 7001 AND objsubid = 1 AND NOT granted",
                &[],
            )
            .await
            .expect("locks")
            .get(0);
        if waiting == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let mut others = JoinSet::new();
    let mut mixed = JoinSet::new();
    for i in 0..30 {
        others.spawn(push(&format!("item {i}")));
        if i == 10 {
            others.spawn(push("poison"));
            // A push of two, one refused: neither is stored.
            let (store, q) = (store.clone(), q.clone());
            mixed.spawn(async move {
                let items = vec![
                    NewItem::new(b"beside".to_vec()),
                    NewItem::new(b"poison".to_vec()),
                ];
                store.push_batch(&q, items).await
            });
        }
    }
    // Let every other push reach its lane before the held ones end.
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
    admin
        .batch_execute("SELECT pg_advisory_unlock(7001)")
        .await
        .expect("unlock");
    let mut results: Vec<_> = held.join_all().await;
    results.extend(others.join_all().await);
    for result in mixed.join_all().await {
        let e = result.expect_err("a push with a refused item is refused whole");
        assert!(e.to_string().contains("refuses the poison"), "{e}");
    }
    let mut stored = 0;
    for (payload, result) in results {
        if payload == b"poison" {
            let e = result.expect_err("the poison payload is refused");
            assert!(
                matches!(e, Error::Backend { .. }) && e.to_string().contains("refuses the poison"),
                "{e}"
            );
        } else {
            let key = result.unwrap_or_else(|e| panic!("{payload:?}: {e}"));
            let item = store.fetch_key(&q, key).await.expect("fetch");
            assert_eq!(item.map(|i| i.payload), Some(payload));
            stored += 1;
        }
    }
    assert_eq!(stored, 32);
    assert_eq!(store.count(&q).await.expect("count"), 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_combined_push_to_a_missing_queue_is_told_so() {
    let (store, _, _) = testing::store_with_queue("q").await;
    let missing = QueueId::new("missing").expect("queue id");
    let mut tasks = JoinSet::new();
    for i in 0..32 {
        let (store, missing) = (store.clone(), missing.clone());
        tasks.spawn(async move { store.push(&missing, NewItem::new(vec![i])).await });
    }
    for result in tasks.join_all().await {
        match result {
            Err(Error::QueueNotFound(q)) => assert_eq!(q, missing),
            other => panic!("a push to a missing queue gave {other:?}"),
        }
    }
}

/// A push whose caller gives up while it waits behind the two push statements running is
/// not made, and the push that waited after it is made as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_given_up_while_it_waits_is_not_made() {
    let (store, q, schema) = testing::store_with_queue("q").await;
    // Another session locks the items against the pushes' writes until it commits.
    let blocker = testing::lock_items(&schema).await;
    let mut running = JoinSet::new();
    for name in ["a", "b"] {
        let (store, q) = (store.clone(), q.clone());
        running.spawn(async move { store.push(&q, NewItem::new(name.as_bytes())).await });
    }
    let observer = testing::client().await;
    testing::until_waiting_for_items(&observer, &schema, 2).await;
    // Both push statements are running: a third push waits in the queue's lane (one poll
    // puts it there), and its caller gives up.
    assert!(
        testing::give_up_after_one_poll(store.push(&q, NewItem::new(b"gone".as_slice()))).await,
        "a third push ran while two were running"
    );
    let kept = {
        let (store, q) = (store.clone(), q.clone());
        tokio::spawn(async move { store.push(&q, NewItem::new(b"kept".as_slice())).await })
    };
    blocker.batch_execute("COMMIT").await.expect("unlock");
    while let Some(pushed) = running.join_next().await {
        pushed.expect("task").expect("push");
    }
    let kept = kept.await.expect("task").expect("push");
    let stored: Vec<Vec<u8>> = observer
        .query(
            &format!("SELECT payload FROM \"{schema}\".items ORDER BY payload"),
            &[],
        )
        .await
        .expect("items")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        stored,
        [&b"a"[..], b"b", b"kept"],
        "the push given up is not stored"
    );
    let item = store
        .fetch_key(&q, kept)
        .await
        .expect("fetch")
        .expect("kept");
    assert_eq!(item.payload, b"kept");
    assert_eq!(store.count(&q).await.expect("count"), 3);
}
