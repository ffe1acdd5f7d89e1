//! The plain-HTTP side listener: `/metrics` (Prometheus text format), `/healthz` (the
//! process is up) and `/readyz` (every watch delivered its initial list, so agents are
//! accepted). A standby replica (leader election) serves a reduced set: it is alive and
//! ready to take over, and its metrics say it does not lead.
//!
//! The listener is bounded like the agent edge, since anything in the cluster network may
//! reach it: at most [`MAX_CONNECTIONS`] connections at once (beyond, a new one is closed
//! at accept), and a client must send a request's headers within [`HEADER_READ_TIMEOUT`]
//! (also between requests on a kept-alive connection), so silent or dribbling clients
//! cannot hold the slots. A scraper or probe uses one or two connections.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::state::Hub;

/// Most connections open at once (Prometheus, kubelet probes and a person with curl).
pub const MAX_CONNECTIONS: usize = 32;
/// Longest a client may take to send a request's headers, or to start the next one.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The listener's bounds (constants in production; small in tests).
#[derive(Clone, Copy, Debug)]
struct Bounds {
    max_connections: usize,
    header_read_timeout: Duration,
}

const BOUNDS: Bounds = Bounds {
    max_connections: MAX_CONNECTIONS,
    header_read_timeout: HEADER_READ_TIMEOUT,
};

/// Status and body for one path.
type Responder = Arc<dyn Fn(&str) -> (StatusCode, String) + Send + Sync>;

fn respond_leader(hub: &Hub, path: &str) -> (StatusCode, String) {
    match path {
        "/metrics" => {
            hub.refresh_gauges();
            crate::clusters::warn::refresh_gauge(hub);
            (StatusCode::OK, hub.metrics.encode())
        }
        "/healthz" => (StatusCode::OK, "ok\n".to_string()),
        "/readyz" if hub.is_ready() => (StatusCode::OK, "ready\n".to_string()),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "loading Rancher objects\n".to_string(),
        ),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_string()),
    }
}

fn respond_standby(lease: &str, path: &str) -> (StatusCode, String) {
    match path {
        // Only the leader gauge: a standby has no state to report.
        "/metrics" => (
            StatusCode::OK,
            format!(
                "# HELP vclink_hub_leader {}.\n# TYPE vclink_hub_leader gauge\n\
                 vclink_hub_leader 0\n# EOF\n",
                crate::metrics::LEADER_HELP
            ),
        ),
        "/healthz" => (StatusCode::OK, "ok\n".to_string()),
        "/readyz" => (
            StatusCode::OK,
            format!("standby: waiting for leader lease {lease}\n"),
        ),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_string()),
    }
}

fn respond(responder: &Responder, path: &str) -> Response<Full<Bytes>> {
    let (status, body) = responder(path);
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if path == "/metrics" {
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ),
        );
    }
    r
}

/// Binds the listener (so a bad address fails start-up) and returns the serving task.
pub async fn serve(
    addr: SocketAddr,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    serve_with(addr, Arc::new(move |p| respond_leader(&hub, p)), shutdown).await
}

/// The listener of a standby replica waiting for lease `lease` (`<namespace>/<name>`).
pub async fn serve_standby(
    addr: SocketAddr,
    lease: String,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    serve_with(
        addr,
        Arc::new(move |p| respond_standby(&lease, p)),
        shutdown,
    )
    .await
}

async fn serve_with(
    addr: SocketAddr,
    responder: Responder,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding --metrics-listen {addr}: {e}"))?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    Ok(tokio::spawn(serve_on(
        listener, responder, BOUNDS, shutdown,
    )))
}

/// The accept loop (see the module docs for the bounds).
async fn serve_on(
    listener: TcpListener,
    responder: Responder,
    bounds: Bounds,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(bounds.max_connections.max(1)));
    loop {
        let conn = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = listener.accept() => c,
        };
        let Ok((stream, peer)) = conn else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "metrics listener: too many connections; closing");
            continue;
        };
        let responder = responder.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let r = respond(&responder, req.uri().path());
                async move { Ok::<_, Infallible>(r) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(bounds.header_read_timeout)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Reads until the server closes the connection; what it sent.
    async fn read_to_close(c: &mut TcpStream, within: Duration) -> Option<String> {
        let mut buf = Vec::new();
        match tokio::time::timeout(within, c.read_to_end(&mut buf)).await {
            Ok(_) => Some(String::from_utf8_lossy(&buf).into_owned()),
            Err(_) => None,
        }
    }

    #[tokio::test]
    async fn slow_clients_are_bounded_in_number_and_time() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let bounds = Bounds {
            max_connections: 3,
            header_read_timeout: Duration::from_millis(500),
        };
        let responder: Responder = Arc::new(|_| (StatusCode::OK, "ok\n".to_string()));
        tokio::spawn(serve_on(listener, responder, bounds, shutdown.clone()));
        // Three clients dribble a request and never finish its headers.
        let mut slow = Vec::new();
        for _ in 0..3 {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
            slow.push(c);
        }
        // A fourth is closed at accept, with no answer (the server accepts in order, so
        // the three above hold the slots).
        let mut extra = TcpStream::connect(addr).await.unwrap();
        let _ = extra
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let got = read_to_close(&mut extra, Duration::from_secs(5)).await;
        assert_eq!(
            got.as_deref(),
            Some(""),
            "over the cap: closed without a response"
        );
        // The slow ones are closed by the header timeout (not held forever).
        for c in &mut slow {
            let got = read_to_close(c, Duration::from_secs(5)).await;
            assert!(
                got.is_some(),
                "a client that never finishes its headers is closed"
            );
            assert!(!got.unwrap_or_default().contains("200 OK"));
        }
        // Their slots are free again: a normal request is answered.
        let ok = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let mut c = TcpStream::connect(addr).await.unwrap();
                c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .await
                    .unwrap();
                let mut buf = String::new();
                let _ = c.read_to_string(&mut buf).await;
                if buf.starts_with("HTTP/1.1 200") {
                    return buf;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("a normal request is answered once the slow clients are gone");
        assert!(ok.ends_with("ok\n"));
        // A silent client (connects, sends nothing) is closed too.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        assert!(
            read_to_close(&mut silent, Duration::from_secs(5))
                .await
                .is_some()
        );
        shutdown.cancel();
    }
}
