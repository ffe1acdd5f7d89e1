//! `vclink-agent run` as a real process in a downstream (host) cluster: the
//! ServiceAccount whose token it presents to the hub (minted with TokenRequest for the
//! `vclink-hub` audience, as the projected volume in a real install would be), a
//! kubeconfig for that same ServiceAccount under exactly the agent chart's RBAC (default;
//! see [`super::rbac`]) or for an identity the test chooses, and the agent's flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use vclink_envtest::{ClientIdentity, Cluster};

use super::hub::HubProcess;
use super::{LogBuffer, ManagedProcess, binary};
use crate::util::free_port;

/// Namespace the agent's ServiceAccount lives in.
pub const AGENT_NAMESPACE: &str = "vclink-system";
/// The agent's ServiceAccount.
pub const AGENT_SERVICE_ACCOUNT: &str = "vclink-agent";
/// Audience of the agent's token.
pub const TOKEN_AUDIENCE: &str = "vclink-hub";
/// Default Job image: contains "vclink" so the [`crate::JobRunner`] runs its Jobs.
pub const DEFAULT_JOB_IMAGE: &str = "ghcr.io/vclink/vclink:test";

/// How to start an agent.
#[derive(Clone, Default)]
pub struct AgentOptions {
    /// Identity of the agent's kubeconfig in the host cluster. Default: a token of the
    /// agent chart's ServiceAccount, with the chart's rendered RBAC applied.
    pub identity: Option<ClientIdentity>,
    /// Run as the host cluster's admin instead of under the chart's RBAC (`identity` wins).
    pub admin: bool,
    /// `--job-image` (default [`DEFAULT_JOB_IMAGE`]).
    pub job_image: Option<String>,
    /// Token audience (default [`TOKEN_AUDIENCE`]); a test of a wrong audience sets it.
    pub token_audience: Option<String>,
    /// `--namespace-selector`.
    pub namespace_selector: Option<String>,
    /// Dial this address instead of the hub's own (e.g. a Service in front of several
    /// hub replicas); the hub's CA still applies.
    pub hub_url: Option<String>,
    /// More flags, appended last.
    pub extra_args: Vec<String>,
    /// More environment variables.
    pub extra_env: Vec<(String, String)>,
}

/// A running agent.
pub struct AgentProcess {
    proc: ManagedProcess,
    cluster_id: String,
    token_file: PathBuf,
    hub_token: vclink_proto::Secret,
    kube_token: Option<vclink_proto::Secret>,
    metrics: SocketAddr,
    _dir: tempfile::TempDir,
}

impl AgentProcess {
    /// Prepares the agent's ServiceAccount and token in `host` and starts
    /// `vclink-agent run` for `cluster_id`, pointed at `hub`. Does not wait for the
    /// connection (tests wait for what the hub does with it).
    pub async fn start(
        host: &Cluster,
        hub: &HubProcess,
        cluster_id: &str,
        opts: AgentOptions,
    ) -> anyhow::Result<AgentProcess> {
        let program = binary("vclink-agent")?;
        let dir = tempfile::Builder::new().prefix("vclink-agent-").tempdir()?;
        let client = host.client().await?;
        ensure_service_account(&client).await?;
        let audience = opts
            .token_audience
            .clone()
            .unwrap_or_else(|| TOKEN_AUDIENCE.to_owned());
        let token = mint_token(&client, &audience).await?;
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, token.expose())?;

        let kubeconfig = dir.path().join("kubeconfig");
        let kube_token = if opts.identity.is_none() && !opts.admin {
            Some(
                super::rbac::agent_identity(host, &kubeconfig)
                    .await
                    .context("running the agent under the agent chart's RBAC")?,
            )
        } else {
            let identity = opts
                .identity
                .clone()
                .unwrap_or_else(|| host.admin_identity().clone());
            host.write_kubeconfig(&identity, &kubeconfig)?;
            None
        };

