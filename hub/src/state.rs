//! The hub's shared state: the Rancher index and the live agent streams (one per host
//! cluster), behind one mutex that is never held across an await. Agent messages
//! ([`Hub::apply`]), Rancher watch events (the controller's feed) and the hub's own
//! writes ([`Hub::record_written`]) change it here and enqueue the affected vCluster
//! keys; the workers of the provisioning-cluster controller and of owner sync read it.
//! It depends on neither of them.

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
use crate::core::decide::PerVc;
use crate::core::index::{Index, ProvCluster, Settings, VcKey};
use crate::core::session::{Effect, Reject};
use crate::metrics::Metrics;
use crate::queue::Queue;

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
}

/// Fixed settings reconcile and sessions need.
#[derive(Clone, Debug)]
pub(crate) struct HubConfig {
    /// Workspace namespace of provisioning clusters.
    pub(crate) workspace: String,
    /// --removal-grace.
    pub(crate) grace: Duration,
    /// --heartbeat-seconds.
    pub(crate) heartbeat_seconds: u32,
    /// --max-vclusters-per-agent.
    pub(crate) max_vclusters: usize,
    /// --registration-tls-mode.
    pub(crate) tls_mode: RegistrationTlsMode,
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

    /// Applies an accepted message of the stream `stream_id` of `host`.
    pub(crate) fn apply(&self, host: &str, stream_id: u64, effect: Effect) -> Result<(), Reject> {
        let mut w = self.world();
        let World { index, hosts } = &mut *w;
        let Some(h) = hosts.get_mut(host).filter(|h| h.stream_id == stream_id) else {
            return Ok(()); // replaced meanwhile; the stream is being closed
        };
        // Scope: only this host's vClusters; checked before anything changes.
        crate::core::scope::check(index, host, &effect)?;
        let key = |uid: &str| VcKey::new(host, uid);
        match effect {
            Effect::Snapshot(vcs) => {
                let mut keys: Vec<VcKey> = h.reported.keys().map(|u| key(u)).collect();
                h.reported = vcs.into_iter().map(|v| (v.uid.clone(), v)).collect();
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
                    keys = keys.len(),
                    "snapshot complete"
                );
                drop(w);
                self.queue.add_all(keys);
            }
            Effect::Upsert(v) => {
                let k = key(&v.uid);
                h.reported.insert(v.uid.clone(), v);
                drop(w);
                self.queue.add(k);
            }
            Effect::Remove(uid) => {
                h.reported.remove(&uid);
                h.per_vc.entry(uid.clone()).or_default().remove_requested = true;
                drop(w);
                self.queue.add(key(&uid));
            }
            Effect::Progress(p) => {
                let pv = h.per_vc.entry(p.uid.clone()).or_default();
                match Phase::try_from(p.phase).unwrap_or(Phase::Unspecified) {
                    Phase::Failed => {
                        pv.failures = pv.failures.saturating_add(1);
                        pv.failure = Some((
                            p.message.clone(),
                            Instant::now() + Backoff::RECONCILE.delay(pv.failures),
                        ));
                        tracing::warn!(host, uid = %p.uid, reason = %p.message, "registration failed in the agent");
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
