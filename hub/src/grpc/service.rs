//! The tonic service `vclink.v1.Link`: accepts an agent stream, waits for Hello (10 s),
//! validates and authenticates it, answers Welcome, registers the stream as its host's
//! only live stream and feeds every further message through the [`SessionState`]
//! machine into the hub. Refusals close the stream with a gRPC status and are counted
//! by reason. Outbound messages go through a bounded channel the hub never waits on.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;
use vclink_proto::v1::link_server::{Link, LinkServer};
use vclink_proto::v1::{AgentMessage, Hello, HubMessage, Welcome, agent_message::Msg, hub_message};
use vclink_proto::{PROTOCOL_VERSION, Secret, limits, validate};

use super::auth::{self, AgentAuthenticator};
use super::session::{Reject, SessionState};
use crate::world::{Hub, Outbound};

/// How long a new stream may take to send Hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The service.
pub struct LinkService {
    hub: Arc<Hub>,
    auth: Arc<dyn AgentAuthenticator>,
    shutdown: CancellationToken,
}

impl LinkService {
    /// A service over `hub` using `auth`; open streams end on `shutdown`.
    pub fn new(
        hub: Arc<Hub>,
        auth: Arc<dyn AgentAuthenticator>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            hub,
            auth,
            shutdown,
        }
    }

    /// The tonic server for this service, with the protocol's message size limits.
    pub fn into_server(self) -> LinkServer<Self> {
        LinkServer::new(self)
            .max_decoding_message_size(limits::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(limits::MAX_MESSAGE_BYTES)
    }
}

#[tonic::async_trait]
impl Link for LinkService {
    type AttachStream = ReceiverStream<Outbound>;

    async fn attach(
        &self,
        req: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        if !self.hub.is_ready() {
            self.hub.metrics.reject("not_ready");
            return Err(Status::unavailable(
                "the hub is starting (loading Rancher objects); retry shortly",
            ));
        }
        let bearer = auth::bearer(req.metadata());
        let peer = req.remote_addr().map(|a| a.to_string()).unwrap_or_default();
        let inbound = req.into_inner();
        // Room for a Status and a Register per vCluster after a snapshot, plus slack.
        let cap = self
            .hub
            .cfg
            .max_vclusters
            .saturating_mul(2)
            .saturating_add(64);
        let (tx, rx) = mpsc::channel(cap);
        let (hub, authn, shutdown) = (self.hub.clone(), self.auth.clone(), self.shutdown.clone());
        let span = tracing::info_span!("agent", %peer);
        tokio::spawn(drive(hub, authn, bearer, inbound, tx, shutdown).instrument(span));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn refuse(hub: &Hub, tx: &mpsc::Sender<Outbound>, r: Reject) {
    hub.metrics.reject(r.reason);
    tracing::warn!(reason = r.reason, code = ?r.code, message = %r.message, "closing agent stream");
    let _ = tx.try_send(Err(r.to_status()));
}

async fn read_hello(
    hub: &Hub,
    tx: &mpsc::Sender<Outbound>,
    inbound: &mut Streaming<AgentMessage>,
) -> Option<Hello> {
    let r = |code, reason, message: &str| Reject {
        code,
        reason,
        message: message.to_string(),
    };
    match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
        Err(_) => refuse(
            hub,
            tx,
            r(
                tonic::Code::DeadlineExceeded,
                "hello_timeout",
                "no Hello within 10 s",
            ),
        ),
        Ok(Err(e)) => tracing::debug!(error = %e, "stream failed before Hello"),
        Ok(Ok(None)) => {}
        Ok(Ok(Some(AgentMessage {
            msg: Some(Msg::Hello(h)),
        }))) => match validate::hello(&h) {
            Ok(()) => return Some(h),
            Err(e) => refuse(
                hub,
                tx,
                r(tonic::Code::InvalidArgument, "invalid", &e.to_string()),
            ),
        },
        Ok(Ok(Some(_))) => refuse(
            hub,
            tx,
            r(
                tonic::Code::InvalidArgument,
                "no_hello",
                "the first message must be Hello",
            ),
        ),
    }
    None
}

async fn drive(
    hub: Arc<Hub>,
    authn: Arc<dyn AgentAuthenticator>,
    bearer: Option<Secret>,
    mut inbound: Streaming<AgentMessage>,
    tx: mpsc::Sender<Outbound>,
    shutdown: CancellationToken,
) {
    let Some(hello) = read_hello(&hub, &tx, &mut inbound).await else {
        return;
    };
    let identity = match authn.authenticate(bearer.as_ref(), &hello.cluster_id).await {
        Ok(id) => id,
        Err(e) => {
            hub.metrics.reject(e.reason());
            tracing::warn!(claimed = %hello.cluster_id, error = %e, "agent not accepted");
            let _ = tx.try_send(Err(e.to_status()));
            return;
        }
    };
    drop(bearer);
    let host = identity.cluster_id;
    tracing::info!(host = %host, agent_version = %hello.agent_version, instance = %hello.instance,
        protocol = hello.protocol_version, "agent attached");
    let welcome = Welcome {
        cluster_id: host.clone(),
        protocol_version: PROTOCOL_VERSION,
        hub_version: env!("CARGO_PKG_VERSION").to_string(),
        heartbeat_seconds: hub.cfg.heartbeat_seconds,
    };
    if tx
        .try_send(Ok(HubMessage {
            msg: Some(hub_message::Msg::Welcome(welcome)),
        }))
        .is_err()
    {
        return;
    }
    let cancel = shutdown.child_token();
    let stream_id = hub.attach(&host, tx.clone(), cancel.clone());
    let idle = Duration::from_secs(u64::from(hub.cfg.heartbeat_seconds).saturating_mul(3));
    let mut session = SessionState::new(host.clone(), hub.cfg.max_vclusters);
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => {
                let _ = tx.try_send(Err(Status::unavailable(
                    "stream closed by the hub (replaced by a newer stream, outbound queue full, or shutdown); reconnect",
                )));
                break;
            }
            r = tokio::time::timeout(idle, inbound.message()) => r,
        };
        let msg = match next {
            Err(_) => {
                let r = Reject {
                    code: tonic::Code::DeadlineExceeded,
                    reason: "heartbeat_timeout",
                    message: format!("no message for {} s", idle.as_secs()),
                };
                refuse(&hub, &tx, r);
                break;
            }
            Ok(Err(e)) => {
                tracing::info!(host = %host, error = %e, "agent stream failed");
                break;
            }
            Ok(Ok(None)) => {
                tracing::info!(host = %host, "agent closed its stream");
                break;
            }
            Ok(Ok(Some(m))) => m,
        };
        let result = session.handle(msg).and_then(|eff| match eff {
            Some(e) => hub.apply(&host, stream_id, e),
            None => Ok(()),
        });
        if let Err(r) = result {
            refuse(&hub, &tx, r);
            break;
        }
    }
    hub.detach(&host, stream_id);
}
