//! The hub's in-memory view of the Rancher objects it watches, reduced to small structs
//! ([`super::objects`], never full objects) and keyed for the lookups reconcile needs:
//! vCluster key → provisioning cluster, management id → vCluster key, management id →
//! registration token. Provisioning clusters are filed under `<namespace>/<name>`
//! ([`ProvCluster::at`]): they live in several Fleet workspaces, and a name is unique
//! only within one. Everything here is rebuilt from the watches after a restart (design principle
//! 1), and every update returns the vCluster keys it affects so the caller can enqueue
//! them. Pure: no I/O, unit-tested.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use vclink_proto::Secret;

use super::claims::Claims;
pub use super::keys::VcKey;
pub use super::objects::{
    Conn, Crt, MgmtCluster, ProvCluster, Settings, TOKEN_PLACEHOLDER, TOKEN_SECRET_NAME,
    TokenState, at, resolve_token,
};
use super::proof;

/// Who holds a candidate cluster name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameUse {
    /// No cluster of that name is known.
    Free,
    /// The cluster of that name belongs to this vCluster.
    Ours,
    /// Another vCluster (or an unlabelled object) holds the name.
    Other,
}

/// The index. See the module docs.
#[derive(Debug, Default)]
pub struct Index {
    /// `<namespace>/<name>` → cluster.
    prov: HashMap<String, ProvCluster>,
    /// vCluster → `<namespace>/<name>` of its proven cluster.
    by_key: HashMap<VcKey, String>,
    by_host: HashMap<String, HashSet<String>>,
    /// Service UID → hosts with a cluster of that UID (normally one): the O(1) scope
    /// check of every agent message.
    by_uid: HashMap<String, HashSet<String>>,
    /// (host, namespace, name) → `<namespace>/<name>` of the clusters labelled so
    /// (normally one).
    by_vc_name: HashMap<(String, String, String), HashSet<String>>,
    mgmt_key: HashMap<String, VcKey>,
    mgmt: HashMap<String, MgmtCluster>,
    crt: HashMap<String, Crt>,
    token_secrets: HashMap<String, Secret>,
    /// When each management id's token became resolvable (latency metric, stable fp).
    token_seen: HashMap<String, (Instant, Secret)>,
    /// Keys whose provisioning cluster someone else deleted.
    user_deleted: HashSet<VcKey>,
    /// Keys whose provisioning cluster the hub is deleting.
    deleting_by_us: HashSet<VcKey>,
    /// Rancher settings.
    pub settings: Settings,
    /// Which clusters claim which vCluster, proven or not.
    claims: Claims,
    /// Why owner bindings of a vCluster cannot be kept (owner sync), for its Status.
    owner_problems: HashMap<VcKey, String>,
    /// Provisioning clusters the vcluster-rancher-operator created and vclink has not
    /// adopted yet: vCluster key → (namespace, name). Usually empty; fed by its own
    /// narrow watch, so adopting needs no LIST per new vCluster.
    legacy: HashMap<VcKey, (String, String)>,
}

impl Index {
    // === clusters of the vcluster-rancher-operator ===

    /// Records (or, with `key: None`, forgets) an operator cluster `namespace/name`.
    pub fn apply_legacy(&mut self, namespace: &str, name: &str, key: Option<VcKey>) {
        self.legacy
            .retain(|_, (ns, n)| !(n.as_str() == name && ns.as_str() == namespace));
        if let Some(k) = key {
            self.legacy
                .insert(k, (namespace.to_string(), name.to_string()));
        }
    }

    /// Replaces all operator clusters (namespace, name, key) after a (re)list.
    pub fn replace_legacy(&mut self, all: Vec<(String, String, Option<VcKey>)>) {
        self.legacy = all
            .into_iter()
            .filter_map(|(ns, n, k)| Some((k?, (ns, n))))
            .collect();
    }

