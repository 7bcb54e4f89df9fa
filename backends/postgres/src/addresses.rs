//! Where this process's claimed items are: each leased row's address (`ctid`) as its claim
//! returned it (`claim_located`, schema version 14), kept until the batched ack of those
//! items (`settle_located`) passes them back, so that the server finds each row at its
//! address instead of looking its key up in the primary key. A consumer alone claiming
//! fewer than 64 items gets no addresses (version 13's `claim`, see `backend/claims`): its
//! items are acked by key.
//!
//! An address is only a shortcut. The server settles a row at its address only if it is
//! still that key's row leased to the owner, and settles by key whatever an address missed
//! (see `v14.sql`); a wrong, stale or missing address costs a look-up, never a wrong result.
//! So the book may forget: entries go when an ack takes them, when another settle of their
//! keys runs, and, for items settled elsewhere (another process, a sweep), once their lease
//! has ended. It holds at most [`MAX_ENTRIES`]; a claim beyond that is not noted.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::Mutex;

use hookspool::QueueId;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

/// Most addresses kept at once (about 40 bytes each).
pub(crate) const MAX_ENTRIES: usize = 1 << 18;

/// The book is pruned of ended leases when it grows past this, or past twice what the last
/// pruning left.
const PRUNE_FROM: usize = 4096;

/// A row's address, PostgreSQL's `tid`: block number and line within the block, as the
/// binary protocol sends them (6 bytes, big-endian).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Address([u8; 6]);

impl<'a> FromSql<'a> for Address {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        let bytes: [u8; 6] = raw
            .try_into()
            .map_err(|_| format!("a tid of {} bytes, not 6", raw.len()))?;
        Ok(Address(bytes))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TID
    }
}

impl ToSql for Address {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        out.extend_from_slice(&self.0);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TID
    }

    to_sql_checked!();
}

/// Where a claimed item's row is, and until when its lease runs (milliseconds).
#[derive(Clone, Copy)]
struct Spot {
    address: Address,
    until: i64,
}

#[derive(Default)]
struct Book {
    queues: HashMap<QueueId, HashMap<i64, Spot>>,
    entries: usize,
    /// The size at which the next claim prunes ([`PRUNE_FROM`] at least).
    prune_at: usize,
    /// When a full book that pruning could not shrink may be pruned again (milliseconds).
    full_until: i64,
}

/// The addresses of the items this process claimed, by queue and key.
#[derive(Default)]
pub(crate) struct Addresses {
    book: Mutex<Book>,
}

impl Addresses {
    /// Notes where the items a claim just leased until `until` are (`(key, address)`), at
    /// `now` (both in milliseconds).
    pub(crate) fn note(
        &self,
        queue: &QueueId,
        leased: impl IntoIterator<Item = (i64, Address)>,
        until: i64,
        now: i64,
    ) {
        let mut book = self
            .book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if book.entries >= book.prune_at.max(PRUNE_FROM) && now >= book.full_until {
            book.prune(now);
        }
        let Book {
            queues, entries, ..
        } = &mut *book;
        let spots = match queues.get_mut(queue) {
            Some(spots) => spots,
            None => queues.entry(queue.clone()).or_default(),
        };
        for (key, address) in leased {
            if *entries >= MAX_ENTRIES {
                break;
            }
            if spots.insert(key, Spot { address, until }).is_none() {
                *entries += 1;
            }
        }
    }

    /// Takes the addresses of `keys` out of the book, one per key in order (`None`: not
    /// known), or `None` when none is known.
    pub(crate) fn take(&self, queue: &QueueId, keys: &[i64]) -> Option<Vec<Option<Address>>> {
        let mut book = self
            .book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Book {
            queues, entries, ..
        } = &mut *book;
        let spots = queues.get_mut(queue)?;
        let found: Vec<Option<Address>> = keys
            .iter()
            .map(|key| spots.remove(key).map(|spot| spot.address))
            .collect();
        let taken = found.iter().filter(|a| a.is_some()).count();
        *entries -= taken;
        if spots.is_empty() {
            queues.remove(queue);
        }
        (taken > 0).then_some(found)
    }

