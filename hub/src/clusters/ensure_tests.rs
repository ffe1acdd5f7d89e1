//! [`ensure`], [`seal`], [`reclaim`] and [`delete`] against an in-memory [`ProvClusters`]
//! fake and a real test hub: one test per branch (create + seal, adopt, a name the index
//! knows is taken, ours or forged, 409 then get — ours, ours half-sealed, forged or
//! another's —, no free name, two proven clusters, API errors, reclaim, delete). The
//! fake keeps the proof annotations and judges them with the real `core::proof`, as the
//! watch does.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use vclink_proto::v1::VCluster;

use super::*;
use crate::core::proof::{self, Observed};
use crate::state::Hub;
use crate::testing::{TestHub, test_proof_key};

const HOST: &str = "c-m-host0001";
const UID: &str = "00000000-0000-4000-8000-000000000001";
const WORKSPACE: &str = "fleet-default";

fn key() -> VcKey {
    VcKey::new(HOST, UID)
}

fn vc() -> VCluster {
    VCluster {
        uid: UID.into(),
        namespace: "team-a".into(),
        name: "vc1".into(),
        ..Default::default()
    }
}

fn name(attempt: u32) -> String {
    candidate_name(HOST, &vc(), attempt)
}

fn status(code: u16) -> kube::Error {
    kube::Error::Api(
        kube::core::Status::failure("refused by the fake", "Fake")
            .with_code(code)
            .boxed(),
    )
}

fn cluster(name: &str, key: Option<VcKey>, mgmt: Option<&str>) -> ProvCluster {
    ProvCluster {
        name: name.into(),
        namespace: WORKSPACE.into(),
        uid: format!("uid-{name}"),
        key,
        mgmt_id: mgmt.map(Into::into),
        ready: false,
        deleting: false,
        project: None,
        vcluster: None,
        trust: Trust::default(),
        version: 1,
    }
}

/// An object of the fake: the reduced cluster plus what its proofs are judged from.
#[derive(Clone, Default)]
struct Obj {
    p: ProvCluster,
    proof: Option<String>,
    proof_uid: Option<String>,
    created: i64,
}

impl Obj {
    /// The cluster as the adapter returns it: judged with the hub's key.
    fn judged(&self) -> ProvCluster {
        let trust = self.p.key.as_ref().map(|k| {
            let s = Subject {
                namespace: WORKSPACE,
                name: &self.p.name,
                host: &k.host,
                svc_uid: &k.uid,
            };
            proof::judge(
                &test_proof_key(),
                &s,
                &Observed {
                    object_uid: &self.p.uid,
                    created_unix: Some(self.created),
                    proof: self.proof.as_deref(),
                    proof_uid: self.proof_uid.as_deref(),
                },
            )
        });
        ProvCluster {
            trust: trust.unwrap_or_default(),
            ..self.p.clone()
        }
    }
}

/// An API server holding provisioning clusters by name; `fail` makes one verb answer
/// with a status code; every call is logged as "verb name".
#[derive(Default)]
struct Fake {
    objects: Mutex<HashMap<String, Obj>>,
    fail: Mutex<HashMap<&'static str, u16>>,
    calls: Mutex<Vec<String>>,
}

impl Fake {
    /// Objects without proofs.
    fn with(objects: impl IntoIterator<Item = ProvCluster>) -> Self {
        let f = Self::default();
        f.objects
            .lock()
            .unwrap()
            .extend(objects.into_iter().map(|p| {
                (
                    p.name.clone(),
                    Obj {
                        p,
                        created: unix_now(),
                        ..Default::default()
                    },
                )
            }));
        f
    }

    /// Signs the object `name` as the hub would have: at create (and, with `sealed`,
    /// the UID proof too).
    fn signed(self, name: &str, sealed: bool) -> Self {
        {
            let mut o = self.objects.lock().unwrap();
            let obj = o.get_mut(name).unwrap();
            let k = obj.p.key.clone().unwrap();
            let s = subject(WORKSPACE, name, &k);
            obj.proof = Some(sign_create(&test_proof_key(), &s, obj.created));
            if sealed {
                obj.proof_uid = Some(sign_uid(&test_proof_key(), &s, &obj.p.uid));
            }
        }
        self
    }

