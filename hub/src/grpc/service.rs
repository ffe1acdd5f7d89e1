//! The tonic service `vclink.v1.Link`: accepts an agent stream, waits for Hello (10 s),
//! validates and authenticates it, answers Welcome, registers the stream as its host's
//! only live stream and feeds every further message through the [`SessionState`]
//! machine into the hub. Refusals close the stream with a gRPC status and are counted
//! by reason. Outbound messages go through a bounded channel the hub never waits on.
//!
//! Identity is not checked once only: the stream's token is verified again every
//! `reverify_interval` and just after the token's own expiry, and a `Reauth` message
//! (the kubelet rotated the token) swaps in a new token ([`super::reverify`]). Each
//! stream also has a message-rate token bucket (RESOURCE_EXHAUSTED beyond it) on top of the
//! message size limit (RESOURCE_EXHAUSTED) and decoding (INVALID_ARGUMENT).
//!
//! Before authentication a stream holds one of `max_unauthenticated_streams` permits,
//! shared fairly by client IP ([`super::gate`]; none left for it: RESOURCE_EXHAUSTED
//! "retry in 5s", no task spawned), released at Welcome
//! or when the stream ends; its first message is limited to `hello_max_bytes`
//! ([`super::edge`]). A stream that ends before Welcome counts against its connection;
//! after `preauth_failures_per_connection` the connection is closed
//! ([`super::tls::ConnGuard`]). Agent-supplied text is logged only through
//! [`printable`] (control characters replaced), so it cannot forge log lines.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;
use vclink_proto::ratelimit::TokenBucket;
use vclink_proto::v1::link_server::{Link, LinkServer};
use vclink_proto::v1::{AgentMessage, Hello, HubMessage, Welcome, agent_message::Msg, hub_message};
use vclink_proto::{PROTOCOL_VERSION, Secret, limits, validate};

use super::edge::{EdgeSettings, FirstMessageLimited};
use super::gate::{GatePermit, PeerGate, RecentPeers, Refusal};
use super::reverify::{Credential, reverify};
use super::tls::{ConnGuard, EdgeConnInfo};
use crate::core::session::{RETRY_HINT, Reject, SessionState};
use crate::identity::auth::AgentAuthenticator;
use crate::state::{Hub, Outbound};

/// How long a new stream may take to send Hello.
pub(crate) const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest token accepted in a Reauth.
const MAX_TOKEN_BYTES: usize = crate::identity::jwt::MAX_TOKEN_BYTES;

/// Per-stream limits and identity timing.
#[derive(Clone, Debug)]
pub(crate) struct EdgeLimits {
    /// Messages per second one stream may send (sustained); ≤ 0 disables the limit.
    pub(crate) message_rate: f64,
    /// Burst above `message_rate`.
    pub(crate) message_burst: u32,
    /// How often a stream's token is verified again.
    pub(crate) reverify_interval: Duration,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        Self {
            message_rate: 100.0,
            message_burst: 2000,
            reverify_interval: Duration::from_secs(300),
        }
    }
}

