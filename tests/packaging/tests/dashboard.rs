//! The Grafana dashboard the hub chart ships: the JSON parses, it covers what an operator
//! watches (registrations by state, token→Register latency, agent streams, rejections by
//! reason, API requests), every PromQL query names only metrics the hub and agent
//! binaries export (read from their sources, `src/metrics.rs`), and the chart wraps it in
//! the ConfigMap Rancher Monitoring's Grafana sidecar loads.

use std::collections::BTreeSet;

use serde_json::Value;
use vclink_packaging_tests::metrics::{exported_names, promql_metric_names};
use vclink_packaging_tests::objects::objects;
use vclink_packaging_tests::{cases, render, repo_root};

fn dashboard() -> Value {
    let text = std::fs::read_to_string(repo_root().join("charts/hub/dashboards/vclink.json"))
        .expect("dashboard");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

fn exprs(panels: &Value, out: &mut Vec<(String, String)>) {
    for p in panels.as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                p["title"].as_str().unwrap_or("?").to_string(),
                t["expr"].as_str().unwrap_or("").to_string(),
            ));
        }
        exprs(&p["panels"], out);
    }
}

#[test]
fn every_query_names_only_exported_metrics() {
    let root = repo_root();
    let mut exported = exported_names(&root.join("hub/src")).unwrap_or_else(|e| panic!("{e}"));
    exported.extend(exported_names(&root.join("agent/src")).unwrap_or_else(|e| panic!("{e}")));
    assert!(
        exported.contains("vclink_hub_agents_connected"),
        "parsed {exported:?}"
    );
    assert!(
        exported.contains("vclink_agent_vclusters"),
        "parsed {exported:?}"
    );
    let d = dashboard();
    let mut queries = Vec::new();
    exprs(&d["panels"], &mut queries);
    assert!(queries.len() >= 10, "{queries:?}");
    let mut used = BTreeSet::new();
    for (panel, q) in &queries {
        let names = promql_metric_names(q);
        assert!(
            !names.is_empty(),
            "panel {panel:?}: query names no vclink metric: {q}"
        );
        for n in names {
            assert!(
                exported.contains(&n),
                "panel {panel:?}: {n} is not exported by the binaries ({q}); exported: {exported:?}"
            );
            used.insert(n);
        }
    }
    for want in [
        "vclink_hub_vclusters",
        "vclink_hub_register_latency_seconds_bucket",
        "vclink_hub_agents_connected",
        "vclink_hub_rejections_total",
        "vclink_hub_api_requests_total",
        "vclink_agent_vclusters",
    ] {
        assert!(used.contains(want), "the dashboard shows {want}");
    }
    let ids: Vec<u64> = d["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter_map(|p| p["id"].as_u64())
        .collect();
    assert_eq!(
        ids.len(),
        ids.iter().collect::<BTreeSet<_>>().len(),
        "panel ids are unique"
    );
    assert_eq!(d["uid"], "vclink-overview");
}

#[test]
fn the_chart_ships_it_where_rancher_monitoring_looks() {
    let r = render(cases::case("hub-monitoring").expect("case")).expect("render");
    let objs = objects("hub-monitoring", &r).expect("objects");
    let cm = objs
        .iter()
        .find(|o| o.kind() == "ConfigMap" && o.name() == "vclink-hub-dashboard")
        .expect("dashboard ConfigMap");
    assert_eq!(cm.namespace(), Some("cattle-dashboards"));
    assert_eq!(cm.value["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: Value =
        serde_json::from_str(cm.value["data"]["vclink.json"].as_str().expect("data"))
            .expect("JSON");
    assert_eq!(
        shipped,
        dashboard(),
        "the ConfigMap carries the file unchanged"
    );
    let default = render(cases::case("hub-default").expect("case")).expect("render");
    assert!(
        !objects("hub-default", &default)
            .expect("objects")
            .iter()
            .any(|o| o.kind() == "ConfigMap"),
        "optional: off by default"
    );
}
