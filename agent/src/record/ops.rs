//! The recorder's vocabulary, shared by the decision code ([`super::plan`],
//! [`super::announce`], [`super::guard`]): the [`RecordOp`]s other parts of the agent
//! send, the [`Plan`] of writes they become, the `vclink.io/state` values, and the small
//! helpers that build a patch. Kept apart from the decisions so those depend on it and
//! not on each other.
use std::collections::BTreeMap;

use vclink_proto::keys;
use vclink_proto::limits::MAX_MESSAGE_TEXT;
use vclink_proto::v1::State;
use vclink_proto::v1::exclusion::Kind;
use vclink_proto::v1::registration_progress::Phase;

/// Values of [`keys::ANNOTATION_STATE`].
pub mod state {
    /// Rancher cluster created, registration not started.
    pub const PENDING: &str = "pending";
    /// Registration Job running or cluster agent starting.
    pub const REGISTERING: &str = "registering";
    /// Rancher's cluster agent is connected.
    pub const CONNECTED: &str = "connected";
    /// Rancher lost the cluster agent.
    pub const DISCONNECTED: &str = "disconnected";
    /// Something failed; see the last-error annotation.
    pub const ERROR: &str = "error";
    /// A user deleted the Rancher cluster.
    pub const DELETED_IN_RANCHER: &str = "deleted-in-rancher";
    /// Reported but not imported on purpose; see the excluded-reason annotation.
    pub const EXCLUDED: &str = "excluded";
}

/// Something to record on a vCluster's Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordOp {
    /// Rancher-side state reported by the hub.
    Status {
        uid: String,
        state: State,
        message: String,
        rancher_cluster_id: String,
        cluster_name: String,
    },
    /// Registration Job progress (only real transitions are sent here).
    Progress {
        uid: String,
        phase: Phase,
        message: String,
        rancher_cluster_id: String,
        job_name: String,
        /// UID of the Job the agent created (recorded for JobCreated; empty otherwise).
        job_uid: String,
    },
    /// The Rancher cluster was deleted by a user.
    Forget { uid: String, reason: String },
    /// The vCluster is reported excluded (derived from the catalog).
    Excluded {
        uid: String,
        kind: Kind,
        reason: String,
    },
    /// The vCluster is to be imported (derived from the catalog): undo an exclusion.
    Included { uid: String },
    /// Put the agent's mark (label) on the Service.
    Mark { uid: String },
    /// A Register was refused by the guard; explain why.
    RegisterRefused { uid: String, reason: String },
    /// The hub's `Status.warning`: a problem the vCluster's owner should know about that
    /// does not change its state (empty: the previous one is withdrawn).
    Warning { uid: String, text: String },
}

/// Annotation holding the hub's latest warning about the vCluster.
pub const ANNOTATION_WARNING: &str = "vclink.io/warning";

impl RecordOp {
    /// The vCluster (Service UID) the op is about.
    pub fn uid(&self) -> &str {
        match self {
            RecordOp::Status { uid, .. }
            | RecordOp::Progress { uid, .. }
            | RecordOp::Forget { uid, .. }
            | RecordOp::Excluded { uid, .. }
            | RecordOp::Included { uid }
            | RecordOp::Mark { uid }
            | RecordOp::RegisterRefused { uid, .. }
            | RecordOp::Warning { uid, .. } => uid,
        }
    }
}

/// An Event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSpec {
    /// Warning rather than Normal.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Message for the user; never a credential.
    pub note: String,
}

/// What to write for one op. An empty patch means no API write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Annotation key → new value (`None` removes it).
    pub patch: BTreeMap<String, Option<String>>,
    /// Label key → new value (`None` removes it).
    pub labels: BTreeMap<String, Option<String>>,
    /// Event to publish, if any.
    pub event: Option<EventSpec>,
}

/// Hub-provided text made safe for annotations and Events: no control characters, bounded.
pub fn clean_text(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    truncate(s.trim(), MAX_MESSAGE_TEXT)
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Adds `key=value` to `patch` when it differs from `current`.
pub(crate) fn set(
    patch: &mut BTreeMap<String, Option<String>>,
    current: &BTreeMap<String, String>,
    key: &str,
    value: Option<String>,
) {
    if current.get(key) != value.as_ref() {
        patch.insert(key.to_string(), value);
    }
}

impl Plan {
    /// Records `error` as the Service's last error and publishes a Warning Event
    /// `reason` with `note`: what every refused or failed step shows its owner.
    pub(crate) fn warn(
        &mut self,
        current: &BTreeMap<String, String>,
        reason: &'static str,
        error: String,
        note: String,
    ) {
        set(
            &mut self.patch,
            current,
            keys::ANNOTATION_LAST_ERROR,
            Some(error),
        );
        self.event = Some(EventSpec {
            warning: true,
            reason,
            note,
        });
    }
}

/// Moves to `new_state` (recording when), returning whether the state changed.
pub(crate) fn set_state(
    patch: &mut BTreeMap<String, Option<String>>,
    current: &BTreeMap<String, String>,
    new_state: &str,
    now: &str,
) -> bool {
    if current.get(keys::ANNOTATION_STATE).map(String::as_str) == Some(new_state) {
        return false;
    }
    patch.insert(
        keys::ANNOTATION_STATE.to_string(),
        Some(new_state.to_string()),
    );
    patch.insert(
        keys::ANNOTATION_STATE_SINCE.to_string(),
        Some(now.to_string()),
    );
    true
}
