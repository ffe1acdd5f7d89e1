//! Unit tests of the index: token resolution, restart rebuild, deletion tracking.

use super::*;

fn key(uid: &str) -> VcKey {
    VcKey::new("c-m-host0001", uid)
}

fn prov(name: &str, k: Option<VcKey>, mgmt: Option<&str>) -> ProvCluster {
    ProvCluster {
        name: name.into(),
        uid: format!("uid-{name}"),
        key: k,
        mgmt_id: mgmt.map(Into::into),
        ready: false,
        deleting: false,
        project: None,
        version: 0,
        ..Default::default()
    }
    .proven()
}

fn crt(id: &str, url: &str, token: &str, secret_name: Option<&str>) -> Crt {
    Crt {
        mgmt_id: id.into(),
        manifest_url: Secret::new(url),
        token: Secret::new(token),
        token_secret_name: secret_name.map(Into::into),
    }
}

#[test]
fn legacy_token_is_the_url() {
    let c = crt("c-m-1", "https://r/v3/import/abc_c-m-1.yaml", "abc", None);
    assert_eq!(
        resolve_token(Some(&c), None).unwrap().expose(),
        "https://r/v3/import/abc_c-m-1.yaml"
    );
}

#[test]
fn placeholder_is_filled_from_the_secret_and_waits_without_it() {
    let c = crt(
        "c-m-1",
        "https://r/v3/import/{token}_c-m-1.yaml",
        "",
        Some(TOKEN_SECRET_NAME),
    );
    assert_eq!(resolve_token(Some(&c), None), None);
    let s = Secret::new("tok");
    assert_eq!(
        resolve_token(Some(&c), Some(&s)).unwrap().expose(),
        "https://r/v3/import/tok_c-m-1.yaml"
    );
    let other = crt(
        "c-m-1",
        "https://r/v3/import/{token}_c-m-1.yaml",
        "",
        Some("elsewhere"),
    );
    assert_eq!(resolve_token(Some(&other), Some(&s)), None);
    assert_eq!(
        resolve_token(Some(&crt("c-m-1", "", "", None)), Some(&s)),
        None
    );
}

#[test]
fn token_state_follows_crt_and_secret_events() {
    let now = Instant::now();
    let mut ix = Index::default();
    ix.apply_prov(prov("vc", Some(key("u1")), Some("c-m-1")));
    assert_eq!(ix.token("c-m-1"), TokenState::Missing);
    let affected = ix.apply_crt(crt("c-m-1", "https://r/{token}.yaml", "", None), now);
    assert_eq!(affected, vec![key("u1")]);
    assert_eq!(ix.token("c-m-1"), TokenState::WaitingSecret);
    let affected = ix.apply_token_secret("c-m-1", Secret::new("t1"), now);
    assert_eq!(affected, vec![key("u1")]);
    match ix.token("c-m-1") {
        TokenState::Ready(u, _) => assert_eq!(u.expose(), "https://r/t1.yaml"),
        other => panic!("{other:?}"),
    }
    ix.delete_token_secret("c-m-1", now);
    assert_eq!(ix.token("c-m-1"), TokenState::WaitingSecret);
}

#[test]
fn rebuilt_from_labels_after_restart() {
    // A restarted hub only has the list: the mapping key → cluster comes from labels.
    let mut ix = Index::default();
    let affected = ix.replace_prov(vec![
        prov("a", Some(key("u1")), Some("c-m-a")),
        prov("b", Some(key("u2")), None),
        prov("c", None, None),
    ]);
    assert_eq!(affected.len(), 2);
    assert_eq!(ix.prov_for(&key("u1")).unwrap().name, "a");
    assert_eq!(ix.key_for_mgmt("c-m-a"), Some(&key("u1")));
    let mut uids: Vec<_> = ix.uids_of_host("c-m-host0001").cloned().collect();
    uids.sort();
    assert_eq!(uids, vec!["u1", "u2"]);
    assert_eq!(ix.name_use("", "a", &key("u1")), NameUse::Ours);
    assert_eq!(ix.name_use("", "a", &key("u2")), NameUse::Other);
    assert_eq!(ix.name_use("", "c", &key("u2")), NameUse::Other);
    assert_eq!(ix.name_use("", "zz", &key("u2")), NameUse::Free);
}

