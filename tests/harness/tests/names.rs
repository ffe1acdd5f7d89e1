//! Rancher cluster names, end to end (hub + agent + the Rancher simulator): a new
//! cluster is named `<host display name>-<namespace>-<name>` after the host's Rancher
//! display name, `<prefix>-<namespace>-<name>` with `vclink.io/cluster-name-prefix`, and
//! exactly the Go operator's `platform.vcluster.com/custom-name` when that is set. Names
//! are chosen only at creation: after the host's display name and a Service's
//! annotation change, existing clusters keep their names (same object, Service still
//! recorded against it) and only a cluster created afterwards uses the new display name.

mod e2e_support;
mod guard_support;

use std::time::{Duration, Instant};

use e2e_support::*;
use guard_support::*;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use vclink_harness::{E2eOptions, VClusterSpec};
use vclink_proto::keys;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn names_come_from_the_host_display_name_or_annotations_and_never_change()
-> anyhow::Result<()> {
    let env = start(E2eOptions::default(), true).await?;
    let host = env.downstream().cluster_id.clone();
    let local = env.local_client().await?;
    let mgmt = env
        .management_cluster(&host)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no management cluster {host}"))?;
    let display = mgmt.data["spec"]["displayName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        display,
        env.downstream().name,
        "the simulator names its hosts"
    );

    let plain = env
        .create_vcluster(0, VClusterSpec::new("names-a", "vc"))
        .await?;
    let prefixed = env
        .create_vcluster(
            0,
            VClusterSpec::new("names-b", "vc")
                .service_annotation(keys::ANNOTATION_CLUSTER_NAME_PREFIX, "edge"),
        )
        .await?;
    let custom = env
        .create_vcluster(
            0,
            VClusterSpec::new("names-c", "vc")
                .service_annotation(keys::ANNOTATION_PLATFORM_CUSTOM_NAME, "from-the-operator"),
        )
        .await?;
    let a = wait_connected(&env, 0, &plain).await?;
    let b = wait_connected(&env, 0, &prefixed).await?;
    let c = wait_connected(&env, 0, &custom).await?;
    assert_eq!(
        a.name,
        format!("{display}-names-a-vc"),
        "named after the host's display name"
    );
    assert_ne!(display, host, "the display name is not the id");
    assert_eq!(
        b.name, "edge-names-b-vc",
        "the prefix replaces the host part"
    );
    assert_eq!(
        c.name, "from-the-operator",
        "the operator's custom name is honoured"
    );

    // The host is renamed in Rancher, and the Services ask for other names.
    kube::Api::<kube::api::DynamicObject>::all_with(
        local.clone(),
        &vclink_harness::env::management_cluster(),
    )
    .patch(
        &host,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"displayName": "Renamed Host"}})),
    )
    .await?;
    patch_service(
        &env,
        0,
        "names-a",
        "vc",
        json!({"metadata": {"annotations": {keys::ANNOTATION_CLUSTER_NAME_PREFIX: "later"}}}),
    )
    .await?;
    patch_service(
        &env,
        0,
        "names-b",
        "vc",
        json!({"metadata": {"annotations": {keys::ANNOTATION_CLUSTER_NAME_PREFIX: "other", keys::ANNOTATION_CLUSTER_NAME: "renamed"}}}),
    )
    .await?;
    // A vCluster created afterwards gets the new display name: the hub has seen it.
    let fresh = env
        .create_vcluster(0, VClusterSpec::new("names-d", "vc"))
        .await?;
    let d = wait_connected(&env, 0, &fresh).await?;
    assert_eq!(d.name, "renamed-host-names-d-vc");

    // ... and the clusters that existed keep their names, objects and records.
    let before = [(&plain, &a), (&prefixed, &b), (&custom, &c)];
    never(
        "the host's display name and the name annotations changed",
        Instant::now() + Duration::from_secs(10),
        &env,
        || async {
            for (vc, was) in before {
                let all = clusters_of(&env, vc).await?;
                let names: Vec<String> =
                    all.iter().filter_map(|p| p.metadata.name.clone()).collect();
                if names != [was.name.clone()] {
                    return Ok(Some(format!(
                        "{}/{}: clusters {names:?}, expected only {}",
                        vc.namespace(),
                        vc.name(),
                        was.name
                    )));
                }
                if all[0].metadata.uid.as_deref() != Some(was.prov_uid.as_str())
                    || all[0].metadata.deletion_timestamp.is_some()
                {
                    return Ok(Some(format!("{}: replaced or terminating", was.name)));
                }
            }
            Ok(None)
        },
    )
    .await?;
    for (vc, was) in before {
        let ann = vclink_annotations(&env, 0, vc).await?;
        assert_eq!(
            ann.get(keys::ANNOTATION_RANCHER_CLUSTER_NAME),
            Some(&was.name),
            "{}/{}: the Service is still recorded against its cluster",
            vc.namespace(),
            vc.name()
        );
        assert_eq!(ann.get(keys::ANNOTATION_RANCHER_CLUSTER), Some(&was.id));
        assert_eq!(state_of(&env, 0, vc).await?.as_deref(), Some("connected"));
    }
    Ok(())
}
