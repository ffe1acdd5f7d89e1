//! The fault report's leader case at the load benchmark's scale: a burst of
//! [`BURST`] registrations, which the end-to-end world of [`crate::leaderkill`] cannot
//! hold (there every vCluster has its own kube-apiserver). Here the world is the
//! benchmark's ([`crate::env`]): an audited local API server with Rancher's CRDs, the
//! Rancher player ([`crate::player`]) in place of Rancher's controllers, two release hub
//! replicas with leader election (the chart's flags, short timings) and [`AGENTS`]
//! simulated agents ([`crate::loadgen`]) that all dial the standby, which forwards to
//! the leader as a Service may pick any Ready replica.
//!
//! Every agent sends its full snapshot at once; once [`KILL_AT`] of the Registers have
//! arrived the leader gets SIGKILL, the standby must take the Lease, and the agents
//! reconnect to it (with the real agent's backoff). Judged like every fault case:
//! - duplicates: Service UIDs with more than one provisioning cluster;
//! - wrong deletions: vClusters (all still alive) whose provisioning cluster is gone, plus
//!   every provisioning-cluster delete either hub sent (the audit log, user `vclink-hub`);
//! - completed: vClusters the simulated agents saw `connected`;
//! - converge: from the kill until all of them are connected.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use vclink_envtest::CertificateAuthority;
use vclink_harness::procs::rbac::RELEASE_NAMESPACE;
use vclink_proto::v1::State;

use crate::Args;
use crate::env::{self, HUB_USER, WORKSPACE};
use crate::faults::{CaseResult, clusters_by_uid};
use crate::leaderkill::{leader_flags, leads};
use crate::loadgen::{HubTarget, LoadGen, fake_agents};
use crate::measure::count_requests;
use crate::player::Player;

/// Registrations in the burst.
pub const BURST: usize = 1_000;
/// Simulated agents the burst is spread over.
const AGENTS: usize = 20;
/// Registers received (of [`BURST`]) when the leader is killed.
const KILL_AT: u64 = (BURST / 3) as u64;
/// From the kill until every vCluster must be connected.
const CONVERGE: Duration = Duration::from_secs(300);

/// Runs the case; an error is reported as the case's failure.
pub async fn run(args: &Args) -> anyhow::Result<CaseResult> {
    let case = format!(
        "leader (one of two replicas) killed with SIGKILL during a burst of {BURST} registrations from {AGENTS} simulated agents"
    );
    let dir = tempfile::Builder::new()
        .prefix("vclink-leaderscale-")
        .tempdir()?;
    let local = env::start_audited("leader-local", dir.path(), &[HUB_USER]).await?;
    env::install_rancher_apis(&local.cluster).await?;
    let admin = local.cluster.client().await?;
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": RELEASE_NAMESPACE}}))?;
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &ns)
        .await
        .context("creating the Lease's namespace")?;
    let agents = fake_agents(AGENTS, BURST);
    env::opt_in_hosts(&local.cluster, agents.iter().map(|a| a.cluster_id.clone())).await?;

    // Replicas share the chart's TLS Secret: one CA and certificate.
    let ca = Arc::new(CertificateAuthority::new("vclink-bench-hub-ca")?);
    let replica = async || {
        env::start_hub_with(
            &local.cluster,
            args.hub_kube_qps,
            BURST,
            args.hub_env.clone(),
            leader_flags(),
            Some(ca.clone()),
        )
        .await
        .map(|(h, _)| h)
    };
    let mut leader = replica().await.context("starting the first replica")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !leads(&leader).await {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the first replica did not lead within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let standby = replica().await.context("starting the second replica")?;

    let cancel = CancellationToken::new();
    let player = Player::new(admin.clone(), WORKSPACE, HashSet::new(), HashSet::new());
    let (reg_tx, reg_rx) = mpsc::channel(BURST + 1024);
    let _player_tasks = player.spawn(reg_rx, cancel.clone());
    let target = HubTarget {
        url: standby.url(),
        ca_pem: standby.ca_pem().to_string(),
    };
    let uids: Vec<String> = agents
        .iter()
        .flat_map(|a| a.vclusters.iter().map(|v| v.uid.clone()))
        .collect();
    let lg = LoadGen::start(target, agents, reg_tx, 64, cancel.clone());
    let t = &lg.tracker;
    let result = async {
        crate::scenario::wait_until(
            "every simulated agent welcomed through the standby",
            Duration::from_secs(120),
            async || t.welcomed.load(Ordering::Relaxed) >= AGENTS as u64,
            || format!("welcomed {}", t.welcomed.load(Ordering::Relaxed)),
        )
        .await?;
        let since = Timestamp::now();
        lg.send_full_snapshots();
        crate::scenario::wait_until(
            "a third of the Registers",
            Duration::from_secs(300),
            async || t.registers.load(Ordering::Relaxed) >= KILL_AT,
            || format!("registers {}", t.registers.load(Ordering::Relaxed)),
        )
        .await?;
        let t0 = Instant::now();
        let at_kill = t.registers.load(Ordering::Relaxed);
        leader.kill().await;
        eprintln!("[faults]   leader killed after {at_kill} of {BURST} Registers");
        let converged = crate::scenario::wait_until(
            "every vCluster connected after the kill",
            CONVERGE,
            async || t.count_state(State::Connected, None) >= BURST,
            || format!("states {:?}", t.states()),
        )
        .await
        .is_ok();
        let converge_seconds = converged.then(|| t0.elapsed().as_secs_f64());
        let completed = uids
            .iter()
            .filter(|u| t.get(u).is_some_and(|s| s.state == State::Connected as i32))
            .count();
        let by_uid = clusters_by_uid(admin.clone(), WORKSPACE).await?;
        let deletes = provisioning_deletes(&local.audit_log, since);
        let mut r = CaseResult {
            case: case.clone(),
            completed: (completed, BURST),
            converge_seconds,
            duplicates: by_uid.values().filter(|c| c.len() > 1).count(),
            wrong_deletions: uids.iter().filter(|u| !by_uid.contains_key(*u)).count()
                + deletes as usize,
            ..Default::default()
        };
        if !leads(&standby).await {
            r.error = Some("the standby did not take over".into());
        }
        anyhow::Ok(r)
    }
    .await;
    cancel.cancel();
    lg.join().await;
    drop((leader, standby));
    result
}

/// Provisioning-cluster deletes the hubs sent since `since` (none is wanted: every
/// vCluster of the burst stays alive).
fn provisioning_deletes(audit_log: &std::path::Path, since: Timestamp) -> u64 {
    let log = std::fs::read_to_string(audit_log).unwrap_or_default();
    let c = count_requests(&log, HUB_USER, since, Timestamp::now());
    c.by_kind
        .get("delete provisioning.cattle.io/clusters")
        .copied()
        .unwrap_or(0)
}