    fn failing(self, verb: &'static str, code: u16) -> Self {
        self.fail.lock().unwrap().insert(verb, code);
        self
    }

    fn call(&self, verb: &'static str, name: &str) -> Result<(), kube::Error> {
        self.calls.lock().unwrap().push(format!("{verb} {name}"));
        match self.fail.lock().unwrap().get(verb) {
            Some(code) => Err(status(*code)),
            None => Ok(()),
        }
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn judged(&self, name: &str) -> ProvCluster {
        self.objects.lock().unwrap()[name].judged()
    }
}

#[async_trait]
impl ProvClusters for Fake {
    async fn create(
        &self,
        name: &str,
        key: &VcKey,
        _: &VCluster,
        proof: &str,
    ) -> Result<ProvCluster, kube::Error> {
        self.call("create", name)?;
        let mut o = self.objects.lock().unwrap();
        if o.contains_key(name) {
            return Err(status(409));
        }
        let obj = Obj {
            p: cluster(name, Some(key.clone()), None),
            proof: Some(proof.into()),
            proof_uid: None,
            created: unix_now(),
        };
        o.insert(name.into(), obj.clone());
        Ok(obj.judged())
    }

    async fn get(&self, name: &str) -> Result<ProvCluster, kube::Error> {
        self.call("get", name)?;
        self.objects
            .lock()
            .unwrap()
            .get(name)
            .map(Obj::judged)
            .ok_or_else(|| status(404))
    }

    async fn label(
        &self,
        name: &str,
        key: &VcKey,
        vc: &VCluster,
        proofs: &Signed,
    ) -> Result<ProvCluster, kube::Error> {
        self.call("label", name)?;
        let mut o = self.objects.lock().unwrap();
        let c = o.get_mut(name).ok_or_else(|| status(404))?;
        c.p.key = Some(key.clone());
        c.p.vcluster = Some((vc.namespace.clone(), vc.name.clone()));
        c.p.version += 1;
        c.proof = Some(proofs.proof.clone());
        c.proof_uid = Some(proofs.proof_uid.clone());
        Ok(c.judged())
    }

    async fn seal(&self, name: &str, proof_uid: &str) -> Result<ProvCluster, kube::Error> {
        self.call("seal", name)?;
        let mut o = self.objects.lock().unwrap();
        let c = o.get_mut(name).ok_or_else(|| status(404))?;
        c.proof_uid = Some(proof_uid.into());
        c.p.version += 1;
        Ok(c.judged())
    }

    async fn label_mgmt(&self, id: &str, _: &VcKey, _: &VCluster) -> Result<(), kube::Error> {
        self.call("label-mgmt", id)
    }

