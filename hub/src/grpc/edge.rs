//! The gRPC server around the service, with what bounds a client before it is
//! authenticated. Every figure is a flag (`config`); defaults and why:
//!
//! | bound | default | why |
//! |---|---|---|
//! | connections open | 8,192 | ~4× the largest tested fleet (2,000 agents); each costs ~50 KiB |
//! | TLS handshakes in progress | 128, 5 s each | a handshake is ~1 ms of CPU; 128 keeps a flood's handshakes from starving the runtime |
//! | … of them per client IP | 32 | one source cannot take the budget; a NAT'd fleet's handshakes take milliseconds each |
//! | streams per connection | 4 | an agent uses one; a few for a reconnect overlapping the old stream |
//! | streams not yet authenticated | 256 | each may hold one Hello and a TokenReview; ≥ the TokenReview burst so genuine reconnect waves fit |
//! | … of them per client IP | 64 | a quarter: at least four sources are needed to fill it |
//! | reserved for IPs with an agent verified in the last hour | 25% of both | genuine agents reconnect while unknown sources hold the rest |
//! | first message (Hello) | 8 KiB | the largest valid Hello is ~2.6 KiB; larger is refused from its 5-byte gRPC header, before buffering |
//! | failed pre-auth streams per connection | 3 | then the connection is closed, not just the stream |
//! | HTTP/2 stream window | 64 KiB | what one stream may buffer unread; connection window 256 KiB |
//! | HTTP/2 frame / header list | 16 KiB / 32 KiB | a projected token is ~1 KiB (the hub accepts up to 16 KiB) |
//!
//! So an unauthenticated client costs at most one stream slot, 64 KiB of buffered data
//! and a few KiB of Hello, for at most the Hello timeout, and after three failures its
//! connection; one client IP at most its per-IP share of each budget ([`super::gate`]).
//! Over a limit the answer is a gRPC status with a retry hint (`RESOURCE_EXHAUSTED`), or
//! a closed connection at accept time (before TLS); both are counted by reason in
//! `vclink_hub_rejections_total`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use hyper::body::{Body, Frame, SizeHint};
use tokio::net::TcpListener;
use tokio_rustls::rustls::ServerConfig;
use tokio_util::sync::CancellationToken;
use tonic::codegen::Service;
use tonic::codegen::http;
use tonic::server::NamedService;

use vclink_proto::v1::link_server::{Link, LinkServer};

use super::gate::{GateLimits, PeerGate, RecentPeers};
use super::tls::AcceptLimits;

/// HTTP/2 per-stream receive window.
const STREAM_WINDOW: u32 = 64 * 1024;
/// HTTP/2 per-connection receive window.
const CONNECTION_WINDOW: u32 = 256 * 1024;
/// Largest HTTP/2 frame accepted (the protocol minimum).
const MAX_FRAME: u32 = 16 * 1024;
/// Largest header list (the token travels in a header).
const MAX_HEADER_LIST: u32 = 32 * 1024;
/// Resets a client may provoke before the connection is closed (rapid-reset floods).
const MAX_PENDING_RESETS: usize = 16;

/// Every bound of the agent edge (see the module docs).
#[derive(Clone, Debug)]
pub struct EdgeSettings {
    /// Connections, handshakes, handshake timeout.
    pub accept: AcceptLimits,
    /// Concurrent HTTP/2 streams per connection.
    pub max_streams_per_connection: u32,
    /// Streams open at once that are not yet authenticated.
    pub max_unauthenticated_streams: usize,
    /// Largest first message (Hello), bytes.
    pub hello_max_bytes: usize,
    /// Failed pre-auth streams after which a connection is closed.
    pub preauth_failures_per_connection: u32,
    /// TLS handshakes in progress one client IP may hold.
    pub max_handshakes_per_peer: usize,
    /// Unauthenticated streams one client IP may hold.
    pub max_unauthenticated_streams_per_peer: usize,
    /// Share of both budgets kept for client IPs with a recently verified agent.
    pub reserved_share: f64,
    /// Those IPs (shared by the clones of these settings: fed by the service at
    /// Welcome, read by the accept loop and the service).
    pub recent_peers: std::sync::Arc<RecentPeers>,
}

impl Default for EdgeSettings {
    fn default() -> Self {
        Self {
            accept: AcceptLimits::default(),
            max_streams_per_connection: 4,
            max_unauthenticated_streams: 256,
            hello_max_bytes: 8 * 1024,
            preauth_failures_per_connection: 3,
            max_handshakes_per_peer: 32,
            max_unauthenticated_streams_per_peer: 64,
            reserved_share: 0.25,
            recent_peers: Default::default(),
        }
    }
}

impl EdgeSettings {
    /// From the hub's flags.
    pub fn from_args(args: &crate::config::Args) -> Self {
        Self {
            accept: AcceptLimits {
                max_connections: args.max_connections as usize,
                max_handshakes: args.max_tls_handshakes as usize,
                handshake_timeout: args.tls_handshake_timeout,
            },
            max_streams_per_connection: args.max_streams_per_connection,
            max_unauthenticated_streams: args.max_unauthenticated_streams as usize,
            hello_max_bytes: args.hello_max_bytes as usize,
            preauth_failures_per_connection: args.preauth_failures_per_connection,
            max_handshakes_per_peer: args.max_tls_handshakes_per_peer as usize,
            max_unauthenticated_streams_per_peer: args.max_unauthenticated_streams_per_peer
                as usize,
            reserved_share: args.edge_reserved_share,
            recent_peers: Default::default(),
        }
    }

