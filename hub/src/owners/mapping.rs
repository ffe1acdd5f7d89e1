//! The role mapping of owner sync: which project role template (of a PRTB in the host
//! project) and which cluster role template (of a CRTB on the host cluster) become which
//! cluster role template on the vCluster's cluster. Anything not listed, or listed as
//! `null`, is excluded. Given as JSON (`--owner-role-mapping` / `VCLINK_OWNER_ROLE_MAPPING`),
//! inline or as a file path.

use std::collections::BTreeMap;

use serde::Deserialize;

/// See the module docs.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleMapping {
    /// Project role template → cluster role template (`None`: excluded).
    #[serde(default)]
    pub project: BTreeMap<String, Option<String>>,
    /// Host cluster role template → cluster role template (`None`: excluded).
    #[serde(default)]
    pub cluster: BTreeMap<String, Option<String>>,
}

/// A mapping that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    /// Neither valid JSON nor a readable file.
    #[error("reading the owner role mapping file {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not the expected JSON.
    #[error(
        "the owner role mapping is not valid JSON of the form {{\"project\":{{\"project-owner\":\"cluster-owner\"}},\"cluster\":{{\"cluster-owner\":\"cluster-owner\"}}}}: {0}"
    )]
    Json(#[from] serde_json::Error),
    /// A role template name that cannot exist.
    #[error("the owner role mapping names an invalid role template {0:?}")]
    BadName(String),
}

impl Default for RoleMapping {
    /// As the vcluster-rancher-operator: project owners and members, and host cluster
    /// owners, become cluster owners.
    fn default() -> Self {
        let owner = || Some("cluster-owner".to_string());
        Self {
            project: [
                ("project-owner".into(), owner()),
                ("project-member".into(), owner()),
            ]
            .into_iter()
            .collect(),
            cluster: [("cluster-owner".into(), owner())].into_iter().collect(),
        }
    }
}

impl RoleMapping {
    /// Parses JSON text.
    pub fn from_json(s: &str) -> Result<Self, MappingError> {
        let m: RoleMapping = serde_json::from_str(s)?;
        for name in m
            .project
            .iter()
            .chain(&m.cluster)
            .flat_map(|(k, v)| std::iter::once(k).chain(v))
        {
            if !valid_name(name) {
                return Err(MappingError::BadName(name.clone()));
            }
        }
        Ok(m)
    }

    /// The flag's value: absent → default; text starting with `{` → JSON; else a file
    /// holding JSON.
    pub fn from_arg(arg: Option<&str>) -> Result<Self, MappingError> {
        let Some(a) = arg.map(str::trim).filter(|a| !a.is_empty()) else {
            return Ok(Self::default());
        };
        if a.starts_with('{') {
            return Self::from_json(a);
        }
        let text = std::fs::read_to_string(a).map_err(|source| MappingError::Read {
            path: a.to_string(),
            source,
        })?;
        Self::from_json(&text)
    }

    /// The cluster role a PRTB of `role` grants on the vCluster's cluster.
    pub fn for_project_role(&self, role: &str) -> Option<&str> {
        self.project.get(role)?.as_deref()
    }

    /// The cluster role a host CRTB of `role` grants on the vCluster's cluster.
    pub fn for_cluster_role(&self, role: &str) -> Option<&str> {
        self.cluster.get(role)?.as_deref()
    }
}

/// A Kubernetes object name (DNS subdomain, ≤ 253).
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && s.as_bytes().last().is_some_and(u8::is_ascii_alphanumeric)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_the_operators() {
        let m = RoleMapping::default();
        assert_eq!(m.for_project_role("project-owner"), Some("cluster-owner"));
        assert_eq!(m.for_project_role("project-member"), Some("cluster-owner"));
        assert_eq!(m.for_project_role("read-only"), None);
        assert_eq!(m.for_cluster_role("cluster-owner"), Some("cluster-owner"));
        assert_eq!(m.for_cluster_role("cluster-member"), None);
        assert_eq!(RoleMapping::from_arg(None).unwrap(), m);
        assert_eq!(RoleMapping::from_arg(Some("  ")).unwrap(), m);
    }

    #[test]
    fn custom_and_excluded_roles() {
        let m = RoleMapping::from_arg(Some(
            r#"{"project": {"project-owner": "cluster-owner", "project-member": null, "team-lead": "vc-admin"}}"#,
        ))
        .unwrap();
        assert_eq!(m.for_project_role("team-lead"), Some("vc-admin"));
        assert_eq!(m.for_project_role("project-member"), None);
        assert_eq!(
            m.for_cluster_role("cluster-owner"),
            None,
            "cluster omitted: nothing"
        );
    }

    #[test]
    fn files_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("m.json");
        std::fs::write(&f, r#"{"cluster": {"cluster-member": "cluster-member"}}"#).unwrap();
        let m = RoleMapping::from_arg(f.to_str()).unwrap();
        assert_eq!(m.for_cluster_role("cluster-member"), Some("cluster-member"));
        assert!(matches!(
            RoleMapping::from_arg(Some("/nonexistent/x.json")),
            Err(MappingError::Read { .. })
        ));
        assert!(matches!(
            RoleMapping::from_arg(Some("{\"projects\": {}}")),
            Err(MappingError::Json(_))
        ));
        assert!(matches!(
            RoleMapping::from_arg(Some("{\"project\": {\"A B\": \"x\"}}")),
            Err(MappingError::BadName(_))
        ));
    }
}
