//! The decision of owner sync, pure: which owner CRTBs one vCluster's cluster must have
//! (from the host project's PRTBs, the host cluster's CRTBs and the role mapping), their
//! deterministic names, and the plan that turns what exists into that. Everything that
//! can be wrong about who gets access is tested here without an API server.

use std::collections::{BTreeMap, HashSet};

use super::mapping::RoleMapping;
use super::model::{Binding, OwnedCrtb, ProjectInfo, Subject, same_subject};

/// Where an owner CRTB comes from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Parent {
    /// `prtb` or `crtb`.
    pub kind: &'static str,
    /// Namespace of the parent binding.
    pub namespace: String,
    /// Name of the parent binding.
    pub name: String,
}

/// One CRTB the vCluster's cluster must have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// Deterministic name ([`crtb_name`]).
    pub name: String,
    /// Cluster role template granted.
    pub role: String,
    /// To whom.
    pub subject: Subject,
    /// Every binding it derives from, sorted (the first is named in its labels).
    pub parents: Vec<Parent>,
}

/// The host project of a vCluster as far as owner sync is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectChoice {
    /// `p-…`, if the vCluster's namespace is in a project of its host.
    pub project: Option<String>,
    /// `Some(new)` when the provisioning cluster's `vclink.io/project` label must change.
    pub relabel: Option<Option<String>>,
}

/// The vCluster's project: what its agent reports now (`reported`, `Some("")` = in no
/// project) wins over the label recorded on its provisioning cluster (used while the
/// agent is away, e.g. after a hub restart). A reported project of another cluster is
/// refused (an agent speaks only for its own cluster).
pub fn project_of(host: &str, reported: Option<&str>, label: Option<&str>) -> ProjectChoice {
    let Some(r) = reported else {
        return ProjectChoice {
            project: label.map(str::to_string),
            relabel: None,
        };
    };
    let project = r
        .split_once(':')
        .filter(|(c, p)| *c == host && !p.is_empty())
        .map(|(_, p)| p.to_string());
    let relabel = (project.as_deref() != label).then(|| project.clone());
    ProjectChoice { project, relabel }
}

/// The owner CRTBs of the cluster `mgmt_id` (the vCluster's), keyed by name.
/// `project` is the host project (`None`: in no project, or the project is gone);
/// `prtbs` the PRTBs of its backing namespace; `host_crtbs` the CRTBs of the host cluster
/// that vclink did not create.
pub fn desired<'a>(
    mgmt_id: &str,
    host: &str,
    project: Option<&ProjectInfo>,
    prtbs: impl IntoIterator<Item = &'a Binding>,
    host_crtbs: impl IntoIterator<Item = &'a Binding>,
    mapping: &RoleMapping,
) -> BTreeMap<String, Desired> {
    let mut out: BTreeMap<String, Desired> = BTreeMap::new();
    let mut add = |role: &str, subject: &Subject, parent: Parent| {
        if subject.is_system() {
            return;
        }
        let name = crtb_name(mgmt_id, subject, role);
        let d = out.entry(name.clone()).or_insert_with(|| Desired {
            name,
            role: role.to_string(),
            subject: subject.clone(),
            parents: Vec::new(),
        });
        d.parents.push(parent);
        d.parents.sort();
    };
    if let Some(p) = project.filter(|p| !p.deleting && p.cluster == host) {
        let project_name = format!("{}:{}", p.cluster, p.id);
        for b in prtbs {
            if b.deleting || b.namespace != p.prtb_namespace || b.scope != project_name {
                continue;
            }
            if let (Some(role), Some(s)) = (mapping.for_project_role(&b.role), &b.subject) {
                add(role, s, parent("prtb", b));
            }
        }
    }
    for b in host_crtbs {
        if b.deleting || b.namespace != host || b.scope != host {
            continue;
        }
        if let (Some(role), Some(s)) = (mapping.for_cluster_role(&b.role), &b.subject) {
            add(role, s, parent("crtb", b));
        }
    }
    out
}

fn parent(kind: &'static str, b: &Binding) -> Parent {
    Parent {
        kind,
        namespace: b.namespace.clone(),
        name: b.name.clone(),
    }
}

