//! The daemon's side of [`Admin`] (`--url`): the queue operations through its HTTP API
//! ([`Client`]), and the CLI's wording for what only a network can do: a daemon that does
//! not answer, a token it refuses. Everything else the daemon refuses, it refuses with the
//! engine's own sentence, so the commands read alike on both sides.

use hookspool::{
    DEFAULT_MAX_PAYLOAD, Item, Key, NewItem, Page, Phase, QueueConfig, QueueId, Timestamp,
    VerifyReport,
};
use hookspool_client::{Client, Error, QueueInfo, QueueUpdate, RemoteDump};
use hookspool_webhooks::Secret;

use crate::admin::{Admin, ItemStream};
use crate::error::CliError;

/// A client of the daemon at `url` that sends `token` as its bearer token.
///
/// # Errors
/// A URL that is not an http(s) URL, a token that cannot be sent.
pub(crate) fn connect(url: &str, token: Option<String>) -> Result<Client, CliError> {
    Client::new(url, token.map(Secret::new)).map_err(wording(url))
}

/// The error for `serve` with `--url`: the daemon runs on a data directory, it does not
/// connect to another one.
pub fn serve_with_url() -> CliError {
    CliError::Input(
        "--url runs the queue commands against a running daemon; `serve` runs the daemon \
         itself on --data-dir: drop --url"
            .to_owned(),
    )
}

/// Gives the client's errors the CLI's words: the daemon's base URL as the user gave it,
/// and a hint about the token on 401.
fn wording(base: &str) -> impl FnOnce(Error) -> CliError + '_ {
    move |e| match e {
        Error::Network { reason, .. } => CliError::Unreachable {
            url: base.to_owned(),
            reason,
        },
        Error::Remote {
            status: 401,
            message,
            ..
        } => CliError::Unauthorized {
            url: base.to_owned(),
            message,
        },
        Error::Remote {
            status,
            code,
            message,
        } => CliError::Remote {
            status,
            code,
            message,
        },
        Error::Local(e) => e.into(),
        e => CliError::Client(e),
    }
}

/// A running daemon's queues.
impl Admin for Client {
    type Dump = RemoteItems;

    async fn queues(&self) -> Result<Vec<QueueInfo>, CliError> {
        Client::queues(self).await.map_err(wording(self.base_url()))
    }

    async fn queue(&self, id: &QueueId) -> Result<Option<QueueInfo>, CliError> {
        Client::queue(self, id)
            .await
            .map_err(wording(self.base_url()))
    }

    async fn create_queue(&self, config: QueueConfig) -> Result<QueueInfo, CliError> {
        Client::create_queue(self, &config)
            .await
            .map_err(wording(self.base_url()))
    }

    async fn update_queue(&self, id: &QueueId, update: QueueUpdate) -> Result<QueueInfo, CliError> {
        Client::update_queue(self, id, &update)
            .await
            .map_err(wording(self.base_url()))
    }

    async fn delete_queue(&self, id: &QueueId) -> Result<bool, CliError> {
        Client::delete_queue(self, id)
            .await
            .map_err(wording(self.base_url()))
    }

    async fn count(&self, queue: &QueueId, phase: Option<&Phase>) -> Result<u64, CliError> {
        let answer = match phase {
            Some(phase) => self.count_phase(queue, phase).await,
            None => Client::count(self, queue).await,
        };
        answer.map_err(wording(self.base_url()))
    }

    async fn fetch_key(&self, queue: &QueueId, key: Key) -> Result<Option<Item>, CliError> {
        Client::fetch_key(self, queue, key)
            .await
            .map_err(wording(self.base_url()))
    }

    async fn fetch_page(&self, queue: &QueueId, page: Page) -> Result<Vec<Item>, CliError> {
        Client::fetch_page(self, queue, &page)
            .await
            .map_err(wording(self.base_url()))
    }

    async fn dump(&self, queue: &QueueId) -> Result<RemoteItems, CliError> {
        let dump = Client::dump(self, queue)
            .await
            .map_err(wording(self.base_url()))?;
        Ok(RemoteItems {
            dump,
            base: self.base_url().to_owned(),
        })
    }

    async fn reset(&self, queue: &QueueId) -> Result<u64, CliError> {
        Client::reset(self, queue)
            .await
            .map_err(wording(self.base_url()))
    }

    async fn push(&self, queue: &QueueId, item: NewItem) -> Result<Key, CliError> {
        Client::push(self, queue, item)
            .await
            .map_err(wording(self.base_url()))
    }

    async fn delete(&self, queue: &QueueId, key: Key) -> Result<bool, CliError> {
        Client::delete(self, queue, key)
            .await
            .map_err(wording(self.base_url()))
    }

    async fn update_phase(
        &self,
        queue: &QueueId,
        key: Key,
        phase: Phase,
        if_phase: Option<Phase>,
    ) -> Result<Item, CliError> {
        match &if_phase {
            Some(expected) => Client::update_phase_if(self, queue, key, expected, &phase).await,
            None => Client::update_phase(self, queue, key, &phase).await,
        }
        .map_err(wording(self.base_url()))
    }

    async fn replay(&self, queue: &QueueId, key: Key) -> Result<Item, CliError> {
        Client::replay(self, queue, key)
            .await
            .map_err(wording(self.base_url()))
    }

    async fn verify(
        &self,
        quarantine: bool,
        _progress: impl FnMut(u64),
    ) -> Result<VerifyReport, CliError> {
        Client::verify(self, quarantine)
            .await
            .map_err(wording(self.base_url()))
    }

    async fn replay_dead(&self, queue: &QueueId) -> Result<u64, CliError> {
        Client::replay_dead(self, queue)
            .await
            .map_err(wording(self.base_url()))
    }

    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    /// The default limit: the daemon's own may differ, and it answers 413 over it.
    fn max_payload(&self) -> usize {
        DEFAULT_MAX_PAYLOAD
    }
}

/// A daemon's queue dump, decoded as it arrives.
#[derive(Debug)]
pub struct RemoteItems {
    dump: RemoteDump,
    /// For the wording of a dump that breaks off.
    base: String,
}

impl ItemStream for RemoteItems {
    async fn next_item(&mut self) -> Result<Option<Item>, CliError> {
        self.dump.next_item().await.map_err(wording(&self.base))
    }
}
