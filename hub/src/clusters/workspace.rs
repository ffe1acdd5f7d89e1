//! The Fleet workspace each write of the provisioning-cluster controller happens in.
//! A new cluster goes to the workspace `core::workspace` chooses for its vCluster's
//! project now (an operator cluster to adopt stays where it is); every later write —
//! seal, relabel, delete — goes to the namespace the cluster is in. Nothing here ever
//! moves a cluster: a vCluster whose namespace changed project keeps its cluster in its
//! workspace (docs/rancher.md, "Fleet workspaces").
//!
//! [`HubIn`] is the hub's state seen from one namespace, for `ensure`: a name is free or
//! ours only in that namespace, proofs are signed for it. A workspace missing when the
//! cluster is created is created first with --create-fleet-workspaces, and otherwise
//! reported on the vCluster's Service naming the workspace and the flag.

use std::sync::Arc;

use vclink_proto::v1::VCluster;

use super::ensure::{self, Known, ReconcileError};
use crate::core::index::{NameUse, ProvCluster, VcKey};
use crate::core::proof::ProofKey;
use crate::core::workspace::MatchedBy;
use crate::rancher::clusters::KubeProvClusters;
use crate::state::Hub;

/// The hub's state as [`Known`] for the clusters of one namespace.
pub(crate) struct HubIn<'a> {
    hub: &'a Hub,
    ns: &'a str,
}

impl<'a> HubIn<'a> {
    /// `hub` seen from namespace `ns`.
    pub(crate) fn new(hub: &'a Hub, ns: &'a str) -> Self {
        Self { hub, ns }
    }
}

impl Known for HubIn<'_> {
    fn legacy_cluster(&self, key: &VcKey) -> Option<String> {
        let w = self.hub.world();
        (w.index.legacy_namespace(key) == Some(self.ns))
            .then(|| w.index.legacy_cluster(key).map(str::to_string))
            .flatten()
    }

    fn name_use(&self, name: &str, key: &VcKey) -> NameUse {
        self.hub.world().index.name_use(self.ns, name, key)
    }

    fn record_written(&self, p: ProvCluster) {
        Hub::record_written(self.hub, p);
    }

    fn deleting_by_us(&self, key: &VcKey, yes: bool) {
        Known::deleting_by_us(self.hub, key, yes);
    }

    fn duplicates(&self, key: &VcKey) -> Option<Vec<String>> {
        Known::duplicates(self.hub, key)
    }

    fn unsealed(&self, key: &VcKey) -> Option<ProvCluster> {
        Known::unsealed(self.hub, key).filter(|p| p.namespace == self.ns)
    }

    fn signing(&self) -> (Arc<ProofKey>, String) {
        (self.hub.cfg.proof_key.clone(), self.ns.to_string())
    }

    fn host_display_name(&self, host: &str) -> Option<String> {
        Known::host_display_name(self.hub, host)
    }
}

/// The namespace a new cluster of `key` goes to, and why: where the operator cluster to
/// adopt is, else the workspace mapped to the vCluster's project (reported by its
/// agent; another cluster's project is never looked up), else the default.
pub(crate) fn for_new(hub: &Hub, key: &VcKey, vc: &VCluster) -> (String, Option<MatchedBy>) {
    let w = hub.world();
    if let Some(ns) = w.index.legacy_namespace(key) {
        return (ns.to_string(), None);
    }
    let name = w.project_names.get(&vc.project_id);
    let (ws, by) = hub.cfg.workspaces.choose(&key.host, &vc.project_id, name);
    (ws.to_string(), Some(by))
}

/// Whether `e` says the namespace does not exist (the API server's answer to a create
/// in a missing namespace).
fn namespace_missing(e: &ReconcileError) -> bool {
    matches!(e, ReconcileError::Api { source: kube::Error::Api(s), .. }
        if s.code == 404 && s.message.starts_with("namespaces "))
}

/// Adopts or creates `key`'s cluster in the workspace [`for_new`] chooses; a missing
/// workspace is created first with --create-fleet-workspaces (Rancher then creates its
/// namespace; until then the create is retried), else reported.
pub(crate) async fn ensure(
    hub: &Hub,
    rancher: &KubeProvClusters,
    key: &VcKey,
    vc: &VCluster,
) -> Result<(), ReconcileError> {
    let (ns, by) = for_new(hub, key, vc);
    let result = ensure::ensure(&HubIn::new(hub, &ns), &rancher.workspace(&ns), key, vc).await;
    match result {
        Err(e) if namespace_missing(&e) => {
            if !hub.cfg.create_workspaces {
                return Err(ReconcileError::MissingWorkspace(ns));
            }
            rancher
                .create_workspace(&ns)
                .await
                .map_err(|source| ReconcileError::Api {
                    what: format!("creating Fleet workspace {ns}"),
                    source,
                })?;
            tracing::info!(host = %key.host, uid = %key.uid, workspace = %ns, matched = ?by,
                "created the Fleet workspace for the vCluster's project");
            Err(ReconcileError::WorkspacePending(ns))
        }
        other => other,
    }
}

/// [`ensure::seal_if_needed`] in the namespace of `key`'s cluster.
pub(crate) async fn seal_if_needed(
    hub: &Hub,
    rancher: &KubeProvClusters,
    key: &VcKey,
) -> Result<(), ReconcileError> {
    let Some(ns) = Known::unsealed(hub, key).map(|p| p.namespace) else {
        return Ok(());
    };
    ensure::seal_if_needed(&HubIn::new(hub, &ns), &rancher.workspace(&ns), key).await
}
