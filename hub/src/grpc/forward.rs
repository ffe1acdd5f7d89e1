//! What a standby replica does with the agent connections the Service sends it: forward
//! each one, byte for byte, to the leader's gRPC address (the Lease's
//! `vclink.io/leader-address`, see the `leader` module). TLS is not terminated here — the agent
//! verifies the leader's certificate end to end — so a standby sees no agent credential.
//! A connection that arrives while no leader is known is closed, and the agent retries
//! with its backoff. Connections being forwarded end when the standby stops forwarding
//! (it became the leader or shuts down), so agents reconnect to whoever leads.
//!
//! # No forwarding loops
//!
//! A forwarded connection must reach a leader, never come back around:
//!
//! - **Never to itself.** The elector never publishes this replica's own address as the
//!   leader's (a hub restarted in the same pod finds its previous process's `IP:port` in
//!   the Lease until it expires), and [`Forwarder`] checks again: a target equal to this
//!   replica's advertised address, or to the address the connection arrived on, is "no
//!   leader yet".
//! - **Never back to where it came from.** A connection whose peer IP is the target's IP
//!   came from the replica this standby would forward it to: that replica thinks *this*
//!   one leads (the two read the Lease at different moments). It is closed, not
//!   forwarded (two-replica cycles end at the second hop).
//! - **Bounded anyway.** Longer cycles need three replicas that each read a different,
//!   stale Lease within one retry period; each standby forwards at most
//!   `max_connections` at once and drops connections idle for `idle_timeout`, so even
//!   then file descriptors stay bounded until the next Lease read ends the cycle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

/// How long to wait for the leader to accept a forwarded connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Copy buffer per direction.
const BUF: usize = 16 * 1024;

/// Limits and identity of one standby's forwarder.
#[derive(Clone, Debug)]
pub struct ForwardSettings {
    /// This replica's own advertised address (`<pod ip>:<port>`), never a target.
    pub own: Option<String>,
    /// Most connections forwarded at once.
    pub max_connections: usize,
    /// A connection with no bytes either way for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for ForwardSettings {
    fn default() -> Self {
        Self {
            own: None,
            max_connections: 4096,
            idle_timeout: Duration::from_secs(120),
        }
    }
}

/// Why a connection was not forwarded (pure; tested).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    NoLeader,
    OwnAddress,
    FromTarget,
    BadTarget,
}

/// Where to forward a connection from `peer` that arrived on `local`, or why not.
pub(crate) fn route(
    target: Option<&str>,
    own: Option<&str>,
    local: Option<SocketAddr>,
    peer: SocketAddr,
) -> Result<SocketAddr, Refusal> {
    let target = target.ok_or(Refusal::NoLeader)?;
    if own.is_some_and(|o| crate::leader::same_address(o, target)) {
        return Err(Refusal::OwnAddress);
    }
    let t: SocketAddr = target.trim().parse().map_err(|_| Refusal::BadTarget)?;
    if local.is_some_and(|l| l == t) {
        return Err(Refusal::OwnAddress);
    }
    // On loopback every replica shares one IP (tests); only the port checks above apply.
    if t.ip() == peer.ip() && !peer.ip().is_loopback() {
        return Err(Refusal::FromTarget);
    }
    Ok(t)
}

/// Binds `listen` (so a bad address fails start-up) and returns the forwarding task.
pub async fn serve(
    listen: SocketAddr,
    leader: watch::Receiver<Option<String>>,
    settings: ForwardSettings,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("binding --listen {listen}: {e}"))?;
    tracing::info!(%listen, max_connections = settings.max_connections, "standby: forwarding agent connections to the leader");
    let slots = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    Ok(tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                a = listener.accept() => a,
            };
            let Ok((inbound, peer)) = accepted else {
                // Out of file descriptors or the like: do not spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "standby: forwarding limit reached; closing the agent connection");
                continue;
            };
            let target = leader.borrow().clone();
            let local = inbound.local_addr().ok();
            let route = route(target.as_deref(), settings.own.as_deref(), local, peer);
            let Ok(target) = route else {
                tracing::debug!(%peer, reason = ?route, "standby: not forwarding; closing the agent connection");
                continue;
            };
            let (stop, idle) = (stop.clone(), settings.idle_timeout);
            tokio::spawn(async move {
                forward(inbound, target, idle, &stop).await;
                drop(slot);
            });
        }
    }))
}

