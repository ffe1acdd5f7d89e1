//! What the recorder derives from the catalog itself rather than from the hub: the
//! exclusion state of each vCluster (`vclink.io/state: excluded`, the reason in
//! `vclink.io/excluded-reason`, `vclink.io/last-error` for an invalid one, one Event per
//! change) and the agent's mark on every reported Service (see `watch`'s module docs for
//! why the mark exists). Pure: [`catalog_ops`] turns a catalog into ops, remembering what
//! it announced so a catalog republished for an unrelated reason writes nothing; the
//! plans compare with the Service's annotations, so a restarted agent writes nothing
//! either when nothing changed.

use std::collections::{BTreeMap, HashMap, HashSet};

use vclink_proto::keys;
use vclink_proto::v1::exclusion::Kind;

use super::ops::{EventSpec, Plan, RecordOp, clean_text, set, set_state, state};
use crate::watch::Catalog;

/// What was announced per vCluster UID.
#[derive(Debug, Default)]
pub struct Announced {
    exclusions: HashMap<String, Option<(Kind, String)>>,
    marking: HashSet<String>,
}

impl Announced {
    /// Forgets `uid` (its write failed): the next catalog change derives its ops again.
    pub fn forget(&mut self, uid: &str) {
        self.exclusions.remove(uid);
        self.marking.remove(uid);
    }
}

/// The ops that bring the Services in line with `catalog`: an Excluded/Included op per
/// vCluster whose exclusion changed (or was never announced by this process), a Mark op
/// per Service that lacks the agent's mark (once, until it leaves the unmarked set).
pub fn catalog_ops(catalog: &Catalog, announced: &mut Announced) -> Vec<RecordOp> {
    announced
        .exclusions
        .retain(|uid, _| catalog.vclusters.contains_key(uid));
    announced
        .marking
        .retain(|uid| catalog.unmarked.contains(uid));
    let mut ops = Vec::new();
    for (uid, v) in &catalog.vclusters {
        let now = v.exclusion.as_ref().map(|x| (x.kind(), x.reason.clone()));
        if announced.exclusions.get(uid) == Some(&now) {
            continue;
        }
        ops.push(match &now {
            Some((kind, reason)) => RecordOp::Excluded {
                uid: uid.clone(),
                kind: *kind,
                reason: reason.clone(),
            },
            None => RecordOp::Included { uid: uid.clone() },
        });
        announced.exclusions.insert(uid.clone(), now);
    }
    for uid in &catalog.unmarked {
        if announced.marking.insert(uid.clone()) {
            ops.push(RecordOp::Mark { uid: uid.clone() });
        }
    }
    ops
}

fn cluster_of(current: &BTreeMap<String, String>) -> String {
    let get = |k: &str| current.get(k).map(String::as_str).unwrap_or_default();
    match (
        get(keys::ANNOTATION_RANCHER_CLUSTER_NAME),
        get(keys::ANNOTATION_RANCHER_CLUSTER),
    ) {
        ("", "") => "(none recorded)".to_string(),
        (name, "") => name.to_string(),
        ("", id) => id.to_string(),
        (name, id) => format!("{name} ({id})"),
    }
}

/// The writes for an exclusion.
pub fn plan_excluded(
    kind: Kind,
    reason: &str,
    current: &BTreeMap<String, String>,
    now: &str,
) -> Plan {
    let mut p = Plan::default();
    let reason = clean_text(reason);
    let state_changed = set_state(&mut p.patch, current, state::EXCLUDED, now);
    let reason_changed = current.get(keys::ANNOTATION_EXCLUDED_REASON) != Some(&reason);
    set(
        &mut p.patch,
        current,
        keys::ANNOTATION_EXCLUDED_REASON,
        Some(reason.clone()),
    );
    if kind == Kind::Invalid {
        set(
            &mut p.patch,
            current,
            keys::ANNOTATION_LAST_ERROR,
            Some(reason.clone()),
        );
    }
    if state_changed || reason_changed {
        p.event = Some(match kind {
            Kind::Unimport => EventSpec {
                warning: true,
                reason: "UnimportRequested",
                note: format!(
                    "vclink deletes the Rancher cluster {} after the removal grace; remove the annotation {} to \
                     keep it.",
                    cluster_of(current),
                    keys::ANNOTATION_IMPORT
                ),
            },
            Kind::Invalid => EventSpec {
                warning: true,
                reason: "InvalidVCluster",
                note: reason,
            },
            Kind::Excluded | Kind::Unspecified => EventSpec {
                warning: false,
                reason: "Excluded",
                note: reason,
            },
        });
    }
    p
}

