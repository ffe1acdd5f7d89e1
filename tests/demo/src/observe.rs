//! What the demo shows: for each vCluster, the facts a Rancher administrator would
//! check by hand (the Rancher cluster, its id, the registration Job, the manifest in the
//! vCluster, the cluster's readiness, the Service annotations), read from the real API
//! servers and printed the moment each one changes.
//!
//! The observer polls a handful of objects a few times a second. That is fine for a
//! terminal display; the product itself only watches.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::ListParams;
use tokio::time::Instant;
use vclink_harness::{E2eEnv, SimVCluster};
use vclink_proto::keys;

/// Everything the demo reports about one vCluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// `fleet-default/<name>` of the provisioning cluster.
    pub cluster: Option<String>,
    /// The management cluster id Rancher assigned.
    pub cluster_id: Option<String>,
    /// Registration Job name and its phase.
    pub job: Option<(String, String)>,
    /// The import manifest's `cattle-cluster-agent` exists in the vCluster.
    pub manifest_applied: bool,
    /// Provisioning cluster `status.ready`.
    pub ready: bool,
    /// `vclink.io/state` on the Service, with `vclink.io/last-error` if any.
    pub service_state: Option<String>,
    /// The Service is gone (after the demo deleted it).
    pub service_gone: bool,
}

impl Facts {
    /// Human lines for what changed from `before` to `self`.
    pub fn changes_since(&self, before: &Facts) -> Vec<String> {
        let mut out = Vec::new();
        if self.cluster != before.cluster {
            match &self.cluster {
                Some(c) => out.push(format!("Rancher cluster {c} created by the hub")),
                None => out.push("Rancher cluster deleted by the hub".to_owned()),
            }
        }
        if self.cluster_id != before.cluster_id
            && let Some(id) = &self.cluster_id
        {
            out.push(format!("Rancher assigned management cluster id {id}"));
        }
        if self.job != before.job {
            match &self.job {
                Some((name, phase)) => out.push(format!("registration Job {name}: {phase}")),
                None => out.push("registration Job cleaned up".to_owned()),
            }
        }
        if self.manifest_applied && !before.manifest_applied {
            out.push("import manifest applied inside the vCluster (cattle-cluster-agent)".into());
        }
        // A deleted cluster is not news twice: say "deleted", not also "not ready".
        if self.ready != before.ready && self.cluster.is_some() {
            out.push(if self.ready {
                "Rancher reports the cluster Connected and Ready".to_owned()
            } else {
                "Rancher reports the cluster not ready".to_owned()
            });
        }
        if self.service_state != before.service_state
            && let Some(s) = &self.service_state
        {
            out.push(format!("Service annotated {}={s}", keys::ANNOTATION_STATE));
        }
        if self.service_gone && !before.service_gone {
            out.push("vCluster Service deleted".to_owned());
        }
        out
    }

    /// The one-word state for the final table.
    pub fn summary(&self) -> String {
        match (&self.cluster, self.ready) {
            (None, _) if self.service_gone => "removed".into(),
            (None, _) => "not imported".into(),
            (Some(_), true) => "Connected/Ready".into(),
            (Some(_), false) => self
                .service_state
                .clone()
                .unwrap_or_else(|| "pending".into()),
        }
    }
}

/// Reads the current [`Facts`] of `vc`. Read errors leave a fact unknown rather than
/// failing the demo; the deadline of the caller decides when to give up.
pub async fn read(env: &E2eEnv, workspace: &str, vc: &SimVCluster) -> Facts {
    let mut f = Facts::default();
    if let Ok(Some(pc)) = env.provisioning_cluster_for(workspace, vc).await {
        f.cluster = pc.metadata.name.map(|n| format!("{workspace}/{n}"));
        f.cluster_id = pc
            .data
            .pointer("/status/clusterName")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        f.ready = pc.data.pointer("/status/ready").and_then(|v| v.as_bool()) == Some(true);
    }
    let Ok(host) = env.downstream().cluster.client().await else {
        return f;
    };
    let jobs: Api<Job> = Api::namespaced(host.clone(), vc.namespace());
    let lp = ListParams::default().labels(&format!(
        "{}={}",
        keys::LABEL_JOB_SERVICE_UID,
        vc.service_uid()
    ));
    if let Ok(list) = jobs.list(&lp).await {
        f.job = list
            .items
            .into_iter()
            .next()
            .and_then(|j| Some((j.metadata.name.clone()?, job_phase(&j))));
    }
    let svcs: Api<Service> = Api::namespaced(host, vc.namespace());
    match svcs.get_opt(vc.name()).await {
        Ok(Some(svc)) => {
            let a = svc.metadata.annotations.unwrap_or_default();
            f.service_state = a.get(keys::ANNOTATION_STATE).map(|s| {
                match a.get(keys::ANNOTATION_LAST_ERROR).filter(|e| !e.is_empty()) {
                    Some(e) => format!("{s} ({e})"),
                    None => s.clone(),
                }
            });
        }
        Ok(None) => f.service_gone = true,
        Err(_) => {}
    }
    if let Ok(c) = vc.client().await {
        let d: Api<Deployment> = Api::namespaced(c, "cattle-system");
        f.manifest_applied = matches!(d.get_opt("cattle-cluster-agent").await, Ok(Some(_)));
    }
    f
}

