//! Whose rules count in the CRTB escalation check, as rancher/webhook resolves them
//! (`pkg/resources/management.cattle.io/v3/clusterroletemplatebinding/validator.go`
//! with `pkg/resolvers`): an aggregate of
//! - local-cluster RBAC, read from the objects (Rancher reads its Role / RoleBinding /
//!   ClusterRole / ClusterRoleBinding caches, it sends no SubjectAccessReview): every
//!   ClusterRoleBinding, plus the RoleBindings in the cluster's `c-m-` namespace, whose
//!   subject is the requester (user, one of its groups, or its ServiceAccount);
//! - the requester's CRTBs in that cluster (CRTBRuleResolver), by `userName` and by each
//!   of the request's groups, with their role templates' rules (inherited included).
//!
//! There is no bypass: neither `escalate` nor `bind` lets a requester grant a role
//! template it does not hold.

use std::collections::HashSet;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding, Subject};
use kube::api::{Api, ListParams};
use serde_json::Value;

use super::Req;
use super::rules::Rule;
use crate::error::Result;
use crate::kinds;
use crate::state::{Shared, get_opt};

fn field<'a>(o: &'a Value, k: &str) -> &'a str {
    o.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// A role template's own and inherited rules; `None` when it does not exist.
pub async fn template_rules(shared: &Shared, role: &str) -> Result<Option<(Value, Vec<Rule>)>> {
    let api = kinds::ROLE_TEMPLATE.all(&shared.local);
    let Some(top) = get_opt(&api, role).await? else {
        return Ok(None);
    };
    let mut rules = Vec::new();
    let mut seen = HashSet::new();
    let mut todo = vec![top.data.clone()];
    seen.insert(role.to_string());
    while let Some(t) = todo.pop() {
        rules.extend(
            t["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .map(Rule::from_json),
        );
        for inherited in t["roleTemplateNames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if seen.insert(inherited.to_string())
                && let Some(o) = get_opt(&api, inherited).await?
            {
                todo.push(o.data);
            }
        }
    }
    Ok(Some((top.data, rules)))
}

/// Is `s` the requester? `default_ns` is the binding's namespace (a RoleBinding's
/// ServiceAccount subject may omit its namespace).
pub fn is_requester(s: &Subject, username: &str, groups: &[String], default_ns: &str) -> bool {
    match s.kind.as_str() {
        "User" => s.name == username,
        "Group" => groups.contains(&s.name),
        "ServiceAccount" => {
            let ns = s.namespace.as_deref().unwrap_or(default_ns);
            username == format!("system:serviceaccount:{ns}:{}", s.name)
        }
        _ => false,
    }
}

fn to_rules(rules: Option<Vec<k8s_openapi::api::rbac::v1::PolicyRule>>) -> Result<Vec<Rule>> {
    let mut out = Vec::new();
    for r in rules.into_iter().flatten() {
        out.push(Rule::from_json(&serde_json::to_value(&r)?));
    }
    Ok(out)
}

/// Every rule the requester holds in the cluster whose namespace is `req.namespace`.
pub async fn requester_rules(shared: &Shared, req: &Req<'_>) -> Result<Vec<Rule>> {
    let mut out = local_rbac_rules(shared, req).await?;
    out.extend(crtb_rules(shared, req).await?);
    Ok(out)
}

async fn local_rbac_rules(shared: &Shared, req: &Req<'_>) -> Result<Vec<Rule>> {
    let client = &shared.local;
    let croles: Api<ClusterRole> = Api::all(client.clone());
    let mut out = Vec::new();
    let crbs: Api<ClusterRoleBinding> = Api::all(client.clone());
    for b in crbs.list(&ListParams::default()).await?.items {
        let mine = b
            .subjects
            .iter()
            .flatten()
            .any(|s| is_requester(s, req.username, &req.groups, ""));
        if mine && b.role_ref.kind == "ClusterRole" {
            out.extend(to_rules(
                croles
                    .get_opt(&b.role_ref.name)
                    .await?
                    .and_then(|r| r.rules),
            )?);
        }
    }
    let rbs: Api<RoleBinding> = Api::namespaced(client.clone(), req.namespace);
    let roles: Api<Role> = Api::namespaced(client.clone(), req.namespace);
    for b in rbs.list(&ListParams::default()).await?.items {
        let mine = b
            .subjects
            .iter()
            .flatten()
            .any(|s| is_requester(s, req.username, &req.groups, req.namespace));
        if !mine {
            continue;
        }
        let rules = match b.role_ref.kind.as_str() {
            "ClusterRole" => croles
                .get_opt(&b.role_ref.name)
                .await?
                .and_then(|r| r.rules),
            _ => roles.get_opt(&b.role_ref.name).await?.and_then(|r| r.rules),
        };
        out.extend(to_rules(rules)?);
    }
    Ok(out)
}

/// Is CRTB `d` (its JSON) held by the requester?
pub fn crtb_is_requesters(d: &Value, username: &str, groups: &[String]) -> bool {
    (!username.is_empty() && field(d, "userName") == username)
        || groups.iter().any(|g| {
            !g.is_empty() && (field(d, "groupName") == g || field(d, "groupPrincipalName") == g)
        })
}

async fn crtb_rules(shared: &Shared, req: &Req<'_>) -> Result<Vec<Rule>> {
    let list = kinds::CRTB
        .ns(&shared.local, req.namespace)
        .list(&ListParams::default())
        .await?;
    let mut out = Vec::new();
    for b in list.items {
        if crtb_is_requesters(&b.data, req.username, &req.groups)
            && let Some((_, rules)) =
                template_rules(shared, field(&b.data, "roleTemplateName")).await?
        {
            out.extend(rules);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn subj(kind: &str, name: &str, ns: Option<&str>) -> Subject {
        Subject {
            kind: kind.into(),
            name: name.into(),
            namespace: ns.map(str::to_string),
            api_group: None,
        }
    }

    #[test]
    fn subjects_match_user_group_and_service_account() {
        let groups = vec!["team".to_string(), "system:authenticated".to_string()];
        assert!(is_requester(
            &subj("User", "u-1", None),
            "u-1",
            &groups,
            "c-m-1"
        ));
        assert!(!is_requester(
            &subj("User", "u-2", None),
            "u-1",
            &groups,
            "c-m-1"
        ));
        assert!(is_requester(
            &subj("Group", "team", None),
            "u-1",
            &groups,
            "c-m-1"
        ));
        let sa = "system:serviceaccount:vclink-system:vclink-hub";
        assert!(is_requester(
            &subj("ServiceAccount", "vclink-hub", Some("vclink-system")),
            sa,
            &[],
            "c-m-1"
        ));
        assert!(!is_requester(
            &subj("ServiceAccount", "vclink-hub", None),
            sa,
            &[],
            "c-m-1"
        ));
    }

    #[test]
    fn crtbs_match_by_user_name_and_group() {
        let by_user = json!({"userName": "u-1", "roleTemplateName": "cluster-owner"});
        let by_group =
            json!({"groupPrincipalName": "github_team://7", "roleTemplateName": "cluster-owner"});
        assert!(crtb_is_requesters(&by_user, "u-1", &[]));
        assert!(!crtb_is_requesters(&by_user, "u-2", &[]));
        assert!(crtb_is_requesters(
            &by_group,
            "u-2",
            &["github_team://7".into()]
        ));
        assert!(!crtb_is_requesters(&json!({}), "", &[]));
    }
}
