//! The network side of webhook delivery: target URL validation, the SSRF network policy
//! (checked after DNS resolution), the HTTP client, the capped response read, and the
//! classification of delivery failures.
//!
//! Nothing secret passes through this module except request header values (signatures), and
//! those never appear in an error message or a log line: errors name a header, never its value.

use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use serde::{Deserialize, Serialize};

/// The longest target URL accepted, in bytes.
pub const MAX_URL_LEN: usize = 2048;
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

// ---------------------------------------------------------------------------------------------
// Target URLs

/// The error type of `reqwest::Url::parse` (the `url` crate's `ParseError`), named through the
/// re-exported `Url` so that we need no direct dependency on `url`.
type UrlParseError = <Url as FromStr>::Err;

/// Why a string is not an acceptable webhook target URL.
///
/// Messages never repeat the URL: it may carry tokens in its query string.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// The URL is longer than [`MAX_URL_LEN`].
    #[error("target URL is {len} bytes long; at most {max} are allowed")]
    TooLong {
        /// Length of the rejected URL in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The text is not a URL at all.
    #[error("target URL is not a valid absolute URL: {0}")]
    Malformed(String),
    /// The scheme is neither `http` nor `https`.
    #[error("target URL scheme {0:?} is not allowed; use http or https")]
    Scheme(String),
    /// The URL has no host (e.g. `http://` or `http://:8080/`).
    #[error("target URL has no host")]
    NoHost,
    /// The URL carries a user name or password (`user:pass@host`).
    #[error(
        "target URL must not carry credentials (user:password@host); send them in a header instead"
    )]
    Credentials,
    /// The URL has a fragment (`#...`), which is never sent to a server.
    #[error("target URL must not have a fragment (#...)")]
    Fragment,
}

/// A validated webhook target URL: `http` or `https`, a host, no credentials, no fragment, at
/// most [`MAX_URL_LEN`] bytes.
///
/// It is (de)serialized as a string and validated again on deserialize. Which addresses the
/// host may resolve to is not decided here but by the [`NetworkPolicy`] of the client at send
/// time, after DNS resolution.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TargetUrl(Url);

impl TargetUrl {
    /// Parses and validates a target URL.
    ///
    /// The URL is normalized the WHATWG way (`HTTP://Example.COM` becomes
    /// `http://example.com/`, `http://0x7f.1/` becomes `http://127.0.0.1/`), so [`as_str`]
    /// may differ from the input.
    ///
    /// [`as_str`]: TargetUrl::as_str
    pub fn parse(s: &str) -> Result<Self, UrlError> {
        if s.len() > MAX_URL_LEN {
            return Err(UrlError::TooLong {
                len: s.len(),
                max: MAX_URL_LEN,
            });
        }
        let url = Url::parse(s).map_err(|e| {
            if e == UrlParseError::EmptyHost {
                UrlError::NoHost
            } else {
                UrlError::Malformed(e.to_string())
            }
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(UrlError::Scheme(url.scheme().to_owned()));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(UrlError::NoHost);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::Credentials);
        }
        if url.fragment().is_some() {
            return Err(UrlError::Fragment);
        }
        // Normalization can lengthen a URL (percent-encoding); the limit holds for what is sent.
        if url.as_str().len() > MAX_URL_LEN {
            return Err(UrlError::TooLong {
                len: url.as_str().len(),
                max: MAX_URL_LEN,
            });
        }
        Ok(Self(url))
    }

    /// The normalized URL text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The parsed URL.
    pub fn as_url(&self) -> &Url {
        &self.0
    }

    /// The host as written in the URL (IPv6 literals in brackets, e.g. `[::1]`).
    pub fn host_str(&self) -> &str {
        // Validation guarantees a host; "" is unreachable and harmless.
        self.0.host_str().unwrap_or_default()
    }

    /// The host as an IP address when the URL names one literally (`http://10.0.0.1/`,
    /// `http://[::1]/`), `None` for a domain name.
    pub fn ip_literal(&self) -> Option<IpAddr> {
        let host = self.host_str();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        host.parse().ok()
    }
}

impl fmt::Debug for TargetUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TargetUrl").field(&self.as_str()).finish()
    }
}

