//! Fleet workspaces per Rancher project (hub `--fleet-workspace-for-project`,
//! `--create-fleet-workspaces`), end to end against real API servers and the Rancher
//! simulator, under the hub chart's RBAC rendered with the same values:
//! - a vCluster in a mapped project gets its Rancher cluster in the mapped workspace,
//!   one in an unmapped project in the default workspace;
//! - a mapped workspace that does not exist is an error on the vCluster's Service naming
//!   the workspace and the flag (and nothing else is affected);
//! - moving a vCluster's namespace to another project leaves its cluster where it is
//!   (same object, same workspace; only its project label follows);
//! - a hub restart finds the clusters in every workspace and creates no second one;
//! - with `--create-fleet-workspaces` the hub creates the missing FleetWorkspace
//!   (labelled as vclink's), the simulator backs it with its namespace as Rancher does,
//!   and the cluster is created there.

mod e2e_support;

use std::collections::BTreeMap;

use e2e_support::*;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use serde_json::json;
use vclink_harness::{E2eEnv, E2eOptions, HubOptions, SimVCluster, VClusterSpec, wait_for};
use vclink_proto::keys;

fn fleet_workspace() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("management.cattle.io", "v3", "FleetWorkspace"),
        "fleetworkspaces",
    )
}

/// An environment whose hub maps display names per `mapping` (the chart's values and
/// the hub's flags agree), with `--create-fleet-workspaces` when `create`.
async fn start(mapping: &[(&str, &str)], create: bool) -> anyhow::Result<E2eEnv> {
    let values: BTreeMap<&str, &str> = mapping.iter().copied().collect();
    let flag = mapping
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    E2eEnv::start(E2eOptions {
        hub: HubOptions {
            chart_values: Some(json!({
                "fleetWorkspaceForProject": values,
                "createFleetWorkspaces": create,
            })),
            extra_args: vec![
                format!("--fleet-workspace-for-project={flag}"),
                format!("--create-fleet-workspaces={create}"),
            ],
            ..Default::default()
        },
        ..Default::default()
    })
    .await
}

/// Every provisioning cluster of `vc` in any namespace, as (namespace, name, uid).
async fn clusters_anywhere(
    env: &E2eEnv,
    vc: &SimVCluster,
) -> anyhow::Result<Vec<(String, String, String)>> {
    let api: Api<DynamicObject> = Api::all_with(
        env.local_client().await?,
        &vclink_harness::env::provisioning_cluster(),
    );
    let lp =
        ListParams::default().labels(&format!("{}={}", keys::LABEL_SERVICE_UID, vc.service_uid()));
    Ok(api
        .list(&lp)
        .await?
        .items
        .into_iter()
        .map(|o| {
            (
                o.metadata.namespace.unwrap_or_default(),
                o.metadata.name.unwrap_or_default(),
                o.metadata.uid.unwrap_or_default(),
            )
        })
        .collect())
}

/// Creates the FleetWorkspace `name` as an administrator would and waits for the
/// simulator to back it with its namespace.
async fn create_workspace(env: &E2eEnv, name: &str) -> anyhow::Result<()> {
    let c = env.local_client().await?;
    let ws: Api<DynamicObject> = Api::all_with(c.clone(), &fleet_workspace());
    ws.patch(
        name,
        &PatchParams::apply("workspaces-test"),
        &Patch::Apply(json!({
            "apiVersion": "management.cattle.io/v3", "kind": "FleetWorkspace",
            "metadata": {"name": name},
        })),
    )
    .await?;
    let ns: Api<Namespace> = Api::all(c);
    wait_for(
        &format!("the namespace of Fleet workspace {name}"),
        TIMEOUT,
        || async { anyhow::Ok(ns.get_opt(name).await?.map(|_| ())) },
    )
    .await?;
    Ok(())
}

