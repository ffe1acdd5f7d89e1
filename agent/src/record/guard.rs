//! Defence in depth against a hub that was fooled (say, by a forged provisioning cluster)
//! into pointing a vCluster at another tenant's Rancher cluster: a vCluster whose Service
//! records that it is registered with Rancher cluster X (`vclink.io/state` connected or
//! disconnected, `vclink.io/rancher-cluster-id` X) is never registered into, nor
//! recorded as, a different cluster Y unless a re-import was asked for:
//! - the user set `vclink.io/reimport: "true"` on the Service (the agent removes it once
//!   a registration Job started), or
//! - the user deleted the Rancher cluster and vclink recorded that
//!   (`vclink.io/rancher-cluster-deleted`, state `deleted-in-rancher`): removing that
//!   annotation imports the vCluster again, into a new cluster.
//!
//! Pure; used by the Job controller (Register) and by [`super::plan`] (hub Status).

use std::collections::BTreeMap;

use vclink_proto::keys;

use super::ops::state;

/// Whether the vCluster may be registered with (or recorded as) a given Rancher cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Switch {
    /// Same cluster as recorded, or nothing is recorded / at stake.
    Allowed,
    /// A different cluster, and the user asked for a re-import.
    Reimport,
    /// A different cluster than the one the vCluster is registered with: refused, with
    /// the reason for the user (names both cluster ids).
    Refused(String),
}

/// True when the Service asks for a re-import.
pub fn reimport_requested(current: &BTreeMap<String, String>) -> bool {
    current
        .get(keys::ANNOTATION_REIMPORT)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Decides whether `requested` (a Rancher management cluster id) may replace the one
/// recorded in `current` (the Service's `vclink.io/` annotations).
pub fn cluster_switch(current: &BTreeMap<String, String>, requested: &str) -> Switch {
    let recorded = current
        .get(keys::ANNOTATION_RANCHER_CLUSTER)
        .map(|v| v.trim())
        .unwrap_or_default();
    let st = current
        .get(keys::ANNOTATION_STATE)
        .map(String::as_str)
        .unwrap_or_default();
    if requested.is_empty() || recorded.is_empty() || recorded == requested {
        return Switch::Allowed;
    }
    if !matches!(st, state::CONNECTED | state::DISCONNECTED) {
        return Switch::Allowed;
    }
    if reimport_requested(current) {
        return Switch::Reimport;
    }
    Switch::Refused(format!(
        "this vCluster is registered with Rancher cluster {recorded} ({st}); vclink refused to register it into \
         Rancher cluster {requested}. To move it on purpose, set the annotation {}: \"true\" on this Service.",
        keys::ANNOTATION_REIMPORT
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const X: &str = "c-m-aaaa1111";
    const Y: &str = "c-m-bbbb2222";

    #[test]
    fn a_connected_vcluster_is_not_pointed_at_another_cluster() {
        for st in ["connected", "disconnected"] {
            let current = ann(&[
                (keys::ANNOTATION_STATE, st),
                (keys::ANNOTATION_RANCHER_CLUSTER, X),
            ]);
            let Switch::Refused(reason) = cluster_switch(&current, Y) else {
                panic!("{st}: not refused")
            };
            assert!(reason.contains(X) && reason.contains(Y), "{reason}");
            assert!(reason.contains("vclink.io/reimport"), "{reason}");
            assert_eq!(cluster_switch(&current, X), Switch::Allowed, "same cluster");
        }
    }

    #[test]
    fn a_reimport_request_allows_the_switch() {
        let current = ann(&[
            (keys::ANNOTATION_STATE, "connected"),
            (keys::ANNOTATION_RANCHER_CLUSTER, X),
            (keys::ANNOTATION_REIMPORT, "True"),
        ]);
        assert_eq!(cluster_switch(&current, Y), Switch::Reimport);
        let not_true = ann(&[
            (keys::ANNOTATION_STATE, "connected"),
            (keys::ANNOTATION_RANCHER_CLUSTER, X),
            (keys::ANNOTATION_REIMPORT, "yes"),
        ]);
        assert!(matches!(cluster_switch(&not_true, Y), Switch::Refused(_)));
    }

    #[test]
    fn nothing_registered_or_deleted_in_rancher_is_allowed() {
        assert_eq!(cluster_switch(&BTreeMap::new(), Y), Switch::Allowed);
        for st in [
            "pending",
            "registering",
            "error",
            "deleted-in-rancher",
            "excluded",
        ] {
            let current = ann(&[
                (keys::ANNOTATION_STATE, st),
                (keys::ANNOTATION_RANCHER_CLUSTER, X),
            ]);
            assert_eq!(cluster_switch(&current, Y), Switch::Allowed, "{st}");
        }
        let connected_without_id = ann(&[(keys::ANNOTATION_STATE, "connected")]);
        assert_eq!(cluster_switch(&connected_without_id, Y), Switch::Allowed);
    }
}