        let metrics: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let args = agent_args(
            &opts,
            &opts.hub_url.clone().unwrap_or_else(|| hub.url()),
            hub.ca_file(),
            cluster_id,
            &token_file,
            metrics,
        );
        let mut env = vec![(
            "KUBECONFIG".to_owned(),
            kubeconfig.to_string_lossy().into_owned(),
        )];
        if let Ok(v) = std::env::var("RUST_LOG") {
            env.push(("RUST_LOG".into(), v));
        }
        env.extend(opts.extra_env.iter().cloned());
        let mut proc = ManagedProcess::new(
            &format!("agent {cluster_id}"),
            program,
            args,
            env,
            dir.path().to_owned(),
        );
        proc.spawn()?;
        Ok(AgentProcess {
            proc,
            cluster_id: cluster_id.to_owned(),
            token_file,
            hub_token: token,
            kube_token,
            metrics,
            _dir: dir,
        })
    }

    /// The cluster id the agent claims.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The token file the agent reads (a test may overwrite it to rotate or break it).
    pub fn token_file(&self) -> &Path {
        &self.token_file
    }

    /// The token the agent presents to the hub (as first written to the token file).
    pub fn hub_token(&self) -> &vclink_proto::Secret {
        &self.hub_token
    }

    /// The ServiceAccount token the agent uses in its own cluster, when it runs under the
    /// chart's RBAC (the default).
    pub fn kube_token(&self) -> Option<&vclink_proto::Secret> {
        self.kube_token.as_ref()
    }

    /// The agent's `--metrics-addr`.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics
    }

    /// Captured output lines.
    pub fn logs(&self) -> Vec<String> {
        self.proc.logs()
    }

    /// The live log buffer.
    pub fn log_buffer(&self) -> &LogBuffer {
        self.proc.log_buffer()
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// The exit status if the agent has exited on its own.
    pub fn try_exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.proc.try_exit_status()
    }

    /// SIGTERM, wait, start again.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.proc.stop().await?;
        self.proc.spawn()
    }

    /// SIGKILL (a crash).
    pub async fn kill(&mut self) {
        self.proc.kill().await;
    }

    /// Starts a stopped or killed agent again.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        self.proc.spawn()
    }

    /// SIGTERM and wait; returns the exit status.
    pub async fn stop(&mut self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        self.proc.stop().await
    }
}

/// Creates (idempotently) Namespace `vclink-system` and ServiceAccount `vclink-agent`.
pub async fn ensure_service_account(client: &kube::Client) -> anyhow::Result<()> {
    let pp = PatchParams::apply("vclink-harness").force();
    let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": AGENT_NAMESPACE}});
    Api::<Namespace>::all(client.clone())
        .patch(AGENT_NAMESPACE, &pp, &Patch::Apply(&ns))
        .await
        .context("applying vclink-system")?;
    let sa = serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": AGENT_SERVICE_ACCOUNT, "namespace": AGENT_NAMESPACE}});
    Api::<ServiceAccount>::namespaced(client.clone(), AGENT_NAMESPACE)
        .patch(AGENT_SERVICE_ACCOUNT, &pp, &Patch::Apply(&sa))
        .await
        .context("applying the vclink-agent ServiceAccount")?;
    Ok(())
}

/// A fresh token of the agent's ServiceAccount for `audience` (valid 6 h).
pub async fn mint_token(
    client: &kube::Client,
    audience: &str,
) -> anyhow::Result<vclink_proto::Secret> {
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![audience.to_owned()],
            expiration_seconds: Some(Duration::from_secs(6 * 3600).as_secs() as i64),
            bound_object_ref: None,
        },
        ..Default::default()
    };
    let tr = Api::<ServiceAccount>::namespaced(client.clone(), AGENT_NAMESPACE)
        .create_token_request(AGENT_SERVICE_ACCOUNT, &PostParams::default(), &req)
        .await
        .context("TokenRequest for the vclink-agent ServiceAccount")?;
    let token = tr
        .status
        .map(|s| s.token)
        .filter(|t| !t.is_empty())
        .context("TokenRequest returned no token")?;
    Ok(vclink_proto::Secret::new(token))
}

/// The agent's command line (flags as defined in `agent/src/config.rs`).
pub fn agent_args(
    opts: &AgentOptions,
    hub_url: &str,
    hub_ca: &Path,
    cluster_id: &str,
    token_file: &Path,
    metrics: SocketAddr,
) -> Vec<String> {
    let mut a = vec![
        "run".to_owned(),
        format!("--hub-url={hub_url}"),
        format!("--hub-ca-file={}", hub_ca.display()),
        format!("--cluster-id={cluster_id}"),
        format!("--token-file={}", token_file.display()),
        format!(
            "--job-image={}",
            opts.job_image.as_deref().unwrap_or(DEFAULT_JOB_IMAGE)
        ),
        format!("--metrics-addr={metrics}"),
    ];
    if let Some(s) = &opts.namespace_selector {
        a.push(format!("--namespace-selector={s}"));
    }
    a.extend(opts.extra_args.iter().cloned());
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_args_use_the_agent_flags() {
        let a = agent_args(
            &AgentOptions {
                namespace_selector: Some("vclink.io/import=true".into()),
                ..Default::default()
            },
            "https://127.0.0.1:9",
            Path::new("/ca"),
            "c-m-abcd1234",
            Path::new("/t"),
            "127.0.0.1:8".parse().unwrap(),
        );
        assert_eq!(a[0], "run");
        assert!(a.contains(&"--cluster-id=c-m-abcd1234".to_owned()));
        assert!(a.contains(&format!("--job-image={DEFAULT_JOB_IMAGE}")));
        assert_eq!(
            a.last().map(String::as_str),
            Some("--namespace-selector=vclink.io/import=true")
        );
    }
}
