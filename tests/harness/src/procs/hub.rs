//! `vclink-hub` as a real process against a local (Rancher) cluster: a kubeconfig for the
//! hub chart's ServiceAccount under exactly the chart's RBAC (default; see [`super::rbac`]),
//! or for an identity the test chooses, or admin; a serving certificate for
//! 127.0.0.1/localhost from a test CA the agents are told to trust, free loopback ports
//! for gRPC and metrics, and readiness judged by the hub's own `/readyz`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use vclink_envtest::{CertificateAuthority, ClientIdentity, Cluster};

use super::{LogBuffer, ManagedProcess, binary, rbac};
use crate::util::{free_port, http_get, wait_for};

/// How to start the hub. Unset options use the hub's own defaults.
#[derive(Clone, Default)]
pub struct HubOptions {
    /// Identity of the hub's kubeconfig in the local cluster. Default: a token of the hub
    /// chart's ServiceAccount, with the chart's rendered RBAC applied. An RBAC test may
    /// pass a restricted one from `Cluster::issue_identity`.
    pub identity: Option<ClientIdentity>,
    /// Run as the local cluster's admin instead of under the chart's RBAC (only for tests
    /// that need what no install grants; `identity` wins over this).
    pub admin: bool,
    /// `--fleet-workspace`.
    pub fleet_workspace: Option<String>,
    /// More hub chart values (JSON object) the chart's RBAC is rendered with, e.g.
    /// `fleetWorkspaceForProject` / `createFleetWorkspaces` (flags go in `extra_args`).
    pub chart_values: Option<serde_json::Value>,
    /// `--removal-grace`.
    pub removal_grace: Option<Duration>,
    /// `--registration-tls-mode` (`auto`, `strict`, `system-store`, `insecure`).
    pub registration_tls_mode: Option<String>,
    /// `--heartbeat-seconds`.
    pub heartbeat_seconds: Option<u32>,
    /// `--log-format` (default `text`).
    pub log_format: Option<String>,
    /// More flags, appended last.
    pub extra_args: Vec<String>,
    /// More environment variables.
    pub extra_env: Vec<(String, String)>,
    /// How long to wait for `/readyz` (default 30 s).
    pub ready_timeout: Option<Duration>,
    /// Sign the serving certificate with this CA (default: a new CA per hub). Replicas
    /// of one hub behind one address share it, as they share the chart's TLS Secret.
    pub ca: Option<std::sync::Arc<CertificateAuthority>>,
    /// Verify agents with TokenReviews through this Rancher (`--agent-auth=tokenreview`).
    /// None: the hub runs with the insecure `--agent-auth=trust-claimed` (unless
    /// `extra_args` chooses an `--agent-auth` itself). [`crate::E2eEnv`] fills it in.
    pub rancher: Option<RancherAuth>,
}

/// How the hub reaches Rancher's cluster proxy to verify agents.
#[derive(Clone, Debug)]
pub struct RancherAuth {
    /// `--rancher-url`.
    pub url: String,
    /// Rancher's CA (written to the file `--rancher-ca-file` names).
    pub ca_pem: String,
    /// The hub's credential.
    pub credential: RancherCredential,
    /// `--rancher-token-ttl` (with [`RancherCredential::User`]).
    pub token_ttl: Option<Duration>,
    /// `--agent-service-account` (default: the hub's).
    pub agent_service_account: Option<String>,
}

/// The hub's Rancher credential.
#[derive(Clone, Debug)]
pub enum RancherCredential {
    /// `--rancher-user`: the hub issues and rotates its own Tokens for this User.
    User(String),
    /// `--rancher-token-file` holding this `<name>:<secret>`.
    TokenFile(vclink_proto::Secret),
}

/// A running hub.
pub struct HubProcess {
    proc: ManagedProcess,
    grpc: SocketAddr,
    metrics: SocketAddr,
    ca_pem: String,
    ca_file: PathBuf,
    kubeconfig: PathBuf,
    kube_token: Option<vclink_proto::Secret>,
    ready_timeout: Duration,
    _dir: tempfile::TempDir,
}

