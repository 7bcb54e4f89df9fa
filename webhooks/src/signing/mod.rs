//! Webhook request signing for senders and signature verification for receivers.
//!
//! Three schemes are supported, chosen per subscription with [`SignatureScheme`]. All three use
//! HMAC-SHA256; they differ in what is signed, how the key is written down and how the result
//! is encoded. [`sign`] returns only the scheme's own headers (lower-case names); the caller
//! adds `user-agent`, `content-type` and the event-name header to every request.
//!
//! # Standard Webhooks (the default)
//!
//! The [Standard Webhooks](https://www.standardwebhooks.com/) format, also used by Svix:
//!
//! ```text
//! webhook-id: <delivery id>               (stable across retries: the receiver's idempotency key)
//! webhook-timestamp: <unix seconds>
//! webhook-signature: v1,<base64 of HMAC-SHA256(key, "{id}.{timestamp}.{body}")>
//! ```
//!
//! The base64 is the standard alphabet with padding. The key is written as `whsec_` followed by
//! the base64 of 24 to 64 random bytes ([`SigningKey::from_whsec`], [`SigningKey::to_whsec`]);
//! the HMAC key is the decoded bytes, not the text.
//!
//! **Key rotation**: [`sign`] takes a list of keys and emits one `v1,` entry per key, primary
//! first, separated by single spaces. During a grace period, sign with `[&new, &old]`: receivers
//! that still hold the old secret and receivers that already hold the new one both accept the
//! request, because [`verify`] passes when *any* entry matches *any* of its keys.
//!
//! [`verify`] is the receiver's check: it requires all three headers, refuses a timestamp more
//! than [`TOLERANCE_SECS`] (5 minutes) away from the receiver's clock in either direction
//! (replay protection), compares in constant time, ignores entries of other versions (`v1a,`
//! Ed25519) and skips malformed entries.
//!
//! # webhooks_emitter
//!
//! The format of the Elixir `webhooks_emitter` library:
//!
//! ```text
//! x-webhooks-event: <event name>
//! x-webhooks-delivery: <delivery id>
//! x-webhooks-signature: sha256:<base32 of HMAC-SHA256(key, body)>
//! ```
//!
//! The base32 uses the RFC 4648 "extended hex" alphabet (`0-9a-v`), lower case, no padding. The
//! key is the secret text's UTF-8 bytes ([`SigningKey::from_text`]). There is no timestamp (no
//! replay protection) and one signature only: [`sign`] uses the first key. Receivers check it
//! with [`verify_emitter`].
//!
//! # GitHub
//!
//! ```text
//! x-hub-signature-256: sha256=<lower-case hex of HMAC-SHA256(key, body)>
//! ```
//!
//! The key is the secret text's UTF-8 bytes. No timestamp, one signature (the first key).
//! Receivers check it with [`verify_github`].
//!
//! # Receiving a Standard Webhooks request
//!
//! ```
//! use hookspool_webhooks::{SignInput, SignatureScheme, SigningKey, sign, verify};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The secret shared with the sender, as shown by it ("whsec_...").
//! let key = SigningKey::from_whsec("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")?;
//!
//! // What arrives over HTTP (built here with `sign`, as the sender does).
//! let body = br#"{"email":"test@example.com","username":"test_user"}"#;
//! let now = 1_649_367_553; // unix seconds, from the receiver's own clock
//! let input = SignInput {
//!     delivery_id: "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
//!     event: "user.created",
//!     timestamp: now,
//!     body,
//! };
//! let headers = sign(SignatureScheme::StandardWebhooks, &[&key], &input)?;
//!
//! // The receiver looks headers up by name (case-insensitively, as HTTP header names are),
//! // here in a list of pairs; with the `http` crate: `|name| map.get(name)?.to_str().ok()`.
//! let lookup = |name: &str| {
//!     headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
//! };
//! verify(&[&key], lookup, body, now)?;
//!
//! // A changed body, or the same request replayed ten minutes later, is refused.
//! assert!(verify(&[&key], lookup, br#"{"email":"evil@example.com"}"#, now).is_err());
//! assert!(verify(&[&key], lookup, body, now + 600).is_err());
//! # Ok(())
//! # }
//! ```

