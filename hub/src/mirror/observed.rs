//! What the management-cluster watch shows of vclink's mirror, reduced at once to a
//! [`Seen`]: the digest of exactly the fields the field manager [`FIELD_MANAGER`] owns
//! (the API server's `managedFields` say which), and whose the description is. Nothing
//! else of the object is kept. Pure.

use std::collections::BTreeMap;

use kube::api::DynamicObject;
use serde_json::Value;
use vclink_proto::keys::{LABEL_NAME, LABEL_NAMESPACE};

use super::desired::Mirror;

/// The server-side-apply field manager of every mirror write: the API server records
/// which labels, annotations and `spec.description` it set, so a key vclink no longer
/// wants is removed by the next apply and nobody else's key is ever touched.
pub const FIELD_MANAGER: &str = "vclink-mirror";

/// Whose `spec.description` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Desc {
    /// Empty or absent: free.
    Empty,
    /// Owned by [`FIELD_MANAGER`].
    Ours,
    /// The text the hub put on the provisioning cluster when it created it (`vCluster
    /// <namespace>/<name> on …`), which Rancher copied: vclink's own words, so free.
    CreateText,
    /// Someone else's (a user's): never overwritten.
    Theirs,
}

/// What the hub keeps of one management cluster for the mirror.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// [`Mirror::digest`] of the fields vclink owns there now.
    pub digest: u64,
    /// Whose the description is.
    pub desc: Desc,
}

/// Reduces a management cluster; `None` without a name.
pub fn parse(o: &DynamicObject) -> Option<(String, Seen)> {
    let id = o.metadata.name.clone()?;
    let owned = o
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() == Some(FIELD_MANAGER))
        .filter_map(|m| m.fields_v1.as_ref().map(|f| &f.0))
        .collect::<Vec<_>>();
    let keys = |path: [&str; 2]| {
        owned
            .iter()
            .filter_map(|f| f.get(path[0])?.get(path[1])?.as_object())
            .flat_map(|m| m.keys())
            .filter_map(|k| k.strip_prefix("f:"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let pick = |map: Option<&BTreeMap<String, String>>, keys: Vec<String>| {
        keys.into_iter()
            .filter_map(|k| Some((k.clone(), map?.get(&k)?.clone())))
            .collect::<BTreeMap<_, _>>()
    };
    let description = o
        .data
        .pointer("/spec/description")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let owns_description = owned
        .iter()
        .any(|f| f.pointer("/f:spec/f:description").is_some());
    let mirror = Mirror {
        labels: pick(o.metadata.labels.as_ref(), keys(["f:metadata", "f:labels"])),
        annotations: pick(
            o.metadata.annotations.as_ref(),
            keys(["f:metadata", "f:annotations"]),
        ),
        description: owns_description.then(|| description.to_string()),
    };
    let desc = if owns_description {
        Desc::Ours
    } else if description.is_empty() {
        Desc::Empty
    } else if is_create_text(o, description) {
        Desc::CreateText
    } else {
        Desc::Theirs
    };
    Some((
        id,
        Seen {
            digest: mirror.digest(),
            desc,
        },
    ))
}

/// Whether `description` is the hub's create-time text for the vCluster the cluster's
/// labels (copied from the provisioning cluster at creation) name.
fn is_create_text(o: &DynamicObject, description: &str) -> bool {
    let label = |k| o.metadata.labels.as_ref()?.get(k).map(String::as_str);
    let (Some(ns), Some(name)) = (label(LABEL_NAMESPACE), label(LABEL_NAME)) else {
        return false;
    };
    description.starts_with(&format!("vCluster {ns}/{name} on "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(managed: Value, description: &str) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "management.cattle.io/v3", "kind": "Cluster",
            "metadata": {
                "name": "c-m-vc1",
                "labels": {"team": "a", "user-set": "x", LABEL_NAMESPACE: "team-a", LABEL_NAME: "dev"},
                "annotations": {"vclink.io/state": "connected", "other": "y"},
                "managedFields": managed,
            },
            "spec": {"description": description},
        }))
        .expect("object")
    }

    fn ours(fields: Value) -> Value {
        json!([
            {"manager": "rancher", "operation": "Update", "apiVersion": "management.cattle.io/v3",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {"f:user-set": {}}}}},
            {"manager": FIELD_MANAGER, "operation": "Apply", "apiVersion": "management.cattle.io/v3",
             "fieldsType": "FieldsV1", "fieldsV1": fields},
        ])
    }

    #[test]
    fn only_the_fields_vclink_owns_make_the_digest() {
        let o = object(
            ours(json!({"f:metadata": {
                "f:labels": {"f:team": {}},
                "f:annotations": {"f:vclink.io/state": {}},
            }})),
            "",
        );
        let (id, seen) = parse(&o).expect("parsed");
        assert_eq!(id, "c-m-vc1");
        let mine = Mirror {
            labels: [("team".to_string(), "a".to_string())].into(),
            annotations: [("vclink.io/state".to_string(), "connected".to_string())].into(),
            description: None,
        };
        assert_eq!(
            seen.digest,
            mine.digest(),
            "user-set and other are not vclink's"
        );
        assert_eq!(seen.desc, Desc::Empty);
    }

    #[test]
    fn nothing_owned_is_the_empty_mirror() {
        let (_, seen) = parse(&object(json!([]), "")).expect("parsed");
        assert_eq!(seen.digest, Mirror::default().digest());
    }

    #[test]
    fn whose_the_description_is() {
        let desc = |managed, text| parse(&object(managed, text)).expect("parsed").1.desc;
        assert_eq!(
            desc(ours(json!({"f:spec": {"f:description": {}}})), "vCluster x"),
            Desc::Ours
        );
        assert_eq!(
            desc(json!([]), "vCluster team-a/dev on c-m-host"),
            Desc::CreateText
        );
        assert_eq!(
            desc(json!([]), "vCluster team-b/dev on c-m-host"),
            Desc::Theirs
        );
        assert_eq!(desc(json!([]), "the QA cluster"), Desc::Theirs);
        let (_, seen) = parse(&object(
            ours(json!({"f:spec": {"f:description": {}}})),
            "vCluster team-a/dev on prod",
        ))
        .expect("parsed");
        let with = Mirror {
            description: Some("vCluster team-a/dev on prod".into()),
            ..Default::default()
        };
        assert_eq!(seen.digest, with.digest());
    }
}
