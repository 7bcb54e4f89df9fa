//! The HTTP client of the delivery loop: one connection pool, a resolver that applies the
//! network policy to every address, redirects never followed, the response read capped, and
//! each failure classified ([`DeliveryError`]).

use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

use super::policy::NetworkPolicy;
use super::retry_after::parse_retry_after;
use super::url::TargetUrl;

/// Default time allowed to establish a connection (TCP and TLS).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time allowed for a whole request: connect, send, response head and the body read.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// Default number of response body bytes read and kept (the attempt log keeps the first KiB).
pub const DEFAULT_MAX_RESPONSE_BODY: usize = 1024;
/// The `User-Agent` of every delivery request.
pub const USER_AGENT: &str = concat!("hookspool/", env!("CARGO_PKG_VERSION"));

/// How long an idle keep-alive connection stays in the pool.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Why a delivery request got no HTTP response.
///
/// Messages never contain header values (signatures) nor the target URL (it may carry tokens).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// The target's address is refused by the [`NetworkPolicy`] (for a host name: every
    /// address it resolved to). Nothing was sent.
    #[error("target host {host} resolves to {addr}, which the network policy refuses")]
    Forbidden {
        /// The host of the target URL.
        host: String,
        /// A refused address (the first one, when several were refused).
        addr: IpAddr,
    },
    /// The connect timeout or the total timeout elapsed.
    #[error("the request timed out")]
    Timeout,
    /// No connection could be made (refused, reset, unreachable, TLS handshake failure).
    #[error("could not connect: {0}")]
    Connect(String),
    /// The host name did not resolve.
    #[error("could not resolve the target host: {0}")]
    Dns(String),
    /// A request header given by the caller has an invalid name or value. Nothing was sent.
    #[error("invalid request header {name:?}: names must be HTTP tokens, values visible ASCII")]
    InvalidHeader {
        /// The header name (the value is never shown: it may be a signature).
        name: String,
    },
    /// Any other failure (e.g. the connection closed before a response arrived).
    #[error("request failed: {0}")]
    Other(String),
}

impl DeliveryError {
    /// A short stable name of the failure class, for attempt logs and metrics:
    /// `"forbidden"`, `"timeout"`, `"connect"`, `"dns"`, `"invalid_header"`, `"other"`.
    pub fn class(&self) -> &'static str {
        match self {
            Self::Forbidden { .. } => "forbidden",
            Self::Timeout => "timeout",
            Self::Connect(_) => "connect",
            Self::Dns(_) => "dns",
            Self::InvalidHeader { .. } => "invalid_header",
            Self::Other(_) => "other",
        }
    }

    /// Whether trying again later can succeed. A refused address or an invalid header is a
    /// configuration problem that a retry cannot fix; network failures are retried.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Forbidden { .. } | Self::InvalidHeader { .. })
    }
}

/// What the resolver reports to [`classify`] through reqwest's error chain.
#[derive(Debug)]
enum ResolveError {
    Refused { host: String, addr: IpAddr },
    Lookup { host: String, message: String },
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused { host, addr } => {
                write!(f, "{host} resolves only to refused addresses ({addr})")
            }
            Self::Lookup { host, message } => write!(f, "{host}: {message}"),
        }
    }
}

impl StdError for ResolveError {}

/// Maps a reqwest error to a [`DeliveryError`]. Our resolver's errors are found by walking
/// the source chain, because hyper wraps them in its own connect errors.
fn classify(err: &reqwest::Error) -> DeliveryError {
    let mut source: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(resolve) = e.downcast_ref::<ResolveError>() {
            return match resolve {
                ResolveError::Refused { host, addr } => DeliveryError::Forbidden {
                    host: host.clone(),
                    addr: *addr,
                },
                ResolveError::Lookup { .. } => DeliveryError::Dns(resolve.to_string()),
            };
        }
        source = e.source();
    }
    if err.is_timeout() {
        DeliveryError::Timeout
    } else if err.is_connect() {
        DeliveryError::Connect(chain_message(err))
    } else {
        DeliveryError::Other(chain_message(err))
    }
}

