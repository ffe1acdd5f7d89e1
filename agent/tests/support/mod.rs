//! What the agent's component tests set up the same way, written once: waiting on a
//! condition with a deadline, the objects a vCluster is made of in the host cluster (a
//! namespace, a Service labelled `app=vcluster` with an https port), the registration
//! Job settings the tests run with, and an in-process fake hub: its TLS listener with a
//! fresh CA the agent pins, the token file, and the Welcome plus forwarding that opens
//! every stream. Each test keeps only what it checks.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::Status;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use vclink_agent::jobs::JobSettings;
use vclink_agent::link::LinkConfig;
use vclink_agent::tls::Trust;
use vclink_proto::v1::hub_message::Msg as HubMsg;
use vclink_proto::v1::link_server::{Link, LinkServer};
use vclink_proto::v1::{HubMessage, Welcome};

/// The Rancher cluster id the fake hub welcomes the agent as, and the agent claims.
pub const CLUSTER_ID: &str = "c-m-abcd1234";

/// Polls `f` every 100 ms until it yields `Some`, failing after `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `kv` as a label or annotation map.
pub fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A vCluster Service (label `app=vcluster`, an https port) named `name`.
pub fn service(name: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(map(&[("app", "vcluster")])),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                name: Some("https".into()),
                port: 443,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// Creates the namespace described by `metadata`.
pub async fn create_namespace(client: &Client, metadata: ObjectMeta) {
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata,
                ..Default::default()
            },
        )
        .await
        .expect("namespace");
}

/// Creates the vCluster Service [`service`]`(name)` in `ns` and returns its UID.
pub async fn create_service(client: &Client, ns: &str, name: &str) -> String {
    Api::<Service>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &service(name))
        .await
        .expect("service")
        .metadata
        .uid
        .expect("uid")
}

/// The registration Job settings of the tests: a test image and small requests.
pub fn job_settings() -> JobSettings {
    JobSettings {
        image: "vclink-agent:test".into(),
        cpu_request: "50m".into(),
        cpu_limit: "500m".into(),
        memory_request: "64Mi".into(),
        memory_limit: "128Mi".into(),
        ..Default::default()
    }
}

/// A fake hub listening on localhost over TLS, and the agent's link settings that
/// reach it: the hub's CA pinned, the token `test-token` in a file that lives as long
/// as this value.
pub struct ServedHub {
    pub cfg: LinkConfig,
    _dir: tempfile::TempDir,
}

/// Serves `hub` (a [`Link`] implementation) on a free localhost port with a
/// certificate from a fresh CA.
pub async fn serve_hub<L: Link>(hub: L) -> ServedHub {
    vclink_agent::tls::install_default_provider();
    let ca = vclink_envtest::CertificateAuthority::generate("hub-ca").expect("ca");
    let id = ca
        .issue_server(&["127.0.0.1".into(), "localhost".into()])
        .expect("cert");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = Server::builder()
        .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(&id.cert_pem, &id.key_pem)))
        .expect("tls")
        .add_service(LinkServer::new(hub))
        .serve_with_incoming(TcpListenerStream::new(listener));
    tokio::spawn(server);
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "test-token\n").expect("token");
    let cfg = LinkConfig {
        hub_url: format!("https://localhost:{port}"),
        trust: Trust::Pem(ca.cert_pem().to_string()),
        hub_ca_file: None,
        cluster_id: CLUSTER_ID.into(),
        token_file,
        instance: "agent-0".into(),
    };
    ServedHub { cfg, _dir: dir }
}

/// The hub's side of a new stream: a Welcome asking for a heartbeat every `heartbeat`,
/// then whatever the test queues on `from_test` (taken by the first stream only).
/// Returns the sender of the stream, for the hub's own messages or errors, and the
/// stream to answer `attach` with.
pub async fn open_stream(
    heartbeat: Duration,
    from_test: &tokio::sync::Mutex<Option<mpsc::Receiver<HubMessage>>>,
) -> Result<
    (
        mpsc::Sender<Result<HubMessage, Status>>,
        ReceiverStream<Result<HubMessage, Status>>,
    ),
    Status,
> {
    let (tx, rx) = mpsc::channel(16);
    tx.send(Ok(HubMessage {
        msg: Some(HubMsg::Welcome(Welcome {
            cluster_id: CLUSTER_ID.into(),
            protocol_version: 1,
            hub_version: "test".into(),
            heartbeat_seconds: heartbeat.as_secs() as u32,
        })),
    }))
    .await
    .map_err(|_| Status::internal("closed"))?;
    if let Some(mut from_test) = from_test.lock().await.take() {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(m) = from_test.recv().await {
                if tx.send(Ok(m)).await.is_err() {
                    return;
                }
            }
        });
    }
    Ok((tx, ReceiverStream::new(rx)))
}
