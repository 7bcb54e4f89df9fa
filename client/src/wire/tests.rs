//! The wire types against their documented JSON.

#![allow(clippy::unwrap_used)] // tests may panic on failure

use super::*;

fn item(payload: &[u8]) -> Item {
    Item {
        key: 7,
        payload: payload.to_vec(),
        phase: Phase::new("needs-review").unwrap(),
        attempts: 2,
        created_at: Timestamp::from_millis(1_000),
        updated_at: Timestamp::from_millis(2_000),
        not_before: Timestamp::from_millis(3_000),
        lease: Some(Lease {
            owner: "w".into(),
            until: Timestamp::from_millis(4_000),
        }),
        last_error: Some("boom".into()),
        metadata: BTreeMap::from([("event".to_owned(), "order.paid".to_owned())]),
    }
}

fn json(item: &Item) -> serde_json::Value {
    serde_json::to_value(ItemView::of(item)).unwrap()
}

#[test]
fn an_item_has_every_field() {
    let v = json(&item(b"{}"));
    assert_eq!(v["key"], 7);
    assert_eq!(v["phase"], "needs-review");
    assert_eq!(v["attempts"], 2);
    assert_eq!(v["created_at"], 1_000);
    assert_eq!(v["updated_at"], 2_000);
    assert_eq!(v["not_before"], 3_000);
    assert_eq!(v["lease"]["owner"], "w");
    assert_eq!(v["lease"]["until"], 4_000);
    assert_eq!(v["last_error"], "boom");
    assert_eq!(v["metadata"]["event"], "order.paid");
}

#[test]
fn json_payloads_are_embedded_compact_with_key_order_kept() {
    let text =
        serde_json::to_string(&ItemView::of(&item(b"{ \"z\": 1,\n \"a\": \"x y\" }"))).unwrap();
    assert!(text.contains(r#""payload":{"z":1,"a":"x y"}"#), "{text}");
    assert!(!text.contains("payload_base64"), "{text}");
}

#[test]
fn text_and_binary_payloads() {
    assert_eq!(
        json(&item(b"plain\nline two"))["payload"],
        "plain\nline two"
    );
    assert_eq!(json(&item(b""))["payload"], "");
    let v = json(&item(&[0xff, 0x00, 0x80]));
    assert!(v.get("payload").is_none());
    assert_eq!(v["payload_base64"], "/wCA");
}

#[test]
fn items_come_back_from_each_payload_form() {
    for payload in [
        &br#"{"a":1,"b":[true]}"#[..],
        b"two\nlines",
        b"null",
        &[0xff, 0x00, 0x80],
    ] {
        let text = serde_json::to_string(&ItemView::of(&item(payload))).unwrap();
        let view: ItemView = serde_json::from_str(&text).unwrap();
        assert_eq!(view.into_item().unwrap(), item(payload), "{text}");
    }
    let bad: ItemView = serde_json::from_str(
        r#"{"key":1,"phase":"pending","attempts":0,"created_at":1,"updated_at":2,
            "not_before":3,"lease":null,"last_error":null,"payload":1,"payload_base64":"AA=="}"#,
    )
    .unwrap();
    assert!(bad.into_item().is_err());
}

#[test]
fn queues_show_whether_there_is_a_secret_never_the_secret() {
    let mut config = QueueConfig::new(QueueId::new("q").unwrap())
        .with_ttl(Duration::from_mins(1))
        .with_metadata("team", "billing");
    hookspool_webhooks::set_channel_secret(
        &mut config,
        Some(&Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")),
    )
    .unwrap();
    let mut counts = PhaseCounts::default();
    counts.add(&Phase::PENDING, 2);
    counts.add(&Phase::new("review").unwrap(), 1);
    let info = QueueInfo::new(&config, counts.clone());
    let v = serde_json::to_value(&info).unwrap();
    assert!(!v.to_string().contains("MfKQ9r8"), "{v}");
    assert_eq!(v["secret"], true);
    assert_eq!(v["items"], 3);
    assert_eq!(v["ttl_ms"], 60_000);
    assert_eq!(v["phases"]["pending"], 2);
    assert_eq!(v["phases"]["dead"], 0);
    assert_eq!(v["phases"]["review"], 1);
    assert_eq!(v["metadata"]["team"], "billing");
    let back: QueueInfo = serde_json::from_value(v).unwrap();
    assert_eq!(back, info);
    assert_eq!(back.counts, counts);
}

#[test]
fn a_queue_update_tells_absent_from_null() {
    let u: QueueUpdate = serde_json::from_str(r#"{"ttl_ms": null}"#).unwrap();
    assert_eq!(u.ttl, Some(None));
    assert_eq!(u.secret, None);
    let u: QueueUpdate = serde_json::from_str(r#"{"ttl_ms": 5, "secret": null}"#).unwrap();
    assert_eq!(u.ttl, Some(Some(Duration::from_millis(5))));
    assert_eq!(u.secret, Some(None));
    let text = serde_json::to_string(&QueueUpdate {
        ttl: Some(None),
        ..QueueUpdate::default()
    })
    .unwrap();
    assert_eq!(text, r#"{"ttl_ms":null}"#);
    assert!(serde_json::from_str::<QueueUpdate>(r#"{"tll_ms": 1}"#).is_err());
}

#[test]
fn an_update_keeps_the_secret_unless_it_changes_it() {
    let secret = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    let mut config = QueueConfig::new(QueueId::new("q").unwrap()).with_metadata("a", "1");
    hookspool_webhooks::set_channel_secret(&mut config, Some(&secret)).unwrap();
    let metadata = BTreeMap::from([("b".to_owned(), "2".to_owned())]);
    QueueUpdate {
        metadata: Some(metadata.clone()),
        ttl: Some(Some(Duration::from_secs(1))),
        ..QueueUpdate::default()
    }
    .apply_to(&mut config)
    .unwrap();
    assert_eq!(channel_secret(&config), Some(secret));
    assert_eq!(
        QueueInfo::new(&config, PhaseCounts::default()).metadata,
        metadata
    );
    assert_eq!(config.ttl, Some(Duration::from_secs(1)));
    QueueUpdate {
        secret: Some(None),
        ..QueueUpdate::default()
    }
    .apply_to(&mut config)
    .unwrap();
    assert_eq!(channel_secret(&config), None);
    for bad in [
        QueueUpdate {
            secret: Some(Some(Secret::new(""))),
            ..QueueUpdate::default()
        },
        QueueUpdate {
            metadata: Some(BTreeMap::from([("secret".to_owned(), "x".to_owned())])),
            ..QueueUpdate::default()
        },
    ] {
        let before = config.clone();
        assert!(bad.apply_to(&mut config).is_err());
        assert_eq!(config, before, "nothing changes");
    }
}
