//! Reconcile workers: take a vCluster key from the queue, gather its state under the
//! lock, ask [`decide`] what to do, send messages right there (non-blocking), and carry
//! out the Kubernetes writes (create/adopt/delete provisioning clusters, see
//! [`super::ensure`]) afterwards. Errors go back to the agent as an ERROR status and the
//! key is retried with backoff.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use vclink_proto::v1::{Forget, HubMessage, Register, State, Status, hub_message::Msg};

use super::ensure::{self, ReconcileError};
use super::workspace::{self, HubIn};
use crate::core::decide::{
    Action, HostView, Input, PerVc, Predecessor, Successor, Timer, Timers, decide,
};
use crate::core::index::{TokenState, VcKey};
use crate::rancher::clusters::KubeProvClusters;
use crate::state::{Hub, World};

/// Most Kubernetes writes in flight at once (each also waits for the rate limiter).
const MAX_WRITES_IN_FLIGHT: usize = 256;

/// Starts `n` workers sharing one bound on writes in flight.
pub fn spawn_workers(
    hub: Arc<Hub>,
    rancher: Arc<KubeProvClusters>,
    n: usize,
    shutdown: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let writes = Arc::new(Semaphore::new(MAX_WRITES_IN_FLIGHT));
    (0..n)
        .map(|_| {
            tokio::spawn(run_worker(
                hub.clone(),
                rancher.clone(),
                writes.clone(),
                shutdown.clone(),
            ))
        })
        .collect()
}

/// Runs one worker until shutdown. Decisions and messages happen on the worker; the
/// writes they call for run in their own task, so the decision for one vCluster (say, a
/// token that just arrived) never waits behind another's API calls or the rate
/// limiter. The key stays in flight until its writes finish, so one vCluster is never
/// written by two tasks at once.
async fn run_worker(
    hub: Arc<Hub>,
    rancher: Arc<KubeProvClusters>,
    writes: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    while let Some(key) = hub.queue.next(&shutdown).await {
        let (io, seal) = decide_and_send(&hub, &key);
        // Whatever changed for this vCluster (cluster, labels, reported project) may
        // change its owner bindings too.
        hub.notify_owners(&key);
        hub.notify_mirror(&key);
        if io.is_empty() && !seal {
            hub.queue.succeeded(&key);
            hub.queue.done(&key);
            continue;
        }
        let (hub, rancher, writes) = (hub.clone(), rancher.clone(), writes.clone());
        tokio::spawn(async move {
            let _permit = writes.acquire_owned().await;
            let result = async {
                if seal {
                    workspace::seal_if_needed(hub.as_ref(), rancher.as_ref(), &key).await?;
                }
                write(&hub, rancher.as_ref(), &key, io).await
            };
            match result.await {
                Ok(()) => hub.queue.succeeded(&key),
                Err(e) => {
                    hub.metrics.reconcile_error(e.kind());
                    tracing::warn!(host = %key.host, uid = %key.uid, error = %e, "reconcile failed; retrying with backoff");
                    report_error(&hub, &key, e.agent_message());
                    hub.queue.retry(key.clone());
                }
            }
            hub.queue.done(&key);
        });
    }
}

fn report_error(hub: &Hub, key: &VcKey, message: String) {
    let mut w = hub.world();
    let Some(h) = w.hosts.get_mut(&key.host) else {
        return;
    };
    if !h.reported.contains_key(&key.uid) {
        return;
    }
    let msg = HubMessage {
        msg: Some(Msg::Status(Status {
            uid: key.uid.clone(),
            state: State::Error as i32,
            message: message.clone(),
            ..Default::default()
        })),
    };
    if hub.send(h, msg) {
        h.per_vc.entry(key.uid.clone()).or_default().last_status =
            Some((State::Error, message, String::new(), String::new()));
        drop(w);
        hub.notify_mirror(key);
    }
}

