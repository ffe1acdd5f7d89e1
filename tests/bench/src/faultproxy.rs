//! A fault-injecting HTTPS proxy in front of a real kube-apiserver, for the fault report:
//! a process's kubeconfig is pointed at it, and every `every`-th write (POST, PUT, PATCH,
//! DELETE) gets a fault, in turn:
//! - `500`: answered 500 InternalError without reaching the API server;
//! - `409`: answered 409 Conflict without reaching the API server;
//! - `timeout`: forwarded (the API server applies it), its answer dropped, and after
//!   [`TIMEOUT_HOLD`] answered 504 — what a client sees when a load balancer times out on
//!   a write that went through, the case that makes naive retries duplicate objects.
//!
//! Reads and watches pass through unchanged (streamed). The proxy terminates TLS with a
//! serving certificate of the cluster's own CA (which the kubeconfig already trusts) and
//! forwards headers as they are, so bearer-token identities (the harness's chart RBAC)
//! are kept. Counts of what it did are in [`ProxyStats`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use vclink_envtest::Cluster;

/// How long a "timeout" write is held before its 504.
pub const TIMEOUT_HOLD: Duration = Duration::from_secs(5);

/// What the proxy did.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Writes seen.
    pub writes: AtomicU64,
    /// Writes answered 500 / 409 / held then 504.
    pub status_500: AtomicU64,
    pub status_409: AtomicU64,
    pub timeouts: AtomicU64,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// Counters.
    pub stats: Arc<ProxyStats>,
    stop: CancellationToken,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

type Body = BoxBody<Bytes, hyper::Error>;

fn full(status: StatusCode, reason: &str, code: u16) -> Response<Body> {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("injected by the bench's fault proxy: {reason}"),
        "reason": reason, "code": code,
    })
    .to_string();
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

struct Upstream {
    addr: SocketAddr,
    tls: tokio_rustls::TlsConnector,
}

impl Upstream {
    async fn send(&self, req: Request<Incoming>) -> anyhow::Result<Response<Incoming>> {
        let tcp = TcpStream::connect(self.addr).await?;
        let name = rustls::pki_types::ServerName::IpAddress(self.addr.ip().into());
        let tls = self.tls.connect(name, tcp).await?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        Ok(send.send_request(req).await?)
    }
}

fn is_write(m: &hyper::Method) -> bool {
    matches!(
        *m,
        hyper::Method::POST | hyper::Method::PUT | hyper::Method::PATCH | hyper::Method::DELETE
    )
}

/// Starts a proxy in front of `cluster`'s API server faulting every `every`-th write.
pub async fn start(cluster: &Cluster, every: u64) -> anyhow::Result<FaultProxy> {
    let serving = cluster
        .ca()
        .issue_server(&["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    let server_cfg = {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_slice_iter(serving.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes())?;
        let mut c = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(c)
    };
    let client_cfg = {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(cluster.ca().cert_pem().as_bytes()) {
            roots.add(c?)?;
        }
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
        )
    };
    let upstream = Arc::new(Upstream {
        addr: ([127, 0, 0, 1], cluster.port()).into(),
        tls: tokio_rustls::TlsConnector::from(client_cfg),
    });
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the fault proxy")?;
    let port = listener.local_addr()?.port();
    let stats = Arc::new(ProxyStats::default());
    let stop = CancellationToken::new();
    let acceptor = tokio_rustls::TlsAcceptor::from(server_cfg);
    let (st, cancel) = (stats.clone(), stop.clone());
    let every = every.max(1);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = cancel.cancelled() => return,
                a = listener.accept() => a,
            };
            let Ok((tcp, _)) = accepted else { continue };
            let (acceptor, upstream, st, cancel) = (
                acceptor.clone(),
                upstream.clone(),
                st.clone(),
                cancel.clone(),
            );
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (upstream, st) = (upstream.clone(), st.clone());
                    async move {
                        Ok::<_, std::convert::Infallible>(handle(req, &upstream, &st, every).await)
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc);
                tokio::select! {
                    _ = conn => {}
                    _ = cancel.cancelled() => {}
                }
            });
        }
    });
    Ok(FaultProxy {
        url: format!("https://127.0.0.1:{port}"),
        stats,
        stop,
    })
}

async fn handle(
    req: Request<Incoming>,
    upstream: &Upstream,
    st: &ProxyStats,
    every: u64,
) -> Response<Body> {
    let fault = if is_write(req.method()) {
        let n = st.writes.fetch_add(1, Ordering::Relaxed) + 1;
        n.is_multiple_of(every).then_some((n / every) % 3)
    } else {
        None
    };
    match fault {
        Some(0) => {
            st.status_500.fetch_add(1, Ordering::Relaxed);
            return full(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", 500);
        }
        Some(1) => {
            st.status_409.fetch_add(1, Ordering::Relaxed);
            return full(StatusCode::CONFLICT, "Conflict", 409);
        }
        _ => {}
    }
    let res = upstream.send(req).await;
    if fault.is_some() {
        st.timeouts.fetch_add(1, Ordering::Relaxed);
        if let Ok(r) = res {
            // Let the write complete upstream, then lose its answer.
            let _ = r.into_body().collect().await;
        }
        tokio::time::sleep(TIMEOUT_HOLD).await;
        return full(StatusCode::GATEWAY_TIMEOUT, "Timeout", 504);
    }
    match res {
        Ok(r) => r.map(|b| b.boxed()),
        Err(e) => full(
            StatusCode::BAD_GATEWAY,
            &format!("upstream failed: {e}"),
            502,
        ),
    }
}

/// Points the kubeconfig at `path` from `from` (the API server's URL) to `to`.
pub fn repoint_kubeconfig(path: &std::path::Path, from: &str, to: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    anyhow::ensure!(
        text.contains(from),
        "kubeconfig {} does not name {from}",
        path.display()
    );
    std::fs::write(path, text.replace(from, to))?;
    Ok(())
}

/// The `KUBECONFIG` a running process was started with (Linux `/proc`).
pub fn kubeconfig_of(pid: u32) -> anyhow::Result<std::path::PathBuf> {
    let env = std::fs::read(format!("/proc/{pid}/environ"))?;
    env.split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(b"KUBECONFIG="))
        .map(|v| std::path::PathBuf::from(String::from_utf8_lossy(v).into_owned()))
        .context("the process has no KUBECONFIG")
}
