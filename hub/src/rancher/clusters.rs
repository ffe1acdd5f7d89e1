//! The provisioning-cluster writes as a small seam, [`ProvClusters`], and its
//! kube-backed implementation [`KubeProvClusters`]. The adapter only talks to the API
//! server (through the client-side rate limiter, each call counted by verb) and reduces
//! what comes back; which name to try, whether a conflict is ours and what to adopt is
//! decided by the controller's `ensure` (in the `clusters` folder), which a test drives
//! against an in-memory fake.
//!
//! Clusters live in several Fleet workspaces (`core::workspace`): [`KubeProvClusters`]
//! holds the clients, [`KubeProvClusters::workspace`] is the seam for one namespace —
//! an existing cluster's own, or the one chosen for a new cluster — so `ensure` never
//! mixes two. [`KubeProvClusters::create_workspace`] creates a missing FleetWorkspace
//! (--create-fleet-workspaces).

use std::sync::Arc;

use async_trait::async_trait;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::json;
use vclink_proto::keys::*;
use vclink_proto::ratelimit::RateLimiter;
use vclink_proto::v1::VCluster;

use super::{Kind, parse_prov};
use crate::core::index::{ProvCluster, VcKey};
use crate::core::proof::{ANNOTATION_PROOF, ANNOTATION_PROOF_UID, ProofKey, Signed};

/// The calls the provisioning-cluster controller makes. Errors are the API server's,
/// unchanged (the caller tells a 409 or 404 from a failure).
#[async_trait]
pub trait ProvClusters: Send + Sync {
    /// Creates the provisioning cluster `name` for the vCluster, carrying the
    /// create-time proof `proof` (`core::proof`); returns it as written.
    async fn create(
        &self,
        name: &str,
        key: &VcKey,
        vc: &VCluster,
        proof: &str,
    ) -> Result<ProvCluster, kube::Error>;
    /// Reads the provisioning cluster `name`.
    async fn get(&self, name: &str) -> Result<ProvCluster, kube::Error>;
    /// Puts the vCluster's labels and both proofs on the existing provisioning cluster
    /// `name`, in one patch (adoption; a reinstalled vCluster's new Service UID).
    async fn label(
        &self,
        name: &str,
        key: &VcKey,
        vc: &VCluster,
        proofs: &Signed,
    ) -> Result<ProvCluster, kube::Error>;
    /// Writes the UID-bound proof on the provisioning cluster `name` (right after its
    /// create, or when only the create-time proof is there).
    async fn seal(&self, name: &str, proof_uid: &str) -> Result<ProvCluster, kube::Error>;
    /// Puts the vCluster's labels on the management cluster `id`, the source of truth
    /// for labels after creation.
    async fn label_mgmt(&self, id: &str, key: &VcKey, vc: &VCluster) -> Result<(), kube::Error>;
    /// Deletes the provisioning cluster `name` if its UID still is `uid`.
    async fn delete(&self, name: &str, uid: String) -> Result<(), kube::Error>;
}

type Labels = [(&'static str, &'static str); 1];

/// The provisioning-cluster writes against the local cluster; [`Self::workspace`] gives
/// the [`ProvClusters`] of one namespace.
pub struct KubeProvClusters {
    client: Client,
    /// Where creates go: `client`, or a client impersonating the hub's Rancher user
    /// ([`KubeProvClusters::creating_as`]).
    creator: Client,
    /// Creates carry `field.cattle.io/no-creator-rbac` (no Rancher user creates them).
    no_creator_rbac: bool,
    mgmt: Api<DynamicObject>,
    limiter: RateLimiter,
    requests: Family<Labels, Counter>,
    /// Judges what the API server returns (`core::proof`).
    proof_key: Arc<ProofKey>,
}

impl KubeProvClusters {
    /// Clients for provisioning clusters (any workspace) and management clusters;
    /// every call waits for `limiter` and is counted in `requests{verb}`; what comes back
    /// is judged with `proof_key`.
    pub fn new(
        client: Client,
        limiter: RateLimiter,
        requests: Family<Labels, Counter>,
        proof_key: Arc<ProofKey>,
    ) -> Self {
        Self {
            creator: client.clone(),
            mgmt: Kind::MgmtCluster.all(client.clone()),
            client,
            no_creator_rbac: true,
            limiter,
            requests,
            proof_key,
        }
    }

