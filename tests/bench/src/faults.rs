//! `--faults`: a fault report on real API servers (the end-to-end world of
//! `vclink_harness::E2eEnv`: Rancher simulator, one downstream cluster with a Job runner,
//! the release hub and agent). Cases run one after the other in one world, each with its
//! own vClusters; each prints case → duplicates, wrong deletions, registrations
//! completed, time to converge, and the run ends with `N passed, M failed`.
//!
//! Faults come from the simulator's knobs (`vclink_rancher_sim::Faults`: its admission
//! webhook answering the hub's creates with an error or not at all, its controllers
//! failing, its cluster proxy failing TokenReviews) and from killing the processes.
//! The leader cases run last, each in a world of two replicas: [`crate::leaderkill`] with
//! real agents and vClusters, [`crate::leaderscale`] with a burst of 1,000 registrations
//! from simulated agents.
//! The API-faults case puts a fault-injecting proxy ([`crate::faultproxy`]) between the hub and
//! its API server and between the agent and its own: every 10th write answered 500, 409, or
//! applied and then timed out (504 after 5 s), in turn.
//! "Duplicates": more than one provisioning cluster for one vCluster's Service UID.
//! "Wrong deletions": a provisioning cluster of a vCluster that still exists is gone.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context;
use kube::Api;
use kube::api::{DynamicObject, ListParams};
use serde::Serialize;
use vclink_harness::env::provisioning_cluster;
use vclink_harness::{E2eEnv, E2eOptions, HubOptions, SimVCluster, VClusterSpec};
use vclink_rancher_sim::{Fault, FaultPoint};

use crate::Args;

/// The hub's removal grace in this world: longer than the 10 s stream drops of the
/// "drops while deleted" case, so that case tests that the timer survives reconnects.
pub(crate) const GRACE: Duration = Duration::from_secs(15);
const WS: &str = "fleet-default";
const CONVERGE: Duration = Duration::from_secs(120);

/// One case's outcome.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CaseResult {
    /// What was done.
    pub case: String,
    /// vClusters with more than one provisioning cluster.
    pub duplicates: usize,
    /// Provisioning clusters of live vClusters that disappeared.
    pub wrong_deletions: usize,
    /// Registrations completed / expected.
    pub completed: (usize, usize),
    /// Seconds from the fault to converged (None: did not converge).
    pub converge_seconds: Option<f64>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

impl CaseResult {
    fn passed(&self) -> bool {
        self.error.is_none()
            && self.duplicates == 0
            && self.wrong_deletions == 0
            && self.completed.0 == self.completed.1
            && self.converge_seconds.is_some()
    }
}

/// Live provisioning clusters in workspace `ws`, by Service UID label (their UIDs).
pub(crate) async fn clusters_by_uid(
    client: kube::Client,
    ws: &str,
) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let api: Api<DynamicObject> = Api::namespaced_with(client, ws, &provisioning_cluster());
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in api.list(&ListParams::default()).await?.items {
        if c.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if let Some(uid) = c
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(vclink_proto::keys::LABEL_SERVICE_UID))
        {
            out.entry(uid.clone())
                .or_default()
                .push(c.metadata.uid.clone().unwrap_or_default());
        }
    }
    Ok(out)
}

/// [`clusters_by_uid`] in this world's local cluster and workspace.
async fn world_clusters(env: &E2eEnv) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    clusters_by_uid(env.local_client().await?, WS).await
}

/// Whether `vc`'s provisioning cluster is ready.
async fn ready(env: &E2eEnv, vc: &SimVCluster) -> bool {
    matches!(env.provisioning_cluster_for(WS, vc).await, Ok(Some(pc))
        if pc.data.pointer("/status/ready").and_then(serde_json::Value::as_bool) == Some(true))
}