    /// The name of the not-yet-adopted operator cluster of `key`, if any.
    pub fn legacy_cluster(&self, key: &VcKey) -> Option<&str> {
        self.legacy.get(key).map(|(_, n)| n.as_str())
    }

    /// The namespace (Fleet workspace) of that cluster: it is adopted where it is.
    pub fn legacy_namespace(&self, key: &VcKey) -> Option<&str> {
        self.legacy.get(key).map(|(ns, _)| ns.as_str())
    }
}

impl Index {
    // === provisioning clusters ===

    /// Adds or updates a provisioning cluster; returns affected keys.
    pub fn apply_prov(&mut self, p: ProvCluster) -> Vec<VcKey> {
        let id = p.at();
        let mut out = self.unlink_prov(&id);
        let claimed = self.claims.forget(&id);
        // Only a cluster the hub can prove it made names a vCluster (core::proof).
        if let Some(k) = p.key.as_ref().filter(|_| p.trust.is_proven()) {
            self.claims.proven(&id, k);
            if p.deleting && !self.deleting_by_us.contains(k) {
                self.user_deleted.insert(k.clone());
            } else if !p.deleting {
                self.user_deleted.remove(k);
            }
            self.by_key.insert(k.clone(), id.clone());
            self.by_host
                .entry(k.host.clone())
                .or_default()
                .insert(k.uid.clone());
            self.by_uid
                .entry(k.uid.clone())
                .or_default()
                .insert(k.host.clone());
            if let Some((ns, n)) = &p.vcluster {
                self.by_vc_name
                    .entry((k.host.clone(), ns.clone(), n.clone()))
                    .or_default()
                    .insert(id.clone());
            }
            if let Some(m) = &p.mgmt_id {
                self.mgmt_key.insert(m.clone(), k.clone());
            }
            out.push(k.clone());
        } else if let (Some(k), proof::Trust::Unproven(why)) = (&p.key, p.trust) {
            if self.claims.unproven(&id, k, why) {
                tracing::warn!(cluster = %id, host = %k.host, uid = %k.uid, reason = why.as_str(),
                    "a provisioning cluster carries vclink labels but no valid vclink proof; it is ignored (never sent to an agent, deleted or relabelled)");
            }
            out.push(k.clone());
        }
        self.prov.insert(id, p);
        if let Some(k) = claimed {
            self.relink(&k);
        }
        out.sort();
        out.dedup();
        out
    }

    /// Applies a provisioning cluster returned by one of the hub's own writes, so the next
    /// decision sees it before the watch event arrives. The watch stays the authority: a
    /// response is not applied over the same object at an equal or newer version (nor
    /// when versions are not numbers), because a slow writer would otherwise undo what
    /// Rancher wrote meanwhile — e.g. `status.clusterName`, leaving the vCluster waiting
    /// for an event that already came. Returns affected keys either way.
    pub fn apply_prov_written(&mut self, p: ProvCluster) -> Vec<VcKey> {
        if let Some(cur) = self.prov.get(&p.at())
            && cur.uid == p.uid
            && (cur.version >= p.version || p.version == 0)
        {
            return p.key.into_iter().collect();
        }
        self.apply_prov(p)
    }

    /// Removes the provisioning cluster `<namespace>/<name>` (it is gone from the API);
    /// returns affected keys.
    pub fn delete_prov(&mut self, name: &str) -> Vec<VcKey> {
        // A forged cluster's deletion says nothing about the vCluster it claimed.
        let proven = self.prov.get(name).is_some_and(|p| p.trust.is_proven());
        let keys = self.unlink_prov(name);
        let claimed = self.claims.forget(name);
        for k in keys.iter().filter(|_| proven) {
            if !self.deleting_by_us.remove(k) {
                self.user_deleted.insert(k.clone());
            }
        }
        self.prov.remove(name);
        if let Some(k) = claimed {
            self.relink(&k);
        }
        keys
    }

