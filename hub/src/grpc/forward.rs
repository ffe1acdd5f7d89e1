//! What a standby replica does with the agent connections the Service sends it: forward
//! each one, byte for byte, to the leader's gRPC address (the Lease's
//! `vclink.io/leader-address`, see the `leader` module). TLS is not terminated here — the agent
//! verifies the leader's certificate end to end — so a standby sees no agent credential.
//! A connection that arrives while no leader is known is closed, and the agent retries
//! with its backoff. Connections being forwarded end when the standby stops forwarding
//! (it became the leader or shuts down), so agents reconnect to whoever leads.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long to wait for the leader to accept a forwarded connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds `listen` (so a bad address fails start-up) and returns the forwarding task.
pub async fn serve(
    listen: SocketAddr,
    leader: watch::Receiver<Option<String>>,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("binding --listen {listen}: {e}"))?;
    tracing::info!(%listen, "standby: forwarding agent connections to the leader");
    Ok(tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                a = listener.accept() => a,
            };
            let Ok((inbound, peer)) = accepted else {
                continue;
            };
            let target = leader.borrow().clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let Some(target) = target else {
                    tracing::debug!(%peer, "no leader known yet; closing the agent connection");
                    return;
                };
                forward(inbound, &target, &stop).await;
            });
        }
    }))
}

async fn forward(mut inbound: TcpStream, target: &str, stop: &CancellationToken) {
    let outbound = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await;
    let mut outbound = match outbound {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(leader = target, error = %e, "cannot reach the leader to forward an agent connection");
            return;
        }
        Err(_) => {
            tracing::warn!(
                leader = target,
                "the leader did not accept a forwarded agent connection in time"
            );
            return;
        }
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
    }
}
