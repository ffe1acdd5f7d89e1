//! Which provisioning clusters claim which vCluster, split by the verdict on their
//! proofs (`super::proof`). Only proven clusters may be mapped to their vCluster; this
//! keeps the rest apart: the unproven ones (forged, tampered, copied), counted by reason
//! and reported to the vCluster's owner, and the case of two proven clusters for one
//! vCluster, on which the hub acts on neither. Pure; part of the index.

use std::collections::{BTreeSet, HashMap};

use super::keys::VcKey;
use super::proof::Unproven;

/// See the module docs.
#[derive(Debug, Default)]
pub struct Claims {
    /// Proven clusters by the vCluster their labels name (normally one name each).
    proven: HashMap<VcKey, BTreeSet<String>>,
    /// The same, by name.
    proven_names: HashMap<String, VcKey>,
    /// Unproven clusters by name: the vCluster they claim and why they are not trusted.
    unproven: HashMap<String, (VcKey, Unproven)>,
    /// The same, by vCluster.
    unproven_by_key: HashMap<VcKey, BTreeSet<String>>,
    /// How many unproven clusters there are for each reason.
    counts: HashMap<Unproven, i64>,
}

impl Claims {
    /// Forgets whatever the cluster `name` claimed; returns the vCluster it claimed.
    pub fn forget(&mut self, name: &str) -> Option<VcKey> {
        if let Some((key, why)) = self.unproven.remove(name) {
            *self.counts.entry(why).or_default() -= 1;
            remove(&mut self.unproven_by_key, &key, name);
            return Some(key);
        }
        let key = self.proven_names.remove(name)?;
        remove(&mut self.proven, &key, name);
        Some(key)
    }

    /// The proven cluster `name` claims `key`.
    pub fn proven(&mut self, name: &str, key: &VcKey) {
        self.proven_names.insert(name.to_string(), key.clone());
        self.proven
            .entry(key.clone())
            .or_default()
            .insert(name.to_string());
    }

    /// The unproven cluster `name` claims `key`; returns whether it is new (to log it
    /// once per object).
    pub fn unproven(&mut self, name: &str, key: &VcKey, why: Unproven) -> bool {
        let new = !self.unproven.contains_key(name);
        if let Some((_, old)) = self.unproven.insert(name.to_string(), (key.clone(), why)) {
            *self.counts.entry(old).or_default() -= 1;
        }
        *self.counts.entry(why).or_default() += 1;
        self.unproven_by_key
            .entry(key.clone())
            .or_default()
            .insert(name.to_string());
        new
    }

    /// The proven clusters of `key` when there are several (the hub acts on none).
    pub fn duplicates(&self, key: &VcKey) -> Option<&BTreeSet<String>> {
        self.proven.get(key).filter(|n| n.len() > 1)
    }

    /// The proven cluster of `key` when it is the only one.
    pub fn sole_proven(&self, key: &VcKey) -> Option<&str> {
        self.proven
            .get(key)
            .filter(|n| n.len() == 1)
            .and_then(|n| n.first())
            .map(String::as_str)
    }

    /// The first (by name) unproven cluster claiming `key`.
    pub fn first_unproven(&self, key: &VcKey) -> Option<&str> {
        self.unproven_by_key
            .get(key)
            .and_then(|n| n.first())
            .map(String::as_str)
    }

    /// How many unproven clusters there are for `why`.
    pub fn count(&self, why: Unproven) -> i64 {
        self.counts.get(&why).copied().unwrap_or(0)
    }
}

