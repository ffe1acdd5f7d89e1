//! The Fleet GitRepo deploys the agent chart: the bundle is resolved the way Fleet's
//! bundle reader and target builder do it (see `src/fleet/`, which names the upstream
//! sources), for sample fleet Clusters made from Rancher clusters' labels — an opted-in
//! host, a host that did not opt in, a cluster vclink created for a vCluster, and one of
//! those with nested import — and the chart Fleet assembles is rendered with real Helm
//! with the values Fleet computes for the cluster.

use std::collections::BTreeSet;

use serde_json::Value;
use vclink_packaging_tests::fleet::targets::{
    Cluster, Decision, decide, fleet_cluster_from_rancher,
};
use vclink_packaging_tests::fleet::{BundleError, read_bundle};
use vclink_packaging_tests::helm::render_dir;
use vclink_packaging_tests::objects::objects;
use vclink_packaging_tests::repo_root;

fn gitrepo() -> Value {
    let text =
        std::fs::read_to_string(repo_root().join("fleet/gitrepo.yaml")).expect("gitrepo.yaml");
    serde_yaml_ng::from_str(&text).expect("gitrepo.yaml is YAML")
}

fn targets(gitrepo: &Value) -> Vec<Value> {
    gitrepo["spec"]["targets"]
        .as_array()
        .cloned()
        .expect("GitRepo targets")
}

const HOST_ID: &str = "c-m-ab12cd34";

/// Fleet Clusters as Rancher makes them from management clusters with these labels.
fn clusters() -> Vec<(&'static str, Cluster)> {
    let vc = vclink_proto::keys::LABEL_VCLUSTER;
    vec![
        (
            "opted-in host",
            fleet_cluster_from_rancher(
                "prod-eu-1",
                "fleet-default",
                HOST_ID,
                &[
                    ("vclink.io/agent", "enabled"),
                    ("provider.cattle.io", "rke2"),
                    ("env", "prod"),
                ],
            ),
        ),
        (
            "host not opted in",
            fleet_cluster_from_rancher("dev-1", "fleet-default", "c-m-zz99yy88", &[("env", "dev")]),
        ),
        (
            "vclink-created",
            fleet_cluster_from_rancher(
                "c-m-ab12cd34-team-a-vc1",
                "fleet-default",
                "c-m-vc000001",
                &[(vc, "true"), ("vclink.io/agent", "enabled")],
            ),
        ),
        (
            "vclink-created, nested import",
            fleet_cluster_from_rancher(
                "c-m-ab12cd34-team-a-vc2",
                "fleet-default",
                "c-m-vc000002",
                &[
                    (vc, "true"),
                    ("vclink.io/agent", "enabled"),
                    ("vclink.io/nested-import", "enabled"),
                ],
            ),
        ),
    ]
}

#[test]
fn every_gitrepo_path_is_a_bundle_holding_its_chart() {
    let repo = gitrepo();
    let paths: Vec<&str> = repo["spec"]["paths"]
        .as_array()
        .expect("paths")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(paths, vec!["charts/agent"]);
    let bundle = read_bundle(&repo_root(), paths[0]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        bundle.chart_dir, "",
        "helm.chart is the GitRepo path itself"
    );
    let names: BTreeSet<&str> = bundle.resources.keys().map(String::as_str).collect();
    for must in [
        "Chart.yaml",
        "values.yaml",
        "values.schema.json",
        "templates/deployment.yaml",
        "templates/_helpers.tpl",
    ] {
        assert!(
            names.contains(must),
            "{must} missing from the bundle: {names:?}"
        );
    }
    for never in ["fleet.yaml", ".helmignore", ".fleetignore", "app-readme.md"] {
        assert!(
            !names.contains(never),
            "{never} must not be a bundle resource"
        );
    }
    assert!(
        names
            .iter()
            .all(|n| !n.starts_with("tests/") && !n.starts_with("rendered/")),
        "no test data in the bundle"
    );
}

#[test]
fn helm_leaves_the_fleet_file_out_of_the_chart() {
    let ignore =
        std::fs::read_to_string(repo_root().join("charts/agent/.helmignore")).expect(".helmignore");
    assert!(
        ignore.lines().any(|l| l.trim() == "fleet.yaml"),
        ".helmignore must exclude fleet.yaml"
    );
}

