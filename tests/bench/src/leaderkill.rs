//! The fault report's leader case, in a world of its own: two hub replicas with leader
//! election (the chart's flags, short timings), the agent dialing the standby (which
//! forwards to the leader, as a Service may pick any Ready replica), a burst of
//! registrations, and the leader killed with SIGKILL in the middle of it. Judged like
//! every case: no duplicates, no wrong deletions, every registration completed, and the
//! time from the kill to converged.
//!
//! Every registration in this world is a simulated vCluster with its own real
//! kube-apiserver, so the burst is [`BURST`] vClusters, not the thousands of the load
//! benchmark.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use vclink_envtest::CertificateAuthority;
use vclink_harness::procs::rbac::RELEASE_NAMESPACE;
use vclink_harness::{AgentOptions, AgentProcess, E2eEnv, E2eOptions, HubOptions, HubProcess};

use crate::Args;
use crate::faults::{CaseResult, GRACE, World};

/// Registrations in the burst (half before the kill, half after).
pub const BURST: usize = 8;
const LEASE_SECONDS: u64 = 3;

pub(crate) fn leader_flags() -> Vec<String> {
    vec![
        "--leader-election=true".to_owned(),
        format!("--leader-election-namespace={RELEASE_NAMESPACE}"),
        "--leader-election-lease=vclink-hub".to_owned(),
        "--pod-ip=127.0.0.1".to_owned(),
        format!("--leader-election-lease-duration={LEASE_SECONDS}s"),
        "--leader-election-renew-deadline=2s".to_owned(),
        "--leader-election-retry-period=500ms".to_owned(),
    ]
}

pub(crate) async fn leads(hub: &HubProcess) -> bool {
    hub.metrics()
        .await
        .is_ok_and(|m| m.lines().any(|l| l.trim() == "vclink_hub_leader 1"))
}

/// Runs the case; an error is reported as the case's failure.
pub async fn run(args: &Args) -> anyhow::Result<CaseResult> {
    let env = E2eEnv::start(E2eOptions {
        removal_grace: GRACE,
        start_agents: false,
        hub: HubOptions {
            // Replicas share the chart's TLS Secret: one CA and certificate.
            ca: Some(Arc::new(CertificateAuthority::new("vclink-bench-hub-ca")?)),
            extra_args: leader_flags(),
            extra_env: args.hub_env.clone(),
            ready_timeout: Some(Duration::from_secs(120)),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .context("starting the leader-election world")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !leads(&env.hub).await {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the first replica did not lead within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let second = HubProcess::start(&env.local, env.hub_options()).await?;
    let host = env.downstream().cluster_id.clone();
    let agent = AgentProcess::start(
        &env.downstream().cluster,
        &env.hub,
        &host,
        AgentOptions {
            hub_url: Some(second.url()),
            ..Default::default()
        },
    )
    .await?;
    let mut w = World {
        env,
        live: Vec::new(),
        next: 1000,
    };
    w.env.downstreams[0].agent = Some(agent);
    let mut vcs = Vec::new();
    for _ in 0..BURST / 2 {
        vcs.push(w.new_vc().await?);
    }
    let t0 = Instant::now();
    w.env.hub.kill().await;
    for _ in BURST / 2..BURST {
        vcs.push(w.new_vc().await?);
    }
    let mut r = w
        .judge(
            &format!(
                "leader (one of two replicas) killed with SIGKILL during a burst of {BURST} registrations"
            ),
            t0,
            vcs,
        )
        .await;
    if !leads(&second).await {
        r.error = Some("the standby did not take over".into());
    }
    drop(second);
    Ok(r)
}
