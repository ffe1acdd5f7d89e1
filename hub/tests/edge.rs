//! The agent edge before authentication, against a real TLS listener built exactly as
//! the hub builds it (`grpc::tls::incoming_with` + `grpc::edge::server`): the cap on
//! unauthenticated streams answers RESOURCE_EXHAUSTED with a retry hint and frees its
//! slot at Welcome or when a stream ends; a 1 MiB Hello is refused at once; a connection
//! whose streams keep failing before authentication is closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use vclink_hub::grpc::edge::{self, EdgeSettings};
use vclink_hub::grpc::service::LinkService;
use vclink_hub::grpc::tls;
use vclink_hub::identity::auth::TrustClaimedCluster;
use vclink_hub::state::Hub;
use vclink_hub::testing::TestHub;
use vclink_proto::v1::link_client::LinkClient;
use vclink_proto::v1::*;

const WAIT: Duration = Duration::from_secs(20);

struct Edge {
    hub: Arc<Hub>,
    addr: std::net::SocketAddr,
    ca_pem: String,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn serve(settings: EdgeSettings) -> Edge {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = vclink_envtest::CertificateAuthority::new("hub-edge-test").unwrap();
    let serving = ca.issue_server(&["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c"), &serving.cert_pem).unwrap();
    std::fs::write(dir.path().join("k"), &serving.key_pem).unwrap();
    let cfg = tls::server_config(&dir.path().join("c"), &dir.path().join("k")).unwrap();
    let hub = TestHub::default().ready(true).build();
    let stop = CancellationToken::new();
    let svc = LinkService::new(
        hub.clone(),
        Arc::new(TrustClaimedCluster::default()),
        stop.clone(),
    )
    .with_edge(settings.clone())
    .into_server();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tls::incoming_with(listener, cfg, settings.accept.clone(), stop.clone());
    tokio::spawn(
        edge::server(&settings)
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned()),
    );
    Edge {
        hub,
        addr,
        ca_pem: ca.cert_pem().to_string(),
        stop,
        _dir: dir,
    }
}

async fn channel(ca_pem: &str, addr: std::net::SocketAddr) -> Channel {
    Endpoint::from_shared(format!("https://localhost:{}", addr.port()))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca_pem))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap()
}

type Opened = (
    mpsc::Sender<AgentMessage>,
    Result<tonic::Streaming<HubMessage>, tonic::Status>,
);

async fn open(ch: Channel, first: Vec<agent_message::Msg>) -> Opened {
    let (tx, rx) = mpsc::channel(4);
    for m in first {
        tx.send(AgentMessage { msg: Some(m) }).await.unwrap();
    }
    let rx = LinkClient::new(ch)
        .max_encoding_message_size(4 << 20)
        .attach(ReceiverStream::new(rx))
        .await
        .map(|r| r.into_inner());
    (tx, rx)
}

fn hello(cluster: &str, instance: String) -> agent_message::Msg {
    agent_message::Msg::Hello(Hello {
        agent_version: "0.1.0".into(),
        protocol_version: 1,
        cluster_id: cluster.into(),
        instance,
        ..Default::default()
    })
}

/// The first message or the status that ended the stream.
async fn first(s: &mut Opened) -> Result<HubMessage, tonic::Status> {
    let rx = match &mut s.1 {
        Ok(rx) => rx,
        Err(st) => return Err(st.clone()),
    };
    match tokio::time::timeout(WAIT, rx.message()).await {
        Ok(Ok(Some(m))) => Ok(m),
        Ok(Ok(None)) => Err(tonic::Status::ok("ended")),
        Ok(Err(st)) => Err(st),
        Err(_) => panic!("no answer within {WAIT:?}"),
    }
}

fn rejected(hub: &Hub, reason: &str) -> bool {
    hub.metrics.encode().contains(&format!(
        "vclink_hub_rejections_total{{reason=\"{reason}\"}}"
    ))
}

fn settings() -> EdgeSettings {
    EdgeSettings {
        max_unauthenticated_streams: 4,
        ..Default::default()
    }
}