fn job_phase(j: &Job) -> String {
    let s = j.status.clone().unwrap_or_default();
    for c in s.conditions.unwrap_or_default() {
        if c.status == "True" && c.type_ == "Complete" {
            return "succeeded".into();
        }
        if c.status == "True" && c.type_ == "Failed" {
            return format!("failed: {}", c.message.unwrap_or_default());
        }
    }
    if s.active.unwrap_or(0) > 0 {
        "running".into()
    } else {
        "created".into()
    }
}

/// Remembers what was last printed for each vCluster, so every fact is told once, across
/// phases of the demo.
#[derive(Default)]
pub struct Observer {
    last: BTreeMap<String, Facts>,
}

impl Observer {
    /// Reads every vCluster in `vcs` and prints what changed since the last look.
    /// Returns the facts, in the order of `vcs`.
    pub async fn look(
        &mut self,
        env: &E2eEnv,
        workspace: &str,
        vcs: &[Arc<SimVCluster>],
        started: Instant,
    ) -> Vec<Facts> {
        let mut out = Vec::with_capacity(vcs.len());
        for vc in vcs {
            let key = format!("{}/{}", vc.namespace(), vc.name());
            let now = read(env, workspace, vc).await;
            let before = self.last.get(&key).cloned().unwrap_or_default();
            for line in now.changes_since(&before) {
                println!(
                    "  [{:>5.1}s] {key:<12} {line}",
                    started.elapsed().as_secs_f64()
                );
            }
            self.last.insert(key, now.clone());
            out.push(now);
        }
        out
    }

    /// Looks a few times a second at the vClusters in `watchlist` (which may grow while
    /// this runs) until there are `expected` of them and `done` holds for all, or
    /// `timeout` passes.
    pub async fn follow(
        &mut self,
        env: &E2eEnv,
        workspace: &str,
        watchlist: &Watchlist,
        expected: usize,
        timeout: Duration,
        done: impl Fn(&Facts) -> bool,
    ) -> anyhow::Result<Vec<Facts>> {
        let started = Instant::now();
        let deadline = started + timeout;
        loop {
            let vcs = watchlist.snapshot();
            let facts = self.look(env, workspace, &vcs, started).await;
            if facts.len() >= expected && facts.iter().all(&done) {
                return Ok(facts);
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "not done within {}s; last seen: {:?}",
                    timeout.as_secs(),
                    facts.iter().map(Facts::summary).collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
}

/// The vClusters the demo has created so far, shared between the code creating them and
/// the [`Observer`] following them.
#[derive(Clone, Default)]
pub struct Watchlist(Arc<Mutex<Vec<Arc<SimVCluster>>>>);

impl Watchlist {
    /// Adds a vCluster to follow.
    pub fn push(&self, vc: Arc<SimVCluster>) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(vc);
    }

    /// The vClusters to follow right now.
    pub fn snapshot(&self) -> Vec<Arc<SimVCluster>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_name_each_new_fact_once() {
        let a = Facts::default();
        let b = Facts {
            cluster: Some("fleet-default/x".into()),
            ..a.clone()
        };
        assert_eq!(
            b.changes_since(&a),
            vec!["Rancher cluster fleet-default/x created by the hub"]
        );
        assert!(b.changes_since(&b).is_empty());
        let c = Facts {
            ready: true,
            ..b.clone()
        };
        assert_eq!(c.summary(), "Connected/Ready");
        let gone = Facts {
            service_gone: true,
            ..Facts::default()
        };
        assert_eq!(gone.summary(), "removed");
    }
}
