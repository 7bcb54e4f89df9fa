//! `Store`-level behaviour the conformance kit does not own: input validation and limits,
//! retention on ack, replay, paged dump and pop past the TTL, on the memory backend with a
//! manual clock.

// Tests may unwrap (house rule): a failed unwrap is a failed test, with its error printed.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use hookspool::{
    DUMP_PAGE, Error, Limits, MAX_METADATA_ENTRIES, MAX_METADATA_KEY, MAX_METADATA_VALUE,
    MAX_OWNER_LEN, ManualClock, MemoryBackend, NewItem, PRUNE_BUDGET, Page, Phase, QueueConfig,
    QueueId, Retain, Retention, Store, Timestamp,
};

const T0: Timestamp = Timestamp(1_000_000);

fn store() -> (Store<MemoryBackend>, ManualClock) {
    let clock = ManualClock::new(T0);
    (
        Store::new(MemoryBackend::new()).with_clock(clock.clone()),
        clock,
    )
}

fn small_store(limits: Limits) -> Store<MemoryBackend> {
    store().0.with_limits(limits)
}

fn qid(s: &str) -> QueueId {
    QueueId::new(s).unwrap()
}

async fn queue(s: &Store<MemoryBackend>, name: &str) -> QueueId {
    s.create_queue(QueueConfig::new(qid(name)))
        .await
        .unwrap()
        .id
}

fn payloads(n: usize) -> Vec<NewItem> {
    (0..n)
        .map(|i| NewItem::new(format!("p{i}").into_bytes()))
        .collect()
}

#[test]
fn invalid_queue_ids_and_phase_names_are_typed_errors() {
    for bad in ["", "has space", "-lead", "a/b", "ü"] {
        let err = QueueId::new(bad).unwrap_err();
        assert!(
            matches!(err, Error::InvalidQueueId { .. }),
            "{bad:?}: {err}"
        );
        assert_eq!(err.code(), "invalid_queue_id");
    }
    for bad in ["", "Pending", "9lives", "with space", "a/b"] {
        let err = Phase::new(bad).unwrap_err();
        assert!(matches!(err, Error::InvalidPhase { .. }), "{bad:?}: {err}");
    }
    // Deserializing goes through the same rule, so a config file cannot smuggle one in.
    assert!(serde_json::from_str::<QueueId>("\"bad id\"").is_err());
    assert!(serde_json::from_str::<Phase>("\"In_Flight\"").is_err());
    assert_eq!(
        serde_json::from_str::<Phase>("\"in_flight\"").unwrap(),
        Phase::IN_FLIGHT
    );
}

#[tokio::test]
async fn payload_over_the_limit_is_refused_and_nothing_is_stored() {
    let s = small_store(Limits {
        max_payload: 16,
        max_batch: 100,
    });
    let q = queue(&s, "orders").await;
    let err = s.push(&q, NewItem::new(vec![0; 17])).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::PayloadTooLarge {
                size: 17,
                limit: 16
            }
        ),
        "{err}"
    );
    let batch = vec![
        NewItem::new(vec![1; 16]),
        NewItem::new(vec![2; 17]),
        NewItem::new(vec![3; 1]),
    ];
    let err = s.push_batch(&q, batch).await.unwrap_err();
    assert!(matches!(err, Error::PayloadTooLarge { .. }), "{err}");
    assert_eq!(
        s.count(&q).await.unwrap(),
        0,
        "a refused batch stores nothing"
    );
    assert_eq!(
        s.push(&q, NewItem::new(vec![0; 16])).await.unwrap(),
        1,
        "a refused push uses no key; a payload at the limit is fine"
    );

    let default = store().0;
    let q = queue(&default, "big").await;
    let err = default
        .push(
            &q,
            NewItem::new(vec![0; hookspool::DEFAULT_MAX_PAYLOAD + 1]),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::PayloadTooLarge { limit, .. } if limit == 1024 * 1024),
        "default limit is 1 MiB: {err}"
    );
}

