//! Several hub replicas with leader election, on the real API
//! servers with the Rancher simulator, under the hub chart's RBAC and with the Lease the
//! chart creates. The agent dials a replica that stands by, as the chart's Service may
//! send it to any Ready replica: the standby forwards the connection to the leader.
//! Checks what an administrator would:
//! - exactly one replica leads (metrics, the Lease's leader address) and a standby never
//!   takes a renewed Lease;
//! - a clean shutdown of the leader hands over at once, a crashed leader after the lease
//!   duration; the agent follows, imports continue, nothing is duplicated or deleted;
//! - a leader whose Lease is taken stops and exits non-zero (to restart as a standby).

mod e2e_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e_support::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{Patch, PatchParams};
use vclink_envtest::CertificateAuthority;
use vclink_harness::procs::rbac::RELEASE_NAMESPACE;
use vclink_harness::{
    AgentOptions, AgentProcess, E2eEnv, E2eOptions, HubOptions, HubProcess, VClusterSpec,
    holds_for, wait_for,
};

/// The chart's names for release `vclink-hub`: Lease and Endpoints are both the fullname.
const LEASE: &str = "vclink-hub";
const LEASE_DURATION: Duration = Duration::from_secs(3);
const WAIT: Duration = Duration::from_secs(60);

/// What the chart's Deployment sets, with short timings so a takeover is quick.
fn leader_flags() -> Vec<String> {
    [
        "--leader-election=true".to_owned(),
        format!("--leader-election-namespace={RELEASE_NAMESPACE}"),
        format!("--leader-election-lease={LEASE}"),
        // Every replica runs on this machine, on its own port.
        "--pod-ip=127.0.0.1".to_owned(),
        format!(
            "--leader-election-lease-duration={}s",
            LEASE_DURATION.as_secs()
        ),
        "--leader-election-renew-deadline=2s".to_owned(),
        "--leader-election-retry-period=500ms".to_owned(),
    ]
    .into()
}

