//! The **bulk stand-in**: writes the Rancher objects of most of a full-scale run's
//! vClusters straight into the local API server, already in the steady state the hub
//! and Rancher leave them in, before the hub starts — so that 50,000 vClusters fit on a
//! small machine. Neither the simulator's controllers nor the benchmark's Rancher player
//! ([`crate::player`]) run for them: no controller could carry 50,000 clusters on two
//! cores, and the hub's work for a vCluster that is already imported (judge the proofs,
//! index it, tell its agent "connected") is the same however the objects got there.
//!
//! Per vCluster, as the hub would have created it and Rancher would have completed it:
//! - the provisioning cluster, named as the hub names it, with the hub's labels and
//!   annotations and both proofs (`vclink_hub::testing`, signed with the hub's real proof
//!   key, which this module writes into the key Secret the hub reads at start), then
//!   `status.clusterName` / `fleetWorkspaceName` / `ready`;
//! - its management cluster with the labels Rancher copies and `Connected`/`Ready` True.
//!
//! No `c-m-` namespace and no registration token: the hub needs neither for a connected
//! cluster. Writes run in parallel as the local cluster's admin (not audited, so they are
//! never counted as the hub's requests).

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::{Client, ResourceExt};
use serde_json::{Map, Value, json};
use vclink_proto::keys::{
    LABEL_HOST_CLUSTER, LABEL_MANAGED_BY, LABEL_NAME, LABEL_NAMESPACE, LABEL_PROJECT,
    LABEL_SERVICE_UID, LABEL_VCLUSTER, MANAGED_BY_VALUE,
};
use vclink_proto::v1::VCluster;

/// Namespace of the hub's proof key in the benchmark (passed as `--proof-key-namespace`).
pub const PROOF_KEY_NAMESPACE: &str = "vclink-system";
/// Length of the hub's proof key.
const KEY_LEN: usize = 32;

/// What the bulk stand-in wrote.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct BulkStats {
    /// vClusters pre-populated.
    pub vclusters: usize,
    /// API requests it made (4 per vCluster).
    pub requests: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Writes in parallel.
    pub parallel: usize,
}

fn gvk(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

/// Creates the hub's proof-key Secret with a fresh random key (as the first hub would)
/// and returns the key, so the bulk stand-in can sign as the hub does.
pub async fn install_proof_key(client: &Client) -> anyhow::Result<Vec<u8>> {
    let mut key = vec![0u8; KEY_LEN];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut key)
        .context("reading /dev/urandom")?;
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": PROOF_KEY_NAMESPACE}}))?;
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e).context("creating the proof key's namespace"),
    }
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(vclink_hub::testing::PROOF_KEY_SECRET.into()),
            namespace: Some(PROOF_KEY_NAMESPACE.into()),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            [(
                vclink_hub::testing::PROOF_KEY_DATA.to_string(),
                ByteString(key.clone()),
            )]
            .into(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), PROOF_KEY_NAMESPACE)
        .create(&PostParams::default(), &secret)
        .await
        .context("creating the hub's proof-key Secret")?;
    Ok(key)
}

/// The labels the hub puts on a vCluster's provisioning cluster.
fn hub_labels(host: &str, vc: &VCluster) -> Map<String, Value> {
    let mut l = Map::new();
    l.insert(LABEL_MANAGED_BY.into(), MANAGED_BY_VALUE.into());
    l.insert(LABEL_HOST_CLUSTER.into(), host.into());
    l.insert(LABEL_SERVICE_UID.into(), vc.uid.clone().into());
    l.insert(LABEL_NAMESPACE.into(), vc.namespace.clone().into());
    l.insert(LABEL_NAME.into(), vc.name.clone().into());
    l.insert(LABEL_VCLUSTER.into(), "true".into());
    if let Some((_, p)) = vc.project_id.split_once(':') {
        l.insert(LABEL_PROJECT.into(), p.into());
    }
    l
}

struct Target<'a> {
    prov: Api<DynamicObject>,
    mgmt: Api<DynamicObject>,
    workspace: &'a str,
    key: &'a [u8],
    now: i64,
}

