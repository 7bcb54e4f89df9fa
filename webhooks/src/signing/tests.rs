//! Signature test vectors: the Standard Webhooks libraries', GitHub's and webhooks_emitter's
//! own, and the verification rules (tolerance, rotation, malformed headers).

use super::*;

const SW1_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const SW1_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
const SW1_TS: u64 = 1_649_367_553;
const SW1_BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
const SW1_SIG: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

const SW2_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SW2_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SW2_TS: u64 = 1_614_265_330;
const SW2_BODY: &[u8] = br#"{"test": 2432232314}"#;
const SW2_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

/// SW-3: the SW-2 secret over the SW-1 message.
const SW3_SIG: &str = "v1,bmED0YkXIwCHhhZjbHn8qMCbczjpYwHGju/WMUmDqOQ=";

fn key(secret: &str) -> SigningKey {
    SigningKey::from_whsec(secret).unwrap()
}

fn input<'a>(id: &'a str, timestamp: u64, body: &'a [u8]) -> SignInput<'a> {
    SignInput {
        delivery_id: id,
        event: "user.created",
        timestamp,
        body,
    }
}

fn header<'h>(headers: &'h [(&'static str, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Headers as a receiver would see them: id, timestamp, signature (any may be absent).
fn received<'a>(
    id: Option<&'a str>,
    ts: Option<&'a str>,
    sig: Option<&'a str>,
) -> impl Fn(&str) -> Option<&'a str> {
    move |name| match name {
        HEADER_WEBHOOK_ID => id,
        HEADER_WEBHOOK_TIMESTAMP => ts,
        HEADER_WEBHOOK_SIGNATURE => sig,
        _ => None,
    }
}

fn verify_sw1(keys: &[&SigningKey], sig: &str, now: u64) -> Result<(), VerifyError> {
    let ts = SW1_TS.to_string();
    verify(
        keys,
        received(Some(SW1_ID), Some(&ts), Some(sig)),
        SW1_BODY,
        now,
    )
}

// --- Standard Webhooks vectors ---

#[test]
fn sw1_sign_matches_published_vector() {
    let k = key(SW1_SECRET);
    let headers = sign(
        SignatureScheme::StandardWebhooks,
        &[&k],
        &input(SW1_ID, SW1_TS, SW1_BODY),
    )
    .unwrap();
    assert_eq!(
        headers,
        vec![
            (HEADER_WEBHOOK_ID, SW1_ID.to_owned()),
            (HEADER_WEBHOOK_TIMESTAMP, "1649367553".to_owned()),
            (HEADER_WEBHOOK_SIGNATURE, SW1_SIG.to_owned()),
        ]
    );
    verify_sw1(&[&k], SW1_SIG, SW1_TS).unwrap();
}

#[test]
fn sw2_sign_and_verify_match_published_vector() {
    let k = key(SW2_SECRET);
    let headers = sign(
        SignatureScheme::StandardWebhooks,
        &[&k],
        &input(SW2_ID, SW2_TS, SW2_BODY),
    )
    .unwrap();
    assert_eq!(header(&headers, HEADER_WEBHOOK_SIGNATURE), Some(SW2_SIG));
    let ts = SW2_TS.to_string();
    verify(
        &[&k],
        received(Some(SW2_ID), Some(&ts), Some(SW2_SIG)),
        SW2_BODY,
        SW2_TS,
    )
    .unwrap();
}

#[test]
fn sw3_rotation_header_signed_with_both_keys_verifies_under_either() {
    let primary = key(SW1_SECRET);
    let previous = key(SW2_SECRET);
    let headers = sign(
        SignatureScheme::StandardWebhooks,
        &[&primary, &previous],
        &input(SW1_ID, SW1_TS, SW1_BODY),
    )
    .unwrap();
    let rotation = format!("{SW1_SIG} {SW3_SIG}");
    assert_eq!(
        header(&headers, HEADER_WEBHOOK_SIGNATURE),
        Some(rotation.as_str())
    );

    verify_sw1(&[&primary], &rotation, SW1_TS).unwrap();
    verify_sw1(&[&previous], &rotation, SW1_TS).unwrap();
    // A receiver holding both keys, in either order.
    verify_sw1(&[&previous, &primary], &rotation, SW1_TS).unwrap();
    // SW-3 alone is the SW-2 key's signature, not the SW-1 key's.
    verify_sw1(&[&previous], SW3_SIG, SW1_TS).unwrap();
    assert_eq!(
        verify_sw1(&[&primary], SW3_SIG, SW1_TS),
        Err(VerifyError::NoMatchingSignature)
    );
}

