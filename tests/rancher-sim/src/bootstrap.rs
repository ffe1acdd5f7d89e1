//! What a fresh Rancher install holds before anyone imports a cluster: built-in role
//! templates (docs/rancher.md: Projects and role bindings) and global roles `clusters-create` / `user-base`, the `cacerts` / `agent-tls-mode` / `server-url`
//! settings (§4), the Fleet workspaces and their namespaces (§1, §7), and Rancher's
//! admission webhook registrations (§2, §6), pointing at the simulator's HTTPS server.

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject};
use serde_json::{Value, json};

use crate::error::Result;
use crate::kinds;
use crate::state::{apply, delete_opt};

/// Name of both webhook configurations (as upstream).
pub const WEBHOOK_CONFIG: &str = "rancher.cattle.io";

/// Built-in role templates: name, context, rules, inherited templates.
pub fn role_templates() -> Vec<Value> {
    let rt =
        |name: &str, display: &str, context: &str, rules: Value, inherits: Value, hidden: bool| {
            json!({"apiVersion": kinds::ROLE_TEMPLATE.api_version(), "kind": "RoleTemplate",
            "metadata": {"name": name}, "displayName": display, "context": context, "builtin": true,
            "hidden": hidden, "rules": rules, "roleTemplateNames": inherits})
        };
    vec![
        rt(
            "cluster-owner",
            "Cluster Owner",
            "cluster",
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
            json!([]),
            false,
        ),
        rt(
            "cluster-member",
            "Cluster Member",
            "cluster",
            json!([{"apiGroups": ["management.cattle.io"], "resources": ["clusterroletemplatebindings", "projects"], "verbs": ["get", "list", "watch"]},
                   {"apiGroups": ["management.cattle.io"], "resources": ["projects"], "verbs": ["create"]}]),
            json!([]),
            false,
        ),
        rt(
            "view",
            "View Workloads",
            "project",
            json!([{"apiGroups": ["", "apps"], "resources": ["*"], "verbs": ["get", "list", "watch"]}]),
            json!([]),
            true,
        ),
        rt(
            "read-only",
            "Read-only",
            "project",
            json!([]),
            json!(["view"]),
            false,
        ),
        rt(
            "project-member",
            "Project Member",
            "project",
            json!([{"apiGroups": ["", "apps"], "resources": ["*"], "verbs": ["create", "update", "patch", "delete"]}]),
            json!(["view"]),
            false,
        ),
        rt(
            "project-owner",
            "Project Owner",
            "project",
            json!([{"apiGroups": ["management.cattle.io"], "resources": ["projectroletemplatebindings"], "verbs": ["*"]}]),
            json!(["project-member"]),
            false,
        ),
    ]
}

/// Built-in GlobalRoles a cluster-creating user is given (rancher/rancher
/// `pkg/data/management/role_data.go`): `clusters-create` ("Create Clusters") and
/// `user-base`. Rancher renders their `rules` as ClusterRole `cattle-globalrole-<name>`
/// (see [`crate::controllers::rbac`]).
pub fn global_roles() -> Vec<Value> {
    let gr = |name: &str, display: &str, rules: Value| {
        json!({"apiVersion": kinds::GLOBAL_ROLE.api_version(), "kind": "GlobalRole",
            "metadata": {"name": name}, "displayName": display, "builtin": true, "rules": rules})
    };
    let read = json!(["get", "list", "watch"]);
    let mc = "management.cattle.io";
    vec![
        gr(
            "clusters-create",
            "Create Clusters",
            json!([
                {"apiGroups": [mc], "resources": ["clusters"], "verbs": ["create"]},
                {"apiGroups": ["provisioning.cattle.io"], "resources": ["clusters"], "verbs": ["create"]},
                {"apiGroups": [mc], "resources": ["templates", "templateversions"], "verbs": read},
                {"apiGroups": [mc], "resources": ["nodedrivers"], "verbs": read},
                {"apiGroups": [mc], "resources": ["kontainerdrivers"], "verbs": read},
                {"apiGroups": [mc], "resources": ["podsecurityadmissionconfigurationtemplates"], "verbs": read},
                {"apiGroups": [mc], "resources": ["nodetemplates"], "verbs": ["*"]},
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
                {"apiGroups": ["rke-machine-config.cattle.io"], "resources": ["*"], "verbs": ["create"]},
                {"apiGroups": ["catalog.cattle.io"], "resources": ["clusterrepos"], "verbs": read},
                {"apiGroups": ["rke.cattle.io"], "resources": ["etcdsnapshots"], "verbs": read},
            ]),
        ),
        gr(
            "user-base",
            "User Base",
            json!([
                {"apiGroups": [mc], "resources": ["preferences"], "verbs": ["*"]},
                {"apiGroups": [mc], "resources": ["settings"], "verbs": read},
                {"apiGroups": [mc], "resources": ["features"], "verbs": read},
                {"apiGroups": [mc], "resources": ["rancherusernotifications"], "verbs": read},
            ]),
        ),
    ]
}

