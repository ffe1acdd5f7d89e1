//! The benchmark plays Rancher itself (docs/rancher.md: Imported clusters, Management cluster, Registration token and import manifest) instead of running the
//! simulator's controllers, so that only the hub's work is timed and the writes that
//! matter happen at known instants: for every provisioning cluster the hub creates it
//! creates the `c-m-` namespace and the management cluster (labels copied once, as
//! Rancher does), sets `status.clusterName`, and — unless the vCluster is held back for
//! the latency measurement — writes the registration token (legacy mode: token and URL
//! in the ClusterRegistrationToken's status, one write). When the hub's Register reaches
//! a simulated agent, the management cluster is marked `Connected`/`Ready`, as Rancher
//! does when the cluster agent dials in. Hosts listed as "already connected" (the real
//! agent's cluster) get management clusters that are connected from the start.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use vclink_proto::keys::{
    LABEL_HOST_CLUSTER, LABEL_MANAGED_BY, LABEL_SERVICE_UID, MANAGED_BY_VALUE,
};

/// Concurrent writes of the player.
const PARALLEL: usize = 32;

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn prov() -> ApiResource {
    resource("provisioning.cattle.io", "v1", "Cluster", "clusters")
}

fn mgmt() -> ApiResource {
    resource("management.cattle.io", "v3", "Cluster", "clusters")
}

fn crt() -> ApiResource {
    resource(
        "management.cattle.io",
        "v3",
        "ClusterRegistrationToken",
        "clusterregistrationtokens",
    )
}

/// Counters of what the player did.
#[derive(Default, Debug)]
pub struct PlayerStats {
    /// Management clusters created.
    pub mgmt_created: AtomicU64,
    /// Tokens written.
    pub tokens: AtomicU64,
    /// Management clusters marked connected after Register.
    pub connected: AtomicU64,
    /// Writes that failed after retries.
    pub errors: AtomicU64,
}

/// The Rancher player.
pub struct Player {
    client: Client,
    workspace: String,
    held: HashSet<String>,
    connected_hosts: HashSet<String>,
    /// Management id of every held vCluster (Service UID → `c-m-` id) once created.
    pub held_mgmt: Mutex<Vec<(String, String)>>,
    /// Counters.
    pub stats: PlayerStats,
    next_id: AtomicU64,
    gate: Semaphore,
}

impl Player {
    /// A player for `workspace`. Vclusters whose Service UID is in `held` get no token
    /// until [`write_token`] is called; hosts in `connected_hosts` are connected from the start.
    pub fn new(
        client: Client,
        workspace: &str,
        held: HashSet<String>,
        connected_hosts: HashSet<String>,
    ) -> Arc<Player> {
        Arc::new(Player {
            client,
            workspace: workspace.to_string(),
            held,
            connected_hosts,
            held_mgmt: Mutex::default(),
            stats: PlayerStats::default(),
            next_id: AtomicU64::new(1),
            gate: Semaphore::new(PARALLEL),
        })
    }

