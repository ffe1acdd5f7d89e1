//! Which clusters a GitRepo's bundle deploys to and with which options, as Fleet decides
//! (rancher/fleet `internal/bundlereader/read.go` and
//! `internal/cmd/controller/target/{builder.go,matcher/}`): the bundle's targets are the
//! fleet.yaml `targetCustomizations` followed by the GitRepo's `targets`, and the GitRepo
//! targets are also its `targetRestrictions`. A cluster gets a deployment from the first
//! GitRepo target whose criteria match (and that a restriction allows); a `doNotDeploy`
//! there skips it. Then the first matching customization (FirstMatch mode, the default)
//! either skips the cluster (`doNotDeploy`) or has its options merged over the bundle's.
//! A target with no criteria matches nothing; an empty selector matches everything.
//! Cluster groups are not modelled: a bundle using them fails [`check_supported`].

use serde_json::{Map, Value};

use super::BundleError;
use super::template;

/// A fleet `Cluster` as the controller sees it.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub name: String,
    pub namespace: String,
    pub labels: Map<String, Value>,
    pub annotations: Map<String, Value>,
    /// `spec.templateValues`.
    pub template_values: Value,
}

/// What Fleet does with the bundle for one cluster.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// No GitRepo target matches.
    NotTargeted,
    /// A matching target or customization says `doNotDeploy` (its name).
    DoNotDeploy(String),
    /// Deployed with these Helm values (after per-cluster templating) by this target,
    /// customized by this customization.
    Deploy {
        target: String,
        customization: Option<String>,
        values: Value,
    },
}

/// Refuses targets using what this model does not implement.
pub fn check_supported(targets: &[Value]) -> Result<(), BundleError> {
    for t in targets {
        for key in ["clusterGroup", "clusterGroupSelector"] {
            if !t[key].is_null() {
                return Err(BundleError::Targets(format!(
                    "target {} uses {key}, which this model does not implement",
                    t["name"]
                )));
            }
        }
    }
    Ok(())
}

