//! The hub's writes to Rancher's local cluster: create (or adopt) provisioning clusters
//! and delete them. Every call waits for the client-side rate limiter and is counted by
//! verb. Reads of what was written go straight into the index, so the next decision
//! sees the object even before its watch event arrives.

use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions};
use serde_json::json;
use vclink_proto::keys::*;
use vclink_proto::names::{cluster_name, requested_name};
use vclink_proto::v1::VCluster;

use super::{key_from_labels, mgmt_resource, parse_prov, prov_resource};
use crate::decide::DeleteReason;
use crate::index::{NameUse, VcKey};
use crate::ratelimit::RateLimiter;
use crate::reconcile::{MAX_NAME_ATTEMPTS, ReconcileError};
use crate::world::Hub;

/// The hub's Kubernetes writes.
pub struct Rancher {
    prov: Api<DynamicObject>,
    mgmt: Api<DynamicObject>,
    limiter: RateLimiter,
}

impl Rancher {
    /// Clients for the workspace and management clusters.
    pub fn new(client: Client, workspace: &str, limiter: RateLimiter) -> Self {
        Self {
            prov: Api::namespaced_with(client.clone(), workspace, &prov_resource()),
            mgmt: Api::all_with(client, &mgmt_resource()),
            limiter,
        }
    }

    async fn call(&self, hub: &Hub, verb: &'static str) {
        self.limiter.acquire().await;
        hub.metrics.api(verb);
    }

    /// Deletes the provisioning cluster `name` (precondition: its UID), remembering that
    /// the hub did it so the watch's delete event is not taken for a user's deletion.
    pub async fn delete_cluster(
        &self,
        hub: &Hub,
        key: &VcKey,
        name: &str,
        uid: String,
        reason: DeleteReason,
    ) -> Result<(), ReconcileError> {
        hub.world().index.mark_deleting_by_us(key);
        tracing::info!(host = %key.host, uid = %key.uid, cluster = %name, reason = reason.as_str(), "deleting Rancher cluster");
        self.call(hub, "delete").await;
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match self.prov.delete(name, &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => {
                hub.world().index.unmark_deleting_by_us(key);
                Ok(())
            }
            Err(source) => {
                hub.world().index.unmark_deleting_by_us(key);
                Err(ReconcileError::Api {
                    what: format!("deleting cluster {name}"),
                    source,
                })
            }
        }
    }

    /// Adopts or creates the provisioning cluster of a vCluster.
    pub async fn ensure_cluster(
        &self,
        hub: &Hub,
        key: &VcKey,
        vc: &VCluster,
    ) -> Result<(), ReconcileError> {
        ensure_cluster_impl(hub, self, key, vc).await
    }
}

/// Labels that tie a provisioning cluster to its vCluster.
fn our_labels(key: &VcKey, vc: &VCluster) -> serde_json::Map<String, serde_json::Value> {
    let mut l = serde_json::Map::new();
    l.insert(LABEL_MANAGED_BY.into(), MANAGED_BY_VALUE.into());
    l.insert(LABEL_HOST_CLUSTER.into(), key.host.clone().into());
    l.insert(LABEL_SERVICE_UID.into(), key.uid.clone().into());
    l.insert(LABEL_NAMESPACE.into(), vc.namespace.clone().into());
    l.insert(LABEL_NAME.into(), vc.name.clone().into());
    l.insert(LABEL_VCLUSTER.into(), "true".into());
    if let Some((_, p)) = vc.project_id.split_once(':') {
        l.insert(LABEL_PROJECT.into(), p.into());
    }
    l
}

/// The provisioning cluster object for a vCluster (imported: no rkeConfig).
pub fn build_cluster(name: &str, workspace: &str, key: &VcKey, vc: &VCluster) -> DynamicObject {
    let o = json!({
        "apiVersion": "provisioning.cattle.io/v1",
        "kind": "Cluster",
        "metadata": {
            "name": name,
            "namespace": workspace,
            "labels": our_labels(key, vc),
            "annotations": {
                "field.cattle.io/no-creator-rbac": "true",
                "rancher.io/imported-cluster-version-management": "false",
                "field.cattle.io/description": format!("vCluster {}/{} on {}", vc.namespace, vc.name, key.host),
            },
        },
        "spec": {},
    });
    serde_json::from_value(o).unwrap_or_else(|_| DynamicObject::new(name, &prov_resource()))
}

/// The `attempt`-th candidate name.
pub fn candidate_name(key: &VcKey, vc: &VCluster, attempt: u32) -> String {
    if vc.requested_name.is_empty() {
        cluster_name(&key.host, &vc.namespace, &vc.name, attempt)
    } else {
        requested_name(&vc.requested_name, attempt)
    }
}

