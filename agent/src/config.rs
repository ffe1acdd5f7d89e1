//! Command line of `vclink-agent`: the long-running `run` subcommand and the `register`
//! subcommand the registration Job executes. Every flag has a `VCLINK_*` environment
//! fallback so a Helm chart or Fleet bundle can configure the agent without templating
//! arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use k8s_openapi::api::core::v1::Toleration;

/// Default image of the registration Job: the one vclink image (hub, agent and Job; the
/// charts' `image.repository`), so an air-gapped install mirrors one image.
pub(crate) const DEFAULT_JOB_IMAGE: &str =
    concat!("ghcr.io/vclink/vclink:", env!("CARGO_PKG_VERSION"));

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
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The whole command line as clap sees it, for checks outside this crate (the README's
/// flag tables are compared with it).
#[doc(hidden)]
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// The subcommands.
#[derive(Debug, Subcommand)]
// Parsed once at start and moved into the subcommand; its size does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Command {
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
pub(crate) struct StatusArgs {
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
pub(crate) struct RunArgs {
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
    #[arg(long, env = "VCLINK_JOB_CPU_REQUEST", default_value = "50m", value_parser = parse_quantity)]
    pub job_cpu_request: String,
    /// CPU limit of a registration Job's container.
    #[arg(long, env = "VCLINK_JOB_CPU_LIMIT", default_value = "500m", value_parser = parse_quantity)]
    pub job_cpu_limit: String,
    /// Memory request of a registration Job's container.
    #[arg(long, env = "VCLINK_JOB_MEMORY_REQUEST", default_value = "64Mi", value_parser = parse_quantity)]
    pub job_memory_request: String,
    /// Memory limit of a registration Job's container.
    #[arg(long, env = "VCLINK_JOB_MEMORY_LIMIT", default_value = "128Mi", value_parser = parse_quantity)]
    pub job_memory_limit: String,

    /// Image pull secret of the registration Job's pod (repeatable). Each named Secret is
    /// read from the agent's own namespace and copied next to the Job, owned by it, so it
    /// is garbage-collected with the Job.
    #[arg(
        long = "job-image-pull-secret",
        env = "VCLINK_JOB_IMAGE_PULL_SECRETS",
        value_delimiter = ',',
        value_name = "NAME",
        value_parser = parse_object_name
    )]
    pub job_image_pull_secrets: Vec<String>,

    /// nodeSelector entry of the registration Job's pod (repeatable). An empty value
    /// (`--job-node-selector=`) clears the default.
    #[arg(
        long = "job-node-selector",
        value_name = "KEY=VALUE",
        default_value = "kubernetes.io/os=linux",
        value_parser = parse_node_selector
    )]
    pub job_node_selector: Vec<NodeSelectorArg>,

    /// Toleration of the registration Job's pod, one Kubernetes Toleration as JSON
    /// (repeatable). The default tolerates Rancher's `cattle.io/os=linux:NoSchedule` taint;
    /// an empty value (`--job-toleration=`) clears it.
    #[arg(
        long = "job-toleration",
        value_name = "JSON",
        default_value = DEFAULT_JOB_TOLERATION,
        value_parser = parse_toleration
    )]
    pub job_toleration: Vec<TolerationArg>,

    /// PriorityClass of the registration Job's pod (default: the cluster's default).
    #[arg(long, env = "VCLINK_JOB_PRIORITY_CLASS_NAME", value_name = "NAME", value_parser = parse_object_name)]
    pub job_priority_class_name: Option<String>,

    /// Only consider vClusters in namespaces matching this label selector, e.g. vclink.io/import=true
    /// (default: all namespaces).
    /// A namespace that stops matching excludes its vClusters (their Rancher clusters are
    /// kept); it never deletes them.
    #[arg(long, env = "VCLINK_NAMESPACE_SELECTOR", value_name = "SELECTOR", value_parser = parse_selector)]
    pub namespace_selector: Option<String>,

    /// Most Kubernetes write requests (patches, Events, Jobs) per second.
    #[arg(long, env = "VCLINK_KUBE_QPS", default_value_t = 5.0)]
    pub kube_qps: f64,

    /// Most Kubernetes writes sent at once before `--kube-qps` pacing applies.
    #[arg(long, env = "VCLINK_KUBE_BURST", default_value_t = 10)]
    pub kube_burst: u32,

    /// Let the agent uninstall a vCluster whose Rancher cluster a user deleted in Rancher,
    /// when the vCluster asks for it (chart value uninstall.enabled, which also grants the
    /// RBAC). Off: such a request is ignored and explained in an Event on the Service.
    #[arg(long, env = "VCLINK_ALLOW_UNINSTALL", default_value_t = false)]
    pub allow_uninstall: bool,

    /// Uninstall every vCluster whose Rancher cluster a user deleted in Rancher unless its
    /// Service says vclink.io/uninstall-on-cluster-delete: "false" (needs --allow-uninstall).
    #[arg(
        long,
        env = "VCLINK_UNINSTALL_ON_CLUSTER_DELETE",
        default_value_t = false,
        requires = "allow_uninstall"
    )]
    pub uninstall_on_cluster_delete: bool,

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