    async fn delete(&self, name: &str, uid: String) -> Result<(), kube::Error> {
        self.call("delete", name)?;
        let mut o = self.objects.lock().unwrap();
        match o.get(name) {
            Some(c) if c.p.uid == uid => {
                o.remove(name);
                Ok(())
            }
            Some(_) => Err(status(409)),
            None => Err(status(404)),
        }
    }
}

/// The hub knows `key`'s cluster by `name` now, proven, and the key was queued for its
/// next step.
fn recorded(hub: &Hub, name: &str) {
    let w = hub.world();
    let p = w.index.prov_for(&key());
    assert_eq!(p.map(|p| p.name.clone()), Some(name.to_string()));
    assert_eq!(p.map(|p| p.trust), Some(Trust::Proven));
    assert!(
        !hub.queue.is_empty(),
        "the key is queued for its next decision"
    );
}

/// The calls of a create of candidate `attempt` that the API accepts, and its seal.
fn creates(attempt: u32) -> Vec<String> {
    vec![
        format!("create {}", name(attempt)),
        format!("seal {}", name(attempt)),
    ]
}

/// The calls of a create of candidate `attempt` refused as a conflict (409), and the
/// read of who holds the name.
fn conflicts(attempt: u32) -> Vec<String> {
    vec![
        format!("create {}", name(attempt)),
        format!("get {}", name(attempt)),
    ]
}

/// `ensure` for the test vCluster succeeds, calling the API exactly with `calls`.
async fn ensures_with<C: std::fmt::Debug>(hub: &Hub, api: &Fake, calls: &[C])
where
    String: PartialEq<C>,
{
    ensure(hub, api, &key(), &vc()).await.unwrap();
    assert_eq!(api.calls(), calls);
}

#[tokio::test]
async fn a_free_name_is_created_with_its_proof_and_sealed() {
    let (hub, api) = (TestHub::default().build(), Fake::default());
    ensures_with(hub.as_ref(), &api, &creates(0)).await;
    recorded(&hub, &name(0));
    let o = api.objects.lock().unwrap()[&name(0)].clone();
    assert!(o.proof.unwrap().starts_with("v1."), "create-time proof");
    assert!(o.proof_uid.unwrap().starts_with("v1."), "UID proof");
}

#[tokio::test]
async fn a_failed_seal_leaves_a_cluster_proven_at_create_that_is_sealed_later() {
    let hub = TestHub::default().build();
    let api = Fake::default().failing("seal", 500);
    let e = ensure(hub.as_ref(), &api, &key(), &vc()).await.unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("writing the proof on cluster {}", name(0))),
        "{e}"
    );
    let half = hub.world().index.prov_for(&key()).cloned().unwrap();
    assert_eq!(half.trust, Trust::ProvenAtCreate, "known, not lost");
    assert_eq!(Known::unsealed(hub.as_ref(), &key()), Some(half));

    // The next round (the worker's seal_if_needed) writes the UID proof: one patch.
    api.fail.lock().unwrap().clear();
    api.calls.lock().unwrap().clear();
    seal_if_needed(hub.as_ref(), &api, &key()).await.unwrap();
    assert_eq!(api.calls(), [format!("seal {}", name(0))]);
    recorded(&hub, &name(0));
    assert_eq!(Known::unsealed(hub.as_ref(), &key()), None);
    seal_if_needed(hub.as_ref(), &api, &key()).await.unwrap();
    assert_eq!(api.calls().len(), 1, "nothing more to seal");
}

#[tokio::test]
async fn a_cluster_of_the_go_operator_is_adopted_with_both_proofs_and_its_management_cluster() {
    let hub = TestHub::default().build();
    hub.world()
        .index
        .apply_legacy(WORKSPACE, "legacy-vc1", Some(key()));
    let api = Fake::with([cluster("legacy-vc1", None, Some("c-m-legacy01"))]);
    ensures_with(
        hub.as_ref(),
        &api,
        &[
            "get legacy-vc1",
            "label legacy-vc1",
            "label-mgmt c-m-legacy01",
        ],
    )
    .await;
    recorded(&hub, "legacy-vc1");
    assert_eq!(api.judged("legacy-vc1").trust, Trust::Proven);
}

#[tokio::test]
async fn an_adopted_cluster_without_management_cluster_yet_is_labelled_alone() {
    let hub = TestHub::default().build();
    hub.world()
        .index
        .apply_legacy(WORKSPACE, "legacy-vc1", Some(key()));
    let api = Fake::with([cluster("legacy-vc1", None, None)]);
    ensures_with(hub.as_ref(), &api, &["get legacy-vc1", "label legacy-vc1"]).await;
    recorded(&hub, "legacy-vc1");
}

#[tokio::test]
async fn a_failed_adoption_is_an_api_error_and_creates_nothing() {
    let hub = TestHub::default().build();
    hub.world()
        .index
        .apply_legacy(WORKSPACE, "legacy-vc1", Some(key()));
    let api = Fake::with([cluster("legacy-vc1", None, None)]).failing("label", 403);
    let e = ensure(hub.as_ref(), &api, &key(), &vc()).await.unwrap_err();
    assert_eq!(e.kind(), "api_denied");
    assert!(
        e.agent_message()
            .starts_with("adopting cluster legacy-vc1: "),
        "{e}"
    );
    assert_eq!(api.calls(), ["get legacy-vc1", "label legacy-vc1"]);
}

