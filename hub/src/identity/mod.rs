//! Agent identity: the authenticator seam and its TokenReview implementation (an
//! agent's projected ServiceAccount token checked by the API server of the cluster it
//! claims, through Rancher's cluster proxy), and [`build`], which turns the hub's flags
//! into the authenticator (plus the task rotating the hub's own Rancher token).
//!
//! - [`auth`]: the `AgentAuthenticator` trait, `AgentIdentity`, `AuthError`, and the
//!   insecure `TrustClaimedCluster` for tests.
//! - [`tokenreview`]: the TokenReview authenticator.
//! - [`admission`]: who may cost a TokenReview now (reserved and per-client shares).
//! - [`cache`]: the bounded caches of verified and of refused tokens.
//! - [`flight`]: concurrent verifications of one token share one TokenReview.
//! - [`jwt`]: the token's unverified `exp`, used only for scheduling.
//! - [`proxy`]: the client of Rancher's cluster proxy.
//! - [`credential`]: the hub's Rancher credential (a file, or a Token it rotates).
//! - [`metrics`]: TokenReview, re-verification and rotation counters.

pub(crate) mod admission;
pub mod auth;
pub(crate) mod cache;
pub(crate) mod credential;
pub(crate) mod flight;
pub(crate) mod jwt;
pub(crate) mod metrics;
pub(crate) mod proxy;
pub(crate) mod tokenreview;

use std::sync::Arc;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub(crate) use metrics::IdentityMetrics;
pub(crate) use tokenreview::{ReviewSettings, TokenReviewAuthenticator};

use crate::config::{AgentAuthMode, Args};
use auth::{AgentAuthenticator, TrustClaimedCluster};
use credential::{CredentialSource, FileCredential, ManagedToken};

/// The authenticator the flags ask for, and the credential rotation task if any.
pub(crate) async fn build(
    args: &Args,
    client: &kube::Client,
    shutdown: &CancellationToken,
) -> anyhow::Result<(Arc<dyn AgentAuthenticator>, Option<JoinHandle<()>>)> {
    if args.agent_auth == AgentAuthMode::TrustClaimed {
        tracing::warn!(
            "--agent-auth=trust-claimed: agent identities are NOT verified; any client that reaches the hub can speak for any cluster. Use only for tests."
        );
        return Ok((Arc::new(TrustClaimedCluster::default()), None));
    }
    let url = args.rancher_url.as_deref().context(
        "--agent-auth=tokenreview needs --rancher-url (Rancher's server URL) to reach its cluster proxy",
    )?;
    let (ns, name) = args.agent_service_account.split_once('/').context(
        "--agent-service-account must be <namespace>/<name>, e.g. vclink-system/vclink-agent",
    )?;
    anyhow::ensure!(
        vclink_proto::validate::is_dns1123_label(ns) && !name.is_empty(),
        "--agent-service-account must be <namespace>/<name>"
    );
    let metrics = IdentityMetrics::default();
    let mut task = None;
    let credential: Arc<dyn CredentialSource> = match (&args.rancher_token_file, &args.rancher_user)
    {
        (Some(path), None) => {
            Arc::new(FileCredential::new(path.clone()).context("--rancher-token-file")?)
        }
        (None, Some(user)) => {
            let t = ManagedToken::start(
                client.clone(),
                user,
                args.rancher_token_ttl,
                Arc::new(metrics.clone()),
            )
            .await
            .context("issuing the hub's Rancher token (--rancher-user)")?;
            task = Some(tokio::spawn(t.clone().run(shutdown.clone())));
            t
        }
        _ => anyhow::bail!(
            "--agent-auth=tokenreview needs exactly one of --rancher-user (the hub issues and rotates its own token) or --rancher-token-file"
        ),
    };
    let proxy = proxy::RancherProxy::new(url, args.rancher_ca_file.as_deref(), credential)?;
    let mut settings = ReviewSettings::for_service_account(ns, name);
    settings.qps = args.rancher_qps;
    settings.burst = args.rancher_burst;
    settings.reserved_share = args.tokenreview_reserved_share;
    settings.peer_qps = args.tokenreview_peer_qps;
    settings.peer_burst = args.tokenreview_peer_burst;
    settings.negative_ttl = args.tokenreview_negative_ttl;
    tracing::info!(rancher = %url, service_account = %args.agent_service_account, "agents are verified with TokenReviews through Rancher's cluster proxy");
    Ok((
        Arc::new(TokenReviewAuthenticator::new(proxy, settings, metrics)),
        task,
    ))
}