/// Default `--job-toleration`: the taint Rancher recommends on the Linux nodes of clusters
/// with Windows nodes.
pub(crate) const DEFAULT_JOB_TOLERATION: &str =
    r#"{"key":"cattle.io/os","operator":"Equal","value":"linux","effect":"NoSchedule"}"#;

/// One `--job-node-selector` value: a label pair, or `None` for the empty value that
/// clears the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSelectorArg(pub Option<(String, String)>);

/// One `--job-toleration` value: a toleration, or `None` for the empty value that clears
/// the default.
#[derive(Debug, Clone, PartialEq)]
pub struct TolerationArg(pub Option<Toleration>);

/// A Kubernetes resource quantity (`50m`, `0.5`, `128Mi`, `1e3`), checked here so a typo
/// fails at start instead of on every Job create.
fn parse_quantity(s: &str) -> Result<String, String> {
    const SUFFIXES: [&str; 14] = [
        "", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
    ];
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits_end);
    let number_ok = !number.is_empty() && number != "." && number.matches('.').count() <= 1;
    let exponent_ok = suffix.strip_prefix(['e', 'E']).is_some_and(|e| {
        !e.is_empty()
            && e.trim_start_matches(['+', '-'])
                .chars()
                .all(|c| c.is_ascii_digit())
    });
    if number_ok && (SUFFIXES.contains(&suffix) || exponent_ok) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a Kubernetes quantity (e.g. 50m, 0.5, 128Mi)"
        ))
    }
}

/// A Kubernetes object name (DNS-1123 subdomain: Secrets, PriorityClasses).
fn parse_object_name(s: &str) -> Result<String, String> {
    if is_dns1123_subdomain(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a Kubernetes object name (lower-case letters, digits, '-' and '.', at most 253)"
        ))
    }
}

fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(vclink_proto::validate::is_dns1123_label)
}

/// A label value: empty, or up to 63 alphanumerics with `-`, `_`, `.` inside.
fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// A label key: an optional DNS subdomain prefix and `/`, then a non-empty label value.
fn is_label_key(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    prefix.is_none_or(is_dns1123_subdomain) && !name.is_empty() && is_label_value(name)
}

/// Parses `KEY=VALUE` of `--job-node-selector`.
fn parse_node_selector(s: &str) -> Result<NodeSelectorArg, String> {
    if s.is_empty() {
        return Ok(NodeSelectorArg(None));
    }
    let Some((k, v)) = s.split_once('=') else {
        return Err(format!(
            "{s:?} is not KEY=VALUE (e.g. kubernetes.io/os=linux)"
        ));
    };
    if !is_label_key(k) {
        return Err(format!("{k:?} is not a valid label key"));
    }
    if !is_label_value(v) {
        return Err(format!("{v:?} is not a valid label value"));
    }
    Ok(NodeSelectorArg(Some((k.to_string(), v.to_string()))))
}

/// Parses one JSON Toleration of `--job-toleration` and checks what the API server would.
fn parse_toleration(s: &str) -> Result<TolerationArg, String> {
    if s.trim().is_empty() {
        return Ok(TolerationArg(None));
    }
    let t: Toleration = serde_json::from_str(s).map_err(|e| {
        format!("not a Kubernetes Toleration as JSON ({e}); e.g. {DEFAULT_JOB_TOLERATION}")
    })?;
    let op = t.operator.as_deref().unwrap_or("Equal");
    if !matches!(op, "Equal" | "Exists") {
        return Err(format!("operator {op:?} must be Equal or Exists"));
    }
    if let Some(effect) = t.effect.as_deref()
        && !matches!(effect, "" | "NoSchedule" | "PreferNoSchedule" | "NoExecute")
    {
        return Err(format!(
            "effect {effect:?} must be NoSchedule, PreferNoSchedule or NoExecute"
        ));
    }
    if op == "Exists" && t.value.as_deref().is_some_and(|v| !v.is_empty()) {
        return Err("operator Exists takes no value".into());
    }
    if let Some(key) = t.key.as_deref().filter(|k| !k.is_empty())
        && !is_label_key(key)
    {
        return Err(format!("key {key:?} is not a valid taint key"));
    }
    if t.key.as_deref().unwrap_or_default().is_empty() && op != "Exists" {
        return Err("an empty key needs operator Exists".into());
    }
    if t.toleration_seconds.is_some() && t.effect.as_deref() != Some("NoExecute") {
        return Err("tolerationSeconds applies only to effect NoExecute".into());
    }
    Ok(TolerationArg(Some(t)))
}

impl RunArgs {
    /// The uninstall settings these flags describe.
    pub(crate) fn uninstall(&self) -> crate::uninstall::UninstallSettings {
        crate::uninstall::UninstallSettings {
            allowed: self.allow_uninstall,
            by_default: self.uninstall_on_cluster_delete,
        }
    }

