//! The benchmark's world: a "local" (Rancher) cluster and a downstream cluster, both real
//! kube-apiservers from `vclink-envtest` writing an audit log of the users the
//! components run as (`vclink-hub`, `vclink-agent`: client certificates in
//! `system:masters`, so RBAC is no factor); Rancher's CRDs and settings from the
//! simulator's installer (its controllers are not started: [`crate::player`] plays
//! Rancher); the release `vclink-hub` and `vclink-agent` as processes via the harness;
//! and 500 (by default) vCluster Services in the downstream cluster.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use serde_json::json;
use vclink_envtest::{CertificateAuthority, Cluster, ClusterOptions};
use vclink_harness::{AgentOptions, AgentProcess, HubOptions, HubProcess};
use vclink_rancher_sim::RancherVersion;

use crate::measure::{audit_args, audit_policy};

/// User the hub runs as in the local cluster.
pub const HUB_USER: &str = "vclink-hub";
/// User the agent runs as in the downstream cluster.
pub const AGENT_USER: &str = "vclink-agent";
/// Fleet workspace of the provisioning clusters.
pub const WORKSPACE: &str = "fleet-default";
/// Cluster id of the real agent's (downstream) cluster.
pub const REAL_AGENT_CLUSTER: &str = "c-m-realagnt";

/// A cluster plus the audit log it writes.
pub struct Audited {
    /// The cluster.
    pub cluster: Cluster,
    /// Its audit log.
    pub audit_log: PathBuf,
}

/// Starts a cluster that audits `users` into `<dir>/<name>-audit.log`.
pub async fn start_audited(name: &str, dir: &Path, users: &[&str]) -> anyhow::Result<Audited> {
    let policy = dir.join(format!("{name}-audit-policy.yaml"));
    std::fs::write(&policy, audit_policy(users))?;
    let audit_log = dir.join(format!("{name}-audit.log"));
    let opts = ClusterOptions {
        extra_apiserver_args: audit_args(&policy, &audit_log),
        ..Default::default()
    };
    let cluster = Cluster::start(name, opts)
        .await
        .with_context(|| format!("starting cluster {name}"))?;
    Ok(Audited { cluster, audit_log })
}

/// Installs Rancher's CRDs (as Rancher 2.13: legacy tokens, no management status
/// subresource), settings and workspaces into the local cluster.
pub async fn install_rancher_apis(local: &Cluster) -> anyhow::Result<()> {
    let client = local.client().await?;
    vclink_rancher_sim::crds::install(&client, RancherVersion::V2_13)
        .await
        .context("installing Rancher CRDs")?;
    vclink_rancher_sim::bootstrap::install_objects(
        &client,
        "https://rancher.bench.invalid",
        "",
        "strict",
        WORKSPACE,
    )
    .await
    .context("installing Rancher settings")?;
    Ok(())
}

/// Whether the hub binary knows a flag (looked up in its `--help`).
pub fn hub_has_flag(flag: &str) -> bool {
    let Ok(bin) = vclink_harness::procs::binary("vclink-hub") else {
        return false;
    };
    std::process::Command::new(bin)
        .arg("--help")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(flag))
        .unwrap_or(false)
}

/// Creates the management cluster of every host the benchmark's agents claim, labelled
/// `vclink.io/agent=enabled`: the hub serves only opted-in hosts (an older hub ignores
/// the label, so both sides of a comparison run the same world).
pub async fn opt_in_hosts(
    local: &Cluster,
    ids: impl IntoIterator<Item = String>,
) -> anyhow::Result<()> {
    let mgmt = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("management.cattle.io", "v3", "Cluster"),
        "clusters",
    );
    let api: Api<DynamicObject> = Api::all_with(local.client().await?, &mgmt);
    let ids: Vec<String> = ids.into_iter().collect();
    futures::stream::iter(ids.into_iter().map(|id| {
        let api = api.clone();
        async move {
            let o: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "management.cattle.io/v3", "kind": "Cluster",
                "metadata": {"name": id, "labels": {"vclink.io/agent": "enabled"}},
                "spec": {"displayName": id}}))?;
            match api.create(&PostParams::default(), &o).await {
                Ok(_) => anyhow::Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                Err(e) => Err(anyhow::Error::from(e)
                    .context(format!("creating the management cluster of host {id}"))),
            }
        }
    }))
    .buffer_unordered(16)
    .try_collect::<Vec<()>>()
    .await?;
    Ok(())
}

/// Starts the release hub as `vclink-hub` with the benchmark's flags; returns it and
/// the flags used (for the report).
pub async fn start_hub(
    local: &Cluster,
    kube_qps: u32,
    max_per_agent: usize,
    extra_env: Vec<(String, String)>,
) -> anyhow::Result<(HubProcess, Vec<String>)> {
    start_hub_with(local, kube_qps, max_per_agent, extra_env, Vec::new(), None).await
}

