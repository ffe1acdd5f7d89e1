//! Owner sync's in-memory view of Projects, PRTBs and CRTBs, reduced to the structs of
//! [`super::model`] and keyed for the lookups a decision needs: a project by id, the
//! PRTBs of a namespace, the foreign CRTBs of a host cluster, the owned CRTBs of a
//! vCluster cluster. Every update says which vClusters it may affect ([`Touch`]), so the
//! watch can enqueue exactly those. Pure, no I/O.

use std::collections::HashMap;

use super::model::{Binding, Crtb, OwnedCrtb, ProjectInfo};

/// Which vClusters an update may affect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Touch {
    /// Those in project `<cluster>:<id>` of their host.
    Project(String, String),
    /// Those running in host cluster `<id>`.
    Host(String),
    /// The one whose cluster is management id `<id>`.
    Mgmt(String),
    /// All (after a relist).
    All,
}

type ByNs<T> = HashMap<String, HashMap<String, T>>;

/// See the module docs.
#[derive(Debug, Default)]
pub struct OwnerStore {
    projects: HashMap<(String, String), ProjectInfo>,
    prtbs: ByNs<Binding>,
    foreign: ByNs<Binding>,
    owned: ByNs<OwnedCrtb>,
}

fn put<T>(m: &mut ByNs<T>, ns: &str, name: &str, v: T) -> Option<T> {
    m.entry(ns.to_string())
        .or_default()
        .insert(name.to_string(), v)
}

fn take<T>(m: &mut ByNs<T>, ns: &str, name: &str) -> Option<T> {
    let inner = m.get_mut(ns)?;
    let v = inner.remove(name);
    if inner.is_empty() {
        m.remove(ns);
    }
    v
}

fn prtb_touch(b: &Binding) -> Option<Touch> {
    let (c, p) = b.scope.split_once(':')?;
    Some(Touch::Project(c.to_string(), p.to_string()))
}

impl OwnerStore {
    // === projects ===

    /// Adds or updates a project.
    pub fn apply_project(&mut self, p: ProjectInfo) -> Vec<Touch> {
        let t = Touch::Project(p.cluster.clone(), p.id.clone());
        self.projects.insert((p.cluster.clone(), p.id.clone()), p);
        vec![t]
    }

    /// Removes a project.
    pub fn delete_project(&mut self, p: &ProjectInfo) -> Vec<Touch> {
        self.projects.remove(&(p.cluster.clone(), p.id.clone()));
        vec![Touch::Project(p.cluster.clone(), p.id.clone())]
    }

    /// Replaces all projects after a (re)list.
    pub fn replace_projects(&mut self, all: Vec<ProjectInfo>) -> Vec<Touch> {
        self.projects = all
            .into_iter()
            .map(|p| ((p.cluster.clone(), p.id.clone()), p))
            .collect();
        vec![Touch::All]
    }

    /// A project by cluster and id.
    pub fn project(&self, cluster: &str, id: &str) -> Option<&ProjectInfo> {
        self.projects.get(&(cluster.to_string(), id.to_string()))
    }

    // === PRTBs ===

    /// Adds or updates a PRTB.
    pub fn apply_prtb(&mut self, b: Binding) -> Vec<Touch> {
        let mut out: Vec<Touch> = prtb_touch(&b).into_iter().collect();
        let (ns, name) = (b.namespace.clone(), b.name.clone());
        if let Some(old) = put(&mut self.prtbs, &ns, &name, b) {
            out.extend(prtb_touch(&old));
        }
        out.dedup();
        out
    }

    /// Removes a PRTB.
    pub fn delete_prtb(&mut self, b: &Binding) -> Vec<Touch> {
        let old = take(&mut self.prtbs, &b.namespace, &b.name);
        prtb_touch(b)
            .into_iter()
            .chain(old.as_ref().and_then(prtb_touch))
            .collect()
    }

    /// Replaces all PRTBs after a (re)list.
    pub fn replace_prtbs(&mut self, all: Vec<Binding>) -> Vec<Touch> {
        self.prtbs.clear();
        for b in all {
            let (ns, name) = (b.namespace.clone(), b.name.clone());
            put(&mut self.prtbs, &ns, &name, b);
        }
        vec![Touch::All]
    }

    /// The PRTBs of a namespace.
    pub fn prtbs_in(&self, ns: &str) -> impl Iterator<Item = &Binding> {
        self.prtbs.get(ns).into_iter().flat_map(HashMap::values)
    }

    // === CRTBs ===

