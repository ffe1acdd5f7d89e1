//! The **Rancher simulator**: plays Rancher's part for vclink's tests against a real
//! kube-apiserver (the "local" cluster from `vclink-envtest`). It follows
//! `docs/rancher.md`; the product must not rely on anything here that
//! the model does not say, since acceptance runs use a different simulator.
//!
//! # Simulated (model section)
//! - §1 CRDs for every kind listed (open schemas, fields where upstream puts them);
//!   `fleet-default`/`fleet-local` namespaces and FleetWorkspaces (every other
//!   FleetWorkspace gets its namespace created after it, as Rancher does: until then a
//!   provisioning cluster cannot be created there); built-in RoleTemplates
//!   (`cluster-owner`, `cluster-member`, `project-owner`, `project-member`, `read-only`,
//!   plus the hidden `view` they inherit); Settings `cacerts`, `agent-tls-mode`, `server-url`.
//! - §2 Provisioning cluster → management cluster `c-m-xxxxxxxx` (labels/annotations
//!   copied once); `status.clusterName/fleetWorkspaceName/observedGeneration/ready`
//!   (sticky)`/agentDeployed/clientSecretName/conditions`; once ready the
//!   `<name>-kubeconfig` Secret and the `<c-m-id>-<ns>-owner` CRTB for the
//!   `system://provisioning/<ns>/<name>` principal; deletion both ways with finalizers;
//!   webhook name rules and creatorId / no-creator-rbac rules (creatorId overwritten
//!   with the requester unless the no-creator-rbac key is present; a foreign creatorId,
//!   creatorId with no-creator-rbac, or a changed creatorId refused).
//! - §3 Conditions `Connected`, `Ready` (`False`/`Disconnected` when the agent goes),
//!   `AgentDeployed`; status written via `/status` only in 2.15 (status subresource).
//!   Unless `no-creator-rbac` is present, the creator gets CRTB `creator-cluster-owner`
//!   (annotation `authz.management.cattle.io/creator-owner-binding`, `userName` =
//!   creatorId, whether or not a User of that name exists) and `CreatorMadeOwner=True`.
//! - §4 Registration token `default-token` in both modes (legacy token in status;
//!   `{token}` placeholders + Secret `crt-token-default-token`); the import endpoint
//!   (404 unknown cluster, 400 wrong token in placeholder mode) and its manifest with
//!   every listed object; CA checksum rule; `STRICT_VERIFY` from `agent-tls-mode`.
//!   An agent "connects" when its Deployment and credential Secret (right token and url)
//!   exist in a registered API server's `cattle-system`. Management `Token`s (`ttl` in
//!   ms, `expiresAt`, cluster scope) authenticate the `/k8s/clusters/<id>` proxy, which
//!   impersonates the token's user on the downstream.
//! - §5 Default and System projects (labels) with `status.backingNamespace`
//!   `<c-m-id>-<p-id>` (namespaces created); [`RancherSim::create_project`].
//! - §6 CRTB/PRTB webhook: one subject, `clusterName` = namespace, immutable fields,
//!   any CRTB repeating an existing role + subject in the cluster refused with 409 in
//!   2.14+, deterministic `generateName` names in 2.15; escalation check resolving the
//!   requester's rules from local RBAC objects (ClusterRoleBindings, RoleBindings in the
//!   `c-m-` namespace) plus their CRTBs in the cluster, no bypass.
//! - Rendering into local RBAC: a CRTB's management-plane rules (CRTBs, projects, …)
//!   become Role `<template>` + RoleBinding `<crtb>-<template>` in the `c-m-` namespace;
//!   a GlobalRoleBinding becomes ClusterRole `cattle-globalrole-<role>` +
//!   ClusterRoleBinding; built-in GlobalRoles `clusters-create` and `user-base`.
//! - §7 Fleet `Cluster` for every Ready management cluster, labels per the model.
//!
//! # Not simulated
//! - Rancher's `/v3` and `/v1` REST APIs (only `/v3/import`, `/k8s/clusters`, `/ping`,
//!   `/cacerts`); the agent's websocket tunnel (connection is inferred from objects).
//! - The `local` management/provisioning cluster objects (the proxy does serve `local`).
//! - Node-derived status (`capacity`, `allocatable`, …) (§3); custom-node commands are
//!   rendered but unused (§4); token hashing; `userPrincipalName` → `userName` fill-in (§6).
//! - Project-namespace annotations written by the cluster agent (§5); Fleet bundles,
//!   GitRepo deployment and templating (§7 — only the CRDs exist); vCluster (§8).
//! - PRTB escalation checks (only shape checks); the webhook's GlobalRole /
//!   GlobalRoleBinding checks; GlobalRoles' `inheritedClusterRoles`; CRTB rendering
//!   into downstream clusters and the cluster-membership ClusterRole.
#![forbid(unsafe_code)]

