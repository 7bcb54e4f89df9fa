//! The calls that read item data or write notes, as [`Call`]s that `read::run` drives:
//! `fetch`, `pop`, `claim`, `update` and `update_many`; and what they share: filling items
//! from their blobs and notes, applying updates (with the notes they write), and the
//! quarantine of items whose data is damaged.
//!
//! # Notes
//!
//! An update that sets an item's metadata or error writes them in a *note*, a blob of its
//! record that the item's slot then points at, instead of keeping them in memory: a
//! delivery's attempt log costs its index slot, however long it is retained. The note holds
//! both, as they are after the update, so that an item has at most one. An update that
//! sets one of them while the item's current note holds the other carries that one over,
//! which needs the current note read first: `update` reads it with the item's blob;
//! `update_many` reads it only then (an ack that sets neither, or a settle that sets both,
//! reads nothing).

use std::collections::HashMap;

use hookspool::{
    Action, Claim, Error, Expect, Item, Key, Move, Phase, QueueId, Result, Selector, Timestamp,
    Transition, check_expect,
};

use crate::backend::{Inner, segment_u32};
use crate::read::{Blob, Blobs, Call, Step, Taken, fill};
use crate::record::{self, Note, NoteAt, Op, RECORD_HEADER};
use crate::state::{Header, Loc, State};

/// The headers of `keys`, selected under the same lock (so all there).
pub(crate) fn headers(st: &State, queue: &QueueId, keys: &[Key]) -> Vec<Header> {
    keys.iter()
        .filter_map(|k| st.header(queue, *k).ok().flatten())
        .collect()
}

/// Whether an item is quarantined: its blob is known to be damaged, so it is not read.
fn quarantined(header: &Header) -> bool {
    header.item.phase == Phase::CORRUPT
}

/// The blobs and notes to read for `headers`, in order (see [`Header::locs`]).
fn locs(headers: &[Header]) -> Vec<Loc> {
    headers.iter().flat_map(Header::locs).collect()
}

/// The items of `headers`, with the blobs and notes [`locs`] named, in order.
fn fill_all(headers: Vec<Header>, found: Vec<Blob>) -> Vec<Item> {
    let mut found = found.into_iter();
    headers
        .into_iter()
        .map(|h| {
            let blob = if quarantined(&h) { None } else { found.next() };
            let note = if h.note.is_some() {
                found.next().map(Note::from_blob)
            } else {
                None
            };
            fill(h, blob, note)
        })
        .collect()
}

/// The blobs and notes of `headers`, in order ([`locs`]); or what to read first (nothing,
/// once the items found damaged are quarantined: the step starts over without them).
fn take_all(
    inner: &Inner,
    st: &mut State,
    queue: &QueueId,
    headers: &[Header],
    blobs: &mut Blobs,
) -> Result<std::result::Result<Vec<Blob>, Vec<Loc>>> {
    match blobs.take(&locs(headers))? {
        Taken::All(found) => Ok(Ok(found)),
        Taken::Missing(missing) => Ok(Err(missing)),
        Taken::Damaged(damaged) => {
            let bad = damaged_items(headers, &damaged);
            quarantine(inner, st, queue, &bad, blobs)?;
            Ok(Err(Vec::new()))
        }
    }
}

/// The keys (with `updated_at`) and damage of the headers whose blobs or notes are
/// `damaged`, each item once: an item is damaged by what it needs read ([`Header::locs`]),
/// so a quarantined item's blob does not count. Every item that needs a damaged location
/// is named, not only the first: a damaged store may point two items at the same bytes,
/// and naming only one (found by `journal_open`: an already quarantined item whose blob
/// sat where another item's note was) left the other one to be found damaged again on
/// every round, until the call gave up with an internal error.
pub(crate) fn damaged_items(
    headers: &[Header],
    damaged: &[(Loc, String)],
) -> Vec<(Key, Timestamp, String)> {
    let mut out: Vec<(Key, Timestamp, String)> = Vec::new();
    for h in headers {
        if out.iter().any(|(k, _, _)| *k == h.item.key) {
            continue;
        }
        let Some((loc, what)) = damaged.iter().find(|(loc, _)| h.locs().any(|l| l == *loc)) else {
            continue;
        };
        let what = if h.note == Some(*loc) && h.loc != *loc {
            format!("its note: {what}")
        } else {
            what.clone()
        };
        out.push((h.item.key, h.item.updated_at, what));
    }
    out
}

