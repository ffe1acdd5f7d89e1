//! A wrapper for credentials (registration tokens, manifest URLs, bearer tokens) that
//! never prints its content: `Debug` and `Display` show `<redacted>`. Code that needs
//! the value must call [`Secret::expose`], which makes every use easy to audit.

use std::fmt;

/// A credential that redacts itself in `Debug` and `Display`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The credential itself. Never pass the result to a logger or an error message.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when no credential is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("tok-123456");
        assert!(!format!("{s:?}").contains("tok-123456"));
        assert!(!format!("{s}").contains("tok-123456"));
        assert_eq!(s.expose(), "tok-123456");
    }
}