    /// The registration Job settings these flags describe.
    pub(crate) fn job_settings(&self) -> crate::jobs::JobSettings {
        crate::jobs::JobSettings {
            image: self.job_image.clone(),
            cpu_request: self.job_cpu_request.clone(),
            cpu_limit: self.job_cpu_limit.clone(),
            memory_request: self.job_memory_request.clone(),
            memory_limit: self.job_memory_limit.clone(),
            image_pull_secrets: self.job_image_pull_secrets.clone(),
            node_selector: self
                .job_node_selector
                .iter()
                .filter_map(|n| n.0.clone())
                .collect(),
            tolerations: self
                .job_toleration
                .iter()
                .filter_map(|t| t.0.clone())
                .collect(),
            priority_class_name: self.job_priority_class_name.clone(),
        }
    }
}

/// Checks `--namespace-selector` at start-up (it is evaluated in memory, not by the API server).
fn parse_selector(s: &str) -> Result<String, String> {
    crate::watch::LabelSelector::parse(s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::collections::BTreeMap;

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
        assert_eq!(
            a.uninstall(),
            crate::uninstall::UninstallSettings::default()
        );
        let job = a.job_settings();
        assert_eq!(
            job.node_selector,
            BTreeMap::from([("kubernetes.io/os".to_string(), "linux".to_string())])
        );
        assert_eq!(job.tolerations.len(), 1);
        let t = &job.tolerations[0];
        assert_eq!(
            (
                t.key.as_deref(),
                t.operator.as_deref(),
                t.value.as_deref(),
                t.effect.as_deref()
            ),
            (
                Some("cattle.io/os"),
                Some("Equal"),
                Some("linux"),
                Some("NoSchedule")
            )
        );
        assert!(job.image_pull_secrets.is_empty());
        assert_eq!(job.priority_class_name, None);
    }

    fn run(extra: &[&str]) -> Result<RunArgs, String> {
        let mut argv = vec![
            "vclink-agent",
            "run",
            "--hub-url",
            "https://hub:443",
            "--cluster-id",
            "c-m-abcd1234",
        ];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv) {
            Ok(Cli {
                command: Command::Run(a),
            }) => Ok(a),
            Ok(_) => Err("not run".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn uninstall_by_default_needs_uninstall_allowed() {
        let e = run(&["--uninstall-on-cluster-delete"]).unwrap_err();
        assert!(e.contains("--allow-uninstall"), "{e}");
        let a = run(&["--allow-uninstall", "--uninstall-on-cluster-delete"]).expect("parse");
        assert_eq!(
            a.uninstall(),
            crate::uninstall::UninstallSettings {
                allowed: true,
                by_default: true
            }
        );
    }

    #[test]
    fn job_scheduling_flags_replace_the_defaults() {
        let a = run(&[
            "--job-image-pull-secret",
            "regcred",
            "--job-image-pull-secret=mirror,backup",
            "--job-node-selector",
            "pool=system",
            "--job-node-selector",
            "kubernetes.io/arch=amd64",
            "--job-toleration",
            r#"{"key":"dedicated","operator":"Exists","effect":"NoSchedule"}"#,
            "--job-priority-class-name",
            "system-cluster-critical",
        ])
        .expect("parse");
        let job = a.job_settings();
        assert_eq!(job.image_pull_secrets, ["regcred", "mirror", "backup"]);
        assert_eq!(
            job.node_selector,
            BTreeMap::from([
                ("kubernetes.io/arch".to_string(), "amd64".to_string()),
                ("pool".to_string(), "system".to_string())
            ])
        );
        assert_eq!(job.tolerations.len(), 1);
        assert_eq!(job.tolerations[0].key.as_deref(), Some("dedicated"));
        assert_eq!(
            job.priority_class_name.as_deref(),
            Some("system-cluster-critical")
        );
        let cleared = run(&["--job-node-selector=", "--job-toleration="]).expect("parse");
        let job = cleared.job_settings();
        assert!(job.node_selector.is_empty() && job.tolerations.is_empty());
    }

    #[test]
    fn wrong_job_flags_fail_naming_the_flag() {
        for (args, flag) in [
            (
                vec!["--job-image-pull-secret", "Reg_Cred"],
                "--job-image-pull-secret",
            ),
            (vec!["--job-node-selector", "linux"], "--job-node-selector"),
            (vec!["--job-node-selector", "a b=c"], "--job-node-selector"),
            (vec!["--job-toleration", "{nope"], "--job-toleration"),
            (
                vec!["--job-toleration", r#"{"key":"k","operator":"Maybe"}"#],
                "--job-toleration",
            ),
            (
                vec![
                    "--job-toleration",
                    r#"{"key":"k","operator":"Exists","value":"v"}"#,
                ],
                "--job-toleration",
            ),
            (
                vec!["--job-priority-class-name", "High!"],
                "--job-priority-class-name",
            ),
            (vec!["--job-cpu-limit", "half"], "--job-cpu-limit"),
            (vec!["--job-memory-request", "64MB"], "--job-memory-request"),
        ] {
            let err = run(&args).expect_err(&format!("{args:?} accepted"));
            assert!(err.contains(flag), "{args:?}: {err}");
        }
        for q in ["50m", "0.5", "1", "128Mi", "1e3", "2Gi"] {
            assert!(parse_quantity(q).is_ok(), "{q}");
        }
    }
}
