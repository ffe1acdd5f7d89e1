//! Both charts as Rancher's Apps page installs them — with exactly the values the page
//! injects (`global.cattle.*`, see values/*-rancher-apps.yaml) and nothing typed in but
//! the required fields — plus what the page reads from the chart (Chart.yaml annotations,
//! questions.yaml, app-readme.md, the icon), and the scheduling defaults every workload
//! gets (Linux nodes, the cattle.io/os toleration, spread for several hub replicas, the
//! registration Job's pod settings passed to the agent as flags).

use std::collections::BTreeSet;

use serde_json::{Value, json};
use vclink_packaging_tests::objects::{Object, objects};
use vclink_packaging_tests::{cases, render, repo_root};

fn rendered(name: &str) -> Vec<Object> {
    let r = render(cases::case(name).expect("case")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.schema_error, None, "{name}: values refused");
    assert!(
        r.lint_problems().is_empty(),
        "{name}: {:?}",
        r.lint_problems()
    );
    objects(name, &r).expect("objects")
}

fn pod<'a>(objs: &'a [Object], name: &str) -> &'a Value {
    &objs
        .iter()
        .find(|o| o.kind() == "Deployment" && o.name() == name)
        .unwrap_or_else(|| panic!("no Deployment {name}"))
        .value["spec"]["template"]["spec"]
}

fn env<'a>(pod: &'a Value, name: &str) -> Option<&'a str> {
    pod["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
}

