//! Tests of the stream state machine, including a property test feeding arbitrary and
//! adversarial message sequences.

use super::*;
use proptest::prelude::*;
use vclink_proto::v1::{Heartbeat, Hello, Remove, Snapshot, Upsert, registration_progress::Phase};

const HOST: &str = "c-m-host0001";

fn uid(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

fn vc(n: u32) -> VCluster {
    VCluster {
        uid: uid(n),
        namespace: "ns".into(),
        name: format!("vc{n}"),
        ..Default::default()
    }
}

fn snap(generation: u64, vs: Vec<VCluster>, last: bool) -> AgentMessage {
    AgentMessage {
        msg: Some(Msg::Snapshot(Snapshot {
            generation,
            vclusters: vs,
            last,
        })),
    }
}

fn upsert(v: VCluster) -> AgentMessage {
    AgentMessage {
        msg: Some(Msg::Upsert(Upsert { vcluster: Some(v) })),
    }
}

fn remove(n: u32) -> AgentMessage {
    AgentMessage {
        msg: Some(Msg::Remove(Remove {
            uid: uid(n),
            namespace: "ns".into(),
            name: format!("vc{n}"),
        })),
    }
}

#[test]
fn chunked_snapshot_acts_on_the_last_chunk_only() {
    let mut s = SessionState::new(HOST, 10);
    assert_eq!(s.handle(snap(1, vec![vc(1)], false)), Ok(None));
    let Ok(Some(Effect::Snapshot(all))) = s.handle(snap(1, vec![vc(2)], true)) else {
        panic!()
    };
    assert_eq!(all.len(), 2);
    assert_eq!(s.known(), 2);
}

#[test]
fn a_new_generation_discards_the_partial_snapshot() {
    let mut s = SessionState::new(HOST, 10);
    s.handle(snap(1, vec![vc(1)], false)).unwrap();
    let Ok(Some(Effect::Snapshot(all))) = s.handle(snap(2, vec![vc(2)], true)) else {
        panic!()
    };
    assert_eq!(all, vec![vc(2)]);
}

#[test]
fn a_snapshot_replaces_the_reported_set() {
    let mut s = SessionState::new(HOST, 10);
    s.handle(snap(1, vec![vc(1), vc(2)], true)).unwrap();
    s.handle(snap(2, vec![vc(3)], true)).unwrap();
    assert_eq!(s.known(), 1);
}

#[test]
fn only_the_hard_cap_closes_the_stream() {
    // The per-agent import limit is the hub's per-vCluster refusal (scope::Admission);
    // the session only bounds what one stream may report at all.
    let mut s = SessionState::new(HOST, 0);
    let cap = reported_cap(0);
    assert_eq!(cap, vclink_proto::limits::MAX_SNAPSHOT_CHUNK);
    let chunk: Vec<_> = (1..=cap as u32).map(vc).collect();
    s.handle(snap(1, chunk, false)).unwrap();
    let e = s
        .handle(snap(1, vec![vc(cap as u32 + 1)], true))
        .unwrap_err();
    assert_eq!(
        (e.code, e.reason),
        (Code::ResourceExhausted, "too_many_vclusters")
    );
    let mut s = SessionState::new(HOST, 1);
    s.handle(snap(1, vec![vc(1), vc(2), vc(3)], true))
        .expect("over the import limit is no protocol violation");
    s.handle(upsert(vc(4))).unwrap();
    assert_eq!(s.known(), 4);
}

#[test]
fn invalid_input_is_refused() {
    let mut s = SessionState::new(HOST, 10);
    let mut bad = vc(1);
    bad.namespace = "Not_A_Label".into();
    assert_eq!(
        s.handle(upsert(bad)).unwrap_err().code,
        Code::InvalidArgument
    );
    // A project of another cluster is refused per vCluster by the hub, not here.
    let mut foreign = vc(1);
    foreign.project_id = "c-m-other001:p-abcde".into();
    assert!(s.handle(upsert(foreign)).is_ok());
    let mut own = vc(1);
    own.project_id = format!("{HOST}:p-abcde");
    s.handle(upsert(own)).unwrap();
    let hello = AgentMessage {
        msg: Some(Msg::Hello(Hello::default())),
    };
    assert_eq!(s.handle(hello).unwrap_err().reason, "duplicate_hello");
    let e = s.handle(snap(1, vec![vc(5), vc(5)], true)).unwrap_err();
    assert_eq!(e.reason, "duplicate_uid");
    assert_eq!(
        s.handle(AgentMessage {
            msg: Some(Msg::Upsert(Upsert { vcluster: None }))
        })
        .unwrap_err()
        .code,
        Code::InvalidArgument
    );
}

#[test]
fn heartbeats_and_unknown_messages_are_ignored() {
    let mut s = SessionState::new(HOST, 10);
    assert_eq!(
        s.handle(AgentMessage {
            msg: Some(Msg::Heartbeat(Heartbeat {}))
        }),
        Ok(None)
    );
    assert_eq!(s.handle(AgentMessage { msg: None }), Ok(None));
}

#[test]
fn progress_is_passed_on() {
    let mut s = SessionState::new(HOST, 10);
    let p = RegistrationProgress {
        uid: uid(1),
        phase: Phase::Failed as i32,
        message: "x".into(),
        rancher_cluster_id: "c-m-x1234567".into(),
    };
    assert_eq!(
        s.handle(AgentMessage {
            msg: Some(Msg::Progress(p.clone()))
        }),
        Ok(Some(Effect::Progress(p)))
    );
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z0-9-]{1,12}",
        ".{0,80}",
        Just("c-m-host0001".to_string()),
        Just("x".repeat(70)),
    ]
}

