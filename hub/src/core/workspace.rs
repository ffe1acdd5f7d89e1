//! Which Fleet workspace a vCluster's new Rancher cluster is created in: the
//! `--fleet-workspace-for-project` mapping (Rancher project → workspace) over the
//! `--fleet-workspace` default. Parsed and checked once at start ([`Workspaces::parse`]),
//! asked only when a cluster is about to be created ([`Workspaces::choose`]): an
//! existing cluster stays in the workspace it was created in, whatever its vCluster's
//! project becomes later (docs/rancher.md, "Fleet workspaces").
//!
//! Entries name a project three ways, and the most exact one wins: `<cluster-id>:<p-id>`
//! (one project), `p-…` (that project id in any host cluster), or the project's display
//! name. A project owner can rename their project, so a display-name entry lets them
//! choose among the workspaces display names reach — for their own new clusters only.
//! Pure: no I/O, unit-tested.

use std::collections::{HashMap, HashSet};

/// Namespaces a workspace mapping may not name: `fleet-local` holds only Rancher's
/// local cluster, the others are Kubernetes' or Rancher's own.
const RESERVED: &[&str] = &[
    "fleet-local",
    "default",
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "cattle-system",
    "local",
];

/// How [`Workspaces::choose`] found the workspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchedBy {
    /// An entry `<cluster-id>:<p-id>`.
    Qualified,
    /// An entry `p-…`.
    ProjectId,
    /// An entry naming the project's display name.
    DisplayName,
    /// No entry: `--fleet-workspace`.
    Default,
}

/// The default workspace and the per-project mapping. See the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workspaces {
    default: String,
    qualified: HashMap<(String, String), String>,
    by_id: HashMap<String, String>,
    by_name: HashMap<String, String>,
}

/// Whether `s` is a DNS-1123 label (what a namespace name must be).
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| alnum(c) || *c == b'-')
        && b.first().is_some_and(alnum)
        && b.last().is_some_and(alnum)
}

/// A project id as Rancher writes it: `p-` and lowercase letters and digits.
fn is_project_id(s: &str) -> bool {
    s.strip_prefix("p-")
        .is_some_and(|r| !r.is_empty() && is_dns_label(s) && !r.contains('-'))
}

fn check_workspace(ws: &str, what: &str) -> Result<(), String> {
    if !is_dns_label(ws) {
        return Err(format!(
            "{what}: Fleet workspace {ws:?} is not a valid namespace name (lowercase letters, digits and '-', at most 63, starting and ending with a letter or digit)"
        ));
    }
    if RESERVED.contains(&ws) || ws.starts_with("c-m-") || ws.starts_with("cattle-") {
        return Err(format!(
            "{what}: {ws:?} cannot be a Fleet workspace for vCluster clusters (reserved by Kubernetes or Rancher)"
        ));
    }
    Ok(())
}

impl Workspaces {
    /// Only the default workspace (no mapping).
    pub fn single(default: &str) -> Self {
        Self {
            default: default.to_string(),
            qualified: HashMap::new(),
            by_id: HashMap::new(),
            by_name: HashMap::new(),
        }
    }

