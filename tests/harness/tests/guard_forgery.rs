//! Forged provisioning clusters are not trusted. A Rancher standard user allowed only to
//! create clusters in `fleet-default` (through the simulator's admission webhook, like any
//! user) creates a cluster carrying every label and annotation of a connected victim's
//! Rancher cluster under another name, and one claiming a vCluster that is not imported
//! yet. Checked the way an administrator would: the cattle-cluster-agent inside each
//! vCluster runs with its genuine cluster's credential, no registration Job ran for a
//! forged cluster, the genuine cluster is neither deleted nor duplicated and stays
//! connected, vclink deletes no forged cluster, and the victim's Service carries a
//! Warning that names the forgery.

mod e2e_support;
mod guard_support;

use std::time::{Duration, Instant};

use e2e_support::*;
use guard_support::*;
use kube::api::{DynamicObject, PostParams};
use serde_json::json;
use vclink_harness::{E2eOptions, SimVCluster, VClusterSpec};
use vclink_proto::keys;

/// How long after a forgery nothing bad may happen (the issue saw the victim run the
/// forged cluster's agent 1.7 s and 5.7 s after the forgery).
const WINDOW: Duration = Duration::from_secs(25);
const MALLORY: &str = "u-mallory";

/// Creates provisioning cluster `name` as the standard user with these labels,
/// annotations and spec.
async fn forge(
    mallory: &kube::Client,
    name: &str,
    labels: serde_json::Value,
    annotations: serde_json::Value,
    spec: serde_json::Value,
) -> anyhow::Result<DynamicObject> {
    let o: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "provisioning.cattle.io/v1", "kind": "Cluster",
        "metadata": {"name": name, "namespace": WS, "labels": labels, "annotations": annotations},
        "spec": spec}))?;
    prov_api(mallory.clone())
        .create(&PostParams::default(), &o)
        .await
        .map_err(|e| anyhow::anyhow!("the standard user {MALLORY} could not create {name}: {e}"))
}

/// The management cluster id of provisioning cluster `name`, once Rancher made it.
async fn mgmt_id_of(env: &vclink_harness::E2eEnv, name: &str) -> anyhow::Result<String> {
    let api = prov_api(env.local_client().await?);
    wait(
        env,
        &format!("the simulator to create the management cluster of {name}"),
        || async {
            Ok(api
                .get(name)
                .await?
                .data
                .pointer("/status/clusterName")
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_owned))
        },
    )
    .await
}

