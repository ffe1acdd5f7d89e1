//! The load generator: N simulated agents, each one gRPC/TLS stream to the real hub
//! (its own TCP+TLS connection, as real agents have), speaking the protocol with the
//! generated `vclink_proto` client: Hello, an empty snapshot (so the per-agent cost can
//! be measured alone), then on request a full snapshot of its vClusters in chunks,
//! heartbeats as the Welcome asks, and `RegistrationProgress{SUCCEEDED}` for every
//! Register (what a real agent reports once its Job ran). Every hub message is recorded
//! with its arrival time in a shared [`Tracker`]; that time is what the latency
//! benchmark measures against.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use vclink_proto::limits::{MAX_MESSAGE_BYTES, MAX_SNAPSHOT_CHUNK};
use vclink_proto::v1::link_client::LinkClient;
use vclink_proto::v1::registration_progress::Phase;
use vclink_proto::v1::{
    AgentMessage, Flavour, Heartbeat, Hello, RegistrationProgress, Snapshot, State, VCluster,
    agent_message, hub_message,
};

/// What the hub told one vCluster, as seen at the simulated agent.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// When the first Register for it arrived.
    pub register_at: Option<Instant>,
    /// Last Status state.
    pub state: i32,
    /// Last Status message.
    pub message: String,
}

/// Everything the simulated agents observed.
#[derive(Default)]
pub struct Tracker {
    seen: Mutex<HashMap<String, Seen>>,
    /// Streams that ended with an error (each is retried).
    pub stream_errors: AtomicU64,
    /// Streams that received Welcome.
    pub welcomed: AtomicU64,
    /// Register messages received.
    pub registers: AtomicU64,
    /// gRPC messages the simulated agents sent to the hub (all kinds).
    pub sent: AtomicU64,
    /// gRPC messages the simulated agents received from the hub (all kinds).
    pub received: AtomicU64,
}

impl Tracker {
    fn with<R>(&self, uid: &str, f: impl FnOnce(&mut Seen) -> R) -> R {
        let mut m = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        f(m.entry(uid.to_string()).or_default())
    }

    /// A copy of what was seen for `uid`.
    pub fn get(&self, uid: &str) -> Option<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(uid)
            .cloned()
    }

    /// Counts vClusters whose last Status is `state` (and, if given, whose message
    /// contains `text`).
    pub fn count_state(&self, state: State, text: Option<&str>) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|s| s.state == state as i32 && text.is_none_or(|t| s.message.contains(t)))
            .count()
    }

    /// Counts of every last state, for progress lines.
    pub fn states(&self) -> HashMap<&'static str, usize> {
        let mut out = HashMap::new();
        for s in self.seen.lock().unwrap_or_else(|p| p.into_inner()).values() {
            let name = State::try_from(s.state)
                .map(|s| s.as_str_name())
                .unwrap_or("?");
            *out.entry(name).or_default() += 1;
        }
        out
    }
}

/// One simulated agent's identity and vClusters.
#[derive(Clone, Debug)]
pub struct FakeAgent {
    /// The management id it claims (`c-m-lg000001`).
    pub cluster_id: String,
    /// Its vClusters.
    pub vclusters: Vec<VCluster>,
}

