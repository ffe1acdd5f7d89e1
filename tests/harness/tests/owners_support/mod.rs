//! Helpers shared by the owner-sync tests (owners*.rs): Rancher role bindings as a user
//! would create them, the set of grants vclink keeps on a cluster, and vCluster clusters
//! created directly the way the hub creates them, signed with the hub's proof key (for
//! tests that need no agent).

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::time::Duration;

use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use serde_json::{Value, json};
use vclink_harness::wait_for;

pub const TIMEOUT: Duration = Duration::from_secs(120);
pub const WORKSPACE: &str = "fleet-default";

fn mgmt(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("management.cattle.io", "v3", kind),
        plural,
    )
}

pub fn crtbs(c: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        c.clone(),
        ns,
        &mgmt("ClusterRoleTemplateBinding", "clusterroletemplatebindings"),
    )
}

pub fn all_crtbs(c: &kube::Client) -> Api<DynamicObject> {
    Api::all_with(
        c.clone(),
        &mgmt("ClusterRoleTemplateBinding", "clusterroletemplatebindings"),
    )
}

pub fn prtbs(c: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        c.clone(),
        ns,
        &mgmt("ProjectRoleTemplateBinding", "projectroletemplatebindings"),
    )
}

pub fn projects(c: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(c.clone(), ns, &mgmt("Project", "projects"))
}

pub fn prov_clusters(c: &kube::Client) -> Api<DynamicObject> {
    Api::namespaced_with(
        c.clone(),
        WORKSPACE,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("provisioning.cattle.io", "v1", "Cluster"),
            "clusters",
        ),
    )
}

pub fn user(u: &str) -> Value {
    json!({"userName": u, "userPrincipalName": format!("local://{u}")})
}

pub fn group_principal(g: &str) -> Value {
    json!({"groupPrincipalName": g})
}

pub fn group_name(g: &str) -> Value {
    json!({"groupName": g})
}

/// Creates a PRTB in the project's backing namespace.
pub async fn add_prtb(
    c: &kube::Client,
    backing_ns: &str,
    name: &str,
    project_name: &str,
    role: &str,
    subject: Value,
) -> anyhow::Result<()> {
    let mut o = json!({"apiVersion": "management.cattle.io/v3", "kind": "ProjectRoleTemplateBinding",
        "metadata": {"name": name, "namespace": backing_ns},
        "projectName": project_name, "roleTemplateName": role});
    merge(&mut o, subject);
    prtbs(c, backing_ns)
        .create(&PostParams::default(), &serde_json::from_value(o)?)
        .await?;
    Ok(())
}

/// Creates a CRTB (as a user would: no vclink labels).
pub async fn add_crtb(
    c: &kube::Client,
    ns: &str,
    name: &str,
    role: &str,
    subject: Value,
) -> anyhow::Result<()> {
    let mut o = json!({"apiVersion": "management.cattle.io/v3", "kind": "ClusterRoleTemplateBinding",
        "metadata": {"name": name, "namespace": ns}, "clusterName": ns, "roleTemplateName": role});
    merge(&mut o, subject);
    crtbs(c, ns)
        .create(&PostParams::default(), &serde_json::from_value(o)?)
        .await?;
    Ok(())
}

pub async fn delete(api: &Api<DynamicObject>, name: &str) -> anyhow::Result<()> {
    api.delete(name, &DeleteParams::default()).await?;
    Ok(())
}

fn merge(o: &mut Value, extra: Value) {
    if let (Some(o), Value::Object(e)) = (o.as_object_mut(), extra) {
        o.extend(e);
    }
}

/// `"<role> <subject>"` of a CRTB, subject as the first non-empty of userName,
/// userPrincipalName, groupName, groupPrincipalName.
pub fn grant(o: &DynamicObject) -> String {
    let f = |k: &str| o.data.get(k).and_then(Value::as_str).unwrap_or_default();
    let subject = [
        "userName",
        "userPrincipalName",
        "groupName",
        "groupPrincipalName",
    ]
    .into_iter()
    .map(f)
    .find(|s| !s.is_empty())
    .unwrap_or_default();
    format!("{} {}", f("roleTemplateName"), subject)
}

pub const OWNED: &str = "vclink.io/managed-by=vclink,vclink.io/component=owner-binding";

/// The grants vclink keeps in `ns`.
pub async fn owner_grants(c: &kube::Client, ns: &str) -> anyhow::Result<BTreeSet<String>> {
    let list = crtbs(c, ns)
        .list(&ListParams::default().labels(OWNED))
        .await?;
    Ok(list
        .items
        .iter()
        .filter(|o| o.metadata.deletion_timestamp.is_none())
        .map(grant)
        .collect())
}

