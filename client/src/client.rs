//! [`Client`]: the typed async client of the hookspool HTTP API.

use std::fmt;
use std::time::Duration;

use hookspool::{Item, Key, NewItem, Page, Phase, PhaseCounts, QueueConfig, QueueId, Timestamp};
use hookspool_webhooks::Secret;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use reqwest::{Method, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::wire::{
    Counts, ErrorBody, ItemList, ItemView, NewQueue, PushBody, PushItem, PushedKeys, QueueInfo,
    QueueList, QueueUpdate, Removed, Replayed, SetPhase, Verified, VerifyRequest,
};

mod dump;
mod hooks;

pub use dump::RemoteDump;

/// Default time allowed to establish a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time allowed for a whole request and its answer (all but the streamed dump).
pub const REQUEST_TIMEOUT: Duration = Duration::from_mins(1);
/// Default longest silence while reading an answer (the streamed dump has no total limit,
/// only this one).
pub const READ_TIMEOUT: Duration = Duration::from_mins(1);

/// Longest JSON line of a dump the client buffers (a 1 MiB binary payload is about 1.4 MB
/// of base64): a server that never ends a line cannot exhaust memory.
const MAX_DUMP_LINE: usize = 16 * 1024 * 1024;
/// How much of an error answer is read: error bodies are small JSON objects.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Error code of [`Error::Remote`] when the answer is not what the API sends.
const INVALID_RESPONSE: &str = "invalid_response";

/// Timeouts of a [`Client`].
///
/// ```no_run
/// use std::time::Duration;
/// use hookspool_client::{Client, ClientOptions};
///
/// # fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let options = ClientOptions {
///     timeout: Duration::from_secs(5),
///     ..ClientOptions::default()
/// };
/// let client = Client::with_options("http://127.0.0.1:8080", None, options)?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// Time allowed to establish a connection (default [`CONNECT_TIMEOUT`]).
    pub connect_timeout: Duration,
    /// Time allowed for a whole request and its answer, except the streamed dump (default
    /// [`REQUEST_TIMEOUT`]).
    pub timeout: Duration,
    /// Longest silence while reading an answer, the dump included (default
    /// [`READ_TIMEOUT`]).
    pub read_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: CONNECT_TIMEOUT,
            timeout: REQUEST_TIMEOUT,
            read_timeout: READ_TIMEOUT,
        }
    }
}

