//! What to do next for one vCluster, as a pure function of what the hub knows: the
//! agent's report (from the host's live stream), the Rancher objects (from the index)
//! and what was already said on this stream. The controller's workers gather the input
//! under the lock, call [`decide`], and carry out the actions; everything that can be
//! wrong about ordering or deletion safety is tested here without I/O.

use std::time::{Duration, Instant};

use vclink_proto::Secret;
use vclink_proto::v1::{State, VCluster};

use crate::core::index::{Conn, MgmtCluster, ProvCluster, TokenState, VcKey};

/// Per-vCluster memory of a live stream (lost with the stream, on purpose: a new stream
/// gets Register and Status again).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PerVc {
    /// When a complete snapshot first lacked this vCluster.
    pub missing_since: Option<Instant>,
    /// The agent sent Remove for it.
    pub remove_requested: bool,
    /// Last Status sent: (state, message, rancher id, cluster name).
    pub last_status: Option<(State, String, String, String)>,
    /// Register sent: (management id, manifest URL). Resent only for a new token.
    pub registered: Option<(String, Secret)>,
    /// The last registration failed: (message, do not resend before).
    pub failure: Option<(String, Instant)>,
    /// Number of consecutive failures (for backoff).
    pub failures: u32,
    /// Forget was sent on this stream.
    pub forgotten: bool,
}

/// The host stream's view of one vCluster.
#[derive(Clone, Copy, Debug)]
pub struct HostView<'a> {
    /// The vCluster as last reported, if it is in the reported set.
    pub reported: Option<&'a VCluster>,
    /// A complete snapshot arrived on this stream.
    pub snapshot_complete: bool,
    /// Stream memory for this vCluster.
    pub per_vc: &'a PerVc,
}

/// Everything [`decide`] looks at.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    /// The vCluster.
    pub key: &'a VcKey,
    /// Now.
    pub now: Instant,
    /// --removal-grace.
    pub grace: Duration,
    /// The host's live stream; `None` when the host has none (then nothing happens).
    pub host: Option<HostView<'a>>,
    /// Its provisioning cluster.
    pub prov: Option<&'a ProvCluster>,
    /// Its management cluster.
    pub mgmt: Option<&'a MgmtCluster>,
    /// Its registration token.
    pub token: TokenState,
    /// Someone else deleted its Rancher cluster.
    pub user_deleted: bool,
    /// The hub is deleting its Rancher cluster.
    pub deleting_by_us: bool,
    /// Why its owner bindings cannot be kept (owner sync); shown as an ERROR status once
    /// the management cluster exists.
    pub owner_problem: Option<&'a str>,
}

/// Why the hub deletes a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteReason {
    /// The agent sent Remove.
    Removed,
    /// Complete snapshots lacked it for the whole grace period.
    MissingFromSnapshot,
}

impl DeleteReason {
    /// Metric/log label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Removed => "removed",
            Self::MissingFromSnapshot => "missing_from_snapshot",
        }
    }
}

/// One step for reconcile to carry out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create (or adopt) the provisioning cluster.
    Create(VCluster),
    /// Delete the provisioning cluster `name` (labels already checked).
    Delete {
        name: String,
        uid: String,
        reason: DeleteReason,
    },
    /// Start the grace period now.
    MarkMissing,
    /// The vCluster is back: stop the grace period.
    ClearMissing,
    /// Forget that Remove was asked (done, or nothing to delete).
    ClearRemoveRequested,
    /// Reconcile again at this time.
    RequeueAt(Instant),
    /// Send Register.
    Register {
        mgmt_id: String,
        cluster_name: String,
        manifest_url: Secret,
        token_seen: Instant,
    },
    /// Send Status (only emitted when it differs from the last one sent).
    Status {
        state: State,
        message: String,
        mgmt_id: String,
        cluster_name: String,
    },
    /// Send Forget.
    Forget { reason: String },
    /// The agent acknowledged the user's deletion.
    ClearUserDeleted,
}

/// Decides the next steps for one vCluster. See the module docs.
pub fn decide(i: &Input<'_>) -> Vec<Action> {
    // No live stream of the host: no proof of anything, and nobody to talk to.
    let Some(host) = i.host else {
        return Vec::new();
    };
    let ours = i.prov.filter(|p| p.key.as_ref() == Some(i.key));
    match host.reported {
        None => decide_unreported(i, host, ours),
        Some(vc) => decide_reported(i, host, vc, ours),
    }
}

