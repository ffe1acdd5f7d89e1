//! Owner-sync workers: take a vCluster from the owner queue, gather what the hub knows
//! about its cluster (under the world lock) and what the watches saw (under the store
//! lock), ask [`super::desired`] for the plan, and carry it out through the shared rate
//! limiter. A binding that cannot be created or deleted is counted
//! (`vclink_hub_owner_binding_errors_total{reason}`), logged, and shown on the vCluster's
//! Service (the hub's Status turns ERROR with the reason); the key is retried with backoff.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use vclink_proto::keys::LABEL_PROJECT;
use vclink_proto::limits::MAX_MESSAGE_TEXT;

use super::acting::{creator, granted_elsewhere, is_owner, is_user};
use super::adopt::{Writes, adopt, delete_stale};
use super::desired::{Desired, Plan, desired, makes, plan, project_of};
pub use super::error::OwnerError;
use super::model::{ANNOTATION_PARENTS, Crtb, is_owned, parse_crtb};
use super::takeover::{operator_bindings, takeover};
use super::write::{call, owner_marks};
use super::{Owners, reported_project};
use crate::core::index::VcKey;
use crate::rancher::{Kind, parse_prov};

/// Runs one worker until shutdown; waits for the watches' first lists first.
pub async fn run_worker(
    owners: Arc<Owners>,
    mut synced: tokio::sync::watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    tokio::select! {
        _ = shutdown.cancelled() => return,
        r = synced.wait_for(|s| *s) => if r.is_err() { return },
    }
    while let Some(key) = owners.queue.next(&shutdown).await {
        let errors = reconcile(&owners, &key).await;
        report(&owners, &key, &errors);
        if errors.iter().all(|e| !e.retryable()) {
            owners.queue.succeeded(&key);
        } else {
            owners.queue.retry(key.clone());
        }
        owners.queue.done(&key);
    }
}

/// What the hub's index says about the vCluster's cluster.
struct Target {
    mgmt_id: String,
    prov_name: String,
    /// Its namespace (Fleet workspace).
    prov_namespace: String,
    project: Option<String>,
    relabel: Option<Option<String>>,
}

fn target(owners: &Owners, key: &VcKey) -> Option<Target> {
    let w = owners.hub.world();
    let prov = w.index.prov_for(key)?;
    // A cluster on its way out (ours or a user's deletion) is no longer managed: its
    // CRTBs go with its namespace.
    if prov.deleting || w.index.is_deleting_by_us(key) || w.index.is_user_deleted(key) {
        return None;
    }
    let mgmt_id = prov.mgmt_id.clone()?;
    w.index.mgmt(&mgmt_id)?;
    let choice = project_of(
        &key.host,
        reported_project(&w, key),
        prov.project.as_deref(),
    );
    Some(Target {
        mgmt_id,
        prov_name: prov.name.clone(),
        prov_namespace: prov.namespace.clone(),
        project: choice.project,
        relabel: choice.relabel,
    })
}