    /// After a claim on `key` went away: when exactly one proven cluster of `key` is
    /// left and the maps lost it (they pointed at the one that went), links it again.
    fn relink(&mut self, key: &VcKey) {
        if self.by_key.contains_key(key) {
            return;
        }
        let survivor = self
            .claims
            .sole_proven(key)
            .and_then(|n| self.prov.get(n))
            .cloned();
        if let Some(p) = survivor {
            self.apply_prov(p);
        }
    }

    /// The proven clusters of `key` (`<namespace>/<name>`) when there are several: the
    /// hub acts on none.
    pub fn duplicate_clusters(&self, key: &VcKey) -> Option<Vec<String>> {
        self.claims
            .duplicates(key)
            .map(|n| n.iter().cloned().collect())
    }

    /// An unproven cluster claiming `key` (`<namespace>/<name>`), to warn the
    /// vCluster's owner.
    pub fn unproven_claim(&self, key: &VcKey) -> Option<&str> {
        self.claims.first_unproven(key)
    }

    /// How many unproven clusters carry vclink labels, for `why`.
    pub fn unproven_count(&self, why: proof::Unproven) -> i64 {
        self.claims.count(why)
    }

    /// Replaces all provisioning clusters after a (re)list: anything not listed is
    /// treated as deleted.
    pub fn replace_prov(&mut self, all: Vec<ProvCluster>) -> Vec<VcKey> {
        let listed: HashSet<String> = all.iter().map(ProvCluster::at).collect();
        let gone: Vec<String> = self
            .prov
            .keys()
            .filter(|n| !listed.contains(n.as_str()))
            .cloned()
            .collect();
        let mut out = Vec::new();
        for n in gone {
            out.extend(self.delete_prov(&n));
        }
        for p in all {
            out.extend(self.apply_prov(p));
        }
        out
    }

    fn unlink_prov(&mut self, name: &str) -> Vec<VcKey> {
        let Some(old) = self.prov.get(name) else {
            return Vec::new();
        };
        let Some(k) = old.key.clone() else {
            return Vec::new();
        };
        if self.by_key.get(&k).map(String::as_str) == Some(name) {
            self.by_key.remove(&k);
            if let Some(set) = self.by_host.get_mut(&k.host) {
                set.remove(&k.uid);
                if set.is_empty() {
                    self.by_host.remove(&k.host);
                }
            }
            if let Some(set) = self.by_uid.get_mut(&k.uid) {
                set.remove(&k.host);
                if set.is_empty() {
                    self.by_uid.remove(&k.uid);
                }
            }
        }
        if let Some((ns, n)) = &old.vcluster {
            let at = (k.host.clone(), ns.clone(), n.clone());
            if let Some(set) = self.by_vc_name.get_mut(&at) {
                set.remove(name);
                if set.is_empty() {
                    self.by_vc_name.remove(&at);
                }
            }
        }
        if let Some(m) = &old.mgmt_id
            && self.mgmt_key.get(m) == Some(&k)
        {
            self.mgmt_key.remove(m);
        }
        vec![k]
    }

    /// Every vCluster key that has a provisioning cluster.
    pub fn keys(&self) -> impl Iterator<Item = &VcKey> {
        self.by_key.keys()
    }

    /// Records (or clears) why the owner bindings of `key` cannot be kept; returns
    /// whether that changed.
    pub fn set_owner_problem(&mut self, key: &VcKey, problem: Option<String>) -> bool {
        match problem {
            Some(p) => self.owner_problems.insert(key.clone(), p.clone()) != Some(p),
            None => self.owner_problems.remove(key).is_some(),
        }
    }

    /// Why the owner bindings of `key` cannot be kept, if they cannot.
    pub fn owner_problem(&self, key: &VcKey) -> Option<&str> {
        self.owner_problems.get(key).map(String::as_str)
    }