/// Waits until the grants vclink keeps in `ns` are exactly `want`.
pub async fn wait_grants(
    c: &kube::Client,
    ns: &str,
    want: &[&str],
    what: &str,
) -> anyhow::Result<()> {
    let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    let last = std::sync::Mutex::new(BTreeSet::new());
    let r = wait_for(what, TIMEOUT, || async {
        let have = owner_grants(c, ns).await?;
        let ok = have == want;
        *last.lock().unwrap_or_else(|p| p.into_inner()) = have;
        anyhow::Ok(ok.then_some(()))
    })
    .await;
    r.map_err(|e| {
        anyhow::anyhow!(
            "{e}: want {want:?}, have {:?}",
            last.lock().unwrap_or_else(|p| p.into_inner())
        )
    })
}

/// The hub's proof key: the bytes of its key Secret, which the hub creates at start in
/// the namespace the harness gives it (`--proof-key-namespace`, the release namespace,
/// as the chart sets it). Waits for the Secret with a deadline.
pub async fn hub_proof_key(c: &kube::Client) -> anyhow::Result<Vec<u8>> {
    use k8s_openapi::api::core::v1::Secret;
    use vclink_hub::testing::{PROOF_KEY_DATA, PROOF_KEY_SECRET};
    let ns = vclink_harness::procs::rbac::RELEASE_NAMESPACE;
    let secrets: Api<Secret> = Api::namespaced(c.clone(), ns);
    Ok(wait_for(
        &format!("the hub's proof key Secret {ns}/{PROOF_KEY_SECRET}"),
        TIMEOUT,
        || async {
            let key = secrets
                .get_opt(PROOF_KEY_SECRET)
                .await?
                .and_then(|s| s.data?.remove(PROOF_KEY_DATA))
                .map(|b| b.0);
            anyhow::Ok(key)
        },
    )
    .await?)
}

/// A vCluster's Rancher cluster created directly the way the hub creates one (our
/// labels, no-creator-rbac, signed with the hub's proof key: the create-time proof on the
/// create, the UID-bound proof patched right after) — for tests that need the Rancher
/// side only. Returns the management cluster id once Rancher (the simulator) created it.
pub async fn vcluster_cluster(
    c: &kube::Client,
    host: &str,
    uid: &str,
    project: Option<&str>,
    name: &str,
) -> anyhow::Result<String> {
    let key = hub_proof_key(c).await?;
    let mut labels = json!({"vclink.io/managed-by": "vclink", "vclink.io/host-cluster": host,
        "vclink.io/service-uid": uid, "vclink.io/namespace": "ns", "vclink.io/name": name, "vclink.io/vcluster": "true"});
    if let Some(p) = project {
        labels["vclink.io/project"] = json!(p);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let annotations: serde_json::Map<String, Value> = vclink_hub::testing::proof_annotations(
        &key,
        WORKSPACE,
        name,
        host,
        uid,
        i64::try_from(now)?,
    )?
    .into_iter()
    .map(|(k, v)| (k, Value::String(v)))
    .collect();
    // As the hub creates its clusters: as its Rancher user (impersonated by the admin
    // client here), so Rancher makes that user the cluster's owner.
    let o = json!({"apiVersion": "provisioning.cattle.io/v1", "kind": "Cluster",
        "metadata": {"name": name, "namespace": WORKSPACE, "labels": labels, "annotations": annotations},
        "spec": {}});
    let req = http::Request::post(format!(
        "/apis/provisioning.cattle.io/v1/namespaces/{WORKSPACE}/clusters"
    ))
    .header("Content-Type", "application/json")
    .header(
        "Impersonate-User",
        vclink_harness::procs::rbac::HUB_RANCHER_USER,
    )
    .body(serde_json::to_vec(&o)?)?;
    let created: Value = c.request(req).await?;
    let object_uid = created
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow::anyhow!("the created cluster {name} has no metadata.uid"))?;
    // And as the hub seals it once the create returned: the proof bound to its UID.
    let (k, v) =
        vclink_hub::testing::proof_uid_annotation(&key, WORKSPACE, name, host, uid, object_uid)?;
    let api = prov_clusters(c);
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {k: v}}})),
    )
    .await?;
    let id = wait_for(
        &format!("management cluster of {name}"),
        TIMEOUT,
        || async {
            let p = api.get(name).await?;
            anyhow::Ok(
                p.data
                    .pointer("/status/clusterName")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            )
        },
    )
    .await?;
    Ok(id)
}

/// Sum of a hub counter family (all label values) in a /metrics text.
pub fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One labelled value of a hub counter.
pub fn counter_with(metrics: &str, name: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
