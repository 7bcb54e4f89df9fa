//! Runs hookspool's conformance kit against `PostgresBackend` on a real server: every
//! property of the `Backend` contract as its own named test, plus the model-based test with
//! reopens. Each backend gets a schema of its own on the test process's server (see
//! `hookspool_postgres::testing`).

use hookspool::conformance::Factory;
use hookspool_postgres::{PostgresBackend, PostgresOptions, testing};

struct PostgresFactory;

impl Factory for PostgresFactory {
    type Backend = PostgresBackend;

    async fn create(&self) -> PostgresBackend {
        PostgresBackend::open(testing::options())
            .await
            .expect("open a backend on a fresh schema")
    }

    async fn reopen(&self, backend: PostgresBackend) -> PostgresBackend {
        let options = PostgresOptions::new(testing::TestServer::shared().url())
            .schema(backend.schema())
            .pool_size(4);
        drop(backend);
        PostgresBackend::open(options)
            .await
            .expect("reopen the same schema")
    }

    fn durable(&self) -> bool {
        true
    }
}

hookspool::conformance_tests!(PostgresFactory);