/// Adopts the Go operator's cluster of this vCluster, or creates ours under the first
/// free candidate name. A 409 means the name exists: if it is ours (an earlier attempt
/// of this hub), that is success; otherwise the next candidate is tried — two
/// vClusters are never merged into one cluster.
async fn ensure_cluster_impl(
    hub: &Hub,
    r: &Rancher,
    key: &VcKey,
    vc: &VCluster,
) -> Result<(), ReconcileError> {
    if adopt(hub, r, key, vc).await? {
        return Ok(());
    }
    let ws = &hub.cfg.workspace;
    for attempt in 0..MAX_NAME_ATTEMPTS {
        let name = candidate_name(key, vc, attempt);
        match hub.world().index.name_use(&name, key) {
            NameUse::Ours => return Ok(()),
            NameUse::Other => continue,
            NameUse::Free => {}
        }
        r.call(hub, "create").await;
        match r
            .prov
            .create(&PostParams::default(), &build_cluster(&name, ws, key, vc))
            .await
        {
            Ok(created) => {
                tracing::info!(host = %key.host, uid = %key.uid, cluster = %name, "created Rancher cluster");
                let keys = hub.world().index.apply_prov_written(parse_prov(&created));
                hub.queue.add_all(keys);
                return Ok(());
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                r.call(hub, "get").await;
                let existing = r
                    .prov
                    .get(&name)
                    .await
                    .map_err(|source| ReconcileError::Api {
                        what: format!("reading cluster {name} after a name conflict"),
                        source,
                    })?;
                if key_from_labels(&existing).as_ref() == Some(key) {
                    let keys = hub.world().index.apply_prov_written(parse_prov(&existing));
                    hub.queue.add_all(keys);
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
/// (and on its management cluster, which is the source of truth for labels after
/// creation). Returns whether one was adopted.
async fn adopt(hub: &Hub, r: &Rancher, key: &VcKey, vc: &VCluster) -> Result<bool, ReconcileError> {
    // The operator's clusters are watched (one narrow watch, see `watch.rs`), so the
    // common case — no such cluster — costs no request.
    let Some(name) = hub.world().index.legacy_cluster(key).map(str::to_string) else {
        return Ok(false);
    };
    let patch = json!({ "metadata": { "labels": our_labels(key, vc) } });
    r.call(hub, "patch").await;
    let patched = r
        .prov
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| ReconcileError::Api {
            what: format!("adopting cluster {name}"),
            source,
        })?;
    let prov = parse_prov(&patched);
    if let Some(id) = &prov.mgmt_id {
        r.call(hub, "patch").await;
        r.mgmt
            .patch(id, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| ReconcileError::Api {
                what: format!("labelling management cluster {id}"),
                source,
            })?;
    }
    tracing::info!(host = %key.host, uid = %key.uid, cluster = %name, "adopted a cluster of the vcluster-rancher-operator");
    let keys = hub.world().index.apply_prov_written(prov);
    hub.queue.add_all(keys);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_object_carries_labels_and_annotations() {
        let key = VcKey::new("c-m-host0001", "0b6f7c52-8a8e-4c3f-9d51-3c1e2a4b5c6d");
        let vc = VCluster {
            uid: key.uid.clone(),
            namespace: "team-a".into(),
            name: "vc1".into(),
            project_id: "c-m-host0001:p-xk2lm".into(),
            ..Default::default()
        };
        let name = candidate_name(&key, &vc, 0);
        assert_eq!(name, "c-m-host0001-team-a-vc1");
        let o = build_cluster(&name, "fleet-default", &key, &vc);
        assert_eq!(key_from_labels(&o), Some(key.clone()));
        let l = o.metadata.labels.unwrap();
        assert_eq!(l[LABEL_PROJECT], "p-xk2lm");
        assert_eq!(l[LABEL_VCLUSTER], "true");
        assert_eq!(l[LABEL_MANAGED_BY], "vclink");
        let a = o.metadata.annotations.unwrap();
        assert_eq!(a["field.cattle.io/no-creator-rbac"], "true");
        assert_eq!(a["rancher.io/imported-cluster-version-management"], "false");
        assert_eq!(
            a["field.cattle.io/description"],
            "vCluster team-a/vc1 on c-m-host0001"
        );
        assert_eq!(o.metadata.namespace.as_deref(), Some("fleet-default"));
    }

    #[test]
    fn requested_names_win_and_collisions_move_on() {
        let key = VcKey::new("c-m-host0001", "u");
        let mut vc = VCluster {
            namespace: "ns".into(),
            name: "vc".into(),
            ..Default::default()
        };
        assert_ne!(candidate_name(&key, &vc, 0), candidate_name(&key, &vc, 1));
        vc.requested_name = "my-cluster".into();
        assert_eq!(candidate_name(&key, &vc, 0), "my-cluster");
        assert_ne!(candidate_name(&key, &vc, 1), "my-cluster");
    }
}