    /// Starts the provisioning-cluster watch and the "connect after Register" loop.
    pub fn spawn(
        self: &Arc<Self>,
        mut registered: mpsc::Receiver<String>,
        cancel: CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let me = self.clone();
        let c = cancel.clone();
        let watch = tokio::spawn(async move {
            let api: Api<DynamicObject> =
                Api::namespaced_with(me.client.clone(), &me.workspace, &prov());
            let cfg = watcher::Config::default()
                .labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY_VALUE}"));
            let mut stream = std::pin::pin!(watcher::watcher(api, cfg));
            let mut handled: HashSet<String> = HashSet::new();
            loop {
                let ev = tokio::select! {
                    _ = c.cancelled() => return,
                    ev = stream.next() => ev,
                };
                let obj = match ev {
                    None => return,
                    Some(Ok(Event::Apply(o) | Event::InitApply(o))) => o,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "player: provisioning watch error");
                        continue;
                    }
                };
                let has_id = obj
                    .data
                    .pointer("/status/clusterName")
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty());
                if has_id
                    || obj.metadata.deletion_timestamp.is_some()
                    || !handled.insert(obj.name_any())
                {
                    continue;
                }
                let me = me.clone();
                tokio::spawn(async move {
                    if let Err(e) = me.on_new_cluster(&obj).await {
                        me.stats.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(cluster = %obj.name_any(), error = %e, "player: could not play Rancher for a new cluster");
                    }
                });
            }
        });
        let me = self.clone();
        let connect = tokio::spawn(async move {
            loop {
                let id = tokio::select! {
                    _ = cancel.cancelled() => return,
                    id = registered.recv() => match id { Some(id) => id, None => return },
                };
                let me = me.clone();
                tokio::spawn(async move {
                    let _p = me.gate.acquire().await;
                    let patch = json!({"status": {"conditions": connected_conditions()}});
                    let (pp, patch) = (PatchParams::default(), Patch::Merge(&patch));
                    let api: Api<DynamicObject> = Api::all_with(me.client.clone(), &mgmt());
                    let r = retry(|| api.patch(&id, &pp, &patch)).await;
                    match r {
                        Ok(_) => me.stats.connected.fetch_add(1, Ordering::Relaxed),
                        Err(_) => me.stats.errors.fetch_add(1, Ordering::Relaxed),
                    };
                });
            }
        });
        vec![watch, connect]
    }

    async fn on_new_cluster(&self, p: &DynamicObject) -> anyhow::Result<()> {
        let _permit = self.gate.acquire().await?;
        let labels = p.labels().clone();
        let host = labels.get(LABEL_HOST_CLUSTER).cloned().unwrap_or_default();
        let uid = labels.get(LABEL_SERVICE_UID).cloned().unwrap_or_default();
        let id = format!("c-m-{:08x}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let connected = self.connected_hosts.contains(&host);
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": id}}))?;
        let post = PostParams::default();
        let ns_api = Api::<Namespace>::all(self.client.clone());
        retry(|| ns_api.create(&post, &ns)).await?;
        let m: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "management.cattle.io/v3", "kind": "Cluster",
            "metadata": {"name": id, "labels": labels},
            "spec": {"displayName": p.name_any(), "fleetWorkspaceName": self.workspace},
            "status": {"conditions": if connected { connected_conditions() } else { json!([]) }},
        }))?;
        let mapi: Api<DynamicObject> = Api::all_with(self.client.clone(), &mgmt());
        retry(|| mapi.create(&post, &m)).await?;
        self.stats.mgmt_created.fetch_add(1, Ordering::Relaxed);
        let papi: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.workspace, &prov());
        let st = json!({"status": {"clusterName": id, "fleetWorkspaceName": self.workspace}});
        let (pp, st, name) = (PatchParams::default(), Patch::Merge(&st), p.name_any());
        retry(|| papi.patch_status(&name, &pp, &st)).await?;
        if connected {
            return Ok(());
        }
        if self.held.contains(&uid) {
            self.held_mgmt
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((uid, id));
            return Ok(());
        }
        write_token(&self.client, &id).await?;
        self.stats.tokens.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn connected_conditions() -> Value {
    json!([
        {"type": "Connected", "status": "True"},
        {"type": "Ready", "status": "True"},
    ])
}

/// Writes the registration token of management cluster `id` as Rancher ≤ 2.13 does:
/// one ClusterRegistrationToken `default-token` whose status carries the token and the
/// URLs (the value is a benchmark placeholder, not a credential of anything).
pub async fn write_token(client: &Client, id: &str) -> anyhow::Result<()> {
    let token = format!("bench{:0>49}", id.trim_start_matches("c-m-"));
    let url = format!("https://rancher.bench.invalid/v3/import/{token}_{id}.yaml");
    let o: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "management.cattle.io/v3", "kind": "ClusterRegistrationToken",
        "metadata": {"name": "default-token", "namespace": id},
        "spec": {"clusterName": id},
        "status": {"token": token, "manifestUrl": url, "command": format!("kubectl apply -f {url}")},
    }))?;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), id, &crt());
    let post = PostParams::default();
    retry(|| api.create(&post, &o)).await?;
    Ok(())
}

/// Retries a write up to `attempts` times (the API server may answer 429/5xx under
/// load), `who` naming the caller in the debug log; an AlreadyExists answer counts as
/// done (`None`). Shared by the player and the bulk stand-in.
pub(crate) async fn retry_write<T, F, Fut>(
    attempts: u32,
    who: &str,
    mut f: F,
) -> Result<Option<T>, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 0u32;
    loop {
        match f().await {
            Ok(v) => return Ok(Some(v)),
            Err(kube::Error::Api(e)) if e.code == 409 && e.reason == "AlreadyExists" => {
                return Ok(None);
            }
            Err(e) if attempt < attempts => {
                attempt += 1;
                tracing::debug!(error = %e, attempt, who, "retrying a write");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn retry<T, F, Fut>(f: F) -> Result<Option<T>, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    retry_write(5, "player", f).await
}
