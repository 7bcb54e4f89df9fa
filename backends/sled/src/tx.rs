//! A write set over the sled tree: reads see the writes made so far, and `commit` applies
//! them all as one sled batch (atomic for readers and across crashes). Also the item,
//! index and counter bookkeeping every operation shares, so the indexes cannot drift.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::collections::btree_map;
use std::iter::Peekable;
use std::ops::Bound;

use hookspool::{Error, Item, Key, Phase, QueueConfig, QueueId, Result};

use crate::keys::{self, CONFIG, NEXT_KEY};
use crate::record;

/// A key range: (lower, upper) bounds.
pub(crate) type Range = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// Pending writes over a tree. `None` is a removal.
pub(crate) struct Tx<'a> {
    tree: &'a sled::Tree,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a> Tx<'a> {
    pub(crate) fn new(tree: &'a sled::Tree) -> Self {
        Tx {
            tree,
            writes: BTreeMap::new(),
        }
    }

    /// The tree itself, for reads that happen before any write of this transaction.
    pub(crate) fn tree(&self) -> &'a sled::Tree {
        self.tree
    }

    /// Reads a value, seeing this transaction's writes.
    pub(crate) fn get(&self, k: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.writes.get(k) {
            return Ok(v.clone());
        }
        Ok(self.tree.get(k).map_err(sled_error)?.map(|v| v.to_vec()))
    }

    pub(crate) fn put(&mut self, k: Vec<u8>, v: Vec<u8>) {
        self.writes.insert(k, Some(v));
    }

    pub(crate) fn del(&mut self, k: Vec<u8>) {
        self.writes.insert(k, None);
    }

    /// Keys in `range`, ascending, seeing this transaction's writes. Lazy: a caller that
    /// stops early reads only what it consumed (this is what keeps claim from scanning).
    pub(crate) fn keys(&self, range: Range) -> Merged<'_> {
        Merged {
            base: self.tree.range(range.clone()).peekable(),
            over: self.writes.range(range).peekable(),
        }
    }

    /// Removes every key under `prefix`; returns how many existed.
    pub(crate) fn del_prefix(&mut self, prefix: &[u8]) -> Result<u64> {
        let doomed = self
            .keys(prefix_range(prefix))
            .collect::<Result<Vec<Vec<u8>>>>()?;
        let n = doomed.len() as u64;
        for k in doomed {
            self.del(k);
        }
        Ok(n)
    }

    /// Whether there is anything to commit.
    pub(crate) fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// The writes as one sled batch.
    pub(crate) fn into_batch(self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (k, v) in self.writes {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        batch
    }

    // ---- queues ---------------------------------------------------------------------------

    /// The queue's settings, or `QueueNotFound`.
    pub(crate) fn config(&self, queue: &QueueId) -> Result<QueueConfig> {
        self.find_config(queue)?
            .ok_or_else(|| Error::QueueNotFound(queue.clone()))
    }

    /// The queue's settings, if it exists.
    pub(crate) fn find_config(&self, queue: &QueueId) -> Result<Option<QueueConfig>> {
        let Some(bytes) = self.get(&keys::queue_prefix(CONFIG, queue))? else {
            return Ok(None);
        };
        let config = record::decode_config(&bytes)
            .map_err(|reason| Error::corrupted(format!("settings of queue `{queue}`: {reason}")))?;
        if config.id != *queue {
            return Err(Error::corrupted(format!(
                "settings stored under queue `{queue}` name queue `{}`",
                config.id
            )));
        }
        Ok(Some(config))
    }

    pub(crate) fn put_config(&mut self, config: &QueueConfig) -> Result<()> {
        let bytes = record::encode_config(config)?;
        self.put(keys::queue_prefix(CONFIG, &config.id), bytes);
        Ok(())
    }

    /// The key the next pushed item gets.
    pub(crate) fn next_key(&self, queue: &QueueId) -> Result<Key> {
        let bytes = self.get(&keys::queue_prefix(NEXT_KEY, queue))?;
        bytes
            .as_deref()
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| {
                Error::corrupted(format!(
                    "queue `{queue}`: its key counter is missing or malformed"
                ))
            })
    }

    pub(crate) fn set_next_key(&mut self, queue: &QueueId, next: Key) {
        self.put(
            keys::queue_prefix(NEXT_KEY, queue),
            next.to_be_bytes().to_vec(),
        );
    }

    // ---- items ----------------------------------------------------------------------------

    /// The item with this key, if any. A record that fails its checks is `Corrupted`.
    pub(crate) fn item(&self, queue: &QueueId, key: Key) -> Result<Option<Item>> {
        match self.get(&keys::item_key(queue, key))? {
            None => Ok(None),
            Some(bytes) => decode_stored(queue, key, &bytes).map(Some),
        }
    }

    /// The item an index entry names: its absence means the index is corrupt.
    pub(crate) fn indexed_item(&self, queue: &QueueId, key: Key, index: &str) -> Result<Item> {
        self.item(queue, key)?.ok_or_else(|| {
            Error::corrupted(format!(
                "queue `{queue}`: the {index} index names item {key}, which does not exist"
            ))
        })
    }

    /// Stores an item with its index entries and counts it in its phase.
    pub(crate) fn insert_item(&mut self, queue: &QueueId, item: &Item) -> Result<()> {
        let bytes = record::encode_item_checked(item)?;
        self.put(keys::item_key(queue, item.key), bytes);
        self.put(keys::phase_key(queue, &item.phase, item.key), Vec::new());
        if item.phase == Phase::PENDING {
            self.put(keys::due_key(queue, item.not_before, item.key), Vec::new());
            self.put(keys::age_key(queue, item.created_at, item.key), Vec::new());
        }
        if let Some(lease) = &item.lease {
            self.put(keys::lease_key(queue, lease.until, item.key), Vec::new());
        }
        self.add_count(queue, &item.phase, 1)
    }

    /// Removes an item (as stored) with its index entries and uncounts it.
    pub(crate) fn remove_item(&mut self, queue: &QueueId, item: &Item) -> Result<()> {
        self.del(keys::item_key(queue, item.key));
        self.del(keys::phase_key(queue, &item.phase, item.key));
        if item.phase == Phase::PENDING {
            self.del(keys::due_key(queue, item.not_before, item.key));
            self.del(keys::age_key(queue, item.created_at, item.key));
        }
        if let Some(lease) = &item.lease {
            self.del(keys::lease_key(queue, lease.until, item.key));
        }
        self.add_count(queue, &item.phase, -1)
    }

    /// The counter of one phase.
    pub(crate) fn count(&self, queue: &QueueId, phase: &Phase) -> Result<u64> {
        match self.get(&keys::count_key(queue, phase))? {
            None => Ok(0),
            Some(bytes) => decode_count(queue, phase.as_str(), &bytes),
        }
    }

    fn add_count(&mut self, queue: &QueueId, phase: &Phase, delta: i64) -> Result<()> {
        let now = self.count(queue, phase)?;
        let next = now.checked_add_signed(delta).ok_or_else(|| {
            Error::corrupted(format!(
                "queue `{queue}`: counter of phase `{phase}` is {now}, cannot apply {delta:+}"
            ))
        })?;
        let k = keys::count_key(queue, phase);
        // A zero counter is removed, so that `count` lists exactly the non-empty phases.
        if next == 0 {
            self.del(k);
        } else {
            self.put(k, next.to_be_bytes().to_vec());
        }
        Ok(())
    }
}

