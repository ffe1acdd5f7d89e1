//! The mirror, end to end on real API servers with the Rancher simulator and vclink's
//! real hub and agent: a Service label in `--sync-labels-include` reaches the vCluster's
//! management cluster and, through the simulator's Fleet controller (which copies the
//! management cluster's labels minus `cattle.io/` keys, as Rancher does), its fleet
//! Cluster; it follows a change and goes with its removal; excluded and reserved keys
//! never arrive; a label set on the management cluster by someone else survives; the
//! ResourceQuota and the vclink state (with the last error) show as annotations and
//! follow changes; and once converged, an idle hub makes no mirror write — neither while
//! it runs nor after a restart.

mod e2e_support;

use std::collections::BTreeMap;
use std::time::Duration;

use e2e_support::{TIMEOUT, WS, labels_of};
use k8s_openapi::api::core::v1::{ResourceQuota, Service};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::json;
use vclink_harness::{E2eEnv, E2eOptions, HubOptions, VClusterSpec, holds_for, wait_for};
use vclink_rancher_sim::RancherVersion;
use vclink_rancher_sim::faults::{Fault, FaultPoint};

/// The hub's flags of this test: two included patterns, one exclusion inside them.
fn hub_args() -> Vec<String> {
    vec![
        "--sync-labels-include=team,org.example/*,app.kubernetes.io/*".into(),
        "--sync-labels-exclude=org.example/private".into(),
    ]
}

fn fleet_cluster() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("fleet.cattle.io", "v1alpha1", "Cluster"),
        "clusters",
    )
}

fn annotations_of(o: &DynamicObject) -> BTreeMap<String, String> {
    o.metadata.annotations.clone().unwrap_or_default()
}

