//! Tools of the identity tests: a hand-written gRPC client that speaks to the hub the
//! way an attacker could (any token, any cluster id, any message), ServiceAccount
//! tokens minted in a chosen cluster (or signed by hand with that cluster's key, to make
//! one that has already expired), and a reader of the hub's /metrics counters.

#![allow(dead_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use vclink_envtest::Cluster;
use vclink_harness::HubProcess;
use vclink_proto::v1::agent_message::Msg;
use vclink_proto::v1::hub_message::Msg as HubMsg;
use vclink_proto::v1::link_client::LinkClient;
use vclink_proto::v1::{AgentMessage, Hello, HubMessage, VCluster, Welcome};

/// Namespace of the agent's ServiceAccount.
pub const NS: &str = "vclink-system";
/// How long a refusal may take to arrive.
pub const ANSWER: Duration = Duration::from_secs(30);

/// One adversarial stream.
pub struct Conn {
    pub tx: mpsc::Sender<AgentMessage>,
    inbound: Result<tonic::Streaming<HubMessage>, tonic::Status>,
}

/// Hello claiming `cluster_id`.
pub fn hello(cluster_id: &str) -> Msg {
    Msg::Hello(Hello {
        agent_version: "0.1.0".into(),
        protocol_version: vclink_proto::PROTOCOL_VERSION,
        cluster_id: cluster_id.into(),
        capabilities: vec![],
        instance: "intruder".into(),
    })
}

/// A valid vCluster description.
pub fn vc(n: u32) -> VCluster {
    VCluster {
        uid: format!("00000000-0000-4000-8000-{n:012x}"),
        namespace: "spoof".into(),
        name: format!("vc{n}"),
        ..Default::default()
    }
}

/// Opens a stream to `hub` with `token` as bearer, sending `first` right away.
pub async fn connect(
    hub: &HubProcess,
    token: Option<&str>,
    first: Vec<Msg>,
) -> anyhow::Result<Conn> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(hub.ca_pem()))
        .domain_name("127.0.0.1");
    let ch = Endpoint::from_shared(hub.url())?
        .tls_config(tls)?
        .connect()
        .await
        .context("connecting to the hub")?;
    let (tx, rx) = mpsc::channel(64);
    for m in first {
        tx.send(AgentMessage { msg: Some(m) }).await?;
    }
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse()?);
    }
    let inbound = LinkClient::new(ch)
        .max_encoding_message_size(64 << 20)
        .attach(req)
        .await
        .map(|r| r.into_inner());
    Ok(Conn { tx, inbound })
}

impl Conn {
    /// Sends one message (ignores a closed stream: the answer tells).
    pub async fn send(&self, m: Msg) {
        let _ = self.tx.send(AgentMessage { msg: Some(m) }).await;
    }

    /// The next hub message, or the status the stream ended with.
    pub async fn next(&mut self) -> anyhow::Result<Result<HubMessage, tonic::Status>> {
        let s = match &mut self.inbound {
            Ok(s) => s,
            Err(st) => return Ok(Err(st.clone())),
        };
        match tokio::time::timeout(ANSWER, s.message()).await {
            Err(_) => anyhow::bail!("the hub did not answer within {ANSWER:?}"),
            Ok(Ok(Some(m))) => Ok(Ok(m)),
            Ok(Ok(None)) => anyhow::bail!("the hub closed the stream without a status"),
            Ok(Err(st)) => Ok(Err(st)),
        }
    }

    /// Expects Welcome.
    pub async fn welcome(&mut self) -> anyhow::Result<Welcome> {
        match self.next().await? {
            Ok(HubMessage {
                msg: Some(HubMsg::Welcome(w)),
            }) => Ok(w),
            other => anyhow::bail!("expected Welcome, got {other:?}"),
        }
    }

