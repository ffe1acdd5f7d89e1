//! `vclink-agent status` (also `kubectl vclink status`): the table a cluster user wants
//! before reading any log — every vCluster Service in this cluster with the Rancher
//! cluster it became (the name the Rancher UI shows, and its id), its state, how long it
//! has been in that state, the last error, and for a vCluster that is not imported, why.
//! It reads Services (the objects the agent watches and annotates) and, best effort, the
//! agent's Pods (to tell "agent down" from "not reported yet"), so anyone allowed to list
//! Services can run it with their own kubeconfig. Rendering is pure ([`rows`], [`table`],
//! [`age`]) so it is tested without a cluster.

use std::collections::BTreeMap;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::ListParams;
use vclink_proto::keys;

use crate::config::StatusArgs;
use crate::record::ops::state;

/// Label selector of the agent's Pods (the chart's selector labels).
pub const AGENT_POD_SELECTOR: &str = "app.kubernetes.io/name=vclink-agent";

/// What `status` could find out about the agent itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentPresence {
    /// This many agent Pods are Ready.
    Ready(usize),
    /// Agent Pods exist but none is Ready.
    NotReady,
    /// No agent Pod in the cluster.
    Missing,
    /// Pods could not be listed (no permission): unknown.
    Unknown,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Row {
    /// Host namespace.
    pub namespace: String,
    /// vCluster (Service) name.
    pub name: String,
    /// `vclink.io/rancher-cluster-name`: the cluster name the Rancher UI shows.
    pub rancher_cluster_name: String,
    /// `vclink.io/rancher-cluster-id` (`c-m-...`).
    pub rancher_cluster_id: String,
    /// `vclink.io/state`, or `not-reported`.
    pub state: String,
    /// How long ago `vclink.io/state-since` was (`3m`, `2h`, `5d`; empty when unknown).
    pub age: String,
    /// `vclink.io/state-since` as recorded (RFC 3339).
    pub state_since: String,
    /// `vclink.io/last-error`.
    pub last_error: String,
    /// Why this vCluster is not (yet) imported; empty when it is connected.
    pub reason: String,
}

/// Renders a duration in whole seconds the way kubectl's AGE column does: `45s`, `3m`,
/// `2h`, `5d`.
pub fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// Why a vCluster in `state` is not imported, from its annotations and the agent's presence.
fn reason(
    state_value: Option<&str>,
    a: &BTreeMap<String, String>,
    tracked: bool,
    agent: AgentPresence,
) -> String {
    let get = |k: &str| a.get(k).map(String::as_str).unwrap_or_default();
    let agent_down = match agent {
        AgentPresence::Missing => Some("no vclink-agent Pod runs in this cluster"),
        AgentPresence::NotReady => Some("the vclink-agent Pod is not Ready"),
        AgentPresence::Ready(_) | AgentPresence::Unknown => None,
    };
    match state_value {
        None if get(keys::ANNOTATION_SKIP_IMPORT) == "true" => format!(
            "excluded: annotation {}=true (not reported by the agent yet)",
            keys::ANNOTATION_SKIP_IMPORT
        ),
        None => match (agent_down, tracked) {
            (Some(down), _) => format!("not reported: {down}; check the agent's Deployment"),
            (None, true) => {
                "not reported yet: the agent sees this vCluster and waits for the hub; \
                             check the agent's log for the hub connection"
                    .into()
            }
            (None, false) => {
                "not reported yet: the agent has not seen this vCluster; is its namespace \
                              outside --namespace-selector, or is the agent not running?"
                    .into()
            }
        },
        Some(state::EXCLUDED) => {
            let why = get(keys::ANNOTATION_EXCLUDED_REASON);
            if why.is_empty() {
                "excluded".into()
            } else {
                format!("excluded: {why}")
            }
        }
        Some(state::DELETED_IN_RANCHER) => format!(
            "its Rancher cluster was deleted in Rancher; remove annotation {} to import it again",
            keys::ANNOTATION_RANCHER_DELETED
        ),
        Some(state::CONNECTED) => match agent_down {
            Some(down) => format!("{down}; the state shown may be stale"),
            None => String::new(),
        },
        Some(other) => {
            let err = get(keys::ANNOTATION_LAST_ERROR);
            let refused = err.contains("refused");
            let what = match other {
                state::ERROR if refused => "refused".to_string(),
                state::ERROR => "failed; see LAST ERROR".to_string(),
                state::PENDING => "waiting for the registration Job".to_string(),
                state::REGISTERING => {
                    "registering: Rancher's cluster agent is starting".to_string()
                }
                state::DISCONNECTED => {
                    "Rancher lost its cluster agent in this vCluster".to_string()
                }
                s => format!("state {s}"),
            };
            match agent_down {
                Some(down) => format!("{what}; {down}"),
                None => what,
            }
        }
    }
}

/// The rows for `services` (headless twins skipped), sorted by namespace and name, with
/// ages measured at `now`.
pub fn rows(services: &[Service], agent: AgentPresence, now: Timestamp) -> Vec<Row> {
    let mut out: Vec<Row> = services
        .iter()
        .filter_map(|svc| row(svc, agent, now))
        .collect();
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    out
}

