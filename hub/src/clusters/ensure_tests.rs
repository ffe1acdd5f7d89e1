//! [`ensure`] and [`delete`] against an in-memory [`ProvClusters`] fake and a real test
//! hub: one test per branch (create, adopt, a name the index knows is taken or ours,
//! 409 then get — ours or another's —, no free name, API errors, delete).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use vclink_proto::v1::VCluster;

use super::*;
use crate::state::Hub;
use crate::testing::TestHub;

const HOST: &str = "c-m-host0001";
const UID: &str = "00000000-0000-4000-8000-000000000001";

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
    candidate_name(&key(), &vc(), attempt)
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
        uid: format!("uid-{name}"),
        key,
        mgmt_id: mgmt.map(Into::into),
        ready: false,
        deleting: false,
        project: None,
        version: 1,
    }
}

/// An API server holding provisioning clusters by name; `fail` makes one verb answer
/// with a status code; every call is logged as "verb name".
#[derive(Default)]
struct Fake {
    objects: Mutex<HashMap<String, ProvCluster>>,
    fail: Mutex<HashMap<&'static str, u16>>,
    calls: Mutex<Vec<String>>,
}

impl Fake {
    fn with(objects: impl IntoIterator<Item = ProvCluster>) -> Self {
        let f = Self::default();
        f.objects
            .lock()
            .unwrap()
            .extend(objects.into_iter().map(|p| (p.name.clone(), p)));
        f
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
}

#[async_trait]
impl ProvClusters for Fake {
    async fn create(
        &self,
        name: &str,
        key: &VcKey,
        _: &VCluster,
    ) -> Result<ProvCluster, kube::Error> {
        self.call("create", name)?;
        let mut o = self.objects.lock().unwrap();
        if o.contains_key(name) {
            return Err(status(409));
        }
        let c = cluster(name, Some(key.clone()), None);
        o.insert(name.into(), c.clone());
        Ok(c)
    }

    async fn get(&self, name: &str) -> Result<ProvCluster, kube::Error> {
        self.call("get", name)?;
        self.objects
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .ok_or_else(|| status(404))
    }

    async fn label(
        &self,
        name: &str,
        key: &VcKey,
        _: &VCluster,
    ) -> Result<ProvCluster, kube::Error> {
        self.call("label", name)?;
        let mut o = self.objects.lock().unwrap();
        let c = o.get_mut(name).ok_or_else(|| status(404))?;
        c.key = Some(key.clone());
        c.version += 1;
        Ok(c.clone())
    }

    async fn label_mgmt(&self, id: &str, _: &VcKey, _: &VCluster) -> Result<(), kube::Error> {
        self.call("label-mgmt", id)
    }

