//! Helpers shared by the Rancher simulator's self-tests: polling with a deadline, an
//! HTTPS client pinned to the simulator's CA, applying a multi-document manifest.
#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;

/// Polls `f` every 100 ms until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client trusting only `ca_pem` (the Rancher simulator's CA).
pub fn pinned_client(ca_pem: &str) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(cfg)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn resource_of(kind: &str) -> (ApiResource, bool) {
    match kind {
        "ClusterRole" => (ApiResource::erase::<ClusterRole>(&()), false),
        "ClusterRoleBinding" => (ApiResource::erase::<ClusterRoleBinding>(&()), false),
        "Namespace" => (ApiResource::erase::<Namespace>(&()), false),
        "ServiceAccount" => (ApiResource::erase::<ServiceAccount>(&()), true),
        "Secret" => (ApiResource::erase::<Secret>(&()), true),
        "Deployment" => (ApiResource::erase::<Deployment>(&()), true),
        "Service" => (ApiResource::erase::<Service>(&()), true),
        other => panic!("unexpected kind {other} in manifest"),
    }
}

/// Parses multi-document YAML.
pub fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// Server-side applies every object of a manifest (like `kubectl apply -f`).
pub async fn apply_manifest(client: &Client, yaml: &str) {
    for doc in docs(yaml) {
        let (ar, namespaced) = resource_of(doc["kind"].as_str().unwrap());
        let name = doc["metadata"]["name"].as_str().unwrap();
        let api: Api<DynamicObject> = if namespaced {
            Api::namespaced_with(
                client.clone(),
                doc["metadata"]["namespace"].as_str().unwrap(),
                &ar,
            )
        } else {
            Api::all_with(client.clone(), &ar)
        };
        api.patch(
            name,
            &PatchParams::apply("test").force(),
            &Patch::Apply(&doc),
        )
        .await
        .unwrap();
    }
}

/// The condition `t` of an object as (status, reason).
pub fn condition(o: &DynamicObject, t: &str) -> Option<(String, String)> {
    o.data
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == t)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or("").to_string(),
                c["reason"].as_str().unwrap_or("").to_string(),
            )
        })
}
