//! Management-cluster controller (docs/rancher.md: Management cluster, Registration token and import manifest, Projects and role bindings, Fleet): the `c-m-` namespace,
//! Default and System projects, the registration token (legacy or `{token}` + Secret),
//! the creator's owner CRTB `creator-cluster-owner`, `Connected`/`Ready`/`AgentDeployed` from the agent
//! connection, the Fleet cluster once Ready, and the deletion cascade.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret as CoreSecret};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use vclink_proto::Secret;

use super::Requeue;
use crate::error::{Result, SimError, is_conflict, is_not_found};
use crate::faults::{Counters, Fault, FaultPoint};
use crate::kinds::{self, keys};
use crate::names;
use crate::options::TokenMode;
use crate::state::{
    Shared, annotation, apply, delete_opt, ensure_finalizer, get_opt, remove_finalizer, str_at,
};

/// Name of the token Secret in newer Rancher (docs/rancher.md: Registration token and import manifest).
pub const TOKEN_SECRET: &str = "crt-token-default-token";

pub async fn reconcile(shared: &Shared, cid: &str) -> Result<Requeue> {
    let mapi = kinds::MGMT_CLUSTER.all(&shared.local);
    let Some(m) = get_opt(&mapi, cid).await? else {
        shared.forget_cluster(cid);
        return Ok(None);
    };
    let ws = str_at(&m, "/spec/fleetWorkspaceName")
        .unwrap_or_else(|| shared.opts.fleet_workspace.clone());
    let display = str_at(&m, "/spec/displayName").unwrap_or_else(|| cid.to_string());
    if m.metadata.deletion_timestamp.is_some() {
        cleanup(shared, cid, &ws, &display).await?;
        remove_finalizer(&mapi, &m, keys::MGMT_FINALIZER).await?;
        shared.forget_cluster(cid);
        return Ok(None);
    }
    ensure_finalizer(&mapi, &m, keys::MGMT_FINALIZER).await?;
    let ns_api: Api<Namespace> = Api::all(shared.local.clone());
    ensure_namespace(&ns_api, cid).await?;
    ensure_projects(shared, &ns_api, cid).await?;
    ensure_registration_token(shared, cid).await?;
    let old = m
        .data
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut conditions = next_conditions(&old, shared.connection(cid).is_some(), &now());
    // reconcileClusterCreatorRTB (rancher/rancher pkg/controllers/management/auth/
    // project_cluster/cluster_handler.go): unless the no-creator-rbac key is present, the
    // creator gets CRTB creator-cluster-owner (cluster-owner is the ClusterCreatorDefault
    // role template), created by Rancher itself. Upstream does not check that creatorId
    // names a Rancher User: a ServiceAccount's name becomes a User subject that no one
    // is (docs/rancher.md: Imported clusters).
    if let Some(creator) = annotation(&m, keys::CREATOR_ID)
        && annotation(&m, keys::NO_CREATOR_RBAC).is_none()
    {
        create_crtb(
            shared,
            cid,
            keys::CREATOR_CRTB,
            "cluster-owner",
            &creator,
            Some(keys::CREATOR_OWNER_BINDING),
        )
        .await?;
        // Rendered at once rather than on the CRTB's own watch event, which keeps the
        // window in which the creator binding exists but its RBAC does not short.
        super::rbac::reconcile_crtb(shared, cid, keys::CREATOR_CRTB).await?;
        set_condition(
            &mut conditions,
            &old,
            "CreatorMadeOwner",
            "True",
            "",
            "",
            &now(),
        );
    }
    let ready = conditions
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    if conditions != old {
        let status =
            json!({"status": {"conditions": conditions, "driver": "imported", "connected": ready}});
        if shared.opts.version.mgmt_status_subresource() {
            mapi.patch_status(cid, &PatchParams::default(), &Patch::Merge(status))
                .await?;
        } else {
            mapi.patch(cid, &PatchParams::default(), &Patch::Merge(status))
                .await?;
        }
    }
    let fleet = kinds::FLEET_CLUSTER.ns(&shared.local, &ws);
    if ready || get_opt(&fleet, &display).await?.is_some() {
        let obj = json!({"apiVersion": kinds::FLEET_CLUSTER.api_version(), "kind": "Cluster",
            "metadata": {"name": display, "namespace": ws, "labels": fleet_labels(&m, cid, &display)},
            "spec": {"kubeConfigSecret": format!("{display}-kubeconfig"), "kubeConfigSecretNamespace": ws}});
        apply(&fleet, &display, &obj).await?;
    }
    Ok(None)
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The conditions after a connection change; times move only when a status changes.
pub fn next_conditions(old: &[Value], connected: bool, now: &str) -> Vec<Value> {
    let had_connected = old.iter().any(|c| c["type"] == "Connected");
    let mut want: Vec<(&str, &str, &str, &str)> = Vec::new();
    if connected {
        want.push(("Connected", "True", "", ""));
        want.push(("Ready", "True", "", ""));
        want.push(("AgentDeployed", "True", "", ""));
    } else if had_connected {
        want.push((
            "Connected",
            "False",
            "Disconnected",
            "Cluster agent is not connected",
        ));
        want.push((
            "Ready",
            "False",
            "Disconnected",
            "Cluster agent is not connected",
        ));
    } else {
        want.push((
            "Ready",
            "Unknown",
            "Pending",
            "Waiting for API to be available",
        ));
    }
    let mut out: Vec<Value> = old
        .iter()
        .filter(|c| !want.iter().any(|w| c["type"] == w.0))
        .cloned()
        .collect();
    for (t, s, reason, msg) in want {
        let prev = old.iter().find(|c| c["type"] == t);
        let same =
            prev.is_some_and(|p| p["status"] == s && p["reason"].as_str().unwrap_or("") == reason);
        if same {
            out.push(prev.cloned().unwrap_or_default());
            continue;
        }
        out.push(
            json!({"type": t, "status": s, "reason": reason, "message": msg,
            "lastUpdateTime": now, "lastTransitionTime": now}),
        );
    }
    out
}

/// Sets one condition, keeping its times when nothing changed.
fn set_condition(
    out: &mut Vec<Value>,
    old: &[Value],
    t: &str,
    s: &str,
    reason: &str,
    msg: &str,
    now: &str,
) {
    out.retain(|c| c["type"] != t);
    match old.iter().find(|c| c["type"] == t) {
        Some(p) if p["status"] == s && p["reason"].as_str().unwrap_or("") == reason => out.push(p.clone()),
        _ => out.push(json!({"type": t, "status": s, "reason": reason, "message": msg, "lastUpdateTime": now, "lastTransitionTime": now})),
    }
}

/// Fleet cluster labels: the management cluster's minus `cattle.io/` keys, plus the
/// cluster id and display name (docs/rancher.md: Fleet).
pub fn fleet_labels(m: &DynamicObject, cid: &str, display: &str) -> Value {
    let mut labels: serde_json::Map<String, Value> = m
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| !k.contains("cattle.io/"))
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    labels.insert(keys::FLEET_CLUSTER_NAME.into(), json!(cid));
    labels.insert(keys::FLEET_CLUSTER_DISPLAY_NAME.into(), json!(display));
    Value::Object(labels)
}

