//! Verifying stored data: every item's stored bytes checked against their checksums, damage
//! reported by queue and key, and (when asked) quarantined. `hookspool verify` and
//! `POST /verify` run [`Store::verify`].

use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::{Action, Expect, Key, Move, Phase, QueueId, Transition};
use crate::store::Store;

/// Items [`Store::verify`] asks the backend to check at a time.
pub const VERIFY_PAGE: usize = 1_000;

/// One page of [`Backend::check`]: how many items were checked, the last key checked
/// (`None`: the queue has no more), and the damaged ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checked {
    /// Items checked.
    pub items: u64,
    /// The last key checked; the next page starts after it. `None`: nothing is left.
    pub last: Option<Key>,
    /// Damaged items: the key (`None` when the backend cannot tell which item of the page it
    /// is) and what is wrong.
    pub damaged: Vec<(Option<Key>, String)>,
    /// Items found already quarantined (in [`Phase::CORRUPT`]), with their error.
    pub quarantined: Vec<(Key, String)>,
}

/// Damage found by [`Store::verify`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Damage {
    /// The queue.
    pub queue: QueueId,
    /// The item, when known.
    pub key: Option<Key>,
    /// What is wrong.
    pub error: String,
}

/// What [`Store::verify`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Queues checked.
    pub queues: u64,
    /// Items checked.
    pub items: u64,
    /// Damage found, by queue and key.
    pub damaged: Vec<Damage>,
    /// Damaged items moved to [`Phase::CORRUPT`] (with `quarantine`).
    pub quarantined: u64,
}

impl VerifyReport {
    /// Whether nothing was damaged.
    pub fn is_clean(&self) -> bool {
        self.damaged.is_empty()
    }
}

impl<B: Backend> Store<B> {
    /// Checks the stored data of every item of every queue, a page at a time, changing
    /// nothing; with `quarantine`, moves each damaged item (whose key is known) to
    /// [`Phase::CORRUPT`] with what is wrong as its error. `progress` is called after each
    /// page with the items checked so far. Items already quarantined are checked like the
    /// others (their data is still damaged), but not moved again.
    ///
    /// # Errors
    /// The backend's errors other than damage (which is reported, not returned).
    pub async fn verify(
        &self,
        quarantine: bool,
        mut progress: impl FnMut(u64),
    ) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        for config in self.queues().await? {
            let queue = config.id;
            let mut after = None;
            loop {
                let page = match self.backend().check(&queue, after, VERIFY_PAGE).await {
                    Err(Error::QueueNotFound(_)) => break,
                    other => other?,
                };
                report.items += page.items;
                for (key, error) in page.damaged {
                    if quarantine
                        && let Some(key) = key
                        && self.quarantine(&queue, key, &error).await?
                    {
                        report.quarantined += 1;
                    }
                    report.damaged.push(Damage {
                        queue: queue.clone(),
                        key,
                        error,
                    });
                }
                for (key, error) in page.quarantined {
                    report.damaged.push(Damage {
                        queue: queue.clone(),
                        key: Some(key),
                        error,
                    });
                }
                progress(report.items);
                match page.last {
                    Some(last) => after = Some(last),
                    None => break,
                }
            }
            report.queues += 1;
        }
        Ok(report)
    }

    /// Moves a damaged item to [`Phase::CORRUPT`] (settling reads no data); `false` if it is
    /// gone.
    async fn quarantine(&self, queue: &QueueId, key: Key, error: &str) -> Result<bool> {
        let transition = Transition {
            expect: Expect::default(),
            action: Action::Move(Move::to(Phase::CORRUPT).error(format!("quarantined: {error}"))),
        };
        match self.settle(queue, key, transition).await {
            Ok(()) => Ok(true),
            Err(Error::ItemNotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
