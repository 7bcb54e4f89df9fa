//! The webhook calls of [`Client`]: subscriptions, publishing, deliveries.

use hookspool_webhooks::Secret;
use reqwest::Method;

use super::{Client, absent_if, read_json, to_body};
use crate::error::Result;
use crate::wire::{
    Delivery, DeliveryId, DeliveryList, NewSubscription, Publish, Published, Removed, RotateSecret,
    SubscriptionInfo, SubscriptionList, TestSent, Unsubscribe,
};

impl Client {
    /// Subscribes a URL to an event (`POST /hooks/subscribe`). A new subscription comes back
    /// with its signing `secret` (the only time the server shows it); subscribing the same
    /// owner, URL and event again returns the existing one without it.
    ///
    /// ```no_run
    /// # async fn example(client: hookspool_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use hookspool_client::NewSubscription;
    /// let sub = client
    ///     .subscribe(&NewSubscription::new("order.*", "https://example.com/hooks").owner("acme"))
    ///     .await?;
    /// let secret = sub.secret.expect("a new subscription shows its secret");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Remote`](crate::Error::Remote): `invalid_event`, `invalid_url`, `invalid_secret` (400).
    pub async fn subscribe(&self, subscription: &NewSubscription) -> Result<SubscriptionInfo> {
        self.call(
            Method::POST,
            self.url(&["hooks", "subscribe"]),
            Some(subscription),
        )
        .await
    }