#[test]
fn deletion_by_someone_else_is_remembered_but_ours_is_not() {
    let mut ix = Index::default();
    ix.apply_prov(prov("a", Some(key("u1")), None));
    ix.apply_prov(prov("b", Some(key("u2")), None));
    ix.mark_deleting_by_us(&key("u2"));
    ix.delete_prov("/a");
    ix.delete_prov("/b");
    assert!(ix.is_user_deleted(&key("u1")));
    assert!(!ix.is_user_deleted(&key("u2")));
    assert!(!ix.is_deleting_by_us(&key("u2")));
    assert!(ix.prov_for(&key("u1")).is_none());
    assert_eq!(ix.uids_of_host("c-m-host0001").count(), 0);
}

#[test]
fn relist_treats_missing_objects_as_deleted() {
    let mut ix = Index::default();
    ix.apply_prov(prov("a", Some(key("u1")), None));
    let affected = ix.replace_prov(vec![]);
    assert_eq!(affected, vec![key("u1")]);
    assert!(ix.is_user_deleted(&key("u1")));
}

#[test]
fn a_deletion_timestamp_from_someone_else_counts_as_user_deletion() {
    let mut ix = Index::default();
    let mut p = prov("a", Some(key("u1")), None);
    p.deleting = true;
    ix.apply_prov(p);
    assert!(ix.is_user_deleted(&key("u1")));
}

#[test]
fn operator_clusters_are_found_by_key_until_adopted_or_gone() {
    let mut i = Index::default();
    i.replace_legacy(vec![
        ("fleet-default".into(), "legacy-a".into(), Some(key("a"))),
        ("fleet-default".into(), "being-deleted".into(), None),
    ]);
    assert_eq!(i.legacy_cluster(&key("a")), Some("legacy-a"));
    assert_eq!(i.legacy_cluster(&key("b")), None);
    // Renamed key on the same cluster (labels edited): the old key no longer matches.
    i.apply_legacy("fleet-default", "legacy-a", Some(key("b")));
    assert_eq!(i.legacy_cluster(&key("a")), None);
    assert_eq!(i.legacy_cluster(&key("b")), Some("legacy-a"));
    // Adopted (our label added → leaves the watch's selector) or deleted.
    i.apply_legacy("fleet-default", "legacy-a", None);
    assert_eq!(i.legacy_cluster(&key("b")), None);
}

#[test]
fn a_slow_write_response_does_not_undo_what_the_watch_delivered() {
    let mut i = Index::default();
    let k = key("u1");
    // The hub created the cluster (version 10); Rancher set status.clusterName at once
    // (version 11) and the watch delivered that before the creating worker got back.
    let newer = ProvCluster {
        version: 11,
        ..prov("p1", Some(k.clone()), Some("c-m-1"))
    };
    let created = ProvCluster {
        version: 10,
        ..prov("p1", Some(k.clone()), None)
    };
    i.apply_prov(newer);
    assert_eq!(i.apply_prov_written(created), vec![k.clone()]);
    assert_eq!(
        i.prov_for(&k).and_then(|p| p.mgmt_id.as_deref()),
        Some("c-m-1"),
        "the older response must not erase the management cluster id"
    );
    // A response newer than what the watch delivered is applied (seen before its event).
    let relabelled = ProvCluster {
        version: 12,
        project: Some("p-abc".into()),
        ..prov("p1", Some(k.clone()), Some("c-m-1"))
    };
    i.apply_prov_written(relabelled);
    assert_eq!(
        i.prov_for(&k).and_then(|p| p.project.as_deref()),
        Some("p-abc")
    );
    // Unknown versions: the watch is the authority.
    let unknown = prov("p1", Some(k.clone()), None);
    i.apply_prov_written(unknown);
    assert_eq!(
        i.prov_for(&k).and_then(|p| p.mgmt_id.as_deref()),
        Some("c-m-1")
    );
    // Not known yet at all: applied.
    let fresh = ProvCluster {
        version: 5,
        ..prov("p2", Some(key("u2")), None)
    };
    assert_eq!(i.apply_prov_written(fresh), vec![key("u2")]);
    assert!(i.prov_for(&key("u2")).is_some());
}