#[tokio::test]
async fn a_name_the_index_knows_as_taken_is_skipped_without_a_request() {
    let hub = TestHub::default().build();
    let other = VcKey::new(HOST, "00000000-0000-4000-8000-000000000099");
    hub.world()
        .index
        .apply_prov(cluster(&name(0), Some(other), None).proven());
    let api = Fake::default();
    ensures_with(hub.as_ref(), &api, &creates(1)).await;
    recorded(&hub, &name(1));
}

#[tokio::test]
async fn a_forged_cluster_with_our_labels_only_holds_its_name() {
    // A user's copy of this vCluster's labels under the first name: not ours, never
    // merged into, never touched; the genuine cluster gets the next name.
    let hub = TestHub::default().build();
    hub.world()
        .index
        .apply_prov(cluster(&name(0), Some(key()), None));
    assert!(hub.world().index.prov_for(&key()).is_none(), "not trusted");
    let api = Fake::default();
    ensures_with(hub.as_ref(), &api, &creates(1)).await;
    recorded(&hub, &name(1));
}

#[tokio::test]
async fn a_name_the_index_knows_as_ours_needs_nothing() {
    let hub = TestHub::default().build();
    hub.world()
        .index
        .apply_prov(cluster(&name(0), Some(key()), None).proven());
    let api = Fake::default();
    ensures_with::<String>(hub.as_ref(), &api, &[]).await;
}

#[tokio::test]
async fn a_conflict_with_our_own_earlier_create_is_success() {
    // An earlier attempt created and sealed it; the watch has not delivered it yet.
    let hub = TestHub::default().build();
    let api = Fake::with([cluster(&name(0), Some(key()), None)]).signed(&name(0), true);
    ensures_with(hub.as_ref(), &api, &conflicts(0)).await;
    recorded(&hub, &name(0));
}

#[tokio::test]
async fn a_conflict_with_our_own_unsealed_create_seals_it() {
    // An earlier attempt crashed between the create and the seal.
    let hub = TestHub::default().build();
    let api = Fake::with([cluster(&name(0), Some(key()), None)]).signed(&name(0), false);
    ensures_with(
        hub.as_ref(),
        &api,
        &[conflicts(0), vec![format!("seal {}", name(0))]].concat(),
    )
    .await;
    recorded(&hub, &name(0));
}

#[tokio::test]
async fn a_conflict_with_a_forged_copy_of_our_labels_moves_to_the_next_name() {
    let hub = TestHub::default().build();
    let api = Fake::with([cluster(&name(0), Some(key()), None)]);
    ensures_with(hub.as_ref(), &api, &[conflicts(0), creates(1)].concat()).await;
    recorded(&hub, &name(1));
    assert!(
        api.objects.lock().unwrap()[&name(0)].proof.is_none(),
        "the forged cluster is not touched"
    );
}

#[tokio::test]
async fn a_conflict_with_a_foreign_cluster_moves_to_the_next_name() {
    // A user's cluster (no vclink labels) holds the first name: never merged into it.
    let hub = TestHub::default().build();
    let api = Fake::with([cluster(&name(0), None, None)]);
    ensures_with(hub.as_ref(), &api, &[conflicts(0), creates(1)].concat()).await;
    recorded(&hub, &name(1));
}

#[tokio::test]
async fn every_candidate_taken_is_no_free_name() {
    let hub = TestHub::default().build();
    let api = Fake::with((0..MAX_NAME_ATTEMPTS).map(|n| cluster(&name(n), None, None)));
    let e = ensure(hub.as_ref(), &api, &key(), &vc()).await.unwrap_err();
    assert!(matches!(e, ReconcileError::NoFreeName), "{e}");
    assert_eq!(e.kind(), "no_free_name");
    assert_eq!(api.calls().len(), 2 * MAX_NAME_ATTEMPTS as usize);
    assert!(hub.world().index.prov_for(&key()).is_none());
}

