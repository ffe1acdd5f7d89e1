//! The writes of the operator takeover ([`super::takeover`] decides them): adopting an
//! operator CRTB is one merge patch adding owner sync's labels (its `loft.sh/*` labels
//! stay, so a rollback to the operator finds its bindings again); a stale one is
//! deleted. Both carry the UID and resourceVersion the decision saw, so a CRTB that
//! changed since (relabelled, replaced under the same name) is not written: the API
//! server answers 409 and the CRTB's watch event brings a fresh decision.

use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::json;

use super::Owners;
use super::desired::Desired;
use super::error::OwnerError;
use super::model::{ANNOTATION_PARENTS, Binding, Crtb, parse_crtb};
use super::takeover::Takeover;
use super::write::{call, owner_marks};
use crate::core::index::VcKey;
use crate::rancher::Kind;

/// An operator CRTB as the decision saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// resourceVersion.
    pub resource_version: String,
}

impl From<&Binding> for Seen {
    fn from(b: &Binding) -> Self {
        Self {
            name: b.name.clone(),
            uid: b.uid.clone(),
            resource_version: b.resource_version.clone(),
        }
    }
}

/// The takeover writes for one cluster, owned (taken out of the store lock).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Writes {
    /// Operator CRTBs to adopt, with the wanted grant each makes.
    pub adopt: Vec<(Seen, Desired)>,
    /// Stale operator CRTBs to delete.
    pub stale: Vec<Seen>,
}

impl Writes {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.adopt.is_empty() && self.stale.is_empty()
    }
}

impl From<&Takeover<'_>> for Writes {
    fn from(t: &Takeover<'_>) -> Self {
        Self {
            adopt: t
                .adopt
                .iter()
                .map(|(b, d)| (Seen::from(*b), d.clone()))
                .collect(),
            stale: t.stale.iter().map(|b| Seen::from(*b)).collect(),
        }
    }
}

fn api(owners: &Owners, mgmt_id: &str) -> kube::Api<kube::api::DynamicObject> {
    // Writes go as the hub's Rancher user (see `acting`), like every owner-sync write.
    let writer = owners.acting.as_ref().map_or(&owners.client, |a| &a.client);
    Kind::Crtb.namespaced(writer.clone(), mgmt_id)
}

/// Adopts the operator CRTBs of `w`: owner sync's labels and parents annotation, written
/// only onto the object decided about.
pub async fn adopt(owners: &Owners, key: &VcKey, mgmt_id: &str, w: &Writes) -> Vec<OwnerError> {
    let mut errors = Vec::new();
    if w.adopt.is_empty() {
        return errors;
    }
    let api = api(owners, mgmt_id);
    for (seen, d) in &w.adopt {
        let (labels, parents) = owner_marks(key, d);
        let patch = json!({"metadata": {
            "uid": seen.uid,
            "resourceVersion": seen.resource_version,
            "labels": labels,
            "annotations": {ANNOTATION_PARENTS: parents},
        }});
        let what = format!(
            "adopting the vcluster-rancher-operator's owner binding {}",
            seen.name
        );
        match call(
            owners,
            "crtb",
            "patch",
            api.patch(&seen.name, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await
        {
            Ok(o) => {
                if let Some(Crtb::Owned { crtb, .. }) = parse_crtb(&o) {
                    owners.store().remember_owned(mgmt_id, crtb);
                }
                tracing::info!(host = %key.host, uid = %key.uid, rancher_cluster = %mgmt_id, binding = %seen.name, role = %d.role, subject = %d.subject.id(), "adopted the vcluster-rancher-operator's owner binding");
            }
            // Changed or gone since the decision: its watch event decides again.
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => errors.push(OwnerError::from_kube(what, e)),
        }
    }
    errors
}

/// Deletes the stale operator CRTBs of `w` (the object decided about, nothing else).
pub async fn delete_stale(
    owners: &Owners,
    key: &VcKey,
    mgmt_id: &str,
    w: &Writes,
) -> Vec<OwnerError> {
    let mut errors = Vec::new();
    if w.stale.is_empty() {
        return errors;
    }
    let api = api(owners, mgmt_id);
    for seen in &w.stale {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(seen.uid.clone()),
                resource_version: Some(seen.resource_version.clone()),
            }),
            ..DeleteParams::background()
        };
        match call(owners, "crtb", "delete", api.delete(&seen.name, &dp)).await {
            Ok(_) => {
                tracing::info!(host = %key.host, uid = %key.uid, rancher_cluster = %mgmt_id, binding = %seen.name, "deleted a stale owner binding of the vcluster-rancher-operator");
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => errors.push(OwnerError::from_kube(
                format!(
                    "deleting the vcluster-rancher-operator's stale owner binding {}",
                    seen.name
                ),
                e,
            )),
        }
    }
    errors
}
