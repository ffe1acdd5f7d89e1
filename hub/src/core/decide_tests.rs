//! Unit tests of [`super::decide`]: creation, registration, status transitions and the
//! deletion-needs-proof rules (one test per rule and per "never deletes" case; the
//! exclusion, refusal and reinstall rules are in `decide_rules_tests.rs`).

use std::time::{Duration, Instant};

use vclink_proto::Secret;

use super::*;
use crate::core::index::MgmtCluster;

pub(super) const HOST: &str = "c-m-host0001";
pub(super) const UID: &str = "0b6f7c52-8a8e-4c3f-9d51-3c1e2a4b5c6d";

pub(super) fn key() -> VcKey {
    VcKey::new(HOST, UID)
}

pub(super) fn vc() -> VCluster {
    VCluster {
        uid: UID.into(),
        namespace: "team-a".into(),
        name: "vc1".into(),
        ..Default::default()
    }
}

pub(super) fn prov(mgmt: Option<&str>) -> ProvCluster {
    ProvCluster {
        name: "c-m-host0001-team-a-vc1".into(),
        uid: "p-uid".into(),
        key: Some(key()),
        mgmt_id: mgmt.map(Into::into),
        ready: false,
        deleting: false,
        project: None,
        vcluster: Some(("team-a".into(), "vc1".into())),
        version: 0,
        ..Default::default()
    }
}

fn mgmt(conn: Conn) -> MgmtCluster {
    MgmtCluster {
        id: "c-m-vc000001".into(),
        conn,
        host_opt_in: false,
        nested_opt_in: false,
        display_name: None,
    }
}

pub(super) struct World {
    pub key: VcKey,
    pub now: Instant,
    pub reported: Option<VCluster>,
    pub refused: Option<String>,
    pub snapshot_complete: bool,
    pub live: bool,
    pub per_vc: PerVc,
    pub timers: Timers,
    pub successor: Option<(VCluster, bool)>,
    pub predecessor: Option<(ProvCluster, bool)>,
    pub prov: Option<ProvCluster>,
    pub mgmt: Option<MgmtCluster>,
    pub token: TokenState,
    pub user_deleted: bool,
    pub deleting_by_us: bool,
    pub owner_problem: Option<&'static str>,
}

impl World {
    pub fn new() -> Self {
        Self {
            key: key(),
            now: Instant::now(),
            reported: Some(vc()),
            refused: None,
            snapshot_complete: true,
            live: true,
            per_vc: PerVc::default(),
            timers: Timers::default(),
            successor: None,
            predecessor: None,
            prov: None,
            mgmt: None,
            token: TokenState::Missing,
            user_deleted: false,
            deleting_by_us: false,
            owner_problem: None,
        }
    }

    /// A world whose vCluster is imported already: its provisioning cluster has the
    /// management cluster `c-m-vc000001`, connected as `conn`.
    pub fn imported(conn: Conn) -> Self {
        let mut w = Self::new();
        w.prov = Some(prov(Some("c-m-vc000001")));
        w.mgmt = Some(mgmt(conn));
        w
    }

    pub fn run(&self) -> Vec<Action> {
        let host = self.live.then_some(HostView {
            reported: self.reported.as_ref(),
            refused: self.refused.as_deref(),
            snapshot_complete: self.snapshot_complete,
            per_vc: &self.per_vc,
        });
        decide(&Input {
            key: &self.key,
            now: self.now,
            wall_now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            grace: Duration::from_secs(300),
            host,
            timers: &self.timers,
            successor: self.successor.as_ref().map(|(vc, has_cluster)| Successor {
                vc,
                has_cluster: *has_cluster,
            }),
            predecessor: self.predecessor.as_ref().map(|(p, reported)| Predecessor {
                prov: p,
                reported: *reported,
                deleting_by_us: false,
            }),
            prov: self.prov.as_ref(),
            mgmt: self.mgmt.as_ref(),
            token: self.token.clone(),
            user_deleted: self.user_deleted,
            deleting_by_us: self.deleting_by_us,
            owner_problem: self.owner_problem,
        })
    }

    /// Asserts that the grace of 300 s, which began `elapsed` ago, ends in a Delete
    /// for `reason` at its last second and not a second before.
    fn assert_deletes_at_grace_end(&mut self, elapsed: Duration, reason: DeleteReason) {
        self.now += Duration::from_secs(299) - elapsed;
        assert!(!has_delete(&self.run()));
        self.now += Duration::from_secs(1);
        assert!(
            matches!(&self.run()[0], Action::Delete { reason: r, .. } if *r == reason),
            "expected a Delete for {reason:?}"
        );
    }
}

pub(super) fn states(actions: &[Action]) -> Vec<(State, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Status { state, message, .. } => Some((*state, message.clone())),
            _ => None,
        })
        .collect()
}

pub(super) fn has_delete(actions: &[Action]) -> bool {
    actions.iter().any(|a| matches!(a, Action::Delete { .. }))
}

#[test]
fn a_new_vcluster_is_created_and_reported_pending() {
    let a = World::new().run();
    assert!(matches!(a[0], Action::Create(_)));
    assert_eq!(
        states(&a),
        vec![(State::Pending, "creating the Rancher cluster".into())]
    );
}

