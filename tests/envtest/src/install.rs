//! CONTRACT STUB — to be implemented. Signatures are the agreed API; keep them.
use std::path::PathBuf;

/// Paths of the binaries the environment runs.
#[derive(Debug, Clone)]
pub struct KubeBinaries {
    /// kube-apiserver.
    pub apiserver: PathBuf,
    /// kube-controller-manager.
    pub controller_manager: PathBuf,
    /// etcd.
    pub etcd: PathBuf,
}

/// Installs (first use) or finds the cached binaries. Safe to call concurrently.
pub fn binaries() -> anyhow::Result<KubeBinaries> {
    todo!()
}
