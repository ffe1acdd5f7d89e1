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
//!
//! ResourceQuotas come from one more watch, kept as [`QuotaFacts`] (name and `spec.hard`
//! only, of the names a vCluster's quota can have). A quota event changes the catalog
//! only when those facts changed, so the frequent `status.used` updates cost nothing; a
//! change re-reports just that vCluster (the link's diff sends one Upsert). Services
//! whose labels cannot be reported are logged once each (the only side effect here).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use tracing::warn;
use vclink_proto::v1::{Exclusion, Quota, VCluster};

use super::exclusion::{NamespaceView, describe};
use super::model::{QuotaFacts, TrackedService};
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
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    /// All watches listed everything once: a snapshot may be sent.
    pub ready: bool,
    /// Reported vClusters by Service UID, excluded ones included (with `exclusion` set).
    /// Shared: an entry that did not change is the same allocation in consecutive
    /// catalogs and in the link's record of what the hub was sent.
    pub vclusters: BTreeMap<String, Arc<VCluster>>,
    /// Service facts by UID (reported vClusters only), shared the same way.
    pub services: HashMap<String, Arc<ServiceFacts>>,
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
    Found(Box<TrackedService>),
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
    /// Candidate vCluster quotas by `namespace/name`.
    quotas: HashMap<Key, QuotaFacts>,
    quotas_buffer: Option<HashMap<Key, QuotaFacts>>,
    /// The quota watch listed once, or failed once (an agent without the permission
    /// still reports its vClusters, without quotas).
    quotas_ready: bool,
    /// UIDs whose refused labels were logged already.
    labels_warned: HashSet<String>,
    /// The last catalog's entries, reused by the next one where they did not change: a
    /// catalog is derived whole on every change, and without this every entry (labels,
    /// quota, annotations) would be allocated again and held twice while consumers keep
    /// the previous one.
    last: (
        BTreeMap<String, Arc<VCluster>>,
        HashMap<String, Arc<ServiceFacts>>,
    ),
}

/// `new`, or the previous allocation when it is equal.
fn reuse<T: PartialEq>(prev: Option<&Arc<T>>, new: T) -> Arc<T> {
    match prev {
        Some(p) if **p == new => p.clone(),
        _ => Arc::new(new),
    }
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
                self.pending.insert(uid.to_string(), *t);
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

    /// A relist of ResourceQuotas starts.
    pub fn quotas_init(&mut self) {
        self.quotas_buffer = Some(HashMap::new());
    }

    /// A quota seen during a relist.
    pub fn quotas_init_apply(&mut self, q: QuotaFacts) {
        self.quotas_buffer
            .get_or_insert_with(HashMap::new)
            .insert((q.namespace.clone(), q.name.clone()), q);
    }

    /// The quota relist is complete.
    pub fn quotas_init_done(&mut self) {
        self.quotas = self.quotas_buffer.take().unwrap_or_default();
        self.quotas_ready = true;
    }

    /// The quota watch failed: the catalog need not wait for its list any longer.
    pub fn quotas_failed(&mut self) -> bool {
        !std::mem::replace(&mut self.quotas_ready, true)
    }

    /// A quota was added or changed; returns whether what is kept of it changed.
    pub fn quota_applied(&mut self, q: QuotaFacts) -> bool {
        let key = (q.namespace.clone(), q.name.clone());
        if self.quotas.get(&key) == Some(&q) {
            return false;
        }
        self.quotas.insert(key, q);
        true
    }

    /// A quota was deleted; returns whether one was kept.
    pub fn quota_deleted(&mut self, namespace: &str, name: &str) -> bool {
        self.quotas
            .remove(&(namespace.to_string(), name.to_string()))
            .is_some()
    }

    /// The usable quota of `svc`'s vCluster, if any.
    fn quota_of(&self, svc: &TrackedService) -> Option<&Quota> {
        svc.quota_names().into_iter().find_map(|n| {
            self.quotas
                .get(&(svc.namespace.clone(), n))
                .and_then(|f| f.quota.as_ref())
        })
    }

    /// Derives what to report now.
    pub fn catalog(&mut self) -> Catalog {
        let mut out = Catalog {
            ready: self.labelled.ready
                && self.tracked.ready
                && self.namespaces_ready
                && self.quotas_ready,
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
            let quota = self.quota_of(svc);
            let Some(v) = describe(svc, view, quota, selector, self.reported.contains(&svc.uid))
            else {
                continue;
            };
            match &svc.labels_refused {
                Some(why) if self.labels_warned.insert(svc.uid.clone()) => {
                    warn!(namespace = %svc.namespace, name = %svc.name, reason = %why,
                        "the vCluster is reported without its labels");
                }
                Some(_) => {}
                None => {
                    self.labels_warned.remove(&svc.uid);
                }
            }
            let facts = ServiceFacts {
                namespace: svc.namespace.clone(),
                name: svc.name.clone(),
                https_port: svc.https_port,
                annotations: svc.annotations.clone(),
            };
            out.services
                .insert(svc.uid.clone(), reuse(self.last.1.get(&svc.uid), facts));
            if !svc.marked {
                out.unmarked.insert(svc.uid.clone());
            }
            out.vclusters
                .insert(svc.uid.clone(), reuse(self.last.0.get(&svc.uid), v));
        }
        self.last = (out.vclusters.clone(), out.services.clone());
        let pending = &self.pending;
        self.reported
            .retain(|uid| out.vclusters.contains_key(uid) || pending.contains_key(uid));
        self.labels_warned
            .retain(|uid| out.vclusters.contains_key(uid));
        self.reported.extend(out.vclusters.keys().cloned());
        out
    }
}

#[cfg(test)]
#[path = "inventory_tests.rs"]
mod tests;