#[tokio::test]
async fn two_proven_clusters_for_one_vcluster_stop_everything() {
    let hub = TestHub::default().build();
    for n in [name(0), name(1)] {
        hub.world()
            .index
            .apply_prov(cluster(&n, Some(key()), None).proven());
    }
    assert!(hub.world().index.prov_for(&key()).is_none(), "neither");
    let api = Fake::default();
    let e = ensure(hub.as_ref(), &api, &key(), &vc()).await.unwrap_err();
    assert_eq!(e.kind(), "duplicate");
    assert!(
        e.agent_message().contains(&name(0)) && e.agent_message().contains(&name(1)),
        "{e}"
    );
    assert!(api.calls().is_empty(), "nothing created: {:?}", api.calls());
    // One of them goes: the other is the vCluster's cluster again.
    hub.world()
        .index
        .delete_prov(&format!("{WORKSPACE}/{}", name(1)));
    assert_eq!(
        hub.world().index.prov_for(&key()).map(|p| p.name.clone()),
        Some(name(0))
    );
}

#[tokio::test]
async fn a_failed_create_is_an_api_error_and_records_nothing() {
    let hub = TestHub::default().build();
    let api = Fake::default().failing("create", 500);
    let e = ensure(hub.as_ref(), &api, &key(), &vc()).await.unwrap_err();
    assert_eq!(e.kind(), "api");
    assert!(
        e.agent_message()
            .starts_with(&format!("creating cluster {}: ", name(0))),
        "{e}"
    );
    assert!(hub.world().index.prov_for(&key()).is_none());
    assert!(hub.queue.is_empty());
}

#[tokio::test]
async fn a_failed_read_after_a_conflict_is_an_api_error() {
    let hub = TestHub::default().build();
    let api = Fake::with([cluster(&name(0), None, None)]).failing("get", 503);
    let e = ensure(hub.as_ref(), &api, &key(), &vc()).await.unwrap_err();
    assert!(
        e.to_string().starts_with(&format!(
            "reading cluster {} after a name conflict",
            name(0)
        )),
        "{e}"
    );
}

#[tokio::test]
async fn delete_marks_the_deletion_as_ours_until_it_fails() {
    let hub = TestHub::default().build();
    let c = cluster(&name(0), Some(key()), None).proven();
    hub.world().index.apply_prov(c.clone());
    let reason = DeleteReason::Removed;

    // Deleted: the watch's delete event will be ours, not a user's.
    let api = Fake::with([c.clone()]);
    delete(hub.as_ref(), &api, &key(), &c.name, c.uid.clone(), reason)
        .await
        .unwrap();
    assert!(hub.world().index.is_deleting_by_us(&key()));
    assert!(api.objects.lock().unwrap().is_empty());

    // Already gone: success, and nothing is left marked.
    let api = Fake::default();
    delete(hub.as_ref(), &api, &key(), &c.name, c.uid.clone(), reason)
        .await
        .unwrap();
    assert!(!hub.world().index.is_deleting_by_us(&key()));

    // Refused: an error, unmarked (a later delete event is a user's).
    let api = Fake::with([c.clone()]).failing("delete", 403);
    let e = delete(hub.as_ref(), &api, &key(), &c.name, c.uid.clone(), reason)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "api_denied");
    assert!(!hub.world().index.is_deleting_by_us(&key()));
}

#[test]
fn requested_names_win_and_collisions_move_on() {
    let mut vc = VCluster {
        namespace: "ns".into(),
        name: "vc".into(),
        ..Default::default()
    };
    assert_eq!(candidate_name("prod-eu", &vc, 0), "prod-eu-ns-vc");
    assert_eq!(candidate_name(HOST, &vc, 0), "c-m-host0001-ns-vc");
    assert_ne!(candidate_name(HOST, &vc, 0), candidate_name(HOST, &vc, 1));
    vc.requested_prefix = "edge".into();
    assert_eq!(candidate_name("prod-eu", &vc, 0), "edge-ns-vc");
    assert_ne!(candidate_name("prod-eu", &vc, 1), "edge-ns-vc");
    vc.requested_name = "my-cluster".into();
    assert_eq!(
        candidate_name("prod-eu", &vc, 0),
        "my-cluster",
        "the name beats the prefix"
    );
    assert_ne!(candidate_name("prod-eu", &vc, 1), "my-cluster");
}

