//! CRTB and PRTB admission (docs/rancher.md: Projects and role bindings), after rancher/webhook
//! `pkg/resources/management.cattle.io/v3/clusterroletemplatebinding/{mutator,validator}.go`:
//! exactly one subject, `clusterName` = namespace, immutable role/cluster/subject;
//! from webhook v0.10 (Rancher 2.14) a new CRTB granting a role its subject already
//! holds in the cluster is refused with 409 whatever its name; from v0.11 (2.15)
//! `generateName` creates get a deterministic name; and the escalation check — each
//! rule of the role template (inherited ones included) must be held by the requester,
//! resolved as [`super::resolver`] describes (local RBAC objects plus the requester's
//! CRTBs in that cluster), with no bypass.

use kube::api::ListParams;
use serde_json::{Value, json};

use super::resolver::{requester_rules, template_rules};
use super::rules::{covers, expand};
use super::{Req, Verdict};
use crate::error::Result;
use crate::kinds;
use crate::names::deterministic_crtb_name;
use crate::state::Shared;

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
    if shared.opts.version.refuses_duplicate_crtbs() {
        match duplicate_of(shared, req).await {
            Ok(Some(existing)) => {
                return Verdict::Deny(
                    409,
                    format!(
                        "clusterroletemplatebinding {existing} already grants role template {} to this subject in cluster {}",
                        field(req.object, "roleTemplateName"),
                        req.namespace
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

/// Does the subject and role of two CRTBs coincide? (each subject field compared when
/// set on the new one, as upstream's validateDuplicates).
pub fn same_grant(new: &Value, old: &Value) -> bool {
    if field(new, "roleTemplateName") != field(old, "roleTemplateName") {
        return false;
    }
    [
        "userName",
        "userPrincipalName",
        "groupName",
        "groupPrincipalName",
    ]
    .iter()
    .any(|k| !field(new, k).is_empty() && field(new, k) == field(old, k))
}

/// The name of an existing CRTB of the cluster granting the same role to the same
/// subject (webhook v0.10+ refuses the new one, whatever its name).
async fn duplicate_of(shared: &Shared, req: &Req<'_>) -> Result<Option<String>> {
    let list = kinds::CRTB
        .ns(&shared.local, req.namespace)
        .list(&ListParams::default())
        .await?;
    Ok(list
        .items
        .into_iter()
        .find(|b| same_grant(req.object, &b.data))
        .map(|b| b.metadata.name.unwrap_or_default()))
}

async fn escalation(shared: &Shared, req: &Req<'_>, role: &str) -> Result<Verdict> {
    let Some((template, rules)) = template_rules(shared, role).await? else {
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
    let held = requester_rules(shared, req).await?;
    for rule in &rules {
        for attr in expand(rule) {
            if held.iter().any(|r| covers(r, &attr)) {
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
    fn duplicates_are_same_role_and_subject() {
        let a = json!({"roleTemplateName": "cluster-owner", "userName": "u-1"});
        assert!(same_grant(
            &a,
            &json!({"roleTemplateName": "cluster-owner", "userName": "u-1", "userPrincipalName": "local://u-1"})
        ));
        assert!(!same_grant(
            &a,
            &json!({"roleTemplateName": "cluster-member", "userName": "u-1"})
        ));
        assert!(!same_grant(
            &a,
            &json!({"roleTemplateName": "cluster-owner", "userName": "u-2"})
        ));
        let g =
            json!({"roleTemplateName": "cluster-owner", "groupPrincipalName": "github_team://1"});
        assert!(same_grant(&g, &g.clone()));
        assert!(!same_grant(&g, &a));
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