impl HubProcess {
    /// Starts `vclink-hub` against `local` and waits until `/readyz` answers 200.
    pub async fn start(local: &Cluster, opts: HubOptions) -> anyhow::Result<HubProcess> {
        let program = binary("vclink-hub")?;
        let dir = tempfile::Builder::new().prefix("vclink-hub-").tempdir()?;
        let p = |n: &str| dir.path().join(n);

        let kubeconfig = p("kubeconfig");
        let chart_rbac = opts.identity.is_none() && !opts.admin;
        let kube_token = if chart_rbac {
            let ws = opts.fleet_workspace.as_deref().unwrap_or("fleet-default");
            // The chart's credential mode follows how the hub is started.
            let managed_user = match opts.rancher.as_ref().map(|r| &r.credential) {
                Some(RancherCredential::User(u)) => Some(u.as_str()),
                _ => None,
            };
            Some(
                rbac::hub_identity_with(
                    local,
                    ws,
                    managed_user,
                    opts.chart_values.clone(),
                    &kubeconfig,
                )
                .await
                .context("running the hub under the hub chart's RBAC")?,
            )
        } else {
            let identity = opts
                .identity
                .clone()
                .unwrap_or_else(|| local.admin_identity().clone());
            local.write_kubeconfig(&identity, &kubeconfig)?;
            None
        };

        let ca = match &opts.ca {
            Some(ca) => ca.clone(),
            None => std::sync::Arc::new(CertificateAuthority::new("vclink-test-hub-ca")?),
        };
        let serving = ca.issue_server(&["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        let (cert_file, key_file, ca_file) = (p("tls.crt"), p("tls.key"), p("ca.crt"));
        std::fs::write(&cert_file, &serving.cert_pem)?;
        std::fs::write(&key_file, &serving.key_pem)?;
        std::fs::write(&ca_file, ca.cert_pem())?;

        let grpc: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let metrics: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let mut args = hub_args(&opts, grpc, metrics, &cert_file, &key_file);
        if let Some(r) = &opts.rancher {
            let ca = p("rancher-ca.crt");
            std::fs::write(&ca, &r.ca_pem)?;
            let token_file = p("rancher-token");
            if let RancherCredential::TokenFile(t) = &r.credential {
                std::fs::write(&token_file, t.expose())?;
            }
            let at = args.len() - opts.extra_args.len();
            args.splice(at..at, rancher_args(r, &ca, &token_file));
        }
        if chart_rbac {
            // What the chart's Deployment sets (VCLINK_IMPERSONATE_USER: the chart's
            // Rancher User), before the test's own extra flags so a test can override it.
            let user = match opts.rancher.as_ref().map(|r| &r.credential) {
                Some(RancherCredential::User(u)) => u.clone(),
                _ => rbac::HUB_RANCHER_USER.to_owned(),
            };
            let at = args.len() - opts.extra_args.len();
            // And VCLINK_PROOF_KEY_NAMESPACE: the release namespace, where the chart lets
            // the hub keep its proof key.
            args.splice(
                at..at,
                [
                    format!("--impersonate-user={user}"),
                    format!("--proof-key-namespace={}", rbac::RELEASE_NAMESPACE),
                ],
            );
        }
        let mut env = vec![(
            "KUBECONFIG".to_owned(),
            kubeconfig.to_string_lossy().into_owned(),
        )];
        if let Ok(v) = std::env::var("RUST_LOG") {
            env.push(("RUST_LOG".into(), v));
        }
        env.extend(opts.extra_env.iter().cloned());

        let proc = ManagedProcess::new("hub", program, args, env, dir.path().to_owned());
        let mut hub = HubProcess {
            proc,
            grpc,
            metrics,
            ca_pem: ca.cert_pem().to_owned(),
            ca_file,
            kubeconfig,
            kube_token,
            ready_timeout: opts.ready_timeout.unwrap_or(Duration::from_secs(30)),
            _dir: dir,
        };
        hub.proc.spawn()?;
        hub.wait_ready().await?;
        Ok(hub)
    }

    /// Waits until `/readyz` answers 200; the error carries the hub's last log lines.
    pub async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let addr = self.metrics.to_string();
        let res = wait_for(
            "vclink-hub /readyz to answer 200",
            self.ready_timeout,
            || {
                let addr = addr.clone();
                async move {
                    match http_get(&addr, "/readyz").await {
                        Ok(r) if r.status == 200 => Ok(true),
                        Ok(r) => Err(format!("HTTP {}: {}", r.status, r.body.trim())),
                        Err(e) => Err(e.to_string()),
                    }
                }
            },
        )
        .await;
        if let Err(e) = res {
            let exited = self
                .proc
                .try_exit_status()
                .map(|s| format!("; the hub exited: {s}"))
                .unwrap_or_default();
            anyhow::bail!(
                "{e}{exited}\n--- last hub log lines ---\n{}",
                self.proc.log_buffer().tail(40)
            );
        }
        Ok(())
    }

    /// `https://127.0.0.1:<port>` — the gRPC endpoint agents dial.
    pub fn url(&self) -> String {
        format!("https://{}", self.grpc)
    }

    /// The gRPC listen address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
    }