fn row(svc: &Service, agent: AgentPresence, now: Timestamp) -> Option<Row> {
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
    let tracked = svc
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(keys::LABEL_TRACKED));
    let state_value = a.get(keys::ANNOTATION_STATE).map(String::as_str);
    let since = get(keys::ANNOTATION_STATE_SINCE);
    let age = since
        .parse::<Timestamp>()
        .map(|t| age(now.as_second() - t.as_second()))
        .unwrap_or_default();
    Some(Row {
        namespace: svc.metadata.namespace.clone().unwrap_or_default(),
        name: svc.metadata.name.clone().unwrap_or_default(),
        rancher_cluster_name: get(keys::ANNOTATION_RANCHER_CLUSTER_NAME),
        rancher_cluster_id: get(keys::ANNOTATION_RANCHER_CLUSTER),
        state: state_value.unwrap_or("not-reported").to_string(),
        age,
        state_since: since,
        last_error: get(keys::ANNOTATION_LAST_ERROR),
        reason: reason(state_value, a, tracked, agent),
    })
}

/// The headings of [`table`].
const HEAD: [&str; 8] = [
    "NAMESPACE",
    "VCLUSTER",
    "RANCHER CLUSTER",
    "ID",
    "STATE",
    "AGE",
    "REASON",
    "LAST ERROR",
];