pub mod bootstrap;
pub mod controllers;
pub mod crds;
pub mod error;
pub mod faults;
pub mod kinds;
pub mod manifest;
pub mod names;
pub mod options;
pub mod queue;
pub mod server;
pub mod state;
pub mod tls;
pub mod webhook;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use vclink_envtest::{CertificateAuthority, Cluster};

pub use faults::{Fault, FaultPoint, Faults, SimStats};
pub use options::{AgentTlsMode, Delays, RancherVersion, SimOptions, TokenMode};

use crate::queue::Key;
use crate::state::{Backend, Connection, Shared, get_opt, str_at};

/// A Rancher project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// `p-xxxxx`.
    pub id: String,
    /// `<c-m-id>-<p-id>`, where the project's PRTBs live.
    pub backing_namespace: String,
}

/// A running Rancher simulator. Call [`RancherSim::shutdown`] to stop it and remove its
/// webhook registrations (otherwise the local API server keeps calling a dead webhook).
pub struct RancherSim {
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

fn backend_for(cluster: &Cluster, id: usize) -> anyhow::Result<Backend> {
    let ca = cluster.ca().cert_pem().to_string();
    let ident = cluster.admin_identity();
    Ok(Backend {
        id,
        url: cluster.url().to_string(),
        client: tls::kube_client(cluster.url(), &ca, ident)?,
        http: tls::http_client(&ca, ident)?,
    })
}

impl RancherSim {
    /// Installs CRDs, settings, role templates, workspaces and webhooks into `local`,
    /// then starts the controllers and the HTTPS server.
    pub async fn start(local: &Cluster, opts: SimOptions) -> anyhow::Result<RancherSim> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = local.client().await.context("local cluster client")?;
        let ca = CertificateAuthority::new("rancher-simulator-ca")?;
        let serving = ca.issue_server(&["127.0.0.1".to_string(), "localhost".to_string()])?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let server_url = format!("https://127.0.0.1:{}", listener.local_addr()?.port());
        let ca_pem = ca.cert_pem().to_string();
        crds::install(&client, opts.version)
            .await
            .context("installing Rancher CRDs")?;
        bootstrap::install_objects(
            &client,
            &server_url,
            &ca_pem,
            opts.agent_tls_mode.setting_value(),
            &opts.fleet_workspace,
        )
        .await
        .context("installing Rancher settings and role templates")?;
        let shared = Arc::new(Shared {
            local: client.clone(),
            local_backend: Arc::new(backend_for(local, usize::MAX)?),
            opts,
            server_url: server_url.clone(),
            ca_pem: ca_pem.clone(),
            faults: Faults::default(),
            counters: Default::default(),
            queue: Default::default(),
            cancel: CancellationToken::new(),
            backends: Mutex::new(Vec::new()),
            connections: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            created: Mutex::new(HashMap::new()),
        });
        let server = tokio::spawn(server::serve(
            shared.clone(),
            listener,
            tls::server_config(&serving)?,
        ));
        bootstrap::install_webhooks(&client, &server_url, &ca_pem)
            .await
            .context("registering webhooks")?;
        controllers::start(&shared);
        tracing::info!(server_url = %server_url, "Rancher simulator started");
        Ok(RancherSim { shared, server })
    }

