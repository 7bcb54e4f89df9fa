//! The subscription registry of [`Hooks`]: subscribe and unsubscribe, named emitters,
//! updates, enabling, secret rotation. Subscriptions live in [`crate::SUBSCRIPTIONS_QUEUE`]
//! (one item each) and, for matching at fire time, in memory.

use std::collections::BTreeMap;
use std::sync::Arc;

use hookspool::{Action, Backend, Expect, Move, NewItem, Transition};

use crate::error::{Error, Result};

/// The `Backend::once` space that makes concurrent subscribes of one (owner, event, URL) by
/// several processes create one subscription.
const SUBSCRIBE_SPACE: &str = "hookspool.subscribe";
/// A `Backend::once` call, boxed: its future's type, erased where its lifetimes are
/// concrete, keeps the futures of callers `Send` for the compiler (which cannot prove it
/// through the generic call for every lifetime).
pub(crate) type BoxedOnce<'a> =
    std::pin::Pin<Box<dyn Future<Output = Option<Result<(Vec<u8>, bool)>>> + Send + 'a>>;

/// The same for `attach` of one emitter id.
const ATTACH_SPACE: &str = "hookspool.attach";
/// How long such a name guards: only the moment of creation needs it; after that every
/// process finds the subscription itself.
const SUBSCRIBE_GUARD: std::time::Duration = std::time::Duration::from_secs(10);
use crate::hooks::{Hooks, random_hex};
use crate::net::TargetUrl;
use crate::secret::Secret;
use crate::subscription::{
    EventPattern, Registered, SubscribeOptions, Subscription, SubscriptionUpdate, check_headers,
    check_id, generate_secret, parse_key, phase_of, to_metadata,
};

