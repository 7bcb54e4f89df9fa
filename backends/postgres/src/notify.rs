//! Wake-ups across processes: after a change, a backend sends one `NOTIFY` on its schema's
//! channel naming the queues it touched (coalesced: while one is being sent, the next
//! collects everything that changed meanwhile); every backend keeps one connection that
//! `LISTEN`s and passes the queue ids of *other* processes' notices on to
//! [`hookspool::Backend::changes`].
//!
//! The notice is sent in its own statement after the change committed, not inside the
//! change's transaction: a transaction that notifies takes a lock at commit that serializes
//! every other notifying commit, which would undo the server's group commit. Notices carry
//! no data (the payload limit is 8,000 bytes) and may be lost while a connection is down,
//! so the layers above keep a fallback poll.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use deadpool_postgres::Pool;
use futures_util::future;
use hookspool::QueueId;
use tokio::sync::{Notify, broadcast, watch};
use tokio_postgres::AsyncMessage;

/// Longest payload sent in one notice (the server's limit is 8,000 bytes).
const MAX_NOTICE: usize = 7_900;
/// Least time between two notices of one backend: under load, one notice then names every
/// queue changed in the last few milliseconds, instead of one statement per change.
const NOTICE_GAP: std::time::Duration = std::time::Duration::from_millis(5);

/// The queues changed since the last notice, and what wakes the sender.
#[derive(Clone, Default)]
pub(crate) struct Notices {
    shared: Arc<(Mutex<BTreeSet<String>>, Notify)>,
}

impl Notices {
    pub(crate) fn add(&self, queue: &QueueId) {
        let (pending, wake) = &*self.shared;
        let fresh = pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(queue.as_str().to_owned());
        if fresh {
            wake.notify_one();
        }
    }

    fn take(&self) -> BTreeSet<String> {
        std::mem::take(&mut *self.shared.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Sends the notices of this backend until `stop` closes.
pub(crate) async fn send(
    notices: Notices,
    pool: Pool,
    channel: String,
    origin: String,
    mut stop: watch::Receiver<()>,
) {
    loop {
        tokio::select! {
            () = notices.shared.1.notified() => {}
            _ = stop.changed() => return,
        }
        let queues = notices.take();
        if queues.is_empty() {
            continue;
        }
        for payload in payloads(&origin, &queues) {
            let sent = async {
                let conn = pool.get().await.map_err(|e| e.to_string())?;
                conn.execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            if let Err(e) = sent {
                tracing::debug!(error = %e, "could not send a change notice; others poll");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(NOTICE_GAP) => {}
            _ = stop.changed() => return,
        }
    }
}

/// `origin|queue,queue,…`, split to fit the server's payload limit.
fn payloads(origin: &str, queues: &BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = format!("{origin}|");
    let start = current.len();
    for q in queues {
        if current.len() + q.len() + 1 > MAX_NOTICE && current.len() > start {
            out.push(std::mem::replace(&mut current, format!("{origin}|")));
        }
        if current.len() > start {
            current.push(',');
        }
        current.push_str(q);
    }
    if current.len() > start {
        out.push(current);
    }
    out
}

/// Listens on `channel` until `stop` closes, reconnecting after a failure, and passes on
/// the queue ids of notices from other origins.
pub(crate) async fn listen(
    connect: crate::connect::Connector,
    channel: String,
    origin: String,
    changes: broadcast::Sender<QueueId>,
    mut stop: watch::Receiver<()>,
) {
    let mut delay = Duration::from_millis(100);
    loop {
        let session = async {
            let (client, mut connection) = connect.connect().await.map_err(|e| e.to_string())?;
            let mut messages = Box::pin(futures_util::stream::poll_fn(move |cx| {
                connection.poll_message(cx)
            }));
            let statement = format!("LISTEN \"{channel}\"");
            // The connection must be polled for the LISTEN to complete.
            let mut listen = std::pin::pin!(client.batch_execute(&statement));
            loop {
                match future::select(
                    listen.as_mut(),
                    futures_util::StreamExt::next(&mut messages),
                )
                .await
                {
                    future::Either::Left((r, _)) => {
                        r.map_err(|e| e.to_string())?;
                        break;
                    }
                    future::Either::Right((None, _)) => return Err("connection closed".to_owned()),
                    future::Either::Right((Some(Err(e)), _)) => return Err(e.to_string()),
                    future::Either::Right((Some(Ok(_)), _)) => {}
                }
            }
            tracing::debug!(channel, "listening for changes of other processes");
            while let Some(message) = futures_util::StreamExt::next(&mut messages).await {
                if let AsyncMessage::Notification(n) = message.map_err(|e| e.to_string())? {
                    relay(n.payload(), &origin, &changes);
                }
            }
            // `client` lives until here: the session (and the LISTEN) ends with it.
            Err::<(), String>("connection closed".to_owned())
        };
        tokio::select! {
            r = session => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "change listener lost its connection; reconnecting");
                }
            }
            _ = stop.changed() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

fn relay(payload: &str, origin: &str, changes: &broadcast::Sender<QueueId>) {
    let Some((from, queues)) = payload.split_once('|') else {
        return;
    };
    if from == origin {
        return;
    }
    for q in queues.split(',') {
        if let Ok(id) = QueueId::new(q) {
            let _ = changes.send(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_fit_the_limit_and_name_every_queue() {
        let queues: BTreeSet<String> = (0..500)
            .map(|i| format!("queue-{i:05}-{}", "x".repeat(40)))
            .collect();
        let out = payloads("o1", &queues);
        assert!(out.len() > 1);
        let mut seen = BTreeSet::new();
        for p in &out {
            assert!(p.len() <= MAX_NOTICE, "{}", p.len());
            let (origin, list) = p.split_once('|').unwrap();
            assert_eq!(origin, "o1");
            seen.extend(list.split(',').map(str::to_owned));
        }
        assert_eq!(seen, queues);
    }

    #[test]
    fn own_notices_are_not_relayed() {
        let (tx, mut rx) = broadcast::channel(8);
        relay("me|a,b", "me", &tx);
        relay("other|a,b", "me", &tx);
        relay("garbage", "me", &tx);
        assert_eq!(rx.try_recv().unwrap().as_str(), "a");
        assert_eq!(rx.try_recv().unwrap().as_str(), "b");
        assert!(rx.try_recv().is_err());
    }
}
