//! The hub's shared state: the Rancher index and the live agent streams (one per host
//! cluster), behind one mutex that is never held across an await. Agent messages
//! ([`Hub::apply`]), Rancher watch events (the controller's feed) and the hub's own
//! writes ([`Hub::record_written`]) change it here and enqueue the affected vCluster
//! keys; the workers of the provisioning-cluster controller and of owner sync read it.
//! It depends on neither of them.
//!
//! Two kinds of per-vCluster memory live here: the stream's ([`HostState`]: what was
//! reported, which vClusters are refused, what was sent) is lost with the stream on
//! purpose; the deletion timers ([`World::timers`], keyed by [`VcKey`]) are the hub's and
//! survive the host's stream reconnecting, so a stream that drops every few seconds does
//! not restart the removal grace.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use vclink_proto::v1::{HubMessage, State, TlsMode, VCluster, registration_progress::Phase};

use crate::config::RegistrationTlsMode;
use crate::core::backoff::Backoff;
use crate::core::decide::{PerVc, Timers};
use crate::core::index::{Index, ProvCluster, Settings, VcKey};
use crate::core::scope::{Admission, HostOptIn, Limits};
use crate::core::session::{Effect, Reject};
use crate::metrics::Metrics;
use crate::queue::Queue;

/// How long a change waits before the mirror looks at its vCluster: changes within it
/// become one decision, and at most one write, with the latest values.
pub(crate) const MIRROR_COALESCE: Duration = Duration::from_millis(500);

/// What goes out on an agent stream.
pub type Outbound = Result<HubMessage, Status>;

/// A live agent stream and what it reported.
#[derive(Debug)]
pub struct HostState {
    /// Distinguishes this stream from an older or newer one of the same host.
    pub(crate) stream_id: u64,
    tx: mpsc::Sender<Outbound>,
    cancel: CancellationToken,
    /// The reported set, by Service UID.
    pub(crate) reported: HashMap<String, VCluster>,
    /// The reported set by (namespace, name) → Service UID: finds a reinstall.
    pub(crate) by_name: HashMap<(String, String), String>,
    /// Which reported vClusters count toward the limits and which are refused.
    pub(crate) admission: Admission,
    /// A complete snapshot arrived.
    pub(crate) snapshot_complete: bool,
    /// Per-vCluster stream memory.
    pub(crate) per_vc: HashMap<String, PerVc>,
}

/// Index plus hosts.
#[derive(Debug, Default)]
pub struct World {
    /// Rancher objects.
    pub(crate) index: Index,
    /// Live streams by host cluster id.
    pub hosts: HashMap<String, HostState>,
    /// The deletion timers, by vCluster (not by stream; see the module docs).
    pub(crate) timers: HashMap<VcKey, Timers>,
    /// Projects' display names, for display-name entries of
    /// --fleet-workspace-for-project (empty without such entries).
    pub(crate) project_names: crate::core::workspace::ProjectNames,
}

/// Fixed settings reconcile and sessions need.
#[derive(Clone, Debug)]
pub(crate) struct HubConfig {
    /// --fleet-workspace: the default workspace of new provisioning clusters.
    pub(crate) workspace: String,
    /// --fleet-workspace-for-project over that default (`core::workspace`).
    pub(crate) workspaces: crate::core::workspace::Workspaces,
    /// --create-fleet-workspaces.
    pub(crate) create_workspaces: bool,
    /// --removal-grace.
    pub(crate) grace: Duration,
    /// --heartbeat-seconds.
    pub(crate) heartbeat_seconds: u32,
    /// --max-vclusters-per-agent.
    pub(crate) max_vclusters: usize,
    /// --max-vclusters-per-namespace.
    pub(crate) max_per_namespace: usize,
    /// Which hosts may be served (--host-selector, --allow-nested-hosts).
    pub(crate) hosts: HostOptIn,
    /// --registration-tls-mode.
    pub(crate) tls_mode: RegistrationTlsMode,
    /// The key of the hub's proofs on the clusters it made (`core::proof`).
    pub(crate) proof_key: Arc<crate::core::proof::ProofKey>,
    /// The Service labels the mirror may sync (--rancher-mirror with
    /// --sync-labels-include/-exclude); `None` without the mirror. A report keeps only
    /// these: nothing else in the hub reads labels, and at 50,000 vClusters the Helm
    /// labels every vCluster Service carries would be tens of MiB held for nothing.
    pub(crate) synced_labels: Option<crate::core::labels::LabelPolicy>,
}

