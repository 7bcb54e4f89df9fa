//! `Backend::check` for the journal: reads every blob and note of a page of items and
//! checks it, quarantining nothing (that is `Store::verify`'s choice to make).

use std::sync::Arc;

use hookspool::{Checked, Key, Page, Phase, QueueId, Result, Selector};

use crate::backend::Inner;
use crate::read::{Blobs, read};
use crate::state::Loc;

/// Rounds of re-reading the blobs of items that moved while they were read (compaction
/// copies a blob elsewhere and may delete the segment read from): a failed read counts as
/// damage only where it is still the item's current location.
const ROUNDS: usize = 3;

/// Checks up to `limit` items of `queue` after `after`, in key order.
pub(crate) async fn check(
    inner: &Arc<Inner>,
    queue: &QueueId,
    after: Option<Key>,
    limit: usize,
) -> Result<Checked> {
    let mut page = Page::first(limit);
    page.after = after;
    let mut out = Checked::default();
    // Keys with the location of their blob or note, to read.
    let mut todo: Vec<(Key, Loc)> = Vec::new();
    // Quarantined items whose error is in their note.
    let mut noted: Vec<(Key, Loc)> = Vec::new();
    {
        let st = inner.state();
        let keys = st.select(queue, &Selector::Page(page))?;
        out.items = keys.len() as u64;
        out.last = (keys.len() == limit)
            .then(|| keys.last().copied())
            .flatten();
        for key in keys {
            let Some(header) = st.header(queue, key)? else {
                continue;
            };
            if header.item.phase == Phase::CORRUPT {
                if let Some(loc) = header.note {
                    noted.push((key, loc));
                } else {
                    let error = header.item.last_error.unwrap_or_default();
                    out.quarantined.push((key, error));
                }
            } else {
                todo.extend(header.locs().map(|loc| (key, loc)));
            }
        }
    }
    if !noted.is_empty() {
        let mut blobs = Blobs::default();
        read(inner, noted.iter().map(|(_, l)| *l).collect(), &mut blobs).await?;
        for (key, loc) in noted {
            let error = match blobs.note(loc) {
                Some(note) => note.error.unwrap_or_default(),
                None => blobs.damage(loc).map_or_else(String::new, |what| {
                    format!("its note is damaged too: {what}")
                }),
            };
            out.quarantined.push((key, error));
        }
    }
    for _ in 0..ROUNDS {
        if todo.is_empty() {
            break;
        }
        let mut blobs = Blobs::default();
        read(
            inner,
            todo.iter().map(|(_, loc)| *loc).collect(),
            &mut blobs,
        )
        .await?;
        let failed: Vec<(Key, Loc, String)> = todo
            .iter()
            .filter_map(|(key, loc)| blobs.damage(*loc).map(|what| (*key, *loc, what.to_owned())))
            .collect();
        todo.clear();
        let st = inner.state();
        for (key, loc, what) in failed {
            match st.header(queue, key)? {
                // Still where it was read: the damage is real.
                Some(h) if h.loc == loc => out.damaged.push((Some(key), what)),
                Some(h) if h.note == Some(loc) => {
                    out.damaged.push((Some(key), format!("its note: {what}")));
                }
                // Moved meanwhile: read it again where it is now.
                Some(h) if h.item.phase != Phase::CORRUPT => {
                    todo.extend(h.locs().map(|l| (key, l)));
                }
                // Gone, or quarantined by a call that read it meanwhile.
                _ => {}
            }
        }
    }
    for (key, _) in todo {
        out.damaged.push((
            Some(key),
            "its data kept moving while it was read; check again".to_owned(),
        ));
    }
    Ok(out)
}