/// `vclink_hub_api_requests_total{verb="mirror"}` (0 before the first write).
async fn mirror_writes(env: &E2eEnv) -> anyhow::Result<u64> {
    let text = env.hub.metrics().await?;
    Ok(text
        .lines()
        .find(|l| l.starts_with("vclink_hub_api_requests_total{verb=\"mirror\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// Waits until the management cluster `id` satisfies `ok`; returns it.
async fn wait_mgmt(
    env: &E2eEnv,
    id: &str,
    what: &str,
    ok: impl Fn(&DynamicObject) -> bool,
) -> anyhow::Result<DynamicObject> {
    Ok(wait_for(what, TIMEOUT, || async {
        anyhow::Ok(env.management_cluster(id).await?.filter(|o| ok(o)))
    })
    .await?)
}

/// Waits until the fleet Cluster `name` satisfies `ok` on its labels.
async fn wait_fleet(
    env: &E2eEnv,
    name: &str,
    what: &str,
    ok: impl Fn(&BTreeMap<String, String>) -> bool,
) -> anyhow::Result<()> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(env.local_client().await?, WS, &fleet_cluster());
    wait_for(what, TIMEOUT, || async {
        let labels = api.get_opt(name).await?.map(|o| labels_of(&o));
        anyhow::Ok(labels.filter(|l| ok(l)).map(|_| ()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn labels_quota_and_state_are_mirrored_onto_the_rancher_cluster_and_fleet()
-> anyhow::Result<()> {
    let env = E2eEnv::start(E2eOptions {
        rancher_version: RancherVersion::V2_15,
        hub: HubOptions {
            extra_args: hub_args(),
            ..Default::default()
        },
        ..Default::default()
    })
    .await?;
    // Registration fails until the fault is lifted: the hub reports an error state.
    env.sim
        .faults()
        .inject(FaultPoint::ImportEndpoint, Fault::Status(503), 1000);
    let vc = env
        .create_vcluster(
            0,
            VClusterSpec::new("team-a", "dev")
                .resource_quota()
                .service_label("team", "a")
                .service_label("org.example/cost", "42")
                .service_label("org.example/private", "no")
                .service_label("app.kubernetes.io/part-of", "shop")
                .service_label("unlisted", "x")
                .service_label("chart", "vcluster-0.21.1"),
        )
        .await?;
    let pc = wait_for("the vCluster's provisioning cluster", TIMEOUT, || async {
        anyhow::Ok(env.provisioning_cluster_for(WS, &vc).await?.and_then(|p| {
            p.data
                .pointer("/status/clusterName")?
                .as_str()
                .map(str::to_owned)
        }))
    })
    .await?;
    let id = pc;

    // State and last error.
    let m = wait_mgmt(&env, &id, "state=error with the last error", |o| {
        let a = annotations_of(o);
        a.get("vclink.io/state").map(String::as_str) == Some("error")
            && a.get("vclink.io/last-error").is_some_and(|e| !e.is_empty())
    })
    .await?;
    eprintln!("last error: {}", annotations_of(&m)["vclink.io/last-error"]);
    env.sim
        .faults()
        .inject(FaultPoint::ImportEndpoint, Fault::Status(503), 0);
    let (name, ready_id) = env.wait_for_ready_cluster(WS, &vc, TIMEOUT).await?;
    assert_eq!(ready_id, id);
    let m = wait_mgmt(&env, &id, "state=connected, the error gone", |o| {
        let a = annotations_of(o);
        a.get("vclink.io/state").map(String::as_str) == Some("connected")
            && !a.contains_key("vclink.io/last-error")
    })
    .await?;

    // Identity, version, quota, description.
    let a = annotations_of(&m);
    let host = env.downstream().cluster_id.clone();
    assert_eq!(a["vclink.io/host-cluster-id"], host);
    let host_name = env
        .management_cluster(&host)
        .await?
        .and_then(|h| {
            h.data
                .pointer("/spec/displayName")?
                .as_str()
                .map(str::to_owned)
        })
        .expect("the host's display name");
    assert_eq!(a["vclink.io/host-cluster-name"], host_name);
    assert_eq!(a["vclink.io/vcluster-namespace"], "team-a");
    assert_eq!(a["vclink.io/vcluster-name"], "dev");
    assert_eq!(a["vclink.io/vcluster-version"], "0.21.1");
    assert_eq!(a["vclink.io/quota-name"], "vc-dev");
    assert!(
        a["vclink.io/quota"].contains("requests.cpu=10"),
        "{}",
        a["vclink.io/quota"]
    );
    let description = m.data.pointer("/spec/description").and_then(|d| d.as_str());
    assert_eq!(
        description,
        Some(format!("vCluster team-a/dev on {host_name} (v0.21.1)").as_str()),
        "the create-time description becomes the full one"
    );

    // Labels: included ones arrive, the excluded, reserved and unlisted ones never.
    let m = wait_mgmt(&env, &id, "the synced labels", |o| {
        let l = labels_of(o);
        l.get("team").map(String::as_str) == Some("a")
            && l.get("org.example/cost").map(String::as_str) == Some("42")
    })
    .await?;
    let l = labels_of(&m);
    for never in [
        "org.example/private",
        "app.kubernetes.io/part-of",
        "unlisted",
        "chart",
    ] {
        assert!(!l.contains_key(never), "{never} must not be synced: {l:?}");
    }
    wait_fleet(&env, &name, "the fleet Cluster to carry team=a", |l| {
        l.get("team").map(String::as_str) == Some("a")
            && l.get("org.example/cost").map(String::as_str) == Some("42")
    })
    .await?;

    // Someone else's label on the management cluster.
    let mgmt_api: Api<DynamicObject> = Api::all_with(
        env.local_client().await?,
        &vclink_harness::env::management_cluster(),
    );
    mgmt_api
        .patch(
            &id,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"set-by-admin": "yes"}}})),
        )
        .await?;

    // Change one label, remove another, change the quota.
    let host_client = env.downstream().cluster.client().await?;
    let services: Api<Service> = Api::namespaced(host_client.clone(), "team-a");
    services
        .patch(
            "dev",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "b", "org.example/cost": null}}})),
        )
        .await?;
    let quotas: Api<ResourceQuota> = Api::namespaced(host_client, "team-a");
    quotas
        .patch(
            "vc-dev",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hard": {"requests.cpu": "12"}}})),
        )
        .await?;
    let m = wait_mgmt(&env, &id, "team=b, cost gone, quota 12", |o| {
        let l = labels_of(o);
        l.get("team").map(String::as_str) == Some("b")
            && !l.contains_key("org.example/cost")
            && annotations_of(o)
                .get("vclink.io/quota")
                .is_some_and(|q| q.contains("requests.cpu=12"))
    })
    .await?;
    assert_eq!(
        labels_of(&m).get("set-by-admin").map(String::as_str),
        Some("yes"),
        "a label vclink did not set survives"
    );
    wait_fleet(
        &env,
        &name,
        "the fleet Cluster to follow (team=b, no cost)",
        |l| l.get("team").map(String::as_str) == Some("b") && !l.contains_key("org.example/cost"),
    )
    .await?;

    // The quota goes: so do its annotations.
    quotas.delete("vc-dev", &Default::default()).await?;
    wait_mgmt(&env, &id, "the quota annotations to go", |o| {
        let a = annotations_of(o);
        !a.contains_key("vclink.io/quota") && !a.contains_key("vclink.io/quota-name")
    })
    .await?;

    // The hub runs under the chart's RBAC (E2eEnv's default): it may patch management
    // clusters but not create one, so its apply cannot make a cluster that is gone.
    let token = env
        .hub
        .kube_token()
        .expect("the hub's ServiceAccount token");
    let as_hub: Api<DynamicObject> = Api::all_with(
        env.local.client_with_token(token.expose()).await?,
        &vclink_harness::env::management_cluster(),
    );
    let made = as_hub
        .patch(
            "c-m-madeup01",
            &PatchParams::apply("vclink-mirror").force(),
            &Patch::Apply(
                json!({"apiVersion": "management.cattle.io/v3", "kind": "Cluster",
                "metadata": {"name": "c-m-madeup01", "labels": {"team": "x"}}}),
            ),
        )
        .await;
    assert!(
        matches!(&made, Err(kube::Error::Api(e)) if e.code == 403),
        "an apply as the hub must not create a management cluster: {made:?}"
    );

    // Converged: an idle period writes nothing.
    let before = mirror_writes(&env).await?;
    assert!(before > 0, "the mirror wrote through the counted path");
    holds_for(
        "no mirror write while idle",
        Duration::from_secs(8),
        || async { anyhow::Ok((mirror_writes(&env).await? == before).then_some(())) },
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_hub_writes_nothing_when_everything_is_mirrored() -> anyhow::Result<()> {
    let mut env = E2eEnv::start(E2eOptions {
        rancher_version: RancherVersion::V2_15,
        hub: HubOptions {
            extra_args: hub_args(),
            ..Default::default()
        },
        ..Default::default()
    })
    .await?;
    let mut vcs = Vec::new();
    for n in 0..3 {
        let vc = env
            .create_vcluster(
                0,
                VClusterSpec::new("team-r", &format!("vc{n}"))
                    .resource_quota()
                    .service_label("team", &format!("t{n}")),
            )
            .await?;
        vcs.push(vc);
    }
    let mut ids = Vec::new();
    for vc in &vcs {
        let (_, id) = env.wait_for_ready_cluster(WS, vc, TIMEOUT).await?;
        wait_mgmt(&env, &id, "mirrored and connected", |o| {
            annotations_of(o).get("vclink.io/state").map(String::as_str) == Some("connected")
                && labels_of(o).contains_key("team")
                && annotations_of(o).contains_key("vclink.io/quota")
        })
        .await?;
        ids.push(id);
    }

    // The same hub again (same flags): it relists, the agent reconnects and
    // re-snapshots, every vCluster is decided again — and nothing is written.
    env.hub.restart().await?;
    e2e_support::wait_agents_connected(&env, 1).await?;
    for vc in &vcs {
        env.wait_for_ready_cluster(WS, vc, TIMEOUT).await?;
    }
    holds_for(
        "no mirror write after the restart",
        Duration::from_secs(8),
        || async { anyhow::Ok((mirror_writes(&env).await? == 0).then_some(())) },
    )
    .await?;
    for id in &ids {
        let m = env.management_cluster(id).await?.expect("still there");
        assert_eq!(
            annotations_of(&m)
                .get("vclink.io/state")
                .map(String::as_str),
            Some("connected")
        );
    }
    Ok(())
}