    /// Adds or updates a CRTB.
    pub fn apply_crtb(&mut self, c: Crtb) -> Vec<Touch> {
        let (ns, name) = (c.id().0.to_string(), c.id().1.to_string());
        // A CRTB never changes sides, but a relabelled one might: forget both.
        take(&mut self.owned, &ns, &name);
        take(&mut self.foreign, &ns, &name);
        match c {
            Crtb::Owned { crtb, .. } => {
                put(&mut self.owned, &ns, &name, crtb);
                vec![Touch::Mgmt(ns)]
            }
            Crtb::Foreign(b) => {
                put(&mut self.foreign, &ns, &name, b);
                vec![Touch::Host(ns.clone()), Touch::Mgmt(ns)]
            }
        }
    }

    /// Removes a CRTB.
    pub fn delete_crtb(&mut self, c: &Crtb) -> Vec<Touch> {
        let (ns, name) = c.id();
        let was_foreign = take(&mut self.foreign, ns, name).is_some();
        take(&mut self.owned, ns, name);
        let mut out = vec![Touch::Mgmt(ns.to_string())];
        if was_foreign || matches!(c, Crtb::Foreign(_)) {
            out.push(Touch::Host(ns.to_string()));
        }
        out
    }

    /// Replaces all CRTBs after a (re)list.
    pub fn replace_crtbs(&mut self, all: Vec<Crtb>) -> Vec<Touch> {
        self.owned.clear();
        self.foreign.clear();
        for c in all {
            self.apply_crtb(c);
        }
        vec![Touch::All]
    }

    /// CRTBs of `ns` that owner sync did not create.
    pub fn foreign_in(&self, ns: &str) -> impl Iterator<Item = &Binding> {
        self.foreign.get(ns).into_iter().flat_map(HashMap::values)
    }

    /// Owner sync's CRTBs in `ns`.
    pub fn owned_in(&self, ns: &str) -> impl Iterator<Item = &OwnedCrtb> {
        self.owned.get(ns).into_iter().flat_map(HashMap::values)
    }

    /// Records a CRTB owner sync just created or found (before its watch event).
    pub fn remember_owned(&mut self, ns: &str, c: OwnedCrtb) {
        let name = c.name.clone();
        take(&mut self.foreign, ns, &name);
        put(&mut self.owned, ns, &name, c);
    }

    /// Forgets a CRTB owner sync just deleted.
    pub fn forget_owned(&mut self, ns: &str, name: &str) {
        take(&mut self.owned, ns, name);
    }

    /// Number of owned CRTBs (for logs).
    pub fn owned_count(&self) -> usize {
        self.owned.values().map(HashMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::owners::model::Subject;

    fn b(ns: &str, name: &str, scope: &str) -> Binding {
        Binding {
            namespace: ns.into(),
            name: name.into(),
            role: "project-owner".into(),
            scope: scope.into(),
            subject: Some(Subject::User {
                name: "u-1".into(),
                principal: String::new(),
            }),
            deleting: false,
            ..Binding::default()
        }
    }

    #[test]
    fn prtb_updates_touch_their_project() {
        let mut s = OwnerStore::default();
        assert_eq!(
            s.apply_prtb(b("c-m-1-p-a", "x", "c-m-1:p-a")),
            [Touch::Project("c-m-1".into(), "p-a".into())]
        );
        assert_eq!(s.prtbs_in("c-m-1-p-a").count(), 1);
        assert_eq!(s.delete_prtb(&b("c-m-1-p-a", "x", "c-m-1:p-a")).len(), 2);
        assert_eq!(s.prtbs_in("c-m-1-p-a").count(), 0);
    }

    #[test]
    fn crtbs_are_kept_by_side() {
        let mut s = OwnerStore::default();
        let f = Crtb::Foreign(b("c-m-h", "users", "c-m-h"));
        assert_eq!(
            s.apply_crtb(f.clone()),
            [Touch::Host("c-m-h".into()), Touch::Mgmt("c-m-h".into())]
        );
        let o = OwnedCrtb {
            name: "vco-x".into(),
            uid: "u".into(),
            role: "cluster-owner".into(),
            subject: None,
            key: None,
            deleting: false,
        };
        s.apply_crtb(Crtb::Owned {
            namespace: "c-m-v".into(),
            crtb: o.clone(),
        });
        assert_eq!(s.foreign_in("c-m-h").count(), 1);
        assert_eq!(s.owned_in("c-m-v").count(), 1);
        s.forget_owned("c-m-v", "vco-x");
        assert_eq!(s.owned_count(), 0);
        s.remember_owned("c-m-v", o);
        assert_eq!(s.owned_count(), 1);
        assert_eq!(s.replace_crtbs(vec![f]), [Touch::All]);
        assert_eq!(s.owned_count(), 0);
    }
}
