//! A deliberately tiny plain-HTTP endpoint for probes and scraping: `/healthz` (process
//! alive), `/readyz` (the initial lists of the watches are complete) and `/metrics`
//! (a couple of gauges in Prometheus text format). Hand-written HTTP/1.0 responses keep
//! the agent free of a web framework.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::watch::CatalogRx;
use vclink_proto::v1::exclusion::Kind;

/// The response for a request line's path.
pub fn respond(path: &str, catalog: &crate::watch::Catalog) -> (u16, String) {
    match path {
        "/healthz" | "/livez" => (200, "ok\n".into()),
        "/readyz" if catalog.ready => (200, "ok\n".into()),
        "/readyz" => (
            503,
            "waiting for the initial list of vCluster Services\n".into(),
        ),
        "/metrics" => (
            200,
            format!(
                "# HELP vclink_agent_vclusters vClusters reported to the hub.\n# TYPE vclink_agent_vclusters gauge\n\
                 vclink_agent_vclusters {}\n# HELP vclink_agent_vclusters_refused vClusters reported invalid (a field failed validation).\n\
                 # TYPE vclink_agent_vclusters_refused gauge\nvclink_agent_vclusters_refused {}\n\
                 # HELP vclink_agent_vclusters_excluded vClusters reported but excluded from import (any reason).\n\
                 # TYPE vclink_agent_vclusters_excluded gauge\nvclink_agent_vclusters_excluded {}\n",
                catalog.vclusters.len(),
                catalog
                    .vclusters
                    .values()
                    .filter(|v| v.exclusion_kind() == Kind::Invalid)
                    .count(),
                catalog
                    .vclusters
                    .values()
                    .filter(|v| v.exclusion.is_some())
                    .count()
            ),
        ),
        _ => (404, "not found\n".into()),
    }
}

/// Serves until `cancel` fires.
pub async fn serve(
    addr: SocketAddr,
    catalog: CatalogRx,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    info!(%addr, "serving /healthz, /readyz and /metrics");
    loop {
        let (mut sock, _) = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = listener.accept() => match r { Ok(s) => s, Err(e) => { warn!(error = %e, "accept failed"); continue; } },
        };
        let snapshot = catalog.borrow().clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n =
                match tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf))
                    .await
                {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("/");
            let (code, body) = respond(path, &snapshot);
            let reason = match code {
                200 => "OK",
                503 => "Service Unavailable",
                _ => "Not Found",
            };
            let resp = format!(
                "HTTP/1.0 {code} {reason}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::Catalog;

    #[test]
    fn readiness_follows_the_initial_list() {
        let mut c = Catalog::default();
        assert_eq!(respond("/readyz", &c).0, 503);
        c.ready = true;
        assert_eq!(respond("/readyz", &c).0, 200);
        assert!(
            respond("/metrics", &c)
                .1
                .contains("vclink_agent_vclusters 0")
        );
        assert_eq!(respond("/nope", &c).0, 404);
    }
}