async fn ensure_namespace(api: &Api<Namespace>, name: &str) -> Result<()> {
    if api.get_opt(name).await?.is_some() {
        return Ok(());
    }
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(e) if is_conflict(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn ensure_projects(shared: &Shared, ns_api: &Api<Namespace>, cid: &str) -> Result<()> {
    let api = kinds::PROJECT.ns(&shared.local, cid);
    let existing = api.list(&ListParams::default()).await?.items;
    for (label, display) in [
        (keys::DEFAULT_PROJECT, "Default"),
        (keys::SYSTEM_PROJECT, "System"),
    ] {
        let has = existing.iter().any(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(label))
                .map(String::as_str)
                == Some("true")
        });
        if !has {
            create_project(shared, ns_api, cid, display, Some(label)).await?;
        }
    }
    Ok(())
}

/// Creates a Project with its backing namespace `<c-m-id>-<p-id>`.
pub async fn create_project(
    shared: &Shared,
    ns_api: &Api<Namespace>,
    cid: &str,
    display: &str,
    label: Option<&str>,
) -> Result<(String, String)> {
    let api = kinds::PROJECT.ns(&shared.local, cid);
    let pid = names::project_id();
    let backing = format!("{cid}-{pid}");
    ensure_namespace(ns_api, &backing).await?;
    let mut labels = serde_json::Map::new();
    if let Some(l) = label {
        labels.insert(l.into(), json!("true"));
    }
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": kinds::PROJECT.api_version(), "kind": "Project",
        "metadata": {"name": pid, "namespace": cid, "labels": labels},
        "spec": {"clusterName": cid, "displayName": display},
        "status": {"backingNamespace": backing},
    }))?;
    api.create(&PostParams::default(), &obj).await?;
    Ok((pid, backing))
}

