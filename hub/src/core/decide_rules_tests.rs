//! Unit tests of [`super::decide`] for what a user can edit: exclusion (EXCLUDED and
//! INVALID never delete), un-import (deletes only after the grace, cancelled by an
//! Upsert without it), per-vCluster refusal, and a reinstall under a new Service UID
//! (reclaim, no delete, no second create). Shares the fixture of `decide_tests.rs`.

use std::time::{Duration, SystemTime};

use vclink_proto::v1::exclusion::Kind;
use vclink_proto::v1::{Exclusion, State, VCluster};

use super::tests::{HOST, World, has_delete, key, prov, states, vc};
use super::{Action, DeleteReason, Timer, utc};
use crate::core::index::{ProvCluster, VcKey};

const GRACE: Duration = Duration::from_secs(300);

fn excluded(kind: Kind, reason: &str) -> VCluster {
    VCluster {
        exclusion: Some(Exclusion {
            kind: kind as i32,
            reason: reason.into(),
        }),
        ..vc()
    }
}

fn creates(a: &[Action]) -> bool {
    a.iter()
        .any(|a| matches!(a, Action::Create(_) | Action::Reclaim { .. }))
}

/// The Status actions with the cluster they name.
fn statuses(a: &[Action]) -> Vec<(State, String, String, String)> {
    a.iter()
        .filter_map(|a| match a {
            Action::Status {
                state,
                message,
                mgmt_id,
                cluster_name,
            } => Some((
                *state,
                message.clone(),
                mgmt_id.clone(),
                cluster_name.clone(),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn an_excluded_vcluster_keeps_its_cluster_and_says_why() {
    let mut w = World::new();
    w.prov = Some(prov(Some("c-m-vc000001")));
    w.reported = Some(excluded(
        Kind::Excluded,
        "vclink.io/skip-import is \"true\"",
    ));
    // Even with every timer long past, nothing is deleted, and they are cleared.
    let long_ago = w.now - Duration::from_secs(3600);
    w.timers.missing = Some(long_ago);
    w.timers.removed = Some(long_ago);
    w.timers.unimport = Some((long_ago, SystemTime::UNIX_EPOCH));
    let a = w.run();
    assert!(!has_delete(&a) && !creates(&a), "{a:?}");
    assert!(a.contains(&Action::ClearTimer(Timer::Missing)));
    assert!(a.contains(&Action::ClearTimer(Timer::Removed)));
    assert!(a.contains(&Action::ClearTimer(Timer::Unimport)));
    assert_eq!(
        statuses(&a),
        [(
            State::Excluded,
            "vclink.io/skip-import is \"true\"".into(),
            "c-m-vc000001".into(),
            "c-m-host0001-team-a-vc1".into()
        )],
        "the Service keeps pointing at its cluster"
    );
}

#[test]
fn an_invalid_vcluster_never_deletes_nor_renames() {
    let mut w = World::new();
    w.prov = Some(prov(Some("c-m-vc000001")));
    let mut v = excluded(
        Kind::Invalid,
        "invalid vclink.io/cluster-name: \"Bad Name\"",
    );
    v.requested_name = String::new(); // blanked by the agent
    w.reported = Some(v);
    w.now += Duration::from_secs(3600);
    let a = w.run();
    assert!(!has_delete(&a) && !creates(&a), "{a:?}");
    assert_eq!(statuses(&a)[0].0, State::Excluded);
    assert_eq!(statuses(&a)[0].3, "c-m-host0001-team-a-vc1");
}

#[test]
fn an_excluded_vcluster_without_a_cluster_gets_none() {
    let mut w = World::new();
    w.reported = Some(excluded(Kind::Excluded, "namespace no longer selected"));
    let a = w.run();
    assert!(!creates(&a), "{a:?}");
    assert_eq!(
        statuses(&a),
        [(
            State::Excluded,
            "namespace no longer selected".into(),
            String::new(),
            String::new()
        )]
    );
}

#[test]
fn unimport_deletes_only_after_the_grace() {
    let mut w = World::new();
    w.prov = Some(prov(Some("c-m-vc000001")));
    w.reported = Some(excluded(Kind::Unimport, "vclink.io/import is \"false\""));
    let a = w.run();
    assert!(!has_delete(&a));
    assert!(a.contains(&Action::StartTimer(Timer::Unimport)));
    assert!(a.contains(&Action::RequeueAt(w.now + GRACE)));
    let deadline = utc(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000) + GRACE);
    assert_eq!(
        statuses(&a),
        [(
            State::Excluded,
            format!(
                "un-importing: Rancher cluster c-m-host0001-team-a-vc1 is deleted at {deadline} unless the annotation vclink.io/import=false is removed"
            ),
            "c-m-vc000001".into(),
            "c-m-host0001-team-a-vc1".into()
        )]
    );
    let started = (
        w.now,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    );
    w.timers.unimport = Some(started);
    w.now += GRACE - Duration::from_secs(1);
    assert!(!has_delete(&w.run()));
    w.now += Duration::from_secs(1);
    let a = w.run();
    assert!(
        a.iter().any(|a| matches!(
            a,
            Action::Delete {
                reason: DeleteReason::Unimported,
                ..
            }
        )),
        "{a:?}"
    );
}

#[test]
fn an_upsert_without_the_annotation_cancels_the_unimport() {
    let mut w = World::new();
    w.prov = Some(prov(Some("c-m-vc000001")));
    w.timers.unimport = Some((w.now, SystemTime::UNIX_EPOCH));
    w.now += GRACE * 2;
    // Reported again without exclusion: timer cleared, nothing deleted.
    let a = w.run();
    assert!(!has_delete(&a));
    assert_eq!(a[0], Action::ClearTimer(Timer::Unimport));
}

#[test]
fn unimport_without_a_cluster_creates_nothing() {
    let mut w = World::new();
    w.reported = Some(excluded(Kind::Unimport, "vclink.io/import is \"false\""));
    let a = w.run();
    assert!(!creates(&a) && !has_delete(&a), "{a:?}");
    assert_eq!(
        states(&a),
        [(
            State::Excluded,
            "not imported (vclink.io/import=false)".into()
        )]
    );
}

#[test]
fn utc_formats_the_wall_clock() {
    assert_eq!(utc(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    assert_eq!(
        utc(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        "2023-11-14T22:13:20Z"
    );
    assert_eq!(
        utc(SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400)),
        "2000-02-29T00:00:00Z"
    );
}

#[test]
fn a_refused_vcluster_gets_an_error_and_nothing_is_created_or_deleted() {
    let mut w = World::new();
    w.refused =
        Some("refused: the namespace team-a is in a project of cluster c-m-other001".into());
    let a = w.run();
    assert!(!creates(&a), "{a:?}");
    assert_eq!(
        states(&a),
        [(
            State::Error,
            "refused: the namespace team-a is in a project of cluster c-m-other001".into()
        )]
    );
    // With a cluster: kept, named, never deleted (not even as un-import).
    w.prov = Some(prov(Some("c-m-vc000001")));
    w.reported = Some(excluded(Kind::Unimport, "x"));
    w.timers.unimport = Some((w.now - GRACE * 2, SystemTime::UNIX_EPOCH));
    let a = w.run();
    assert!(!has_delete(&a), "{a:?}");
    assert_eq!(statuses(&a)[0].3, "c-m-host0001-team-a-vc1");
}

const OLD_UID: &str = "00000000-0000-4000-8000-0000000000aa";

fn old_cluster() -> ProvCluster {
    ProvCluster {
        name: "c-m-host0001-team-a-vc1".into(),
        uid: "p-old".into(),
        key: Some(VcKey::new(HOST, OLD_UID)),
        vcluster: Some(("team-a".into(), "vc1".into())),
        ..Default::default()
    }
}

#[test]
fn a_reinstalled_vcluster_reclaims_its_old_cluster() {
    let mut w = World::new();
    w.predecessor = Some((old_cluster(), false));
    let a = w.run();
    assert!(
        !a.iter().any(|a| matches!(a, Action::Create(_))),
        "no second cluster: {a:?}"
    );
    assert!(!has_delete(&a));
    assert_eq!(
        a[0],
        Action::Reclaim {
            namespace: String::new(),
            name: "c-m-host0001-team-a-vc1".into(),
            uid: "p-old".into(),
            from_svc_uid: OLD_UID.into(),
            vc: vc(),
        }
    );
    assert_eq!(states(&a)[0].0, State::Pending);
}

#[test]
fn no_reclaim_while_the_old_uid_is_still_reported_or_the_list_is_incomplete() {
    let mut w = World::new();
    w.predecessor = Some((old_cluster(), true));
    assert!(matches!(w.run()[0], Action::Create(_)), "not a reinstall");
    w.predecessor = Some((old_cluster(), false));
    w.snapshot_complete = false;
    let a = w.run();
    assert!(!creates(&a), "waits for the complete list: {a:?}");
    // Another namespace / name is no predecessor.
    w.snapshot_complete = true;
    let mut other = old_cluster();
    other.vcluster = Some(("team-b".into(), "vc1".into()));
    w.predecessor = Some((other, false));
    assert!(matches!(w.run()[0], Action::Create(_)));
}

#[test]
fn a_removed_cluster_is_not_deleted_while_its_reinstall_is_reported() {
    let mut w = World::new();
    w.key = VcKey::new(HOST, OLD_UID);
    w.prov = Some(old_cluster());
    w.reported = None;
    w.timers.removed = Some(w.now - GRACE * 2);
    w.successor = Some((vc(), false));
    assert_eq!(w.run(), vec![], "the reinstall reclaims it");
    // The reinstall got a cluster of its own: the old one follows the rules again.
    w.successor = Some((vc(), true));
    assert!(has_delete(&w.run()));
    // A reinstall being un-imported does not want it either.
    w.successor = Some((excluded(Kind::Unimport, "x"), false));
    assert!(has_delete(&w.run()));
    let _ = key();
}
