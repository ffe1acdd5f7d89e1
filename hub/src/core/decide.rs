//! What to do next for one vCluster, as a pure function of what the hub knows: the
//! agent's report (from the host's live stream), the Rancher objects (from the index),
//! the hub's timers of the vCluster and what was already said on this stream. The
//! controller's workers gather the input under the lock, call [`decide`], and carry out
//! the actions; everything that can be wrong about ordering or deletion safety is tested
//! here without I/O.
//!
//! # When a Rancher cluster is deleted
//!
//! Only with all of: a cluster of this very key (the index holds only clusters the hub
//! can prove it made), a live stream of its host at decision time, and one of these
//! timers (hub memory keyed by [`VcKey`], see [`Timers`]: they survive the host's stream
//! reconnecting and are lost only when the hub restarts) having run for `--removal-grace`:
//!
//! - **removed**: the agent sent `Remove` (it confirmed the Service was deleted);
//! - **missing**: a complete snapshot of the host lacked it (a snapshot that contains
//!   it again clears the timer; a reconnect does not restart it);
//! - **un-import**: it is reported with `vclink.io/import: "false"` (exclusion kind
//!   UNIMPORT); an `Upsert` without it clears the timer.
//!
//! Never deleted: a vCluster reported as EXCLUDED or INVALID (Status EXCLUDED with the
//! reason and its existing cluster, if any), one refused by the scope rules (Status
//! ERROR with the reason), one whose host has no live stream, and a removed or missing
//! one while its host reports a Service of the same namespace and name under a new UID
//! (a reinstall: that vCluster reclaims the cluster, [`Action::Reclaim`]).

use std::time::SystemTime;

use vclink_proto::v1::exclusion::Kind as ExclusionKind;
use vclink_proto::v1::{State, VCluster};

use crate::core::index::{Conn, ProvCluster, TokenState, VcKey};

pub use crate::core::decision::{
    Action, DeleteReason, HostView, Input, PerVc, Predecessor, Successor, Timer, Timers,
};

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

fn exclusion_reason(vc: &VCluster) -> &str {
    vc.exclusion.as_ref().map_or("", |e| e.reason.as_str())
}

fn clear(out: &mut Vec<Action>, set: bool, t: Timer) {
    if set {
        out.push(Action::ClearTimer(t));
    }
}

fn decide_unreported(i: &Input<'_>, host: HostView<'_>, prov: Option<&ProvCluster>) -> Vec<Action> {
    let t = i.timers;
    let mut out = Vec::new();
    // Not reported: no un-import (the removed / missing rules take over).
    clear(&mut out, t.unimport.is_some(), Timer::Unimport);
    let Some(prov) = prov else {
        // Nothing to delete: nothing to time.
        clear(&mut out, t.removed.is_some(), Timer::Removed);
        clear(&mut out, t.missing.is_some(), Timer::Missing);
        return out;
    };
    if prov.deleting || i.deleting_by_us {
        return out;
    }
    // The host reports a Service of the same namespace and name under a new UID that
    // has no cluster of its own: that reinstall reclaims this cluster; never delete it
    // meanwhile. (Being un-imported, it does not want the cluster.)
    if i.successor
        .is_some_and(|s| !s.has_cluster && s.vc.exclusion_kind() != ExclusionKind::Unimport)
    {
        return out;
    }
    let delete = |reason| Action::Delete {
        namespace: prov.namespace.clone(),
        name: prov.name.clone(),
        uid: prov.uid.clone(),
        reason,
    };
    if let Some(at) = t.removed {
        let due = at + i.grace;
        out.push(if i.now >= due {
            delete(DeleteReason::Removed)
        } else {
            Action::RequeueAt(due)
        });
        return out;
    }
    if !host.snapshot_complete {
        return out;
    }
    match t.missing {
        None => {
            out.push(Action::StartTimer(Timer::Missing));
            out.push(Action::RequeueAt(i.now + i.grace));
        }
        Some(at) if i.now >= at + i.grace => out.push(delete(DeleteReason::MissingFromSnapshot)),
        Some(at) => out.push(Action::RequeueAt(at + i.grace)),
    }
    out
}

/// Pushes a Status unless it is the last one sent on this stream.
fn push_status(
    out: &mut Vec<Action>,
    pv: &PerVc,
    state: State,
    message: &str,
    mgmt_id: &str,
    name: &str,
) {
    let same = pv
        .last_status
        .as_ref()
        .is_some_and(|(s, m, id, n)| *s == state && m == message && id == mgmt_id && n == name);
    if !same {
        out.push(Action::Status {
            state,
            message: message.to_string(),
            mgmt_id: mgmt_id.to_string(),
            cluster_name: name.to_string(),
        });
    }
}

