//! Every object every chart case renders (and the Fleet GitRepo) is sent to a real
//! kube-apiserver with server-side dry-run, after the CRDs of the kinds it uses
//! (Rancher's, Fleet's, cert-manager's, the Prometheus operator's) are installed. Then the
//! hub's rendered RBAC is applied for real and exercised as the hub's ServiceAccount:
//! the token-Secret watch the hub runs is allowed, reading any other Secret is not.
//!
//! The test API server is Kubernetes 1.20: PodDisruptionBudgets are sent as policy/v1beta1
//! (same fields for what the chart sets; the chart itself targets >= 1.25).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Discovery, Scope};
use serde_json::{Value, json};
use vclink_envtest::{Cluster, ClusterOptions};
use vclink_packaging_tests::objects::{Object, objects};
use vclink_packaging_tests::{CASES, cases, render, repo_root};

/// Kinds outside Kubernetes itself that the charts or the Fleet bundle render:
/// (group, version, kind, plural, namespaced).
const EXTERNAL_KINDS: &[(&str, &str, &str, &str, bool)] = &[
    ("provisioning.cattle.io", "v1", "Cluster", "clusters", true),
    (
        "management.cattle.io",
        "v3",
        "RoleTemplate",
        "roletemplates",
        false,
    ),
    (
        "management.cattle.io",
        "v3",
        "GlobalRole",
        "globalroles",
        false,
    ),
    (
        "management.cattle.io",
        "v3",
        "GlobalRoleBinding",
        "globalrolebindings",
        false,
    ),
    ("management.cattle.io", "v3", "User", "users", false),
    ("fleet.cattle.io", "v1alpha1", "GitRepo", "gitrepos", true),
    ("cert-manager.io", "v1", "Certificate", "certificates", true),
    (
        "monitoring.coreos.com",
        "v1",
        "ServiceMonitor",
        "servicemonitors",
        true,
    ),
];

