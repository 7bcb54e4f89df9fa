//! The claim statements: from the head of the queue for one consumer or several (see
//! `gather`), and from after a position (see `held`).

use hookspool::{Claim, Error, Item, Lease, QueueId, Result, Timestamp};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::PostgresBackend;
use crate::addresses::Address;
use crate::held::ClaimPosition;
use crate::rows::{self, key_param, ms};

/// The smallest claim of one consumer, in items asked for, that goes through
/// `claim_located` and keeps its items' addresses for their ack. `claim_located` costs the
/// server about 130k instructions per call more than version 13's `claim` (its arrays, its
/// shares, its addresses: 6.6% of a claim of 16); an ack of the items by address saves
/// about 2.8k per item in batches of 48, and only batches of 32 or more take addresses
/// (`settle::LEASED_MIN`). Claimed and acked at once, the two ways cost the same at 48
/// items; the delivery loop claims at most 64 and acks 10-20 at a time, by key. See "Small
/// claims" in the README.
const SMALL: usize = 64;

impl PostgresBackend {
    /// `claim` from after `after`, in a statement of its own (while a snapshot is held
    /// open, see `held`).
    pub(crate) async fn claim_after(
        &self,
        queue: &QueueId,
        claim: &Claim,
        now: Timestamp,
        after: ClaimPosition,
    ) -> Result<Vec<Item>> {
        let limit = i32::try_from(claim.limit).unwrap_or(i32::MAX);
        let held = &self.inner.sql.held;
        let text = if claim.durable {
            &held.claim_after
        } else {
            &held.claim_after_lazy
        };
        run!(self, Some(queue), conn, {
            let stmt = conn.prepare_cached(text).await?;
            let (id, until, at) = (queue.as_str(), ms(claim.lease_until), ms(now));
            let (not_before, key) = &after;
            let params: [&(dyn ToSql + Sync); 7] =
                [&id, &claim.owner, &limit, &until, &at, not_before, key];
            let rows = conn.query(&stmt, &params).await?;
            Ok(one_consumers(&rows, claim, until, at)?)
        })
    }

    /// A claim of one consumer for fewer than [`SMALL`] items, in a statement of its own
    /// (`claim`, schema version 13), whose items' addresses are not kept: acked by key.
    async fn claim_small(
        &self,
        queue: &QueueId,
        claim: &Claim,
        now: Timestamp,
    ) -> Result<Vec<Item>> {
        let limit = i32::try_from(claim.limit).unwrap_or(i32::MAX);
        let sql = &self.inner.sql;
        let text = if claim.durable {
            &sql.claim_small
        } else {
            &sql.claim_small_lazy
        };
        run!(self, Some(queue), conn, {
            let stmt = conn.prepare_cached(text).await?;
            let (id, until, at) = (queue.as_str(), ms(claim.lease_until), ms(now));
            let params: [&(dyn ToSql + Sync); 5] = [&id, &claim.owner, &limit, &until, &at];
            let rows = conn.query(&stmt, &params).await?;
            Ok(one_consumers(&rows, claim, until, at)?)
        })
    }

    /// The claims of one consumer or several from the head of the queue in one statement
    /// (`claim_located`) at `now`: each consumer's items, in the order of `claims`. Durable
    /// unless none asked for that. The rows' addresses go into the book (see `addresses`).
    /// One consumer's claim of fewer than [`SMALL`] items goes to `claim_small` instead.
    pub(crate) async fn claim_shared(
        &self,
        queue: &QueueId,
        claims: &[&Claim],
        now: Timestamp,
    ) -> Result<Vec<Vec<Item>>> {
        if let [claim] = claims
            && claim.limit < SMALL
        {
            return Ok(vec![self.claim_small(queue, claim, now).await?]);
        }
        let sql = &self.inner.sql;
        let text = if claims.iter().any(|c| c.durable) {
            &sql.claim
        } else {
            &sql.claim_lazy
        };
        let owners: Vec<&str> = claims.iter().map(|c| c.owner.as_str()).collect();
        let limits: Vec<i32> = claims
            .iter()
            .map(|c| i32::try_from(c.limit).unwrap_or(i32::MAX))
            .collect();
        let untils: Vec<i64> = claims.iter().map(|c| ms(c.lease_until)).collect();
        let leases: Vec<Lease> = claims
            .iter()
            .zip(&untils)
            .map(|(c, until)| Lease {
                owner: c.owner.clone(),
                until: rows::timestamp(*until),
            })
            .collect();
        run!(self, Some(queue), conn, {
            let stmt = conn.prepare_cached(text).await?;
            let at = ms(now);
            let rows = conn
                .query(&stmt, &[&queue.as_str(), &owners, &limits, &untils, &at])
                .await?;
            let ms_now = at;
            let at = rows::timestamp(at);
            let mut shares: Vec<Vec<Item>> = claims.iter().map(|_| Vec::new()).collect();
            let mut addresses: Vec<Vec<(i64, Address)>> =
                claims.iter().map(|_| Vec::new()).collect();
            for row in &rows {
                let who: i32 = row
                    .try_get(0)
                    .map_err(|e| Error::corrupted(format!("a shared claim's row: {e}")))?;
                let place = usize::try_from(who)
                    .ok()
                    .and_then(|w| w.checked_sub(1))
                    .filter(|&w| w < shares.len())
                    .ok_or_else(|| {
                        Error::corrupted(format!(
                            "a shared claim of {} consumers returned a row for consumer {who}",
                            shares.len()
                        ))
                    })?;
                let item = rows::claimed(row, 2, &leases[place], at)?;
                let address: Address = row
                    .try_get(1)
                    .map_err(|e| Error::corrupted(format!("a claimed row's address: {e}")))?;
                addresses[place].push((key_param(item.key), address));
                shares[place].push(item);
            }
            for (leased, until) in addresses.into_iter().zip(&untils) {
                if !leased.is_empty() {
                    self.inner.addresses.note(queue, leased, *until, ms_now);
                }
            }
            for items in &mut shares {
                items.sort_by_key(|i| (i.not_before, i.key));
            }
            Ok(shares)
        })
    }
}

/// The items of one consumer's claim from its rows (the claimed columns first), leased
/// until `until` at `at` (in milliseconds, as the claim stored them), in claim order.
fn one_consumers(rows: &[Row], claim: &Claim, until: i64, at: i64) -> Result<Vec<Item>> {
    let lease = Lease {
        owner: claim.owner.clone(),
        until: rows::timestamp(until),
    };
    let at = rows::timestamp(at);
    let mut items = rows
        .iter()
        .map(|row| rows::claimed(row, 0, &lease, at))
        .collect::<Result<Vec<_>>>()?;
    items.sort_by_key(|i| (i.not_before, i.key));
    Ok(items)
}