#[test]
fn no_fleet_yaml_in_the_repository_points_outside_its_bundle() {
    let root = repo_root();
    let mut stack = vec![root.clone()];
    let mut found = 0;
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read_dir").flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() && !matches!(name.as_str(), "target" | ".git") {
                stack.push(p);
            } else if name == "fleet.yaml" || name == "fleet.yml" {
                found += 1;
                let rel = dir
                    .strip_prefix(&root)
                    .expect("inside")
                    .to_string_lossy()
                    .into_owned();
                if let Err(e) = read_bundle(&root, &rel) {
                    panic!("{rel}/{name}: {e}");
                }
            }
        }
    }
    assert!(found >= 1, "the agent bundle's fleet.yaml exists");
    // The old layout, a fleet.yaml next to nothing with helm.chart: ../../charts/agent,
    // is exactly what the reader refuses.
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(dir.path().join("fleet/agent")).expect("mkdir");
    std::fs::create_dir_all(dir.path().join("charts")).expect("mkdir");
    std::os::unix::fs::symlink(root.join("charts/agent"), dir.path().join("charts/agent"))
        .expect("symlink");
    std::fs::write(
        dir.path().join("fleet/agent/fleet.yaml"),
        "helm:\n  chart: ../../charts/agent\n",
    )
    .expect("write");
    assert!(matches!(
        read_bundle(dir.path(), "fleet/agent"),
        Err(BundleError::ChartNotInBundle { .. })
    ));
}

#[test]
fn targets_and_customizations_pick_exactly_the_opted_in_clusters() {
    let bundle = read_bundle(&repo_root(), "charts/agent").expect("bundle");
    let repo = gitrepo();
    let got: Vec<(&str, String)> = clusters()
        .iter()
        .map(|(what, c)| {
            let d = decide(&bundle.fleet_yaml, &targets(&repo), c)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let summary = match d {
                Decision::NotTargeted => "not targeted".to_string(),
                Decision::DoNotDeploy(by) => format!("doNotDeploy by {by}"),
                Decision::Deploy {
                    target,
                    customization,
                    values,
                } => {
                    format!(
                        "deploy by {target}/{} clusterId={}",
                        customization.unwrap_or_default(),
                        values["clusterId"]
                    )
                }
            };
            (*what, summary)
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("opted-in host", format!("deploy by opted-in-clusters/ clusterId=\"{HOST_ID}\"")),
            ("host not opted in", "not targeted".into()),
            ("vclink-created", "not targeted".into()),
            (
                "vclink-created, nested import",
                "deploy by opted-in-vclusters-nested-import/nested-import clusterId=\"c-m-vc000002\"".into()
            ),
        ]
    );
}

#[test]
fn fleet_yaml_alone_keeps_vcluster_clusters_and_non_opted_clusters_out() {
    // A copied GitRepo that targets every cluster: fleet.yaml's customizations still guard.
    let bundle = read_bundle(&repo_root(), "charts/agent").expect("bundle");
    let everything = vec![serde_json::json!({"name": "all", "clusterSelector": {}})];
    let got: Vec<Decision> = clusters()
        .iter()
        .map(|(_, c)| decide(&bundle.fleet_yaml, &everything, c).expect("decide"))
        .collect();
    assert!(
        matches!(
            &got[0],
            Decision::Deploy {
                customization: None,
                ..
            }
        ),
        "{:?}",
        got[0]
    );
    assert_eq!(got[1], Decision::DoNotDeploy("not-opted-in".into()));
    assert_eq!(got[2], Decision::DoNotDeploy("vcluster-clusters".into()));
    assert!(
        matches!(&got[3], Decision::Deploy { customization: Some(c), .. } if c == "nested-import")
    );
}

#[test]
fn the_chart_fleet_assembles_renders_with_the_cluster_values() {
    let bundle = read_bundle(&repo_root(), "charts/agent").expect("bundle");
    let repo = gitrepo();
    let (_, host) = &clusters()[0];
    let Decision::Deploy { values, .. } =
        decide(&bundle.fleet_yaml, &targets(&repo), host).expect("decide")
    else {
        panic!("the opted-in host gets the agent");
    };
    let dir = tempfile::tempdir().expect("tmp");
    let chart = dir.path().join("chart");
    bundle.write_chart(&chart).expect("write chart");
    let values_file = dir.path().join("fleet-values.json");
    std::fs::write(&values_file, values.to_string()).expect("write");
    let release = bundle.fleet_yaml["helm"]["releaseName"]
        .as_str()
        .expect("releaseName");
    let namespace = bundle.fleet_yaml["defaultNamespace"]
        .as_str()
        .expect("defaultNamespace");
    let r = render_dir("fleet", &chart, release, namespace, &[values_file])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        r.schema_error, None,
        "Fleet's values pass the chart's schema"
    );
    assert!(r.lint_problems().is_empty(), "{:?}", r.lint_problems());
    let objs = objects("fleet", &r).expect("objects");
    let dep = objs
        .iter()
        .find(|o| o.kind() == "Deployment" && o.name() == "vclink-agent")
        .expect("the agent Deployment");
    assert_eq!(dep.namespace(), Some("vclink-system"));
    let env = dep.value["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env");
    let get = |n: &str| {
        env.iter()
            .find(|e| e["name"] == n)
            .and_then(|e| e["value"].as_str())
    };
    assert_eq!(
        get("VCLINK_CLUSTER_ID"),
        Some(HOST_ID),
        "the id Fleet templated from the cluster's labels"
    );
    assert_eq!(
        get("VCLINK_HUB_URL"),
        Some("https://vclink-hub.example.com:8443")
    );
}
