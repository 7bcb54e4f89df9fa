//! [`Admin`]: the queue operations the commands need, whichever side holds the queues. It is
//! implemented here over a data directory's [`Store`] and in `remote` over a daemon's
//! [`hookspool_client::Client`], so that `commands` writes each command once and `--url`
//! only picks the implementation.

use std::future::Future;

use hookspool::{
    Backend, Error, Item, Key, NewItem, Page, Phase, PhaseCounts, QueueConfig, QueueId, Store,
    Timestamp, VerifyReport,
};
use hookspool_client::{QueueInfo, QueueUpdate};

use crate::error::CliError;

/// The queue operations of the CLI's commands, with the semantics of the daemon's HTTP API:
/// absence is `Ok(None)` / `Ok(false)`, a queue is shown as a [`QueueInfo`] (its channel
/// secret never, only whether it has one), and an update replaces the metadata whole.
///
/// Each implementation maps its own failures into [`CliError`], so that a command reads the
/// same on both sides: the engine's errors are [`CliError::Store`] (the daemon answers with
/// the engine's own sentences, kept in [`CliError::Remote`]), and what only a network can do
/// (no answer, a refused token) gets the CLI's wording.
///
/// The futures need not be `Send`: the CLI runs one command at a time on a current-thread
/// runtime.
pub trait Admin {
    /// A queue's items being read, oldest first, from [`Admin::dump`].
    type Dump: ItemStream;

    /// Checks the stored data of every item; with `quarantine`, moves damaged items to
    /// `corrupt`. `progress` gets the items checked so far (locally only: a daemon answers
    /// once, at the end).
    fn verify(
        &self,
        quarantine: bool,
        progress: impl FnMut(u64),
    ) -> impl Future<Output = Result<VerifyReport, CliError>>;

    /// Every queue, by id, with its counts.
    fn queues(&self) -> impl Future<Output = Result<Vec<QueueInfo>, CliError>>;

    /// One queue with its counts; `None` if there is no such queue.
    fn queue(&self, id: &QueueId) -> impl Future<Output = Result<Option<QueueInfo>, CliError>>;

    /// Creates a queue with `config`'s id and settings; its channel secret, if any, is the
    /// one `hookspool_webhooks::set_channel_secret` put in `config`.
    fn create_queue(
        &self,
        config: QueueConfig,
    ) -> impl Future<Output = Result<QueueInfo, CliError>>;

    /// Changes the settings `update` gives and keeps the others (the channel secret too when
    /// `update.metadata` replaces the metadata).
    fn update_queue(
        &self,
        id: &QueueId,
        update: QueueUpdate,
    ) -> impl Future<Output = Result<QueueInfo, CliError>>;

    /// Deletes a queue and its items; `false` if there was no such queue.
    fn delete_queue(&self, id: &QueueId) -> impl Future<Output = Result<bool, CliError>>;

    /// How many items a queue holds, in every phase or in `phase`.
    fn count(
        &self,
        queue: &QueueId,
        phase: Option<&Phase>,
    ) -> impl Future<Output = Result<u64, CliError>>;

    /// The item with this key, whatever its phase; `None` if the queue has no such item.
    fn fetch_key(
        &self,
        queue: &QueueId,
        key: Key,
    ) -> impl Future<Output = Result<Option<Item>, CliError>>;

    /// A page of a queue's items, without changing them.
    fn fetch_page(
        &self,
        queue: &QueueId,
        page: Page,
    ) -> impl Future<Output = Result<Vec<Item>, CliError>>;

    /// Starts reading every item of a queue, oldest first, in constant memory.
    fn dump(&self, queue: &QueueId) -> impl Future<Output = Result<Self::Dump, CliError>>;

    /// Removes every item of a queue; returns how many.
    fn reset(&self, queue: &QueueId) -> impl Future<Output = Result<u64, CliError>>;

    /// Pushes one item; returns its key.
    fn push(&self, queue: &QueueId, item: NewItem) -> impl Future<Output = Result<Key, CliError>>;

    /// Deletes one item, whatever its phase; `false` if there was no such item.
    fn delete(&self, queue: &QueueId, key: Key) -> impl Future<Output = Result<bool, CliError>>;

    /// Moves one item to `phase`; with `if_phase`, only if it is in that phase now.
    fn update_phase(
        &self,
        queue: &QueueId,
        key: Key,
        phase: Phase,
        if_phase: Option<Phase>,
    ) -> impl Future<Output = Result<Item, CliError>>;

    /// Moves one dead item back to pending, due now.
    fn replay(&self, queue: &QueueId, key: Key) -> impl Future<Output = Result<Item, CliError>>;

    /// Moves every dead item of a queue back to pending; returns how many.
    fn replay_dead(&self, queue: &QueueId) -> impl Future<Output = Result<u64, CliError>>;

    /// The time `push --delay` counts from and `fetch` shows due times against.
    fn now(&self) -> Timestamp;

