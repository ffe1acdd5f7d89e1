//! Recording where a vCluster stands on its own Service, so its owner sees it without
//! reading logs: the `vclink.io/` state annotations (written with a JSON merge patch that
//! touches only those keys, field manager `vclink-agent`) and one Kubernetes Event per
//! transition. [`plan`] decides (pure, unit-tested); [`Writer`] performs the writes from a
//! latest-wins queue (one op per vCluster and [`RecordSlot`], so a vCluster's repeated
//! Status costs one write however often the hub sends it), rate-limited, and writes
//! nothing when nothing changed. The writer reads
//! a Service's current annotations from the published catalog; the watch sends it
//! nothing, so the dependency runs one way (`record` → `watch`). From the catalog the
//! writer also derives, on every change, the exclusion state of each vCluster and the
//! agent's mark on each reported Service ([`announce`]).

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

pub(crate) mod announce;
pub(crate) mod guard;
pub(crate) mod ops;
pub(crate) mod plan;

pub use ops::RecordOp;
pub(crate) use ops::clean_text;
use ops::truncate;
pub(crate) use plan::{now_rfc3339, plan};

use crate::latest;
use crate::ratelimit::RateLimiter;
use crate::watch::CatalogRx;

/// Which record ops of one vCluster replace each other while they wait: the newest of a
/// kind wins, ops of different kinds all get written (in the order their newest values
/// came). A Job's start and its outcome are separate so the Job UID recorded at the start
/// (how a restarted agent recognises its Job) is not lost when the outcome follows fast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordSlot {
    /// The hub's Rancher-side state.
    Status,
    /// The Rancher cluster was deleted.
    Forget,
    /// A registration Job was created.
    JobStarted,
    /// A registration Job finished (or could not be created).
    JobFinished,
    /// A Register was refused.
    Refused,
    /// Excluded or included again.
    Exclusion,
    /// The agent's mark.
    Mark,
    /// The hub's warning.
    Warning,
}

impl latest::Coalesce for RecordOp {
    type Slot = RecordSlot;
    fn uid(&self) -> &str {
        RecordOp::uid(self)
    }
    fn slot(&self) -> RecordSlot {
        use vclink_proto::v1::registration_progress::Phase;
        match self {
            RecordOp::Status { .. } => RecordSlot::Status,
            RecordOp::Forget { .. } => RecordSlot::Forget,
            RecordOp::Progress {
                phase: Phase::JobCreated,
                ..
            } => RecordSlot::JobStarted,
            RecordOp::Progress { .. } => RecordSlot::JobFinished,
            RecordOp::RegisterRefused { .. } => RecordSlot::Refused,
            RecordOp::Excluded { .. } | RecordOp::Included { .. } => RecordSlot::Exclusion,
            RecordOp::Mark { .. } => RecordSlot::Mark,
            RecordOp::Warning { .. } => RecordSlot::Warning,
        }
    }
}

/// A unique Event name for Service `service`: its name, a dot, and 16 hex digits from the
/// clock and a counter (unique within this process; across agents, the clock).
pub(crate) fn event_name(service: &str) -> String {
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
pub(crate) const FIELD_MANAGER: &str = "vclink-agent";

/// What the agent wrote last for a Service, valid while the watch still shows `seen`.
struct Overlay {
    seen: BTreeMap<String, String>,
    written: BTreeMap<String, String>,
}

/// Performs [`RecordOp`]s from a latest-wins queue.
pub(crate) struct Writer {
    client: Client,
    instance: String,
    catalog: CatalogRx,
    limiter: RateLimiter,
    overlays: HashMap<String, Overlay>,
    /// The state of the hub's last Status per Service UID (see [`plan`]); entries go
    /// with the Service.
    hub_states: HashMap<String, vclink_proto::v1::State>,
    /// Exclusions and marks derived from the catalog so far.
    announced: announce::Announced,
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
            hub_states: HashMap::new(),
            announced: announce::Announced::default(),
        }
    }

    /// Processes ops until the queue closes or `cancel` fires, and the ops derived from
    /// every catalog change.
    pub async fn run(mut self, mut rx: latest::Receiver<RecordOp>, cancel: CancellationToken) {
        let mut catalog = self.catalog.clone();
        // Until the watch task stops (then the queued ops still get recorded).
        let mut watching = true;
        loop {
            let ops = tokio::select! {
                _ = cancel.cancelled() => return,
                op = rx.recv() => match op { Some(op) => vec![op], None => return },
                changed = catalog.changed(), if watching => match changed {
                    Ok(()) => {
                        let current = catalog.borrow_and_update().clone();
                        // What is kept per Service goes with it (the announce pass
                        // below walks the catalog anyway).
                        self.hub_states.retain(|uid, _| current.services.contains_key(uid));
                        // An overlay ends once the watch shows anything but what it
                        // was planned against (usually our own write): kept longer, it
                        // would hold two annotation maps per Service for nothing.
                        self.overlays.retain(|uid, o| {
                            current.services.get(uid).is_some_and(|f| f.annotations == o.seen)
                        });
                        announce::catalog_ops(&current, &mut self.announced)
                    }
                    Err(_) => {
                        watching = false;
                        Vec::new()
                    }
                },
            };
            for op in ops {
                self.handle(op).await;
            }
        }
    }

    async fn handle(&mut self, op: RecordOp) {
        let uid = op.uid().to_string();
        let (namespace, name, seen) = {
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
        };
        // Until the watch shows our previous write, plan against what we wrote.
        let current = match self.overlays.get(&uid) {
            Some(o) if o.seen == seen => o.written.clone(),
            _ => {
                self.overlays.remove(&uid);
                seen.clone()
            }
        };
        if let RecordOp::Status { state, .. } = &op {
            self.hub_states.insert(uid.clone(), *state);
        }
        let plan = plan(
            &op,
            &current,
            self.hub_states.get(&uid).copied(),
            &now_rfc3339(),
        );
        if !plan.patch.is_empty() || !plan.labels.is_empty() {
            // The UID makes the patch fail on a Service recreated under the same name.
            let body = serde_json::json!({ "metadata": {
                "uid": uid, "annotations": plan.patch, "labels": plan.labels } });
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
                    self.announced.forget(&uid);
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
