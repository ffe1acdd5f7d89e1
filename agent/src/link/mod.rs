//! The agent's one long-lived gRPC stream to the hub: connect over TLS 1.3 with the
//! projected ServiceAccount token (re-read on every connect, and checked every few
//! seconds while connected: when the kubelet rotated it, the new token goes to the hub
//! in a `Reauth` message so the stream continues past the old token's expiry), Hello →
//! Welcome, a full Snapshot once the watches have listed everything, then only changes,
//! heartbeats and registration progress; hub messages are routed to the Job controller
//! and the recorder. Any failure ends the session and the agent reconnects with
//! exponential backoff and jitter.
//!
//! The read loop never waits on the agent's own Kubernetes writes: hub messages go to the
//! writers through [`crate::latest`] queues (one op per vCluster and kind, newest wins), so
//! reading, heartbeats (their own timer branch) and token checks keep their pace while
//! Jobs and Service records are written at `--kube-qps`. What the loop does wait for is
//! the stream itself (room in the outbound queue), which a heartbeat needs anyway.

mod connect;
pub(crate) mod diagnose;
pub(crate) mod messages;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;
use tracing::{debug, error, info, warn};
use vclink_proto::Secret;
use vclink_proto::limits::MAX_MESSAGE_BYTES;
use vclink_proto::v1::agent_message::Msg;
use vclink_proto::v1::hub_message::Msg as HubMsg;
use vclink_proto::v1::link_client::LinkClient;
use vclink_proto::v1::{AgentMessage, Heartbeat, HubMessage, RegistrationProgress, VCluster};

use crate::jobs::Registration;
use crate::latest::{self, PushError};
use crate::record::RecordOp;
use crate::tls::{TlsError, Trust};
use crate::watch::CatalogRx;
use connect::{Backoff, connect};
pub(crate) use connect::{check_hub_url, read_token};

/// How long the hub may take to answer Hello.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(15);
/// Heartbeat interval when the hub does not say.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(30);
/// Capacity of the outbound message queue of one stream.
const OUTBOUND_QUEUE: usize = 64;
/// Most ops waiting in each of the queues between the link and the writers: one per
/// vCluster and kind normally, so this only bounds a hub naming vClusters the agent
/// does not have (four times the hub's default vCluster limit per agent).
pub const MAX_PENDING: usize = 4 * vclink_proto::limits::DEFAULT_MAX_VCLUSTERS_PER_AGENT;
/// How often the token file is checked for a rotated token while connected (the kubelet
/// rotates at 80% of the token's lifetime, so seconds of delay are harmless).
const TOKEN_POLL: Duration = Duration::from_secs(5);

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    /// The token file could not be read.
    #[error("{}", token_problem(path, cause))]
    Token {
        /// The file.
        path: PathBuf,
        /// Why (shown in the message, not chained, so it is printed once).
        cause: std::io::Error,
    },
    /// TLS set-up failed.
    #[error("TLS set-up for the hub failed: {0}")]
    Tls(#[from] TlsError),
    /// The URL is unusable (the text names the flag).
    #[error("{0}")]
    Url(String),
    /// Connecting failed; the sentence names the URL and the cause ([`diagnose`]).
    #[error("{0}")]
    Connect(String),
    /// A transport failure after connecting.
    #[error("the connection to the hub failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The hub ended the stream with a gRPC status.
    #[error("the hub answered {code:?}: {message}", code = .0.code(), message = .0.message())]
    Status(#[from] tonic::Status),
    /// The hub did not answer Hello in time.
    #[error("the hub did not answer Hello within {0:?}")]
    WelcomeTimeout(Duration),
    /// The hub broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The hub closed the stream.
    #[error("the hub closed the stream")]
    Closed,
}

/// Static settings of the link.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// `https://host:port` of the hub.
    pub hub_url: String,
    /// How to verify the hub.
    pub trust: Trust,
    /// The hub CA file `trust` came from, re-read at every connect so a rotated CA
    /// (a renewed Secret the kubelet updates in place) needs no agent restart.
    pub hub_ca_file: Option<PathBuf>,
    /// Claimed Rancher cluster id.
    pub cluster_id: String,
    /// Projected token file.
    pub token_file: PathBuf,
    /// Pod/host name for the hub's logs.
    pub instance: String,
}

