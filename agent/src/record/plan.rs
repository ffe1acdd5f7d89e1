//! The pure decision of what to record for a hub Status, a Job's progress, a Forget, an
//! exclusion, the agent's mark or a refused Register: which `vclink.io/` annotations (and
//! labels) change (nothing when nothing changed) and which Event, if any, tells the user
//! about the transition. A hub Status never moves a registered vCluster to another
//! Rancher cluster ([`super::guard`]) nor overrides an exclusion the agent recorded.

use std::collections::BTreeMap;

use vclink_proto::keys;
use vclink_proto::v1::State;
use vclink_proto::v1::registration_progress::Phase;

use super::ops::{
    ANNOTATION_WARNING, EventSpec, Plan, RecordOp, clean_text, set, set_state, state,
};

fn named(name: &str, id: &str) -> String {
    match (name.is_empty(), id.is_empty()) {
        (false, false) => format!("{name} ({id})"),
        (true, false) => id.to_string(),
        (false, true) => name.to_string(),
        (true, true) => "(unknown)".to_string(),
    }
}

/// The Job's own progress moves the state to `registering`, but never over the hub's
/// word: not back from `connected` (Rancher may report the cluster connected, via the
/// hub, before this agent has seen its Job finish), and not over an `error` or
/// `disconnected` the hub sent (say, the owner bindings an administrator must fix). The
/// hub sends `registering` with every Register, so a retried registration still moves
/// the state; `hub` is the last state the hub sent for this vCluster, if known.
fn registering_unless_hub_knows_better(
    patch: &mut BTreeMap<String, Option<String>>,
    current: &BTreeMap<String, String>,
    hub: Option<State>,
    now: &str,
) {
    if hub_has_the_last_word(hub) {
        return;
    }
    if current.get(keys::ANNOTATION_STATE).map(String::as_str) != Some(state::CONNECTED) {
        set_state(patch, current, state::REGISTERING, now);
    }
}

/// Whether the hub's last Status outranks what the Job's progress says.
fn hub_has_the_last_word(hub: Option<State>) -> bool {
    matches!(
        hub,
        Some(State::Connected | State::Error | State::Disconnected)
    )
}