/// What to write for one vCluster cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// CRTBs to create.
    pub create: Vec<Desired>,
    /// Owned CRTBs to delete: (name, uid).
    pub delete: Vec<(String, String)>,
    /// Desired CRTBs whose name someone else's CRTB holds (reported, never touched).
    pub conflicts: Vec<Desired>,
}

impl Plan {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.delete.is_empty() && self.conflicts.is_empty()
    }
}

/// Turns `owned` (owner sync's CRTBs in the cluster's namespace) into `desired`.
/// `foreign` are the names of other CRTBs there. A CRTB being deleted is waited for.
/// An owned CRTB under another name that makes a desired grant (one taken over from
/// the vcluster-rancher-operator, see [`super::takeover`]) satisfies it: nothing is
/// created next to it, and it is deleted only once the grant is no longer desired.
pub fn plan(
    desired: &BTreeMap<String, Desired>,
    owned: &[&OwnedCrtb],
    foreign: &HashSet<&str>,
) -> Plan {
    let mut p = Plan::default();
    let by_name: BTreeMap<&str, &OwnedCrtb> = owned.iter().map(|o| (o.name.as_str(), *o)).collect();
    // Owned CRTBs under other names kept because they make a desired grant.
    let mut kept: HashSet<&str> = HashSet::new();
    for (name, d) in desired {
        match by_name.get(name.as_str()) {
            Some(o) if o.deleting => {}
            // Same name, same grant: nothing to do.
            Some(o) if makes(o, d) => {}
            Some(o) => p.delete.push((o.name.clone(), o.uid.clone())),
            None => {
                let other = owned.iter().find(|o| {
                    !o.deleting
                        && !desired.contains_key(&o.name)
                        && !kept.contains(o.name.as_str())
                        && o.role == d.role
                        && o.subject
                            .as_ref()
                            .is_some_and(|s| same_subject(s, &d.subject))
                });
                match other {
                    Some(o) => {
                        kept.insert(o.name.as_str());
                    }
                    None if foreign.contains(name.as_str()) => p.conflicts.push(d.clone()),
                    None => p.create.push(d.clone()),
                }
            }
        }
    }
    for o in owned {
        if !o.deleting && !desired.contains_key(&o.name) && !kept.contains(o.name.as_str()) {
            p.delete.push((o.name.clone(), o.uid.clone()));
        }
    }
    p
}

/// Whether the owned CRTB `o` makes the grant `d` (Rancher may have filled in a
/// userName for a principal-only subject, so compare what was asked for).
pub fn makes(o: &OwnedCrtb, d: &Desired) -> bool {
    o.role == d.role && o.subject.as_ref().is_some_and(|s| covers(s, &d.subject))
}

/// Whether an existing subject is what `want` asked for (fields that were asked for
/// match; Rancher may have added the other one).
fn covers(have: &Subject, want: &Subject) -> bool {
    let same = |h: &str, w: &str| w.is_empty() || h == w;
    match (have, want) {
        (
            Subject::User {
                name: hn,
                principal: hp,
            },
            Subject::User {
                name: wn,
                principal: wp,
            },
        )
        | (
            Subject::Group {
                name: hn,
                principal: hp,
            },
            Subject::Group {
                name: wn,
                principal: wp,
            },
        ) => same(hn, wn) && same(hp, wp),
        _ => false,
    }
}

/// Deterministic CRTB name from cluster, subject and role: `vco-<role>-<subject>-<hash>`,
/// at most 63 characters; the readable parts are cut, the 64-bit hash of all three
/// keeps names of different grants apart.
pub fn crtb_name(mgmt_id: &str, subject: &Subject, role: &str) -> String {
    let id = subject.id();
    let h = fnv1a(&[mgmt_id, &id, role]);
    format!("vco-{}-{}-{h:016x}", slug(role, 18), slug(&id, 20))
}

/// Lowercase alphanumerics and single dashes, at most `max` characters, never empty.
fn slug(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
        if out.len() >= max {
            break;
        }
    }
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() { "x".into() } else { out }
}

/// FNV-1a, 64 bit: stable across Rust versions and platforms (unlike `DefaultHasher`),
/// so names stay the same after an upgrade.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
#[path = "desired_tests.rs"]
mod tests;