fn any_vc() -> impl Strategy<Value = VCluster> {
    (
        0u32..6,
        any_text(),
        any_text(),
        prop_oneof![
            Just(String::new()),
            Just(format!("{HOST}:p-abcde")),
            Just("c-m-evil0001:p-x".to_string()),
            any_text()
        ],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(n, ns, name, project_id, valid_uid, deleted)| VCluster {
            uid: if valid_uid {
                uid(n)
            } else {
                format!("bad-{n}")
            },
            namespace: if ns.is_empty() { "ns".into() } else { ns },
            name: if name.is_empty() {
                format!("vc{n}")
            } else {
                name
            },
            project_id,
            rancher_cluster_deleted: deleted,
            ..Default::default()
        })
}

fn any_msg() -> impl Strategy<Value = AgentMessage> {
    prop_oneof![
        (
            0u64..3,
            proptest::collection::vec(any_vc(), 0..6),
            any::<bool>()
        )
            .prop_map(|(g, v, l)| snap(g, v, l)),
        any_vc().prop_map(upsert),
        (0u32..6).prop_map(remove),
        (any_text(), any_text()).prop_map(|(u, m)| AgentMessage {
            msg: Some(Msg::Progress(RegistrationProgress {
                uid: u,
                phase: 3,
                message: m,
                rancher_cluster_id: String::new()
            }))
        }),
        Just(AgentMessage {
            msg: Some(Msg::Hello(Hello::default()))
        }),
        Just(AgentMessage {
            msg: Some(Msg::Heartbeat(Heartbeat {}))
        }),
        Just(AgentMessage { msg: None }),
    ]
}

proptest! {
    #[test]
    fn arbitrary_sequences_never_panic_and_rejections_change_nothing(
        limit in 0usize..5,
        msgs in proptest::collection::vec(any_msg(), 0..40),
    ) {
        let mut s = SessionState::new(HOST, limit);
        for m in msgs {
            let before = s.clone();
            match s.handle(m) {
                Err(_) => prop_assert_eq!(&s, &before),
                Ok(Some(Effect::Snapshot(v))) => prop_assert!(v.len() <= reported_cap(limit)),
                Ok(_) => {}
            }
            prop_assert!(s.known() <= reported_cap(limit));
        }
    }
}
