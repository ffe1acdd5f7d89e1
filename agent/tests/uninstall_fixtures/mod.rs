//! The uninstall component test's fixtures: fake vCluster Helm releases (a storage
//! Secret encoded as Helm's Secrets driver encodes it, objects with Helm's ownership
//! annotations), the hub's Status and Forget played through the agent's channels, and
//! the checks a user would run (does the object exist, which Events the Service got).

use std::io::Write;

use base64::Engine;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use vclink_agent::link::LinkChannels;
use vclink_agent::record::RecordOp;
use vclink_agent::uninstall::UninstallSettings;
use vclink_agent::{ClusterTasks, spawn_cluster_tasks_with};
use vclink_proto::keys;
use vclink_proto::v1::State;

use crate::support::{create_namespace, eventually, job_settings};

/// Helm's ownership annotations for release `name` in `ns`.
pub fn helm(name: &str, ns: &str) -> serde_json::Value {
    serde_json::json!({ "meta.helm.sh/release-name": name, "meta.helm.sh/release-namespace": ns })
}

/// Creates the object `json` (typed as `K`) in `ns` (empty: cluster-scoped).
pub async fn create<K>(client: &Client, ns: &str, json: serde_json::Value)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
{
    let obj: K = serde_json::from_value(json).expect("object");
    Api::<K>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &obj)
        .await
        .expect("create");
}

/// The `release` value of a Helm storage Secret: JSON, gzip, base64 (standard).
pub fn helm_encode(release: &serde_json::Value) -> Vec<u8> {
    let json = serde_json::to_vec(release).expect("json");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&json).expect("gzip");
    base64::engine::general_purpose::STANDARD
        .encode(gz.finish().expect("gzip"))
        .into_bytes()
}

/// Helm's storage Secret of revision `v` of release `name` in `ns` with `manifest`.
pub async fn release_secret(client: &Client, ns: &str, name: &str, v: u64, manifest: &str) {
    let release = serde_json::json!({
        "name": name, "namespace": ns, "version": v, "manifest": manifest,
        "info": { "status": if v == 1 { "superseded" } else { "deployed" } },
        "chart": { "metadata": { "name": "vcluster", "version": "0.24.1" } },
    });
    let data = base64::engine::general_purpose::STANDARD.encode(helm_encode(&release));
    create::<Secret>(client, ns, serde_json::json!({
        "metadata": { "name": format!("sh.helm.release.v1.{name}.v{v}"),
            "labels": { "owner": "helm", "name": name, "version": v.to_string(), "status": "deployed" } },
        "type": "helm.sh/release.v1",
        "data": { "release": data },
    }))
    .await;
}

/// The vCluster Service `name` (release `name`) with `annotations` and Helm's markers.
pub async fn vcluster_service(
    client: &Client,
    ns: &str,
    name: &str,
    annotations: &[(&str, &str)],
) -> String {
    let mut ann = helm(name, ns);
    for (k, v) in annotations {
        ann[*k] = serde_json::json!(v);
    }
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "annotations": ann,
            "labels": { "app": "vcluster", "release": name, "app.kubernetes.io/managed-by": "Helm" } },
        "spec": { "ports": [{ "name": "https", "port": 443 }] },
    }))
    .expect("service");
    Api::<Service>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &svc)
        .await
        .expect("service")
        .metadata
        .uid
        .expect("uid")
}

/// A small release: its Service, a ConfigMap `<name>-config`, one storage Secret.
pub async fn small_release(
    client: &Client,
    ns: &str,
    name: &str,
    annotations: &[(&str, &str)],
) -> String {
    create_namespace(
        client,
        ObjectMeta {
            name: Some(ns.into()),
            ..Default::default()
        },
    )
    .await;
    let uid = vcluster_service(client, ns, name, annotations).await;
    create::<ConfigMap>(
        client,
        ns,
        serde_json::json!({
        "metadata": { "name": format!("{name}-config"), "annotations": helm(name, ns) } }),
    )
    .await;
    let manifest = format!(
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}-config\n"
    );
    release_secret(client, ns, name, 1, &manifest).await;
    uid
}

pub async fn exists<K>(client: &Client, ns: &str, name: &str) -> bool
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
{
    Api::<K>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .expect("get")
        .is_some()
}

/// The Events about Service `name` in `ns` with `reason`.
pub async fn events(client: &Client, ns: &str, name: &str, reason: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
        .collect()
}

pub async fn event_with(client: &Client, ns: &str, name: &str, reason: &str) -> Event {
    eventually(90, &format!("Event {reason} on {ns}/{name}"), || async {
        events(client, ns, name, reason).await.into_iter().next()
    })
    .await
}

/// Plays the hub's Status: the vCluster is connected to Rancher cluster `id`, and waits
/// until the Service records it.
pub async fn connected(
    client: &Client,
    channels: &LinkChannels,
    ns: &str,
    name: &str,
    uid: &str,
    id: &str,
) {
    channels
        .records
        .push(RecordOp::Status {
            uid: uid.into(),
            state: State::Connected,
            message: String::new(),
            rancher_cluster_id: id.into(),
            cluster_name: format!("host-{ns}-{name}"),
        })
        .expect("queued");
    let svcs: Api<Service> = Api::namespaced(client.clone(), ns);
    eventually(60, &format!("{ns}/{name} recorded connected"), || {
        let svcs = svcs.clone();
        async move {
            let a = svcs.get(name).await.ok()?.metadata.annotations?;
            (a.get(keys::ANNOTATION_STATE)? == "connected").then_some(())
        }
    })
    .await;
}

pub fn forget(channels: &LinkChannels, uid: &str) {
    channels
        .records
        .push(RecordOp::Forget {
            uid: uid.into(),
            reason: "the Rancher cluster was deleted in Rancher".into(),
        })
        .expect("queued");
}

pub async fn start(name: &str) -> (vclink_envtest::Cluster, Client) {
    vclink_agent::tls::install_default_provider();
    let cluster = vclink_envtest::Cluster::start(name, Default::default())
        .await
        .expect("cluster");
    let client = cluster.client().await.expect("client");
    // The agent's home namespace (the client's default), where its proofs go; the API
    // server creates it asynchronously.
    let _ = Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(client.default_namespace().into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await;
    (cluster, client)
}

pub fn agent(
    client: &Client,
    settings: UninstallSettings,
    cancel: &CancellationToken,
) -> (tokio::task::JoinSet<()>, LinkChannels) {
    let mut tasks = tokio::task::JoinSet::new();
    let channels = spawn_cluster_tasks_with(
        &mut tasks,
        ClusterTasks {
            client: client.clone(),
            namespace_selector: None,
            jobs: job_settings(),
            kube_qps: 100.0,
            kube_burst: 50,
            instance: "test".into(),
        },
        settings,
        cancel,
    );
    (tasks, channels)
}
