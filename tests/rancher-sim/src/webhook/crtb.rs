//! CRTB and PRTB admission (rancher-model.md §6): exactly one subject, `clusterName` =
//! namespace, immutable role/cluster/subject, deterministic names for `generateName`
//! creates in Rancher 2.14+ (so duplicates get 409 from the API server), and the
//! escalation check — each rule of the role template (inherited ones included) must be
//! held by the requester, by local RBAC in the cluster's namespace (SubjectAccessReview,
//! plus the rules of RoleBindings there, which Rancher's resolver counts even for
//! nonResourceURLs) or by a CRTB of theirs in that cluster.

use std::collections::HashSet;

use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

use super::rules::{Attr, Rule, covers, expand};
use super::{Req, Verdict};
use crate::error::Result;
use crate::kinds;
use crate::names::deterministic_crtb_name;
use crate::state::{Shared, get_opt};

fn field<'a>(o: &'a Value, k: &str) -> &'a str {
    o.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// `user:<x>` / `group:<x>` / `serviceAccount:<x>`, or an error when not exactly one.
pub fn subject(o: &Value, allow_sa: bool) -> Result<String, String> {
    let user = [field(o, "userName"), field(o, "userPrincipalName")]
        .into_iter()
        .find(|s| !s.is_empty());
    let group = [field(o, "groupName"), field(o, "groupPrincipalName")]
        .into_iter()
        .find(|s| !s.is_empty());
    let sa = Some(field(o, "serviceAccount")).filter(|s| allow_sa && !s.is_empty());
    match (user, group, sa) {
        (Some(u), None, None) => Ok(format!("user:{u}")),
        (None, Some(g), None) => Ok(format!("group:{g}")),
        (None, None, Some(s)) => Ok(format!("serviceAccount:{s}")),
        (None, None, None) => Err("binding must target a user or a group".into()),
        _ => Err("binding must target exactly one subject: a user or a group, not both".into()),
    }
}

pub fn mutate(shared: &Shared, req: &Req<'_>) -> Verdict {
    let meta = &req.object["metadata"];
    let generate = meta["generateName"].as_str().unwrap_or_default();
    if req.operation != "CREATE"
        || !shared.opts.version.deterministic_crtb_names()
        || generate.is_empty()
        || !meta["name"].as_str().unwrap_or_default().is_empty()
    {
        return Verdict::Allow;
    }
    let Ok(subj) = subject(req.object, false) else {
        return Verdict::Allow;
    };
    let name = deterministic_crtb_name(
        generate,
        field(req.object, "clusterName"),
        field(req.object, "roleTemplateName"),
        &subj,
    );
    Verdict::Patch(vec![
        json!({"op": "add", "path": "/metadata/name", "value": name}),
    ])
}

/// Checks that do not need the API server.
pub fn static_checks(
    req: &Req<'_>,
    kind: &str,
    allow_sa: bool,
    immutable: &[&str],
) -> Option<Verdict> {
    let o = req.object;
    if let Err(msg) = subject(o, allow_sa) {
        return Some(Verdict::Deny(400, msg));
    }
    if field(o, "roleTemplateName").is_empty() {
        return Some(Verdict::Deny(400, "roleTemplateName is required".into()));
    }
    if kind == "crtb" {
        if field(o, "clusterName").is_empty() {
            return Some(Verdict::Deny(400, "clusterName is required".into()));
        }
        if field(o, "clusterName") != req.namespace {
            return Some(Verdict::Deny(
                400,
                format!("clusterName must equal the namespace {}", req.namespace),
            ));
        }
    } else if field(o, "projectName").is_empty() {
        return Some(Verdict::Deny(400, "projectName is required".into()));
    }
    if req.operation == "UPDATE" {
        let old = req.old_object;
        for k in immutable {
            if field(old, k) != field(o, k) {
                return Some(Verdict::Deny(400, format!("{k} is immutable")));
            }
        }
        for k in [
            "userName",
            "userPrincipalName",
            "groupName",
            "groupPrincipalName",
            "serviceAccount",
        ] {
            if !field(old, k).is_empty() && field(old, k) != field(o, k) {
                return Some(Verdict::Deny(
                    400,
                    format!("{k} cannot be changed once set"),
                ));
            }
        }
    }
    None
}