fn yaml(rel: &str) -> Value {
    let text =
        std::fs::read_to_string(repo_root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn linux_toleration() -> Value {
    json!({"key": "cattle.io/os", "operator": "Equal", "value": "linux", "effect": "NoSchedule"})
}

#[test]
fn the_hub_installs_from_the_apps_page_with_rancher_s_url() {
    let objs = rendered("hub-rancher-apps");
    let pod = pod(&objs, "vclink-hub");
    assert_eq!(
        env(pod, "VCLINK_RANCHER_URL"),
        Some("https://rancher.example.com")
    );
    assert_eq!(
        pod["containers"][0]["image"], "ghcr.io/vclink/vclink:0.1.0",
        "empty registry: the default"
    );
}

#[test]
fn the_agent_installs_from_the_apps_page_with_rancher_s_cluster_id() {
    let objs = rendered("agent-rancher-apps");
    let pod = pod(&objs, "vclink-agent");
    assert_eq!(env(pod, "VCLINK_CLUSTER_ID"), Some("c-m-ab12cd34"));
    // An explicit clusterId (Fleet's) wins over the injected one.
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("explicit.yaml");
    std::fs::write(&f, "clusterId: c-m-zz99yy88\n").expect("write");
    let r = vclink_packaging_tests::helm::render_with(
        cases::case("agent-rancher-apps").expect("case"),
        &[f],
    )
    .expect("render");
    let objs = objects("explicit", &r).expect("objects");
    assert_eq!(
        env(self::pod(&objs, "vclink-agent"), "VCLINK_CLUSTER_ID"),
        Some("c-m-zz99yy88")
    );
}

#[test]
fn the_helm_cli_without_rancher_url_names_both_ways_to_set_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let empty = dir.path().join("empty.yaml");
    std::fs::write(&empty, "{}\n").expect("write");
    let case = vclink_packaging_tests::Case {
        values: &[],
        ..*cases::case("hub-default").expect("case")
    };
    let err =
        vclink_packaging_tests::helm::render_with(&case, &[empty]).expect_err("no URL, no render");
    let msg = err.to_string();
    assert!(
        msg.contains("rancher.url is required") && msg.contains("global.cattle.url"),
        "{msg}"
    );
}

#[test]
fn chart_metadata_is_what_rancher_s_catalog_expects() {
    for (chart, scope) in [("hub", "management"), ("agent", "downstream")] {
        let meta = yaml(&format!("charts/{chart}/Chart.yaml"));
        let a = &meta["annotations"];
        for key in [
            "display-name",
            "namespace",
            "release-name",
            "kube-version",
            "rancher-version",
        ] {
            assert!(
                a[format!("catalog.cattle.io/{key}")]
                    .as_str()
                    .is_some_and(|v| !v.is_empty()),
                "{chart}: catalog.cattle.io/{key}"
            );
        }
        assert_eq!(a["catalog.cattle.io/os"], "linux", "{chart}");
        assert_eq!(a["catalog.cattle.io/permits-os"], "linux", "{chart}");
        assert_eq!(a["catalog.cattle.io/scope"], scope, "{chart}");
        assert_eq!(
            a["catalog.cattle.io/release-name"], meta["name"],
            "{chart}: the release name the charts' defaults expect"
        );
        assert_eq!(a["catalog.cattle.io/namespace"], "vclink-system", "{chart}");
        assert!(
            repo_root()
                .join(format!("charts/{chart}/app-readme.md"))
                .is_file(),
            "{chart}: app-readme.md"
        );
        // The icon URL is this repository's docs/icon.svg, which must exist and be an SVG.
        let icon = meta["icon"].as_str().expect("icon");
        let rel = icon
            .strip_prefix("https://raw.githubusercontent.com/vclink/vclink/main/")
            .unwrap_or_else(|| panic!("{chart}: icon {icon} is not a file of this repository"));
        let svg = std::fs::read_to_string(repo_root().join(rel))
            .unwrap_or_else(|e| panic!("{chart}: icon {rel}: {e}"));
        assert!(
            svg.trim_start().starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{rel} is an SVG"
        );
    }
}

/// Every questions.yaml variable is a value the chart's schema knows.
#[test]
fn every_question_sets_a_value_the_chart_has() {
    for chart in ["hub", "agent"] {
        let q = yaml(&format!("charts/{chart}/questions.yaml"));
        let schema: Value = serde_json::from_str(
            &std::fs::read_to_string(
                repo_root().join(format!("charts/{chart}/values.schema.json")),
            )
            .expect("schema"),
        )
        .expect("schema JSON");
        let mut vars = Vec::new();
        for item in q["questions"].as_array().expect("questions") {
            vars.push(item.clone());
            vars.extend(item["subquestions"].as_array().cloned().unwrap_or_default());
        }
        assert!(vars.len() >= 5, "{chart}: a useful form");
        let types = BTreeSet::from([
            "string",
            "multiline",
            "boolean",
            "int",
            "enum",
            "password",
            "hostname",
            "secret",
        ]);
        for v in &vars {
            let name = v["variable"].as_str().expect("variable");
            assert!(
                types.contains(v["type"].as_str().unwrap_or("")),
                "{chart}: {name} has type {}",
                v["type"]
            );
            let mut node = &schema;
            for part in name.split('.') {
                let part = part.split('[').next().unwrap_or(part);
                node = &node["properties"][part];
                assert!(
                    !node.is_null(),
                    "{chart}: question {name} names no value of values.schema.json"
                );
            }
        }
    }
    let hub: BTreeSet<String> = yaml("charts/hub/questions.yaml")["questions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|q| q["variable"].as_str().map(str::to_string))
        .collect();
    for want in [
        "rancher.url",
        "rancherCredential.mode",
        "registrationTlsMode",
        "replicaCount",
        "ownerSync.roleMapping",
        "metrics.grafanaDashboard.enabled",
        "certManager.enabled",
    ] {
        assert!(hub.contains(want), "hub questions ask for {want}");
    }
}

#[test]
fn every_workload_runs_on_linux_nodes_and_tolerates_the_linux_taint() {
    for (case, deployment) in [
        ("hub-default", "vclink-hub"),
        ("agent-default", "vclink-agent"),
    ] {
        let objs = rendered(case);
        let pod = pod(&objs, deployment);
        assert_eq!(
            pod["nodeSelector"],
            json!({"kubernetes.io/os": "linux"}),
            "{case}"
        );
        assert_eq!(pod["tolerations"], json!([linux_toleration()]), "{case}");
        assert!(
            pod["affinity"].is_null() && pod["topologySpreadConstraints"].is_null(),
            "{case}: one replica, no spread"
        );
    }
    // The registration Job gets the same by default, through the agent's flags.
    let objs = rendered("agent-default");
    let args: Vec<String> = pod(&objs, "vclink-agent")["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    assert_eq!(
        args,
        vec![
            "--job-node-selector".to_string(),
            "kubernetes.io/os=linux".into(),
            "--job-toleration".into(),
            linux_toleration().to_string(),
        ]
    );
}

#[test]
fn job_pod_settings_and_pull_secrets_reach_the_agent() {
    let objs = rendered("agent-custom-registry");
    let pod = pod(&objs, "vclink-agent");
    assert_eq!(
        pod["imagePullSecrets"],
        json!([{"name": "internal-registry"}])
    );
    let args: Vec<&str> = pod["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let values_of = |flag: &str| -> Vec<&str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1])
            .collect()
    };
    assert_eq!(
        values_of("--job-image-pull-secret"),
        vec!["internal-registry"]
    );
    assert_eq!(
        values_of("--job-node-selector"),
        vec!["kubernetes.io/os=linux", "node-role.example.com/jobs=true"]
    );
    assert_eq!(
        values_of("--job-priority-class-name"),
        vec!["vclink-registration"]
    );
    let tolerations: Vec<Value> = values_of("--job-toleration")
        .iter()
        .map(|t| serde_json::from_str(t).expect("each toleration is one JSON object"))
        .collect();
    assert_eq!(
        tolerations[1],
        json!({"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"})
    );
    // Every flag the chart passes is one `vclink-agent run` declares (its clap definition).
    let run = vclink_agent::config::command()
        .find_subcommand("run")
        .expect("vclink-agent run")
        .clone();
    let declared: Vec<String> = run
        .get_arguments()
        .filter_map(|a| a.get_long())
        .map(|l| format!("--{l}"))
        .collect();
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        let name = flag.split('=').next().unwrap_or(flag);
        assert!(
            declared.iter().any(|d| d == name),
            "the chart passes {flag}, which `vclink-agent run` does not declare"
        );
    }
}

#[test]
fn the_agent_is_ready_only_when_its_watches_are() {
    let objs = rendered("agent-default");
    let c = &pod(&objs, "vclink-agent")["containers"][0];
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "metrics"})
    );
    let health =
        std::fs::read_to_string(repo_root().join("agent/src/health.rs")).expect("agent health");
    assert!(health.contains("\"/readyz\""), "the agent serves /readyz");
}

#[test]
fn several_hub_replicas_spread_over_nodes_and_zones() {
    let objs = rendered("hub-monitoring");
    let pod = pod(&objs, "vclink-hub");
    let term = &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        [0]["podAffinityTerm"];
    assert_eq!(term["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(
        term["labelSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "vclink-hub"
    );
    let spread = &pod["topologySpreadConstraints"][0];
    assert_eq!(spread["topologyKey"], "topology.kubernetes.io/zone");
    assert_eq!(
        spread["whenUnsatisfiable"], "ScheduleAnyway",
        "never blocks scheduling"
    );
}
