//! Component test of the agent's liveness under load: an in-process fake hub (real TLS,
//! pinned CA, a 1 s heartbeat interval and, like the real hub, closing the stream after
//! three intervals without a message) sends a burst of ~1,000 Status messages and 200
//! Registers while the agent's writers drain their queues far slower than the hub
//! sends. The agent must keep heartbeating at its interval (the largest gap between two
//! heartbeats the hub sees stays under the hub's three-interval timeout), keep the one stream open,
//! and hand the writers one pending op per vCluster holding the newest value instead of
//! a queue of every message. Once with stand-in writers (the link alone), once with the
//! agent's real wiring against a real API server at a low `--kube-qps`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use vclink_agent::latest;
use vclink_agent::link::{LinkChannels, LinkConfig};
use vclink_agent::record::RecordOp;
use vclink_agent::watch::Catalog;
use vclink_proto::v1::agent_message::Msg;
use vclink_proto::v1::hub_message::Msg as HubMsg;
use vclink_proto::v1::link_server::Link;
use vclink_proto::v1::{
    AgentMessage, HubMessage, Register, State, Status as HubStatus, TlsMode, VCluster,
};

mod support;
use support::{ServedHub, create_namespace, create_service, serve_hub};

/// The heartbeat interval the fake hub asks for.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// vClusters the agent reports.
const VCLUSTERS: u32 = 100;
/// Status messages per vCluster in the burst (so 1,000 in all).
const ROUNDS: u32 = 10;
/// How long the fake writer takes per record op.
const WRITE_PACE: Duration = Duration::from_millis(2_500);

/// What the fake hub saw.
#[derive(Default)]
struct Seen {
    hellos: usize,
    snapshot_at: Option<Instant>,
    heartbeats: Vec<Instant>,
    /// Why a stream ended, if one did.
    closed: Option<String>,
}

struct FakeHub {
    seen: Arc<Mutex<Seen>>,
    to_agent: tokio::sync::Mutex<Option<mpsc::Receiver<HubMessage>>>,
}

fn record(seen: &Mutex<Seen>, f: impl FnOnce(&mut Seen)) {
    f(&mut seen.lock().unwrap_or_else(|p| p.into_inner()));
}

#[tonic::async_trait]
impl Link for FakeHub {
    type AttachStream = ReceiverStream<Result<HubMessage, Status>>;

    async fn attach(
        &self,
        req: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut inbound = req.into_inner();
        let (idle_tx, stream) = support::open_stream(HEARTBEAT, &self.to_agent).await?;
        let seen = self.seen.clone();
        // Like the real hub: three intervals without any message end the stream.
        tokio::spawn(async move {
            loop {
                match tokio::time::timeout(HEARTBEAT * 3, inbound.message()).await {
                    Err(_) => {
                        record(&seen, |s| s.closed = Some("heartbeat timeout".into()));
                        let _ = idle_tx
                            .send(Err(Status::deadline_exceeded("no message for 3 s")))
                            .await;
                        return;
                    }
                    Ok(Ok(Some(m))) => {
                        let now = Instant::now();
                        record(&seen, |s| match m.msg {
                            Some(Msg::Hello(_)) => s.hellos += 1,
                            Some(Msg::Snapshot(_)) => s.snapshot_at = s.snapshot_at.or(Some(now)),
                            Some(Msg::Heartbeat(_)) => s.heartbeats.push(now),
                            _ => {}
                        });
                    }
                    Ok(other) => {
                        record(&seen, |s| {
                            s.closed = Some(format!("agent ended: {other:?}"))
                        });
                        return;
                    }
                }
            }
        });
        Ok(Response::new(stream))
    }
}

fn uid(i: u32) -> String {
    format!("00000000-0000-0000-0000-{i:012}")
}

fn vc(i: u32) -> VCluster {
    VCluster {
        uid: uid(i),
        namespace: "team-a".into(),
        name: format!("vc{i}"),
        ..Default::default()
    }
}

fn status(i: u32, round: u32) -> HubMessage {
    let state = if round.is_multiple_of(2) {
        State::Registering
    } else {
        State::Connected
    };
    HubMessage {
        msg: Some(HubMsg::Status(HubStatus {
            uid: uid(i),
            state: state as i32,
            message: format!("round {round}"),
            rancher_cluster_id: format!("c-m-{i:08}"),
            cluster_name: format!("vc{i}"),
            ..Default::default()
        })),
    }
}

fn register(i: u32, round: u32) -> HubMessage {
    HubMessage {
        msg: Some(HubMsg::Register(Register {
            uid: uid(i),
            rancher_cluster_id: format!("c-m-{i:08}"),
            cluster_name: format!("vc{i}-{round}"),
            manifest_url: format!("https://rancher/v3/import/tok{round}_c-m-{i:08}.yaml"),
            tls_mode: TlsMode::Strict as i32,
            ca_certs: String::new(),
        })),
    }
}

