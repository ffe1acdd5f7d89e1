//! Rancher's rendering of role bindings into local-cluster RBAC (the part vclink's
//! rights depend on):
//! - A CRTB → for each role template it grants (inherited included) whose rules cover a
//!   cluster management-plane resource, Role `<template>` in the `c-m-` namespace with
//!   those resources and verbs, and RoleBinding `<crtb>-<template>` binding it to the
//!   CRTB's subject (rancher/rancher `pkg/controllers/management/auth/manager.go`
//!   grantManagementPlanePrivileges, resource list of `crtb_handler.go`
//!   clusterManagementPlaneResources). So a cluster owner may create and delete CRTBs
//!   in that one namespace — and nothing else there: no Secrets, no RoleBindings.
//! - A GlobalRoleBinding → ClusterRole `cattle-globalrole-<role>` with the GlobalRole's
//!   `rules`, ClusterRoleBinding `cattle-globalrolebinding-<grb>` to its user, and for
//!   `namespacedRules` a Role and RoleBinding in each named namespace
//!   (`pkg/controllers/management/auth/globalroles`).
//!
//! Upstream removes what it rendered by owner references (garbage collection); the
//! test API servers may run without a garbage collector, so the rendered objects also
//! carry a simulator label naming their binding and are deleted by it.

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::Resource;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use super::Requeue;
use crate::error::{Result, is_not_found};
use crate::kinds;
use crate::state::{MANAGER, Shared, get_opt};
use crate::webhook::rules::Rule;

/// Label on RoleBindings rendered for a CRTB (value: the CRTB's name).
pub const CRTB_LABEL: &str = "rancher-sim.vclink.io/crtb";
/// Label on (Cluster)RoleBindings rendered for a GlobalRoleBinding (value: its name).
pub const GRB_LABEL: &str = "rancher-sim.vclink.io/grb";

/// The cluster management-plane resources and their API group (Rancher 2.12+).
pub const CLUSTER_MANAGEMENT_PLANE: &[(&str, &str)] = &[
    ("clusterscans", "management.cattle.io"),
    ("clusterregistrationtokens", "management.cattle.io"),
    ("clusterroletemplatebindings", "management.cattle.io"),
    ("etcdbackups", "management.cattle.io"),
    ("nodes", "management.cattle.io"),
    ("nodepools", "management.cattle.io"),
    ("projects", "management.cattle.io"),
    ("etcdsnapshots", "rke.cattle.io"),
];

fn field<'a>(o: &'a Value, k: &str) -> &'a str {
    o.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// The Role rules Rancher renders for one role template's rules: one rule per
/// management-plane resource the template covers (a rule naming the resource or `*`,
/// its group or `*`, and no resourceNames), with that rule's verbs.
pub fn management_plane_rules(rules: &[Rule]) -> Vec<Value> {
    let mut out = Vec::new();
    for (resource, group) in CLUSTER_MANAGEMENT_PLANE {
        let mut verbs: Vec<String> = rules
            .iter()
            .filter(|r| {
                (r.resources.iter().any(|x| x == resource || x == "*"))
                    && r.resource_names.is_empty()
                    && r.api_groups.iter().any(|g| g == group || g == "*")
            })
            .flat_map(|r| r.verbs.iter().cloned())
            .collect();
        verbs.sort();
        verbs.dedup();
        if !verbs.is_empty() {
            out.push(json!({"apiGroups": [group], "resources": [resource], "verbs": verbs}));
        }
    }
    out
}

/// The RBAC subject of a CRTB (`userName` → User, a group → Group).
fn crtb_subject(d: &Value) -> Option<Value> {
    let user = field(d, "userName");
    if !user.is_empty() {
        return Some(
            json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user}),
        );
    }
    let group = [field(d, "groupPrincipalName"), field(d, "groupName")]
        .into_iter()
        .find(|g| !g.is_empty())?;
    Some(json!({"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": group}))
}

async fn apply_typed<K>(api: &Api<K>, name: &str, obj: &Value) -> Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await?;
    Ok(())
}

