//! The claim statements: one consumer's claim, and one shared by several (see `gather`).

use hookspool::{Claim, Error, Item, Lease, QueueId, Result, Timestamp};
use tokio_postgres::types::ToSql;

use super::PostgresBackend;
use crate::held::ClaimPosition;
use crate::rows::{self, ms};

impl PostgresBackend {
    /// `claim` in a statement of its own: from the head of the due index (with the sweep),
    /// or from after `after` (while a snapshot is held open, see `held`).
    pub(crate) async fn claim_alone(
        &self,
        queue: &QueueId,
        claim: &Claim,
        now: Timestamp,
        after: Option<ClaimPosition>,
    ) -> Result<Vec<Item>> {
        let limit = i32::try_from(claim.limit).unwrap_or(i32::MAX);
        let sql = &self.inner.sql;
        let text = match (after.is_some(), claim.durable) {
            (false, true) => &sql.claim,
            (false, false) => &sql.claim_lazy,
            (true, true) => &sql.held.claim_after,
            (true, false) => &sql.held.claim_after_lazy,
        };
        run!(self, Some(queue), conn, {
            let stmt = conn.prepare_cached(text).await?;
            let (id, until, at) = (queue.as_str(), ms(claim.lease_until), ms(now));
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![&id, &claim.owner, &limit, &until, &at];
            if let Some((not_before, key)) = &after {
                params.extend([not_before as &(dyn ToSql + Sync), key]);
            }
            let rows = conn.query(&stmt, &params).await?;
            // The lease and the time as the claim stored them: in whole milliseconds.
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
        })
    }

    /// The claims of several consumers in one statement (`claim_for`) at `now`: each
    /// consumer's items, in the order of `claims`. Durable unless none asked for that.
    pub(crate) async fn claim_shared(
        &self,
        queue: &QueueId,
        claims: &[&Claim],
        now: Timestamp,
    ) -> Result<Vec<Vec<Item>>> {
        let sql = &self.inner.sql;
        let text = if claims.iter().any(|c| c.durable) {
            &sql.claim_for
        } else {
            &sql.claim_for_lazy
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
            let at = rows::timestamp(at);
            let mut shares: Vec<Vec<Item>> = claims.iter().map(|_| Vec::new()).collect();
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
                shares[place].push(rows::claimed(row, 1, &leases[place], at)?);
            }
            for items in &mut shares {
                items.sort_by_key(|i| (i.not_before, i.key));
            }
            Ok(shares)
        })
    }
}
