//! Scope checks against an index holding vClusters of another host, and a property
//! test driving random and adversarial message sequences through the session state
//! machine *and* the hub's shared state: no panic, and a refused message leaves the
//! world (the host's reported set, per-vCluster memory, queued work) unchanged.

use std::sync::Arc;

use kube::api::DynamicObject;
use proptest::prelude::*;
use serde_json::json;
use vclink_proto::keys::{LABEL_HOST_CLUSTER, LABEL_SERVICE_UID};
use vclink_proto::v1::agent_message::Msg;
use vclink_proto::v1::{AgentMessage, RegistrationProgress, Remove, Snapshot, Upsert};

use super::*;
use crate::core::session::SessionState;
use crate::rancher::parse_prov;
use crate::state::Hub;

const ME: &str = "c-m-mine0001";
const OTHER: &str = "c-m-other001";
const OTHER_VC_CLUSTER: &str = "c-m-vcother1";

fn uid(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

fn index_with_foreign() -> Index {
    let mut i = Index::default();
    let o: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "provisioning.cattle.io/v1", "kind": "Cluster",
        "metadata": {"name": "other-vc", "namespace": "fleet-default", "uid": "p1",
            "labels": {LABEL_HOST_CLUSTER: OTHER, LABEL_SERVICE_UID: uid(99)}},
        "status": {"clusterName": OTHER_VC_CLUSTER}}))
    .unwrap();
    i.apply_prov(parse_prov(&o));
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
fn foreign_rancher_clusters_and_uids_are_denied() {
    let i = index_with_foreign();
    assert!(check(&i, ME, &Effect::Upsert(vc(1))).is_ok());
    let mut spoof = vc(1);
    spoof.recorded_cluster_id = OTHER_VC_CLUSTER.into();
    let e = check(&i, ME, &Effect::Upsert(spoof.clone())).unwrap_err();
    assert_eq!(
        (e.code, e.reason),
        (Code::PermissionDenied, "foreign_cluster")
    );
    assert!(
        check(&i, OTHER, &Effect::Upsert(spoof.clone())).is_ok(),
        "the owner may"
    );
    assert!(check(&i, ME, &Effect::Snapshot(vec![vc(2), spoof])).is_err());
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
    assert_eq!(owners(&i).get(uid(99).as_str()), Some(&OTHER));
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
            prop_assert!(h.reported.len() <= 4);
        }
    }
}