impl HubConfig {
    /// `v` as the hub keeps it: only the labels the mirror may sync.
    pub(crate) fn kept(&self, mut v: VCluster) -> VCluster {
        match &self.synced_labels {
            Some(p) if !p.is_off() => v.labels.retain(|k, _| p.allows(k)),
            _ => v.labels.clear(),
        }
        v
    }
}

/// Everything shared between gRPC sessions, watches and reconcile workers.
pub struct Hub {
    world: Mutex<World>,
    /// Reconcile queue.
    pub(crate) queue: Arc<Queue>,
    /// Metrics.
    pub metrics: Metrics,
    /// Settings.
    pub(crate) cfg: HubConfig,
    ready: AtomicBool,
    next_stream: AtomicU64,
    /// The owner-sync queue, when owner sync runs (owner sync).
    owners: std::sync::OnceLock<Arc<Queue>>,
    /// The mirror's queue, when the mirror runs (`crate::mirror`).
    mirror: std::sync::OnceLock<Arc<Queue>>,
}

impl Hub {
    /// A hub with an empty world.
    pub(crate) fn new(cfg: HubConfig, queue: Arc<Queue>) -> Self {
        Self {
            world: Mutex::default(),
            queue,
            metrics: Metrics::new(),
            cfg,
            ready: AtomicBool::new(false),
            next_stream: AtomicU64::new(1),
            owners: std::sync::OnceLock::new(),
            mirror: std::sync::OnceLock::new(),
        }
    }

    /// Locks the world (recovering from a poisoned lock: the state stays usable).
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connects the owner-sync queue (once).
    pub(crate) fn set_owner_queue(&self, q: Arc<Queue>) {
        let _ = self.owners.set(q);
    }

    /// Tells owner sync that something about `key` changed.
    pub(crate) fn notify_owners(&self, key: &VcKey) {
        if let Some(q) = self.owners.get() {
            q.add(key.clone());
        }
    }

    /// Connects the mirror's queue (once).
    pub(crate) fn set_mirror_queue(&self, q: Arc<Queue>) {
        let _ = self.mirror.set(q);
    }

    /// Tells the mirror that `key`'s report, state or cluster may have changed; changes
    /// within [`MIRROR_COALESCE`] become one decision.
    pub(crate) fn notify_mirror(&self, key: &VcKey) {
        if let Some(q) = self.mirror.get() {
            q.add_at(key.clone(), Instant::now() + MIRROR_COALESCE);
        }
    }

    /// True once every watch delivered its initial list.
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Marks the hub ready.
    pub(crate) fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Registers a new stream of `host`, closing an older one. Returns its id.
    pub(crate) fn attach(
        &self,
        host: &str,
        tx: mpsc::Sender<Outbound>,
        cancel: CancellationToken,
    ) -> u64 {
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let state = HostState {
            stream_id: id,
            tx,
            cancel,
            reported: HashMap::new(),
            by_name: HashMap::new(),
            admission: Admission::new(Limits {
                per_agent: self.cfg.max_vclusters,
                per_namespace: self.cfg.max_per_namespace,
            }),
            snapshot_complete: false,
            per_vc: HashMap::new(),
        };
        let old = self.world().hosts.insert(host.to_string(), state);
        match old {
            Some(old) => {
                tracing::info!(host, "a newer stream replaces the previous one");
                old.cancel.cancel();
            }
            None => {
                self.metrics.agents_connected.inc();
            }
        }
        id
    }

