//! The agent's in-memory view of vCluster Services and namespace projects, fed by the two
//! watchers, and the [`Catalog`] derived from it: the validated vClusters to report, the
//! ones refused by validation (they get a Warning Event), and per-UID Service facts the
//! Job and recording code need. Pure: the watcher plumbing lives in `watch::run`.

use std::collections::{BTreeMap, HashMap};

use vclink_proto::v1::VCluster;

use super::model::TrackedService;

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

/// A Service that is a vCluster for Kubernetes but cannot be reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Namespace of the Service.
    pub namespace: String,
    /// Name of the Service.
    pub name: String,
    /// Why, in words a user can act on.
    pub reason: String,
}

/// What the agent currently reports, derived from the inventory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    /// Both initial lists are complete: a snapshot may be sent.
    pub ready: bool,
    /// Reported vClusters by Service UID.
    pub vclusters: BTreeMap<String, VCluster>,
    /// Service facts by UID (reported vClusters only).
    pub services: HashMap<String, ServiceFacts>,
    /// Refused vClusters by UID.
    pub refused: BTreeMap<String, Refused>,
}

/// Watcher-fed state. Keys are `namespace/name` so deletes without a UID still match.
#[derive(Debug, Default)]
pub struct Inventory {
    services: HashMap<(String, String), TrackedService>,
    services_buffer: Option<HashMap<(String, String), TrackedService>>,
    services_ready: bool,
    /// Namespace name → `field.cattle.io/projectId` annotation (None when absent).
    namespaces: HashMap<String, Option<String>>,
    namespaces_buffer: Option<HashMap<String, Option<String>>>,
    namespaces_ready: bool,
    /// Only Services in known namespaces count (a namespace selector is in effect).
    require_namespace: bool,
}

impl Inventory {
    /// An empty inventory; with `require_namespace`, Services count only when their
    /// namespace was seen by the (selector-filtered) namespace watcher.
    pub fn new(require_namespace: bool) -> Self {
        Self {
            require_namespace,
            ..Default::default()
        }
    }

    /// A relist of Services starts: collect into a fresh buffer.
    pub fn services_init(&mut self) {
        self.services_buffer = Some(HashMap::new());
    }

    /// A Service seen during a relist.
    pub fn services_init_apply(&mut self, svc: TrackedService) {
        let key = (svc.namespace.clone(), svc.name.clone());
        self.services_buffer
            .get_or_insert_with(HashMap::new)
            .insert(key, svc);
    }

    /// The relist is complete: it replaces the previous state.
    pub fn services_init_done(&mut self) {
        self.services = self.services_buffer.take().unwrap_or_default();
        self.services_ready = true;
    }

    /// A Service was added or changed.
    pub fn service_applied(&mut self, svc: TrackedService) {
        self.services
            .insert((svc.namespace.clone(), svc.name.clone()), svc);
    }

    /// A Service was deleted (or left the label selector).
    pub fn service_deleted(&mut self, namespace: &str, name: &str) {
        self.services
            .remove(&(namespace.to_string(), name.to_string()));
    }

    /// A relist of namespaces starts.
    pub fn namespaces_init(&mut self) {
        self.namespaces_buffer = Some(HashMap::new());
    }

    /// A namespace seen during a relist.
    pub fn namespaces_init_apply(&mut self, name: String, project: Option<String>) {
        self.namespaces_buffer
            .get_or_insert_with(HashMap::new)
            .insert(name, project);
    }

    /// The namespace relist is complete.
    pub fn namespaces_init_done(&mut self) {
        self.namespaces = self.namespaces_buffer.take().unwrap_or_default();
        self.namespaces_ready = true;
    }

    /// A namespace was added or changed.
    pub fn namespace_applied(&mut self, name: String, project: Option<String>) {
        self.namespaces.insert(name, project);
    }

    /// A namespace was deleted.
    pub fn namespace_deleted(&mut self, name: &str) {
        self.namespaces.remove(name);
    }