/// The error and its causes, joined with `": "`. The caller strips the URL first.
fn chain_message(err: &(dyn StdError + 'static)) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        message.push_str(": ");
        message.push_str(&e.to_string());
        source = e.source();
    }
    message
}

/// Settings of a [`DeliveryClient`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    /// Time allowed to establish a connection (TCP and TLS). Default 5 s.
    pub connect_timeout: Duration,
    /// Time allowed for the whole request, including reading the kept part of the response
    /// body. Default 15 s.
    pub timeout: Duration,
    /// How many bytes of the response body are read and kept; the rest is never read.
    /// Default 1 KiB.
    pub max_response_body: usize,
    /// Which addresses may be connected to. Default: [`NetworkPolicy::new`].
    pub policy: NetworkPolicy,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            max_response_body: DEFAULT_MAX_RESPONSE_BODY,
            policy: NetworkPolicy::new(),
        }
    }
}

/// The HTTP response to one delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code. Redirects are not followed: a 3xx is returned as it is.
    pub status: u16,
    /// The `Retry-After` header as a delay (see [`parse_retry_after`]), if present and valid.
    pub retry_after: Option<Duration>,
    /// The first bytes of the body, at most [`HttpConfig::max_response_body`]. If the body
    /// failed or timed out midway, what arrived before.
    pub body_prefix: Vec<u8>,
    /// Time from sending the request to having read `body_prefix`.
    pub duration: Duration,
}

impl HttpResponse {
    /// Whether the status is 2xx (the only success of a webhook delivery).
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Resolves host names with the system resolver and drops the addresses the policy refuses,
/// so that the connection can only go to a permitted address.
struct PolicyResolver {
    policy: Arc<NetworkPolicy>,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = Arc::clone(&self.policy);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: reqwest substitutes the URL's port or the scheme's default.
            let resolved = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| ResolveError::Lookup {
                    host: host.clone(),
                    message: e.to_string(),
                })?;
            let mut permitted: Vec<SocketAddr> = Vec::new();
            let mut refused: Option<IpAddr> = None;
            for addr in resolved {
                if policy.permits(addr.ip()) {
                    permitted.push(addr);
                } else if refused.is_none() {
                    refused = Some(addr.ip());
                }
            }
            if permitted.is_empty() {
                let err = match refused {
                    Some(addr) => ResolveError::Refused { host, addr },
                    None => ResolveError::Lookup {
                        host,
                        message: "no addresses".to_owned(),
                    },
                };
                return Err(err.into());
            }
            let addrs: Addrs = Box::new(permitted.into_iter());
            Ok(addrs)
        })
    }
}

/// The HTTP client for deliveries.
///
/// reqwest with rustls and a keep-alive connection pool; redirects are never followed; no
/// proxy is used (a proxy would connect on our behalf, past the network policy); connect and
/// total timeouts; `User-Agent: hookspool/<version>`. Host names are resolved by a resolver
/// that drops the addresses the [`NetworkPolicy`] refuses; IP-literal hosts (which reqwest does
/// not resolve) are checked before anything is sent. Cheap to clone: clones share the pool.
#[derive(Clone, Debug)]
pub struct DeliveryClient {
    client: reqwest::Client,
    policy: Arc<NetworkPolicy>,
    max_response_body: usize,
}

