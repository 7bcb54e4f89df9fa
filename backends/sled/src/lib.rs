//! hookspool-sled: a durable [`hookspool::Backend`] on [sled](https://docs.rs/sled/0.34.7)
//! 0.34.7, in a data directory of its own.
//!
//! - Every operation is one atomic sled batch: a crash leaves all of it or none of it.
//! - `claim`, `count` and `sweep` use indexes and counters kept in the same batches, so
//!   their cost does not grow with the size of the queue.
//! - Item records carry a format version and a CRC-32: a damaged record is reported as
//!   [`hookspool::Error::Corrupted`], never returned as data.
//! - Durability is hookspool's one named setting ([`Durability`], re-exported here): by
//!   default a call returns only once its write has been fdatasync'ed, with concurrent
//!   callers sharing one sync (group commit).
//! - [`SledBackend::detect`] tells whether a directory holds a sled store, so that a tool
//!   can pick the backend a directory was written with.
//!
//! It is written against hookspool's public API only, as any outside backend would be, and
//! passes hookspool's conformance kit.
//!
//! It is not a network service, and one directory is used by one process at a time (see
//! *Locking*).
//!
//! # Example
//!
//! ```
//! use hookspool::{NewItem, QueueConfig, QueueId, Store};
//! use hookspool_sled::SledBackend;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> hookspool::Result<()> {
//! # let tmp = tempfile::tempdir().unwrap();
//! # let dir = tmp.path().join("data");
//! let store = Store::new(SledBackend::open(&dir)?);
//! let orders = QueueId::new("orders")?;
//! store.create_queue(QueueConfig::new(orders.clone())).await?;
//! // Returns once the item is on the device (Durability::Immediate).
//! store.push(&orders, NewItem::new(br#"{"id":1}"#.to_vec())).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Durability
//!
//! sled 0.34's own `flush()` ends, on Linux, in `sync_file_range`: it starts and waits for
//! the write-back of the pages it wrote, but it does not flush the device's write cache or
//! persist the file's size, so it does not survive a power loss on its own (sled's
//! background thread also calls `fsync` every 500 ms, which we do not rely on). A **sync**
//! in this crate is therefore:
//!
//! 1. `sled::Db::flush()`: every write applied so far is written to sled's files;
//! 2. `fdatasync` of every file in `blobs/` that is new or has grown since our last sync
//!    (sled stores values over about 128 KiB there and never syncs them), then `fsync` of
//!    the `blobs/` directory if a file in it is new;
//! 3. `fdatasync` of sled's data file `db`, through a file handle of our own.
//!
//! Opening a store also syncs the `conf` file and the data directory itself (and its
//! parent if the directory was just created), so the directory entries of `db`, `conf`,
//! `blobs/` and sled's recovery snapshot `snap.*` are durable before `open` returns.
//!
//! - [`Durability::Immediate`] (default): a mutating call (`create_queue`, `push`, `pop`,
//!   `update`, `claim`, …) returns `Ok` only after a sync that started after its write was
//!   applied has completed. Its effect survives `kill -9` and a power loss. **Group
//!   commit**: writes are numbered; a caller that finds no sync running syncs everything
//!   written so far and wakes every caller whose write it covered; callers arriving
//!   meanwhile wait and are covered by that sync or the next one. So N concurrent callers
//!   cost about two syncs, not N.
//! - [`Durability::Periodic`] `{ interval }`: a mutating call returns once step 1 (sled's
//!   flush, which writes to the data file and waits for the write-back with
//!   `sync_file_range`) has covered its write, shared among concurrent callers like the
//!   syncs. Its effect survives `kill -9`, but not necessarily a power loss. A background
//!   thread runs a full sync every `interval` while something is unsynced;
//!   [`hookspool::Backend::sync`] runs one at once and returns when every call that
//!   returned before it is durable. A power loss can lose the calls of the last `interval`
//!   (plus the duration of one sync).
//!
//! Under both settings, dropping the last handle syncs before it closes the store, and
//! reads never wait for a sync: a reader may see a write whose call has not returned yet
//! (and that a crash could still take away).
//!
//! What is **not** covered: any guarantee ends where the OS, file system or device ignores
//! `fdatasync` (for example a disk with a volatile write cache that does not honour cache
//! flushes). sled's own crash recovery is trusted: a bug in it is not detected except
//! where it damages records, which then fail our checksums. Directory entries that sled
//! creates or renames after `open` (blob files, which we sync with their directory) are
//! the only metadata sled changes while running; its log segments live inside `db`.
//!
//! **Poisoning.** If a sync fails (or sled fails to apply a batch), the backend can no
//! longer tell what is on the device: that call and every later one fail with
//! [`hookspool::Error::Poisoned`]. Reopen the directory to continue from what is on disk.
//!
//! **Cancellation.** Work runs on tokio's blocking pool: a dropped future does not stop a
//! call that has started; it completes (atomically) without anyone waiting for it.
//!
//! # Key layout
//!
//! Everything lives in one sled tree named `hookspool`. Keys start with a tag byte; `id`
//! and `phase` are length-prefixed (one byte of length, then the bytes), so one queue's
//! keys are never a prefix of another's; integers are big-endian u64, so byte order is
//! numeric order.
//!
//! | key                                   | value                                   |
//! |---------------------------------------|-----------------------------------------|
//! | `v`                                   | key layout version (1)                  |
//! | `q` id                                | queue settings (record)                 |
//! | `n` id                                | next key to assign (u64)                |
//! | `i` id key                            | item (record)                           |
//! | `p` id phase key                      | empty: phase index (paging, reset)      |
//! | `d` id not_before key                 | empty: pending items in claim order     |
//! | `e` id created_at key                 | empty: pending items by age (TTL)       |
//! | `l` id lease_until key                | empty: in-flight items by lease expiry  |
//! | `c` id phase                          | item count of the phase (u64), if > 0   |
//!
//! # Record format
//!
//! Items and queue settings are stored as `[FORMAT_VERSION: u8][CRC-32 of body: u32 LE]
//! [body]`, the body being bincode 2 (serde, standard configuration, lengths limited to
//! [`MAX_RECORD_BODY`]). A record with another version, a wrong checksum, a body that does
//! not decode, or trailing bytes is [`hookspool::Error::Corrupted`] naming the queue and
//! key; other items stay readable, and `reset` or `delete_queue` remove damaged records.
//! Queue metadata, a callback channel's signing secret included, is stored in plain text in
//! the settings record. Settings written before the secret moved into the metadata kept it
//! in a field of its own; that slot is still part of the layout (written empty), and a
//! secret found there is read into the metadata entry `secret`.
//!
//! # Locking
//!
//! [`SledBackend::open`] takes an exclusive `flock` on `<dir>/hookspool.lock` before it
//! opens sled. If another process, or another live handle in this process, holds it, open
//! fails at once with [`hookspool::Error::Locked`]. Clones of a handle share one store;
//! dropping the last clone syncs, closes sled, waits (at most a few seconds) until sled
//! has released its own lock on `db`, then releases ours, so the directory can be opened
//! again at once, in this process or another.
//!
//! # Limits
//!
//! - One process per directory; sled 0.34's on-disk format is not stable across sled
//!   versions, which is why the version is pinned.
//! - An item record (payload, metadata, error text) is at most [`MAX_RECORD_BODY`]
//!   (64 MiB); `push` refuses a larger item with `InvalidInput`, storing nothing.
//! - `reset` and `delete_queue` remove a queue's entries in one batch built in memory:
//!   their time and memory grow with the number of items removed. `pop` and page `fetch`
//!   with an `offset` read the skipped entries.
//! - Mutations are serialized by one writer lock (sled itself is not the bottleneck at
//!   this scale); the throughput of `Immediate` is bounded by the device's sync latency,
//!   shared among concurrent callers.
//! - sled's page cache defaults here to [`DEFAULT_CACHE_CAPACITY`] (128 MiB).

mod backend;
mod durable;
mod keys;
mod record;
mod tx;

pub use backend::{DEFAULT_CACHE_CAPACITY, LOCK_FILE, SledBackend, SledOptions};
/// When a mutating call returns: hookspool's one durability setting, re-exported here (see
/// [Durability](#durability) above for what each value means for sled).
pub use hookspool::Durability;
pub use record::{FORMAT_VERSION, MAX_RECORD_BODY, RECORD_HEADER_LEN, decode_item, encode_item};