async fn ensure_registration_token(shared: &Shared, cid: &str) -> Result<()> {
    let api = kinds::CRT.ns(&shared.local, cid);
    let secrets: Api<CoreSecret> = Api::namespaced(shared.local.clone(), cid);
    let mode = shared.opts.effective_token_mode();
    if let Some(crt) = get_opt(&api, "default-token").await? {
        let value = match mode {
            TokenMode::Legacy => str_at(&crt, "/status/token"),
            TokenMode::SecretPlaceholder => secrets.get_opt(TOKEN_SECRET).await?.and_then(|s| {
                s.data?
                    .get("token")
                    .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            }),
        };
        if let Some(v) = value
            && shared.remember_token(&Secret::new(v), cid)
        {
            shared.requeue_backends();
        }
        return Ok(());
    }
    match shared.faults.take(FaultPoint::CreateRegistrationToken) {
        Some(Fault::Status(code)) => {
            Counters::inc(&shared.counters.faults_fired);
            return Err(SimError::Injected(format!(
                "creating registration token answered {code}"
            )));
        }
        Some(Fault::Timeout) => {
            Counters::inc(&shared.counters.faults_fired);
            tokio::time::sleep(Duration::from_secs(30)).await;
            return Err(SimError::Injected(
                "creating registration token timed out".into(),
            ));
        }
        None => {}
    }
    let token = Secret::new(names::token_secret());
    let shown = match mode {
        TokenMode::Legacy => token.expose().to_string(),
        TokenMode::SecretPlaceholder => "{token}".to_string(),
    };
    let mut status = token_status(&shared.server_url, &shown, cid);
    if mode == TokenMode::SecretPlaceholder {
        status["token"] = json!("");
        status["tokenSecretName"] = json!(TOKEN_SECRET);
        let s: CoreSecret = serde_json::from_value(json!({
            "metadata": {"name": TOKEN_SECRET, "namespace": cid}, "stringData": {"token": token.expose()}}))?;
        match secrets.create(&PostParams::default(), &s).await {
            Ok(_) => {}
            Err(e) if is_conflict(&e) => secrets
                .replace(TOKEN_SECRET, &PostParams::default(), &s)
                .await
                .map(|_| ())?,
            Err(e) => return Err(e.into()),
        }
    }
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": kinds::CRT.api_version(), "kind": "ClusterRegistrationToken",
        "metadata": {"name": "default-token", "namespace": cid},
        "spec": {"clusterName": cid}, "status": status,
    }))?;
    api.create(&PostParams::default(), &obj).await?;
    shared.remember_token(&token, cid);
    shared.requeue_backends();
    Ok(())
}

/// Registration-token status with `t` (the token or `{token}`) in every URL and command.
pub fn token_status(server_url: &str, t: &str, cid: &str) -> Value {
    let m = format!("{server_url}/v3/import/{t}_{cid}.yaml");
    json!({
        "token": t,
        "manifestUrl": m,
        "command": format!("kubectl apply -f {m}"),
        "insecureCommand": format!("curl --insecure -sfL {m} | kubectl apply -f -"),
        "nodeCommand": format!("sudo docker run -d --privileged --restart=unless-stopped --net=host -v /etc/kubernetes:/etc/kubernetes -v /var/run:/var/run rancher/rancher-agent --server {server_url} --token {t}"),
        "insecureNodeCommand": "",
        "windowsNodeCommand": format!("PowerShell -NoLogo -NonInteractive -Command \"& {{docker run -v c:\\:c:\\host rancher/rancher-agent bootstrap --server {server_url} --token {t} | iex}}\""),
    })
}

