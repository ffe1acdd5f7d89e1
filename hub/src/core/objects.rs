//! The Rancher objects the hub watches, as the small structs the [`super::index`]
//! keeps of them (never full objects): provisioning and management clusters, the status
//! of a ClusterRegistrationToken, the registration token as far as it is known, and the
//! Rancher settings the hub reads; plus [`resolve_token`], which turns a token object
//! (and, in newer Rancher, its Secret) into the manifest URL. Apart from the index so
//! the lookups there read on their own. Pure.

use std::time::Instant;

use vclink_proto::Secret;

use super::keys::VcKey;

/// What the hub keeps of a provisioning cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProvCluster {
    /// Object name in the workspace.
    pub name: String,
    /// Object namespace: the Fleet workspace it was created in. Names are unique only
    /// per namespace, so the index files clusters under [`ProvCluster::at`].
    pub namespace: String,
    /// Object UID (delete precondition).
    pub uid: String,
    /// The vCluster it belongs to, from our labels; `None` when the labels are incomplete.
    pub key: Option<VcKey>,
    /// `status.clusterName`, the management cluster id, once Rancher set it.
    pub mgmt_id: Option<String>,
    /// `status.ready`: once true, never reset, so it also means "was connected once".
    pub ready: bool,
    /// Has a deletionTimestamp.
    pub deleting: bool,
    /// Label `vclink.io/project` (`p-…`): the host project last recorded for the vCluster.
    pub project: Option<String>,
    /// Labels `vclink.io/namespace` and `vclink.io/name`: the vCluster's Service
    /// namespace and name on its host. They find the cluster of a reinstalled vCluster
    /// (same host, namespace and name, new Service UID).
    pub vcluster: Option<(String, String)>,
    /// Whether the hub's proof annotations verify ([`super::proof`]): only a proven
    /// cluster is ever mapped to its vCluster, sent to an agent or deleted.
    pub trust: super::proof::Trust,
    /// `metadata.resourceVersion` as a number (0 when it is not one): orders what a write
    /// returned against what the watch already delivered.
    pub version: u64,
}

impl ProvCluster {
    /// `<namespace>/<name>`: the cluster's identity in the index (neither part can
    /// contain `/`), and how messages name it.
    pub fn at(&self) -> String {
        at(&self.namespace, &self.name)
    }

    /// The same cluster, judged proven (tests build their clusters with this).
    #[cfg(test)]
    pub fn proven(self) -> Self {
        Self {
            trust: super::proof::Trust::Proven,
            ..self
        }
    }
}

/// `<namespace>/<name>` of a provisioning cluster (see [`ProvCluster::at`]).
pub fn at(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Connection state of a management cluster as its conditions describe it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conn {
    /// `Connected=True` (2.15) or, without a Connected condition, `Ready=True` (≤ 2.14).
    Connected,
    /// Rancher says the tunnel was lost (`Ready=False` reason `Disconnected`).
    Disconnected,
    /// Not connected (yet), no sign that it ever was.
    NotConnected,
}

/// What the hub keeps of a management cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MgmtCluster {
    /// `c-m-…` id.
    pub id: String,
    /// Connection state.
    pub conn: Conn,
    /// Carries the `--host-selector` label (`vclink.io/agent=enabled` by default): its
    /// agent may be served.
    pub host_opt_in: bool,
    /// Carries `vclink.io/nested-import=enabled`: a vCluster cluster vclink created may
    /// host an agent of its own (with `--allow-nested-hosts`).
    pub nested_opt_in: bool,
    /// `spec.displayName`, what Rancher shows: the `<host>` part of the default names
    /// of vClusters created on it (`vclink_proto::names::host_part`). Kept only for
    /// clusters that can be hosts (not for the vClusters' own, unless nested).
    pub display_name: Option<String>,
}

/// What the hub keeps of a ClusterRegistrationToken's status. Credentials stay in
/// [`Secret`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crt {
    /// Namespace = management cluster id.
    pub mgmt_id: String,
    /// `status.manifestUrl` (may contain the literal `{token}`).
    pub manifest_url: Secret,
    /// `status.token` (empty in newer Rancher).
    pub token: Secret,
    /// `status.tokenSecretName` (newer Rancher).
    pub token_secret_name: Option<String>,
}

/// Name of the Secret that holds the token in newer Rancher.
pub const TOKEN_SECRET_NAME: &str = "crt-token-default-token";
/// Placeholder newer Rancher leaves in the URLs.
pub const TOKEN_PLACEHOLDER: &str = "{token}";

/// The registration token of a management cluster, as far as it is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenState {
    /// No token object (or no manifest URL) yet.
    Missing,
    /// Newer Rancher: the URL has the placeholder but the token Secret is not there yet.
    WaitingSecret,
    /// The manifest URL with the token filled in, and when it became known.
    Ready(Secret, Instant),
}

/// Rancher settings the hub reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// `agent-tls-mode` (`strict` / `system-store`), if set.
    pub agent_tls_mode: Option<String>,
    /// `cacerts` PEM (empty for a public CA).
    pub cacerts: String,
}

/// Resolves the manifest URL: legacy Rancher carries the token in the URL; newer Rancher
/// leaves `{token}` there and keeps the token in a Secret named by
/// `status.tokenSecretName`.
pub fn resolve_token(crt: Option<&Crt>, secret: Option<&Secret>) -> Option<Secret> {
    let crt = crt?;
    let url = crt.manifest_url.expose();
    if url.is_empty() {
        return None;
    }
    if !url.contains(TOKEN_PLACEHOLDER) {
        return Some(crt.manifest_url.clone());
    }
    let token = if !crt.token.is_empty() {
        crt.token.clone()
    } else {
        let named_ours = crt
            .token_secret_name
            .as_deref()
            .is_none_or(|n| n == TOKEN_SECRET_NAME);
        match secret {
            Some(s) if named_ours && !s.is_empty() => s.clone(),
            _ => return None,
        }
    };
    Some(Secret::new(url.replace(TOKEN_PLACEHOLDER, token.expose())))
}