    /// The provisioning cluster of a vCluster.
    pub fn prov_for(&self, key: &VcKey) -> Option<&ProvCluster> {
        if self.claims.duplicates(key).is_some() {
            return None; // two proven clusters: act on neither
        }
        self.by_key.get(key).and_then(|n| self.prov.get(n))
    }

    /// `key`'s cluster when it carries only the create-time proof (a crash came between
    /// the create and the UID-bound proof): the hub still owes it that proof.
    pub fn unsealed(&self, key: &VcKey) -> Option<&ProvCluster> {
        self.prov_for(key)
            .filter(|p| p.trust == proof::Trust::ProvenAtCreate && !p.deleting)
    }

    /// Service UIDs of the vClusters that have a provisioning cluster on `host`.
    pub fn uids_of_host(&self, host: &str) -> impl Iterator<Item = &String> {
        self.by_host.get(host).into_iter().flatten()
    }

    /// A host other than `host` that has a cluster for Service UID `uid`, if any. O(1):
    /// the set holds one host unless two hosts claim one UID.
    pub fn other_host_of_uid(&self, uid: &str, host: &str) -> Option<&str> {
        self.by_uid
            .get(uid)?
            .iter()
            .find(|h| h.as_str() != host)
            .map(String::as_str)
    }

    /// The clusters whose labels name this host, namespace and name (normally at most
    /// one; two while a reinstalled vCluster's old cluster is being deleted).
    pub fn provs_for_vcluster(
        &self,
        host: &str,
        namespace: &str,
        name: &str,
    ) -> impl Iterator<Item = &ProvCluster> {
        let at = (host.to_string(), namespace.to_string(), name.to_string());
        self.by_vc_name
            .get(&at)
            .into_iter()
            .flatten()
            .filter_map(|n| self.prov.get(n))
    }

    /// Whether `name` in `namespace` is free, ours (`key`), or someone else's. A
    /// cluster of `key` in another namespace does not make the name ours there.
    pub fn name_use(&self, namespace: &str, name: &str, key: &VcKey) -> NameUse {
        match self.prov.get(&at(namespace, name)) {
            None => NameUse::Free,
            Some(p) if p.key.as_ref() == Some(key) && p.trust.is_proven() => NameUse::Ours,
            Some(_) => NameUse::Other,
        }
    }

    /// Records that the hub is about to delete the cluster of `key` (so the watch's
    /// delete event is not mistaken for a user's deletion).
    pub fn mark_deleting_by_us(&mut self, key: &VcKey) {
        self.deleting_by_us.insert(key.clone());
    }

    /// The hub's deletion failed: the next decision may delete again.
    pub fn unmark_deleting_by_us(&mut self, key: &VcKey) {
        self.deleting_by_us.remove(key);
    }

    /// Whether the hub is deleting the cluster of `key`.
    pub fn is_deleting_by_us(&self, key: &VcKey) -> bool {
        self.deleting_by_us.contains(key)
    }

    /// Whether someone other than the hub deleted the cluster of `key`.
    pub fn is_user_deleted(&self, key: &VcKey) -> bool {
        self.user_deleted.contains(key)
    }

    /// Forgets that the cluster of `key` was deleted by a user (the agent acknowledged).
    pub fn clear_user_deleted(&mut self, key: &VcKey) {
        self.user_deleted.remove(key);
    }

    // === management clusters ===

    /// Adds or updates a management cluster; returns affected keys.
    pub fn apply_mgmt(&mut self, m: MgmtCluster) -> Vec<VcKey> {
        let out = self.mgmt_key.get(&m.id).cloned().into_iter().collect();
        self.mgmt.insert(m.id.clone(), m);
        out
    }

    /// Removes a management cluster; returns affected keys.
    pub fn delete_mgmt(&mut self, id: &str) -> Vec<VcKey> {
        self.mgmt.remove(id);
        self.mgmt_key.get(id).cloned().into_iter().collect()
    }