pub fn validate_prtb(req: &Req<'_>) -> Verdict {
    static_checks(req, "prtb", true, &["roleTemplateName", "projectName"]).unwrap_or(Verdict::Allow)
}

pub async fn validate_crtb(shared: &Shared, req: &Req<'_>) -> Verdict {
    if let Some(v) = static_checks(req, "crtb", false, &["roleTemplateName", "clusterName"]) {
        return v;
    }
    if req.operation != "CREATE" {
        return Verdict::Allow;
    }
    // The API server turns a clash of a generated name into a 500 ("try again"), so the
    // webhook itself refuses a duplicate with 409, as webhook v0.10 does.
    let meta = &req.object["metadata"];
    let name = meta["name"].as_str().unwrap_or_default();
    if shared.opts.version.deterministic_crtb_names()
        && !meta["generateName"].as_str().unwrap_or_default().is_empty()
    {
        match get_opt(&kinds::CRTB.ns(&shared.local, req.namespace), name).await {
            Ok(Some(_)) => {
                return Verdict::Deny(
                    409,
                    format!(
                        "clusterroletemplatebindings.management.cattle.io \"{name}\" already exists: the same role is already granted to this subject"
                    ),
                );
            }
            Ok(None) => {}
            Err(e) => return Verdict::Deny(500, format!("cannot check for duplicates: {e}")),
        }
    }
    let role = field(req.object, "roleTemplateName");
    match escalation(shared, req, role).await {
        Ok(v) => v,
        Err(e) => Verdict::Deny(500, format!("escalation check failed: {e}")),
    }
}