/// Waits (polling, with a deadline) until `f` holds on what the hub saw.
async fn until(seen: &Mutex<Seen>, secs: u64, what: &str, f: impl Fn(&Seen) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if f(&seen.lock().unwrap_or_else(|p| p.into_inner())) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The largest gap between consecutive heartbeats at or after `from`, counting the time
/// from `from` to the first one and from the last one to `to`.
fn max_gap(beats: &[Instant], from: Instant, to: Instant) -> Duration {
    let mut points = vec![from];
    points.extend(beats.iter().copied().filter(|b| *b >= from && *b <= to));
    points.push(to);
    points
        .windows(2)
        .map(|w| w[1].duration_since(w[0]))
        .max()
        .unwrap_or_default()
}

/// The fake hub, listening, and the agent's link settings pointing at it.
struct Harness {
    seen: Arc<Mutex<Seen>>,
    to_agent: mpsc::Sender<HubMessage>,
    cfg: LinkConfig,
    /// Keeps the token file alive.
    _hub: ServedHub,
}

async fn start_hub() -> Harness {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (to_agent, to_agent_rx) = mpsc::channel(16);
    let hub = FakeHub {
        seen: seen.clone(),
        to_agent: tokio::sync::Mutex::new(Some(to_agent_rx)),
    };
    let served = serve_hub(hub).await;
    let cfg = served.cfg.clone();
    Harness {
        seen,
        to_agent,
        cfg,
        _hub: served,
    }
}

/// The largest heartbeat gap from `from` until now, after checking the one stream
/// stayed open.
fn liveness(seen: &Mutex<Seen>, from: Instant) -> Duration {
    let s = seen.lock().unwrap_or_else(|p| p.into_inner());
    let gap = max_gap(&s.heartbeats, from, Instant::now());
    eprintln!(
        "{} heartbeats since the burst began, largest gap {gap:?}",
        s.heartbeats.iter().filter(|b| **b >= from).count()
    );
    assert_eq!(s.closed, None, "the hub never closed the stream");
    assert_eq!(s.hellos, 1, "one stream, no reconnect");
    assert!(
        gap < HEARTBEAT * 3,
        "the largest gap between heartbeats was {gap:?}: a hub closes the stream after three {HEARTBEAT:?} intervals"
    );
    gap
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_continue_while_writers_are_paced() {
    let Harness {
        seen,
        to_agent,
        cfg,
        _hub,
    } = start_hub().await;
    let (catalog_tx, catalog_rx) = vclink_agent::watch::channel();
    catalog_tx.send_replace(Arc::new(Catalog {
        ready: true,
        vclusters: (0..VCLUSTERS)
            .map(|i| (uid(i), std::sync::Arc::new(vc(i))))
            .collect(),
        ..Default::default()
    }));
    let (reg_tx, mut reg_rx) = latest::channel(1_000);
    let (records_tx, mut records_rx) = latest::channel(1_000);
    let (_progress_tx, progress_rx) = latest::channel(1_000);
    let cancel = CancellationToken::new();
    let channels = LinkChannels {
        catalog: catalog_rx,
        registrations: reg_tx,
        records: records_tx,
        progress: progress_rx,
    };
    tokio::spawn(vclink_agent::link::run(cfg, channels, cancel.clone()));
    until(&seen, 30, "the snapshot", |s| s.snapshot_at.is_some()).await;

    // A paced "writer": one record op every 2.5 s (each is a Service patch and an Event,
    // so that is `--kube-qps 0.8`), slower than a heartbeat interval.
    let written: Arc<Mutex<Vec<RecordOp>>> = Arc::default();
    let writer = {
        let written = written.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return records_rx,
                    op = records_rx.recv() => match op {
                        Some(op) => written.lock().unwrap_or_else(|p| p.into_inner()).push(op),
                        None => return records_rx,
                    },
                }
                tokio::time::sleep(WRITE_PACE).await;
            }
        })
    };

    // The burst: two Registers per vCluster, then ten Status rounds over all of them.
    let burst_start = Instant::now();
    for round in 0..2 {
        for i in 0..VCLUSTERS {
            to_agent.send(register(i, round)).await.expect("hub send");
        }
    }
    for round in 0..ROUNDS {
        for i in 0..VCLUSTERS {
            to_agent.send(status(i, round)).await.expect("hub send");
        }
    }
    eprintln!(
        "burst of {} hub messages sent in {:?}",
        2 * VCLUSTERS + ROUNDS * VCLUSTERS,
        burst_start.elapsed()
    );
    // Keep watching for several intervals after the burst went out.
    tokio::time::sleep(HEARTBEAT * 6).await;
    liveness(&seen, burst_start);

    // Registers: one pending per vCluster, the newest (round 1) each.
    let mut regs = BTreeMap::new();
    while let Some(r) = reg_rx.try_recv() {
        assert!(
            regs.insert(r.uid.clone(), r.cluster_name.clone()).is_none(),
            "one Register per vCluster"
        );
    }
    assert_eq!(regs.len(), VCLUSTERS as usize);
    assert!(regs.iter().all(|(u, n)| n.ends_with("-1") && u.len() == 36));

    // Records: the paced writer got far fewer ops than the hub sent, and each
    // vCluster's last one is the newest Status.
    cancel.cancel();
    let mut records_rx = writer.await.expect("writer");
    while let Some(op) = records_rx.try_recv() {
        written.lock().unwrap_or_else(|p| p.into_inner()).push(op);
    }
    let written = written.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(
        written.len() < (ROUNDS * VCLUSTERS / 2) as usize,
        "{} record ops for {} Status messages: not coalesced",
        written.len(),
        ROUNDS * VCLUSTERS
    );
    let mut last = BTreeMap::new();
    for op in &written {
        if let RecordOp::Status { uid, message, .. } = op {
            last.insert(uid.clone(), message.clone());
        }
    }
    assert_eq!(
        last.len(),
        VCLUSTERS as usize,
        "every vCluster's state recorded"
    );
    let newest = format!("round {}", ROUNDS - 1);
    assert!(
        last.values().all(|m| *m == newest),
        "each vCluster's newest Status is recorded last: {last:?}"
    );
}

