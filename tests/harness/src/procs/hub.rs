//! `vclink-hub` as a real process against a local (Rancher) cluster: a kubeconfig for an
//! identity the test chooses (admin by default), a serving certificate for
//! 127.0.0.1/localhost from a test CA the agents are told to trust, free loopback ports
//! for gRPC and metrics, and readiness judged by the hub's own `/readyz`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use vclink_envtest::{CertificateAuthority, ClientIdentity, Cluster};

use super::{LogBuffer, ManagedProcess, binary};
use crate::util::{free_port, http_get, wait_for};

/// How to start the hub. Unset options use the hub's own defaults.
#[derive(Clone, Default)]
pub struct HubOptions {
    /// Identity of the hub's kubeconfig in the local cluster (default: admin). An RBAC
    /// test passes a restricted one from `Cluster::issue_identity`.
    pub identity: Option<ClientIdentity>,
    /// `--fleet-workspace`.
    pub fleet_workspace: Option<String>,
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
}

/// A running hub.
pub struct HubProcess {
    proc: ManagedProcess,
    grpc: SocketAddr,
    metrics: SocketAddr,
    ca_pem: String,
    ca_file: PathBuf,
    kubeconfig: PathBuf,
    ready_timeout: Duration,
    _dir: tempfile::TempDir,
}

impl HubProcess {
    /// Starts `vclink-hub` against `local` and waits until `/readyz` answers 200.
    pub async fn start(local: &Cluster, opts: HubOptions) -> anyhow::Result<HubProcess> {
        let program = binary("vclink-hub")?;
        let dir = tempfile::Builder::new().prefix("vclink-hub-").tempdir()?;
        let p = |n: &str| dir.path().join(n);

        let identity = opts
            .identity
            .clone()
            .unwrap_or_else(|| local.admin_identity().clone());
        let kubeconfig = p("kubeconfig");
        local.write_kubeconfig(&identity, &kubeconfig)?;

        let ca = CertificateAuthority::new("vclink-test-hub-ca")?;
        let serving = ca.issue_server(&["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        let (cert_file, key_file, ca_file) = (p("tls.crt"), p("tls.key"), p("ca.crt"));
        std::fs::write(&cert_file, &serving.cert_pem)?;
        std::fs::write(&key_file, &serving.key_pem)?;
        std::fs::write(&ca_file, ca.cert_pem())?;

        let grpc: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let metrics: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let args = hub_args(&opts, grpc, metrics, &cert_file, &key_file);
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
    a.extend(opts.extra_args.iter().cloned());
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
                "--workers=2"
            ]
        );
    }
}
