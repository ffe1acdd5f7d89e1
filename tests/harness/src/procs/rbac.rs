//! Runs the hub and the agent under exactly the RBAC the Helm charts grant: renders the
//! charts with Helm's Go SDK (through `vclink-chart-tests`), applies the rendered
//! ServiceAccounts, (Cluster)Roles and bindings to the test API servers with server-side
//! apply, and hands out a kubeconfig whose identity is a TokenRequest token of the
//! chart's ServiceAccount — what the pod's mounted token is in a real install.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use vclink_chart_tests::objects::{Object, objects};
use vclink_envtest::Cluster;

/// Release namespace of both charts in the tests (and their defaults' expectation).
pub const RELEASE_NAMESPACE: &str = "vclink-system";
/// The hub's ServiceAccount as the hub chart names it (release `vclink-hub`).
pub const HUB_SERVICE_ACCOUNT: &str = "vclink-hub";
/// The Rancher User the hub chart creates by default (`rancherCredential.userName`),
/// which the hub impersonates (`--impersonate-user`).
pub const HUB_RANCHER_USER: &str = "vclink-hub";
/// The agent's ServiceAccount as the agent chart names it (release `vclink-agent`).
pub const AGENT_SERVICE_ACCOUNT: &str = "vclink-agent";

/// Field manager of what the harness applies.
const MANAGER: &str = "vclink-harness";

/// Kinds that make up a chart's RBAC, plus the Lease the hub chart creates for its
/// leader election (the hub may only get/update it, so it must exist first).
/// With the Rancher objects of the hub's identity (its User, its GlobalRoles and their
/// bindings), which the Rancher simulator renders into local RBAC as Rancher does.
const RBAC_KINDS: &[&str] = &[
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Lease",
    "RoleTemplate",
    "GlobalRole",
    "User",
    "GlobalRoleBinding",
];

/// The RBAC objects of chart case `case` rendered with `extra_values` (YAML text) merged
/// last, in template order.
pub fn render_rbac(case: &str, extra_values: &str) -> anyhow::Result<Vec<Object>> {
    let c =
        vclink_chart_tests::cases::case(case).with_context(|| format!("no chart case {case}"))?;
    let dir = tempfile::tempdir()?;
    let values = dir.path().join("harness-values.yaml");
    std::fs::write(&values, extra_values)?;
    let rendered = vclink_chart_tests::helm::render_with(c, &[values])
        .with_context(|| format!("rendering chart case {case}"))?;
    anyhow::ensure!(
        rendered.schema_error.is_none(),
        "chart case {case} refused the harness values: {:?}",
        rendered.schema_error
    );
    Ok(objects(case, &rendered)?
        .into_iter()
        .filter(|o| RBAC_KINDS.contains(&o.kind()))
        .collect())
}

/// The hub chart's RBAC for Fleet workspace `workspace`; with `managed_user`, as the chart
/// renders it for `rancherCredential.mode=managed` (the hub issues its own Rancher Tokens
/// for that User, `--rancher-user`).
pub fn hub_rbac(workspace: &str, managed_user: Option<&str>) -> anyhow::Result<Vec<Object>> {
    hub_rbac_with(workspace, managed_user, None)
}

/// [`hub_rbac`] with more chart values (a JSON object) merged over it.
pub fn hub_rbac_with(
    workspace: &str,
    managed_user: Option<&str>,
    extra: Option<serde_json::Value>,
) -> anyhow::Result<Vec<Object>> {
    let mut values = serde_json::json!({ "fleetWorkspace": workspace });
    if let Some(serde_json::Value::Object(m)) = extra {
        for (k, v) in m {
            values[k] = v;
        }
    }
    if let Some(user) = managed_user {
        values["rancherCredential"] = serde_json::json!({"mode": "managed", "userName": user});
    }
    render_rbac("hub-default", &values.to_string())
}

/// The agent chart's RBAC.
pub fn agent_rbac() -> anyhow::Result<Vec<Object>> {
    render_rbac("agent-default", "{}")
}

fn resource_of(o: &Object) -> anyhow::Result<ApiResource> {
    let (group, version) = o
        .api_version()
        .split_once('/')
        .unwrap_or(("", o.api_version()));
    let plural = match o.kind() {
        "ServiceAccount" => "serviceaccounts",
        "ClusterRole" => "clusterroles",
        "ClusterRoleBinding" => "clusterrolebindings",
        "Role" => "roles",
        "RoleBinding" => "rolebindings",
        "Namespace" => "namespaces",
        "Lease" => "leases",
        "RoleTemplate" => "roletemplates",
        "GlobalRole" => "globalroles",
        "User" => "users",
        "GlobalRoleBinding" => "globalrolebindings",
        other => anyhow::bail!("the harness does not apply {other}"),
    };
    Ok(ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, o.kind()),
        plural,
    ))
}

/// Server-side applies `objs` (and the namespaces they live in) as admin.
pub async fn apply(cluster: &Cluster, objs: &[Object]) -> anyhow::Result<()> {
    let client = cluster.client().await?;
    let pp = PatchParams::apply(MANAGER).force();
    let mut namespaces: Vec<&str> = objs.iter().filter_map(Object::namespace).collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    for ns in namespaces {
        let v =
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
            .patch(ns, &pp, &Patch::Apply(&v))
            .await
            .with_context(|| format!("applying namespace {ns}"))?;
    }
    for o in objs {
        let ar = resource_of(o)?;
        let api: Api<DynamicObject> = match o.namespace() {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        };
        api.patch(o.name(), &pp, &Patch::Apply(&o.value))
            .await
            .with_context(|| format!("applying {} {} from {}", o.kind(), o.name(), o.source))?;
    }
    Ok(())
}