/// Decides the writes for `op` given the Service's current `vclink.io/` annotations.
///
/// `hub` is the state of the hub's last Status for this vCluster (None after a restart).
pub fn plan(
    op: &RecordOp,
    current: &BTreeMap<String, String>,
    hub: Option<State>,
    now: &str,
) -> Plan {
    let mut p = Plan::default();
    match op {
        RecordOp::Status {
            state: st,
            message,
            rancher_cluster_id,
            cluster_name,
            ..
        } => {
            let message = clean_text(message);
            let excluded =
                current.get(keys::ANNOTATION_STATE).map(String::as_str) == Some(state::EXCLUDED);
            if *st == State::Excluded {
                if set_state(&mut p.patch, current, state::EXCLUDED, now) {
                    p.event = Some(EventSpec {
                        warning: false,
                        reason: "Excluded",
                        note: if message.is_empty() {
                            "The hub reports this vCluster as excluded.".to_string()
                        } else {
                            message
                        },
                    });
                }
                return p;
            }
            if excluded {
                // The agent's own exclusion stands until it lifts it (Included).
                return p;
            }
            if let super::guard::Switch::Refused(why) =
                super::guard::cluster_switch(current, rancher_cluster_id)
            {
                return super::announce::plan_register_refused(
                    &format!("the hub reported a state for another Rancher cluster: {why}"),
                    current,
                );
            }
            let (name, warning, reason) = match st {
                State::Pending => (state::PENDING, false, "RancherClusterCreated"),
                State::Registering => (state::REGISTERING, false, "Registering"),
                State::Connected => (state::CONNECTED, false, "Connected"),
                State::Disconnected => (state::DISCONNECTED, true, "Disconnected"),
                State::Error => (state::ERROR, true, "Error"),
                State::Unspecified | State::Excluded => return p,
            };
            if !rancher_cluster_id.is_empty() {
                set(
                    &mut p.patch,
                    current,
                    keys::ANNOTATION_RANCHER_CLUSTER,
                    Some(rancher_cluster_id.clone()),
                );
            }
            if !cluster_name.is_empty() {
                set(
                    &mut p.patch,
                    current,
                    keys::ANNOTATION_RANCHER_CLUSTER_NAME,
                    Some(cluster_name.clone()),
                );
            }
            let mut error_changed = false;
            match st {
                State::Connected => set(&mut p.patch, current, keys::ANNOTATION_LAST_ERROR, None),
                State::Error => {
                    let e = if message.is_empty() {
                        "Rancher reported an error without details".to_string()
                    } else {
                        message.clone()
                    };
                    error_changed = current.get(keys::ANNOTATION_LAST_ERROR) != Some(&e);
                    set(&mut p.patch, current, keys::ANNOTATION_LAST_ERROR, Some(e));
                }
                _ => {}
            }
            let changed = set_state(&mut p.patch, current, name, now);
            if changed || error_changed {
                let who = named(cluster_name, rancher_cluster_id);
                let detail = if message.is_empty() {
                    String::new()
                } else {
                    format!(" {message}")
                };
                let note = match st {
                    State::Pending => format!(
                        "Rancher cluster {who} was created for this vCluster; registration starts shortly.{detail}"
                    ),
                    State::Registering => {
                        format!("Registering this vCluster as Rancher cluster {who}.{detail}")
                    }
                    State::Connected => {
                        format!("This vCluster is connected to Rancher as cluster {who}.{detail}")
                    }
                    State::Disconnected => format!(
                        "Rancher lost the connection to cluster {who}; check the cattle-cluster-agent Deployment in \
                         namespace cattle-system inside the vCluster.{detail}"
                    ),
                    _ => format!("Rancher reports an error for cluster {who}:{detail}"),
                };
                p.event = Some(EventSpec {
                    warning,
                    reason,
                    note,
                });
            }
        }
        RecordOp::Progress {
            phase,
            message,
            rancher_cluster_id,
            job_name,
            job_uid,
            ..
        } => {
            if !rancher_cluster_id.is_empty() {
                set(
                    &mut p.patch,
                    current,
                    keys::ANNOTATION_RANCHER_CLUSTER,
                    Some(rancher_cluster_id.clone()),
                );
            }
            let id = if rancher_cluster_id.is_empty() {
                "(unknown)"
            } else {
                rancher_cluster_id.as_str()
            };
            match phase {
                Phase::JobCreated => {
                    registering_unless_hub_knows_better(&mut p.patch, current, hub, now);
                    if !job_uid.is_empty() {
                        set(
                            &mut p.patch,
                            current,
                            keys::ANNOTATION_REGISTRATION_JOB_UID,
                            Some(job_uid.clone()),
                        );
                    }
                    // A registration started: a re-import request is honoured.
                    set(&mut p.patch, current, keys::ANNOTATION_REIMPORT, None);
                    p.event = Some(EventSpec {
                        warning: false,
                        reason: "RegistrationJobCreated",
                        note: format!(
                            "Created registration Job {job_name} to import this vCluster into Rancher cluster {id}."
                        ),
                    });
                }
                Phase::Succeeded => {
                    registering_unless_hub_knows_better(&mut p.patch, current, hub, now);
                    if !hub_has_the_last_word(hub) {
                        set(&mut p.patch, current, keys::ANNOTATION_LAST_ERROR, None);
                    }
                    p.event = Some(EventSpec {
                        warning: false,
                        reason: "Registered",
                        note: format!(
                            "Rancher's cluster agent was installed in this vCluster; waiting for it to connect to Rancher cluster {id}."
                        ),
                    });
                }
                Phase::Failed => {
                    let reason = clean_text(message);
                    let reason = if reason.is_empty() {
                        "the registration Job failed without a reason".to_string()
                    } else {
                        reason
                    };
                    set_state(&mut p.patch, current, state::ERROR, now);
                    let note = format!(
                        "Importing this vCluster into Rancher cluster {id} failed: {reason}. vclink retries automatically."
                    );
                    p.warn(current, "RegistrationFailed", reason, note);
                }
                Phase::Unspecified => {}
            }
        }
        RecordOp::Forget { reason, .. } => {
            if current.contains_key(keys::ANNOTATION_RANCHER_DELETED) {
                return p;
            }
            set(
                &mut p.patch,
                current,
                keys::ANNOTATION_RANCHER_DELETED,
                Some(now.to_string()),
            );
            set_state(&mut p.patch, current, state::DELETED_IN_RANCHER, now);
            let why = clean_text(reason);
            let why = if why.is_empty() {
                String::new()
            } else {
                format!(" ({why})")
            };
            p.event = Some(EventSpec {
                warning: true,
                reason: "RemovedFromRancher",
                note: format!(
                    "The Rancher cluster of this vCluster was deleted in Rancher{why}. It will not be imported again until \
                     the annotation {} is removed from this Service.",
                    keys::ANNOTATION_RANCHER_DELETED
                ),
            });
        }
        RecordOp::Excluded { kind, reason, .. } => {
            return super::announce::plan_excluded(*kind, reason, current, now);
        }
        RecordOp::Included { .. } => return super::announce::plan_included(current),
        RecordOp::Mark { uid } => return super::announce::plan_mark(uid),
        RecordOp::RegisterRefused { reason, .. } => {
            return super::announce::plan_register_refused(reason, current);
        }
        RecordOp::Warning { text, .. } => {
            // Recorded on the Service; a new or changed warning is one Warning Event.
            let text = clean_text(text);
            let value = Some(text.clone()).filter(|t| !t.is_empty());
            let new = value.is_some() && current.get(ANNOTATION_WARNING) != value.as_ref();
            set(&mut p.patch, current, ANNOTATION_WARNING, value);
            if new {
                p.event = Some(EventSpec {
                    warning: true,
                    reason: "HubWarning",
                    note: text,
                });
            }
        }
    }
    p
}