fn decide_unreported(i: &Input<'_>, host: HostView<'_>, prov: Option<&ProvCluster>) -> Vec<Action> {
    let pv = host.per_vc;
    let Some(prov) = prov else {
        let mut out = Vec::new();
        if pv.remove_requested {
            out.push(Action::ClearRemoveRequested);
        }
        if pv.missing_since.is_some() {
            out.push(Action::ClearMissing);
        }
        return out;
    };
    if prov.deleting || i.deleting_by_us {
        return Vec::new();
    }
    let delete = |reason| Action::Delete {
        name: prov.name.clone(),
        uid: prov.uid.clone(),
        reason,
    };
    if pv.remove_requested {
        return vec![delete(DeleteReason::Removed), Action::ClearRemoveRequested];
    }
    if !host.snapshot_complete {
        return Vec::new();
    }
    match pv.missing_since {
        None => vec![Action::MarkMissing, Action::RequeueAt(i.now + i.grace)],
        Some(t) if i.now >= t + i.grace => vec![delete(DeleteReason::MissingFromSnapshot)],
        Some(t) => vec![Action::RequeueAt(t + i.grace)],
    }
}

fn decide_reported(
    i: &Input<'_>,
    host: HostView<'_>,
    vc: &VCluster,
    prov: Option<&ProvCluster>,
) -> Vec<Action> {
    let pv = host.per_vc;
    let mut out = Vec::new();
    if pv.missing_since.is_some() {
        out.push(Action::ClearMissing);
    }
    if pv.remove_requested {
        out.push(Action::ClearRemoveRequested);
    }
    if vc.rancher_cluster_deleted {
        // The agent keeps the user's deletion on its Service: do not import again.
        if i.user_deleted {
            out.push(Action::ClearUserDeleted);
        }
        return out;
    }
    let user_deleted = i.user_deleted || prov.is_some_and(|p| p.deleting && !i.deleting_by_us);
    if user_deleted {
        if !pv.forgotten {
            out.push(Action::Forget {
                reason: "the Rancher cluster was deleted in Rancher".into(),
            });
        }
        return out;
    }
    let name = prov.map(|p| p.name.clone()).unwrap_or_default();
    let mgmt_id = prov.and_then(|p| p.mgmt_id.clone()).unwrap_or_default();
    let status = |out: &mut Vec<Action>, state: State, message: &str| {
        // An owner binding that cannot be created must reach the Service: the state
        // becomes ERROR with both messages (decided here, so the dedup below holds).
        let owner_msg;
        let (state, message) = match i.owner_problem {
            Some(p) if state != State::Error && !mgmt_id.is_empty() => {
                owner_msg = format!("{message}; owner bindings: {p}");
                (State::Error, owner_msg.as_str())
            }
            _ => (state, message),
        };
        let same = pv.last_status.as_ref().is_some_and(|(s, m, id, n)| {
            *s == state && m == message && *id == mgmt_id && *n == name
        });
        if !same {
            out.push(Action::Status {
                state,
                message: message.to_string(),
                mgmt_id: mgmt_id.clone(),
                cluster_name: name.clone(),
            });
        }
    };
    let Some(p) = prov else {
        out.push(Action::Create(vc.clone()));
        // While creation fails the agent keeps the ERROR status (with the API's
        // message) instead of flapping between ERROR and PENDING on every retry.
        if pv.last_status.as_ref().is_none_or(|s| s.0 != State::Error) {
            status(&mut out, State::Pending, "creating the Rancher cluster");
        }
        return out;
    };
    if p.deleting {
        status(
            &mut out,
            State::Pending,
            "waiting for the previous Rancher cluster to be deleted",
        );
        return out;
    }
    let Some(id) = &p.mgmt_id else {
        status(
            &mut out,
            State::Pending,
            "waiting for Rancher to create the management cluster",
        );
        return out;
    };
    let Some(m) = i.mgmt else {
        status(
            &mut out,
            State::Pending,
            "waiting for the management cluster",
        );
        return out;
    };
    if m.conn == Conn::Connected {
        status(&mut out, State::Connected, "connected to Rancher");
        return out;
    }
    if m.conn == Conn::Disconnected || p.ready {
        status(
            &mut out,
            State::Disconnected,
            "Rancher lost the connection to the cluster agent",
        );
        return out;
    }
    match &i.token {
        TokenState::Missing => status(&mut out, State::Pending, "waiting for registration token"),
        TokenState::WaitingSecret => status(
            &mut out,
            State::Pending,
            "waiting for registration token Secret",
        ),
        TokenState::Ready(url, seen) => {
            let register = Action::Register {
                mgmt_id: id.clone(),
                cluster_name: p.name.clone(),
                manifest_url: url.clone(),
                token_seen: *seen,
            };
            let already = pv
                .registered
                .as_ref()
                .is_some_and(|(m, u)| m == id && u == url);
            match &pv.failure {
                Some((msg, at)) if i.now < *at => {
                    status(
                        &mut out,
                        State::Error,
                        &format!("registration failed: {msg}"),
                    );
                    out.push(Action::RequeueAt(*at));
                }
                Some(_) => {
                    out.push(register);
                    status(
                        &mut out,
                        State::Registering,
                        "registration sent to the agent",
                    );
                }
                None if already => status(
                    &mut out,
                    State::Registering,
                    "registration sent to the agent",
                ),
                None => {
                    out.push(register);
                    status(
                        &mut out,
                        State::Registering,
                        "registration sent to the agent",
                    );
                }
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
