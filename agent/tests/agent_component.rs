//! Component test of the agent's Kubernetes side against a real kube-apiserver: the shared
//! watches build the right catalog (project from the namespace, headless and opted-out
//! Services skipped), the recorder writes state annotations and Events on the Service,
//! and the Job controller creates exactly one registration Job with its owned Secret and
//! reports and cleans up a failed Job. The gRPC link is covered by the end-to-end suite.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use vclink_agent::jobs::Registration;
use vclink_agent::link::LinkChannels;
use vclink_agent::record::RecordOp;
use vclink_agent::{ClusterTasks, spawn_cluster_tasks};
use vclink_proto::v1::registration_progress::Phase;
use vclink_proto::v1::{State, TlsMode};
use vclink_proto::{Secret as Credential, keys};

mod support;
use support::{create_namespace, eventually, job_settings, map};

/// A vCluster Service named `name` with `annotations`; `headless` makes it a headless
/// Service (which is not a vCluster's API endpoint).
fn service(name: &str, headless: bool, annotations: &[(&str, &str)]) -> Service {
    let mut s = support::service(name);
    s.metadata.annotations = Some(map(annotations));
    if let Some(spec) = s.spec.as_mut() {
        spec.cluster_ip = headless.then(|| "None".to_string());
    }
    s
}

