//! The one seam through which an agent's identity is established. The real
//! implementation ([`super::TokenReviewAuthenticator`]) verifies the bearer token
//! with a TokenReview through Rancher's proxy to the claimed cluster; the
//! [`TrustClaimedCluster`] here believes the claim and is only an explicit, insecure
//! opt-in for tests. Nothing else in the hub looks at the bearer token.

use std::sync::Once;
use std::time::SystemTime;

use async_trait::async_trait;
use vclink_proto::Secret;

/// Who an agent stream speaks for, once verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentIdentity {
    /// The Rancher management cluster id the stream is bound to.
    pub cluster_id: String,
    /// The token's own expiry as it claims (unverified; used only to schedule the next
    /// verification). None: unknown or never.
    pub token_expiry: Option<SystemTime>,
}

/// Why an agent was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No or an invalid credential.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// A valid credential that may not speak for the claimed cluster.
    #[error("permission denied: {0}")]
    Denied(String),
    /// The verifier could not be reached; the agent should retry.
    #[error("authentication unavailable: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// As a gRPC status.
    pub fn to_status(&self) -> tonic::Status {
        match self {
            Self::Unauthenticated(m) => tonic::Status::unauthenticated(m.clone()),
            Self::Denied(m) => tonic::Status::permission_denied(m.clone()),
            Self::Unavailable(m) => tonic::Status::unavailable(m.clone()),
        }
    }

    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "unauthenticated",
            Self::Denied(_) => "auth_denied",
            Self::Unavailable(_) => "auth_unavailable",
        }
    }
}

/// Verifies an agent.
#[async_trait]
pub trait AgentAuthenticator: Send + Sync {
    /// `bearer` is the token from the `authorization: Bearer …` metadata, if any.
    async fn authenticate(
        &self,
        bearer: Option<&Secret>,
        claimed_cluster_id: &str,
    ) -> Result<AgentIdentity, AuthError>;

    /// [`AgentAuthenticator::authenticate`] for a new stream from `peer` (the client's
    /// IP), which an implementation may use to share its budget fairly between clients.
    async fn authenticate_from(
        &self,
        bearer: Option<&Secret>,
        claimed_cluster_id: &str,
        peer: Option<std::net::IpAddr>,
    ) -> Result<AgentIdentity, AuthError> {
        let _ = peer;
        self.authenticate(bearer, claimed_cluster_id).await
    }

    /// Metrics to register with the hub's, if the implementation has any.
    fn metrics(&self) -> Option<super::IdentityMetrics> {
        None
    }
}

/// Accepts the claimed cluster id as is. NOT a security boundary: any client that can
/// reach the hub can speak for any cluster. Warns once.
pub struct TrustClaimedCluster {
    warned: Once,
}

impl Default for TrustClaimedCluster {
    fn default() -> Self {
        Self {
            warned: Once::new(),
        }
    }
}

#[async_trait]
impl AgentAuthenticator for TrustClaimedCluster {
    async fn authenticate(
        &self,
        _bearer: Option<&Secret>,
        claimed_cluster_id: &str,
    ) -> Result<AgentIdentity, AuthError> {
        self.warned.call_once(|| {
            tracing::warn!(
                "agent identities are NOT verified: the hub trusts the cluster id each agent claims"
            );
        });
        Ok(AgentIdentity {
            cluster_id: claimed_cluster_id.to_string(),
            token_expiry: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn trust_claimed_cluster_binds_the_claim() {
        let id = TrustClaimedCluster::default()
            .authenticate(None, "c-m-abcd1234")
            .await
            .unwrap();
        assert_eq!(id.cluster_id, "c-m-abcd1234");
    }
}