    /// The calls on the provisioning clusters of namespace `ns` (a Fleet workspace).
    pub fn workspace<'a>(&'a self, ns: &str) -> InWorkspace<'a> {
        InWorkspace {
            base: self,
            prov: Kind::ProvCluster.namespaced(self.client.clone(), ns),
            creator: Kind::ProvCluster.namespaced(self.creator.clone(), ns),
            ns: ns.to_string(),
        }
    }

    /// Creates the FleetWorkspace `name` (cluster-scoped, labelled as vclink's); one that
    /// exists already (409) is success. Rancher then creates its namespace.
    pub async fn create_workspace(&self, name: &str) -> Result<(), kube::Error> {
        let o: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "management.cattle.io/v3",
            "kind": "FleetWorkspace",
            "metadata": {
                "name": name,
                "labels": { LABEL_MANAGED_BY: MANAGED_BY_VALUE },
            },
        }))
        .unwrap_or_else(|_| DynamicObject::new(name, &Kind::FleetWorkspace.resource()));
        self.call("create").await?;
        match Kind::FleetWorkspace
            .all(self.client.clone())
            .create(&PostParams::default(), &o)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Creates clusters through `as_user`, a client impersonating the hub's Rancher user,
    /// and without `no-creator-rbac`: Rancher's webhook then records that user as
    /// creator and Rancher makes it cluster owner (CRTB `creator-cluster-owner`), which
    /// is what lets owner sync create owner CRTBs there (docs/rancher.md).
    pub fn creating_as(mut self, as_user: Client) -> Self {
        self.creator = as_user;
        self.no_creator_rbac = false;
        self
    }

    /// Waits for the rate limiter, then checks the leader fence: a replica that lost
    /// the lease while this write waited sends nothing.
    async fn call(&self, verb: &'static str) -> Result<(), kube::Error> {
        self.limiter
            .until_ready_fenced()
            .await
            .map_err(|e| kube::Error::Service(Box::new(e)))?;
        self.requests.get_or_create(&[("verb", verb)]).inc();
        Ok(())
    }
}

/// [`ProvClusters`] in one namespace ([`KubeProvClusters::workspace`]).
pub struct InWorkspace<'a> {
    base: &'a KubeProvClusters,
    prov: Api<DynamicObject>,
    creator: Api<DynamicObject>,
    ns: String,
}