impl<B: Backend> Hooks<B> {
    /// Subscribes `url` to an event (or pattern, see [`EventPattern`]). Idempotent: if the
    /// same owner already subscribed the same URL to the same event, that subscription is
    /// returned and nothing changes.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`], [`Error::InvalidEvent`], [`Error::InvalidSecret`],
    /// [`Error::InvalidInput`] (owner, headers).
    pub async fn subscribe(
        &self,
        event: &str,
        url: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription> {
        Ok(self.subscribe_or_find(event, url, options).await?.0)
    }

    /// As [`Hooks::subscribe`], and says whether the subscription is new (`true`) or
    /// existed already (`false`: nothing changed, and a caller that did not create it should
    /// not be shown its secret).
    ///
    /// # Errors
    /// As [`Hooks::subscribe`].
    pub async fn subscribe_or_find(
        &self,
        event: &str,
        url: &str,
        options: SubscribeOptions,
    ) -> Result<(Subscription, bool)> {
        let pattern = EventPattern::new(event)?;
        let url = parse_url(url)?;
        let _guard = self.inner.registry_write.lock().await;
        let shared = self.inner.store.backend().capabilities().shared;
        if shared {
            // Another process may have subscribed it since the last reload.
            self.reload_subs().await?;
        }
        let find = |hooks: &Self| {
            hooks.read_subs().values().find_map(|r| {
                let s = &r.sub;
                (s.url == url && s.owner == options.owner && s.events == [pattern.clone()])
                    .then(|| s.clone())
            })
        };
        if let Some(sub) = find(self) {
            return Ok((sub, false));
        }
        if !shared {
            let id = format!("sub_{}", random_hex(10)?);
            let sub = self
                .insert_subscription(id, vec![pattern], url, options)
                .await?;
            return Ok((sub, true));
        }
        // Several processes: the first to write this (owner, event, URL) creates it; one
        // subscribing it at the same moment waits, then finds that subscription.
        let name = format!(
            "{}\n{}\n{}",
            options.owner.as_deref().unwrap_or(""),
            pattern.as_str(),
            url.as_str()
        );
        let created = std::sync::Mutex::new(None);
        let write = || async {
            let id = format!("sub_{}", random_hex(10)?);
            let sub = self
                .insert_subscription(id, vec![pattern.clone()], url.clone(), options.clone())
                .await?;
            let id = sub.id.clone().into_bytes();
            *created
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(sub);
            Ok::<_, Error>(id)
        };
        let now = self.inner.store.now();
        let outcome: BoxedOnce<'_> = Box::pin(self.inner.store.backend().once(
            SUBSCRIBE_SPACE,
            &name,
            SUBSCRIBE_GUARD,
            now,
            write,
        ));
        let outcome = outcome.await;
        if let Some(sub) = created
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            if let Some(Err(e)) = outcome {
                // The subscription is stored; only the guard's record failed.
                tracing::warn!(error = %e, "subscribed, but could not record the subscribe guard");
            }
            return Ok((sub, true));
        }
        match outcome {
            Some(Ok(_)) => {
                self.reload_subs().await?;
                if let Some(sub) = find(self) {
                    return Ok((sub, false));
                }
                // Made and already removed again: this subscribe makes its own.
            }
            Some(Err(e)) => return Err(e),
            None => {}
        }
        let id = format!("sub_{}", random_hex(10)?);
        let sub = self
            .insert_subscription(id, vec![pattern], url, options)
            .await?;
        Ok((sub, true))
    }

    /// On storage shared with other processes, reads every subscription from the store
    /// again now: for a delivery that names one this process has not loaded yet (another
    /// process made it since the last reload). Elsewhere a no-op.
    pub(crate) async fn reload_shared_subs(&self) -> Result<()> {
        if !self.inner.store.backend().capabilities().shared {
            return Ok(());
        }
        let _guard = self.inner.registry_write.lock().await;
        self.reload_subs().await
    }

    /// Reads every subscription from the store again (on storage shared with other
    /// processes, which change them too). Call with `registry_write` held.
    async fn reload_subs(&self) -> Result<()> {
        let subs = crate::hooks::load_subs(&self.inner.store, &self.inner.subs_queue).await?;
        *self.write_subs() = subs;
        Ok(())
    }

    /// Attaches a named emitter: a subscription whose id you choose (so that you can
    /// `detach` it by that name later), for one or more events.
    ///
    /// # Errors
    /// [`Error::SubscriptionExists`] if the id is taken; as [`Hooks::subscribe`] otherwise.
    pub async fn attach(
        &self,
        id: &str,
        events: &[&str],
        url: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription> {
        check_id("emitter id", id)?;
        if events.is_empty() {
            return Err(Error::invalid("attach needs at least one event"));
        }
        let patterns = events
            .iter()
            .map(|e| EventPattern::new(*e))
            .collect::<Result<Vec<_>>>()?;
        let url = parse_url(url)?;
        let _guard = self.inner.registry_write.lock().await;
        let shared = self.inner.store.backend().capabilities().shared;
        if shared {
            self.reload_subs().await?;
        }
        if self.read_subs().contains_key(id) {
            return Err(Error::SubscriptionExists(id.to_owned()));
        }
        if !shared {
            return self
                .insert_subscription(id.to_owned(), patterns, url, options)
                .await;
        }
        // Several processes: the first to attach the id makes it; the others are told it
        // exists.
        let (patterns_again, url_again, options_again) =
            (patterns.clone(), url.clone(), options.clone());
        let created = std::sync::Mutex::new(None);
        let write = || async {
            let sub = self
                .insert_subscription(id.to_owned(), patterns, url, options)
                .await?;
            *created
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(sub);
            Ok::<_, Error>(Vec::new())
        };
        let now = self.inner.store.now();
        let outcome: BoxedOnce<'_> = Box::pin(self.inner.store.backend().once(
            ATTACH_SPACE,
            id,
            SUBSCRIBE_GUARD,
            now,
            write,
        ));
        let outcome = outcome.await;
        if let Some(sub) = created
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            return Ok(sub);
        }
        if let Some(Err(e)) = outcome {
            return Err(e);
        }
        self.reload_subs().await?;
        if self.read_subs().contains_key(id) {
            return Err(Error::SubscriptionExists(id.to_owned()));
        }
        // Attached and detached again within the guard's life: attach it now.
        self.insert_subscription(id.to_owned(), patterns_again, url_again, options_again)
            .await
    }

    /// Detaches a named emitter (removes the subscription). `false` if there was none.
    pub async fn detach(&self, id: &str) -> Result<bool> {
        self.unsubscribe(id).await
    }

    pub(crate) async fn insert_subscription(
        &self,
        id: String,
        events: Vec<EventPattern>,
        url: TargetUrl,
        options: SubscribeOptions,
    ) -> Result<Subscription> {
        if let Some(owner) = &options.owner {
            check_id("owner", owner)?;
        }
        check_headers(&options.headers)?;
        if options.max_in_flight == Some(0) {
            return Err(Error::invalid("max_in_flight must be at least 1"));
        }
        let secret = match options.secret {
            Some(s) => {
                parse_key(options.scheme, s.expose())?;
                s
            }
            None => generate_secret()?,
        };
        let sub = Subscription {
            id,
            url,
            events,
            owner: options.owner,
            scheme: options.scheme,
            secret,
            previous_secret: None,
            headers: options.headers,
            enabled: true,
            max_in_flight: options.max_in_flight,
            strict_fifo: options.strict_fifo,
            created_at: self.inner.store.now(),
        };
        let store = &self.inner.store;
        let item = NewItem {
            payload: Vec::new(),
            metadata: to_metadata(&sub),
            not_before: None,
        };
        let key = store.push(&self.inner.subs_queue, item).await?;
        // A crash here leaves the item `pending`, which loading reads as enabled.
        let transition = Transition {
            expect: Expect::default(),
            action: Action::Move(Move::to(phase_of(&sub))),
        };
        store
            .settle(&self.inner.subs_queue, key, transition)
            .await?;
        self.write_subs()
            .insert(sub.id.clone(), Registered::new(key, sub.clone()));
        Ok(sub)
    }

    /// Removes a subscription. Its deliveries not yet sent end as `cancelled`. `false` if
    /// there was none.
    pub async fn unsubscribe(&self, id: &str) -> Result<bool> {
        let _guard = self.inner.registry_write.lock().await;
        self.remove_subscription(id).await
    }

    pub(crate) async fn remove_subscription(&self, id: &str) -> Result<bool> {
        let Some(key) = self.read_subs().get(id).map(|r| r.key) else {
            return Ok(false);
        };
        self.inner.store.delete(&self.inner.subs_queue, key).await?;
        self.write_subs().remove(id);
        Ok(true)
    }

    /// Removes every subscription of `url`, whatever its events; returns how many were
    /// removed.
    pub async fn deregister_url(&self, url: &str) -> Result<usize> {
        let url = parse_url(url)?;
        let _guard = self.inner.registry_write.lock().await;
        let ids: Vec<String> = self
            .read_subs()
            .values()
            .filter(|r| r.sub.url == url)
            .map(|r| r.sub.id.clone())
            .collect();
        for id in &ids {
            self.remove_subscription(id).await?;
        }
        Ok(ids.len())
    }

    /// Every subscription, ordered by id.
    pub fn subscriptions(&self) -> Vec<Subscription> {
        self.read_subs().values().map(|r| r.sub.clone()).collect()
    }

    /// One subscription.
    pub fn subscription(&self, id: &str) -> Option<Subscription> {
        self.read_subs().get(id).map(|r| r.sub.clone())
    }

    /// One subscription as the registry holds it, shared rather than copied (the delivery
    /// loop's view).
    pub(crate) fn registered(&self, id: &str) -> Option<Arc<Registered>> {
        self.read_subs().get(id).cloned()
    }

    /// Changes a subscription.
    ///
    /// # Errors
    /// [`Error::SubscriptionNotFound`]; as [`Hooks::subscribe`] for the new values.
    pub async fn update(&self, id: &str, update: SubscriptionUpdate) -> Result<Subscription> {
        let _guard = self.inner.registry_write.lock().await;
        let mut sub = self.require(id)?;
        if let Some(url) = update.url {
            sub.url = parse_url(&url)?;
        }
        if let Some(events) = update.events {
            if events.is_empty() {
                return Err(Error::invalid("a subscription needs at least one event"));
            }
            sub.events = events
                .into_iter()
                .map(EventPattern::new)
                .collect::<Result<_>>()?;
        }
        if let Some(headers) = update.headers {
            check_headers(&headers)?;
            sub.headers = headers;
        }
        if let Some(scheme) = update.scheme {
            parse_key(scheme, sub.secret.expose())?;
            sub.scheme = scheme;
        }
        if let Some(enabled) = update.enabled {
            sub.enabled = enabled;
        }
        if let Some(n) = update.max_in_flight {
            if n == Some(0) {
                return Err(Error::invalid("max_in_flight must be at least 1"));
            }
            sub.max_in_flight = n;
        }
        if let Some(fifo) = update.strict_fifo {
            sub.strict_fifo = fifo;
        }
        self.save(sub).await
    }

    /// Enables or disables a subscription. A disabled subscription gets no new deliveries;
    /// its pending ones wait until it is enabled again.
    pub async fn set_enabled(&self, id: &str, enabled: bool) -> Result<Subscription> {
        self.update(
            id,
            SubscriptionUpdate {
                enabled: Some(enabled),
                ..SubscriptionUpdate::default()
            },
        )
        .await
    }

    /// Rotates a subscription's secret (a new random one when `new` is `None`). For the
    /// rotation grace period ([`HooksOptions::rotation_grace`](crate::HooksOptions::rotation_grace)) requests carry signatures
    /// with both the new and the old secret (Standard Webhooks; the other schemes carry one
    /// signature, with the new secret).
    pub async fn rotate_secret(&self, id: &str, new: Option<Secret>) -> Result<Subscription> {
        let _guard = self.inner.registry_write.lock().await;
        let mut sub = self.require(id)?;
        let new = match new {
            Some(s) => {
                parse_key(sub.scheme, s.expose())?;
                s
            }
            None => generate_secret()?,
        };
        let until = self
            .inner
            .store
            .now()
            .saturating_add(self.inner.options.rotation_grace);
        sub.previous_secret = Some((std::mem::replace(&mut sub.secret, new), until));
        self.save(sub).await
    }

    pub(crate) async fn save(&self, sub: Subscription) -> Result<Subscription> {
        let key = self
            .read_subs()
            .get(&sub.id)
            .map(|r| r.key)
            .ok_or_else(|| Error::SubscriptionNotFound(sub.id.clone()))?;
        let action = Move::to(phase_of(&sub)).metadata(to_metadata(&sub));
        let transition = Transition {
            expect: Expect::default(),
            action: Action::Move(action),
        };
        // Nothing needs the item back: settle, which reads no stored data.
        self.inner
            .store
            .settle(&self.inner.subs_queue, key, transition)
            .await?;
        self.write_subs()
            .insert(sub.id.clone(), Registered::new(key, sub.clone()));
        if sub.enabled {
            self.inner.wake.notify_one();
        }
        Ok(sub)
    }

    pub(crate) fn require(&self, id: &str) -> Result<Subscription> {
        self.subscription(id)
            .ok_or_else(|| Error::SubscriptionNotFound(id.to_owned()))
    }

    pub(crate) fn read_subs(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Registered>>> {
        self.inner
            .subs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn write_subs(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Registered>>> {
        self.inner
            .subs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub(crate) fn parse_url(url: &str) -> Result<TargetUrl> {
    TargetUrl::parse(url).map_err(|e| Error::InvalidUrl {
        url: url.to_owned(),
        reason: e.to_string(),
    })
}