/// Quarantines the items whose blobs or notes a step found damaged: each moves to
/// [`Phase::CORRUPT`] with the damage as its error (a lease, if any, is dropped), in one
/// record, so the move replays and is durable with the next sync (a call that appends
/// after it waits for it). Its time is the latest `updated_at` of those items: a backend
/// does not read the clock. Replaced metadata is carried over from the item's note if that
/// was read whole, and is lost with it otherwise. Then the step starts over, without them.
pub(crate) fn quarantine(
    inner: &Inner,
    st: &mut State,
    queue: &QueueId,
    damaged: &[(Key, Timestamp, String)],
    blobs: &Blobs,
) -> Result<()> {
    let now = damaged.iter().map(|(_, t, _)| *t).max().unwrap_or_default();
    let updates: Vec<(Key, Transition)> = damaged
        .iter()
        .map(|(key, _, what)| {
            tracing::error!(%queue, key, damage = %what, "hookspool-journal: item quarantined");
            let to_corrupt = Move {
                phase: Phase::CORRUPT,
                not_before: None,
                error: Some(format!("quarantined: {what}")),
                metadata: None,
            };
            (
                *key,
                Transition {
                    expect: Expect::default(),
                    action: Action::Move(to_corrupt),
                },
            )
        })
        .collect();
    // An entry that fails (none can: each item was just read where the state places it)
    // fails alone, and replay sees the same.
    let read = |loc: Loc| blobs.note(loc);
    let (results, _) = apply_updates(
        inner,
        st,
        queue,
        updates,
        now,
        &read,
        Carry::IfRead,
        Logged::Many,
    )?;
    for (result, (key, _, _)) in results.iter().zip(damaged) {
        if let Err(e) = result {
            tracing::warn!(%queue, key, error = %e, "hookspool-journal: quarantine not applied");
        }
    }
    Ok(())
}

/// How [`apply_updates`] treats a note it must carry over but was not given.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Carry {
    /// It is a bug in the caller, which reads first: the call fails, nothing changed.
    Required,
    /// The note is damaged (a quarantine): what it held is lost.
    IfRead,
}

/// Whether applying `t` to the item of `h` carries over part of its note: `t` sets its
/// metadata or its error but not both, and the note holds the other.
fn carries(h: &Header, t: &Transition) -> bool {
    match &t.action {
        Action::Move(m) if h.note.is_some() => match (&m.metadata, &m.error) {
            (Some(_), None) => h.has_error,
            (None, Some(_)) => h.replaced_metadata,
            _ => false,
        },
        _ => false,
    }
}

/// Whether `t` writes a note: a move that sets metadata or an error.
pub(crate) fn writes_note(t: &Transition) -> bool {
    matches!(&t.action, Action::Move(m) if m.metadata.is_some() || m.error.is_some())
}

/// The notes to read before `updates` can be applied: those an update carries over from.
pub(crate) fn carried(st: &State, queue: &QueueId, updates: &[(Key, Transition)]) -> Vec<Loc> {
    let mut locs: Vec<Loc> = updates
        .iter()
        .filter(|(_, t)| writes_note(t))
        .filter_map(|(key, t)| {
            let h = st.header(queue, *key).ok().flatten()?;
            if carries(&h, t) { h.note } else { None }
        })
        .collect();
    locs.sort_unstable();
    locs.dedup();
    locs
}

/// The item's metadata (if replaced) and error as they are now: from its note (`read`), or
/// from the side maps for an item without one. `None` if the note is not at hand.
fn current(h: &Header, read: &dyn Fn(Loc) -> Option<Note>) -> Option<Note> {
    match h.note {
        Some(loc) => read(loc),
        None => Some(Note {
            metadata: h.replaced_metadata.then(|| h.item.metadata.clone()),
            error: h.item.last_error.clone(),
        }),
    }
}

/// How an update batch is logged: as `Update` (one update, from `update`) or
/// `UpdateMany`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Logged {
    One,
    Many,
}

/// One applied update: the item's header after it (as it was, for a removal) and the note
/// it wrote, if it wrote one.
pub(crate) type Applied = (Header, Option<Note>);

/// A record appended: its LSN and its body's size.
pub(crate) type Appended = (u64, usize);

