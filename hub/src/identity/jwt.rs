//! Reads the `exp` claim of a JWT **without verifying it**. The hub uses the value only
//! to schedule the re-verification of a stream before its token expires and to bound how
//! long a positive TokenReview result is cached; it never grants anything on it (a lying
//! `exp` can only make the hub check sooner, or the API server refuses the token anyway).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Longest token the hub looks at (projected tokens are ~1 KiB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The unverified expiry of a JWT, if it has a well-formed numeric `exp`.
pub fn unverified_expiry(token: &str) -> Option<SystemTime> {
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?;
    let secs = exp.as_u64().or_else(|| {
        exp.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        format!(
            "{}.{}.sig",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256"}"#),
            URL_SAFE_NO_PAD.encode(claims)
        )
    }

    #[test]
    fn exp_is_read() {
        let t = jwt(r#"{"exp":1700000000,"aud":["vclink-hub"]}"#);
        assert_eq!(
            unverified_expiry(&t),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
    }

    #[test]
    fn garbage_has_no_expiry() {
        for t in [
            "",
            "abc",
            "a.b.c",
            "a.b.c.d",
            &jwt(r#"{"exp":"tomorrow"}"#),
            &jwt(r#"{"exp":-5}"#),
            &jwt(r#"{}"#),
            &jwt("not json"),
        ] {
            assert_eq!(unverified_expiry(t), None, "{t}");
        }
        assert_eq!(unverified_expiry(&"a".repeat(MAX_TOKEN_BYTES + 1)), None);
    }
}