/// The service.
pub struct LinkService {
    hub: Arc<Hub>,
    auth: Arc<dyn AgentAuthenticator>,
    shutdown: CancellationToken,
    limits: EdgeLimits,
    edge: EdgeSettings,
    /// Permits for streams not yet authenticated, shared fairly by client IP.
    preauth: Arc<PeerGate>,
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
            limits: EdgeLimits::default(),
            preauth: EdgeSettings::default().preauth_gate(),
            edge: EdgeSettings::default(),
        }
    }

    /// Replaces the pre-authentication bounds.
    pub fn with_edge(mut self, edge: EdgeSettings) -> Self {
        self.preauth = edge.preauth_gate();
        self.edge = edge;
        self
    }

    /// Replaces the per-stream limits.
    pub(crate) fn with_limits(mut self, limits: EdgeLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The tonic server for this service, with the protocol's message size limits and
    /// the first message (Hello) limited to `hello_max_bytes`.
    pub fn into_server(self) -> FirstMessageLimited<LinkServer<Self>> {
        let hello = self.edge.hello_max_bytes;
        FirstMessageLimited::new(
            LinkServer::new(self)
                .max_decoding_message_size(limits::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(limits::MAX_MESSAGE_BYTES),
            hello,
        )
    }
}

/// How long a hub still loading Rancher objects asks agents to wait: short, so they are
/// back within seconds of it becoming ready (their own backoff would have grown to a
/// minute by then at full scale); each refusal is one cheap answer, counted as
/// `not_ready`.
const NOT_READY_RETRY: Duration = Duration::from_secs(5);

/// The refusal of a hub that is not ready, with its retry hint as metadata.
fn not_ready() -> Status {
    let mut s = Status::unavailable(format!(
        "the hub is starting (loading Rancher objects); retry in {}s",
        NOT_READY_RETRY.as_secs()
    ));
    s.metadata_mut().insert(
        vclink_proto::RETRY_AFTER_METADATA,
        (NOT_READY_RETRY.as_millis() as u64).into(),
    );
    s
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
            return Err(not_ready());
        }
        let bearer = bearer(req.metadata());
        let conn = req.extensions().get::<EdgeConnInfo>().cloned();
        let addr = conn
            .as_ref()
            .and_then(|c| c.remote_addr)
            .or_else(|| req.remote_addr());
        let guard = conn.map(|c| c.guard);
        let permit = match self
            .preauth
            .try_acquire(addr.map(|a| a.ip()), Instant::now())
        {
            Ok(p) => p,
            Err(r) => {
                let (reason, who) = match r {
                    Refusal::Full => ("preauth_full", "agents are"),
                    Refusal::Peer => ("preauth_peer_cap", "streams from this address are"),
                };
                self.hub.metrics.reject(reason);
                preauth_failed(&guard, self.edge.preauth_failures_per_connection);
                return Err(Status::resource_exhausted(format!(
                    "too many {who} connecting at once; {RETRY_HINT}"
                )));
            }
        };
        let peer = addr.map(|a| a.to_string()).unwrap_or_default();
        let inbound = req.into_inner();
        // Room for a Status and a Register per vCluster after a snapshot, plus slack.
        let cap = self.hub.outbound_capacity();
        let (tx, rx) = mpsc::channel(cap);
        let stream = Stream {
            hub: self.hub.clone(),
            authn: self.auth.clone(),
            limits: self.limits.clone(),
            peer: addr.map(|a| a.ip()),
            guard,
            failures_limit: self.edge.preauth_failures_per_connection,
            recent: self.edge.recent_peers.clone(),
        };
        let span = tracing::info_span!("agent", %peer);
        tokio::spawn(
            drive(stream, permit, bearer, inbound, tx, self.shutdown.clone()).instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// What one stream's task needs.
struct Stream {
    hub: Arc<Hub>,
    authn: Arc<dyn AgentAuthenticator>,
    limits: EdgeLimits,
    peer: Option<IpAddr>,
    guard: Option<Arc<ConnGuard>>,
    failures_limit: u32,
    /// Client IPs with a recently verified agent (fed here at Welcome).
    recent: Arc<RecentPeers>,
}

/// Counts a stream that ended before authentication against its connection.
fn preauth_failed(guard: &Option<Arc<ConnGuard>>, limit: u32) {
    if let Some(g) = guard
        && !g.is_closed()
        && g.preauth_failed(limit)
    {
        tracing::info!(
            failures = limit,
            "closing a connection whose streams keep failing before authentication"
        );
    }
}

/// Whether a refusal may be logged at WARN: a few per second (a flood of junk clients
/// must not flood the log; the rest go to DEBUG and every refusal is counted).
fn log_budget() -> bool {
    static BUDGET: std::sync::OnceLock<TokenBucket> = std::sync::OnceLock::new();
    BUDGET
        .get_or_init(|| TokenBucket::new(2.0, 20))
        .try_take(Instant::now())
}

/// Agent-supplied text as it may appear in a log line: at most `max` characters, every
/// control character (newline, escape, …) replaced by `?`.
pub(crate) fn printable(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn refuse(hub: &Hub, tx: &mpsc::Sender<Outbound>, r: Reject) {
    hub.metrics.reject(r.reason);
    let detail = printable(&r.message, 512);
    if log_budget() {
        tracing::warn!(reason = r.reason, code = ?r.code, %detail, "closing agent stream");
    } else {
        tracing::debug!(reason = r.reason, code = ?r.code, %detail, "closing agent stream");
    }
    let _ = tx.try_send(Err(r.to_status()));
}

/// A failed read of the agent's stream: an oversized or undecodable message is the
/// agent's fault and is answered and counted; anything else (the agent went away) is not.
fn inbound_error(hub: &Hub, tx: &mpsc::Sender<Outbound>, e: &Status) -> bool {
    let r = match e.code() {
        tonic::Code::OutOfRange => Reject {
            code: tonic::Code::ResourceExhausted,
            reason: "oversized",
            message: format!("message larger than {} bytes", limits::MAX_MESSAGE_BYTES),
        },
        // The first-message limit (`edge`): its message says the limit.
        tonic::Code::ResourceExhausted => Reject {
            code: tonic::Code::ResourceExhausted,
            reason: "hello_too_large",
            message: e.message().to_string(),
        },
        tonic::Code::Internal if e.message().contains("decode") => Reject {
            code: tonic::Code::InvalidArgument,
            reason: "malformed",
            message: "the message is not a valid vclink.v1.AgentMessage".into(),
        },
        _ => return false,
    };
    refuse(hub, tx, r);
    true
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
        Ok(Err(e)) => {
            if !inbound_error(hub, tx, &e) {
                tracing::debug!(error = %e, "stream failed before Hello");
            }
        }
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

/// Hello and authentication; `None` when the stream was refused (already answered).
async fn admit(
    st: &Stream,
    bearer: Option<&Secret>,
    inbound: &mut Streaming<AgentMessage>,
    tx: &mpsc::Sender<Outbound>,
) -> Option<(Hello, crate::identity::auth::AgentIdentity)> {
    let hub = &st.hub;
    let hello = read_hello(hub, tx, inbound).await?;
    match st
        .authn
        .authenticate_from(bearer, &hello.cluster_id, st.peer)
        .await
    {
        Ok(id) => Some((hello, id)),
        Err(e) => {
            hub.metrics.reject(e.reason());
            if log_budget() {
                tracing::warn!(claimed = %hello.cluster_id, error = %e, "agent not accepted");
            } else {
                tracing::debug!(claimed = %hello.cluster_id, error = %e, "agent not accepted");
            }
            let _ = tx.try_send(Err(e.to_status()));
            None
        }
    }
}

async fn drive(
    st: Stream,
    permit: GatePermit,
    bearer: Option<Secret>,
    mut inbound: Streaming<AgentMessage>,
    tx: mpsc::Sender<Outbound>,
    shutdown: CancellationToken,
) {
    let Some((hello, identity)) = admit(&st, bearer.as_ref(), &mut inbound, &tx).await else {
        drop(permit);
        preauth_failed(&st.guard, st.failures_limit);
        return;
    };
    if let Some(ip) = st.peer {
        st.recent.verified(ip, Instant::now());
    }
    let Stream {
        hub, authn, limits, ..
    } = st;
    let host = identity.cluster_id;
    // Host opt-in, for the verified cluster (PERMISSION_DENIED naming the label).
    if let Err(e) = hub.check_host(&host) {
        let _ = tx.try_send(Err(e));
        return;
    }
    let mut cred = Credential::new(bearer, limits.reverify_interval, identity.token_expiry);
    tracing::info!(host = %host, agent_version = %printable(&hello.agent_version, 64),
        instance = %printable(&hello.instance, 253), protocol = hello.protocol_version, "agent attached");
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
    // Authenticated: the slot goes to the next connecting agent.
    drop(permit);
    let cancel = shutdown.child_token();
    let stream_id = hub.attach(&host, tx.clone(), cancel.clone());
    let idle = Duration::from_secs(u64::from(hub.cfg.heartbeat_seconds).saturating_mul(3));
    let mut session = SessionState::new(host.clone(), hub.cfg.max_vclusters);
    let bucket = TokenBucket::new(limits.message_rate, limits.message_burst);
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => {
                let _ = tx.try_send(Err(Status::unavailable(
                    "stream closed by the hub (replaced by a newer stream, outbound queue full, or shutdown); reconnect",
                )));
                break;
            }
            _ = tokio::time::sleep_until(cred.next_check) => {
                if let Err(r) = reverify(authn.as_ref(), &host, limits.reverify_interval, &mut cred, None).await {
                    refuse(&hub, &tx, r);
                    break;
                }
                continue;
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
                if !inbound_error(&hub, &tx, &e) {
                    tracing::info!(host = %host, error = %e, "agent stream failed");
                }
                break;
            }
            Ok(Ok(None)) => {
                tracing::info!(host = %host, "agent closed its stream");
                break;
            }
            Ok(Ok(Some(m))) => m,
        };
        if !bucket.try_take(Instant::now()) {
            let r = Reject {
                code: tonic::Code::ResourceExhausted,
                reason: "rate_limited",
                message: format!(
                    "more than {} messages per second (burst {})",
                    limits.message_rate, limits.message_burst
                ),
            };
            refuse(&hub, &tx, r);
            break;
        }
        if let Some(Msg::Reauth(r)) = msg.msg {
            let result = if r.token.is_empty() || r.token.len() > MAX_TOKEN_BYTES {
                Err(Reject {
                    code: tonic::Code::InvalidArgument,
                    reason: "invalid",
                    message: format!(
                        "invalid reauth.token: empty or longer than {MAX_TOKEN_BYTES} bytes"
                    ),
                })
            } else {
                let token = Secret::new(r.token);
                reverify(
                    authn.as_ref(),
                    &host,
                    limits.reverify_interval,
                    &mut cred,
                    Some(token),
                )
                .await
            };
            if let Err(r) = result {
                refuse(&hub, &tx, r);
                break;
            }
            continue;
        }
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

/// Extracts the bearer token from request metadata.
pub(crate) fn bearer(md: &tonic::metadata::MetadataMap) -> Option<Secret> {
    let v = md.get("authorization")?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty())
        .then(|| Secret::new(token.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_is_read_from_metadata() {
        let mut md = tonic::metadata::MetadataMap::new();
        assert_eq!(bearer(&md), None);
        md.insert("authorization", "Bearer abc.def".parse().unwrap());
        assert_eq!(bearer(&md).unwrap().expose(), "abc.def");
        md.insert("authorization", "Basic xyz".parse().unwrap());
        assert_eq!(bearer(&md), None);
    }

    #[test]
    fn agent_text_cannot_forge_log_lines() {
        assert_eq!(printable("a\nINFO fake\x1b[31m", 64), "a?INFO fake?[31m");
        assert_eq!(printable("abcdef", 3), "abc");
    }
}