/// [`start_hub`] with more flags after the benchmark's and, for replicas that share the
/// chart's TLS Secret, one CA.
pub async fn start_hub_with(
    local: &Cluster,
    kube_qps: u32,
    max_per_agent: usize,
    extra_env: Vec<(String, String)>,
    more_args: Vec<String>,
    ca: Option<Arc<CertificateAuthority>>,
) -> anyhow::Result<(HubProcess, Vec<String>)> {
    let mut extra = vec![
        format!("--kube-qps={kube_qps}"),
        format!("--kube-burst={}", kube_qps.saturating_mul(2)),
        format!("--max-vclusters-per-agent={max_per_agent}"),
    ];
    // Agent identity verification (TokenReview through Rancher's proxy) cannot work
    // for simulated agents; use the explicit insecure opt-in when this hub has it.
    if hub_has_flag("--agent-auth") {
        extra.push("--agent-auth=trust-claimed".into());
    }
    // Every simulated agent dials from 127.0.0.1, where real agents come from as many
    // addresses: the per-address edge caps get the whole of the global ones.
    for (flag, value) in [
        ("--max-tls-handshakes-per-peer", 128),
        ("--max-unauthenticated-streams-per-peer", 256),
    ] {
        if hub_has_flag(flag) {
            extra.push(format!("{flag}={value}"));
        }
    }
    // The proof key lives where the bulk stand-in can write it before the hub starts.
    if hub_has_flag("--proof-key-namespace") {
        let ns: Namespace = serde_json::from_value(
            json!({"metadata": {"name": crate::bulk::PROOF_KEY_NAMESPACE}}),
        )?;
        match Api::<Namespace>::all(local.client().await?)
            .create(&PostParams::default(), &ns)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e).context("creating the proof key's namespace"),
        }
        extra.push(format!(
            "--proof-key-namespace={}",
            crate::bulk::PROOF_KEY_NAMESPACE
        ));
    }
    extra.extend(more_args);
    let opts = HubOptions {
        ca,
        identity: Some(local.issue_identity(HUB_USER, &["system:masters"])),
        fleet_workspace: Some(WORKSPACE.into()),
        extra_args: extra.clone(),
        extra_env,
        // A hub listing 100,000 Rancher objects on a loaded machine (also when started
        // again for the restart measurement) may take minutes to become ready.
        ready_timeout: Some(Duration::from_secs(600)),
        ..Default::default()
    };
    let hub = HubProcess::start(local, opts).await?;
    Ok((hub, extra))
}

/// Creates `n` vCluster Services (label `app=vcluster`, port `https` 443→8443) in
/// namespaces of ten.
pub async fn create_services(down: &Cluster, n: usize) -> anyhow::Result<()> {
    let client = down.client().await?;
    let namespaces: Vec<String> = (0..n.div_ceil(10))
        .map(|i| format!("vc-team-{i}"))
        .collect();
    let ns_api: Api<Namespace> = Api::all(client.clone());
    futures::stream::iter(namespaces.iter().map(|ns| {
        let api = ns_api.clone();
        async move {
            let o: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
            api.create(&PostParams::default(), &o).await?;
            anyhow::Ok(())
        }
    }))
    .buffer_unordered(16)
    .try_collect::<Vec<_>>()
    .await?;
    futures::stream::iter((0..n).map(|j| {
        let client = client.clone();
        let ns = namespaces[j / 10].clone();
        async move {
            let name = format!("vc-{j}");
            let o: Service = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": ns,
                    "labels": {"app": "vcluster", "release": name, "chart": "vcluster-0.20.0", "heritage": "Helm"}},
                "spec": {"type": "ClusterIP", "ports": [{"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"}]},
            }))?;
            Api::<Service>::namespaced(client, &ns)
                .create(&PostParams::default(), &o)
                .await?;
            anyhow::Ok(())
        }
    }))
    .buffer_unordered(16)
    .try_collect::<Vec<_>>()
    .await?;
    Ok(())
}

/// Starts the release agent for [`REAL_AGENT_CLUSTER`] as `vclink-agent`.
pub async fn start_agent(
    down: &Cluster,
    hub: &HubProcess,
    kube_qps: u32,
    extra_env: Vec<(String, String)>,
) -> anyhow::Result<AgentProcess> {
    let opts = AgentOptions {
        identity: Some(down.issue_identity(AGENT_USER, &["system:masters"])),
        extra_args: vec![format!("--kube-qps={kube_qps}")],
        extra_env,
        ..Default::default()
    };
    AgentProcess::start(down, hub, REAL_AGENT_CLUSTER, opts).await
}

/// Number of vCluster Services whose `vclink.io/state` annotation is `state`.
pub async fn services_in_state(down: &Cluster, state: &str) -> anyhow::Result<usize> {
    let api: Api<Service> = Api::all(down.client().await?);
    let list = api
        .list(&ListParams::default().labels(vclink_proto::keys::SERVICE_SELECTOR))
        .await?;
    Ok(list
        .items
        .iter()
        .filter(|s| {
            s.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(vclink_proto::keys::ANNOTATION_STATE))
                .is_some_and(|v| v == state)
        })
        .count())
}