async fn forward(inbound: TcpStream, target: SocketAddr, idle: Duration, stop: &CancellationToken) {
    let outbound = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await;
    let outbound = match outbound {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(leader = %target, error = %e, "cannot reach the leader to forward an agent connection");
            return;
        }
        Err(_) => {
            tracing::warn!(leader = %target, "the leader did not accept a forwarded agent connection in time");
            return;
        }
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    tokio::select! {
        _ = stop.cancelled() => {}
        r = pump(inbound, outbound, idle) => {
            if let Err(e) = r {
                tracing::debug!(leader = %target, error = %e, "forwarded connection ended");
            }
        }
    }
}

/// Copies both ways until either side closes or nothing moves for `idle`.
async fn pump(a: TcpStream, b: TcpStream, idle: Duration) -> std::io::Result<()> {
    let (mut ar, mut aw) = a.into_split();
    let (mut br, mut bw) = b.into_split();
    let (mut abuf, mut bbuf) = (vec![0u8; BUF], vec![0u8; BUF]);
    loop {
        let step = tokio::time::timeout(idle, async {
            tokio::select! {
                n = ar.read(&mut abuf) => {
                    let n = n?;
                    if n == 0 { return Ok(false); }
                    bw.write_all(&abuf[..n]).await?;
                    Ok::<_, std::io::Error>(true)
                }
                n = br.read(&mut bbuf) => {
                    let n = n?;
                    if n == 0 { return Ok(false); }
                    aw.write_all(&bbuf[..n]).await?;
                    Ok(true)
                }
            }
        })
        .await;
        match step {
            Ok(Ok(true)) => continue,
            Ok(Ok(false)) => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "idle timeout",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn routes_only_to_another_replica() {
        let own = Some("10.0.0.5:8443");
        let local = Some(sa("10.0.0.5:8443"));
        let agent = sa("192.168.1.9:40000");
        assert_eq!(route(None, own, local, agent), Err(Refusal::NoLeader));
        assert_eq!(
            route(Some("10.0.0.5:8443"), own, local, agent),
            Err(Refusal::OwnAddress)
        );
        assert_eq!(
            route(Some("10.0.0.5:8443"), None, local, agent),
            Err(Refusal::OwnAddress),
            "the address it listens on counts as its own"
        );
        assert_eq!(
            route(Some("10.0.0.6:8443"), own, local, sa("10.0.0.6:51000")),
            Err(Refusal::FromTarget),
            "a connection from the target replica is not sent back"
        );
        assert_eq!(
            route(Some("nonsense"), own, local, agent),
            Err(Refusal::BadTarget)
        );
        assert_eq!(
            route(Some("10.0.0.6:8443"), own, local, agent),
            Ok(sa("10.0.0.6:8443"))
        );
    }

    #[tokio::test]
    async fn an_idle_forwarded_connection_is_closed() {
        let l1 = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let l2 = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (a_client, a) = tokio::join!(TcpStream::connect(l1.local_addr().unwrap()), l1.accept());
        let (b, b_server) = tokio::join!(TcpStream::connect(l2.local_addr().unwrap()), l2.accept());
        let (_keep1, _keep2) = (a_client.unwrap(), b_server.unwrap());
        let t0 = std::time::Instant::now();
        let r = pump(a.unwrap().0, b.unwrap(), Duration::from_millis(200)).await;
        assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
}