#[test]
fn an_existing_cluster_is_not_created_again() {
    let mut w = World::new();
    w.prov = Some(prov(None));
    let a = w.run();
    assert!(!a.iter().any(|a| matches!(a, Action::Create(_))));
    assert_eq!(states(&a)[0].0, State::Pending);
}

#[test]
fn nothing_happens_without_a_live_stream() {
    let mut w = World::new();
    w.live = false;
    w.prov = Some(prov(None));
    assert_eq!(w.run(), vec![]);
    // Not even with every timer long past.
    w.reported = None;
    let long_ago = w.now - Duration::from_secs(3600);
    w.timers = Timers {
        removed: Some(long_ago),
        missing: Some(long_ago),
        unimport: Some((long_ago, SystemTime::UNIX_EPOCH)),
    };
    assert_eq!(w.run(), vec![]);
}

#[test]
fn token_placeholder_without_secret_waits() {
    let mut w = World::imported(Conn::NotConnected);
    w.token = TokenState::WaitingSecret;
    assert_eq!(
        states(&w.run()),
        vec![(
            State::Pending,
            "waiting for registration token Secret".into()
        )]
    );
}

#[test]
fn a_resolved_token_sends_register_once_per_stream() {
    let mut w = World::imported(Conn::NotConnected);
    let url = Secret::new("https://r/v3/import/t_c-m-vc000001.yaml");
    w.token = TokenState::Ready(url.clone(), w.now);
    let a = w.run();
    assert!(matches!(&a[0], Action::Register { mgmt_id, .. } if mgmt_id == "c-m-vc000001"));
    assert_eq!(states(&a)[0].0, State::Registering);
    // Sent already (and its status): nothing more.
    w.per_vc.registered = Some(("c-m-vc000001".into(), url));
    w.per_vc.last_status = Some((
        State::Registering,
        "registration sent to the agent".into(),
        "c-m-vc000001".into(),
        "c-m-host0001-team-a-vc1".into(),
    ));
    assert_eq!(w.run(), vec![]);
    // A new token: send again.
    w.token = TokenState::Ready(
        Secret::new("https://r/v3/import/t2_c-m-vc000001.yaml"),
        w.now,
    );
    assert!(matches!(w.run()[0], Action::Register { .. }));
}

#[test]
fn a_failed_registration_is_resent_after_backoff() {
    let mut w = World::imported(Conn::NotConnected);
    let url = Secret::new("https://r/x");
    w.token = TokenState::Ready(url.clone(), w.now);
    w.per_vc.registered = Some(("c-m-vc000001".into(), url));
    w.per_vc.failure = Some((
        "manifest fetch: 400".into(),
        w.now + Duration::from_secs(10),
    ));
    let a = w.run();
    assert_eq!(states(&a)[0].0, State::Error);
    assert!(a.contains(&Action::RequeueAt(w.now + Duration::from_secs(10))));
    assert!(!a.iter().any(|a| matches!(a, Action::Register { .. })));
    w.now += Duration::from_secs(11);
    assert!(w.run().iter().any(|a| matches!(a, Action::Register { .. })));
}

#[test]
fn connection_states_map_to_status() {
    let mut w = World::imported(Conn::Connected);
    assert_eq!(states(&w.run())[0].0, State::Connected);
    w.mgmt = Some(mgmt(Conn::Disconnected));
    assert_eq!(states(&w.run())[0].0, State::Disconnected);
    // Not connected, but the provisioning cluster was ready once: disconnected, no Register.
    w.mgmt = Some(mgmt(Conn::NotConnected));
    w.prov.as_mut().unwrap().ready = true;
    w.token = TokenState::Ready(Secret::new("u"), w.now);
    let a = w.run();
    assert_eq!(states(&a)[0].0, State::Disconnected);
    assert!(!a.iter().any(|a| matches!(a, Action::Register { .. })));
}

#[test]
fn remove_deletes_only_after_the_grace() {
    let mut w = World::new();
    w.prov = Some(prov(None));
    w.reported = None;
    w.timers.removed = Some(w.now);
    assert_eq!(
        w.run(),
        vec![Action::RequeueAt(w.now + Duration::from_secs(300))]
    );
    w.assert_deletes_at_grace_end(Duration::ZERO, DeleteReason::Removed);
}

#[test]
fn a_reconnect_does_not_restart_the_removal_grace() {
    // The timers are the hub's: a new stream (fresh per-stream memory, no snapshot
    // yet) still sees the grace end at the time the first Remove started it.
    let mut w = World::new();
    w.prov = Some(prov(None));
    w.reported = None;
    w.timers.removed = Some(w.now);
    w.now += Duration::from_secs(301);
    w.per_vc = PerVc::default();
    w.snapshot_complete = false;
    assert!(has_delete(&w.run()));
}

