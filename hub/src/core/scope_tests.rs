//! Scope checks against an index holding vClusters of another host, per-vCluster
//! admission (refusals and the two limits), host opt-in, and a property
//! test driving random and adversarial message sequences through the session state
//! machine *and* the hub's shared state: no panic, and a refused message leaves the
//! world (the host's reported set, per-vCluster memory, queued work) unchanged.

use std::sync::Arc;

use proptest::prelude::*;
use vclink_proto::v1::agent_message::Msg;
use vclink_proto::v1::{AgentMessage, Exclusion, RegistrationProgress, Remove, Snapshot, Upsert};

use super::*;
use crate::core::index::{Conn, ProvCluster};
use crate::core::proof::Trust;
use crate::core::session::SessionState;
use crate::state::Hub;

const ME: &str = "c-m-mine0001";
const OTHER: &str = "c-m-other001";
const OTHER_VC_CLUSTER: &str = "c-m-vcother1";

fn uid(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

fn index_with_foreign() -> Index {
    let mut i = Index::default();
    i.apply_prov(ProvCluster {
        name: "other-vc".into(),
        uid: "p1".into(),
        key: Some(VcKey::new(OTHER, uid(99))),
        mgmt_id: Some(OTHER_VC_CLUSTER.into()),
        trust: Trust::Proven,
        ..Default::default()
    });
    i
}

fn vc(n: u32) -> VCluster {
    VCluster {
        uid: uid(n),
        namespace: "ns".into(),
        name: format!("vc{n}"),
        ..Default::default()
    }
}

#[test]
fn foreign_uids_close_the_stream_in_o1() {
    let i = index_with_foreign();
    assert!(check(&i, ME, &Effect::Upsert(vc(1))).is_ok());
    let e = check(&i, ME, &Effect::Upsert(vc(99))).unwrap_err();
    assert_eq!((e.code, e.reason), (Code::PermissionDenied, "foreign_uid"));
    assert!(
        check(&i, OTHER, &Effect::Upsert(vc(99))).is_ok(),
        "the owner may"
    );
    assert!(check(&i, ME, &Effect::Snapshot(vec![vc(2), vc(99)])).is_err());
    let e = check(&i, ME, &Effect::Remove(uid(99))).unwrap_err();
    assert_eq!(e.reason, "foreign_uid");
    assert!(check(&i, OTHER, &Effect::Remove(uid(99))).is_ok());
    let p = RegistrationProgress {
        uid: uid(99),
        ..Default::default()
    };
    assert_eq!(
        check(&i, ME, &Effect::Progress(p)).unwrap_err().code,
        Code::PermissionDenied
    );
    let p = RegistrationProgress {
        uid: uid(1),
        rancher_cluster_id: OTHER_VC_CLUSTER.into(),
        ..Default::default()
    };
    assert_eq!(
        check(&i, ME, &Effect::Progress(p)).unwrap_err().reason,
        "foreign_cluster"
    );
    // A recorded cluster of another host is no protocol violation: refused per vCluster.
    let mut spoof = vc(1);
    spoof.recorded_cluster_id = OTHER_VC_CLUSTER.into();
    assert!(check(&i, ME, &Effect::Upsert(spoof)).is_ok());
}

fn limits(per_agent: usize, per_namespace: usize) -> Admission {
    Admission::new(Limits {
        per_agent,
        per_namespace,
    })
}

fn excluded(n: u32, kind: ExclusionKind) -> VCluster {
    VCluster {
        exclusion: Some(Exclusion {
            kind: kind as i32,
            reason: "x".into(),
        }),
        ..vc(n)
    }
}

#[test]
fn a_foreign_project_or_cluster_refuses_that_vcluster_only() {
    let i = index_with_foreign();
    let mut a = limits(10, 10);
    let mut project = vc(1);
    project.project_id = format!("{OTHER}:p-abcde");
    let mut recorded = vc(2);
    recorded.recorded_cluster_id = OTHER_VC_CLUSTER.into();
    let reasons = a.admit_all(&i, ME, &[project, recorded, vc(3)]);
    assert_eq!(reasons, ["foreign_project", "foreign_cluster"]);
    assert!(a.refusal(&uid(1)).unwrap().message.contains(OTHER));
    assert!(
        a.refusal(&uid(2))
            .unwrap()
            .message
            .contains(OTHER_VC_CLUSTER)
    );
    assert_eq!(a.refusal(&uid(3)), None, "the others go on");
    assert_eq!(a.counted(), 1);
    // Fixed by the user: admitted on its next Upsert.
    assert_eq!(a.admit(&i, ME, &vc(1)), None);
    assert_eq!(a.refusal(&uid(1)), None);
    // The same refusal again is not counted twice.
    let mut again = vc(2);
    again.recorded_cluster_id = OTHER_VC_CLUSTER.into();
    assert_eq!(a.admit(&i, ME, &again), None);
    assert!(a.refusal(&uid(2)).is_some());
}

#[test]
fn limits_refuse_per_vcluster_and_count_only_vclusters_to_import() {
    let i = Index::default();
    let mut a = limits(2, 10);
    let reasons = a.admit_all(
        &i,
        ME,
        &[
            excluded(10, ExclusionKind::Excluded),
            excluded(11, ExclusionKind::Invalid),
            excluded(12, ExclusionKind::Unimport),
            vc(1),
            vc(2),
            vc(3),
        ],
    );
    assert_eq!(reasons, ["over_agent_limit"]);
    assert_eq!(a.counted(), 2);
    assert!(a.refusal(&uid(3)).is_some());
    for n in [10, 11, 12, 1, 2] {
        assert_eq!(a.refusal(&uid(n)), None, "{n}");
    }
    // An update of a counted one keeps its place.
    assert_eq!(a.admit(&i, ME, &vc(2)), None);
    assert_eq!(a.refusal(&uid(2)), None);
    // A removal frees a slot for a refused one.
    a.forget(&uid(1));
    assert_eq!(a.refused_for_limit(), [uid(3)]);
    assert_eq!(a.admit(&i, ME, &vc(3)), None);
    assert_eq!(a.refusal(&uid(3)), None);
}

#[test]
fn the_namespace_limit_refuses_per_vcluster() {
    let i = Index::default();
    let mut a = limits(10, 1);
    let other_ns = VCluster {
        namespace: "other".into(),
        ..vc(3)
    };
    let reasons = a.admit_all(&i, ME, &[vc(1), vc(2), other_ns]);
    assert_eq!(reasons, ["over_namespace_limit"]);
    assert!(a.refusal(&uid(2)).unwrap().message.contains("namespace ns"));
    assert_eq!(a.counted(), 2);
}

#[test]
fn an_imported_vcluster_keeps_its_place_over_a_new_one_after_a_reconnect() {
    let mut i = Index::default();
    i.apply_prov(ProvCluster {
        name: "mine".into(),
        uid: "p2".into(),
        key: Some(VcKey::new(ME, uid(2))),
        trust: Trust::Proven,
        ..Default::default()
    });
    let mut a = limits(1, 10);
    a.admit_all(&i, ME, &[vc(1), vc(2)]);
    assert_eq!(a.refusal(&uid(2)), None, "it has a cluster: first");
    assert!(a.refusal(&uid(1)).is_some());
}

fn mgmt(host_opt_in: bool, nested_opt_in: bool) -> MgmtCluster {
    MgmtCluster {
        id: ME.into(),
        conn: Conn::Connected,
        host_opt_in,
        nested_opt_in,
        display_name: None,
    }
}

#[test]
fn hosts_are_served_only_when_opted_in() {
    let rule = |allow_nested| HostOptIn {
        selector: Some("vclink.io/agent=enabled".into()),
        allow_nested,
    };
    let r = rule(false);
    assert_eq!(
        r.refusal(ME, None, false).as_deref(),
        Some(
            "cluster c-m-mine0001 is not opted in: label the Rancher cluster vclink.io/agent=enabled"
        )
    );
    assert!(r.refusal(ME, Some(&mgmt(false, true)), false).is_some());
    assert_eq!(r.refusal(ME, Some(&mgmt(true, false)), false), None);
    // A vCluster cluster vclink created: the nested label AND the hub flag.
    let nested = r.refusal(ME, Some(&mgmt(true, true)), true).unwrap();
    assert!(
        nested.contains("vclink.io/nested-import=enabled"),
        "{nested}"
    );
    assert!(nested.contains("--allow-nested-hosts"), "{nested}");
    let r = rule(true);
    assert!(r.refusal(ME, Some(&mgmt(true, false)), true).is_some());
    assert_eq!(r.refusal(ME, Some(&mgmt(true, true)), true), None);
    // Test hubs without a selector serve everyone.
    let open = HostOptIn {
        selector: None,
        allow_nested: false,
    };
    assert_eq!(open.refusal(ME, None, true), None);
}

fn hub() -> Arc<Hub> {
    crate::testing::TestHub::default()
        .max_vclusters(4)
        .index(index_with_foreign())
        .build()
}

/// What a refused message must not change.
fn fingerprint(hub: &Hub) -> (Vec<(String, String)>, Vec<String>, usize) {
    let w = hub.world();
    let h = w.hosts.get(ME).expect("attached");
    let mut reported: Vec<_> = h
        .reported
        .values()
        .map(|v| (v.uid.clone(), format!("{v:?}")))
        .collect();
    reported.sort();
    let mut per_vc: Vec<_> = h.per_vc.keys().cloned().collect();
    per_vc.sort();
    (reported, per_vc, hub.queue.len())
}

fn any_vc() -> impl Strategy<Value = VCluster> {
    (
        prop_oneof![0u32..4, Just(99)],
        prop_oneof![
            Just(String::new()),
            Just(OTHER_VC_CLUSTER.to_string()),
            Just("c-m-nobody01".to_string())
        ],
        prop_oneof![
            Just(String::new()),
            Just(format!("{ME}:p-abcde")),
            Just(format!("{OTHER}:p-abcde"))
        ],
        prop_oneof![
            Just("ns".to_string()),
            Just("Bad_NS".to_string()),
            "\\PC{0,80}"
        ],
    )
        .prop_map(|(n, recorded, project, ns)| VCluster {
            recorded_cluster_id: recorded,
            project_id: project,
            namespace: ns,
            ..vc(n)
        })
}

fn any_msg() -> impl Strategy<Value = AgentMessage> {
    let m = |msg| AgentMessage { msg: Some(msg) };
    prop_oneof![
        (
            0u64..3,
            proptest::collection::vec(any_vc(), 0..6),
            any::<bool>()
        )
            .prop_map(
                move |(generation, vclusters, last)| m(Msg::Snapshot(Snapshot {
                    generation,
                    vclusters,
                    last
                }))
            ),
        any_vc().prop_map(move |v| m(Msg::Upsert(Upsert { vcluster: Some(v) }))),
        prop_oneof![0u32..4, Just(99)].prop_map(move |n| m(Msg::Remove(Remove {
            uid: uid(n),
            namespace: "ns".into(),
            name: format!("vc{n}"),
        }))),
        (
            prop_oneof![0u32..4, Just(99)],
            prop_oneof![Just(String::new()), Just(OTHER_VC_CLUSTER.to_string())],
            0i32..5
        )
            .prop_map(move |(n, c, phase)| m(Msg::Progress(RegistrationProgress {
                uid: uid(n),
                phase,
                message: "x".into(),
                rancher_cluster_id: c,
            }))),
        Just(AgentMessage { msg: None }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn refused_messages_change_nothing_in_the_hub(msgs in proptest::collection::vec(any_msg(), 0..30)) {
        let hub = hub();
        let (tx, _rx) = tokio::sync::mpsc::channel(1024);
        let stream = hub.attach(ME, tx, tokio_util::sync::CancellationToken::new());
        let mut session = SessionState::new(ME, hub.cfg.max_vclusters);
        for msg in msgs {
            let before = fingerprint(&hub);
            let res = session
                .handle(msg)
                .and_then(|e| e.map_or(Ok(()), |e| hub.apply(ME, stream, e)));
            if let Err(r) = res {
                prop_assert_eq!(fingerprint(&hub), before, "refused ({}) but changed", r.reason);
                break; // the stream is closed on a refusal
            }
            let w = hub.world();
            let h = w.hosts.get(ME).expect("attached");
            prop_assert!(!h.reported.contains_key(&uid(99)), "another host's vCluster never enters this host's set");
            prop_assert!(h.reported.len() <= crate::core::session::reported_cap(4));
            prop_assert!(h.admission.counted() <= 4, "the per-agent limit holds");
        }
    }
}
