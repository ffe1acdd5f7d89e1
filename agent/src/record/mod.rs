//! Recording where a vCluster stands on its own Service, so its owner sees it without
//! reading logs: the `vclink.io/` state annotations (written with a JSON merge patch that
//! touches only those keys, field manager `vclink-agent`) and one Kubernetes Event per
//! transition. [`plan`] decides (pure, unit-tested); [`Writer`] performs the writes from a
//! bounded queue, rate-limited, and writes nothing when nothing changed.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

pub mod plan;

use plan::truncate;
pub use plan::{EventSpec, Plan, RecordOp, clean_text, now_rfc3339, plan, state};

use crate::ratelimit::RateLimiter;
use crate::watch::CatalogRx;

/// A unique Event name for Service `service`: its name, a dot, and 16 hex digits from the
/// clock and a counter (unique within this process; across agents, the clock).
fn event_name(service: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    let n = nanos.wrapping_add(SEQ.fetch_add(1, Ordering::Relaxed));
    format!("{service}.{n:016x}")
}

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
    instance: String,
    catalog: CatalogRx,
    limiter: RateLimiter,
    overlays: HashMap<String, Overlay>,
}

impl Writer {
    /// A writer reporting Events as `vclink-agent` from `instance`.
    pub fn new(client: Client, catalog: CatalogRx, limiter: RateLimiter, instance: String) -> Self {
        Self {
            client,
            instance,
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
            // Events are written directly rather than through kube's `Recorder`: that
            // one caches every Event it published (for series aggregation) and prunes
            // only on the next publish, so an idle agent would keep them all in memory.
            // The plan already emits one Event per transition, so there is nothing to
            // aggregate.
            let event = Event {
                metadata: ObjectMeta {
                    // `<object>.<unique hex>`, as kubectl shows Events; a generateName
                    // ending in "." is refused by the API server.
                    name: Some(event_name(&name)),
                    namespace: Some(namespace.clone()),
                    ..Default::default()
                },
                event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
                type_: Some(if ev.warning { "Warning" } else { "Normal" }.into()),
                reason: Some(ev.reason.into()),
                note: Some(truncate(&ev.note, 1000)),
                action: Some("ImportIntoRancher".into()),
                reporting_controller: Some(FIELD_MANAGER.into()),
                reporting_instance: Some(self.instance.clone()),
                regarding: Some(ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Service".into()),
                    name: Some(name.clone()),
                    namespace: Some(namespace.clone()),
                    uid: Some(uid.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            };
            self.limiter.acquire().await;
            let events: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
            if let Err(e) = events.create(&PostParams::default(), &event).await {
                warn!(%namespace, %name, reason = ev.reason, error = %e, "publishing an Event failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_are_valid_and_unique() {
        let a = event_name("vc1");
        let b = event_name("vc1");
        assert_ne!(a, b);
        assert!(a.starts_with("vc1.") && a.len() == 4 + 16, "{a}");
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.')
        );
    }
}