async fn setup(client: &Client) -> String {
    let metadata = ObjectMeta {
        name: Some("team-a".into()),
        annotations: Some(map(&[(
            "field.cattle.io/projectId",
            "c-m-abcd1234:p-xk2lm",
        )])),
        ..Default::default()
    };
    create_namespace(client, metadata).await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "team-a");
    let vc1 = svcs
        .create(&PostParams::default(), &service("vc1", false, &[]))
        .await
        .expect("vc1");
    svcs.create(&PostParams::default(), &service("vc1-headless", true, &[]))
        .await
        .expect("headless");
    svcs.create(
        &PostParams::default(),
        &service("vc2", false, &[("vclink.io/skip-import", "true")]),
    )
    .await
    .expect("vc2");
    vc1.metadata.uid.expect("uid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_record_and_run_registration_jobs() {
    vclink_agent::tls::install_default_provider();
    let cluster = vclink_envtest::Cluster::start("agent", Default::default())
        .await
        .expect("cluster");
    let client = cluster.client().await.expect("client");
    let uid = setup(&client).await;
    let cancel = CancellationToken::new();

    // The agent's own wiring of its Kubernetes side; the test plays the hub link.
    let mut tasks = tokio::task::JoinSet::new();
    let settings = ClusterTasks {
        client: client.clone(),
        namespace_selector: None,
        jobs: job_settings(),
        kube_qps: 50.0,
        kube_burst: 10,
        instance: "test".into(),
    };
    let LinkChannels {
        catalog: catalog_rx,
        registrations: reg_tx,
        records: records_tx,
        progress: mut progress_rx,
    } = spawn_cluster_tasks(&mut tasks, settings, &cancel);

    // Watches → catalog.
    let catalog = eventually(20, "the initial catalog", || {
        let c = catalog_rx.borrow().clone();
        async move { c.ready.then_some(c) }
    })
    .await;
    let imported: Vec<_> = catalog
        .vclusters
        .values()
        .filter(|v| v.exclusion.is_none())
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(imported, vec!["vc1"], "only vc1 is to be imported");
    let excluded: Vec<_> = catalog
        .vclusters
        .values()
        .filter(|v| v.exclusion.is_some())
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(
        excluded,
        vec!["vc2"],
        "the opted-out vc2 is reported excluded, the headless Service not at all"
    );
    assert_eq!(catalog.vclusters[&uid].project_id, "c-m-abcd1234:p-xk2lm");

    // Recorder → annotations + Event.
    records_tx
        .push(RecordOp::Status {
            uid: uid.clone(),
            state: State::Connected,
            message: String::new(),
            rancher_cluster_id: "c-m-xyz12345".into(),
            cluster_name: "host-team-a-vc1".into(),
        })
        .expect("send");
    let svcs: Api<Service> = Api::namespaced(client.clone(), "team-a");
    eventually(20, "state annotations on the Service", || {
        let svcs = svcs.clone();
        async move {
            let s = svcs.get("vc1").await.ok()?;
            let a = s.metadata.annotations?;
            (a.get(keys::ANNOTATION_STATE)? == "connected"
                && a.get(keys::ANNOTATION_RANCHER_CLUSTER)? == "c-m-xyz12345")
                .then_some(())
        }
    })
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), "team-a");
    eventually(20, "a Connected Event", || {
        let events = events.clone();
        async move {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| e.reason.as_deref() == Some("Connected"))
                .then_some(())
        }
    })
    .await;
    // The recorded cluster id flows back into the catalog (and so to the hub).
    eventually(20, "recorded cluster id in the catalog", || {
        let c = catalog_rx.borrow().clone();
        let uid = uid.clone();
        async move { (c.vclusters.get(&uid)?.recorded_cluster_id == "c-m-xyz12345").then_some(()) }
    })
    .await;

    // Job controller: exactly one Job, Secret owned by it, failure reported and cleaned up.
    let reg = Registration {
        uid: uid.clone(),
        rancher_cluster_id: "c-m-xyz12345".into(),
        cluster_name: "host-team-a-vc1".into(),
        manifest_url: Credential::new(
            "https://rancher.example.com/v3/import/sekret_c-m-xyz12345.yaml",
        ),
        tls_mode: TlsMode::Strict,
        ca_certs: String::new(),
    };
    for _ in 0..2 {
        reg_tx.push(reg.clone()).expect("send");
        let p = tokio::time::timeout(Duration::from_secs(20), progress_rx.recv())
            .await
            .expect("progress in time")
            .expect("progress");
        assert_eq!(p.phase, Phase::JobCreated as i32);
    }
    let jobs: Api<Job> = Api::namespaced(client.clone(), "team-a");
    let listed = jobs
        .list(&ListParams::default().labels("vclink.io/component=registration"))
        .await
        .expect("list");
    assert_eq!(listed.items.len(), 1, "exactly one registration Job");
    let job = &listed.items[0];
    let job_name = job.metadata.name.clone().expect("name");
    let secret = Api::<Secret>::namespaced(client.clone(), "team-a")
        .get(&job_name)
        .await
        .expect("secret");
    assert_eq!(
        secret.metadata.owner_references.expect("owners")[0].uid,
        job.metadata.uid.clone().expect("job uid")
    );
    assert!(
        !serde_json::to_string(job).expect("json").contains("sekret"),
        "no credential in the Job"
    );

    // Play the Job runner: mark it failed with the register command's reason.
    let reason = "fetching the Rancher import manifest failed: HTTP 400 (the registration token was not accepted by Rancher)";
    let status = serde_json::json!({ "status": { "failed": 1, "conditions": [
        { "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": reason } ] } });
    jobs.patch_status(&job_name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status");
    let p = tokio::time::timeout(Duration::from_secs(20), progress_rx.recv())
        .await
        .expect("progress in time")
        .expect("progress");
    assert_eq!(p.phase, Phase::Failed as i32);
    assert_eq!(p.message, reason);
    eventually(20, "the failed Job to be deleted", || {
        let jobs = jobs.clone();
        let name = job_name.clone();
        async move { jobs.get_opt(&name).await.ok()?.is_none().then_some(()) }
    })
    .await;
    eventually(20, "the failure recorded on the Service", || {
        let svcs = svcs.clone();
        async move {
            let a = svcs.get("vc1").await.ok()?.metadata.annotations?;
            (a.get(keys::ANNOTATION_STATE)? == "error"
                && a.get(keys::ANNOTATION_LAST_ERROR)?.contains("HTTP 400"))
            .then_some(())
        }
    })
    .await;
    cancel.cancel();
    while tasks.join_next().await.is_some() {}
}
