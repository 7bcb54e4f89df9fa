//! Connections: the parsed connection string, TLS through rustls, and the pool.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::Host;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::OpenError;
use crate::options::PostgresOptions;

/// How to open one connection: the settings and the TLS connector.
#[derive(Clone)]
pub(crate) struct Connector {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) tls: MakeRustlsConnect,
}

impl Connector {
    pub(crate) fn new(options: &PostgresOptions) -> Result<Self, OpenError> {
        let mut config: tokio_postgres::Config = options
            .url
            .parse()
            .map_err(|e| OpenError::InvalidOptions(format!("bad connection string: {e}")))?;
        config.connect_timeout(options.connect_timeout);
        // "Durable on return" means committed and flushed: whatever the server's default.
        let extra = config.get_options().unwrap_or_default().to_owned();
        config.options(format!("{extra} -c synchronous_commit=on").trim());
        config.application_name("hookspool");
        Ok(Connector {
            config,
            tls: tls(options)?,
        })
    }

    pub(crate) async fn connect(
        &self,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio_postgres::Connection<
                tokio_postgres::Socket,
                <MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<
                    tokio_postgres::Socket,
                >>::Stream,
            >,
        ),
        tokio_postgres::Error,
    > {
        self.config.connect(self.tls.clone()).await
    }

    /// Host, port and database, for messages (never the password).
    pub(crate) fn target(&self) -> String {
        let hosts: Vec<String> = self
            .config
            .get_hosts()
            .iter()
            .zip(
                self.config
                    .get_ports()
                    .iter()
                    .chain(std::iter::repeat(&5432)),
            )
            .map(|(h, port)| match h {
                Host::Tcp(h) => format!("{h}:{port}"),
                #[cfg(unix)]
                Host::Unix(p) => format!("{}:{port}", p.display()),
            })
            .collect();
        let hosts = if hosts.is_empty() {
            "localhost:5432".to_owned()
        } else {
            hosts.join(",")
        };
        let db = self
            .config
            .get_dbname()
            .or(self.config.get_user())
            .unwrap_or("postgres");
        format!("{hosts}/{db}")
    }

    /// A pool of at most `size` connections. With `counting`, each new connection first
    /// takes a counter shard of its own ([`CLAIM_SHARD`]): the pool's sessions write the
    /// per-phase counts.
    pub(crate) fn pool(&self, size: usize, counting: bool) -> Result<Pool, OpenError> {
        let manager = Manager::from_config(
            self.config.clone(),
            self.tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let mut builder = Pool::builder(manager)
            .max_size(size)
            // The connection used last goes out first: a single producer keeps to one warm
            // server process instead of rotating through every pooled one (pushes one at a
            // time 3.5-3.6k/s first in, first out; 4.0-4.1k/s this way). This once stalled the
            // daemon's deliveries, because one session then ran most claims and kept a plan
            // the server had made while the queue was small; schema version 4 plans those
            // statements at every call, and no run has stalled since (42 in a row).
            .queue_mode(deadpool_postgres::QueueMode::Lifo)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(
                self.config
                    .get_connect_timeout()
                    .copied()
                    .unwrap_or(Duration::from_secs(10)),
            ))
            .wait_timeout(Some(Duration::from_secs(30)));
        if counting {
            builder = builder.post_create(Hook::async_fn(|client, _| {
                Box::pin(async move {
                    client
                        .batch_execute(&CLAIM_SHARD)
                        .await
                        .map_err(HookError::Backend)
                })
            }));
        }
        builder
            .build()
            .map_err(|e| OpenError::InvalidOptions(format!("cannot build the pool: {e}")))
    }
}

/// How many counter shards there are: the schema's `shard()` takes the session's shard
/// modulo this.
pub(crate) const COUNTER_SHARDS: i32 = 64;

/// Gives the session a counter shard no other hookspool session holds, if one of the
/// [`COUNTER_SHARDS`] is free: the first whose session advisory lock it gets (held until
/// the connection closes), else its process id's. The schema's `shard()` reads it from the
/// setting `hookspool.counter_shard`. Two sessions on one shard wait for each other's
/// commit on their counter row: with 16 clients running the push statement (pgbench),
/// shards drawn at random made 10.6k pushes/s, a shard per session 14.3k.
static CLAIM_SHARD: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT set_config('hookspool.counter_shard', coalesce(\
             (SELECT s FROM generate_series(0, {last}) AS s \
              WHERE pg_try_advisory_lock(hashtext('hookspool counter shard'), s) LIMIT 1), \
             pg_backend_pid() % {COUNTER_SHARDS})::text, false)",
        last = COUNTER_SHARDS - 1
    )
});

fn tls(options: &PostgresOptions) -> Result<MakeRustlsConnect, OpenError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &options.ca_file {
        let certs = CertificateDer::pem_file_iter(path).map_err(|e| {
            OpenError::InvalidOptions(format!("cannot read CA file {}: {e}", path.display()))
        })?;
        for cert in certs {
            let cert = cert.map_err(|e| {
                OpenError::InvalidOptions(format!("bad certificate in {}: {e}", path.display()))
            })?;
            roots.add(cert).map_err(|e| {
                OpenError::InvalidOptions(format!("bad certificate in {}: {e}", path.display()))
            })?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| OpenError::InvalidOptions(format!("TLS setup: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}