/// Installs role templates, global roles, settings, workspaces and namespaces.
pub async fn install_objects(
    client: &Client,
    server_url: &str,
    ca_pem: &str,
    tls_mode: &str,
    workspace: &str,
) -> Result<()> {
    let rts = kinds::ROLE_TEMPLATE.all(client);
    for t in role_templates() {
        let name = t["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        apply(&rts, &name, &t).await?;
    }
    let grs = kinds::GLOBAL_ROLE.all(client);
    for g in global_roles() {
        let name = g["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        apply(&grs, &name, &g).await?;
    }
    let settings = kinds::SETTING.all(client);
    for (name, value, default) in [
        ("cacerts", ca_pem, ""),
        ("agent-tls-mode", tls_mode, "strict"),
        ("server-url", server_url, ""),
    ] {
        let s = json!({"apiVersion": kinds::SETTING.api_version(), "kind": "Setting", "metadata": {"name": name},
            "value": value, "default": default});
        apply(&settings, name, &s).await?;
    }
    let ns_api: Api<DynamicObject> =
        Api::all_with(client.clone(), &ApiResource::erase::<Namespace>(&()));
    let workspaces = kinds::FLEET_WORKSPACE.all(client);
    let mut names = vec![workspace.to_string(), "fleet-local".to_string()];
    names.dedup();
    for ws in names
        .iter()
        .chain(std::iter::once(&"cattle-system".to_string()))
    {
        apply(
            &ns_api,
            ws,
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ws}}),
        )
        .await?;
    }
    for ws in &names {
        let obj = json!({"apiVersion": kinds::FLEET_WORKSPACE.api_version(), "kind": "FleetWorkspace", "metadata": {"name": ws}});
        apply(&workspaces, ws, &obj).await?;
    }
    Ok(())
}

/// One webhook entry; `gvr` is (group, version, resource).
fn hook(
    name: &str,
    path: &str,
    base: &str,
    ca_b64: &str,
    gvr: (&str, &str, &str),
    ops: &[&str],
) -> Value {
    let (group, version, resource) = gvr;
    json!({
        "name": name,
        "clientConfig": {"url": format!("{base}{path}"), "caBundle": ca_b64},
        "rules": [{"apiGroups": [group], "apiVersions": [version], "resources": [resource], "operations": ops, "scope": "*"}],
        "failurePolicy": "Fail", "sideEffects": "None", "admissionReviewVersions": ["v1"],
        "timeoutSeconds": 10, "matchPolicy": "Equivalent",
    })
}

/// Registers the simulator's admission webhooks with the local API server.
pub async fn install_webhooks(client: &Client, server_url: &str, ca_pem: &str) -> Result<()> {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let mutating = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": WEBHOOK_CONFIG},
        "webhooks": [
            hook("rancher.cattle.io.clusters.provisioning.cattle.io", "/v1/webhook/mutation/clusters.provisioning.cattle.io",
                server_url, &ca, ("provisioning.cattle.io", "v1", "clusters"), &["CREATE", "UPDATE"]),
            hook("rancher.cattle.io.clusterroletemplatebindings.management.cattle.io", "/v1/webhook/mutation/clusterroletemplatebindings.management.cattle.io",
                server_url, &ca, ("management.cattle.io", "v3", "clusterroletemplatebindings"), &["CREATE"]),
        ],
    });
    let validating = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": WEBHOOK_CONFIG},
        "webhooks": [
            hook("rancher.cattle.io.clusters.provisioning.cattle.io", "/v1/webhook/validation/clusters.provisioning.cattle.io",
                server_url, &ca, ("provisioning.cattle.io", "v1", "clusters"), &["CREATE", "UPDATE"]),
            hook("rancher.cattle.io.clusterroletemplatebindings.management.cattle.io", "/v1/webhook/validation/clusterroletemplatebindings.management.cattle.io",
                server_url, &ca, ("management.cattle.io", "v3", "clusterroletemplatebindings"), &["CREATE", "UPDATE"]),
            hook("rancher.cattle.io.projectroletemplatebindings.management.cattle.io", "/v1/webhook/validation/projectroletemplatebindings.management.cattle.io",
                server_url, &ca, ("management.cattle.io", "v3", "projectroletemplatebindings"), &["CREATE", "UPDATE"]),
        ],
    });
    let m: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::erase::<MutatingWebhookConfiguration>(&()),
    );
    let v: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::erase::<ValidatingWebhookConfiguration>(&()),
    );
    apply(&m, WEBHOOK_CONFIG, &mutating).await?;
    apply(&v, WEBHOOK_CONFIG, &validating).await?;
    Ok(())
}

/// Removes the webhook registrations so a stopped simulator does not block the API server.
pub async fn remove_webhooks(client: &Client) -> Result<()> {
    let m: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::erase::<MutatingWebhookConfiguration>(&()),
    );
    let v: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::erase::<ValidatingWebhookConfiguration>(&()),
    );
    delete_opt(&m, WEBHOOK_CONFIG).await?;
    delete_opt(&v, WEBHOOK_CONFIG).await?;
    Ok(())
}