    /// The largest payload `push` reads from stdin.
    fn max_payload(&self) -> usize;
}

/// Items read one at a time ([`Admin::dump`]).
pub trait ItemStream {
    /// The next item, or `None` after the last one.
    fn next_item(&mut self) -> impl Future<Output = Result<Option<Item>, CliError>>;
}

/// A data directory's queues, opened by this process.
impl<B: Backend> Admin for Store<B> {
    type Dump = LocalItems<B>;

    async fn verify(
        &self,
        quarantine: bool,
        progress: impl FnMut(u64),
    ) -> Result<VerifyReport, CliError> {
        Ok(Store::verify(self, quarantine, progress).await?)
    }

    async fn queues(&self) -> Result<Vec<QueueInfo>, CliError> {
        let configs = Store::queues(self).await?;
        let mut list = Vec::with_capacity(configs.len());
        for config in &configs {
            list.push(QueueInfo::new(config, self.counts(&config.id).await?));
        }
        Ok(list)
    }

    async fn queue(&self, id: &QueueId) -> Result<Option<QueueInfo>, CliError> {
        let Some(config) = Store::queue(self, id).await? else {
            return Ok(None);
        };
        Ok(Some(QueueInfo::new(&config, self.counts(id).await?)))
    }

    async fn create_queue(&self, config: QueueConfig) -> Result<QueueInfo, CliError> {
        let config = Store::create_queue(self, config).await?;
        Ok(QueueInfo::new(&config, PhaseCounts::default()))
    }

    async fn update_queue(&self, id: &QueueId, update: QueueUpdate) -> Result<QueueInfo, CliError> {
        let mut config = Store::queue(self, id)
            .await?
            .ok_or_else(|| Error::QueueNotFound(id.clone()))?;
        // As the daemon applies it, so that both sides change the same things.
        update.apply_to(&mut config).map_err(CliError::Input)?;
        let config = Store::update_queue(self, config).await?;
        Ok(QueueInfo::new(&config, self.counts(id).await?))
    }

    async fn delete_queue(&self, id: &QueueId) -> Result<bool, CliError> {
        Ok(Store::delete_queue(self, id).await?)
    }

    async fn count(&self, queue: &QueueId, phase: Option<&Phase>) -> Result<u64, CliError> {
        Ok(match phase {
            Some(phase) => self.count_phase(queue, phase).await?,
            None => Store::count(self, queue).await?,
        })
    }

    async fn fetch_key(&self, queue: &QueueId, key: Key) -> Result<Option<Item>, CliError> {
        Ok(Store::fetch_key(self, queue, key).await?)
    }

    async fn fetch_page(&self, queue: &QueueId, page: Page) -> Result<Vec<Item>, CliError> {
        Ok(Store::fetch_page(self, queue, page).await?)
    }

    async fn dump(&self, queue: &QueueId) -> Result<LocalItems<B>, CliError> {
        Ok(LocalItems {
            pages: Store::dump(self, queue),
            page: Vec::new().into_iter(),
        })
    }

    async fn reset(&self, queue: &QueueId) -> Result<u64, CliError> {
        Ok(Store::reset(self, queue).await?)
    }

    async fn push(&self, queue: &QueueId, item: NewItem) -> Result<Key, CliError> {
        Ok(Store::push(self, queue, item).await?)
    }

    async fn delete(&self, queue: &QueueId, key: Key) -> Result<bool, CliError> {
        Ok(Store::delete(self, queue, key).await?)
    }

    async fn update_phase(
        &self,
        queue: &QueueId,
        key: Key,
        phase: Phase,
        if_phase: Option<Phase>,
    ) -> Result<Item, CliError> {
        Ok(match if_phase {
            Some(expected) => Store::update_phase_if(self, queue, key, expected, phase).await?,
            None => Store::update_phase(self, queue, key, phase).await?,
        })
    }

    async fn replay(&self, queue: &QueueId, key: Key) -> Result<Item, CliError> {
        Ok(Store::replay(self, queue, key).await?)
    }

    async fn replay_dead(&self, queue: &QueueId) -> Result<u64, CliError> {
        Ok(Store::replay_dead(self, queue).await?)
    }

    fn now(&self) -> Timestamp {
        Store::now(self)
    }

    fn max_payload(&self) -> usize {
        self.limits().max_payload
    }
}

/// A local queue's items, read a page at a time: at most one page is held in memory.
#[derive(Debug)]
pub struct LocalItems<B: Backend> {
    pages: hookspool::Dump<B>,
    page: std::vec::IntoIter<Item>,
}

impl<B: Backend> ItemStream for LocalItems<B> {
    async fn next_item(&mut self) -> Result<Option<Item>, CliError> {
        loop {
            if let Some(item) = self.page.next() {
                return Ok(Some(item));
            }
            match self.pages.next_page().await? {
                Some(page) => self.page = page.into_iter(),
                None => return Ok(None),
            }
        }
    }
}
