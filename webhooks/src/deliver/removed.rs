//! Subscriptions a delivery loop on shared storage has found removed, so that the rest of a
//! removed subscription's backlog is cancelled without reading every subscription again.
//!
//! On storage shared with other processes, a claimed delivery may name a subscription this
//! process has not loaded: made by another process a moment ago, or removed. Only a fresh read
//! of the subscriptions tells which, and the loop made one for every claimed batch with such
//! a delivery, so a removed subscription with a backlog of thousands cost one full read per
//! claim. Now the loop reads the deliveries queue's highest key first, then the
//! subscriptions; a subscription still missing is noted with that key.
//!
//! Why a delivery of a noted subscription at or below its key is the removed one's, even if a
//! subscription of the same id has been made since (`attach` lets an application reuse an
//! id): keys increase from one push to a later one (the `Backend` contract), so that delivery
//! was pushed no later than the item holding the key, which was stored before the read of
//! the subscriptions began. Its event was matched against a subscription stored before the
//! push. Had that been one made again under the id, the read would have found it (or it was
//! removed again before the read, and cancelling is right). A delivery of a subscription
//! made after the read is pushed after it, and so has a higher key: it leads to a new read,
//! which finds the subscription, and it is sent.
//!
//! One thing does change: an old delivery of the removed subscription put back by `replay`
//! after the id was made again keeps its key. A loop that has not loaded the new subscription
//! yet (a notice, or the reload every second, brings it) cancels that delivery again, where it
//! used to read the subscriptions and send it to the new one. Once the new subscription is
//! loaded, the loop sends such a delivery to it, as before.

use std::collections::HashMap;

use hookspool::Key;

/// Most subscriptions remembered. Past that the memory starts over: a forgotten one only
/// costs a read of the subscriptions again.
const MOST: usize = 1024;

/// Removed subscriptions, each with the highest key of the deliveries queue read just before
/// the read of the subscriptions that did not find it.
#[derive(Debug, Default)]
pub(super) struct Removed {
    up_to: HashMap<String, Key>,
}

impl Removed {
    /// Whether delivery `key` of subscription `sub` is known to be one of a removed
    /// subscription's (true only while the caller has no subscription `sub` loaded).
    pub(super) fn covers(&self, sub: &str, key: Key) -> bool {
        self.up_to.get(sub).is_some_and(|&up_to| key <= up_to)
    }

    /// Notes that a read of the subscriptions did not find `sub`, and that the deliveries
    /// queue's highest key just before it was `up_to`.
    pub(super) fn note(&mut self, sub: &str, up_to: Key) {
        if let Some(known) = self.up_to.get_mut(sub) {
            *known = (*known).max(up_to);
            return;
        }
        if self.up_to.len() >= MOST {
            self.up_to.clear();
        }
        self.up_to.insert(sub.to_owned(), up_to);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_up_to_the_highest_key_noted() {
        let mut removed = Removed::default();
        assert!(!removed.covers("a", 1));
        removed.note("a", 10);
        assert!(removed.covers("a", 10));
        assert!(!removed.covers("a", 11));
        assert!(!removed.covers("b", 1));
        removed.note("a", 5);
        assert!(removed.covers("a", 10), "a lower key never lowers the mark");
        removed.note("a", 20);
        assert!(removed.covers("a", 20));
    }

    #[test]
    fn starts_over_past_its_size() {
        let mut removed = Removed::default();
        for i in 0..MOST {
            removed.note(&format!("s{i}"), 1);
        }
        assert_eq!(removed.up_to.len(), MOST);
        removed.note("s0", 2);
        assert_eq!(removed.up_to.len(), MOST, "a known id takes no room");
        removed.note("new", 1);
        assert_eq!(removed.up_to.len(), 1);
        assert!(removed.covers("new", 1));
    }
}