    /// Reads until a Status in state ERROR for one of `uids` arrives and returns its
    /// message; fails if the stream ends first.
    pub async fn error_status_for(&mut self, uids: &[String]) -> anyhow::Result<String> {
        loop {
            match self.next().await? {
                Ok(HubMessage {
                    msg: Some(HubMsg::Status(st)),
                }) if uids.contains(&st.uid)
                    && st.state == vclink_proto::v1::State::Error as i32 =>
                {
                    return Ok(st.message);
                }
                Ok(_) => {}
                Err(st) => anyhow::bail!("the hub closed the stream instead: {st:?}"),
            }
        }
    }

    /// Reads until the stream ends with a status (skipping Welcome/Status messages).
    pub async fn refusal(&mut self) -> anyhow::Result<tonic::Status> {
        loop {
            if let Err(st) = self.next().await? {
                return Ok(st);
            }
        }
    }
}

/// Creates ServiceAccount `ns/name` in `cluster` (idempotent).
pub async fn ensure_sa(cluster: &Cluster, name: &str) -> anyhow::Result<ServiceAccount> {
    let client = cluster.client().await?;
    let pp = PatchParams::apply("identity-test").force();
    let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}});
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .patch(NS, &pp, &Patch::Apply(&ns))
        .await?;
    let sa = serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": NS}});
    Ok(Api::<ServiceAccount>::namespaced(client, NS)
        .patch(name, &pp, &Patch::Apply(&sa))
        .await?)
}

/// A TokenRequest token of `ns/name` in `cluster` for `audience`.
pub async fn token(cluster: &Cluster, name: &str, audience: &str) -> anyhow::Result<String> {
    ensure_sa(cluster, name).await?;
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![audience.to_owned()],
            expiration_seconds: Some(3600),
            bound_object_ref: None,
        },
        ..Default::default()
    };
    let tr = Api::<ServiceAccount>::namespaced(cluster.client().await?, NS)
        .create_token_request(name, &PostParams::default(), &req)
        .await?;
    tr.status
        .map(|s| s.token)
        .filter(|t| !t.is_empty())
        .context("no token")
}

/// A token of `ns/name` signed with `cluster`'s own ServiceAccount key, in every way
/// what the API server mints, except that it expired `ago`.
pub async fn expired_token(cluster: &Cluster, name: &str, ago: Duration) -> anyhow::Result<String> {
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    let sa = ensure_sa(cluster, name).await?;
    let uid = sa.metadata.uid.context("ServiceAccount without uid")?;
    let pem = std::fs::read_to_string(cluster.data_dir().join("sa.key"))?;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = STANDARD.decode(b64)?;
    let rng = SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
        .map_err(|e| anyhow::anyhow!("sa.key: {e}"))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let exp = now - ago.as_secs();
    let claims = serde_json::json!({
        "aud": [vclink_proto::TOKEN_AUDIENCE], "exp": exp, "iat": exp - 3600, "nbf": exp - 3600,
        "iss": vclink_envtest::SERVICE_ACCOUNT_ISSUER,
        "kubernetes.io": {"namespace": NS, "serviceaccount": {"name": name, "uid": uid}},
        "sub": format!("system:serviceaccount:{NS}:{name}")});
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = key
        .sign(&rng, signing_input.as_bytes())
        .map_err(|e| anyhow::anyhow!("signing: {e}"))?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(sig.as_ref())
    ))
}

/// The value of counter/gauge line `series` (exact name with labels), 0 when absent.
pub async fn metric(hub: &HubProcess, series: &str) -> anyhow::Result<f64> {
    let body = hub.metrics().await?;
    Ok(body
        .lines()
        .find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == series).then(|| v.parse().ok()).flatten()
        })
        .unwrap_or(0.0))
}

/// Rejections counted under `reason`.
pub async fn rejections(hub: &HubProcess, reason: &str) -> anyhow::Result<f64> {
    metric(
        hub,
        &format!("vclink_hub_rejections_total{{reason=\"{reason}\"}}"),
    )
    .await
}
