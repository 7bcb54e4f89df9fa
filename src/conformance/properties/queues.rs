//! Queues: create, list, update and delete keep what they were given, and a queue that does
//! not exist is `QueueNotFound` to every call.

use std::time::Duration;

use super::{
    Factory, T0, all, at, backend_with, claim, config, items, keys, move_to, ok, plain, push_n, qid,
};
use crate::{Backend, Error, Page, Phase, PhaseCounts, Retention, Selector};

/// `create_queue` stores every setting as given, and `get_queue` returns it; unknown ids give `None`.
pub async fn create_queue_stores_config_as_given<F: Factory>(f: &F) {
    let b = f.create().await;
    let full = config("orders")
        .with_metadata("secret", "whsec_test")
        .with_ttl(Duration::from_millis(1_234))
        .with_retention(Retention::Remove)
        .with_metadata("team", "payments")
        .with_metadata("region", "eu");
    ok(b.create_queue(full.clone()).await, "create_queue");
    assert_eq!(
        ok(b.get_queue(&full.id).await, "get_queue"),
        Some(full.clone()),
        "get_queue must return the settings exactly as created"
    );
    assert_eq!(
        ok(b.get_queue(&qid("missing")).await, "get_queue"),
        None,
        "get_queue of an unknown id must be Ok(None)"
    );
    assert_eq!(
        ok(b.count(&full.id).await, "count"),
        PhaseCounts::default(),
        "a new queue must be empty"
    );
}

/// `create_queue` with a taken id is `QueueExists` and leaves the first queue untouched.
pub async fn create_existing_queue_is_queue_exists<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders").with_metadata("v", "1")).await;
    push_n(&b, &q, 2, T0).await;
    assert_err!(
        b.create_queue(config("orders").with_metadata("v", "2"))
            .await,
        Error::QueueExists(_),
        "create_queue twice"
    );
    let stored = ok(b.get_queue(&q).await, "get_queue");
    assert_eq!(
        stored.map(|c| c.metadata.get("v").cloned()),
        Some(Some("1".to_owned())),
        "a refused create_queue must not change the existing settings"
    );
    assert_eq!(
        all(&b, &q).await.len(),
        2,
        "a refused create_queue must keep the items"
    );
}

/// `list_queues` returns every queue ordered by id, whatever the creation order.
pub async fn list_queues_is_sorted_by_id<F: Factory>(f: &F) {
    let b = f.create().await;
    assert!(
        ok(b.list_queues().await, "list_queues").is_empty(),
        "a fresh backend has no queues"
    );
    for name in ["m", "B", "a", "z9", "0x", "a.b", "a-b"] {
        ok(b.create_queue(config(name)).await, "create_queue");
    }
    let ids: Vec<String> = ok(b.list_queues().await, "list_queues")
        .into_iter()
        .map(|c| c.id.to_string())
        .collect();
    let mut expected: Vec<String> = ["m", "B", "a", "z9", "0x", "a.b", "a-b"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    expected.sort();
    assert_eq!(
        ids, expected,
        "list_queues must return every queue ordered by id"
    );
}

/// `update_queue` replaces the settings but keeps `created_at`, the items and the key counter.
pub async fn update_queue_keeps_created_at_items_and_keys<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    push_n(&b, &q, 3, T0).await;
    let mut new = config("orders")
        .with_ttl(Duration::from_mins(1))
        .with_retention(Retention::Remove)
        .with_metadata("owner", "ops");
    new.created_at = at(99_999);
    ok(b.update_queue(new.clone()).await, "update_queue");
    let stored = ok(b.get_queue(&q).await, "get_queue");
    let mut expected = new;
    expected.created_at = T0;
    assert_eq!(
        stored,
        Some(expected),
        "update_queue must store the new settings and keep the original created_at"
    );
    assert_eq!(
        keys(&all(&b, &q).await),
        vec![1, 2, 3],
        "update_queue must keep the items"
    );
    assert_eq!(
        push_n(&b, &q, 1, at(1)).await,
        vec![4],
        "update_queue must keep the key counter"
    );
    assert_err!(
        b.update_queue(config("missing")).await,
        Error::QueueNotFound(_),
        "update_queue of an unknown queue"
    );
    assert_eq!(
        ok(b.get_queue(&qid("missing")).await, "get_queue"),
        None,
        "update_queue must not create a queue"
    );
}

