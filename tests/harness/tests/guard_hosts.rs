//! Hosts are opted in. An agent whose Rancher cluster lacks `vclink.io/agent=enabled` is
//! refused with PERMISSION_DENIED naming the label and nothing is created for its
//! vClusters; labelling the cluster lets it in. A vCluster cluster vclink created, hosting
//! an agent of its own, is refused even with that label unless it also carries
//! `vclink.io/nested-import=enabled`.

mod e2e_support;
mod guard_support;

use std::time::{Duration, Instant};

use e2e_support::*;
use guard_support::*;
use vclink_harness::env::{HUB_RANCHER_USER, grant_tokenreview};
use vclink_harness::{AgentOptions, AgentProcess, E2eEnv, E2eOptions, VClusterSpec};

/// Log lines of an agent saying the hub refused it with PERMISSION_DENIED naming `label`.
fn refusals(agent: &AgentProcess, label: &str) -> Vec<String> {
    lines_with(&agent.logs(), &["PermissionDenied", label])
}

/// Waits until the agent's log shows a PERMISSION_DENIED refusal naming `label`, failing
/// at once if the hub counts more than `connected_before` agents (it served this one).
async fn wait_refused(
    env: &E2eEnv,
    agent: &AgentProcess,
    who: &str,
    label: &str,
    connected_before: usize,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if !refusals(agent, label).is_empty() {
            return Ok(());
        }
        let n = metric_sum(&env.hub.metrics().await?, "vclink_hub_agents_connected");
        if n > connected_before as f64 {
            anyhow::bail!(
                "the hub served the agent of {who}, which lacks {label}=enabled ({n} agents connected, {connected_before} before)\n--- that agent ---\n{}\n{}",
                agent.log_buffer().tail(30),
                diagnostics(env)
            );
        }
        if started.elapsed() > TIMEOUT {
            anyhow::bail!(
                "timed out after {TIMEOUT:?} waiting for the agent of {who} to be refused with PERMISSION_DENIED naming {label}\n--- that agent ---\n{}\n{}",
                agent.log_buffer().tail(30),
                diagnostics(env)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_opted_in_hosts_and_opted_in_nested_hosts_are_served() -> anyhow::Result<()> {
    let mut env = start(
        E2eOptions {
            start_agents: false,
            // Nested hosts are off by default (a cluster owner can edit the labels of
            // their own cluster); the second half of this test needs them allowed.
            hub: vclink_harness::HubOptions {
                extra_args: vec!["--allow-nested-hosts".into()],
                ..Default::default()
            },
            ..Default::default()
        },
        false,
    )
    .await?;
    let host = env.downstream().cluster_id.clone();
    let log = ClusterLog::watch(&env).await?;
    let vc = env
        .create_vcluster(0, VClusterSpec::new("g-hosts", "vc"))
        .await?;

    // Not opted in: refused, nothing created.
    env.start_agent(0).await?;
    let label = AGENT_LABEL.0;
    {
        let agent = env.downstreams[0]
            .agent
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no agent"))?;
        wait_refused(&env, agent, &format!("host {host}"), label, 0).await?;
    }
    let t = Instant::now();
    never(
        &format!("an agent of a host without {label}=enabled must get nothing"),
        t + Duration::from_secs(10),
        &env,
        || async {
            let m = env.hub.metrics().await?;
            if metric_sum(&m, "vclink_hub_agents_connected") > 0.0 {
                return Ok(Some(format!(
                    "the hub counts a connected agent for {host}, which is not opted in"
                )));
            }
            let made = clusters_of(&env, &vc).await?;
            Ok((!made.is_empty()).then(|| {
                format!(
                    "a Rancher cluster was created for a vCluster of the not opted-in host {host}"
                )
            }))
        },
    )
    .await?;
    anyhow::ensure!(
        log.all()
            .values()
            .all(|s| s.labels.get(vclink_proto::keys::LABEL_HOST_CLUSTER) != Some(&host)),
        "a Rancher cluster was created for host {host}, which is not opted in"
    );

    // Opted in: served, the vCluster is imported.
    label_rancher_cluster(&env, &host, AGENT_LABEL.0, Some(AGENT_LABEL.1)).await?;
    let nested = wait_connected(&env, 0, &vc).await.map_err(|e| {
        anyhow::anyhow!(
            "after labelling {host} {label}=enabled its vCluster was not imported:\n{e:#}"
        )
    })?;

    // The vCluster's own cluster hosts an agent: Rancher user may review its tokens (as
    // an install would arrange), and it carries vclink.io/agent=enabled.
    grant_tokenreview(vc.api(), HUB_RANCHER_USER).await?;
    label_rancher_cluster(&env, &nested.id, AGENT_LABEL.0, Some(AGENT_LABEL.1)).await?;
    let mut nested_agent =
        AgentProcess::start(vc.api(), &env.hub, &nested.id, AgentOptions::default()).await?;
    let who = format!("the vCluster cluster {} (nested)", nested.id);
    wait_refused(&env, &nested_agent, &who, NESTED_LABEL.0, 1).await?;
    never(
        &format!(
            "a vCluster cluster without {}=enabled must not be served",
            NESTED_LABEL.0
        ),
        Instant::now() + Duration::from_secs(8),
        &env,
        || async {
            let m = env.hub.metrics().await?;
            let n = metric_sum(&m, "vclink_hub_agents_connected");
            Ok((n > 1.0).then(|| {
                format!("the hub counts {n} connected agents: it served the agent of {who}")
            }))
        },
    )
    .await?;
    // With the extra label it is let in.
    label_rancher_cluster(&env, &nested.id, NESTED_LABEL.0, Some(NESTED_LABEL.1)).await?;
    wait_agents_connected(&env, 2).await.map_err(|e| {
        anyhow::anyhow!(
            "{who} labelled {}=enabled was still not served: {e:#}\n--- that agent ---\n{}",
            NESTED_LABEL.0,
            nested_agent.log_buffer().tail(40)
        )
    })?;
    nested_agent.stop().await?;
    Ok(())
}