/// Polls `f` every 250 ms until true or `limit`.
async fn until(limit: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

/// The world, the live vClusters and the clusters they had.
pub(crate) struct World {
    pub(crate) env: E2eEnv,
    pub(crate) live: Vec<SimVCluster>,
    pub(crate) next: usize,
}

impl World {
    pub(crate) async fn new_vc(&mut self) -> anyhow::Result<SimVCluster> {
        self.next += 1;
        let spec = VClusterSpec::new(&format!("fault-{}", self.next), "vc");
        self.env.create_vcluster(0, spec).await
    }

    /// Waits until every vCluster in `vcs` is ready, then judges every live vCluster.
    pub(crate) async fn judge(
        &mut self,
        case: &str,
        t0: Instant,
        vcs: Vec<SimVCluster>,
    ) -> CaseResult {
        let want = vcs.len();
        let env = &self.env;
        let mut done = 0;
        let ok = until(CONVERGE, async || {
            let mut n = 0;
            for v in &vcs {
                if ready(env, v).await {
                    n += 1;
                }
            }
            done = n;
            n == want
        })
        .await;
        let converge = ok.then(|| t0.elapsed().as_secs_f64());
        self.live.extend(vcs);
        let mut r = CaseResult {
            case: case.into(),
            completed: (done, want),
            converge_seconds: converge,
            ..Default::default()
        };
        match world_clusters(&self.env).await {
            Ok(by) => {
                r.duplicates = by.values().filter(|v| v.len() > 1).count();
                r.wrong_deletions = self
                    .live
                    .iter()
                    .filter(|v| !by.contains_key(v.service_uid()))
                    .count();
            }
            Err(e) => r.error = Some(format!("listing clusters: {e:#}")),
        }
        r
    }
}

async fn hub_metric(env: &E2eEnv, name: &str) -> f64 {
    crate::scenario::metric_sum(&env.hub.metrics().await.unwrap_or_default(), name)
}

async fn kill_at_step(w: &mut World, step: &str) -> anyhow::Result<CaseResult> {
    let vc = w.new_vc().await?;
    let env = &w.env;
    let reg0 = hub_metric(env, "vclink_hub_registrations_sent_total").await;
    let reached = until(CONVERGE, async || match step {
        "provisioning cluster created" => matches!(env.provisioning_cluster_for(WS, &vc).await, Ok(Some(_))),
        "management cluster id known" => matches!(env.provisioning_cluster_for(WS, &vc).await, Ok(Some(pc))
            if pc.data.pointer("/status/clusterName").and_then(serde_json::Value::as_str).is_some_and(|s| !s.is_empty())),
        _ => hub_metric(env, "vclink_hub_registrations_sent_total").await > reg0,
    })
    .await;
    anyhow::ensure!(reached, "step '{step}' not reached");
    let t0 = Instant::now();
    w.env.hub.kill().await;
    w.env.hub.start_again().await?;
    Ok(w.judge(&format!("hub kill -9 after: {step}"), t0, vec![vc])
        .await)
}

async fn with_fault(
    w: &mut World,
    point: FaultPoint,
    fault: Fault,
    times: u32,
    case: &str,
) -> anyhow::Result<CaseResult> {
    w.env.sim.faults().inject(point, fault, times);
    let t0 = Instant::now();
    let vcs = vec![w.new_vc().await?, w.new_vc().await?];
    let r = w.judge(case, t0, vcs).await;
    w.env.sim.faults().inject(point, fault, 0);
    Ok(r)
}

async fn agent_away(w: &mut World, away: Duration, case: &str) -> anyhow::Result<CaseResult> {
    let agent = w.env.agent(0).context("no agent")?;
    agent.kill().await;
    tokio::time::sleep(away).await;
    let t0 = Instant::now();
    w.env.agent(0).context("no agent")?.start_again()?;
    let env = &w.env;
    let back = until(CONVERGE, async || {
        hub_metric(env, "vclink_hub_agents_connected").await >= 1.0
    })
    .await;
    let mut r = w.judge(case, t0, Vec::new()).await;
    if !back {
        r.converge_seconds = None;
        r.error = Some("the agent did not re-attach".into());
    }
    // The clusters must also survive a while after the return.
    tokio::time::sleep(GRACE + Duration::from_secs(5)).await;
    let later = w.judge(case, t0, Vec::new()).await;
    r.wrong_deletions = r.wrong_deletions.max(later.wrong_deletions);
    Ok(r)
}

/// Writes faulted per proxy: one in this many.
const API_FAULT_EVERY: u64 = 10;
/// vClusters registered through the faulting proxies.
const API_FAULT_VCLUSTERS: usize = 6;

/// Points the hub's and the agent's kubeconfigs at `hub_to` / `agent_to` (from
/// `hub_from` / `agent_from`) and restarts both.
async fn repoint(
    w: &mut World,
    (hub_from, hub_to): (&str, &str),
    (agent_from, agent_to): (&str, &str),
) -> anyhow::Result<()> {
    crate::faultproxy::repoint_kubeconfig(w.env.hub.kubeconfig(), hub_from, hub_to)?;
    let agent = w.env.agent(0).context("no agent")?;
    let kc = crate::faultproxy::kubeconfig_of(agent.pid().context("the agent is not running")?)?;
    crate::faultproxy::repoint_kubeconfig(&kc, agent_from, agent_to)?;
    agent.kill().await;
    w.env.hub.kill().await;
    w.env.hub.start_again().await?;
    w.env.agent(0).context("no agent")?.start_again()?;
    Ok(())
}

async fn api_faults(w: &mut World) -> anyhow::Result<CaseResult> {
    let local_url = w.env.local.url().to_string();
    let down_url = w.env.downstream().cluster.url().to_string();
    let hub_proxy = crate::faultproxy::start(&w.env.local, API_FAULT_EVERY).await?;
    let agent_proxy =
        crate::faultproxy::start(&w.env.downstream().cluster, API_FAULT_EVERY).await?;
    repoint(
        w,
        (&local_url, &hub_proxy.url),
        (&down_url, &agent_proxy.url),
    )
    .await?;
    let t0 = Instant::now();
    let mut vcs = Vec::new();
    for _ in 0..API_FAULT_VCLUSTERS {
        vcs.push(w.new_vc().await?);
    }
    let counts = |p: &crate::faultproxy::FaultProxy| {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &p.stats;
        format!(
            "{} writes: {}× 500, {}× 409, {}× timeout",
            s.writes.load(Relaxed),
            s.status_500.load(Relaxed),
            s.status_409.load(Relaxed),
            s.timeouts.load(Relaxed)
        )
    };
    let mut r = w
        .judge(
            &format!(
                "10% of the hub's and the agent's API writes fail (500 / 409 / applied-then-timeout), {API_FAULT_VCLUSTERS} vClusters"
            ),
            t0,
            vcs,
        )
        .await;
    let seen = format!(
        "hub: {}; agent: {}",
        counts(&hub_proxy),
        counts(&agent_proxy)
    );
    eprintln!("[faults]   fault proxies: {seen}");
    r.case = format!("{} [{seen}]", r.case);
    // Back to the API servers directly for the cases after this one.
    if let Err(e) = repoint(
        w,
        (&hub_proxy.url, &local_url),
        (&agent_proxy.url, &down_url),
    )
    .await
    {
        r.error = Some(format!("restoring the kubeconfigs: {e:#}"));
    }
    Ok(r)
}

async fn drops_while_deleted(w: &mut World) -> anyhow::Result<CaseResult> {
    let vc = w.new_vc().await?;
    let ok = until(CONVERGE, async || ready(&w.env, &vc).await).await;
    anyhow::ensure!(ok, "the vCluster to be deleted never became ready");
    let uid = vc.service_uid().to_string();
    let t0 = Instant::now();
    vc.delete().await?;
    // Drop the agent's stream every 10 s (kill -9 + start) until the cluster is gone.
    let mut gone = None;
    let deadline = t0 + GRACE * 4 + Duration::from_secs(60);
    let mut next_drop = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if !world_clusters(&w.env).await?.contains_key(&uid) {
            gone = Some(t0.elapsed().as_secs_f64());
            break;
        }
        if Instant::now() >= next_drop {
            let a = w.env.agent(0).context("no agent")?;
            a.kill().await;
            a.start_again()?;
            next_drop = Instant::now() + Duration::from_secs(10);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut r = w
        .judge(
            "agent stream drops every 10 s while one of its vClusters is deleted (grace 15 s)",
            t0,
            Vec::new(),
        )
        .await;
    r.converge_seconds = gone;
    if gone.is_none() {
        r.error = Some(format!(
            "the deleted vCluster's Rancher cluster was still there after {:.0} s",
            t0.elapsed().as_secs_f64()
        ));
    }
    Ok(r)
}

/// Runs every case; returns the report (also `results-faults.{txt,json}`).
pub async fn run(args: &Args) -> anyhow::Result<String> {
    eprintln!(
        "[faults] starting the end-to-end world (simulator, downstream, release hub and agent)"
    );
    let env = E2eEnv::start(E2eOptions {
        removal_grace: GRACE,
        hub: HubOptions {
            extra_env: args.hub_env.clone(),
            ready_timeout: Some(Duration::from_secs(120)),
            ..Default::default()
        },
        ..Default::default()
    })
    .await?;
    let mut w = World {
        env,
        live: Vec::new(),
        next: 0,
    };
    let mut results = Vec::new();
    type Case = fn(
        &mut World,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = anyhow::Result<CaseResult>> + '_>,
    >;
    let cases: Vec<(&str, Case)> = vec![
        ("kill after create", |w| {
            Box::pin(kill_at_step(w, "provisioning cluster created"))
        }),
        ("kill after id", |w| {
            Box::pin(kill_at_step(w, "management cluster id known"))
        }),
        ("kill after Register", |w| {
            Box::pin(kill_at_step(w, "Register sent to the agent"))
        }),
        ("webhook 500", |w| {
            Box::pin(with_fault(
                w,
                FaultPoint::WebhookProvisioningCluster,
                Fault::Status(500),
                3,
                "the hub's cluster creates answered 500 by Rancher's webhook (3 times)",
            ))
        }),
        ("webhook timeout", |w| {
            Box::pin(with_fault(
                w,
                FaultPoint::WebhookProvisioningCluster,
                Fault::Timeout,
                2,
                "the hub's cluster creates time out in Rancher's webhook (2 times)",
            ))
        }),
        ("mgmt 500", |w| {
            Box::pin(with_fault(
                w,
                FaultPoint::CreateManagementCluster,
                Fault::Status(500),
                3,
                "Rancher fails creating the management cluster (3 times)",
            ))
        }),
        ("token 409", |w| {
            Box::pin(with_fault(
                w,
                FaultPoint::CreateRegistrationToken,
                Fault::Status(409),
                3,
                "Rancher's registration-token create answers 409 (3 times)",
            ))
        }),
        ("import 500", |w| {
            Box::pin(with_fault(
                w,
                FaultPoint::ImportEndpoint,
                Fault::Status(500),
                3,
                "the import manifest URL answers 500 to the agent's Job (3 times)",
            ))
        }),
        ("proxy timeout", |w| {
            Box::pin(async move {
                w.env
                    .sim
                    .faults()
                    .inject(FaultPoint::Proxy, Fault::Timeout, 2);
                agent_away(
                    w,
                    Duration::from_secs(1),
                    "agent reconnects while Rancher's proxy (TokenReview) times out (2 times)",
                )
                .await
            })
        }),
        ("short disconnect", |w| {
            Box::pin(agent_away(
                w,
                Duration::from_secs(3),
                "agent killed and back after 3 s (shorter than the 15 s grace)",
            ))
        }),
        ("long disconnect", |w| {
            Box::pin(agent_away(
                w,
                Duration::from_secs(25),
                "agent killed and back after 25 s (longer than the 15 s grace)",
            ))
        }),
        ("drops while deleted", |w| Box::pin(drops_while_deleted(w))),
        ("API write faults", |w| Box::pin(api_faults(w))),
    ];
    for (name, case) in cases {
        eprintln!("[faults] case: {name}");
        let r = match case(&mut w).await {
            Ok(r) => r,
            Err(e) => CaseResult {
                case: name.into(),
                error: Some(format!("{e:#}")),
                ..Default::default()
            },
        };
        eprintln!("[faults]   → {}", row(&r));
        results.push(r);
    }
    // The leader case needs a world of two replicas: this one goes first.
    drop(w);
    eprintln!("[faults] case: leader kill");
    let r = crate::leaderkill::run(args)
        .await
        .unwrap_or_else(|e| CaseResult {
            case: "leader kill during a registration burst".into(),
            error: Some(format!("{e:#}")),
            ..Default::default()
        });
    eprintln!("[faults]   → {}", row(&r));
    results.push(r);
    eprintln!("[faults] case: leader kill at scale");
    let r = crate::leaderscale::run(args)
        .await
        .unwrap_or_else(|e| CaseResult {
            case: format!(
                "leader kill during a burst of {} registrations",
                crate::leaderscale::BURST
            ),
            error: Some(format!("{e:#}")),
            ..Default::default()
        });
    eprintln!("[faults]   → {}", row(&r));
    results.push(r);
    let text = render(&results);
    crate::report::write_mode(&args.out, "faults", &results, &text)
}

fn row(r: &CaseResult) -> String {
    format!(
        "{:<4} dup {:>2}  wrong-del {:>2}  completed {:>4}/{:<4}  converge {:>7}{}",
        if r.passed() { "PASS" } else { "FAIL" },
        r.duplicates,
        r.wrong_deletions,
        r.completed.0,
        r.completed.1,
        r.converge_seconds
            .map_or("—".to_string(), |s| format!("{s:.1} s")),
        r.error
            .as_ref()
            .map_or(String::new(), |e| format!("  ({e})"))
    )
}

/// The table and the `N passed, M failed` line.
pub fn render(results: &[CaseResult]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "vclink fault report (targets: 0 duplicates, 0 wrong deletions, 100% completed)"
    );
    for r in results {
        let _ = writeln!(o, "{:<100} {}", r.case, row(r));
    }
    let passed = results.iter().filter(|r| r.passed()).count();
    let _ = writeln!(o, "{passed} passed, {} failed", results.len() - passed);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_failures() {
        let ok = CaseResult {
            case: "a".into(),
            completed: (1, 1),
            converge_seconds: Some(1.0),
            ..Default::default()
        };
        let dup = CaseResult {
            duplicates: 1,
            ..ok.clone()
        };
        let slow = CaseResult {
            converge_seconds: None,
            ..ok.clone()
        };
        let t = render(&[ok, dup, slow]);
        assert!(t.ends_with("1 passed, 2 failed\n"), "{t}");
    }
}