/// Applies `updates` in order, under the state lock the caller holds, and appends them as
/// one record if any applied; an update that fails fails alone (and replay fails it the
/// same way). Each update that sets metadata or an error writes a note with both as they
/// are after it, carrying the other over from the item's current note (`read`), which the
/// caller has read (see [`Carry`]). The notes are placed once the record is appended.
#[allow(clippy::too_many_arguments)] // the batch, its context, and how to carry and log
pub(crate) fn apply_updates(
    inner: &Inner,
    st: &mut State,
    queue: &QueueId,
    updates: Vec<(Key, Transition)>,
    now: Timestamp,
    read: &dyn Fn(Loc) -> Option<Note>,
    carry: Carry,
    logged: Logged,
) -> Result<(Vec<Result<Applied>>, Option<Appended>)> {
    // The notes this batch wrote, by item: a later update of the same item carries over
    // from them.
    let mut written: HashMap<Key, Note> = HashMap::new();
    let mut notes: Vec<(u32, Note)> = Vec::new();
    let mut results = Vec::with_capacity(updates.len());
    let mut logged_updates = Vec::with_capacity(updates.len());
    let mut dropped: Vec<Loc> = Vec::new();
    for (i, (key, mut transition)) in updates.into_iter().enumerate() {
        let note = match written.get(&key) {
            Some(n) => note_for(&mut transition, Some(n.clone())),
            None if writes_note(&transition) => {
                let now_is = match st.header(queue, key)? {
                    Some(h) => {
                        let now_is = current(&h, read);
                        if now_is.is_none() && carries(&h, &transition) && carry == Carry::Required
                        {
                            return Err(Error::internal(
                                "a journal update needed a note it had not read",
                            ));
                        }
                        now_is
                    }
                    None => None,
                };
                note_for(&mut transition, now_is)
            }
            None => None,
        };
        let old_note = note.as_ref().and_then(|_| st.note_of(queue, key));
        let removes = matches!(transition.action, Action::Remove);
        match st.update(
            queue,
            key,
            transition.clone(),
            now,
            note.as_ref().map(Note::tag),
        ) {
            Ok(h) => {
                if removes {
                    dropped.extend(h.stored());
                }
                dropped.extend(old_note);
                if let Some(n) = &note {
                    written.insert(key, n.clone());
                    let index = u32::try_from(i)
                        .map_err(|_| Error::invalid("too many updates in one call"))?;
                    notes.push((index, n.clone()));
                }
                results.push(Ok((h, note)));
            }
            Err(e) => results.push(Err(e)),
        }
        logged_updates.push((key, transition));
    }
    if !results.iter().any(Result::is_ok) {
        return Ok((results, None));
    }
    let appended = append_updates(inner, st, queue, logged_updates, now, &notes, logged)?;
    inner.freed(&dropped);
    Ok((results, Some(appended)))
}

/// The note a transition writes, given the item's metadata and error as they are
/// (`now_is`), if it writes one; the transition's own metadata and error move into it.
fn note_for(transition: &mut Transition, now_is: Option<Note>) -> Option<Note> {
    match &mut transition.action {
        Action::Move(m) if m.metadata.is_some() || m.error.is_some() => {
            let now_is = now_is.unwrap_or_default();
            Some(Note {
                metadata: m.metadata.take().or(now_is.metadata),
                error: m.error.take().or(now_is.error),
            })
        }
        _ => None,
    }
}

/// Appends the record of an applied batch and places its notes.
fn append_updates(
    inner: &Inner,
    st: &mut State,
    queue: &QueueId,
    mut logged_updates: Vec<(Key, Transition)>,
    now: Timestamp,
    notes: &[(u32, Note)],
    logged: Logged,
) -> Result<Appended> {
    let keys: Vec<Key> = logged_updates.iter().map(|(k, _)| *k).collect();
    let op = match logged {
        Logged::One if logged_updates.len() == 1 => {
            let (key, transition) = logged_updates.remove(0);
            Op::Update {
                queue: queue.clone(),
                key,
                transition,
                now,
            }
        }
        _ => Op::UpdateMany {
            queue: queue.clone(),
            updates: logged_updates,
            now,
        },
    };
    let appended = if notes.is_empty() {
        let body = record::encode(&op)?;
        (inner.append(&body)?, body.len())
    } else {
        let refs: Vec<(u32, &Note)> = notes.iter().map(|(i, n)| (*i, n)).collect();
        let (body, placed) = record::encode_noted(&op, &refs)?;
        let (lsn, segment, offset) = inner.log.append(&body)?;
        // Every note of this record is an applied update's.
        place_notes(st, queue, (segment, offset), &placed, &keys, |_| true)?;
        (lsn, body.len())
    };
    Ok(appended)
}

