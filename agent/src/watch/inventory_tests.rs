//! Unit tests of the watch inventory: readiness, feeds, vanished Services and their confirmation, namespace selection, quotas.

use super::*;
use vclink_proto::v1::Flavour;
use vclink_proto::v1::exclusion::Kind;

fn tracked(ns: &str, name: &str, uid: &str) -> TrackedService {
    TrackedService {
        uid: uid.into(),
        namespace: ns.into(),
        name: name.into(),
        vcluster_label: true,
        marked: true,
        https_port: 443,
        ..Default::default()
    }
}

const U1: &str = "00000000-0000-0000-0000-000000000001";
const U2: &str = "00000000-0000-0000-0000-000000000002";

fn ready(inv: &mut Inventory) {
    for f in [Feed::Labelled, Feed::Tracked] {
        inv.services_init(f);
        inv.services_init_done(f);
    }
    inv.namespaces_init();
    inv.namespaces_init_done();
    inv.quotas_init();
    inv.quotas_init_done();
}

fn kind(c: &Catalog, uid: &str) -> Option<Kind> {
    c.exclusion(uid).map(|x| x.kind())
}

fn selector(s: &str) -> Option<LabelSelector> {
    Some(LabelSelector::parse(s).expect("selector"))
}

#[test]
fn not_ready_until_all_initial_lists_are_done() {
    let mut inv = Inventory::new(None);
    inv.services_init(Feed::Labelled);
    inv.services_init_apply(Feed::Labelled, tracked("team-a", "vc1", U1));
    inv.services_init_done(Feed::Labelled);
    inv.namespaces_init();
    inv.namespaces_init_apply(
        "team-a".into(),
        Some("c-m-abcd1234:p-xk2lm".into()),
        &BTreeMap::new(),
    );
    inv.namespaces_init_done();
    assert!(
        !inv.catalog().ready,
        "the tracked-label watch has not listed yet"
    );
    inv.services_init(Feed::Tracked);
    inv.services_init_done(Feed::Tracked);
    assert!(!inv.catalog().ready, "the quota watch has not listed yet");
    inv.quotas_init();
    inv.quotas_init_done();
    let c = inv.catalog();
    assert!(c.ready);
    assert_eq!(c.vclusters[U1].project_id, "c-m-abcd1234:p-xk2lm");
}

#[test]
fn namespace_project_change_updates_the_vcluster() {
    let mut inv = Inventory::new(None);
    ready(&mut inv);
    inv.service_applied(Feed::Labelled, tracked("team-a", "vc1", U1));
    assert_eq!(inv.catalog().vclusters[U1].project_id, "");
    inv.namespace_applied(
        "team-a".into(),
        Some("c-m-abcd1234:p-xk2lm".into()),
        &BTreeMap::new(),
    );
    assert_eq!(
        inv.catalog().vclusters[U1].project_id,
        "c-m-abcd1234:p-xk2lm"
    );
}

#[test]
fn an_unchanged_vcluster_is_shared_between_catalogs() {
    let mut inv = Inventory::new(None);
    ready(&mut inv);
    inv.service_applied(Feed::Labelled, tracked("team-a", "vc1", U1));
    inv.service_applied(Feed::Labelled, tracked("team-a", "vc2", U2));
    let first = inv.catalog();
    let mut renamed = tracked("team-a", "vc2", U2);
    renamed.labels.insert("team".into(), "b".into());
    inv.service_applied(Feed::Labelled, renamed);
    let second = inv.catalog();
    assert!(
        Arc::ptr_eq(&first.vclusters[U1], &second.vclusters[U1]),
        "vc1 did not change: one allocation for both catalogs"
    );
    assert!(Arc::ptr_eq(&first.services[U1], &second.services[U1]));
    assert!(!Arc::ptr_eq(&first.vclusters[U2], &second.vclusters[U2]));
    assert_eq!(second.vclusters[U2].labels["team"], "b");
}

#[test]
fn an_opt_out_is_excluded_not_removed() {
    let mut inv = Inventory::new(None);
    ready(&mut inv);
    inv.service_applied(Feed::Labelled, tracked("team-a", "vc1", U1));
    let mut skipped = tracked("team-a", "vc1", U1);
    skipped.skip_import = true;
    inv.service_applied(Feed::Labelled, skipped);
    let c = inv.catalog();
    assert_eq!(kind(&c, U1), Some(Kind::Excluded));
    assert!(
        c.services.contains_key(U1),
        "the recorder can still write on it"
    );
}

