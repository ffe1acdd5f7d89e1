//! The hub chart's Fleet workspace values: `fleetWorkspaceForProject` and
//! `createFleetWorkspaces` reach the hub as its flags, and the RBAC follows them — by
//! default provisioning clusters are read cluster-wide (one watch) but written only in
//! the one workspace; with per-project workspaces the writes are cluster-wide (the
//! workspaces may not exist at install); FleetWorkspaces may be created only with
//! `createFleetWorkspaces`.

use std::collections::BTreeSet;

use serde_json::Value;
use vclink_packaging_tests::helm::render_with;
use vclink_packaging_tests::objects::{Object, objects};
use vclink_packaging_tests::{Rendered, cases};

fn render_values(yaml: &str) -> Rendered {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("values.yaml");
    std::fs::write(&file, yaml).expect("write values");
    render_with(cases::case("hub-default").expect("case"), &[file]).expect("render")
}

fn env_of(objs: &[Object], name: &str) -> Option<String> {
    let deploy = objs.iter().find(|o| o.kind() == "Deployment")?;
    deploy.value["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
        .map(str::to_string)
}

/// Verbs the ClusterRole `vclink-hub` grants on `group`/`resource`.
fn cluster_verbs(objs: &[Object], group: &str, resource: &str) -> BTreeSet<String> {
    let cr = objs
        .iter()
        .find(|o| o.kind() == "ClusterRole" && o.name() == "vclink-hub")
        .expect("the hub's ClusterRole");
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    cr.value["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| {
            strs(&r["apiGroups"]).contains(&group.to_string())
                && strs(&r["resources"]).contains(&resource.to_string())
        })
        .flat_map(|r| strs(&r["verbs"]))
        .collect()
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn by_default_one_workspace_is_written_and_none_is_created() {
    let r = render_values("{}\n");
    assert_eq!(r.schema_error, None);
    let objs = objects("hub-default", &r).expect("objects");
    assert_eq!(env_of(&objs, "VCLINK_FLEET_WORKSPACE_FOR_PROJECT"), None);
    assert_eq!(
        env_of(&objs, "VCLINK_CREATE_FLEET_WORKSPACES").as_deref(),
        Some("false")
    );
    assert_eq!(
        cluster_verbs(&objs, "provisioning.cattle.io", "clusters"),
        set(&["list", "watch"])
    );
    assert!(cluster_verbs(&objs, "management.cattle.io", "fleetworkspaces").is_empty());
    assert!(
        objs.iter()
            .any(|o| o.kind() == "Role" && o.name() == "vclink-hub-workspace"),
        "writes go through the workspace's Role"
    );
}

#[test]
fn per_project_workspaces_become_flags_and_cluster_wide_writes() {
    let r = render_values(
        "ownerSync:\n  mode: disabled\nfleetWorkspaceForProject:\n  \"c-m-abcd1234:p-xk2lm\": team-a\n  Team B: ws-b\ncreateFleetWorkspaces: true\n",
    );
    assert_eq!(r.schema_error, None);
    let objs = objects("hub-default", &r).expect("objects");
    assert_eq!(
        env_of(&objs, "VCLINK_FLEET_WORKSPACE_FOR_PROJECT").as_deref(),
        Some("Team B=ws-b,c-m-abcd1234:p-xk2lm=team-a")
    );
    assert_eq!(
        env_of(&objs, "VCLINK_CREATE_FLEET_WORKSPACES").as_deref(),
        Some("true")
    );
    assert_eq!(
        cluster_verbs(&objs, "provisioning.cattle.io", "clusters"),
        set(&["list", "watch", "get", "patch", "delete"]),
        "no create: clusters are created as the hub's Rancher user"
    );
    assert_eq!(
        cluster_verbs(&objs, "management.cattle.io", "fleetworkspaces"),
        set(&["create"])
    );
    assert_eq!(
        cluster_verbs(&objs, "management.cattle.io", "projects"),
        set(&["list", "watch"]),
        "display names are watched even without owner sync"
    );
    assert!(
        !objs
            .iter()
            .any(|o| o.kind() == "Role" && o.name() == "vclink-hub-workspace"),
        "no Role in a workspace that may not exist"
    );
}

#[test]
fn bad_workspace_values_are_refused_at_install() {
    for bad in [
        "fleetWorkspaceForProject:\n  p-abc12: Team_A\n",
        "fleetWorkspaceForProject:\n  \"a,b\": ws\n",
        "fleetWorkspaceForProject: [p-abc12]\n",
        "createFleetWorkspaces: \"yes\"\n",
    ] {
        assert!(
            render_values(bad).schema_error.is_some(),
            "the schema accepts {bad:?}"
        );
    }
}
