//! The agent's in-memory view of vCluster Services and namespaces, fed by the three
//! watches, and the [`Catalog`] derived from it: every vCluster to report (imported or
//! excluded, see [`super::exclusion`]), per-UID Service facts the Job and recording code
//! need, and the reported Services still missing the agent's mark. Pure: the watcher
//! plumbing (and the one GET that confirms a vanished Service) lives in `watch::run`.
//!
//! Two Service feeds: [`Feed::Labelled`] (`app=vcluster`) and [`Feed::Tracked`] (Services
//! carrying the agent's mark but no longer `app=vcluster`). A Service that leaves a feed
//! while the other does not hold it is *vanished*: it stays reported exactly as last seen
//! until one GET by name says what happened (see [`Inventory::confirmed`]). Nothing a
//! watch reports as a delete becomes a `Remove` without that proof.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use vclink_proto::v1::{Exclusion, VCluster};

use super::exclusion::{NamespaceView, describe};
use super::model::TrackedService;
use super::selector::LabelSelector;

/// Most Services reported that lost `app=vcluster` (the rest are left out, oldest
/// names first kept, so a tenant marking thousands of Services cannot grow the report).
pub const MAX_TRACKED_UNLABELLED: usize = 1000;

/// Facts about a reported vCluster's Service that other parts of the agent need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFacts {
    /// Namespace of the Service.
    pub namespace: String,
    /// Name of the Service.
    pub name: String,
    /// `https` port of the Service.
    pub https_port: i32,
    /// Current `vclink.io/` annotations (what the agent recorded last).
    pub annotations: BTreeMap<String, String>,
}

/// What the agent currently reports, derived from the inventory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    /// All watches listed everything once: a snapshot may be sent.
    pub ready: bool,
    /// Reported vClusters by Service UID, excluded ones included (with `exclusion` set).
    pub vclusters: BTreeMap<String, VCluster>,
    /// Service facts by UID (reported vClusters only).
    pub services: HashMap<String, ServiceFacts>,
    /// Reported Services that do not carry the agent's mark yet (the recorder adds it).
    pub unmarked: BTreeSet<String>,
}

impl Catalog {
    /// Why the vCluster `uid` is excluded; `None` when it is to be imported or unknown.
    pub fn exclusion(&self, uid: &str) -> Option<&Exclusion> {
        self.vclusters.get(uid)?.exclusion.as_ref()
    }
}

/// Which Service watch an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// Services labelled `app=vcluster`.
    Labelled,
    /// Services with the agent's mark and without `app=vcluster`.
    Tracked,
}

/// A Service that left the watches: confirm with one GET by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vanished {
    /// UID it had.
    pub uid: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// What the confirming GET found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmation {
    /// 404: the Service is gone.
    NotFound,
    /// A Service of that name exists (possibly another object with another UID).
    Found(TrackedService),
}

type Key = (String, String);

#[derive(Debug, Default)]
struct Services {
    items: HashMap<Key, TrackedService>,
    buffer: Option<HashMap<Key, TrackedService>>,
    ready: bool,
}

#[derive(Debug, Clone)]
struct NamespaceInfo {
    project: Option<String>,
    selected: bool,
}

/// Watcher-fed state. Keys are `namespace/name` so deletes without a UID still match.
#[derive(Debug, Default)]
pub struct Inventory {
    labelled: Services,
    tracked: Services,
    /// Vanished Services by UID, reported as last known until confirmed.
    pending: HashMap<String, TrackedService>,
    namespaces: HashMap<String, NamespaceInfo>,
    namespaces_buffer: Option<HashMap<String, NamespaceInfo>>,
    namespaces_ready: bool,
    selector: Option<LabelSelector>,
    /// UIDs this process reported (so a namespace leaving the selector before the mark
    /// was written still excludes rather than drops).
    reported: HashSet<String>,
}

impl Inventory {
    /// An empty inventory; with a selector, namespaces that do not match it exclude their
    /// vClusters.
    pub fn new(selector: Option<LabelSelector>) -> Self {
        Self {
            selector: selector.filter(|s| !s.text().is_empty()),
            ..Default::default()
        }
    }

