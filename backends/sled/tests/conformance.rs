//! Runs hookspool's conformance kit against `SledBackend`: every property of the `Backend`
//! contract as its own named test, plus the model-based test with reopens.

use std::sync::{Mutex, PoisonError};

use hookspool::conformance::Factory;
use hookspool_sled::SledBackend;
use tempfile::TempDir;

/// A new temp directory per backend, kept (and removed) with the factory, so that every
/// reopen of a backend finds its directory.
struct SledFactory {
    dirs: Mutex<Vec<TempDir>>,
}

impl SledFactory {
    fn new() -> Self {
        SledFactory {
            dirs: Mutex::new(Vec::new()),
        }
    }
}

impl Factory for SledFactory {
    type Backend = SledBackend;

    async fn create(&self) -> SledBackend {
        let dir = tempfile::tempdir().expect("temp dir");
        let backend = SledBackend::open(dir.path().join("data")).expect("open a new store");
        self.dirs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(dir);
        backend
    }

    async fn reopen(&self, backend: SledBackend) -> SledBackend {
        let path = backend.path().to_owned();
        // Closing first matters: the directory stays locked while a handle is alive.
        drop(backend);
        SledBackend::open(&path).expect("reopen the store")
    }

    fn durable(&self) -> bool {
        true
    }
}

hookspool::conformance_tests!(SledFactory::new());