/// Reconciles one vCluster; returns the failures (empty: converged).
async fn reconcile(owners: &Owners, key: &VcKey) -> Vec<OwnerError> {
    let Some(t) = target(owners, key) else {
        return Vec::new();
    };
    let (plan, writes, not_owner) = {
        let s = owners.store();
        let project = t.project.as_deref().and_then(|p| s.project(&key.host, p));
        let prtbs: Vec<_> = project
            .map(|p| s.prtbs_in(&p.prtb_namespace).collect())
            .unwrap_or_default();
        let mut want: BTreeMap<String, Desired> = desired(
            &t.mgmt_id,
            &key.host,
            project,
            prtbs,
            s.foreign_in(&key.host),
            &owners.mapping,
        );
        let owned: Vec<_> = s.owned_in(&t.mgmt_id).collect();
        let foreign: Vec<_> = s.foreign_in(&t.mgmt_id).collect();
        let operator = operator_bindings(
            &foreign,
            &t.mgmt_id,
            &key.uid,
            owners.operator_user.as_deref(),
        );
        let others: Vec<_> = foreign
            .iter()
            .copied()
            .filter(|b| !operator.iter().any(|o| o.name == b.name))
            .collect();
        // Never a grant to the hub's own user (it owns the cluster already, as creator);
        // and a grant another CRTB of the cluster (not the operator's) already makes is
        // left to that one (Rancher 2.14+ would refuse ours with 409) unless ours exists.
        if let Some(a) = &owners.acting {
            want.retain(|_, d| !is_user(&d.subject, &a.user));
        }
        want.retain(|name, d| {
            owned.iter().any(|o| o.name == *name || makes(o, d))
                || !granted_elsewhere(others.iter().copied(), d)
        });
        // The operator's bindings: adopted where they make a wanted grant, else stale.
        let tk = takeover(&want, &owned, &operator);
        for (_, d) in &tk.adopt {
            want.remove(&d.name);
        }
        let names: HashSet<&str> = foreign.iter().map(|b| b.name.as_str()).collect();
        let mut plan = plan(&want, &owned, &names);
        let mut writes = Writes::from(&tk);
        // Stale operator bindings go only once every wanted grant exists (the watch
        // events of the creates and adoptions requeue this vCluster): never a moment
        // without a binding for someone whose role merely changed.
        if !plan.create.is_empty() || !writes.adopt.is_empty() {
            writes.stale.clear();
        }
        // As the hub's user, writes pass Rancher's checks only once Rancher has made it
        // owner (CRTB creator-cluster-owner, or one an administrator made); the CRTB
        // watch requeues this vCluster when that binding appears, so waiting costs no
        // request. In a cluster someone else created that wait is reported.
        let mut not_owner = None;
        if let Some(a) = &owners.acting
            && (!plan.create.is_empty() || !writes.is_empty())
            && !is_owner(foreign.iter().copied(), &a.user)
        {
            tracing::debug!(host = %key.host, uid = %key.uid, cluster = %t.mgmt_id, user = %a.user, "owner sync: waiting for Rancher to make the hub's user owner (creator-cluster-owner)");
            plan.create.clear();
            writes = Writes::default();
            not_owner = creator(foreign.iter().copied())
                .filter(|c| *c != a.user)
                .map(|c| OwnerError::NotOwner {
                    user: a.user.clone(),
                    cluster: t.mgmt_id.clone(),
                    creator: c.to_string(),
                });
        }
        (plan, writes, not_owner)
    };
    let mut errors = Vec::new();
    if let Some(new) = &t.relabel
        && let Err(e) = relabel(owners, &t, new.as_deref()).await
    {
        errors.push(e);
    }
    errors.extend(not_owner);
    if !plan.is_empty() || !writes.is_empty() {
        tracing::debug!(host = %key.host, uid = %key.uid, cluster = %t.mgmt_id, create = plan.create.len(), delete = plan.delete.len(), adopt = writes.adopt.len(), stale = writes.stale.len(), "owner sync plan");
    }
    // Adoptions first (they only add labels), stale operator bindings last.
    errors.extend(adopt(owners, key, &t.mgmt_id, &writes).await);
    errors.extend(carry_out(owners, key, &t, plan).await);
    errors.extend(delete_stale(owners, key, &t.mgmt_id, &writes).await);
    errors
}

/// Records the vCluster's current project on its provisioning and management clusters
/// (the hub rebuilds from these labels after a restart).
async fn relabel(owners: &Owners, t: &Target, project: Option<&str>) -> Result<(), OwnerError> {
    let patch = json!({"metadata": {"labels": {LABEL_PROJECT: project}}});
    let prov = Kind::ProvCluster.namespaced(owners.client.clone(), &t.prov_namespace);
    let patched = call(
        owners,
        "cluster",
        "patch",
        prov.patch(&t.prov_name, &PatchParams::default(), &Patch::Merge(&patch)),
    )
    .await
    .map_err(|e| {
        OwnerError::from_kube(
            format!("recording the project on cluster {}", t.prov_name),
            e,
        )
    })?;
    // Seen at once by the next decision, before the watch event arrives.
    owners
        .hub
        .record_written(parse_prov(&patched, &owners.hub.cfg.proof_key));
    let mgmt = Kind::MgmtCluster.all(owners.client.clone());
    call(
        owners,
        "cluster",
        "patch",
        mgmt.patch(&t.mgmt_id, &PatchParams::default(), &Patch::Merge(&patch)),
    )
    .await
    .map_err(|e| {
        OwnerError::from_kube(format!("recording the project on cluster {}", t.mgmt_id), e)
    })?;
    tracing::info!(cluster = %t.prov_name, rancher_cluster = %t.mgmt_id, project = project.unwrap_or("(none)"), "vCluster moved; project label updated");
    Ok(())
}

