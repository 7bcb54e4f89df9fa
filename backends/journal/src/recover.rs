//! Opening a journal: the checkpoint, then every record after its position, a torn tail cut
//! off, damage reported (or skipped and counted), and segments nothing needs deleted.

use std::fs::OpenOptions;
use std::path::Path;

use hookspool::{Error, Result};

use crate::checkpoint;
use crate::log::{io_error, segment_name, segment_number, sync_dir};
use crate::record::{self, Body, Op, RECORD_HEADER, Read, SEGMENT_HEADER, SEGMENT_MAGIC};
use crate::state::{Loc, State};
use crate::{JournalOptions, RecoveryReport};

/// What recovery rebuilt.
pub(crate) struct Recovered {
    pub state: State,
    /// Size of the checkpoint file loaded (0 without one).
    pub checkpoint_bytes: u64,
    /// The segment replay started at: older segments hold only blobs.
    pub first_segment: u64,
    /// Where appending continues: (segment, offset), or `None` to start a new segment.
    pub tail: Option<(u64, u64)>,
    pub next_segment: u64,
    pub replayed_bytes: u64,
    pub report: RecoveryReport,
}

/// Every segment file's number, ascending.
pub(crate) fn segments_on_disk(dir: &Path) -> Result<Vec<u64>> {
    let mut segments: Vec<u64> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error)? {
        let entry = entry.map_err(io_error)?;
        if let Some(n) = entry.file_name().to_str().and_then(segment_number) {
            segments.push(n);
        }
    }
    segments.sort_unstable();
    Ok(segments)
}

pub(crate) fn recover(dir: &Path, options: &JournalOptions) -> Result<Recovered> {
    let checkpoint::Loaded {
        at: (first, start),
        mut state,
        bytes: checkpoint_bytes,
    } = checkpoint::load(dir)?.unwrap_or_else(|| checkpoint::Loaded {
        at: (1, SEGMENT_HEADER),
        state: State::default(),
        bytes: 0,
    });
    // Segment numbers fit a u32 (a slot's `segment`): a checkpoint that starts past that
    // is damaged, and a segment after it could not even be numbered.
    if u32::try_from(first).is_err() {
        return Err(Error::Corrupted {
            what: format!("journal checkpoint: its segment number {first} is out of range"),
        });
    }
    // Records start after a segment's header: a start inside it is damage (found by the
    // `journal_open` fuzz target: accepted, it opened once, and then the header read back as
    // a record once the segment existed).
    if start < SEGMENT_HEADER {
        return Err(Error::Corrupted {
            what: format!(
                "journal checkpoint: it starts at offset {start} of segment {first}, inside the \
                 segment's {SEGMENT_HEADER}-byte header"
            ),
        });
    }
    let all = segments_on_disk(dir)?;
    let segments = replayed_segments(&all, first, start)?;
    let mut report = RecoveryReport::default();
    let mut replayed_bytes = 0;
    let mut tail = None;
    let mut next_segment = segments.last().map_or(first, |n| n + 1);
    for (i, &n) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        let from = if n == first { start } else { SEGMENT_HEADER };
        let path = dir.join(segment_name(n));
        let Some(end) = replay_segment(&mut state, &path, n, from, last, options, &mut report)?
        else {
            // An empty last segment, removed: it is created again.
            next_segment = n;
            break;
        };
        replayed_bytes += end - from;
        if last {
            tail = Some((n, end));
        }
    }
    clean_old_segments(dir, &mut state, &all, first, options, &mut report)?;
    Ok(Recovered {
        state,
        checkpoint_bytes,
        first_segment: first,
        tail,
        next_segment,
        replayed_bytes,
        report,
    })
}

/// The segments replay reads: from `first` on, checked to be consecutive.
fn replayed_segments(all: &[u64], first: u64, start: u64) -> Result<Vec<u64>> {
    let segments: Vec<u64> = all.iter().copied().filter(|n| *n >= first).collect();
    if let Some(pair) = segments.windows(2).find(|w| w[1] != w[0] + 1) {
        return Err(Error::Corrupted {
            what: format!(
                "journal segment {} is missing (found {} then {})",
                pair[0] + 1,
                pair[0],
                pair[1]
            ),
        });
    }
    let missing = match segments.first() {
        Some(&s) => s != first,
        // Nothing to replay is fine only if the checkpoint ends at a segment's start.
        None => start > SEGMENT_HEADER,
    };
    if missing {
        return Err(Error::Corrupted {
            what: format!("journal segment {first} (the checkpoint's start) is missing"),
        });
    }
    Ok(segments)
}

