//! The mirror's decision for one vCluster: written only onto the management cluster of
//! a proven provisioning cluster mapped to this vCluster, only with a live report and a
//! state sent, and only when the watched digest differs.

use std::collections::HashMap;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use vclink_proto::v1::{State, VCluster};

use super::plan;
use crate::core::VcKey;
use crate::core::index::{Conn, MgmtCluster, ProvCluster};
use crate::core::proof::Trust;
use crate::core::session::Effect;
use crate::mirror::observed::{Desc, Seen};
use crate::mirror::{Entry, LabelPolicy};
use crate::state::Hub;
use crate::testing::TestHub;

const HOST: &str = "c-m-host0001";
const UID: &str = "00000000-0000-4000-8000-000000000001";
const MGMT: &str = "c-m-vc000001";

fn policy() -> LabelPolicy {
    LabelPolicy::new(&["team".to_string()], &[]).expect("valid")
}

fn prov(trust: Trust, key: &VcKey) -> ProvCluster {
    ProvCluster {
        name: "c-m-host0001-team-a-dev".into(),
        uid: "prov-uid".into(),
        key: Some(key.clone()),
        mgmt_id: Some(MGMT.into()),
        trust,
        version: 1,
        ..Default::default()
    }
}

/// A hub whose host reports the vCluster (labelled team=a) and was sent `state`.
fn setup(
    trust: Trust,
    state: Option<State>,
) -> (
    std::sync::Arc<Hub>,
    VcKey,
    mpsc::Receiver<crate::state::Outbound>,
) {
    let hub = TestHub::default()
        .synced_labels(policy())
        .ready(true)
        .build();
    let key = VcKey::new(HOST, UID);
    hub.world().index.apply_prov(prov(trust, &key));
    let (tx, rx) = mpsc::channel(16);
    let id = hub.attach(HOST, tx, CancellationToken::new());
    let vc = VCluster {
        uid: UID.into(),
        namespace: "team-a".into(),
        name: "dev".into(),
        labels: [("team".to_string(), "a".to_string())].into(),
        ..Default::default()
    };
    hub.apply(HOST, id, Effect::Upsert(vc)).expect("in scope");
    if let Some(s) = state {
        hub.world()
            .hosts
            .get_mut(HOST)
            .expect("attached")
            .per_vc
            .entry(UID.into())
            .or_default()
            .last_status = Some((s, String::new(), MGMT.into(), String::new()));
    }
    (hub, key, rx)
}

fn seen_empty() -> HashMap<String, Entry> {
    [(
        MGMT.to_string(),
        Entry {
            seen: Seen {
                digest: crate::mirror::desired::Mirror::default().digest(),
                desc: Desc::Theirs,
            },
            version: 1,
            took_description: false,
        },
    )]
    .into()
}

#[test]
fn a_proven_mapped_cluster_with_a_difference_is_written() {
    let (hub, key, _rx) = setup(Trust::Proven, Some(State::Connected));
    hub.world().index.apply_mgmt(MgmtCluster {
        id: HOST.into(),
        conn: Conn::Connected,
        host_opt_in: true,
        nested_opt_in: false,
        display_name: Some("prod-eu".into()),
    });
    let seen = seen_empty();
    let w = plan(&hub, &policy(), &key, |id| seen.get(id).copied()).expect("a write");
    assert_eq!(w.id, MGMT);
    assert_eq!(
        w.mirror.annotations["vclink.io/host-cluster-name"],
        "prod-eu"
    );
    assert_eq!(w.mirror.labels.get("team").map(String::as_str), Some("a"));
    assert_eq!(
        w.mirror.description, None,
        "someone else's description stays"
    );
    // The watch then shows exactly that: nothing more to write.
    let converged: HashMap<String, Entry> = [(
        MGMT.to_string(),
        Entry {
            seen: Seen {
                digest: w.mirror.digest(),
                desc: Desc::Theirs,
            },
            version: 2,
            took_description: false,
        },
    )]
    .into();
    assert!(plan(&hub, &policy(), &key, |id| converged.get(id).copied()).is_none());
}

#[test]
fn nothing_is_written_without_proof_state_or_a_watched_cluster() {
    let seen = seen_empty();
    for trust in [Trust::ProvenAtCreate, Trust::default()] {
        let (hub, key, _rx) = setup(trust, Some(State::Connected));
        assert!(
            plan(&hub, &policy(), &key, |id| seen.get(id).copied()).is_none(),
            "{trust:?}: only a fully proven cluster is written"
        );
    }
    let (hub, key, _rx) = setup(Trust::Proven, None);
    assert!(
        plan(&hub, &policy(), &key, |id| seen.get(id).copied()).is_none(),
        "no state sent yet (a restarted hub waits for the agent)"
    );
    let (hub, key, _rx) = setup(Trust::Proven, Some(State::Connected));
    assert!(
        plan(&hub, &policy(), &key, |_| None).is_none(),
        "a cluster the watch has not shown is not written"
    );
    // Another vCluster of the same host never reaches this cluster.
    let other = VcKey::new(HOST, "00000000-0000-4000-8000-000000000002");
    assert!(plan(&hub, &policy(), &other, |id| seen.get(id).copied()).is_none());
}

#[test]
fn an_empty_or_create_time_description_is_taken_once() {
    let (hub, key, _rx) = setup(Trust::Proven, Some(State::Connected));
    let with = |desc, took| -> HashMap<String, Entry> {
        [(
            MGMT.to_string(),
            Entry {
                seen: Seen { digest: 0, desc },
                version: 1,
                took_description: took,
            },
        )]
        .into()
    };
    for (desc, took, described, takes) in [
        (Desc::Empty, false, true, false),
        (Desc::Ours, true, true, false),
        (Desc::CreateText, false, true, true),
        (Desc::CreateText, true, false, false),
        (Desc::Theirs, false, false, false),
    ] {
        let seen = with(desc, took);
        let w = plan(&hub, &policy(), &key, |id| seen.get(id).copied()).expect("a write");
        assert_eq!(
            w.mirror.description.is_some(),
            described,
            "{desc:?} took={took}"
        );
        assert_eq!(w.takes_description, takes, "{desc:?} took={took}");
    }
}
