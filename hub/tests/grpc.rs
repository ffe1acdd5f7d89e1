//! The gRPC service in-process, without Kubernetes: a hub whose world is empty but
//! ready, served over plain TCP to a real tonic client. Checks how streams are refused
//! (which gRPC code, counted under which reason) and that a newer stream of a cluster
//! closes the older one.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use vclink_hub::grpc::service::LinkService;
use vclink_hub::identity::auth::TrustClaimedCluster;
use vclink_hub::state::Hub;
use vclink_hub::testing::TestHub;
use vclink_proto::v1::link_client::LinkClient;
use vclink_proto::v1::*;

const HOST: &str = "c-m-host0001";
const WAIT: Duration = Duration::from_secs(10);

struct Server {
    hub: Arc<Hub>,
    port: u16,
    stop: CancellationToken,
}

async fn serve(ready: bool, max_vclusters: usize) -> Server {
    serve_hub(
        TestHub::default()
            .max_vclusters(max_vclusters)
            .ready(ready)
            .build(),
    )
    .await
}

/// Serves `hub`'s gRPC service on a free localhost port until the server is stopped.
async fn serve_hub(hub: Arc<Hub>) -> Server {
    let stop = CancellationToken::new();
    let svc = LinkService::new(
        hub.clone(),
        Arc::new(TrustClaimedCluster::default()),
        stop.clone(),
    )
    .into_server();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let s = stop.clone();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), s.cancelled_owned()),
    );
    Server { hub, port, stop }
}

struct Stream {
    tx: mpsc::Sender<AgentMessage>,
    rx: Result<tonic::Streaming<HubMessage>, tonic::Status>,
}

async fn open(port: u16, first: Vec<agent_message::Msg>) -> Stream {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(16);
    for m in first {
        tx.send(AgentMessage { msg: Some(m) }).await.unwrap();
    }
    let rx = LinkClient::new(ch)
        .attach(ReceiverStream::new(rx))
        .await
        .map(|r| r.into_inner());
    Stream { tx, rx }
}

fn hello(cluster: &str) -> agent_message::Msg {
    agent_message::Msg::Hello(Hello {
        agent_version: "0.1.0".into(),
        protocol_version: 1,
        cluster_id: cluster.into(),
        ..Default::default()
    })
}

fn vc(n: u32, project: &str) -> VCluster {
    VCluster {
        uid: format!("00000000-0000-4000-8000-{n:012x}"),
        namespace: "ns".into(),
        name: format!("vc{n}"),
        project_id: project.into(),
        ..Default::default()
    }
}

/// Reads until the stream ends; returns the final status code (Ok when it ended cleanly).
async fn end_code(s: &mut Stream) -> Code {
    let rx = match &mut s.rx {
        Ok(rx) => rx,
        Err(st) => return st.code(),
    };
    tokio::time::timeout(WAIT, async {
        loop {
            match rx.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return Code::Ok,
                Err(st) => return st.code(),
            }
        }
    })
    .await
    .expect("stream did not end")
}

async fn welcome(s: &mut Stream) -> Welcome {
    let rx = s.rx.as_mut().expect("stream refused");
    match tokio::time::timeout(WAIT, rx.message()).await.unwrap() {
        Ok(Some(HubMessage {
            msg: Some(hub_message::Msg::Welcome(w)),
        })) => w,
        other => panic!("expected Welcome, got {other:?}"),
    }
}

fn rejections(hub: &Hub, reason: &str) -> bool {
    hub.metrics.encode().contains(&format!(
        "vclink_hub_rejections_total{{reason=\"{reason}\"}} 1"
    ))
}

#[tokio::test]
async fn a_hub_that_is_not_ready_refuses_with_unavailable() {
    let srv = serve(false, 10).await;
    let mut s = open(srv.port, vec![hello(HOST)]).await;
    assert_eq!(end_code(&mut s).await, Code::Unavailable);
    assert!(rejections(&srv.hub, "not_ready"));
    srv.stop.cancel();
}

#[tokio::test]
async fn the_first_message_must_be_a_valid_hello() {
    let srv = serve(true, 10).await;
    let mut s = open(srv.port, vec![agent_message::Msg::Heartbeat(Heartbeat {})]).await;
    assert_eq!(end_code(&mut s).await, Code::InvalidArgument);
    assert!(rejections(&srv.hub, "no_hello"));
    let mut s = open(srv.port, vec![hello("Not A Cluster")]).await;
    assert_eq!(end_code(&mut s).await, Code::InvalidArgument);
    assert!(rejections(&srv.hub, "invalid"));
    srv.stop.cancel();
}