/// A typed async client of a hookspool HTTP API (the daemon, or the router mounted in an
/// application). Cheap to clone: clones share one connection pool.
///
/// ```no_run
/// use hookspool_webhooks::Secret;
/// use hookspool_client::Client;
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// // The API may be mounted under a prefix: give it in the base URL.
/// let client = Client::new("https://example.com/hookspool/", Some(Secret::new("token")))?;
/// for queue in client.queues().await? {
///     println!("{}: {} items", queue.id, queue.counts.total());
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Always ends with `/`, so that routes extend the prefix path.
    base: Url,
    token: Option<Secret>,
    options: ClientOptions,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            // `Secret`'s own Debug masks the value.
            .field("token", &self.token)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the API at `base_url` (`http://` or `https://`, optionally with the prefix
    /// path the API is mounted under), sending `token` as a bearer token, with the default
    /// [`ClientOptions`].
    ///
    /// ```no_run
    /// use hookspool_client::Client;
    ///
    /// # fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = Client::new("http://127.0.0.1:8080", None)?;
    /// assert_eq!(client.base_url(), "http://127.0.0.1:8080/");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a URL that does not parse, is not http or https, has no
    /// host, carries credentials, a query or a fragment, or for a token
    /// that cannot be sent in a header.
    pub fn new(base_url: &str, token: Option<Secret>) -> Result<Client> {
        Client::with_options(base_url, token, ClientOptions::default())
    }

    /// Like [`Client::new`], with explicit timeouts.
    ///
    /// ```no_run
    /// use hookspool_client::{Client, ClientOptions};
    ///
    /// # fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = Client::with_options("http://127.0.0.1:8080", None, ClientOptions::default())?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`Client::new`].
    pub fn with_options(
        base_url: &str,
        token: Option<Secret>,
        options: ClientOptions,
    ) -> Result<Client> {
        let base = parse_base(base_url)?;
        if let Some(token) = &token {
            // Checked here so that a bad token fails once, clearly, not on every request.
            let ok = !token.expose().is_empty()
                && HeaderValue::from_str(&format!("Bearer {}", token.expose())).is_ok();
            if !ok {
                return Err(Error::invalid(
                    "the API token must be non-empty visible ASCII",
                ));
            }
        }
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            // The API never redirects; following one could send the token elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hookspool-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::invalid(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            http,
            base,
            token,
            options,
        })
    }

    /// The base URL, normalised to end with `/`.
    ///
    /// ```no_run
    /// # fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = hookspool_client::Client::new("http://host/hookspool", None)?;
    /// assert_eq!(client.base_url(), "http://host/hookspool/");
    /// # Ok(())
    /// # }
    /// ```
    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    // ---- queues -----------------------------------------------------------------------------

    /// Every queue with its settings and counts (`GET /queues`).
    ///
    /// ```no_run
    /// # async fn example(client: hookspool_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let ids: Vec<String> = client.queues().await?.into_iter().map(|q| q.id.to_string()).collect();
    /// # Ok(())
    /// # }
    /// ```
    pub async fn queues(&self) -> Result<Vec<QueueInfo>> {
        let list: QueueList = self.get(self.url(&["queues"])).await?;
        Ok(list.queues)
    }

    /// One queue's settings and counts (`GET /queues/{id}`); `None` if there is no such
    /// queue.
    ///
    /// ```no_run
    /// # async fn example(client: hookspool_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let orders = hookspool::QueueId::new("orders")?;
    /// if let Some(q) = client.queue(&orders).await? {
    ///     println!("{} pending", q.counts.get(&hookspool::Phase::PENDING));
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn queue(&self, id: &QueueId) -> Result<Option<QueueInfo>> {
        let answer = self.get(self.url(&["queues", id.as_str()])).await;
        absent_if(answer, "queue_not_found")
    }

    /// Creates a queue with `config`'s id and settings (`POST /queues`); `created_at` is set
    /// by the server.
    ///
    /// ```no_run
    /// # async fn example(client: hookspool_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use hookspool::{QueueConfig, QueueId, Retention};
    /// let config = QueueConfig::new(QueueId::new("orders")?)
    ///     .with_ttl(Duration::from_secs(3600))
    ///     .with_retention(Retention::Remove);
    /// let created = client.create_queue(&config).await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Remote`] with code `queue_exists` (409) if the id is taken.
    pub async fn create_queue(&self, config: &QueueConfig) -> Result<QueueInfo> {
        let body = NewQueue::of(config);
        self.call(Method::POST, self.url(&["queues"]), Some(&body))
            .await
    }

    /// Changes some of a queue's settings (`PATCH /queues/{id}`); items are kept.
    ///
    /// ```no_run
    /// # async fn example(client: hookspool_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use hookspool_client::QueueUpdate;
    /// let update = QueueUpdate { ttl: Some(None), ..QueueUpdate::default() }; // remove the TTL
    /// client.update_queue(&hookspool::QueueId::new("orders")?, &update).await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Remote`] with code `queue_not_found` (404) if there is no such queue.
    pub async fn update_queue(&self, id: &QueueId, update: &QueueUpdate) -> Result<QueueInfo> {
        self.call(
            Method::PATCH,
            self.url(&["queues", id.as_str()]),
            Some(update),
        )
        .await
    }

    /// Deletes a queue and all its items (`DELETE /queues/{id}`); `false` if there was no
    /// such queue.
    ///
    /// ```no_run
    /// # async fn example(client: hookspool_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let deleted = client.delete_queue(&hookspool::QueueId::new("orders")?).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn delete_queue(&self, id: &QueueId) -> Result<bool> {
        let answer = self
            .send(Method::DELETE, self.url(&["queues", id.as_str()]), None)
            .await;
        Ok(absent_if(answer, "queue_not_found")?.is_some())
    }

    // ---- items ------------------------------------------------------------------------------

    /// A page of a queue's items (`GET /queues/{id}/items`): `page.phase`, `offset`, `limit`
    /// (1 to the server's batch limit), `reverse` and `after` as in
    /// [`Store::fetch_page`](hookspool::Store::fetch_page).
    ///
    /// ```no_run
    /// # async fn example(client: hookspool_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use hookspool::{Page, Phase, QueueId};
    /// let dead = client
    ///     .fetch_page(&QueueId::new("orders")?, &Page::first(10).phase(Phase::DEAD))
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn fetch_page(&self, id: &QueueId, page: &Page) -> Result<Vec<Item>> {
        let mut url = self.url(&["queues", id.as_str(), "items"]);
        {
            let mut q = url.query_pairs_mut();
            if let Some(phase) = &page.phase {
                q.append_pair("phase", phase.as_str());
            }
            if let Some(after) = page.after {
                q.append_pair("after", &after.to_string());
            }
            q.append_pair("offset", &page.offset.to_string());
            q.append_pair("limit", &page.limit.to_string());
            q.append_pair("reverse", if page.reverse { "true" } else { "false" });
        }
        let list: ItemList = self.get(url).await?;
        list.items.into_iter().map(decode_item).collect()
    }

    /// The item with this key, whatever its phase (`GET /queues/{id}/items/{key}`); `None`
    /// if the queue has no such item.
    ///
    /// ```no_run
    /// # async fn example(client: hookspool_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let item = client.fetch_key(&hookspool::QueueId::new("orders")?, 42).await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Remote`] with code `queue_not_found` if there is no such queue.
    pub async fn fetch_key(&self, id: &QueueId, key: Key) -> Result<Option<Item>> {
        let url = self.url(&["queues", id.as_str(), "items", &key.to_string()]);
        let answer = self.get::<ItemView>(url).await;
        absent_if(answer, "item_not_found")?
            .map(decode_item)
            .transpose()
    }

    /// Item counts by phase (`GET /queues/{id}/count`); phases with no items are absent, as
    /// from [`Store::counts`](hookspool::Store::counts).
    ///
    /// ```no_run
    /// # async fn example(client: hookspool_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let counts = client.counts(&hookspool::QueueId::new("orders")?).await?;
    /// println!("{} items, {} dead", counts.total(), counts.get(&hookspool::Phase::DEAD));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn counts(&self, id: &QueueId) -> Result<PhaseCounts> {
        let answer: Counts = self
            .get(self.url(&["queues", id.as_str(), "count"]))
            .await?;
        answer.to_phase_counts().map_err(invalid_response)
    }

    /// How many items a queue holds, in every phase.
    ///
    /// ```no_run
    /// # async fn example(client: hookspool_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let n = client.count(&hookspool::QueueId::new("orders")?).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn count(&self, id: &QueueId) -> Result<u64> {
        let answer: Counts = self
            .get(self.url(&["queues", id.as_str(), "count"]))
            .await?;
        Ok(answer.total)
    }

    /// How many items a queue holds in one phase (`GET /queues/{id}/count?phase=`).
    ///
    /// ```no_run
    /// # async fn example(client: hookspool_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use hookspool::{Phase, QueueId};
    /// let dead = client.count_phase(&QueueId::new("orders")?, &Phase::DEAD).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn count_phase(&self, id: &QueueId, phase: &Phase) -> Result<u64> {
        let mut url = self.url(&["queues", id.as_str(), "count"]);
        url.query_pairs_mut().append_pair("phase", phase.as_str());
        let answer: Counts = self.get(url).await?;
        Ok(answer.total)
    }

    /// Starts reading every item of a queue, oldest first (`GET /queues/{id}/dump`, JSON
    /// lines): the answer is decoded as it arrives, so a queue of any size is read in
    /// constant memory. Call [`RemoteDump::next_item`] until it returns `None`.
    ///
    /// ```no_run
    /// # async fn example(client: hookspool_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut dump = client.dump(&hookspool::QueueId::new("orders")?).await?;
    /// while let Some(item) = dump.next_item().await? {
    ///     println!("{} {}", item.key, item.phase);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Remote`] with code `queue_not_found` before any item if there is no such
    /// queue; later, from `next_item`, [`Error::Network`] if the answer breaks off.
    pub async fn dump(&self, id: &QueueId) -> Result<RemoteDump> {
        let url = self.url(&["queues", id.as_str(), "dump"]);
        let response = self.request(Method::GET, url.clone(), None, true).await?;
        Ok(RemoteDump::new(response, url))
    }

    /// Calls `each` with every item of a queue, oldest first, as the dump arrives; returns how
    /// many items there were. An error from `each` stops the dump and is returned.
    ///
    /// ```no_run
    /// # async fn example(client: hookspool_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut bytes = 0;
    /// let n = client
    ///     .dump_each(&hookspool::QueueId::new("orders")?, |item| {
    ///         bytes += item.payload.len();
    ///         Ok(())
    ///     })
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`Client::dump`] and [`RemoteDump::next_item`], or `each`'s own error.
    pub async fn dump_each(
        &self,
        id: &QueueId,
        mut each: impl FnMut(Item) -> Result<()>,
    ) -> Result<u64> {
        let mut dump = self.dump(id).await?;
        let mut n = 0;
        while let Some(item) = dump.next_item().await? {
            each(item)?;
            n += 1;
        }
        Ok(n)
    }

    /// Removes every item of a queue, which stays (`POST /queues/{id}/reset`); returns how
    /// many were removed.
    ///
    /// ```no_run
    /// # async fn example(client: hookspool_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let removed = client.reset(&hookspool::QueueId::new("orders")?).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn reset(&self, id: &QueueId) -> Result<u64> {
        let url = self.url(&["queues", id.as_str(), "reset"]);
        let answer: Removed = self.call(Method::POST, url, None::<&()>).await?;
        Ok(answer.removed)
    }

    /// Pushes one item (`POST /queues/{id}/items`); returns its key. The payload is sent as
    /// base64, so any bytes are stored exactly. A `not_before` is sent as a delay from this
    /// machine's clock, and the server schedules it on its own.
    ///
    /// ```no_run
    /// # async fn example(client: hookspool_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use hookspool::{NewItem, QueueId};
    /// let item = NewItem::new(br#"{"id":1}"#.to_vec()).with_metadata("event", "order.paid");
    /// let key = client.push(&QueueId::new("orders")?, item).await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Remote`]: `queue_not_found` (404), `payload_too_large` or `body_too_large`
    /// (413), `invalid_input` (400).
    pub async fn push(&self, id: &QueueId, item: NewItem) -> Result<Key> {
        let keys = self.push_batch(id, vec![item]).await?;
        match keys.as_slice() {
            [key] => Ok(*key),
            _ => Err(invalid_response(format!(
                "pushing one item returned {} keys",
                keys.len()
            ))),
        }
    }

    /// Pushes several items atomically (all or none); returns their keys in order.
    ///
    /// ```no_run
    /// # async fn example(client: hookspool_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use hookspool::{NewItem, QueueId};
    /// let items = vec![NewItem::new(b"a".to_vec()), NewItem::new(b"b".to_vec())];
    /// let keys = client.push_batch(&QueueId::new("orders")?, items).await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`Client::push`], and `batch_too_large` (413).
    pub async fn push_batch(&self, id: &QueueId, items: Vec<NewItem>) -> Result<Vec<Key>> {
        let now = Timestamp::now();
        let body = PushBody {
            items: Some(items.into_iter().map(|i| PushItem::of(i, now)).collect()),
            ..PushBody::default()
        };
        let url = self.url(&["queues", id.as_str(), "items"]);
        let answer: PushedKeys = self.call(Method::POST, url, Some(&body)).await?;
        Ok(answer.keys)
    }

    /// Deletes one item, whatever its phase (`DELETE /queues/{id}/items/{key}`); `false` if
    /// the queue has no such item.
    ///
    /// ```no_run
    /// # async fn example(client: hookspool_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let deleted = client.delete(&hookspool::QueueId::new("orders")?, 42).await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Remote`] with code `queue_not_found` if there is no such queue.
    pub async fn delete(&self, id: &QueueId, key: Key) -> Result<bool> {
        let url = self.url(&["queues", id.as_str(), "items", &key.to_string()]);
        let answer = self.send(Method::DELETE, url, None).await;
        Ok(absent_if(answer, "item_not_found")?.is_some())
    }

    /// Moves one item to `phase` (`PUT /queues/{id}/items/{key}/phase`), whatever its phase
    /// now; returns the item as it is now. As `Store::update_phase`.
    ///
    /// ```no_run
    /// # async fn example(client: hookspool_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use hookspool::{Phase, QueueId};
    /// let item = client
    ///     .update_phase(&QueueId::new("orders")?, 42, &Phase::new("needs-review")?)
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Remote`]: `item_not_found` (404), `invalid_input` (400) for `in_flight`.
    pub async fn update_phase(&self, id: &QueueId, key: Key, phase: &Phase) -> Result<Item> {
        self.put_phase(id, key, phase, None).await
    }

    /// Moves one item to `phase` only if it is in `expected` now (compare-and-set, `PUT
    /// /queues/{id}/items/{key}/phase` with `if_phase`); returns the item as it is now. As
    /// `Store::update_phase_if`.
    ///
    /// ```no_run
    /// # async fn example(client: hookspool_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use hookspool::{Phase, QueueId};
    /// let review = Phase::new("needs-review")?;
    /// let item = client
    ///     .update_phase_if(&QueueId::new("orders")?, 42, &Phase::DEAD, &review)
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Remote`]: `item_not_found` (404), `phase_conflict` (409) when the item is not
    /// in `expected`, `invalid_input` (400) for `in_flight`.
    pub async fn update_phase_if(
        &self,
        id: &QueueId,
        key: Key,
        expected: &Phase,
        phase: &Phase,
    ) -> Result<Item> {
        self.put_phase(id, key, phase, Some(expected)).await
    }

    async fn put_phase(
        &self,
        id: &QueueId,
        key: Key,
        phase: &Phase,
        if_phase: Option<&Phase>,
    ) -> Result<Item> {
        let url = self.url(&["queues", id.as_str(), "items", &key.to_string(), "phase"]);
        let body = SetPhase {
            phase: phase.as_str().to_owned(),
            if_phase: if_phase.map(|p| p.as_str().to_owned()),
        };
        decode_item(self.call(Method::PUT, url, Some(&body)).await?)
    }

    /// Moves one dead item back to pending, due now (`POST /queues/{id}/items/{key}/replay`);
    /// returns the item as it is now.
    ///
    /// ```no_run
    /// # async fn example(client: hookspool_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let item = client.replay(&hookspool::QueueId::new("orders")?, 42).await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Remote`]: `item_not_found` (404), `phase_conflict` (409) if it is not dead.
    pub async fn replay(&self, id: &QueueId, key: Key) -> Result<Item> {
        let url = self.url(&["queues", id.as_str(), "items", &key.to_string(), "replay"]);
        decode_item(self.call(Method::POST, url, None::<&()>).await?)
    }

    /// Moves every dead item of a queue back to pending (`POST /queues/{id}/replay`); returns
    /// how many.
    ///
    /// ```no_run
    /// # async fn example(client: hookspool_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let n = client.replay_dead(&hookspool::QueueId::new("orders")?).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn replay_dead(&self, id: &QueueId) -> Result<u64> {
        let url = self.url(&["queues", id.as_str(), "replay"]);
        let answer: Replayed = self.call(Method::POST, url, None::<&()>).await?;
        Ok(answer.replayed)
    }

    /// Checks the stored data of every item (`POST /verify`); with `quarantine`, moves each
    /// damaged item to the phase `corrupt`. One request for the whole store: it takes as
    /// long as reading everything.
    pub async fn verify(&self, quarantine: bool) -> Result<hookspool::VerifyReport> {
        let url = self.url(&["verify"]);
        let answer: Verified = self
            .call(Method::POST, url, Some(&VerifyRequest { quarantine }))
            .await?;
        answer.try_into().map_err(invalid_response)
    }

    // ---- plumbing ---------------------------------------------------------------------------

    /// The base URL with these path segments appended, each percent-encoded.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        // `parse_base` only accepts http(s) URLs with a host, which can always be a base.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    async fn get<T: DeserializeOwned>(&self, url: Url) -> Result<T> {
        self.call(Method::GET, url, None::<&()>).await
    }

    /// Sends a request with an optional JSON body and decodes the JSON answer.
    async fn call<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        url: Url,
        body: Option<&B>,
    ) -> Result<T> {
        let body = body.map(to_body).transpose()?;
        let response = self.request(method, url.clone(), body, false).await?;
        read_json(response, &url).await
    }

    /// Sends a request whose answer has no body worth reading (204).
    async fn send(&self, method: Method, url: Url, body: Option<Vec<u8>>) -> Result<()> {
        self.request(method, url, body, false).await.map(drop)
    }

    /// Sends a request; a non-2xx answer becomes [`Error::Remote`], no answer
    /// [`Error::Network`]. `streaming` answers have no total time limit, only the read
    /// timeout.
    async fn request(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        streaming: bool,
    ) -> Result<reqwest::Response> {
        let mut req = self.http.request(method, url.clone());
        if !streaming {
            req = req.timeout(self.options.timeout);
        }
        if let Some(token) = &self.token {
            // `bearer_auth` marks the header sensitive, so reqwest never logs it.
            req = req.bearer_auth(token.expose());
        }
        if let Some(body) = body {
            req = req
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body);
        }
        let response = req.send().await.map_err(|e| network(&url, &e))?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(remote_error(response, &url).await)
        }
    }
}

