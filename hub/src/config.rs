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

/// Whether the hub keeps owner bindings (CRTBs) on vCluster clusters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OwnerSyncMode {
    /// Keep the CRTBs the role mapping prescribes.
    #[value(alias = "true", alias = "on")]
    Enabled,
    /// As `enabled` (the chart's name for its per-cluster RBAC grant mode).
    #[value(name = "perCluster", alias = "per-cluster")]
    PerCluster,
    /// Never create or delete CRTBs.
    #[value(alias = "false", alias = "off")]
    Disabled,
}

/// How the hub establishes which cluster an agent speaks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AgentAuthMode {
    /// Verify the agent's projected ServiceAccount token with a TokenReview sent through
    /// Rancher's cluster proxy to the cluster the agent claims (the default).
    #[value(name = "tokenreview")]
    TokenReview,
    /// INSECURE, for tests only: believe the claimed cluster id. Warns at start and on
    /// every stream.
    TrustClaimed,
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
    after_long_help = "Example:\n  vclink-hub --tls-cert-file /etc/vclink/tls.crt --tls-key-file /etc/vclink/tls.key \\\n    \
--rancher-url https://rancher.example.com --rancher-token-file /etc/vclink/rancher/token\n\n\
Needs, in Rancher's local cluster: provisioning.cattle.io clusters in the workspace namespace \
(get/list/watch/create/patch/delete); management.cattle.io clusters (list/watch/patch), \
clusterregistrationtokens named default-token and settings (list/watch); Secrets named \
crt-token-default-token (list/watch); with owner sync, projects, projectroletemplatebindings and \
clusterroletemplatebindings (list/watch) and clusterroletemplatebindings (get/create/delete). \
charts/hub/templates/rbac.yaml holds the exact rules, each with the call that needs it. \
/readyz turns ready once the initial lists are loaded; agents are refused (UNAVAILABLE) until then."
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

    /// Owner sync: keep owner CRTBs on vCluster clusters from the host project's PRTBs and
    /// the host cluster's CRTBs (`enabled`/`perCluster`), or leave CRTBs alone (`disabled`).
    #[arg(long, env = "VCLINK_OWNER_SYNC", value_enum, default_value = "enabled")]
    pub owner_sync: OwnerSyncMode,

    /// Role mapping for owner sync: JSON text, or the path of a file holding it, e.g.
    /// `{"project":{"project-owner":"cluster-owner","read-only":null},"cluster":{"cluster-owner":"cluster-owner"}}`.
    /// Unlisted or null roles are excluded. Default: project-owner and project-member →
    /// cluster-owner; host cluster-owner → cluster-owner.
    #[arg(long, env = "VCLINK_OWNER_ROLE_MAPPING")]
    pub owner_role_mapping: Option<String>,

    /// The Rancher User (`management.cattle.io/v3` name, e.g. `u-abc12` or `vclink-hub`)
    /// the hub impersonates to create provisioning clusters and to create and delete
    /// owner CRTBs. Rancher makes that user the creator, and so the owner, of exactly the
    /// clusters the hub creates; owner CRTBs then pass Rancher's escalation check through
    /// that ownership, and the hub's ServiceAccount needs only `impersonate` on this one
    /// user. Default: --rancher-user. Unset (and no --rancher-user): the ServiceAccount
    /// itself creates clusters (with `no-creator-rbac`) and CRTBs, which Rancher admits
    /// only if that account already holds every right it grants.
    #[arg(long, env = "VCLINK_IMPERSONATE_USER", value_name = "RANCHER_USER")]
    pub impersonate_user: Option<String>,

    /// Deprecated and ignored (a warning is logged): the hub no longer binds itself to a
    /// ClusterRole to pass the escalation check; see --impersonate-user.
    #[arg(long, env = "VCLINK_OWNER_GRANT_CLUSTER_ROLE", hide = true)]
    pub owner_grant_cluster_role: Option<String>,

    /// Deprecated and ignored, like --owner-grant-cluster-role.
    #[arg(
        long,
        env = "VCLINK_OWNER_GRANT_SERVICE_ACCOUNT",
        value_name = "NAMESPACE/NAME",
        hide = true
    )]
    pub owner_grant_service_account: Option<String>,

    /// How agents are authenticated: `tokenreview` (verify each agent's ServiceAccount
    /// token in the cluster it claims, through Rancher's cluster proxy) or the insecure
    /// test-only `trust-claimed`.
    #[arg(
        long,
        env = "VCLINK_AGENT_AUTH",
        value_enum,
        default_value = "tokenreview"
    )]
    pub agent_auth: AgentAuthMode,

    /// The agents' ServiceAccount in every downstream cluster, `<namespace>/<name>`; a
    /// token of any other account is refused (PERMISSION_DENIED).
    #[arg(
        long,
        env = "VCLINK_AGENT_SERVICE_ACCOUNT",
        value_name = "NAMESPACE/NAME",
        default_value = "vclink-system/vclink-agent"
    )]
    pub agent_service_account: String,

    /// How often a live stream's token is verified again (also always just after the
    /// token's own expiry); a failed check closes the stream.
    #[arg(long, env = "VCLINK_AGENT_REVERIFY_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub agent_reverify_interval: Duration,

    /// Messages per second one agent stream may send (token bucket); more closes the
    /// stream with RESOURCE_EXHAUSTED.
    #[arg(long, env = "VCLINK_AGENT_MESSAGE_RATE", default_value_t = 100.0)]
    pub agent_message_rate: f64,

    /// Burst above --agent-message-rate.
    #[arg(long, env = "VCLINK_AGENT_MESSAGE_BURST", default_value_t = 2000)]
    pub agent_message_burst: u32,

    /// Rancher's server URL (`https://rancher.example.com`), for its cluster proxy.
    #[arg(long, env = "VCLINK_RANCHER_URL")]
    pub rancher_url: Option<String>,

    /// PEM CA bundle Rancher's certificate is verified against (default: system roots).
    #[arg(long, env = "VCLINK_RANCHER_CA_FILE")]
    pub rancher_ca_file: Option<PathBuf>,

    /// Name of the Rancher User (`management.cattle.io/v3`) the hub issues its own
    /// short-lived, rotated Token for. Its only right downstream: create TokenReviews.
    #[arg(
        long,
        env = "VCLINK_RANCHER_USER",
        conflicts_with = "rancher_token_file"
    )]
    pub rancher_user: Option<String>,

    /// Instead of --rancher-user: a file holding a Rancher token `<name>:<secret>`
    /// (e.g. a mounted Secret), re-read on every use.
    #[arg(long, env = "VCLINK_RANCHER_TOKEN_FILE")]
    pub rancher_token_file: Option<PathBuf>,

    /// TTL of the Tokens the hub issues with --rancher-user; each is replaced after half
    /// of it (minimum 10s).
    #[arg(long, env = "VCLINK_RANCHER_TOKEN_TTL", default_value = "12h", value_parser = parse_duration)]
    pub rancher_token_ttl: Duration,

    /// TokenReviews per second the hub sends to Rancher at most; more agents connecting
    /// at once are told to retry (UNAVAILABLE).
    #[arg(long, env = "VCLINK_RANCHER_QPS", default_value_t = 20.0)]
    pub rancher_qps: f64,

    /// Burst above --rancher-qps.
    #[arg(long, env = "VCLINK_RANCHER_BURST", default_value_t = 50)]
    pub rancher_burst: u32,

    /// Log format; the level comes from RUST_LOG (default `info`).
    #[arg(long, env = "VCLINK_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// How often every known vCluster is re-evaluated from memory (a safety net under the
    /// event-driven reconcile: no API request unless something is behind); 0 disables.
    #[arg(long, env = "VCLINK_RESYNC_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    pub resync_interval: Duration,

    /// Run several replicas safely: only the holder of a coordination.k8s.io Lease serves
    /// agents and writes to Rancher; the others stand by and take over when it goes.
    #[arg(long, env = "VCLINK_LEADER_ELECTION", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub leader_election: bool,

    /// Namespace of the leader Lease (default: the namespace of the in-cluster
    /// ServiceAccount or the kubeconfig's context).
    #[arg(long, env = "VCLINK_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,

    /// Name of the leader Lease.
    #[arg(
        long,
        env = "VCLINK_LEADER_ELECTION_LEASE",
        default_value = "vclink-hub"
    )]
    pub leader_election_lease: String,

    /// How long a Lease that is not renewed stays with its holder before a standby takes it.
    #[arg(long, env = "VCLINK_LEADER_ELECTION_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub leader_election_lease_duration: Duration,

    /// The leader steps down (and exits, to restart as a standby) when it could not renew
    /// the Lease for this long; shorter than the lease duration.
    #[arg(long, env = "VCLINK_LEADER_ELECTION_RENEW_DEADLINE", default_value = "10s", value_parser = parse_duration)]
    pub leader_election_renew_deadline: Duration,

    /// How often the leader renews and a standby retries.
    #[arg(long, env = "VCLINK_LEADER_ELECTION_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration)]
    pub leader_election_retry_period: Duration,

    /// This hub's Pod IP (downward API `status.podIP`). With leader election the leader
    /// publishes `<pod ip>:<--listen port>` in the Lease, and standbys forward the agent
    /// connections they receive there.
    #[arg(long, env = "VCLINK_POD_IP")]
    pub pod_ip: Option<std::net::IpAddr>,

    /// This hub's Pod name (downward API), the first part of its leader identity.
    #[arg(long, env = "VCLINK_POD_NAME")]
    pub pod_name: Option<String>,
}