    /// Replaces all management clusters after a (re)list.
    pub fn replace_mgmt(&mut self, all: Vec<MgmtCluster>) -> Vec<VcKey> {
        let old: Vec<String> = self.mgmt.keys().cloned().collect();
        let mut out = Vec::new();
        for id in old {
            out.extend(self.delete_mgmt(&id));
        }
        for m in all {
            out.extend(self.apply_mgmt(m));
        }
        out
    }

    /// A management cluster by id.
    pub fn mgmt(&self, id: &str) -> Option<&MgmtCluster> {
        self.mgmt.get(id)
    }

    /// The vCluster a management cluster belongs to.
    pub fn key_for_mgmt(&self, id: &str) -> Option<&VcKey> {
        self.mgmt_key.get(id)
    }

    // === registration tokens ===

    /// Adds or updates a token; returns affected keys.
    pub fn apply_crt(&mut self, c: Crt, now: Instant) -> Vec<VcKey> {
        let id = c.mgmt_id.clone();
        self.crt.insert(id.clone(), c);
        self.token_changed(&id, now)
    }

    /// Removes a token.
    pub fn delete_crt(&mut self, mgmt_id: &str, now: Instant) -> Vec<VcKey> {
        self.crt.remove(mgmt_id);
        self.token_changed(mgmt_id, now)
    }

    /// Replaces all tokens after a (re)list.
    pub fn replace_crt(&mut self, all: Vec<Crt>, now: Instant) -> Vec<VcKey> {
        let mut ids: HashSet<String> = self.crt.keys().cloned().collect();
        self.crt = all.into_iter().map(|c| (c.mgmt_id.clone(), c)).collect();
        ids.extend(self.crt.keys().cloned());
        ids.iter()
            .flat_map(|id| self.token_changed(id, now))
            .collect()
    }

    /// Adds or updates the token Secret of a management cluster.
    pub fn apply_token_secret(&mut self, mgmt_id: &str, token: Secret, now: Instant) -> Vec<VcKey> {
        self.token_secrets.insert(mgmt_id.to_string(), token);
        self.token_changed(mgmt_id, now)
    }

    /// Removes the token Secret of a management cluster.
    pub fn delete_token_secret(&mut self, mgmt_id: &str, now: Instant) -> Vec<VcKey> {
        self.token_secrets.remove(mgmt_id);
        self.token_changed(mgmt_id, now)
    }

    /// Replaces all token Secrets after a (re)list.
    pub fn replace_token_secrets(
        &mut self,
        all: Vec<(String, Secret)>,
        now: Instant,
    ) -> Vec<VcKey> {
        let mut ids: HashSet<String> = self.token_secrets.keys().cloned().collect();
        self.token_secrets = all.into_iter().collect();
        ids.extend(self.token_secrets.keys().cloned());
        ids.iter()
            .flat_map(|id| self.token_changed(id, now))
            .collect()
    }

    fn token_changed(&mut self, mgmt_id: &str, now: Instant) -> Vec<VcKey> {
        match resolve_token(self.crt.get(mgmt_id), self.token_secrets.get(mgmt_id)) {
            Some(url) => {
                let same = self.token_seen.get(mgmt_id).is_some_and(|(_, u)| *u == url);
                if !same {
                    self.token_seen.insert(mgmt_id.to_string(), (now, url));
                }
            }
            None => {
                self.token_seen.remove(mgmt_id);
            }
        }
        self.mgmt_key.get(mgmt_id).cloned().into_iter().collect()
    }

    /// The registration token of a management cluster.
    pub fn token(&self, mgmt_id: &str) -> TokenState {
        if let Some((at, url)) = self.token_seen.get(mgmt_id) {
            return TokenState::Ready(url.clone(), *at);
        }
        match self.crt.get(mgmt_id) {
            Some(c)
                if c.manifest_url.expose().contains(TOKEN_PLACEHOLDER) && c.token.is_empty() =>
            {
                TokenState::WaitingSecret
            }
            _ => TokenState::Missing,
        }
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