#[test]
fn whsec_prefix_is_optional_and_padding_is_optional() {
    let with = key(SW1_SECRET);
    let without = key(SW1_SECRET.strip_prefix("whsec_").unwrap());
    verify_sw1(&[&without], SW1_SIG, SW1_TS).unwrap();
    assert_eq!(with.to_whsec(), without.to_whsec());

    // A 32-byte key has one `=` of padding; dropping it gives the same key.
    let generated = SigningKey::generate().unwrap();
    let padded = generated.to_whsec();
    assert!(padded.ends_with('='));
    let unpadded = SigningKey::from_whsec(padded.trim_end_matches('=')).unwrap();
    assert_eq!(unpadded.to_whsec(), padded);
}

// --- Standard Webhooks negative cases (webhooks.md §4.1) ---

#[test]
fn wrong_signature_is_refused() {
    let k = key(SW1_SECRET);
    assert_eq!(
        verify_sw1(
            &[&k],
            "v1,R3PTzyfHASBKHH98a7yexTwaJ4yNIcGhFQc1yuN+BPU=",
            SW1_TS
        ),
        Err(VerifyError::NoMatchingSignature)
    );
}

#[test]
fn partial_signatures_are_refused() {
    let k = key(SW1_SECRET);
    for partial in [
        "v1,",
        &SW1_SIG[..8],
        "",
        "v1",
        SW1_SIG.trim_end_matches('='),
    ] {
        // The unpadded full signature is the same bytes, so it must pass: padding is
        // optional. Everything shorter must fail.
        let expected = if partial == SW1_SIG.trim_end_matches('=') {
            Ok(())
        } else {
            Err(VerifyError::NoMatchingSignature)
        };
        assert_eq!(verify_sw1(&[&k], partial, SW1_TS), expected, "{partial:?}");
    }
    // The signature missing its last two characters: a prefix of the right bytes.
    let truncated = &SW1_SIG[..SW1_SIG.len() - 2];
    assert_eq!(
        verify_sw1(&[&k], truncated, SW1_TS),
        Err(VerifyError::NoMatchingSignature)
    );
}

#[test]
fn timestamp_tolerance_is_300_seconds_each_way() {
    let k = key(SW1_SECRET);
    // The request was signed at SW1_TS; the receiver's clock varies.
    verify_sw1(&[&k], SW1_SIG, SW1_TS + TOLERANCE_SECS).unwrap();
    verify_sw1(&[&k], SW1_SIG, SW1_TS - TOLERANCE_SECS).unwrap();
    assert_eq!(
        verify_sw1(&[&k], SW1_SIG, SW1_TS + TOLERANCE_SECS + 1),
        Err(VerifyError::TimestampTooOld {
            timestamp: SW1_TS,
            now: SW1_TS + 301
        })
    );
    assert_eq!(
        verify_sw1(&[&k], SW1_SIG, SW1_TS - TOLERANCE_SECS - 1),
        Err(VerifyError::TimestampTooNew {
            timestamp: SW1_TS,
            now: SW1_TS - 301
        })
    );
}

#[test]
fn signature_over_a_shifted_timestamp_is_refused() {
    // A replay with an edited timestamp header: fresh enough, but the signature covers the
    // original timestamp.
    let k = key(SW1_SECRET);
    let ts = (SW1_TS + 1).to_string();
    assert_eq!(
        verify(
            &[&k],
            received(Some(SW1_ID), Some(&ts), Some(SW1_SIG)),
            SW1_BODY,
            SW1_TS
        ),
        Err(VerifyError::NoMatchingSignature)
    );
}

#[test]
fn decoys_without_the_right_signature_are_refused_and_with_it_pass() {
    let k = key(SW1_SECRET);
    let decoys = "v1,R3PTzyfHASBKHH98a7yexTwaJ4yNIcGhFQc1yuN+BPU= \
                  v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= \
                  v1,bmED0YkXIwCHhhZjbHn8qMCbczjpYwHGju/WMUmDqOQ=";
    assert_eq!(
        verify_sw1(&[&k], decoys, SW1_TS),
        Err(VerifyError::NoMatchingSignature)
    );
    let with_right = format!("{decoys} {SW1_SIG}");
    verify_sw1(&[&k], &with_right, SW1_TS).unwrap();
}