/// Where hub messages go and where progress comes from; all latest-wins per vCluster.
pub struct LinkChannels {
    /// Current catalog.
    pub catalog: CatalogRx,
    /// Register requests to the Job controller.
    pub registrations: latest::Sender<Registration>,
    /// Status/Forget to the recorder.
    pub records: latest::Sender<RecordOp>,
    /// Progress from the Job controller.
    pub progress: latest::Receiver<RegistrationProgress>,
}

impl latest::Coalesce for Registration {
    /// One pending Register per vCluster: the newest one (its credential) counts.
    type Slot = ();
    fn uid(&self) -> &str {
        &self.uid
    }
    fn slot(&self) {}
}

impl latest::Coalesce for RegistrationProgress {
    /// The hub acts on a vCluster's newest phase only.
    type Slot = ();
    fn uid(&self) -> &str {
        &self.uid
    }
    fn slot(&self) {}
}

/// The sentence for an unreadable token file: which file, what is wrong, what to do.
fn token_problem(path: &std::path::Path, cause: &std::io::Error) -> String {
    let fix = format!(
        "the agent needs a projected ServiceAccount token with audience {} there (the chart mounts one); \
         fix the volume or point --token-file (VCLINK_TOKEN_FILE) at it",
        vclink_proto::TOKEN_AUDIENCE
    );
    let path = path.display();
    match cause.kind() {
        std::io::ErrorKind::NotFound => format!("the token file {path} does not exist; {fix}"),
        std::io::ErrorKind::PermissionDenied => {
            format!("the token file {path} is not readable by this user (permission denied); {fix}")
        }
        std::io::ErrorKind::InvalidData => format!("the token file {path} is empty; {fix}"),
        _ => format!("cannot read the token file {path}: {cause}; {fix}"),
    }
}

