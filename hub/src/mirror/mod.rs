//! The mirror: what the hub knows of each vCluster, shown on the vCluster's Rancher
//! management cluster (`clusters.management.cattle.io`, `c-m-…`), where Rancher's UI,
//! API and Fleet read it — synced Service labels (Fleet copies them to the fleet
//! Cluster, so GitRepo targets can select vClusters by them), the ResourceQuota, the
//! host, version and vclink state as annotations, and a description when it may be
//! vclink's. Rancher owns `status.capacity`/`allocatable`/`limits` and recomputes them,
//! so nothing is written there. docs/rancher.md ("What the hub writes on the management
//! cluster") lists every field.
//!
//! - [`LabelPolicy`] (in `core::labels`): which labels may be synced
//!   (`--sync-labels-include`/`-exclude`, the fixed exclusions).
//! - [`desired`]: the [`desired::Mirror`] vclink wants, and its digest.
//! - [`observed`]: what the watch shows of it, reduced to a digest of the fields vclink's
//!   field manager owns.
//! - [`worker`]: the queue workers: compare, and write only on a difference.
//!
//! Cost: one extra watch of the management clusters, keeping a 32-byte [`Entry`] and
//! the id per cluster (no objects; about 4 MB at 50,000); one decision per vCluster whenever the controller looked at it
//! (report, state, its cluster changed; the periodic resync), which is a digest compare
//! under the lock and no request when nothing differs. Decisions start only after the
//! watch's first complete list, so a restarted hub whose clusters are mirrored already
//! writes nothing. Trust: only the management cluster of a provisioning cluster the hub
//! proved it created and that maps to this very vCluster is ever written
//! ([`worker`]), so an agent — even a lying one — changes only its own vClusters'
//! clusters, and only label keys the include list allows.

pub mod desired;
pub mod observed;
pub mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;
use vclink_proto::ratelimit::RateLimiter;

use crate::core::VcKey;
pub use crate::core::labels::LabelPolicy;
use crate::queue::Queue;
use crate::rancher::kinds::Kind;
use crate::state::Hub;
use crate::watch::{self, ListGate, Op};
use observed::Seen;

/// Number of mirror workers (each writes one cluster at a time; the rate limiter bounds
/// the total).
const WORKERS: usize = 4;

/// What the hub keeps per management cluster for the mirror.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The latest reduction (watch event or write response).
    pub(crate) seen: Seen,
    /// `metadata.resourceVersion` as a number: a write's response never replaces a newer
    /// watch event.
    pub(crate) version: u64,
    /// The hub took over its create-time description once already: if Rancher writes
    /// it back (Rancher before 2.11 re-copies the provisioning cluster's description),
    /// the hub leaves it to Rancher rather than fight over it.
    pub(crate) took_description: bool,
}

/// Shared by the mirror's watch and workers.
pub struct MirrorSync {
    pub(crate) hub: Arc<Hub>,
    pub(crate) policy: LabelPolicy,
    pub(crate) queue: Arc<Queue>,
    seen: Mutex<HashMap<String, Entry>>,
    pub(crate) api: Api<DynamicObject>,
    pub(crate) limiter: RateLimiter,
}

impl MirrorSync {
    /// Locks the per-cluster memory. Never held across an await; taken alone, or inside
    /// the world lock (never the other way round).
    pub(crate) fn seen(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a reduction unless a newer one is known; true when the digest or the
    /// description's owner changed (the vCluster must be looked at again).
    pub(crate) fn record(&self, id: String, seen: Seen, version: u64) -> bool {
        let mut map = self.seen();
        match map.get_mut(&id) {
            Some(e) if version != 0 && e.version > version => false,
            Some(e) => {
                let changed = e.seen != seen;
                e.seen = seen;
                e.version = version;
                changed
            }
            None => {
                map.insert(
                    id,
                    Entry {
                        seen,
                        version,
                        took_description: false,
                    },
                );
                true
            }
        }
    }

    /// Applies one watch event; queues the vClusters whose cluster changed.
    fn on_watch(&self, op: Op<(String, Seen, u64)>, listed: &tokio::sync::watch::Sender<bool>) {
        let changed: Vec<String> = match op {
            Op::Apply((id, seen, v)) => self
                .record(id.clone(), seen, v)
                .then_some(id)
                .into_iter()
                .collect(),
            Op::Delete((id, _, _)) => {
                self.seen().remove(&id);
                Vec::new()
            }
            Op::Replace(all) => {
                let mut map = self.seen();
                let mut changed = Vec::new();
                let mut next = HashMap::with_capacity(all.len());
                for (id, seen, version) in all {
                    let took = map.get(&id).is_some_and(|e| e.took_description);
                    if map.get(&id).is_some_and(|e| e.seen != seen) {
                        changed.push(id.clone());
                    }
                    next.insert(
                        id,
                        Entry {
                            seen,
                            version,
                            took_description: took,
                        },
                    );
                }
                *map = next;
                drop(map);
                listed.send_replace(true);
                changed
            }
        };
        if changed.is_empty() {
            return;
        }
        let keys: Vec<VcKey> = {
            let w = self.hub.world();
            changed
                .iter()
                .filter_map(|id| w.index.key_for_mgmt(id).cloned())
                .collect()
        };
        self.queue.add_all(keys);
    }
}

/// Starts the mirror: its queue (the controller notifies it), the management-cluster
/// watch and the workers. Workers wait for the watch's first complete list.
pub fn spawn(
    client: Client,
    hub: Arc<Hub>,
    policy: LabelPolicy,
    limiter: RateLimiter,
    shutdown: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    if policy.is_off() {
        tracing::info!(
            "label sync off (--sync-labels-include is empty); mirroring state and quota only"
        );
    }
    let (queue, delay_rx) = Queue::new();
    hub.set_mirror_queue(queue.clone());
    let api = Kind::MgmtCluster.all(client);
    let sync = Arc::new(MirrorSync {
        hub,
        policy,
        queue: queue.clone(),
        seen: Mutex::default(),
        api: api.clone(),
        limiter,
    });
    let (listed_tx, listed_rx) = tokio::sync::watch::channel(false);
    let mut tasks = vec![tokio::spawn(queue.run_delays(delay_rx, shutdown.clone()))];
    let s = sync.clone();
    tasks.push(watch::spawn(
        api,
        watcher::Config::default(),
        |o: &DynamicObject| {
            let (id, seen) = observed::parse(o)?;
            Some((id, seen, worker::version_of(o)))
        },
        move |op| s.on_watch(op, &listed_tx),
        ListGate::new(1, || tracing::debug!("mirror: management clusters listed")),
        shutdown.clone(),
        "management clusters (mirror)",
    ));
    for _ in 0..WORKERS {
        tasks.push(tokio::spawn(worker::run(
            sync.clone(),
            listed_rx.clone(),
            shutdown.clone(),
        )));
    }
    tasks
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_per_cluster_memory_stays_small() {
        // What 50,000 clusters cost besides their ids (see the module docs).
        assert!(std::mem::size_of::<super::Entry>() <= 32);
    }
}
