//! Provisioning-cluster admission (docs/rancher.md: Imported clusters): name rules and the creator
//! rules of rancher/webhook `pkg/resources/provisioning.cattle.io/v1/cluster/
//! {mutator,validator}.go` with `pkg/resources/common/{mutation,validation}.go`
//! (unchanged v0.7–main):
//! - CREATE, mutator: `field.cattle.io/creatorId` is OVERWRITTEN with the requesting
//!   user, unless the `field.cattle.io/no-creator-rbac` key is present (any value).
//! - CREATE, validator: a creatorId that is not the requester is refused, and so is any
//!   creatorId together with the `no-creator-rbac` key.
//! - UPDATE, validator: creatorId cannot be changed; removing it is allowed.

use serde_json::{Value, json};

use super::{Req, Verdict, pointer_escape};
use crate::kinds::keys;
use crate::names::provisioning_name_error;

fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj["metadata"]["annotations"]
        .get(key)
        .and_then(Value::as_str)
}

/// Upstream tests for the key, not its value (`if _, ok := annotations[NoCreatorRBACAnn]`).
fn has_annotation(obj: &Value, key: &str) -> bool {
    obj["metadata"]["annotations"].get(key).is_some()
}

pub fn mutate(req: &Req<'_>) -> Verdict {
    if req.operation != "CREATE" || has_annotation(req.object, keys::NO_CREATOR_RBAC) {
        return Verdict::Allow;
    }
    // JSON Patch `add` on an existing member replaces it: a creatorId the client sent is
    // overwritten, as upstream's `annotations[CreatorIDAnn] = request.UserInfo.Username`.
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
    match req.operation {
        "CREATE" => {
            if has_annotation(obj, keys::NO_CREATOR_RBAC) && creator.is_some() {
                return Verdict::Deny(
                    400,
                    "cannot have creatorID annotation when no-creator-rbac is set".into(),
                );
            }
            let name = obj["metadata"]["name"].as_str().unwrap_or_default();
            if !name.is_empty()
                && let Some(msg) = provisioning_name_error(name, req.namespace)
            {
                return Verdict::Deny(422, msg);
            }
            if let Some(c) = creator
                && c != req.username
            {
                return Verdict::Deny(400, "creatorID annotation does not match user".into());
            }
        }
        "UPDATE" => {
            let old = annotation(req.old_object, keys::CREATOR_ID);
            if creator.is_some() && creator != old {
                return Verdict::Deny(400, "creatorID annotation cannot be changed".into());
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
        // the key counts, whatever its value
        let no_rbac_false =
            json!({"metadata": {"name": "vc1", "annotations": {keys::NO_CREATOR_RBAC: "false"}}});
        assert_eq!(
            mutate(&req("CREATE", &no_rbac_false, &Value::Null)),
            Verdict::Allow
        );
        let both_false = json!({"metadata": {"name": "vc1", "annotations": {keys::NO_CREATOR_RBAC: "", keys::CREATOR_ID: "alice"}}});
        assert!(matches!(
            validate(&req("CREATE", &both_false, &Value::Null)),
            Verdict::Deny(400, _)
        ));
        // a creatorId sent by the client is overwritten with the requester
        let Verdict::Patch(ops) = mutate(&req("CREATE", &other, &Value::Null)) else {
            panic!("expected a patch");
        };
        assert_eq!(ops[0]["op"], "add");
        assert_eq!(ops[0]["value"], "alice");
        assert_eq!(
            validate(&req("UPDATE", &mine, &mine)),
            Verdict::Allow,
            "unchanged is allowed"
        );
        let bad = json!({"metadata": {"name": "c-m-abcd1234"}});
        assert!(matches!(
            validate(&req("CREATE", &bad, &Value::Null)),
            Verdict::Deny(422, _)
        ));
    }
}
