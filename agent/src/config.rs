//! Command line of `vclink-agent`: the long-running `run` subcommand and the `register`
//! subcommand the registration Job executes. Every flag has a `VCLINK_*` environment
//! fallback so a Helm chart or Fleet bundle can configure the agent without templating
//! arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Default image of the registration Job: the one vclink image (hub, agent and Job; the
/// charts' `image.repository`), so an air-gapped install mirrors one image.
pub const DEFAULT_JOB_IMAGE: &str = concat!("ghcr.io/vclink/vclink:", env!("CARGO_PKG_VERSION"));

/// Top-level command line.
#[derive(Debug, Parser)]
#[command(
    name = "vclink-agent",
    version,
    about = "vclink agent: makes the vClusters of this Kubernetes cluster appear in Rancher",
    long_about = "vclink agent: runs in a Rancher downstream cluster, watches vCluster Services \
                  (label app=vcluster), streams them to the vclink hub over gRPC/TLS and runs the \
                  registration Job that imports each vCluster into Rancher.\n\n\
                  Kubernetes access uses the in-cluster ServiceAccount or KUBECONFIG."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: watch vClusters, stay connected to the hub, run registration Jobs.
    Run(RunArgs),
    /// Import one vCluster into Rancher (what the registration Job runs; not for manual use).
    Register(RegisterArgs),
    /// Print every vCluster in this cluster with the state vclink recorded on its Service
    /// (uses KUBECONFIG or the in-cluster ServiceAccount; needs only list on Services).
    Status(StatusArgs),
}

/// Flags of `vclink-agent status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Only this namespace (default: all namespaces).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags of `vclink-agent run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// URL of the vclink hub's gRPC endpoint, e.g. https://vclink-hub.example.com:443
    #[arg(long, env = "VCLINK_HUB_URL", value_name = "URL")]
    pub hub_url: String,

    /// PEM file with the CA certificate(s) that signed the hub's serving certificate.
    /// Without it the system trust store is used.
    #[arg(long, env = "VCLINK_HUB_CA_FILE", value_name = "PATH")]
    pub hub_ca_file: Option<PathBuf>,

    /// Do not verify the hub's TLS certificate (testing only; logs a warning on every connect).
    #[arg(long, env = "VCLINK_INSECURE_SKIP_HUB_VERIFY", default_value_t = false)]
    pub insecure_skip_hub_verify: bool,

    /// Rancher management cluster id of the cluster this agent runs in, e.g. c-m-ab12cd34
    /// (Fleet fills it from the label management.cattle.io/cluster-name).
    #[arg(long, env = "VCLINK_CLUSTER_ID", value_name = "ID")]
    pub cluster_id: String,

    /// File holding the agent's projected ServiceAccount token (audience vclink-hub).
    /// Re-read on every connect because the kubelet rotates it.
    #[arg(
        long,
        env = "VCLINK_TOKEN_FILE",
        default_value = "/var/run/secrets/vclink/token",
        value_name = "PATH"
    )]
    pub token_file: PathBuf,

    /// Container image of the registration Jobs (normally this agent's own image).
    #[arg(long, env = "VCLINK_JOB_IMAGE", default_value = DEFAULT_JOB_IMAGE, value_name = "IMAGE")]
    pub job_image: String,

    /// CPU request of a registration Job's container.
    #[arg(long, env = "VCLINK_JOB_CPU_REQUEST", default_value = "50m")]
    pub job_cpu_request: String,
    /// CPU limit of a registration Job's container.
    #[arg(long, env = "VCLINK_JOB_CPU_LIMIT", default_value = "500m")]
    pub job_cpu_limit: String,
    /// Memory request of a registration Job's container.
    #[arg(long, env = "VCLINK_JOB_MEMORY_REQUEST", default_value = "64Mi")]
    pub job_memory_request: String,
    /// Memory limit of a registration Job's container.
    #[arg(long, env = "VCLINK_JOB_MEMORY_LIMIT", default_value = "128Mi")]
    pub job_memory_limit: String,

    /// Only consider vClusters in namespaces matching this label selector, e.g. vclink.io/import=true
    /// (default: all namespaces).
    #[arg(long, env = "VCLINK_NAMESPACE_SELECTOR", value_name = "SELECTOR")]
    pub namespace_selector: Option<String>,

    /// Most Kubernetes write requests (patches, Events, Jobs) per second.
    #[arg(long, env = "VCLINK_KUBE_QPS", default_value_t = 5.0)]
    pub kube_qps: f64,

    /// Most Kubernetes writes sent at once before `--kube-qps` pacing applies.
    #[arg(long, env = "VCLINK_KUBE_BURST", default_value_t = 10)]
    pub kube_burst: u32,

    /// Log format.
    #[arg(long, env = "VCLINK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Address for the plain-HTTP /healthz and /metrics endpoint, e.g. 0.0.0.0:8080 (off when unset).
    #[arg(long, env = "VCLINK_METRICS_ADDR", value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

/// Flags of `vclink-agent register`.
#[derive(Debug, Clone, Args)]
pub struct RegisterArgs {
    /// Kubeconfig of the vCluster (the vCluster's vc-<name> Secret, key `config`).
    #[arg(
        long,
        env = "VCLINK_KUBECONFIG",
        default_value = "/etc/vclink/vcluster/config",
        value_name = "PATH"
    )]
    pub kubeconfig: PathBuf,

    /// Directory with the registration Secret: files manifest-url, tls-mode, ca.crt.
    #[arg(
        long,
        env = "VCLINK_REGISTRATION_DIR",
        default_value = "/etc/vclink/registration",
        value_name = "DIR"
    )]
    pub registration_dir: PathBuf,

    /// In-cluster URL of the vCluster's API (https://<name>.<namespace>:443); replaces the
    /// kubeconfig's default server https://localhost:8443.
    #[arg(long, env = "VCLINK_SERVICE_URL", value_name = "URL")]
    pub service_url: Option<String>,

    /// Where to write the one-line failure reason (best effort).
    #[arg(
        long,
        env = "VCLINK_TERMINATION_LOG",
        default_value = "/dev/termination-log",
        value_name = "PATH"
    )]
    pub termination_log: PathBuf,

    /// Log format.
    #[arg(long, env = "VCLINK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_defaults_match_the_documented_ones() {
        let cli = Cli::try_parse_from([
            "vclink-agent",
            "run",
            "--hub-url",
            "https://hub:443",
            "--cluster-id",
            "c-m-abcd1234",
        ])
        .expect("parse");
        let Command::Run(a) = cli.command else {
            panic!("expected run")
        };
        assert_eq!(a.token_file, PathBuf::from("/var/run/secrets/vclink/token"));
        assert_eq!(
            (a.job_cpu_request.as_str(), a.job_cpu_limit.as_str()),
            ("50m", "500m")
        );
        assert_eq!(
            (a.job_memory_request.as_str(), a.job_memory_limit.as_str()),
            ("64Mi", "128Mi")
        );
        assert!(!a.insecure_skip_hub_verify);
    }
}
