//! Ensuring a vCluster's provisioning cluster exists, and deleting it: the logic
//! between the controller's decision and the API calls, generic over the
//! [`ProvClusters`] seam and over [`Known`], the part of the hub's state it reads and
//! records between calls. Adopts the Go operator's cluster of the vCluster, or creates
//! ours under the first free candidate name ([`candidate_name`]: the requested name, else
//! `<prefix>-<namespace>-<name>`, else `<host display name>-<namespace>-<name>`; computed
//! only here, when creating, so nothing a user edits later renames a cluster). A 409
//! means the name exists: if it is ours
//! (an earlier attempt of this hub), that is success; otherwise the next candidate is
//! tried — two vClusters are never merged into one cluster. What was written goes
//! straight into the index ([`Known::record_written`]), so the next decision sees the
//! object even before its watch event arrives.
//!
//! Every cluster the hub creates or takes over carries its proofs (`core::proof`): the
//! create-time proof on the create itself, the UID-bound one patched right after
//! ([`seal`], also run later for a cluster that has only the first, after a crash), both
//! in the one patch of an adoption or a reclaim. Two proven clusters for one vCluster
//! stop [`ensure`] with an error the vCluster's owner sees.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use vclink_proto::limits::MAX_MESSAGE_TEXT;
use vclink_proto::names::{cluster_name, host_part, requested_name};
use vclink_proto::v1::VCluster;

use crate::core::decide::DeleteReason;
use crate::core::index::{NameUse, ProvCluster, VcKey};
use crate::core::proof::{ProofKey, Signed, Subject, Trust, sign_both, sign_create, sign_uid};
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
    /// Several clusters the hub can prove it made claim the vCluster.
    #[error(
        "several Rancher clusters made by vclink claim this vCluster ({}); vclink acts on none of them until all but one are deleted",
        .0.join(", ")
    )]
    Duplicate(Vec<String>),
    /// The cluster to take over was replaced by another object of the same name.
    #[error("cluster {name} was replaced by another object while being taken over")]
    Replaced {
        /// Its name.
        name: String,
    },
    /// The Fleet workspace chosen for the vCluster's project does not exist.
    #[error(
        "Fleet workspace {0} does not exist: create it in Rancher (Continuous Delivery, Workspaces) or start the hub with --create-fleet-workspaces"
    )]
    MissingWorkspace(String),
    /// The hub just created the Fleet workspace; Rancher has not made its namespace yet.
    #[error("waiting for Rancher to create the namespace of the new Fleet workspace {0}")]
    WorkspacePending(String),
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
            Self::Duplicate(_) => "duplicate",
            Self::Replaced { .. } => "replaced",
            Self::MissingWorkspace(_) => "missing_workspace",
            Self::WorkspacePending(_) => "workspace_pending",
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
    /// The proven clusters of `key` when there are several.
    fn duplicates(&self, key: &VcKey) -> Option<Vec<String>>;
    /// `key`'s cluster when it carries only the create-time proof (it needs [`seal`]).
    fn unsealed(&self, key: &VcKey) -> Option<ProvCluster>;
    /// The proof key and the workspace the clusters live in.
    fn signing(&self) -> (Arc<ProofKey>, String);
    /// The Rancher display name of the host cluster `host` (its management cluster's
    /// `spec.displayName`), if known.
    fn host_display_name(&self, host: &str) -> Option<String>;
}

impl Known for Hub {
    fn legacy_cluster(&self, key: &VcKey) -> Option<String> {
        self.world().index.legacy_cluster(key).map(str::to_string)
    }

