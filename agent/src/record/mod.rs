//! Recording where a vCluster stands on its own Service, so its owner sees it without
//! reading logs: the `vclink.io/` state annotations (written with a JSON merge patch that
//! touches only those keys, field manager `vclink-agent`) and one Kubernetes Event per
//! transition. [`plan`] decides (pure, unit-tested); [`Writer`] performs the writes from a
//! bounded queue, rate-limited, and writes nothing when nothing changed.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{ObjectReference, Service};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

pub mod plan;

use plan::truncate;
pub use plan::{EventSpec, Plan, RecordOp, clean_text, now_rfc3339, plan, state};

use crate::ratelimit::RateLimiter;
use crate::watch::CatalogRx;

/// Field manager of the agent's writes.
pub const FIELD_MANAGER: &str = "vclink-agent";

fn uid_of(op: &RecordOp) -> &str {
    match op {
        RecordOp::Status { uid, .. }
        | RecordOp::Progress { uid, .. }
        | RecordOp::Forget { uid, .. }
        | RecordOp::Refused { uid, .. } => uid,
    }
}

/// What the agent wrote last for a Service, valid while the watch still shows `seen`.
struct Overlay {
    seen: BTreeMap<String, String>,
    written: BTreeMap<String, String>,
}

/// Performs [`RecordOp`]s from a bounded queue.
pub struct Writer {
    client: Client,
    recorder: Recorder,
    catalog: CatalogRx,
    limiter: RateLimiter,
    overlays: HashMap<String, Overlay>,
}

impl Writer {
    /// A writer reporting Events as `vclink-agent` from `instance`.
    pub fn new(client: Client, catalog: CatalogRx, limiter: RateLimiter, instance: String) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some(instance),
        };
        let recorder = Recorder::new(client.clone(), reporter);
        Self {
            client,
            recorder,
            catalog,
            limiter,
            overlays: HashMap::new(),
        }
    }

    /// Processes ops until the queue closes or `cancel` fires.
    pub async fn run(mut self, mut rx: mpsc::Receiver<RecordOp>, cancel: CancellationToken) {
        loop {
            let op = tokio::select! {
                _ = cancel.cancelled() => return,
                op = rx.recv() => match op { Some(op) => op, None => return },
            };
            self.handle(op).await;
        }
    }

    async fn handle(&mut self, op: RecordOp) {
        let uid = uid_of(&op).to_string();
        let (namespace, name, seen) = match &op {
            RecordOp::Refused {
                namespace, name, ..
            } => (namespace.clone(), name.clone(), BTreeMap::new()),
            _ => {
                let catalog = self.catalog.borrow().clone();
                let Some(facts) = catalog.services.get(&uid) else {
                    debug!(%uid, "not recording: no watched vCluster Service has this UID");
                    return;
                };
                (
                    facts.namespace.clone(),
                    facts.name.clone(),
                    facts.annotations.clone(),
                )
            }
        };
        // Until the watch shows our previous write, plan against what we wrote.
        let current = match self.overlays.get(&uid) {
            Some(o) if o.seen == seen => o.written.clone(),
            _ => {
                self.overlays.remove(&uid);
                seen.clone()
            }
        };
        let plan = plan(&op, &current, &now_rfc3339());
        if !plan.patch.is_empty() {
            let body = serde_json::json!({ "metadata": { "annotations": plan.patch } });
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            self.limiter.acquire().await;
            let api: Api<Service> = Api::namespaced(self.client.clone(), &namespace);
            match api.patch(&name, &params, &Patch::Merge(&body)).await {
                Ok(_) => {
                    let mut written = current;
                    for (k, v) in &plan.patch {
                        match v {
                            Some(v) => written.insert(k.clone(), v.clone()),
                            None => written.remove(k),
                        };
                    }
                    self.overlays.insert(uid.clone(), Overlay { seen, written });
                }
                Err(e) => {
                    warn!(%namespace, %name, error = %e, "recording vCluster state on its Service failed")
                }
            }
        }
        if let Some(ev) = plan.event {
            let reference = ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Service".into()),
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                uid: Some(uid.clone()),
                ..Default::default()
            };
            let event = Event {
                type_: if ev.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: ev.reason.into(),
                note: Some(truncate(&ev.note, 1000)),
                action: "ImportIntoRancher".into(),
                secondary: None,
            };
            self.limiter.acquire().await;
            if let Err(e) = self.recorder.publish(&event, &reference).await {
                warn!(%namespace, %name, reason = ev.reason, error = %e, "publishing an Event failed");
            }
        }
    }
}
