//! Owner sync: people who own or work in the project that holds a vCluster's
//! namespace, and the owners of its host cluster, get access to the vCluster's Rancher
//! cluster through CRTBs the hub keeps in that cluster's `c-m-` namespace — and lose it
//! when they lose the project.
//!
//! - [`model`]: Projects, PRTBs and CRTBs reduced to small structs.
//! - [`mapping`]: which role becomes which (`--owner-role-mapping`).
//! - [`desired`]: the pure decision (desired CRTBs, names, plan) with its unit tests.
//! - [`store`]: the in-memory index of what the watches saw.
//! - [`watch`]: one watch per kind (Projects, PRTBs, CRTBs), all namespaces, no polling.
//! - [`acting`]: owner CRTBs are written as the hub's impersonated Rancher user, the
//!   creator (so owner) of the clusters the hub made; the rules that follow from it.
//! - [`apply`]: workers that carry out a plan through the rate limiter and report
//!   failures ([`error`]: metric, log line, the vCluster's Status).
//! - [`takeover`] / [`adopt`]: in clusters adopted from the vcluster-rancher-operator,
//!   its owner CRTBs are adopted where they make a wanted grant, deleted when stale.
//!
//! Work is keyed by vCluster ([`VcKey`]) on its own bounded, deduplicated queue; the main
//! reconcile notifies it whenever a vCluster's cluster, labels or reported project
//! change ([`crate::state::Hub::notify_owners`]). Only CRTBs labelled
//! `vclink.io/managed-by=vclink` and `vclink.io/component=owner-binding` are ever deleted,
//! and the operator's own, under the rules of [`takeover`].

pub mod acting;
pub mod adopt;
pub mod apply;
pub mod desired;
pub mod error;
pub mod mapping;
pub mod model;
pub mod store;
pub mod takeover;
pub mod watch;
pub mod write;

use std::sync::{Arc, Mutex, MutexGuard};

use kube::Client;
use tokio_util::sync::CancellationToken;

use crate::core::index::VcKey;
use crate::queue::Queue;
use crate::rancher::kinds::{Kind, check_served};
use crate::state::{Hub, World};
use vclink_proto::ratelimit::RateLimiter;

pub use mapping::RoleMapping;
use store::{OwnerStore, Touch};

/// Fails with an install hint when the kinds owner sync needs are missing.
pub async fn check_apis(client: &Client) -> anyhow::Result<()> {
    check_served(
        client,
        &[Kind::Project, Kind::Prtb, Kind::Crtb],
        "owner sync needs Rancher's management API (or run with --owner-sync=disabled)",
    )
    .await
}

/// State shared by owner-sync watches and workers.
pub struct Owners {
    /// The hub (index of clusters, agent streams, metrics).
    pub hub: Arc<Hub>,
    /// The role mapping.
    pub mapping: RoleMapping,
    /// Work queue keyed by vCluster.
    pub queue: Arc<Queue>,
    store: Mutex<OwnerStore>,
    client: Client,
    limiter: RateLimiter,
    /// The Rancher user CRTBs are created and deleted as (None: the ServiceAccount).
    acting: Option<acting::Acting>,
    /// The Rancher user the vcluster-rancher-operator runs as
    /// (`--adopt-operator-clusters-created-by`): its owner CRTBs are taken over in the
    /// clusters it created. None: never.
    operator_user: Option<String>,
}

impl Owners {
    /// Locks the store (never held across an await, never while holding the world lock).
    pub fn store(&self) -> MutexGuard<'_, OwnerStore> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Enqueues the vClusters an update may affect.
    pub fn touch(&self, touches: Vec<Touch>) {
        let keys = {
            let w = self.hub.world();
            keys_for(&w, touches)
        };
        self.queue.add_all(keys);
    }
}

/// The host project (`p-…`) a vCluster is in now, as owner sync sees it.
pub fn current_project(w: &World, key: &VcKey) -> Option<String> {
    let label = w.index.prov_for(key).and_then(|p| p.project.as_deref());
    desired::project_of(&key.host, reported_project(w, key), label).project
}

/// The project id (`<cluster>:<p>`, or empty) the host's agent reports for a vCluster,
/// if its stream is live and reports it.
pub fn reported_project<'a>(w: &'a World, key: &VcKey) -> Option<&'a str> {
    w.hosts
        .get(&key.host)
        .and_then(|h| h.reported.get(&key.uid))
        .map(|v| v.project_id.as_str())
}

fn keys_for(w: &World, touches: Vec<Touch>) -> Vec<VcKey> {
    let mut out = Vec::new();
    for t in touches {
        match t {
            Touch::All => out.extend(w.index.keys().cloned()),
            Touch::Host(h) => out.extend(w.index.uids_of_host(&h).map(|u| VcKey::new(&h, u))),
            Touch::Mgmt(m) => out.extend(w.index.key_for_mgmt(&m).cloned()),
            Touch::Project(c, p) => out.extend(
                w.index
                    .uids_of_host(&c)
                    .map(|u| VcKey::new(&c, u))
                    .filter(|k| current_project(w, k).as_deref() == Some(p.as_str())),
            ),
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Number of owner-sync workers (each writes one vCluster at a time; the rate limiter
/// bounds the total).
const WORKERS: usize = 4;

/// Starts owner sync: its queue, watches and workers. Workers start once every watch
/// delivered its first list (before that, an empty cache would look like "no owners"
/// and delete every binding), then resync every vCluster. `operator_user`: the Rancher
/// user of the vcluster-rancher-operator whose owner CRTBs are taken over (None: never).
pub fn spawn(
    client: Client,
    hub: Arc<Hub>,
    mapping: RoleMapping,
    acting: Option<acting::Acting>,
    operator_user: Option<String>,
    limiter: RateLimiter,
    shutdown: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let (queue, delay_rx) = Queue::new();
    hub.set_owner_queue(queue.clone());
    let owners = Arc::new(Owners {
        hub,
        mapping,
        queue: queue.clone(),
        store: Mutex::default(),
        client,
        limiter,
        acting,
        operator_user: operator_user.filter(|u| !u.is_empty()),
    });
    let (synced_tx, synced_rx) = tokio::sync::watch::channel(false);
    let mut tasks = vec![tokio::spawn(queue.run_delays(delay_rx, shutdown.clone()))];
    tasks.extend(watch::spawn_all(
        owners.clone(),
        synced_tx,
        shutdown.clone(),
    ));
    for _ in 0..WORKERS {
        tasks.push(tokio::spawn(apply::run_worker(
            owners.clone(),
            synced_rx.clone(),
            shutdown.clone(),
        )));
    }
    tasks
}