use std::fmt;

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How far (seconds) a Standard Webhooks timestamp may be from the receiver's clock, in either
/// direction, for [`verify`] to accept it (the spec's reference libraries use 5 minutes).
pub const TOLERANCE_SECS: u64 = 300;

/// The shortest Standard Webhooks key accepted, in bytes (the spec's lower bound; Svix
/// generates keys of exactly this size).
pub const MIN_KEY_LEN: usize = 24;

/// The longest Standard Webhooks key accepted, in bytes (the spec's upper bound).
pub const MAX_KEY_LEN: usize = 64;

/// The size of a key made by [`SigningKey::generate`], in bytes.
pub const GENERATED_KEY_LEN: usize = 32;

/// The prefix of a Standard Webhooks secret.
pub const WHSEC_PREFIX: &str = "whsec_";

/// Standard Webhooks header: the delivery id.
pub const HEADER_WEBHOOK_ID: &str = "webhook-id";
/// Standard Webhooks header: the signing time, integer unix seconds.
pub const HEADER_WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// Standard Webhooks header: space-separated `v1,<base64>` signatures.
pub const HEADER_WEBHOOK_SIGNATURE: &str = "webhook-signature";
/// webhooks_emitter header: the event name.
pub const HEADER_X_WEBHOOKS_EVENT: &str = "x-webhooks-event";
/// webhooks_emitter header: the delivery id.
pub const HEADER_X_WEBHOOKS_DELIVERY: &str = "x-webhooks-delivery";
/// webhooks_emitter header: `sha256:<base32hex>`.
pub const HEADER_X_WEBHOOKS_SIGNATURE: &str = "x-webhooks-signature";
/// GitHub header: `sha256=<hex>`.
pub const HEADER_X_HUB_SIGNATURE_256: &str = "x-hub-signature-256";

/// Standard base64 that decodes with or without padding, still rejecting non-canonical
/// trailing bits and stray characters: the spec's Python library re-adds missing padding, so a
/// secret copied without its `=` must be accepted, but nothing looser than that.
const BASE64_PAD_OPTIONAL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// RFC 4648 "base32hex" alphabet, lower case (what webhooks_emitter's
/// `Base.hex_encode32(.., case: :lower, padding: false)` produces).
const BASE32HEX_LOWER: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";

