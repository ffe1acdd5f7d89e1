//! Ensuring a vCluster's provisioning cluster exists, and deleting it: the logic
//! between the controller's decision and the API calls, generic over the
//! [`ProvClusters`] seam and over [`Known`], the part of the hub's state it reads and
//! records between calls. Adopts the Go operator's cluster of the vCluster, or creates
//! ours under the first free candidate name. A 409 means the name exists: if it is ours
//! (an earlier attempt of this hub), that is success; otherwise the next candidate is
//! tried — two vClusters are never merged into one cluster. What was written goes
//! straight into the index ([`Known::record_written`]), so the next decision sees the
//! object even before its watch event arrives.

use vclink_proto::limits::MAX_MESSAGE_TEXT;
use vclink_proto::names::{cluster_name, requested_name};
use vclink_proto::v1::VCluster;

use crate::core::decide::DeleteReason;
use crate::core::index::{NameUse, ProvCluster, VcKey};
use crate::rancher::clusters::ProvClusters;
use crate::state::Hub;

/// How many candidate names are tried before giving up.
pub const MAX_NAME_ATTEMPTS: u32 = 8;

/// Reconcile failures.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// A Kubernetes API call failed.
    #[error("{what}: {source}")]
    Api {
        /// What was being done (no credentials).
        what: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Every candidate name is taken by other objects.
    #[error("no free cluster name after {MAX_NAME_ATTEMPTS} attempts")]
    NoFreeName,
}

impl ReconcileError {
    /// Metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Api {
                source: kube::Error::Api(e),
                ..
            } if e.code == 403 || e.code == 400 || e.code == 422 => "api_denied",
            Self::Api { .. } => "api",
            Self::NoFreeName => "no_free_name",
        }
    }

    /// Text for the agent: the API server's message, bounded.
    pub fn agent_message(&self) -> String {
        let s = match self {
            Self::Api {
                what,
                source: kube::Error::Api(e),
            } => format!("{what}: {}", e.message),
            other => other.to_string(),
        };
        s.chars().take(MAX_MESSAGE_TEXT).collect()
    }
}

/// What [`ensure`] and [`delete`] read from and record in the hub's state between API
/// calls. Each call takes the state's lock on its own; none is held across an await.
pub trait Known: Send + Sync {
    /// The name of an unadopted cluster of the Go operator for `key`, if any.
    fn legacy_cluster(&self, key: &VcKey) -> Option<String>;
    /// Who uses the provisioning-cluster name `name`, as far as the index knows.
    fn name_use(&self, name: &str, key: &VcKey) -> NameUse;
    /// A provisioning cluster the hub just wrote or read back.
    fn record_written(&self, p: ProvCluster);
    /// The hub is deleting `key`'s cluster (`true`) or gave up (`false`), so its
    /// watch's delete event is (not) taken for a user's deletion.
    fn deleting_by_us(&self, key: &VcKey, yes: bool);
}

impl Known for Hub {
    fn legacy_cluster(&self, key: &VcKey) -> Option<String> {
        self.world().index.legacy_cluster(key).map(str::to_string)
    }

    fn name_use(&self, name: &str, key: &VcKey) -> NameUse {
        self.world().index.name_use(name, key)
    }

    fn record_written(&self, p: ProvCluster) {
        Hub::record_written(self, p);
    }

    fn deleting_by_us(&self, key: &VcKey, yes: bool) {
        let mut w = self.world();
        if yes {
            w.index.mark_deleting_by_us(key);
        } else {
            w.index.unmark_deleting_by_us(key);
        }
    }
}

/// The `attempt`-th candidate name.
pub fn candidate_name(key: &VcKey, vc: &VCluster, attempt: u32) -> String {
    if vc.requested_name.is_empty() {
        cluster_name(&key.host, &vc.namespace, &vc.name, attempt)
    } else {
        requested_name(&vc.requested_name, attempt)
    }
}

fn api(what: String) -> impl FnOnce(kube::Error) -> ReconcileError {
    move |source| ReconcileError::Api { what, source }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Adopts or creates the provisioning cluster of a vCluster. See the module docs.
pub async fn ensure(
    known: &impl Known,
    clusters: &impl ProvClusters,
    key: &VcKey,
    vc: &VCluster,
) -> Result<(), ReconcileError> {
    if adopt(known, clusters, key, vc).await? {
        return Ok(());
    }
    for attempt in 0..MAX_NAME_ATTEMPTS {
        let name = candidate_name(key, vc, attempt);
        match known.name_use(&name, key) {
            NameUse::Ours => return Ok(()),
            NameUse::Other => continue,
            NameUse::Free => {}
        }
        match clusters.create(&name, key, vc).await {
            Ok(created) => {
                tracing::info!(host = %key.host, uid = %key.uid, cluster = %name, "created Rancher cluster");
                known.record_written(created);
                return Ok(());
            }
            Err(e) if is_status(&e, 409) => {
                let existing = clusters
                    .get(&name)
                    .await
                    .map_err(api(format!("reading cluster {name} after a name conflict")))?;
                if existing.key.as_ref() == Some(key) {
                    known.record_written(existing);
                    return Ok(());
                }
                tracing::info!(host = %key.host, uid = %key.uid, cluster = %name, "name taken by another object; trying the next candidate");
            }
            Err(source) => {
                return Err(ReconcileError::Api {
                    what: format!("creating cluster {name}"),
                    source,
                });
            }
        }
    }
    Err(ReconcileError::NoFreeName)
}

/// Finds a cluster the Go operator created for this vCluster and puts our labels on it
/// (and on its management cluster). Returns whether one was adopted.
async fn adopt(
    known: &impl Known,
    clusters: &impl ProvClusters,
    key: &VcKey,
    vc: &VCluster,
) -> Result<bool, ReconcileError> {
    // The operator's clusters are watched (one narrow watch, see `rancher::watch`), so
    // the common case — no such cluster — costs no request.
    let Some(name) = known.legacy_cluster(key) else {
        return Ok(false);
    };
    let prov = clusters
        .label(&name, key, vc)
        .await
        .map_err(api(format!("adopting cluster {name}")))?;
    if let Some(id) = &prov.mgmt_id {
        clusters
            .label_mgmt(id, key, vc)
            .await
            .map_err(api(format!("labelling management cluster {id}")))?;
    }
    tracing::info!(host = %key.host, uid = %key.uid, cluster = %name, "adopted a cluster of the vcluster-rancher-operator");
    known.record_written(prov);
    Ok(true)
}

/// Deletes the provisioning cluster `name` (precondition: its UID), remembering that
/// the hub did it so the watch's delete event is not taken for a user's deletion. Gone
/// already (404) is success.
pub async fn delete(
    known: &impl Known,
    clusters: &impl ProvClusters,
    key: &VcKey,
    name: &str,
    uid: String,
    reason: DeleteReason,
) -> Result<(), ReconcileError> {
    known.deleting_by_us(key, true);
    tracing::info!(host = %key.host, uid = %key.uid, cluster = %name, reason = reason.as_str(), "deleting Rancher cluster");
    match clusters.delete(name, uid).await {
        Ok(()) => Ok(()),
        Err(e) if is_status(&e, 404) => {
            known.deleting_by_us(key, false);
            Ok(())
        }
        Err(source) => {
            known.deleting_by_us(key, false);
            Err(ReconcileError::Api {
                what: format!("deleting cluster {name}"),
                source,
            })
        }
    }
}

#[cfg(test)]
#[path = "ensure_tests.rs"]
mod tests;
