//! One attempt of one delivery, as a request task runs it: the signed POST, the outcome it
//! leads to (with the attempt added to the delivery's log), handed to the settler.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hookspool::{
    Action, Backend, Error as StoreError, Expect, Item, Key, Move, Phase, Timestamp, Transition,
};

use super::settler::{Settle, Settles};
use super::{
    DeliveryConfig, DeliveryOutcome, Done, MAX_ATTEMPT_RECORDS, OutcomeKind, RESPONSE_PREFIX,
    phase, sub_of,
};
use crate::deliveries::DeliveryId;
use crate::error::{Error, Result};
use crate::hooks::{
    CANCELLED, GONE, Hooks, M_ATTEMPT_PREFIX, M_ATTEMPTS, M_EVENT, M_REPLAY_BASE, M_REQUEST_ID,
    M_URL, attempts_made, random_unit,
};
use crate::net::{DeliveryClient, TargetUrl};
use crate::signing::{SignInput, SignatureScheme, SigningKey, sign};
use crate::subscription::{Registered, Subscription, parse_key};

/// Runs one attempt of one delivery; shared by the request tasks.
pub(super) struct Attempter<B: Backend> {
    pub(super) hooks: Hooks<B>,
    pub(super) client: std::sync::Arc<DeliveryClient>,
    pub(super) config: std::sync::Arc<DeliveryConfig>,
    /// Where the outcome goes to be recorded.
    pub(super) settles: Settles,
}

impl<B: Backend> Attempter<B> {
    pub(super) async fn attempt(self, item: Item, registered: Option<Arc<Registered>>) -> Done {
        let key = item.key;
        let sub = registered.as_deref();
        let subscription = sub.map(|r| r.sub.id.clone());
        let fifo = sub.is_some_and(|r| r.sub.strict_fifo);
        if let Some(why) = malformed(&item, sub.map(|r| &r.sub)) {
            // Trying again cannot help, and it must not hold up the others.
            self.quarantine(key, &why).await;
            return Done {
                key,
                subscription,
                retry_at: None,
                fifo,
            };
        }
        let retry_at = match self.try_attempt(item, sub).await {
            Ok(at) => at,
            Err(e) => {
                // Not sent: the lease runs out and the delivery is tried again.
                tracing::error!(key, error = %e, "could not attempt a delivery");
                None
            }
        };
        Done {
            key,
            subscription,
            retry_at,
            fifo,
        }
    }

    /// Moves a delivery whose record cannot be used to [`Phase::CORRUPT`], with why, and
    /// says so in the log.
    async fn quarantine(&self, key: Key, error: &str) {
        tracing::error!(key, error = %error, "delivery record malformed: quarantined");
        let transition = Transition {
            expect: Expect {
                phase: Some(Phase::IN_FLIGHT),
                lease_owner: Some(self.config.owner.clone()),
            },
            action: Action::Move(Move::to(Phase::CORRUPT).error(format!("quarantined: {error}"))),
        };
        let q = &self.hooks.inner.deliveries_queue;
        if let Err(e) = self.hooks.store().settle(q, key, transition).await {
            tracing::error!(key, error = %e, "could not quarantine a delivery");
        }
    }