/// Deletes segments before the checkpoint that hold no live item (left over from a cleanup
/// cut short), and checks that every segment holding live items is there.
fn clean_old_segments(
    dir: &Path,
    state: &mut State,
    all: &[u64],
    first: u64,
    options: &JournalOptions,
    report: &mut RecoveryReport,
) -> Result<()> {
    let live = state.live();
    let mut removed = false;
    for &n in all.iter().filter(|n| **n < first) {
        if u32::try_from(n).is_ok_and(|n| live.contains_key(&n)) {
            continue;
        }
        std::fs::remove_file(dir.join(segment_name(n))).map_err(io_error)?;
        removed = true;
    }
    if removed {
        sync_dir(dir, options.faults.as_ref()).map_err(io_error)?;
    }
    let missing: Vec<u32> = live
        .keys()
        .copied()
        .filter(|n| !all.contains(&u64::from(*n)))
        .collect();
    if let Some(n) = missing.iter().min() {
        let what = format!(
            "journal segment {n} holds live items but is missing ({} segment(s) in all)",
            missing.len()
        );
        if !options.skip_corrupt {
            return Err(Error::Corrupted { what });
        }
        // The items whose data is gone are dropped, and counted.
        for n in missing {
            for (queue, key, _) in state.in_segment(n) {
                report.skipped_items += state.remove(&queue, &[key])? as u64;
            }
        }
        tracing::warn!(%what, dropped = report.skipped_items,
            "hookspool-journal: opening anyway (skip_corrupt), items dropped");
    }
    Ok(())
}

/// Replays one segment from offset `from` onto `state`; returns where its written part ends
/// (`None` if the segment was an empty last one, removed). A torn tail of the last segment
/// is cut off.
fn replay_segment(
    state: &mut State,
    path: &Path,
    n: u64,
    from: u64,
    last: bool,
    options: &JournalOptions,
    report: &mut RecoveryReport,
) -> Result<Option<u64>> {
    let bytes = std::fs::read(path).map_err(io_error)?;
    if bytes.len() < SEGMENT_HEADER as usize
        || &bytes[..8] != SEGMENT_MAGIC
        || bytes[8..16] != n.to_le_bytes()
    {
        // Created but its header never made it: an empty last segment. Not one the
        // checkpoint starts past the header of, though: records up to its start were
        // written there, and appending again from the header would put new ones behind
        // the checkpoint's position, where the next open skips them (found by the
        // `journal_open` fuzz target).
        if last && from <= SEGMENT_HEADER && bytes.iter().skip(8).all(|b| *b == 0) {
            std::fs::remove_file(path).map_err(io_error)?;
            return Ok(None);
        }
        let why = if from > SEGMENT_HEADER {
            format!(" (the checkpoint starts at offset {from} of it)")
        } else {
            String::new()
        };
        return Err(Error::Corrupted {
            what: format!("journal segment {}: bad header{why}", path.display()),
        });
    }
    let segment = u32::try_from(n).map_err(|_| Error::Corrupted {
        what: format!("journal segment number {n} is out of range"),
    })?;
    let mut pos = usize::try_from(from).unwrap_or(usize::MAX);
    if pos > bytes.len() {
        return Err(Error::Corrupted {
            what: format!(
                "journal segment {n} ends at byte {}, before the checkpoint's position {pos}",
                bytes.len()
            ),
        });
    }
    // Where the written part ends: bytes after it are zeros (preallocated) or missing.
    let written_end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    let valid_at =
        |p: usize| p < bytes.len() && matches!(record::read(n, &bytes[p..]), Read::Record { .. });
    loop {
        let found = match record::read(n, &bytes[pos..]) {
            // Zeros where a record should be, yet valid records after them: damage (a lost
            // page), not the end of the log.
            Read::End if (pos + 1..written_end).any(valid_at) => Read::Bad {
                size: None,
                why: "zeros where a record should be, with records after them".to_owned(),
            },
            other => other,
        };
        match found {
            Read::End => break,
            Read::Record { body, size } => {
                let base = (pos + RECORD_HEADER) as u64;
                let applied = record::decode(body).and_then(|b| apply(state, b, segment, base));
                if let Err(e) = applied {
                    if !options.skip_corrupt {
                        return Err(Error::Corrupted {
                            what: format!(
                                "journal segment {n} offset {pos}: record does not replay: {e}"
                            ),
                        });
                    }
                    report.skipped_records += 1;
                } else {
                    report.replayed_records += 1;
                }
                pos += size;
            }
            Read::Bad { size, why } => {
                // Where valid records resume: right after this one if its length is intact,
                // else at the first later offset holding a valid record (the length field
                // itself may be what is damaged). None: nothing valid follows.
                let resume = size
                    .map(|s| pos + s)
                    .filter(|&p| valid_at(p))
                    .or_else(|| (pos + 1..written_end).find(|&p| valid_at(p)));
                if resume.is_none() && last {
                    // A torn tail: nothing valid follows in the last segment.
                    report.truncated_bytes = bytes.len() as u64 - pos as u64;
                    truncate_tail(path, pos as u64, options)?;
                    tracing::warn!(segment = n, offset = pos, %why,
                        "hookspool-journal: torn last record cut off");
                    break;
                }
                if !options.skip_corrupt {
                    return Err(Error::Corrupted {
                        what: format!(
                            "journal segment {n} offset {pos}: {why}; open with \
                             skip_corrupt to skip damaged records"
                        ),
                    });
                }
                tracing::warn!(segment = n, offset = pos, %why,
                    "hookspool-journal: damaged record skipped");
                report.skipped_records += 1;
                match resume {
                    Some(p) => pos = p,
                    // The rest of a segment that is not the last: later segments follow.
                    None => break,
                }
            }
        }
    }
    Ok(Some(pos as u64))
}

