//! Tests of the client's own logic: base URLs and routes, tokens kept out of `Debug` and refused
//! when unusable, payloads and counts decoded as the API sends them.
#![allow(clippy::unwrap_used)] // tests may panic on failure

use super::*;

#[test]
fn base_urls_are_checked_and_normalised() {
    let ok = |s: &str| parse_base(s).unwrap().to_string();
    assert_eq!(ok("http://127.0.0.1:8080"), "http://127.0.0.1:8080/");
    assert_eq!(ok("https://h/hookspool"), "https://h/hookspool/");
    assert_eq!(ok("https://h/hookspool/"), "https://h/hookspool/");
    for bad in [
        "",
        "127.0.0.1:8080",
        "ftp://h/",
        "file:///tmp/x",
        "http://user:pw@h/",
        "http://h/?a=1",
        "http://h/#x",
    ] {
        let e = parse_base(bad).unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "{bad:?}: {e}");
        assert!(e.to_string().contains("hookspool URL"), "{e}");
    }
}

#[test]
fn routes_extend_the_prefix_with_encoded_segments() {
    let c = Client::new("http://h/api", None).unwrap();
    assert_eq!(
        c.url(&["queues", "q.1", "items", "7"]).as_str(),
        "http://h/api/queues/q.1/items/7"
    );
    assert_eq!(
        c.url(&["deliveries", "a/b?c"]).as_str(),
        "http://h/api/deliveries/a%2Fb%3Fc"
    );
}

#[test]
fn debug_never_shows_the_token() {
    let c = Client::new("http://h/", Some(Secret::new("tok-supersecret"))).unwrap();
    let shown = format!("{c:?}");
    assert!(!shown.contains("supersecret"), "{shown}");
    assert!(shown.contains("http://h/"), "{shown}");
}

#[test]
fn unusable_tokens_are_refused_up_front() {
    for bad in ["", "a\nb"] {
        let e = Client::new("http://h/", Some(Secret::new(bad))).unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "{bad:?}: {e}");
        assert!(!e.to_string().contains("a\nb"));
    }
}

#[test]
fn payloads_decode_from_each_api_form() {
    let item = |payload: &str| {
        let text = format!(
            r#"{{"key":1,"phase":"pending","attempts":0,"created_at":1,"updated_at":2,
            "not_before":3,"lease":null,"last_error":null,"metadata":{{}},{payload}}}"#
        );
        serde_json::from_str::<ItemView>(&text)
            .map_err(|e| invalid_response(e.to_string()))
            .and_then(decode_item)
    };
    let p = |payload: &str| item(payload).unwrap().payload;
    assert_eq!(
        p(r#""payload":{"a":1,"b":[true]}"#),
        br#"{"a":1,"b":[true]}"#
    );
    assert_eq!(p(r#""payload":"two\nlines""#), b"two\nlines");
    assert_eq!(p(r#""payload":null"#), b"null");
    assert_eq!(p(r#""payload_base64":"/wCA""#), [0xff, 0x00, 0x80]);
    for bad in [
        r#""payload_base64":"***""#,
        r#""payload":1,"payload_base64":"AA==""#,
        r#""nothing":1"#,
    ] {
        let e = item(bad).unwrap_err();
        assert!(
            matches!(&e, Error::Remote { code, .. } if code == INVALID_RESPONSE),
            "{bad}: {e}"
        );
    }
}

#[test]
fn zero_counts_are_left_out_like_the_engine_does() {
    let counts = Counts {
        total: 3,
        phases: std::collections::BTreeMap::from([
            ("pending".to_owned(), 2),
            ("dead".to_owned(), 0),
            ("review".to_owned(), 1),
        ]),
        pruned: std::collections::BTreeMap::new(),
    }
    .to_phase_counts()
    .unwrap();
    assert_eq!(counts.total(), 3);
    assert!(!counts.0.contains_key(&Phase::DEAD));
    assert_eq!(counts.get(&Phase::new("review").unwrap()), 1);
}