/// Kubernetes label selector semantics (`metav1.LabelSelectorAsSelector`).
pub fn selector_matches(sel: &Value, labels: &Map<String, Value>) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    let match_labels = sel["matchLabels"].as_object().into_iter().flatten();
    for (k, v) in match_labels {
        if get(k) != v.as_str() {
            return false;
        }
    }
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let key = e["key"].as_str().unwrap_or("");
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let ok = match e["operator"].as_str().unwrap_or("") {
            "In" => get(key).is_some_and(|v| values.contains(&v)),
            "NotIn" => get(key).is_none_or(|v| !values.contains(&v)),
            "Exists" => get(key).is_some(),
            "DoesNotExist" => get(key).is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// `ClusterMatcher.Match` for one target (name or display-name label, and selector).
fn target_matches(t: &Value, c: &Cluster) -> bool {
    let mut criteria = 0;
    if let Some(name) = t["clusterName"].as_str().filter(|n| !n.is_empty()) {
        criteria += 1;
        let display = c
            .labels
            .get("management.cattle.io/cluster-display-name")
            .and_then(Value::as_str);
        if name != c.name && Some(name) != display {
            return false;
        }
    }
    if t["clusterSelector"].is_object() {
        criteria += 1;
        if !selector_matches(&t["clusterSelector"], &c.labels) {
            return false;
        }
    }
    criteria > 0
}

/// The labels Fleet's templates see: wrangler's `CleanAnnotationsForExport` drops keys
/// starting with `kubectl.kubernetes.io/` or containing `cattle.io/`, then Fleet puts
/// back those starting with `fleet.cattle.io/` or `management.cattle.io/`.
pub fn template_labels(labels: &Map<String, Value>) -> Map<String, Value> {
    labels
        .iter()
        .filter(|(k, _)| {
            (!k.starts_with("kubectl.kubernetes.io/") && !k.contains("cattle.io/"))
                || k.starts_with("fleet.cattle.io/")
                || k.starts_with("management.cattle.io/")
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// wrangler `data.MergeMaps`: maps merge recursively, anything else is replaced.
pub fn merge(base: &Value, over: &Value) -> Value {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            let mut out = b.clone();
            for (k, v) in o {
                let merged = match out.get(k) {
                    Some(existing) => merge(existing, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (_, o) => o.clone(),
    }
}

/// Decides what Fleet does for `cluster`, given fleet.yaml and the GitRepo's targets.
pub fn decide(
    fleet_yaml: &Value,
    gitrepo_targets: &[Value],
    cluster: &Cluster,
) -> Result<Decision, BundleError> {
    let customizations: Vec<Value> = fleet_yaml["targetCustomizations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    check_supported(&customizations)?;
    check_supported(gitrepo_targets)?;
    let allowed = gitrepo_targets.iter().any(|r| target_matches(r, cluster));
    let Some(target) = gitrepo_targets
        .iter()
        .find(|t| allowed && target_matches(t, cluster))
    else {
        return Ok(Decision::NotTargeted);
    };
    let name = |t: &Value| t["name"].as_str().unwrap_or("").to_string();
    if target["doNotDeploy"] == true {
        return Ok(Decision::DoNotDeploy(name(target)));
    }
    let custom = customizations.iter().find(|t| target_matches(t, cluster));
    let mut values = fleet_yaml["helm"]["values"].clone();
    if values.is_null() {
        values = Value::Object(Map::new());
    }
    if let Some(c) = custom
        && c["doNotDeploy"] == true
    {
        return Ok(Decision::DoNotDeploy(name(c)));
    }
    // FirstMatch: the customization's options replace the GitRepo target's, and the
    // result is merged over the bundle's (options.Merge: values merge as maps).
    let extra = custom.map_or(&target["helm"]["values"], |c| &c["helm"]["values"]);
    if extra.is_object() {
        values = merge(&values, extra);
    }
    let labels = template_labels(&cluster.labels);
    let disable = fleet_yaml["helm"]["disablePreProcess"] == true;
    if !labels.is_empty() {
        template::process_label_values(&mut values, &labels);
    }
    if !disable && !labels.is_empty() {
        let context = serde_json::json!({
            "ClusterNamespace": cluster.namespace,
            "ClusterName": cluster.name,
            "ClusterLabels": labels,
            "ClusterAnnotations": template_labels(&cluster.annotations),
            "ClusterValues": if cluster.template_values.is_null() { Value::Object(Map::new()) } else { cluster.template_values.clone() },
        });
        values = template::process_template_values(&values, &context)?;
    }
    Ok(Decision::Deploy {
        target: name(target),
        customization: custom.map(name),
        values,
    })
}

/// The fleet Cluster Rancher creates for a management cluster (docs/rancher.md, Fleet):
/// its labels minus keys containing `cattle.io/`, plus the cluster-name and display-name
/// labels.
pub fn fleet_cluster_from_rancher(
    provisioning_name: &str,
    workspace: &str,
    management_id: &str,
    management_labels: &[(&str, &str)],
) -> Cluster {
    let mut labels: Map<String, Value> = management_labels
        .iter()
        .filter(|(k, _)| !k.contains("cattle.io/"))
        .map(|(k, v)| ((*k).to_string(), Value::String((*v).to_string())))
        .collect();
    labels.insert(
        "management.cattle.io/cluster-name".into(),
        Value::String(management_id.into()),
    );
    labels.insert(
        "management.cattle.io/cluster-display-name".into(),
        Value::String(provisioning_name.into()),
    );
    Cluster {
        name: provisioning_name.into(),
        namespace: workspace.into(),
        labels,
        annotations: Map::new(),
        template_values: Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn selectors_follow_kubernetes() {
        let l = labels(json!({"a": "1"}));
        assert!(
            selector_matches(&json!({}), &l),
            "empty selector: everything"
        );
        assert!(selector_matches(
            &json!({"matchExpressions": [{"key": "b", "operator": "NotIn", "values": ["x"]}]}),
            &l
        ));
        assert!(!selector_matches(
            &json!({"matchExpressions": [{"key": "b", "operator": "In", "values": ["x"]}]}),
            &l
        ));
        assert!(selector_matches(
            &json!({"matchExpressions": [{"key": "b", "operator": "DoesNotExist"}]}),
            &l
        ));
    }

    #[test]
    fn a_target_without_criteria_matches_nothing() {
        let c = fleet_cluster_from_rancher("x", "fleet-default", "c-m-aaaaaaaa", &[]);
        assert!(!target_matches(&json!({"name": "t"}), &c));
    }

    #[test]
    fn cattle_labels_never_reach_templates_except_fleet_and_management() {
        let l = labels(
            json!({"a.cattle.io/x": "1", "management.cattle.io/cluster-name": "c", "kubectl.kubernetes.io/y": "2", "env": "p"}),
        );
        let t = template_labels(&l);
        assert_eq!(
            t.keys().cloned().collect::<Vec<_>>(),
            vec![
                "env".to_string(),
                "management.cattle.io/cluster-name".to_string()
            ]
        );
    }
}