async fn carry_out(owners: &Owners, key: &VcKey, t: &Target, plan: Plan) -> Vec<OwnerError> {
    // Writes go as the hub's Rancher user (see `acting`); reads stay the ServiceAccount's.
    let writer = owners.acting.as_ref().map_or(&owners.client, |a| &a.client);
    let api = Kind::Crtb.namespaced(writer.clone(), &t.mgmt_id);
    let mut errors = Vec::new();
    for (name, uid) in plan.delete {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match call(owners, "crtb", "delete", api.delete(&name, &dp)).await {
            Ok(_) => {
                tracing::info!(host = %key.host, uid = %key.uid, rancher_cluster = %t.mgmt_id, binding = %name, "owner binding deleted");
                owners.store().forget_owned(&t.mgmt_id, &name);
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                owners.store().forget_owned(&t.mgmt_id, &name);
            }
            Err(e) => errors.push(OwnerError::from_kube(
                format!("deleting owner binding {name}"),
                e,
            )),
        }
    }
    for d in plan.conflicts {
        errors.push(OwnerError::Conflict {
            what: grant_text(&d),
            name: d.name,
        });
    }
    if plan.create.is_empty() {
        return errors;
    }
    for d in plan.create {
        if let Err(e) = create(owners, &api, key, t, &d).await {
            errors.push(e);
        }
    }
    errors
}

fn grant_text(d: &Desired) -> String {
    format!("granting {} to {}", d.role, d.subject.id())
}

async fn create(
    owners: &Owners,
    api: &Api<DynamicObject>,
    key: &VcKey,
    t: &Target,
    d: &Desired,
) -> Result<(), OwnerError> {
    let obj = build_crtb(key, &t.mgmt_id, d);
    let created = match call(
        owners,
        "crtb",
        "create",
        api.create(&PostParams::default(), &obj),
    )
    .await
    {
        Ok(c) => c,
        // Exists already: ours (an earlier attempt, or the watch lags) is adopted. With
        // no object of that name, Rancher's webhook (2.14+) refused a duplicate: another
        // CRTB already makes this grant, which is all that was wanted.
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let reader = Kind::Crtb.namespaced(owners.client.clone(), &t.mgmt_id);
            let existing = match call(owners, "crtb", "get", reader.get(&d.name)).await {
                Ok(o) => o,
                Err(kube::Error::Api(g)) if g.code == 404 => {
                    tracing::info!(host = %key.host, uid = %key.uid, rancher_cluster = %t.mgmt_id, role = %d.role, subject = %d.subject.id(), "owner binding not created: another binding of the cluster already grants it");
                    return Ok(());
                }
                Err(e) => {
                    return Err(OwnerError::from_kube(
                        format!("reading owner binding {}", d.name),
                        e,
                    ));
                }
            };
            if !is_owned(&existing) {
                return Err(OwnerError::Conflict {
                    what: grant_text(d),
                    name: d.name.clone(),
                });
            }
            existing
        }
        Err(e) => return Err(OwnerError::from_kube(grant_text(d), e)),
    };
    if let Some(Crtb::Owned { crtb, .. }) = parse_crtb(&created) {
        owners.store().remember_owned(&t.mgmt_id, crtb);
    }
    tracing::info!(host = %key.host, uid = %key.uid, rancher_cluster = %t.mgmt_id, binding = %d.name, role = %d.role, subject = %d.subject.id(), "owner binding created");
    Ok(())
}

