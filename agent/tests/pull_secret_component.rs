//! Component test of the registration Job's image pull secrets against a real
//! kube-apiserver: each `--job-image-pull-secret` is read in the agent's own namespace
//! and copied next to the Job under the Job's name, owned by the Job (so the garbage
//! collector removes it with the Job), and the Job's pod names the copy; a pull secret
//! missing in the agent's namespace fails the registration with a reason naming it, and
//! the Job is removed again.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use tokio_util::sync::CancellationToken;
use vclink_agent::jobs::{JobSettings, Registration};
use vclink_agent::link::LinkChannels;
use vclink_agent::{ClusterTasks, spawn_cluster_tasks};
use vclink_proto::Secret as Credential;
use vclink_proto::v1::TlsMode;
use vclink_proto::v1::registration_progress::Phase;

mod support;
use support::{create_namespace, create_service, job_settings};

fn registration(uid: &str) -> Registration {
    Registration {
        uid: uid.into(),
        rancher_cluster_id: "c-m-xyz12345".into(),
        cluster_name: "host-team-a".into(),
        manifest_url: Credential::new(
            "https://rancher.example.com/v3/import/sekret_c-m-xyz12345.yaml",
        ),
        tls_mode: TlsMode::Strict,
        ca_certs: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_secrets_are_copied_next_to_the_job_and_owned_by_it() {
    vclink_agent::tls::install_default_provider();
    let cluster = vclink_envtest::Cluster::start("agent-pull", Default::default())
        .await
        .expect("cluster");
    let client = cluster.client().await.expect("client");
    let home = client.default_namespace().to_string();
    create_namespace(
        &client,
        ObjectMeta {
            name: Some("team-a".into()),
            ..Default::default()
        },
    )
    .await;
    let uids = [
        create_service(&client, "team-a", "vc1").await,
        create_service(&client, "team-a", "vc2").await,
    ];
    // The API server creates `default` itself, but asynchronously after it starts
    // serving: make sure the agent's home namespace exists before writing into it.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let home_ns = k8s_openapi::api::core::v1::Namespace {
        metadata: ObjectMeta {
            name: Some(home.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    match namespaces.create(&PostParams::default(), &home_ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("namespace {home}: {e}"),
    }
    let home_secrets: Api<Secret> = Api::namespaced(client.clone(), &home);
    let dockercfg = BTreeMap::from([(
        ".dockerconfigjson".to_string(),
        ByteString(br#"{"auths":{"registry.local":{"auth":"dTpw"}}}"#.to_vec()),
    )]);
    home_secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("regcred".into()),
                    ..Default::default()
                },
                type_: Some("kubernetes.io/dockerconfigjson".into()),
                data: Some(dockercfg.clone()),
                ..Default::default()
            },
        )
        .await
        .expect("pull secret");

    let cancel = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let LinkChannels {
        catalog,
        registrations,
        progress: mut progress_rx,
        ..
    } = spawn_cluster_tasks(
        &mut tasks,
        ClusterTasks {
            client: client.clone(),
            namespace_selector: None,
            jobs: JobSettings {
                image_pull_secrets: vec!["regcred".into()],
                ..job_settings()
            },
            kube_qps: 50.0,
            kube_burst: 10,
            instance: "test".into(),
        },
        &cancel,
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !catalog.borrow().ready || catalog.borrow().services.len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "catalog not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(30), progress_rx.recv())
            .await
            .expect("progress in time")
            .expect("progress")
    };

    registrations.push(registration(&uids[0])).expect("send");
    let p = next().await;
    assert_eq!(p.phase, Phase::JobCreated as i32, "{}", p.message);
    let jobs: Api<Job> = Api::namespaced(client.clone(), "team-a");
    let job = jobs
        .list(&Default::default())
        .await
        .expect("jobs")
        .items
        .into_iter()
        .next()
        .expect("a Job");
    let job_name = job.metadata.name.clone().expect("name");
    let copy_name = format!("{job_name}-pull-0");
    let pod = job.spec.and_then(|s| s.template.spec).expect("pod");
    let pulls: Vec<_> = pod
        .image_pull_secrets
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(pulls, vec![copy_name.clone()]);
    let copy = Api::<Secret>::namespaced(client.clone(), "team-a")
        .get(&copy_name)
        .await
        .expect("the copy next to the Job");
    assert_eq!(
        copy.type_.as_deref(),
        Some("kubernetes.io/dockerconfigjson")
    );
    assert_eq!(copy.data, Some(dockercfg));
    let owner = &copy.metadata.owner_references.expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("Job", job.metadata.uid.as_deref().expect("job uid"))
    );

    // The source is gone: the next registration fails naming it, and its Job is removed.
    home_secrets
        .delete("regcred", &DeleteParams::default())
        .await
        .expect("delete");
    registrations.push(registration(&uids[1])).expect("send");
    let p = next().await;
    assert_eq!(p.phase, Phase::Failed as i32);
    assert!(
        p.message.contains("regcred") && p.message.contains(&format!("namespace {home}")),
        "{}",
        p.message
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let n = jobs
            .list(&Default::default())
            .await
            .expect("jobs")
            .items
            .len();
        if n == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{n} Jobs remain");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cancel.cancel();
    while tasks.join_next().await.is_some() {}
}
