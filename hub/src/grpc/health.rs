//! The standard gRPC health service (`grpc.health.v1.Health`), for Kubernetes gRPC
//! probes and load balancers. The kubelet's gRPC probe speaks plaintext only, so besides
//! the TLS listener (leader only) the service is also served on a plaintext listener of
//! its own (`--health-listen`) that carries nothing else. Three names:
//!
//! - [`LIVENESS`]: SERVING while the process runs (leader or standby): the liveness and
//!   startup probe, like `/healthz`.
//! - `""` (the whole server): SERVING when this replica does its job: a leader once every
//!   watch delivered its initial list (like `/readyz`), a standby while it forwards agent
//!   connections to the leader (its TLS port is then the leader's, byte for byte, so a
//!   check through it answers for the leader). The readiness probe.
//! - `vclink.v1.Link`: SERVING only on the leader once ready; NOT_SERVING on a standby,
//!   which serves no Link itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::HealthReporter;

/// Service name of the liveness check.
pub const LIVENESS: &str = "liveness";
/// The Link service's name.
pub const LINK: &str = "vclink.v1.Link";

/// How often the leader's readiness is copied into the health statuses.
const POLL: Duration = Duration::from_secs(1);

/// The statuses as this replica's role and readiness say.
pub(crate) async fn report(reporter: &HealthReporter, leader: bool, ready: bool) {
    let up = |b: bool| {
        if b {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        }
    };
    reporter.set_service_status("", up(!leader || ready)).await;
    reporter.set_service_status(LINK, up(leader && ready)).await;
    // Last, so a SERVING liveness means every name has its status.
    reporter
        .set_service_status(LIVENESS, ServingStatus::Serving)
        .await;
}

/// Keeps a leader's statuses in step with `ready()` until `stop` fires.
pub(crate) fn follow_readiness(
    reporter: HealthReporter,
    ready: Arc<dyn Fn() -> bool + Send + Sync>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let now = ready();
            if last != Some(now) {
                report(&reporter, true, now).await;
                last = Some(now);
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    })
}

/// Serves only the health service, in plaintext, on `addr` until `stop` fires. Binds
/// first, so a bad or busy address fails start-up with the flag's name.
pub(crate) async fn serve_plain<S: Health>(
    addr: SocketAddr,
    service: HealthServer<S>,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding --health-listen {addr}: {e}"))?;
    tracing::info!(%addr, "serving grpc.health.v1 (plaintext, for probes)");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    Ok(tokio::spawn(async move {
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
            .await
        {
            tracing::warn!(error = %e, "the gRPC health listener stopped");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus as Pb;
    use tonic_health::pb::health_client::HealthClient;

    async fn status(client: &mut HealthClient<tonic::transport::Channel>, service: &str) -> Pb {
        let r = client
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("check")
            .into_inner();
        Pb::try_from(r.status).expect("status")
    }

    /// Polls until `service` reports `want` (the leader's statuses follow readiness
    /// asynchronously), failing after 10 s.
    async fn until(client: &mut HealthClient<tonic::transport::Channel>, service: &str, want: Pb) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while status(client, service).await != want {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{service:?} never {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn plain_server(
        leader: Option<Arc<AtomicBool>>,
    ) -> (HealthClient<tonic::transport::Channel>, CancellationToken) {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let stop = CancellationToken::new();
        let (reporter, service) = tonic_health::server::health_reporter();
        match leader {
            Some(ready) => {
                let f: Arc<dyn Fn() -> bool + Send + Sync> =
                    Arc::new(move || ready.load(Ordering::SeqCst));
                follow_readiness(reporter, f, stop.clone());
            }
            None => report(&reporter, false, false).await,
        }
        serve_plain(addr, service, stop.clone())
            .await
            .expect("serve");
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        (HealthClient::new(channel), stop)
    }

    #[tokio::test]
    async fn a_leader_is_ready_only_once_its_watches_listed_everything() {
        let ready = Arc::new(AtomicBool::new(false));
        let (mut c, stop) = plain_server(Some(ready.clone())).await;
        until(&mut c, LIVENESS, Pb::Serving).await;
        assert_eq!(status(&mut c, "").await, Pb::NotServing);
        assert_eq!(status(&mut c, LINK).await, Pb::NotServing);
        ready.store(true, Ordering::SeqCst);
        until(&mut c, "", Pb::Serving).await;
        until(&mut c, LINK, Pb::Serving).await;
        stop.cancel();
    }

    #[tokio::test]
    async fn a_standby_is_alive_and_ready_but_serves_no_link() {
        let (mut c, stop) = plain_server(None).await;
        assert_eq!(status(&mut c, LIVENESS).await, Pb::Serving);
        assert_eq!(status(&mut c, "").await, Pb::Serving);
        assert_eq!(status(&mut c, LINK).await, Pb::NotServing);
        stop.cancel();
    }
}
