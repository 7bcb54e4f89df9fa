//! The on-disk record format of items and queue settings: a version byte, a CRC-32 of the
//! body, and the body in bincode 2 (serde, standard config). Decoding never panics and never
//! returns bytes that failed a check as data.

use std::collections::BTreeMap;

use hookspool::{Error, Item, QueueConfig, QueueId, Result, Retention, Timestamp};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The version byte that starts every record this crate writes.
///
/// A record with another version is reported as [`Error::Corrupted`]: a future format will
/// bump it, and an older build must refuse what it cannot read rather than guess.
pub const FORMAT_VERSION: u8 = 1;

/// Bytes before the body: the version byte and the little-endian CRC-32 of the body.
pub const RECORD_HEADER_LEN: usize = 5;

/// Largest record body this crate writes or reads: 64 MiB.
///
/// The limit exists so that a corrupt length prefix inside a body can never make the
/// decoder allocate more than this; `push` refuses an item whose record would be larger, so
/// nothing is ever stored that could not be read back. It is far above the store's default
/// payload limit of 1 MiB (plus metadata), so only a store configured for huge payloads
/// meets it.
pub const MAX_RECORD_BODY: usize = 64 * 1024 * 1024;

/// The bincode configuration of record bodies. `with_limit` bounds what a length prefix can
/// claim, which is what keeps hostile bytes from triggering huge allocations.
fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_RECORD_BODY>()
}

/// Encodes a value as a record, or says why it cannot be.
fn encode<T: Serialize>(value: &T) -> std::result::Result<Vec<u8>, String> {
    let body = bincode::serde::encode_to_vec(value, config()).map_err(|e| e.to_string())?;
    frame(&body)
}