/// A Warning Event on `vc`'s Service naming `forged`.
async fn forgery_warning(
    env: &vclink_harness::E2eEnv,
    vc: &SimVCluster,
    forged: &str,
) -> anyhow::Result<()> {
    let r = wait(
        env,
        &format!(
            "a Warning Event on Service {}/{} naming the forged Rancher cluster {forged}",
            vc.namespace(),
            vc.name()
        ),
        || async {
            let evs = service_events(env, 0, vc).await?;
            Ok(evs
                .iter()
                .any(|e| {
                    e.type_.as_deref() == Some("Warning")
                        && e.message.as_deref().is_some_and(|m| m.contains(forged))
                })
                .then_some(()))
        },
    )
    .await;
    if r.is_err() {
        let evs = service_events(env, 0, vc).await?;
        anyhow::bail!(
            "the owner of {}/{} is never told that {forged} claims their vCluster; Events: {:?}\n{}",
            vc.namespace(),
            vc.name(),
            describe(&evs.iter().collect::<Vec<_>>()),
            diagnostics(env)
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clusters_forged_by_a_standard_user_are_never_used_deleted_or_obeyed() -> anyhow::Result<()>
{
    let env = start(
        E2eOptions {
            removal_grace: Duration::from_secs(3),
            ..Default::default()
        },
        true,
    )
    .await?;
    let host = env.downstream().cluster_id.clone();
    let secrets = RegistrationSecrets::watch(env.downstream().cluster.client().await?).await?;
    let victim = env
        .create_vcluster(0, VClusterSpec::new("g-victim", "vc"))
        .await?;
    let genuine = wait_connected(&env, 0, &victim).await?;
    // Not imported yet: opted out for now, so its Service UID is known and reported.
    let later = env
        .create_vcluster(
            0,
            VClusterSpec::new("g-later", "vc")
                .service_annotation(keys::ANNOTATION_SKIP_IMPORT, "true"),
        )
        .await?;
    let log = ClusterLog::watch(&env).await?;
    let mallory = standard_user(&env, MALLORY).await?;

    // Forgery 1: every label and annotation of the victim's genuine cluster, another name.
    let real = prov_api(env.local_client().await?)
        .get(&genuine.name)
        .await?;
    let copy = forge(
        &mallory,
        "forged-copy",
        json!(real.metadata.labels.clone().unwrap_or_default()),
        json!(real.metadata.annotations.clone().unwrap_or_default()),
        real.data.get("spec").cloned().unwrap_or(json!({})),
    )
    .await?;
    let forged_at = Instant::now();
    let copy_uid = copy.metadata.uid.clone().unwrap_or_default();
    let copy_id = mgmt_id_of(&env, "forged-copy").await?;

    // Forgery 2: the labels vclink would put on the not-yet-imported vCluster's cluster.
    let claim = forge(
        &mallory,
        "forged-new",
        json!({keys::LABEL_MANAGED_BY: keys::MANAGED_BY_VALUE, keys::LABEL_HOST_CLUSTER: host,
               keys::LABEL_SERVICE_UID: later.service_uid(), keys::LABEL_NAMESPACE: "g-later",
               keys::LABEL_NAME: "vc", keys::LABEL_VCLUSTER: "true"}),
        json!({"field.cattle.io/no-creator-rbac": "true",
               "rancher.io/imported-cluster-version-management": "false"}),
        json!({}),
    )
    .await?;
    let claim_uid = claim.metadata.uid.clone().unwrap_or_default();
    let claim_id = mgmt_id_of(&env, "forged-new").await?;

    // The not-yet-imported vCluster is opted in now: it must get a cluster of its own.
    patch_service(
        &env,
        0,
        "g-later",
        "vc",
        json!({"metadata": {"annotations": {keys::ANNOTATION_SKIP_IMPORT: null}}}),
    )
    .await?;

    let forged_ids = [copy_id.as_str(), claim_id.as_str()];
    let no_forged_job = || {
        for vc in [&victim, &later] {
            for s in secrets.of(vc.service_uid()) {
                let url = s
                    .data
                    .as_ref()
                    .and_then(|d| d.get("manifest-url"))
                    .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                    .unwrap_or_default();
                if let Some(id) = forged_ids.iter().find(|id| url.contains(**id)) {
                    return Some(format!(
                        "a registration Job ({}/{}) was created in the host to import vCluster {}/{} into the forged cluster {id}",
                        s.metadata.namespace.clone().unwrap_or_default(),
                        s.metadata.name.clone().unwrap_or_default(),
                        vc.namespace(),
                        vc.name()
                    ));
                }
            }
        }
        None
    };
    let forged_untouched = || {
        for (uid, name) in [(&copy_uid, "forged-copy"), (&claim_uid, "forged-new")] {
            if let Some(p) = log.deletion_of(uid, &format!("the forged cluster {name}"), forged_at)
            {
                return Some(format!("vclink deleted a cluster it did not create: {p}"));
            }
        }
        None
    };
    let victim_what = format!(
        "victim vCluster g-victim/vc (genuine cluster {})",
        genuine.name
    );
    never(
        "the victim must stay registered to, and connected with, only its genuine cluster",
        forged_at + WINDOW,
        &env,
        || async {
            if let Some(p) = no_forged_job().or_else(forged_untouched) {
                return Ok(Some(p));
            }
            if let Some(p) = log.deletion_of(&genuine.prov_uid, &victim_what, forged_at) {
                return Ok(Some(p));
            }
            let mine: Vec<_> = clusters_of(&env, &victim)
                .await?
                .into_iter()
                .filter_map(|c| c.metadata.uid)
                .filter(|u| *u != copy_uid)
                .collect();
            if mine != [genuine.prov_uid.clone()] {
                return Ok(Some(format!(
                    "{victim_what}: its Rancher clusters are now {mine:?} (duplicated or replaced)"
                )));
            }
            let m = env.management_cluster(&genuine.id).await?;
            if m.as_ref().is_none_or(|m| condition(m, "Connected").as_deref() != Some("True")) {
                return Ok(Some(format!("{victim_what}: Rancher shows {} not Connected", genuine.id)));
            }
            let points = cattle_agent_cluster(&env, &victim, &[&genuine.id, &copy_id]).await?;
            if points.as_deref() != Some(genuine.id.as_str()) {
                return Ok(Some(format!(
                    "{victim_what}: the cattle-cluster-agent inside the vCluster now registers to {points:?}"
                )));
            }
            let ann = vclink_annotations(&env, 0, &victim).await?;
            if ann.get(keys::ANNOTATION_RANCHER_CLUSTER) != Some(&genuine.id) {
                return Ok(Some(format!("{victim_what}: the Service now names {ann:?}")));
            }
            Ok(None)
        },
    )
    .await?;

    // The vCluster that was claimed before its import got a genuine cluster.
    let own = wait(
        &env,
        "vCluster g-later/vc to be imported into a cluster vclink created",
        || async {
            let mine: Vec<_> = clusters_of(&env, &later)
                .await?
                .into_iter()
                .filter(|c| c.metadata.uid.as_deref() != Some(claim_uid.as_str()))
                .collect();
            let Some(c) = mine.first() else {
                return Ok(None);
            };
            anyhow::ensure!(
                mine.len() == 1,
                "{} clusters vclink created for g-later/vc",
                mine.len()
            );
            let id = c
                .data
                .pointer("/status/clusterName")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            let connected = !id.is_empty()
                && env
                    .management_cluster(id)
                    .await?
                    .is_some_and(|m| condition(&m, "Connected").as_deref() == Some("True"));
            Ok(connected.then(|| (c.metadata.name.clone().unwrap_or_default(), id.to_owned())))
        },
    )
    .await?;
    let points = cattle_agent_cluster(&env, &later, &[&own.1, &claim_id]).await?;
    anyhow::ensure!(
        points.as_deref() == Some(own.1.as_str()),
        "vCluster g-later/vc: the cattle-cluster-agent inside it registers to {points:?}, not its own cluster {} ({})\n{}",
        own.1,
        own.0,
        diagnostics(&env)
    );
    if let Some(p) = no_forged_job().or_else(forged_untouched) {
        anyhow::bail!("{p}\n{}", diagnostics(&env));
    }
    let m = env.management_cluster(&claim_id).await?;
    anyhow::ensure!(
        m.as_ref()
            .is_none_or(|m| condition(m, "Connected").as_deref() != Some("True")),
        "the forged cluster forged-new ({claim_id}) is Connected: a vCluster was registered into it\n{}",
        diagnostics(&env)
    );

    // Both owners are told.
    forgery_warning(&env, &victim, "forged-copy").await?;
    forgery_warning(&env, &later, "forged-new").await?;
    Ok(())
}
