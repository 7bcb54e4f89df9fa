//! `update_many`, the path every ack, nack and delivery outcome takes, kept short: its
//! record is encoded before the state lock is taken (as a push's is), so that under the
//! lock there is only the index to change and the record to append.
//!
//! - Updates that write no note (acks; moves that set neither metadata nor an error) are
//!   [`settle_plain`].
//! - Updates that write notes are [`UpdateMany`]: their record is encoded beforehand with
//!   each note holding what its update sets ([`PreEncoded`]); under the lock, that record
//!   is used if no update has to carry anything over from its item (see `calls`), which is
//!   the case for the delivery loop's settles (they set both). Otherwise the step reads the
//!   notes to carry over from and encodes the record under the lock (`calls::apply_updates`).

use std::collections::HashSet;

use hookspool::{Action, Error, Key, QueueId, Result, Timestamp, Transition};

use crate::backend::Inner;
use crate::calls::{
    Appended, Carry, Logged, apply_updates, carried, damaged_items, headers, place_notes,
    quarantine, writes_note,
};
use crate::read::{Blobs, Call, Step};
use crate::record::{self, NOTE_ERROR, NOTE_META, Note, NoteAt, Op};
use crate::state::{Loc, State};

/// `update_many` of updates that write no notes (acks, and moves that set neither metadata
/// nor an error): encoded before the state lock is taken, applied and appended under it,
/// reading nothing.
pub(crate) fn settle_plain(
    inner: &Inner,
    queue: &QueueId,
    updates: Vec<(Key, Transition)>,
    now: Timestamp,
) -> Result<(Vec<Result<()>>, Option<Appended>)> {
    let body = record::encode(&Op::UpdateMany {
        queue: queue.clone(),
        updates: updates.clone(),
        now,
    })?;
    let mut st = inner.state();
    if !st.has_queue(queue) {
        return Err(Error::QueueNotFound(queue.clone()));
    }
    let mut results = Vec::with_capacity(updates.len());
    let mut gone = Vec::new();
    for (key, transition) in updates {
        let removes = matches!(transition.action, Action::Remove);
        let result = st.update(queue, key, transition, now, None).map(|h| {
            if removes {
                gone.extend(h.stored());
            }
        });
        results.push(result);
    }
    inner.freed(&gone);
    if !results.iter().any(Result::is_ok) {
        return Ok((results, None));
    }
    let lsn = inner.append(&body)?;
    Ok((results, Some((lsn, body.len()))))
}

/// The record of an `update_many` encoded before the lock, each note holding only what its
/// update sets: good as long as no update has something to carry over.
pub(crate) struct PreEncoded {
    body: Vec<u8>,
    placed: Vec<NoteAt>,
    /// The updates as logged (without metadata and errors), with the tag of each one's note.
    updates: Vec<(Key, Transition, Option<u8>)>,
}

impl PreEncoded {
    /// `None` if an item has two updates that write notes (the second may carry over from
    /// the first: only the step can tell).
    pub(crate) fn new(
        queue: &QueueId,
        updates: &[(Key, Transition)],
        now: Timestamp,
    ) -> Result<Option<PreEncoded>> {
        let mut noted_keys = HashSet::new();
        let mut logged = Vec::with_capacity(updates.len());
        let mut notes: Vec<(u32, Note)> = Vec::new();
        for (i, (key, t)) in updates.iter().enumerate() {
            let mut t = t.clone();
            let note = match &mut t.action {
                Action::Move(m) if m.metadata.is_some() || m.error.is_some() => Some(Note {
                    metadata: m.metadata.take(),
                    error: m.error.take(),
                }),
                _ => None,
            };
            let tag = note.as_ref().map(Note::tag);
            if let Some(note) = note {
                if !noted_keys.insert(*key) {
                    return Ok(None);
                }
                let index =
                    u32::try_from(i).map_err(|_| Error::invalid("too many updates in one call"))?;
                notes.push((index, note));
            }
            logged.push((*key, t, tag));
        }
        let op = Op::UpdateMany {
            queue: queue.clone(),
            updates: logged.iter().map(|(k, t, _)| (*k, t.clone())).collect(),
            now,
        };
        let refs: Vec<(u32, &Note)> = notes.iter().map(|(i, n)| (*i, n)).collect();
        let (body, placed) = record::encode_noted(&op, &refs)?;
        Ok(Some(PreEncoded {
            body,
            placed,
            updates: logged,
        }))
    }