#[test]
fn a_watch_delete_is_a_removal_only_after_the_get_says_so() {
    let mut inv = Inventory::new(None);
    ready(&mut inv);
    inv.service_applied(Feed::Labelled, tracked("team-a", "vc1", U1));
    let before = inv.catalog();
    let v = inv.service_deleted(Feed::Labelled, "team-a", "vc1");
    assert_eq!(
        v,
        vec![Vanished {
            uid: U1.into(),
            namespace: "team-a".into(),
            name: "vc1".into()
        }]
    );
    assert_eq!(inv.catalog(), before, "unchanged until confirmed");
    inv.confirmed(U1, Confirmation::NotFound);
    assert!(inv.catalog().vclusters.is_empty());
}

#[test]
fn a_removed_label_keeps_the_vcluster_excluded_and_tracked() {
    let mut inv = Inventory::new(None);
    ready(&mut inv);
    inv.service_applied(Feed::Labelled, tracked("team-a", "vc1", U1));
    inv.catalog();
    assert_eq!(
        inv.service_deleted(Feed::Labelled, "team-a", "vc1").len(),
        1
    );
    let mut relabelled = tracked("team-a", "vc1", U1);
    relabelled.vcluster_label = false;
    inv.confirmed(U1, Confirmation::Found(Box::new(relabelled.clone())));
    assert_eq!(kind(&inv.catalog(), U1), Some(Kind::Excluded));
    // The tracked-label watch picks it up; the pending entry is resolved.
    assert!(inv.service_applied(Feed::Tracked, relabelled).is_empty());
    assert!(!inv.is_pending(U1));
    assert_eq!(kind(&inv.catalog(), U1), Some(Kind::Excluded));
    // Its later deletion is seen through that watch and confirmed the same way.
    assert_eq!(inv.service_deleted(Feed::Tracked, "team-a", "vc1").len(), 1);
    inv.confirmed(U1, Confirmation::NotFound);
    assert!(inv.catalog().vclusters.is_empty());
}

#[test]
fn the_label_put_back_moves_between_feeds_without_a_get() {
    let mut inv = Inventory::new(None);
    ready(&mut inv);
    let mut t = tracked("team-a", "vc1", U1);
    t.vcluster_label = false;
    inv.service_applied(Feed::Tracked, t);
    inv.catalog();
    // Labelled watch delivers first, then the tracked one drops it.
    inv.service_applied(Feed::Labelled, tracked("team-a", "vc1", U1));
    assert!(
        inv.service_deleted(Feed::Tracked, "team-a", "vc1")
            .is_empty()
    );
    assert_eq!(kind(&inv.catalog(), U1), None);
}

#[test]
fn a_new_uid_under_the_same_name_is_proof_of_deletion() {
    let mut inv = Inventory::new(None);
    ready(&mut inv);
    inv.service_applied(Feed::Labelled, tracked("team-a", "vc1", U1));
    inv.catalog();
    inv.service_deleted(Feed::Labelled, "team-a", "vc1");
    inv.confirmed(
        U1,
        Confirmation::Found(Box::new(tracked("team-a", "vc1", U2))),
    );
    assert!(inv.catalog().vclusters.is_empty());
    // Replaced in place (delete event missed): the old UID vanishes too.
    inv.service_applied(Feed::Labelled, tracked("team-a", "vc1", U1));
    inv.catalog();
    let v = inv.service_applied(Feed::Labelled, tracked("team-a", "vc1", U2));
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].uid, U1);
    let c = inv.catalog();
    assert_eq!(c.vclusters.len(), 2, "U1 still reported until confirmed");
    inv.confirmed(U1, Confirmation::NotFound);
    assert_eq!(inv.catalog().vclusters.keys().collect::<Vec<_>>(), vec![U2]);
}

#[test]
fn relist_drops_need_confirmation_too() {
    let mut inv = Inventory::new(None);
    ready(&mut inv);
    inv.service_applied(Feed::Labelled, tracked("team-a", "vc1", U1));
    inv.catalog();
    inv.services_init(Feed::Labelled);
    inv.services_init_apply(Feed::Labelled, tracked("team-b", "vc2", U2));
    let v = inv.services_init_done(Feed::Labelled);
    assert_eq!(
        v.iter().map(|v| v.uid.as_str()).collect::<Vec<_>>(),
        vec![U1]
    );
    assert_eq!(inv.catalog().vclusters.len(), 2);
    inv.confirmed(U1, Confirmation::NotFound);
    assert_eq!(inv.catalog().vclusters.keys().collect::<Vec<_>>(), vec![U2]);
}

#[test]
fn services_never_reported_vanish_without_a_get() {
    let mut inv = Inventory::new(None);
    ready(&mut inv);
    let mut headless = tracked("team-a", "vc1-headless", U2);
    headless.headless = true;
    inv.service_applied(Feed::Labelled, headless);
    inv.catalog();
    assert!(
        inv.service_deleted(Feed::Labelled, "team-a", "vc1-headless")
            .is_empty()
    );
}

