//! The agent's two shared watches: Services labelled `app=vcluster` in all namespaces and
//! Namespaces (metadata only, optionally filtered by a label selector). Each event is
//! folded into an [`Inventory`] holding only the few fields vclink reads (rather than a
//! reflector store of full objects, which would keep every Service's managedFields and
//! spec in memory), and the derived [`Catalog`] is published on a `tokio::sync::watch`
//! channel that the hub link and the Job controller read. A vCluster refused by
//! validation gets one Warning Event per distinct reason.

pub mod inventory;
pub mod model;

use std::collections::HashMap;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use vclink_proto::keys;

pub use inventory::{Catalog, Inventory, Refused, ServiceFacts};
pub use model::TrackedService;

use crate::record::RecordOp;

/// Receiver side of the published catalog.
pub type CatalogRx = watch::Receiver<Arc<Catalog>>;

/// A new catalog channel (initially empty and not ready).
pub fn channel() -> (watch::Sender<Arc<Catalog>>, CatalogRx) {
    watch::channel(Arc::new(Catalog::default()))
}

fn project_of(ns: &impl ResourceExt) -> Option<String> {
    ns.annotations()
        .get(model::ANNOTATION_PROJECT_ID)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Runs both watches until `cancel` fires, publishing every catalog change on `tx`.
pub async fn run(
    client: Client,
    namespace_selector: Option<String>,
    tx: watch::Sender<Arc<Catalog>>,
    records: mpsc::Sender<RecordOp>,
    cancel: CancellationToken,
) {
    let services: Api<Service> = Api::all(client.clone());
    let mut svc_stream = watcher::watcher(
        services,
        watcher::Config::default().labels(keys::SERVICE_SELECTOR),
    )
    .default_backoff()
    .map_err(|e| e.to_string())
    .boxed();
    let ns_cfg = match &namespace_selector {
        Some(sel) => watcher::Config::default().labels(sel),
        None => watcher::Config::default(),
    };
    // Metadata-only: the agent needs a namespace's annotations, never its spec or status.
    let namespaces: Api<PartialObjectMeta<Namespace>> = Api::all(client);
    let mut ns_stream = watcher::watcher(namespaces, ns_cfg)
        .default_backoff()
        .map_err(|e| e.to_string())
        .boxed();

    let mut inv = Inventory::new(namespace_selector.is_some());
    let mut warned: HashMap<String, String> = HashMap::new();
    loop {
        let changed = tokio::select! {
            _ = cancel.cancelled() => return,
            ev = svc_stream.next() => match ev {
                None => return,
                Some(Err(e)) => { warn!(error = %e, "watching vCluster Services failed; retrying with backoff"); false }
                Some(Ok(ev)) => apply_service_event(&mut inv, ev),
            },
            ev = ns_stream.next() => match ev {
                None => return,
                Some(Err(e)) => { warn!(error = %e, "watching Namespaces failed; retrying with backoff"); false }
                Some(Ok(ev)) => apply_namespace_event(&mut inv, ev),
            },
        };
        if !changed {
            continue;
        }
        let catalog = inv.catalog();
        warn_refused(&catalog, &mut warned, &records);
        tx.send_if_modified(|current| {
            if **current == catalog {
                return false;
            }
            if catalog.ready && !current.ready {
                info!(
                    vclusters = catalog.vclusters.len(),
                    "initial list of vCluster Services complete"
                );
            }
            *current = Arc::new(catalog);
            true
        });
    }
}

/// Folds one Service event in; returns whether the catalog may have changed.
fn apply_service_event(inv: &mut Inventory, ev: Event<Service>) -> bool {
    match ev {
        Event::Init => {
            inv.services_init();
            false
        }
        Event::InitApply(s) => {
            if let Some(t) = TrackedService::from_service(&s) {
                inv.services_init_apply(t);
            }
            false
        }
        Event::InitDone => {
            inv.services_init_done();
            true
        }
        Event::Apply(s) => {
            match TrackedService::from_service(&s) {
                Some(t) => inv.service_applied(t),
                None => {
                    debug!(name = %s.name_any(), "ignoring a Service without name, namespace or UID")
                }
            }
            true
        }
        Event::Delete(s) => {
            inv.service_deleted(&s.namespace().unwrap_or_default(), &s.name_any());
            true
        }
    }
}

/// Folds one Namespace (metadata) event in.
fn apply_namespace_event<K: ResourceExt>(inv: &mut Inventory, ev: Event<K>) -> bool {
    match ev {
        Event::Init => {
            inv.namespaces_init();
            false
        }
        Event::InitApply(n) => {
            inv.namespaces_init_apply(n.name_any(), project_of(&n));
            false
        }
        Event::InitDone => {
            inv.namespaces_init_done();
            true
        }
        Event::Apply(n) => {
            inv.namespace_applied(n.name_any(), project_of(&n));
            true
        }
        Event::Delete(n) => {
            inv.namespace_deleted(&n.name_any());
            true
        }
    }
}

/// Queues one Warning Event per refused vCluster and distinct reason.
fn warn_refused(
    catalog: &Catalog,
    warned: &mut HashMap<String, String>,
    records: &mpsc::Sender<RecordOp>,
) {
    warned.retain(|uid, _| catalog.refused.contains_key(uid));
    for (uid, r) in &catalog.refused {
        if warned.get(uid) == Some(&r.reason) {
            continue;
        }
        warn!(namespace = %r.namespace, name = %r.name, reason = %r.reason, "vCluster not reported to the hub");
        let op = RecordOp::Refused {
            uid: uid.clone(),
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            reason: r.reason.clone(),
        };
        if records.try_send(op).is_ok() {
            warned.insert(uid.clone(), r.reason.clone());
        }
    }
}