    /// Removes a subscription by id (`DELETE /hooks/unsubscribe`); `false` if there was none.
    ///
    /// ```no_run
    /// # async fn example(client: hookspool_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let removed = client.unsubscribe("sub_0123").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn unsubscribe(&self, id: &str) -> Result<bool> {
        let body = Unsubscribe {
            id: Some(id.to_owned()),
            target_url: None,
        };
        let url = self.url(&["hooks", "unsubscribe"]);
        let answer = self
            .call::<Removed, _>(Method::DELETE, url, Some(&body))
            .await;
        Ok(absent_if(answer, "subscription_not_found")?.is_some())
    }

    /// Removes every subscription of a target URL (`DELETE /hooks/unsubscribe`); returns how
    /// many there were.
    ///
    /// ```no_run
    /// # async fn example(client: hookspool_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let n = client.unsubscribe_url("https://example.com/hooks").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn unsubscribe_url(&self, target_url: &str) -> Result<u64> {
        let body = Unsubscribe {
            id: None,
            target_url: Some(target_url.to_owned()),
        };
        let url = self.url(&["hooks", "unsubscribe"]);
        let answer: Removed = self.call(Method::DELETE, url, Some(&body)).await?;
        Ok(answer.removed)
    }

    /// One subscription (`GET /hooks/subscriptions/{id}`), without its secret; `None` if
    /// there is no such subscription.
    ///
    /// ```no_run
    /// # async fn example(client: hookspool_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let enabled = client.subscription("sub_0123").await?.is_some_and(|s| s.enabled);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn subscription(&self, id: &str) -> Result<Option<SubscriptionInfo>> {
        let answer = self.get(self.url(&["hooks", "subscriptions", id])).await;
        absent_if(answer, "subscription_not_found")
    }

    /// Rotates a subscription's signing secret to `secret`, or to a new random one
    /// (`POST /hooks/subscriptions/{id}/rotate-secret`); the answer carries the new secret.
    /// The old one keeps signing requests for the server's grace period.
    ///
    /// ```no_run
    /// # async fn example(client: hookspool_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let sub = client.rotate_secret("sub_0123", None).await?;
    /// let new_secret = sub.secret.expect("a rotation shows the new secret");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Remote`](crate::Error::Remote): `subscription_not_found` (404), `invalid_secret` (400).
    pub async fn rotate_secret(
        &self,
        id: &str,
        secret: Option<&Secret>,
    ) -> Result<SubscriptionInfo> {
        let url = self.url(&["hooks", "subscriptions", id, "rotate-secret"]);
        match secret {
            Some(secret) => {
                let body = RotateSecret {
                    secret: Some(secret.clone()),
                };
                self.call(Method::POST, url, Some(&body)).await
            }
            // An empty body asks the server for a random secret.
            None => self.call(Method::POST, url, None::<&()>).await,
        }
    }

    /// Every subscription, or only those of `owner` (`GET /hooks/subscriptions`), by id.
    /// Secrets are not included.
    ///
    /// ```no_run
    /// # async fn example(client: hookspool_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// for sub in client.list_subscriptions(Some("acme")).await? {
    ///     println!("{} -> {}", sub.id, sub.url);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn list_subscriptions(&self, owner: Option<&str>) -> Result<Vec<SubscriptionInfo>> {
        let mut url = self.url(&["hooks", "subscriptions"]);
        if let Some(owner) = owner {
            url.query_pairs_mut().append_pair("owner", owner);
        }
        let answer: SubscriptionList = self.get(url).await?;
        Ok(answer.subscriptions)
    }

    /// Publishes an event (`POST /events`) to every matching subscription (of
    /// `publish.owner`, when given); returns the delivery ids once every delivery is stored.
    /// With an idempotency key, repeating the call returns the first call's ids and delivers
    /// nothing again.
    ///
    /// ```no_run
    /// # async fn example(client: hookspool_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use hookspool_client::Publish;
    /// let published = client
    ///     .publish(&Publish::new("order.paid", &serde_json::json!({"id": 1})).idempotency_key("order-1"))
    ///     .await?;
    /// println!("{} deliveries", published.delivery_ids.len());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Remote`](crate::Error::Remote): `invalid_event` (400), `idempotency_key_reused` (422) when the key
    /// was used for a different event, owner or payload.
    pub async fn publish(&self, publish: &Publish) -> Result<Published> {
        let url = self.url(&["events"]);
        let response = self
            .request(Method::POST, url.clone(), Some(to_body(publish)?), false)
            .await?;
        let replayed = response
            .headers()
            .get("idempotent-replayed")
            .is_some_and(|v| v.as_bytes() == b"true");
        let mut answer: Published = read_json(response, &url).await?;
        answer.replayed = replayed;
        Ok(answer)
    }

    /// A delivery, its state and every attempt (`GET /deliveries/{id}`); `None` if there is
    /// no such delivery.
    ///
    /// ```no_run
    /// # async fn example(client: hookspool_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// if let Some(d) = client.delivery("msg_0123456789abcdef01234567").await? {
    ///     println!("{}: {} attempts", d.state, d.attempts.len());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Remote`](crate::Error::Remote) with code `invalid_input` (400) for a malformed id.
    pub async fn delivery(&self, id: &str) -> Result<Option<Delivery>> {
        let answer = self.get(self.url(&["deliveries", id])).await;
        absent_if(answer, "delivery_not_found")
    }

    /// The newest deliveries, newest first (`GET /deliveries`): at most `limit` (1 to 500),
    /// only `subscription`'s if given, found among the server's newest 2,000.
    ///
    /// # Errors
    /// [`Error::Remote`](crate::Error::Remote) with code `invalid_input` (400) for a limit out of range.
    pub async fn deliveries(
        &self,
        subscription: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        let mut url = self.url(&["deliveries"]);
        {
            let mut q = url.query_pairs_mut();
            if let Some(sub) = subscription {
                q.append_pair("subscription", sub);
            }
            q.append_pair("limit", &limit.to_string());
        }
        let answer: DeliveryList = self.get(url).await?;
        Ok(answer.deliveries)
    }

    /// Sends a subscription one signed test event (`POST /hooks/subscriptions/{id}/test`,
    /// event `hookspool.test`), whatever events it asked for; returns the test delivery's
    /// id, whose outcome [`Client::delivery`] shows.
    ///
    /// # Errors
    /// [`Error::Remote`](crate::Error::Remote): `subscription_not_found` (404); `invalid_input` (400) when the
    /// subscription is disabled.
    pub async fn test_subscription(&self, id: &str) -> Result<DeliveryId> {
        let url = self.url(&["hooks", "subscriptions", id, "test"]);
        let answer: TestSent = self.call(Method::POST, url, None::<&()>).await?;
        Ok(answer.delivery_id)
    }
}