    /// `https://127.0.0.1:PORT`: Rancher's server-url.
    pub fn server_url(&self) -> String {
        self.shared.server_url.clone()
    }

    /// The registration tokens the simulator honours now, each with the credentials that
    /// embed it: `(token, manifest URL, management cluster id)`. For secrets-hygiene tests,
    /// which search everything vclink wrote for them.
    pub fn registration_credentials(&self) -> Vec<(String, String, String)> {
        let tokens = self
            .shared
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        tokens
            .into_iter()
            .map(|(t, cid)| {
                let url = format!("{}/v3/import/{t}_{cid}.yaml", self.shared.server_url);
                (t, url, cid)
            })
            .collect()
    }

    /// Rancher's CA PEM (also in Setting `cacerts`).
    pub fn ca_pem(&self) -> String {
        self.shared.ca_pem.clone()
    }

    /// Registers an API server into which a `cattle-cluster-agent` may be applied; the
    /// simulator watches its `cattle-system` namespace.
    pub fn register_backend(&self, cluster: &Cluster) {
        let _ = self.register(cluster);
    }

    fn register(&self, cluster: &Cluster) -> anyhow::Result<usize> {
        let mut err = None;
        let backend = self
            .shared
            .add_backend(|id| match backend_for(cluster, id) {
                Ok(b) => b,
                Err(e) => {
                    err = Some(e);
                    // keep ids dense; an unusable backend is never connected
                    Backend {
                        id,
                        url: String::new(),
                        client: self.shared.local.clone(),
                        http: reqwest::Client::new(),
                    }
                }
            });
        if let Some(e) = err {
            tracing::warn!(error = %e, "Rancher simulator: cannot use backend");
            return Err(e);
        }
        controllers::agent::watch_backend(&self.shared, &backend);
        Ok(backend.id)
    }

    /// Makes cluster id `alias` a proxy target that reaches the same API server as the
    /// already-connected cluster `like` (benchmarks simulate many downstream clusters
    /// without one API server each). False when `like` is not connected.
    pub fn alias_connection(&self, alias: &str, like: &str) -> bool {
        let Some(c) = self.shared.connection(like) else {
            return false;
        };
        self.shared.set_connection(alias, Some(c));
        true
    }