/// `delete_queue` removes the queue and its items (`true`), `false` when absent; a recreated
/// queue is empty and starts again at key 1; other queues are untouched.
pub async fn delete_queue_removes_it_and_its_items<F: Factory>(f: &F) {
    let (b, q) = backend_with(f, config("orders")).await;
    let other = qid("other");
    ok(b.create_queue(config("other")).await, "create_queue");
    push_n(&b, &q, 3, T0).await;
    push_n(&b, &other, 2, T0).await;
    ok(b.claim(&q, claim("w", 1, at(1_000)), T0).await, "claim");
    assert!(
        ok(b.delete_queue(&q).await, "delete_queue"),
        "delete_queue of an existing queue must return true"
    );
    assert!(
        !ok(b.delete_queue(&q).await, "delete_queue"),
        "delete_queue of a deleted queue must return false"
    );
    assert_eq!(
        ok(b.get_queue(&q).await, "get_queue"),
        None,
        "a deleted queue must be gone"
    );
    assert_err!(
        b.count(&q).await,
        Error::QueueNotFound(_),
        "count of a deleted queue"
    );
    assert_err!(
        b.fetch(&q, &Selector::Page(Page::first(10))).await,
        Error::QueueNotFound(_),
        "fetch from a deleted queue"
    );
    ok(
        b.create_queue(config("orders")).await,
        "recreating a deleted queue",
    );
    assert!(
        all(&b, &q).await.is_empty(),
        "a recreated queue must not see the old items"
    );
    assert_eq!(
        ok(b.count(&q).await, "count"),
        PhaseCounts::default(),
        "a recreated queue must count zero"
    );
    assert_eq!(
        push_n(&b, &q, 1, at(1)).await,
        vec![1],
        "delete_queue forgets the key counter: a recreated queue starts at key 1"
    );
    assert_eq!(
        keys(&all(&b, &other).await),
        vec![1, 2],
        "deleting one queue must not touch another"
    );
}

/// Every item method on an unknown queue is `QueueNotFound`.
pub async fn unknown_queue_is_queue_not_found<F: Factory>(f: &F) {
    let b = f.create().await;
    let q = qid("nope");
    assert_err!(
        b.push(&q, items(1, "x"), T0).await,
        Error::QueueNotFound(_),
        "push"
    );
    assert_err!(
        b.push(&q, Vec::new(), T0).await,
        Error::QueueNotFound(_),
        "push of an empty batch"
    );
    assert_err!(
        b.fetch(&q, &Selector::Key(1)).await,
        Error::QueueNotFound(_),
        "fetch by key"
    );
    assert_err!(
        b.fetch(&q, &Selector::Page(Page::first(5))).await,
        Error::QueueNotFound(_),
        "fetch page"
    );
    assert_err!(
        b.pop(&q, &Selector::Key(1)).await,
        Error::QueueNotFound(_),
        "pop by key"
    );
    assert_err!(
        b.pop(&q, &Selector::Page(Page::first(5))).await,
        Error::QueueNotFound(_),
        "pop page"
    );
    assert_err!(b.count(&q).await, Error::QueueNotFound(_), "count");
    assert_err!(b.reset(&q).await, Error::QueueNotFound(_), "reset");
    assert_err!(
        b.update(&q, 1, plain(move_to(Phase::DONE)), T0).await,
        Error::QueueNotFound(_),
        "update"
    );
    assert_err!(
        b.claim(&q, claim("w", 1, at(10)), T0).await,
        Error::QueueNotFound(_),
        "claim"
    );
    assert_err!(b.sweep(&q, T0).await, Error::QueueNotFound(_), "sweep");
    assert_eq!(
        ok(b.list_queues().await, "list_queues"),
        Vec::new(),
        "no call may create the queue"
    );
}
