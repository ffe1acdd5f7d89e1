//! The Rancher simulator's controllers (docs/rancher.md: Imported clusters, Management cluster, Registration token and import manifest, Projects and role bindings, Fleet). One watcher per kind
//! feeds a deduplicating [`Queue`](crate::queue::Queue); a worker runs one reconcile per
//! key with the configured random delay first. Reconciles read objects fresh from the
//! API server, so a lagging watch never makes them act twice.

pub mod agent;
pub mod management;
pub mod provisioning;
pub mod rbac;
pub mod workspace;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::Semaphore;

use crate::faults::Counters;
use crate::kinds;
use crate::queue::Key;
use crate::state::{Shared, str_at};

/// Reconcile outcome: `Some(d)` asks to run again after `d`.
pub type Requeue = Option<Duration>;

/// Spawns a watcher whose events become queue keys.
pub fn spawn_watch(
    shared: &Arc<Shared>,
    api: Api<DynamicObject>,
    wc: watcher::Config,
    map: impl Fn(&DynamicObject) -> Vec<Key> + Send + 'static,
    on_resync: Option<Key>,
) {
    let shared = shared.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher::watcher(api, wc).default_backoff());
        loop {
            let ev = tokio::select! {
                _ = shared.cancel.cancelled() => return,
                ev = stream.next() => ev,
            };
            match ev {
                None => return,
                Some(Ok(Event::Apply(o) | Event::InitApply(o) | Event::Delete(o))) => {
                    for k in map(&o) {
                        shared.queue.add(k);
                    }
                }
                Some(Ok(Event::InitDone)) => {
                    if let Some(k) = &on_resync {
                        shared.queue.add(k.clone());
                    }
                }
                Some(Ok(Event::Init)) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "Rancher simulator watch error (retrying)")
                }
            }
        }
    });
}

/// Starts the local-cluster watchers and the worker.
pub fn start(shared: &Arc<Shared>) {
    spawn_watch(
        shared,
        kinds::PROV_CLUSTER.all(&shared.local),
        watcher::Config::default(),
        |o| {
            let mut keys = vec![Key::Prov(
                o.metadata.namespace.clone().unwrap_or_default(),
                o.metadata.name.clone().unwrap_or_default(),
            )];
            if let Some(cid) = str_at(o, "/status/clusterName") {
                keys.push(Key::Mgmt(cid));
            }
            keys
        },
        None,
    );
    spawn_watch(
        shared,
        kinds::MGMT_CLUSTER.all(&shared.local),
        watcher::Config::default(),
        |o| {
            let mut keys = vec![Key::Mgmt(o.metadata.name.clone().unwrap_or_default())];
            if let (Some(ws), Some(name)) = (
                str_at(o, "/spec/fleetWorkspaceName"),
                str_at(o, "/spec/displayName"),
            ) {
                keys.push(Key::Prov(ws, name));
            }
            keys
        },
        None,
    );
    spawn_watch(
        shared,
        kinds::CRTB.all(&shared.local),
        watcher::Config::default(),
        |o| {
            vec![Key::Crtb(
                o.metadata.namespace.clone().unwrap_or_default(),
                o.metadata.name.clone().unwrap_or_default(),
            )]
        },
        None,
    );
    spawn_watch(
        shared,
        kinds::GLOBAL_ROLE_BINDING.all(&shared.local),
        watcher::Config::default(),
        |o| vec![Key::Grb(o.metadata.name.clone().unwrap_or_default())],
        None,
    );
    spawn_watch(
        shared,
        kinds::FLEET_WORKSPACE.all(&shared.local),
        watcher::Config::default(),
        |o| vec![Key::Workspace(o.metadata.name.clone().unwrap_or_default())],
        None,
    );
    let shared = shared.clone();
    tokio::spawn(async move {
        let permits = Arc::new(Semaphore::new(32));
        loop {
            let key = tokio::select! {
                _ = shared.cancel.cancelled() => return,
                k = shared.queue.next() => k,
            };
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let _permit = permit;
                tokio::time::sleep(shared.opts.delays.pick()).await;
                Counters::inc(&shared.counters.reconciles);
                let res = match &key {
                    Key::Prov(ns, name) => provisioning::reconcile(&shared, ns, name).await,
                    Key::Mgmt(cid) => management::reconcile(&shared, cid).await,
                    Key::Backend(id) => agent::reconcile(&shared, *id).await,
                    Key::Crtb(ns, name) => rbac::reconcile_crtb(&shared, ns, name).await,
                    Key::Grb(name) => rbac::reconcile_grb(&shared, name).await,
                    Key::Workspace(name) => workspace::reconcile(&shared, name).await,
                };
                shared.queue.done(&key);
                let again = match res {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::info!(key = ?key, error = %e, "Rancher simulator reconcile failed; retrying");
                        Some(Duration::from_millis(500))
                    }
                };
                if let Some(d) = again {
                    tokio::time::sleep(d).await;
                    shared.queue.add(key);
                }
            });
        }
    });
}
