//! The vocabulary of [`super::decide`]: what one decision is given ([`Input`]: the
//! agent's report through [`HostView`], the hub's [`Timers`] of the vCluster, what was
//! already said on this stream in [`PerVc`], the reinstall candidates [`Successor`] and
//! [`Predecessor`], the Rancher objects) and what it returns ([`Action`]s, with the
//! [`DeleteReason`] of a deletion). Kept apart from the rules so the rules read on
//! their own; the workers build these types and carry the actions out.

use std::time::{Duration, Instant, SystemTime};

use vclink_proto::Secret;
use vclink_proto::v1::{State, VCluster};

use crate::core::index::{MgmtCluster, ProvCluster, TokenState, VcKey};

/// Per-vCluster memory of a live stream (lost with the stream, on purpose: a new stream
/// gets Register and Status again). Deletion timers are not here but in [`Timers`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PerVc {
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
    /// The last `Status.warning` sent (unproven clusters claiming it, see
    /// `clusters::warn`); empty: none.
    pub warning: String,
}

/// The hub's deletion timers of one vCluster, kept per [`VcKey`] outside any stream so
/// that a host whose stream keeps dropping still sees its grace end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Timers {
    /// When the agent sent `Remove` (the Service was confirmed deleted).
    pub removed: Option<Instant>,
    /// When a complete snapshot first lacked the vCluster.
    pub missing: Option<Instant>,
    /// When it was first reported with `vclink.io/import: "false"`, also as wall-clock
    /// time (the Status names the deletion time).
    pub unimport: Option<(Instant, SystemTime)>,
}

impl Timers {
    /// No timer runs.
    pub fn is_empty(&self) -> bool {
        self.removed.is_none() && self.missing.is_none() && self.unimport.is_none()
    }
}

/// One of the [`Timers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// [`Timers::removed`].
    Removed,
    /// [`Timers::missing`].
    Missing,
    /// [`Timers::unimport`].
    Unimport,
}

/// The host stream's view of one vCluster.
#[derive(Clone, Copy, Debug)]
pub struct HostView<'a> {
    /// The vCluster as last reported, if it is in the reported set.
    pub reported: Option<&'a VCluster>,
    /// Why the hub refuses this reported vCluster (foreign project, foreign cluster,
    /// over a limit): it is held as "reported but refused".
    pub refused: Option<&'a str>,
    /// A complete snapshot arrived on this stream.
    pub snapshot_complete: bool,
    /// Stream memory for this vCluster.
    pub per_vc: &'a PerVc,
}

/// For an unreported vCluster with a cluster: a Service of the same namespace and name
/// the host reports under another UID (a reinstall).
#[derive(Clone, Copy, Debug)]
pub struct Successor<'a> {
    /// As reported.
    pub vc: &'a VCluster,
    /// It has a cluster of its own key already.
    pub has_cluster: bool,
}

/// For a reported vCluster without a cluster: the cluster of the same host, namespace
/// and name under another Service UID.
#[derive(Clone, Copy, Debug)]
pub struct Predecessor<'a> {
    /// That cluster.
    pub prov: &'a ProvCluster,
    /// The host still reports that other UID (then it is no predecessor).
    pub reported: bool,
    /// The hub is deleting it.
    pub deleting_by_us: bool,
}

/// Everything [`decide`] looks at.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    /// The vCluster.
    pub key: &'a VcKey,
    /// Now.
    pub now: Instant,
    /// Now on the wall clock (only for messages).
    pub wall_now: SystemTime,
    /// --removal-grace.
    pub grace: Duration,
    /// The host's live stream; `None` when the host has none (then nothing happens).
    pub host: Option<HostView<'a>>,
    /// The hub's timers of this vCluster.
    pub timers: &'a Timers,
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
    /// See [`Successor`].
    pub successor: Option<Successor<'a>>,
    /// See [`Predecessor`].
    pub predecessor: Option<Predecessor<'a>>,
}

/// Why the hub deletes a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteReason {
    /// The agent sent Remove and the grace passed.
    Removed,
    /// Complete snapshots lacked it for the whole grace period.
    MissingFromSnapshot,
    /// It was reported with `vclink.io/import: "false"` for the whole grace period.
    Unimported,
}

impl DeleteReason {
    /// Metric/log label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Removed => "removed",
            Self::MissingFromSnapshot => "missing_from_snapshot",
            Self::Unimported => "unimported",
        }
    }
}

/// One step for reconcile to carry out (not `Eq`: a report's quota map is not).
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Create (or adopt) the provisioning cluster.
    Create(VCluster),
    /// Move the cluster `name` (object UID `uid`) of the reinstalled vCluster whose
    /// Service UID was `from_svc_uid` to this one: relabel, no delete, no create.
    Reclaim {
        /// The cluster's namespace (Fleet workspace): it stays there.
        namespace: String,
        name: String,
        uid: String,
        from_svc_uid: String,
        vc: VCluster,
    },
    /// Delete the provisioning cluster `name` (labels already checked).
    Delete {
        /// The cluster's namespace (Fleet workspace).
        namespace: String,
        name: String,
        uid: String,
        reason: DeleteReason,
    },
    /// Start this timer now.
    StartTimer(Timer),
    /// Stop this timer.
    ClearTimer(Timer),
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
