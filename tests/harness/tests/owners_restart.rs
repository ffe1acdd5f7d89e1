//! Owner sync across hub restarts: changes made while the hub is down (bindings removed
//! and added, a new role mapping) converge when it comes back, rebuilt from what the
//! local cluster holds (labels on clusters and CRTBs); a restart without changes writes
//! nothing. The vCluster's Rancher cluster is created the way the hub creates one, so
//! no agent is needed (the project comes from the cluster's `vclink.io/project` label).

mod owners_support;

use owners_support::*;
use vclink_harness::{E2eEnv, E2eOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn owner_bindings_converge_after_restart_and_mapping_change() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mapping = dir.path().join("mapping.json");
    std::fs::write(
        &mapping,
        r#"{"project": {"project-owner": "cluster-owner", "project-member": "cluster-owner"}}"#,
    )?;
    let mut opts = E2eOptions {
        start_agents: false,
        ..Default::default()
    };
    opts.hub
        .extra_args
        .push(format!("--owner-role-mapping={}", mapping.display()));
    let mut env = E2eEnv::start(opts).await?;
    let c = env.local_client().await?;
    let host = env.downstream().cluster_id.clone();
    let p = env.sim.create_project(&host, "team-r").await?;
    let pid = format!("{host}:{}", p.id);
    let ns = p.backing_namespace.clone();
    add_prtb(&c, &ns, "a-owner", &pid, "project-owner", user("u-a")).await?;
    add_prtb(
        &c,
        &ns,
        "devs-member",
        &pid,
        "project-member",
        group_name("g-devs"),
    )
    .await?;
    add_prtb(&c, &ns, "b-readonly", &pid, "read-only", user("u-b")).await?;
    let m = vcluster_cluster(
        &c,
        &host,
        "11111111-2222-3333-4444-555555555555",
        Some(&p.id),
        "vc-restart",
    )
    .await?;
    wait_grants(
        &c,
        &m,
        &["cluster-owner u-a", "cluster-owner g-devs"],
        "owners and a group",
    )
    .await?;

    // While the hub is down: one binding goes, one comes, and the mapping changes
    // (members excluded, read-only becomes cluster-member).
    env.hub.stop().await?;
    delete(&prtbs(&c, &ns), "a-owner").await?;
    add_prtb(&c, &ns, "c-owner", &pid, "project-owner", user("u-c")).await?;
    std::fs::write(
        &mapping,
        r#"{"project": {"project-owner": "cluster-owner", "project-member": null, "read-only": "cluster-member"}}"#,
    )?;
    env.hub.start_again().await?;
    wait_grants(
        &c,
        &m,
        &["cluster-owner u-c", "cluster-member u-b"],
        "the new mapping after a restart",
    )
    .await?;

    // A restart with nothing changed writes nothing: after a new binding converges
    // (a barrier proving the resync ran), exactly that one create happened.
    env.hub.stop().await?;
    env.hub.start_again().await?;
    add_prtb(&c, &ns, "d-owner", &pid, "project-owner", user("u-d")).await?;
    wait_grants(
        &c,
        &m,
        &[
            "cluster-owner u-c",
            "cluster-member u-b",
            "cluster-owner u-d",
        ],
        "a binding after a clean restart",
    )
    .await?;
    let t = env.hub.metrics().await?;
    assert_eq!(
        counter_with(
            &t,
            "vclink_hub_owner_api_requests_total",
            "resource=\"crtb\",verb=\"create\"",
        ),
        1.0,
        "{t}"
    );
    assert_eq!(
        counter_with(
            &t,
            "vclink_hub_owner_api_requests_total",
            "resource=\"crtb\",verb=\"delete\"",
        ),
        0.0,
        "{t}"
    );
    Ok(())
}
