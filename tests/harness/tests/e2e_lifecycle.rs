//! End-to-end lifecycle of imported vClusters across process restarts, on real
//! API servers with the Rancher simulator and vclink's real hub and agent:
//! - the hub crashes or restarts between every step of an import and the import still
//!   completes with exactly one Rancher cluster (never a duplicate, never re-created),
//!   and a vCluster deleted while the hub is down is removed once it is back;
//! - the agent goes away for longer than the removal grace: nothing is deleted (a
//!   disconnect is no proof); a vCluster removed while it was away is deleted once the
//!   agent's next snapshot lacks it, and only that one.

mod e2e_support;

use std::time::{Duration, Instant};

use e2e_support::*;
use vclink_harness::{E2eEnv, E2eOptions, RunOutcome, RunRecord, SimVCluster, VClusterSpec};
use vclink_harness::{holds_for, wait_for};
use vclink_rancher_sim::{Delays, SimOptions};

const GRACE: Duration = Duration::from_secs(2);

/// Registration Job runs for `vc` so far (the Job name is per vCluster).
fn runs_for(env: &E2eEnv, vc: &SimVCluster, secrets: &RegistrationSecrets) -> Vec<RunRecord> {
    let Some(name) = secrets
        .of(vc.service_uid())
        .first()
        .and_then(|s| s.metadata.name.clone())
    else {
        return Vec::new();
    };
    env.downstream().runner.runs_of(vc.namespace(), &name)
}

/// The one provisioning cluster of `vc` with the UID it had from the start.
async fn one_cluster(env: &E2eEnv, vc: &SimVCluster, uid: &str) -> anyhow::Result<bool> {
    let all = clusters_of(env, vc).await?;
    anyhow::ensure!(
        all.len() <= 1,
        "{} provisioning clusters for one vCluster",
        all.len()
    );
    Ok(all
        .first()
        .is_some_and(|c| c.metadata.uid.as_deref() == Some(uid)))
}

