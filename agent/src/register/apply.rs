//! Applying Rancher's import manifest inside the vCluster: parse the multi-document YAML
//! into dynamic objects, order Namespaces and CRDs first, map each kind to its resource
//! with discovery, and server-side apply every object (field manager `vclink-register`,
//! force), so running the Job again changes nothing.

use std::collections::HashMap;
use std::time::Duration;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::{self, ApiCapabilities, Scope};
use kube::{Api, Client};
use serde::Deserialize;
use tracing::{debug, info};

use super::RegisterError;
use super::fetch::root_cause;

/// Field manager of the Job's writes inside the vCluster.
pub const FIELD_MANAGER: &str = "vclink-register";

/// Parses a multi-document YAML manifest (also `kind: List`) into objects; empty
/// documents are skipped, an object without apiVersion, kind or name is an error.
pub fn parse_manifest(text: &str) -> Result<Vec<DynamicObject>, RegisterError> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = serde_yaml_ng::Value::deserialize(doc).map_err(|e| {
            RegisterError::Manifest(format!("document {} is not valid YAML: {e}", i + 1))
        })?;
        if value.is_null() {
            continue;
        }
        let json = serde_json::to_value(&value).map_err(|e| {
            RegisterError::Manifest(format!("document {} cannot be converted: {e}", i + 1))
        })?;
        let items = match json.get("kind").and_then(|k| k.as_str()) {
            Some(k) if k.ends_with("List") && json.get("items").is_some() => json
                .get("items")
                .and_then(|v| v.as_array())
                .cloned()
                .unwrap_or_default(),
            _ => vec![json],
        };
        for item in items {
            let obj: DynamicObject = serde_json::from_value(item).map_err(|e| {
                RegisterError::Manifest(format!(
                    "document {} is not a Kubernetes object: {e}",
                    i + 1
                ))
            })?;
            if obj
                .types
                .as_ref()
                .is_none_or(|t| t.api_version.is_empty() || t.kind.is_empty())
                || obj.metadata.name.is_none()
            {
                return Err(RegisterError::Manifest(format!(
                    "document {} lacks apiVersion, kind or metadata.name",
                    i + 1
                )));
            }
            out.push(obj);
        }
    }
    Ok(out)
}

fn kind_of(obj: &DynamicObject) -> &str {
    obj.types
        .as_ref()
        .map(|t| t.kind.as_str())
        .unwrap_or_default()
}

/// Namespaces first, then CRDs, then everything else (stable within each group).
pub fn order(mut objs: Vec<DynamicObject>) -> Vec<DynamicObject> {
    objs.sort_by_key(|o| match kind_of(o) {
        "Namespace" => 0,
        "CustomResourceDefinition" => 1,
        _ => 2,
    });
    objs
}

fn describe(obj: &DynamicObject) -> String {
    let name = obj.metadata.name.as_deref().unwrap_or("?");
    match obj.metadata.namespace.as_deref() {
        Some(ns) => format!("{} {ns}/{name}", kind_of(obj)),
        None => format!("{} {name}", kind_of(obj)),
    }
}

/// Maps a Kubernetes client error to a one-line reason.
pub fn kube_reason(e: &kube::Error, server: &str, what: &str) -> RegisterError {
    match e {
        kube::Error::Api(s) => {
            RegisterError::Apply(format!("{what} failed: {} (HTTP {})", s.message, s.code))
        }
        other => RegisterError::Connect(format!(
            "cannot reach the vCluster API server at {server}: {}",
            root_cause(other)
        )),
    }
}