#[test]
fn other_versions_and_malformed_entries_are_skipped() {
    let k = key(SW1_SECRET);
    let sig_b64 = SW1_SIG.strip_prefix("v1,").unwrap();
    // The right bytes under another version must not count.
    let other_version = format!("v1a,{sig_b64} v2,{sig_b64}");
    assert_eq!(
        verify_sw1(&[&k], &other_version, SW1_TS),
        Err(VerifyError::NoMatchingSignature)
    );
    // Garbage around the right entry does not stop it from matching.
    let noisy = format!("nocomma v1,!!notbase64!! v1a,{sig_b64}   {SW1_SIG}");
    verify_sw1(&[&k], &noisy, SW1_TS).unwrap();
}

#[test]
fn each_missing_header_is_named() {
    let k = key(SW1_SECRET);
    let ts = SW1_TS.to_string();
    let cases = [
        (received(None, Some(&ts), Some(SW1_SIG)), HEADER_WEBHOOK_ID),
        (
            received(Some(SW1_ID), None, Some(SW1_SIG)),
            HEADER_WEBHOOK_TIMESTAMP,
        ),
        (
            received(Some(SW1_ID), Some(&ts), None),
            HEADER_WEBHOOK_SIGNATURE,
        ),
    ];
    for (headers, missing) in cases {
        assert_eq!(
            verify(&[&k], headers, SW1_BODY, SW1_TS),
            Err(VerifyError::MissingHeader(missing))
        );
    }
}

#[test]
fn malformed_timestamp_and_empty_id_are_invalid_headers() {
    let k = key(SW1_SECRET);
    for bad in [
        "",
        "abc",
        "-1649367553",
        "1649367553.0",
        "+1649367553",
        "99999999999999999999999",
    ] {
        let result = verify(
            &[&k],
            received(Some(SW1_ID), Some(bad), Some(SW1_SIG)),
            SW1_BODY,
            SW1_TS,
        );
        assert!(
            matches!(
                result,
                Err(VerifyError::InvalidHeader {
                    header: HEADER_WEBHOOK_TIMESTAMP,
                    ..
                })
            ),
            "{bad:?}: {result:?}"
        );
    }
    let ts = SW1_TS.to_string();
    assert!(matches!(
        verify(
            &[&k],
            received(Some(""), Some(&ts), Some(SW1_SIG)),
            SW1_BODY,
            SW1_TS
        ),
        Err(VerifyError::InvalidHeader {
            header: HEADER_WEBHOOK_ID,
            ..
        })
    ));
}

#[test]
fn verify_without_keys_is_an_error() {
    assert_eq!(verify_sw1(&[], SW1_SIG, SW1_TS), Err(VerifyError::NoKeys));
}

#[test]
fn verify_accepts_owned_header_values() {
    // The `&dyn Fn(&str) -> Option<String>` shape from the design works too.
    let k = key(SW1_SECRET);
    let lookup: &dyn Fn(&str) -> Option<String> = &|name| match name {
        HEADER_WEBHOOK_ID => Some(SW1_ID.to_owned()),
        HEADER_WEBHOOK_TIMESTAMP => Some(SW1_TS.to_string()),
        HEADER_WEBHOOK_SIGNATURE => Some(SW1_SIG.to_owned()),
        _ => None,
    };
    verify(&[&k], lookup, SW1_BODY, SW1_TS).unwrap();
    assert_eq!(
        verify(&[&k], lookup, b"tampered", SW1_TS),
        Err(VerifyError::NoMatchingSignature)
    );
}

// --- Secrets ---

#[test]
fn empty_and_bare_prefix_secrets_are_refused() {
    assert_eq!(
        SigningKey::from_whsec("").unwrap_err(),
        SigningError::EmptySecret
    );
    assert_eq!(
        SigningKey::from_whsec("whsec_").unwrap_err(),
        SigningError::EmptySecret
    );
    assert_eq!(
        SigningKey::from_text("").unwrap_err(),
        SigningError::EmptySecret
    );
}

#[test]
fn short_and_long_keys_are_refused() {
    // 23 bytes: one short of the minimum.
    let short = format!("whsec_{}", STANDARD.encode([7u8; 23]));
    assert_eq!(
        SigningKey::from_whsec(&short).unwrap_err(),
        SigningError::KeyLength { len: 23 }
    );
    let long = format!("whsec_{}", STANDARD.encode([7u8; 65]));
    assert_eq!(
        SigningKey::from_whsec(&long).unwrap_err(),
        SigningError::KeyLength { len: 65 }
    );
    // The bounds themselves are accepted.
    for len in [MIN_KEY_LEN, MAX_KEY_LEN] {
        let ok = format!("whsec_{}", STANDARD.encode(vec![7u8; len]));
        assert_eq!(SigningKey::from_whsec(&ok).unwrap().len(), len);
    }
}