    /// Forgets a stream when it ends (unless a newer one already replaced it). Nothing
    /// is deleted: a disconnect is no proof.
    pub(crate) fn detach(&self, host: &str, stream_id: u64) {
        let mut w = self.world();
        if w.hosts.get(host).is_some_and(|h| h.stream_id == stream_id) {
            w.hosts.remove(host);
            self.metrics.agents_connected.dec();
        }
    }

    /// Whether the agent of `host` may be served (host opt-in, see
    /// [`HostOptIn`]); the error is PERMISSION_DENIED naming the missing label.
    pub fn check_host(&self, host: &str) -> Result<(), Status> {
        let w = self.world();
        let is_vcluster = w.index.key_for_mgmt(host).is_some();
        match self
            .cfg
            .hosts
            .refusal(host, w.index.mgmt(host), is_vcluster)
        {
            None => Ok(()),
            Some(message) => {
                drop(w);
                self.metrics.reject("host_not_opted_in");
                tracing::warn!(host, reason = %message, "agent refused: host not opted in");
                Err(Status::permission_denied(message))
            }
        }
    }

    /// Closes the live streams of those of `hosts` that are no longer opted in (their
    /// management cluster lost the label, or is gone).
    pub(crate) fn close_not_opted_in<'a>(&self, hosts: impl IntoIterator<Item = &'a str>) {
        let w = self.world();
        for host in hosts {
            let Some(h) = w.hosts.get(host) else {
                continue;
            };
            let is_vcluster = w.index.key_for_mgmt(host).is_some();
            if let Some(message) = self
                .cfg
                .hosts
                .refusal(host, w.index.mgmt(host), is_vcluster)
            {
                self.metrics.reject("host_not_opted_in");
                tracing::warn!(host, reason = %message, "closing the stream of a host that is no longer opted in");
                let _ = h.tx.try_send(Err(Status::permission_denied(message)));
                h.cancel.cancel();
            }
        }
    }

    /// Capacity of a stream's outbound queue: after a snapshot every reported vCluster
    /// gets a Status, and those to import (at most the per-agent limit) a Register too.
    pub(crate) fn outbound_capacity(&self) -> usize {
        crate::core::session::reported_cap(self.cfg.max_vclusters)
            .saturating_add(self.cfg.max_vclusters)
            .saturating_add(64)
    }

    /// Hosts with a live stream.
    pub(crate) fn live_hosts(&self) -> Vec<String> {
        self.world().hosts.keys().cloned().collect()
    }

    /// Applies an accepted message of the stream `stream_id` of `host`. Cost: O(1) for
    /// `Upsert`, `Progress` and `Remove` (plus O(refused) when a `Remove` frees a slot
    /// under a limit), O(n) for a snapshot of n vClusters; see [`crate::core::scope`].
    pub(crate) fn apply(&self, host: &str, stream_id: u64, effect: Effect) -> Result<(), Reject> {
        let now = Instant::now();
        let mut w = self.world();
        let World {
            index,
            hosts,
            timers,
            ..
        } = &mut *w;
        let Some(h) = hosts.get_mut(host).filter(|h| h.stream_id == stream_id) else {
            return Ok(()); // replaced meanwhile; the stream is being closed
        };
        // Scope: only this host's vClusters; checked before anything changes.
        crate::core::scope::check(index, host, &effect)?;
        let key = |uid: &str| VcKey::new(host, uid);
        match effect {
            Effect::Snapshot(vcs) => {
                let mut keys: Vec<VcKey> = h.reported.keys().map(|u| key(u)).collect();
                for reason in h.admission.admit_all(index, host, &vcs) {
                    self.metrics.refuse_vcluster(reason);
                }
                h.by_name = vcs
                    .iter()
                    .map(|v| ((v.namespace.clone(), v.name.clone()), v.uid.clone()))
                    .collect();
                h.reported = vcs
                    .into_iter()
                    .map(|v| (v.uid.clone(), self.cfg.kept(v)))
                    .collect();
                h.snapshot_complete = true;
                // A full Status for every vCluster after each snapshot.
                for pv in h.per_vc.values_mut() {
                    pv.last_status = None;
                    pv.forgotten = false;
                }
                keys.extend(h.reported.keys().map(|u| key(u)));
                keys.extend(index.uids_of_host(host).map(|u| key(u)));
                tracing::debug!(
                    host,
                    vclusters = h.reported.len(),
                    to_import = h.admission.counted(),
                    keys = keys.len(),
                    "snapshot complete"
                );
                drop(w);
                self.queue.add_all(keys);
            }
            Effect::Upsert(v) => {
                let k = key(&v.uid);
                if let Some(reason) = h.admission.admit(index, host, &v) {
                    self.metrics.refuse_vcluster(reason);
                }
                // A reinstall (same namespace and name, new UID): the old key decides
                // again too (its cluster is not deleted while this one may reclaim it).
                let mut keys = vec![k];
                let place = (v.namespace.clone(), v.name.clone());
                if let Some(old) = h.by_name.insert(place, v.uid.clone())
                    && old != v.uid
                {
                    keys.push(key(&old));
                }
                h.reported.insert(v.uid.clone(), self.cfg.kept(v));
                drop(w);
                self.queue.add_all(keys);
            }
            Effect::Remove(uid) => {
                let mut keys = vec![key(&uid)];
                if let Some(v) = h.reported.remove(&uid) {
                    let place = (v.namespace, v.name);
                    if h.by_name.get(&place) == Some(&uid) {
                        h.by_name.remove(&place);
                    }
                }
                let counted = h.admission.counted();
                h.admission.forget(&uid);
                if h.admission.counted() < counted {
                    // A slot under a limit is free: admit who was refused for one.
                    for u in h.admission.refused_for_limit() {
                        if let Some(v) = h.reported.get(&u) {
                            h.admission.admit(index, host, v);
                            if h.admission.refusal(&u).is_none() {
                                keys.push(key(&u));
                            }
                        }
                    }
                }
                // The removal timer is the hub's: a repeated Remove does not restart it.
                timers
                    .entry(key(&uid))
                    .or_default()
                    .removed
                    .get_or_insert(now);
                drop(w);
                self.queue.add_all(keys);
            }
            Effect::Progress(p) => {
                let pv = h.per_vc.entry(p.uid.clone()).or_default();
                match Phase::try_from(p.phase).unwrap_or(Phase::Unspecified) {
                    Phase::Failed => {
                        pv.failures = pv.failures.saturating_add(1);
                        pv.failure = Some((
                            p.message.clone(),
                            now + Backoff::RECONCILE.delay(pv.failures),
                        ));
                        tracing::warn!(host, uid = %p.uid, reason = ?p.message, "registration failed in the agent");
                    }
                    Phase::Succeeded => {
                        pv.failure = None;
                        pv.failures = 0;
                    }
                    Phase::JobCreated | Phase::Unspecified => {}
                }
                drop(w);
                self.queue.add(key(&p.uid));
            }
        }
        Ok(())
    }

    /// Records a provisioning cluster the hub itself just wrote (the API server's
    /// response), so the next decision sees it before its watch event arrives, and
    /// queues the vClusters it affects.
    pub(crate) fn record_written(&self, p: ProvCluster) {
        let keys = self.world().index.apply_prov_written(p);
        self.queue.add_all(keys);
    }

    /// Sends on a host's stream without waiting; a full channel closes the stream (the
    /// agent reconnects and re-snapshots) rather than blocking the hub.
    pub(crate) fn send(&self, host: &mut HostState, msg: HubMessage) -> bool {
        match host.tx.try_send(Ok(msg)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.reject("outbound_full");
                tracing::warn!(
                    stream = host.stream_id,
                    "outbound queue full; closing the stream"
                );
                host.cancel.cancel();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// TLS mode and CA for Register, from the flag or Rancher's settings.
    pub(crate) fn registration_tls(&self, settings: &Settings) -> (TlsMode, String) {
        registration_tls(self.cfg.tls_mode, settings)
    }

    /// Recomputes the `vclusters{state}` gauges (at scrape time).
    pub(crate) fn refresh_gauges(&self) {
        let mut counts: HashMap<&'static str, i64> = HashMap::new();
        {
            let w = self.world();
            for h in w.hosts.values() {
                for uid in h.reported.keys() {
                    let state = h
                        .per_vc
                        .get(uid)
                        .and_then(|p| p.last_status.as_ref())
                        .map(|s| s.0);
                    *counts.entry(state_label(state)).or_default() += 1;
                }
            }
        }
        for s in [
            "unknown",
            "pending",
            "registering",
            "connected",
            "disconnected",
            "error",
            "excluded",
        ] {
            self.metrics
                .vclusters
                .get_or_create(&[("state", s)])
                .set(counts.get(s).copied().unwrap_or(0));
        }
    }
}

fn state_label(s: Option<State>) -> &'static str {
    match s {
        Some(State::Pending) => "pending",
        Some(State::Registering) => "registering",
        Some(State::Connected) => "connected",
        Some(State::Disconnected) => "disconnected",
        Some(State::Error) => "error",
        Some(State::Excluded) => "excluded",
        Some(State::Unspecified) | None => "unknown",
    }
}

