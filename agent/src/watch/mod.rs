//! The agent's shared watches: Services labelled `app=vcluster` in all namespaces,
//! Services carrying the agent's own mark but no longer `app=vcluster`, Namespaces
//! (metadata only, unfiltered: `--namespace-selector` is evaluated in memory) and
//! ResourceQuotas (one cluster-wide watch for all vClusters, as the Service watches are
//! cluster-wide; only the name and `spec.hard` of quotas named like a vCluster's are
//! kept). Each event
//! is folded into an [`Inventory`] holding only the few fields vclink reads (rather than
//! a reflector store of full objects, which would keep every Service's managedFields and
//! spec in memory), and the derived [`Catalog`] is published on a `tokio::sync::watch`
//! channel that the hub link, the Job controller and the recorder read (the recorder
//! turns the catalog's exclusions into state annotations and Events, and marks Services).
//! This module depends on no other module of the agent: everything else reads from it.
//!
//! # When a vCluster is removed
//! Only when its Service is gone. A label-selected watch reports a Service whose
//! `app=vcluster` label was removed or edited exactly as it reports a deletion, so every
//! reported Service that leaves the watches is confirmed with ONE GET by name: a 404, or
//! a Service of that name with another UID, is a deletion (the catalog drops it and the
//! link sends `Remove`); the same UID still there is a vCluster that lost its label
//! (reported as excluded). Until the GET answers (retried with backoff on errors) it
//! stays reported as last seen. Headless companions and Services never reported need no
//! GET.
//!
//! To keep seeing a Service after it lost the label (so its later deletion is still a
//! `Remove`), the recorder puts the label `vclink.io/tracked=<its own UID>` on every
//! Service the agent reports, once, and a second watch selects
//! `vclink.io/tracked,app!=vcluster`: the two watches are disjoint, there is no
//! per-Service watch or poll, and an idle agent makes no request. A mark whose value is
//! not the Service's own UID (a copied manifest) does not count.
//!
//! Across an agent restart the mark is the memory: a Service that lost `app=vcluster`
//! while the agent was down is listed by the second watch and reported excluded, and one
//! in a namespace that left the selector is reported excluded when it carries the mark
//! (a Service vclink never reported there stays unreported). A Service deleted while the
//! agent was down is simply absent from the first snapshot (the hub's snapshot rule
//! applies). A Service that lost both the label and the mark while the agent was down
//! looks deleted to it. At most [`inventory::MAX_TRACKED_UNLABELLED`] unlabelled
//! Services are reported.

pub(crate) mod exclusion;
pub(crate) mod inventory;
pub(crate) mod model;
pub(crate) mod selector;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{BoxStream, FuturesUnordered};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota, Service};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use vclink_proto::keys;

pub use inventory::Catalog;
pub(crate) use inventory::{Confirmation, Feed, Inventory, ServiceFacts, Vanished};
pub(crate) use model::{QuotaFacts, TrackedService};
pub(crate) use selector::LabelSelector;

/// Receiver side of the published catalog.
pub type CatalogRx = watch::Receiver<Arc<Catalog>>;

/// Most confirming GETs in flight at once (a namespace deletion can vanish many).
const CONFIRM_CONCURRENCY: usize = 4;

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

fn service_watch(
    client: &Client,
    selector: &str,
) -> BoxStream<'static, Result<Event<Service>, String>> {
    let services: Api<Service> = Api::all(client.clone());
    watcher::watcher(services, watcher::Config::default().labels(selector))
        .default_backoff()
        .map_err(|e| crate::error_line(&e))
        .boxed()
}

type Confirmed = (Vanished, Duration, Result<Confirmation, kube::Error>);