    /// Whether the record holds as encoded: no update sets only one of an item's metadata
    /// and error while the item has the other.
    fn holds(&self, st: &State, queue: &QueueId) -> bool {
        self.updates.iter().all(|(key, _, tag)| {
            let Some(tag) = tag else { return true };
            let Ok(Some(h)) = st.header(queue, *key) else {
                return true; // the update fails, and its note is never placed
            };
            let keeps_metadata = tag & NOTE_META == 0 && h.replaced_metadata;
            let keeps_error = tag & NOTE_ERROR == 0 && h.has_error;
            !keeps_metadata && !keeps_error
        })
    }

    /// Applies the updates and appends the record; places the notes of those that applied.
    fn apply(
        self,
        inner: &Inner,
        st: &mut State,
        queue: &QueueId,
        now: Timestamp,
    ) -> Result<(Vec<Result<()>>, Option<Appended>)> {
        let mut results = Vec::with_capacity(self.updates.len());
        let mut gone = Vec::new();
        let keys: Vec<Key> = self.updates.iter().map(|(k, _, _)| *k).collect();
        for (key, transition, tag) in self.updates {
            let removes = matches!(transition.action, Action::Remove);
            let old_note = tag.and_then(|_| st.note_of(queue, key));
            let result = st.update(queue, key, transition, now, tag).map(|h| {
                if removes {
                    gone.extend(h.stored());
                }
                gone.extend(old_note);
            });
            results.push(result);
        }
        inner.freed(&gone);
        if !results.iter().any(Result::is_ok) {
            return Ok((results, None));
        }
        let (lsn, segment, offset) = inner.log.append(&self.body)?;
        let applied = |i: usize| results.get(i).is_some_and(Result::is_ok);
        place_notes(st, queue, (segment, offset), &self.placed, &keys, applied)?;
        Ok((results, Some((lsn, self.body.len()))))
    }
}

/// `update_many` with notes to write: the pre-encoded record if it holds, else one step
/// that reads first the notes an update carries over from.
pub(crate) struct UpdateMany {
    pub queue: QueueId,
    pub updates: Vec<(Key, Transition)>,
    pub now: Timestamp,
    pub pre: Option<PreEncoded>,
}

impl UpdateMany {
    pub(crate) fn new(
        queue: &QueueId,
        updates: Vec<(Key, Transition)>,
        now: Timestamp,
    ) -> Result<UpdateMany> {
        debug_assert!(updates.iter().any(|(_, t)| writes_note(t)));
        Ok(UpdateMany {
            pre: PreEncoded::new(queue, &updates, now)?,
            queue: queue.clone(),
            updates,
            now,
        })
    }
}

impl Call for UpdateMany {
    type Out = (Vec<Result<()>>, Option<Appended>);

    fn step(
        &mut self,
        inner: &Inner,
        st: &mut State,
        blobs: &mut Blobs,
    ) -> Result<Step<Self::Out>> {
        if !st.has_queue(&self.queue) {
            return Err(Error::QueueNotFound(self.queue.clone()));
        }
        if let Some(pre) = self.pre.take_if(|p| p.holds(st, &self.queue)) {
            return pre.apply(inner, st, &self.queue, self.now).map(Step::Done);
        }
        self.pre = None;
        let need = carried(st, &self.queue, &self.updates);
        let missing: Vec<Loc> = need.iter().copied().filter(|l| !blobs.has(*l)).collect();
        if !missing.is_empty() {
            return Ok(Step::Need(missing));
        }
        let damaged: Vec<(Loc, String)> = need
            .iter()
            .filter_map(|l| blobs.damage(*l).map(|what| (*l, what.to_owned())))
            .collect();
        if !damaged.is_empty() {
            let keys: Vec<Key> = self.updates.iter().map(|(k, _)| *k).collect();
            let bad = damaged_items(&headers(st, &self.queue, &keys), &damaged);
            quarantine(inner, st, &self.queue, &bad, blobs)?;
            blobs.forget(&damaged);
            return Ok(Step::Need(Vec::new()));
        }
        let updates = std::mem::take(&mut self.updates);
        let read = |loc: Loc| blobs.note(loc);
        let (results, appended) = apply_updates(
            inner,
            st,
            &self.queue,
            updates,
            self.now,
            &read,
            Carry::Required,
            Logged::Many,
        )?;
        Ok(Step::Done((
            results.into_iter().map(|r| r.map(drop)).collect(),
            appended,
        )))
    }
}
