//! The six watches of the Rancher adapter — one per kind, narrowed by label or field
//! selectors. Each event is reduced to a small struct at once and handed to a [`Feed`]
//! (the provisioning-cluster controller applies it to the index and queues the affected
//! vCluster keys immediately: the path from "Rancher wrote the token" to "Register
//! sent" has no timer in it). A (re)list arrives as one [`Op::Replace`]; once every
//! watch has listed, [`Feed::listed`] is called once.
//!
//! Provisioning clusters are judged here, per object, with the hub's proof key
//! (`core::proof`): the index only ever sees the verdict, never the key.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret as KubeSecret;
use kube::api::{Api, DynamicObject};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;
use vclink_proto::Secret;
use vclink_proto::keys::{LABEL_MANAGED_BY, MANAGED_BY_VALUE};

use super::{
    Kind, LOFT_SERVICE_UID, creator_id, loft_key, parse_crt, parse_mgmt, parse_prov, parse_setting,
};
use crate::core::index::{Crt, MgmtCluster, ProvCluster, TOKEN_SECRET_NAME, VcKey};
use crate::core::proof::ProofKey;
pub use crate::watch::Op;
use crate::watch::{self, ListGate};

/// Where the reduced events of the Rancher watches go.
pub trait Feed: Send + Sync + 'static {
    /// Provisioning clusters labelled as ours, in every namespace (Fleet workspace).
    fn prov(&self, op: Op<ProvCluster>);
    /// Provisioning clusters of the vcluster-rancher-operator nobody adopted yet:
    /// namespace, name and the vCluster key on its labels (`None` once it is being
    /// deleted).
    fn legacy(&self, op: Op<(String, String, Option<VcKey>)>);
    /// Projects' display names (cluster id, project id, `spec.displayName`), watched
    /// only for display-name entries of --fleet-workspace-for-project.
    fn project_name(&self, _op: Op<(String, String, String)>) {}
    /// Management clusters (all of them: vClusters' and hosts').
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

/// How clusters are trusted: the proof key, and the Rancher user whose operator
/// clusters may be adopted (`--adopt-operator-clusters-created-by`; `None`: never).
#[derive(Clone, Debug)]
pub struct Trusting {
    /// The hub's proof key.
    pub proof_key: Arc<ProofKey>,
    /// Operator clusters are adoption candidates only with this `creatorId`.
    pub operator_creator: Option<String>,
}

/// The vCluster key of an operator cluster that may be adopted: not being deleted, and
/// created by `creator` (Rancher's webhook records the requesting user as creator and
/// refuses to change it, so a tenant cannot make their own cluster look like the
/// operator's).
pub(crate) fn operator_candidate(o: &DynamicObject, creator: &str) -> Option<VcKey> {
    if o.metadata.deletion_timestamp.is_some() || creator_id(o) != Some(creator) {
        return None;
    }
    loft_key(o)
}

/// Starts every watch; they run until `shutdown`.
pub fn spawn_all(
    client: Client,
    project_names: bool,
    trusting: Trusting,
    hosts: &crate::config::HostSelector,
    feed: Arc<dyn Feed>,
    shutdown: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let f = feed.clone();
    let watches = 5 + usize::from(trusting.operator_creator.is_some()) + usize::from(project_names);
    let gate = ListGate::new(watches, move || {
        tracing::info!("initial lists loaded; accepting agents");
        f.listed();
    });
    let managed = format!("{LABEL_MANAGED_BY}={MANAGED_BY_VALUE}");
    let mut tasks = Vec::new();

    // Provisioning clusters: ours, in every namespace — one watch for all the Fleet
    // workspaces the hub may use (--fleet-workspace-for-project), and for clusters an
    // earlier configuration put elsewhere.
    let f = feed.clone();
    tasks.push(watch::spawn(
        Kind::ProvCluster.all(client.clone()),
        watcher::Config::default().labels(&managed),
        {
            let proof_key = trusting.proof_key.clone();
            move |o| Some(parse_prov(o, &proof_key))
        },
        move |op| f.prov(op),
        gate.clone(),
        shutdown.clone(),
        "provisioning clusters",
    ));

    // Provisioning clusters the vcluster-rancher-operator created and nobody adopted
    // yet (its labels, not ours), only when the hub was told which Rancher user the
    // operator runs as: adopted instead of duplicated when their vCluster is reported
    // by the host their labels name. Without that setting no such watch runs.
    if let Some(creator) = trusting.operator_creator {
        let f = feed.clone();
        tasks.push(watch::spawn(
            Kind::ProvCluster.all(client.clone()),
            watcher::Config::default().labels(&format!("{LOFT_SERVICE_UID},!{LABEL_MANAGED_BY}")),
            move |o| {
                Some((
                    o.namespace().unwrap_or_default(),
                    o.name_any(),
                    operator_candidate(o, &creator),
                ))
            },
            move |op| f.legacy(op),
            gate.clone(),
            shutdown.clone(),
            "clusters of the vcluster-rancher-operator",
        ));
    }

    // Projects' display names, only when a --fleet-workspace-for-project entry is a
    // display name: a project in the cluster's namespace, reduced at once to three
    // strings. Listed before agents are served, so no cluster is created in the
    // default workspace for lack of a name.
    if project_names {
        let f = feed.clone();
        tasks.push(watch::spawn(
            Kind::Project.all(client.clone()),
            watcher::Config::default(),
            |o| {
                let name = o.data.pointer("/spec/displayName").and_then(|v| v.as_str());
                Some((
                    o.namespace()?,
                    o.name_any(),
                    name.unwrap_or_default().to_string(),
                ))
            },
            move |op| f.project_name(op),
            gate.clone(),
            shutdown.clone(),
            "project display names",
        ));
    }

    // Management clusters: those of vClusters (labels copied from our provisioning
    // clusters) and the hosts, whose opt-in label is read here. No label selector can
    // select both, so all are watched; they are few besides the vClusters' own, and
    // each is reduced to its id, connection and two booleans at once.
    let f = feed.clone();
    let hosts = hosts.clone();
    tasks.push(watch::spawn(
        Kind::MgmtCluster.all(client.clone()),
        watcher::Config::default(),
        move |o| Some(parse_mgmt(o, &hosts)),
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