fn remove(map: &mut HashMap<VcKey, BTreeSet<String>>, key: &VcKey, name: &str) {
    if let Some(set) = map.get_mut(key) {
        set.remove(name);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_counted_and_forgotten() {
        let k = VcKey::new("c-m-h", "u");
        let mut c = Claims::default();
        assert!(c.unproven("forged", &k, Unproven::Invalid));
        assert!(!c.unproven("forged", &k, Unproven::Missing), "seen before");
        assert_eq!(c.count(Unproven::Invalid), 0);
        assert_eq!(c.count(Unproven::Missing), 1);
        assert_eq!(c.first_unproven(&k), Some("forged"));
        c.proven("real", &k);
        assert_eq!(c.duplicates(&k), None);
        assert_eq!(c.sole_proven(&k), Some("real"));
        c.proven("copy", &k);
        assert_eq!(c.duplicates(&k).map(|s| s.len()), Some(2));
        assert_eq!(c.forget("copy"), Some(k.clone()));
        assert_eq!(c.sole_proven(&k), Some("real"));
        assert_eq!(c.forget("forged"), Some(k.clone()));
        assert_eq!(c.count(Unproven::Missing), 0);
        assert_eq!(c.first_unproven(&k), None);
        assert_eq!(c.forget("nothing"), None);
    }
}

/// The trust rule as the index applies it.
#[cfg(test)]
mod index_tests {
    use crate::core::index::{Index, NameUse, ProvCluster, VcKey};
    use crate::core::proof::{Trust, Unproven};

    fn key() -> VcKey {
        VcKey::new("c-m-h", "u")
    }

    fn prov(name: &str, trust: Trust) -> ProvCluster {
        ProvCluster {
            name: name.into(),
            uid: format!("uid-{name}"),
            key: Some(key()),
            mgmt_id: Some(format!("c-m-{name}")),
            trust,
            ..Default::default()
        }
    }

    #[test]
    fn an_unproven_cluster_names_no_vcluster_but_holds_its_name() {
        let mut i = Index::default();
        let forged = prov("forged", Trust::Unproven(Unproven::Invalid));
        assert_eq!(
            i.apply_prov(forged),
            vec![key()],
            "its claim is re-evaluated"
        );
        assert!(i.prov_for(&key()).is_none());
        assert_eq!(i.key_for_mgmt("c-m-forged"), None);
        assert_eq!(i.uids_of_host("c-m-h").count(), 0);
        assert_eq!(i.name_use("", "forged", &key()), NameUse::Other);
        assert_eq!(i.unproven_claim(&key()), Some("/forged"));
        assert_eq!(i.unproven_count(Unproven::Invalid), 1);
        // Its deletion says nothing about the vCluster.
        i.delete_prov("/forged");
        assert!(!i.is_user_deleted(&key()));
        assert_eq!(i.unproven_claim(&key()), None);
        assert_eq!(i.unproven_count(Unproven::Invalid), 0);
    }

    #[test]
    fn a_proven_cluster_tampered_with_stops_being_the_vclusters() {
        let mut i = Index::default();
        i.apply_prov(prov("real", Trust::Proven));
        assert_eq!(i.prov_for(&key()).map(|p| p.name.as_str()), Some("real"));
        assert_eq!(i.name_use("", "real", &key()), NameUse::Ours);
        i.apply_prov(prov("real", Trust::Unproven(Unproven::Invalid)));
        assert!(i.prov_for(&key()).is_none());
        assert_eq!(i.unproven_claim(&key()), Some("/real"));
        i.apply_prov(prov("real", Trust::ProvenAtCreate));
        assert_eq!(i.prov_for(&key()).map(|p| p.name.as_str()), Some("real"));
        assert_eq!(i.unproven_claim(&key()), None);
    }

    #[test]
    fn two_proven_clusters_are_neither_until_one_goes() {
        let mut i = Index::default();
        i.apply_prov(prov("a", Trust::Proven));
        i.apply_prov(prov("b", Trust::Proven));
        assert!(i.prov_for(&key()).is_none());
        assert_eq!(
            i.duplicate_clusters(&key()),
            Some(vec!["/a".into(), "/b".into()])
        );
        i.delete_prov("/b");
        assert_eq!(i.duplicate_clusters(&key()), None);
        assert_eq!(i.prov_for(&key()).map(|p| p.name.as_str()), Some("a"));
        assert_eq!(i.key_for_mgmt("c-m-a"), Some(&key()));
        // A forged one next to the real one changes nothing about the real one.
        i.apply_prov(prov("forged", Trust::Unproven(Unproven::Missing)));
        assert_eq!(i.prov_for(&key()).map(|p| p.name.as_str()), Some("a"));
        assert_eq!(i.duplicate_clusters(&key()), None);
    }
}
