//! Remote subscribe (Toot's "sources"): registers one of our callback channels with another
//! hookspool, so that its events arrive on our `POST /callbacks/{channel}` and our channel's
//! handler runs them.

use super::Hooks;
use super::subscription::generate_secret;
use crate::backend::Backend;
use crate::client::{Client, NewSubscription, SubscriptionInfo};
use crate::error::{Error, Result};
use crate::model::{QueueConfig, QueueId, Secret};
use crate::signing::SigningKey;

impl<B: Backend> Hooks<B> {
    /// Subscribes `channel` to events of the hookspool that `remote` talks to.
    ///
    /// `subscription` names the event pattern and our callback URL (where the remote reaches
    /// `POST /callbacks/{channel}` of our API), and optionally an owner and headers. Its secret
    /// is ours to choose: the channel's own `whsec_` secret if it has one, else a new one,
    /// stored on the channel **before** subscribing, so that the first delivery already
    /// verifies and unsigned or wrongly signed callbacks are refused (401). The channel's
    /// queue is created if needed.
    ///
    /// Idempotent: if the remote already has this subscription (same owner, event and URL; it
    /// then does not show its secret), its secret is rotated to ours, so a restart with a
    /// fresh data directory still ends up verifying.
    ///
    /// ```no_run
    /// # async fn example(hooks: hookspool::Hooks<hookspool::MemoryBackend>) -> hookspool::Result<()> {
    /// use hookspool::QueueId;
    /// use hookspool::client::{Client, NewSubscription};
    ///
    /// let shop = Client::new("http://shop.internal:8080", Some(hookspool::Secret::new("shop-api-token-0123")))?;
    /// let sub = hooks
    ///     .subscribe_remote(
    ///         &shop,
    ///         &QueueId::new("orders")?,
    ///         NewSubscription::new("order.*", "http://billing.internal:8080/callbacks/orders"),
    ///     )
    ///     .await?;
    /// println!("subscribed as {}", sub.id);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an internal channel name; [`Error::Remote`] for what the
    /// remote refuses (a bad event or URL, 401 for a wrong token); network errors.
    pub async fn subscribe_remote(
        &self,
        remote: &Client,
        channel: &QueueId,
        subscription: NewSubscription,
    ) -> Result<SubscriptionInfo> {
        if channel.as_str().starts_with("hookspool.") {
            return Err(Error::invalid(format!(
                "{channel} is one of hookspool's own queues, not a callback channel"
            )));
        }
        let secret = self.channel_secret(channel).await?;
        let sub = remote
            .subscribe(&subscription.secret(secret.clone()))
            .await?;
        if sub.secret.is_none() {
            // It existed already, with a secret we may not know: make it ours.
            return remote.rotate_secret(&sub.id, Some(&secret)).await;
        }
        Ok(sub)
    }

    /// The channel's signing secret, set (and the queue created) first if it has none.
    async fn channel_secret(&self, channel: &QueueId) -> Result<Secret> {
        let store = self.store();
        if let Some(q) = store.queue(channel).await? {
            let usable = q
                .secret
                .as_ref()
                .filter(|s| SigningKey::from_whsec(s.expose()).is_ok());
            if let Some(s) = usable {
                return Ok(s.clone());
            }
            let secret = generate_secret()?;
            store.update_queue(q.with_secret(secret.clone())).await?;
            return Ok(secret);
        }
        let secret = generate_secret()?;
        match store
            .create_queue(QueueConfig::new(channel.clone()).with_secret(secret.clone()))
            .await
        {
            Ok(_) => Ok(secret),
            // Created meanwhile by someone else: use theirs.
            Err(Error::QueueExists(_)) => Box::pin(self.channel_secret(channel)).await,
            Err(e) => Err(e),
        }
    }
}
