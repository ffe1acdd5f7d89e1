//! Checking a stream's identity again while it runs: every `reverify_interval` and just
//! after the token's own expiry, and when the agent sends `Reauth` with a rotated token
//! (swapped in only once it passes for the same cluster). A failed check closes the
//! stream (UNAUTHENTICATED or PERMISSION_DENIED); an unreachable verifier does not: the
//! check is retried shortly, so a verifier outage does not drop every agent. Used by
//! [`super::service`] for each admitted stream.

use std::time::{Duration, SystemTime};

use vclink_proto::Secret;

use crate::core::session::Reject;
use crate::identity::auth::{AgentAuthenticator, AuthError};

/// After an unreachable verifier, when to try a stream's check again.
const REVERIFY_RETRY: Duration = Duration::from_secs(15);

/// The stream's current credential and when it must be checked next.
pub(super) struct Credential {
    token: Option<Secret>,
    /// A Reauth token not yet verified because the verifier was unreachable.
    candidate: Option<Secret>,
    pub next_check: tokio::time::Instant,
}

impl Credential {
    /// The credential a stream was admitted with, first checked again after `interval`
    /// or just after the token's own expiry.
    pub fn new(token: Option<Secret>, interval: Duration, expiry: Option<SystemTime>) -> Self {
        Self {
            token,
            candidate: None,
            next_check: tokio::time::Instant::now() + next_check(interval, expiry),
        }
    }
}

/// When to verify next: after `interval`, or just after the token's own expiry.
pub(crate) fn next_check(interval: Duration, expiry: Option<SystemTime>) -> Duration {
    let until_expiry = expiry.map(|e| {
        e.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
            + Duration::from_secs(1)
    });
    until_expiry.map_or(interval, |d| d.min(interval))
}

fn auth_reject(e: &AuthError) -> Reject {
    Reject {
        code: e.to_status().code(),
        reason: e.reason(),
        message: e.to_string(),
    }
}

/// Verifies the stream again (timer) or a Reauth token. Err closes the stream; an
/// unavailable verifier keeps it and retries soon.
pub(super) async fn reverify(
    authn: &dyn AgentAuthenticator,
    host: &str,
    interval: Duration,
    cred: &mut Credential,
    reauth: Option<Secret>,
) -> Result<(), Reject> {
    if let Some(t) = reauth {
        cred.candidate = Some(t);
    }
    let (token, is_candidate) = match (&cred.candidate, &cred.token) {
        (Some(c), _) => (c.clone(), true),
        (None, Some(t)) => (t.clone(), false),
        (None, None) => {
            // An authenticator that needs no token (trust-claimed): nothing to re-check.
            cred.next_check = tokio::time::Instant::now() + interval;
            return Ok(());
        }
    };
    match authn.authenticate(Some(&token), host).await {
        Ok(id) if id.cluster_id == host => {
            if is_candidate {
                tracing::info!(host, "agent presented a rotated token; stream continues");
                cred.token = cred.candidate.take();
            }
            cred.next_check = tokio::time::Instant::now() + next_check(interval, id.token_expiry);
            Ok(())
        }
        Ok(_) => Err(Reject {
            code: tonic::Code::PermissionDenied,
            reason: "auth_denied",
            message: "the token belongs to another cluster".into(),
        }),
        Err(AuthError::Unavailable(m)) => {
            tracing::warn!(host, reason = %m, "cannot re-verify the agent now; retrying");
            cred.next_check = tokio::time::Instant::now() + REVERIFY_RETRY;
            Ok(())
        }
        Err(e) => Err(auth_reject(&e)),
    }
}