    /// Forgets the addresses of `keys` (settled another way).
    pub(crate) fn forget(&self, queue: &QueueId, keys: impl IntoIterator<Item = i64>) {
        let mut book = self
            .book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if book.entries == 0 {
            return;
        }
        let Book {
            queues, entries, ..
        } = &mut *book;
        let Some(spots) = queues.get_mut(queue) else {
            return;
        };
        for key in keys {
            if spots.remove(&key).is_some() {
                *entries -= 1;
            }
        }
        if spots.is_empty() {
            queues.remove(queue);
        }
    }

    /// How many addresses the book holds.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entries
    }
}

impl Book {
    /// Drops the entries whose lease ended by `now`.
    fn prune(&mut self, now: i64) {
        let mut left = 0;
        self.queues.retain(|_, spots| {
            spots.retain(|_, spot| spot.until > now);
            left += spots.len();
            !spots.is_empty()
        });
        self.entries = left;
        self.prune_at = left.saturating_mul(2).min(MAX_ENTRIES);
        // A book still full of live leases is not walked again at every claim.
        if left >= MAX_ENTRIES {
            self.full_until = now.saturating_add(1000);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(n: u8) -> Address {
        Address([0, 0, 0, n, 0, 1])
    }

    #[test]
    fn takes_what_was_noted_once() {
        let book = Addresses::default();
        let q = QueueId::new("q").unwrap();
        book.note(&q, [(1, at(1)), (2, at(2))], 100, 0);
        assert_eq!(
            book.take(&q, &[2, 3, 1]),
            Some(vec![Some(at(2)), None, Some(at(1))])
        );
        assert_eq!(book.take(&q, &[1, 2]), None);
        assert_eq!(book.len(), 0);
        book.note(&q, [(5, at(5))], 100, 0);
        book.forget(&q, [5, 6]);
        assert_eq!(book.take(&q, &[5]), None);
        assert_eq!(book.len(), 0);
    }

    #[test]
    fn a_key_claimed_again_has_its_new_address() {
        let book = Addresses::default();
        let q = QueueId::new("q").unwrap();
        book.note(&q, [(1, at(1))], 100, 0);
        book.note(&q, [(1, at(9))], 200, 50);
        assert_eq!(book.len(), 1);
        assert_eq!(book.take(&q, &[1]), Some(vec![Some(at(9))]));
    }

    #[test]
    fn ended_leases_are_pruned_and_the_book_is_bounded() {
        let book = Addresses::default();
        let q = QueueId::new("q").unwrap();
        let r = QueueId::new("r").unwrap();
        book.note(
            &q,
            (1..i64::try_from(PRUNE_FROM).unwrap()).map(|k| (k, at(1))),
            100,
            0,
        );
        book.note(&r, [(7, at(7))], 1_000, 0);
        assert_eq!(book.len(), PRUNE_FROM);
        // Past the first leases' end, the next claim prunes them.
        book.note(&r, [(8, at(8))], 1_000, 500);
        assert_eq!(book.len(), 2);
        assert_eq!(book.take(&q, &[1]), None);
        assert_eq!(book.take(&r, &[7, 8]), Some(vec![Some(at(7)), Some(at(8))]));
        // Live leases are never pruned, and the book stops at its bound.
        book.note(
            &q,
            (0..i64::try_from(MAX_ENTRIES).unwrap() + 10).map(|k| (k, at(1))),
            10_000,
            0,
        );
        assert_eq!(book.len(), MAX_ENTRIES);
        book.note(&r, [(1, at(1))], 10_000, 1);
        assert_eq!(book.len(), MAX_ENTRIES);
        assert_eq!(book.take(&r, &[1]), None);
        // Once those leases end, the next claim finds room again.
        book.note(&r, [(2, at(2))], 20_000, 10_000);
        assert_eq!(book.len(), 1);
        assert_eq!(book.take(&r, &[2]), Some(vec![Some(at(2))]));
    }
}
