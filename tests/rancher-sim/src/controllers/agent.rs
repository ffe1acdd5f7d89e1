//! Agent connections (docs/rancher.md: Management cluster, Registration token and import manifest): for each registered backend API server,
//! the simulator watches `cattle-system` Deployments and Secrets. A
//! `cattle-cluster-agent` Deployment whose `CATTLE_CREDENTIAL_NAME` Secret holds the
//! current registration token of cluster X (and `url` = server-url) connects X to that
//! API server — the stand-in for the agent's websocket tunnel. When it goes, X
//! disconnects.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret as CoreSecret;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::watcher;

use super::{Requeue, spawn_watch};
use crate::error::Result;
use crate::queue::Key;
use crate::state::{Backend, Connection, Shared};

pub const AGENT_NS: &str = "cattle-system";
pub const AGENT_DEPLOYMENT: &str = "cattle-cluster-agent";

/// Starts the two watchers of one backend.
pub fn watch_backend(shared: &Arc<Shared>, backend: &Backend) {
    let id = backend.id;
    let deps: Api<DynamicObject> = Api::namespaced_with(
        backend.client.clone(),
        AGENT_NS,
        &ApiResource::erase::<Deployment>(&()),
    );
    let secrets: Api<DynamicObject> = Api::namespaced_with(
        backend.client.clone(),
        AGENT_NS,
        &ApiResource::erase::<CoreSecret>(&()),
    );
    let by_name = watcher::Config::default().fields(&format!("metadata.name={AGENT_DEPLOYMENT}"));
    spawn_watch(
        shared,
        deps,
        by_name,
        move |_| vec![Key::Backend(id)],
        Some(Key::Backend(id)),
    );
    spawn_watch(
        shared,
        secrets,
        watcher::Config::default(),
        move |_| vec![Key::Backend(id)],
        Some(Key::Backend(id)),
    );
}

/// The credential Secret named by the agent Deployment's `CATTLE_CREDENTIAL_NAME`.
pub fn credential_name(dep: &Deployment) -> Option<String> {
    dep.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find_map(|c| {
            c.env
                .as_ref()?
                .iter()
                .find(|e| e.name == "CATTLE_CREDENTIAL_NAME")
                .and_then(|e| e.value.clone())
        })
}

pub async fn reconcile(shared: &Shared, id: usize) -> Result<Requeue> {
    let Some(backend) = shared.backend(id) else {
        return Ok(None);
    };
    let deps: Api<Deployment> = Api::namespaced(backend.client.clone(), AGENT_NS);
    let secrets: Api<CoreSecret> = Api::namespaced(backend.client.clone(), AGENT_NS);
    let mut connected: Option<String> = None;
    if let Some(dep) = deps.get_opt(AGENT_DEPLOYMENT).await?
        && dep.metadata.deletion_timestamp.is_none()
        && let Some(cred) = credential_name(&dep)
        && let Some(secret) = secrets.get_opt(&cred).await?
    {
        let field = |k: &str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(k))
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        };
        if field("url").as_deref() == Some(shared.server_url.as_str())
            && let Some(token) = field("token")
        {
            connected = shared.cluster_for_token(&token);
        }
    }
    for cid in shared.agent_connections_of(id) {
        if Some(&cid) != connected.as_ref() && shared.set_connection(&cid, None) {
            tracing::info!(cluster = %cid, backend = id, "Rancher simulator: cluster agent disconnected");
            shared.queue.add(Key::Mgmt(cid));
        }
    }
    if let Some(cid) = connected
        && shared.connection(&cid).is_none_or(|c| !c.pinned)
        && shared.set_connection(
            &cid,
            Some(Connection {
                backend: id,
                pinned: false,
            }),
        )
    {
        tracing::info!(cluster = %cid, backend = id, "Rancher simulator: cluster agent connected");
        shared.queue.add(Key::Mgmt(cid));
    }
    Ok(None)
}