#[tokio::test]
async fn batch_claim_and_page_over_the_limit_are_refused() {
    let s = small_store(Limits {
        max_payload: 1024,
        max_batch: 3,
    });
    let q = queue(&s, "orders").await;
    let err = s.push_batch(&q, payloads(4)).await.unwrap_err();
    assert!(
        matches!(err, Error::BatchTooLarge { len: 4, limit: 3 }),
        "{err}"
    );
    assert_eq!(s.count(&q).await.unwrap(), 0);
    s.push_batch(&q, payloads(3)).await.unwrap();
    for limit in [0, 4] {
        let err = s
            .claim(&q, "w", limit, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidInput(_)),
            "claim limit {limit}: {err}"
        );
    }
    let err = s.fetch_page(&q, Page::first(4)).await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    let err = s.pop_page(&q, Page::first(4)).await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    assert_eq!(s.count_phase(&q, &Phase::PENDING).await.unwrap(), 3);
}

#[tokio::test]
async fn claim_refuses_a_zero_lease_and_bad_owner_names() {
    let (s, _clock) = store();
    let q = queue(&s, "orders").await;
    s.push(&q, NewItem::new(b"x".to_vec())).await.unwrap();
    let long = "w".repeat(MAX_OWNER_LEN + 1);
    let cases: [(&str, Duration); 3] = [
        ("w", Duration::ZERO),
        ("", Duration::from_secs(1)),
        (&long, Duration::from_secs(1)),
    ];
    for (owner, lease) in cases {
        let err = s.claim(&q, owner, 1, lease).await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidInput(_)),
            "owner {} lease {lease:?}: {err}",
            owner.len()
        );
    }
    assert_eq!(
        s.count_phase(&q, &Phase::PENDING).await.unwrap(),
        1,
        "refused claims lease nothing"
    );
    let max = "w".repeat(MAX_OWNER_LEN);
    assert_eq!(
        s.claim(&q, &max, 1, Duration::from_millis(1))
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn bad_metadata_is_refused_on_items_and_queues() {
    let (s, _clock) = store();
    let q = queue(&s, "orders").await;
    let too_many: BTreeMap<String, String> = (0..=MAX_METADATA_ENTRIES)
        .map(|i| (format!("k{i}"), "v".to_owned()))
        .collect();
    let bad_maps = [
        BTreeMap::from([(String::new(), "v".to_owned())]),
        BTreeMap::from([("k".repeat(MAX_METADATA_KEY + 1), "v".to_owned())]),
        BTreeMap::from([("k".to_owned(), "v".repeat(MAX_METADATA_VALUE + 1))]),
        too_many,
    ];
    for map in &bad_maps {
        let mut item = NewItem::new(b"x".to_vec());
        item.metadata = map.clone();
        let err = s
            .push_batch(&q, vec![NewItem::new(b"ok".to_vec()), item])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");

        let mut config = QueueConfig::new(qid("meta"));
        config.metadata = map.clone();
        let err = s.create_queue(config.clone()).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
        assert_eq!(s.queue(&qid("meta")).await.unwrap(), None);

        config.id = q.clone();
        let err = s.update_queue(config).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    }
    assert_eq!(
        s.count(&q).await.unwrap(),
        0,
        "refused batches store nothing"
    );
    assert!(
        s.queue(&q).await.unwrap().unwrap().metadata.is_empty(),
        "refused updates change nothing"
    );
    let at_limits = NewItem::new(b"x".to_vec())
        .with_metadata("k".repeat(MAX_METADATA_KEY), "v".repeat(MAX_METADATA_VALUE));
    s.push(&q, at_limits).await.unwrap();
}

#[tokio::test]
async fn zero_ttl_is_refused() {
    let (s, _clock) = store();
    let config = QueueConfig::new(qid("orders")).with_ttl(Duration::ZERO);
    let err = s.create_queue(config.clone()).await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    assert_eq!(s.queues().await.unwrap(), Vec::new());
    let q = queue(&s, "orders").await;
    let err = s.update_queue(config).await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    assert_eq!(s.queue(&q).await.unwrap().unwrap().ttl, None);
    let one_ms = QueueConfig::new(q.clone()).with_ttl(Duration::from_millis(1));
    assert_eq!(
        s.update_queue(one_ms).await.unwrap().ttl,
        Some(Duration::from_millis(1))
    );
}

#[tokio::test]
async fn unknown_queue_and_empty_batches() {
    let (s, _clock) = store();
    let missing = qid("missing");
    for r in [
        s.push(&missing, NewItem::new(b"x".to_vec()))
            .await
            .map(drop),
        s.push_batch(&missing, Vec::new()).await.map(drop),
        s.ack(&missing, 1, "w").await,
        s.pop(&missing).await.map(drop),
    ] {
        assert!(matches!(r, Err(Error::QueueNotFound(_))), "{r:?}");
    }
    let q = queue(&s, "orders").await;
    assert_eq!(
        s.push_batch(&q, Vec::new()).await.unwrap(),
        Vec::<u64>::new()
    );
    assert!(matches!(
        s.create_queue(QueueConfig::new(q.clone())).await,
        Err(Error::QueueExists(_))
    ));
}

#[tokio::test]
async fn ack_keeps_or_removes_by_retention() {
    let (s, _clock) = store();
    let keep = queue(&s, "keep").await;
    let remove = s
        .create_queue(QueueConfig::new(qid("remove")).with_retention(Retention::Remove))
        .await
        .unwrap()
        .id;
    for q in [&keep, &remove] {
        s.push_batch(q, payloads(2)).await.unwrap();
        s.claim(q, "w", 2, Duration::from_secs(5)).await.unwrap();
        s.ack(q, 1, "w").await.unwrap();
    }
    assert_eq!(
        s.fetch_key(&keep, 1).await.unwrap().unwrap().phase,
        Phase::DONE
    );
    assert_eq!(s.count_phase(&keep, &Phase::DONE).await.unwrap(), 1);
    assert_eq!(
        s.fetch_key(&remove, 1).await.unwrap(),
        None,
        "Retention::Remove removes on ack"
    );
    assert_eq!(
        s.count(&remove).await.unwrap(),
        1,
        "only the in-flight item is left"
    );
    let err = s.ack(&remove, 2, "other").await.unwrap_err();
    assert!(matches!(err, Error::NotLeaseOwner { .. }), "{err}");
    assert_eq!(
        s.count(&remove).await.unwrap(),
        1,
        "a refused ack removes nothing"
    );
}

#[tokio::test]
async fn replay_moves_dead_items_back_and_replay_dead_pages_through_all() {
    let (s, clock) = store();
    let q = queue(&s, "orders").await;
    let n = 2 * DUMP_PAGE + 3;
    let keys = s.push_batch(&q, payloads(n)).await.unwrap();
    // Every third item stays pending, so dead ones are spread over more than two pages.
    for key in keys.iter().filter(|k| *k % 3 != 0) {
        s.update_phase(&q, *key, Phase::DEAD).await.unwrap();
    }
    let dead = s.count_phase(&q, &Phase::DEAD).await.unwrap();
    assert!(
        dead > 2 * DUMP_PAGE as u64 / 2,
        "enough dead items to need pages"
    );

    clock.advance(Duration::from_secs(1));
    let replayed = s.replay(&q, 1).await.unwrap();
    assert_eq!(replayed.phase, Phase::PENDING);
    assert_eq!(replayed.not_before, s.now(), "a replayed item is due now");
    let err = s.replay(&q, 1).await.unwrap_err();
    assert!(
        matches!(err, Error::PhaseConflict { ref actual, .. } if *actual == Phase::PENDING),
        "replay of an item that is not dead: {err}"
    );
    let moved = s.replay_dead(&q).await.unwrap();
    assert_eq!(moved, dead - 1, "replay_dead moves every other dead item");
    assert_eq!(s.count_phase(&q, &Phase::DEAD).await.unwrap(), 0);
    assert_eq!(s.count_phase(&q, &Phase::PENDING).await.unwrap(), n as u64);
    assert_eq!(
        s.replay_dead(&q).await.unwrap(),
        0,
        "nothing left to replay"
    );
}

async fn dump_keys(s: &Store<MemoryBackend>, q: &QueueId) -> (Vec<u64>, usize) {
    let mut dump = s.dump(q);
    let mut keys = Vec::new();
    let mut pages = 0;
    while let Some(page) = dump.next_page().await.unwrap() {
        assert!(
            !page.is_empty() && page.len() <= DUMP_PAGE,
            "page of {}",
            page.len()
        );
        pages += 1;
        keys.extend(page.iter().map(|i| i.key));
    }
    (keys, pages)
}

#[tokio::test]
async fn dump_pages_through_every_item_once() {
    let (s, _clock) = store();
    for (name, n) in [("exact", 2 * DUMP_PAGE), ("more", 2 * DUMP_PAGE + 1)] {
        let q = queue(&s, name).await;
        s.push_batch(&q, payloads(n)).await.unwrap();
        let (keys, pages) = dump_keys(&s, &q).await;
        assert_eq!(keys, (1..=n as u64).collect::<Vec<_>>(), "{name}");
        assert_eq!(pages, n.div_ceil(DUMP_PAGE), "{name}");
    }

    // With holes and mixed phases the dump still equals the queue's contents, in key order.
    let q = queue(&s, "holes").await;
    let n = 3 * DUMP_PAGE + 11;
    s.push_batch(&q, payloads(n)).await.unwrap();
    for key in (1..=n as u64).step_by(7) {
        assert!(s.delete(&q, key).await.unwrap());
    }
    s.claim(&q, "w", 500, Duration::from_secs(5)).await.unwrap();
    let expected: Vec<u64> = (1..=n as u64).filter(|k| (k - 1) % 7 != 0).collect();
    let (keys, _) = dump_keys(&s, &q).await;
    assert_eq!(keys, expected, "no item lost or repeated");
    assert_eq!(keys.len() as u64, s.count(&q).await.unwrap());
}

#[tokio::test]
async fn pop_skips_ttl_expired_items_and_ignores_schedules() {
    let (s, clock) = store();
    let q = s
        .create_queue(QueueConfig::new(qid("orders")).with_ttl(Duration::from_mins(1)))
        .await
        .unwrap()
        .id;
    s.push_batch(&q, payloads(2)).await.unwrap();
    clock.advance(Duration::from_secs(30));
    let later = s.now().saturating_add(Duration::from_hours(1));
    s.push(&q, NewItem::new(b"scheduled".to_vec()).not_before(later))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(30));
    let head = s.pop(&q).await.unwrap().unwrap();
    assert_eq!(head.key, 3, "pop skips the two items past their TTL");
    assert_eq!(
        head.payload,
        b"scheduled".to_vec(),
        "pop takes the oldest pending item whatever its not-before time"
    );
    assert_eq!(s.count_phase(&q, &Phase::EXPIRED).await.unwrap(), 2);
    assert_eq!(s.pop(&q).await.unwrap(), None);
    assert_eq!(s.fetch(&q).await.unwrap(), None, "no pending head is left");
    assert_eq!(
        s.count(&q).await.unwrap(),
        2,
        "expired items stay until removed"
    );
}