    async fn try_attempt(
        &self,
        mut item: Item,
        registered: Option<&Registered>,
    ) -> Result<Option<Timestamp>> {
        let sub = registered.map(|r| &r.sub);
        let store = self.hooks.store();
        let inner = &self.hooks.inner;
        let id = DeliveryId::new(&inner.nonce, item.key);
        let event = item.metadata.get(M_EVENT).cloned().unwrap_or_default();
        let url = match (sub, item.metadata.get(M_URL)) {
            (Some(s), _) => Cow::Borrowed(&s.url),
            (None, Some(u)) => Cow::Owned(TargetUrl::parse(u).map_err(|e| Error::InvalidUrl {
                url: u.clone(),
                reason: e.to_string(),
            })?),
            (None, None) => {
                return Err(StoreError::corrupted(format!("delivery {id} has no target")).into());
            }
        };
        let started = store.now();
        let headers = self.headers(&item, registered, &id, &event, started)?;
        let number = attempts_made(&item.metadata) + 1;
        let clock = std::time::Instant::now();
        // Signed: the body is not needed again (the outcome keeps the metadata only).
        let body = std::mem::take(&mut item.payload);
        let result = self.client.post(&url, &headers, body).await;
        let elapsed = clock.elapsed();

        let (status, error, response, retry_after) = match &result {
            Ok(r) => (
                Some(r.status),
                (!(200..300).contains(&r.status)).then(|| format!("http_{}", r.status)),
                String::from_utf8_lossy(&r.body_prefix[..r.body_prefix.len().min(RESPONSE_PREFIX)])
                    .into_owned(),
                r.retry_after,
            ),
            Err(e) => (
                None,
                Some(format!("{}: {e}", e.class())),
                String::new(),
                None,
            ),
        };
        let kind = match &result {
            Ok(r) if (200..300).contains(&r.status) => OutcomeKind::Delivered,
            Ok(r) if r.status == 410 => OutcomeKind::Gone,
            Ok(r) => {
                // 429 and 5xx always; other 4xx and 3xx (redirects are not followed) by setting.
                let retryable =
                    r.status == 429 || r.status >= 500 || self.config.retry_client_errors;
                self.next(retryable, number, &item, retry_after)
            }
            Err(e) => self.next(e.is_retryable(), number, &item, None),
        };

        let record = crate::Attempt {
            number,
            at: started,
            status,
            error: error.clone(),
            duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            response,
        };
        let mv = settle(&item, &kind, record);
        let transition = Transition {
            expect: Expect {
                phase: Some(Phase::IN_FLIGHT),
                lease_owner: Some(self.config.owner.clone()),
            },
            action: Action::Move(mv),
        };
        let retry_at = match &kind {
            OutcomeKind::Retrying { at } => Some(*at),
            _ => None,
        };
        let outcome = DeliveryOutcome {
            delivery_id: id,
            subscription: sub.map(|s| s.id.clone()),
            event,
            attempt: number,
            status,
            error,
            duration: elapsed,
            kind,
        };
        // The settler records it (durably, with the others that finished meanwhile) before
        // anyone hears of it. It runs until the loop has stopped every request task.
        let (recorded, wait) = if sub.is_some_and(|s| s.strict_fifo) {
            let (tx, rx) = tokio::sync::oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let settle = Settle {
            key: item.key,
            transition,
            outcome,
            recorded,
        };
        if self.settles.send(settle).is_err() {
            tracing::error!(
                key = item.key,
                "the settler has stopped; the outcome is not recorded"
            );
        } else if let Some(wait) = wait {
            // Strict FIFO: the next delivery starts once this one's outcome is durable.
            let _ = wait.await;
        }
        Ok(retry_at)
    }

    fn next(
        &self,
        retryable: bool,
        number: u32,
        item: &Item,
        retry_after: Option<Duration>,
    ) -> OutcomeKind {
        if !retryable {
            return OutcomeKind::Dead;
        }
        let base: u32 = item
            .metadata
            .get(M_REPLAY_BASE)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        match self.config.schedule.next_delay(
            number.saturating_sub(base),
            retry_after,
            random_unit(),
        ) {
            Some(delay) => OutcomeKind::Retrying {
                at: self.hooks.store().now().saturating_add(delay),
            },
            None => OutcomeKind::Dead,
        }
    }

    /// The request headers: content type, event name, the subscription's extra headers, the
    /// request id (emit), and the signature headers of the scheme.
    fn headers(
        &self,
        item: &Item,
        registered: Option<&Registered>,
        id: &DeliveryId,
        event: &str,
        now: Timestamp,
    ) -> Result<Vec<(String, String)>> {
        let mut headers = vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("x-hookspool-event".to_owned(), event.to_owned()),
        ];
        if let Some(r) = item.metadata.get(M_REQUEST_ID) {
            headers.push(("x-request-id".to_owned(), r.clone()));
        }
        let direct;
        let (scheme, keys): (SignatureScheme, Vec<&SigningKey>) = if let Some(r) = registered {
            for (k, v) in &r.sub.headers {
                headers.push((k.to_ascii_lowercase(), v.clone()));
            }
            (r.sub.scheme, r.signing_keys(now)?)
        } else {
            let Some(secret) = &self.hooks.inner.options.direct_secret else {
                // Unsigned, but still with the id receivers deduplicate on.
                headers.push(("webhook-id".to_owned(), id.to_string()));
                headers.push((
                    "webhook-timestamp".to_owned(),
                    (now.as_millis() / 1000).to_string(),
                ));
                return Ok(headers);
            };
            let scheme = SignatureScheme::StandardWebhooks;
            direct = parse_key(scheme, secret.expose())?;
            (scheme, vec![&direct])
        };
        let input = SignInput {
            delivery_id: id.as_str(),
            event,
            timestamp: now.as_millis() / 1000,
            body: &item.payload,
        };
        // The id and the event name were checked when the delivery was made.
        let signed = sign(scheme, &keys, &input).map_err(|e| Error::internal(e.to_string()))?;
        headers.extend(signed.into_iter().map(|(k, v)| (k.to_owned(), v)));
        Ok(headers)
    }
}

