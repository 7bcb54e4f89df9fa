//! Console sessions: what a browser holds instead of the API token.
//!
//! Signing in with a token gives the browser a random session id in an `HttpOnly`,
//! `SameSite=Strict` cookie (script on the page never sees it) and the page a CSRF token.
//! The API accepts either the bearer token or the cookie; with the cookie, every request that
//! changes something must also carry the CSRF token in [`CSRF_HEADER`], which another site
//! can neither read nor set. Sessions live in the process's memory: a restart, or another
//! daemon behind the same load balancer, asks to sign in again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Method, header};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "hookspool_session";
/// The request header that carries the session's CSRF token.
pub const CSRF_HEADER: &str = "x-hookspool-csrf";
/// Most sessions kept at once: when full, expired ones go first, then the oldest.
const MAX_SESSIONS: usize = 1_000;

/// The sessions of one API router (shared with the console mounted beside it).
#[derive(Debug, Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
}

#[derive(Debug)]
struct Session {
    expires: Instant,
    csrf: String,
}

/// What a request's cookie says.
pub(crate) enum Check {
    /// No session cookie, or one this process never issued.
    None,
    /// A session that has ended.
    Expired,
    /// A live session, and whether the request carries its CSRF token.
    Valid { csrf_ok: bool },
}

impl Sessions {
    /// Starts a session for `ttl`: its id (for the cookie) and its CSRF token.
    pub(crate) fn start(&self, ttl: Duration) -> std::io::Result<(String, String)> {
        let id = random_token()?;
        let csrf = random_token()?;
        let now = Instant::now();
        let mut by_id = self.lock();
        if by_id.len() >= MAX_SESSIONS {
            by_id.retain(|_, s| s.expires > now);
        }
        if by_id.len() >= MAX_SESSIONS
            && let Some(oldest) = by_id
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            by_id.remove(&oldest);
        }
        by_id.insert(
            id.clone(),
            Session {
                expires: now + ttl,
                csrf: csrf.clone(),
            },
        );
        Ok((id, csrf))
    }

    /// The CSRF token of the request's live session, if it has one.
    pub(crate) fn csrf_of(&self, headers: &HeaderMap) -> Option<String> {
        let id = session_id(headers)?;
        let by_id = self.lock();
        let session = by_id.get(id)?;
        (session.expires > Instant::now()).then(|| session.csrf.clone())
    }

    /// Ends the request's session, if any.
    pub(crate) fn end(&self, headers: &HeaderMap) {
        if let Some(id) = session_id(headers) {
            self.lock().remove(id);
        }
    }

    /// Checks a request's session cookie and, for a method that changes something, its
    /// CSRF header. An expired session is forgotten.
    pub(crate) fn check(&self, method: &Method, headers: &HeaderMap) -> Check {
        let Some(id) = session_id(headers) else {
            return Check::None;
        };
        let mut by_id = self.lock();
        let Some(session) = by_id.get(id) else {
            return Check::None;
        };
        if session.expires <= Instant::now() {
            by_id.remove(id);
            return Check::Expired;
        }
        let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        let csrf_ok = safe
            || headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|given| {
                    crate::constant_time_eq(given.as_bytes(), session.csrf.as_bytes())
                });
        Check::Valid { csrf_ok }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the lock leaves the map whole: keep using it.
        self.by_id
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The session id in the request's `Cookie` headers.
fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

/// 32 random bytes, hex.
fn random_token() -> std::io::Result<String> {
    let mut buf = [0u8; 32];
    getrandom::fill(&mut buf).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(buf.iter().fold(String::with_capacity(64), |mut s, b| {
        use std::fmt::Write;
        let _ = write!(s, "{b:02x}");
        s
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on failure
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_cookie(id: &str, csrf: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {SESSION_COOKIE}={id}")).unwrap(),
        );
        if let Some(c) = csrf {
            h.insert(CSRF_HEADER, HeaderValue::from_str(c).unwrap());
        }
        h
    }

    #[test]
    fn a_session_needs_its_csrf_token_to_change_anything() {
        let sessions = Sessions::default();
        let (id, csrf) = sessions.start(Duration::from_mins(1)).unwrap();
        assert_ne!(id, csrf);
        assert_eq!(id.len(), 64);
        let read = sessions.check(&Method::GET, &with_cookie(&id, None));
        assert!(matches!(read, Check::Valid { csrf_ok: true }));
        let write = sessions.check(&Method::POST, &with_cookie(&id, None));
        assert!(matches!(write, Check::Valid { csrf_ok: false }));
        let forged = sessions.check(
            &Method::DELETE,
            &with_cookie(&id, Some("0".repeat(64).as_str())),
        );
        assert!(matches!(forged, Check::Valid { csrf_ok: false }));
        let ok = sessions.check(&Method::DELETE, &with_cookie(&id, Some(&csrf)));
        assert!(matches!(ok, Check::Valid { csrf_ok: true }));
        assert_eq!(sessions.csrf_of(&with_cookie(&id, None)), Some(csrf));
        assert!(matches!(
            sessions.check(&Method::GET, &with_cookie("not-issued", None)),
            Check::None
        ));
        sessions.end(&with_cookie(&id, None));
        assert!(matches!(
            sessions.check(&Method::GET, &with_cookie(&id, None)),
            Check::None
        ));
    }

    #[test]
    fn an_ended_session_is_expired_once_then_forgotten() {
        let sessions = Sessions::default();
        let (id, _) = sessions.start(Duration::ZERO).unwrap();
        assert!(matches!(
            sessions.check(&Method::GET, &with_cookie(&id, None)),
            Check::Expired
        ));
        assert!(matches!(
            sessions.check(&Method::GET, &with_cookie(&id, None)),
            Check::None
        ));
    }

    #[test]
    fn the_number_of_sessions_is_bounded() {
        let sessions = Sessions::default();
        let first = sessions.start(Duration::from_secs(1)).unwrap().0;
        for _ in 0..MAX_SESSIONS {
            sessions.start(Duration::from_mins(1)).unwrap();
        }
        assert_eq!(sessions.lock().len(), MAX_SESSIONS);
        // The one ending soonest made room.
        assert!(matches!(
            sessions.check(&Method::GET, &with_cookie(&first, None)),
            Check::None
        ));
    }
}
