//! Two real clusters side by side: authentication, RBAC, ServiceAccount tokens,
//! garbage collection, and that dropping a cluster leaves no process behind.
//!
//! One test function on purpose: every cluster costs ~200 MB and seconds of CPU on a
//! shared machine, so the checks share the same two clusters.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{
    TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use vclink_envtest::procs::is_alive;
use vclink_envtest::{Cluster, ClusterOptions};

const NS: &str = "envtest";

/// Polls `f` every 250 ms until it returns `Some` or `timeout` passes.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn code(r: Result<impl Sized, kube::Error>) -> u16 {
    match r {
        Ok(_) => 200,
        Err(kube::Error::Api(s)) => s.code,
        Err(e) => panic!("unexpected non-API error: {e}"),
    }
}

async fn create_namespace(client: &Client, name: &str) {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("admin creates a namespace");
}

async fn request_token(client: &Client, sa: &str, audiences: &[&str]) -> String {
    let tr = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audiences.iter().map(|s| s.to_string()).collect(),
            expiration_seconds: Some(600),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), NS)
        .create_token_request(sa, &PostParams::default(), &tr)
        .await
        .expect("TokenRequest")
        .status
        .expect("TokenRequest status")
        .token
}

/// `Some(username)` if the cluster authenticates `token` for one of `audiences`.
async fn review(client: &Client, token: &str, audiences: &[&str]) -> Option<String> {
    let tr = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.into()),
            audiences: Some(audiences.iter().map(|s| s.to_string()).collect()),
        },
        ..Default::default()
    };
    let status = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &tr)
        .await
        .expect("TokenReview")
        .status?;
    if status.authenticated != Some(true) {
        return None;
    }
    status.user?.username
}

async fn rbac_applies_to_client_certificates(a: &Cluster, admin: &Client) {
    let alice = a.client_as("alice", &["team-x"]).await.unwrap();
    let cms = Api::<ConfigMap>::namespaced(alice.clone(), NS);
    assert_eq!(code(cms.list(&Default::default()).await), 403);

    let role = Role {
        metadata: ObjectMeta {
            name: Some("cm-reader".into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["".into()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: vec!["get".into(), "list".into()],
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), NS)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    // Bound through the group, so the certificate's O attribute must have reached RBAC.
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("cm-reader".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "cm-reader".into(),
        },
        subjects: Some(vec![Subject {
            kind: "Group".into(),
            name: "team-x".into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), NS)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    eventually("alice may list configmaps", Duration::from_secs(20), || {
        let cms = cms.clone();
        async move { (code(cms.list(&Default::default()).await) == 200).then_some(()) }
    })
    .await;
    // The same user in another group is still refused.
    let bob = a.client_as("alice", &["team-y"]).await.unwrap();
    let r = Api::<ConfigMap>::namespaced(bob, NS)
        .list(&Default::default())
        .await;
    assert_eq!(code(r), 403);
}

async fn service_account_tokens(a: &Cluster, a_admin: &Client, b_admin: &Client) {
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("agent".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(a_admin.clone(), NS)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    let token = request_token(a_admin, "agent", &["vclink-hub"]).await;
    assert_eq!(
        review(a_admin, &token, &["vclink-hub"]).await.as_deref(),
        Some("system:serviceaccount:envtest:agent")
    );
    assert_eq!(
        review(b_admin, &token, &["vclink-hub"]).await,
        None,
        "other cluster"
    );
    assert_eq!(
        review(a_admin, &token, &["other"]).await,
        None,
        "wrong audience"
    );

    // A token for the API's own audience authenticates requests; RBAC still applies.
    let api_token = request_token(a_admin, "agent", &[]).await;
    let as_sa = a.client_with_token(&api_token).await.unwrap();
    match Api::<Namespace>::all(as_sa).list(&Default::default()).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403);
            assert!(
                s.message.contains("system:serviceaccount:envtest:agent"),
                "{}",
                s.message
            );
        }
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
}

async fn garbage_collection(admin: &Client) {
    let cms = Api::<ConfigMap>::namespaced(admin.clone(), NS);
    let cm = |name: &str, owner: Option<OwnerReference>| ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        ..Default::default()
    };
    let owner = cms
        .create(&PostParams::default(), &cm("owner", None))
        .await
        .unwrap();
    let oref = OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: "owner".into(),
        uid: owner.metadata.uid.clone().unwrap(),
        ..Default::default()
    };
    cms.create(&PostParams::default(), &cm("dependent", Some(oref)))
        .await
        .unwrap();
    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    eventually("GC deletes the dependent", Duration::from_secs(60), || {
        let cms = cms.clone();
        async move {
            cms.get_opt("dependent")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_are_real_and_isolated_and_leave_nothing_behind() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let t0 = Instant::now();
    let (a, b) = tokio::join!(
        Cluster::start(
            "a",
            ClusterOptions {
                controller_manager: true,
                ..Default::default()
            }
        ),
        Cluster::start("b", ClusterOptions::default()),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    eprintln!("two clusters ready in {:?}", t0.elapsed());
    assert_ne!(a.url(), b.url());
    let (a_admin, b_admin) = (a.client().await.unwrap(), b.client().await.unwrap());
    create_namespace(&a_admin, NS).await;
    create_namespace(&b_admin, NS).await;

    // A certificate from the other cluster's CA is not accepted.
    let foreign = b.issue_identity("admin", &["system:masters"]);
    let c = a.client_with_identity(&foreign).await.unwrap();
    assert_eq!(
        code(Api::<Namespace>::all(c).list(&Default::default()).await),
        401
    );

    // The admin kubeconfig file works on its own.
    let kc = kube::config::Kubeconfig::read_from(a.kubeconfig_path()).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let from_file = Client::try_from(cfg).unwrap();
    Api::<Namespace>::all(from_file).get(NS).await.unwrap();

    rbac_applies_to_client_certificates(&a, &a_admin).await;
    service_account_tokens(&a, &a_admin, &b_admin).await;
    garbage_collection(&a_admin).await;

    let pids: Vec<u32> = a.pids().into_iter().chain(b.pids()).collect();
    assert_eq!(pids.len(), 3 + 1 + 2 + 1, "servers and watchdogs: {pids:?}");
    assert!(pids.iter().all(|p| is_alive(*p)));
    let (a_dir, b_dir) = (a.data_dir().to_path_buf(), b.data_dir().to_path_buf());
    drop(a);
    b.stop();
    let left: Vec<u32> = pids.iter().copied().filter(|p| is_alive(*p)).collect();
    assert!(left.is_empty(), "still alive after drop: {left:?}");
    if std::env::var("VCLINK_KEEP_TEST_DATA").as_deref() != Ok("1") {
        assert!(
            !a_dir.exists() && !b_dir.exists(),
            "data directories removed"
        );
    }
}
