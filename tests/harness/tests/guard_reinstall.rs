//! Same vCluster, new Service UID: `helm uninstall` + `install` (or `kubectl replace
//! --force`, a backup restore) deletes and recreates the vCluster's Services at the same
//! host, namespace and name. Within the removal grace that is the same vCluster: the same
//! Rancher cluster stays (same provisioning cluster UID, never terminating), relabelled
//! with the new Service UID; no second cluster is ever created; the project owner's
//! binding on it is the same object as before.

mod e2e_support;
mod guard_support;
mod owners_support;

use std::time::{Duration, Instant};

use e2e_support::*;
use guard_support::*;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use vclink_harness::vcluster::{headless_service, service_object};
use vclink_harness::{E2eOptions, VClusterSpec};
use vclink_proto::keys;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reinstalled_vcluster_keeps_its_rancher_cluster_and_bindings() -> anyhow::Result<()> {
    let grace = Duration::from_secs(20);
    let env = start(
        E2eOptions {
            removal_grace: grace,
            ..Default::default()
        },
        true,
    )
    .await?;
    let host = env.downstream().cluster_id.clone();
    let local = env.local_client().await?;
    let project = env.sim.create_project(&host, "team-r").await?;
    let pid = format!("{host}:{}", project.id);
    owners_support::add_prtb(
        &local,
        &project.backing_namespace,
        "alice-owner",
        &pid,
        "project-owner",
        owners_support::user("u-alice"),
    )
    .await?;
    let log = ClusterLog::watch(&env).await?;
    let vc = env
        .create_vcluster(0, VClusterSpec::new("g-reinstall", "vc").project(&pid))
        .await?;
    let before = wait_connected(&env, 0, &vc).await?;
    owners_support::wait_grants(
        &local,
        &before.id,
        &["cluster-owner u-alice"],
        "the project owner's binding on the vCluster's cluster",
    )
    .await?;
    let crtb_uid = |items: Vec<kube::api::DynamicObject>| {
        items
            .into_iter()
            .find(|o| owners_support::grant(o) == "cluster-owner u-alice")
            .and_then(|o| o.metadata.uid)
    };
    let alice = crtb_uid(
        owners_support::crtbs(&local, &before.id)
            .list(&ListParams::default().labels(owners_support::OWNED))
            .await?
            .items,
    )
    .unwrap_or_default();

    // helm uninstall + install: both Services go and come back with new UIDs.
    let svcs: Api<Service> =
        Api::namespaced(env.downstream().cluster.client().await?, "g-reinstall");
    for n in ["vc", "vc-headless"] {
        svcs.delete(n, &DeleteParams::default()).await?;
    }
    wait(&env, "the old Service to be gone", || async {
        Ok(svcs.get_opt("vc").await?.is_none().then_some(()))
    })
    .await?;
    let pp = PatchParams::apply("guard-test-reinstall").force();
    svcs.patch(
        "vc-headless",
        &pp,
        &Patch::Apply(headless_service(vc.spec())),
    )
    .await?;
    let new_uid = svcs
        .patch("vc", &pp, &Patch::Apply(service_object(vc.spec())))
        .await?
        .metadata
        .uid
        .unwrap_or_default();
    let back = Instant::now();
    anyhow::ensure!(
        new_uid != vc.service_uid(),
        "the recreated Service kept its UID"
    );
    let what = format!(
        "vCluster g-reinstall/vc reinstalled (Service UID {} -> {new_uid})",
        vc.service_uid()
    );

    // The same cluster is relabelled to the new Service UID...
    let prov = prov_api(local.clone());
    wait_unless(
        &format!(
            "{what}: its Rancher cluster {} to be labelled {}={new_uid}",
            before.name,
            keys::LABEL_SERVICE_UID
        ),
        TIMEOUT,
        &env,
        || async {
            let p = prov.get_opt(&before.name).await?;
            Ok(p.filter(|p| {
                p.metadata.uid.as_deref() == Some(before.prov_uid.as_str())
                    && p.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(keys::LABEL_SERVICE_UID))
                        == Some(&new_uid)
            })
            .map(|_| ()))
        },
        || log.deletion_of(&before.prov_uid, &what, back),
    )
    .await?;
    // ...and stays, well past the grace, the only one, with its owner binding.
    let only_one = || {
        let ever = log.for_vcluster(&host, "g-reinstall", "vc");
        (ever.len() != 1).then(|| {
            format!(
                "{what}: {} Rancher clusters were created for it: {:?}",
                ever.len(),
                ever.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
            )
        })
    };
    never(
        &format!("the reinstalled vCluster must keep its one Rancher cluster (grace {grace:?} + 10 s)"),
        back + grace + Duration::from_secs(10),
        &env,
        || async {
            if let Some(p) = log.deletion_of(&before.prov_uid, &what, back).or_else(only_one) {
                return Ok(Some(p));
            }
            let now = crtb_uid(
                owners_support::crtbs(&local, &before.id)
                    .list(&ListParams::default())
                    .await?
                    .items,
            );
            if now.as_deref() != Some(alice.as_str()) {
                return Ok(Some(format!(
                    "{what}: the project owner's binding (CRTB {alice}) on {} is gone or was re-created (now {now:?})",
                    before.id
                )));
            }
            Ok(None)
        },
    )
    .await?;
    // The owner sees the vCluster connected to the same cluster.
    let ann = wait(
        &env,
        &format!("{what}: the new Service to say connected"),
        || async {
            let a: std::collections::BTreeMap<String, String> = svcs
                .get("vc")
                .await?
                .metadata
                .annotations
                .unwrap_or_default();
            Ok(
                (a.get(keys::ANNOTATION_STATE).map(String::as_str) == Some("connected"))
                    .then_some(a),
            )
        },
    )
    .await?;
    anyhow::ensure!(
        ann.get(keys::ANNOTATION_RANCHER_CLUSTER) == Some(&before.id),
        "{what}: the new Service names {:?}, not its cluster {}",
        ann.get(keys::ANNOTATION_RANCHER_CLUSTER),
        before.id
    );
    Ok(())
}
