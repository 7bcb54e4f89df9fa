//! `Secret`: a credential (a signing secret, an API token) whose `Debug` never shows it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A secret value: a signing secret or a token. Its `Debug` never shows the value, and it
/// has no `Display`, so that it cannot end up in a log line by accident.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value. Call only where it is really needed (signing, an `Authorization`
    /// header); never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn debug_is_masked() {
        let s = Secret::new("whsec_supersecret");
        assert!(!format!("{s:?}").contains("supersecret"));
        assert_eq!(s.expose(), "whsec_supersecret");
    }
}