/// The agent's own wiring against a real API server with `--kube-qps 2 --kube-burst 1`
/// (a Service patch and its Event take a second): 1,000 Status messages for 10
/// vClusters leave heartbeats on time, and each Service ends with the newest Status
/// after a handful of writes rather than a hundred.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_writers_at_a_low_qps_do_not_stall_the_link() {
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::events::v1::Event;
    use kube::Api;
    use kube::api::ListParams;
    use vclink_proto::keys;

    const SERVICES: u32 = 10;
    const STATUS_ROUNDS: u32 = 100;
    let Harness {
        seen,
        to_agent,
        cfg,
        _hub,
    } = start_hub().await;
    let cluster = vclink_envtest::Cluster::start("agent-liveness", Default::default())
        .await
        .expect("cluster");
    let client = cluster.client().await.expect("client");
    create_namespace(
        &client,
        k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some("team-a".into()),
            ..Default::default()
        },
    )
    .await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "team-a");
    let mut uids = Vec::new();
    for i in 0..SERVICES {
        uids.push(create_service(&client, "team-a", &format!("vc{i}")).await);
    }

    let cancel = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let channels = vclink_agent::spawn_cluster_tasks(
        &mut tasks,
        vclink_agent::ClusterTasks {
            client: client.clone(),
            namespace_selector: None,
            jobs: Default::default(),
            kube_qps: 2.0,
            kube_burst: 1,
            instance: "test".into(),
        },
        &cancel,
    );
    tasks.spawn(vclink_agent::link::run(cfg, channels, cancel.clone()));
    until(&seen, 60, "the snapshot", |s| s.snapshot_at.is_some()).await;

    let burst_start = Instant::now();
    for round in 0..STATUS_ROUNDS {
        for (i, uid) in uids.iter().enumerate() {
            // Registering and Error alternate; the last round is an Error naming itself.
            let state = if round % 2 == 1 {
                State::Error
            } else {
                State::Registering
            };
            let m = HubMessage {
                msg: Some(HubMsg::Status(HubStatus {
                    uid: uid.clone(),
                    state: state as i32,
                    message: format!("round {round}"),
                    rancher_cluster_id: format!("c-m-{i:08}"),
                    cluster_name: format!("vc{i}"),
                    ..Default::default()
                })),
            };
            to_agent.send(m).await.expect("hub send");
        }
    }
    // Every Service ends with the newest Status (written at two requests a second).
    let newest = format!("round {}", STATUS_ROUNDS - 1);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let list = svcs.list(&ListParams::default()).await.expect("list");
        let done = list
            .items
            .iter()
            .filter(|s| {
                s.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(keys::ANNOTATION_LAST_ERROR))
                    == Some(&newest)
            })
            .count();
        if done == SERVICES as usize {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {SERVICES} Services show the newest Status"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    liveness(&seen, burst_start);
    let events = Api::<Event>::namespaced(client.clone(), "team-a")
        .list(&ListParams::default())
        .await
        .expect("events");
    let state_events = events
        .items
        .iter()
        .filter(|e| matches!(e.reason.as_deref(), Some("Error" | "Registering")))
        .count();
    eprintln!(
        "{state_events} state Events for {} Status messages",
        SERVICES * STATUS_ROUNDS
    );
    assert!(
        state_events <= (SERVICES * 5) as usize,
        "{state_events} state Events for {SERVICES} vClusters: the Status messages were not coalesced"
    );
    cancel.cancel();
    while tasks.join_next().await.is_some() {}
}