#[test]
fn a_reconnect_does_not_restart_the_missing_grace() {
    let mut w = World::new();
    w.prov = Some(prov(None));
    w.reported = None;
    w.timers.missing = Some(w.now);
    w.now += Duration::from_secs(200);
    // Reconnected, snapshot not complete yet: nothing, and no restart.
    w.snapshot_complete = false;
    assert_eq!(w.run(), vec![]);
    // Its complete snapshot lacks it too: the grace counts from the first one.
    w.snapshot_complete = true;
    assert_eq!(
        w.run(),
        vec![Action::RequeueAt(
            w.now - Duration::from_secs(200) + Duration::from_secs(300)
        )]
    );
    w.assert_deletes_at_grace_end(Duration::from_secs(200), DeleteReason::MissingFromSnapshot);
}

#[test]
fn remove_for_a_cluster_of_another_host_deletes_nothing() {
    let mut w = World::new();
    let mut p = prov(None);
    p.key = Some(VcKey::new("c-m-other001", UID));
    w.prov = Some(p);
    w.reported = None;
    w.timers.removed = Some(w.now - Duration::from_secs(3600));
    let a = w.run();
    assert!(!has_delete(&a));
    assert_eq!(a, vec![Action::ClearTimer(Timer::Removed)]);
}

#[test]
fn missing_from_a_snapshot_deletes_only_after_the_grace() {
    let mut w = World::new();
    w.prov = Some(prov(None));
    w.reported = None;
    let a = w.run();
    assert_eq!(
        a,
        vec![
            Action::StartTimer(Timer::Missing),
            Action::RequeueAt(w.now + Duration::from_secs(300))
        ]
    );
    w.timers.missing = Some(w.now);
    w.assert_deletes_at_grace_end(Duration::ZERO, DeleteReason::MissingFromSnapshot);
}

#[test]
fn an_incomplete_snapshot_is_no_proof() {
    let mut w = World::new();
    w.prov = Some(prov(None));
    w.reported = None;
    w.snapshot_complete = false;
    w.timers.missing = Some(w.now - Duration::from_secs(3600));
    assert_eq!(w.run(), vec![]);
}

#[test]
fn a_vcluster_that_comes_back_stops_the_grace() {
    let mut w = World::new();
    w.prov = Some(prov(None));
    w.timers.missing = Some(w.now);
    w.timers.removed = Some(w.now);
    let a = w.run();
    assert_eq!(a[0], Action::ClearTimer(Timer::Missing));
    assert_eq!(a[1], Action::ClearTimer(Timer::Removed));
    assert!(!has_delete(&a));
}

#[test]
fn a_user_deletion_sends_forget_and_never_recreates() {
    let mut w = World::new();
    w.user_deleted = true;
    let a = w.run();
    assert!(matches!(&a[0], Action::Forget { .. }));
    assert!(!a.iter().any(|a| matches!(a, Action::Create(_))));
    w.per_vc.forgotten = true;
    assert_eq!(w.run(), vec![]);
    // The agent acknowledged: forget the flag, still no create.
    w.reported.as_mut().unwrap().rancher_cluster_deleted = true;
    assert_eq!(w.run(), vec![Action::ClearUserDeleted]);
    w.user_deleted = false;
    assert_eq!(w.run(), vec![]);
    // The user cleared the annotation: import again.
    w.reported.as_mut().unwrap().rancher_cluster_deleted = false;
    assert!(matches!(w.run()[0], Action::Create(_)));
}

#[test]
fn a_cluster_being_deleted_by_someone_else_is_a_user_deletion() {
    let mut w = World::new();
    let mut p = prov(None);
    p.deleting = true;
    w.prov = Some(p);
    assert!(matches!(&w.run()[0], Action::Forget { .. }));
}

#[test]
fn clusters_we_are_deleting_are_left_alone() {
    let mut w = World::new();
    w.prov = Some(prov(None));
    w.reported = None;
    w.deleting_by_us = true;
    w.timers.missing = Some(w.now - Duration::from_secs(3600));
    assert_eq!(w.run(), vec![]);
}

#[test]
fn status_is_sent_only_on_change() {
    let mut w = World::imported(Conn::Connected);
    let a = w.run();
    let Action::Status {
        state,
        message,
        mgmt_id,
        cluster_name,
    } = a[0].clone()
    else {
        panic!("{a:?}")
    };
    w.per_vc.last_status = Some((state, message, mgmt_id, cluster_name));
    assert_eq!(w.run(), vec![]);
}

#[test]
fn a_failing_create_keeps_its_error_status() {
    let mut w = World::new();
    w.per_vc.last_status = Some((
        State::Error,
        "creating cluster x: denied".into(),
        String::new(),
        String::new(),
    ));
    let a = w.run();
    assert!(matches!(a[0], Action::Create(_)));
    assert!(states(&a).is_empty());
}

#[test]
fn an_owner_binding_problem_turns_the_status_into_an_error() {
    let mut w = World::imported(Conn::Connected);
    let problem = "granting cluster-owner to user:u-a: refused: not allowed";
    w.owner_problem = Some(problem);
    let out = w.run();
    assert_eq!(
        states(&out),
        [(
            State::Error,
            format!("connected to Rancher; owner bindings: {problem}")
        )]
    );
    // Without a problem the same cluster is simply connected.
    w.owner_problem = None;
    assert_eq!(states(&w.run())[0].0, State::Connected);
}