impl fmt::Display for TargetUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TargetUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for TargetUrl {
    type Error = UrlError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<TargetUrl> for String {
    fn from(url: TargetUrl) -> Self {
        url.0.into()
    }
}

impl AsRef<str> for TargetUrl {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

// ---------------------------------------------------------------------------------------------
// CIDR networks

/// Why a string is not a CIDR network.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IpNetError {
    /// The part before `/` is not an IPv4 or IPv6 address.
    #[error("{0:?} is not an IP address")]
    InvalidAddress(String),
    /// The prefix length is not a number between 0 and the address width.
    #[error("{prefix:?} is not a prefix length between 0 and {max}")]
    InvalidPrefix {
        /// The rejected prefix text.
        prefix: String,
        /// 32 for IPv4, 128 for IPv6.
        max: u8,
    },
}

/// An IP network in CIDR notation: `10.0.0.0/8`, `::1/128`; a bare address means a single host.
///
/// Host bits are cleared on construction, so `10.1.2.3/8` is `10.0.0.0/8`. (De)serialized as
/// its string form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// A network from an address and a prefix length (host bits are cleared).
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, IpNetError> {
        let max = max_prefix(addr);
        if prefix > max {
            return Err(IpNetError::InvalidPrefix {
                prefix: prefix.to_string(),
                max,
            });
        }
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask_v4(prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask_v6(prefix))),
        };
        Ok(Self { addr, prefix })
    }

    /// A network for the refusal table; callers pass canonical networks.
    const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Self {
        Self {
            addr: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            prefix,
        }
    }

    /// A network for the refusal table; callers pass canonical networks.
    const fn v6(segments: [u16; 8], prefix: u8) -> Self {
        let s = segments;
        Self {
            addr: IpAddr::V6(Ipv6Addr::new(
                s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7],
            )),
            prefix,
        }
    }

    /// The network address (host bits zero).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies in this network. An address of the other family never does.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = mask_v4(self.prefix);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = mask_v6(self.prefix);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn mask_v4(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0)
}

fn mask_v6(prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0)
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for IpNet {
    type Err = IpNetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr_text, prefix_text) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| IpNetError::InvalidAddress(addr_text.to_owned()))?;
        let max = max_prefix(addr);
        let prefix = match prefix_text {
            None => max,
            Some(p) => {
                // u8::from_str accepts "+8"; a CIDR prefix is digits only.
                let valid = !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit());
                let invalid = || IpNetError::InvalidPrefix {
                    prefix: p.to_owned(),
                    max,
                };
                if !valid {
                    return Err(invalid());
                }
                p.parse::<u8>().map_err(|_| invalid())?
            }
        };
        Self::new(addr, prefix)
    }
}

impl TryFrom<String> for IpNet {
    type Error = IpNetError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<IpNet> for String {
    fn from(net: IpNet) -> Self {
        net.to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// Network policy

/// Networks refused by default: everything that is not a globally routed unicast address.
const REFUSED: &[IpNet] = &[
    // IPv4
    IpNet::v4(0, 0, 0, 0, 8), // "this network", incl. the unspecified 0.0.0.0
    IpNet::v4(10, 0, 0, 0, 8), // private
    IpNet::v4(100, 64, 0, 0, 10), // carrier-grade NAT (shared address space)
    IpNet::v4(127, 0, 0, 0, 8), // loopback
    IpNet::v4(169, 254, 0, 0, 16), // link-local (incl. cloud metadata 169.254.169.254)
    IpNet::v4(172, 16, 0, 0, 12), // private
    IpNet::v4(192, 0, 0, 0, 24), // IETF protocol assignments
    IpNet::v4(192, 0, 2, 0, 24), // documentation (TEST-NET-1)
    IpNet::v4(192, 88, 99, 0, 24), // deprecated 6to4 relay anycast
    IpNet::v4(192, 168, 0, 0, 16), // private
    IpNet::v4(198, 18, 0, 0, 15), // benchmarking
    IpNet::v4(198, 51, 100, 0, 24), // documentation (TEST-NET-2)
    IpNet::v4(203, 0, 113, 0, 24), // documentation (TEST-NET-3)
    IpNet::v4(224, 0, 0, 0, 4), // multicast
    IpNet::v4(240, 0, 0, 0, 4), // reserved, incl. broadcast 255.255.255.255
    // IPv6
    IpNet::v6([0, 0, 0, 0, 0, 0, 0, 0], 128), // unspecified
    IpNet::v6([0, 0, 0, 0, 0, 0, 0, 1], 128), // loopback
    IpNet::v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), // local-use NAT64 (RFC 8215)
    IpNet::v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), // discard-only
    IpNet::v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23), // IETF protocol assignments: Teredo, benchmarking, ORCHID
    IpNet::v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), // documentation
    IpNet::v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), // documentation (RFC 9637)
    IpNet::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),  // unique local (private)
    IpNet::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), // link-local
    IpNet::v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), // deprecated site-local
    IpNet::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),  // multicast
];