/// A token of ServiceAccount `namespace/name` for the API server's own audience, valid
/// `validity` (TokenRequest, as the kubelet mints a pod's token).
pub async fn service_account_token(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    validity: Duration,
) -> anyhow::Result<vclink_proto::Secret> {
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(i64::try_from(validity.as_secs()).unwrap_or(86_400)),
            bound_object_ref: None,
        },
        ..Default::default()
    };
    let tr = Api::<ServiceAccount>::namespaced(cluster.client().await?, namespace)
        .create_token_request(name, &PostParams::default(), &req)
        .await
        .with_context(|| format!("TokenRequest for ServiceAccount {namespace}/{name}"))?;
    let token = tr
        .status
        .map(|s| s.token)
        .filter(|t| !t.is_empty())
        .context("TokenRequest returned no token")?;
    Ok(vclink_proto::Secret::new(token))
}

/// Writes a kubeconfig (mode 0600) for `cluster` authenticating with `token`.
pub fn write_token_kubeconfig(
    cluster: &Cluster,
    token: &vclink_proto::Secret,
    path: &Path,
) -> anyhow::Result<()> {
    use base64::Engine;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let ca = base64::engine::general_purpose::STANDARD.encode(cluster.ca().cert_pem());
    let name = cluster.name();
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": cluster.url(), "certificate-authority-data": ca}}],
        "users": [{"name": name, "user": {"token": token.expose()}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    });
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(serde_yaml_ng::to_string(&doc)?.as_bytes())?;
    Ok(())
}

/// Applies the hub chart's RBAC to `local` and writes a kubeconfig for the hub's
/// ServiceAccount to `kubeconfig`; returns the token (tests search logs for it).
pub async fn hub_identity(
    local: &Cluster,
    workspace: &str,
    managed_user: Option<&str>,
    kubeconfig: &Path,
) -> anyhow::Result<vclink_proto::Secret> {
    hub_identity_with(local, workspace, managed_user, None, kubeconfig).await
}

/// [`hub_identity`] with the chart's RBAC rendered with more values (a JSON object).
pub async fn hub_identity_with(
    local: &Cluster,
    workspace: &str,
    managed_user: Option<&str>,
    extra: Option<serde_json::Value>,
    kubeconfig: &Path,
) -> anyhow::Result<vclink_proto::Secret> {
    let ws = workspace.to_owned();
    let user = managed_user.map(str::to_owned);
    let objs =
        tokio::task::spawn_blocking(move || hub_rbac_with(&ws, user.as_deref(), extra)).await??;
    apply(local, &objs).await?;
    let token = service_account_token(
        local,
        RELEASE_NAMESPACE,
        HUB_SERVICE_ACCOUNT,
        Duration::from_secs(24 * 3600),
    )
    .await?;
    write_token_kubeconfig(local, &token, kubeconfig)?;
    Ok(token)
}

/// Applies the agent chart's RBAC to `host` and writes a kubeconfig for the agent's
/// ServiceAccount to `kubeconfig`; returns the token.
pub async fn agent_identity(
    host: &Cluster,
    kubeconfig: &Path,
) -> anyhow::Result<vclink_proto::Secret> {
    let objs = tokio::task::spawn_blocking(agent_rbac).await??;
    apply(host, &objs).await?;
    let token = service_account_token(
        host,
        RELEASE_NAMESPACE,
        AGENT_SERVICE_ACCOUNT,
        Duration::from_secs(24 * 3600),
    )
    .await?;
    write_token_kubeconfig(host, &token, kubeconfig)?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hub_rbac_follows_the_workspace() {
        let objs = hub_rbac("fleet-harness", None).expect("render");
        let role = objs
            .iter()
            .find(|o| o.kind() == "Role" && o.name() == "vclink-hub-workspace")
            .expect("workspace Role");
        assert_eq!(role.namespace(), Some("fleet-harness"));
        assert!(
            objs.iter()
                .any(|o| o.kind() == "ServiceAccount" && o.name() == HUB_SERVICE_ACCOUNT)
        );
        assert!(
            !objs
                .iter()
                .any(|o| o.kind() == "ClusterRole" && o.name().ends_with("crtb-grant")),
            "no self-grant ClusterRole any more"
        );
        assert!(objs.iter().any(|o| o.kind() == "GlobalRoleBinding"
            && o.value["globalRoleName"] == "clusters-create"
            && o.value["userName"] == HUB_RANCHER_USER));
        assert!(objs.iter().all(|o| resource_of(o).is_ok()));
        let token_rule = |objs: &[Object]| {
            objs.iter().any(|o| {
                o.value["rules"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|r| r["resources"][0] == "tokens")
            })
        };
        assert!(!token_rule(&objs), "tokenFile mode: no Token rights");
        let managed = hub_rbac("fleet-harness", Some("u-hub")).expect("render");
        assert!(
            token_rule(&managed),
            "managed mode: the hub may create Tokens"
        );
    }

    #[test]
    fn the_agent_rbac_has_its_service_account() {
        let objs = agent_rbac().expect("render");
        assert!(objs.iter().any(|o| o.kind() == "ServiceAccount"
            && o.name() == AGENT_SERVICE_ACCOUNT
            && o.namespace() == Some(RELEASE_NAMESPACE)));
        assert!(objs.iter().any(|o| o.kind() == "ClusterRoleBinding"));
    }
}
