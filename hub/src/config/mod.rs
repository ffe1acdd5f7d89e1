//! Command-line flags of `vclink-hub` (every flag also reads a `VCLINK_*` environment
//! variable, so a Deployment can configure the hub without long argument lists).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

mod values;
pub use values::{HostSelector, leader_timings, parse_duration, parse_qps, parse_share};

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
Needs, in Rancher's local cluster: provisioning.cattle.io clusters (list/watch in all namespaces; \
get/create/patch/delete in the Fleet workspaces used; fleetworkspaces create with \
--create-fleet-workspaces); management.cattle.io clusters (list/watch/patch), \
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

    /// Address of a plaintext listener serving only grpc.health.v1, for Kubernetes gRPC
    /// probes (which cannot speak TLS), e.g. 0.0.0.0:8081 (off when unset; the TLS
    /// listener serves it too).
    #[arg(long, env = "VCLINK_HEALTH_LISTEN", value_name = "ADDR")]
    pub health_listen: Option<SocketAddr>,

    /// Fleet workspace namespace the provisioning clusters are created in.
    #[arg(long, env = "VCLINK_FLEET_WORKSPACE", default_value = "fleet-default")]
    pub fleet_workspace: String,

    /// Fleet workspaces per Rancher project, for clusters created from now on:
    /// `<project>=<workspace>,…` where a project is `<cluster-id>:<p-id>`, a project id
    /// `p-…` (in any host cluster) or a display name; the most exact entry wins,
    /// unmatched projects use --fleet-workspace. A project owner can rename their
    /// project to match a display-name entry (docs/rancher.md, "Fleet workspaces").
    #[arg(
        long,
        env = "VCLINK_FLEET_WORKSPACE_FOR_PROJECT",
        value_name = "PROJECT=WORKSPACE,...",
        default_value = ""
    )]
    pub fleet_workspace_for_project: String,

    /// Create a missing Fleet workspace (a `management.cattle.io/v3` FleetWorkspace,
    /// labelled `vclink.io/managed-by=vclink`) before creating a cluster in it. Off: a
    /// missing workspace is an error on the vCluster's Service.
    #[arg(long, env = "VCLINK_CREATE_FLEET_WORKSPACES", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub create_fleet_workspaces: bool,

    /// Namespace of the Secret `vclink-hub-proof-key`, the key the hub signs the clusters
    /// it makes with (created once, read at every start; default: the namespace of the
    /// in-cluster ServiceAccount or the kubeconfig's context).
    #[arg(long, env = "VCLINK_PROOF_KEY_NAMESPACE")]
    pub proof_key_namespace: Option<String>,

    /// Adopt the clusters the vcluster-rancher-operator made (loft.sh/* labels) when
    /// their `field.cattle.io/creatorId` is this Rancher user (the one the operator runs
    /// as, usually `vcluster-rancher-operator`), their host label names the reporting
    /// agent's cluster and that agent reports their Service UID. Empty: never adopt.
    #[arg(
        long,
        env = "VCLINK_ADOPT_OPERATOR_CLUSTERS_CREATED_BY",
        value_name = "RANCHER_USER",
        default_value = ""
    )]
    pub adopt_operator_clusters_created_by: String,

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

    /// Most vClusters to import one agent may report (excluded ones do not count); each
    /// one over it is refused on its own (Status ERROR on its Service, metric
    /// `vclink_hub_vcluster_refusals_total`), never its whole host.
    #[arg(long, env = "VCLINK_MAX_VCLUSTERS_PER_AGENT", default_value_t = vclink_proto::limits::DEFAULT_MAX_VCLUSTERS_PER_AGENT)]
    pub max_vclusters_per_agent: usize,

    /// Most vClusters to import in one namespace of a host; each one over it is refused
    /// on its own, like --max-vclusters-per-agent.
    #[arg(long, env = "VCLINK_MAX_VCLUSTERS_PER_NAMESPACE", default_value_t = 50)]
    pub max_vclusters_per_namespace: usize,

    /// Which Rancher clusters may run an agent the hub serves: `key=value`, a label of
    /// the management cluster (the label that also makes Fleet deploy the agent). Other
    /// clusters are refused with PERMISSION_DENIED naming the label; a stream is closed
    /// when its cluster loses the label.
    #[arg(long, env = "VCLINK_HOST_SELECTOR", default_value = "vclink.io/agent=enabled", value_parser = HostSelector::parse)]
    pub host_selector: HostSelector,

    /// Also serve agents in Rancher clusters vclink itself created for a vCluster (nested
    /// vClusters), each of which must then carry `vclink.io/nested-import=enabled` too.
    /// Off by default because the owner of a Rancher cluster can edit its labels: with
    /// the label alone, every tenant could turn their vCluster into a host.
    #[arg(long, env = "VCLINK_ALLOW_NESTED_HOSTS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub allow_nested_hosts: bool,

    /// Client-side rate limit of the hub's Kubernetes API writes (requests per second).
    #[arg(long, env = "VCLINK_KUBE_QPS", default_value_t = 50.0, value_parser = parse_qps)]
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

    /// Service labels copied to the vCluster's Rancher (management) cluster, and from
    /// there by Rancher to its Fleet cluster: comma list of keys, or prefixes ending in
    /// `*` (`org.example/*`; `*` is every key). Empty (the default): label sync is off.
    /// Keys containing `cattle.io/`, `vclink.io/`, `loft.sh/`, `vcluster.loft.sh/` or
    /// `app.kubernetes.io/`, and `app`, `release`, `helm`, `heritage`, `chart`, are never
    /// synced. A synced label removed from the Service is removed from the cluster.
    #[arg(long, env = "VCLINK_SYNC_LABELS_INCLUDE", value_delimiter = ',', num_args = 0..)]
    pub sync_labels_include: Vec<String>,

    /// Service labels never synced even when `--sync-labels-include` matches them: comma
    /// list of keys or `prefix*` patterns.
    #[arg(long, env = "VCLINK_SYNC_LABELS_EXCLUDE", value_delimiter = ',', num_args = 0..)]
    pub sync_labels_exclude: Vec<String>,

    /// Mirror each vCluster onto its Rancher (management) cluster: synced labels, the
    /// ResourceQuota, host, version and vclink state as `vclink.io/*` annotations, and
    /// the description while it is empty or vclink's (docs/rancher.md). `false`: the hub
    /// writes none of it.
    #[arg(long, env = "VCLINK_RANCHER_MIRROR", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub rancher_mirror: bool,

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
    #[arg(long, env = "VCLINK_RANCHER_QPS", default_value_t = 20.0, value_parser = parse_qps)]
    pub rancher_qps: f64,

    /// Burst above --rancher-qps.
    #[arg(long, env = "VCLINK_RANCHER_BURST", default_value_t = 50)]
    pub rancher_burst: u32,

    /// Share of the TokenReview budget (--rancher-qps/--rancher-burst) kept for clusters
    /// whose agent verified within the last hour, so reconnecting agents get in while
    /// unknown clients flood the rest.
    #[arg(long, env = "VCLINK_TOKENREVIEW_RESERVED_SHARE", default_value_t = 0.5, value_parser = parse_share)]
    pub tokenreview_reserved_share: f64,

    /// TokenReviews per second one client IP may cause from the unreserved budget.
    #[arg(long, env = "VCLINK_TOKENREVIEW_PEER_QPS", default_value_t = 2.0, value_parser = parse_qps)]
    pub tokenreview_peer_qps: f64,

    /// Burst above --tokenreview-peer-qps.
    #[arg(long, env = "VCLINK_TOKENREVIEW_PEER_BURST", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub tokenreview_peer_burst: u32,

    /// How long a refused token (per cluster) is refused again without a TokenReview;
    /// 0 disables the negative cache.
    #[arg(long, env = "VCLINK_TOKENREVIEW_NEGATIVE_TTL", default_value = "30s", value_parser = parse_duration)]
    pub tokenreview_negative_ttl: Duration,

    /// Most agent streams open at once that have not yet been authenticated (waiting
    /// for Hello or its TokenReview); more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "VCLINK_MAX_UNAUTHENTICATED_STREAMS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_unauthenticated_streams: u32,

    /// Most TLS handshakes in progress at once; connections beyond are closed at once.
    #[arg(long, env = "VCLINK_MAX_TLS_HANDSHAKES", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_tls_handshakes: u32,

    /// Most TLS handshakes in progress at once from one client IP (of
    /// --max-tls-handshakes); connections beyond are closed before TLS.
    #[arg(long, env = "VCLINK_MAX_TLS_HANDSHAKES_PER_PEER", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_tls_handshakes_per_peer: u32,

    /// Most unauthenticated agent streams open at once from one client IP (of
    /// --max-unauthenticated-streams); more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "VCLINK_MAX_UNAUTHENTICATED_STREAMS_PER_PEER", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_unauthenticated_streams_per_peer: u32,

    /// Share of --max-tls-handshakes and --max-unauthenticated-streams kept for client
    /// IPs from which an agent authenticated within the last hour, so genuine agents
    /// reconnect while unknown sources hold the rest (0 to 0.9).
    #[arg(long, env = "VCLINK_EDGE_RESERVED_SHARE", default_value_t = 0.25, value_parser = parse_share)]
    pub edge_reserved_share: f64,

    /// Longest a TLS handshake may take.
    #[arg(long, env = "VCLINK_TLS_HANDSHAKE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub tls_handshake_timeout: Duration,

    /// Most gRPC connections open at once (authenticated or not); more are closed at once.
    #[arg(long, env = "VCLINK_MAX_CONNECTIONS", default_value_t = 8192, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// Most concurrent HTTP/2 streams per connection (an agent uses one).
    #[arg(long, env = "VCLINK_MAX_STREAMS_PER_CONNECTION", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_streams_per_connection: u32,

    /// Largest first message (Hello) accepted before the agent is authenticated, bytes.
    #[arg(long, env = "VCLINK_HELLO_MAX_BYTES", default_value_t = 8192, value_parser = clap::value_parser!(u32).range(1024..=1_048_576))]
    pub hello_max_bytes: u32,

    /// After this many streams of one connection failed before authentication, the
    /// connection itself is closed.
    #[arg(long, env = "VCLINK_PREAUTH_FAILURES_PER_CONNECTION", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub preauth_failures_per_connection: u32,

    /// Most agent connections a standby forwards to the leader at once; more are closed.
    #[arg(long, env = "VCLINK_FORWARD_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub forward_max_connections: u32,

    /// A forwarded connection with no bytes either way for this long is closed (the
    /// hub's HTTP/2 keepalive pings every 30 s, so live streams never idle that long).
    #[arg(long, env = "VCLINK_FORWARD_IDLE_TIMEOUT", default_value = "2m", value_parser = parse_duration)]
    pub forward_idle_timeout: Duration,

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
    /// Checks what one flag's parser cannot: combinations and non-zero durations. Run
    /// at start; the error names the flags.
    pub fn validate(&self) -> Result<(), String> {
        if self.tls_handshake_timeout.is_zero()
            || self.tls_handshake_timeout > Duration::from_secs(60)
        {
            return Err("--tls-handshake-timeout must be between 1ms and 60s".into());
        }
        if self.forward_idle_timeout < Duration::from_secs(40) {
            return Err(
                "--forward-idle-timeout must be at least 40s (the hub's HTTP/2 keepalive pings every 30s)".into(),
            );
        }
        if self.tokenreview_negative_ttl > Duration::from_secs(600) {
            return Err("--tokenreview-negative-ttl must be at most 10m".into());
        }
        self.workspaces()?;
        if self.leader_election {
            leader_timings(
                self.leader_election_lease_duration,
                self.leader_election_renew_deadline,
                self.leader_election_retry_period,
            )?;
        }
        Ok(())
    }

    /// --fleet-workspace and --fleet-workspace-for-project, checked (names are
    /// DNS-1123 labels, no entry malformed or listed twice).
    pub fn workspaces(&self) -> Result<crate::core::workspace::Workspaces, String> {
        crate::core::workspace::Workspaces::parse(
            &self.fleet_workspace,
            &self.fleet_workspace_for_project,
        )
    }

    /// The Rancher user the hub acts as for cluster and owner-CRTB writes:
    /// --impersonate-user, else --rancher-user; `None` when both are unset or empty.
    pub fn acting_user(&self) -> Option<&str> {
        self.impersonate_user
            .as_deref()
            .or(self.rancher_user.as_deref())
            .filter(|u| !u.is_empty())
    }
}

#[cfg(test)]
mod tests;
