//! Writes the seed inputs of the journal fuzz targets (`fuzz/`) from real journal
//! directories:
//! `seeds/journal_open/` (whole directories in that target's input layout),
//! `seeds/journal_record/` (a segment's records, and single record bodies) and
//! `seeds/journal_checkpoint/` (checkpoint files). Every kind of record is in them: queue
//! changes, pushes with metadata and delays, claims, batched and single settles with errors
//! and replaced metadata, custom phases, pops, sweeps, resets and a compaction's
//! relocations.
//!
//! `cargo run -p hookspool-journal --example fuzz_seeds` replaces those files in
//! `fuzz/seeds/` (the other targets' seeds are written by hand).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use hookspool::{
    Expect, ManualClock, Move, NewItem, Phase, QueueConfig, QueueId, Retention, Store, Timestamp,
    Transition,
};
use hookspool_journal::fuzzing::{decode_body, read_record};
use hookspool_journal::{JournalBackend, JournalOptions};

/// `journal_open`'s flags: checksums and headers are made to hold.
const OPEN_FLAGS: u8 = 2 | 4 | 8;
/// Largest file the `journal_open` layout holds (a `u16` length).
const MAX_FILE: usize = u16::MAX as usize;
/// Record bodies written as seeds of their own.
const MAX_BODIES: usize = 12;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let tmp = std::env::temp_dir().join(format!("hookspool-seeds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    // Three directories: the log alone (no checkpoint ever), checkpoints with the log after
    // them, and a clean close (a checkpoint, compacted segments).
    for (name, checkpoints, clean_close) in [
        ("log-only", false, false),
        ("checkpoint-and-log", true, false),
        ("closed", true, true),
    ] {
        let dir = tmp.join(name);
        let options = JournalOptions {
            segment_size: 4 << 10,
            preallocate: false,
            checkpoint_on_close: clean_close,
            ..JournalOptions::default()
        };
        let backend = JournalBackend::open_with(&dir, options)?;
        runtime.block_on(write_history(backend, checkpoints))?;
        write_seeds(&dir, &seeds, name)?;
    }
    std::fs::remove_dir_all(&tmp)?;
    Ok(())
}

/// A history that writes every kind of record (relocations only with `checkpoints`).
async fn write_history(backend: JournalBackend, checkpoints: bool) -> Result<()> {
    let clock = ManualClock::new(Timestamp(1_700_000_000_000));
    let store = Store::new(backend.clone()).with_clock(clock.clone());
    let orders = QueueId::new("orders")?;
    let events = QueueId::new("events")?;
    store
        .create_queue(
            QueueConfig::new(orders.clone())
                .with_ttl(Duration::from_mins(1))
                .with_metadata("owner", "fuzz"),
        )
        .await?;
    store
        .create_queue(QueueConfig::new(events.clone()).with_retention(Retention::Remove))
        .await?;
    let batch: Vec<NewItem> = (0..40)
        .map(|i| {
            let item = NewItem::new(format!("{{\"id\":{i},\"pad\":\"{}\"}}", "x".repeat(40)));
            if i % 3 == 0 {
                item.with_metadata("trace", format!("t{i}"))
            } else if i % 5 == 0 {
                item.not_before(Timestamp(1_700_000_100_000))
            } else {
                item
            }
        })
        .collect();
    store.push_batch(&orders, batch).await?;
    store.push(&events, NewItem::new(b"e1".to_vec())).await?;
    clock.advance(Duration::from_secs(1));
    let claimed = store
        .claim(&orders, "worker-1", 6, Duration::from_secs(30))
        .await?;
    store.ack(&orders, claimed[0].key, "worker-1").await?;
    store
        .nack(
            &orders,
            claimed[1].key,
            "worker-1",
            Timestamp(1_700_000_050_000),
            "timeout",
        )
        .await?;
    store
        .kill(&orders, claimed[2].key, "worker-1", "bad payload")
        .await?;
    store
        .ack_many(&orders, &[claimed[3].key, claimed[4].key], "worker-1")
        .await?;
    let mut metadata = BTreeMap::new();
    metadata.insert("replaced".to_owned(), "yes".to_owned());
    let archived = Phase::new("archived")?;
    store
        .update(
            &orders,
            claimed[5].key,
            Transition {
                expect: Expect::default(),
                action: Move::to(archived).metadata(metadata).into(),
            },
        )
        .await?;
    if checkpoints {
        backend.checkpoint().await?;
    }
    store.pop(&orders).await?;
    store.delete(&orders, 20).await?;
    clock.advance(Duration::from_secs(45));
    store.sweep(&orders).await?;
    store
        .claim(&events, "worker-2", 1, Duration::from_secs(5))
        .await?;
    store.reset(&events).await?;
    store
        .update_queue(QueueConfig::new(events.clone()).with_metadata("paused", "no"))
        .await?;
    let scratch = QueueId::new("scratch")?;
    store
        .create_queue(QueueConfig::new(scratch.clone()))
        .await?;
    store.push(&scratch, NewItem::new(b"gone".to_vec())).await?;
    store.delete_queue(&scratch).await?;
    // Most of the first segments' items go, so that a checkpoint compacts them
    // (relocation records).
    for key in 8..=36 {
        let _ = store.delete(&orders, key).await;
    }
    if checkpoints {
        backend.checkpoint().await?;
    }
    store.push(&events, NewItem::new(b"after".to_vec())).await?;
    Ok(())
}

/// Writes the seeds of one journal directory.
fn write_seeds(dir: &Path, seeds: &Path, name: &str) -> Result<()> {
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file = entry.file_name().to_string_lossy().into_owned();
        if file == "checkpoint" || file.starts_with("journal-") {
            files.push((file, std::fs::read(entry.path())?));
        }
    }
    files.sort();

    let mut open = vec![OPEN_FLAGS];
    for (file, bytes) in &files {
        let tag = if file == "checkpoint" {
            0
        } else {
            let n: u8 = file
                .trim_start_matches("journal-")
                .trim_end_matches(".log")
                .parse()?;
            n
        };
        // Preallocated zeros at the end are left out: a shorter file reads the same.
        let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
        let bytes = &bytes[..end.min(MAX_FILE)];
        open.push(tag);
        open.extend_from_slice(&u16::try_from(bytes.len())?.to_le_bytes());
        open.extend_from_slice(bytes);
    }
    write(seeds, "journal_open", name, &open)?;

    if let Some((_, checkpoint)) = files.iter().find(|(f, _)| f == "checkpoint") {
        write(seeds, "journal_checkpoint", name, checkpoint)?;
    }
    // Segment 1's records (the record target reads them as segment 1's), and its
    // bodies one by one.
    if let Some((_, segment)) = files.iter().find(|(f, _)| f == "journal-0000000001.log") {
        let records = &segment[16..];
        let end = records.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
        write(
            seeds,
            "journal_record",
            &format!("{name}-records"),
            &records[..end],
        )?;
        let mut pos = 0;
        let mut bodies = 0;
        while let Ok(Some((body, size))) = read_record(1, &records[pos..]) {
            let body = &records[pos..][body];
            if bodies < MAX_BODIES && decode_body(body).is_ok() {
                write(
                    seeds,
                    "journal_record",
                    &format!("{name}-body-{bodies}"),
                    body,
                )?;
                bodies += 1;
            }
            pos += size;
        }
    }
    Ok(())
}

fn write(seeds: &Path, target: &str, name: &str, bytes: &[u8]) -> Result<()> {
    let dir = seeds.join(target);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(name), bytes)?;
    println!("{target}/{name}: {} bytes", bytes.len());
    Ok(())
}