async fn create_crtb(
    shared: &Shared,
    cid: &str,
    name: &str,
    role: &str,
    user: &str,
    marker: Option<&str>,
) -> Result<()> {
    let api = kinds::CRTB.ns(&shared.local, cid);
    if get_opt(&api, name).await?.is_some() {
        return Ok(());
    }
    let mut annotations = serde_json::Map::new();
    if let Some(k) = marker {
        annotations.insert(k.to_string(), json!("true"));
    }
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": kinds::CRTB.api_version(), "kind": "ClusterRoleTemplateBinding",
        "metadata": {"name": name, "namespace": cid, "annotations": annotations},
        "clusterName": cid, "roleTemplateName": role, "userName": user,
    }))?;
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => Ok(()),
        Err(e) if is_conflict(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes what hangs off a management cluster: Fleet cluster, the `c-m-` namespace's
/// Rancher objects, project namespaces, the namespace, and the provisioning cluster
/// when a user deleted the management cluster.
async fn cleanup(shared: &Shared, cid: &str, ws: &str, display: &str) -> Result<()> {
    let local = &shared.local;
    delete_opt(&kinds::FLEET_CLUSTER.ns(local, ws), display).await?;
    let ns_api: Api<Namespace> = Api::all(local.clone());
    let projects = kinds::PROJECT.ns(local, cid);
    match projects.list(&ListParams::default()).await {
        Ok(list) => {
            for p in list.items {
                if let Some(backing) = str_at(&p, "/status/backingNamespace") {
                    delete_all(&kinds::PRTB.ns(local, &backing)).await?;
                    match ns_api.delete(&backing, &DeleteParams::default()).await {
                        Ok(_) => {}
                        Err(e) if is_not_found(&e) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(e.into()),
    }
    for kind in [kinds::CRTB, kinds::PRTB, kinds::CRT, kinds::PROJECT] {
        delete_all(&kind.ns(local, cid)).await?;
    }
    let secrets: Api<CoreSecret> = Api::namespaced(local.clone(), cid);
    match secrets.delete(TOKEN_SECRET, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(e.into()),
    }
    match ns_api.delete(cid, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(e.into()),
    }
    let prov = kinds::PROV_CLUSTER.ns(local, ws);
    if let Some(p) = get_opt(&prov, display).await?
        && str_at(&p, "/status/clusterName").as_deref() == Some(cid)
        && p.metadata.deletion_timestamp.is_none()
    {
        delete_opt(&prov, display).await?;
    }
    Ok(())
}

async fn delete_all(api: &Api<DynamicObject>) -> Result<()> {
    match api
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(cs: &[Value], t: &str) -> (String, String) {
        let c = cs.iter().find(|c| c["type"] == t).unwrap();
        (
            c["status"].as_str().unwrap().into(),
            c["reason"].as_str().unwrap_or("").into(),
        )
    }

    #[test]
    fn conditions_follow_the_connection() {
        let pending = next_conditions(&[], false, "t0");
        assert_eq!(status_of(&pending, "Ready").0, "Unknown");
        let up = next_conditions(&pending, true, "t1");
        assert_eq!(status_of(&up, "Connected").0, "True");
        assert_eq!(status_of(&up, "Ready").0, "True");
        assert_eq!(
            next_conditions(&up, true, "t2"),
            up,
            "no change, no new times"
        );
        let down = next_conditions(&up, false, "t3");
        assert_eq!(
            status_of(&down, "Ready"),
            ("False".into(), "Disconnected".into())
        );
        assert_eq!(status_of(&down, "Connected").0, "False");
        assert_eq!(status_of(&down, "AgentDeployed").0, "True");
    }

    #[test]
    fn token_status_carries_placeholder_everywhere() {
        let s = token_status("https://r:1", "{token}", "c-m-abc");
        assert_eq!(
            s["manifestUrl"],
            "https://r:1/v3/import/{token}_c-m-abc.yaml"
        );
        for k in [
            "command",
            "insecureCommand",
            "nodeCommand",
            "windowsNodeCommand",
        ] {
            assert!(s[k].as_str().unwrap().contains("{token}"), "{k}");
        }
    }

    #[test]
    fn fleet_labels_are_the_management_labels_minus_cattle_keys() {
        let m: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "management.cattle.io/v3", "kind": "Cluster",
            "metadata": {"name": "c-m-abc", "labels": {
                "team": "a", "org.example/cost": "42",
                "provisioning.cattle.io/x": "no", "management.cattle.io/y": "no",
                "vclink.io/vcluster": "true"}}}))
        .unwrap();
        let l = fleet_labels(&m, "c-m-abc", "vc1");
        assert_eq!(l["team"], "a");
        assert_eq!(l["org.example/cost"], "42");
        assert_eq!(l["vclink.io/vcluster"], "true");
        assert!(l.get("provisioning.cattle.io/x").is_none());
        assert!(l.get("management.cattle.io/y").is_none());
        assert_eq!(l[keys::FLEET_CLUSTER_NAME], "c-m-abc");
        assert_eq!(l[keys::FLEET_CLUSTER_DISPLAY_NAME], "vc1");
    }
}