/// Keeps a session to the hub up until `cancel` fires.
pub async fn run(cfg: LinkConfig, mut ch: LinkChannels, cancel: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    // Generations grow across restarts so the hub never mistakes a new snapshot for an old one.
    let mut generation = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1);
    loop {
        let mut welcomed = false;
        let result = session(&cfg, &mut ch, &mut generation, &mut welcomed, &cancel).await;
        let hint = match &result {
            Ok(()) => return,
            Err(e) => {
                log_session_end(&cfg, e);
                match e {
                    LinkError::Status(s) => vclink_proto::retry_after(s),
                    _ => None,
                }
            }
        };
        if welcomed {
            backoff.reset();
        }
        // A refusal that passes by itself (the hub is still loading) says when to come
        // back: about then, jittered, without growing the backoff.
        let delay = match hint {
            Some(h) => connect::jittered(h),
            None => backoff.next_delay(),
        };
        info!(
            delay_ms = delay.as_millis() as u64,
            "reconnecting to the hub after a delay"
        );
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

fn log_session_end(cfg: &LinkConfig, e: &LinkError) {
    match e {
        LinkError::Status(s) => match s.code() {
            tonic::Code::Unauthenticated => error!(
                code = ?s.code(), reason = %s.message(),
                "the hub did not accept the agent's token; check that {} holds a ServiceAccount token with audience {}",
                cfg.token_file.display(), vclink_proto::TOKEN_AUDIENCE
            ),
            tonic::Code::PermissionDenied => error!(
                code = ?s.code(), reason = %s.message(), cluster_id = %cfg.cluster_id,
                "the hub refused this agent for the claimed cluster id; check --cluster-id and the hub's binding of this ServiceAccount"
            ),
            tonic::Code::InvalidArgument => {
                error!(code = ?s.code(), reason = %s.message(), "the hub rejected a message from this agent")
            }
            _ => warn!(code = ?s.code(), reason = %s.message(), "hub stream ended"),
        },
        // The sentence says what failed, where and what to do.
        LinkError::Connect(_) | LinkError::Token { .. } => {
            error!(error = %e, "cannot connect to the hub")
        }
        other => warn!(error = %other, "hub stream ended"),
    }
}

/// One stream: returns Ok only when cancelled.
async fn session(
    cfg: &LinkConfig,
    ch: &mut LinkChannels,
    generation: &mut u64,
    welcomed: &mut bool,
    cancel: &CancellationToken,
) -> Result<(), LinkError> {
    let token = read_token(&cfg.token_file)?;
    let channel = tokio::select! {
        _ = cancel.cancelled() => return Ok(()),
        c = connect(cfg) => c?,
    };
    let (tx, rx) = mpsc::channel::<AgentMessage>(OUTBOUND_QUEUE);
    tx.send(messages::hello(&cfg.cluster_id, &cfg.instance))
        .await
        .map_err(|_| LinkError::Closed)?;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    let bearer = MetadataValue::try_from(format!("Bearer {}", token.expose())).map_err(|_| {
        LinkError::Protocol("the token file contains characters not allowed in a header".into())
    })?;
    request.metadata_mut().insert("authorization", bearer);
    let mut client = LinkClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let mut inbound = tokio::select! {
        _ = cancel.cancelled() => return Ok(()),
        r = client.attach(request) => r?.into_inner(),
    };
    let first = tokio::select! {
        _ = cancel.cancelled() => return Ok(()),
        r = tokio::time::timeout(WELCOME_TIMEOUT, inbound.message()) => r.map_err(|_| LinkError::WelcomeTimeout(WELCOME_TIMEOUT))??,
    };
    let welcome = match first.and_then(|m| m.msg) {
        Some(HubMsg::Welcome(w)) => w,
        Some(_) => {
            return Err(LinkError::Protocol(
                "the hub's first message was not Welcome".into(),
            ));
        }
        None => return Err(LinkError::Closed),
    };
    *welcomed = true;
    if welcome.cluster_id != cfg.cluster_id {
        warn!(claimed = %cfg.cluster_id, verified = %welcome.cluster_id, "the hub verified a different cluster id than claimed");
    }
    info!(cluster_id = %welcome.cluster_id, hub_version = %welcome.hub_version, protocol = welcome.protocol_version, "connected to the hub");
    let heartbeat = match welcome.heartbeat_seconds {
        0 => DEFAULT_HEARTBEAT,
        s => Duration::from_secs(u64::from(s)),
    };
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut token_poll =
        tokio::time::interval_at(tokio::time::Instant::now() + TOKEN_POLL, TOKEN_POLL);
    token_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut presented = token;

    let mut catalog = ch.catalog.clone();
    let (registrations, records) = (ch.registrations.clone(), ch.records.clone());
    // None until the first snapshot went out; then what the hub was told.
    let mut sent: Option<BTreeMap<String, Arc<VCluster>>> = None;
    let send = |m: AgentMessage| {
        let tx = tx.clone();
        async move { tx.send(m).await.map_err(|_| LinkError::Closed) }
    };
    loop {
        if sent.is_none() {
            let current: Arc<_> = catalog.borrow_and_update().clone();
            if current.ready {
                *generation += 1;
                let chunks = messages::snapshot_chunks(*generation, &current.vclusters);
                info!(
                    generation = *generation,
                    vclusters = current.vclusters.len(),
                    chunks = chunks.len(),
                    "sending snapshot"
                );
                for c in chunks {
                    send(messages::msg(Msg::Snapshot(c))).await?;
                }
                sent = Some(current.vclusters.clone());
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            m = inbound.message() => match m? {
                Some(m) => dispatch(m, &catalog, &registrations, &records),
                None => return Err(LinkError::Closed),
            },
            changed = catalog.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                if let Some(prev) = sent.as_mut() {
                    let current = catalog.borrow_and_update().clone();
                    for m in messages::diff(prev, &current.vclusters) {
                        send(m).await?;
                    }
                    *prev = current.vclusters.clone();
                }
            }
            Some(p) = ch.progress.recv() => send(messages::msg(Msg::Progress(p))).await?,
            _ = ticker.tick() => send(messages::msg(Msg::Heartbeat(Heartbeat {}))).await?,
            _ = token_poll.tick() => {
                if let Some(m) = rotated_token(&cfg.token_file, &mut presented) {
                    info!("the ServiceAccount token was rotated; re-authenticating the stream");
                    send(m).await?;
                }
            }
        }
    }
}

/// A Reauth message when the token file holds a token other than `presented` (which
/// then becomes it). An unreadable file keeps the current token: the next connect
/// reports the problem.
fn rotated_token(path: &std::path::Path, presented: &mut Secret) -> Option<AgentMessage> {
    match read_token(path) {
        Ok(t) if t != *presented => {
            *presented = t.clone();
            Some(messages::msg(Msg::Reauth(vclink_proto::v1::Reauth {
                token: t.expose().to_string(),
            })))
        }
        Ok(_) => None,
        Err(e) => {
            debug!(error = %e, "cannot re-read the token file; keeping the current token");
            None
        }
    }
}

/// Routes one hub message without waiting: each goes into its writer's latest-wins
/// queue. Records for vClusters the catalog does not hold are dropped here (the recorder
/// could not write them anyway), so what waits is bounded by the catalog.
fn dispatch(
    m: HubMessage,
    catalog: &CatalogRx,
    registrations: &latest::Sender<Registration>,
    records: &latest::Sender<RecordOp>,
) {
    let known = |uid: &str| catalog.borrow().vclusters.contains_key(uid);
    let record = |op: RecordOp| {
        if !known(op.uid()) {
            debug!(uid = %op.uid(), "not recording: the agent reports no vCluster with this UID");
            return;
        }
        match records.push(op) {
            Ok(_) => {}
            Err(PushError::Closed) => debug!("the recorder stopped; dropping a record"),
            Err(e @ PushError::Full(_)) => warn!(error = %e, "dropping a record from the hub"),
        }
    };
    match m.msg {
        Some(HubMsg::Register(r)) => match messages::registration(r) {
            Ok(reg) => {
                debug!(uid = %reg.uid, cluster = %reg.rancher_cluster_id, "hub asked to register a vCluster");
                match registrations.push(reg) {
                    Ok(latest::Pushed::Replaced) => {
                        debug!("a newer Register replaced one still waiting for its Job")
                    }
                    Ok(latest::Pushed::Queued) => {}
                    Err(PushError::Closed) => {
                        warn!("the Job controller stopped; dropping a registration request")
                    }
                    Err(e @ PushError::Full(_)) => {
                        warn!(error = %e, "too many registrations waiting; dropping a registration request")
                    }
                }
            }
            Err(e) => warn!(error = %e, "ignoring a Register from the hub"),
        },
        Some(HubMsg::Status(s)) => {
            let state = s.state();
            // A warning, or (state UNSPECIFIED) a warning-only Status that may withdraw one.
            if !s.warning.is_empty() || state == vclink_proto::v1::State::Unspecified {
                record(RecordOp::Warning {
                    uid: s.uid.clone(),
                    text: s.warning.clone(),
                });
                if state == vclink_proto::v1::State::Unspecified {
                    return;
                }
            }
            record(RecordOp::Status {
                uid: s.uid,
                state,
                message: s.message,
                rancher_cluster_id: s.rancher_cluster_id,
                cluster_name: s.cluster_name,
            });
        }
        Some(HubMsg::Forget(f)) => {
            info!(uid = %f.uid, "hub reports the vCluster's Rancher cluster was deleted");
            record(RecordOp::Forget {
                uid: f.uid,
                reason: f.reason,
            });
        }
        Some(HubMsg::Welcome(_)) => debug!("ignoring a repeated Welcome"),
        None => debug!("ignoring an empty or unknown hub message"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotated_token_is_sent_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("tok");
        std::fs::write(&f, "one").expect("write");
        let mut presented = Secret::new("one");
        assert!(rotated_token(&f, &mut presented).is_none());
        std::fs::write(&f, "two\n").expect("write");
        let Some(AgentMessage {
            msg: Some(Msg::Reauth(r)),
        }) = rotated_token(&f, &mut presented)
        else {
            panic!("no Reauth")
        };
        assert_eq!(r.token, "two");
        assert!(rotated_token(&f, &mut presented).is_none(), "sent once");
        std::fs::remove_file(&f).expect("rm");
        assert!(rotated_token(&f, &mut presented).is_none());
        assert_eq!(presented.expose(), "two");
    }
}
