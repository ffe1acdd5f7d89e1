//! Taking over the owner bindings of the vcluster-rancher-operator, pure. In a cluster
//! the hub adopted from the operator, the operator's CRTBs `vcluster-<userName>-co`
//! already make some of the grants owner sync wants. Owner sync then neither creates a
//! second CRTB for such a grant nor deletes and re-creates it (a moment without access):
//! it *adopts* the operator's CRTB — writes its own labels on it — so the binding is
//! from then on one of owner sync's, deleted when the grant is no longer wanted. An
//! operator CRTB whose grant is not wanted (any more) is stale: deleted, but only once
//! every wanted grant exists, so a person whose role changed is never left without one.
//!
//! Labels are no proof: whoever may edit CRTBs in a cluster's namespace (its owners) can
//! write `loft.sh/*` labels on one. So a CRTB counts as the operator's only if
//! - the cluster is one the hub manages for this vCluster and was created by the
//!   operator's Rancher user (`--adopt-operator-clusters-created-by`), as Rancher's own
//!   `creator-cluster-owner` CRTB there says;
//! - it has exactly the shape the operator writes: role template `cluster-owner`, a
//!   `userName` only (no group), name `vcluster-<userName>-co`, `clusterName` its
//!   namespace, label `loft.sh/vcluster-service-uid` = the vCluster's Service UID and
//!   exactly one of `loft.sh/parent-prtb` / `loft.sh/parent-crtb`.
//!
//! A forged CRTB passing these checks gains its author nothing: owner sync only ever
//! adopts a CRTB whose grant it would have made anyway, and only ever deletes (never
//! widens) the others — what the operator itself did with CRTBs so labelled. Anything
//! else (another role, a group, another name, no or other `loft.sh` labels) is left
//! alone like any CRTB a person made.

use std::collections::{BTreeMap, HashSet};

use super::acting::CREATOR_CRTB;
use super::desired::{Desired, makes};
use super::model::same_subject;
use super::model::{Binding, OwnedCrtb, Subject};

/// The only role template the operator grants.
pub const OPERATOR_ROLE: &str = "cluster-owner";

/// What to do with the operator's CRTBs of one cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Takeover<'a> {
    /// Operator CRTBs to adopt, each with the wanted grant it makes.
    pub adopt: Vec<(&'a Binding, Desired)>,
    /// Operator CRTBs whose grant is not wanted, or made by another of owner sync's.
    pub stale: Vec<&'a Binding>,
}

/// Whether Rancher's creator binding of the cluster (among `foreign`, the CRTBs of its
/// namespace that owner sync did not make) names `operator_user`.
pub fn created_by<'a>(foreign: impl IntoIterator<Item = &'a Binding>, operator_user: &str) -> bool {
    !operator_user.is_empty()
        && foreign.into_iter().any(|b| {
            b.name == CREATOR_CRTB
                && !b.deleting
                && matches!(&b.subject, Some(Subject::User { name, .. }) if name == operator_user)
        })
}

/// Whether `b` has the exact shape of an owner CRTB the operator made for the vCluster
/// with Service UID `svc_uid` in cluster `mgmt_id`.
pub fn is_operator_binding(b: &Binding, mgmt_id: &str, svc_uid: &str) -> bool {
    let Some(Subject::User { name, .. }) = &b.subject else {
        return false;
    };
    !b.deleting
        && !name.is_empty()
        && b.operator_uid.as_deref() == Some(svc_uid)
        && b.namespace == mgmt_id
        && b.scope == mgmt_id
        && b.role == OPERATOR_ROLE
        && b.name == format!("vcluster-{name}-co")
}

/// The operator's CRTBs of cluster `mgmt_id` (vCluster `svc_uid`) among `foreign`, if
/// the operator's user `operator_user` created the cluster (else none).
pub fn operator_bindings<'a>(
    foreign: &[&'a Binding],
    mgmt_id: &str,
    svc_uid: &str,
    operator_user: Option<&str>,
) -> Vec<&'a Binding> {
    match operator_user {
        Some(u) if created_by(foreign.iter().copied(), u) => foreign
            .iter()
            .copied()
            .filter(|b| is_operator_binding(b, mgmt_id, svc_uid))
            .collect(),
        _ => Vec::new(),
    }
}

/// Decides the takeover: a wanted grant no owned CRTB makes is satisfied by adopting an
/// operator CRTB that makes it; every other operator CRTB is stale.
pub fn takeover<'a>(
    want: &BTreeMap<String, Desired>,
    owned: &[&OwnedCrtb],
    operator: &[&'a Binding],
) -> Takeover<'a> {
    let mut t = Takeover::default();
    let mut taken: HashSet<&str> = HashSet::new();
    for d in want.values() {
        let made = owned.iter().any(|o| {
            !o.deleting
                && (o.name == d.name && makes(o, d)
                    || o.role == d.role
                        && o.subject
                            .as_ref()
                            .is_some_and(|s| same_subject(s, &d.subject)))
        });
        if made {
            continue;
        }
        let candidate = operator.iter().find(|b| {
            !taken.contains(b.name.as_str())
                && b.role == d.role
                && b.subject
                    .as_ref()
                    .is_some_and(|s| same_subject(s, &d.subject))
        });
        if let Some(b) = candidate {
            taken.insert(b.name.as_str());
            t.adopt.push((b, d.clone()));
        }
    }
    t.stale = operator
        .iter()
        .copied()
        .filter(|b| !taken.contains(b.name.as_str()))
        .collect();
    t
}

#[cfg(test)]
#[path = "takeover_tests.rs"]
mod tests;