/// The IPv4 address an IPv6 address stands for, when it embeds one: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`, deprecated), NAT64 (`64:ff9b::a.b.c.d`) and
/// 6to4 (`2002:aabb:ccdd::`). Each can reach the embedded IPv4 host, so each is judged by it.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let o = ip.octets();
    let low = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    // `::` and `::1` are not IPv4-compatible addresses (RFC 4291 §2.5.5.1); they have entries
    // of their own in the table, and `allow_loopback` opens `::1` by its own entry.
    if s[..6] == [0; 6] && !ip.is_unspecified() && !ip.is_loopback() {
        return Some(low);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(low);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

/// Which addresses delivery may connect to (the defence against server-side request forgery).
///
/// By default every address that is not a globally routed unicast address is refused:
///
/// - IPv4: `0.0.0.0/8` (incl. unspecified), `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`
///   (private), `100.64.0.0/10` (CGNAT), `127.0.0.0/8` (loopback), `169.254.0.0/16`
///   (link-local, incl. cloud metadata), `192.0.0.0/24`, `192.0.2.0/24`, `198.51.100.0/24`,
///   `203.0.113.0/24` (protocol assignments, documentation), `192.88.99.0/24`, `198.18.0.0/15`
///   (benchmarking), `224.0.0.0/4` (multicast), `240.0.0.0/4` (reserved, incl. broadcast).
/// - IPv6: `::` and `::1`, `fc00::/7` (unique local), `fe80::/10` (link-local), `fec0::/10`,
///   `ff00::/8` (multicast), `100::/64`, `2001::/23` (incl. Teredo, benchmarking),
///   `2001:db8::/32` and `3fff::/20` (documentation), `64:ff9b:1::/48` (local NAT64).
/// - IPv6 addresses that embed an IPv4 address (IPv4-mapped `::ffff:0:0/96`, IPv4-compatible
///   `::/96`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are judged by the embedded address.
///
/// Networks added with [`allow`](NetworkPolicy::allow) are permitted even when they overlap a
/// refused range. The policy is applied to the addresses a host name resolves to, and the
/// connection goes only to a permitted one, so a DNS answer cannot steer a delivery to a
/// refused address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkPolicy {
    /// Networks permitted even though the defaults refuse them.
    allow: Vec<IpNet>,
}

impl NetworkPolicy {
    /// The default policy: refuse every non-global address (see the type's docs).
    pub fn new() -> Self {
        Self::default()
    }

    /// Also permits `net` (e.g. an internal `10.1.0.0/16` of trusted receivers).
    #[must_use]
    pub fn allow(mut self, net: IpNet) -> Self {
        if !self.allow.contains(&net) {
            self.allow.push(net);
        }
        self
    }

    /// Also permits loopback: `127.0.0.0/8` and `::1` (tests, local development).
    #[must_use]
    pub fn allow_loopback(self) -> Self {
        self.allow(IpNet::v4(127, 0, 0, 0, 8))
            .allow(IpNet::v6([0, 0, 0, 0, 0, 0, 0, 1], 128))
    }

    /// The networks opened with [`allow`](NetworkPolicy::allow).
    pub fn allowed(&self) -> &[IpNet] {
        &self.allow
    }

    /// Whether delivery may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        if self.is_allowed(ip) {
            return true;
        }
        if let IpAddr::V6(v6) = ip
            && let Some(v4) = embedded_v4(v6)
        {
            let v4 = IpAddr::V4(v4);
            if self.is_allowed(v4) {
                return true;
            }
            if is_refused(v4) {
                return false;
            }
        }
        !is_refused(ip)
    }

    fn is_allowed(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|net| net.contains(ip))
    }
}

fn is_refused(ip: IpAddr) -> bool {
    REFUSED.iter().any(|net| net.contains(ip))
}

// ---------------------------------------------------------------------------------------------
// Errors

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

// ---------------------------------------------------------------------------------------------
// Retry-After