/// Decodes a stored item and checks that it is stored under its own key.
pub(crate) fn decode_stored(queue: &QueueId, key: Key, bytes: &[u8]) -> Result<Item> {
    let item = record::decode_item_reason(bytes)
        .map_err(|reason| Error::corrupted(format!("queue `{queue}`, item {key}: {reason}")))?;
    if item.key != key {
        return Err(Error::corrupted(format!(
            "queue `{queue}`, item {key}: the record holds item {}",
            item.key
        )));
    }
    Ok(item)
}

/// Decodes a counter value.
pub(crate) fn decode_count(queue: &QueueId, phase: &str, bytes: &[u8]) -> Result<u64> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| {
            Error::corrupted(format!(
                "queue `{queue}`: counter of phase `{phase}` is {} bytes, not 8",
                bytes.len()
            ))
        })
}

/// Every key that starts with `prefix`.
pub(crate) fn prefix_range(prefix: &[u8]) -> Range {
    // The successor of a prefix: drop trailing 0xff bytes and increment the last one. Every
    // prefix here starts with an ASCII tag byte, so one always exists; `Unbounded` keeps
    // this total anyway.
    let mut end = prefix.to_vec();
    while end.last() == Some(&u8::MAX) {
        end.pop();
    }
    let hi = match end.last_mut() {
        Some(last) => {
            *last += 1;
            Bound::Excluded(end)
        }
        None => Bound::Unbounded,
    };
    (Bound::Included(prefix.to_vec()), hi)
}

/// Maps a sled error: corruption is [`Error::Corrupted`], the rest [`Error::Backend`].
pub(crate) fn sled_error(e: sled::Error) -> Error {
    match e {
        sled::Error::Corruption { at, .. } => Error::corrupted(format!(
            "sled found a corrupt entry in its log (at {at:?}); the data directory is damaged"
        )),
        other => Error::backend("sled", other),
    }
}

/// Keys of a range, merging the tree with a transaction's writes (ascending).
pub(crate) struct Merged<'a> {
    base: Peekable<sled::Iter>,
    over: Peekable<btree_map::Range<'a, Vec<u8>, Option<Vec<u8>>>>,
}

impl Iterator for Merged<'_> {
    type Item = Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(Err(_)) = self.base.peek()
                && let Some(Err(e)) = self.base.next()
            {
                return Some(Err(sled_error(e)));
            }
            let base = match self.base.peek() {
                Some(Ok((k, _))) => Some(k.clone()),
                _ => None,
            };
            let order = match (&base, self.over.peek()) {
                (None, None) => return None,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(b), Some((o, _))) => b.as_ref().cmp(o.as_slice()),
            };
            if order != Ordering::Greater {
                self.base.next();
                if order == Ordering::Less {
                    return base.map(|k| Ok(k.to_vec()));
                }
            }
            // The transaction's entry wins: either a write (shown) or a removal (skipped).
            if let Some((k, v)) = self.over.next()
                && v.is_some()
            {
                return Some(Ok(k.clone()));
            }
        }
    }
}
