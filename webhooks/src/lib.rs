//! hookspool-webhooks: webhooks on the hookspool queue engine.
//!
//! (Crate docs are written in full below the module list once the layout settles.)

#[cfg(feature = "delivery")]
mod deliver;
#[cfg(feature = "delivery")]
mod deliveries;
#[cfg(feature = "delivery")]
mod error;
#[cfg(feature = "delivery")]
mod firing;
#[cfg(feature = "delivery")]
mod hooks;
#[cfg(feature = "delivery")]
mod idempotency;
#[cfg(feature = "delivery")]
mod inbound;
#[cfg(feature = "delivery")]
mod json;
#[cfg(feature = "delivery")]
mod net;
#[cfg(feature = "delivery")]
mod retry;
#[cfg(feature = "signing")]
mod secret;
#[cfg(feature = "signing")]
mod signing;
#[cfg(feature = "delivery")]
mod stats;
#[cfg(feature = "delivery")]
mod subscription;
#[cfg(feature = "delivery")]
mod subscriptions;

#[cfg(feature = "delivery")]
pub use deliver::{Deliverer, DeliveryConfig, DeliveryOutcome, OutcomeKind};
#[cfg(feature = "delivery")]
pub use deliveries::{Attempt, Delivery, DeliveryId};
#[cfg(feature = "delivery")]
pub use error::{Error, Result};
#[cfg(feature = "delivery")]
pub use firing::{FireOptions, Fired, RequestId, UrlResolver};
#[cfg(feature = "delivery")]
pub use hooks::{CANCELLED, DELIVERIES_QUEUE, GONE, Hooks, HooksOptions, SUBSCRIPTIONS_QUEUE};
#[cfg(feature = "delivery")]
pub use idempotency::{
    DEFAULT_IDEMPOTENCY_TTL, IDEMPOTENCY_QUEUE, MAX_IDEMPOTENCY_KEY, check_idempotency_key,
};
#[cfg(feature = "delivery")]
pub use inbound::{
    CHANNEL_SECRET, CallbackConfig, CallbackOutcome, CallbackResult, Callbacks, Handler,
    HandlerError, HandlerFn, INTERNAL_PREFIX, Inbound, META_CONTENT_TYPE, META_WEBHOOK_ID,
    channel_secret, handler_fn, set_channel_secret,
};
#[cfg(feature = "delivery")]
pub use json::compact_json;
#[cfg(feature = "delivery")]
pub use net::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_RESPONSE_BODY, DEFAULT_TIMEOUT, DeliveryClient,
    DeliveryError, HttpConfig, HttpResponse, IpNet, IpNetError, MAX_URL_LEN, NetworkPolicy,
    TargetUrl, USER_AGENT, UrlError, parse_retry_after,
};
#[cfg(feature = "delivery")]
pub use retry::{DEFAULT_JITTER, DEFAULT_RETRY_AFTER_MAX, RetrySchedule, STANDARD_DELAYS};
#[cfg(feature = "signing")]
pub use secret::Secret;
#[cfg(feature = "signing")]
pub use signing::{
    GENERATED_KEY_LEN, HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE, HEADER_WEBHOOK_TIMESTAMP,
    HEADER_X_HUB_SIGNATURE_256, HEADER_X_WEBHOOKS_DELIVERY, HEADER_X_WEBHOOKS_EVENT,
    HEADER_X_WEBHOOKS_SIGNATURE, MAX_KEY_LEN, MIN_KEY_LEN, SignInput, SignatureScheme,
    SigningError, SigningKey, TOLERANCE_SECS, VerifyError, WHSEC_PREFIX, sign, verify,
    verify_emitter, verify_github,
};
#[cfg(feature = "delivery")]
pub use stats::{DURATION_BUCKETS, DeliveryStatsSnapshot};
#[cfg(feature = "delivery")]
pub use subscription::{
    DEFAULT_ROTATION_GRACE, EventPattern, MAX_EVENT_LEN, MAX_EXTRA_HEADERS, SubscribeOptions,
    Subscription, SubscriptionInfo, SubscriptionUpdate, check_event_name,
};