    fn feed(&mut self, f: Feed) -> &mut Services {
        match f {
            Feed::Labelled => &mut self.labelled,
            Feed::Tracked => &mut self.tracked,
        }
    }

    fn holds(&self, uid: &str) -> bool {
        let has = |s: &Services| s.items.values().any(|t| t.uid == uid);
        has(&self.labelled) || has(&self.tracked)
    }

    /// `gone` left a feed: vanished unless the other feed holds it or it was never reported.
    fn vanish(&mut self, gone: TrackedService, out: &mut Vec<Vanished>) {
        if gone.is_skipped() || !self.reported.contains(&gone.uid) || self.holds(&gone.uid) {
            return;
        }
        out.push(Vanished {
            uid: gone.uid.clone(),
            namespace: gone.namespace.clone(),
            name: gone.name.clone(),
        });
        self.pending.insert(gone.uid.clone(), gone);
    }

    /// A relist of one feed starts: collect into a fresh buffer.
    pub fn services_init(&mut self, f: Feed) {
        self.feed(f).buffer = Some(HashMap::new());
    }

    /// A Service seen during a relist.
    pub fn services_init_apply(&mut self, f: Feed, svc: TrackedService) {
        let key = (svc.namespace.clone(), svc.name.clone());
        self.feed(f)
            .buffer
            .get_or_insert_with(HashMap::new)
            .insert(key, svc);
    }

    /// The relist is complete: it replaces the feed; what it no longer holds vanished.
    pub fn services_init_done(&mut self, f: Feed) -> Vec<Vanished> {
        let feed = self.feed(f);
        let fresh = feed.buffer.take().unwrap_or_default();
        let old = std::mem::replace(&mut feed.items, fresh);
        feed.ready = true;
        let new_uids: HashSet<String> =
            self.feed(f).items.values().map(|t| t.uid.clone()).collect();
        self.pending.retain(|uid, _| !new_uids.contains(uid));
        let mut out = Vec::new();
        for t in old.into_values().filter(|t| !new_uids.contains(&t.uid)) {
            self.vanish(t, &mut out);
        }
        out
    }

    /// A Service was added or changed in a feed.
    pub fn service_applied(&mut self, f: Feed, svc: TrackedService) -> Vec<Vanished> {
        self.pending.remove(&svc.uid);
        let key = (svc.namespace.clone(), svc.name.clone());
        let mut out = Vec::new();
        if let Some(old) = self.feed(f).items.insert(key, svc)
            && !self.holds(&old.uid)
        {
            // Same name, new object: the old one is gone (confirm all the same).
            self.vanish(old, &mut out);
        }
        out
    }

    /// A Service left a feed (deleted, or no longer matching its selector).
    pub fn service_deleted(&mut self, f: Feed, namespace: &str, name: &str) -> Vec<Vanished> {
        let mut out = Vec::new();
        if let Some(old) = self
            .feed(f)
            .items
            .remove(&(namespace.to_string(), name.to_string()))
        {
            self.vanish(old, &mut out);
        }
        out
    }

    /// The result of the GET for a vanished Service. Only a 404 or another UID under
    /// that name is proof of deletion; the same UID keeps it reported (as the GET showed
    /// it) until a watch holds it again.
    pub fn confirmed(&mut self, uid: &str, found: Confirmation) {
        if !self.pending.contains_key(uid) {
            return;
        }
        match found {
            Confirmation::Found(t) if t.uid == uid => {
                self.pending.insert(uid.to_string(), t);
            }
            Confirmation::Found(_) | Confirmation::NotFound => {
                self.pending.remove(uid);
                self.reported.remove(uid);
            }
        }
    }

    /// Whether `uid` still waits for its confirming GET.
    pub fn is_pending(&self, uid: &str) -> bool {
        self.pending.contains_key(uid)
    }

