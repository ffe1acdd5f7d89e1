//! Component test, against a real kube-apiserver, of what a user or a hostile tenant can
//! do to a vCluster's Service without deleting it: opting out, leaving the namespace
//! selector, removing `app=vcluster`, writing an invalid field or un-importing are all
//! reported as exclusions (never a removal) and explained on the Service; only the
//! Service's deletion leaves the catalog. A registration-labelled Job in another
//! namespace changes nothing on the victim's Service and is not deleted; a Register that
//! points a connected vCluster at another Rancher cluster is refused.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use vclink_agent::jobs::Registration;
use vclink_agent::link::LinkChannels;
use vclink_agent::record::RecordOp;
use vclink_agent::watch::{Catalog, CatalogRx};
use vclink_agent::{ClusterTasks, spawn_cluster_tasks};
use vclink_proto::v1::exclusion::Kind;
use vclink_proto::v1::registration_progress::Phase;
use vclink_proto::v1::{State, TlsMode};
use vclink_proto::{Secret as Credential, keys};

mod support;
use support::{create_namespace, create_service, eventually, job_settings, map};

async fn namespace(client: &Client, name: &str, labels: &[(&str, &str)]) {
    let metadata = ObjectMeta {
        name: Some(name.into()),
        labels: Some(map(labels)),
        ..Default::default()
    };
    create_namespace(client, metadata).await;
}

/// Waits until `check` holds for the published catalog.
async fn catalog_where(rx: &CatalogRx, what: &str, check: impl Fn(&Catalog) -> bool) {
    eventually(60, what, || {
        let c: Arc<Catalog> = rx.borrow().clone();
        let ok = c.ready && check(&c);
        async move { ok.then_some(()) }
    })
    .await;
}

fn kind(c: &Catalog, uid: &str) -> Option<Kind> {
    c.vclusters
        .get(uid)
        .and_then(|v| v.exclusion.as_ref())
        .map(|x| x.kind())
}

/// Waits until the Service's annotations satisfy `check`.
async fn annotations_where(
    svcs: &Api<Service>,
    name: &str,
    what: &str,
    check: impl Fn(&BTreeMap<String, String>) -> bool,
) -> BTreeMap<String, String> {
    eventually(60, what, || {
        let svcs = svcs.clone();
        let name = name.to_string();
        let ok = |a: &BTreeMap<String, String>| check(a);
        let got = async move { svcs.get(&name).await.ok()?.metadata.annotations };
        async move {
            let a = got.await.unwrap_or_default();
            ok(&a).then_some(a)
        }
    })
    .await
}

async fn event_with(events: &Api<Event>, what: &str, check: impl Fn(&Event) -> bool) {
    eventually(60, what, || {
        let events = events.clone();
        let list = async move { events.list(&ListParams::default()).await.ok() };
        let check = &check;
        async move { list.await?.items.iter().any(check).then_some(()) }
    })
    .await;
}

