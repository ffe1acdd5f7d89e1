//! Who writes owner CRTBs: the hub's Rancher user, impersonated (`--impersonate-user`).
//!
//! Rancher's webhook admits a CRTB only if its creator already holds every rule of the
//! granted role template in that cluster (local RBAC plus the creator's own CRTBs there;
//! no bypass). The hub creates each vCluster cluster as its Rancher user, so Rancher
//! makes that user the cluster's owner through CRTB [`CREATOR_CRTB`]; CRTBs created as
//! that user then pass the check in exactly the clusters the hub created, and the hub's
//! ServiceAccount needs no rights of its own to bind roles (docs/rancher.md).
//!
//! The pure rules here: wait until the hub's user owns the cluster — Rancher's creator
//! binding, or for a cluster someone else created (one adopted from the
//! vcluster-rancher-operator) a `cluster-owner` CRTB an administrator made (the CRTB
//! watch requeues the vCluster when it appears) — never grant anything to the hub's own user, and
//! leave a grant alone that another CRTB of the cluster already makes (Rancher 2.14+
//! refuses such a duplicate with 409).

use kube::Client;

use super::desired::Desired;
use super::model::{Binding, Subject, same_subject};

/// The CRTB Rancher creates for a cluster's creator, in the cluster's `c-m-` namespace.
pub const CREATOR_CRTB: &str = "creator-cluster-owner";

/// The Rancher user owner sync acts as, and a client impersonating it.
#[derive(Clone)]
pub struct Acting {
    /// The Rancher User's name (`u-…` or the chart's `vclink-hub`).
    pub user: String,
    /// A client of the local cluster sending `Impersonate-User: <user>`.
    pub client: Client,
}

/// Is `s` the hub's own user (by name or by its `local://` principal)?
pub fn is_user(s: &Subject, user: &str) -> bool {
    match s {
        Subject::User { name, principal } => {
            name == user || principal.strip_prefix("local://") == Some(user)
        }
        Subject::Group { .. } => false,
    }
}

/// Is `user` an owner of the cluster whose CRTBs (not vclink's) are `foreign`: its
/// creator, or granted `cluster-owner` by any other CRTB (for a cluster adopted from the
/// vcluster-rancher-operator an administrator grants it; only a cluster owner can, and
/// it lets vclink do nothing but keep the owner bindings it keeps anyway)?
pub fn is_owner<'a>(foreign: impl IntoIterator<Item = &'a Binding>, user: &str) -> bool {
    foreign.into_iter().any(|b| {
        !b.deleting
            && b.role == "cluster-owner"
            && b.subject.as_ref().is_some_and(|s| is_user(s, user))
    })
}

/// The `userName` Rancher's creator binding of the cluster names, if there is one.
pub fn creator<'a>(foreign: impl IntoIterator<Item = &'a Binding>) -> Option<&'a str> {
    foreign.into_iter().find_map(|b| match &b.subject {
        Some(Subject::User { name, .. }) if b.name == CREATOR_CRTB && !b.deleting => {
            Some(name.as_str())
        }
        _ => None,
    })
}

/// Does another CRTB of the cluster already grant `d`'s role to `d`'s subject?
pub fn granted_elsewhere<'a>(foreign: impl IntoIterator<Item = &'a Binding>, d: &Desired) -> bool {
    foreign.into_iter().any(|b| {
        !b.deleting
            && b.role == d.role
            && b.subject
                .as_ref()
                .is_some_and(|s| same_subject(s, &d.subject))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Subject {
        Subject::User {
            name: name.into(),
            principal: String::new(),
        }
    }

    fn binding(name: &str, role: &str, subject: Subject) -> Binding {
        Binding {
            namespace: "c-m-vc000001".into(),
            name: name.into(),
            role: role.into(),
            scope: "c-m-vc000001".into(),
            subject: Some(subject),
            deleting: false,
            ..Binding::default()
        }
    }

    #[test]
    fn the_hub_user_is_recognised_by_name_and_local_principal() {
        assert!(is_user(&user("vclink-hub"), "vclink-hub"));
        let by_principal = Subject::User {
            name: String::new(),
            principal: "local://vclink-hub".into(),
        };
        assert!(is_user(&by_principal, "vclink-hub"));
        assert!(!is_user(&user("u-alice"), "vclink-hub"));
        let group = Subject::Group {
            name: "vclink-hub".into(),
            principal: String::new(),
        };
        assert!(!is_user(&group, "vclink-hub"));
    }

    #[test]
    fn ownership_by_the_creator_binding_or_any_owner_binding() {
        let ok = binding(CREATOR_CRTB, "cluster-owner", user("vclink-hub"));
        assert!(is_owner([&ok], "vclink-hub"));
        assert_eq!(creator([&ok]), Some("vclink-hub"));
        let someone_else = binding(CREATOR_CRTB, "cluster-owner", user("u-admin"));
        assert!(!is_owner([&someone_else], "vclink-hub"));
        assert_eq!(creator([&someone_else]), Some("u-admin"));
        // Granted by an administrator (a cluster adopted from the operator).
        let granted = binding("vclink-hub-owner", "cluster-owner", user("vclink-hub"));
        assert!(is_owner([&someone_else, &granted], "vclink-hub"));
        assert_eq!(creator([&granted]), None);
        let member = binding("x", "cluster-member", user("vclink-hub"));
        assert!(!is_owner([&member], "vclink-hub"));
        let mut going = ok.clone();
        going.deleting = true;
        assert!(!is_owner([&going], "vclink-hub"));
        assert!(!is_owner([], "vclink-hub"));
    }

    #[test]
    fn an_equivalent_grant_is_recognised() {
        let d = Desired {
            name: "vco-x".into(),
            role: "cluster-owner".into(),
            subject: user("u-alice"),
            parents: vec![],
        };
        assert!(granted_elsewhere(
            [&binding("by-hand", "cluster-owner", user("u-alice"))],
            &d
        ));
        assert!(!granted_elsewhere(
            [&binding("by-hand", "cluster-member", user("u-alice"))],
            &d
        ));
        assert!(!granted_elsewhere(
            [&binding("by-hand", "cluster-owner", user("u-bob"))],
            &d
        ));
    }
}