/// Applies all objects in order; returns how many were applied.
pub async fn apply_all(
    client: &Client,
    objs: Vec<DynamicObject>,
    server: &str,
) -> Result<usize, RegisterError> {
    let mut resources: HashMap<(String, String), (ApiResource, ApiCapabilities)> = HashMap::new();
    let objs = order(objs);
    let applied_crd = objs
        .iter()
        .any(|o| kind_of(o) == "CustomResourceDefinition");
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut count = 0;
    for obj in &objs {
        let Some(types) = obj.types.clone() else {
            continue;
        };
        let key = (types.api_version.clone(), types.kind.clone());
        if !resources.contains_key(&key) {
            let gvk = GroupVersionKind::try_from(&types).map_err(|e| {
                RegisterError::Manifest(format!("{}: bad apiVersion: {e}", describe(obj)))
            })?;
            let found = discover(client, &gvk, applied_crd, server, obj).await?;
            resources.insert(key.clone(), found);
        }
        let Some((ar, caps)) = resources.get(&key) else {
            continue;
        };
        let name = obj.metadata.name.clone().unwrap_or_default();
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => Api::namespaced_with(
                client.clone(),
                obj.metadata.namespace.as_deref().unwrap_or("default"),
                ar,
            ),
            Scope::Cluster => Api::all_with(client.clone(), ar),
        };
        api.patch(&name, &params, &Patch::Apply(obj))
            .await
            .map_err(|e| kube_reason(&e, server, &format!("applying {}", describe(obj))))?;
        debug!(object = %describe(obj), "applied");
        count += 1;
    }
    info!(objects = count, "applied the Rancher import manifest");
    Ok(count)
}

/// Finds the resource for a kind; waits briefly for kinds of CRDs applied just before.
async fn discover(
    client: &Client,
    gvk: &GroupVersionKind,
    wait_for_crds: bool,
    server: &str,
    obj: &DynamicObject,
) -> Result<(ApiResource, ApiCapabilities), RegisterError> {
    let mut tries = 0;
    loop {
        match discovery::pinned_kind(client, gvk).await {
            Ok(found) => return Ok(found),
            Err(kube::Error::Api(_) | kube::Error::Discovery(_)) if wait_for_crds && tries < 20 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e @ (kube::Error::Api(_) | kube::Error::Discovery(_))) => {
                return Err(RegisterError::Apply(format!(
                    "the vCluster API server does not serve {} for {}: {}",
                    types_text(gvk),
                    describe(obj),
                    root_cause(&e)
                )));
            }
            Err(e) => return Err(kube_reason(&e, server, "discovering API resources")),
        }
    }
}

fn types_text(gvk: &GroupVersionKind) -> String {
    if gvk.group.is_empty() {
        format!("{}/{}", gvk.version, gvk.kind)
    } else {
        format!("{}/{}/{}", gvk.group, gvk.version, gvk.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: proxy-clusterrole-kubeapiserver
rules:
- apiGroups: [""]
  resources: ["nodes/metrics"]
  verbs: ["get"]
---
apiVersion: v1
kind: Namespace
metadata:
  name: cattle-system
---
# an empty document
---
apiVersion: v1
kind: Secret
metadata:
  name: cattle-credentials-abc
  namespace: cattle-system
data:
  token: dG9r
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ServiceAccount
  metadata:
    name: cattle
    namespace: cattle-system
"#;

    #[test]
    fn parses_multi_document_yaml_and_lists() {
        let objs = parse_manifest(MANIFEST).expect("parse");
        let kinds: Vec<_> = objs.iter().map(kind_of).collect();
        assert_eq!(
            kinds,
            vec!["ClusterRole", "Namespace", "Secret", "ServiceAccount"]
        );
        assert_eq!(objs[2].data["data"]["token"], "dG9r");
    }

    #[test]
    fn namespaces_and_crds_go_first() {
        let objs = order(parse_manifest(MANIFEST).expect("parse"));
        assert_eq!(kind_of(&objs[0]), "Namespace");
        assert_eq!(kind_of(&objs[1]), "ClusterRole");
    }

    #[test]
    fn objects_without_kind_or_name_are_refused() {
        assert!(parse_manifest("apiVersion: v1\nmetadata:\n  name: x\n").is_err());
        assert!(parse_manifest("apiVersion: v1\nkind: Namespace\nmetadata: {}\n").is_err());
        assert!(parse_manifest("key: [unclosed").is_err());
        assert!(parse_manifest("").expect("empty").is_empty());
    }
}
