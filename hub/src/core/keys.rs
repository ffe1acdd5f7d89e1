//! The key every piece of hub state is filed under: a vCluster is its host cluster's
//! Rancher id plus its Service UID there (a reinstalled vCluster gets a new UID and is
//! matched to its old Rancher cluster by host, namespace and name elsewhere).

/// A vCluster's identity: the host cluster's Rancher id and its Service UID there.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VcKey {
    /// Rancher management id of the host (downstream) cluster.
    pub host: String,
    /// UID of the vCluster's Service in the host cluster.
    pub uid: String,
}

impl VcKey {
    /// Builds a key.
    pub fn new(host: impl Into<String>, uid: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            uid: uid.into(),
        }
    }
}