    fn namespace_info(
        &self,
        labels: &BTreeMap<String, String>,
        project: Option<String>,
    ) -> NamespaceInfo {
        NamespaceInfo {
            project,
            selected: self.selector.as_ref().is_none_or(|s| s.matches(labels)),
        }
    }

    /// A relist of namespaces starts.
    pub fn namespaces_init(&mut self) {
        self.namespaces_buffer = Some(HashMap::new());
    }

    /// A namespace seen during a relist.
    pub fn namespaces_init_apply(
        &mut self,
        name: String,
        project: Option<String>,
        labels: &BTreeMap<String, String>,
    ) {
        let info = self.namespace_info(labels, project);
        self.namespaces_buffer
            .get_or_insert_with(HashMap::new)
            .insert(name, info);
    }

    /// The namespace relist is complete.
    pub fn namespaces_init_done(&mut self) {
        self.namespaces = self.namespaces_buffer.take().unwrap_or_default();
        self.namespaces_ready = true;
    }

    /// A namespace was added or changed.
    pub fn namespace_applied(
        &mut self,
        name: String,
        project: Option<String>,
        labels: &BTreeMap<String, String>,
    ) {
        let info = self.namespace_info(labels, project);
        self.namespaces.insert(name, info);
    }

    /// A namespace was deleted.
    pub fn namespace_deleted(&mut self, name: &str) {
        self.namespaces.remove(name);
    }

    /// Derives what to report now.
    pub fn catalog(&mut self) -> Catalog {
        let mut out = Catalog {
            ready: self.labelled.ready && self.tracked.ready && self.namespaces_ready,
            ..Default::default()
        };
        let mut tracked: Vec<&TrackedService> = self.tracked.items.values().collect();
        tracked.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let labelled_uids: HashSet<&str> = self
            .labelled
            .items
            .values()
            .map(|t| t.uid.as_str())
            .collect();
        let tracked = tracked
            .into_iter()
            .filter(|t| !labelled_uids.contains(t.uid.as_str()))
            .take(MAX_TRACKED_UNLABELLED);
        let candidates: Vec<&TrackedService> = self
            .labelled
            .items
            .values()
            .chain(tracked)
            .chain(self.pending.values())
            .collect();
        let selector = self.selector.as_ref().map(LabelSelector::text);
        for svc in candidates {
            if out.vclusters.contains_key(&svc.uid) {
                continue;
            }
            let ns = self.namespaces.get(&svc.namespace);
            let view = NamespaceView {
                // A namespace not (yet) seen: selected only when there is no selector.
                selected: ns.map_or(self.selector.is_none(), |n| n.selected),
                project: ns.and_then(|n| n.project.as_deref()),
            };
            let Some(v) = describe(svc, view, selector, self.reported.contains(&svc.uid)) else {
                continue;
            };
            out.services.insert(
                svc.uid.clone(),
                ServiceFacts {
                    namespace: svc.namespace.clone(),
                    name: svc.name.clone(),
                    https_port: svc.https_port,
                    annotations: svc.annotations.clone(),
                },
            );
            if !svc.marked {
                out.unmarked.insert(svc.uid.clone());
            }
            out.vclusters.insert(svc.uid.clone(), v);
        }
        let pending = &self.pending;
        self.reported
            .retain(|uid| out.vclusters.contains_key(uid) || pending.contains_key(uid));
        self.reported.extend(out.vclusters.keys().cloned());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vclink_proto::v1::Flavour;
    use vclink_proto::v1::exclusion::Kind;

    fn tracked(ns: &str, name: &str, uid: &str) -> TrackedService {
        TrackedService {
            uid: uid.into(),
            namespace: ns.into(),
            name: name.into(),
            headless: false,
            skip_import: false,
            vcluster_label: true,
            marked: true,
            flavour: Flavour::Unspecified,
            https_port: 443,
            annotations: BTreeMap::new(),
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
        inv.confirmed(U1, Confirmation::Found(relabelled.clone()));
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
        inv.confirmed(U1, Confirmation::Found(tracked("team-a", "vc1", U2)));
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
        t.annotations
            .insert("vclink.io/cluster-name".into(), "Not_A_Label".into());
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
}
