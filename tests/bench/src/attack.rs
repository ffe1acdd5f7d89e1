//! The hostile clients of `--hostile`, each bounded in count and in time (they stop at a
//! deadline by themselves):
//! - [`slow_hellos`]: unauthenticated TLS connections speaking raw HTTP/2 (the `h2`
//!   crate, so the gRPC frame can be dribbled, which a gRPC client cannot do): each opens
//!   an `Attach` stream, announces a 1 MiB `Hello` in the 5-byte gRPC header and sends
//!   it 1 KiB at a time; when the hub ends the stream it opens the next one on the same
//!   connection, and when the hub closes the connection it dials again.
//! - [`junk_hellos`]: well-formed `Hello`s with JWT-shaped junk tokens claiming an opted-in
//!   host, at a fixed rate, each on its own connection (what makes the hub spend
//!   TokenReviews).
//! - [`upsert_flood`]: one authenticated agent sending `Upsert`s at a multiple of the
//!   hub's per-agent message rate, reconnecting whenever the hub closes it.
//!
//! Hostile clients dial from their own loopback source addresses ([`source`]:
//! 127.0.0.2, 127.0.0.3, …; Linux routes all of 127/8 to `lo`), not from the genuine
//! agents' 127.0.0.1, so the hub's per-client-IP fairness sees several hostile sources
//! and one genuine one, as on a real network.
//!
//! Outcomes are counted by gRPC status code (or transport failure) in an [`Outcomes`].

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use vclink_proto::Secret;
use vclink_proto::limits::MAX_MESSAGE_BYTES;
use vclink_proto::v1::link_client::LinkClient;
use vclink_proto::v1::{AgentMessage, Flavour, Hello, Upsert, VCluster, agent_message};

use crate::loadgen::HubTarget;

/// Counts of what happened, by a short label (`stream:ResourceExhausted`, `connect_failed`…).
#[derive(Default)]
pub struct Outcomes(Mutex<BTreeMap<String, u64>>);

impl Outcomes {
    /// Adds one to `label`.
    pub fn add(&self, label: impl Into<String>) {
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(label.into())
            .or_default() += 1;
    }

    /// A copy of the counts.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Hostile source address number `i` of `sources`: 127.0.0.2 ..= 127.0.0.(sources + 1).
pub fn source(i: usize, sources: usize) -> IpAddr {
    let n = 2 + (i % sources.clamp(1, 200)) as u8;
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// A channel to the hub from local address `from` (None: the system's choice).
pub async fn channel_from(
    hub: &HubTarget,
    from: Option<IpAddr>,
) -> anyhow::Result<tonic::transport::Channel> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&hub.ca_pem))
        .domain_name("127.0.0.1");
    Ok(Endpoint::from_shared(hub.url.clone())?
        .connect_timeout(Duration::from_secs(30))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .local_address(from)
        .tls_config(tls)?
        .connect()
        .await?)
}

/// The size the slow `Hello`s announce.
pub const SLOW_HELLO_BYTES: u32 = 1 << 20;
/// How much of it is sent at a time, and how often.
const DRIBBLE: usize = 1024;
const DRIBBLE_EVERY: Duration = Duration::from_millis(500);

fn tls_connector(ca_pem: &str) -> anyhow::Result<tokio_rustls::TlsConnector> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}

