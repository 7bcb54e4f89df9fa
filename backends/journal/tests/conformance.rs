//! Runs hookspool's conformance kit against `JournalBackend`: every property of the `Backend`
//! contract as its own named test, plus the model-based test with reopens; once with the
//! default options and once with tiny segments and checkpoints, so that rotation, checkpoint
//! and segment deletion happen inside the kit's operation sequences.

use std::sync::{Mutex, PoisonError};

use hookspool::conformance::Factory;
use hookspool_journal::{JournalBackend, JournalOptions};
use tempfile::TempDir;

/// A new temp directory per backend, kept (and removed) with the factory.
struct JournalFactory {
    options: JournalOptions,
    dirs: Mutex<Vec<TempDir>>,
}

impl JournalFactory {
    fn new(options: JournalOptions) -> Self {
        JournalFactory {
            options,
            dirs: Mutex::new(Vec::new()),
        }
    }
}

impl Factory for JournalFactory {
    type Backend = JournalBackend;

    async fn create(&self) -> JournalBackend {
        let dir = tempfile::tempdir().expect("temp dir");
        let backend = JournalBackend::open_with(dir.path().join("data"), self.options.clone())
            .expect("open a new store");
        self.dirs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(dir);
        backend
    }

    async fn reopen(&self, backend: JournalBackend) -> JournalBackend {
        let path = backend.path().to_owned();
        // Closing first matters: the directory stays locked while a handle is alive.
        drop(backend);
        JournalBackend::open_with(&path, self.options.clone()).expect("reopen the store")
    }

    fn durable(&self) -> bool {
        true
    }
}

mod defaults {
    use super::{JournalFactory, JournalOptions};

    hookspool::conformance_tests!(JournalFactory::new(JournalOptions::default()));
}

mod tiny_segments {
    use super::{JournalFactory, JournalOptions};

    hookspool::conformance_tests!(JournalFactory::new(JournalOptions {
        segment_size: 2048,
        preallocate: false,
        checkpoint_bytes: 3000,
        ..JournalOptions::default()
    }));
}
