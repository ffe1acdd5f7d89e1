//! The Rancher simulator's Fleet workspace controller (docs/rancher.md, "Fleet
//! workspaces"): Rancher backs every `management.cattle.io/v3` `FleetWorkspace`
//! (cluster-scoped) with a namespace of the same name, created after the workspace, in
//! which provisioning clusters of that workspace can then be created. Until then a
//! create there fails as the API server fails it (namespace not found).

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use serde_json::json;

use super::Requeue;
use crate::error::Result;
use crate::kinds;
use crate::state::Shared;

/// Creates the namespace of FleetWorkspace `name` when it is missing.
pub async fn reconcile(shared: &Shared, name: &str) -> Result<Requeue> {
    let workspaces = kinds::FLEET_WORKSPACE.all(&shared.local);
    let Some(ws) = workspaces.get_opt(name).await? else {
        return Ok(None);
    };
    if ws.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let namespaces: Api<Namespace> = Api::all(shared.local.clone());
    if namespaces.get_opt(name).await?.is_some() {
        return Ok(None);
    }
    let ns: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name},
    }))?;
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(_) => tracing::info!(
            workspace = name,
            "Rancher simulator created the Fleet workspace's namespace"
        ),
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(None)
}