/// Carries out the writes [`decide`] asked for.
/// Each in the workspace it concerns (`super::workspace`): a new cluster's, or the
/// namespace the existing cluster is in.
async fn write(
    hub: &Hub,
    rancher: &KubeProvClusters,
    key: &VcKey,
    io: Vec<Action>,
) -> Result<(), ReconcileError> {
    for action in io {
        match action {
            Action::Create(vc) => workspace::ensure(hub, rancher, key, &vc).await?,
            Action::Reclaim {
                namespace,
                name,
                uid,
                from_svc_uid,
                vc,
            } => {
                let (known, at) = (HubIn::new(hub, &namespace), rancher.workspace(&namespace));
                ensure::reclaim(&known, &at, key, &name, &uid, &from_svc_uid, &vc).await?
            }
            Action::Delete {
                namespace,
                name,
                uid,
                reason,
            } => {
                let (known, at) = (HubIn::new(hub, &namespace), rancher.workspace(&namespace));
                ensure::delete(&known, &at, key, &name, uid, reason).await?
            }
            _ => {}
        }
    }
    Ok(())
}

/// Runs [`decide`] under the lock, carries out the non-I/O actions there (and the
/// unproven-claim warning) and returns the ones that need the API, with whether its
/// cluster still needs its UID-bound proof — all in one take of the lock.
fn decide_and_send(hub: &Hub, key: &VcKey) -> (Vec<Action>, bool) {
    let now = Instant::now();
    let wall_now = SystemTime::now();
    let mut w = hub.world();
    let actions = {
        let World {
            index,
            hosts,
            timers,
            ..
        } = &*w;
        let empty = PerVc::default();
        let no_timers = Timers::default();
        let live = hosts.get(&key.host);
        let reported = live.and_then(|h| h.reported.get(&key.uid));
        let host = live.map(|h| HostView {
            reported,
            refused: h.admission.refusal(&key.uid).map(|r| r.message.as_str()),
            snapshot_complete: h.snapshot_complete,
            per_vc: h.per_vc.get(&key.uid).unwrap_or(&empty),
        });
        let prov = index.prov_for(key);
        let mgmt_id = prov.and_then(|p| p.mgmt_id.as_deref());
        // A reinstall: the Service of the same namespace and name under another UID.
        let successor = live.and_then(|h| {
            let (ns, name) = prov?.vcluster.as_ref()?;
            let uid = h.by_name.get(&(ns.clone(), name.clone()))?;
            (uid != &key.uid).then_some(())?;
            Some(Successor {
                vc: h.reported.get(uid)?,
                has_cluster: index.prov_for(&VcKey::new(&key.host, uid)).is_some(),
            })
        });
        let predecessor = match (live, reported, prov) {
            (Some(h), Some(vc), None) => index
                .provs_for_vcluster(&key.host, &vc.namespace, &vc.name)
                .find(|p| p.key.as_ref().is_some_and(|k| k.uid != key.uid))
                .map(|p| {
                    let old = p.key.as_ref().map(|k| k.uid.as_str()).unwrap_or_default();
                    Predecessor {
                        prov: p,
                        reported: h.reported.contains_key(old),
                        deleting_by_us: index.is_deleting_by_us(&VcKey::new(&key.host, old)),
                    }
                }),
            _ => None,
        };
        decide(&Input {
            key,
            now,
            wall_now,
            grace: hub.cfg.grace,
            host,
            timers: timers.get(key).unwrap_or(&no_timers),
            prov,
            mgmt: mgmt_id.and_then(|id| index.mgmt(id)),
            token: mgmt_id
                .map(|id| index.token(id))
                .unwrap_or(TokenState::Missing),
            user_deleted: index.is_user_deleted(key),
            deleting_by_us: index.is_deleting_by_us(key),
            owner_problem: index.owner_problem(key),
            successor,
            predecessor,
        })
    };
    let (tls_mode, ca_certs) = hub.registration_tls(&w.index.settings);
    let World {
        index,
        hosts,
        timers,
        ..
    } = &mut *w;
    let mut io = Vec::new();
    for a in actions {
        // Timers are the hub's, not the stream's.
        match &a {
            Action::StartTimer(t) => {
                let e = timers.entry(key.clone()).or_default();
                match t {
                    Timer::Removed => e.removed = Some(now),
                    Timer::Missing => e.missing = Some(now),
                    Timer::Unimport => e.unimport = Some((now, wall_now)),
                }
                continue;
            }
            Action::ClearTimer(t) => {
                if let Some(e) = timers.get_mut(key) {
                    match t {
                        Timer::Removed => e.removed = None,
                        Timer::Missing => e.missing = None,
                        Timer::Unimport => e.unimport = None,
                    }
                }
                continue;
            }
            Action::Reclaim { from_svc_uid, .. } => {
                // The old key's grace ends here: its cluster moves to this vCluster.
                timers.remove(&VcKey::new(&key.host, from_svc_uid));
            }
            _ => {}
        }
        let Some(h) = hosts.get_mut(&key.host) else {
            break;
        };
        match a {
            Action::Create(_) | Action::Delete { .. } | Action::Reclaim { .. } => io.push(a),
            Action::StartTimer(_) | Action::ClearTimer(_) => {}
            Action::RequeueAt(t) => hub.queue.add_at(key.clone(), t),
            Action::ClearUserDeleted => index.clear_user_deleted(key),
            Action::Register {
                mgmt_id,
                cluster_name,
                manifest_url,
                token_seen,
            } => {
                let msg = Register {
                    uid: key.uid.clone(),
                    rancher_cluster_id: mgmt_id.clone(),
                    cluster_name: cluster_name.clone(),
                    manifest_url: manifest_url.expose().to_string(),
                    tls_mode: tls_mode as i32,
                    ca_certs: ca_certs.clone(),
                };
                if hub.send(
                    h,
                    HubMessage {
                        msg: Some(Msg::Register(msg)),
                    },
                ) {
                    hub.metrics.registrations_sent.inc();
                    hub.metrics
                        .register_latency
                        .observe(now.saturating_duration_since(token_seen).as_secs_f64());
                    tracing::info!(host = %key.host, uid = %key.uid, cluster = %cluster_name, rancher_cluster = %mgmt_id, "Register sent");
                    let pv = h.per_vc.entry(key.uid.clone()).or_default();
                    pv.registered = Some((mgmt_id, manifest_url));
                    pv.failure = None;
                }
            }
            Action::Status {
                state,
                message,
                mgmt_id,
                cluster_name,
            } => {
                let msg = Status {
                    uid: key.uid.clone(),
                    state: state as i32,
                    message: message.clone(),
                    rancher_cluster_id: mgmt_id.clone(),
                    cluster_name: cluster_name.clone(),
                    // The warning travels on its own Status (clusters::warn).
                    ..Default::default()
                };
                if hub.send(
                    h,
                    HubMessage {
                        msg: Some(Msg::Status(msg)),
                    },
                ) {
                    tracing::debug!(host = %key.host, uid = %key.uid, state = ?state, "status sent");
                    h.per_vc.entry(key.uid.clone()).or_default().last_status =
                        Some((state, message, mgmt_id, cluster_name));
                }
            }
            Action::Forget { reason } => {
                let msg = Forget {
                    uid: key.uid.clone(),
                    reason,
                };
                if hub.send(
                    h,
                    HubMessage {
                        msg: Some(Msg::Forget(msg)),
                    },
                ) {
                    tracing::info!(host = %key.host, uid = %key.uid, "Rancher cluster deleted by a user; Forget sent");
                    h.per_vc.entry(key.uid.clone()).or_default().forgotten = true;
                }
            }
        }
    }
    if timers.get(key).is_some_and(Timers::is_empty) {
        timers.remove(key);
    }
    // Keep stream memory only for vClusters that are reported.
    if let Some(h) = hosts.get_mut(&key.host)
        && !h.reported.contains_key(&key.uid)
    {
        h.per_vc.remove(&key.uid);
    }
    // Unproven clusters claiming it: its owner is told (core::proof).
    super::warn::sync(hub, &mut w, key);
    // Our cluster with only its create-time proof gets the UID-bound one.
    let seal = w.index.unsealed(key).is_some();
    (io, seal)
}