/// Installs an open-schema CRD for every external kind the API server does not serve yet
/// and waits until all are Established.
async fn ensure_crds(client: &Client) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (group, version, kind, plural, namespaced) in EXTERNAL_KINDS {
        let name = format!("{plural}.{group}");
        if crds.get_opt(&name).await?.is_some() {
            continue;
        }
        let crd: CustomResourceDefinition = serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": name},
            "spec": {"group": group, "scope": if *namespaced { "Namespaced" } else { "Cluster" },
                "names": {"kind": kind, "plural": plural, "singular": kind.to_ascii_lowercase(), "listKind": format!("{kind}List")},
                "versions": [{"name": version, "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
        }))?;
        crds.create(&PostParams::default(), &crd).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for (group, _, _, plural, _) in EXTERNAL_KINDS {
        let name = format!("{plural}.{group}");
        loop {
            let crd = crds.get(&name).await?;
            let established = crd.status.and_then(|s| s.conditions).is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
            if established {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "CRD {name} not Established within 60s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

async fn ensure_namespaces(client: &Client, names: &BTreeSet<String>) -> anyhow::Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    for ns in names {
        let obj: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
        api.patch(
            ns,
            &PatchParams::apply("vclink-packaging-tests"),
            &Patch::Apply(&obj),
        )
        .await?;
    }
    Ok(())
}

/// What the 1.20 test API server can take of an object rendered for >= 1.25.
fn for_test_server(mut v: Value) -> Value {
    if v["kind"] == "PodDisruptionBudget" && v["apiVersion"] == "policy/v1" {
        v["apiVersion"] = json!("policy/v1beta1");
    }
    // gRPC probes (on by default since 1.24) are unknown to 1.20, which drops the field
    // and then finds a probe without a handler: check the rest of the probe with a TCP
    // handler on the same port.
    if let Some(containers) = v
        .pointer_mut("/spec/template/spec/containers")
        .and_then(Value::as_array_mut)
    {
        for c in containers {
            for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
                let Some(p) = c.get_mut(probe).and_then(Value::as_object_mut) else {
                    continue;
                };
                if let Some(grpc) = p.remove("grpc") {
                    p.insert("tcpSocket".into(), json!({ "port": grpc["port"] }));
                }
            }
        }
    }
    v
}

/// Sends `v` with dryRun=All (or for real), resolving its resource by discovery.
async fn send(
    client: &Client,
    discovery: &Discovery,
    v: &Value,
    dry_run: bool,
) -> Result<(), String> {
    let api_version = v["apiVersion"].as_str().unwrap_or_default();
    let kind = v["kind"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (ar, caps) = discovery
        .resolve_gvk(&gvk)
        .ok_or_else(|| format!("the API server does not serve {api_version} {kind}"))?;
    let obj: DynamicObject = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    let api: Api<DynamicObject> = match (caps.scope, obj.metadata.namespace.as_deref()) {
        (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &ar),
        (Scope::Namespaced, None) => {
            return Err("namespaced object without metadata.namespace".into());
        }
        (Scope::Cluster, _) => Api::all_with(client.clone(), &ar),
    };
    let pp = PostParams {
        dry_run,
        field_manager: Some("vclink-packaging-tests".into()),
    };
    api.create(&pp, &obj)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rendered_object_passes_server_side_dry_run() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Render first: a chart error should not wait for an API server.
    let mut all: Vec<(String, Object)> = Vec::new();
    for case in CASES {
        let r = render(case)?;
        anyhow::ensure!(
            r.schema_error.is_none(),
            "{}: {:?}",
            case.name,
            r.schema_error
        );
        all.extend(
            objects(case.name, &r)?
                .into_iter()
                .map(|o| (case.name.to_string(), o)),
        );
    }
    let gitrepo: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(
        repo_root().join("fleet/gitrepo.yaml"),
    )?)?;
    all.push((
        "fleet".into(),
        Object {
            source: "fleet/gitrepo.yaml".into(),
            value: gitrepo,
        },
    ));

    let cluster = Cluster::start("chart-dry-run", ClusterOptions::default()).await?;
    let client = cluster.client().await?;
    ensure_crds(&client).await?;
    let namespaces: BTreeSet<String> = all
        .iter()
        .filter_map(|(_, o)| o.namespace().map(str::to_string))
        .collect();
    ensure_namespaces(&client, &namespaces).await?;
    let discovery = Discovery::new(client.clone()).run().await?;

    let mut failures = Vec::new();
    let mut sent = 0;
    for (case, o) in &all {
        match send(&client, &discovery, &for_test_server(o.value.clone()), true).await {
            Ok(()) => sent += 1,
            Err(e) => failures.push(format!(
                "{case}: {} {} ({}): {e}",
                o.kind(),
                o.name(),
                o.source
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "server-side dry-run refused:\n{}",
        failures.join("\n")
    );
    assert!(
        sent >= 60,
        "only {sent} objects were sent: the cases render less than expected"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_service_account_can_watch_token_secrets_but_read_no_other_secret()
-> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let case = cases::case("hub-default").expect("case");
    let objs = objects(case.name, &render(case)?)?;
    let cluster = Cluster::start("chart-rbac", ClusterOptions::default()).await?;
    let admin = cluster.client().await?;
    ensure_crds(&admin).await?;
    let ns: BTreeSet<String> = ["vclink-system", "fleet-default", "c-m-ab12cd34"]
        .map(String::from)
        .into();
    ensure_namespaces(&admin, &ns).await?;
    let discovery = Discovery::new(admin.clone()).run().await?;
    for o in objs.iter().filter(|o| {
        matches!(
            o.kind(),
            "ServiceAccount" | "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding"
        )
    }) {
        send(&admin, &discovery, &o.value, false)
            .await
            .map_err(|e| anyhow::anyhow!("{} {}: {e}", o.kind(), o.name()))?;
    }
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), "c-m-ab12cd34");
    for name in ["crt-token-default-token", "someone-elses-secret"] {
        let s: Secret = serde_json::from_value(
            json!({"metadata": {"name": name}, "stringData": {"token": "x"}}),
        )?;
        secrets.create(&PostParams::default(), &s).await?;
    }
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), "vclink-system");
    let tr = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(600),
            ..Default::default()
        },
        ..Default::default()
    };
    let token = sas
        .create_token_request("vclink-hub", &PostParams::default(), &tr)
        .await?
        .status
        .map(|s| s.token)
        .unwrap_or_default();
    let hub = cluster.client_with_token(&token).await?;

    // What the hub's watch does: all namespaces, field selector on the name.
    let all: Api<Secret> = Api::all(hub.clone());
    let listed = all
        .list(&ListParams::default().fields("metadata.name=crt-token-default-token"))
        .await?;
    assert_eq!(listed.items.len(), 1, "the hub sees Rancher's token Secret");
    // Anything else is refused.
    let err = all
        .list(&ListParams::default())
        .await
        .expect_err("listing all Secrets must be forbidden");
    assert!(err.to_string().contains("forbidden"), "{err}");
    let other: Api<Secret> = Api::namespaced(hub.clone(), "c-m-ab12cd34");
    assert!(
        other.get("someone-elses-secret").await.is_err(),
        "reading another Secret must be forbidden"
    );
    // Provisioning clusters: read everywhere (one cluster-wide watch serves every Fleet
    // workspace), written only in the workspace.
    let prov = kube::api::ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("provisioning.cattle.io", "v1", "Cluster"),
        "clusters",
    );
    let in_ws: Api<DynamicObject> = Api::namespaced_with(hub.clone(), "fleet-default", &prov);
    in_ws.list(&ListParams::default()).await?;
    let elsewhere: Api<DynamicObject> = Api::namespaced_with(hub, "vclink-system", &prov);
    elsewhere.list(&ListParams::default()).await?;
    let err = elsewhere
        .delete("some-cluster", &Default::default())
        .await
        .expect_err("deleting provisioning clusters outside the workspace must be forbidden");
    assert!(err.to_string().contains("forbidden"), "{err}");
    Ok(())
}