#[test]
fn bad_base64_is_refused_with_a_reason() {
    for bad in [
        "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7o!",
        "whsec_C2FVsBQIhrscChlQIMV-b5sSYspob7oD", // URL-safe alphabet
        "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\n",
        "whsec_ C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oDA", // impossible length (33 characters)
        "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7p",   // non-zero trailing bits
        "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD=", // padding where none belongs
    ] {
        let err = SigningKey::from_whsec(bad).unwrap_err();
        assert!(
            matches!(err, SigningError::InvalidBase64 { .. }),
            "{bad:?}: {err:?}"
        );
        assert!(err.to_string().contains("base64"));
    }
}

#[test]
fn for_scheme_picks_the_parser() {
    // The same text is a base64 key for Standard Webhooks and raw bytes for the others.
    let sw = SigningKey::for_scheme(SignatureScheme::StandardWebhooks, SW1_SECRET).unwrap();
    assert_eq!(sw.len(), 24);
    let gh = SigningKey::for_scheme(SignatureScheme::GitHub, SW1_SECRET).unwrap();
    assert_eq!(gh.len(), SW1_SECRET.len());
    let em = SigningKey::for_scheme(SignatureScheme::WebhooksEmitter, "secret").unwrap();
    assert_eq!(em.len(), 6);
    // Short text secrets are fine for the text schemes (GitHub imposes no minimum).
    assert!(SigningKey::for_scheme(SignatureScheme::StandardWebhooks, "secret").is_err());
}

#[test]
fn debug_never_shows_the_key() {
    let k = key(SW1_SECRET);
    let debug = format!("{k:?} {:?}", [&k]);
    assert!(!debug.contains("C2FVsBQIhrscChlQIMV"), "{debug}");
    assert!(!debug.contains("whsec_"), "{debug}");
    let raw = BASE64_PAD_OPTIONAL
        .decode("C2FVsBQIhrscChlQIMV+b5sSYspob7oD")
        .unwrap();
    assert!(!debug.contains(&format!("{raw:?}")[1..20]), "{debug}");
    assert!(!debug.contains(&hex_lower(&raw)[..16]), "{debug}");
    assert!(debug.contains("redacted"));

    let text = SigningKey::from_text("It's a Secret to Everybody").unwrap();
    assert!(!format!("{text:?}").contains("Secret to"));
}

#[test]
fn generated_keys_are_distinct_and_round_trip() {
    let a = SigningKey::generate().unwrap();
    let b = SigningKey::generate().unwrap();
    assert_eq!(a.len(), GENERATED_KEY_LEN);
    assert_ne!(a.to_whsec(), b.to_whsec());
    let a_text = a.to_whsec();
    assert!(a_text.starts_with("whsec_"));
    let parsed = SigningKey::from_whsec(&a_text).unwrap();
    assert_eq!(parsed.to_whsec(), a_text);

    // The parsed key signs exactly like the original.
    let inp = input(SW1_ID, SW1_TS, SW1_BODY);
    assert_eq!(
        sign(SignatureScheme::StandardWebhooks, &[&a], &inp).unwrap(),
        sign(SignatureScheme::StandardWebhooks, &[&parsed], &inp).unwrap()
    );
}

// --- sign() input checks ---

#[test]
fn sign_refuses_no_keys_and_unsignable_ids() {
    let k = key(SW1_SECRET);
    assert_eq!(
        sign(
            SignatureScheme::GitHub,
            &[],
            &input(SW1_ID, SW1_TS, SW1_BODY)
        ),
        Err(SigningError::NoKeys)
    );
    for bad in ["", "msg.1", "msg 1", "msg\r\nx-evil: 1", "msgé"] {
        for scheme in [
            SignatureScheme::StandardWebhooks,
            SignatureScheme::WebhooksEmitter,
            SignatureScheme::GitHub,
        ] {
            assert_eq!(
                sign(scheme, &[&k], &input(bad, SW1_TS, SW1_BODY)),
                Err(SigningError::InvalidDeliveryId { id: bad.to_owned() }),
                "{scheme} {bad:?}"
            );
        }
    }
}