/// Parses and checks a base URL, and makes its path end with `/`.
fn parse_base(base_url: &str) -> Result<Url> {
    let bad = |reason: &str| Error::invalid(format!("hookspool URL {base_url:?} {reason}"));
    let mut url = Url::parse(base_url.trim()).map_err(|e| bad(&format!("does not parse: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must start with http:// or https://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "must not carry credentials; pass the API token separately",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not have a query or a fragment"));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// Turns an answer that is "not found" with this code into `None`.
fn absent_if<T>(answer: Result<T>, not_found_code: &str) -> Result<Option<T>> {
    match answer {
        Ok(v) => Ok(Some(v)),
        Err(Error::Remote {
            status: 404, code, ..
        }) if code == not_found_code => Ok(None),
        Err(e) => Err(e),
    }
}

fn to_body<B: Serialize + ?Sized>(body: &B) -> Result<Vec<u8>> {
    serde_json::to_vec(body).map_err(|e| Error::invalid(format!("cannot encode the request: {e}")))
}

/// An item of an answer, its payload decoded back to bytes.
fn decode_item(view: ItemView) -> Result<Item> {
    view.into_item().map_err(invalid_response)
}

fn invalid_response(message: impl Into<String>) -> Error {
    Error::Remote {
        status: 200,
        code: INVALID_RESPONSE.to_owned(),
        message: message.into(),
    }
}

/// What a failed send becomes: the URL, and the causes without reqwest's own wrapper (which
/// repeats the URL).
fn network(url: &Url, e: &reqwest::Error) -> Error {
    Error::Network {
        url: url.to_string(),
        reason: network_reason(e),
    }
}

fn network_reason(e: &reqwest::Error) -> String {
    let mut causes: Vec<String> = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !causes.iter().any(|c| c == &text) {
            causes.push(text);
        }
        source = cause.source();
    }
    if e.is_timeout() {
        "timed out".to_owned()
    } else if let (true, Some(root)) = (e.is_connect(), causes.last()) {
        // The innermost cause says it ("Connection refused", "Name or service not known");
        // the layers above only repeat "connect error".
        format!("cannot connect: {root}")
    } else if causes.is_empty() {
        e.to_string()
    } else {
        causes.join(": ")
    }
}

/// Reads an error answer into [`Error::Remote`].
async fn remote_error(mut response: reqwest::Response, url: &Url) -> Error {
    let status = response.status();
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => return network(url, &e),
        }
    }
    if let Ok(b) = serde_json::from_slice::<ErrorBody>(&body) {
        return Error::Remote {
            status: status.as_u16(),
            code: b.error,
            message: b.message,
        };
    }
    let text = String::from_utf8_lossy(&body);
    let text: String = text.chars().take(200).collect();
    Error::Remote {
        status: status.as_u16(),
        code: INVALID_RESPONSE.to_owned(),
        message: format!(
            "{url} answered {status} without the API's JSON error (is this a hookspool API?): \
             {}",
            text.trim()
        ),
    }
}

async fn read_json<T: DeserializeOwned>(response: reqwest::Response, url: &Url) -> Result<T> {
    let bytes = response.bytes().await.map_err(|e| network(url, &e))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        invalid_response(format!(
            "the answer of {url} is not what the hookspool API sends: {e}"
        ))
    })
}

#[cfg(test)]
mod tests;
