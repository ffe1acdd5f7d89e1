//! Component test: the hub against a real kube-apiserver (vclink-envtest) with Rancher's
//! CRDs installed and Rancher's side played by the test itself, and a fake agent talking
//! real gRPC over TLS. Checks what a user would: the Rancher cluster appears with the
//! right labels, the Register carries the token from the Secret the moment it exists,
//! connection state reaches the agent, name collisions never merge vClusters, a user's
//! deletion yields Forget, a restarted hub creates no duplicates, and Remove deletes.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use vclink_hub::config::Args;
use vclink_hub::identity::auth::TrustClaimedCluster;
use vclink_hub::rancher::Kind;
use vclink_proto::v1::link_client::LinkClient;
use vclink_proto::v1::*;

const HOST: &str = "c-m-host0001";
const UID1: &str = "00000000-0000-4000-8000-000000000001";
const UID2: &str = "00000000-0000-4000-8000-000000000002";
const UID4: &str = "00000000-0000-4000-8000-000000000004";
const WS: &str = "fleet-default";
const WAIT: Duration = Duration::from_secs(30);

fn crd(group: &str, kind: &str, plural: &str, scope: &str) -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {"group": group, "scope": scope,
            "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase()},
            "versions": [{"name": if group.starts_with("prov") {"v1"} else {"v3"}, "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    }))
    .unwrap()
}

async fn install_rancher_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for c in [
        crd(
            "provisioning.cattle.io",
            "Cluster",
            "clusters",
            "Namespaced",
        ),
        crd("management.cattle.io", "Cluster", "clusters", "Cluster"),
        crd(
            "management.cattle.io",
            "ClusterRegistrationToken",
            "clusterregistrationtokens",
            "Namespaced",
        ),
        crd("management.cattle.io", "Setting", "settings", "Cluster"),
    ] {
        crds.create(&PostParams::default(), &c).await.unwrap();
    }
    wait_for("Rancher CRDs served", || async {
        let a = client
            .list_api_group_resources("management.cattle.io/v3")
            .await
            .ok()?;
        let b = client
            .list_api_group_resources("provisioning.cattle.io/v1")
            .await
            .ok()?;
        (a.resources.len() >= 3 && !b.resources.is_empty()).then_some(())
    })
    .await;
}

async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Hub {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    port: u16,
    metrics_port: u16,
}

async fn start_hub(client: Client, dir: &std::path::Path) -> Hub {
    let port = free_port();
    let metrics_port = free_port();
    let args = <Args as clap::Parser>::try_parse_from([
        "vclink-hub".to_string(),
        format!("--listen=127.0.0.1:{port}"),
        format!("--metrics-listen=127.0.0.1:{metrics_port}"),
        format!("--tls-cert-file={}", dir.join("tls.crt").display()),
        format!("--tls-key-file={}", dir.join("tls.key").display()),
        "--removal-grace=2s".into(),
        // This test's hand-rolled Rancher side has no Projects or role bindings; owner
        // sync is covered by the harness's owners tests against the simulator.
        "--owner-sync=disabled".into(),
        // The operator's clusters are adopted only from the user it runs as.
        "--adopt-operator-clusters-created-by=vcluster-rancher-operator".into(),
    ])
    .unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(vclink_hub::run_with(
        args,
        client,
        std::sync::Arc::new(TrustClaimedCluster::default()),
        stop.clone(),
    ));
    Hub {
        stop,
        task,
        port,
        metrics_port,
    }
}

/// GET on the hub's metrics listener: (status line, body).
async fn http_get(port: u16, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

struct Agent {
    tx: mpsc::Sender<AgentMessage>,
    rx: tonic::Streaming<HubMessage>,
}

impl Agent {
    async fn connect(port: u16, ca: &str) -> Agent {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .domain_name("localhost");
        let ep = Endpoint::from_shared(format!("https://localhost:{port}"))
            .unwrap()
            .tls_config(tls)
            .unwrap();
        wait_for("the hub to accept an agent", || async {
            let ch = ep.connect().await.ok()?;
            let (tx, rx) = mpsc::channel(64);
            tx.send(AgentMessage {
                msg: Some(agent_message::Msg::Hello(Hello {
                    agent_version: "0.1.0".into(),
                    protocol_version: 1,
                    cluster_id: HOST.into(),
                    ..Default::default()
                })),
            })
            .await
            .ok()?;
            let mut rx = LinkClient::new(ch)
                .attach(ReceiverStream::new(rx))
                .await
                .ok()?
                .into_inner();
            match rx.message().await {
                Ok(Some(HubMessage {
                    msg: Some(hub_message::Msg::Welcome(w)),
                })) => {
                    assert_eq!(w.cluster_id, HOST);
                    Some(Agent { tx, rx })
                }
                _ => None,
            }
        })
        .await
    }

    async fn send(&self, m: agent_message::Msg) {
        self.tx.send(AgentMessage { msg: Some(m) }).await.unwrap();
    }

    async fn snapshot(&self, generation: u64, vclusters: Vec<VCluster>) {
        self.send(agent_message::Msg::Snapshot(Snapshot {
            generation,
            vclusters,
            last: true,
        }))
        .await;
    }

    /// Next hub message matching `f`, skipping others.
    async fn expect<T>(&mut self, what: &str, f: impl Fn(&hub_message::Msg) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let m = tokio::time::timeout_at(deadline, self.rx.message())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
                .unwrap_or_else(|e| panic!("stream failed waiting for {what}: {e}"))
                .unwrap_or_else(|| panic!("stream ended waiting for {what}"));
            if let Some(v) = m.msg.as_ref().and_then(&f) {
                return v;
            }
        }
    }

    async fn expect_state(&mut self, uid: &str, state: State) -> Status {
        self.expect(&format!("{state:?} for {uid}"), |m| match m {
            hub_message::Msg::Status(s) if s.uid == uid && s.state == state as i32 => {
                Some(s.clone())
            }
            _ => None,
        })
        .await
    }
}

fn vc(uid: &str, ns: &str, name: &str) -> VCluster {
    VCluster {
        uid: uid.into(),
        namespace: ns.into(),
        name: name.into(),
        ..Default::default()
    }
}

async fn clusters_of(api: &Api<DynamicObject>, uid: &str) -> Vec<DynamicObject> {
    let sel = format!("vclink.io/service-uid={uid},vclink.io/host-cluster={HOST}");
    api.list(&ListParams::default().labels(&sel))
        .await
        .unwrap()
        .items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hub_creates_registers_and_deletes_against_a_real_api_server() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = tracing_subscriber::fmt()
        .with_env_filter("vclink_hub=info")
        .with_test_writer()
        .try_init();
    let cluster = vclink_envtest::Cluster::start("hub-component", Default::default())
        .await
        .unwrap();
    let client = cluster.client().await.unwrap();
    install_rancher_crds(&client).await;
    let ns: Api<Namespace> = Api::all(client.clone());
    for n in [WS, "c-m-vc000001"] {
        ns.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": n}})).unwrap(),
        )
        .await
        .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let serving = cluster
        .ca()
        .issue_server(&["localhost".to_string()])
        .unwrap();
    std::fs::write(dir.path().join("tls.crt"), &serving.cert_pem).unwrap();
    std::fs::write(dir.path().join("tls.key"), &serving.key_pem).unwrap();
    let ca = cluster.ca().cert_pem().to_string();

    let prov = Kind::ProvCluster.namespaced(client.clone(), WS);
    let mgmt = Kind::MgmtCluster.all(client.clone());
    let crts = Kind::RegistrationToken.namespaced(client.clone(), "c-m-vc000001");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "c-m-vc000001");

    // A user's cluster already holds the name vc2 would get: the hub must pick another.
    let taken = json!({"apiVersion": "provisioning.cattle.io/v1", "kind": "Cluster",
        "metadata": {"name": format!("{HOST}-team-b-vc2"), "namespace": WS}, "spec": {}});
    prov.create(
        &PostParams::default(),
        &serde_json::from_value(taken).unwrap(),
    )
    .await
    .unwrap();

    // A cluster the Go operator created for vc4 (Rancher's webhook recorded the
    // operator's user as creator): to be adopted, not duplicated.
    let legacy = json!({"apiVersion": "provisioning.cattle.io/v1", "kind": "Cluster",
        "metadata": {"name": "legacy-vc4", "namespace": WS, "labels": {
            "loft.sh/vcluster-service-uid": UID4, "loft.sh/vcluster-host-cluster": HOST},
            "annotations": {"field.cattle.io/creatorId": "vcluster-rancher-operator"}},
        "spec": {}, "status": {"clusterName": "c-m-legacy01"}});
    prov.create(
        &PostParams::default(),
        &serde_json::from_value(legacy).unwrap(),
    )
    .await
    .unwrap();
    let m = json!({"apiVersion": "management.cattle.io/v3", "kind": "Cluster", "metadata": {"name": "c-m-legacy01"}, "spec": {}});
    mgmt.create(&PostParams::default(), &serde_json::from_value(m).unwrap())
        .await
        .unwrap();

    // The host is opted in (the hub serves agents only of labelled Rancher clusters).
    let host = json!({"apiVersion": "management.cattle.io/v3", "kind": "Cluster",
        "metadata": {"name": HOST, "labels": {"vclink.io/agent": "enabled"}}, "spec": {}});
    mgmt.create(
        &PostParams::default(),
        &serde_json::from_value(host).unwrap(),
    )
    .await
    .unwrap();

    let hub = start_hub(client.clone(), dir.path()).await;
    let mut agent = Agent::connect(hub.port, &ca).await;
    let all = vec![
        vc(UID1, "team-a", "vc1"),
        vc(UID2, "team-b", "vc2"),
        vc(UID4, "legacy", "vc4"),
    ];
    agent.snapshot(1, all).await;

    // 1. The provisioning cluster appears, labelled and annotated.
    let c1 = wait_for("cluster of vc1", || async {
        clusters_of(&prov, UID1).await.into_iter().next()
    })
    .await;
    assert_eq!(c1.name_any(), format!("{HOST}-team-a-vc1"));
    let labels = c1.labels();
    assert_eq!(labels["vclink.io/managed-by"], "vclink");
    assert_eq!(labels["vclink.io/namespace"], "team-a");
    assert_eq!(c1.annotations()["field.cattle.io/no-creator-rbac"], "true");
    let c2 = wait_for("cluster of vc2", || async {
        clusters_of(&prov, UID2).await.into_iter().next()
    })
    .await;
    assert_ne!(
        c2.name_any(),
        format!("{HOST}-team-b-vc2"),
        "a name collision must not merge"
    );
    agent.expect_state(UID1, State::Pending).await;
    let adopted = wait_for("vc4 adopted", || async {
        clusters_of(&prov, UID4).await.into_iter().next()
    })
    .await;
    assert_eq!(adopted.name_any(), "legacy-vc4");
    for proof in ["vclink.io/proof", "vclink.io/proof-uid"] {
        assert!(
            adopted.annotations().contains_key(proof),
            "adoption writes both proofs: {:?}",
            adopted.annotations()
        );
    }
    let m = mgmt.get("c-m-legacy01").await.unwrap();
    assert_eq!(
        m.labels().get("vclink.io/service-uid").map(String::as_str),
        Some(UID4)
    );

    // 2. Rancher's side: management cluster and a token whose value is in a Secret.
    let p = PatchParams::default();
    prov.patch(
        &c1.name_any(),
        &p,
        &Patch::Merge(json!({"status": {"clusterName": "c-m-vc000001"}})),
    )
    .await
    .unwrap();
    let m = json!({"apiVersion": "management.cattle.io/v3", "kind": "Cluster",
        "metadata": {"name": "c-m-vc000001", "labels": {"vclink.io/managed-by": "vclink"}}, "spec": {}});
    mgmt.create(&PostParams::default(), &serde_json::from_value(m).unwrap())
        .await
        .unwrap();
    let t = json!({"apiVersion": "management.cattle.io/v3", "kind": "ClusterRegistrationToken",
        "metadata": {"name": "default-token", "namespace": "c-m-vc000001"}, "spec": {},
        "status": {"token": "", "tokenSecretName": "crt-token-default-token",
            "manifestUrl": "https://rancher.example/v3/import/{token}_c-m-vc000001.yaml"}});
    crts.create(&PostParams::default(), &serde_json::from_value(t).unwrap())
        .await
        .unwrap();
    agent
        .expect("waiting for the token Secret", |m| match m {
            hub_message::Msg::Status(s) if s.uid == UID1 && s.message.contains("token Secret") => {
                Some(())
            }
            _ => None,
        })
        .await;
    let s = json!({"metadata": {"name": "crt-token-default-token", "namespace": "c-m-vc000001"}, "stringData": {"token": "s3cr3t"}});
    let written = Instant::now();
    secrets
        .create(&PostParams::default(), &serde_json::from_value(s).unwrap())
        .await
        .unwrap();
    let reg = agent
        .expect("Register", |m| match m {
            hub_message::Msg::Register(r) if r.uid == UID1 => Some(r.clone()),
            _ => None,
        })
        .await;
    eprintln!(
        "token Secret written → Register received: {:?}",
        written.elapsed()
    );
    assert_eq!(
        reg.manifest_url,
        "https://rancher.example/v3/import/s3cr3t_c-m-vc000001.yaml"
    );
    assert_eq!(reg.rancher_cluster_id, "c-m-vc000001");
    assert_eq!(reg.tls_mode, TlsMode::Strict as i32);
    agent.expect_state(UID1, State::Registering).await;
    let (status, _) = http_get(hub.metrics_port, "/readyz").await;
    assert!(status.contains("200"), "{status}");
    let (_, metrics) = http_get(hub.metrics_port, "/metrics").await;
    assert!(
        metrics.contains("vclink_hub_registrations_sent_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vclink_hub_agents_connected 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vclink_hub_api_requests_total{verb=\"create\"}"),
        "{metrics}"
    );
    assert!(!metrics.contains("s3cr3t"));

    // 3. Rancher reports the cluster connected.
    let conds = json!({"status": {"conditions": [{"type": "Connected", "status": "True"}]}});
    mgmt.patch("c-m-vc000001", &p, &Patch::Merge(conds))
        .await
        .unwrap();
    agent.expect_state(UID1, State::Connected).await;

    // 4. A user deletes vc2's cluster in Rancher: Forget, and no new cluster.
    prov.delete(&c2.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    agent
        .expect("Forget", |m| match m {
            hub_message::Msg::Forget(f) if f.uid == UID2 => Some(()),
            _ => None,
        })
        .await;
    let mut deleted = vc(UID2, "team-b", "vc2");
    deleted.rancher_cluster_deleted = true;
    agent
        .send(agent_message::Msg::Upsert(Upsert {
            vcluster: Some(deleted.clone()),
        }))
        .await;

    // 5. A restarted hub rebuilds from labels: no duplicate, status resent.
    drop(agent);
    hub.stop.cancel();
    hub.task.await.unwrap().unwrap();
    let hub = start_hub(client.clone(), dir.path()).await;
    let mut agent = Agent::connect(hub.port, &ca).await;
    let all = vec![
        vc(UID1, "team-a", "vc1"),
        deleted.clone(),
        vc(UID4, "legacy", "vc4"),
    ];
    agent.snapshot(7, all).await;
    agent.expect_state(UID1, State::Connected).await;
    assert_eq!(clusters_of(&prov, UID1).await.len(), 1);
    assert_eq!(clusters_of(&prov, UID4).await.len(), 1);
    assert!(clusters_of(&prov, UID2).await.is_empty());

    // 6. A complete snapshot without vc4: deleted only after --removal-grace (2 s).
    let sent = Instant::now();
    agent
        .snapshot(8, vec![vc(UID1, "team-a", "vc1"), deleted])
        .await;
    agent.expect_state(UID1, State::Connected).await; // the snapshot was processed
    assert_eq!(
        clusters_of(&prov, UID4).await.len(),
        1,
        "deleted before the grace period"
    );
    wait_for("cluster of vc4 deleted", || async {
        clusters_of(&prov, UID4).await.is_empty().then_some(())
    })
    .await;
    assert!(
        sent.elapsed() >= Duration::from_secs(2),
        "deleted after {:?}",
        sent.elapsed()
    );

    // 7. Remove deletes the cluster.
    agent
        .send(agent_message::Msg::Remove(Remove {
            uid: UID1.into(),
            namespace: "team-a".into(),
            name: "vc1".into(),
        }))
        .await;
    wait_for("cluster of vc1 deleted", || async {
        clusters_of(&prov, UID1).await.is_empty().then_some(())
    })
    .await;

    hub.stop.cancel();
    drop(agent);
    hub.task.await.unwrap().unwrap();
}