    /// Derives what to report now.
    pub fn catalog(&self) -> Catalog {
        let mut out = Catalog {
            ready: self.services_ready && self.namespaces_ready,
            ..Default::default()
        };
        for svc in self.services.values() {
            if svc.is_skipped() {
                continue;
            }
            let ns = self.namespaces.get(&svc.namespace);
            if self.require_namespace && ns.is_none() {
                continue;
            }
            let project = ns.and_then(|p| p.as_deref());
            let v = svc.to_vcluster(project);
            match vclink_proto::validate::vcluster("vcluster", &v) {
                Ok(()) => {
                    out.services.insert(
                        svc.uid.clone(),
                        ServiceFacts {
                            namespace: svc.namespace.clone(),
                            name: svc.name.clone(),
                            https_port: svc.https_port,
                            annotations: svc.annotations.clone(),
                        },
                    );
                    out.vclusters.insert(svc.uid.clone(), v);
                }
                Err(e) => {
                    let reason = format!(
                        "vclink cannot import this vCluster into Rancher: {e}. Fix the value (for a requested name, \
                         change the annotation vclink.io/cluster-name) or opt out with the annotation \
                         vclink.io/skip-import: \"true\"."
                    );
                    out.refused.insert(
                        svc.uid.clone(),
                        Refused {
                            namespace: svc.namespace.clone(),
                            name: svc.name.clone(),
                            reason,
                        },
                    );
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vclink_proto::v1::Flavour;

    fn tracked(ns: &str, name: &str, uid: &str) -> TrackedService {
        TrackedService {
            uid: uid.into(),
            namespace: ns.into(),
            name: name.into(),
            headless: false,
            skip_import: false,
            flavour: Flavour::Unspecified,
            https_port: 443,
            annotations: BTreeMap::new(),
        }
    }

    const U1: &str = "00000000-0000-0000-0000-000000000001";
    const U2: &str = "00000000-0000-0000-0000-000000000002";

    fn ready(inv: &mut Inventory) {
        inv.services_init();
        inv.services_init_done();
        inv.namespaces_init();
        inv.namespaces_init_done();
    }

    #[test]
    fn not_ready_until_both_initial_lists_are_done() {
        let mut inv = Inventory::new(false);
        inv.services_init();
        inv.services_init_apply(tracked("team-a", "vc1", U1));
        inv.services_init_done();
        assert!(!inv.catalog().ready);
        inv.namespaces_init();
        inv.namespaces_init_apply("team-a".into(), Some("c-m-abcd1234:p-xk2lm".into()));
        inv.namespaces_init_done();
        let c = inv.catalog();
        assert!(c.ready);
        assert_eq!(c.vclusters[U1].project_id, "c-m-abcd1234:p-xk2lm");
    }

    #[test]
    fn namespace_project_change_updates_the_vcluster() {
        let mut inv = Inventory::new(false);
        ready(&mut inv);
        inv.service_applied(tracked("team-a", "vc1", U1));
        assert_eq!(inv.catalog().vclusters[U1].project_id, "");
        inv.namespace_applied("team-a".into(), Some("c-m-abcd1234:p-xk2lm".into()));
        assert_eq!(
            inv.catalog().vclusters[U1].project_id,
            "c-m-abcd1234:p-xk2lm"
        );
    }

    #[test]
    fn skipped_or_deleted_services_disappear() {
        let mut inv = Inventory::new(false);
        ready(&mut inv);
        inv.service_applied(tracked("team-a", "vc1", U1));
        inv.service_applied(tracked("team-a", "vc2", U2));
        let mut skipped = tracked("team-a", "vc1", U1);
        skipped.skip_import = true;
        inv.service_applied(skipped);
        inv.service_deleted("team-a", "vc2");
        assert!(inv.catalog().vclusters.is_empty());
    }

    #[test]
    fn relist_replaces_previous_state() {
        let mut inv = Inventory::new(false);
        ready(&mut inv);
        inv.service_applied(tracked("team-a", "vc1", U1));
        inv.services_init();
        inv.services_init_apply(tracked("team-b", "vc2", U2));
        inv.services_init_done();
        let c = inv.catalog();
        assert_eq!(c.vclusters.keys().collect::<Vec<_>>(), vec![U2]);
    }

    #[test]
    fn invalid_vclusters_are_refused_with_a_reason() {
        let mut inv = Inventory::new(false);
        ready(&mut inv);
        let mut t = tracked("team-a", "vc1", U1);
        t.annotations
            .insert("vclink.io/cluster-name".into(), "Not_A_Label".into());
        inv.service_applied(t);
        let c = inv.catalog();
        assert!(c.vclusters.is_empty());
        assert!(
            c.refused[U1].reason.contains("requested_name"),
            "{}",
            c.refused[U1].reason
        );
    }

    #[test]
    fn namespace_selector_limits_services() {
        let mut inv = Inventory::new(true);
        ready(&mut inv);
        inv.service_applied(tracked("team-a", "vc1", U1));
        assert!(inv.catalog().vclusters.is_empty());
        inv.namespace_applied("team-a".into(), None);
        assert_eq!(inv.catalog().vclusters.len(), 1);
    }
}
