//! The gRPC listener's TLS: a rustls server config (ring provider, TLS 1.3 only, ALPN
//! h2) serving the PEM files' certificate (reloaded on renewal, `certreload`), and an
//! accept loop that runs handshakes concurrently (a slow or silent client cannot hold up
//! others) and hands finished connections to tonic.
//!
//! What a client gets before it is authenticated is bounded here: at most
//! `max_connections` connections and `max_handshakes` handshakes in progress at once
//! (beyond either, a new connection is closed at once, costing one accept), and each
//! handshake at most `handshake_timeout`. Every connection carries a [`ConnGuard`] (in
//! the request extensions as [`EdgeConnInfo`]) through which the service closes the
//! whole connection when its streams keep failing before authentication.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::Context;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::Connected;

use super::gate::{GateLimits, PeerGate, Refusal};

/// Bounds of the accept loop (flags `--max-connections`, `--max-tls-handshakes`,
/// `--tls-handshake-timeout`).
#[derive(Clone, Debug)]
pub struct AcceptLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Handshakes in progress at once.
    pub max_handshakes: usize,
    /// Longest one handshake may take.
    pub handshake_timeout: Duration,
}

impl Default for AcceptLimits {
    fn default() -> Self {
        Self {
            max_connections: 8192,
            max_handshakes: 128,
            handshake_timeout: Duration::from_secs(5),
        }
    }
}

/// One connection's shared state: the service counts its streams that failed before
/// authentication and closes the connection through it.
#[derive(Debug, Default)]
pub struct ConnGuard {
    close: CancellationToken,
    preauth_failures: AtomicU32,
}

impl ConnGuard {
    /// Counts one stream that ended before authentication; closes the connection when
    /// that makes `limit`. True when it was closed.
    pub fn preauth_failed(&self, limit: u32) -> bool {
        let n = self
            .preauth_failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if n >= limit {
            self.close.cancel();
            true
        } else {
            false
        }
    }

    /// True once the connection was told to close.
    pub fn is_closed(&self) -> bool {
        self.close.is_cancelled()
    }
}

/// What the service learns about a connection (request extension).
#[derive(Clone, Debug)]
pub struct EdgeConnInfo {
    /// The client's address.
    pub remote_addr: Option<SocketAddr>,
    /// The connection's guard.
    pub guard: Arc<ConnGuard>,
}

/// Builds a TLS 1.3-only server config serving the certificate in `cert`/`key`, re-read
/// when the files change (`certreload`). A bad pair fails start-up.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = super::certreload::ReloadingCert::load(
        cert,
        key,
        provider.clone(),
        super::certreload::CHECK_INTERVAL,
    )?;
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 with the ring provider")?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// A TLS connection tonic can serve (it needs [`Connected`] for the peer address). Reads
/// and writes fail once its [`ConnGuard`] is closed, which ends the HTTP/2 connection.
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    guard: Arc<ConnGuard>,
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Held for the connection's life (`max_connections`).
    _slot: Option<OwnedSemaphorePermit>,
}

impl TlsConn {
    fn new(
        inner: tokio_rustls::server::TlsStream<TcpStream>,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Self {
        let guard = Arc::new(ConnGuard::default());
        let closed = Box::pin(guard.close.clone().cancelled_owned());
        Self {
            inner,
            guard,
            closed,
            _slot: slot,
        }
    }

    /// Err once the guard closed the connection (registers the waker otherwise).
    fn check(&mut self, cx: &mut TaskContext<'_>) -> std::io::Result<()> {
        match self.closed.as_mut().poll(cx) {
            Poll::Ready(()) => Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "closed by the hub: too many failed streams before authentication",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl Connected for TlsConn {
    type ConnectInfo = EdgeConnInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        let (tcp, _) = self.inner.get_ref();
        EdgeConnInfo {
            remote_addr: tcp.peer_addr().ok(),
            guard: self.guard.clone(),
        }
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Accepts TCP connections on `listener`, runs each TLS handshake in its own task and
/// yields the finished connections (default [`AcceptLimits`]).
pub fn incoming(
    listener: TcpListener,
    cfg: Arc<ServerConfig>,
    shutdown: CancellationToken,
) -> ReceiverStream<Result<TlsConn, std::io::Error>> {
    incoming_with(listener, cfg, AcceptLimits::default(), shutdown)
}

/// [`incoming`] with explicit limits (handshakes shared without per-IP fairness).
pub fn incoming_with(
    listener: TcpListener,
    cfg: Arc<ServerConfig>,
    limits: AcceptLimits,
    shutdown: CancellationToken,
) -> ReceiverStream<Result<TlsConn, std::io::Error>> {
    let gate = PeerGate::new(
        GateLimits {
            total: limits.max_handshakes,
            per_peer: limits.max_handshakes,
            reserved_share: 0.0,
        },
        Default::default(),
    );
    incoming_gated(listener, cfg, limits, gate, None, shutdown)
}

/// [`incoming`] whose handshakes in progress are shared by client IP through `handshakes`
/// ([`super::gate`]); refused connections are closed before TLS and counted in
/// `refusals` by reason (`connections_full`, `handshakes_full`, `handshakes_peer_cap`).
pub fn incoming_gated(
    listener: TcpListener,
    cfg: Arc<ServerConfig>,
    limits: AcceptLimits,
    handshakes: Arc<PeerGate>,
    refusals: Option<Family<[(&'static str, &'static str); 1], Counter>>,
    shutdown: CancellationToken,
) -> ReceiverStream<Result<TlsConn, std::io::Error>> {
    let (tx, rx) = mpsc::channel(256);
    let acceptor = TlsAcceptor::from(cfg);
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let refused = move |reason: &'static str| {
        if let Some(f) = &refusals {
            f.get_or_create(&[("reason", reason)]).inc();
        }
    };
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                a = listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Over a limit the connection is dropped at once: it cost one accept, and
            // the client retries with its backoff.
            let Ok(slot) = connections.clone().try_acquire_owned() else {
                refused("connections_full");
                tracing::debug!(%peer, "connection limit reached; closing");
                continue;
            };
            let handshake = match handshakes.try_acquire(Some(peer.ip()), Instant::now()) {
                Ok(p) => p,
                Err(r) => {
                    refused(match r {
                        Refusal::Peer => "handshakes_peer_cap",
                        Refusal::Full => "handshakes_full",
                    });
                    tracing::debug!(%peer, reason = ?r, "too many TLS handshakes in progress; closing");
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx, timeout) = (acceptor.clone(), tx.clone(), limits.handshake_timeout);
            tokio::spawn(async move {
                let done = tokio::time::timeout(timeout, acceptor.accept(tcp)).await;
                drop(handshake);
                match done {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(TlsConn::new(tls, Some(slot)))).await;
                    }
                    Ok(Err(e)) if peer_rejected_our_certificate(&e) => tracing::warn!(
                        %peer, error = %e,
                        "TLS certificate verification failed on the client's side: the client (an agent?) does not \
                         trust the hub's serving certificate (--tls-cert-file); give the agents the CA that issued it \
                         (agent chart value hub.caBundle or hub.caSecretName)"
                    ),
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Whether a failed handshake ended with the client's alert that it refused the hub's
/// certificate (unknown CA, bad or unusable certificate).
fn peer_rejected_our_certificate(e: &std::io::Error) -> bool {
    use rustls::AlertDescription as A;
    let Some(r) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return false;
    };
    matches!(
        r,
        rustls::Error::AlertReceived(
            A::UnknownCA | A::BadCertificate | A::CertificateUnknown | A::CertificateExpired
        )
    )
}
