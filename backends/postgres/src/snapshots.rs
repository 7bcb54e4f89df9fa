//! The oldest snapshot on the server. While a session holds a snapshot open (a forgotten
//! transaction, a long report), vacuum can free no row version that died after it was
//! taken: the items table and its indexes grow, and a claim from the start of the due
//! index reads again the dead entries of everything claimed since, so deliveries would slow
//! down to a fraction of their rate (the README's PostgreSQL soak measures it). Nothing in
//! hookspool can end such a session. It can say which one it is, and claim from where its
//! last claim ended meanwhile (`held`). Every backend logs a warning naming the
//! session once its snapshot is older than [`crate::PostgresOptions::snapshot_warning`]
//! (1 minute unless told otherwise), looking every half of that ([`interval`]);
//! [`PostgresBackend::oldest_snapshot`] answers the same question on demand, and the age of
//! the oldest snapshot at the last look is one of the backend's gauges
//! (`hookspool_postgres_oldest_snapshot_seconds` in the daemon's `/metrics`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::watch;

use crate::PostgresBackend;

/// The longest time between two looks for an old snapshot.
const LONGEST_INTERVAL: Duration = Duration::from_secs(30);
/// The shortest time between two looks (each is a query on the server).
const SHORTEST_INTERVAL: Duration = Duration::from_millis(100);

/// How often a backend that warns about snapshots older than `after` looks for one: every
/// half of `after`, between [`SHORTEST_INTERVAL`] and [`LONGEST_INTERVAL`]. A snapshot is
/// then reported within `after` and `after` + the interval of being taken.
pub(crate) fn interval(after: Duration) -> Duration {
    (after / 2).clamp(SHORTEST_INTERVAL, LONGEST_INTERVAL)
}

/// The session of this database holding the oldest snapshot, and for how long its
/// transaction (or, outside one, its statement) has run.
const OLDEST: &str = "\
SELECT pid, coalesce(application_name, ''), coalesce(state, ''),
       extract(epoch FROM now() - coalesce(xact_start, query_start))::float8
FROM pg_stat_activity
WHERE backend_xmin IS NOT NULL AND pid <> pg_backend_pid() AND datname = current_database()
  AND backend_type = 'client backend'
  AND coalesce(xact_start, query_start) <= now() - make_interval(secs => $1)
ORDER BY coalesce(xact_start, query_start)
LIMIT 1";

/// A session that holds a snapshot open: vacuum frees no row version that died after it.
#[derive(Clone, Debug, PartialEq)]
pub struct OldSnapshot {
    /// The server process of the session (`pg_terminate_backend` takes it).
    pub pid: i32,
    /// The session's `application_name` (empty when it set none).
    pub application: String,
    /// Its state: `idle in transaction` for a transaction left open, `active` for a long
    /// statement.
    pub state: String,
    /// How long its transaction (or, outside one, its statement) has run.
    pub open_for: Duration,
}

impl PostgresBackend {
    /// The session of this database holding the oldest snapshot, if it has held it for at
    /// least `older_than`. Sessions of other roles are seen only by a role the server lets
    /// read them (a superuser, or a member of `pg_read_all_stats`).
    ///
    /// # Errors
    /// [`hookspool::Error::Unavailable`] when the server cannot be reached or refuses the
    /// query.
    pub async fn oldest_snapshot(
        &self,
        older_than: Duration,
    ) -> hookspool::Result<Option<OldSnapshot>> {
        oldest(&self.inner.pool, older_than)
            .await
            .map_err(|e| hookspool::Error::Unavailable {
                backend: "postgres",
                source: format!("looking for the oldest snapshot: {e}").into(),
            })
    }
}

/// The longest age asked of the server: a longer one (which `make_interval` would refuse as
/// out of range) can match no session either.
const LONGEST: Duration = Duration::from_hours(100 * 365 * 24);

async fn oldest(pool: &Pool, older_than: Duration) -> Result<Option<OldSnapshot>, String> {
    let conn = pool.get().await.map_err(|e| e.to_string())?;
    let row = conn
        .query_opt(OLDEST, &[&older_than.min(LONGEST).as_secs_f64()])
        .await
        .map_err(|e| crate::ServerError::from(e).to_string())?;
    Ok(row.map(|r| OldSnapshot {
        pid: r.get(0),
        application: r.get(1),
        state: r.get(2),
        open_for: Duration::try_from_secs_f64(r.get::<_, f64>(3).max(0.0)).unwrap_or_default(),
    }))
}

/// Runs the statement that folds the counts of the shards of epochs.
async fn fold(pool: &Pool, statement: &str) -> Result<(), String> {
    let conn = pool.get().await.map_err(|e| e.to_string())?;
    conn.execute(statement, &[])
        .await
        .map(drop)
        .map_err(|e| crate::ServerError::from(e).to_string())
}