fn patch(kv: serde_json::Value) -> Patch<serde_json::Value> {
    Patch::Merge(kv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusion_is_not_removal_and_only_own_jobs_count() {
    vclink_agent::tls::install_default_provider();
    let cluster = vclink_envtest::Cluster::start("agent-exclusion", Default::default())
        .await
        .expect("cluster");
    let client = cluster.client().await.expect("client");
    namespace(&client, "team-a", &[("vclink", "on")]).await;
    namespace(&client, "team-b", &[("vclink", "on")]).await;
    namespace(&client, "evil", &[("vclink", "on")]).await;
    let a: Api<Service> = Api::namespaced(client.clone(), "team-a");
    let b: Api<Service> = Api::namespaced(client.clone(), "team-b");
    let skip = create_service(&client, "team-a", "skip").await;
    let relabel = create_service(&client, "team-a", "relabel").await;
    let invalid = create_service(&client, "team-a", "invalid").await;
    let unimport = create_service(&client, "team-a", "unimport").await;
    let victim = create_service(&client, "team-a", "victim").await;
    let moved = create_service(&client, "team-b", "moved").await;

    // A forged Job, already Failed before the agent starts: the victim's labels and the
    // agent's Job name, in another namespace. The agent lists it at start-up.
    let evil_jobs: Api<Job> = Api::namespaced(client.clone(), "evil");
    let forged: Job = serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": vclink_agent_job_name(&victim),
            "labels": { "vclink.io/component": "registration", "vclink.io/service-uid": victim },
        },
        "spec": { "template": { "spec": { "restartPolicy": "Never",
            "containers": [{ "name": "x", "image": "busybox" }] } } }
    }))
    .expect("job");
    evil_jobs
        .create(&PostParams::default(), &forged)
        .await
        .expect("forged job");
    let status = serde_json::json!({ "status": { "failed": 1, "conditions": [
        { "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "attacker says: failed" } ] } });
    evil_jobs
        .patch_status(
            &vclink_agent_job_name(&victim),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .expect("status");

    let cancel = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let LinkChannels {
        catalog: rx,
        registrations: reg_tx,
        records: records_tx,
        progress: mut progress_rx,
    } = spawn_cluster_tasks(
        &mut tasks,
        ClusterTasks {
            client: client.clone(),
            namespace_selector: Some("vclink=on".into()),
            jobs: job_settings(),
            kube_qps: 100.0,
            kube_burst: 50,
            instance: "test".into(),
        },
        &cancel,
    );
    catalog_where(&rx, "all six vClusters imported", |c| {
        c.vclusters.len() == 6 && c.vclusters.values().all(|v| v.exclusion.is_none())
    })
    .await;
    // Every reported Service gets the agent's mark (its own UID).
    eventually(60, "the agent's mark on every Service", || {
        let a = a.clone();
        let relabel = relabel.clone();
        async move {
            let s = a.get("relabel").await.ok()?;
            (s.metadata.labels?.get(keys::LABEL_TRACKED)? == &relabel).then_some(())
        }
    })
    .await;

    // 1. Opt out: excluded, with the reason on the Service and one Event.
    a.patch(
        "skip",
        &PatchParams::default(),
        &patch(serde_json::json!({"metadata": {"annotations": {"loft.sh/vcluster-skip-import": "true"}}})),
    )
    .await
    .expect("patch");
    catalog_where(&rx, "skip excluded", |c| {
        kind(c, &skip) == Some(Kind::Excluded)
    })
    .await;
    annotations_where(&a, "skip", "state excluded on skip", |x| {
        x.get(keys::ANNOTATION_STATE).map(String::as_str) == Some("excluded")
            && x.get(keys::ANNOTATION_EXCLUDED_REASON)
                .is_some_and(|r| r.contains("skip-import"))
    })
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), "team-a");
    event_with(&events, "an Excluded Event for skip", |e| {
        e.reason.as_deref() == Some("Excluded")
            && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("skip")
    })
    .await;

    // 2. Label removed: a watch delete, but the GET finds the same UID → excluded, tracked.
    a.patch(
        "relabel",
        &PatchParams::default(),
        &patch(serde_json::json!({"metadata": {"labels": {"app": "something-else"}}})),
    )
    .await
    .expect("patch");
    catalog_where(&rx, "relabel excluded, not removed", |c| {
        kind(c, &relabel) == Some(Kind::Excluded)
            && c.vclusters[&relabel]
                .exclusion
                .as_ref()
                .is_some_and(|x| x.reason.contains("label app=vcluster was removed"))
    })
    .await;
    // Its deletion is still seen (through the tracked-label watch): then it is removed.
    a.delete("relabel", &DeleteParams::default())
        .await
        .expect("delete");
    catalog_where(&rx, "relabel removed after its deletion", |c| {
        !c.vclusters.contains_key(&relabel)
    })
    .await;

    // 3. Invalid field: reported INVALID with the validation message as last error.
    a.patch(
        "invalid",
        &PatchParams::default(),
        &patch(serde_json::json!({"metadata": {"annotations": {"vclink.io/cluster-name": "Not_A_Label"}}})),
    )
    .await
    .expect("patch");
    catalog_where(&rx, "invalid reported invalid", |c| {
        kind(c, &invalid) == Some(Kind::Invalid) && c.vclusters[&invalid].requested_name.is_empty()
    })
    .await;
    annotations_where(&a, "invalid", "last-error on invalid", |x| {
        x.get(keys::ANNOTATION_STATE).map(String::as_str) == Some("excluded")
            && x.get(keys::ANNOTATION_LAST_ERROR)
                .is_some_and(|r| r.contains("requested_name"))
    })
    .await;

    // 4. Explicit un-import: UNIMPORT and a Warning Event at once.
    a.patch(
        "unimport",
        &PatchParams::default(),
        &patch(serde_json::json!({"metadata": {"annotations": {"vclink.io/import": "false"}}})),
    )
    .await
    .expect("patch");
    catalog_where(&rx, "unimport reported", |c| {
        kind(c, &unimport) == Some(Kind::Unimport)
    })
    .await;
    event_with(&events, "an UnimportRequested Warning", |e| {
        e.reason.as_deref() == Some("UnimportRequested")
            && e.type_.as_deref() == Some("Warning")
            && e.note
                .as_deref()
                .is_some_and(|n| n.contains("remove the annotation vclink.io/import"))
    })
    .await;

    // 5. Namespace leaves the selector: excluded (it was reported), not removed.
    Api::<Namespace>::all(client.clone())
        .patch(
            "team-b",
            &PatchParams::default(),
            &patch(serde_json::json!({"metadata": {"labels": {"vclink": "off"}}})),
        )
        .await
        .expect("patch ns");
    catalog_where(&rx, "moved excluded by the selector", |c| {
        kind(c, &moved) == Some(Kind::Excluded)
            && c.vclusters[&moved].exclusion.as_ref().is_some_and(|x| {
                x.reason
                    .contains("no longer matches --namespace-selector vclink=on")
            })
    })
    .await;
    annotations_where(&b, "moved", "state excluded on moved", |x| {
        x.get(keys::ANNOTATION_STATE).map(String::as_str) == Some("excluded")
    })
    .await;

    // 6. The victim is connected to Rancher cluster c-m-aaaa1111.
    records_tx
        .push(RecordOp::Status {
            uid: victim.clone(),
            state: State::Connected,
            message: String::new(),
            rancher_cluster_id: "c-m-aaaa1111".into(),
            cluster_name: "host-team-a-victim".into(),
        })
        .expect("send");
    let before = annotations_where(&a, "victim", "victim connected", |x| {
        x.get(keys::ANNOTATION_STATE).map(String::as_str) == Some("connected")
    })
    .await;
    // 7. A Register pointing the connected victim at another Rancher cluster: refused.
    reg_tx
        .push(Registration {
            uid: victim.clone(),
            rancher_cluster_id: "c-m-bbbb2222".into(),
            cluster_name: "forged".into(),
            manifest_url: Credential::new(
                "https://rancher.example.com/v3/import/sekret_c-m-bbbb2222.yaml",
            ),
            tls_mode: TlsMode::Strict,
            ca_certs: String::new(),
        })
        .expect("send");
    let p = tokio::time::timeout(Duration::from_secs(60), progress_rx.recv())
        .await
        .expect("progress in time")
        .expect("progress");
    assert_eq!(p.phase, Phase::Failed as i32, "{p:?}");
    assert!(
        p.message.contains("c-m-aaaa1111") && p.message.contains("c-m-bbbb2222"),
        "{}",
        p.message
    );
    assert!(!p.message.contains("sekret"), "no credential in progress");
    event_with(&events, "a RegistrationRefused Warning", |e| {
        e.reason.as_deref() == Some("RegistrationRefused")
            && e.note
                .as_deref()
                .is_some_and(|n| n.contains("c-m-bbbb2222"))
    })
    .await;
    let team_a_jobs: Api<Job> = Api::namespaced(client.clone(), "team-a");
    assert!(
        team_a_jobs
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .is_empty(),
        "no Job for a refused Register"
    );
    // The forged Job (listed by the agent long ago) changed nothing on the victim and
    // was not deleted.
    let after = a
        .get("victim")
        .await
        .expect("victim")
        .metadata
        .annotations
        .unwrap_or_default();
    for k in [
        keys::ANNOTATION_STATE,
        keys::ANNOTATION_RANCHER_CLUSTER,
        keys::ANNOTATION_REGISTRATION_JOB_UID,
    ] {
        assert_eq!(
            after.get(k),
            before.get(k),
            "{k} unchanged by the forged Job"
        );
    }
    assert!(
        !after
            .get(keys::ANNOTATION_LAST_ERROR)
            .is_some_and(|e| e.contains("attacker")),
        "the attacker's message is not recorded"
    );
    assert!(
        evil_jobs
            .get_opt(&vclink_agent_job_name(&victim))
            .await
            .expect("get")
            .is_some(),
        "the agent does not delete a Job it did not create"
    );

    // Deleting the excluded Service is the one thing that removes it.
    a.delete("skip", &DeleteParams::default())
        .await
        .expect("delete");
    catalog_where(&rx, "skip removed after its deletion", |c| {
        !c.vclusters.contains_key(&skip) && c.vclusters.contains_key(&invalid)
    })
    .await;
    cancel.cancel();
}

/// The agent's deterministic Job name (`vclink-register-` + 12 hex digits of SHA-256).
fn vclink_agent_job_name(uid: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(uid.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("vclink-register-{}", &hex[..12])
}
