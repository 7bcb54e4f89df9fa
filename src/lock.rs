//! The data-directory lock: one process, and one open handle, per directory. For backend
//! authors whose store lives in a directory of its own.

use crate::error::{Error, Result};

/// Opens (creating it if need be) the lock file at `path` and takes an exclusive lock on it
/// (`flock`): one process, and one open handle, per data directory. For backend authors:
/// keep the returned file open for as long as the store is open.
///
/// A lock held by another handle gives [`Error::Locked`], after retrying for up to 100 ms:
/// while any thread of this process is spawning a child, the child briefly holds copies of
/// all open files (between `fork` and `exec`), so a lock released a moment ago can look
/// taken for that long.
///
/// # Errors
/// [`Error::Locked`]; [`Error::Backend`] (named `backend`) if the file cannot be opened or
/// locked.
pub fn lock_file(path: &std::path::Path, backend: &'static str) -> Result<std::fs::File> {
    let io = |e: std::io::Error| Error::Backend {
        backend,
        source: Box::new(e),
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(io)?;
    for attempt in 0..=20 {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if attempt < 20 => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(std::fs::TryLockError::WouldBlock) => break,
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
    }
    Err(Error::Locked {
        path: path.parent().unwrap_or(path).display().to_string(),
    })
}