#[test]
fn emitter_refuses_event_names_unfit_for_a_header() {
    let k = SigningKey::from_text("secret").unwrap();
    for bad in ["", "order created", "order\ncreated"] {
        let inp = SignInput {
            event: bad,
            ..input(SW1_ID, SW1_TS, SW1_BODY)
        };
        assert_eq!(
            sign(SignatureScheme::WebhooksEmitter, &[&k], &inp),
            Err(SigningError::InvalidEvent {
                event: bad.to_owned()
            })
        );
        // Schemes that do not send the event name do not care.
        assert!(sign(SignatureScheme::GitHub, &[&k], &inp).is_ok());
    }
}

// --- GitHub ---

const GH_SECRET: &str = "It's a Secret to Everybody";
const GH_BODY: &[u8] = b"Hello, World!";
const GH_SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

#[test]
fn github_doc_vector() {
    let k = SigningKey::from_text(GH_SECRET).unwrap();
    let headers = sign(SignatureScheme::GitHub, &[&k], &input("d1", 0, GH_BODY)).unwrap();
    assert_eq!(
        headers,
        vec![(HEADER_X_HUB_SIGNATURE_256, GH_SIG.to_owned())]
    );
    verify_github(&k, GH_SIG, GH_BODY).unwrap();
    verify_github(
        &k,
        &GH_SIG.to_uppercase().replace("SHA256=", "sha256="),
        GH_BODY,
    )
    .unwrap();
}

#[test]
fn github_uses_only_the_first_key() {
    let first = SigningKey::from_text(GH_SECRET).unwrap();
    let second = SigningKey::from_text("other").unwrap();
    let headers = sign(
        SignatureScheme::GitHub,
        &[&first, &second],
        &input("d1", 0, GH_BODY),
    )
    .unwrap();
    assert_eq!(header(&headers, HEADER_X_HUB_SIGNATURE_256), Some(GH_SIG));
}

#[test]
fn github_negative_cases() {
    let k = SigningKey::from_text(GH_SECRET).unwrap();
    assert_eq!(
        verify_github(&k, GH_SIG, b"Hello, World?"),
        Err(VerifyError::NoMatchingSignature)
    );
    let other = SigningKey::from_text("not it").unwrap();
    assert_eq!(
        verify_github(&other, GH_SIG, GH_BODY),
        Err(VerifyError::NoMatchingSignature)
    );
    let hex = GH_SIG.strip_prefix("sha256=").unwrap();
    for bad in [
        hex,                                 // no prefix
        &format!("sha1={hex}"),              // another algorithm
        &GH_SIG[..GH_SIG.len() - 2],         // truncated
        &GH_SIG[..15],                       // first few chars
        "sha256=",                           // empty
        &format!("sha256={}zz", &hex[..62]), // not hex
    ] {
        assert!(
            matches!(
                verify_github(&k, bad, GH_BODY),
                Err(VerifyError::InvalidHeader {
                    header: HEADER_X_HUB_SIGNATURE_256,
                    ..
                })
            ),
            "{bad:?}"
        );
    }
}

// --- webhooks_emitter ---

const EMITTER_SIG: &str = "sha256:aquuvcmc2d7g5pdorl8cv12l8geogr1ueqkorrrhukjghg7tg3k0";

#[test]
fn emitter_computed_vector() {
    let k = SigningKey::from_text("secret").unwrap();
    let inp = SignInput {
        delivery_id: "req_1",
        event: "user.created",
        timestamp: SW1_TS,
        body: SW1_BODY,
    };
    let headers = sign(SignatureScheme::WebhooksEmitter, &[&k], &inp).unwrap();
    assert_eq!(
        headers,
        vec![
            (HEADER_X_WEBHOOKS_EVENT, "user.created".to_owned()),
            (HEADER_X_WEBHOOKS_DELIVERY, "req_1".to_owned()),
            (HEADER_X_WEBHOOKS_SIGNATURE, EMITTER_SIG.to_owned()),
        ]
    );
    verify_emitter(&k, EMITTER_SIG, SW1_BODY).unwrap();
    verify_emitter(
        &k,
        &EMITTER_SIG.to_uppercase().replace("SHA256:", "sha256:"),
        SW1_BODY,
    )
    .unwrap();
}