    fn name_use(&self, name: &str, key: &VcKey) -> NameUse {
        self.world().index.name_use(&self.cfg.workspace, name, key)
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

    fn duplicates(&self, key: &VcKey) -> Option<Vec<String>> {
        self.world().index.duplicate_clusters(key)
    }

    fn unsealed(&self, key: &VcKey) -> Option<ProvCluster> {
        self.world().index.unsealed(key).cloned()
    }

    fn signing(&self) -> (Arc<ProofKey>, String) {
        (self.cfg.proof_key.clone(), self.cfg.workspace.clone())
    }

    fn host_display_name(&self, host: &str) -> Option<String> {
        self.world().index.mgmt(host)?.display_name.clone()
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn subject<'a>(workspace: &'a str, name: &'a str, key: &'a VcKey) -> Subject<'a> {
    Subject {
        namespace: workspace,
        name,
        host: &key.host,
        svc_uid: &key.uid,
    }
}

/// Both proofs for `key` on the existing object `name` (UID `uid`).
fn sign_existing(known: &impl Known, key: &VcKey, name: &str, uid: &str) -> Signed {
    let (proof_key, workspace) = known.signing();
    sign_both(&proof_key, &subject(&workspace, name, key), unix_now(), uid)
}

/// Writes the UID-bound proof on `p`, a cluster the hub created that carries only the
/// create-time proof (just created, or a crash came between create and patch).
pub async fn seal(
    known: &impl Known,
    clusters: &impl ProvClusters,
    p: &ProvCluster,
) -> Result<(), ReconcileError> {
    let Some(key) = &p.key else {
        return Ok(());
    };
    let (proof_key, workspace) = known.signing();
    let proof_uid = sign_uid(&proof_key, &subject(&workspace, &p.name, key), &p.uid);
    let sealed = clusters
        .seal(&p.name, &proof_uid)
        .await
        .map_err(api(format!("writing the proof on cluster {}", p.name)))?;
    known.record_written(sealed);
    Ok(())
}

/// [`seal`] for `key`'s cluster if it needs it.
pub async fn seal_if_needed(
    known: &impl Known,
    clusters: &impl ProvClusters,
    key: &VcKey,
) -> Result<(), ReconcileError> {
    match known.unsealed(key) {
        Some(p) => seal(known, clusters, &p).await,
        None => Ok(()),
    }
}

/// The `attempt`-th candidate name: the requested name; else `<prefix>-<namespace>-<name>`
/// with the requested prefix; else `<host>-<namespace>-<name>` with `host` the host part
/// ([`host_part`]: the host's display name or id).
pub fn candidate_name(host: &str, vc: &VCluster, attempt: u32) -> String {
    if !vc.requested_name.is_empty() {
        requested_name(&vc.requested_name, attempt)
    } else if !vc.requested_prefix.is_empty() {
        cluster_name(&vc.requested_prefix, &vc.namespace, &vc.name, attempt)
    } else {
        cluster_name(host, &vc.namespace, &vc.name, attempt)
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
    if let Some(names) = known.duplicates(key) {
        return Err(ReconcileError::Duplicate(names));
    }
    if adopt(known, clusters, key, vc).await? {
        return Ok(());
    }
    let host = host_part(&key.host, known.host_display_name(&key.host).as_deref());
    for attempt in 0..MAX_NAME_ATTEMPTS {
        let name = candidate_name(&host, vc, attempt);
        match known.name_use(&name, key) {
            NameUse::Ours => return Ok(()),
            NameUse::Other => continue,
            NameUse::Free => {}
        }
        let proof = {
            let (proof_key, workspace) = known.signing();
            sign_create(&proof_key, &subject(&workspace, &name, key), unix_now())
        };
        match clusters.create(&name, key, vc, &proof).await {
            Ok(created) => {
                tracing::info!(host = %key.host, uid = %key.uid, cluster = %name, "created Rancher cluster");
                known.record_written(created.clone());
                return seal(known, clusters, &created).await;
            }
            Err(e) if is_status(&e, 409) => {
                let existing = clusters
                    .get(&name)
                    .await
                    .map_err(api(format!("reading cluster {name} after a name conflict")))?;
                // Ours only with our proof: a forged copy of our labels holds the name
                // like any other object.
                if existing.key.as_ref() == Some(key) && existing.trust.is_proven() {
                    known.record_written(existing.clone());
                    if existing.trust == Trust::ProvenAtCreate {
                        return seal(known, clusters, &existing).await;
                    }
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
    // Its UID, to bind the proof to this very object.
    let existing = clusters
        .get(&name)
        .await
        .map_err(api(format!("reading cluster {name} to adopt it")))?;
    let proofs = sign_existing(known, key, &name, &existing.uid);
    let prov = clusters
        .label(&name, key, vc, &proofs)
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

/// Moves the cluster `name` of a reinstalled vCluster (same host, namespace and name;
/// old Service UID `from_svc_uid`) to `key`: puts the new vCluster's labels on it and on
/// its management cluster. No delete and no second create; owner bindings are keyed
/// by the cluster and stay. `uid` is the object the decision was made about: if the
/// name now holds another object, nothing more is written (an error; the next decision
/// starts over from the index).
pub async fn reclaim(
    known: &impl Known,
    clusters: &impl ProvClusters,
    key: &VcKey,
    name: &str,
    uid: &str,
    from_svc_uid: &str,
    vc: &VCluster,
) -> Result<(), ReconcileError> {
    // Read first (a reinstall is rare; the extra request is cheap): only the very object
    // decided about, still labelled for the old UID of this host, is relabelled.
    let current = clusters
        .get(name)
        .await
        .map_err(api(format!("reading cluster {name} before taking it over")))?;
    let old = VcKey::new(&key.host, from_svc_uid);
    if current.uid != uid || current.key.as_ref() != Some(&old) {
        known.record_written(current);
        return Err(ReconcileError::Replaced {
            name: name.to_string(),
        });
    }
    // Proofs for the new Service UID, bound to the object the decision was about: on a
    // replaced object they do not verify.
    let proofs = sign_existing(known, key, name, uid);
    let prov = clusters
        .label(name, key, vc, &proofs)
        .await
        .map_err(api(format!("taking over cluster {name}")))?;
    if let Some(id) = &prov.mgmt_id {
        clusters
            .label_mgmt(id, key, vc)
            .await
            .map_err(api(format!("labelling management cluster {id}")))?;
    }
    tracing::info!(host = %key.host, uid = %key.uid, old_uid = %from_svc_uid, cluster = %name,
        "reinstalled vCluster (new Service UID) took over its Rancher cluster");
    known.record_written(prov);
    Ok(())
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
