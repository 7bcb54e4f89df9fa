//! Fuzzes the sled backend's item record codec: arbitrary bytes (as a whole record, and as a
//! body behind a valid header) never panic the decoder, a decoded record re-encodes to
//! itself, every structurally generated item round-trips, and a single flipped bit is always
//! reported as corruption (crc32 catches every one-bit error).

#![no_main]

use std::collections::BTreeMap;

use arbitrary::{Arbitrary, Unstructured};
use hookspool::{Error, Item, Lease, MAX_PHASE_LEN, Phase, Timestamp};
use hookspool_sled::{FORMAT_VERSION, RECORD_HEADER_LEN, decode_item, encode_item};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // 1. Raw bytes as a record: an error or an item, never a panic. Whatever decodes must be a
    //    fixed point of encode → decode.
    if let Ok(item) = decode_item(data) {
        let again = decode_item(&encode_item(&item));
        assert_eq!(
            again.ok().as_ref(),
            Some(&item),
            "decoded item does not re-encode"
        );
    }

    // 2. The same bytes as a record body behind a valid header and checksum, so that the
    //    body decoder itself meets hostile input (a checksum mismatch stops most of case 1).
    let mut framed = Vec::with_capacity(RECORD_HEADER_LEN + data.len());
    framed.push(FORMAT_VERSION);
    framed.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    framed.extend_from_slice(data);
    // (Not byte-for-byte: bincode accepts non-minimal varints and unsorted maps, which
    // re-encode canonically. The item must survive, though.)
    if let Ok(item) = decode_item(&framed) {
        let again = decode_item(&encode_item(&item));
        assert_eq!(
            again.ok().as_ref(),
            Some(&item),
            "decoded body does not re-encode"
        );
    }

    // 3. The same bytes as a recipe for an item, built field by field.
    let mut u = Unstructured::new(data);
    let Ok(recipe) = ItemRecipe::arbitrary(&mut u) else {
        return;
    };
    let item = recipe.build();
    let record = encode_item(&item);
    match decode_item(&record) {
        Ok(decoded) => assert_eq!(decoded, item, "round trip changed the item"),
        Err(e) => panic!("a freshly encoded item does not decode: {e}"),
    }

    // 4. Flip one bit anywhere in the record: the decoder must report corruption, not data.
    let Ok(bit) = u.int_in_range(0..=record.len() * 8 - 1) else {
        return;
    };
    let mut flipped = record;
    flipped[bit / 8] ^= 1 << (bit % 8);
    match decode_item(&flipped) {
        Err(Error::Corrupted { .. }) => {}
        Err(e) => panic!("bit {bit} flipped: expected Corrupted, got another error: {e}"),
        Ok(decoded) => panic!("bit {bit} flipped: decoded as data: {decoded:?}"),
    }
});

/// The fields of an [`Item`], in a form `arbitrary` can generate.
#[derive(Arbitrary, Debug)]
struct ItemRecipe {
    key: u64,
    payload: Vec<u8>,
    phase: PhaseRecipe,
    attempts: u32,
    created_at: u64,
    updated_at: u64,
    not_before: u64,
    lease: Option<(String, u64)>,
    last_error: Option<String>,
    metadata: BTreeMap<String, String>,
}

/// A built-in phase, or the bytes of a custom phase name (mapped onto the allowed alphabet).
#[derive(Arbitrary, Debug)]
enum PhaseRecipe {
    Pending,
    InFlight,
    Done,
    Dead,
    Expired,
    Custom(Vec<u8>),
}

impl ItemRecipe {
    fn build(self) -> Item {
        Item {
            key: self.key,
            payload: self.payload,
            phase: self.phase.build(),
            attempts: self.attempts,
            created_at: Timestamp::from_millis(self.created_at),
            updated_at: Timestamp::from_millis(self.updated_at),
            not_before: Timestamp::from_millis(self.not_before),
            lease: self.lease.map(|(owner, until)| Lease {
                owner,
                until: Timestamp::from_millis(until),
            }),
            last_error: self.last_error,
            metadata: self.metadata,
        }
    }
}

impl PhaseRecipe {
    fn build(self) -> Phase {
        match self {
            PhaseRecipe::Pending => Phase::PENDING,
            PhaseRecipe::InFlight => Phase::IN_FLIGHT,
            PhaseRecipe::Done => Phase::DONE,
            PhaseRecipe::Dead => Phase::DEAD,
            PhaseRecipe::Expired => Phase::EXPIRED,
            PhaseRecipe::Custom(bytes) => custom_phase(&bytes),
        }
    }
}

/// Maps arbitrary bytes to a valid phase name: a lowercase letter, then up to 63 characters
/// from `a–z 0–9 _ - .`. (The codec stores whatever phase an item has; generating only valid
/// names keeps the generator honest about what an `Item` can hold.)
fn custom_phase(bytes: &[u8]) -> Phase {
    const FIRST: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    const REST: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_-.";
    let mut name = String::new();
    name.push(char::from(
        FIRST[usize::from(bytes.first().copied().unwrap_or(0)) % FIRST.len()],
    ));
    for &b in bytes.iter().skip(1).take(MAX_PHASE_LEN - 1) {
        name.push(char::from(REST[usize::from(b) % REST.len()]));
    }
    Phase::new(name).expect("the generated phase name follows the rule")
}
