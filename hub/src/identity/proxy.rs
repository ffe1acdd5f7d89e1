//! The one HTTP call the hub makes to Rancher: `POST
//! https://<rancher>/k8s/clusters/<id>/apis/authentication.k8s.io/v1/tokenreviews`
//! through Rancher's cluster proxy, authenticated with the hub's own Rancher token
//! (`Authorization: Bearer <token-name>:<secret>`). The proxy forwards it to the API
//! server of cluster `<id>` as the hub's Rancher user, so a token minted by any other
//! cluster's API server cannot pass. TLS 1.3 only (rustls, ring), Rancher's CA pinned
//! when `--rancher-ca-file` is set, else the system trust store.

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use vclink_proto::{Secret, validate};

use crate::identity::credential::{CredentialError, CredentialSource};

/// Longest a TokenReview round trip may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest TokenReview response read.
const MAX_RESPONSE: usize = 256 * 1024;

/// Why a TokenReview could not be done (never carries a credential).
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The hub has no usable credential.
    #[error("{0}")]
    Credential(#[from] CredentialError),
    /// Rancher could not be reached or did not answer in time.
    #[error("cannot reach Rancher: {0}")]
    Transport(String),
    /// Rancher refused the hub's token (401).
    #[error("Rancher refused the hub's token (401)")]
    Unauthorized,
    /// The hub's Rancher user may not create TokenReviews in that cluster (403).
    #[error(
        "the hub's Rancher user may not create TokenReviews in cluster {0} (403); grant it the TokenReview role template"
    )]
    Forbidden(String),
    /// Rancher knows no such cluster (404).
    #[error("Rancher knows no cluster {0}")]
    NoSuchCluster(String),
    /// Any other answer.
    #[error("Rancher's proxy answered HTTP {0}")]
    Status(u16),
    /// The answer was no TokenReview.
    #[error("unreadable TokenReview response: {0}")]
    Decode(String),
    /// The cluster id is not a DNS label (never put in a URL).
    #[error("invalid cluster id")]
    BadClusterId,
}

impl ProxyError {
    /// Low-cardinality metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Credential(_) => "no_credential",
            Self::Transport(_) => "transport",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NoSuchCluster(_) => "no_such_cluster",
            Self::Status(_) => "status",
            Self::Decode(_) => "decode",
            Self::BadClusterId => "bad_cluster_id",
        }
    }
}

/// See the module docs.
pub struct RancherProxy {
    http: reqwest::Client,
    base: String,
    credential: Arc<dyn CredentialSource>,
}

/// The rustls client config for Rancher: TLS 1.3 only, ring, `ca_pem` or system roots.
pub fn tls_config(ca_pem: Option<&[u8]>) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for c in CertificateDer::pem_slice_iter(pem) {
                roots.add(c?)?;
            }
            anyhow::ensure!(
                !roots.is_empty(),
                "the Rancher CA file holds no PEM certificate"
            );
        }
        None => {
            let (added, _) =
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            anyhow::ensure!(
                added > 0,
                "no system trust store: set --rancher-ca-file to Rancher's CA"
            );
        }
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(cfg)
}

impl RancherProxy {
    /// A client for Rancher at `url` (`https://rancher.example.com`).
    pub fn new(
        url: &str,
        ca_file: Option<&Path>,
        credential: Arc<dyn CredentialSource>,
    ) -> anyhow::Result<Self> {
        use anyhow::Context;
        let base = url.trim_end_matches('/').to_string();
        anyhow::ensure!(
            base.starts_with("https://"),
            "--rancher-url must be an https:// URL"
        );
        let pem = ca_file
            .map(|p| {
                std::fs::read(p)
                    .with_context(|| format!("reading --rancher-ca-file {}", p.display()))
            })
            .transpose()?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls_config(pem.as_deref())?)
            .https_only(true)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .context("building the HTTP client for Rancher")?;
        Ok(Self {
            http,
            base,
            credential,
        })
    }

    /// Sends a TokenReview for `token` with `audiences` to cluster `cluster`. A 401 is
    /// retried once when the hub's credential changed meanwhile (rotation race).
    pub async fn token_review(
        &self,
        cluster: &str,
        token: &Secret,
        audiences: &[String],
    ) -> Result<TokenReviewStatus, ProxyError> {
        if !validate::is_dns1123_label(cluster) {
            return Err(ProxyError::BadClusterId);
        }
        let mut tried_again = false;
        loop {
            let cred = self.credential.current()?;
            match self.once(cluster, token, audiences, &cred).await {
                Err(ProxyError::Unauthorized) => {
                    let now = self.credential.current()?;
                    if now != cred && !tried_again {
                        tried_again = true;
                        continue;
                    }
                    self.credential.refused(&cred);
                    return Err(ProxyError::Unauthorized);
                }
                other => return other,
            }
        }
    }

    async fn once(
        &self,
        cluster: &str,
        token: &Secret,
        audiences: &[String],
        cred: &Secret,
    ) -> Result<TokenReviewStatus, ProxyError> {
        let url = format!(
            "{}/k8s/clusters/{cluster}/apis/authentication.k8s.io/v1/tokenreviews",
            self.base
        );
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.expose().to_string()),
                audiences: Some(audiences.to_vec()),
            },
            ..Default::default()
        };
        let resp = self
            .http
            .post(&url)
            .bearer_auth(cred.expose())
            .json(&review)
            .send()
            .await
            .map_err(|e| ProxyError::Transport(e.without_url().to_string()))?;
        match resp.status().as_u16() {
            200 | 201 => {}
            401 => return Err(ProxyError::Unauthorized),
            403 => return Err(ProxyError::Forbidden(cluster.to_string())),
            404 => return Err(ProxyError::NoSuchCluster(cluster.to_string())),
            s => return Err(ProxyError::Status(s)),
        }
        if resp
            .content_length()
            .is_some_and(|l| l > MAX_RESPONSE as u64)
        {
            return Err(ProxyError::Decode("response too large".into()));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| ProxyError::Transport(e.without_url().to_string()))?;
        if body.len() > MAX_RESPONSE {
            return Err(ProxyError::Decode("response too large".into()));
        }
        // serde's message may quote a value of the body (which echoes the token): only
        // the error's kind and position are kept.
        let tr: TokenReview = serde_json::from_slice(&body).map_err(|e| {
            ProxyError::Decode(format!(
                "{:?} error at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        tr.status
            .ok_or_else(|| ProxyError::Decode("no status".into()))
    }
}