#[test]
fn invalid_vclusters_are_reported_invalid_with_a_reason() {
    let mut inv = Inventory::new(None);
    ready(&mut inv);
    let mut t = tracked("team-a", "vc1", U1);
    t.requested_name = Some(crate::watch::model::Requested {
        annotation: "vclink.io/cluster-name",
        value: "Not_A_Label".into(),
    });
    inv.service_applied(Feed::Labelled, t);
    let c = inv.catalog();
    assert_eq!(kind(&c, U1), Some(Kind::Invalid));
    let reason = &c.exclusion(U1).expect("x").reason;
    assert!(reason.contains("requested_name"), "{reason}");
}

#[test]
fn leaving_the_namespace_selector_excludes_what_was_reported() {
    let team = BTreeMap::from([("team".to_string(), "a".to_string())]);
    let mut inv = Inventory::new(selector("team=a"));
    ready(&mut inv);
    let mut fresh = tracked("team-a", "vc1", U1);
    fresh.marked = false;
    inv.service_applied(Feed::Labelled, fresh);
    let mut other = tracked("team-b", "vc2", U2);
    other.marked = false;
    inv.service_applied(Feed::Labelled, other);
    assert!(
        inv.catalog().vclusters.is_empty(),
        "namespaces not seen yet"
    );
    inv.namespace_applied("team-a".into(), None, &team);
    inv.namespace_applied("team-b".into(), None, &BTreeMap::new());
    let c = inv.catalog();
    assert_eq!(c.vclusters.keys().collect::<Vec<_>>(), vec![U1]);
    assert!(c.unmarked.contains(U1), "the recorder marks it");
    inv.namespace_applied("team-a".into(), None, &BTreeMap::new());
    let c = inv.catalog();
    assert_eq!(
        kind(&c, U1),
        Some(Kind::Excluded),
        "reported before: excluded"
    );
    assert!(
        !c.vclusters.contains_key(U2),
        "never selected: never reported"
    );
}

fn quota(ns: &str, name: &str, cpu: &str) -> QuotaFacts {
    QuotaFacts {
        namespace: ns.into(),
        name: name.into(),
        quota: Some(Quota {
            name: name.into(),
            hard: [("limits.cpu".to_string(), cpu.to_string())].into(),
        }),
        refused: None,
    }
}

#[test]
fn quotas_are_reported_by_layout_and_only_changes_count() {
    let mut inv = Inventory::new(None);
    ready(&mut inv);
    let mut new = tracked("team-a", "vc1", U1);
    new.flavour = Flavour::V020;
    let mut old = tracked("team-a", "vc2", U2);
    old.flavour = Flavour::V019;
    inv.service_applied(Feed::Labelled, new);
    inv.service_applied(Feed::Labelled, old);
    assert!(inv.quota_applied(quota("team-a", "vc-vc1", "4")));
    assert!(inv.quota_applied(quota("team-a", "vc2-quota", "2")));
    assert!(
        inv.quota_applied(quota("team-a", "vc-vc2", "9")),
        "another layout's name"
    );
    assert!(
        !inv.quota_applied(quota("team-a", "vc-vc1", "4")),
        "unchanged: no new catalog"
    );
    let c = inv.catalog();
    let hard = |uid: &str| {
        c.vclusters[uid]
            .quota
            .as_ref()
            .map(|q| q.hard["limits.cpu"].clone())
    };
    assert_eq!(hard(U1).as_deref(), Some("4"));
    assert_eq!(
        hard(U2).as_deref(),
        Some("2"),
        "a v0.19 vCluster reads <name>-quota"
    );
    assert!(inv.quota_applied(quota("team-a", "vc-vc1", "8")));
    assert!(inv.quota_deleted("team-a", "vc2-quota"));
    assert!(!inv.quota_deleted("team-a", "vc2-quota"));
    let c = inv.catalog();
    assert_eq!(
        c.vclusters[U1]
            .quota
            .as_ref()
            .map(|q| q.hard["limits.cpu"].as_str()),
        Some("8")
    );
    assert_eq!(c.vclusters[U2].quota, None);
}

#[test]
fn the_catalog_waits_for_the_quota_list_or_its_failure() {
    let mut inv = Inventory::new(None);
    for f in [Feed::Labelled, Feed::Tracked] {
        inv.services_init(f);
        inv.services_init_done(f);
    }
    inv.namespaces_init();
    inv.namespaces_init_done();
    assert!(!inv.catalog().ready);
    assert!(inv.quotas_failed(), "the first failure makes it ready");
    assert!(!inv.quotas_failed(), "later ones change nothing");
    assert!(inv.catalog().ready);
}