#[tokio::test]
async fn welcome_names_the_verified_cluster_and_heartbeat() {
    let srv = serve(true, 10).await;
    let mut s = open(srv.port, vec![hello(HOST)]).await;
    let w = welcome(&mut s).await;
    assert_eq!(
        (
            w.cluster_id.as_str(),
            w.protocol_version,
            w.heartbeat_seconds
        ),
        (HOST, 1, 30)
    );
    drop(s.tx);
    srv.stop.cancel();
}

/// Waits until the hub counts a per-vCluster refusal for `reason`.
async fn refused_vcluster(hub: &Hub, reason: &str) {
    let want = format!("vclink_hub_vcluster_refusals_total{{reason=\"{reason}\"}} 1");
    tokio::time::timeout(WAIT, async {
        while !hub.metrics.encode().contains(&want) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no refusal {reason} counted:\n{}", hub.metrics.encode()));
}

#[tokio::test]
async fn over_the_limit_and_foreign_projects_refuse_the_vcluster_not_the_stream() {
    let srv = serve(true, 1).await;
    let snap = |vs| {
        agent_message::Msg::Snapshot(Snapshot {
            generation: 1,
            vclusters: vs,
            last: true,
        })
    };
    let mut s = open(
        srv.port,
        vec![hello(HOST), snap(vec![vc(1, ""), vc(2, "")])],
    )
    .await;
    welcome(&mut s).await;
    refused_vcluster(&srv.hub, "over_agent_limit").await;
    // The same stream goes on: its next message is still applied.
    s.tx.send(AgentMessage {
        msg: Some(agent_message::Msg::Upsert(Upsert {
            vcluster: Some(vc(3, "c-m-other001:p-abcde")),
        })),
    })
    .await
    .unwrap();
    refused_vcluster(&srv.hub, "foreign_project").await;
    assert!(!rejections(&srv.hub, "too_many_vclusters"));
    assert!(!rejections(&srv.hub, "foreign_project"));
    // The agent ends its side: the hub's side ends cleanly, not with an error.
    let Stream { tx, rx } = s;
    drop(tx);
    let mut s = Stream {
        tx: mpsc::channel(1).0,
        rx,
    };
    assert_eq!(
        end_code(&mut s).await,
        Code::Ok,
        "ended by the agent, not the hub"
    );
    srv.stop.cancel();
}

#[tokio::test]
async fn a_host_that_is_not_opted_in_is_permission_denied_naming_the_label() {
    let hub = TestHub::default()
        .host_selector("vclink.io/agent=enabled", false)
        .ready(true)
        .build();
    let Server { hub, port, stop } = serve_hub(hub).await;
    let mut s = open(port, vec![hello(HOST)]).await;
    let rx = s.rx.as_mut().expect("stream opened");
    let err = tokio::time::timeout(WAIT, async {
        loop {
            match rx.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("ended without an error"),
                Err(st) => return st,
            }
        }
    })
    .await
    .expect("refused within the deadline");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(
        err.message(),
        "cluster c-m-host0001 is not opted in: label the Rancher cluster vclink.io/agent=enabled"
    );
    assert!(rejections(&hub, "host_not_opted_in"));
    stop.cancel();
}

#[tokio::test]
async fn a_newer_stream_replaces_the_older() {
    let srv = serve(true, 10).await;
    let mut old = open(srv.port, vec![hello(HOST)]).await;
    welcome(&mut old).await;
    let mut new = open(srv.port, vec![hello(HOST)]).await;
    welcome(&mut new).await;
    assert_eq!(end_code(&mut old).await, Code::Unavailable);
    assert!(
        srv.hub
            .metrics
            .encode()
            .contains("vclink_hub_agents_connected 1")
    );
    // The new stream is still served.
    new.tx
        .send(AgentMessage {
            msg: Some(agent_message::Msg::Heartbeat(Heartbeat {})),
        })
        .await
        .unwrap();
    assert_eq!(srv.hub.world().hosts.len(), 1);
    srv.stop.cancel();
}
