//! Provisioning-cluster controller (docs/rancher.md: Imported clusters): creates the management cluster
//! (labels/annotations copied once), mirrors its readiness into `status`, creates the
//! `<name>-kubeconfig` Secret and the `system://provisioning` owner CRTB once ready, and
//! on deletion deletes the management cluster and waits for it to go before releasing
//! its finalizer.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret as CoreSecret;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::Requeue;
use crate::error::{Result, SimError, is_conflict};
use crate::faults::{Counters, Fault, FaultPoint};
use crate::kinds::{self, keys};
use crate::names;
use crate::state::{Shared, ensure_finalizer, get_opt, remove_finalizer, str_at};

pub async fn reconcile(shared: &Shared, ns: &str, name: &str) -> Result<Requeue> {
    let api = kinds::PROV_CLUSTER.ns(&shared.local, ns);
    let Some(prov) = get_opt(&api, name).await? else {
        return Ok(None);
    };
    let uid = prov.metadata.uid.clone().unwrap_or_default();
    let mut cid = str_at(&prov, "/status/clusterName").or_else(|| shared.created_for(&uid));
    let mapi = kinds::MGMT_CLUSTER.all(&shared.local);

    if prov.metadata.deletion_timestamp.is_some() {
        if let Some(cid) = &cid
            && let Some(m) = get_opt(&mapi, cid).await?
            && str_at(&m, "/spec/fleetWorkspaceName").as_deref() == Some(ns)
        {
            if m.metadata.deletion_timestamp.is_none() {
                crate::state::delete_opt(&mapi, cid).await?;
            }
            return Ok(Some(Duration::from_millis(300)));
        }
        let secrets: Api<CoreSecret> = Api::namespaced(shared.local.clone(), ns);
        match secrets
            .delete(&format!("{name}-kubeconfig"), &Default::default())
            .await
        {
            Ok(_) => {}
            Err(e) if crate::error::is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
        remove_finalizer(&api, &prov, keys::PROV_FINALIZER).await?;
        return Ok(None);
    }
    ensure_finalizer(&api, &prov, keys::PROV_FINALIZER).await?;

    if cid.is_none() {
        match shared.faults.take(FaultPoint::CreateManagementCluster) {
            Some(Fault::Status(code)) => {
                Counters::inc(&shared.counters.faults_fired);
                return Err(SimError::Injected(format!(
                    "creating management cluster answered {code}"
                )));
            }
            Some(Fault::Timeout) => {
                Counters::inc(&shared.counters.faults_fired);
                tokio::time::sleep(Duration::from_secs(30)).await;
                return Err(SimError::Injected(
                    "creating management cluster timed out".into(),
                ));
            }
            None => {}
        }
        let id = names::mgmt_cluster_id();
        let mgmt = new_management_cluster(&prov, &id, ns, name);
        let obj: DynamicObject = serde_json::from_value(mgmt)?;
        mapi.create(&PostParams::default(), &obj).await?;
        shared.remember_created(&uid, &id);
        cid = Some(id);
    }
    let Some(cid) = cid else { return Ok(None) };

    let mgmt = get_opt(&mapi, &cid).await?;
    let was_ready = prov
        .data
        .pointer("/status/ready")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let conds = mgmt
        .as_ref()
        .and_then(|m| m.data.pointer("/status/conditions"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let is_true = |t: &str| {
        conds
            .iter()
            .any(|c| c["type"] == t && c["status"] == "True")
    };
    // `ready` is sticky: once true it never resets (docs/rancher.md: Imported clusters).
    let ready = was_ready || is_true(shared.opts.version.readiness_condition());
    let mut status = json!({
        "clusterName": cid,
        "fleetWorkspaceName": ns,
        "observedGeneration": prov.metadata.generation.unwrap_or(0),
        "ready": ready,
        "agentDeployed": is_true("AgentDeployed"),
        "conditions": conds,
    });
    if ready {
        ensure_kubeconfig_secret(shared, ns, name, &cid).await?;
        ensure_owner_crtb(shared, ns, name, &cid).await?;
        status["clientSecretName"] = json!(format!("{name}-kubeconfig"));
    }
    if prov.data.get("status") != Some(&status) {
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await?;
    }
    Ok(None)
}

/// The management cluster for a provisioning cluster: labels and annotations are copied
/// here once; afterwards the management cluster is the source of truth.
pub fn new_management_cluster(prov: &DynamicObject, cid: &str, ns: &str, name: &str) -> Value {
    let mut annotations = prov.metadata.annotations.clone().unwrap_or_default();
    annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    annotations.insert(
        "objectset.rio.cattle.io/owner-gvk".into(),
        "provisioning.cattle.io/v1, Kind=Cluster".into(),
    );
    annotations.insert("objectset.rio.cattle.io/owner-name".into(), name.into());
    annotations.insert("objectset.rio.cattle.io/owner-namespace".into(), ns.into());
    let description = annotations
        .get(keys::DESCRIPTION)
        .cloned()
        .unwrap_or_default();
    json!({
        "apiVersion": kinds::MGMT_CLUSTER.api_version(), "kind": "Cluster",
        "metadata": {"name": cid, "labels": prov.metadata.labels.clone().unwrap_or_default(), "annotations": annotations,
                     "finalizers": [keys::MGMT_FINALIZER]},
        "spec": {"displayName": name, "fleetWorkspaceName": ns, "description": description, "internal": false,
                 "importedConfig": {}},
    })
}

/// Rancher's own kubeconfig Secret for the cluster: a `system://provisioning` user and
/// token reaching the cluster through the proxy.
async fn ensure_kubeconfig_secret(shared: &Shared, ns: &str, name: &str, cid: &str) -> Result<()> {
    let secrets: Api<CoreSecret> = Api::namespaced(shared.local.clone(), ns);
    let secret_name = format!("{name}-kubeconfig");
    if secrets.get_opt(&secret_name).await?.is_some() {
        return Ok(());
    }
    let principal = names::provisioning_principal(ns, name);
    let user = names::user_for_principal(&principal);
    let user_obj = json!({"apiVersion": kinds::USER.api_version(), "kind": "User", "metadata": {"name": user},
        "principalIds": [principal, format!("local://{user}")]});
    crate::state::apply(&kinds::USER.all(&shared.local), &user, &user_obj).await?;
    let secret = names::token_secret();
    let token = json!({"apiVersion": kinds::TOKEN.api_version(), "kind": "Token", "metadata": {"name": user},
        "token": secret, "userId": user, "authProvider": "local", "ttl": 0, "isDerived": true, "description": "provisioning kubeconfig"});
    crate::state::apply(&kinds::TOKEN.all(&shared.local), &user, &token).await?;
    let bearer = format!("{user}:{secret}");
    let kubeconfig = kubeconfig_yaml(
        &format!("{}/k8s/clusters/{cid}", shared.server_url),
        &shared.ca_pem,
        name,
        &bearer,
    );
    let obj: CoreSecret = serde_json::from_value(json!({
        "metadata": {"name": secret_name, "namespace": ns, "labels": {"cluster.x-k8s.io/cluster-name": name}},
        "stringData": {"value": kubeconfig, "token": bearer},
    }))?;
    match secrets.create(&PostParams::default(), &obj).await {
        Ok(_) => Ok(()),
        Err(e) if is_conflict(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn kubeconfig_yaml(server: &str, ca_pem: &str, name: &str, bearer: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let cfg = json!({"apiVersion": "v1", "kind": "Config", "current-context": name,
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": name, "user": {"token": bearer}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}]});
    serde_yaml_ng::to_string(&cfg).unwrap_or_default()
}

/// The CRTB granting `cluster-owner` to the cluster's `system://provisioning` principal.
async fn ensure_owner_crtb(shared: &Shared, ns: &str, name: &str, cid: &str) -> Result<()> {
    let api = kinds::CRTB.ns(&shared.local, cid);
    let crtb_name = format!("{cid}-{ns}-owner");
    if get_opt(&api, &crtb_name).await?.is_some() {
        return Ok(());
    }
    let principal = names::provisioning_principal(ns, name);
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": kinds::CRTB.api_version(), "kind": "ClusterRoleTemplateBinding",
        "metadata": {"name": crtb_name, "namespace": cid},
        "clusterName": cid, "roleTemplateName": "cluster-owner",
        "userName": names::user_for_principal(&principal), "userPrincipalName": principal,
    }))?;
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => Ok(()),
        Err(e) if is_conflict(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
