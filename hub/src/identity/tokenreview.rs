//! The agent authenticator that verifies, instead of trusting: the agent's projected
//! ServiceAccount token goes in a TokenReview (audience `vclink-hub`) to the API server
//! of the cluster the agent *claims*, through Rancher's cluster proxy. Accepted only
//! when that API server says authenticated, the audience matches and the user is the
//! configured agent ServiceAccount (`system:serviceaccount:<ns>:<name>`). A token
//! minted by another cluster, for another audience, expired, or of a deleted
//! ServiceAccount fails there.
//!
//! Protecting Rancher: positive results are cached briefly ([`ReviewCache`]), and so
//! are refusals (a second [`ReviewCache`], `--tokenreview-negative-ttl`, keyed by a hash
//! of cluster and token like the first), so a client repeating a junk token costs one
//! TokenReview per TTL; concurrent verifications of one token share one in-flight call
//! ([`SingleFlight`], so a burst of one junk token before its refusal is cached still
//! costs one review); calls are admitted by [`Admission`] (a reserved share for
//! recently verified clusters, a per-client-IP share of the rest) that refuses
//! (UNAVAILABLE with a retry hint, the agent backs off) rather than queueing; after a
//! transport failure all calls pause with exponential backoff. A token whose
//! (unverified) `exp` has passed by more than [`EXP_LEEWAY`] (clock skew between the
//! downstream cluster and the hub) is refused without a call.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use vclink_proto::Secret;
use vclink_proto::ratelimit::TokenBucket;

use super::admission::{Admission, AdmissionSettings, Share, Throttle};
use super::auth::{AgentAuthenticator, AgentIdentity, AuthError};
use super::cache::ReviewCache;
use super::flight::SingleFlight;
use super::jwt::{MAX_TOKEN_BYTES, unverified_expiry};
use super::metrics::IdentityMetrics;
use super::proxy::{ProxyError, RancherProxy};
use crate::core::backoff::Backoff;

/// How far past its `exp` a token may be before it is refused without a TokenReview:
/// the downstream cluster's clock may run behind the hub's.
pub const EXP_LEEWAY: Duration = Duration::from_secs(60);

/// Settings of [`TokenReviewAuthenticator`].
#[derive(Clone, Debug)]
pub struct ReviewSettings {
    /// Audience the token must carry (`vclink-hub`).
    pub audience: String,
    /// Expected user, `system:serviceaccount:<ns>:<name>`.
    pub username: String,
    /// How long a positive result is reused.
    pub cache_ttl: Duration,
    /// Most cached results.
    pub cache_capacity: usize,
    /// TokenReviews per second Rancher gets at most (sustained).
    pub qps: f64,
    /// Burst above `qps`.
    pub burst: u32,
    /// Share of the budget for recently verified clusters.
    pub reserved_share: f64,
    /// TokenReviews per second one client IP may cause from the open share.
    pub peer_qps: f64,
    /// Burst above `peer_qps`.
    pub peer_burst: u32,
    /// How long a refusal is remembered (zero: never).
    pub negative_ttl: Duration,
}

impl ReviewSettings {
    /// Defaults for the agent ServiceAccount `ns/name`.
    pub fn for_service_account(ns: &str, name: &str) -> Self {
        Self {
            audience: vclink_proto::TOKEN_AUDIENCE.to_string(),
            username: format!("system:serviceaccount:{ns}:{name}"),
            cache_ttl: Duration::from_secs(30),
            cache_capacity: 4096,
            qps: 20.0,
            burst: 50,
            reserved_share: 0.5,
            peer_qps: 2.0,
            peer_burst: 10,
            negative_ttl: Duration::from_secs(30),
        }
    }
}

/// See the module docs.
pub struct TokenReviewAuthenticator {
    proxy: RancherProxy,
    settings: ReviewSettings,
    cache: ReviewCache,
    /// Recent refusals (cluster + token hash), answered without a call.
    refused: ReviewCache,
    admission: Admission,
    /// TokenReviews in flight, shared by concurrent verifications of one token.
    inflight: SingleFlight<Result<Option<SystemTime>, AuthError>>,
    /// Log lines about refused tokens (a flood must not flood the log).
    log_budget: TokenBucket,
    /// Until when calls pause after transport failures, and how many in a row.
    pause: Mutex<(Option<Instant>, u32)>,
    metrics: IdentityMetrics,
}