/// Puts the header in front of a body, refusing one the decoder would not accept.
fn frame(body: &[u8]) -> std::result::Result<Vec<u8>, String> {
    if body.len() > MAX_RECORD_BODY {
        return Err(format!(
            "record body of {} bytes is over the sled backend's limit of {MAX_RECORD_BODY} bytes",
            body.len()
        ));
    }
    let mut out = Vec::with_capacity(RECORD_HEADER_LEN + body.len());
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

/// Checks and decodes a record; the error says what failed, for [`Error::Corrupted`].
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, String> {
    let Some((header, body)) = bytes.split_at_checked(RECORD_HEADER_LEN) else {
        return Err(format!(
            "record of {} bytes is shorter than its {RECORD_HEADER_LEN}-byte header",
            bytes.len()
        ));
    };
    if header[0] != FORMAT_VERSION {
        return Err(format!(
            "unknown record format version {} (this build reads version {FORMAT_VERSION})",
            header[0]
        ));
    }
    let stored = u32::from_le_bytes([header[1], header[2], header[3], header[4]]);
    let actual = crc32fast::hash(body);
    if stored != actual {
        return Err(format!(
            "checksum mismatch (stored {stored:#010x}, computed {actual:#010x})"
        ));
    }
    let (value, used) = bincode::serde::decode_from_slice::<T, _>(body, config())
        .map_err(|e| format!("checksum is valid but the body does not decode: {e}"))?;
    if used != body.len() {
        return Err(format!(
            "{} trailing bytes after the body",
            body.len() - used
        ));
    }
    Ok(value)
}

/// Encodes an item as a record: `[FORMAT_VERSION][crc32 LE of body][bincode 2 body]`.
///
/// Encoding an [`Item`] cannot fail in practice: every field has a fixed serde shape. Should
/// bincode ever report an error (or the body exceed [`MAX_RECORD_BODY`]), the result is a
/// header without a body, which [`decode_item`] rejects as corrupt, so the failure can never
/// turn into wrong data. The backend itself uses a checked encoder and refuses such items.
pub fn encode_item(item: &Item) -> Vec<u8> {
    encode(item).unwrap_or_else(|_| vec![FORMAT_VERSION, 0, 0, 0, 0])
}

/// Decodes a record written by [`encode_item`].
///
/// # Errors
/// [`Error::Corrupted`] for any input that is not such a record: too short, another format
/// version, a checksum mismatch, a body that does not decode (including invalid phase names
/// and lengths over [`MAX_RECORD_BODY`]) or trailing bytes. Never panics.
pub fn decode_item(bytes: &[u8]) -> Result<Item> {
    decode(bytes).map_err(|reason| Error::corrupted(format!("item record: {reason}")))
}

/// Encodes an item for storage; `Err(InvalidInput)` if it is too large to be read back.
pub(crate) fn encode_item_checked(item: &Item) -> Result<Vec<u8>> {
    encode(item).map_err(|reason| Error::invalid(format!("item cannot be stored: {reason}")))
}

/// Queue settings as this crate lays them out in a record.
///
/// Before the engine and the webhook layer became separate crates, a queue's signing secret
/// had a field of its own, second in the layout. The slot stays, so that every store written
/// since still reads: it is written empty, and a secret found in it is read into the
/// metadata entry `secret`, where the webhook layer now keeps a callback channel's secret.
#[derive(Serialize, Deserialize)]
struct ConfigRecord {
    id: QueueId,
    legacy_secret: Option<String>,
    ttl_ms: Option<u64>,
    retention: Retention,
    created_at: Timestamp,
    metadata: BTreeMap<String, String>,
}

impl TryFrom<ConfigRecord> for QueueConfig {
    type Error = String;

    /// The settings, with the retention periods (kept in the metadata, see
    /// [`QueueConfig::stored_metadata`]) back in their field.
    fn try_from(r: ConfigRecord) -> std::result::Result<Self, String> {
        let mut config = QueueConfig::new(r.id).with_retention(r.retention);
        config.ttl = r.ttl_ms.map(std::time::Duration::from_millis);
        config.created_at = r.created_at;
        config.metadata = r.metadata;
        if let Some(secret) = r.legacy_secret {
            config.metadata.entry("secret".to_owned()).or_insert(secret);
        }
        config
            .restore_stored_metadata()
            .map_err(|e| e.to_string())?;
        Ok(config)
    }
}

/// Encodes queue settings for storage.
pub(crate) fn encode_config(config: &QueueConfig) -> Result<Vec<u8>> {
    let record = ConfigRecord {
        id: config.id.clone(),
        legacy_secret: None,
        ttl_ms: config
            .ttl
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        retention: config.retention,
        created_at: config.created_at,
        metadata: config.stored_metadata(),
    };
    encode(&record).map_err(|reason| {
        Error::invalid(format!(
            "settings of queue `{}` cannot be stored: {reason}",
            config.id
        ))
    })
}

/// Decodes queue settings; the error reason is for the caller to wrap with context.
pub(crate) fn decode_config(bytes: &[u8]) -> std::result::Result<QueueConfig, String> {
    decode::<ConfigRecord>(bytes).and_then(QueueConfig::try_from)
}

/// Decodes an item; the error reason is for the caller to wrap with context.
pub(crate) fn decode_item_reason(bytes: &[u8]) -> std::result::Result<Item, String> {
    decode(bytes)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use hookspool::{Lease, Phase};

    use super::*;

    fn item() -> Item {
        Item {
            key: 42,
            payload: br#"{"id":1}"#.to_vec(),
            phase: Phase::new("needs-review").unwrap(),
            attempts: 3,
            created_at: Timestamp::from_millis(1_000),
            updated_at: Timestamp::from_millis(2_000),
            not_before: Timestamp::from_millis(3_000),
            lease: Some(Lease {
                owner: "worker-1".into(),
                until: Timestamp::from_millis(4_000),
            }),
            last_error: Some("502 from receiver".into()),
            metadata: BTreeMap::from([("event".to_string(), "order.created".to_string())]),
        }
    }

    fn assert_corrupted(result: Result<Item>) -> String {
        match result {
            Err(Error::Corrupted { what }) => what,
            other => panic!("expected Corrupted, got {other:?}"),
        }
    }

    #[test]
    fn item_round_trips() {
        let it = item();
        let bytes = encode_item(&it);
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode_item(&bytes).unwrap(), it);
    }

    #[test]
    fn config_round_trips() {
        let cfg = QueueConfig::new(QueueId::new("orders").unwrap())
            .with_ttl(std::time::Duration::from_millis(1500))
            .with_retention(Retention::Remove)
            .with_metadata("team", "payments");
        let bytes = encode_config(&cfg).unwrap();
        assert_eq!(decode_config(&bytes).unwrap(), cfg);
    }

    /// A record written when the secret had a field of its own (the bytes below are what
    /// that release wrote for queue `orders` with secret `whsec_x` and one metadata entry)
    /// reads with the secret in the metadata.
    #[test]
    fn a_legacy_secret_is_read_into_the_metadata() {
        #[derive(Serialize)]
        struct Legacy {
            id: String,
            secret: Option<String>,
            ttl: Option<u64>,
            retention: Retention,
            created_at: Timestamp,
            metadata: BTreeMap<String, String>,
        }
        let legacy = Legacy {
            id: "orders".into(),
            secret: Some("whsec_x".into()),
            ttl: Some(1500),
            retention: Retention::Keep,
            created_at: Timestamp::from_millis(7),
            metadata: BTreeMap::from([("team".to_owned(), "payments".to_owned())]),
        };
        let cfg = decode_config(&encode(&legacy).unwrap()).unwrap();
        assert_eq!(
            cfg.metadata.get("secret").map(String::as_str),
            Some("whsec_x")
        );
        assert_eq!(
            cfg.metadata.get("team").map(String::as_str),
            Some("payments")
        );
        assert_eq!(cfg.ttl, Some(std::time::Duration::from_millis(1500)));
        assert_eq!(cfg.created_at, Timestamp::from_millis(7));
    }

    #[test]
    fn every_truncation_is_corrupted() {
        let bytes = encode_item(&item());
        for len in 0..bytes.len() {
            assert_corrupted(decode_item(&bytes[..len]));
        }
    }

    #[test]
    fn every_single_bit_flip_is_corrupted() {
        let bytes = encode_item(&item());
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                assert_corrupted(decode_item(&bad));
            }
        }
    }

    #[test]
    fn wrong_version_and_trailing_bytes_are_corrupted() {
        let mut bytes = encode_item(&item());
        bytes[0] = FORMAT_VERSION + 1;
        assert!(assert_corrupted(decode_item(&bytes)).contains("version"));

        // A valid checksum over a body with extra bytes: caught by the trailing-bytes check.
        let good = encode_item(&item());
        let mut body = good[RECORD_HEADER_LEN..].to_vec();
        body.push(0);
        let mut padded = vec![FORMAT_VERSION];
        padded.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        padded.extend_from_slice(&body);
        assert!(assert_corrupted(decode_item(&padded)).contains("trailing"));
    }

    #[test]
    fn valid_checksum_over_garbage_is_corrupted_without_panicking() {
        // Bodies a fuzzer would find quickly: huge varint length prefixes, invalid phase
        // names, invalid UTF-8. The checksum is right, so only the decoder stands between
        // these bytes and the caller.
        let bodies: [&[u8]; 5] = [
            &[],
            &[0x2a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            &[0x2a, 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
            &[0x2a, 0x00, 0x07, b'P', b'e', b'n', b'd', b'i', b'n', b'g'],
            &[0x2a, 0x00, 0x02, 0xff, 0xfe],
        ];
        for body in bodies {
            let mut rec = vec![FORMAT_VERSION];
            rec.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
            rec.extend_from_slice(body);
            assert_corrupted(decode_item(&rec));
        }
    }

    #[test]
    fn oversized_body_is_refused_before_it_is_stored() {
        // `frame` is the size check of every encoder; a zeroed buffer keeps this test fast.
        let big = vec![0; MAX_RECORD_BODY + 1];
        assert!(frame(&big).is_err());
        assert!(frame(&big[..MAX_RECORD_BODY]).is_ok());
        // What `encode_item` falls back to on such an error is rejected by the decoder.
        assert_corrupted(decode_item(&[FORMAT_VERSION, 0, 0, 0, 0]));
    }
}