    async fn delete(&self, name: &str, uid: String) -> Result<(), kube::Error> {
        self.call("delete", name)?;
        let mut o = self.objects.lock().unwrap();
        match o.get(name) {
            Some(c) if c.uid == uid => {
                o.remove(name);
                Ok(())
            }
            Some(_) => Err(status(409)),
            None => Err(status(404)),
        }
    }
}

/// The hub knows `key`'s cluster by `name` now, and the key was queued for its next step.
fn recorded(hub: &Hub, name: &str) {
    assert_eq!(
        hub.world().index.prov_for(&key()).map(|p| p.name.clone()),
        Some(name.to_string())
    );
    assert!(
        !hub.queue.is_empty(),
        "the key is queued for its next decision"
    );
}

#[tokio::test]
async fn a_free_name_is_created_and_recorded() {
    let (hub, api) = (TestHub::default().build(), Fake::default());
    ensure(hub.as_ref(), &api, &key(), &vc()).await.unwrap();
    assert_eq!(api.calls(), [format!("create {}", name(0))]);
    recorded(&hub, &name(0));
}

#[tokio::test]
async fn a_cluster_of_the_go_operator_is_adopted_with_its_management_cluster() {
    let hub = TestHub::default().build();
    hub.world().index.apply_legacy("legacy-vc1", Some(key()));
    let api = Fake::with([cluster("legacy-vc1", None, Some("c-m-legacy01"))]);
    ensure(hub.as_ref(), &api, &key(), &vc()).await.unwrap();
    assert_eq!(api.calls(), ["label legacy-vc1", "label-mgmt c-m-legacy01"]);
    recorded(&hub, "legacy-vc1");
}

#[tokio::test]
async fn an_adopted_cluster_without_management_cluster_yet_is_labelled_alone() {
    let hub = TestHub::default().build();
    hub.world().index.apply_legacy("legacy-vc1", Some(key()));
    let api = Fake::with([cluster("legacy-vc1", None, None)]);
    ensure(hub.as_ref(), &api, &key(), &vc()).await.unwrap();
    assert_eq!(api.calls(), ["label legacy-vc1"]);
    recorded(&hub, "legacy-vc1");
}

#[tokio::test]
async fn a_failed_adoption_is_an_api_error_and_creates_nothing() {
    let hub = TestHub::default().build();
    hub.world().index.apply_legacy("legacy-vc1", Some(key()));
    let api = Fake::with([cluster("legacy-vc1", None, None)]).failing("label", 403);
    let e = ensure(hub.as_ref(), &api, &key(), &vc()).await.unwrap_err();
    assert_eq!(e.kind(), "api_denied");
    assert!(
        e.agent_message()
            .starts_with("adopting cluster legacy-vc1: "),
        "{e}"
    );
    assert_eq!(api.calls(), ["label legacy-vc1"]);
}

#[tokio::test]
async fn a_name_the_index_knows_as_taken_is_skipped_without_a_request() {
    let hub = TestHub::default().build();
    let other = VcKey::new(HOST, "00000000-0000-4000-8000-000000000099");
    hub.world()
        .index
        .apply_prov(cluster(&name(0), Some(other), None));
    let api = Fake::default();
    ensure(hub.as_ref(), &api, &key(), &vc()).await.unwrap();
    assert_eq!(api.calls(), [format!("create {}", name(1))]);
    recorded(&hub, &name(1));
}

#[tokio::test]
async fn a_name_the_index_knows_as_ours_needs_nothing() {
    let hub = TestHub::default().build();
    hub.world()
        .index
        .apply_prov(cluster(&name(0), Some(key()), None));
    let api = Fake::default();
    ensure(hub.as_ref(), &api, &key(), &vc()).await.unwrap();
    assert!(api.calls().is_empty(), "{:?}", api.calls());
}

#[tokio::test]
async fn a_conflict_with_our_own_earlier_create_is_success() {
    // An earlier attempt created it; the watch has not delivered it yet.
    let hub = TestHub::default().build();
    let api = Fake::with([cluster(&name(0), Some(key()), None)]);
    ensure(hub.as_ref(), &api, &key(), &vc()).await.unwrap();
    assert_eq!(
        api.calls(),
        [format!("create {}", name(0)), format!("get {}", name(0))]
    );
    recorded(&hub, &name(0));
}

#[tokio::test]
async fn a_conflict_with_a_foreign_cluster_moves_to_the_next_name() {
    // A user's cluster (no vclink labels) holds the first name: never merged into it.
    let hub = TestHub::default().build();
    let api = Fake::with([cluster(&name(0), None, None)]);
    ensure(hub.as_ref(), &api, &key(), &vc()).await.unwrap();
    assert_eq!(
        api.calls(),
        [
            format!("create {}", name(0)),
            format!("get {}", name(0)),
            format!("create {}", name(1)),
        ]
    );
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
    let c = cluster(&name(0), Some(key()), None);
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
    let key = VcKey::new(HOST, "u");
    let mut vc = VCluster {
        namespace: "ns".into(),
        name: "vc".into(),
        ..Default::default()
    };
    assert_eq!(candidate_name(&key, &vc, 0), "c-m-host0001-ns-vc");
    assert_ne!(candidate_name(&key, &vc, 0), candidate_name(&key, &vc, 1));
    vc.requested_name = "my-cluster".into();
    assert_eq!(candidate_name(&key, &vc, 0), "my-cluster");
    assert_ne!(candidate_name(&key, &vc, 1), "my-cluster");
}
