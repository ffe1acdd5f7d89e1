//! Command-line flags of `vclink-hub` (every flag also reads a `VCLINK_*` environment
//! variable, so a Deployment can configure the hub without long argument lists).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// How the hub tells agents to verify Rancher's certificate when they fetch the import
/// manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RegistrationTlsMode {
    /// Follow Rancher's `agent-tls-mode` and `cacerts` settings.
    Auto,
    /// Pin Rancher's `cacerts` (system roots when it is empty).
    Strict,
    /// Verify against the agent's system trust store.
    SystemStore,
    /// No verification. Only for test installations.
    Insecure,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// vclink hub: runs in Rancher's local cluster, accepts agents of downstream clusters over
/// gRPC/TLS and turns the vClusters they report into Rancher clusters.
///
/// Kubernetes access comes from the in-cluster ServiceAccount or KUBECONFIG.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "vclink-hub",
    version,
    about,
    long_about,
    after_long_help = "Example:\n  vclink-hub --tls-cert-file /etc/vclink/tls.crt --tls-key-file /etc/vclink/tls.key\n\n\
Needs, in Rancher's local cluster: create/delete/list/watch/patch provisioning.cattle.io clusters in the\n\
workspace namespace; list/watch/patch management.cattle.io clusters; list/watch management.cattle.io\n\
clusterregistrationtokens and settings; list/watch Secrets (only those named crt-token-default-token are\n\
read). /readyz turns ready once the initial lists are loaded; agents are refused (UNAVAILABLE) until then."
)]
pub struct Args {
    /// Address the gRPC (TLS) listener binds to.
    #[arg(long, env = "VCLINK_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,

    /// PEM file with the serving certificate chain for the gRPC listener.
    #[arg(long, env = "VCLINK_TLS_CERT_FILE")]
    pub tls_cert_file: PathBuf,

    /// PEM file with the private key of the serving certificate.
    #[arg(long, env = "VCLINK_TLS_KEY_FILE")]
    pub tls_key_file: PathBuf,

    /// Address of the HTTP listener serving /metrics, /healthz and /readyz.
    #[arg(long, env = "VCLINK_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,

    /// Fleet workspace namespace the provisioning clusters are created in.
    #[arg(long, env = "VCLINK_FLEET_WORKSPACE", default_value = "fleet-default")]
    pub fleet_workspace: String,

    /// How agents verify Rancher when fetching the import manifest; `auto` reads Rancher's
    /// `agent-tls-mode` and `cacerts` settings.
    #[arg(
        long,
        env = "VCLINK_REGISTRATION_TLS_MODE",
        value_enum,
        default_value = "auto"
    )]
    pub registration_tls_mode: RegistrationTlsMode,

    /// How long every complete snapshot of a host must lack a vCluster before its Rancher
    /// cluster is deleted (e.g. `5m`, `90s`, `1h`).
    #[arg(long, env = "VCLINK_REMOVAL_GRACE", default_value = "5m", value_parser = parse_duration)]
    pub removal_grace: Duration,

    /// Heartbeat interval asked of agents (seconds); a stream silent for three intervals
    /// is closed.
    #[arg(long, env = "VCLINK_HEARTBEAT_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub heartbeat_seconds: u32,

    /// Most vClusters one agent may report; more closes its stream with RESOURCE_EXHAUSTED.
    #[arg(long, env = "VCLINK_MAX_VCLUSTERS_PER_AGENT", default_value_t = vclink_proto::limits::DEFAULT_MAX_VCLUSTERS_PER_AGENT)]
    pub max_vclusters_per_agent: usize,

    /// Client-side rate limit of the hub's Kubernetes API writes (requests per second).
    #[arg(long, env = "VCLINK_KUBE_QPS", default_value_t = 50.0)]
    pub kube_qps: f64,

    /// Burst allowed above --kube-qps.
    #[arg(long, env = "VCLINK_KUBE_BURST", default_value_t = 100)]
    pub kube_burst: u32,

    /// Number of reconcile workers.
    #[arg(long, env = "VCLINK_WORKERS", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: u16,

    /// Log format; the level comes from RUST_LOG (default `info`).
    #[arg(long, env = "VCLINK_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// Parses `300`, `300s`, `5m`, `1h`, `250ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (use e.g. 90s, 5m, 1h)"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("unknown unit in {s:?} (use ms, s, m or h)")),
    };
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn defaults_match_the_documentation() {
        let a = Args::try_parse_from(["vclink-hub", "--tls-cert-file", "c", "--tls-key-file", "k"])
            .unwrap();
        assert_eq!(a.listen.to_string(), "0.0.0.0:8443");
        assert_eq!(a.metrics_listen.to_string(), "0.0.0.0:9090");
        assert_eq!(a.fleet_workspace, "fleet-default");
        assert_eq!(a.removal_grace, Duration::from_secs(300));
        assert_eq!(a.registration_tls_mode, RegistrationTlsMode::Auto);
    }
}