    /// The gate of TLS handshakes in progress.
    pub fn handshake_gate(&self) -> std::sync::Arc<PeerGate> {
        PeerGate::new(
            GateLimits {
                total: self.accept.max_handshakes,
                per_peer: self.max_handshakes_per_peer,
                reserved_share: self.reserved_share,
            },
            self.recent_peers.clone(),
        )
    }

    /// The gate of streams not yet authenticated.
    pub fn preauth_gate(&self) -> std::sync::Arc<PeerGate> {
        PeerGate::new(
            GateLimits {
                total: self.max_unauthenticated_streams,
                per_peer: self.max_unauthenticated_streams_per_peer,
                reserved_share: self.reserved_share,
            },
            self.recent_peers.clone(),
        )
    }
}

/// Serves `svc` (the Link service behind the first-message limit, as
/// `service::LinkService::into_server` builds it) on `listener` over TLS until
/// `shutdown`, with the HTTP/2 bounds above. Generic over the service so this module
/// does not depend on the one that uses its limits.
pub async fn serve<L: Link>(
    listener: TcpListener,
    tls: std::sync::Arc<ServerConfig>,
    svc: FirstMessageLimited<LinkServer<L>>,
    settings: &EdgeSettings,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let incoming = super::tls::incoming_gated(
        listener,
        tls,
        settings.accept.clone(),
        settings.handshake_gate(),
        None,
        shutdown.clone(),
    );
    server(settings)
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
}

/// The tonic server builder with the HTTP/2 bounds (also used by tests over plain TCP).
pub fn server(settings: &EdgeSettings) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .max_concurrent_streams(settings.max_streams_per_connection)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .http2_max_header_list_size(MAX_HEADER_LIST)
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_RESETS))
}

/// Wraps a gRPC service so that the first message of every request stream is refused
/// (RESOURCE_EXHAUSTED) when its gRPC header declares more than `limit` bytes, before
/// the decoder reserves a buffer of that size. Later messages pass unchanged (the
/// service's own size limit applies to them).
#[derive(Clone)]
pub struct FirstMessageLimited<S> {
    inner: S,
    limit: usize,
}

impl<S> FirstMessageLimited<S> {
    /// Limits `inner`'s first request message to `limit` bytes.
    pub fn new(inner: S, limit: usize) -> Self {
        Self { inner, limit }
    }
}

impl<S: NamedService> NamedService for FirstMessageLimited<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<tonic::body::Body>> for FirstMessageLimited<S>
where
    S: Service<http::Request<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let limit = self.limit;
        self.inner.call(req.map(|b| {
            tonic::body::Body::new(FirstMessageBody {
                inner: b,
                limit,
                header: Vec::with_capacity(5),
                done: false,
            })
        }))
    }
}

/// The request body of [`FirstMessageLimited`].
struct FirstMessageBody {
    inner: tonic::body::Body,
    limit: usize,
    /// The first message's 5-byte header, as far as it has arrived.
    header: Vec<u8>,
    /// The header was checked (passed) or the body failed.
    done: bool,
}

/// The length a gRPC message header (flag byte, big-endian u32) declares, once complete.
pub(crate) fn declared_len(header: &[u8]) -> Option<usize> {
    let b: [u8; 4] = header.get(1..5)?.try_into().ok()?;
    usize::try_from(u32::from_be_bytes(b)).ok()
}

impl Body for FirstMessageBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.get_mut();
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => f,
            other => return other,
        };
        if !this.done
            && let Some(data) = frame.data_ref()
        {
            let need = 5 - this.header.len();
            let mut d = data.clone();
            let take = need.min(d.remaining());
            this.header.extend_from_slice(&d.copy_to_bytes(take));
            if let Some(len) = declared_len(&this.header) {
                this.done = true;
                if len > this.limit {
                    return Poll::Ready(Some(Err(tonic::Status::resource_exhausted(format!(
                        "the first message (Hello) must be at most {} bytes before the agent is authenticated; it declared {len}",
                        this.limit
                    )))));
                }
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn the_declared_length_is_read_from_five_bytes() {
        assert_eq!(declared_len(&[0, 0, 0, 1, 0]), Some(256));
        assert_eq!(declared_len(&[0, 0, 16, 0, 0]), Some(1 << 20));
        assert_eq!(declared_len(&[0, 0, 0]), None);
    }

    async fn first(chunks: Vec<&'static [u8]>, limit: usize) -> Result<usize, tonic::Code> {
        let stream = futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, tonic::Status>(Frame::data(Bytes::from_static(c)))),
        );
        let body = tonic::body::Body::new(http_body_util::StreamBody::new(stream));
        let mut b = FirstMessageBody {
            inner: body,
            limit,
            header: Vec::new(),
            done: false,
        };
        let mut n = 0;
        while let Some(f) = b.frame().await {
            match f {
                Ok(f) => n += f.into_data().map(|d| d.len()).unwrap_or(0),
                Err(s) => return Err(s.code()),
            }
        }
        Ok(n)
    }

    #[tokio::test]
    async fn an_oversized_first_message_is_refused_from_its_header() {
        // The header split over two frames, declaring 1 MiB.
        assert_eq!(
            first(vec![&[0, 0], &[16, 0, 0, 1, 2]], 8192).await,
            Err(tonic::Code::ResourceExhausted)
        );
        // 3 bytes declared, 3 sent; then a large second message passes.
        assert_eq!(
            first(vec![&[0, 0, 0, 0, 3, 1, 2, 3], &[0, 0, 16, 0, 0]], 8192).await,
            Ok(13)
        );
    }
}
