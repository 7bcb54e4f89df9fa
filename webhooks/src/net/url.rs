//! Target URLs: what a webhook may be sent to (http or https, a host, no credentials, at
//! most [`MAX_URL_LEN`] bytes), checked when a subscription is made, not when it is used.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use reqwest::Url;
use serde::{Deserialize, Serialize};

/// The longest target URL accepted, in bytes.
pub const MAX_URL_LEN: usize = 2048;

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
/// host may resolve to is not decided here but by the [`NetworkPolicy`](crate::NetworkPolicy) of the client at send
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on failure
mod tests {
    use super::super::tests::ip;
    use super::*;

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
}
