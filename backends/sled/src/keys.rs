//! The key layout in the sled tree: one tag byte per kind of entry, the queue id (and phase)
//! length-prefixed so that no queue's keys are a prefix of another's, and big-endian
//! integers so that sled's byte order is numeric order.

use hookspool::{Key, Phase, QueueId, Timestamp};

/// The layout version entry (`v`), written once when the tree is created.
pub(crate) const LAYOUT_KEY: &[u8] = b"v";
/// The layout this build writes and reads.
pub(crate) const LAYOUT_VERSION: u8 = 1;

/// Tag of a queue's settings record: `q | id`.
pub(crate) const CONFIG: u8 = b'q';
/// Tag of a queue's next key: `n | id` → u64 BE.
pub(crate) const NEXT_KEY: u8 = b'n';
/// Tag of an item record: `i | id | key`.
pub(crate) const ITEM: u8 = b'i';
/// Tag of the phase index: `p | id | phase | key` → empty.
pub(crate) const PHASE: u8 = b'p';
/// Tag of the due index of pending items: `d | id | not_before | key` → empty.
pub(crate) const DUE: u8 = b'd';
/// Tag of the lease index of in-flight items: `l | id | lease.until | key` → empty.
pub(crate) const LEASE: u8 = b'l';
/// Tag of the age index of pending items: `e | id | created_at | key` → empty. It finds
/// the items past a queue's TTL directly, even when the clock went backwards and older
/// items sit behind younger ones in key order.
pub(crate) const AGE: u8 = b'e';
/// Tag of a phase counter: `c | id | phase` → u64 BE.
pub(crate) const COUNT: u8 = b'c';

/// Every tag whose entries belong to a queue's items (what `reset` removes).
pub(crate) const ITEM_TAGS: [u8; 6] = [ITEM, PHASE, DUE, AGE, LEASE, COUNT];

/// `tag | len(id) | id`: the prefix of every entry of one kind for one queue.
///
/// Queue ids are at most 128 bytes ([`hookspool::MAX_QUEUE_ID_LEN`]), so one length byte
/// suffices.
pub(crate) fn queue_prefix(tag: u8, queue: &QueueId) -> Vec<u8> {
    let id = queue.as_str().as_bytes();
    let mut k = Vec::with_capacity(2 + id.len() + 24);
    k.push(tag);
    k.push(len_byte(id.len()));
    k.extend_from_slice(id);
    k
}

/// `p | id | len(phase) | phase`: the prefix of one phase's index.
pub(crate) fn phase_prefix(queue: &QueueId, phase: &Phase) -> Vec<u8> {
    let mut k = queue_prefix(PHASE, queue);
    push_phase(&mut k, phase);
    k
}

/// `c | id | len(phase) | phase`.
pub(crate) fn count_key(queue: &QueueId, phase: &Phase) -> Vec<u8> {
    let mut k = queue_prefix(COUNT, queue);
    push_phase(&mut k, phase);
    k
}

/// `i | id | key`.
pub(crate) fn item_key(queue: &QueueId, key: Key) -> Vec<u8> {
    with_u64(queue_prefix(ITEM, queue), key)
}

/// `p | id | phase | key`.
pub(crate) fn phase_key(queue: &QueueId, phase: &Phase, key: Key) -> Vec<u8> {
    with_u64(phase_prefix(queue, phase), key)
}

/// `d | id | not_before | key`.
pub(crate) fn due_key(queue: &QueueId, not_before: Timestamp, key: Key) -> Vec<u8> {
    with_u64(
        with_u64(queue_prefix(DUE, queue), not_before.as_millis()),
        key,
    )
}

/// `e | id | created_at | key`.
pub(crate) fn age_key(queue: &QueueId, created_at: Timestamp, key: Key) -> Vec<u8> {
    with_u64(
        with_u64(queue_prefix(AGE, queue), created_at.as_millis()),
        key,
    )
}

/// `l | id | until | key`.
pub(crate) fn lease_key(queue: &QueueId, until: Timestamp, key: Key) -> Vec<u8> {
    with_u64(with_u64(queue_prefix(LEASE, queue), until.as_millis()), key)
}

/// Appends a big-endian u64 (numeric order = byte order).
pub(crate) fn with_u64(mut k: Vec<u8>, n: u64) -> Vec<u8> {
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// The item key in the last 8 bytes of an index or item entry.
pub(crate) fn trailing_key(k: &[u8]) -> Option<Key> {
    let tail = k.len().checked_sub(8).and_then(|start| k.get(start..))?;
    let bytes: [u8; 8] = tail.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// The phase named by a counter key, given the queue's counter prefix.
pub(crate) fn phase_of_count_key(prefix: &[u8], k: &[u8]) -> Option<String> {
    let rest = k.strip_prefix(prefix)?;
    let (&len, name) = rest.split_first()?;
    if usize::from(len) != name.len() {
        return None;
    }
    String::from_utf8(name.to_vec()).ok()
}

/// The queue id named by a settings key.
pub(crate) fn queue_of_config_key(k: &[u8]) -> Option<String> {
    let rest = k.strip_prefix(&[CONFIG])?;
    let (&len, id) = rest.split_first()?;
    if usize::from(len) != id.len() {
        return None;
    }
    String::from_utf8(id.to_vec()).ok()
}

fn push_phase(k: &mut Vec<u8>, phase: &Phase) {
    let name = phase.as_str().as_bytes();
    k.push(len_byte(name.len()));
    k.extend_from_slice(name);
}

/// Queue ids and phase names are validated to at most 128 and 64 bytes, so this never
/// saturates; saturating keeps it total anyway.
fn len_byte(len: usize) -> u8 {
    u8::try_from(len).unwrap_or(u8::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_prefixes_never_nest() {
        // Without the length byte, `i|a` would be a prefix of `i|ab`'s keys.
        let a = QueueId::new("a").unwrap();
        let ab = QueueId::new("ab").unwrap();
        assert!(!item_key(&ab, 1).starts_with(&queue_prefix(ITEM, &a)));
        let p = Phase::new("x").unwrap();
        let pq = Phase::new("xq").unwrap();
        assert!(!phase_key(&a, &pq, 1).starts_with(&phase_prefix(&a, &p)));
    }

    #[test]
    fn keys_sort_numerically() {
        let q = QueueId::new("q").unwrap();
        assert!(item_key(&q, 255) < item_key(&q, 256));
        assert!(
            due_key(&q, Timestamp::from_millis(1), u64::MAX)
                < due_key(&q, Timestamp::from_millis(2), 0)
        );
        assert_eq!(trailing_key(&item_key(&q, 77)), Some(77));
        assert_eq!(trailing_key(&[1, 2]), None);
    }

    #[test]
    fn names_parse_back() {
        let q = QueueId::new("orders.v1").unwrap();
        let k = count_key(&q, &Phase::IN_FLIGHT);
        assert_eq!(
            phase_of_count_key(&queue_prefix(COUNT, &q), &k).as_deref(),
            Some("in_flight")
        );
        assert_eq!(
            queue_of_config_key(&queue_prefix(CONFIG, &q)).as_deref(),
            Some("orders.v1")
        );
        assert_eq!(queue_of_config_key(&[CONFIG, 5, b'a']), None);
    }
}