    /// Parses `mapping` (`key=workspace,key=workspace`, empty for none) over `default`.
    /// Refuses an invalid or reserved workspace, an entry without `=`, an empty key, a
    /// malformed `<cluster-id>:<p-id>` and a key listed twice, naming the entry.
    pub fn parse(default: &str, mapping: &str) -> Result<Self, String> {
        check_workspace(default, "--fleet-workspace")?;
        let mut out = Self::single(default);
        let mut seen = HashSet::new();
        for entry in mapping.split(',').map(str::trim) {
            if entry.is_empty() {
                if mapping.trim().is_empty() {
                    break;
                }
                return Err("--fleet-workspace-for-project: empty entry (two commas in a row, or a trailing comma)".into());
            }
            let what = format!("--fleet-workspace-for-project entry {entry:?}");
            let Some((key, ws)) = entry.rsplit_once('=') else {
                return Err(format!("{what}: expected <project>=<workspace>"));
            };
            let (key, ws) = (key.trim(), ws.trim());
            if key.is_empty() {
                return Err(format!(
                    "{what}: no project (a project id p-…, <cluster-id>:<p-id>, or a display name)"
                ));
            }
            check_workspace(ws, &what)?;
            if !seen.insert(key.to_string()) {
                return Err(format!("{what}: project {key:?} is listed twice"));
            }
            if let Some((cluster, project)) = key.split_once(':') {
                if !is_dns_label(cluster) || !is_project_id(project) {
                    return Err(format!(
                        "{what}: {key:?} is not <cluster-id>:<p-id> (e.g. c-m-abcd1234:p-xk2lm); a display name may not contain ':'"
                    ));
                }
                out.qualified
                    .insert((cluster.into(), project.into()), ws.into());
            } else if is_project_id(key) {
                out.by_id.insert(key.into(), ws.into());
            } else {
                out.by_name.insert(key.into(), ws.into());
            }
        }
        Ok(out)
    }

    /// `--fleet-workspace`.
    pub fn default_workspace(&self) -> &str {
        &self.default
    }

    /// Whether any entry is a display name (the hub then watches Projects' names).
    pub fn has_display_names(&self) -> bool {
        !self.by_name.is_empty()
    }

    /// Whether any entry exists at all.
    pub fn is_mapped(&self) -> bool {
        !(self.qualified.is_empty() && self.by_id.is_empty() && self.by_name.is_empty())
    }

    /// The workspace for a new cluster of a vCluster on `host` whose Service's
    /// namespace is in project `project_id` (`<cluster-id>:<p-id>` as the agent reports
    /// it, empty for none) with display name `display_name` (when known). A project of
    /// another cluster than `host` is never looked up (the scope check refuses such a
    /// vCluster anyway).
    pub fn choose(
        &self,
        host: &str,
        project_id: &str,
        display_name: Option<&str>,
    ) -> (&str, MatchedBy) {
        let Some((cluster, project)) = project_id.split_once(':').filter(|(c, _)| *c == host)
        else {
            return (&self.default, MatchedBy::Default);
        };
        if let Some(ws) = self
            .qualified
            .get(&(cluster.to_string(), project.to_string()))
        {
            return (ws, MatchedBy::Qualified);
        }
        if let Some(ws) = self.by_id.get(project) {
            return (ws, MatchedBy::ProjectId);
        }
        if let Some(ws) = display_name.and_then(|n| self.by_name.get(n.trim())) {
            return (ws, MatchedBy::DisplayName);
        }
        (&self.default, MatchedBy::Default)
    }
}

/// Display names of Projects (`spec.displayName`), by (cluster id, project id): what
/// display-name entries are matched against. Fed by its own Projects watch.
#[derive(Debug, Default)]
pub struct ProjectNames {
    names: HashMap<(String, String), String>,
}

impl ProjectNames {
    /// Records (or, with `None`, forgets) one project's display name.
    pub fn set(&mut self, cluster: &str, project: &str, name: Option<String>) {
        let k = (cluster.to_string(), project.to_string());
        match name {
            Some(n) => self.names.insert(k, n),
            None => self.names.remove(&k),
        };
    }

    /// Replaces all after a (re)list.
    pub fn replace(&mut self, all: Vec<(String, String, String)>) {
        self.names = all.into_iter().map(|(c, p, n)| ((c, p), n)).collect();
    }

    /// The display name of `<cluster-id>:<p-id>`, if known.
    pub fn get(&self, project_id: &str) -> Option<&str> {
        let (c, p) = project_id.split_once(':')?;
        self.names
            .get(&(c.to_string(), p.to_string()))
            .map(String::as_str)
    }
}

#[cfg(test)]
#[path = "workspace_tests.rs"]
mod tests;