/// How a request is signed (chosen per subscription). The default is Standard Webhooks.
///
/// Serialized in snake_case: `"standard_webhooks"`, `"webhooks_emitter"`, `"github"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SignatureScheme {
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>` (with rotation);
    /// the key is a `whsec_` secret.
    #[default]
    StandardWebhooks,
    /// `x-webhooks-event`, `x-webhooks-delivery`, `x-webhooks-signature: sha256:<base32hex>`;
    /// the key is the secret text.
    WebhooksEmitter,
    /// `x-hub-signature-256: sha256=<hex>`; the key is the secret text.
    // Spelled out because `rename_all` would make it `git_hub`.
    #[serde(rename = "github")]
    GitHub,
}

impl SignatureScheme {
    /// The scheme's name as written in configuration (`standard_webhooks`, `webhooks_emitter`,
    /// `github`).
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureScheme::StandardWebhooks => "standard_webhooks",
            SignatureScheme::WebhooksEmitter => "webhooks_emitter",
            SignatureScheme::GitHub => "github",
        }
    }
}

impl fmt::Display for SignatureScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key for signing or verifying requests. Its `Debug` never shows the key.
///
/// Build it from a `whsec_` secret ([`from_whsec`](Self::from_whsec), Standard Webhooks), from
/// secret text ([`from_text`](Self::from_text), GitHub and webhooks_emitter), for a scheme
/// ([`for_scheme`](Self::for_scheme)), or generate a fresh one ([`generate`](Self::generate)).
#[derive(Clone)]
pub struct SigningKey {
    /// The raw HMAC key (kept to write it back out with `to_whsec`).
    bytes: Vec<u8>,
    /// HMAC state already keyed with `bytes`: cloning it per signature skips re-deriving the
    /// padded key, and keying once here keeps the (never failing in practice) `new_from_slice`
    /// error out of `sign` and `verify`.
    mac: HmacSha256,
}

impl SigningKey {
    fn from_bytes(bytes: Vec<u8>) -> Result<Self, SigningError> {
        // HMAC accepts keys of any length, so this error cannot happen; it is mapped rather
        // than unwrapped because library code never panics.
        let mac = HmacSha256::new_from_slice(&bytes)
            .map_err(|_| SigningError::KeyLength { len: bytes.len() })?;
        Ok(SigningKey { bytes, mac })
    }

    /// A new key of [`GENERATED_KEY_LEN`] (32) random bytes from the operating system's
    /// secure random source. Write it down with [`to_whsec`](Self::to_whsec).
    ///
    /// # Errors
    ///
    /// [`SigningError::Random`] if the operating system cannot provide random bytes.
    pub fn generate() -> Result<Self, SigningError> {
        let mut bytes = vec![0u8; GENERATED_KEY_LEN];
        getrandom::fill(&mut bytes).map_err(|e| SigningError::Random(e.to_string()))?;
        Self::from_bytes(bytes)
    }

    /// Parses a Standard Webhooks secret: `whsec_` followed by the standard base64 (padding
    /// optional) of a 24- to 64-byte key. The `whsec_` prefix is optional, as in the spec's
    /// reference libraries. Decoding is strict: no whitespace, no URL-safe alphabet, no
    /// non-canonical trailing bits.
    ///
    /// # Errors
    ///
    /// [`SigningError::EmptySecret`] for `""` or a bare `whsec_`,
    /// [`SigningError::InvalidBase64`] for anything that is not base64, and
    /// [`SigningError::KeyLength`] for a key shorter than [`MIN_KEY_LEN`] or longer than
    /// [`MAX_KEY_LEN`] bytes.
    pub fn from_whsec(secret: &str) -> Result<Self, SigningError> {
        let encoded = secret.strip_prefix(WHSEC_PREFIX).unwrap_or(secret);
        if encoded.is_empty() {
            return Err(SigningError::EmptySecret);
        }
        let bytes =
            BASE64_PAD_OPTIONAL
                .decode(encoded)
                .map_err(|e| SigningError::InvalidBase64 {
                    reason: e.to_string(),
                })?;
        if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&bytes.len()) {
            return Err(SigningError::KeyLength { len: bytes.len() });
        }
        Self::from_bytes(bytes)
    }

    /// A key that is the secret text's UTF-8 bytes, as GitHub and webhooks_emitter use it.
    ///
    /// # Errors
    ///
    /// [`SigningError::EmptySecret`] for an empty secret (an HMAC with an empty key
    /// authenticates nothing).
    pub fn from_text(secret: &str) -> Result<Self, SigningError> {
        if secret.is_empty() {
            return Err(SigningError::EmptySecret);
        }
        Self::from_bytes(secret.as_bytes().to_vec())
    }

    /// Parses a secret the way `scheme` writes it: [`from_whsec`](Self::from_whsec) for
    /// Standard Webhooks, [`from_text`](Self::from_text) for the others.
    ///
    /// # Errors
    ///
    /// Those of the parser used.
    pub fn for_scheme(scheme: SignatureScheme, secret: &str) -> Result<Self, SigningError> {
        match scheme {
            SignatureScheme::StandardWebhooks => Self::from_whsec(secret),
            SignatureScheme::WebhooksEmitter | SignatureScheme::GitHub => Self::from_text(secret),
        }
    }

    /// The key as a Standard Webhooks secret: `whsec_` + standard base64 with padding. This is
    /// the secret to hand to the receiver; treat it like a password.
    pub fn to_whsec(&self) -> String {
        format!("{WHSEC_PREFIX}{}", STANDARD.encode(&self.bytes))
    }

    /// The length of the key in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: every constructor refuses an empty key. (Present because `len` is.)
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The HMAC of `parts`, fed in order, as a state ready to finalize or verify.
    fn mac_over(&self, parts: &[&[u8]]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        for part in parts {
            mac.update(part);
        }
        mac
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only the length: enough to diagnose "wrong kind of key", useless to an attacker.
        write!(f, "SigningKey(<redacted, {} bytes>)", self.bytes.len())
    }
}

/// What is signed about one request.
#[derive(Clone, Copy, Debug)]
pub struct SignInput<'a> {
    /// The delivery id: `webhook-id` / `x-webhooks-delivery`. Keep it stable across retries
    /// (receivers deduplicate on it). Non-empty visible ASCII without `.`.
    pub delivery_id: &'a str,
    /// The event name: `x-webhooks-event` (webhooks_emitter only; the other schemes do not
    /// put it in their headers or signature).
    pub event: &'a str,
    /// The signing time in unix seconds: `webhook-timestamp` (Standard Webhooks only). Use the
    /// time of this attempt, not of the first: receivers refuse timestamps older than 5 minutes.
    pub timestamp: u64,
    /// The exact body bytes sent.
    pub body: &'a [u8],
}

/// The signature headers for one request, as `(lower-case header name, value)` pairs.
///
/// - [`StandardWebhooks`](SignatureScheme::StandardWebhooks): `webhook-id`,
///   `webhook-timestamp`, `webhook-signature` with one `v1,<base64>` per key in `keys`,
///   space-separated, in the order given (primary first, then the keys being rotated out).
/// - [`WebhooksEmitter`](SignatureScheme::WebhooksEmitter): `x-webhooks-event`,
///   `x-webhooks-delivery`, `x-webhooks-signature: sha256:<base32hex>`, with the first key.
/// - [`GitHub`](SignatureScheme::GitHub): `x-hub-signature-256: sha256=<hex>`, with the first
///   key.
///
/// # Errors
///
/// [`SigningError::NoKeys`] if `keys` is empty; [`SigningError::InvalidDeliveryId`] if the
/// delivery id is empty, contains `.` (Standard Webhooks signs `id.timestamp.body`, so a dot
/// would make the signed content ambiguous) or contains anything but visible ASCII (it goes
/// into a header); [`SigningError::InvalidEvent`] if, for webhooks_emitter, the event name is
/// not non-empty visible ASCII. The id is checked for every scheme so that a delivery signs
/// the same way whichever scheme its subscription is switched to.
pub fn sign(
    scheme: SignatureScheme,
    keys: &[&SigningKey],
    input: &SignInput<'_>,
) -> Result<Vec<(&'static str, String)>, SigningError> {
    let Some(first) = keys.first() else {
        return Err(SigningError::NoKeys);
    };
    if !is_valid_delivery_id(input.delivery_id) {
        return Err(SigningError::InvalidDeliveryId {
            id: input.delivery_id.to_owned(),
        });
    }
    let headers = match scheme {
        SignatureScheme::StandardWebhooks => {
            let timestamp = input.timestamp.to_string();
            let signature = keys
                .iter()
                .map(|key| sign_v1(key, input.delivery_id, &timestamp, input.body))
                .collect::<Vec<_>>()
                .join(" ");
            vec![
                (HEADER_WEBHOOK_ID, input.delivery_id.to_owned()),
                (HEADER_WEBHOOK_TIMESTAMP, timestamp),
                (HEADER_WEBHOOK_SIGNATURE, signature),
            ]
        }
        SignatureScheme::WebhooksEmitter => {
            if !is_visible_ascii(input.event) {
                return Err(SigningError::InvalidEvent {
                    event: input.event.to_owned(),
                });
            }
            let tag = first.mac_over(&[input.body]).finalize().into_bytes();
            vec![
                (HEADER_X_WEBHOOKS_EVENT, input.event.to_owned()),
                (HEADER_X_WEBHOOKS_DELIVERY, input.delivery_id.to_owned()),
                (
                    HEADER_X_WEBHOOKS_SIGNATURE,
                    format!("sha256:{}", base32hex_lower(&tag)),
                ),
            ]
        }
        SignatureScheme::GitHub => {
            let tag = first.mac_over(&[input.body]).finalize().into_bytes();
            vec![(
                HEADER_X_HUB_SIGNATURE_256,
                format!("sha256={}", hex_lower(&tag)),
            )]
        }
    };
    Ok(headers)
}

/// One Standard Webhooks signature entry, `v1,<base64>`.
fn sign_v1(key: &SigningKey, id: &str, timestamp: &str, body: &[u8]) -> String {
    let tag = key
        .mac_over(&[id.as_bytes(), b".", timestamp.as_bytes(), b".", body])
        .finalize()
        .into_bytes();
    format!("v1,{}", STANDARD.encode(tag))
}

/// Verifies a Standard Webhooks request, as a receiver.
///
/// `headers` looks a header up by its lower-case name (make it case-insensitive, as HTTP is);
/// `body` is the raw body exactly as received (before any JSON parsing); `now` is the
/// receiver's clock in unix seconds.
///
/// Passes when the timestamp is within [`TOLERANCE_SECS`] of `now` and any `v1,` entry of
/// `webhook-signature` matches the signature under any of `keys` (give the new and the old key
/// during a rotation). Each comparison is constant-time. Entries of other versions are
/// ignored and malformed entries (no comma, bad base64, wrong length) are skipped, so that a
/// sender adding a new signature version does not break receivers.
///
/// # Errors
///
/// [`VerifyError::NoKeys`] if `keys` is empty; [`VerifyError::MissingHeader`] naming the
/// first absent header; [`VerifyError::InvalidHeader`] for an empty `webhook-id` or a
/// timestamp that is not integer seconds; [`VerifyError::TimestampTooOld`] /
/// [`VerifyError::TimestampTooNew`] outside the tolerance (checked before the signature, like
/// the reference libraries); [`VerifyError::NoMatchingSignature`] otherwise.
pub fn verify<H, S>(
    keys: &[&SigningKey],
    headers: H,
    body: &[u8],
    now: u64,
) -> Result<(), VerifyError>
where
    H: Fn(&str) -> Option<S>,
    S: AsRef<str>,
{
    if keys.is_empty() {
        return Err(VerifyError::NoKeys);
    }
    let id = headers(HEADER_WEBHOOK_ID).ok_or(VerifyError::MissingHeader(HEADER_WEBHOOK_ID))?;
    let timestamp = headers(HEADER_WEBHOOK_TIMESTAMP)
        .ok_or(VerifyError::MissingHeader(HEADER_WEBHOOK_TIMESTAMP))?;
    let signatures = headers(HEADER_WEBHOOK_SIGNATURE)
        .ok_or(VerifyError::MissingHeader(HEADER_WEBHOOK_SIGNATURE))?;
    let (id, timestamp_text, signatures) = (
        id.as_ref().trim(),
        timestamp.as_ref().trim(),
        signatures.as_ref(),
    );

    if id.is_empty() {
        return Err(VerifyError::InvalidHeader {
            header: HEADER_WEBHOOK_ID,
            reason: "it is empty",
        });
    }
    let timestamp = parse_unix_seconds(timestamp_text).ok_or(VerifyError::InvalidHeader {
        header: HEADER_WEBHOOK_TIMESTAMP,
        reason: "it is not an integer number of unix seconds",
    })?;
    if now > timestamp && now - timestamp > TOLERANCE_SECS {
        return Err(VerifyError::TimestampTooOld { timestamp, now });
    }
    if timestamp > now && timestamp - now > TOLERANCE_SECS {
        return Err(VerifyError::TimestampTooNew { timestamp, now });
    }

    // Decode the candidate entries once; keep only well-formed `v1` ones.
    let candidates: Vec<Vec<u8>> = signatures
        .split_ascii_whitespace()
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .filter_map(|(_, sig)| BASE64_PAD_OPTIONAL.decode(sig).ok())
        .collect();

    // Sign exactly the header text received (not a re-formatted number): the sender signed
    // its own text, and `0123` and `123` are different signed contents.
    let parts: [&[u8]; 5] = [id.as_bytes(), b".", timestamp_text.as_bytes(), b".", body];
    // `any` stops at the first match, which tells a timing observer only that some entry
    // matched: the result says that anyway. Each comparison itself is constant-time
    // (`verify_slice` checks the length, then compares the bytes with `subtle`).
    let matched = keys.iter().any(|key| {
        let mac = key.mac_over(&parts);
        candidates
            .iter()
            .any(|sig| mac.clone().verify_slice(sig).is_ok())
    });
    if matched {
        Ok(())
    } else {
        Err(VerifyError::NoMatchingSignature)
    }
}

/// Verifies a GitHub-style `x-hub-signature-256` header value (`sha256=<hex>`) over `body`,
/// in constant time. Hex digits may be upper or lower case.
///
/// # Errors
///
/// [`VerifyError::InvalidHeader`] if the value is not `sha256=` followed by 64 hex digits;
/// [`VerifyError::NoMatchingSignature`] if it does not match.
pub fn verify_github(key: &SigningKey, header_value: &str, body: &[u8]) -> Result<(), VerifyError> {
    let invalid = VerifyError::InvalidHeader {
        header: HEADER_X_HUB_SIGNATURE_256,
        reason: "expected `sha256=` followed by 64 hex digits",
    };
    let tag = header_value
        .trim()
        .strip_prefix("sha256=")
        .and_then(hex_decode)
        .filter(|tag| tag.len() == 32)
        .ok_or(invalid)?;
    key.mac_over(&[body])
        .verify_slice(&tag)
        .map_err(|_| VerifyError::NoMatchingSignature)
}

/// Verifies a webhooks_emitter-style `x-webhooks-signature` header value
/// (`sha256:<base32hex>`) over `body`, in constant time. Letters may be upper or lower case.
///
/// # Errors
///
/// [`VerifyError::InvalidHeader`] if the value is not `sha256:` followed by the 52-character
/// unpadded base32hex of a 32-byte digest; [`VerifyError::NoMatchingSignature`] if it does not
/// match.
pub fn verify_emitter(
    key: &SigningKey,
    header_value: &str,
    body: &[u8],
) -> Result<(), VerifyError> {
    let invalid = VerifyError::InvalidHeader {
        header: HEADER_X_WEBHOOKS_SIGNATURE,
        reason: "expected `sha256:` followed by 52 base32hex characters (0-9, a-v)",
    };
    let tag = header_value
        .trim()
        .strip_prefix("sha256:")
        .and_then(base32hex_decode)
        .filter(|tag| tag.len() == 32)
        .ok_or(invalid)?;
    key.mac_over(&[body])
        .verify_slice(&tag)
        .map_err(|_| VerifyError::NoMatchingSignature)
}

/// Why a key could not be made or a request could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SigningError {
    /// The secret is empty, or a bare `whsec_`.
    #[error(
        "the signing secret is empty: give a secret (for Standard Webhooks `whsec_` + base64 of \
         {MIN_KEY_LEN} to {MAX_KEY_LEN} random bytes), or none to have one generated"
    )]
    EmptySecret,
    /// The part after `whsec_` is not standard base64.
    #[error(
        "the signing secret is not valid base64 after `whsec_` ({reason}): a Standard Webhooks \
         secret is `whsec_` followed by standard base64 (A-Z a-z 0-9 + /, optional `=` padding, \
         no spaces or newlines)"
    )]
    InvalidBase64 {
        /// What the decoder found wrong (position and character; never the secret).
        reason: String,
    },
    /// The decoded key has the wrong length.
    #[error(
        "the signing key is {len} bytes long; a Standard Webhooks key must be {MIN_KEY_LEN} to \
         {MAX_KEY_LEN} bytes: use a longer secret or let hookspool generate one"
    )]
    KeyLength {
        /// The decoded length in bytes.
        len: usize,
    },
    /// The operating system's random source failed while generating a key.
    #[error("could not read random bytes from the operating system to generate a key: {0}")]
    Random(String),
    /// `sign` was given no key.
    #[error("no signing key given: at least one key is needed to sign a request")]
    NoKeys,
    /// The delivery id cannot be signed or sent.
    #[error(
        "delivery id {id:?} cannot be signed: it must be non-empty visible ASCII without `.` \
         (Standard Webhooks signs `id.timestamp.body`)"
    )]
    InvalidDeliveryId {
        /// The offending id.
        id: String,
    },
    /// The event name cannot be sent in the `x-webhooks-event` header.
    #[error(
        "event name {event:?} cannot be sent in the x-webhooks-event header: it must be \
         non-empty visible ASCII (no spaces or control characters)"
    )]
    InvalidEvent {
        /// The offending event name.
        event: String,
    },
}

/// Why a received request failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A required header is absent (its lower-case name).
    #[error(
        "missing header `{0}`: a Standard Webhooks request carries webhook-id, webhook-timestamp \
         and webhook-signature (check that a proxy does not strip them)"
    )]
    MissingHeader(&'static str),
    /// A header is present but malformed.
    #[error("invalid header `{header}`: {reason}")]
    InvalidHeader {
        /// The header's lower-case name.
        header: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The timestamp is more than [`TOLERANCE_SECS`] in the past.
    #[error(
        "webhook timestamp {timestamp} is more than {TOLERANCE_SECS} s before now ({now}): a \
         replayed or long-delayed request, or the receiver's clock is ahead"
    )]
    TimestampTooOld {
        /// The request's timestamp (unix seconds).
        timestamp: u64,
        /// The receiver's `now` (unix seconds).
        now: u64,
    },
    /// The timestamp is more than [`TOLERANCE_SECS`] in the future.
    #[error(
        "webhook timestamp {timestamp} is more than {TOLERANCE_SECS} s after now ({now}): the \
         sender's clock is ahead or the receiver's is behind"
    )]
    TimestampTooNew {
        /// The request's timestamp (unix seconds).
        timestamp: u64,
        /// The receiver's `now` (unix seconds).
        now: u64,
    },
    /// No signature matches any key.
    #[error(
        "no signature matches: the body was altered (verify the raw bytes, before any JSON \
         parsing) or the receiver's secret differs from the sender's"
    )]
    NoMatchingSignature,
    /// `verify` was given no key.
    #[error(
        "no verification key given: pass the endpoint's secret (and the previous one while rotating)"
    )]
    NoKeys,
}

/// A delivery id that can be signed and sent: non-empty visible ASCII, no `.`.
fn is_valid_delivery_id(id: &str) -> bool {
    is_visible_ascii(id) && !id.contains('.')
}

/// Non-empty, every byte a visible ASCII character (`!` to `~`): safe in any header value.
fn is_visible_ascii(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic())
}

/// Integer unix seconds: ASCII digits only (no sign, no fraction), fitting in a `u64`.
fn parse_unix_seconds(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks_exact(2)
        .map(|pair| {
            let hi = char::from(pair[0]).to_digit(16)?;
            let lo = char::from(pair[1]).to_digit(16)?;
            u8::try_from(hi << 4 | lo).ok()
        })
        .collect()
}

/// RFC 4648 base32 with the "extended hex" alphabet, lower case, without padding.
fn base32hex_lower(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    // Bits not yet written, right-aligned in `buffer`; never more than 12 at once.
    let mut buffer: u32 = 0;
    let mut bits: u32 = 0;
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(
                BASE32HEX_LOWER[((buffer >> bits) & 0x1f) as usize],
            ));
        }
    }
    if bits > 0 {
        // The last group is zero-filled on the right, as RFC 4648 §6 says.
        out.push(char::from(
            BASE32HEX_LOWER[((buffer << (5 - bits)) & 0x1f) as usize],
        ));
    }
    out
}

/// Decodes unpadded base32hex (either case). Refuses lengths no encoder produces and
/// non-zero leftover bits, so that each byte string has exactly one accepted spelling.
fn base32hex_decode(s: &str) -> Option<Vec<u8>> {
    if matches!(s.len() % 8, 1 | 3 | 6) {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 5 / 8);
    let mut buffer: u32 = 0;
    let mut bits: u32 = 0;
    for c in s.chars() {
        let value = c.to_digit(32)?;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((buffer >> bits) & 0xff).ok()?);
        }
    }
    if buffer & ((1 << bits) - 1) != 0 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests;