/// Points the items of a noted record, appended at `(segment, offset)`, at their notes:
/// each note of an update that `applied` (replay places the same ones).
pub(crate) fn place_notes(
    st: &mut State,
    queue: &QueueId,
    (segment, offset): (u64, u64),
    placed: &[NoteAt],
    keys: &[Key],
    applied: impl Fn(usize) -> bool,
) -> Result<()> {
    let segment = segment_u32(segment)?;
    let base = offset + RECORD_HEADER as u64;
    for at in placed {
        let i = at.index as usize;
        if !applied(i) {
            continue;
        }
        let offset = u32::try_from(base + u64::from(at.blob.at))
            .map_err(|_| Error::internal("a journal segment is larger than 4 GiB"))?;
        let loc = Loc {
            segment,
            offset,
            len: at.blob.len,
        };
        st.set_note(queue, keys[i], loc);
    }
    Ok(())
}

/// `fetch`: changes nothing, so once its read succeeded it finishes without taking the
/// lock again, with the items as its step saw them (the blobs read since are theirs: the
/// bytes at a location never change).
pub(crate) struct Fetch {
    pub queue: QueueId,
    pub selector: Selector,
    /// The items the last step saw, waiting for their blobs.
    pub seen: Option<Vec<Header>>,
}

impl Call for Fetch {
    type Out = Vec<Item>;

    fn step(
        &mut self,
        inner: &Inner,
        st: &mut State,
        blobs: &mut Blobs,
    ) -> Result<Step<Vec<Item>>> {
        let keys = st.select(&self.queue, &self.selector)?;
        let headers = headers(st, &self.queue, &keys);
        match take_all(inner, st, &self.queue, &headers, blobs)? {
            Ok(found) => Ok(Step::Done(fill_all(headers, found))),
            Err(need) => {
                if !need.is_empty() {
                    self.seen = Some(headers);
                }
                Ok(Step::Need(need))
            }
        }
    }

