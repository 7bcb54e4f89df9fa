//! Fuzzes the journal's log record codec (`hookspool_journal::fuzzing`): arbitrary bytes
//! read as a run of records (as recovery reads a segment), as one record body behind a
//! valid header and checksum, and as a recipe for a push, never panic the reader or the
//! decoder; every blob a push or relocation points at lies inside its body; a decoded
//! operation re-encodes to a fixed point; a generated push round-trips item by item; and a
//! single flipped bit in a framed record is never read as a record.

#![no_main]

use std::collections::BTreeMap;

use arbitrary::{Arbitrary, Unstructured};
use hookspool::{NewItem, QueueId, Timestamp};
use hookspool_journal::fuzzing::{
    DecodedBody, decode_blob, decode_body, encode_push, read_record, record_checksum,
};
use libfuzzer_sys::fuzz_target;

/// The segment whose records the bytes are read as (its number is part of each checksum).
const SEGMENT: u64 = 1;
/// Largest push recipe: enough items for several blobs, small enough to stay fast.
const MAX_ITEMS: usize = 8;

fuzz_target!(|data: &[u8]| {
    // 1. The bytes as a segment's records, from the first on: read record after record as
    //    recovery does, decoding each one whose checksum holds.
    let mut pos = 0;
    while pos < data.len() {
        match read_record(SEGMENT, &data[pos..]) {
            Ok(Some((body, size))) => {
                assert!(
                    body.end <= size && pos + size <= data.len(),
                    "a record reaches past its end"
                );
                check_body(&data[pos..][body]);
                pos += size;
            }
            Ok(None) | Err(_) => break,
        }
    }

    // 2. The bytes as a body behind a valid header, so that the decoder itself meets them
    //    (a checksum that does not hold stops most of case 1).
    if let Ok(len) = u32::try_from(data.len())
        && len > 0
    {
        let mut framed = Vec::with_capacity(8 + data.len());
        framed.extend_from_slice(&len.to_le_bytes());
        framed.extend_from_slice(&record_checksum(SEGMENT, data).to_le_bytes());
        framed.extend_from_slice(data);
        match read_record(SEGMENT, &framed) {
            Ok(Some((body, size))) => {
                assert_eq!((body, size), (8..framed.len(), framed.len()));
            }
            other => panic!("a framed body does not read back: {other:?}"),
        }
        check_body(data);
    }

    // 3. The bytes as a recipe for a push: it round-trips, and no flipped bit passes.
    let mut u = Unstructured::new(data);
    let Ok(recipe) = PushRecipe::arbitrary(&mut u) else {
        return;
    };
    let Some((queue, items)) = recipe.build() else {
        return;
    };
    let Ok(body) = encode_push(&queue, &items, Timestamp(recipe.now)) else {
        return;
    };
    let decoded = match decode_body(&body) {
        Ok(d) => d,
        Err(e) => panic!("a freshly encoded push does not decode: {e}"),
    };
    assert_eq!(
        decoded.blobs.len(),
        items.len(),
        "a push lost or gained items"
    );
    for (blob, item) in decoded.blobs.iter().zip(&items) {
        match decode_blob(&body[blob.clone()]) {
            Ok((metadata, payload)) => {
                assert_eq!(
                    (&metadata, &payload),
                    (&item.metadata, &item.payload),
                    "an item changed in a round trip"
                );
            }
            Err(e) => panic!("a freshly encoded blob does not decode: {e}"),
        }
    }
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let mut framed = Vec::with_capacity(8 + body.len());
    framed.extend_from_slice(&len.to_le_bytes());
    framed.extend_from_slice(&record_checksum(SEGMENT, &body).to_le_bytes());
    framed.extend_from_slice(&body);
    let Ok(bit) = u.int_in_range(0..=framed.len() * 8 - 1) else {
        return;
    };
    framed[bit / 8] ^= 1 << (bit % 8);
    if let Ok(Some(_)) = read_record(SEGMENT, &framed) {
        panic!("bit {bit} flipped: the record still reads as valid");
    }
});

/// Decodes a body whose checksum held: an error or a decoded body, never a panic; blobs
/// inside the body; an operation a fixed point of decode → encode.
fn check_body(body: &[u8]) {
    let Ok(DecodedBody { blobs, reencoded }) = decode_body(body) else {
        return;
    };
    for blob in blobs {
        assert!(
            blob.start <= blob.end && blob.end <= body.len(),
            "blob {blob:?} lies outside a body of {} bytes",
            body.len()
        );
        // Damaged blobs are reported, not returned: only a panic would be a finding.
        let _ = decode_blob(&body[blob]);
    }
    if let Some(once) = reencoded {
        match decode_body(&once) {
            Ok(DecodedBody {
                reencoded: Some(twice),
                ..
            }) => assert_eq!(once, twice, "a decoded operation does not re-encode"),
            other => panic!("a re-encoded operation does not decode as one: {other:?}"),
        }
    }
}

/// A push, in a form `arbitrary` can generate.
#[derive(Arbitrary, Debug)]
struct PushRecipe {
    queue: Vec<u8>,
    now: u64,
    items: Vec<ItemRecipe>,
}

#[derive(Arbitrary, Debug)]
struct ItemRecipe {
    payload: Vec<u8>,
    metadata: BTreeMap<String, String>,
    not_before: Option<u64>,
}

impl PushRecipe {
    /// The queue (its name mapped onto the allowed alphabet) and the items; `None` for a
    /// name `QueueId` refuses all the same (such as an empty one).
    fn build(&self) -> Option<(QueueId, Vec<NewItem>)> {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_-.";
        let name: String = self
            .queue
            .iter()
            .take(64)
            .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
            .collect();
        let queue = QueueId::new(name).ok()?;
        let items = self
            .items
            .iter()
            .take(MAX_ITEMS)
            .map(|i| {
                let mut item = NewItem::new(i.payload.clone());
                item.metadata = i.metadata.clone();
                item.not_before = i.not_before.map(Timestamp);
                item
            })
            .collect();
        Some((queue, items))
    }
}