/// Renders rows as an aligned text table (empty cells as `-`; the last column unpadded).
pub fn table(rows: &[Row]) -> String {
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            // A last error the reason already quotes is shown once.
            let reason = r.reason.clone();
            let last_error = if r.reason.contains(&r.last_error) {
                String::new()
            } else {
                r.last_error.clone()
            };
            [
                r.namespace.clone(),
                r.name.clone(),
                r.rancher_cluster_name.clone(),
                r.rancher_cluster_id.clone(),
                r.state.clone(),
                r.age.clone(),
                reason,
                last_error,
            ]
            .map(|c| if c.is_empty() { "-".to_string() } else { c })
        })
        .collect();
    let mut width = HEAD.map(str::len);
    for c in &cells {
        for (i, v) in c.iter().enumerate() {
            width[i] = width[i].max(v.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |c: [&str; 8]| {
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
    line(HEAD);
    for c in &cells {
        line(std::array::from_fn(|i| c[i].as_str()));
    }
    out
}

/// Counts Ready agent Pods (best effort: no permission means unknown).
async fn agent_presence(client: kube::Client) -> AgentPresence {
    let pods: Api<Pod> = Api::all(client);
    let Ok(list) = pods
        .list(&ListParams::default().labels(AGENT_POD_SELECTOR))
        .await
    else {
        return AgentPresence::Unknown;
    };
    if list.items.is_empty() {
        return AgentPresence::Missing;
    }
    let ready = list
        .items
        .iter()
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count();
    if ready == 0 {
        AgentPresence::NotReady
    } else {
        AgentPresence::Ready(ready)
    }
}

/// Lists the vCluster Services and prints the table (or JSON).
pub async fn main(args: StatusArgs) -> anyhow::Result<()> {
    let config = crate::kube_config().await?;
    let server = config.cluster_url.to_string();
    let client = kube::Client::try_from(config).context("cannot build the Kubernetes client")?;
    let api: Api<Service> = match &args.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let list = api
        .list(&ListParams::default().labels(keys::SERVICE_SELECTOR))
        .await
        .with_context(|| {
            format!("cannot list the vCluster Services (label app=vcluster) at {server}")
        })?;
    let agent = agent_presence(client).await;
    let rows = rows(&list.items, agent, Timestamp::now());
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

    const NOW: &str = "2024-05-01T10:00:00Z";

    fn svc(ns: &str, name: &str, ip: &str, tracked: bool, ann: &[(&str, &str)]) -> Service {
        let labels = if tracked {
            serde_json::json!({"app": "vcluster", keys::LABEL_TRACKED: "uid"})
        } else {
            serde_json::json!({"app": "vcluster"})
        };
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": ns, "name": name, "labels": labels,
                "annotations": ann.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()},
            "spec": {"clusterIP": ip}
        }))
        .expect("service")
    }

    fn fleet() -> Vec<Service> {
        vec![
            svc(
                "team-a",
                "dev",
                "10.0.0.1",
                true,
                &[
                    (keys::ANNOTATION_STATE, "connected"),
                    (keys::ANNOTATION_RANCHER_CLUSTER, "c-m-abcd1234"),
                    (keys::ANNOTATION_RANCHER_CLUSTER_NAME, "host-team-a-dev"),
                    (keys::ANNOTATION_STATE_SINCE, "2024-05-01T09:57:00Z"),
                ],
            ),
            svc("team-a", "dev-headless", "None", true, &[]),
            svc(
                "team-b",
                "ci",
                "10.0.0.2",
                true,
                &[
                    (keys::ANNOTATION_STATE, "excluded"),
                    (
                        keys::ANNOTATION_EXCLUDED_REASON,
                        "annotation vclink.io/skip-import=true",
                    ),
                    (keys::ANNOTATION_STATE_SINCE, "2024-04-26T10:00:00Z"),
                ],
            ),
            svc(
                "team-c",
                "prod",
                "10.0.0.3",
                true,
                &[
                    (keys::ANNOTATION_STATE, "error"),
                    (keys::ANNOTATION_RANCHER_CLUSTER, "c-m-00000001"),
                    (
                        keys::ANNOTATION_LAST_ERROR,
                        "this vCluster is registered with Rancher cluster c-m-00000002; vclink refused to register it",
                    ),
                    (keys::ANNOTATION_STATE_SINCE, "2024-05-01T08:00:00Z"),
                ],
            ),
            svc("team-d", "new", "10.0.0.4", false, &[]),
        ]
    }

    fn now() -> Timestamp {
        NOW.parse().expect("now")
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(age(0), "0s");
        assert_eq!(age(59), "59s");
        assert_eq!(age(180), "3m");
        assert_eq!(age(3599), "59m");
        assert_eq!(age(2 * 3600 + 59), "2h");
        assert_eq!(age(5 * 86400 + 3600), "5d");
        // Clock skew: a state-since in the future is not a negative age.
        assert_eq!(age(-5), "0s");
    }

    #[test]
    fn rows_name_the_rancher_cluster_age_and_reason() {
        let r = rows(&fleet(), AgentPresence::Ready(1), now());
        let names: Vec<_> = r
            .iter()
            .map(|r| format!("{}/{}", r.namespace, r.name))
            .collect();
        assert_eq!(
            names,
            ["team-a/dev", "team-b/ci", "team-c/prod", "team-d/new"]
        );
        assert_eq!(
            (
                r[0].rancher_cluster_name.as_str(),
                r[0].rancher_cluster_id.as_str(),
                r[0].state.as_str(),
                r[0].age.as_str(),
                r[0].reason.as_str()
            ),
            ("host-team-a-dev", "c-m-abcd1234", "connected", "3m", "")
        );
        assert_eq!(r[1].age, "5d");
        assert_eq!(
            r[1].reason,
            "excluded: annotation vclink.io/skip-import=true"
        );
        assert_eq!((r[2].state.as_str(), r[2].age.as_str()), ("error", "2h"));
        assert_eq!(r[2].reason, "refused");
        assert_eq!(r[3].state, "not-reported");
        assert!(
            r[3].reason.contains("not seen this vCluster"),
            "{}",
            r[3].reason
        );
    }

    #[test]
    fn an_agent_that_is_down_is_the_reason() {
        let r = rows(&fleet(), AgentPresence::Missing, now());
        assert!(
            r[3].reason.contains("no vclink-agent Pod runs"),
            "{}",
            r[3].reason
        );
        assert!(r[0].reason.contains("may be stale"), "{}", r[0].reason);
        let r = rows(&fleet(), AgentPresence::NotReady, now());
        assert!(r[3].reason.contains("not Ready"), "{}", r[3].reason);
    }

    #[test]
    fn table_aligns_columns_and_fills_blanks() {
        let t = table(&rows(&fleet(), AgentPresence::Ready(1), now()));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 5, "{t}");
        for head in HEAD {
            assert!(lines[0].contains(head), "{t}");
        }
        let col = lines[0].find("RANCHER CLUSTER").expect("header");
        assert_eq!(lines[1].find("host-team-a-dev"), Some(col), "{t}");
        let age_col = lines[0].find("AGE").expect("header");
        assert_eq!(lines[1][age_col..].split_whitespace().next(), Some("3m"));
        assert_eq!(lines[2][age_col..].split_whitespace().next(), Some("5d"));
        // Blank cells are "-"; the last error of the refused vCluster is in its own column.
        assert!(lines[2].contains(" - "), "{t}");
        assert!(lines[3].contains("refused") && lines[3].ends_with("refused to register it"));
        assert!(lines[4].contains("not-reported"), "{t}");
        assert!(!t.contains("dev-headless"), "{t}");
    }

    #[test]
    fn json_has_one_object_per_vcluster_with_every_field() {
        let r = rows(&fleet(), AgentPresence::Ready(1), now());
        let v: serde_json::Value = serde_json::to_value(&r).expect("json");
        let items = v.as_array().expect("array");
        assert_eq!(items.len(), 4);
        assert_eq!(items[0]["rancher_cluster_name"], "host-team-a-dev");
        assert_eq!(items[0]["rancher_cluster_id"], "c-m-abcd1234");
        assert_eq!(items[0]["age"], "3m");
        assert_eq!(items[0]["state_since"], "2024-05-01T09:57:00Z");
        assert_eq!(items[2]["reason"], "refused");
        assert!(
            items[2]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("c-m-00000002"))
        );
        for key in [
            "namespace",
            "name",
            "rancher_cluster_name",
            "rancher_cluster_id",
            "state",
            "age",
            "state_since",
            "last_error",
            "reason",
        ] {
            assert!(items.iter().all(|i| i.get(key).is_some()), "{key}");
        }
    }
}