async fn delete_labelled<K>(api: &Api<K>, label: &str, value: &str, keep: &[String]) -> Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let lp = ListParams::default().labels(&format!("{label}={value}"));
    for o in api.list(&lp).await? {
        let name = o.meta().name.clone().unwrap_or_default();
        if keep.contains(&name) {
            continue;
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Renders (or removes) the management-plane RoleBindings of CRTB `ns/name`.
pub async fn reconcile_crtb(shared: &Shared, ns: &str, name: &str) -> Result<Requeue> {
    let rbs: Api<RoleBinding> = Api::namespaced(shared.local.clone(), ns);
    let crtb = get_opt(&kinds::CRTB.ns(&shared.local, ns), name).await?;
    let live = crtb
        .as_ref()
        .filter(|c| c.metadata.deletion_timestamp.is_none());
    let Some(crtb) = live else {
        delete_labelled(&rbs, CRTB_LABEL, name, &[]).await?;
        return Ok(None);
    };
    let Some(subject) = crtb_subject(&crtb.data) else {
        return Ok(None);
    };
    let roles: Api<Role> = Api::namespaced(shared.local.clone(), ns);
    let owner = json!([{"apiVersion": kinds::CRTB.api_version(), "kind": "ClusterRoleTemplateBinding",
        "name": name, "uid": crtb.metadata.uid.clone().unwrap_or_default()}]);
    let mut templates = vec![field(&crtb.data, "roleTemplateName").to_string()];
    let mut seen = std::collections::HashSet::new();
    let mut wanted = Vec::new();
    while let Some(t) = templates.pop() {
        if !seen.insert(t.clone()) {
            continue;
        }
        let Some(rt) = get_opt(&kinds::ROLE_TEMPLATE.all(&shared.local), &t).await? else {
            continue;
        };
        templates.extend(
            rt.data["roleTemplateNames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string),
        );
        let own: Vec<Rule> = rt.data["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .map(Rule::from_json)
            .collect();
        let rules = management_plane_rules(&own);
        if rules.is_empty() {
            continue;
        }
        let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": t, "namespace": ns}, "rules": rules});
        apply_typed(&roles, &t, &role).await?;
        let rb_name = format!("{name}-{t}");
        let rb = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": rb_name, "namespace": ns, "labels": {CRTB_LABEL: name}, "ownerReferences": owner},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": t},
            "subjects": [subject]});
        apply_typed(&rbs, &rb_name, &rb).await?;
        wanted.push(rb_name);
    }
    delete_labelled(&rbs, CRTB_LABEL, name, &wanted).await?;
    Ok(None)
}

/// Renders (or removes) the RBAC of GlobalRoleBinding `name`.
pub async fn reconcile_grb(shared: &Shared, name: &str) -> Result<Requeue> {
    let local = &shared.local;
    let crbs: Api<ClusterRoleBinding> = Api::all(local.clone());
    let grb = get_opt(&kinds::GLOBAL_ROLE_BINDING.all(local), name)
        .await?
        .filter(|g| g.metadata.deletion_timestamp.is_none());
    let Some(grb) = grb else {
        delete_labelled(&crbs, GRB_LABEL, name, &[]).await?;
        // Namespaced RoleBindings carry the same label; find them across namespaces.
        let rbs: Api<RoleBinding> = Api::all(local.clone());
        let lp = ListParams::default().labels(&format!("{GRB_LABEL}={name}"));
        for rb in rbs.list(&lp).await? {
            let ns = rb.metadata.namespace.clone().unwrap_or_default();
            let api: Api<RoleBinding> = Api::namespaced(local.clone(), &ns);
            delete_labelled(&api, GRB_LABEL, name, &[]).await?;
        }
        return Ok(None);
    };
    let gr_name = field(&grb.data, "globalRoleName").to_string();
    let user = field(&grb.data, "userName").to_string();
    let group = field(&grb.data, "groupPrincipalName").to_string();
    let subject = if !user.is_empty() {
        json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user})
    } else if !group.is_empty() {
        json!({"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": group})
    } else {
        return Ok(None);
    };
    let Some(gr) = get_opt(&kinds::GLOBAL_ROLE.all(local), &gr_name).await? else {
        // Rancher retries until the GlobalRole exists.
        return Ok(Some(std::time::Duration::from_secs(1)));
    };
    let owner = json!([{"apiVersion": kinds::GLOBAL_ROLE_BINDING.api_version(), "kind": "GlobalRoleBinding",
        "name": name, "uid": grb.metadata.uid.clone().unwrap_or_default()}]);
    let cr_name = format!("cattle-globalrole-{gr_name}");
    let rules = gr.data.get("rules").cloned().unwrap_or_else(|| json!([]));
    let cr = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": cr_name}, "rules": rules});
    apply_typed(&Api::<ClusterRole>::all(local.clone()), &cr_name, &cr).await?;
    let crb_name = format!("cattle-globalrolebinding-{name}");
    let crb = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": crb_name, "labels": {GRB_LABEL: name}, "ownerReferences": owner},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cr_name},
        "subjects": [subject]});
    apply_typed(&crbs, &crb_name, &crb).await?;
    let namespaced: BTreeMap<String, Value> = gr
        .data
        .get("namespacedRules")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    for (ns, rules) in namespaced {
        let role_name = format!("{gr_name}-{ns}");
        let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": role_name, "namespace": ns}, "rules": rules});
        apply_typed(
            &Api::<Role>::namespaced(local.clone(), &ns),
            &role_name,
            &role,
        )
        .await?;
        let rb_name = format!("{name}-{ns}");
        let rb = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": rb_name, "namespace": ns, "labels": {GRB_LABEL: name}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role_name},
            "subjects": [subject]});
        apply_typed(
            &Api::<RoleBinding>::namespaced(local.clone(), &ns),
            &rb_name,
            &rb,
        )
        .await?;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_owner_renders_management_plane_only() {
        let owner = vec![
            Rule::from_json(&json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]})),
            Rule::from_json(&json!({"nonResourceURLs": ["*"], "verbs": ["*"]})),
        ];
        let rules = management_plane_rules(&owner);
        assert_eq!(rules.len(), CLUSTER_MANAGEMENT_PLANE.len());
        let crtbs = rules
            .iter()
            .find(|r| r["resources"][0] == "clusterroletemplatebindings")
            .expect("CRTBs are management-plane");
        assert_eq!(crtbs["verbs"], json!(["*"]));
        assert_eq!(crtbs["apiGroups"], json!(["management.cattle.io"]));
        assert!(
            rules.iter().all(|r| r["resources"][0] != "*"
                && r["resources"][0] != "secrets"
                && r["resources"][0] != "rolebindings"),
            "no wildcard, Secret or RoleBinding rights in the cluster namespace: {rules:?}"
        );
    }

    #[test]
    fn member_renders_read_of_crtbs() {
        let member = vec![
            Rule::from_json(
                &json!({"apiGroups": ["management.cattle.io"], "resources": ["clusterroletemplatebindings", "projects"], "verbs": ["get", "list", "watch"]}),
            ),
            Rule::from_json(
                &json!({"apiGroups": ["management.cattle.io"], "resources": ["clusters"], "resourceNames": ["local"], "verbs": ["get"]}),
            ),
        ];
        let rules = management_plane_rules(&member);
        assert_eq!(rules.len(), 2);
        assert!(
            rules
                .iter()
                .all(|r| r["verbs"] == json!(["get", "list", "watch"]))
        );
        assert!(management_plane_rules(&[]).is_empty());
    }

    #[test]
    fn subjects_of_crtbs() {
        assert_eq!(
            crtb_subject(&json!({"userName": "u-1"})).unwrap()["kind"],
            "User"
        );
        assert_eq!(
            crtb_subject(&json!({"groupPrincipalName": "github_team://1"})).unwrap()["name"],
            "github_team://1"
        );
        assert!(crtb_subject(&json!({"userPrincipalName": "local://u-1"})).is_none());
    }
}