/// `conns` slow-Hello connections until `until`, connection `i` from
/// [`source`]`(i, sources)`. Returns when all have stopped.
pub async fn slow_hellos(
    hub: HubTarget,
    addr: SocketAddr,
    conns: usize,
    sources: usize,
    until: Instant,
    out: Arc<Outcomes>,
) {
    let tls = match tls_connector(&hub.ca_pem) {
        Ok(t) => t,
        Err(e) => {
            out.add(format!("setup_failed: {e}"));
            return;
        }
    };
    let tasks: Vec<_> = (0..conns)
        .map(|i| {
            let (tls, out) = (tls.clone(), out.clone());
            let from = source(i, sources);
            tokio::spawn(async move {
                while Instant::now() < until {
                    match tokio::time::timeout_at(
                        until,
                        slow_connection(&tls, from, addr, until, &out),
                    )
                    .await
                    {
                        Ok(Ok(())) | Err(_) => {}
                        Ok(Err(e)) => {
                            out.add(format!("conn:{e}"));
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

/// Why a slow connection ended (short labels for the outcome table).
#[derive(Debug, thiserror::Error)]
enum SlowError {
    #[error("tcp_failed")]
    Tcp,
    #[error("tls_failed")]
    Tls,
    #[error("h2_handshake_failed")]
    H2,
    #[error("closed_by_hub")]
    Closed,
}

async fn slow_connection(
    tls: &tokio_rustls::TlsConnector,
    from: IpAddr,
    addr: SocketAddr,
    until: Instant,
    out: &Outcomes,
) -> Result<(), SlowError> {
    let sock = tokio::net::TcpSocket::new_v4().map_err(|_| SlowError::Tcp)?;
    sock.bind(SocketAddr::new(from, 0))
        .map_err(|_| SlowError::Tcp)?;
    let tcp = sock.connect(addr).await.map_err(|_| SlowError::Tcp)?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let stream = tls.connect(name, tcp).await.map_err(|_| SlowError::Tls)?;
    let (client, conn) = h2::client::Builder::new()
        .handshake::<_, Bytes>(stream)
        .await
        .map_err(|_| SlowError::H2)?;
    let driver = tokio::spawn(conn);
    out.add("connections_established");
    let uri = format!("https://{addr}/vclink.v1.Link/Attach");
    let mut client = client;
    let r = loop {
        if Instant::now() >= until {
            break Ok(());
        }
        let mut ready = match client.clone().ready().await {
            Ok(c) => c,
            Err(_) => break Err(SlowError::Closed),
        };
        let Ok(req) = http::Request::builder()
            .method("POST")
            .uri(&uri)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
        else {
            break Ok(());
        };
        let (resp, mut send) = match ready.send_request(req, false) {
            Ok(x) => x,
            Err(_) => break Err(SlowError::Closed),
        };
        out.add("streams_opened");
        let mut header = vec![0u8];
        header.extend_from_slice(&SLOW_HELLO_BYTES.to_be_bytes());
        let _ = send.send_data(Bytes::from(header), false);
        let dribble = async {
            let chunk = Bytes::from(vec![0x0a_u8; DRIBBLE]);
            let mut sent = 0usize;
            while sent < SLOW_HELLO_BYTES as usize {
                tokio::time::sleep(DRIBBLE_EVERY).await;
                if send.send_data(chunk.clone(), false).is_err() {
                    return;
                }
                sent += DRIBBLE;
            }
            std::future::pending::<()>().await;
        };
        let label = tokio::select! {
            _ = dribble => "stream:send_failed".to_string(),
            _ = tokio::time::sleep_until(until) => break Ok(()),
            r = resp => grpc_outcome(r).await,
        };
        out.add(label);
        client = ready;
    };
    driver.abort();
    r
}

/// The gRPC status of a response (from its headers or its trailers), as a label.
async fn grpc_outcome(r: Result<http::Response<h2::RecvStream>, h2::Error>) -> String {
    let resp = match r {
        Ok(r) => r,
        Err(e) => {
            return match e.reason() {
                Some(reason) => format!("stream:h2_reset({reason:?})"),
                None if e.is_go_away() => "stream:goaway".into(),
                None => "stream:connection_lost".into(),
            };
        }
    };
    let code = |h: &http::HeaderMap| {
        h.get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
    };
    if let Some(c) = code(resp.headers()) {
        return format!("stream:{:?}", tonic::Code::from(c));
    }
    let mut body = resp.into_body();
    while let Some(d) = body.data().await {
        if d.is_err() {
            return "stream:reset_in_body".into();
        }
    }
    match body.trailers().await {
        Ok(Some(t)) => code(&t).map_or("stream:no_status".into(), |c| {
            format!("stream:{:?}", tonic::Code::from(c))
        }),
        _ => "stream:no_status".into(),
    }
}

/// A JWT-shaped token that no API server issued (valid structure, future `exp`), number `i`.
pub fn junk_token(i: usize) -> Secret {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() + 3600)
        .unwrap_or(0);
    let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","kid":"junk"}"#);
    let p = URL_SAFE_NO_PAD.encode(format!(
        r#"{{"aud":["vclink-hub"],"exp":{exp},"sub":"system:serviceaccount:vclink-system:vclink-agent","junk":{i}}}"#
    ));
    let s = URL_SAFE_NO_PAD.encode(format!("not-a-signature-{i:08}").repeat(8));
    Secret::new(format!("{h}.{p}.{s}"))
}

/// An empty, complete snapshot (generation 1).
pub fn empty_snapshot() -> AgentMessage {
    AgentMessage {
        msg: Some(agent_message::Msg::Snapshot(vclink_proto::v1::Snapshot {
            generation: 1,
            vclusters: Vec::new(),
            last: true,
        })),
    }
}

/// A `Hello` claiming `cluster_id`.
pub fn hello(cluster_id: &str, instance: &str) -> AgentMessage {
    AgentMessage {
        msg: Some(agent_message::Msg::Hello(Hello {
            agent_version: "0.0.0-bench".into(),
            protocol_version: vclink_proto::PROTOCOL_VERSION,
            cluster_id: cluster_id.into(),
            capabilities: vec!["chunked-snapshot".into()],
            instance: instance.into(),
        })),
    }
}

/// Opens an `Attach` stream from local address `from` with `bearer` whose first message
/// is `first`; returns the stream of hub messages, the sender for more and the status
/// when refused.
pub async fn attach_from(
    hub: &HubTarget,
    bearer: &Secret,
    first: AgentMessage,
    from: Option<IpAddr>,
) -> Result<
    (
        tonic::Streaming<vclink_proto::v1::HubMessage>,
        tokio::sync::mpsc::Sender<AgentMessage>,
    ),
    String,
> {
    let ch = channel_from(hub, from)
        .await
        .map_err(|_| "connect_failed".to_string())?;
    let (tx, rx) = tokio::sync::mpsc::channel::<AgentMessage>(256);
    let _ = tx.send(first).await;
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    let Ok(v) = MetadataValue::try_from(format!("Bearer {}", bearer.expose())) else {
        return Err("bad_token".into());
    };
    req.metadata_mut().insert("authorization", v);
    let mut client = LinkClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let mut inbound = client
        .attach(req)
        .await
        .map_err(|s| format!("{:?}", s.code()))?
        .into_inner();
    match inbound.message().await {
        Ok(Some(m)) if matches!(m.msg, Some(vclink_proto::v1::hub_message::Msg::Welcome(_))) => {
            Ok((inbound, tx))
        }
        Ok(_) => Err("no_welcome".into()),
        Err(s) => Err(format!("{:?}", s.code())),
    }
}

/// `per_second` junk `Hello`s per second until `until`, token `i % tokens` claiming host
/// `hosts[i % tokens % hosts.len()]`, each on a new connection from
/// [`source`]`(i, sources)`.
pub async fn junk_hellos(
    hub: HubTarget,
    hosts: Vec<String>,
    tokens: usize,
    per_second: u32,
    sources: usize,
    until: Instant,
    out: Arc<Outcomes>,
) {
    let toks: Vec<Secret> = (0..tokens.max(1)).map(junk_token).collect();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second.max(1));
    let mut tasks = tokio::task::JoinSet::new();
    let mut i = 0usize;
    while Instant::now() < until {
        tick.tick().await;
        let t = toks[i % toks.len()].clone();
        let host = hosts[(i % toks.len()) % hosts.len().max(1)].clone();
        let (hub, out, from) = (hub.clone(), out.clone(), source(i, sources));
        tasks.spawn(async move {
            out.add("hellos_sent");
            let r = tokio::time::timeout(
                Duration::from_secs(15),
                attach_from(&hub, &t, hello(&host, "junk"), Some(from)),
            )
            .await;
            out.add(match r {
                Ok(Ok(_)) => "ACCEPTED (should never happen)".to_string(),
                Ok(Err(code)) => format!("refused:{code}"),
                Err(_) => "no_answer_in_15s".to_string(),
            });
        });
        i += 1;
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// One authenticated agent (`cluster_id`, `bearer`) sending `per_second` `Upsert`s (of
/// `uids` distinct vClusters, round robin) from local address `from` until `until`,
/// reconnecting when closed.
#[allow(clippy::too_many_arguments)]
pub async fn upsert_flood(
    hub: HubTarget,
    cluster_id: String,
    bearer: Secret,
    per_second: u32,
    uids: usize,
    from: Option<IpAddr>,
    until: Instant,
    out: Arc<Outcomes>,
) {
    let vcs: Vec<VCluster> = (0..uids.max(1))
        .map(|j| VCluster {
            uid: format!("f100d000-0000-4000-8000-{j:012x}"),
            namespace: "flood".into(),
            name: format!("vc-{j}"),
            flavour: Flavour::V020 as i32,
            ..Default::default()
        })
        .collect();
    // Sent in batches every 10 ms: a 1 ms timer is not kept on a loaded machine.
    let batch = (per_second / 100).max(1);
    let mut n = 0usize;
    while Instant::now() < until {
        let (mut inbound, tx) =
            match attach_from(&hub, &bearer, hello(&cluster_id, "flood"), from).await {
                Ok(x) => x,
                Err(code) => {
                    out.add(format!("attach_refused:{code}"));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
        out.add("attached");
        let _ = tx.send(empty_snapshot()).await;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let end = loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break "deadline".to_string(),
                m = inbound.message() => match m {
                    Ok(Some(_)) => {}
                    Ok(None) => break "closed:Ok".into(),
                    Err(s) => break format!("closed:{:?}", s.code()),
                },
                _ = tick.tick() => {
                    for _ in 0..batch {
                        let m = AgentMessage { msg: Some(agent_message::Msg::Upsert(Upsert {
                            vcluster: Some(vcs[n % vcs.len()].clone()),
                        }))};
                        n += 1;
                        if tx.try_send(m).is_err() {
                            out.add("send_blocked");
                        } else {
                            out.add("upserts_sent");
                        }
                    }
                }
            }
        };
        out.add(end);
    }
}