/// TLS mode and CA bundle the agents get: the flag wins unless it is `auto`; `auto`
/// follows `agent-tls-mode` (default `strict`, as on new installs since 2.9).
pub(crate) fn registration_tls(mode: RegistrationTlsMode, s: &Settings) -> (TlsMode, String) {
    let strict = (TlsMode::Strict, s.cacerts.clone());
    match mode {
        RegistrationTlsMode::Strict => strict,
        RegistrationTlsMode::SystemStore => (TlsMode::SystemStore, String::new()),
        RegistrationTlsMode::Insecure => (TlsMode::Insecure, String::new()),
        RegistrationTlsMode::Auto => match s.agent_tls_mode.as_deref() {
            Some("system-store") => (TlsMode::SystemStore, String::new()),
            _ => strict,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::index::{Conn, MgmtCluster};
    use crate::testing::TestHub;

    const HOST: &str = "c-m-host0001";

    fn vc(n: u32, ns: &str) -> VCluster {
        VCluster {
            uid: format!("00000000-0000-4000-8000-{n:012x}"),
            namespace: ns.into(),
            name: format!("vc{n}"),
            ..Default::default()
        }
    }

    fn attach(hub: &Hub) -> (u64, mpsc::Receiver<Outbound>, CancellationToken) {
        let (tx, rx) = mpsc::channel(64);
        let cancel = CancellationToken::new();
        (hub.attach(HOST, tx, cancel.clone()), rx, cancel)
    }

    #[test]
    fn the_removal_timer_survives_a_reconnect_and_a_repeated_remove() {
        let hub = TestHub::default().build();
        let (id, _rx, _c) = attach(&hub);
        let v = vc(1, "ns");
        hub.apply(HOST, id, Effect::Upsert(v.clone())).unwrap();
        hub.apply(HOST, id, Effect::Remove(v.uid.clone())).unwrap();
        let key = VcKey::new(HOST, &v.uid);
        let started = hub.world().timers[&key].removed.expect("started");
        // The stream drops and comes back; the agent says Remove again.
        hub.detach(HOST, id);
        let (id, _rx2, _c2) = attach(&hub);
        hub.apply(HOST, id, Effect::Remove(v.uid.clone())).unwrap();
        assert_eq!(hub.world().timers[&key].removed, Some(started));
    }

    #[test]
    fn a_report_keeps_only_the_labels_the_mirror_syncs() {
        let labelled = |n| VCluster {
            labels: [("team", "a"), ("heritage", "Helm"), ("app", "vcluster")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
            ..vc(n, "ns")
        };
        let kept = |hub: &Hub, uid: &str| -> Vec<String> {
            hub.world().hosts[HOST].reported[uid]
                .labels
                .keys()
                .cloned()
                .collect()
        };
        let policy = crate::core::labels::LabelPolicy::new(&["team".into()], &[]).expect("valid");
        let hub = TestHub::default().synced_labels(policy).build();
        let (id, _rx, _c) = attach(&hub);
        let (a, b) = (labelled(1), labelled(2));
        hub.apply(HOST, id, Effect::Snapshot(vec![a.clone()]))
            .unwrap();
        hub.apply(HOST, id, Effect::Upsert(b.clone())).unwrap();
        assert_eq!(kept(&hub, &a.uid), ["team"]);
        assert_eq!(kept(&hub, &b.uid), ["team"]);
        // Without the mirror no label is kept at all.
        let hub = TestHub::default().build();
        let (id, _rx, _c) = attach(&hub);
        hub.apply(HOST, id, Effect::Upsert(b.clone())).unwrap();
        assert!(kept(&hub, &b.uid).is_empty());
    }

    #[test]
    fn a_refused_vcluster_keeps_the_stream_and_a_freed_slot_admits_it() {
        let hub = TestHub::default().max_vclusters(1).build();
        let (id, _rx, cancel) = attach(&hub);
        let (a, b) = (vc(1, "ns"), vc(2, "ns"));
        hub.apply(HOST, id, Effect::Snapshot(vec![a.clone(), b.clone()]))
            .expect("over the limit is no protocol violation");
        assert!(!cancel.is_cancelled());
        {
            let w = hub.world();
            let h = &w.hosts[HOST];
            assert_eq!(h.reported.len(), 2, "reported but refused");
            assert!(h.admission.refusal(&b.uid).is_some());
        }
        assert!(
            hub.metrics
                .encode()
                .contains("vclink_hub_vcluster_refusals_total{reason=\"over_agent_limit\"} 1")
        );
        hub.apply(HOST, id, Effect::Remove(a.uid.clone())).unwrap();
        assert!(hub.world().hosts[HOST].admission.refusal(&b.uid).is_none());
    }

    #[test]
    fn hosts_must_be_opted_in_and_lose_their_stream_with_the_label() {
        let hub = TestHub::default()
            .host_selector("vclink.io/agent=enabled", false)
            .build();
        let e = hub.check_host(HOST).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("vclink.io/agent=enabled"), "{e:?}");
        let mgmt = |host_opt_in| MgmtCluster {
            id: HOST.into(),
            conn: Conn::Connected,
            host_opt_in,
            nested_opt_in: false,
            display_name: None,
        };
        hub.world().index.apply_mgmt(mgmt(true));
        hub.check_host(HOST).expect("opted in");
        let (_id, mut rx, cancel) = attach(&hub);
        hub.close_not_opted_in([HOST]);
        assert!(!cancel.is_cancelled(), "still opted in");
        hub.world().index.apply_mgmt(mgmt(false));
        hub.close_not_opted_in([HOST]);
        assert!(cancel.is_cancelled());
        match rx.try_recv() {
            Ok(Err(st)) => assert_eq!(st.code(), tonic::Code::PermissionDenied),
            other => panic!("expected PERMISSION_DENIED, got {other:?}"),
        }
    }

    #[test]
    fn tls_mode_follows_rancher_settings_in_auto() {
        let s = Settings {
            agent_tls_mode: Some("strict".into()),
            cacerts: "PEM".into(),
        };
        assert_eq!(
            registration_tls(RegistrationTlsMode::Auto, &s),
            (TlsMode::Strict, "PEM".into())
        );
        let s = Settings {
            agent_tls_mode: Some("system-store".into()),
            cacerts: "PEM".into(),
        };
        assert_eq!(
            registration_tls(RegistrationTlsMode::Auto, &s),
            (TlsMode::SystemStore, String::new())
        );
        assert_eq!(
            registration_tls(RegistrationTlsMode::Auto, &Settings::default()).0,
            TlsMode::Strict
        );
        assert_eq!(
            registration_tls(RegistrationTlsMode::Insecure, &s).0,
            TlsMode::Insecure
        );
    }
}
