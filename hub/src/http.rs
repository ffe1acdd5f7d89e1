//! The plain-HTTP side listener: `/metrics` (Prometheus text format), `/healthz` (the
//! process is up) and `/readyz` (every watch delivered its initial list, so agents are
//! accepted). A standby replica (leader election) serves a reduced set: it is alive and
//! ready to take over, and its metrics say it does not lead.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::state::Hub;

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
    Ok(tokio::spawn(async move {
        loop {
            let conn = tokio::select! {
                _ = shutdown.cancelled() => return,
                c = listener.accept() => c,
            };
            let Ok((stream, _)) = conn else { continue };
            let responder = responder.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let r = respond(&responder, req.uri().path());
                    async move { Ok::<_, Infallible>(r) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    }))
}