/// One GET by name for a vanished Service, after `delay` (a retry's backoff).
async fn confirm(client: Client, v: Vanished, delay: Duration) -> Confirmed {
    tokio::time::sleep(delay).await;
    let api: Api<Service> = Api::namespaced(client, &v.namespace);
    let r = api.get_opt(&v.name).await.map(|found| {
        match found.as_ref().and_then(TrackedService::from_service) {
            Some(t) => Confirmation::Found(Box::new(t)),
            None => Confirmation::NotFound,
        }
    });
    (v, delay, r)
}

/// Runs the watches until `cancel` fires, publishing every catalog change on `tx`.
pub(crate) async fn run(
    client: Client,
    namespace_selector: Option<String>,
    tx: watch::Sender<Arc<Catalog>>,
    cancel: CancellationToken,
) {
    let selector = match namespace_selector.as_deref().map(LabelSelector::parse) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            // Checked at start-up; should it still fail, select nothing (never delete).
            error!(error = %e, "cannot evaluate --namespace-selector; no namespace is selected");
            LabelSelector::parse("vclink.io/unparsable-namespace-selector").ok()
        }
    };
    let mut labelled = service_watch(&client, keys::SERVICE_SELECTOR);
    let mut tracked = service_watch(&client, keys::TRACKED_UNLABELLED_SELECTOR);
    // Metadata-only: the agent needs a namespace's labels and annotations, never its spec.
    let namespaces: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
    let mut ns_stream = watcher::watcher(namespaces, watcher::Config::default())
        .default_backoff()
        .map_err(|e| crate::error_line(&e))
        .boxed();

    // Cluster-wide like the Service watches; each object is reduced to QuotaFacts at once.
    let quotas: Api<ResourceQuota> = Api::all(client.clone());
    let mut quota_stream = watcher::watcher(quotas, watcher::Config::default())
        .default_backoff()
        .map_err(|e| crate::error_line(&e))
        .boxed();

    let mut inv = Inventory::new(selector);
    let mut waiting: VecDeque<(Vanished, Duration)> = VecDeque::new();
    let mut in_flight = FuturesUnordered::new();
    loop {
        while in_flight.len() < CONFIRM_CONCURRENCY
            && let Some((v, delay)) = waiting.pop_front()
        {
            in_flight.push(confirm(client.clone(), v, delay));
        }
        let mut vanished = Vec::new();
        let changed = tokio::select! {
            _ = cancel.cancelled() => return,
            ev = labelled.next() => match ev {
                None => return,
                Some(Err(e)) => { warn!(error = %e, "watching vCluster Services failed; retrying with backoff"); false }
                Some(Ok(ev)) => apply_service_event(&mut inv, Feed::Labelled, ev, &mut vanished),
            },
            ev = tracked.next() => match ev {
                None => return,
                Some(Err(e)) => { warn!(error = %e, "watching tracked Services failed; retrying with backoff"); false }
                Some(Ok(ev)) => apply_service_event(&mut inv, Feed::Tracked, ev, &mut vanished),
            },
            ev = ns_stream.next() => match ev {
                None => return,
                Some(Err(e)) => { warn!(error = %e, "watching Namespaces failed; retrying with backoff"); false }
                Some(Ok(ev)) => apply_namespace_event(&mut inv, ev),
            },
            ev = quota_stream.next() => match ev {
                None => return,
                Some(Err(e)) => {
                    warn!(error = %e, "watching ResourceQuotas failed; vClusters are reported without their quotas until it works, retrying with backoff");
                    inv.quotas_failed()
                }
                Some(Ok(ev)) => apply_quota_event(&mut inv, ev),
            },
            Some((v, delay, r)) = in_flight.next(), if !in_flight.is_empty() => match r {
                Ok(found) => {
                    let gone = !matches!(&found, Confirmation::Found(t) if t.uid == v.uid);
                    info!(namespace = %v.namespace, name = %v.name, deleted = gone, "confirmed a vCluster Service that left the watches");
                    inv.confirmed(&v.uid, found);
                    true
                }
                Err(e) => {
                    let next = (delay * 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
                    warn!(namespace = %v.namespace, name = %v.name, error = %e, "cannot confirm whether a vCluster Service was deleted; it stays reported, retrying");
                    if inv.is_pending(&v.uid) {
                        waiting.push_back((v, next));
                    }
                    false
                }
            },
        };
        waiting.extend(vanished.into_iter().map(|v| (v, Duration::ZERO)));
        if !changed {
            continue;
        }
        let catalog = inv.catalog();
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

/// Folds one Service event of `feed` in, collecting Services to confirm; returns whether
/// the catalog may have changed. The tracked feed ignores Services whose mark is not
/// their own UID.
fn apply_service_event(
    inv: &mut Inventory,
    feed: Feed,
    ev: Event<Service>,
    vanished: &mut Vec<Vanished>,
) -> bool {
    let usable = |s: &Service| {
        TrackedService::from_service(s).filter(|t| feed == Feed::Labelled || t.marked)
    };
    match ev {
        Event::Init => {
            inv.services_init(feed);
            false
        }
        Event::InitApply(s) => {
            if let Some(t) = usable(&s) {
                inv.services_init_apply(feed, t);
            }
            false
        }
        Event::InitDone => {
            vanished.extend(inv.services_init_done(feed));
            true
        }
        Event::Apply(s) => {
            match usable(&s) {
                Some(t) => vanished.extend(inv.service_applied(feed, t)),
                None => {
                    debug!(name = %s.name_any(), "ignoring a Service without name, namespace, UID or a valid mark");
                    vanished.extend(inv.service_deleted(
                        feed,
                        &s.namespace().unwrap_or_default(),
                        &s.name_any(),
                    ));
                }
            }
            true
        }
        Event::Delete(s) => {
            vanished.extend(inv.service_deleted(
                feed,
                &s.namespace().unwrap_or_default(),
                &s.name_any(),
            ));
            true
        }
    }
}

/// Folds one Namespace (metadata) event in.
fn apply_namespace_event<K: ResourceExt>(inv: &mut Inventory, ev: Event<K>) -> bool {
    let labels = |n: &K| -> BTreeMap<String, String> { n.labels().clone() };
    match ev {
        Event::Init => {
            inv.namespaces_init();
            false
        }
        Event::InitApply(n) => {
            inv.namespaces_init_apply(n.name_any(), project_of(&n), &labels(&n));
            false
        }
        Event::InitDone => {
            inv.namespaces_init_done();
            true
        }
        Event::Apply(n) => {
            inv.namespace_applied(n.name_any(), project_of(&n), &labels(&n));
            true
        }
        Event::Delete(n) => {
            inv.namespace_deleted(&n.name_any());
            true
        }
    }
}

/// Folds one ResourceQuota event in; returns whether the catalog may have changed (not
/// for a quota whose name and `spec.hard` stayed the same: its status changes often).
/// A quota that cannot be reported is logged when it changes, not at every status update.
fn apply_quota_event(inv: &mut Inventory, ev: Event<ResourceQuota>) -> bool {
    let refused = |f: &QuotaFacts| {
        if let Some(why) = &f.refused {
            warn!(namespace = %f.namespace, name = %f.name, reason = %why,
                "a vCluster's ResourceQuota cannot be reported; its vCluster is reported without it");
        }
    };
    match ev {
        Event::Init => {
            inv.quotas_init();
            false
        }
        Event::InitApply(q) => {
            if let Some(f) = QuotaFacts::from_quota(&q) {
                refused(&f);
                inv.quotas_init_apply(f);
            }
            false
        }
        Event::InitDone => {
            inv.quotas_init_done();
            true
        }
        Event::Apply(q) => {
            let Some(f) = QuotaFacts::from_quota(&q) else {
                return false;
            };
            let changed = inv.quota_applied(f.clone());
            if changed {
                refused(&f);
            }
            changed
        }
        Event::Delete(q) => inv.quota_deleted(&q.namespace().unwrap_or_default(), &q.name_any()),
    }
}