/// A role template's rules including inherited templates; `None` when it is missing.
async fn resolve(shared: &Shared, role: &str) -> Result<Option<(Value, Vec<Rule>)>> {
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

async fn escalation(shared: &Shared, req: &Req<'_>, role: &str) -> Result<Verdict> {
    let Some((template, rules)) = resolve(shared, role).await? else {
        return Ok(Verdict::Deny(
            400,
            format!("role template {role} not found"),
        ));
    };
    if template["locked"].as_bool() == Some(true) {
        return Ok(Verdict::Deny(
            400,
            format!("role template {role} is locked"),
        ));
    }
    if field(&template, "context") != "cluster" {
        return Ok(Verdict::Deny(
            400,
            format!("role template {role} is not a cluster role template"),
        ));
    }
    let mut granted: Option<Vec<Rule>> = None;
    for rule in &rules {
        for attr in expand(rule) {
            if sar(shared, req, &attr).await? {
                continue;
            }
            if granted.is_none() {
                let mut g = crtb_rules(shared, req).await?;
                g.extend(rolebinding_rules(shared, req).await?);
                granted = Some(g);
            }
            if granted
                .as_ref()
                .is_some_and(|g| g.iter().any(|r| covers(r, &attr)))
            {
                continue;
            }
            return Ok(Verdict::Deny(
                403,
                format!(
                    "user {} is attempting to grant RBAC permissions not currently held: {} (missing {:?})",
                    req.username,
                    rule.describe(),
                    attr
                ),
            ));
        }
    }
    Ok(Verdict::Allow)
}

/// Rules the requester holds through CRTBs in the cluster.
async fn crtb_rules(shared: &Shared, req: &Req<'_>) -> Result<Vec<Rule>> {
    let list = kinds::CRTB
        .ns(&shared.local, req.namespace)
        .list(&ListParams::default())
        .await?;
    let mut out = Vec::new();
    for b in list.items {
        let d = &b.data;
        let mine = field(d, "userName") == req.username
            || req
                .groups
                .iter()
                .any(|g| !g.is_empty() && field(d, "groupName") == g);
        if mine && let Some((_, rules)) = resolve(shared, field(d, "roleTemplateName")).await? {
            out.extend(rules);
        }
    }
    Ok(out)
}

/// Rules the requester holds through RoleBindings in the cluster's namespace. Rancher's
/// webhook resolves rules like Kubernetes' RBAC rule resolver does (RoleBindings in the
/// namespace included, nonResourceURLs of a bound ClusterRole included), which a
/// SubjectAccessReview alone does not reproduce for nonResourceURLs.
async fn rolebinding_rules(shared: &Shared, req: &Req<'_>) -> Result<Vec<Rule>> {
    let bindings: Api<RoleBinding> = Api::namespaced(shared.local.clone(), req.namespace);
    let mut out = Vec::new();
    for b in bindings.list(&ListParams::default()).await?.items {
        let mine = b.subjects.iter().flatten().any(|s| match s.kind.as_str() {
            "User" => s.name == req.username,
            "Group" => req.groups.contains(&s.name),
            "ServiceAccount" => {
                let ns = s.namespace.as_deref().unwrap_or(req.namespace);
                req.username == format!("system:serviceaccount:{ns}:{}", s.name)
            }
            _ => false,
        });
        if !mine {
            continue;
        }
        let rules = match b.role_ref.kind.as_str() {
            "ClusterRole" => Api::<ClusterRole>::all(shared.local.clone())
                .get_opt(&b.role_ref.name)
                .await?
                .and_then(|r| r.rules),
            _ => Api::<Role>::namespaced(shared.local.clone(), req.namespace)
                .get_opt(&b.role_ref.name)
                .await?
                .and_then(|r| r.rules),
        };
        for r in rules.into_iter().flatten() {
            out.push(Rule::from_json(&serde_json::to_value(&r)?));
        }
    }
    Ok(out)
}

/// Asks the local API server whether the requester may do `attr` in the cluster's
/// namespace (what Rancher's resolver asks: ClusterRoleBindings and RoleBindings there).
async fn sar(shared: &Shared, req: &Req<'_>, attr: &Attr) -> Result<bool> {
    let attrs = match attr {
        Attr::Resource {
            verb,
            group,
            resource,
            subresource,
            name,
        } => json!({"resourceAttributes": {
            "namespace": req.namespace, "verb": verb, "group": group, "resource": resource, "subresource": subresource, "name": name}}),
        Attr::NonResource { verb, path } => {
            json!({"nonResourceAttributes": {"verb": verb, "path": path}})
        }
    };
    let mut spec = attrs;
    spec["user"] = json!(req.username);
    spec["groups"] = json!(req.groups);
    let review: SubjectAccessReview = serde_json::from_value(json!({"spec": spec}))?;
    let api: Api<SubjectAccessReview> = Api::all(shared.local.clone());
    let out = api.create(&PostParams::default(), &review).await?;
    Ok(out.status.is_some_and(|s| s.allowed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects() {
        assert_eq!(
            subject(&json!({"userName": "u-1"}), false),
            Ok("user:u-1".into())
        );
        assert_eq!(
            subject(
                &json!({"userName": "u-1", "userPrincipalName": "local://u-1"}),
                false
            ),
            Ok("user:u-1".into())
        );
        assert!(subject(&json!({"userName": "u-1", "groupName": "g"}), false).is_err());
        assert!(subject(&json!({}), false).is_err());
        assert!(subject(&json!({"serviceAccount": "ns:sa"}), false).is_err());
        assert!(subject(&json!({"serviceAccount": "ns:sa"}), true).is_ok());
    }

    #[test]
    fn immutable_fields() {
        let old = json!({"clusterName": "c-m-1", "roleTemplateName": "cluster-member", "userName": "u-1"});
        let new =
            json!({"clusterName": "c-m-1", "roleTemplateName": "cluster-owner", "userName": "u-1"});
        let req = Req {
            operation: "UPDATE",
            namespace: "c-m-1",
            username: "a",
            groups: vec![],
            object: &new,
            old_object: &old,
        };
        assert!(matches!(
            static_checks(&req, "crtb", false, &["roleTemplateName", "clusterName"]),
            Some(Verdict::Deny(400, _))
        ));
        let req = Req {
            operation: "CREATE",
            namespace: "c-m-2",
            username: "a",
            groups: vec![],
            object: &old,
            old_object: &Value::Null,
        };
        assert!(matches!(
            static_checks(&req, "crtb", false, &[]),
            Some(Verdict::Deny(400, _))
        ));
    }
}