/// The writes when a vCluster is to be imported (again): clears what the exclusion
/// wrote; the hub's next Status records the state.
pub fn plan_included(current: &BTreeMap<String, String>) -> Plan {
    let mut p = Plan::default();
    let Some(reason) = current.get(keys::ANNOTATION_EXCLUDED_REASON) else {
        return p;
    };
    set(
        &mut p.patch,
        current,
        keys::ANNOTATION_EXCLUDED_REASON,
        None,
    );
    if current.get(keys::ANNOTATION_LAST_ERROR) == Some(reason) {
        set(&mut p.patch, current, keys::ANNOTATION_LAST_ERROR, None);
    }
    if current.get(keys::ANNOTATION_STATE).map(String::as_str) == Some(state::EXCLUDED) {
        set(&mut p.patch, current, keys::ANNOTATION_STATE, None);
        set(&mut p.patch, current, keys::ANNOTATION_STATE_SINCE, None);
        p.event = Some(EventSpec {
            warning: false,
            reason: "Included",
            note: "This vCluster is no longer excluded; vclink imports it into Rancher."
                .to_string(),
        });
    }
    p
}

/// The agent's mark on Service `uid`.
pub fn plan_mark(uid: &str) -> Plan {
    Plan {
        labels: BTreeMap::from([(keys::LABEL_TRACKED.to_string(), Some(uid.to_string()))]),
        ..Default::default()
    }
}