    /// The metrics/health listen address (plain HTTP).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics
    }

    /// The body of `/metrics`.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let r = http_get(&self.metrics.to_string(), "/metrics")
            .await
            .context("GET /metrics")?;
        anyhow::ensure!(r.status == 200, "GET /metrics answered {}", r.status);
        Ok(r.body)
    }

    /// PEM of the CA that signed the hub's serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// File holding [`ca_pem`](Self::ca_pem) (for `--hub-ca-file`).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The hub's kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The ServiceAccount token the hub uses in the local cluster, when it runs under the
    /// chart's RBAC (the default); a secrets-hygiene test searches for it.
    pub fn kube_token(&self) -> Option<&vclink_proto::Secret> {
        self.kube_token.as_ref()
    }

    /// True when the hub runs as the hub chart's ServiceAccount under its rendered RBAC.
    pub fn uses_chart_rbac(&self) -> bool {
        self.kube_token.is_some()
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

    /// SIGTERM, wait, start again on the same ports, wait for `/readyz`.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.proc.stop().await?;
        self.proc.spawn()?;
        self.wait_ready().await
    }

    /// SIGKILL (a crash); [`start_again`](Self::start_again) brings it back.
    pub async fn kill(&mut self) {
        self.proc.kill().await;
    }

    /// Starts a stopped or killed hub again and waits for `/readyz`.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        self.proc.spawn()?;
        self.wait_ready().await
    }

    /// The exit status if the hub has exited on its own.
    pub fn try_exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.proc.try_exit_status()
    }

    /// SIGTERM and wait; returns the exit status.
    pub async fn stop(&mut self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        self.proc.stop().await
    }
}

/// The hub's command line (flags as defined in `hub/src/config.rs`).
pub fn hub_args(
    opts: &HubOptions,
    grpc: SocketAddr,
    metrics: SocketAddr,
    cert: &Path,
    key: &Path,
) -> Vec<String> {
    let mut a = vec![
        format!("--listen={grpc}"),
        format!("--tls-cert-file={}", cert.display()),
        format!("--tls-key-file={}", key.display()),
        format!("--metrics-listen={metrics}"),
        format!(
            "--log-format={}",
            opts.log_format.as_deref().unwrap_or("text")
        ),
    ];
    if let Some(w) = &opts.fleet_workspace {
        a.push(format!("--fleet-workspace={w}"));
    }
    if let Some(g) = opts.removal_grace {
        a.push(format!("--removal-grace={}ms", g.as_millis()));
    }
    if let Some(m) = &opts.registration_tls_mode {
        a.push(format!("--registration-tls-mode={m}"));
    }
    if let Some(h) = opts.heartbeat_seconds {
        a.push(format!("--heartbeat-seconds={h}"));
    }
    let chooses_auth = opts
        .extra_args
        .iter()
        .any(|f| f.starts_with("--agent-auth"));
    if opts.rancher.is_none() && !chooses_auth {
        a.push("--agent-auth=trust-claimed".into());
    }
    a.extend(opts.extra_args.iter().cloned());
    a
}

/// The hub's flags for TokenReview authentication through Rancher (credentials go in
/// files, never on the command line).
pub fn rancher_args(r: &RancherAuth, ca_file: &Path, token_file: &Path) -> Vec<String> {
    let mut a = vec![
        "--agent-auth=tokenreview".to_owned(),
        format!("--rancher-url={}", r.url),
        format!("--rancher-ca-file={}", ca_file.display()),
    ];
    match &r.credential {
        RancherCredential::User(u) => a.push(format!("--rancher-user={u}")),
        RancherCredential::TokenFile(_) => {
            a.push(format!("--rancher-token-file={}", token_file.display()))
        }
    }
    if let Some(t) = r.token_ttl {
        a.push(format!("--rancher-token-ttl={}ms", t.as_millis()));
    }
    if let Some(sa) = &r.agent_service_account {
        a.push(format!("--agent-service-account={sa}"));
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_args_use_the_hub_flags() {
        let opts = HubOptions {
            removal_grace: Some(Duration::from_secs(2)),
            fleet_workspace: Some("fleet-vc".into()),
            extra_args: vec!["--workers=2".into()],
            ..Default::default()
        };
        let a = hub_args(
            &opts,
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
            Path::new("/c"),
            Path::new("/k"),
        );
        assert_eq!(
            a,
            [
                "--listen=127.0.0.1:1",
                "--tls-cert-file=/c",
                "--tls-key-file=/k",
                "--metrics-listen=127.0.0.1:2",
                "--log-format=text",
                "--fleet-workspace=fleet-vc",
                "--removal-grace=2000ms",
                "--agent-auth=trust-claimed",
                "--workers=2"
            ]
        );
    }
}
