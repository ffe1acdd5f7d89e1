//! The agent chart's `uninstall` values: off by default (no extra RBAC, no flag), and
//! with `uninstall.enabled=true` exactly the grants the agent's uninstall uses — the
//! namespaced kinds of `agent/src/uninstall/select.rs` (no cluster-scoped kind), Secret
//! reads for Helm's release records, and ConfigMaps in the agent's own namespace only.

use std::collections::BTreeSet;

use serde_json::Value;
use vclink_packaging_tests::helm::render_with;
use vclink_packaging_tests::objects::{Object, objects};
use vclink_packaging_tests::{cases, render};

const NAME: &str = "vclink-agent-uninstall";

fn with(values: &str) -> Result<Vec<Object>, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("uninstall.yaml");
    std::fs::write(&file, values).expect("values");
    let case = cases::case("agent-default").expect("case");
    let r = render_with(case, &[file]).map_err(|e| e.to_string())?;
    if let Some(e) = r.schema_error {
        return Err(e);
    }
    Ok(objects(case.name, &r).expect("objects"))
}

fn strs(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn env(objs: &[Object]) -> BTreeSet<String> {
    let d = objs
        .iter()
        .find(|o| o.kind() == "Deployment")
        .expect("Deployment");
    d.value["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["value"] == "true")
        .filter_map(|e| e["name"].as_str().map(str::to_string))
        .collect()
}

/// `plural` of every kind the agent removes, read from its source.
fn agent_kinds() -> BTreeSet<String> {
    let src = std::fs::read_to_string(
        vclink_packaging_tests::repo_root().join("agent/src/uninstall/select.rs"),
    )
    .expect("select.rs");
    src.lines()
        .filter_map(|l| l.trim().strip_prefix("plural: \""))
        .filter_map(|l| l.strip_suffix("\","))
        .map(str::to_string)
        .collect()
}

#[test]
fn by_default_the_agent_gets_no_uninstall_rbac_and_no_flag() {
    let case = cases::case("agent-default").expect("case");
    let objs = objects(case.name, &render(case).expect("render")).expect("objects");
    assert!(
        objs.iter().all(|o| !o.name().ends_with("-uninstall")),
        "no uninstall RBAC by default"
    );
    let env = env(&objs);
    assert!(!env.contains("VCLINK_ALLOW_UNINSTALL"), "{env:?}");
}

#[test]
fn enabled_grants_exactly_what_the_uninstall_uses() {
    let objs = with("uninstall:\n  enabled: true\n  onClusterDelete: true\n").expect("render");
    let env = env(&objs);
    assert!(
        env.contains("VCLINK_ALLOW_UNINSTALL")
            && env.contains("VCLINK_UNINSTALL_ON_CLUSTER_DELETE"),
        "{env:?}"
    );
    let cr = objs
        .iter()
        .find(|o| o.kind() == "ClusterRole" && o.name() == NAME)
        .expect("the uninstall ClusterRole");
    let mut deletable = BTreeSet::new();
    for r in cr.value["rules"].as_array().expect("rules") {
        let verbs = strs(&r["verbs"]);
        for res in strs(&r["resources"]) {
            assert!(!res.starts_with("cluster"), "no cluster-scoped kind: {res}");
            if res == "secrets" {
                assert_eq!(
                    verbs,
                    BTreeSet::from(["get".into(), "list".into(), "delete".into()])
                );
            } else {
                assert_eq!(
                    verbs,
                    BTreeSet::from(["get".into(), "delete".into()]),
                    "{res}"
                );
            }
            deletable.insert(res);
        }
    }
    assert_eq!(
        deletable,
        agent_kinds(),
        "chart RBAC and the agent's kinds agree"
    );
    let role = objs
        .iter()
        .find(|o| o.kind() == "Role" && o.name() == NAME)
        .expect("the uninstall Role");
    assert_eq!(
        role.namespace(),
        Some("vclink-system"),
        "the agent's own namespace"
    );
    let rules = role.value["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), 1);
    assert_eq!(
        strs(&rules[0]["resources"]),
        BTreeSet::from(["configmaps".into()])
    );
    for kind in ["ClusterRoleBinding", "RoleBinding"] {
        let b = objs
            .iter()
            .find(|o| o.kind() == kind && o.name() == NAME)
            .unwrap_or_else(|| panic!("{kind}"));
        assert_eq!(b.value["subjects"][0]["name"], "vclink-agent");
    }
}

#[test]
fn uninstalling_by_default_needs_uninstall_enabled() {
    let e = with("uninstall:\n  onClusterDelete: true\n").unwrap_err();
    assert!(e.contains("uninstall.enabled"), "{e}");
    let e = with("uninstall:\n  enable: true\n").unwrap_err();
    assert!(!e.is_empty(), "a misspelt key is refused by the schema");
}