#[tokio::test]
async fn unauthenticated_streams_beyond_the_cap_are_refused_with_a_retry_hint() {
    let e = serve(settings()).await;
    // Four clients open a stream and never send Hello.
    let mut silent = Vec::new();
    for _ in 0..4 {
        let ch = channel(&e.ca_pem, e.addr).await;
        silent.push(open(ch, vec![]).await);
    }
    // The fifth is refused at once, without waiting for the others' Hello timeout.
    let started = Instant::now();
    let mut fifth = open(channel(&e.ca_pem, e.addr).await, vec![]).await;
    let st = first(&mut fifth).await.unwrap_err();
    assert_eq!(st.code(), Code::ResourceExhausted, "{st:?}");
    assert!(st.message().contains("retry in"), "{}", st.message());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(rejected(&e.hub, "preauth_full"));
    // A silent client going away frees its slot: a genuine agent then gets in.
    silent.truncate(3);
    let deadline = Instant::now() + WAIT;
    loop {
        let ch = channel(&e.ca_pem, e.addr).await;
        let mut s = open(ch, vec![hello("c-m-host0001", String::new())]).await;
        match first(&mut s).await {
            Ok(m) => {
                assert!(matches!(m.msg, Some(hub_message::Msg::Welcome(_))), "{m:?}");
                break;
            }
            Err(st) if st.code() == Code::ResourceExhausted && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(st) => panic!("the freed slot was not reused: {st:?}"),
        }
    }
    e.stop.cancel();
}

#[tokio::test]
async fn authenticated_streams_do_not_hold_a_preauth_slot() {
    let e = serve(EdgeSettings {
        max_unauthenticated_streams: 1,
        ..Default::default()
    })
    .await;
    let mut live = Vec::new();
    for i in 0..3 {
        let ch = channel(&e.ca_pem, e.addr).await;
        let mut s = open(ch, vec![hello(&format!("c-m-host000{i}"), String::new())]).await;
        let m = first(&mut s).await.expect("Welcome");
        assert!(matches!(m.msg, Some(hub_message::Msg::Welcome(_))));
        live.push(s);
    }
    e.stop.cancel();
}

#[tokio::test]
async fn a_one_mib_hello_before_authentication_is_refused_at_once() {
    let e = serve(settings()).await;
    let ch = channel(&e.ca_pem, e.addr).await;
    let started = Instant::now();
    let mut s = open(ch, vec![hello("c-m-host0001", "x".repeat(1 << 20))]).await;
    let st = first(&mut s).await.unwrap_err();
    assert_eq!(st.code(), Code::ResourceExhausted, "{st:?}");
    assert!(
        st.message().contains("at most 8192 bytes"),
        "{}",
        st.message()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(rejected(&e.hub, "hello_too_large"));
    e.stop.cancel();
}

/// A TCP relay in front of the hub that counts connections and notices when the hub
/// closes one.
async fn relay(
    to: std::net::SocketAddr,
) -> (std::net::SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (opened, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (o, c) = (opened.clone(), closed.clone());
    tokio::spawn(async move {
        while let Ok((mut a, _)) = l.accept().await {
            o.fetch_add(1, Ordering::SeqCst);
            let c = c.clone();
            tokio::spawn(async move {
                if let Ok(mut b) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                }
                c.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, opened, closed)
}

#[tokio::test]
async fn a_connection_whose_streams_keep_failing_before_authentication_is_closed() {
    let e = serve(settings()).await;
    let (addr, opened, closed) = relay(e.addr).await;
    let ch = channel(&e.ca_pem, addr).await;
    // Two failures: the connection stays.
    for _ in 0..2 {
        let mut s = open(ch.clone(), vec![hello("Not A Cluster", String::new())]).await;
        assert_eq!(
            first(&mut s).await.unwrap_err().code(),
            Code::InvalidArgument
        );
    }
    assert_eq!(
        closed.load(Ordering::SeqCst),
        0,
        "two failures keep the connection"
    );
    // The third closes it.
    let mut s = open(ch.clone(), vec![hello("Not A Cluster", String::new())]).await;
    let _ = first(&mut s).await;
    let deadline = Instant::now() + WAIT;
    while closed.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the hub did not close the connection"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(opened.load(Ordering::SeqCst), 1);
    e.stop.cancel();
}

#[tokio::test]
async fn after_welcome_the_message_size_limit_still_applies_through_the_small_windows() {
    let e = serve(settings()).await;
    let ch = channel(&e.ca_pem, e.addr).await;
    let mut s = open(ch, vec![hello("c-m-host0001", String::new())]).await;
    let m = first(&mut s).await.expect("Welcome");
    assert!(matches!(m.msg, Some(hub_message::Msg::Welcome(_))));
    let big = VCluster {
        uid: "00000000-0000-4000-8000-000000000001".into(),
        namespace: "ns".into(),
        name: "vc1".into(),
        requested_name: "x".repeat(2 << 20),
        ..Default::default()
    };
    s.0.send(AgentMessage {
        msg: Some(agent_message::Msg::Upsert(Upsert {
            vcluster: Some(big),
        })),
    })
    .await
    .unwrap();
    let st = loop {
        match first(&mut s).await {
            Ok(_) => continue,
            Err(st) => break st,
        }
    };
    assert_eq!(st.code(), Code::ResourceExhausted, "{st:?}");
    assert!(rejected(&e.hub, "oversized"));
    e.stop.cancel();
}