    /// An already-imported downstream cluster: creates its provisioning + management
    /// cluster, marks it connected (no agent needed), waits until ready; returns the
    /// `c-m-` id. The cluster becomes a proxy target.
    pub async fn add_downstream(
        &self,
        display_name: &str,
        cluster: &Cluster,
    ) -> anyhow::Result<String> {
        let backend = self.register(cluster)?;
        let ws = self.shared.opts.fleet_workspace.clone();
        let api = kinds::PROV_CLUSTER.ns(&self.shared.local, &ws);
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": kinds::PROV_CLUSTER.api_version(), "kind": "Cluster",
            "metadata": {"name": display_name, "namespace": ws, "annotations": {kinds::keys::NO_CREATOR_RBAC: "true"}},
            "spec": {}}))?;
        api.create(&PostParams::default(), &obj)
            .await
            .context("creating provisioning cluster")?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut cid = None;
        loop {
            let p = get_opt(&api, display_name)
                .await?
                .context("provisioning cluster vanished")?;
            if cid.is_none()
                && let Some(id) = str_at(&p, "/status/clusterName")
            {
                self.shared.set_connection(
                    &id,
                    Some(Connection {
                        backend,
                        pinned: true,
                    }),
                );
                self.shared.queue.add(Key::Mgmt(id.clone()));
                cid = Some(id);
            }
            if let Some(id) = &cid
                && p.data
                    .pointer("/status/ready")
                    .and_then(serde_json::Value::as_bool)
                    == Some(true)
            {
                return Ok(id.clone());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "downstream {display_name} not ready within 60s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates a management `User`; returns its id (`u-xxxxx`).
    pub async fn create_user(&self, username: &str) -> anyhow::Result<String> {
        let id = names::user_id();
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": kinds::USER.api_version(), "kind": "User", "metadata": {"name": id},
            "username": username, "displayName": username, "principalIds": [format!("local://{id}")]}))?;
        kinds::USER
            .all(&self.shared.local)
            .create(&PostParams::default(), &obj)
            .await?;
        Ok(id)
    }

    /// Binds `user_id` to GlobalRole `global_role` (a `GlobalRoleBinding`, which the
    /// simulator renders into local RBAC like Rancher); returns the binding's name.
    pub async fn bind_global_role(
        &self,
        user_id: &str,
        global_role: &str,
    ) -> anyhow::Result<String> {
        let name = format!("grb-{}", names::project_id().trim_start_matches("p-"));
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": kinds::GLOBAL_ROLE_BINDING.api_version(), "kind": "GlobalRoleBinding",
            "metadata": {"name": name}, "globalRoleName": global_role, "userName": user_id}))?;
        kinds::GLOBAL_ROLE_BINDING
            .all(&self.shared.local)
            .create(&PostParams::default(), &obj)
            .await?;
        Ok(name)
    }

    /// Creates a management `Token` for `user_id` (`ttl` zero = never expires; stored in
    /// milliseconds), optionally scoped to one cluster; returns `name:secret`.
    pub async fn create_token(
        &self,
        user_id: &str,
        ttl: Duration,
        cluster: Option<&str>,
    ) -> anyhow::Result<String> {
        let name = names::token_name();
        let secret = names::token_secret();
        let ttl_ms = ttl.as_millis() as u64;
        let mut obj = json!({
            "apiVersion": kinds::TOKEN.api_version(), "kind": "Token", "metadata": {"name": name},
            "token": secret, "userId": user_id, "authProvider": "local", "ttl": ttl_ms, "enabled": true,
            "clusterName": cluster.unwrap_or_default(), "isDerived": true});
        if ttl_ms > 0 {
            let exp = k8s_openapi::jiff::Timestamp::now() + ttl;
            obj["expiresAt"] = json!(exp.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
        }
        let obj: DynamicObject = serde_json::from_value(obj)?;
        kinds::TOKEN
            .all(&self.shared.local)
            .create(&PostParams::default(), &obj)
            .await?;
        Ok(format!("{name}:{secret}"))
    }

    /// Creates a project (and its backing namespace) in a cluster.
    pub async fn create_project(
        &self,
        cluster_id: &str,
        display_name: &str,
    ) -> anyhow::Result<Project> {
        let ns_api: Api<Namespace> = Api::all(self.shared.local.clone());
        let (id, backing_namespace) = controllers::management::create_project(
            &self.shared,
            &ns_api,
            cluster_id,
            display_name,
            None,
        )
        .await?;
        Ok(Project {
            id,
            backing_namespace,
        })
    }

    /// A cloneable handle to inject faults.
    pub fn faults(&self) -> Faults {
        self.shared.faults.clone()
    }

    /// Counters of what the simulator has done.
    pub fn stats(&self) -> SimStats {
        self.shared.counters.snapshot()
    }

    /// Stops controllers and server and removes the webhook registrations.
    pub async fn shutdown(self) {
        if let Err(e) = bootstrap::remove_webhooks(&self.shared.local).await {
            tracing::warn!(error = %e, "Rancher simulator: cannot remove webhook registrations");
        }
        self.shared.cancel.cancel();
        let _ = self.server.await;
    }
}