impl DeliveryClient {
    /// Builds a client.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Other`] when the TLS backend cannot be initialised.
    pub fn new(cfg: HttpConfig) -> Result<Self, DeliveryError> {
        let policy = Arc::new(cfg.policy);
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.timeout)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .user_agent(USER_AGENT)
            .dns_resolver(Arc::new(PolicyResolver {
                policy: Arc::clone(&policy),
            }))
            .build()
            .map_err(|e| DeliveryError::Other(chain_message(&e)))?;
        Ok(Self {
            client,
            policy,
            max_response_body: cfg.max_response_body,
        })
    }

    /// The network policy this client enforces.
    pub fn policy(&self) -> &NetworkPolicy {
        &self.policy
    }

    /// POSTs `body` with `headers` (sent in order; a repeated name is sent repeatedly; a
    /// `user-agent` given here replaces the default) and reads at most `max_response_body`
    /// bytes of the response body, chunk by chunk: the rest of a large body is never read.
    ///
    /// Any HTTP response is `Ok`, whatever its status (3xx included: redirects are not
    /// followed). A body that fails or times out after the status arrived still gives `Ok`
    /// with the bytes read so far: the status is the receiver's answer.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Forbidden`] when the target address is refused (nothing is sent),
    /// [`DeliveryError::InvalidHeader`] for a bad header name or value, and
    /// `Timeout` / `Connect` / `Dns` / `Other` when no response arrived.
    pub async fn post(
        &self,
        url: &TargetUrl,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> Result<HttpResponse, DeliveryError> {
        // reqwest connects to an IP-literal host without asking the resolver.
        if let Some(ip) = url.ip_literal()
            && !self.policy.permits(ip)
        {
            return Err(DeliveryError::Forbidden {
                host: url.host_str().to_owned(),
                addr: ip,
            });
        }
        let header_map = header_map(headers)?;
        let started = Instant::now();
        let mut response = self
            .client
            .post(url.as_url().clone())
            .headers(header_map)
            .body(body)
            .send()
            .await
            .map_err(|e| classify(&e.without_url()))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let body_prefix = read_prefix(&mut response, self.max_response_body).await;
        Ok(HttpResponse {
            status,
            retry_after,
            body_prefix,
            duration: started.elapsed(),
        })
    }
}

fn header_map(headers: &[(String, String)]) -> Result<HeaderMap, DeliveryError> {
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let invalid = || DeliveryError::InvalidHeader { name: name.clone() };
        let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
        let header_value = HeaderValue::from_str(value).map_err(|_| invalid())?;
        map.append(header_name, header_value);
    }
    Ok(map)
}

/// Reads at most `max` bytes of the body. Dropping the response afterwards closes a
/// connection whose body was not read to the end, so a huge body is never downloaded.
async fn read_prefix(response: &mut reqwest::Response, max: usize) -> Vec<u8> {
    let expected = response
        .content_length()
        .map_or(max, |len| usize::try_from(len).unwrap_or(max));
    let mut prefix = Vec::with_capacity(expected.min(max));
    while prefix.len() < max {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = max - prefix.len();
                prefix.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    prefix
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on failure
mod tests {
    use super::super::tests::ip;
    use super::*;

    #[test]
    fn error_classes_and_retryability() {
        let forbidden = DeliveryError::Forbidden {
            host: "localhost".into(),
            addr: ip("127.0.0.1"),
        };
        assert_eq!(forbidden.class(), "forbidden");
        assert!(!forbidden.is_retryable());
        assert!(forbidden.to_string().contains("localhost"));
        assert!(forbidden.to_string().contains("127.0.0.1"));
        let header = DeliveryError::InvalidHeader { name: "x".into() };
        assert_eq!(header.class(), "invalid_header");
        assert!(!header.is_retryable());
        for (err, class) in [
            (DeliveryError::Timeout, "timeout"),
            (DeliveryError::Connect("refused".into()), "connect"),
            (DeliveryError::Dns("nx".into()), "dns"),
            (DeliveryError::Other("eof".into()), "other"),
        ] {
            assert_eq!(err.class(), class);
            assert!(err.is_retryable(), "{class}");
        }
    }

    #[test]
    fn invalid_header_error_never_shows_the_value() {
        let headers = vec![(
            "webhook-signature".to_owned(),
            "v1,secret\nvalue".to_owned(),
        )];
        let err = header_map(&headers).unwrap_err();
        assert_eq!(
            err,
            DeliveryError::InvalidHeader {
                name: "webhook-signature".into()
            }
        );
        assert!(!err.to_string().contains("secret"));
        let bad_name = vec![("bad name".to_owned(), "v".to_owned())];
        assert!(matches!(
            header_map(&bad_name),
            Err(DeliveryError::InvalidHeader { .. })
        ));
    }
}
