//! [`RemoteDump`]: a queue's items read as the dump answer arrives.

use hookspool::Item;
use reqwest::Url;

use super::{MAX_DUMP_LINE, decode_item, invalid_response, network_reason};
use crate::error::{Error, Result};
use crate::wire::ItemView;

/// Reads a queue's items as the dump answer arrives, one JSON line at a time. Made by
/// [`Client::dump`](super::Client::dump).
///
/// ```no_run
/// # async fn example(client: hookspool_client::Client) -> Result<(), Box<dyn std::error::Error>> {
/// let mut dump = client.dump(&hookspool::QueueId::new("orders")?).await?;
/// let mut n = 0;
/// while dump.next_item().await?.is_some() {
///     n += 1;
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RemoteDump {
    response: reqwest::Response,
    url: Url,
    /// Received bytes; `buf[start..]` is not yet decoded.
    buf: Vec<u8>,
    start: usize,
    finished: bool,
}

impl RemoteDump {
    /// Reads `response`, the answer of the dump at `url`.
    pub(super) fn new(response: reqwest::Response, url: Url) -> RemoteDump {
        RemoteDump {
            response,
            url,
            buf: Vec::new(),
            start: 0,
            finished: false,
        }
    }

    /// The next item, or `None` after the last one.
    ///
    /// ```no_run
    /// # async fn example(mut dump: hookspool_client::RemoteDump) -> Result<(), Box<dyn std::error::Error>> {
    /// if let Some(first) = dump.next_item().await? {
    ///     println!("first key {}", first.key);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Network`](crate::Error::Network) if the answer breaks off (the server stops a dump that fails
    /// mid-way by cutting the answer short, so a truncated dump is always reported, never
    /// passed off as complete); [`Error::Remote`](crate::Error::Remote) with code `invalid_response` for a line
    /// that is not an item.
    pub async fn next_item(&mut self) -> Result<Option<Item>> {
        loop {
            if let Some(pos) = self.buf[self.start..].iter().position(|b| *b == b'\n') {
                let line = &self.buf[self.start..self.start + pos];
                self.start += pos + 1;
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let view: ItemView = serde_json::from_slice(line).map_err(|e| {
                    invalid_response(format!(
                        "a line of the dump of {} is not an item: {e}",
                        self.url
                    ))
                })?;
                return decode_item(view).map(Some);
            }
            if self.finished {
                return if self.buf[self.start..].iter().all(u8::is_ascii_whitespace) {
                    Ok(None)
                } else {
                    Err(Error::Network {
                        url: self.url.to_string(),
                        reason: "the dump ended in the middle of an item".to_owned(),
                    })
                };
            }
            // Everything before `start` is decoded: drop it before reading more, so the
            // buffer holds at most one partial line plus one chunk.
            self.buf.drain(..self.start);
            self.start = 0;
            if self.buf.len() > MAX_DUMP_LINE {
                return Err(invalid_response(format!(
                    "a line of the dump of {} is over {MAX_DUMP_LINE} bytes",
                    self.url
                )));
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk),
                Ok(None) => self.finished = true,
                Err(e) => {
                    return Err(Error::Network {
                        url: self.url.to_string(),
                        reason: format!("the dump broke off: {}", network_reason(&e)),
                    });
                }
            }
        }
    }
}