/// One vCluster's objects: 4 requests.
async fn one(t: &Target<'_>, index: usize, host: &str, vc: &VCluster) -> anyhow::Result<()> {
    let name = vclink_proto::names::cluster_name(host, &vc.namespace, &vc.name, 0);
    let id = format!("c-m-bk{index:06x}");
    let labels = hub_labels(host, vc);
    let mut annotations = Map::new();
    annotations.insert(
        "rancher.io/imported-cluster-version-management".into(),
        "false".into(),
    );
    annotations.insert(
        "field.cattle.io/description".into(),
        format!("vCluster {}/{} on {host}", vc.namespace, vc.name).into(),
    );
    annotations.insert("field.cattle.io/no-creator-rbac".into(), "true".into());
    let proofs =
        vclink_hub::testing::proof_annotations(t.key, t.workspace, &name, host, &vc.uid, t.now)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    for (k, v) in proofs {
        annotations.insert(k, v.into());
    }
    let post = PostParams::default();
    let m: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "management.cattle.io/v3", "kind": "Cluster",
        "metadata": {"name": id, "labels": labels},
        "spec": {"displayName": name, "fleetWorkspaceName": t.workspace},
        "status": {"conditions": [
            {"type": "Connected", "status": "True"},
            {"type": "Ready", "status": "True"},
        ]},
    }))?;
    retry(|| t.mgmt.create(&post, &m)).await?;
    let p: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "provisioning.cattle.io/v1", "kind": "Cluster",
        "metadata": {"name": name, "namespace": t.workspace, "labels": labels, "annotations": annotations},
        "spec": {},
    }))?;
    let created = retry(|| t.prov.create(&post, &p))
        .await?
        .context("provisioning cluster already existed")?;
    let uid = created.uid().unwrap_or_default();
    let (k, v) =
        vclink_hub::testing::proof_uid_annotation(t.key, t.workspace, &name, host, &vc.uid, &uid)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    let pp = PatchParams::default();
    let seal = json!({"metadata": {"annotations": {k: v}}});
    let seal = Patch::Merge(&seal);
    retry(|| t.prov.patch(&name, &pp, &seal)).await?;
    let st =
        json!({"status": {"clusterName": id, "fleetWorkspaceName": t.workspace, "ready": true}});
    let st = Patch::Merge(&st);
    retry(|| t.prov.patch_status(&name, &pp, &st)).await?;
    Ok(())
}

/// Writes the objects of `vclusters` (host id, report), `parallel` vClusters at a time,
/// printing progress every 10 s.
pub async fn populate(
    client: &Client,
    workspace: &str,
    key: &[u8],
    vclusters: Vec<(String, VCluster)>,
    parallel: usize,
) -> anyhow::Result<BulkStats> {
    let start = Instant::now();
    let t = Target {
        prov: Api::namespaced_with(
            client.clone(),
            workspace,
            &gvk("provisioning.cattle.io", "v1", "Cluster", "clusters"),
        ),
        mgmt: Api::all_with(
            client.clone(),
            &gvk("management.cattle.io", "v3", "Cluster", "clusters"),
        ),
        workspace,
        key,
        now: k8s_openapi::jiff::Timestamp::now().as_second(),
    };
    let n = vclusters.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let progress = async {
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            eprintln!(
                "[bench] bulk stand-in: {} / {n} vClusters written ({:.0} s)",
                done.load(std::sync::atomic::Ordering::Relaxed),
                start.elapsed().as_secs_f64()
            );
        }
    };
    let work = futures::stream::iter(vclusters.iter().enumerate().map(|(i, (host, vc))| {
        let (t, done) = (&t, &done);
        async move {
            one(t, i, host, vc)
                .await
                .with_context(|| format!("bulk stand-in: vCluster {} of {host}", vc.uid))?;
            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            anyhow::Ok(())
        }
    }))
    .buffer_unordered(parallel.max(1))
    .try_collect::<Vec<()>>();
    tokio::select! {
        r = work => { r?; }
        _ = progress => unreachable!("the progress loop never ends"),
    }
    Ok(BulkStats {
        vclusters: n,
        requests: 4 * n as u64,
        seconds: start.elapsed().as_secs_f64(),
        parallel,
    })
}

/// Bulk writes retry more often than the player's (they run 48 at a time).
async fn retry<T, F, Fut>(f: F) -> Result<Option<T>, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    crate::player::retry_write(8, "bulk stand-in", f).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_labels_are_the_hubs() {
        let vc = VCluster {
            uid: "u-1".into(),
            namespace: "team-0".into(),
            name: "vc-0".into(),
            project_id: "c-m-h:p-abc".into(),
            ..Default::default()
        };
        let l = hub_labels("c-m-h", &vc);
        assert_eq!(l[LABEL_MANAGED_BY], MANAGED_BY_VALUE);
        assert_eq!(l[LABEL_HOST_CLUSTER], "c-m-h");
        assert_eq!(l[LABEL_SERVICE_UID], "u-1");
        assert_eq!(l[LABEL_PROJECT], "p-abc");
        assert_eq!(l.len(), 7);
    }
}