async fn start_env() -> anyhow::Result<E2eEnv> {
    E2eEnv::start(E2eOptions {
        start_agents: false,
        hub: HubOptions {
            // Replicas share the chart's TLS Secret, so one CA and certificate for both.
            ca: Some(Arc::new(CertificateAuthority::new("vclink-test-hub-ca")?)),
            extra_args: leader_flags(),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
}

/// `vclink_hub_leader` as `hub` reports it.
async fn leads(hub: &HubProcess) -> anyhow::Result<bool> {
    Ok(hub
        .metrics()
        .await?
        .lines()
        .any(|l| l.trim() == "vclink_hub_leader 1"))
}

/// Waits until `hub` leads and the Lease publishes its address.
async fn wait_leader(env: &E2eEnv, hub: &HubProcess, who: &str) -> anyhow::Result<()> {
    let leases: Api<Lease> = Api::namespaced(env.local_client().await?, RELEASE_NAMESPACE);
    let address = hub.grpc_addr().to_string();
    wait_for(
        &format!("{who} to lead and publish its address in the Lease"),
        WAIT,
        || async {
            let lease = leases.get(LEASE).await?;
            let published = lease
                .metadata
                .annotations
                .and_then(|a| a.get("vclink.io/leader-address").cloned());
            anyhow::Ok(leads(hub).await? && published.as_deref() == Some(address.as_str()))
        },
    )
    .await
    .diag(env)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_replica_leads_and_a_standby_takes_over_without_duplicates() -> anyhow::Result<()> {
    let mut env = start_env().await?;
    let admin = env.local_client().await?;
    wait_leader(&env, &env.hub, "the first replica").await?;

    // A second replica stands by: Ready (so a rolling update proceeds), not leading, and
    // it never takes the Lease while the leader renews it.
    let mut second = HubProcess::start(&env.local, env.hub_options()).await?;
    assert!(!leads(&second).await?, "a standby must not lead");
    holds_for(
        "the first replica keeps the lease while it renews it",
        LEASE_DURATION * 3,
        || async { anyhow::Ok(leads(&env.hub).await? && !leads(&second).await?) },
    )
    .await?;

    // The agent dials the standby (the Service may pick any Ready replica): the standby
    // forwards its connection to the leader, and the agent verifies the leader's
    // certificate end to end.
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
    env.downstreams[0].agent = Some(agent);
    let vc1 = env
        .create_vcluster(0, VClusterSpec::new("team-a", "vc1"))
        .await?;
    let uids = ClusterUids::watch(admin.clone(), vc1.service_uid()).await?;
    wait_state(&env, 0, &vc1, "connected").await?;
    let first = current(&env, &vc1).await?.expect("vc1 is imported");

    // Clean shutdown of the leader: it releases the Lease, the standby leads at once, and
    // the agent, whose connection the standby was forwarding, reconnects to it.
    let status = env.hub.stop().await?;
    assert!(
        status.is_some_and(|s| s.success()),
        "a leader stopped by SIGTERM exits 0: {status:?}"
    );
    wait_leader(&env, &second, "the standby").await?;
    let vc2 = env
        .create_vcluster(0, VClusterSpec::new("team-a", "vc2"))
        .await?;
    wait_state(&env, 0, &vc2, "connected").await?;
    assert_eq!(
        current(&env, &vc1).await?.as_ref(),
        Some(&first),
        "the new leader adopts vc1's Rancher cluster, never re-creates it"
    );

    // The first replica comes back as a standby; then the leader — the replica the agent
    // dials — crashes (no release): the standby takes over once the Lease expires, and
    // the agent, now dialling an address where nothing listens, is pointed at the new
    // leader as a restarted Service would route it. Removals still work.
    env.hub.start_again().await?;
    assert!(
        !leads(&env.hub).await?,
        "a replica started while another leads stands by"
    );
    second.kill().await;
    wait_leader(&env, &env.hub, "the standby after the leader crashed").await?;
    let agent = AgentProcess::start(
        &env.downstream().cluster,
        &env.hub,
        &host,
        AgentOptions::default(),
    )
    .await?;
    env.downstreams[0].agent = Some(agent);
    vc1.delete().await?;
    wait_cluster_gone(&env, &vc1, &first.id, WAIT).await?;
    assert_eq!(
        uids.seen(),
        vec![first.prov_uid.clone()],
        "vc1 had exactly one provisioning cluster through both takeovers"
    );
    wait_state(&env, 0, &vc2, "connected").await?;
    let lease = Api::<Lease>::namespaced(admin, RELEASE_NAMESPACE)
        .get(LEASE)
        .await?;
    assert!(
        lease
            .spec
            .and_then(|s| s.lease_transitions)
            .is_some_and(|t| t >= 2),
        "the Lease records both takeovers"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_whose_lease_is_taken_stops_and_exits_non_zero() -> anyhow::Result<()> {
    let mut env = start_env().await?;
    wait_leader(&env, &env.hub, "the only replica").await?;
    // Another holder appears in the Lease (e.g. the API server was unreachable from this
    // replica and a standby took over meanwhile).
    let leases: Api<Lease> = Api::namespaced(env.local_client().await?, RELEASE_NAMESPACE);
    let now = k8s_openapi::jiff::Timestamp::now();
    leases
        .patch(
            LEASE,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {
                "holderIdentity": "another-replica_0000abcd",
                "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(now),
                "leaseDurationSeconds": 3600,
            }})),
        )
        .await?;
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = env.hub.try_exit_status() {
            break s;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the deposed leader still runs after {WAIT:?}:\n{}",
            env.hub.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        !status.success(),
        "exits non-zero so it restarts: {status:?}"
    );
    assert!(
        env.hub
            .logs()
            .iter()
            .any(|l| l.contains("lost the leader lease")),
        "the log says why:\n{}",
        env.hub.logs().join("\n")
    );
    Ok(())
}

/// `vclink_hub_agents_connected` as `hub` reports it (0 on a standby, which lacks it).
async fn agents_connected(hub: &HubProcess) -> u64 {
    hub.metrics()
        .await
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("vclink_hub_agents_connected "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Open file descriptors of process `pid`.
fn open_fds(pid: u32) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// A hub that crashes and restarts in the same pod keeps its address and pod IP, so the
/// Lease still names its previous process as leader — at its own address — until the
/// lease expires. The restarted hub must treat that as "no leader yet" (not forward the
/// agent's connections to itself, which forwarded again until file descriptors ran out),
/// then take over, and the agent must be attached again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hub_restarted_in_place_never_forwards_to_itself() -> anyhow::Result<()> {
    let lease = Duration::from_secs(8);
    let mut flags = leader_flags();
    flags.retain(|f| !f.starts_with("--leader-election-lease-duration"));
    flags.push(format!(
        "--leader-election-lease-duration={}s",
        lease.as_secs()
    ));
    let mut env = E2eEnv::start(E2eOptions {
        start_agents: false,
        hub: HubOptions {
            extra_args: flags,
            ..Default::default()
        },
        ..Default::default()
    })
    .await?;
    wait_leader(&env, &env.hub, "the only replica").await?;
    env.start_agent(0).await?;
    wait_for("the agent to attach", WAIT, || async {
        anyhow::Ok(agents_connected(&env.hub).await == 1)
    })
    .await
    .diag(&env)?;
    let before = open_fds(env.hub.pid().expect("the hub runs"))?;

    // kill -9 and start again on the same address with the same --pod-ip, while the
    // Lease (8 s) still names the killed process.
    env.hub.kill().await;
    let restarted = Instant::now();
    env.hub.start_again().await?;
    let pid = env.hub.pid().expect("the hub runs again");
    let mut most = 0;
    let attached = loop {
        most = most.max(open_fds(pid)?);
        if leads(&env.hub).await.unwrap_or(false) && agents_connected(&env.hub).await == 1 {
            break restarted.elapsed();
        }
        anyhow::ensure!(
            restarted.elapsed() < WAIT,
            "the agent was not attached again within {WAIT:?} (most open fds: {most}); hub log:\n{}",
            env.hub.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Keep counting a little after the takeover: nothing may pile up then either.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        most = most.max(open_fds(pid)?);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "restart in place: open fds before {before}, most after {most}; agent re-attached after {:.1}s",
        attached.as_secs_f64()
    );
    assert!(
        most < before + 100,
        "open file descriptors stay bounded (before the crash {before}, most after {most})"
    );
    assert!(
        attached < lease + Duration::from_secs(40),
        "the agent is attached again soon after the old lease expires: {attached:?}"
    );
    Ok(())
}