/// The move that records an attempt: the next phase, the attempt count and the attempt log
/// in the metadata, and the error.
fn settle(item: &Item, kind: &OutcomeKind, record: crate::Attempt) -> Move {
    let mut metadata = item.metadata.clone();
    metadata.insert(M_ATTEMPTS.to_owned(), record.number.to_string());
    metadata.insert(
        format!("{M_ATTEMPT_PREFIX}{:04}", record.number),
        serde_json::to_string(&record).unwrap_or_default(),
    );
    trim_attempts(&mut metadata);
    let mv = match kind {
        OutcomeKind::Delivered => Move::to(Phase::DONE),
        OutcomeKind::Retrying { at } => Move::to(Phase::PENDING).not_before(*at),
        OutcomeKind::Dead => Move::to(Phase::DEAD),
        OutcomeKind::Gone => Move::to(phase(GONE)),
        OutcomeKind::Cancelled => Move::to(phase(CANCELLED)),
    };
    let mut mv = mv.metadata(metadata);
    // The error stays the last one recorded when this attempt has none. Passing it along
    // (rather than leaving it unset, which keeps it too) spares a backend that keeps both
    // on disk a read of the old ones (the journal's notes).
    mv.error = record.error.or_else(|| item.last_error.clone());
    mv
}

/// Why a delivery's record cannot be sent, ever: it names no subscription and no URL, or a
/// URL that is not one. (A subscription that is gone is not this: such deliveries end as
/// `gone`.)
fn malformed(item: &Item, sub: Option<&Subscription>) -> Option<String> {
    if sub.is_some() || sub_of(item).is_some() {
        return None;
    }
    match item.metadata.get(M_URL) {
        None => Some("the delivery record names no subscription and no URL".to_owned()),
        Some(u) => TargetUrl::parse(u)
            .err()
            .map(|e| format!("the delivery record's URL {u:?} is not valid: {e}")),
    }
}

/// Keeps the attempt log within [`MAX_ATTEMPT_RECORDS`] entries (oldest dropped).
fn trim_attempts(metadata: &mut BTreeMap<String, String>) {
    let is_record = |k: &&String| k.starts_with(M_ATTEMPT_PREFIX);
    let records = metadata.keys().filter(is_record).count();
    if records > MAX_ATTEMPT_RECORDS {
        // Numbered with leading zeros, so the oldest come first.
        let oldest: Vec<String> = metadata
            .keys()
            .filter(is_record)
            .take(records - MAX_ATTEMPT_RECORDS)
            .cloned()
            .collect();
        for k in &oldest {
            metadata.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attempt_log_keeps_the_newest_records() {
        let mut metadata = BTreeMap::from([
            ("event".to_owned(), "order.created".to_owned()),
            (M_ATTEMPTS.to_owned(), "50".to_owned()),
        ]);
        for n in 1..=50 {
            metadata.insert(format!("{M_ATTEMPT_PREFIX}{n:04}"), n.to_string());
        }
        trim_attempts(&mut metadata);
        let kept: Vec<&String> = metadata
            .keys()
            .filter(|k| k.starts_with(M_ATTEMPT_PREFIX))
            .collect();
        assert_eq!(kept.len(), MAX_ATTEMPT_RECORDS);
        assert_eq!(
            kept[0],
            &format!("{M_ATTEMPT_PREFIX}0003"),
            "the two oldest go"
        );
        assert_eq!(metadata["event"], "order.created", "other entries stay");
        assert_eq!(metadata[M_ATTEMPTS], "50");
        // Within the limit, nothing goes.
        let before = metadata.clone();
        trim_attempts(&mut metadata);
        assert_eq!(metadata, before);
    }
}