/// The CRTB for `d` in the vCluster's cluster `mgmt_id`.
pub fn build_crtb(key: &VcKey, mgmt_id: &str, d: &Desired) -> DynamicObject {
    let (labels, parents) = owner_marks(key, d);
    let mut o = json!({
        "apiVersion": "management.cattle.io/v3",
        "kind": "ClusterRoleTemplateBinding",
        "metadata": {
            "name": d.name,
            "namespace": mgmt_id,
            "labels": labels,
            "annotations": {ANNOTATION_PARENTS: parents},
        },
        "clusterName": mgmt_id,
        "roleTemplateName": d.role,
    });
    for (k, v) in d.subject.fields() {
        o[k] = Value::String(v);
    }
    serde_json::from_value(o)
        .unwrap_or_else(|_| DynamicObject::new(&d.name, &Kind::Crtb.resource()))
}

/// Counts and logs failures and hands the first to the vCluster's Status (cleared on
/// success); the main reconcile sends the Status when it changed.
/// A failure that is not retried (the hub's user does not own the cluster) is counted
/// and logged only when the Status changes, not at every watch event that requeues it.
fn report(owners: &Owners, key: &VcKey, errors: &[OwnerError]) {
    let problem = errors.first().map(|e| {
        let more = match errors.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        format!("{e}{more}")
            .chars()
            .take(MAX_MESSAGE_TEXT)
            .collect::<String>()
    });
    let changed = owners.hub.world().index.set_owner_problem(key, problem);
    for e in errors.iter().filter(|e| e.retryable() || changed) {
        owners
            .hub
            .metrics
            .owner_binding_errors
            .get_or_create(&[("reason", e.reason())])
            .inc();
        if e.retryable() {
            tracing::warn!(host = %key.host, uid = %key.uid, reason = e.reason(), error = %e, "owner binding failed; retrying with backoff");
        } else {
            tracing::warn!(host = %key.host, uid = %key.uid, reason = e.reason(), error = %e, "owner bindings of this vCluster wait for an administrator");
        }
    }
    if changed {
        owners.hub.queue.add(key.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::owners::desired::Parent;
    use crate::owners::model::{LABEL_PARENT_NAME, Subject};
    use vclink_proto::keys::LABEL_SERVICE_UID;

    #[test]
    fn crtb_object_names_vcluster_parent_and_subject() {
        let key = VcKey::new("c-m-host0001", "0b6f7c52-8a8e-4c3f-9d51-3c1e2a4b5c6d");
        let d = Desired {
            name: "vco-cluster-owner-group-x-0123456789abcdef".into(),
            role: "cluster-owner".into(),
            subject: Subject::Group {
                name: String::new(),
                principal: "okta_group://devs".into(),
            },
            parents: vec![Parent {
                kind: "prtb",
                namespace: "c-m-host0001-p-a".into(),
                name: "prtb-1".into(),
            }],
        };
        let o = build_crtb(&key, "c-m-vc000001", &d);
        assert!(is_owned(&o));
        let l = o.metadata.labels.as_ref().unwrap();
        assert_eq!(l[LABEL_SERVICE_UID], key.uid);
        assert_eq!(l[LABEL_PARENT_NAME], "prtb-1");
        assert_eq!(o.data["clusterName"], "c-m-vc000001");
        assert_eq!(o.data["groupPrincipalName"], "okta_group://devs");
        assert!(o.data.get("userName").is_none() && o.data.get("groupName").is_none());
        match parse_crtb(&o) {
            Some(Crtb::Owned { crtb, .. }) => assert_eq!(crtb.key, Some(key)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refusals_are_told_apart_from_outages() {
        let api = |code| {
            kube::Error::Api(
                kube::core::Status::failure("no", "Forbidden")
                    .with_code(code)
                    .boxed(),
            )
        };
        assert_eq!(
            OwnerError::from_kube("x".into(), api(403)).reason(),
            "refused"
        );
        assert_eq!(OwnerError::from_kube("x".into(), api(500)).reason(), "api");
    }
}