#[test]
fn emitter_negative_cases() {
    let k = SigningKey::from_text("secret").unwrap();
    assert_eq!(
        verify_emitter(&k, EMITTER_SIG, b"{}"),
        Err(VerifyError::NoMatchingSignature)
    );
    let other = SigningKey::from_text("Secret").unwrap();
    assert_eq!(
        verify_emitter(&other, EMITTER_SIG, SW1_BODY),
        Err(VerifyError::NoMatchingSignature)
    );
    let body32 = EMITTER_SIG.strip_prefix("sha256:").unwrap();
    for bad in [
        body32.to_owned(),                               // no prefix
        format!("sha256={body32}"),                      // GitHub's separator
        EMITTER_SIG[..EMITTER_SIG.len() - 1].to_owned(), // truncated
        format!("sha256:{}w", &body32[..51]),            // `w` is outside 0-v
        format!("sha256:{}1", &body32[..51]),            // non-zero leftover bit
        format!("{EMITTER_SIG}======"),                  // padding
    ] {
        assert!(
            matches!(
                verify_emitter(&k, &bad, SW1_BODY),
                Err(VerifyError::InvalidHeader {
                    header: HEADER_X_WEBHOOKS_SIGNATURE,
                    ..
                })
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn base32hex_matches_rfc4648_vectors() {
    // RFC 4648 §10, BASE32-HEX, lower-cased and without padding.
    let vectors: [(&[u8], &str); 7] = [
        (b"", ""),
        (b"f", "co"),
        (b"fo", "cpng"),
        (b"foo", "cpnmu"),
        (b"foob", "cpnmuog"),
        (b"fooba", "cpnmuoj1"),
        (b"foobar", "cpnmuoj1e8"),
    ];
    for (raw, encoded) in vectors {
        assert_eq!(base32hex_lower(raw), encoded, "{raw:?}");
        assert_eq!(
            base32hex_decode(encoded).as_deref(),
            Some(raw),
            "{encoded:?}"
        );
        assert_eq!(
            base32hex_decode(&encoded.to_uppercase()).as_deref(),
            Some(raw)
        );
    }
}

#[test]
fn base32hex_round_trips_every_length_and_byte() {
    let data: Vec<u8> = (0..=255u8).collect();
    for len in 0..=40 {
        let raw = &data[(len * 5) % 200..(len * 5) % 200 + len];
        let encoded = base32hex_lower(raw);
        assert_eq!(encoded.len(), (len * 8).div_ceil(5));
        assert!(encoded.bytes().all(|b| BASE32HEX_LOWER.contains(&b)));
        assert_eq!(base32hex_decode(&encoded).as_deref(), Some(raw));
    }
    // Lengths no encoder produces are refused.
    for len in [1, 3, 6, 9] {
        assert_eq!(base32hex_decode(&"0".repeat(len)), None, "{len}");
    }
}

#[test]
fn hex_round_trips() {
    let data: Vec<u8> = (0..=255u8).collect();
    let encoded = hex_lower(&data);
    assert_eq!(&encoded[..8], "00010203");
    assert_eq!(&encoded[encoded.len() - 4..], "feff");
    assert_eq!(hex_decode(&encoded), Some(data));
    assert_eq!(hex_decode("abc"), None);
    assert_eq!(hex_decode("zz"), None);
}

// --- SignatureScheme ---

#[test]
fn scheme_serde_names() {
    for (scheme, name) in [
        (SignatureScheme::StandardWebhooks, "standard_webhooks"),
        (SignatureScheme::WebhooksEmitter, "webhooks_emitter"),
        (SignatureScheme::GitHub, "github"),
    ] {
        assert_eq!(
            serde_json::to_string(&scheme).unwrap(),
            format!("\"{name}\"")
        );
        assert_eq!(
            serde_json::from_str::<SignatureScheme>(&format!("\"{name}\"")).unwrap(),
            scheme
        );
        assert_eq!(scheme.to_string(), name);
    }
    assert_eq!(
        SignatureScheme::default(),
        SignatureScheme::StandardWebhooks
    );
    assert!(serde_json::from_str::<SignatureScheme>("\"git_hub\"").is_err());
}

#[test]
fn error_messages_name_the_problem() {
    assert!(
        SigningError::KeyLength { len: 10 }
            .to_string()
            .contains("10 bytes")
    );
    assert!(
        SigningError::KeyLength { len: 10 }
            .to_string()
            .contains("24 to 64")
    );
    assert!(
        VerifyError::MissingHeader(HEADER_WEBHOOK_SIGNATURE)
            .to_string()
            .contains("webhook-signature")
    );
    assert!(
        VerifyError::TimestampTooOld {
            timestamp: 1,
            now: 400
        }
        .to_string()
        .contains("300 s")
    );
}