    fn after_read(&mut self, blobs: &mut Blobs) -> Option<Result<Vec<Item>>> {
        // A failed read means another step: the item may have moved and its old segment
        // been deleted, or the damage is real, which only a step can tell.
        let headers = self
            .seen
            .take_if(|h| blobs.all_read(h.iter().flat_map(Header::locs)))?;
        match blobs.take(&locs(&headers)) {
            Ok(Taken::All(found)) => Some(Ok(fill_all(headers, found))),
            // Damage is quarantined by a step, under the lock.
            Ok(Taken::Missing(_) | Taken::Damaged(_)) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

/// `pop`: removes exactly what the selector selects when it is applied, which is what
/// replaying the logged `Pop` selects.
pub(crate) struct Pop {
    pub queue: QueueId,
    pub selector: Selector,
    pub body: Vec<u8>,
}

impl Call for Pop {
    type Out = (Vec<Item>, Option<u64>);

    fn gate(&self) -> Option<&QueueId> {
        // A pop by key competes with no one for its item in a way a retry does not settle
        // at once; a page wants the head of the queue, like the other consumers.
        matches!(self.selector, Selector::Page(_)).then_some(&self.queue)
    }

    fn step(
        &mut self,
        inner: &Inner,
        st: &mut State,
        blobs: &mut Blobs,
    ) -> Result<Step<Self::Out>> {
        let keys = st.select(&self.queue, &self.selector)?;
        if keys.is_empty() {
            return Ok(Step::Done((Vec::new(), None)));
        }
        let headers = headers(st, &self.queue, &keys);
        let found = match take_all(inner, st, &self.queue, &headers, blobs)? {
            Ok(found) => found,
            Err(need) => return Ok(Step::Need(need)),
        };
        let gone: Vec<Loc> = headers.iter().flat_map(Header::stored).collect();
        inner.freed(&gone);
        st.remove(&self.queue, &keys)?;
        let lsn = inner.append(&self.body)?;
        Ok(Step::Done((fill_all(headers, found), Some(lsn))))
    }
}

/// `claim`: sweeps, then leases exactly the claimable items of the moment it is applied,
/// which is what replaying the logged `Claim` (sweep, select, lease) does.
pub(crate) struct ClaimItems {
    pub queue: QueueId,
    pub claim: Claim,
    pub now: Timestamp,
    pub sweep: Vec<u8>,
    pub body: Vec<u8>,
    /// The last sweep record this call appended.
    pub swept: Option<u64>,
}

/// What a claim leased, the LSN of its record (if it wrote one), and the end of the furthest
/// record the leased items are made of (their blobs and notes), which a claim without sync
/// must see durable before it hands them out.
pub(crate) type Claimed = (Vec<Item>, Option<u64>, Option<(u64, u64)>);

impl Call for ClaimItems {
    type Out = Claimed;

    fn gate(&self) -> Option<&QueueId> {
        Some(&self.queue)
    }

    fn step(
        &mut self,
        inner: &Inner,
        st: &mut State,
        blobs: &mut Blobs,
    ) -> Result<Step<Self::Out>> {
        let swept = st.sweep(&self.queue, self.now)?;
        if swept.released > 0 || swept.expired > 0 {
            // Logged on its own, so that it replays even if nothing is leased (or a read
            // fails) below. A later step's sweep finds only what changed since: at most
            // another record, which replays the same way.
            self.swept = Some(inner.append_for(&self.sweep, self.claim.durable)?);
        }
        let keys = st.claimable(&self.queue, self.claim.limit, self.now)?;
        if keys.is_empty() {
            return Ok(Step::Done((Vec::new(), self.swept, None)));
        }
        // Claimable items are pending, never quarantined: each has its blob to read, and
        // its note if it has one (taken from the slots: no header is built on this path).
        let locs = st.item_locs(&self.queue, &keys)?;
        let found = match blobs.take(&locs)? {
            Taken::All(found) => found,
            Taken::Missing(missing) => return Ok(Step::Need(missing)),
            Taken::Damaged(damaged) => {
                // Quarantined, then claimed around: the others are handed out as usual.
                let before = headers(st, &self.queue, &keys);
                let bad = damaged_items(&before, &damaged);
                quarantine(inner, st, &self.queue, &bad, blobs)?;
                return Ok(Step::Need(Vec::new()));
            }
        };
        let claim = &self.claim;
        // Leasing changes neither where an item's blob and note are nor whether it is
        // quarantined: `found` is in the order `fill_all` takes for the leased headers.
        let leased = st.lease(
            &self.queue,
            &keys,
            &claim.owner,
            claim.lease_until,
            self.now,
        )?;
        let lsn = inner.append_for(&self.body, claim.durable)?;
        let reach = locs
            .iter()
            .map(|l| (u64::from(l.segment), u64::from(l.offset) + u64::from(l.len)))
            .max();
        Ok(Step::Done((fill_all(leased, found), Some(lsn), reach)))
    }
}

/// `update`: checks its precondition and applies its action in the step that has the
/// item's blob and note.
pub(crate) struct Update {
    pub queue: QueueId,
    pub key: Key,
    pub transition: Transition,
    pub now: Timestamp,
}

impl Call for Update {
    type Out = (Item, Appended);

    fn step(
        &mut self,
        inner: &Inner,
        st: &mut State,
        blobs: &mut Blobs,
    ) -> Result<Step<Self::Out>> {
        let before = st
            .header(&self.queue, self.key)?
            .ok_or_else(|| Error::ItemNotFound {
                queue: self.queue.clone(),
                key: self.key,
            })?;
        // A precondition that fails needs no read: the call fails as of now, unchanged.
        check_expect(&before.item, &self.transition)?;
        let mut found =
            match take_all(inner, st, &self.queue, std::slice::from_ref(&before), blobs)? {
                Ok(found) => found.into_iter(),
                Err(need) => return Ok(Step::Need(need)),
            };
        let blob = if quarantined(&before) {
            None
        } else {
            found.next()
        };
        let old_note = before.note.and_then(|_| found.next()).map(Note::from_blob);
        let read = |loc: Loc| (before.note == Some(loc)).then(|| old_note.clone())?;
        let updates = vec![(self.key, self.transition.clone())];
        let (mut results, appended) = apply_updates(
            inner,
            st,
            &self.queue,
            updates,
            self.now,
            &read,
            Carry::Required,
            Logged::One,
        )?;
        let (after, note) = results
            .pop()
            .ok_or_else(|| Error::internal("a journal update went missing"))??;
        let appended =
            appended.ok_or_else(|| Error::internal("a journal update was not logged"))?;
        Ok(Step::Done((fill(after, blob, note.or(old_note)), appended)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on failure
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use hookspool::{Backend, Expect, Move, NewItem, Phase, QueueConfig, Store, Transition};

    use super::*;
    use crate::JournalBackend;

    fn any(m: Move) -> Transition {
        Transition {
            expect: Expect::default(),
            action: m.into(),
        }
    }

    fn log(n: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("attempt".to_owned(), n.to_owned())])
    }

    /// Strings held in memory for the items of the queue: lease owners, errors, replaced
    /// metadata (the checkpoint's side tables).
    fn in_memory(backend: &JournalBackend) -> (usize, usize, usize) {
        let st = backend.inner().state();
        let (leases, errors, metadata) = st.queues_by_id()[0].side();
        (leases.len(), errors.len(), metadata.len())
    }

    fn open(dir: &Path) -> Store<JournalBackend> {
        Store::new(JournalBackend::open(dir).unwrap())
    }

    fn header(key: Key, phase: Phase, loc: Loc, note: Option<Loc>) -> Header {
        let item = hookspool::Item {
            key,
            payload: Vec::new(),
            phase,
            attempts: 0,
            created_at: Timestamp(1),
            updated_at: Timestamp(1),
            not_before: Timestamp(1),
            lease: None,
            last_error: None,
            metadata: BTreeMap::new(),
        };
        Header {
            item,
            loc,
            note,
            replaced_metadata: false,
            has_error: note.is_some(),
        }
    }

    /// Damage is put on every item that needs the damaged bytes, and only on those: here
    /// a quarantined item's blob (never read again) sits where another item's note is.
    #[test]
    fn damage_is_put_on_each_item_that_needs_the_bytes() {
        let at = |offset| Loc {
            segment: 2,
            offset,
            len: 10,
        };
        let headers = vec![
            header(38, Phase::CORRUPT, at(100), Some(at(200))),
            header(39, Phase::PENDING, at(300), None),
            header(40, Phase::PENDING, at(400), Some(at(100))),
            header(41, Phase::PENDING, at(100), None),
        ];
        let damaged = vec![(at(100), "bad".to_owned())];
        let found: Vec<(Key, String)> = damaged_items(&headers, &damaged)
            .into_iter()
            .map(|(k, _, what)| (k, what))
            .collect();
        assert_eq!(
            found,
            vec![(40, "its note: bad".to_owned()), (41, "bad".to_owned())],
            "not key 38, whose damaged blob is not read; both keys that read the bytes"
        );
    }

    /// However an item is settled, its metadata and error are on disk, not in memory.
    #[tokio::test]
    async fn settled_items_hold_no_strings_in_memory() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        let q = QueueId::new("q").unwrap();
        store
            .create_queue(QueueConfig::new(q.clone()))
            .await
            .unwrap();
        for _ in 0..4 {
            store.push(&q, NewItem::new(b"x".to_vec())).await.unwrap();
        }
        let claimed = store
            .claim(&q, "w", 4, std::time::Duration::from_mins(1))
            .await
            .unwrap();
        assert_eq!(in_memory(store.backend()), (4, 0, 0), "only the leases");
        store
            .update_many(
                &q,
                vec![
                    (1, any(Move::to(Phase::DONE).metadata(log("1")))),
                    (2, any(Move::to(Phase::DEAD).error("boom"))),
                    (3, any(Move::to(Phase::DONE).metadata(log("1")).error("e"))),
                ],
            )
            .await
            .unwrap();
        store
            .nack(&q, claimed[3].key, "w", store.now(), "again")
            .await
            .unwrap();
        store
            .update(&q, 1, any(Move::to(Phase::DEAD).error("late")))
            .await
            .unwrap();
        store
            .update(&q, 2, any(Move::to(Phase::DONE)))
            .await
            .unwrap();
        assert_eq!(in_memory(store.backend()), (0, 0, 0));
        let one = store.fetch_key(&q, 1).await.unwrap().unwrap();
        assert_eq!(
            (one.metadata, one.last_error),
            (log("1"), Some("late".into()))
        );
        let two = store.fetch_key(&q, 2).await.unwrap().unwrap();
        assert_eq!(two.last_error.as_deref(), Some("boom"));
    }

    /// Every blob and note is counted live while its item holds it, and no longer once
    /// the item is gone (segments are deleted by that count), through replay and a
    /// checkpoint too.
    #[tokio::test]
    async fn notes_count_as_live_bytes_until_their_item_goes() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(tmp.path());
        let q = QueueId::new("q").unwrap();
        store
            .create_queue(QueueConfig::new(q.clone()))
            .await
            .unwrap();
        for _ in 0..6 {
            store.push(&q, NewItem::new(b"x".to_vec())).await.unwrap();
        }
        store
            .claim(&q, "w", 6, std::time::Duration::from_mins(1))
            .await
            .unwrap();
        let live = |store: &Store<JournalBackend>| -> u64 {
            store.backend().inner().state().live().values().sum()
        };
        let blobs = live(&store);
        store
            .update_many(
                &q,
                vec![
                    (1, any(Move::to(Phase::DONE).metadata(log("1")))),
                    (2, any(Move::to(Phase::DEAD).error("boom"))),
                    (3, any(Move::to(Phase::DONE).metadata(log("1")).error("e"))),
                    (4, any(Move::to(Phase::DONE))),
                ],
            )
            .await
            .unwrap();
        store
            .update(&q, 1, any(Move::to(Phase::DEAD).error("late")))
            .await
            .unwrap();
        assert!(live(&store) > blobs, "the notes count");
        drop(store);
        let store = open(tmp.path());
        assert!(live(&store) > blobs);
        for key in 1..=6 {
            assert!(store.delete(&q, key).await.unwrap());
        }
        assert_eq!(live(&store), 0);
        assert!(store.backend().inner().state().live().is_empty());
    }

    /// An item changed by an older version of the journal has its metadata and error in
    /// the side maps (logged in the update, kept in the checkpoint); its next change that
    /// sets either moves both into a note, and nothing is lost on the way.
    #[tokio::test]
    async fn metadata_and_errors_kept_in_memory_by_an_older_version_move_into_a_note() {
        let tmp = tempfile::tempdir().unwrap();
        let q = QueueId::new("q").unwrap();
        let store = open(tmp.path());
        store
            .create_queue(QueueConfig::new(q.clone()))
            .await
            .unwrap();
        let key = store.push(&q, NewItem::new(b"x".to_vec())).await.unwrap();
        // What the older version did: the update with its strings, logged as they were.
        let old = any(Move::to(Phase::DEAD).metadata(log("1")).error("old"));
        {
            let inner = store.backend().inner();
            let mut st = inner.state();
            let now = store.now();
            st.update(&q, key, old.clone(), now, None).unwrap();
            let op = Op::Update {
                queue: q.clone(),
                key,
                transition: old,
                now,
            };
            inner.append(&record::encode(&op).unwrap()).unwrap();
        }
        store.sync().await.unwrap();
        assert_eq!(in_memory(store.backend()), (0, 1, 1));
        // Replayed from the log, then from a checkpoint (side tables and all) as the older
        // version wrote it: the same layout under the previous magic.
        drop(store);
        let store = open(tmp.path());
        store.backend().checkpoint().await.unwrap();
        drop(store);
        let path = tmp.path().join(crate::checkpoint::CHECKPOINT_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"HSPJCKP3");
        bytes[..8].copy_from_slice(b"HSPJCKP2");
        std::fs::write(&path, bytes).unwrap();
        let store = open(tmp.path());
        assert_eq!(store.backend().recovery().replayed_records, 0);
        assert_eq!(in_memory(store.backend()), (0, 1, 1));
        let item = store.fetch_key(&q, key).await.unwrap().unwrap();
        assert_eq!(
            (&item.metadata, item.last_error.as_deref()),
            (&log("1"), Some("old"))
        );
        // A new error: the metadata is carried over from the side map, into the note.
        store
            .settle(&q, key, any(Move::to(Phase::DEAD).error("new")))
            .await
            .unwrap();
        assert_eq!(in_memory(store.backend()), (0, 0, 0));
        drop(store);
        let store = open(tmp.path());
        let item = store.fetch_key(&q, key).await.unwrap().unwrap();
        assert_eq!(
            (&item.metadata, item.last_error.as_deref()),
            (&log("1"), Some("new"))
        );
        let backend = store.backend();
        assert_eq!(backend.count(&q).await.unwrap().get(&Phase::DEAD), 1);
    }
}
