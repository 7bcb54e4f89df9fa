//! Remote subscribe: subscribes one of our callback channels to another hookspool's events,
//! so that they arrive on our `POST /callbacks/{channel}` and our channel's handler runs
//! them (two hookspools doing pubsub).

use hookspool::{Backend, QueueId};
use hookspool_webhooks::Hooks;

use crate::client::Client;
use crate::error::Result;
use crate::wire::{NewSubscription, SubscriptionInfo};

impl Client {
    /// Subscribes our `channel` (of `hooks`) to events of the hookspool this client talks
    /// to.
    ///
    /// `subscription` names the event pattern and our callback URL (where the other side
    /// reaches `POST /callbacks/{channel}` of our API), and optionally an owner and headers.
    /// Its secret is ours to choose: the channel's own `whsec_` secret if it has one, else a
    /// new one, stored on the channel **before** subscribing
    /// ([`Hooks::ensure_channel_secret`]), so that the first delivery already verifies and
    /// unsigned or wrongly signed callbacks are refused (401). The channel's queue is
    /// created if needed.
    ///
    /// Idempotent: if the other side already has this subscription (same owner, event and
    /// URL; it then does not show its secret), its secret is rotated to ours, so a restart
    /// with a fresh data directory still ends up verifying.
    ///
    /// ```no_run
    /// # async fn example(hooks: hookspool_webhooks::Hooks<hookspool::MemoryBackend>) -> Result<(), Box<dyn std::error::Error>> {
    /// use hookspool::QueueId;
    /// use hookspool_client::{Client, NewSubscription};
    /// use hookspool_webhooks::Secret;
    ///
    /// let shop = Client::new("http://shop.internal:8080", Some(Secret::new("shop-api-token-0123")))?;
    /// let sub = shop
    ///     .subscribe_channel(
    ///         &hooks,
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
    /// [`crate::Error::Local`] for one of hookspool's own queues or a local storage error;
    /// [`crate::Error::Remote`] for what the other side refuses (a bad event or URL, 401 for
    /// a wrong token); [`crate::Error::Network`].
    pub async fn subscribe_channel<B: Backend>(
        &self,
        hooks: &Hooks<B>,
        channel: &QueueId,
        subscription: NewSubscription,
    ) -> Result<SubscriptionInfo> {
        let secret = hooks.ensure_channel_secret(channel).await?;
        let sub = self.subscribe(&subscription.secret(secret.clone())).await?;
        if sub.secret.is_none() {
            // It existed already, with a secret we may not know: make it ours.
            return self.rotate_secret(&sub.id, Some(&secret)).await;
        }
        Ok(sub)
    }
}