/// What one TokenReview status means (pure; tested).
pub fn judge(
    status: &k8s_openapi::api::authentication::v1::TokenReviewStatus,
    settings: &ReviewSettings,
    cluster: &str,
) -> Result<(), (AuthError, &'static str)> {
    if status.authenticated != Some(true) {
        return Err((
            AuthError::Unauthenticated(format!(
                "the API server of cluster {cluster} did not authenticate the token (minted by another cluster, expired, for another audience, or of a deleted ServiceAccount)"
            )),
            "refused",
        ));
    }
    let audiences = status.audiences.as_deref().unwrap_or_default();
    if !audiences.iter().any(|a| a == &settings.audience) {
        return Err((
            AuthError::Unauthenticated(format!(
                "the token is not for audience {}",
                settings.audience
            )),
            "wrong_audience",
        ));
    }
    let user = status
        .user
        .as_ref()
        .and_then(|u| u.username.as_deref())
        .unwrap_or_default();
    if user != settings.username {
        return Err((
            AuthError::Denied(format!(
                "{} may not act as the vclink agent (expected {})",
                truncate(user, 128),
                settings.username
            )),
            "wrong_account",
        ));
    }
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    s.chars()
        .take(n)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

impl TokenReviewAuthenticator {
    /// An authenticator sending TokenReviews through `proxy`.
    pub fn new(proxy: RancherProxy, settings: ReviewSettings, metrics: IdentityMetrics) -> Self {
        Self {
            cache: ReviewCache::new(settings.cache_ttl, settings.cache_capacity),
            refused: ReviewCache::new(settings.negative_ttl, settings.cache_capacity),
            admission: Admission::new(AdmissionSettings {
                qps: settings.qps,
                burst: settings.burst,
                reserved_share: settings.reserved_share,
                peer_qps: settings.peer_qps,
                peer_burst: settings.peer_burst,
            }),
            inflight: SingleFlight::default(),
            log_budget: TokenBucket::new(1.0, 10),
            proxy,
            settings,
            pause: Mutex::new((None, 0)),
            metrics,
        }
    }

    fn paused(&self, now: Instant) -> bool {
        let p = self.pause.lock().unwrap_or_else(|p| p.into_inner());
        p.0.is_some_and(|until| until > now)
    }

    fn record_transport(&self, ok: bool, now: Instant) {
        let mut p = self.pause.lock().unwrap_or_else(|p| p.into_inner());
        if ok {
            *p = (None, 0);
        } else {
            p.1 = p.1.saturating_add(1);
            let d = Backoff::capped(Duration::from_secs(30)).delay(p.1);
            p.0 = Some(now + d);
        }
    }

    async fn review(
        &self,
        token: &Secret,
        cluster: &str,
        peer: Option<IpAddr>,
    ) -> Result<Option<SystemTime>, AuthError> {
        let now = Instant::now();
        let expiry = unverified_expiry(token.expose());
        if expiry.is_some_and(|e| expired(e, SystemTime::now())) {
            self.metrics.auth("expired");
            return Err(AuthError::Unauthenticated("the token has expired".into()));
        }
        if self.cache.hit(cluster, token.expose(), now) {
            self.metrics.auth("cached");
            return Ok(expiry);
        }
        if self.refused.hit(cluster, token.expose(), now) {
            self.metrics.auth("cached_refusal");
            return Err(AuthError::Unauthenticated(format!(
                "the token was refused for cluster {cluster} moments ago; present a valid token"
            )));
        }
        let key = super::cache::key(cluster, token.expose());
        let (res, joined) = self
            .inflight
            .run(key, || self.call(token, cluster, peer, expiry))
            .await;
        if joined {
            self.metrics.auth("joined_inflight");
        }
        res
    }

    /// Everything after the caches: the pause, admission, the TokenReview and its
    /// judgement (run once per key in flight, [`SingleFlight`]).
    async fn call(
        &self,
        token: &Secret,
        cluster: &str,
        peer: Option<IpAddr>,
        expiry: Option<SystemTime>,
    ) -> Result<Option<SystemTime>, AuthError> {
        let now = Instant::now();
        if self.paused(now) {
            self.metrics.auth("paused");
            return Err(AuthError::Unavailable(
                "Rancher is unreachable; retry later".into(),
            ));
        }
        match self.admission.admit(cluster, peer, now) {
            Ok(Share::Reserved) => self.metrics.auth("admitted_reserved"),
            Ok(Share::Open) => {}
            Err(t) => {
                self.metrics.auth(match t {
                    Throttle::Peer => "throttled_peer",
                    Throttle::Global => "throttled",
                });
                return Err(AuthError::Unavailable(format!(
                    "too many authentications at once; {}",
                    crate::core::session::RETRY_HINT
                )));
            }
        }
        let res = self
            .proxy
            .token_review(
                cluster,
                token,
                std::slice::from_ref(&self.settings.audience),
            )
            .await;
        self.record_transport(
            !matches!(res, Err(ProxyError::Transport(_))),
            Instant::now(),
        );
        let status = match res {
            Ok(s) => {
                self.metrics.review("ok");
                s
            }
            Err(e) => {
                self.metrics.review(e.label());
                return Err(match e {
                    ProxyError::NoSuchCluster(_) | ProxyError::BadClusterId => {
                        self.metrics.auth("unknown_cluster");
                        self.refused.insert(cluster, token.expose(), None, now);
                        AuthError::Unauthenticated(format!(
                            "cannot verify the agent: Rancher knows no cluster {cluster}"
                        ))
                    }
                    other => {
                        self.metrics.auth("unavailable");
                        tracing::error!(cluster, error = %other, "cannot verify an agent's token through Rancher");
                        AuthError::Unavailable(format!(
                            "the hub cannot verify tokens right now ({})",
                            other.label()
                        ))
                    }
                });
            }
        };
        match judge(&status, &self.settings, cluster) {
            Ok(()) => {
                self.metrics.auth("ok");
                self.cache.insert(cluster, token.expose(), expiry, now);
                self.admission.verified(cluster, peer, now);
                Ok(expiry)
            }
            Err((e, outcome)) => {
                self.metrics.auth(outcome);
                self.refused.insert(cluster, token.expose(), None, now);
                // The API server's reason helps the operator; it holds no credential.
                let reason = truncate(status.error.as_deref().unwrap_or_default(), 256);
                if self.log_budget.try_take(Instant::now()) {
                    tracing::warn!(cluster, outcome, %reason, "agent token refused");
                } else {
                    tracing::debug!(cluster, outcome, %reason, "agent token refused");
                }
                Err(e)
            }
        }
    }
}

#[async_trait]
impl AgentAuthenticator for TokenReviewAuthenticator {
    async fn authenticate(
        &self,
        bearer: Option<&Secret>,
        claimed_cluster_id: &str,
    ) -> Result<AgentIdentity, AuthError> {
        self.authenticate_from(bearer, claimed_cluster_id, None)
            .await
    }

    async fn authenticate_from(
        &self,
        bearer: Option<&Secret>,
        claimed_cluster_id: &str,
        peer: Option<IpAddr>,
    ) -> Result<AgentIdentity, AuthError> {
        let Some(token) = bearer.filter(|t| !t.is_empty()) else {
            self.metrics.auth("no_token");
            return Err(AuthError::Unauthenticated(
                "no bearer token: the agent must present its projected ServiceAccount token".into(),
            ));
        };
        if token.expose().len() > MAX_TOKEN_BYTES {
            self.metrics.auth("malformed");
            return Err(AuthError::Unauthenticated("the token is too long".into()));
        }
        let token_expiry = self.review(token, claimed_cluster_id, peer).await?;
        Ok(AgentIdentity {
            cluster_id: claimed_cluster_id.to_string(),
            token_expiry,
        })
    }

    fn metrics(&self) -> Option<IdentityMetrics> {
        Some(self.metrics.clone())
    }
}

/// Whether a token whose unverified `exp` is `exp` counts as expired at `now`.
pub(crate) fn expired(exp: SystemTime, now: SystemTime) -> bool {
    exp.checked_add(EXP_LEEWAY).is_none_or(|e| e <= now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};

    fn status(auth: bool, aud: &[&str], user: &str) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(auth),
            audiences: Some(aud.iter().map(|s| s.to_string()).collect()),
            user: Some(UserInfo {
                username: Some(user.into()),
                ..Default::default()
            }),
            error: None,
        }
    }

    #[test]
    fn expiry_allows_for_clock_skew() {
        let now = SystemTime::now();
        assert!(!expired(now - Duration::from_secs(30), now), "30 s of skew");
        assert!(!expired(now + Duration::from_secs(30), now));
        assert!(expired(now - Duration::from_secs(61), now));
    }

    #[test]
    fn only_the_agent_account_with_the_audience_passes() {
        let s = ReviewSettings::for_service_account("vclink-system", "vclink-agent");
        let me = "system:serviceaccount:vclink-system:vclink-agent";
        assert!(judge(&status(true, &["vclink-hub"], me), &s, "c").is_ok());
        let e = judge(&status(false, &["vclink-hub"], me), &s, "c").unwrap_err();
        assert!(matches!(e.0, AuthError::Unauthenticated(_)));
        assert_eq!(
            judge(&status(true, &["other"], me), &s, "c").unwrap_err().1,
            "wrong_audience"
        );
        assert_eq!(
            judge(&status(true, &[], me), &s, "c").unwrap_err().1,
            "wrong_audience"
        );
        let e = judge(
            &status(
                true,
                &["vclink-hub"],
                "system:serviceaccount:default:default",
            ),
            &s,
            "c",
        )
        .unwrap_err();
        assert!(matches!(e.0, AuthError::Denied(_)));
    }
}
