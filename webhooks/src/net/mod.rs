//! The network side of webhook delivery: target URL validation (`url`), the SSRF network
//! policy checked after DNS resolution (`policy`), the HTTP client with its capped response
//! read and the classification of delivery failures (`client`), and `Retry-After` parsing
//! (`retry_after`).
//!
//! Nothing secret passes through these modules except request header values (signatures),
//! and those never appear in an error message or a log line: errors name a header, never its
//! value.

mod client;
mod policy;
mod retry_after;
mod url;

pub use client::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_RESPONSE_BODY, DEFAULT_TIMEOUT, DeliveryClient,
    DeliveryError, HttpConfig, HttpResponse, USER_AGENT,
};
pub use policy::{IpNet, IpNetError, NetworkPolicy};
pub use retry_after::parse_retry_after;
pub use url::{MAX_URL_LEN, TargetUrl, UrlError};

#[cfg(test)]
mod tests {
    /// An address written out, for tests.
    #[allow(clippy::unwrap_used)] // tests may panic on failure
    pub(super) fn ip(s: &str) -> std::net::IpAddr {
        s.parse().unwrap()
    }
}