/// A host known to the index with this Rancher display name.
fn host_named(hub: &Hub, display: &str) {
    hub.world()
        .index
        .apply_mgmt(crate::core::index::MgmtCluster {
            id: HOST.into(),
            conn: crate::core::index::Conn::Connected,
            host_opt_in: true,
            nested_opt_in: false,
            display_name: Some(display.into()),
        });
}

#[tokio::test]
async fn the_default_name_starts_with_the_hosts_display_name() {
    let created = |api: &Fake| {
        api.calls()
            .into_iter()
            .filter_map(|c| c.strip_prefix("create ").map(str::to_string))
            .collect::<Vec<_>>()
    };
    let hub = TestHub::default().build();
    host_named(&hub, "Prod EU");
    let api = Fake::default();
    ensure(hub.as_ref(), &api, &key(), &vc())
        .await
        .expect("created");
    assert_eq!(created(&api), ["prod-eu-team-a-vc1"]);
    // A display name that is unusable as a name falls back to the host's id.
    let hub = TestHub::default().build();
    host_named(&hub, "local");
    let api = Fake::default();
    ensure(hub.as_ref(), &api, &key(), &vc())
        .await
        .expect("created");
    assert_eq!(created(&api), [format!("{HOST}-team-a-vc1")]);
    // A requested prefix replaces the host part.
    let hub = TestHub::default().build();
    host_named(&hub, "Prod EU");
    let api = Fake::default();
    let mut prefixed = vc();
    prefixed.requested_prefix = "edge".into();
    ensure(hub.as_ref(), &api, &key(), &prefixed)
        .await
        .expect("created");
    assert_eq!(created(&api), ["edge-team-a-vc1"]);
}

#[tokio::test]
async fn a_reinstalled_vcluster_takes_over_its_old_cluster_without_delete_or_create() {
    let hub = TestHub::default().build();
    let old = VcKey::new(HOST, "00000000-0000-4000-8000-0000000000aa");
    let mut c = cluster(&name(0), Some(old.clone()), Some("c-m-vc000001"));
    c.vcluster = Some(("team-a".into(), "vc1".into()));
    let c = c.proven();
    hub.world().index.apply_prov(c.clone());
    let api = Fake::with([c.clone()]).signed(&c.name, true);
    reclaim(hub.as_ref(), &api, &key(), &c.name, &c.uid, &old.uid, &vc())
        .await
        .unwrap();
    assert_eq!(
        api.calls(),
        [
            format!("get {}", c.name),
            format!("label {}", c.name),
            "label-mgmt c-m-vc000001".to_string()
        ],
        "relabelled in place: no delete, no create"
    );
    let objects = api.objects.lock().unwrap();
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[&c.name].p.key, Some(key()));
    drop(objects);
    assert_eq!(
        api.judged(&c.name).trust,
        Trust::Proven,
        "both proofs re-signed for the new Service UID in the same patch"
    );
    recorded(&hub, &c.name);
    assert!(hub.world().index.prov_for(&old).is_none());
}

#[tokio::test]
async fn a_cluster_replaced_under_the_same_name_is_not_taken_over() {
    let hub = TestHub::default().build();
    let old = VcKey::new(HOST, "00000000-0000-4000-8000-0000000000aa");
    let mut replaced = cluster(&name(0), None, None);
    replaced.uid = "someone-elses".into();
    let api = Fake::with([replaced]);
    let e = reclaim(
        hub.as_ref(),
        &api,
        &key(),
        &name(0),
        "uid-old",
        &old.uid,
        &vc(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), "replaced");
    assert_eq!(api.calls(), [format!("get {}", name(0))], "nothing written");
}