#[async_trait]
impl ProvClusters for InWorkspace<'_> {
    async fn create(
        &self,
        name: &str,
        key: &VcKey,
        vc: &VCluster,
        proof: &str,
    ) -> Result<ProvCluster, kube::Error> {
        self.base.call("create").await?;
        let mut o = build_cluster(name, &self.ns, key, vc, self.base.no_creator_rbac);
        o.metadata
            .annotations
            .get_or_insert_default()
            .insert(ANNOTATION_PROOF.into(), proof.into());
        Ok(parse_prov(
            &self.creator.create(&PostParams::default(), &o).await?,
            &self.base.proof_key,
        ))
    }

    async fn get(&self, name: &str) -> Result<ProvCluster, kube::Error> {
        self.base.call("get").await?;
        Ok(parse_prov(
            &self.prov.get(name).await?,
            &self.base.proof_key,
        ))
    }

    async fn label(
        &self,
        name: &str,
        key: &VcKey,
        vc: &VCluster,
        proofs: &Signed,
    ) -> Result<ProvCluster, kube::Error> {
        let patch = json!({ "metadata": {
            "labels": our_labels(key, vc),
            "annotations": {
                ANNOTATION_PROOF: proofs.proof,
                ANNOTATION_PROOF_UID: proofs.proof_uid,
            },
        } });
        self.base.call("patch").await?;
        let patched = self
            .prov
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(parse_prov(&patched, &self.base.proof_key))
    }

    async fn seal(&self, name: &str, proof_uid: &str) -> Result<ProvCluster, kube::Error> {
        let patch = json!({ "metadata": { "annotations": { ANNOTATION_PROOF_UID: proof_uid } } });
        self.base.call("patch").await?;
        let patched = self
            .prov
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(parse_prov(&patched, &self.base.proof_key))
    }

    async fn label_mgmt(&self, id: &str, key: &VcKey, vc: &VCluster) -> Result<(), kube::Error> {
        let patch = json!({ "metadata": { "labels": our_labels(key, vc) } });
        self.base.call("patch").await?;
        self.base
            .mgmt
            .patch(id, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    async fn delete(&self, name: &str, uid: String) -> Result<(), kube::Error> {
        self.base.call("delete").await?;
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        self.prov.delete(name, &dp).await.map(|_| ())
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

/// The provisioning cluster object for a vCluster (imported: no rkeConfig). With
/// `no_creator_rbac` (the hub's ServiceAccount creates it, which is no Rancher user)
/// Rancher is told not to make the creator an owner; without, the creator is the
/// hub's impersonated Rancher user and becomes owner.
fn build_cluster(
    name: &str,
    workspace: &str,
    key: &VcKey,
    vc: &VCluster,
    no_creator_rbac: bool,
) -> DynamicObject {
    let mut o = json!({
        "apiVersion": "provisioning.cattle.io/v1",
        "kind": "Cluster",
        "metadata": {
            "name": name,
            "namespace": workspace,
            "labels": our_labels(key, vc),
            "annotations": {
                "rancher.io/imported-cluster-version-management": "false",
                "field.cattle.io/description": format!("vCluster {}/{} on {}", vc.namespace, vc.name, key.host),
            },
        },
        "spec": {},
    });
    if no_creator_rbac {
        o["metadata"]["annotations"]["field.cattle.io/no-creator-rbac"] = json!("true");
    }
    serde_json::from_value(o)
        .unwrap_or_else(|_| DynamicObject::new(name, &Kind::ProvCluster.resource()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rancher::key_from_labels;

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
        let as_user = build_cluster("c-m-host0001-team-a-vc1", "fleet-default", &key, &vc, false);
        let a = as_user.metadata.annotations.unwrap();
        assert!(!a.contains_key("field.cattle.io/no-creator-rbac"));
        assert!(
            !a.contains_key("field.cattle.io/creatorId"),
            "the webhook sets it"
        );
        let o = build_cluster("c-m-host0001-team-a-vc1", "fleet-default", &key, &vc, true);
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
    fn a_cluster_proven_in_one_workspace_is_not_proven_in_another() {
        use crate::core::proof::{Subject, Trust, sign_both};
        let pk = crate::testing::test_proof_key();
        let key = VcKey::new("c-m-host0001", "0b6f7c52-8a8e-4c3f-9d51-3c1e2a4b5c6d");
        let vc = VCluster {
            uid: key.uid.clone(),
            namespace: "team-a".into(),
            name: "vc1".into(),
            ..Default::default()
        };
        let mut o = build_cluster("vc1", "ws-a", &key, &vc, true);
        o.metadata.uid = Some("obj-1".into());
        let subject = Subject {
            namespace: "ws-a",
            name: "vc1",
            host: &key.host,
            svc_uid: &key.uid,
        };
        let signed = sign_both(&pk, &subject, 0, "obj-1");
        let a = o.metadata.annotations.get_or_insert_default();
        a.insert(ANNOTATION_PROOF.into(), signed.proof);
        a.insert(ANNOTATION_PROOF_UID.into(), signed.proof_uid);
        let proven = parse_prov(&o, &pk);
        assert_eq!(proven.trust, Trust::Proven);
        assert_eq!(proven.at(), "ws-a/vc1");
        // The same object (labels, proofs, even UID) read in workspace B.
        o.metadata.namespace = Some("ws-b".into());
        let copied = parse_prov(&o, &pk);
        assert!(!copied.trust.is_proven(), "{:?}", copied.trust);
    }
}