/// The age of the oldest snapshot at the last look: `None` before the first (or when the
/// backend does not look), zero when no other session held one. `after` is the age from
/// which it counts as held (the warning's; `None`: the backend does not look).
#[derive(Clone, Debug, Default)]
pub(crate) struct Seen {
    age: Arc<Mutex<Option<Duration>>>,
    after: Option<Duration>,
}

impl Seen {
    pub(crate) fn new(after: Option<Duration>) -> Self {
        Seen {
            age: Arc::default(),
            after,
        }
    }

    pub(crate) fn get(&self) -> Option<Duration> {
        *self.age.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, age: Duration) {
        *self.age.lock().unwrap_or_else(PoisonError::into_inner) = Some(age);
    }

    /// Whether the last look found a snapshot at least as old as the warning's threshold:
    /// claims then run from remembered positions (see `held`).
    pub(crate) fn held(&self) -> bool {
        self.after
            .zip(self.get())
            .is_some_and(|(after, age)| age >= after)
    }

    /// The longest time between two full retention steps of a queue's phase while a
    /// snapshot is held: the warning's threshold (a minute by default). Retention can wait,
    /// and a full step reads everything removed since the snapshot was taken.
    pub(crate) fn full_prune_every(&self) -> Duration {
        self.after.unwrap_or(Duration::MAX)
    }

    /// The longest time between two full claims of a queue while a snapshot is held: a
    /// second, or the time between two looks when that is shorter.
    pub(crate) fn full_claim_every(&self) -> Duration {
        self.after.map_or(crate::held::FULL_EVERY, |after| {
            interval(after).min(crate::held::FULL_EVERY)
        })
    }
}

/// What the watcher needs.
pub(crate) struct Watcher {
    pub(crate) pool: Pool,
    /// The age from which a snapshot is held.
    pub(crate) after: Duration,
    pub(crate) seen: Seen,
    pub(crate) schema: String,
    pub(crate) counter_shards: Arc<crate::held::CounterShards<deadpool_postgres::ObjectId>>,
    /// The statement that folds the counts of the shards of epochs.
    pub(crate) fold_counts: String,
}

/// Records the age of the oldest snapshot at every look, and logs a warning whenever one
/// is older than `after`, until `stop` closes. Once no snapshot is that old any more, it
/// says so (once), with what is left to do: the indexes of `items` in `schema` keep what
/// they grew by until they are rebuilt; and it folds the counts the sessions wrote to
/// shards of epochs meanwhile.
pub(crate) async fn watch(w: Watcher, mut stop: watch::Receiver<()>) {
    let Watcher {
        pool,
        after,
        seen,
        schema,
        counter_shards,
        fold_counts,
    } = w;
    let every = interval(after);
    // The process id of the session last warned about, until no snapshot is old any more.
    let mut warned: Option<i32> = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        let found = oldest(&pool, Duration::ZERO).await;
        if let Ok(s) = &found {
            seen.set(s.as_ref().map_or(Duration::ZERO, |s| s.open_for));
            if counter_shards.take_fold(seen.held())
                && let Err(e) = fold(&pool, &fold_counts).await
            {
                tracing::debug!(error = %e, "could not fold the counts of a held snapshot's shards");
                counter_shards.fold_failed();
            }
        }
        match found {
            Ok(Some(s)) if s.open_for >= after => {
                tracing::warn!(
                    pid = s.pid,
                    application = %s.application,
                    state = %s.state,
                    open_for_secs = s.open_for.as_secs(),
                    "a session has held a snapshot open for {} s: vacuum cannot free the rows \
                     that died since, so the items table and its indexes grow (meanwhile claims \
                     start where this node's last claim ended, with a full claim every second); \
                     end it, or set idle_in_transaction_session_timeout",
                    s.open_for.as_secs()
                );
                warned = Some(s.pid);
            }
            Ok(_) => {
                if let Some(pid) = warned.take() {
                    tracing::info!(
                        pid,
                        "no snapshot is held open any more: vacuum can free the rows that died \
                         meanwhile, and claims catch up. The indexes of the items table keep \
                         the space they grew by; REINDEX TABLE CONCURRENTLY \"{schema}\".items \
                         gives it back"
                    );
                }
            }
            Err(e) => tracing::debug!(error = %e, "could not look for an old snapshot"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_looks_every_half_of_its_threshold_within_bounds() {
        assert_eq!(interval(Duration::from_mins(1)), Duration::from_secs(30));
        assert_eq!(interval(Duration::from_secs(10)), Duration::from_secs(5));
        assert_eq!(interval(Duration::from_hours(1)), LONGEST_INTERVAL);
        assert_eq!(interval(Duration::ZERO), SHORTEST_INTERVAL);
        assert_eq!(interval(Duration::MAX), LONGEST_INTERVAL);
    }
}
