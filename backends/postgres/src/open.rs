//! Opening the backend: connect, check the server, migrate, start the background tasks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hookspool::QueueId;
use tokio::sync::{Notify, broadcast, watch};

use crate::backend::{Inner, PostgresBackend};
use crate::connect::Connector;
use crate::error::OpenError;
use crate::notify::{self, Notices};
use crate::options::PostgresOptions;
use crate::sql::Sql;
use crate::{schema, trash};

impl PostgresBackend {
    /// Connects, checks the server (PostgreSQL 13 or later), brings the schema to this
    /// version (creating it if needed, under an advisory lock, so that several processes may
    /// start at once) and starts the background tasks (change notices, deleting what
    /// `reset` threw away). Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`OpenError`], saying what to fix: bad options, an unreachable server (naming it),
    /// not PostgreSQL, too old, a schema from a newer hookspool or holding other objects.
    pub async fn open(options: PostgresOptions) -> Result<Self, OpenError> {
        options.check()?;
        let connector = Connector::new(&options)?;
        let target = connector.target();
        let connect_error = |source| OpenError::Connect {
            target: target.clone(),
            source,
        };
        let (mut client, connection) = connector.connect().await.map_err(connect_error)?;
        let driver = tokio::spawn(connection);
        let migrated = schema::migrate(&mut client, &options.schema, &target).await;
        drop(client);
        let _ = driver.await;
        migrated?;

        let pool = connector.pool(options.pool_size, true)?;
        // These connections write no counts: they leave the shards to those that do.
        let once_pool = connector.pool(options.pool_size.div_ceil(4), false)?;
        // One connection now, so that a server that went away since is reported here.
        drop(pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(source)
            | deadpool_postgres::PoolError::PostCreateHook(
                deadpool_postgres::HookError::Backend(source),
            ) => connect_error(source),
            other => OpenError::InvalidOptions(other.to_string()),
        })?);

        let sql = Sql::new(&options.schema);
        let (stop, _) = watch::channel(());
        let (notices, changes) = start_notices(connector, &pool, &options.schema, &stop);
        let trash_wake = Arc::new(Notify::new());
        let oldest_snapshot = crate::snapshots::Seen::new(options.snapshot_warning);
        let counter_shards = Arc::new(crate::held::CounterShards::default());
        if let Some(after) = options.snapshot_warning {
            tokio::spawn(crate::snapshots::watch(
                crate::snapshots::Watcher {
                    pool: pool.clone(),
                    after,
                    seen: oldest_snapshot.clone(),
                    schema: options.schema.clone(),
                    counter_shards: Arc::clone(&counter_shards),
                    fold_counts: sql.held.fold_counts.clone(),
                },
                stop.subscribe(),
            ));
        }
        let pushed = crate::rollup::Pushed::default();
        tokio::spawn(crate::rollup::run(
            crate::rollup::Roller {
                pool: pool.clone(),
                statement: sql.roll_up.clone(),
                vacuum: sql.vacuum_changes.clone(),
                vacuum_truncate: sql.vacuum_changes_truncate.clone(),
                pushed: pushed.clone(),
                seen: oldest_snapshot.clone(),
            },
            stop.subscribe(),
        ));
        tokio::spawn(trash::clean(
            trash::Cleaner {
                pool: pool.clone(),
                list: sql.trash.clone(),
                empty_one: sql.empty_trash.clone(),
                catch_up_ttl: sql.catch_up_ttl.clone(),
                grace: options.trash_grace,
                wake: Arc::clone(&trash_wake),
            },
            stop.subscribe(),
        ));
        Ok(PostgresBackend {
            inner: Arc::new(Inner {
                pool,
                once_pool,
                sql,
                schema: options.schema,
                target,
                notices,
                lanes: crate::lane::Lanes::default(),
                gathering: crate::lane::Lanes::default(),
                addresses: crate::addresses::Addresses::default(),
                changes,
                trash_wake,
                oldest_snapshot,
                claims_from: crate::held::Claims::default(),
                prunes_from: crate::held::Prunes::default(),
                counter_shards,
                pushed,
                _stop: stop,
            }),
        })
    }
}

/// Starts the tasks that send this backend's change notices and listen for other
/// processes' (see `notify`); what records changes, and where others' arrive.
fn start_notices(
    connector: Connector,
    pool: &deadpool_postgres::Pool,
    schema: &str,
    stop: &watch::Sender<()>,
) -> (Notices, broadcast::Sender<QueueId>) {
    let (changes, _) = broadcast::channel(1024);
    let notices = Notices::default();
    let origin = origin();
    let own_listener = notify::OwnListener::default();
    tokio::spawn(notify::send(
        notices.clone(),
        pool.clone(),
        schema.to_owned(),
        origin.clone(),
        own_listener.clone(),
        stop.subscribe(),
    ));
    tokio::spawn(notify::listen(
        connector,
        schema.to_owned(),
        origin,
        changes.clone(),
        own_listener,
        stop.subscribe(),
    ));
    (notices, changes)
}

/// A name for this backend's notices, unique among the processes sharing the database.
fn origin() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:x}.{:x}.{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}
