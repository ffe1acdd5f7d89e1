//! Provisioning-cluster admission (rancher-model.md §2): name rules; the mutator sets
//! `field.cattle.io/creatorId` to the requesting user unless `no-creator-rbac` is set;
//! the validator refuses a creatorId together with `no-creator-rbac`, a creatorId that is
//! not the requester on create, and a changed creatorId on update.

use serde_json::{Value, json};

use super::{Req, Verdict, pointer_escape};
use crate::kinds::keys;
use crate::names::provisioning_name_error;

fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj["metadata"]["annotations"]
        .get(key)
        .and_then(Value::as_str)
}

pub fn mutate(req: &Req<'_>) -> Verdict {
    if req.operation != "CREATE" || annotation(req.object, keys::NO_CREATOR_RBAC) == Some("true") {
        return Verdict::Allow;
    }
    if req.object["metadata"]["annotations"].is_object() {
        Verdict::Patch(vec![
            json!({"op": "add", "path": format!("/metadata/annotations/{}", pointer_escape(keys::CREATOR_ID)),
            "value": req.username}),
        ])
    } else {
        Verdict::Patch(vec![
            json!({"op": "add", "path": "/metadata/annotations", "value": {keys::CREATOR_ID: req.username}}),
        ])
    }
}

pub fn validate(req: &Req<'_>) -> Verdict {
    let obj = req.object;
    let creator = annotation(obj, keys::CREATOR_ID);
    if annotation(obj, keys::NO_CREATOR_RBAC) == Some("true") && creator.is_some() {
        return Verdict::Deny(
            400,
            format!(
                "cluster cannot have annotation {} when {} is set",
                keys::CREATOR_ID,
                keys::NO_CREATOR_RBAC
            ),
        );
    }
    match req.operation {
        "CREATE" => {
            let name = obj["metadata"]["name"].as_str().unwrap_or_default();
            if !name.is_empty()
                && let Some(msg) = provisioning_name_error(name, req.namespace)
            {
                return Verdict::Deny(422, msg);
            }
            if let Some(c) = creator
                && c != req.username
            {
                return Verdict::Deny(
                    400,
                    format!(
                        "{} must be set to the user that initiated the request",
                        keys::CREATOR_ID
                    ),
                );
            }
        }
        "UPDATE" => {
            let old = annotation(req.old_object, keys::CREATOR_ID);
            if creator.is_some() && creator != old {
                return Verdict::Deny(400, format!("{} cannot be changed", keys::CREATOR_ID));
            }
        }
        _ => {}
    }
    Verdict::Allow
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(op: &'a str, obj: &'a Value, old: &'a Value) -> Req<'a> {
        Req {
            operation: op,
            namespace: "fleet-default",
            username: "alice",
            groups: vec![],
            object: obj,
            old_object: old,
        }
    }

    #[test]
    fn creator_rules() {
        let plain = json!({"metadata": {"name": "vc1"}});
        assert!(matches!(
            mutate(&req("CREATE", &plain, &Value::Null)),
            Verdict::Patch(_)
        ));
        let no_rbac =
            json!({"metadata": {"name": "vc1", "annotations": {keys::NO_CREATOR_RBAC: "true"}}});
        assert_eq!(
            mutate(&req("CREATE", &no_rbac, &Value::Null)),
            Verdict::Allow
        );
        assert_eq!(
            validate(&req("CREATE", &no_rbac, &Value::Null)),
            Verdict::Allow
        );
        let both = json!({"metadata": {"name": "vc1", "annotations": {keys::NO_CREATOR_RBAC: "true", keys::CREATOR_ID: "alice"}}});
        assert!(matches!(
            validate(&req("CREATE", &both, &Value::Null)),
            Verdict::Deny(400, _)
        ));
        let other = json!({"metadata": {"name": "vc1", "annotations": {keys::CREATOR_ID: "bob"}}});
        assert!(matches!(
            validate(&req("CREATE", &other, &Value::Null)),
            Verdict::Deny(..)
        ));
        let mine = json!({"metadata": {"name": "vc1", "annotations": {keys::CREATOR_ID: "alice"}}});
        assert!(matches!(
            validate(&req("UPDATE", &other, &mine)),
            Verdict::Deny(..)
        ));
        assert_eq!(
            validate(&req("UPDATE", &plain, &mine)),
            Verdict::Allow,
            "removing is allowed"
        );
        let bad = json!({"metadata": {"name": "c-m-abcd1234"}});
        assert!(matches!(
            validate(&req("CREATE", &bad, &Value::Null)),
            Verdict::Deny(422, _)
        ));
    }
}