/// Moves the vCluster's namespace into `project_id` (`<cluster-id>:<p-id>`) the way
/// Rancher's UI does: the namespace's projectId annotation and label.
async fn move_namespace(env: &E2eEnv, vc: &SimVCluster, project_id: &str) -> anyhow::Result<()> {
    let short = project_id
        .split_once(':')
        .map(|(_, p)| p)
        .unwrap_or(project_id);
    let ns: Api<Namespace> = Api::all(env.downstream().cluster.client().await?);
    ns.patch(
        vc.namespace(),
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {
            "annotations": {"field.cattle.io/projectId": project_id},
            "labels": {"field.cattle.io/projectId": short},
        }})),
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clusters_land_in_their_projects_workspace_and_stay_there() -> anyhow::Result<()> {
    let mut env = start(&[("Team A", "ws-a"), ("Team C", "ws-missing")], false).await?;
    let host = env.downstream().cluster_id.clone();
    create_workspace(&env, "ws-a").await?;
    let team_a = env.sim.create_project(&host, "Team A").await?;
    let team_b = env.sim.create_project(&host, "Team B").await?;
    let team_c = env.sim.create_project(&host, "Team C").await?;
    let (pa, pb, pc) = (
        format!("{host}:{}", team_a.id),
        format!("{host}:{}", team_b.id),
        format!("{host}:{}", team_c.id),
    );

    // Mapped project → mapped workspace; unmapped project → the default.
    let vc_a = env
        .create_vcluster(0, VClusterSpec::new("ws-team-a", "vc").project(&pa))
        .await?;
    let vc_b = env
        .create_vcluster(0, VClusterSpec::new("ws-team-b", "vc").project(&pb))
        .await?;
    let (a_name, _) = env
        .wait_for_ready_cluster("ws-a", &vc_a, TIMEOUT)
        .await
        .diag(&env)?;
    let (b_name, _) = env
        .wait_for_ready_cluster(WS, &vc_b, TIMEOUT)
        .await
        .diag(&env)?;
    wait_state(&env, 0, &vc_a, "connected").await?;
    wait_state(&env, 0, &vc_b, "connected").await?;
    let a_before = clusters_anywhere(&env, &vc_a).await?;
    let b_before = clusters_anywhere(&env, &vc_b).await?;
    assert_eq!(a_before.len(), 1, "{a_before:?}");
    assert_eq!(
        (a_before[0].0.as_str(), a_before[0].1.as_str()),
        ("ws-a", a_name.as_str())
    );
    assert_eq!(b_before.len(), 1, "{b_before:?}");
    assert_eq!(
        (b_before[0].0.as_str(), b_before[0].1.as_str()),
        (WS, b_name.as_str())
    );

    // A mapped workspace that does not exist: an error on the Service naming it and the
    // flag; no cluster anywhere, and the others are untouched.
    let vc_c = env
        .create_vcluster(0, VClusterSpec::new("ws-team-c", "vc").project(&pc))
        .await?;
    let ann = wait_state(&env, 0, &vc_c, "error").await?;
    let err = ann
        .get(keys::ANNOTATION_LAST_ERROR)
        .cloned()
        .unwrap_or_default();
    assert!(
        err.contains("ws-missing") && err.contains("--create-fleet-workspaces"),
        "the error names the workspace and the flag: {ann:?}"
    );
    assert!(clusters_anywhere(&env, &vc_c).await?.is_empty());
    let ns: Api<Namespace> = Api::all(env.local_client().await?);
    assert!(
        ns.get_opt("ws-missing").await?.is_none(),
        "nothing was created"
    );

    // Moving vc-a's namespace into the unmapped project moves nothing: once the hub has
    // recorded the new project on the cluster, the cluster is the same object in ws-a.
    move_namespace(&env, &vc_a, &pb).await?;
    let prov: Api<DynamicObject> = Api::namespaced_with(
        env.local_client().await?,
        "ws-a",
        &vclink_harness::env::provisioning_cluster(),
    );
    wait_for(
        "the moved vCluster's cluster to record project B",
        TIMEOUT,
        || async {
            let p = prov.get(&a_name).await?;
            anyhow::Ok((labels_of(&p).get(keys::LABEL_PROJECT) == Some(&team_b.id)).then_some(()))
        },
    )
    .await
    .diag(&env)?;
    assert_eq!(
        clusters_anywhere(&env, &vc_a).await?,
        a_before,
        "nothing moved"
    );
    wait_state(&env, 0, &vc_a, "connected").await?;

    // A restart finds the clusters in both workspaces and makes no second one: a new
    // vCluster of team A imported after the restart is the barrier (the hub has listed
    // and reconciled by then).
    env.hub.restart().await?;
    let vc_a2 = env
        .create_vcluster(0, VClusterSpec::new("ws-team-a2", "vc").project(&pa))
        .await?;
    env.wait_for_ready_cluster("ws-a", &vc_a2, TIMEOUT)
        .await
        .diag(&env)?;
    wait_state(&env, 0, &vc_a, "connected").await?;
    wait_state(&env, 0, &vc_b, "connected").await?;
    assert_eq!(
        clusters_anywhere(&env, &vc_a).await?,
        a_before,
        "after the restart"
    );
    assert_eq!(
        clusters_anywhere(&env, &vc_b).await?,
        b_before,
        "after the restart"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_workspace_is_created_with_the_flag() -> anyhow::Result<()> {
    let env = start(&[("Team N", "ws-new")], true).await?;
    let host = env.downstream().cluster_id.clone();
    let team_n = env.sim.create_project(&host, "Team N").await?;
    let ws: Api<DynamicObject> = Api::all_with(env.local_client().await?, &fleet_workspace());
    assert!(ws.get_opt("ws-new").await?.is_none(), "precondition");
    let vc = env
        .create_vcluster(
            0,
            VClusterSpec::new("ws-team-n", "vc").project(&format!("{host}:{}", team_n.id)),
        )
        .await?;
    env.wait_for_ready_cluster("ws-new", &vc, TIMEOUT)
        .await
        .diag(&env)?;
    wait_state(&env, 0, &vc, "connected").await?;
    let created = ws.get("ws-new").await?;
    assert_eq!(
        labels_of(&created)
            .get(keys::LABEL_MANAGED_BY)
            .map(String::as_str),
        Some(keys::MANAGED_BY_VALUE),
        "the hub's FleetWorkspace is labelled as vclink's"
    );
    let all = clusters_anywhere(&env, &vc).await?;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].0, "ws-new");
    Ok(())
}
