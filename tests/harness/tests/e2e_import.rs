//! End-to-end import of vClusters, on real API servers with the Rancher
//! simulator and vclink's real hub, agent and registration Job: both registration-token
//! presentations (legacy `status.token` on Rancher 2.13; `{token}` + token Secret on
//! 2.15), both vCluster chart flavours, a custom `exportKubeConfig.server`, two
//! vClusters in one namespace, a name too long for Rancher, Services that must not be
//! imported, and removal of the Rancher cluster when the vCluster's Service goes.
//! What is checked for each import is listed on `e2e_support::assert_imported`.

mod e2e_support;

use std::time::{Duration, Instant};

use e2e_support::*;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::{Patch, PatchParams};
use vclink_harness::{E2eEnv, E2eOptions, Flavour, VClusterSpec, holds_for};
use vclink_proto::keys;
use vclink_rancher_sim::{RancherVersion, TokenMode};

const GRACE: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn legacy_tokens_on_rancher_2_13_import_then_service_deletion_removes_the_cluster()
-> anyhow::Result<()> {
    let started = Instant::now();
    let env = E2eEnv::start(E2eOptions {
        rancher_version: RancherVersion::V2_13,
        token_mode: Some(TokenMode::Legacy),
        removal_grace: GRACE,
        ..Default::default()
    })
    .await?;
    let host = env.downstream().cluster_id.clone();
    let project = env.sim.create_project(&host, "team-a").await?;
    let secrets = RegistrationSecrets::watch(env.downstream().cluster.client().await?).await?;
    let vc = env
        .create_vcluster(
            0,
            VClusterSpec::new("team-a", "vc1")
                .project(&format!("{host}:{}", project.id))
                .pod_security_restricted()
                .resource_quota(),
        )
        .await?;

    let imported = assert_imported(&env, 0, &vc, &secrets, Some(&project.id)).await?;
    let (crt_url, _) = registration_token(&env, &imported.id).await?;
    assert!(
        !crt_url.contains("{token}"),
        "Rancher 2.13 presents the token itself"
    );
    assert!(env.sim.stats().manifests_served >= 1);
    eprintln!("imported after {:?}", started.elapsed());

    // The vCluster goes away: its Rancher cluster follows within the grace period.
    let t = Instant::now();
    vc.delete().await?;
    wait_cluster_gone(&env, &vc, &imported.id, GRACE + TIMEOUT).await?;
    eprintln!(
        "Rancher cluster deleted {:?} after the Service; total {:?}",
        t.elapsed(),
        started.elapsed()
    );
    assert!(
        env.provisioning_clusters(WS)
            .await?
            .iter()
            .all(|c| !labels_of(c).contains_key(keys::LABEL_MANAGED_BY)),
        "no vclink cluster left"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_secret_on_rancher_2_15_two_vclusters_in_one_namespace_both_flavours()
-> anyhow::Result<()> {
    let started = Instant::now();
    let env = E2eEnv::start(E2eOptions {
        rancher_version: RancherVersion::V2_15,
        token_mode: Some(TokenMode::SecretPlaceholder),
        removal_grace: GRACE,
        ..Default::default()
    })
    .await?;
    let secrets = RegistrationSecrets::watch(env.downstream().cluster.client().await?).await?;
    // v0.19 chart, kubeconfig server https://localhost:8443 (the Job must use the Service).
    let old = env
        .create_vcluster(
            0,
            VClusterSpec::new("team-b", "old")
                .flavour(Flavour::V019)
                .pod_security_restricted(),
        )
        .await?;
    // v0.20+ chart with exportKubeConfig.server: the Service address is unreachable here,
    // so only the custom server works.
    let new = env
        .create_vcluster(
            0,
            VClusterSpec::new("team-b", "new")
                .flavour(Flavour::V020)
                .custom_server()
                .resource_quota()
                .pod_security_restricted(),
        )
        .await?;

    let a = assert_imported(&env, 0, &old, &secrets, None).await?;
    let b = assert_imported(&env, 0, &new, &secrets, None).await?;
    assert_ne!(a.name, b.name);
    assert_ne!(a.id, b.id);
    for id in [&a.id, &b.id] {
        let (crt_url, _) = registration_token(&env, id).await?;
        assert!(
            crt_url.contains("{token}"),
            "Rancher 2.15 presents {{token}}: {}",
            crt_url.len()
        );
    }
    let stats = env.sim.stats();
    assert_eq!(
        stats.manifests_refused, 0,
        "no manifest request with an unresolved or wrong token"
    );
    assert!(stats.manifests_served >= 2);
    eprintln!("both imported after {:?}", started.elapsed());

    // Removing one of the two leaves the other alone.
    old.delete().await?;
    wait_cluster_gone(&env, &old, &a.id, GRACE + TIMEOUT).await?;
    holds_for(
        "the other vCluster's Rancher cluster to stay connected",
        GRACE * 2,
        || async {
            anyhow::Ok(
                current(&env, &new).await?.as_ref() == Some(&b)
                    && env
                        .management_cluster(&b.id)
                        .await?
                        .is_some_and(|m| condition(&m, "Connected").as_deref() == Some("True")),
            )
        },
    )
    .await
    .diag(&env)?;
    eprintln!("total {:?}", started.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn long_names_are_shortened_and_skipped_or_headless_services_are_not_imported()
-> anyhow::Result<()> {
    let started = Instant::now();
    let env = E2eEnv::start(E2eOptions {
        removal_grace: GRACE,
        ..Default::default()
    })
    .await?;
    let host_client = env.downstream().cluster.client().await?;
    let secrets = RegistrationSecrets::watch(host_client.clone()).await?;

    // Opted out (reported as excluded, never imported), and a headless Service that
    // otherwise looks like a vCluster's (never reported at all).
    let skipped = env
        .create_vcluster(
            0,
            VClusterSpec::new("team-c", "skipped")
                .service_annotation(keys::ANNOTATION_SKIP_IMPORT, "true"),
        )
        .await?;
    // Every provisioning cluster ever made for the opted-out Service, from a watch that
    // starts before the agent can have reported it to the hub.
    let skipped_clusters = ClusterUids::watch(env.local_client().await?, skipped.service_uid())
        .await
        .diag(&env)?;
    let solo = serde_json::json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "solo", "namespace": "team-c", "labels": {"app": "vcluster", "release": "solo"}},
        "spec": {"clusterIP": "None", "selector": {"app": "vcluster", "release": "solo"},
                 "ports": [{"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"}]}});
    let svcs: Api<Service> = Api::namespaced(host_client.clone(), "team-c");
    svcs.patch("solo", &PatchParams::apply("e2e"), &Patch::Apply(&solo))
        .await?;

    // The opted-out Service is reported: it says it is excluded, and why.
    let written = wait_state(&env, 0, &skipped, "excluded").await?;
    assert!(
        written
            .get(keys::ANNOTATION_EXCLUDED_REASON)
            .is_some_and(|r| r.contains(keys::ANNOTATION_SKIP_IMPORT)),
        "the reason names the annotation: {written:?}"
    );

    // 50-character namespace, 40-character name: `<host>-<ns>-<name>` is far over 63.
    let ns = format!("team-{}", "n".repeat(45));
    let name = format!("vc-{}", "x".repeat(37));
    assert_eq!((ns.len(), name.len()), (50, 40));
    let long = env
        .create_vcluster(0, VClusterSpec::new(&ns, &name).pod_security_restricted())
        .await?;
    let imported = assert_imported(&env, 0, &long, &secrets, None).await?;
    assert!(imported.name.len() <= 63, "{}", imported.name);
    assert!(
        imported
            .name
            .starts_with(&format!("{}-team-n", env.downstream().name)),
        "a shortened name still starts with the host's display name: {}",
        imported.name
    );
    eprintln!("long name imported after {:?}", started.elapsed());

    // Neither the opted-out vCluster nor any headless Service gets a Rancher cluster
    // (over several removal graces), and vclink never writes on a headless Service.
    let headless = [
        ("team-c", "solo".to_string()),
        ("team-c", "skipped-headless".to_string()),
        (ns.as_str(), format!("{name}-headless")),
    ];
    let only_ours = || async {
        let ours: Vec<_> = env
            .provisioning_clusters(WS)
            .await?
            .into_iter()
            .filter(|c| labels_of(c).contains_key(keys::LABEL_SERVICE_UID))
            .collect();
        let names: Vec<String> = ours
            .iter()
            .filter_map(|c| labels_of(c).get(keys::LABEL_NAME).cloned())
            .collect();
        if names != [name.clone()] {
            anyhow::bail!("vclink clusters for {names:?}");
        }
        if !skipped_clusters.seen().is_empty() {
            anyhow::bail!(
                "a Rancher cluster was created for the opted-out vCluster: {:?}",
                skipped_clusters.seen()
            );
        }
        for (hns, hname) in &headless {
            let svc = Api::<Service>::namespaced(host_client.clone(), hns)
                .get(hname)
                .await?;
            let ours: Vec<_> = svc
                .metadata
                .annotations
                .unwrap_or_default()
                .into_keys()
                .filter(|k| k.starts_with("vclink.io/"))
                .collect();
            if !ours.is_empty() {
                anyhow::bail!("vclink wrote {ours:?} on headless Service {hns}/{hname}");
            }
        }
        anyhow::Ok(Some(()))
    };
    holds_for(
        "only the long-named vCluster to have a Rancher cluster, no headless Service written",
        GRACE * 2,
        only_ours,
    )
    .await
    .diag(&env)?;
    // The opted-out Service says it is excluded, and nothing else: no Rancher cluster
    // recorded, no registration.
    let mut written = vclink_annotations(&env, 0, &skipped).await?;
    written.remove(keys::ANNOTATION_SKIP_IMPORT);
    assert_eq!(
        written.get(keys::ANNOTATION_STATE).map(String::as_str),
        Some("excluded"),
        "an opted-out Service stays excluded: {written:?}"
    );
    for k in [
        keys::ANNOTATION_STATE,
        keys::ANNOTATION_EXCLUDED_REASON,
        keys::ANNOTATION_STATE_SINCE,
    ] {
        written.remove(k);
    }
    assert!(
        written.is_empty(),
        "vclink wrote more than the exclusion on an opted-out Service: {written:?}"
    );
    assert!(secrets.of(skipped.service_uid()).is_empty());

    // Opting back in imports it.
    let patch =
        serde_json::json!({"metadata": {"annotations": {keys::ANNOTATION_SKIP_IMPORT: null}}});
    svcs.patch("skipped", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    assert_imported(&env, 0, &skipped, &secrets, None).await?;
    assert_eq!(
        skipped_clusters.seen().len(),
        1,
        "opting back in creates exactly one Rancher cluster"
    );
    eprintln!("total {:?}", started.elapsed());
    Ok(())
}