/// The labels the vCluster chart (0.20) puts on a vCluster's Service, plus the agent's
/// mark, as the real agent reports them: a report without labels would hide what the
/// hub keeps of each.
pub fn service_labels(release: &str, uid: &str) -> std::collections::BTreeMap<String, String> {
    [
        ("app", "vcluster"),
        ("chart", "vcluster-0.20.0"),
        ("heritage", "Helm"),
        ("release", release),
        (vclink_proto::keys::LABEL_TRACKED, uid),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// `n` agents sharing `m` vClusters as evenly as possible.
pub fn fake_agents(n: usize, m: usize) -> Vec<FakeAgent> {
    (0..n)
        .map(|a| {
            let count = m / n + usize::from(a < m % n);
            FakeAgent {
                cluster_id: format!("c-m-lg{a:06}"),
                vclusters: (0..count)
                    .map(|j| {
                        let uid = format!("{a:08x}-0000-4000-8000-{j:012x}");
                        VCluster {
                            namespace: format!("team-{}", j / 20),
                            name: format!("vc-{j}"),
                            flavour: Flavour::V020 as i32,
                            labels: service_labels(&format!("vc-{j}"), &uid),
                            uid,
                            ..Default::default()
                        }
                    })
                    .collect(),
            }
        })
        .collect()
}

/// Where the hub is and how to trust it.
#[derive(Clone)]
pub struct HubTarget {
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// PEM of the hub's CA.
    pub ca_pem: String,
}

/// Handle to the running simulated agents.
pub struct LoadGen {
    /// What they saw.
    pub tracker: Arc<Tracker>,
    full: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl LoadGen {
    /// Starts one task per agent (connections opened at most `parallel` at a time). Each
    /// Register's management id is sent on `registered` (the Rancher player marks the
    /// cluster connected, as Rancher would once the cluster agent dials in).
    pub fn start(
        hub: HubTarget,
        agents: Vec<FakeAgent>,
        registered: mpsc::Sender<String>,
        parallel: usize,
        cancel: CancellationToken,
    ) -> LoadGen {
        let tracker = Arc::new(Tracker::default());
        let (full, full_rx) = watch::channel(false);
        let gate = Arc::new(Semaphore::new(parallel.max(1)));
        let tasks = agents
            .into_iter()
            .map(|a| {
                let ctx = Ctx {
                    hub: hub.clone(),
                    tracker: tracker.clone(),
                    registered: registered.clone(),
                    full: full_rx.clone(),
                    gate: gate.clone(),
                    cancel: cancel.clone(),
                };
                tokio::spawn(run_agent(ctx, a))
            })
            .collect();
        LoadGen {
            tracker,
            full,
            tasks,
        }
    }

    /// Every agent sends its full snapshot (a new generation).
    pub fn send_full_snapshots(&self) {
        let _ = self.full.send(true);
    }

    /// Waits for all agent tasks (after the cancel token fired).
    pub async fn join(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

#[derive(Clone)]
struct Ctx {
    hub: HubTarget,
    tracker: Arc<Tracker>,
    registered: mpsc::Sender<String>,
    full: watch::Receiver<bool>,
    gate: Arc<Semaphore>,
    cancel: CancellationToken,
}

/// A TLS channel to the hub, trusting its CA.
pub async fn channel(hub: &HubTarget) -> anyhow::Result<Channel> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&hub.ca_pem))
        .domain_name("127.0.0.1");
    Ok(Endpoint::from_shared(hub.url.clone())?
        .connect_timeout(Duration::from_secs(30))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .tls_config(tls)?
        .connect()
        .await?)
}

/// Longest wait between reconnects (as the real agent's backoff).
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The real agent's reconnect delay: drawn from [base/2, base], base 1 s doubling per
/// failed attempt up to [`MAX_BACKOFF`]. A fixed 1 s retry from 2,000 simulated agents
/// would keep a restarting hub busy with 2,000 TLS handshakes a second.
fn backoff(failures: u32) -> Duration {
    jittered(
        Duration::from_secs(1)
            .saturating_mul(1 << failures.min(6))
            .min(MAX_BACKOFF),
    )
}

/// The real agent's jitter: a delay drawn from [d/2, d] (d at least 1 s), so agents
/// refused together do not all return at one instant. Also its delay on a retry hint.
fn jittered(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(d.as_millis() as u64);
    let jitter = (h.finish() % 1_000) as f64 / 1_000.0;
    d.max(Duration::from_secs(1)).mul_f64(0.5 + 0.5 * jitter)
}

async fn run_agent(mut ctx: Ctx, agent: FakeAgent) {
    let mut generation = 0u64;
    let mut failures = 0u32;
    while !ctx.cancel.is_cancelled() {
        let mut welcomed = false;
        match session(&mut ctx, &agent, &mut generation, &mut welcomed).await {
            Ok(()) => return,
            Err(e) => {
                ctx.tracker.stream_errors.fetch_add(1, Ordering::Relaxed);
                // A session that got its Welcome starts the backoff over, as the agent's does.
                if welcomed {
                    failures = 0;
                }
                tracing::warn!(agent = %agent.cluster_id, error = %e, "simulated agent stream ended; reconnecting");
                // As the real agent: a refusal with a retry hint (a hub still loading)
                // is retried after about that long, without growing the backoff.
                let hint = e
                    .downcast_ref::<tonic::Status>()
                    .and_then(vclink_proto::retry_after);
                let delay = match hint {
                    Some(h) => jittered(h),
                    None => backoff(failures),
                };
                tokio::select! {
                    _ = ctx.cancel.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                if hint.is_none() {
                    failures = failures.saturating_add(1);
                }
            }
        }
    }
}

fn msg(m: agent_message::Msg) -> AgentMessage {
    AgentMessage { msg: Some(m) }
}

fn snapshot_msgs(generation: u64, vcs: &[VCluster]) -> Vec<AgentMessage> {
    if vcs.is_empty() {
        return vec![msg(agent_message::Msg::Snapshot(Snapshot {
            generation,
            vclusters: Vec::new(),
            last: true,
        }))];
    }
    let chunks: Vec<&[VCluster]> = vcs.chunks(MAX_SNAPSHOT_CHUNK).collect();
    let n = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            msg(agent_message::Msg::Snapshot(Snapshot {
                generation,
                vclusters: c.to_vec(),
                last: i + 1 == n,
            }))
        })
        .collect()
}

/// One stream; Ok only when cancelled.
async fn session(
    ctx: &mut Ctx,
    agent: &FakeAgent,
    generation: &mut u64,
    welcomed: &mut bool,
) -> anyhow::Result<()> {
    let permit = ctx.gate.acquire().await?;
    let ch = channel(&ctx.hub).await?;
    let (tx, rx) = mpsc::channel::<AgentMessage>(1024);
    tx.send(msg(agent_message::Msg::Hello(Hello {
        agent_version: "0.0.0-bench".into(),
        protocol_version: vclink_proto::PROTOCOL_VERSION,
        cluster_id: agent.cluster_id.clone(),
        capabilities: vec!["chunked-snapshot".into()],
        instance: format!("bench-{}", agent.cluster_id),
    })))
    .await?;
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    req.metadata_mut().insert(
        "authorization",
        MetadataValue::from_static("Bearer vclink-bench-unverified"),
    );
    let mut client = LinkClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    ctx.tracker.sent.fetch_add(1, Ordering::Relaxed);
    let mut inbound = client.attach(req).await?.into_inner();
    let welcome = match inbound.message().await?.and_then(|m| m.msg) {
        Some(hub_message::Msg::Welcome(w)) => w,
        other => anyhow::bail!("first hub message was not Welcome: {other:?}"),
    };
    drop(permit);
    ctx.tracker.received.fetch_add(1, Ordering::Relaxed);
    ctx.tracker.welcomed.fetch_add(1, Ordering::Relaxed);
    *welcomed = true;
    let beat = Duration::from_secs(u64::from(welcome.heartbeat_seconds.max(1)));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + beat, beat);
    let full_now = *ctx.full.borrow_and_update();
    *generation += 1;
    let first: &[VCluster] = if full_now { &agent.vclusters } else { &[] };
    for m in snapshot_msgs(*generation, first) {
        tx.send(m).await?;
        ctx.tracker.sent.fetch_add(1, Ordering::Relaxed);
    }
    loop {
        tokio::select! {
            _ = ctx.cancel.cancelled() => return Ok(()),
            _ = ticker.tick() => {
                tx.send(msg(agent_message::Msg::Heartbeat(Heartbeat {}))).await?;
                ctx.tracker.sent.fetch_add(1, Ordering::Relaxed);
            }
            r = ctx.full.changed() => {
                if r.is_ok() && *ctx.full.borrow_and_update() {
                    *generation += 1;
                    for m in snapshot_msgs(*generation, &agent.vclusters) {
                        tx.send(m).await?;
                        ctx.tracker.sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            m = inbound.message() => {
                let Some(m) = m? else { anyhow::bail!("the hub closed the stream") };
                let now = Instant::now();
                ctx.tracker.received.fetch_add(1, Ordering::Relaxed);
                match m.msg {
                    Some(hub_message::Msg::Register(r)) => {
                        ctx.tracker.registers.fetch_add(1, Ordering::Relaxed);
                        ctx.tracker.with(&r.uid, |s| { s.register_at.get_or_insert(now); });
                        let _ = ctx.registered.try_send(r.rancher_cluster_id.clone());
                        tx.send(msg(agent_message::Msg::Progress(RegistrationProgress {
                            uid: r.uid,
                            phase: Phase::Succeeded as i32,
                            message: String::new(),
                            rancher_cluster_id: r.rancher_cluster_id,
                        }))).await?;
                        ctx.tracker.sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(hub_message::Msg::Status(s)) => {
                        ctx.tracker.with(&s.uid, |seen| { seen.state = s.state; seen.message = s.message; });
                    }
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_agents_split_vclusters_evenly_and_validly() {
        let a = fake_agents(3, 10);
        assert_eq!(
            a.iter().map(|a| a.vclusters.len()).collect::<Vec<_>>(),
            [4, 3, 3]
        );
        for ag in &a {
            assert!(vclink_proto::validate::is_dns1123_label(&ag.cluster_id));
            for v in &ag.vclusters {
                vclink_proto::validate::vcluster("v", v).unwrap();
            }
        }
        for f in 0..10 {
            let d = backoff(f);
            let base = Duration::from_secs(1 << f.min(6)).min(MAX_BACKOFF);
            assert!(d >= base / 2 && d <= base, "{f}: {d:?}");
        }
        let s = snapshot_msgs(1, &a[0].vclusters);
        assert_eq!(s.len(), 1);
        let big = fake_agents(1, 1201);
        assert_eq!(snapshot_msgs(2, &big[0].vclusters).len(), 3);
    }
}