impl Args {
    /// The Rancher user the hub acts as for cluster and owner-CRTB writes:
    /// --impersonate-user, else --rancher-user; `None` when both are unset or empty.
    pub fn acting_user(&self) -> Option<&str> {
        self.impersonate_user
            .as_deref()
            .or(self.rancher_user.as_deref())
            .filter(|u| !u.is_empty())
    }
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
        assert_eq!(
            a.agent_auth,
            AgentAuthMode::TokenReview,
            "secure by default"
        );
        assert_eq!(a.agent_service_account, "vclink-system/vclink-agent");
        assert_eq!(a.owner_sync, OwnerSyncMode::Enabled);
        assert_eq!(a.owner_role_mapping, None);
    }

    #[test]
    fn owner_sync_accepts_the_charts_modes() {
        let parse = |v: &str| {
            Args::try_parse_from([
                "vclink-hub",
                "--tls-cert-file",
                "c",
                "--tls-key-file",
                "k",
                "--owner-sync",
                v,
            ])
            .map(|a| a.owner_sync)
        };
        assert_eq!(parse("perCluster").unwrap(), OwnerSyncMode::PerCluster);
        assert_eq!(parse("disabled").unwrap(), OwnerSyncMode::Disabled);
        assert_eq!(parse("false").unwrap(), OwnerSyncMode::Disabled);
        assert!(parse("sometimes").is_err());
    }
}
