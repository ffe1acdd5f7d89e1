//! Rendered manifests as objects: split Helm's output into documents, parse them, and
//! pick out what tests need (the RBAC a chart grants, objects by kind).

use serde_json::Value;

use crate::{ChartError, Rendered, Result};

/// One rendered Kubernetes object and the template it came from.
#[derive(Debug, Clone)]
pub struct Object {
    /// Template path, e.g. `vclink-hub/templates/rbac.yaml`.
    pub source: String,
    /// The object as JSON.
    pub value: Value,
}

impl Object {
    /// `kind` of the object.
    pub fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or("")
    }
    /// `apiVersion` of the object.
    pub fn api_version(&self) -> &str {
        self.value["apiVersion"].as_str().unwrap_or("")
    }
    /// `metadata.name`.
    pub fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or("")
    }
    /// `metadata.namespace`, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.value["metadata"]["namespace"].as_str()
    }
}

/// Every object of a render, in template order (NOTES.txt and empty documents skipped).
pub fn objects(case_name: &str, rendered: &Rendered) -> Result<Vec<Object>> {
    let mut out = Vec::new();
    for (source, text) in &rendered.manifests {
        if source.ends_with("NOTES.txt") {
            continue;
        }
        for doc in serde_yaml_ng::Deserializer::from_str(text) {
            let v: Value = serde::Deserialize::deserialize(doc).map_err(|e| ChartError::Yaml {
                case: case_name.into(),
                source: e,
            })?;
            if v.is_null() {
                continue;
            }
            out.push(Object {
                source: source.clone(),
                value: v,
            });
        }
    }
    Ok(out)
}

/// The RBAC a chart grants (ServiceAccounts, Roles, ClusterRoles and their bindings),
/// exactly as rendered for `case`; for end-to-end tests that run hub and agent with
/// precisely these permissions.
pub fn rbac_objects(case_name: &str) -> Result<Vec<Object>> {
    let case = crate::cases::case(case_name).ok_or_else(|| ChartError::Render {
        case: case_name.into(),
        reason: "no such case".into(),
    })?;
    let rendered = crate::render(case)?;
    Ok(objects(case_name, &rendered)?
        .into_iter()
        .filter(|o| {
            matches!(
                o.kind(),
                "ServiceAccount" | "Role" | "RoleBinding" | "ClusterRole" | "ClusterRoleBinding"
            )
        })
        .collect())
}
