//! The six watches of the Rancher adapter — one per kind, narrowed by label or field
//! selectors. Each event is reduced to a small struct at once and handed to a [`Feed`]
//! (the provisioning-cluster controller applies it to the index and queues the affected
//! vCluster keys immediately: the path from "Rancher wrote the token" to "Register
//! sent" has no timer in it). A (re)list arrives as one [`Op::Replace`]; once every
//! watch has listed, [`Feed::listed`] is called once.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret as KubeSecret;
use kube::api::Api;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;
use vclink_proto::Secret;
use vclink_proto::keys::{LABEL_MANAGED_BY, MANAGED_BY_VALUE};

use super::{Kind, LOFT_SERVICE_UID, loft_key, parse_crt, parse_mgmt, parse_prov, parse_setting};
use crate::core::index::{Crt, MgmtCluster, ProvCluster, TOKEN_SECRET_NAME, VcKey};
pub use crate::watch::Op;
use crate::watch::{self, ListGate};

/// Where the reduced events of the Rancher watches go.
pub trait Feed: Send + Sync + 'static {
    /// Provisioning clusters labelled as ours, in the workspace.
    fn prov(&self, op: Op<ProvCluster>);
    /// Provisioning clusters of the vcluster-rancher-operator nobody adopted yet: name
    /// and the vCluster key on its labels (`None` once it is being deleted).
    fn legacy(&self, op: Op<(String, Option<VcKey>)>);
    /// Management clusters labelled as ours.
    fn mgmt(&self, op: Op<MgmtCluster>);
    /// Registration tokens (`default-token` of each cluster).
    fn token(&self, op: Op<Crt>);
    /// Registration token Secrets (newer Rancher): management id and token.
    fn token_secret(&self, op: Op<(String, Secret)>);
    /// The two Settings the hub reads: name and value.
    fn setting(&self, op: Op<(String, String)>);
    /// Every watch delivered its first complete list.
    fn listed(&self);
}

/// Starts every watch; they run until `shutdown`.
pub fn spawn_all(
    client: Client,
    workspace: &str,
    feed: Arc<dyn Feed>,
    shutdown: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let f = feed.clone();
    let gate = ListGate::new(6, move || {
        tracing::info!("initial lists loaded; accepting agents");
        f.listed();
    });
    let managed = format!("{LABEL_MANAGED_BY}={MANAGED_BY_VALUE}");
    let mut tasks = Vec::new();

    // Provisioning clusters: ours, in the workspace.
    let f = feed.clone();
    tasks.push(watch::spawn(
        Kind::ProvCluster.namespaced(client.clone(), workspace),
        watcher::Config::default().labels(&managed),
        |o| Some(parse_prov(o)),
        move |op| f.prov(op),
        gate.clone(),
        shutdown.clone(),
        "provisioning clusters",
    ));

    // Provisioning clusters the vcluster-rancher-operator created and nobody adopted
    // yet (its labels, not ours): adopted instead of duplicated when their vCluster is
    // reported. A cluster being deleted is no candidate.
    let f = feed.clone();
    tasks.push(watch::spawn(
        Kind::ProvCluster.namespaced(client.clone(), workspace),
        watcher::Config::default().labels(&format!("{LOFT_SERVICE_UID},!{LABEL_MANAGED_BY}")),
        |o| {
            let key = loft_key(o).filter(|_| o.metadata.deletion_timestamp.is_none());
            Some((o.name_any(), key))
        },
        move |op| f.legacy(op),
        gate.clone(),
        shutdown.clone(),
        "clusters of the vcluster-rancher-operator",
    ));

    // Management clusters: labels were copied from our provisioning clusters.
    let f = feed.clone();
    tasks.push(watch::spawn(
        Kind::MgmtCluster.all(client.clone()),
        watcher::Config::default().labels(&managed),
        |o| Some(parse_mgmt(o)),
        move |op| f.mgmt(op),
        gate.clone(),
        shutdown.clone(),
        "management clusters",
    ));

    // Registration tokens: one per cluster, always named default-token.
    let f = feed.clone();
    tasks.push(watch::spawn(
        Kind::RegistrationToken.all(client.clone()),
        watcher::Config::default().fields("metadata.name=default-token"),
        parse_crt,
        move |op| f.token(op),
        gate.clone(),
        shutdown.clone(),
        "registration tokens",
    ));

    // Token Secrets (newer Rancher).
    let f = feed.clone();
    let api: Api<KubeSecret> = Api::all(client.clone());
    let fields = format!("metadata.name={TOKEN_SECRET_NAME}");
    tasks.push(watch::spawn(
        api,
        watcher::Config::default().fields(&fields),
        parse_token_secret,
        move |op| f.token_secret(op),
        gate.clone(),
        shutdown.clone(),
        "registration token Secrets",
    ));

    // Settings (TLS mode and CA for Register).
    tasks.push(watch::spawn(
        Kind::Setting.all(client),
        watcher::Config::default(),
        parse_setting,
        move |op| feed.setting(op),
        gate,
        shutdown,
        "settings",
    ));
    tasks
}

fn parse_token_secret(s: &KubeSecret) -> Option<(String, Secret)> {
    let ns = s.namespace()?;
    let raw = s
        .data
        .as_ref()
        .and_then(|d| d.get("token"))
        .map(|b| b.0.clone())
        .unwrap_or_default();
    let token = String::from_utf8(raw).ok()?.trim().to_string();
    Some((ns, Secret::new(token)))
}