/// `vc` still has the Rancher cluster `kept` and its Service still says connected.
async fn still_connected(env: &E2eEnv, vc: &SimVCluster, kept: &Imported) -> anyhow::Result<bool> {
    let ann = vclink_annotations(env, 0, vc).await?;
    Ok(current(env, vc).await?.as_ref() == Some(kept)
        && ann
            .get(vclink_proto::keys::ANNOTATION_STATE)
            .map(String::as_str)
            == Some("connected"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hub_restarts_between_every_step_never_duplicate_the_cluster() -> anyhow::Result<()> {
    let started = Instant::now();
    // Rancher reacts after ~1 s, so each step below is a distinct moment.
    let sim = SimOptions {
        delays: Delays {
            min: Duration::from_millis(800),
            max: Duration::from_millis(1200),
        },
        ..Default::default()
    };
    let mut env = E2eEnv::start(E2eOptions {
        sim: Some(sim),
        removal_grace: GRACE,
        ..Default::default()
    })
    .await?;
    let secrets = RegistrationSecrets::watch(env.downstream().cluster.client().await?).await?;
    let vc = env
        .create_vcluster(0, VClusterSpec::new("team-e", "vc1").resource_quota())
        .await?;
    let uids = ClusterUids::watch(env.local_client().await?, vc.service_uid()).await?;

    // Step 1: the provisioning cluster exists (Rancher has not reacted yet) → crash.
    let first = wait_for("the provisioning cluster", TIMEOUT, || async {
        anyhow::Ok(
            clusters_of(&env, &vc)
                .await?
                .first()
                .and_then(|c| c.metadata.uid.clone()),
        )
    })
    .await
    .diag(&env)?;
    env.hub.kill().await;
    eprintln!(
        "hub killed after cluster creation; Job runs so far: {}",
        runs_for(&env, &vc, &secrets).len()
    );
    env.hub.start_again().await?;
    assert!(one_cluster(&env, &vc, &first).await?);

    // Step 2: the registration Job has run → graceful restart.
    wait_for("the registration Job to succeed", TIMEOUT, || async {
        runs_for(&env, &vc, &secrets)
            .iter()
            .any(|r| r.outcome == RunOutcome::Succeeded)
    })
    .await
    .diag(&env)?;
    env.hub.restart().await?;
    assert!(one_cluster(&env, &vc, &first).await?);

    // Step 3: Rancher sees the cluster agent → restart again.
    wait_for(
        "the management cluster to be Connected",
        TIMEOUT,
        || async {
            let Some(now) = current(&env, &vc).await? else {
                return anyhow::Ok(false);
            };
            let m = env.management_cluster(&now.id).await?;
            Ok(m.is_some_and(|m| condition(&m, "Connected").as_deref() == Some("True")))
        },
    )
    .await
    .diag(&env)?;
    let runs_before = runs_for(&env, &vc, &secrets).len();
    env.hub.restart().await?;
    wait_agents_connected(&env, 1).await?;
    // A connected vCluster is not registered again, and nothing is duplicated or removed.
    holds_for(
        "one cluster and no new registration after the last restart",
        GRACE * 3,
        || async {
            anyhow::Ok(
                one_cluster(&env, &vc, &first).await?
                    && runs_for(&env, &vc, &secrets).len() == runs_before,
            )
        },
    )
    .await
    .diag(&env)?;

    let imported = assert_imported(&env, 0, &vc, &secrets, None).await?;
    assert_eq!(imported.prov_uid, first);
    assert_eq!(
        uids.seen(),
        [first],
        "exactly one provisioning cluster ever existed"
    );

    // Last step: the vCluster is deleted while the hub is down. The agent's Remove goes
    // nowhere; the hub, rebuilt from the cluster's labels, learns it from the next
    // snapshot and deletes the cluster.
    env.hub.stop().await?;
    vc.delete().await?;
    env.hub.start_again().await?;
    wait_cluster_gone(&env, &vc, &imported.id, GRACE + TIMEOUT).await?;
    eprintln!(
        "Job runs: {}; total {:?}",
        runs_for(&env, &vc, &secrets).len(),
        started.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_away_longer_than_the_grace_deletes_nothing_until_its_snapshot_says_so()
-> anyhow::Result<()> {
    let started = Instant::now();
    let mut env = E2eEnv::start(E2eOptions {
        removal_grace: GRACE,
        ..Default::default()
    })
    .await?;
    let secrets = RegistrationSecrets::watch(env.downstream().cluster.client().await?).await?;
    let stays = env
        .create_vcluster(0, VClusterSpec::new("team-f", "stays"))
        .await?;
    let goes = env
        .create_vcluster(0, VClusterSpec::new("team-f", "goes"))
        .await?;
    let kept = assert_imported(&env, 0, &stays, &secrets, None).await?;
    env.wait_for_ready_cluster(WS, &goes, TIMEOUT)
        .await
        .diag(&env)?;
    wait_state(&env, 0, &goes, "connected").await?;
    let gone = current(&env, &goes)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no cluster for goes"))?;
    let runs_before = runs_for(&env, &stays, &secrets).len();

    // The agent stops (SIGTERM); meanwhile one vCluster is deleted.
    env.agent(0)
        .ok_or_else(|| anyhow::anyhow!("no agent"))?
        .stop()
        .await?;
    wait_agents_connected(&env, 0).await?;
    goes.delete().await?;
    let both_unchanged = || async {
        anyhow::Ok(
            current(&env, &stays).await?.as_ref() == Some(&kept)
                && current(&env, &goes).await?.as_ref() == Some(&gone),
        )
    };
    holds_for(
        "both Rancher clusters to stay while the agent is away",
        GRACE * 3,
        both_unchanged,
    )
    .await
    .diag(&env)?;

    // Back: its snapshot lacks `goes`, which is deleted after the grace; `stays` stays.
    env.agent(0)
        .ok_or_else(|| anyhow::anyhow!("no agent"))?
        .start_again()?;
    wait_agents_connected(&env, 1).await?;
    wait_cluster_gone(&env, &goes, &gone.id, GRACE + TIMEOUT).await?;
    holds_for(
        "the remaining vCluster's cluster to stay after the agent's return",
        GRACE * 3,
        || still_connected(&env, &stays, &kept),
    )
    .await
    .diag(&env)?;

    // A crash (SIGKILL) longer than the grace changes nothing either.
    env.agent(0)
        .ok_or_else(|| anyhow::anyhow!("no agent"))?
        .kill()
        .await;
    wait_agents_connected(&env, 0).await?;
    holds_for(
        "the cluster to stay while the agent is crashed",
        GRACE * 3,
        || still_connected(&env, &stays, &kept),
    )
    .await
    .diag(&env)?;
    env.agent(0)
        .ok_or_else(|| anyhow::anyhow!("no agent"))?
        .start_again()?;
    wait_agents_connected(&env, 1).await?;
    holds_for(
        "the cluster to stay after the agent's second return",
        GRACE * 3,
        || still_connected(&env, &stays, &kept),
    )
    .await
    .diag(&env)?;
    assert_eq!(
        runs_for(&env, &stays, &secrets).len(),
        runs_before,
        "a connected vCluster is not registered again after agent restarts"
    );
    eprintln!("total {:?}", started.elapsed());
    Ok(())
}