fn decide_reported(
    i: &Input<'_>,
    host: HostView<'_>,
    vc: &VCluster,
    prov: Option<&ProvCluster>,
) -> Vec<Action> {
    let pv = host.per_vc;
    let t = i.timers;
    let mut out = Vec::new();
    // Reported: it exists.
    clear(&mut out, t.missing.is_some(), Timer::Missing);
    clear(&mut out, t.removed.is_some(), Timer::Removed);
    let kind = vc.exclusion_kind();
    if kind != ExclusionKind::Unimport {
        clear(&mut out, t.unimport.is_some(), Timer::Unimport);
    }
    if vc.rancher_cluster_deleted {
        // The agent keeps the user's deletion on its Service: do not import again.
        if i.user_deleted {
            out.push(Action::ClearUserDeleted);
        }
        return out;
    }
    // The existing cluster, named in every Status so the Service keeps pointing at it.
    let live = prov.filter(|p| !p.deleting);
    let name = live.map(|p| p.name.as_str()).unwrap_or_default();
    let mgmt_id = live.and_then(|p| p.mgmt_id.as_deref()).unwrap_or_default();
    if matches!(kind, ExclusionKind::Excluded | ExclusionKind::Invalid) {
        // Opted out or invalid: nothing created, nothing deleted, nothing relabelled
        // (its optional fields may be blanked).
        let reason = match exclusion_reason(vc) {
            "" => "excluded from import",
            r => r,
        };
        push_status(&mut out, pv, State::Excluded, reason, mgmt_id, name);
        return out;
    }
    if let Some(reason) = host.refused {
        // Reported but refused: nothing created or deleted for it; the stream goes on.
        if kind == ExclusionKind::Unimport {
            clear(&mut out, t.unimport.is_some(), Timer::Unimport);
        }
        push_status(&mut out, pv, State::Error, reason, mgmt_id, name);
        return out;
    }
    if kind == ExclusionKind::Unimport {
        return unimport(i, pv, prov, out);
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
        push_status(out, pv, state, message, &mgmt_id, &name);
    };
    let Some(p) = prov else {
        if let Some(old) = i.predecessor.filter(|o| is_predecessor(i.key, vc, o)) {
            if !host.snapshot_complete {
                // Whether the host still reports the old UID is known only from a
                // complete snapshot; creating meanwhile could duplicate the cluster.
                status(
                    &mut out,
                    State::Pending,
                    "waiting for the host's complete list",
                );
                return out;
            }
            out.push(Action::Reclaim {
                namespace: old.prov.namespace.clone(),
                name: old.prov.name.clone(),
                uid: old.prov.uid.clone(),
                from_svc_uid: old
                    .prov
                    .key
                    .as_ref()
                    .map(|k| k.uid.clone())
                    .unwrap_or_default(),
                vc: vc.clone(),
            });
            status(
                &mut out,
                State::Pending,
                &format!("reinstalled: taking over Rancher cluster {}", old.prov.name),
            );
            return out;
        }
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

/// A cluster of the same host, namespace and name under another Service UID that the
/// host no longer reports, not being deleted: the reinstalled vCluster takes it over.
fn is_predecessor(key: &VcKey, vc: &VCluster, o: &Predecessor<'_>) -> bool {
    let same_place = o
        .prov
        .vcluster
        .as_ref()
        .is_some_and(|(ns, n)| *ns == vc.namespace && *n == vc.name);
    let other_uid = o
        .prov
        .key
        .as_ref()
        .is_some_and(|k| k.host == key.host && k.uid != key.uid);
    same_place && other_uid && !o.reported && !o.deleting_by_us && !o.prov.deleting
}

/// `vclink.io/import: "false"`: the cluster is deleted once the un-import timer has run
/// for the grace; removing the annotation first (an Upsert without it) keeps it.
fn unimport(
    i: &Input<'_>,
    pv: &PerVc,
    prov: Option<&ProvCluster>,
    mut out: Vec<Action>,
) -> Vec<Action> {
    let Some(p) = prov else {
        clear(&mut out, i.timers.unimport.is_some(), Timer::Unimport);
        push_status(
            &mut out,
            pv,
            State::Excluded,
            "not imported (vclink.io/import=false)",
            "",
            "",
        );
        return out;
    };
    let mgmt_id = p.mgmt_id.as_deref().unwrap_or_default();
    if p.deleting || i.deleting_by_us {
        let msg = format!("un-importing: Rancher cluster {} is being deleted", p.name);
        push_status(&mut out, pv, State::Excluded, &msg, mgmt_id, &p.name);
        return out;
    }
    let (since, wall) = match i.timers.unimport {
        Some(t) => t,
        None => {
            out.push(Action::StartTimer(Timer::Unimport));
            (i.now, i.wall_now)
        }
    };
    let due = since + i.grace;
    if i.now >= due {
        out.push(Action::Delete {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            uid: p.uid.clone(),
            reason: DeleteReason::Unimported,
        });
    } else {
        out.push(Action::RequeueAt(due));
    }
    let msg = format!(
        "un-importing: Rancher cluster {} is deleted at {} unless the annotation vclink.io/import=false is removed",
        p.name,
        utc(wall + i.grace)
    );
    push_status(&mut out, pv, State::Excluded, &msg, mgmt_id, &p.name);
    out
}

/// `YYYY-MM-DDTHH:MM:SSZ` (civil-from-days, proleptic Gregorian, UTC).
pub fn utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "decide_rules_tests.rs"]
mod rules_tests;
