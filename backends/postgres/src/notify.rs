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
//!
//! A backend sends notices only while another backend listens on its schema's channel: the
//! listening connections name themselves (`application_name` [`listener_name`]), and the
//! sender looks for one other than its own in `pg_stat_activity` (again after
//! [`LOOK_NOBODY`] when it found none, after [`LOOK_SOMEONE`] when it found one). One
//! process alone on a schema then sends none, and its pushes wake nobody: they only note
//! their queue in a set, which the next look sends if it finds a listener, else empties.
//! With one producer pushing one item at a time, the notices (a statement every 5 ms, the
//! wake of the sender after every push, and the process's own listener woken by each) cost
//! its pushes 0.07–0.11× of a one-row `INSERT`'s rate (see the README). They had a use by
//! accident: each notice commits, and a commit flushes the WAL, so a process alone flushed
//! the WAL of its large statements (batches of 1024, claims of 1024 and their acks) every
//! 5 ms while they ran, and their own commits then had less to flush. Without the notices
//! those run about a tenth slower at the server's default `wal_writer_delay` (200 ms); a
//! server set to a few milliseconds gets it back for every client (the README measures
//! both). A listener that connects meanwhile hears of the changes made since the sender's
//! last look at most [`LOOK_NOBODY`] late, at its next look. (Earlier, those changes were
//! dropped: a process that made one just after another started, a subscription say, left
//! the other to learn of it by its own poll.)

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use deadpool_postgres::Pool;
use futures_util::future;
use hookspool::QueueId;
use tokio::sync::{Notify, broadcast, watch};
use tokio_postgres::{AsyncMessage, SimpleQueryMessage};

/// Longest payload sent in one notice (the server's limit is 8,000 bytes).
const MAX_NOTICE: usize = 7_900;
/// Least time between two notices of one backend: under load, one notice then names every
/// queue changed in the last few milliseconds, instead of one statement per change.
const NOTICE_GAP: std::time::Duration = std::time::Duration::from_millis(5);

/// How long the sender trusts a look that found no other listener.
const LOOK_NOBODY: Duration = Duration::from_millis(250);
/// How long it trusts a look that found one.
const LOOK_SOMEONE: Duration = Duration::from_secs(1);

/// The `application_name` of the listening connections of `channel` (the schema's name):
/// at most 63 bytes, as the server keeps it.
pub(crate) fn listener_name(channel: &str) -> String {
    let mut name = format!("hookspool listener {channel}");
    // Schema names are ASCII: any byte is a character boundary.
    name.truncate(63);
    name
}

/// The server process id of this backend's listening connection (0 while it has none).
#[derive(Clone, Debug, Default)]
pub(crate) struct OwnListener(Arc<AtomicI32>);

impl OwnListener {
    fn set(&self, pid: i32) {
        self.0.store(pid, Ordering::SeqCst);
    }

    fn get(&self) -> i32 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Whether another backend listens on the channel, from the last look and its time.
struct Others {
    name: String,
    own: OwnListener,
    last: Option<(tokio::time::Instant, bool)>,
}

impl Others {
    /// Whether another listener is there: the last look while it holds, else a new one.
    /// A look that fails counts as someone there.
    async fn listening(&mut self, pool: &Pool) -> bool {
        if let Some((at, found)) = self.last {
            let trust = if found { LOOK_SOMEONE } else { LOOK_NOBODY };
            if at.elapsed() < trust {
                return found;
            }
        }
        let found = async {
            let conn = pool.get().await.map_err(|e| e.to_string())?;
            // Prepared once per pooled session: preparing it (the view expands to several
            // joins) cost the server about 1.4M instructions at every look (callgrind), and
            // while it makes changes a process alone on its schema looks every quarter second.
            let stmt = conn
                .prepare_cached(
                    "SELECT coalesce(array_agg(pid), '{}') FROM pg_stat_activity \
                     WHERE application_name = $1",
                )
                .await
                .map_err(|e| e.to_string())?;
            let row = conn
                .query_one(&stmt, &[&self.name])
                .await
                .map_err(|e| e.to_string())?;
            // Our own listener's id, read after the look: it is recorded before the
            // connection takes its name, so a name the look saw has its id here.
            let own = self.own.get();
            Ok::<_, String>(row.get::<_, Vec<i32>>(0).iter().any(|&pid| pid != own))
        }
        .await
        .unwrap_or_else(|e| {
            tracing::debug!(error = %e, "could not look for other listeners; notifying");
            true
        });
        self.last = Some((tokio::time::Instant::now(), found));
        found
    }
}

/// The queues changed since the last notice, what wakes the sender, and whether another
/// backend listens (at the sender's last look; until the first, yes).
#[derive(Clone)]
pub(crate) struct Notices {
    shared: Arc<(Mutex<BTreeSet<String>>, Notify, AtomicBool)>,
}

impl Default for Notices {
    fn default() -> Self {
        Notices {
            shared: Arc::new((Mutex::default(), Notify::new(), AtomicBool::new(true))),
        }
    }
}

impl Notices {
    /// Records a change of `queue` for the next notice, and wakes the sender while another
    /// backend listens. While nobody else does, the sender's next look (at most
    /// [`LOOK_NOBODY`] away) sends what was recorded if it finds a listener that connected
    /// meanwhile, or forgets it.
    pub(crate) fn add(&self, queue: &QueueId) {
        let (pending, wake, listened) = &*self.shared;
        let mut pending = pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.contains(queue.as_str()) {
            return;
        }
        pending.insert(queue.as_str().to_owned());
        drop(pending);
        if listened.load(Ordering::Relaxed) {
            wake.notify_one();
        }
    }

