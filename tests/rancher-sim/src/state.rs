//! State shared by the Rancher simulator's controllers, HTTPS server and public API:
//! the local cluster client, registered backends (API servers an agent may be applied
//! to), which backend currently connects each management cluster, and the registration
//! tokens the simulator issued. Plus small helpers for dynamic objects.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use vclink_proto::Secret;

use crate::error::{Result, is_not_found};
use crate::faults::{Counters, Faults};
use crate::options::SimOptions;
use crate::queue::Queue;

/// A Kubernetes API server the simulator may proxy to.
pub struct Backend {
    pub id: usize,
    pub url: String,
    /// Admin client (watches cattle-system).
    pub client: Client,
    /// HTTP client presenting the admin certificate, for the proxy.
    pub http: reqwest::Client,
}

/// How a management cluster is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    pub backend: usize,
    /// Connected by `add_downstream`: does not depend on an agent Deployment.
    pub pinned: bool,
}

/// Everything the simulator's parts share.
pub struct Shared {
    pub local: Client,
    /// The local cluster as a proxy target (`/k8s/clusters/local`).
    pub local_backend: Arc<Backend>,
    pub opts: SimOptions,
    pub server_url: String,
    pub ca_pem: String,
    pub faults: Faults,
    pub counters: Counters,
    pub queue: Queue,
    pub cancel: CancellationToken,
    pub backends: Mutex<Vec<Arc<Backend>>>,
    pub connections: Mutex<HashMap<String, Connection>>,
    /// Registration token value → management cluster id.
    pub tokens: Mutex<HashMap<String, String>>,
    /// Provisioning cluster UID → management cluster id it created (guards against
    /// a second create before the status write is visible).
    pub created: Mutex<HashMap<String, String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub fn backend(&self, id: usize) -> Option<Arc<Backend>> {
        lock(&self.backends).get(id).cloned()
    }
    pub fn add_backend(&self, make: impl FnOnce(usize) -> Backend) -> Arc<Backend> {
        let mut b = lock(&self.backends);
        let backend = Arc::new(make(b.len()));
        b.push(backend.clone());
        backend
    }
    pub fn connection(&self, cid: &str) -> Option<Connection> {
        lock(&self.connections).get(cid).copied()
    }
    pub fn set_connection(&self, cid: &str, c: Option<Connection>) -> bool {
        let mut m = lock(&self.connections);
        let old = match c {
            Some(c) => m.insert(cid.to_string(), c),
            None => m.remove(cid),
        };
        old != c
    }
    /// Connections of a backend that came from an agent (not pinned).
    pub fn agent_connections_of(&self, backend: usize) -> Vec<String> {
        lock(&self.connections)
            .iter()
            .filter(|(_, c)| c.backend == backend && !c.pinned)
            .map(|(k, _)| k.clone())
            .collect()
    }
    /// Records the current registration token of `cid`; true when it is new.
    pub fn remember_token(&self, token: &Secret, cid: &str) -> bool {
        let mut t = lock(&self.tokens);
        if t.get(token.expose()).is_some_and(|v| v == cid) {
            return false;
        }
        t.retain(|_, v| v != cid);
        t.insert(token.expose().to_string(), cid.to_string());
        true
    }
    /// Re-checks every backend (a token just became known).
    pub fn requeue_backends(&self) {
        let n = lock(&self.backends).len();
        for id in 0..n {
            self.queue.add(crate::queue::Key::Backend(id));
        }
    }
    pub fn cluster_for_token(&self, token: &str) -> Option<String> {
        lock(&self.tokens).get(token).cloned()
    }
    pub fn forget_cluster(&self, cid: &str) {
        lock(&self.tokens).retain(|_, v| v != cid);
        lock(&self.connections).remove(cid);
        lock(&self.created).retain(|_, v| v != cid);
    }
    pub fn created_for(&self, uid: &str) -> Option<String> {
        lock(&self.created).get(uid).cloned()
    }
    pub fn remember_created(&self, uid: &str, cid: &str) {
        lock(&self.created).insert(uid.to_string(), cid.to_string());
    }
}

/// Field manager for the simulator's server-side applies.
pub const MANAGER: &str = "rancher-simulator";

/// Server-side apply of a full object.
pub async fn apply(api: &Api<DynamicObject>, name: &str, obj: &Value) -> Result<DynamicObject> {
    Ok(api
        .patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await?)
}

/// GET that maps 404 to `None`.
pub async fn get_opt(api: &Api<DynamicObject>, name: &str) -> Result<Option<DynamicObject>> {
    match api.get(name).await {
        Ok(o) => Ok(Some(o)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// DELETE that ignores 404.
pub async fn delete_opt(api: &Api<DynamicObject>, name: &str) -> Result<()> {
    match api.delete(name, &Default::default()).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Adds `finalizer` unless present (merge patch guarded by resourceVersion).
pub async fn ensure_finalizer(
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
    finalizer: &str,
) -> Result<()> {
    let mut f = obj.metadata.finalizers.clone().unwrap_or_default();
    if f.iter().any(|x| x == finalizer) {
        return Ok(());
    }
    f.push(finalizer.to_string());
    let patch = serde_json::json!({"metadata": {"finalizers": f, "resourceVersion": obj.metadata.resource_version}});
    api.patch(
        &name_of(obj),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// Removes `finalizer` if present.
pub async fn remove_finalizer(
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
    finalizer: &str,
) -> Result<()> {
    let f = obj.metadata.finalizers.clone().unwrap_or_default();
    if !f.iter().any(|x| x == finalizer) {
        return Ok(());
    }
    let rest: Vec<_> = f.into_iter().filter(|x| x != finalizer).collect();
    let patch = serde_json::json!({"metadata": {"finalizers": rest, "resourceVersion": obj.metadata.resource_version}});
    match api
        .patch(
            &name_of(obj),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub fn name_of(obj: &DynamicObject) -> String {
    obj.metadata.name.clone().unwrap_or_default()
}

/// A string at a JSON pointer of the object's data (`/status/clusterName`).
pub fn str_at(obj: &DynamicObject, pointer: &str) -> Option<String> {
    obj.data
        .pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

pub fn annotation(obj: &DynamicObject, key: &str) -> Option<String> {
    obj.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .cloned()
}