/// The current time as RFC 3339, to the second.
pub fn now_rfc3339() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vclink_proto::limits::MAX_MESSAGE_TEXT;

    const NOW: &str = "2024-05-01T10:00:00Z";

    fn ann(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn status(state: State, message: &str) -> RecordOp {
        RecordOp::Status {
            uid: "u".into(),
            state,
            message: message.into(),
            rancher_cluster_id: "c-m-abcd1234".into(),
            cluster_name: "host-team-a-vc1".into(),
        }
    }

    #[test]
    fn first_status_writes_state_ids_and_one_event() {
        let p = plan(&status(State::Pending, ""), &BTreeMap::new(), None, NOW);
        assert_eq!(p.patch[keys::ANNOTATION_STATE], Some("pending".into()));
        assert_eq!(p.patch[keys::ANNOTATION_STATE_SINCE], Some(NOW.into()));
        assert_eq!(
            p.patch[keys::ANNOTATION_RANCHER_CLUSTER],
            Some("c-m-abcd1234".into())
        );
        assert_eq!(
            p.patch[keys::ANNOTATION_RANCHER_CLUSTER_NAME],
            Some("host-team-a-vc1".into())
        );
        let ev = p.event.expect("event");
        assert_eq!(ev.reason, "RancherClusterCreated");
        assert!(!ev.warning);
    }

    #[test]
    fn repeated_status_writes_nothing() {
        let current = ann(&[
            (keys::ANNOTATION_STATE, "connected"),
            (keys::ANNOTATION_STATE_SINCE, "2024-01-01T00:00:00Z"),
            (keys::ANNOTATION_RANCHER_CLUSTER, "c-m-abcd1234"),
            (keys::ANNOTATION_RANCHER_CLUSTER_NAME, "host-team-a-vc1"),
        ]);
        assert_eq!(
            plan(&status(State::Connected, ""), &current, None, NOW),
            Plan::default()
        );
    }

    #[test]
    fn connected_clears_the_last_error() {
        let current = ann(&[
            (keys::ANNOTATION_STATE, "error"),
            (keys::ANNOTATION_LAST_ERROR, "boom"),
        ]);
        let p = plan(&status(State::Connected, ""), &current, None, NOW);
        assert_eq!(p.patch[keys::ANNOTATION_LAST_ERROR], None);
        assert_eq!(p.event.expect("event").reason, "Connected");
    }

    #[test]
    fn error_records_message_and_warns() {
        let p = plan(
            &status(State::Error, "quota\u{7} exceeded"),
            &BTreeMap::new(),
            None,
            NOW,
        );
        assert_eq!(
            p.patch[keys::ANNOTATION_LAST_ERROR],
            Some("quota  exceeded".into())
        );
        let ev = p.event.expect("event");
        assert!(ev.warning);
        assert_eq!(ev.reason, "Error");
    }

    #[test]
    fn registration_failure_records_reason() {
        let op = RecordOp::Progress {
            uid: "u".into(),
            phase: Phase::Failed,
            message: "fetching the Rancher import manifest failed: HTTP 400".into(),
            rancher_cluster_id: "c-m-abcd1234".into(),
            job_name: "vclink-register-0123456789ab".into(),
            job_uid: String::new(),
        };
        let p = plan(&op, &BTreeMap::new(), None, NOW);
        assert_eq!(p.patch[keys::ANNOTATION_STATE], Some("error".into()));
        assert!(
            p.patch[keys::ANNOTATION_LAST_ERROR]
                .as_deref()
                .unwrap_or("")
                .contains("HTTP 400")
        );
        assert_eq!(p.event.expect("event").reason, "RegistrationFailed");
    }

    /// The agent saw the registration Job for `c-m-abcd1234` succeed.
    fn job_succeeded() -> RecordOp {
        RecordOp::Progress {
            uid: "u".into(),
            phase: Phase::Succeeded,
            message: String::new(),
            rancher_cluster_id: "c-m-abcd1234".into(),
            job_name: "vclink-register-0123456789ab".into(),
            job_uid: String::new(),
        }
    }

    #[test]
    fn a_late_job_success_does_not_undo_connected() {
        let op = job_succeeded();
        let connected = ann(&[(keys::ANNOTATION_STATE, "connected")]);
        assert!(
            !plan(&op, &connected, None, NOW)
                .patch
                .contains_key(keys::ANNOTATION_STATE)
        );
        let pending = ann(&[(keys::ANNOTATION_STATE, "pending")]);
        assert_eq!(
            plan(&op, &pending, None, NOW).patch[keys::ANNOTATION_STATE],
            Some("registering".into())
        );
    }

    #[test]
    fn a_job_success_keeps_the_hubs_error() {
        // The hub reported an error (owner bindings an administrator must fix) before
        // the agent saw its Job succeed: the hub's state and message stay on the Service.
        let op = job_succeeded();
        let error = ann(&[
            (keys::ANNOTATION_STATE, "error"),
            (keys::ANNOTATION_LAST_ERROR, "owner bindings: not an owner"),
        ]);
        let p = plan(&op, &error, Some(State::Error), NOW);
        assert!(!p.patch.contains_key(keys::ANNOTATION_STATE), "{p:?}");
        assert!(!p.patch.contains_key(keys::ANNOTATION_LAST_ERROR), "{p:?}");
        // A Job failure the agent recorded itself is cleared by the retry's success
        // (the hub said `registering` with the new Register).
        let p = plan(&op, &error, Some(State::Registering), NOW);
        assert_eq!(p.patch[keys::ANNOTATION_STATE], Some("registering".into()));
        assert_eq!(p.patch[keys::ANNOTATION_LAST_ERROR], None);
    }

    #[test]
    fn forget_is_recorded_once() {
        let op = RecordOp::Forget {
            uid: "u".into(),
            reason: "deleted by a user".into(),
        };
        let p = plan(&op, &BTreeMap::new(), None, NOW);
        assert_eq!(p.patch[keys::ANNOTATION_RANCHER_DELETED], Some(NOW.into()));
        assert_eq!(
            p.patch[keys::ANNOTATION_STATE],
            Some("deleted-in-rancher".into())
        );
        assert_eq!(p.event.expect("event").reason, "RemovedFromRancher");
        let again = plan(
            &op,
            &ann(&[(keys::ANNOTATION_RANCHER_DELETED, NOW)]),
            None,
            NOW,
        );
        assert_eq!(again, Plan::default());
    }

    #[test]
    fn job_created_records_the_job_uid_and_honours_a_reimport() {
        let op = RecordOp::Progress {
            uid: "u".into(),
            phase: Phase::JobCreated,
            message: String::new(),
            rancher_cluster_id: "c-m-bbbb2222".into(),
            job_name: "vclink-register-0123456789ab".into(),
            job_uid: "job-uid-1".into(),
        };
        let current = ann(&[(keys::ANNOTATION_REIMPORT, "true")]);
        let p = plan(&op, &current, None, NOW);
        assert_eq!(
            p.patch[keys::ANNOTATION_REGISTRATION_JOB_UID],
            Some("job-uid-1".into())
        );
        assert_eq!(p.patch[keys::ANNOTATION_REIMPORT], None);
    }

    #[test]
    fn a_status_for_another_cluster_never_overwrites_a_connected_one() {
        let current = ann(&[
            (keys::ANNOTATION_STATE, "connected"),
            (keys::ANNOTATION_RANCHER_CLUSTER, "c-m-aaaa1111"),
        ]);
        let op = RecordOp::Status {
            uid: "u".into(),
            state: State::Pending,
            message: String::new(),
            rancher_cluster_id: "c-m-bbbb2222".into(),
            cluster_name: "forged".into(),
        };
        let p = plan(&op, &current, None, NOW);
        assert!(!p.patch.contains_key(keys::ANNOTATION_STATE));
        assert!(!p.patch.contains_key(keys::ANNOTATION_RANCHER_CLUSTER));
        let ev = p.event.expect("event");
        assert!(ev.warning && ev.note.contains("c-m-aaaa1111") && ev.note.contains("c-m-bbbb2222"));
        let mut reimport = current.clone();
        reimport.insert(keys::ANNOTATION_REIMPORT.into(), "true".into());
        assert_eq!(
            plan(&op, &reimport, None, NOW).patch[keys::ANNOTATION_RANCHER_CLUSTER],
            Some("c-m-bbbb2222".into())
        );
    }

    #[test]
    fn an_exclusion_is_not_overridden_by_the_hub() {
        let current = ann(&[(keys::ANNOTATION_STATE, "excluded")]);
        assert_eq!(
            plan(&status(State::Connected, ""), &current, None, NOW),
            Plan::default()
        );
        let p = plan(
            &status(State::Excluded, "excluded"),
            &BTreeMap::new(),
            None,
            NOW,
        );
        assert_eq!(p.patch[keys::ANNOTATION_STATE], Some("excluded".into()));
    }

    #[test]
    fn long_text_is_bounded() {
        assert!(clean_text(&"é".repeat(5000)).len() <= MAX_MESSAGE_TEXT);
    }

    #[test]
    fn a_new_hub_warning_is_recorded_with_one_warning_event_and_can_be_withdrawn() {
        let op = |text: &str| RecordOp::Warning {
            uid: "u".into(),
            text: text.into(),
        };
        let text = "a Rancher cluster fleet-default/x claims this vCluster but was not created by vclink; it is ignored";
        let p = plan(&op(text), &BTreeMap::new(), None, NOW);
        assert_eq!(p.patch[ANNOTATION_WARNING], Some(text.into()));
        assert!(
            !p.patch.contains_key(keys::ANNOTATION_STATE),
            "the state stays"
        );
        let ev = p.event.expect("one Warning Event");
        assert!(ev.warning && ev.note == text);
        // The same warning again (a reconnect): nothing.
        let current = BTreeMap::from([(ANNOTATION_WARNING.to_string(), text.to_string())]);
        assert_eq!(plan(&op(text), &current, None, NOW), Plan::default());
        // Another one: recorded and announced.
        let p = plan(&op("another"), &current, None, NOW);
        assert!(p.event.is_some_and(|e| e.warning));
        // Withdrawn: the annotation goes, no Event.
        let p = plan(&op(""), &current, None, NOW);
        assert_eq!(p.patch[ANNOTATION_WARNING], None);
        assert!(p.event.is_none());
        assert_eq!(plan(&op(""), &BTreeMap::new(), None, NOW), Plan::default());
    }

    #[test]
    fn timestamps_are_rfc3339_seconds() {
        let t = now_rfc3339();
        assert!(t.ends_with('Z') && !t.contains('.'), "{t}");
    }
}