    fn take(&self) -> BTreeSet<String> {
        std::mem::take(&mut *self.shared.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn set_listened(&self, listened: bool) {
        self.shared.2.store(listened, Ordering::Relaxed);
    }
}

/// Sends the notices of this backend, while another backend listens, until `stop` closes.
/// `own` is this backend's listener.
pub(crate) async fn send(
    notices: Notices,
    pool: Pool,
    channel: String,
    origin: String,
    own: OwnListener,
    mut stop: watch::Receiver<()>,
) {
    let mut others = Others {
        name: listener_name(&channel),
        own,
        last: None,
    };
    loop {
        // While nobody else listens, pushes wake no one: look again after a while, and send
        // what they recorded if someone listens by then.
        let nobody = !notices.shared.2.load(Ordering::Relaxed);
        tokio::select! {
            () = notices.shared.1.notified() => {}
            () = tokio::time::sleep(LOOK_NOBODY), if nobody => {}
            _ = stop.changed() => return,
        }
        let listened = others.listening(&pool).await;
        notices.set_listened(listened);
        let queues = notices.take();
        if queues.is_empty() || !listened {
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
/// the queue ids of notices from other origins. The connection names itself
/// ([`listener_name`]) and records its process id in `own`.
pub(crate) async fn listen(
    connect: crate::connect::Connector,
    channel: String,
    origin: String,
    changes: broadcast::Sender<QueueId>,
    own: OwnListener,
    mut stop: watch::Receiver<()>,
) {
    let mut delay = Duration::from_millis(100);
    loop {
        let session = async {
            let (client, mut connection) = connect.connect().await.map_err(|e| e.to_string())?;
            let mut messages = Box::pin(futures_util::stream::poll_fn(move |cx| {
                connection.poll_message(cx)
            }));
            // Its process id first: once the connection shows its name, the sender must be
            // able to tell it from another backend's.
            let pid = polled(
                client.simple_query("SELECT pg_backend_pid()"),
                &mut messages,
            )
            .await?
            .iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(row) => row.get(0)?.parse().ok(),
                _ => None,
            });
            own.set(pid.unwrap_or(0));
            // The schema's name is `[a-z0-9_]` (checked at open): no quoting needed.
            let statement = format!(
                "SET application_name = '{}'; LISTEN \"{channel}\"",
                listener_name(&channel)
            );
            polled(client.batch_execute(&statement), &mut messages).await?;
            tracing::debug!(channel, "listening for changes of other processes");
            while let Some(message) = futures_util::StreamExt::next(&mut messages).await {
                if let AsyncMessage::Notification(n) = message.map_err(|e| e.to_string())? {
                    relay(n.payload(), &origin, &changes);
                }
            }
            // `client` lives until here: the session (and the LISTEN) ends with it.
            Err::<(), String>("connection closed".to_owned())
        };
        let session = async {
            let r = session.await;
            own.set(0);
            r
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

/// Runs `call` on a connection whose messages only `messages` polls (a listener's), polling
/// them meanwhile, as the call needs.
async fn polled<T>(
    call: impl Future<Output = Result<T, tokio_postgres::Error>>,
    messages: &mut (
             impl futures_util::Stream<Item = Result<AsyncMessage, tokio_postgres::Error>> + Unpin
         ),
) -> Result<T, String> {
    let mut call = std::pin::pin!(call);
    loop {
        match future::select(call.as_mut(), futures_util::StreamExt::next(messages)).await {
            future::Either::Left((r, _)) => return r.map_err(|e| e.to_string()),
            future::Either::Right((None, _)) => return Err("connection closed".to_owned()),
            future::Either::Right((Some(Err(e)), _)) => return Err(e.to_string()),
            future::Either::Right((Some(Ok(_)), _)) => {}
        }
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