/// Cuts a torn last record off: zeros it where the segment was preallocated (so the space
/// stays allocated), truncates otherwise; then syncs.
fn truncate_tail(path: &Path, at: u64, options: &JournalOptions) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_error)?;
    let len = file.metadata().map_err(io_error)?.len();
    if options.preallocate && len <= options.segment_size {
        let zeros = vec![0u8; usize::try_from(len - at).unwrap_or(0)];
        std::os::unix::fs::FileExt::write_all_at(&file, &zeros, at).map_err(io_error)?;
    } else {
        file.set_len(at).map_err(io_error)?;
    }
    file.sync_all().map_err(io_error)
}

/// Applies one record whose body starts at `base` in `segment`. Replay reads no blob: it
/// needs only where they are.
fn apply(state: &mut State, body: Body, segment: u32, base: u64) -> Result<()> {
    let at = |blob: record::BlobAt| -> Result<Loc> {
        Ok(Loc {
            segment,
            offset: u32::try_from(base + u64::from(blob.at)).map_err(|_| Error::Corrupted {
                what: "a journal record lies beyond 4 GiB into its segment".to_owned(),
            })?,
            len: blob.len,
        })
    };
    match body {
        Body::Push { queue, now, items } => {
            state.push(&queue, &items, now, segment, base).map(drop)
        }
        Body::Relocate { queue, items } => {
            let moves = items
                .iter()
                .map(|r| Ok((r.key, r.from_segment, r.from_offset, at(r.blob)?)))
                .collect::<Result<Vec<_>>>()?;
            state.relocate(&queue, &moves);
            Ok(())
        }
        Body::Op(op) => replay(state, op),
        Body::Noted { op, notes } => {
            let (queue, updates, now) = match op {
                Op::Update {
                    queue,
                    key,
                    transition,
                    now,
                } => (queue, vec![(key, transition)], now),
                Op::UpdateMany {
                    queue,
                    updates,
                    now,
                } => (queue, updates, now),
                // `record::decode` lets no other operation carry notes.
                other => return replay(state, other),
            };
            let mut notes = notes.into_iter().peekable();
            for (i, (key, transition)) in updates.into_iter().enumerate() {
                let note = notes.next_if(|n| n.index as usize == i);
                // As in `Op::UpdateMany`: an entry that failed its precondition failed the
                // same way when logged (and a single update that failed was not logged).
                match state.update(&queue, key, transition, now, note.map(|n| n.tag)) {
                    Ok(_) => {
                        if let Some(n) = note {
                            state.set_note(&queue, key, at(n.blob)?);
                        }
                    }
                    Err(e) if !e.fails_one_entry() => return Err(e),
                    Err(_) => {}
                }
            }
            Ok(())
        }
    }
}

/// Applies one logged operation.
fn replay(state: &mut State, op: Op) -> Result<()> {
    match op {
        Op::CreateQueue(c) => state.create_queue(c),
        Op::UpdateQueue(c) => state.update_queue(c),
        Op::DeleteQueue(id) => {
            state.delete_queue(&id);
            Ok(())
        }
        Op::Pop { queue, selector } => {
            let keys = state.select(&queue, &selector)?;
            state.remove(&queue, &keys).map(drop)
        }
        Op::Reset(queue) => state.reset(&queue).map(drop),
        Op::Update {
            queue,
            key,
            transition,
            now,
        } => state.update(&queue, key, transition, now, None).map(drop),
        Op::Claim { queue, claim, now } => {
            state.sweep(&queue, now)?;
            let keys = state.claimable(&queue, claim.limit, now)?;
            state
                .lease(&queue, &keys, &claim.owner, claim.lease_until, now)
                .map(drop)
        }
        Op::Sweep { queue, now } => state.sweep(&queue, now).map(drop),
        Op::UpdateMany {
            queue,
            updates,
            now,
        } => {
            for (key, transition) in updates {
                // An entry that failed its precondition failed the same way when logged.
                match state.update(&queue, key, transition, now, None) {
                    Err(e) if !e.fails_one_entry() => return Err(e),
                    _ => {}
                }
            }
            Ok(())
        }
    }
}
