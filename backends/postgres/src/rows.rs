//! Conversions between the engine's model and rows: timestamps, items, queue settings.

use std::collections::BTreeMap;
use std::time::Duration;

use hookspool::{
    Error, Item, Key, Lease, Phase, QueueConfig, QueueId, Result, Retain, Retention, Timestamp,
};
use tokio_postgres::Row;
use tokio_postgres::types::Json;

/// The item columns every query returns, in this order (see [`item`]).
pub(crate) const ITEM_COLUMNS: &str = "key, phase, attempts, created_at, updated_at, not_before, \
     lease_owner, lease_until, last_error, metadata, payload";
/// What a claim returns: the columns the claim does not set to values its caller already
/// knows (the phase is `in_flight`, the lease is the one asked for, the update time is the
/// claim's). Sending those three, two of them text, for every claimed row cost the server and
/// the client their share of every claim (see [`claimed`]).
pub(crate) const CLAIMED_COLUMNS: &str =
    "key, attempts, created_at, not_before, last_error, metadata, payload";
/// What settling reads (`update_many`): the state a transition checks and changes,
/// without the payload, the error or the metadata, which a transition only replaces.
pub(crate) const STATE_COLUMNS: &str =
    "key, phase, attempts, created_at, updated_at, not_before, lease_owner, lease_until";
/// The queue columns, in this order (see [`queue`]).
pub(crate) const QUEUE_COLUMNS: &str = "id, ttl_ms, retention, created_at, metadata";

/// Milliseconds as the `bigint` column holds them. Times past year 292,277,026 are stored
/// as the largest `bigint`, which still orders after every real time.
pub(crate) fn ms(t: Timestamp) -> i64 {
    i64::try_from(t.as_millis()).unwrap_or(i64::MAX)
}

pub(crate) fn timestamp(v: i64) -> Timestamp {
    Timestamp::from_millis(u64::try_from(v).unwrap_or(0))
}

/// A key to look up. Keys are `bigint`s, so one past its range names no item: it becomes -1,
/// which no item has.
pub(crate) fn key_param(key: Key) -> i64 {
    i64::try_from(key).unwrap_or(-1)
}

/// A page cursor: past the `bigint` range, the largest `bigint` selects the same items.
pub(crate) fn cursor_param(key: Key) -> i64 {
    i64::try_from(key).unwrap_or(i64::MAX)
}

fn key_of(v: i64) -> Key {
    u64::try_from(v).unwrap_or(0)
}

fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::corrupted(format!("a row of the PostgreSQL backend: {what}"))
}

/// An item from a row of [`ITEM_COLUMNS`].
pub(crate) fn item(row: &Row) -> Result<Item> {
    item_with(row, true)
}

/// An item from a row of [`ITEM_COLUMNS`], or of [`STATE_COLUMNS`] when `whole` is false
/// (then with an empty payload, no error and no metadata).
pub(crate) fn item_with(row: &Row, whole: bool) -> Result<Item> {
    let get = |e: tokio_postgres::Error| corrupt(e);
    let phase: String = row.try_get(1).map_err(get)?;
    let phase = Phase::new(phase).map_err(corrupt)?;
    let owner: Option<String> = row.try_get(6).map_err(get)?;
    let until: Option<i64> = row.try_get(7).map_err(get)?;
    let lease = match (owner, until) {
        (Some(owner), Some(until)) => Some(Lease {
            owner,
            until: timestamp(until),
        }),
        _ => None,
    };
    let attempts: i32 = row.try_get(2).map_err(get)?;
    let (last_error, metadata, payload) = if whole {
        let Json(metadata): Json<BTreeMap<String, String>> = row.try_get(9).map_err(get)?;
        (
            row.try_get(8).map_err(get)?,
            metadata,
            row.try_get(10).map_err(get)?,
        )
    } else {
        (None, BTreeMap::new(), Vec::new())
    };
    Ok(Item {
        key: key_of(row.try_get(0).map_err(get)?),
        payload,
        phase,
        attempts: u32::try_from(attempts).unwrap_or(0),
        created_at: timestamp(row.try_get(3).map_err(get)?),
        updated_at: timestamp(row.try_get(4).map_err(get)?),
        not_before: timestamp(row.try_get(5).map_err(get)?),
        lease,
        last_error,
        metadata,
    })
}

/// An item a claim leased to `lease.owner` until `lease.until` at `now`, from a row whose
/// columns from `first` on are [`CLAIMED_COLUMNS`]. The claim stored these very values (as
/// milliseconds, which `lease.until` and `now` already are, see [`ms`]).
pub(crate) fn claimed(row: &Row, first: usize, lease: &Lease, now: Timestamp) -> Result<Item> {
    let get = |e: tokio_postgres::Error| corrupt(e);
    let attempts: i32 = row.try_get(first + 1).map_err(get)?;
    let Json(metadata): Json<BTreeMap<String, String>> = row.try_get(first + 5).map_err(get)?;
    Ok(Item {
        key: key_of(row.try_get(first).map_err(get)?),
        payload: row.try_get(first + 6).map_err(get)?,
        phase: Phase::IN_FLIGHT,
        attempts: u32::try_from(attempts).unwrap_or(0),
        created_at: timestamp(row.try_get(first + 2).map_err(get)?),
        updated_at: now,
        not_before: timestamp(row.try_get(first + 3).map_err(get)?),
        lease: Some(lease.clone()),
        last_error: row.try_get(first + 4).map_err(get)?,
        metadata,
    })
}

/// Queue settings from a row of [`QUEUE_COLUMNS`].
pub(crate) fn queue(row: &Row) -> Result<QueueConfig> {
    let get = |e: tokio_postgres::Error| corrupt(e);
    let id: String = row.try_get(0).map_err(get)?;
    let ttl: Option<i64> = row.try_get(1).map_err(get)?;
    let retention: String = row.try_get(2).map_err(get)?;
    let Json(metadata): Json<BTreeMap<String, String>> = row.try_get(4).map_err(get)?;
    let mut config = QueueConfig {
        id: QueueId::new(id).map_err(corrupt)?,
        ttl: ttl.map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
        retention: match retention.as_str() {
            "keep" => Retention::Keep,
            "remove" => Retention::Remove,
            other => return Err(corrupt(format!("unknown retention {other:?}"))),
        },
        retain: Retain::FOREVER,
        created_at: timestamp(row.try_get(3).map_err(get)?),
        metadata,
    };
    // The retention periods are kept in the metadata (see `QueueConfig::stored_metadata`).
    config.restore_stored_metadata()?;
    Ok(config)
}

pub(crate) fn retention(r: Retention) -> &'static str {
    match r {
        Retention::Keep => "keep",
        Retention::Remove => "remove",
    }
}

pub(crate) fn ttl_ms(ttl: Option<Duration>) -> Option<i64> {
    ttl.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Text as a `text` column can hold it: PostgreSQL refuses NUL characters, so an error
/// message (which may quote a response body) keeps everything but those.
pub(crate) fn text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}").into()
    } else {
        s.into()
    }
}
