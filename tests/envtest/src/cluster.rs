//! CONTRACT STUB — to be implemented. Signatures are the agreed API; keep them.
use std::path::{Path, PathBuf};

use crate::pki::{CertificateAuthority, ClientIdentity};

/// How to start a cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Also run kube-controller-manager (garbage collector + Job controller).
    pub controller_manager: bool,
    /// Extra DNS names / IPs for the API server's serving certificate (e.g. a
    /// vCluster's `<name>`, `<name>.<ns>`); 127.0.0.1 and localhost are always there.
    pub extra_sans: Vec<String>,
    /// Extra kube-apiserver flags (`--flag=value`).
    pub extra_apiserver_args: Vec<String>,
}

/// One running, isolated cluster. Dropping it stops all its processes and removes
/// its data directory.
pub struct Cluster {
    _private: (),
}

impl Cluster {
    /// Starts etcd + kube-apiserver (+ controller manager) and waits until `/readyz`.
    pub async fn start(name: &str, opts: ClusterOptions) -> anyhow::Result<Cluster> {
        let _ = (name, opts);
        todo!()
    }
    /// The name given at start.
    pub fn name(&self) -> &str {
        todo!()
    }
    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        todo!()
    }
    /// The API server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        todo!()
    }
    /// The cluster CA (signs serving and client certificates) as PEM.
    pub fn ca(&self) -> &CertificateAuthority {
        todo!()
    }
    /// Admin (`system:masters`) client identity.
    pub fn admin_identity(&self) -> &ClientIdentity {
        todo!()
    }
    /// Admin kubeconfig file.
    pub fn kubeconfig_path(&self) -> &Path {
        todo!()
    }
    /// Admin client.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        todo!()
    }
    /// A client certificate for any user/groups, signed by this cluster's CA.
    pub fn issue_identity(&self, user: &str, groups: &[&str]) -> ClientIdentity {
        let _ = (user, groups);
        todo!()
    }
    /// A client authenticated as `user` in `groups` (RBAC applies).
    pub async fn client_as(&self, user: &str, groups: &[&str]) -> anyhow::Result<kube::Client> {
        let _ = (user, groups);
        todo!()
    }
    /// Writes a kubeconfig for `identity` to `path`.
    pub fn write_kubeconfig(&self, identity: &ClientIdentity, path: &Path) -> anyhow::Result<()> {
        let _ = (identity, path);
        todo!()
    }
    /// A client using a bearer token (e.g. a ServiceAccount token).
    pub async fn client_with_token(&self, token: &str) -> anyhow::Result<kube::Client> {
        let _ = token;
        todo!()
    }
    /// A per-cluster scratch directory (removed on drop).
    pub fn data_dir(&self) -> &Path {
        todo!()
    }
    /// PIDs of every process this cluster started.
    pub fn pids(&self) -> Vec<u32> {
        todo!()
    }
    /// Stops all processes and waits for them to exit.
    pub fn stop(self) {}
}

#[allow(dead_code)]
fn _unused(_: PathBuf) {}