#[tokio::test]
async fn update_phase_refuses_in_flight_and_conflicts_change_nothing() {
    let (s, _clock) = store();
    let q = queue(&s, "orders").await;
    s.push(&q, NewItem::new(b"x".to_vec())).await.unwrap();
    let err = s.update_phase(&q, 1, Phase::IN_FLIGHT).await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    let err = s
        .update_phase_if(&q, 1, Phase::DONE, Phase::DEAD)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::PhaseConflict { .. }), "{err}");
    let err = s.update_phase(&q, 9, Phase::DONE).await.unwrap_err();
    assert!(matches!(err, Error::ItemNotFound { key: 9, .. }), "{err}");
    assert_eq!(s.fetch(&q).await.unwrap().unwrap().phase, Phase::PENDING);
    let review = Phase::new("review").unwrap();
    s.update_phase_if(&q, 1, Phase::PENDING, review.clone())
        .await
        .unwrap();
    assert_eq!(s.count_phase(&q, &review).await.unwrap(), 1);
    assert!(s.delete(&q, 1).await.unwrap());
    assert!(
        !s.delete(&q, 1).await.unwrap(),
        "deleting twice reports false"
    );
}

#[tokio::test]
async fn batched_acks_are_checked_before_anything_is_applied() {
    let s = small_store(Limits {
        max_payload: 1024,
        max_batch: 3,
    });
    let q = queue(&s, "orders").await;
    s.push_batch(&q, payloads(3)).await.unwrap();
    let claimed = s.claim(&q, "w", 3, Duration::from_mins(1)).await.unwrap();
    let keys: Vec<u64> = claimed.iter().map(|i| i.key).collect();

    // Over the batch limit: refused whole.
    let err = s.ack_many(&q, &[1, 2, 3, 4], "w").await.unwrap_err();
    assert!(
        matches!(err, Error::BatchTooLarge { len: 4, limit: 3 }),
        "{err}"
    );
    // Bad metadata in one entry: refused whole, nothing applied.
    let bad = hookspool::Transition {
        expect: hookspool::Expect::default(),
        action: hookspool::Move::to(Phase::DEAD)
            .metadata(BTreeMap::from([(String::new(), "x".to_owned())]))
            .into(),
    };
    let ok = hookspool::Transition {
        expect: hookspool::Expect::default(),
        action: hookspool::Move::to(Phase::DONE).into(),
    };
    let err = s
        .update_many(&q, vec![(keys[0], ok), (keys[1], bad)])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    assert_eq!(s.count_phase(&q, &Phase::IN_FLIGHT).await.unwrap(), 3);
    // A missing queue fails the call.
    assert!(matches!(
        s.ack_many(&qid("nope"), &keys, "w").await,
        Err(Error::QueueNotFound(_))
    ));
    // One entry failing fails only itself.
    let results = s.ack_many(&q, &[keys[0], 99, keys[1]], "w").await.unwrap();
    assert!(results[0].is_ok() && results[2].is_ok());
    assert!(matches!(
        results[1],
        Err(Error::ItemNotFound { key: 99, .. })
    ));
    assert_eq!(s.count_phase(&q, &Phase::DONE).await.unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn background_retention_removes_in_bounded_passes_until_stopped() {
    let (s, clock) = store();
    let retain = Retain {
        done: Some(Duration::from_secs(1)),
        ..Retain::FOREVER
    };
    let q = QueueId::new("jobs").unwrap();
    s.create_queue(QueueConfig::new(q.clone()).with_retain(retain))
        .await
        .unwrap();
    // More than one pass's budget, all done at once.
    let n = usize::try_from(PRUNE_BUDGET).unwrap() + 500;
    for chunk in (0..n).collect::<Vec<_>>().chunks(1_000) {
        let items = chunk
            .iter()
            .map(|i| NewItem::new(i.to_string().into_bytes()));
        let keys = s.push_batch(&q, items.collect()).await.unwrap();
        for key in keys {
            s.update_phase(&q, key, Phase::DONE).await.unwrap();
        }
    }
    clock.advance(Duration::from_secs(1));
    let task = s.spawn_retention(Duration::from_secs(1));
    // The first tick is at once: one pass removes its budget, the next pass the rest.
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        s.count(&q).await.unwrap(),
        500,
        "a pass stops at its budget"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(s.count(&q).await.unwrap(), 0);
    assert_eq!(s.pruned(&q).get(&Phase::DONE), Some(&(n as u64)));
    task.stop().await;
    let key = s.push(&q, NewItem::new(b"late".to_vec())).await.unwrap();
    s.update_phase(&q, key, Phase::DONE).await.unwrap();
    clock.advance(Duration::from_secs(5));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        s.count(&q).await.unwrap(),
        1,
        "a stopped task removes nothing"
    );
}

#[tokio::test]
async fn retention_below_a_second_and_reserved_metadata_are_refused() {
    let (s, _) = store();
    let q = QueueId::new("jobs").unwrap();
    let short = Retain {
        expired: Some(Duration::from_millis(999)),
        ..Retain::FOREVER
    };
    let err = s
        .create_queue(QueueConfig::new(q.clone()).with_retain(short))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput(m) if m.contains("retain_expired")),
        "{err}"
    );
    let err = s
        .create_queue(QueueConfig::new(q.clone()).with_metadata("hookspool.retain_done", "5"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput(m) if m.contains("reserved")),
        "{err}"
    );
    assert!(s.queue(&q).await.unwrap().is_none(), "nothing was created");
}
