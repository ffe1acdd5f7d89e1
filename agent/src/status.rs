//! `vclink-agent status`: the table a cluster user wants before reading any log — every
//! vCluster Service in this cluster with the state vclink recorded on it. It reads only
//! Services (the same objects the agent watches), so anyone allowed to list Services can
//! run it with their own kubeconfig.

use std::collections::BTreeMap;

use anyhow::Context;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::ListParams;
use vclink_proto::keys;

use crate::config::StatusArgs;

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Row {
    /// Host namespace.
    pub namespace: String,
    /// vCluster (Service) name.
    pub name: String,
    /// `vclink.io/state`, or why there is none.
    pub state: String,
    /// `vclink.io/rancher-cluster-id`.
    pub rancher_cluster: String,
    /// `vclink.io/state-since`.
    pub since: String,
    /// `vclink.io/last-error`.
    pub last_error: String,
}

/// The row for one Service, or `None` for the headless twin of a vCluster Service.
pub fn row(svc: &Service) -> Option<Row> {
    let headless = svc
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .is_some_and(|ip| ip == "None");
    if headless {
        return None;
    }
    let empty = BTreeMap::new();
    let a = svc.metadata.annotations.as_ref().unwrap_or(&empty);
    let get = |k: &str| a.get(k).cloned().unwrap_or_default();
    let state = if a.get(keys::ANNOTATION_SKIP_IMPORT).map(String::as_str) == Some("true") {
        format!("skipped ({}=true)", keys::ANNOTATION_SKIP_IMPORT)
    } else {
        a.get(keys::ANNOTATION_STATE)
            .cloned()
            .unwrap_or_else(|| "not reported".into())
    };
    Some(Row {
        namespace: svc.metadata.namespace.clone().unwrap_or_default(),
        name: svc.metadata.name.clone().unwrap_or_default(),
        state,
        rancher_cluster: get(keys::ANNOTATION_RANCHER_CLUSTER),
        since: get(keys::ANNOTATION_STATE_SINCE),
        last_error: get(keys::ANNOTATION_LAST_ERROR),
    })
}

/// Renders rows as an aligned text table (empty cells as `-`).
pub fn table(rows: &[Row]) -> String {
    let head = [
        "NAMESPACE",
        "VCLUSTER",
        "STATE",
        "RANCHER CLUSTER",
        "SINCE",
        "LAST ERROR",
    ];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                &r.namespace,
                &r.name,
                &r.state,
                &r.rancher_cluster,
                &r.since,
                &r.last_error,
            ]
            .map(|c| if c.is_empty() { "-".into() } else { c.clone() })
        })
        .collect();
    let mut width = head.map(str::len);
    for c in &cells {
        for (i, v) in c.iter().enumerate() {
            width[i] = width[i].max(v.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |c: [&str; 6]| {
        let mut l = String::new();
        for (i, v) in c.iter().enumerate() {
            if i + 1 == c.len() {
                l.push_str(v);
            } else {
                l.push_str(&format!("{v:<w$}   ", w = width[i]));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(head);
    for c in &cells {
        line([&c[0], &c[1], &c[2], &c[3], &c[4], &c[5]]);
    }
    out
}

/// Lists the vCluster Services and prints the table (or JSON).
pub async fn main(args: StatusArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes client configuration (KUBECONFIG or in-cluster)")?;
    let api: Api<Service> = match &args.namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let list = api
        .list(&ListParams::default().labels(keys::SERVICE_SELECTOR))
        .await
        .context("listing vCluster Services (label app=vcluster)")?;
    let mut rows: Vec<Row> = list.items.iter().filter_map(row).collect();
    rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if rows.is_empty() {
        println!("no vCluster Services (label app=vcluster) found");
    } else {
        print!("{}", table(&rows));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ns: &str, name: &str, ip: &str, ann: &[(&str, &str)]) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": ns, "name": name,
                "annotations": ann.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()},
            "spec": {"clusterIP": ip}
        }))
        .expect("service")
    }

    #[test]
    fn rows_show_state_skip_and_hide_headless() {
        let connected = svc(
            "team-a",
            "dev",
            "10.0.0.1",
            &[
                (keys::ANNOTATION_STATE, "connected"),
                (keys::ANNOTATION_RANCHER_CLUSTER, "c-m-abcd1234"),
            ],
        );
        let r = row(&connected).expect("row");
        assert_eq!(
            (r.state.as_str(), r.rancher_cluster.as_str()),
            ("connected", "c-m-abcd1234")
        );
        assert!(row(&svc("team-a", "dev-headless", "None", &[])).is_none());
        let skipped = svc(
            "team-b",
            "ci",
            "10.0.0.2",
            &[(keys::ANNOTATION_SKIP_IMPORT, "true")],
        );
        assert!(row(&skipped).expect("row").state.starts_with("skipped"));
        assert_eq!(
            row(&svc("x", "y", "10.0.0.3", &[])).expect("row").state,
            "not reported"
        );
    }

    #[test]
    fn table_aligns_columns_and_fills_blanks() {
        let rows = vec![
            row(&svc(
                "team-a",
                "dev",
                "1.1.1.1",
                &[(keys::ANNOTATION_STATE, "connected")],
            ))
            .unwrap(),
            row(&svc("a-much-longer-namespace", "ci", "1.1.1.2", &[])).unwrap(),
        ];
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        let col = lines[0].find("VCLUSTER").expect("header");
        assert_eq!(lines[1].find("dev"), Some(col));
        assert_eq!(lines[2].find("ci"), Some(col));
        assert!(lines[1].contains("connected") && lines[1].contains(" - "));
    }
}