/// Parses a `Retry-After` header value into a delay from `now`.
///
/// Accepts delay-seconds (`"120"`) and an HTTP-date in the IMF-fixdate form every current
/// server sends (`"Sun, 06 Nov 1994 08:49:37 GMT"`); a date in the past gives zero. The
/// obsolete RFC 850 and asctime date forms and anything else give `None` (treated as absent).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds is a delay beyond any clamp: saturate.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = parse_imf_fixdate(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses `"Sun, 06 Nov 1994 08:49:37 GMT"` (RFC 9110 §5.6.7 IMF-fixdate).
fn parse_imf_fixdate(s: &str) -> Option<SystemTime> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (weekday, rest) = s.split_once(", ")?;
    if weekday.len() != 3 {
        return None;
    }
    let mut parts = rest.split(' ');
    let day = digits(parts.next()?, 2)?;
    let month_name = parts.next()?;
    let month = MONTHS.iter().position(|m| *m == month_name)? + 1;
    let year = digits(parts.next()?, 4)?;
    let mut clock = parts.next()?.split(':');
    let hour = digits(clock.next()?, 2)?;
    let minute = digits(clock.next()?, 2)?;
    let second = digits(clock.next()?, 2)?;
    if clock.next().is_some() || parts.next()? != "GMT" || parts.next().is_some() {
        return None;
    }
    let month = u32::try_from(month).ok()?;
    if year < 1970 || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    // 60 admits a leap second; it lands on the next minute, which is close enough for a delay.
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + u64::from(hour * 3600 + minute * 60 + second);
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// A field of exactly `len` ASCII digits.
fn digits(s: &str, len: usize) -> Option<u32> {
    if s.len() == len && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a valid date on or after it (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: u32, month: u32, day: u32) -> u64 {
    let y = u64::from(if month <= 2 { year - 1 } else { year });
    let era = y / 400;
    let yoe = y - era * 400;
    let m = u64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + u64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

// ---------------------------------------------------------------------------------------------
// The client

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
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipnet_parses_cidr_and_bare_addresses() {
        let net: IpNet = "10.0.0.0/8".parse().unwrap();
        assert_eq!(net.addr(), ip("10.0.0.0"));
        assert_eq!(net.prefix_len(), 8);
        assert_eq!(net.to_string(), "10.0.0.0/8");

        let net: IpNet = "::1/128".parse().unwrap();
        assert_eq!(net.addr(), ip("::1"));
        assert_eq!(net.prefix_len(), 128);

        let host: IpNet = "192.0.2.7".parse().unwrap();
        assert_eq!(host.prefix_len(), 32);
        let host6: IpNet = "2001:db8::1".parse().unwrap();
        assert_eq!(host6.prefix_len(), 128);

        // Host bits are cleared.
        let net: IpNet = "10.1.2.3/8".parse().unwrap();
        assert_eq!(net.to_string(), "10.0.0.0/8");
        let net: IpNet = "fe80::1/10".parse().unwrap();
        assert_eq!(net.to_string(), "fe80::/10");

        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("255.255.255.255")));
        assert!(!all.contains(ip("::1")), "families never mix");
    }

    #[test]
    fn ipnet_rejects_garbage() {
        for bad in [
            "",
            "10.0.0/8",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "x/8",
            "10.0.0.0/+8",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad:?} parsed");
        }
        assert_eq!(
            "10.0.0.0/33".parse::<IpNet>(),
            Err(IpNetError::InvalidPrefix {
                prefix: "33".into(),
                max: 32
            })
        );
        assert_eq!(
            "nope/8".parse::<IpNet>(),
            Err(IpNetError::InvalidAddress("nope".into()))
        );
    }

    #[test]
    fn ipnet_contains_is_exact_at_the_edges() {
        let net: IpNet = "172.16.0.0/12".parse().unwrap();
        assert!(net.contains(ip("172.16.0.0")));
        assert!(net.contains(ip("172.31.255.255")));
        assert!(!net.contains(ip("172.15.255.255")));
        assert!(!net.contains(ip("172.32.0.0")));
        let net6: IpNet = "fc00::/7".parse().unwrap();
        assert!(net6.contains(ip("fdff:ffff::1")));
        assert!(!net6.contains(ip("fe00::1")));
    }

    #[test]
    fn ipnet_serde_is_a_string() {
        let net: IpNet = "10.0.0.0/8".parse().unwrap();
        assert_eq!(serde_json::to_string(&net).unwrap(), r#""10.0.0.0/8""#);
        let back: IpNet = serde_json::from_str(r#""10.0.0.0/8""#).unwrap();
        assert_eq!(back, net);
        assert!(serde_json::from_str::<IpNet>(r#""10.0.0.0/99""#).is_err());
    }

    /// One address in each refused range, plus its IPv4-mapped form for IPv4 ranges.
    const REFUSED_SAMPLES: &[&str] = &[
        "0.0.0.0",
        "0.1.2.3",
        "10.0.0.1",
        "10.255.255.255",
        "100.64.0.1",
        "100.127.255.254",
        "127.0.0.1",
        "127.255.255.254",
        "169.254.169.254",
        "172.16.0.1",
        "172.31.255.255",
        "192.0.0.8",
        "192.0.2.1",
        "192.88.99.1",
        "192.168.1.1",
        "198.18.0.1",
        "198.19.255.255",
        "198.51.100.7",
        "203.0.113.9",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "64:ff9b:1::1",
        "100::1",
        "2001::1",
        "2001:2::1",
        "2001:db8::1",
        "3fff::1",
        "fc00::1",
        "fd12:3456::1",
        "fe80::1",
        "febf::1",
        "fec0::1",
        "ff02::1",
        "ff0e::1",
    ];

    #[test]
    fn default_policy_refuses_every_non_global_range() {
        let policy = NetworkPolicy::new();
        for s in REFUSED_SAMPLES {
            let addr = ip(s);
            assert!(!policy.permits(addr), "{s} permitted");
            if let IpAddr::V4(v4) = addr {
                let mapped = IpAddr::V6(v4.to_ipv6_mapped());
                assert!(!policy.permits(mapped), "{mapped} (mapped {s}) permitted");
            }
        }
        // Every entry of the table is exercised by a sample.
        for net in REFUSED {
            assert!(
                REFUSED_SAMPLES.iter().any(|s| net.contains(ip(s))),
                "no sample in {net}"
            );
        }
    }

    #[test]
    fn default_policy_refuses_ipv6_forms_embedding_refused_ipv4() {
        let policy = NetworkPolicy::new();
        for s in [
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",    // IPv4-compatible
            "::10.0.0.1",     // IPv4-compatible
            "64:ff9b::a00:1", // NAT64 of 10.0.0.1
            "64:ff9b::7f00:1",
            "2002:c0a8:101::1", // 6to4 of 192.168.1.1
            "2002:7f00:1::",
        ] {
            assert!(!policy.permits(ip(s)), "{s} permitted");
        }
        // The same forms of a global address are permitted.
        for s in [
            "::ffff:93.184.216.34",
            "64:ff9b::5db8:d822",
            "2002:5db8:d822::1",
        ] {
            assert!(policy.permits(ip(s)), "{s} refused");
        }
    }

    #[test]
    fn default_policy_permits_global_addresses() {
        let policy = NetworkPolicy::new();
        for s in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.169.0.1",
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001:81b::200e",
        ] {
            assert!(policy.permits(ip(s)), "{s} refused");
        }
    }

    #[test]
    fn allow_opens_a_refused_network_and_its_mapped_forms() {
        let policy = NetworkPolicy::new().allow("10.1.0.0/16".parse().unwrap());
        assert!(policy.permits(ip("10.1.2.3")));
        assert!(policy.permits(ip("::ffff:10.1.2.3")));
        assert!(!policy.permits(ip("10.2.0.1")));
        assert!(!policy.permits(ip("127.0.0.1")));

        let loopback = NetworkPolicy::new().allow_loopback();
        assert!(loopback.permits(ip("127.0.0.1")));
        assert!(loopback.permits(ip("127.8.9.10")));
        assert!(loopback.permits(ip("::1")));
        assert!(loopback.permits(ip("::ffff:127.0.0.1")));
        assert!(!loopback.permits(ip("10.0.0.1")));
        assert!(!loopback.permits(ip("::")));
        assert_eq!(loopback.allowed().len(), 2);
        // Allowing twice keeps one entry.
        assert_eq!(loopback.allow_loopback().allowed().len(), 2);
    }

    #[test]
    fn policy_serde_round_trips() {
        let policy = NetworkPolicy::new().allow_loopback();
        let json = serde_json::to_string(&policy).unwrap();
        assert_eq!(json, r#"{"allow":["127.0.0.0/8","::1/128"]}"#);
        let back: NetworkPolicy = serde_json::from_str(&json).unwrap();
        assert_eq!(back, policy);
        let empty: NetworkPolicy = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, NetworkPolicy::new());
    }

    #[test]
    fn target_url_accepts_http_and_https() {
        let url = TargetUrl::parse("https://Example.COM:8443/hooks?x=1").unwrap();
        assert_eq!(url.as_str(), "https://example.com:8443/hooks?x=1");
        assert_eq!(url.host_str(), "example.com");
        assert_eq!(url.ip_literal(), None);
        let url = TargetUrl::parse("http://example.com").unwrap();
        assert_eq!(url.as_str(), "http://example.com/");

        let v6 = TargetUrl::parse("http://[::1]:8080/").unwrap();
        assert_eq!(v6.host_str(), "[::1]");
        assert_eq!(v6.ip_literal(), Some(ip("::1")));
        // WHATWG normalization turns odd IPv4 spellings into the dotted form.
        let odd = TargetUrl::parse("http://0x7f.1/").unwrap();
        assert_eq!(odd.ip_literal(), Some(ip("127.0.0.1")));
    }

    #[test]
    fn target_url_rejects_each_problem_with_its_own_error() {
        let cases: &[(&str, UrlError)] = &[
            ("ftp://example.com/", UrlError::Scheme("ftp".into())),
            ("file:///etc/passwd", UrlError::Scheme("file".into())),
            ("mailto:a@example.com", UrlError::Scheme("mailto".into())),
            ("http://", UrlError::NoHost),
            ("https://:8080/x", UrlError::NoHost),
            ("https://user:pw@example.com/", UrlError::Credentials),
            ("https://user@example.com/", UrlError::Credentials),
            ("https://example.com/#frag", UrlError::Fragment),
            ("https://example.com/#", UrlError::Fragment),
        ];
        for (input, expected) in cases {
            assert_eq!(&TargetUrl::parse(input).unwrap_err(), expected, "{input}");
        }
        for garbage in [
            "",
            "not a url",
            "/relative/path",
            "http://exa mple.com/",
            "http://[::1/",
        ] {
            assert!(
                matches!(TargetUrl::parse(garbage), Err(UrlError::Malformed(_))),
                "{garbage:?}"
            );
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(matches!(
            TargetUrl::parse(&long),
            Err(UrlError::TooLong {
                max: MAX_URL_LEN,
                ..
            })
        ));
        // Messages do not repeat the URL (it may carry a password or a token).
        let err = TargetUrl::parse("https://user:hunter2@example.com/").unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn target_url_serde_validates() {
        let url: TargetUrl = serde_json::from_str(r#""https://example.com/h""#).unwrap();
        assert_eq!(
            serde_json::to_string(&url).unwrap(),
            r#""https://example.com/h""#
        );
        assert!(serde_json::from_str::<TargetUrl>(r#""ftp://example.com/""#).is_err());
    }

    /// Unix time of Thu, 29 Feb 2024 12:00:00 GMT.
    const LEAP_DAY_NOON: u64 = 1_709_208_000;
    /// Unix time of Fri, 01 Jan 2100 00:00:00 GMT.
    const YEAR_2100: u64 = 4_102_444_800;

    #[test]
    fn retry_after_parses_seconds_and_imf_fixdate() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_mins(2)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:51:37 GMT", now),
            Some(Duration::from_mins(2))
        );
        assert_eq!(
            parse_retry_after("Mon, 07 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_hours(24))
        );
        // A date in the past means "now".
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        // A leap day and a year boundary, against known Unix times.
        let epoch = SystemTime::UNIX_EPOCH;
        assert_eq!(
            parse_retry_after("Thu, 29 Feb 2024 12:00:00 GMT", epoch),
            Some(Duration::from_secs(LEAP_DAY_NOON))
        );
        assert_eq!(
            parse_retry_after("Fri, 01 Jan 2100 00:00:00 GMT", epoch),
            Some(Duration::from_secs(YEAR_2100))
        );
        for bad in [
            "",
            "-5",
            "1.5",
            "soon",
            "Sunday, 06-Nov-94 08:49:37 GMT", // RFC 850: not supported
            "Sun Nov  6 08:49:37 1994",       // asctime: not supported
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "Sun, 29 Feb 2023 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

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