/// The writes for a Register refused by the guard: the reason as last error, one
/// Warning Event per distinct reason.
pub fn plan_register_refused(reason: &str, current: &BTreeMap<String, String>) -> Plan {
    let mut p = Plan::default();
    let reason = clean_text(reason);
    if current.get(keys::ANNOTATION_LAST_ERROR) == Some(&reason) {
        return p;
    }
    p.warn(current, "RegistrationRefused", reason.clone(), reason);
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use vclink_proto::v1::{Exclusion, VCluster};

    const NOW: &str = "2024-05-01T10:00:00Z";
    const U1: &str = "00000000-0000-0000-0000-000000000001";

    fn ann(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn catalog(exclusion: Option<(Kind, &str)>, unmarked: bool) -> Catalog {
        let mut c = Catalog::default();
        c.vclusters.insert(
            U1.into(),
            std::sync::Arc::new(VCluster {
                uid: U1.into(),
                exclusion: exclusion.map(|(k, r)| Exclusion {
                    kind: k as i32,
                    reason: r.into(),
                }),
                ..Default::default()
            }),
        );
        if unmarked {
            c.unmarked.insert(U1.into());
        }
        c
    }

    #[test]
    fn ops_follow_changes_only() {
        let mut a = Announced::default();
        let ops = catalog_ops(&catalog(None, true), &mut a);
        assert_eq!(
            ops,
            vec![
                RecordOp::Included { uid: U1.into() },
                RecordOp::Mark { uid: U1.into() }
            ]
        );
        assert!(
            catalog_ops(&catalog(None, true), &mut a).is_empty(),
            "no repeat"
        );
        let ops = catalog_ops(&catalog(Some((Kind::Excluded, "skip")), false), &mut a);
        assert_eq!(
            ops,
            vec![RecordOp::Excluded {
                uid: U1.into(),
                kind: Kind::Excluded,
                reason: "skip".into()
            }]
        );
        a.forget(U1);
        assert_eq!(
            catalog_ops(&catalog(Some((Kind::Excluded, "skip")), false), &mut a).len(),
            1,
            "a failed write is derived again"
        );
    }

    #[test]
    fn exclusion_is_recorded_once_with_one_event() {
        let p = plan_excluded(Kind::Excluded, "skip-import is set", &BTreeMap::new(), NOW);
        assert_eq!(p.patch[keys::ANNOTATION_STATE], Some("excluded".into()));
        assert_eq!(
            p.patch[keys::ANNOTATION_EXCLUDED_REASON],
            Some("skip-import is set".into())
        );
        assert!(!p.patch.contains_key(keys::ANNOTATION_LAST_ERROR));
        let ev = p.event.expect("event");
        assert_eq!((ev.reason, ev.warning), ("Excluded", false));
        let current = ann(&[
            (keys::ANNOTATION_STATE, "excluded"),
            (keys::ANNOTATION_EXCLUDED_REASON, "skip-import is set"),
        ]);
        assert_eq!(
            plan_excluded(Kind::Excluded, "skip-import is set", &current, NOW),
            Plan::default()
        );
    }

    #[test]
    fn invalid_sets_the_last_error_and_warns() {
        let p = plan_excluded(Kind::Invalid, "bad name", &BTreeMap::new(), NOW);
        assert_eq!(
            p.patch[keys::ANNOTATION_LAST_ERROR],
            Some("bad name".into())
        );
        assert_eq!(p.event.expect("event").reason, "InvalidVCluster");
    }

    #[test]
    fn unimport_warns_naming_the_cluster() {
        let current = ann(&[
            (keys::ANNOTATION_STATE, "connected"),
            (keys::ANNOTATION_RANCHER_CLUSTER, "c-m-abcd1234"),
            (keys::ANNOTATION_RANCHER_CLUSTER_NAME, "host-team-a-vc1"),
        ]);
        let ev = plan_excluded(Kind::Unimport, "import=false", &current, NOW)
            .event
            .expect("event");
        assert!(ev.warning);
        assert!(
            ev.note
                .contains("deletes the Rancher cluster host-team-a-vc1 (c-m-abcd1234)"),
            "{}",
            ev.note
        );
        assert!(ev.note.contains("vclink.io/import"), "{}", ev.note);
    }

    #[test]
    fn inclusion_clears_what_the_exclusion_wrote() {
        let current = ann(&[
            (keys::ANNOTATION_STATE, "excluded"),
            (keys::ANNOTATION_STATE_SINCE, NOW),
            (keys::ANNOTATION_EXCLUDED_REASON, "bad name"),
            (keys::ANNOTATION_LAST_ERROR, "bad name"),
        ]);
        let p = plan_included(&current);
        for k in [
            keys::ANNOTATION_STATE,
            keys::ANNOTATION_STATE_SINCE,
            keys::ANNOTATION_EXCLUDED_REASON,
            keys::ANNOTATION_LAST_ERROR,
        ] {
            assert_eq!(p.patch.get(k), Some(&None), "{k}");
        }
        assert_eq!(p.event.expect("event").reason, "Included");
        assert_eq!(
            plan_included(&ann(&[(keys::ANNOTATION_STATE, "connected")])),
            Plan::default()
        );
    }

    #[test]
    fn a_refused_register_warns_once_per_reason() {
        let p = plan_register_refused("refused: X vs Y", &BTreeMap::new());
        assert_eq!(p.event.expect("event").reason, "RegistrationRefused");
        let again = plan_register_refused(
            "refused: X vs Y",
            &ann(&[(keys::ANNOTATION_LAST_ERROR, "refused: X vs Y")]),
        );
        assert_eq!(again, Plan::default());
    }

    #[test]
    fn the_mark_is_a_label_with_the_uid() {
        let p = plan_mark(U1);
        assert_eq!(p.labels[keys::LABEL_TRACKED], Some(U1.to_string()));
        assert!(p.patch.is_empty());
    }
}
