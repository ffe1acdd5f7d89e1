//! The hub chart's values for host opt-in, nested hosts, operator adoption and the gRPC
//! edge limits reach the hub as the flags they name, and values the hub would refuse at
//! start are refused by the schema at install instead.

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

/// The hub container's environment, name → value.
fn hub_env(objs: &[Object]) -> Vec<(String, String)> {
    let deploy = objs
        .iter()
        .find(|o| o.kind() == "Deployment")
        .expect("the hub Deployment");
    deploy.value["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_string(),
                e.get("value").and_then(Value::as_str)?.to_string(),
            ))
        })
        .collect()
}

fn get<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

#[test]
fn defaults_keep_nested_hosts_and_adoption_off() {
    let r = render_values("{}\n");
    assert_eq!(r.schema_error, None);
    let env = hub_env(&objects("hub-default", &r).expect("objects"));
    assert_eq!(
        get(&env, "VCLINK_HOST_SELECTOR"),
        Some("vclink.io/agent=enabled")
    );
    assert_eq!(get(&env, "VCLINK_ALLOW_NESTED_HOSTS"), Some("false"));
    assert_eq!(
        get(&env, "VCLINK_ADOPT_OPERATOR_CLUSTERS_CREATED_BY"),
        None,
        "adoption is off unless a user is named"
    );
}

#[test]
fn set_values_become_the_hub_s_flags() {
    let r = render_values(
        "hostSelector: example.com/vclink=yes\nallowNestedHosts: true\n\
         maxVclustersPerNamespace: 7\nadoptOperatorClusters:\n  createdBy: vcluster-rancher-operator\n\
         maxConnections: 20000\nmaxUnauthenticatedStreams: 64\n",
    );
    assert_eq!(r.schema_error, None);
    let env = hub_env(&objects("hub-default", &r).expect("objects"));
    for (name, want) in [
        ("VCLINK_HOST_SELECTOR", "example.com/vclink=yes"),
        ("VCLINK_ALLOW_NESTED_HOSTS", "true"),
        ("VCLINK_MAX_VCLUSTERS_PER_NAMESPACE", "7"),
        (
            "VCLINK_ADOPT_OPERATOR_CLUSTERS_CREATED_BY",
            "vcluster-rancher-operator",
        ),
        ("VCLINK_MAX_CONNECTIONS", "20000"),
        ("VCLINK_MAX_UNAUTHENTICATED_STREAMS", "64"),
    ] {
        assert_eq!(get(&env, name), Some(want), "{name}");
    }
}

#[test]
fn values_the_hub_would_refuse_are_refused_at_install() {
    for bad in [
        "hostSelector: vclink.io/agent\n",
        "hostSelector: a=b,c=d\n",
        "allowNestedHosts: \"yes\"\n",
        "maxVclustersPerNamespace: 0\n",
        "maxUnauthenticatedStreams: 0\n",
        "adoptOperatorClusters:\n  createdBy: Not A User\n",
        "adoptOperatorClusters:\n  typo: x\n",
    ] {
        assert!(
            render_values(bad).schema_error.is_some(),
            "the schema accepts {bad:?}"
        );
    }
}

#[test]
fn the_mirror_is_on_and_label_sync_off_by_default_and_values_become_its_flags() {
    let r = render_values("{}\n");
    assert_eq!(r.schema_error, None);
    let env = hub_env(&objects("hub-default", &r).expect("objects"));
    assert_eq!(get(&env, "VCLINK_RANCHER_MIRROR"), Some("true"));
    assert_eq!(
        get(&env, "VCLINK_SYNC_LABELS_INCLUDE"),
        None,
        "label sync is off"
    );
    let r = render_values(
        "rancherMirror:\n  syncLabels:\n    include: [team, org.example/*]\n    exclude: [org.example/private]\n",
    );
    assert_eq!(r.schema_error, None);
    let env = hub_env(&objects("hub-default", &r).expect("objects"));
    assert_eq!(
        get(&env, "VCLINK_SYNC_LABELS_INCLUDE"),
        Some("team,org.example/*")
    );
    assert_eq!(
        get(&env, "VCLINK_SYNC_LABELS_EXCLUDE"),
        Some("org.example/private")
    );
    let r = render_values("rancherMirror:\n  syncLabels:\n    include: [\"a*b\"]\n");
    assert!(r.schema_error.is_some(), "`*` only at the end");
}
