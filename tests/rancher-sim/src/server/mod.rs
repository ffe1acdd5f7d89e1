//! The Rancher simulator's HTTPS server (own CA, SAN 127.0.0.1/localhost): the import
//! endpoint (docs/rancher.md: Registration token and import manifest), the `/k8s/clusters/<id>` proxy, Rancher's admission
//! webhooks (§2, §6), plus `/ping` and `/cacerts` like Rancher.

pub mod import;
pub mod proxy;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::faults::{Counters, Fault};
use crate::state::Shared;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

/// A complete response.
pub fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|e: Infallible| match e {})
            .boxed(),
    );
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

/// A Kubernetes-style `Status` error body.
pub fn status_error(code: u16, reason: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": message, "reason": reason, "code": code});
    respond(
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        "application/json",
        body.to_string(),
    )
}

/// Plays an injected HTTP fault: the status, or a hang until the simulator stops.
pub async fn play_fault(shared: &Shared, fault: Fault) -> Response<Body> {
    Counters::inc(&shared.counters.faults_fired);
    match fault {
        Fault::Status(code) => status_error(code, "InjectedFault", "injected fault"),
        Fault::Timeout => {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(300)) => {}
                _ = shared.cancel.cancelled() => {}
            }
            status_error(504, "Timeout", "injected timeout")
        }
    }
}

/// Accepts TLS connections until the simulator stops.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener, tls: rustls::ServerConfig) {
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    loop {
        let (tcp, _) = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => { tracing::warn!(error = %e, "Rancher simulator accept failed"); continue; }
            },
        };
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let cancel = shared.cancel.clone();
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(shared, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = cancel.cancelled() => {}
            }
        });
    }
}

async fn route(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    if let Some(file) = path.strip_prefix("/v3/import/") {
        return import::handle(&shared, req.method(), file).await;
    }
    if let Some(rest) = path.strip_prefix("/k8s/clusters/") {
        let rest = rest.to_string();
        return proxy::handle(&shared, req, &rest).await;
    }
    if let Some(hook) = path.strip_prefix("/v1/webhook/") {
        let hook = hook.to_string();
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return status_error(400, "BadRequest", "unreadable body"),
        };
        return crate::webhook::handle(&shared, &hook, &body).await;
    }
    match path.as_str() {
        "/ping" | "/healthz" => respond(StatusCode::OK, "text/plain", "pong"),
        "/cacerts" => respond(StatusCode::OK, "text/plain", shared.ca_pem.clone()),
        _ => status_error(404, "NotFound", "not found"),
    }
}
