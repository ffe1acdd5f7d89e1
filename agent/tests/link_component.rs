//! Component test of the hub link against an in-process fake hub over real TLS (pinned
//! CA): the agent authenticates with the token from its file, sends Hello, a snapshot
//! once the catalog is ready, then only changes, progress and heartbeats; a Register from
//! the hub reaches the Job controller's queue with the credential kept as a Secret.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use vclink_agent::latest;
use vclink_agent::link::LinkChannels;
use vclink_agent::watch::Catalog;
use vclink_proto::v1::agent_message::Msg;
use vclink_proto::v1::hub_message::Msg as HubMsg;
use vclink_proto::v1::link_server::Link;
use vclink_proto::v1::{
    AgentMessage, HubMessage, Register, RegistrationProgress, TlsMode, VCluster,
};

mod support;
use support::{CLUSTER_ID, open_stream, serve_hub};

struct FakeHub {
    seen: mpsc::Sender<AgentMessage>,
    to_agent: tokio::sync::Mutex<Option<mpsc::Receiver<HubMessage>>>,
}

#[tonic::async_trait]
impl Link for FakeHub {
    type AttachStream = ReceiverStream<Result<HubMessage, Status>>;

    async fn attach(
        &self,
        req: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let auth = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        if auth != "Bearer test-token" {
            return Err(Status::unauthenticated("bad token"));
        }
        let mut inbound = req.into_inner();
        let (_, stream) = open_stream(Duration::from_secs(1), &self.to_agent).await?;
        let seen = self.seen.clone();
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                if seen.send(m).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(stream))
    }
}

fn vc(i: u32) -> VCluster {
    VCluster {
        uid: format!("00000000-0000-0000-0000-{i:012}"),
        namespace: "team-a".into(),
        name: format!("vc{i}"),
        ..Default::default()
    }
}

async fn next_non_heartbeat(rx: &mut mpsc::Receiver<AgentMessage>) -> Msg {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(15), rx.recv())
            .await
            .expect("message in time")
            .expect("open");
        match m.msg {
            Some(Msg::Heartbeat(_)) => continue,
            Some(other) => return other,
            None => panic!("empty agent message"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_speaks_the_protocol() {
    let (seen_tx, mut seen) = mpsc::channel(64);
    let (to_agent, to_agent_rx) = mpsc::channel(8);
    let hub = serve_hub(FakeHub {
        seen: seen_tx,
        to_agent: tokio::sync::Mutex::new(Some(to_agent_rx)),
    })
    .await;
    let (catalog_tx, catalog_rx) = vclink_agent::watch::channel();
    let (reg_tx, mut reg_rx) = latest::channel(16);
    let (records_tx, _records_rx) = latest::channel(16);
    let (progress_tx, progress_rx) = latest::channel(16);
    let cancel = CancellationToken::new();
    let channels = LinkChannels {
        catalog: catalog_rx,
        registrations: reg_tx,
        records: records_tx,
        progress: progress_rx,
    };
    tokio::spawn(vclink_agent::link::run(
        hub.cfg.clone(),
        channels,
        cancel.clone(),
    ));

    let Msg::Hello(h) = next_non_heartbeat(&mut seen).await else {
        panic!("first message must be Hello")
    };
    assert_eq!(h.cluster_id, CLUSTER_ID);

    // No snapshot before the catalog is ready; then exactly the ready catalog.
    let set = |items: &[u32], ready: bool| {
        let vclusters: BTreeMap<_, _> = items
            .iter()
            .map(|i| (vc(*i).uid, std::sync::Arc::new(vc(*i))))
            .collect();
        catalog_tx.send_replace(Arc::new(Catalog {
            ready,
            vclusters,
            ..Default::default()
        }));
    };
    set(&[1], false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    set(&[1], true);
    let Msg::Snapshot(s) = next_non_heartbeat(&mut seen).await else {
        panic!("expected the snapshot")
    };
    assert!(s.last);
    assert_eq!(s.vclusters, vec![vc(1)]);

    set(&[1, 2], true);
    let Msg::Upsert(u) = next_non_heartbeat(&mut seen).await else {
        panic!("expected an Upsert")
    };
    assert_eq!(u.vcluster, Some(vc(2)));
    set(&[2], true);
    let Msg::Remove(r) = next_non_heartbeat(&mut seen).await else {
        panic!("expected a Remove")
    };
    assert_eq!(r.uid, vc(1).uid);

    progress_tx
        .push(RegistrationProgress {
            uid: vc(2).uid,
            phase: 1,
            message: String::new(),
            rancher_cluster_id: "c-m-x".into(),
        })
        .expect("progress");
    let Msg::Progress(p) = next_non_heartbeat(&mut seen).await else {
        panic!("expected Progress")
    };
    assert_eq!(p.uid, vc(2).uid);

    // Heartbeats arrive at the Welcome's interval.
    let hb = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(AgentMessage {
                msg: Some(Msg::Heartbeat(_)),
            }) = seen.recv().await
            {
                return;
            }
        }
    })
    .await;
    assert!(hb.is_ok(), "no heartbeat within 5 s");

    to_agent
        .send(HubMessage {
            msg: Some(HubMsg::Register(Register {
                uid: vc(2).uid,
                rancher_cluster_id: "c-m-xyz12345".into(),
                cluster_name: "host-team-a-vc2".into(),
                manifest_url: "https://rancher/v3/import/tok_c-m-xyz12345.yaml".into(),
                tls_mode: TlsMode::Strict as i32,
                ca_certs: String::new(),
            })),
        })
        .await
        .expect("send");
    let reg = tokio::time::timeout(Duration::from_secs(10), reg_rx.recv())
        .await
        .expect("register in time")
        .expect("open");
    assert_eq!(reg.rancher_cluster_id, "c-m-xyz12345");
    assert_eq!(
        reg.manifest_url.expose(),
        "https://rancher/v3/import/tok_c-m-xyz12345.yaml"
    );
    cancel.cancel();
}
