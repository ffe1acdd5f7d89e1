//! Optional uninstall of a vCluster when a user deleted its Rancher cluster in Rancher.
//!
//! What proves the deletion: only the hub's `Forget` for the vCluster's Service UID. The
//! hub sends it only for a Rancher cluster it can prove it made for this very vCluster,
//! that was deleted while the vCluster is reported importable and the hub did not delete
//! it itself (see `hub/src/core/decide.rs`). Nothing a tenant can write starts an
//! uninstall: a hand-written `vclink.io/rancher-cluster-deleted` annotation only stops
//! the import (the hub then never sends `Forget`); a hub restart, a disconnect, an
//! un-import or the Service's deletion send none. And only a vCluster its Service showed
//! imported when the `Forget` came ([`was_imported`]) is uninstalled: one included again
//! after an un-import has no state, so a hub that restarted while deleting the
//! un-import's cluster, and took that deletion for a user's, cannot make the agent
//! remove it. The agent writes its own proof — a
//! ConfigMap `vclink-uninstall-<uid>` in its own namespace, where tenants cannot write —
//! before removing anything, so an agent restarted mid-uninstall finishes the job (the
//! hub does not repeat a `Forget` the Service already records).
//!
//! Whether to act: the Service's `vclink.io/uninstall-on-cluster-delete` or the
//! operator's `loft.sh/uninstall-on-cluster-delete` (`"true"`/`"false"`, an explicit
//! `"false"` overriding the cluster-wide `--uninstall-on-cluster-delete`), and only when
//! `--allow-uninstall` (chart `uninstall.enabled`, which also grants the RBAC) is on;
//! otherwise an opted-in Service gets an Event saying how to enable it.
//!
//! What is removed: [`release`] reads the vCluster's Helm release from its storage
//! Secrets, [`select`] picks the objects its manifest lists that the agent may remove
//! and that carry the release's Helm markers, [`run`] removes them (with a UID
//! precondition) and then the release Secrets. PersistentVolumeClaims of the
//! StatefulSet are not in the manifest and are kept.

pub(crate) mod note;
pub mod release;
pub(crate) mod run;
pub mod select;

use std::collections::BTreeMap;

use vclink_proto::keys;

/// The agent's uninstall settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UninstallSettings {
    /// `--allow-uninstall`: the agent may uninstall at all (the chart grants the RBAC).
    pub allowed: bool,
    /// `--uninstall-on-cluster-delete`: uninstall vClusters whose Service does not say.
    pub by_default: bool,
}

/// Whether a vCluster is to be uninstalled, and who said so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Uninstall; the annotation or flag that asked for it.
    Yes(&'static str),
    /// Keep it (nobody asked, or an explicit `"false"`).
    No,
}

/// The hub's `Forget` for a vCluster, as the uninstaller gets it: with the Service's
/// `vclink.io/state` as it was when the `Forget` arrived (before the recorder marks it
/// deleted), which shows whether the vCluster was imported at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forgotten {
    /// The Service's UID.
    pub uid: String,
    /// Its `vclink.io/state` before the `Forget`.
    pub state_before: Option<String>,
}

impl crate::latest::Coalesce for Forgotten {
    type Slot = ();
    fn uid(&self) -> &str {
        &self.uid
    }
    fn slot(&self) {}
}

/// Whether `state` (the Service's `vclink.io/state` before the `Forget`) shows a vCluster
/// that was imported into Rancher: only such a vCluster's cluster can have been deleted by
/// a user. No state is a vCluster never imported or included again after an un-import
/// (whose cluster the hub itself deleted); `excluded` is one not imported.
pub fn was_imported(state: Option<&str>) -> bool {
    use crate::record::ops::state;
    matches!(
        state,
        Some(
            state::PENDING
                | state::REGISTERING
                | state::CONNECTED
                | state::DISCONNECTED
                | state::ERROR
                | state::DELETED_IN_RANCHER
        )
    )
}

/// The flag named in Events when the cluster-wide default asked.
pub const DEFAULT_FLAG: &str = "--uninstall-on-cluster-delete";

/// Decides from the Service's annotations: `"true"` on either key asks, `"false"` on
/// either key refuses (and wins over a `"true"` on the other and over the default),
/// anything else is as if unset.
pub fn choice(annotations: &BTreeMap<String, String>, by_default: bool) -> Choice {
    let keys = [
        keys::ANNOTATION_UNINSTALL_ON_DELETE,
        keys::ANNOTATION_LOFT_UNINSTALL_ON_DELETE,
    ];
    let said = |want: &str| {
        keys.into_iter().find(|k| {
            annotations
                .get(*k)
                .is_some_and(|v| v.trim().eq_ignore_ascii_case(want))
        })
    };
    if said("false").is_some() {
        return Choice::No;
    }
    match said("true") {
        Some(k) => Choice::Yes(k),
        None if by_default => Choice::Yes(DEFAULT_FLAG),
        None => Choice::No,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn only_an_imported_vcluster_counts() {
        for s in [
            "pending",
            "registering",
            "connected",
            "disconnected",
            "error",
            "deleted-in-rancher",
        ] {
            assert!(was_imported(Some(s)), "{s}");
        }
        assert!(!was_imported(None));
        assert!(!was_imported(Some("excluded")));
        assert!(!was_imported(Some("")));
    }

    #[test]
    fn either_spelling_opts_in_and_an_explicit_false_wins() {
        let ours = keys::ANNOTATION_UNINSTALL_ON_DELETE;
        let loft = keys::ANNOTATION_LOFT_UNINSTALL_ON_DELETE;
        assert_eq!(choice(&ann(&[]), false), Choice::No);
        assert_eq!(choice(&ann(&[]), true), Choice::Yes(DEFAULT_FLAG));
        assert_eq!(choice(&ann(&[(ours, "true")]), false), Choice::Yes(ours));
        assert_eq!(choice(&ann(&[(loft, "True")]), false), Choice::Yes(loft));
        assert_eq!(choice(&ann(&[(ours, "false")]), true), Choice::No);
        assert_eq!(choice(&ann(&[(loft, "false")]), true), Choice::No);
        assert_eq!(
            choice(&ann(&[(ours, "true"), (loft, "false")]), true),
            Choice::No,
            "a refusal on either key wins"
        );
        assert_eq!(choice(&ann(&[(ours, "yes")]), false), Choice::No);
        assert_eq!(
            choice(&ann(&[(ours, "yes")]), true),
            Choice::Yes(DEFAULT_FLAG)
        );
    }
}