#[test]
fn clusters_are_found_by_service_uid_and_by_vcluster_name() {
    let mut ix = Index::default();
    let mut p = prov("c1", Some(key("u1")), None);
    p.vcluster = Some(("team-a".into(), "vc1".into()));
    ix.apply_prov(p.clone());
    assert_eq!(
        ix.other_host_of_uid("u1", "c-m-other001"),
        Some("c-m-host0001")
    );
    assert_eq!(ix.other_host_of_uid("u1", "c-m-host0001"), None);
    let found: Vec<_> = ix
        .provs_for_vcluster("c-m-host0001", "team-a", "vc1")
        .map(|p| p.name.clone())
        .collect();
    assert_eq!(found, ["c1"]);
    assert_eq!(
        ix.provs_for_vcluster("c-m-host0001", "team-a", "vc2")
            .count(),
        0
    );
    // Relabelled to a new Service UID (a reinstall): found under the new UID only.
    let mut moved = p.clone();
    moved.key = Some(key("u2"));
    ix.apply_prov(moved);
    assert_eq!(ix.other_host_of_uid("u1", "c-m-other001"), None);
    assert_eq!(
        ix.other_host_of_uid("u2", "c-m-other001"),
        Some("c-m-host0001")
    );
    assert_eq!(
        ix.provs_for_vcluster("c-m-host0001", "team-a", "vc1")
            .count(),
        1
    );
    // Gone: found nowhere.
    ix.delete_prov("/c1");
    assert_eq!(ix.other_host_of_uid("u2", "c-m-other001"), None);
    assert_eq!(
        ix.provs_for_vcluster("c-m-host0001", "team-a", "vc1")
            .count(),
        0
    );
}

#[test]
fn one_name_in_two_workspaces_is_two_clusters() {
    // Names are unique only per namespace: a cluster of another vCluster with the same
    // name in another Fleet workspace neither hides nor replaces ours.
    let mut ix = Index::default();
    let in_ws = |ns: &str, uid: &str| ProvCluster {
        namespace: ns.into(),
        ..prov("same-name", Some(key(uid)), Some(&format!("c-m-{uid}")))
    };
    ix.apply_prov(in_ws("ws-a", "u1"));
    ix.apply_prov(in_ws("ws-b", "u2"));
    assert_eq!(
        ix.prov_for(&key("u1")).map(|p| p.namespace.as_str()),
        Some("ws-a")
    );
    assert_eq!(
        ix.prov_for(&key("u2")).map(|p| p.namespace.as_str()),
        Some("ws-b")
    );
    assert_eq!(ix.name_use("ws-a", "same-name", &key("u1")), NameUse::Ours);
    assert_eq!(ix.name_use("ws-b", "same-name", &key("u1")), NameUse::Other);
    assert_eq!(ix.name_use("ws-c", "same-name", &key("u1")), NameUse::Free);
    // A relist that still has both keeps both; the deletion of one is only that one.
    ix.replace_prov(vec![in_ws("ws-a", "u1"), in_ws("ws-b", "u2")]);
    assert!(ix.prov_for(&key("u1")).is_some() && ix.prov_for(&key("u2")).is_some());
    assert_eq!(ix.delete_prov("ws-b/same-name"), vec![key("u2")]);
    assert!(ix.prov_for(&key("u2")).is_none());
    assert_eq!(
        ix.prov_for(&key("u1")).map(|p| p.namespace.as_str()),
        Some("ws-a")
    );
    assert!(!ix.is_user_deleted(&key("u1")));
}
