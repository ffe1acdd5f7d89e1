//! vclink agent: runs in a Rancher downstream cluster, watches the vClusters in it
//! (Services labelled `app=vcluster`), streams them to the vclink hub over one gRPC/TLS
//! stream, runs the registration Job the hub asks for, and records where each vCluster
//! stands on its Service. The same binary is the registration Job (`register`).
//!
//! This file wires the tasks together ([`spawn_cluster_tasks`], `run`) and holds the
//! binary's entry point.
//!
//! # Module map
//!
//! - [`config`]: the command line (`run`, `register`, `status`) and its checks.
//! - [`watch`]: the shared watches (vCluster Services, Services carrying the agent's mark,
//!   Namespaces) and the catalog derived from them:
//!   - `watch::model`: a compact view of one Service; `watch::inventory`: the
//!     in-memory view and the catalog; `watch::exclusion`: why a vCluster is not to be
//!     imported; `watch::selector`: `--namespace-selector` evaluated in memory.
//! - [`link`]: the one gRPC stream to the hub:
//!   - `link::messages`: Hello, snapshot chunks, the Upsert/Remove diff, Register checks;
//!     `link::connect`: URL and token checks, the TLS channel, backoff;
//!     `link::diagnose`: a failed connect turned into a sentence a person can act on.
//! - [`latest`]: the "latest wins" hand-off between the link and the writers (its own
//!   module because both sides use it).
//! - [`jobs`]: registration Jobs: `jobs::create` makes one, `jobs::spec` builds them,
//!   `jobs::own` decides which Job speaks for a vCluster.
//! - [`record`]: state annotations and Events on the vCluster's Service:
//!   `record::ops` (vocabulary), `record::plan` (what to write for a Status or a Job),
//!   `record::announce` (exclusions), `record::guard` (refusing a redirect).
//! - [`register`]: what the registration Job runs: `fetch` the manifest, `kubeconfig`
//!   pointing at the vCluster, `apply` it there.
//! - [`uninstall`]: the optional uninstall of a vCluster whose Rancher cluster a user
//!   deleted in Rancher: `uninstall::release` reads its Helm release, `uninstall::select`
//!   picks what to remove, `uninstall::run` removes it, `uninstall::note` its Events and proof.
//! - [`tls`]: rustls building blocks; `ratelimit`: the write limiter; `health`: probes
//!   and metrics; `status`: `vclink-agent status` / `kubectl vclink status`.
#![forbid(unsafe_code)]

// Public: what the binary's tests and the component tests use; the rest is crate-only.
pub mod config;
pub(crate) mod health;
pub mod jobs;
pub mod latest;
pub mod link;
pub(crate) mod ratelimit;
pub mod record;
pub mod register;
pub(crate) mod status;
pub mod tls;
pub mod uninstall;
pub mod watch;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use config::{Cli, Command, LogFormat, RunArgs};

/// Sets up logging to stderr (see [`vclink_proto::cli::init_tracing`]).
fn init_tracing(format: LogFormat) {
    vclink_proto::cli::init_tracing(matches!(format, LogFormat::Json));
}

/// An error and its causes on one line, each cause once (see
/// [`vclink_proto::cli::chain_line`]).
pub fn one_line(e: &anyhow::Error) -> String {
    vclink_proto::cli::chain_line(e.chain())
}

/// [`one_line`] for any error: kube's "client error (Connect)" becomes
/// "... client error (Connect): tcp connect error: Connection refused (os error 111)".
pub(crate) use vclink_proto::cli::error_line;

/// Whether this process was started as the kubectl plugin (`kubectl-vclink`, e.g. via a
/// symlink to `vclink-agent`): kubectl runs `kubectl-vclink status` for `kubectl vclink status`.
fn invoked_as_kubectl_plugin() -> bool {
    std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .is_some_and(|n| n == "kubectl-vclink")
}

/// The binary's `main`: parses the command line and runs the subcommand.
pub fn main_entry() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let mut command = Cli::command();
    if invoked_as_kubectl_plugin() {
        command = command.name("kubectl vclink").bin_name("kubectl vclink");
    }
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    tls::install_default_provider();
    match cli.command {
        Command::Run(args) => {
            init_tracing(args.log_format);
            block_on("vclink-agent", run(args), true)
        }
        Command::Register(args) => {
            init_tracing(args.log_format);
            register::main(args)
        }
        Command::Status(args) => block_on("vclink-agent status", status::main(args), false),
    }
}

/// Runs `fut` to completion on a single-threaded runtime — plenty for watching Services
/// and one gRPC stream, and it keeps the idle footprint small (no per-thread allocator
/// arenas) — and turns its outcome into the exit code, printing the error for `who`.
fn block_on(
    who: &str,
    fut: impl std::future::Future<Output = anyhow::Result<()>>,
    log: bool,
) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{who}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once: as a log line when logging is set up (so JSON pipelines see it),
            // otherwise as the one line on stderr.
            let line = one_line(&e);
            if log {
                error!(error = %line, "{who} stopped");
            } else {
                eprintln!("{who}: {line}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Kubernetes client settings from KUBECONFIG (or ~/.kube/config) or the in-cluster
/// ServiceAccount, failing with a sentence that names the file it tried.
pub(crate) async fn kube_config() -> anyhow::Result<kube::Config> {
    match kube::Config::infer().await {
        Ok(c) => Ok(c),
        Err(e) => {
            let source = match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
                Some(path) => format!(
                    "KUBECONFIG={} cannot be used; point KUBECONFIG at a readable kubeconfig file",
                    std::path::PathBuf::from(path).display()
                ),
                None => "no Kubernetes credentials: not in a pod with a ServiceAccount and no \
                         KUBECONFIG or ~/.kube/config; set KUBECONFIG"
                    .to_string(),
            };
            Err(anyhow::Error::new(e).context(source))
        }
    }
}

/// Checks the start-up inputs, failing with a sentence that says what to do.
fn trust_from_args(args: &RunArgs) -> anyhow::Result<tls::Trust> {
    if args.insecure_skip_hub_verify {
        return Ok(tls::Trust::Insecure);
    }
    match &args.hub_ca_file {
        Some(path) => {
            let pem = std::fs::read_to_string(path).with_context(|| {
                format!("cannot read the hub CA file {}; mount the hub's CA bundle there or fix --hub-ca-file", path.display())
            })?;
            tls::roots_from_pem(&pem).with_context(|| {
                format!("the hub CA file {} holds no usable PEM certificate; put the hub's CA certificate(s) in it", path.display())
            })?;
            Ok(tls::Trust::Pem(pem))
        }
        None => Ok(tls::Trust::System),
    }
}

/// What the agent's Kubernetes-side tasks need.
pub struct ClusterTasks {
    /// Client of the downstream cluster.
    pub client: kube::Client,
    /// Label selector limiting the watched Namespaces (`--namespace-selector`).
    pub namespace_selector: Option<String>,
    /// Image and resources of the registration Jobs.
    pub jobs: jobs::JobSettings,
    /// Sustained rate of the agent's Kubernetes writes (`--kube-qps`).
    pub kube_qps: f64,
    /// Burst of the agent's Kubernetes writes (`--kube-burst`).
    pub kube_burst: u32,
    /// Pod name reported on Events.
    pub instance: String,
}

/// Starts the agent's Kubernetes side on `tasks` — the shared watches, the recorder and
/// the Job controller, writing through one rate limiter — and returns the ends the hub
/// link uses. The binary hands them to [`link::run`]; the component test plays the hub
/// with them, so both run the same wiring. Uninstall stays off
/// ([`spawn_cluster_tasks_with`] sets it).
pub fn spawn_cluster_tasks(
    tasks: &mut tokio::task::JoinSet<()>,
    settings: ClusterTasks,
    cancel: &CancellationToken,
) -> link::LinkChannels {
    spawn_cluster_tasks_with(
        tasks,
        settings,
        uninstall::UninstallSettings::default(),
        cancel,
    )
}

/// [`spawn_cluster_tasks`] with the uninstall settings: the hub's `Forget`s also reach
/// the uninstaller ([`uninstall`]), which decides per vCluster.
pub fn spawn_cluster_tasks_with(
    tasks: &mut tokio::task::JoinSet<()>,
    settings: ClusterTasks,
    uninstall: uninstall::UninstallSettings,
    cancel: &CancellationToken,
) -> link::LinkChannels {
    let ClusterTasks {
        client,
        namespace_selector,
        jobs: job_settings,
        kube_qps,
        kube_burst,
        instance,
    } = settings;
    let limiter = ratelimit::RateLimiter::new(kube_qps, kube_burst);
    let (catalog_tx, catalog_rx) = watch::channel();
    // Latest-wins per vCluster: the link never waits on the writers.
    let (records_tx, records_rx) = latest::channel(link::MAX_PENDING);
    let (reg_tx, reg_rx) = latest::channel(link::MAX_PENDING);
    let (progress_tx, progress_rx) = latest::channel(link::MAX_PENDING);
    tasks.spawn(watch::run(
        client.clone(),
        namespace_selector,
        catalog_tx,
        cancel.clone(),
    ));
    // The hub's records pass through a tee that also hands each Forget to the
    // uninstaller; the Job controller's records go to the recorder directly.
    let (hub_records_tx, hub_records_rx) = latest::channel(link::MAX_PENDING);
    let (forgets_tx, forgets_rx) = latest::channel(link::MAX_PENDING);
    tasks.spawn(tee_forgets(
        hub_records_rx,
        catalog_rx.clone(),
        records_tx.clone(),
        forgets_tx,
        cancel.clone(),
    ));
    tasks.spawn(
        uninstall::run::Uninstaller::new(
            client.clone(),
            uninstall,
            catalog_rx.clone(),
            limiter.clone(),
            instance.clone(),
        )
        .run(forgets_rx, cancel.clone()),
    );
    tasks.spawn(
        record::Writer::new(
            client.clone(),
            catalog_rx.clone(),
            limiter.clone(),
            instance,
        )
        .run(records_rx, cancel.clone()),
    );
    tasks.spawn(
        jobs::JobController::new(
            client,
            job_settings,
            catalog_rx.clone(),
            limiter,
            records_tx.clone(),
            progress_tx,
        )
        .run(reg_rx, cancel.clone()),
    );
    link::LinkChannels {
        catalog: catalog_rx,
        registrations: reg_tx,
        records: hub_records_tx,
        progress: progress_rx,
    }
}

/// Forwards the hub's record ops to the recorder, and each `Forget` also to the
/// uninstaller (which acts only on a `Forget`: the hub's word that a user deleted the
/// Rancher cluster in Rancher). Both queues are latest-wins, so this never waits.
/// The Service's `vclink.io/state` is taken from the catalog here, before the recorder
/// marks the vCluster deleted.
async fn tee_forgets(
    mut from_hub: latest::Receiver<record::RecordOp>,
    catalog: watch::CatalogRx,
    recorder: latest::Sender<record::RecordOp>,
    uninstaller: latest::Sender<uninstall::Forgotten>,
    cancel: CancellationToken,
) {
    loop {
        let op = tokio::select! {
            _ = cancel.cancelled() => return,
            op = from_hub.recv() => match op { Some(op) => op, None => return },
        };
        if let record::RecordOp::Forget { uid, .. } = &op {
            let state_before = catalog.borrow().services.get(uid).and_then(|f| {
                f.annotations
                    .get(vclink_proto::keys::ANNOTATION_STATE)
                    .cloned()
            });
            let forgotten = uninstall::Forgotten {
                uid: uid.clone(),
                state_before,
            };
            if let Err(e) = uninstaller.push(forgotten) {
                warn!(error = %e, "dropping a Forget for the uninstaller");
            }
        }
        if let Err(e) = recorder.push(op) {
            warn!(error = %e, "dropping a record from the hub");
        }
    }
}

/// Runs the agent until SIGTERM or ctrl-c.
async fn run(args: RunArgs) -> anyhow::Result<()> {
    link::check_hub_url(&args.hub_url)?;
    if !vclink_proto::validate::is_dns1123_label(&args.cluster_id) {
        bail!(
            "--cluster-id {:?} is not a Rancher cluster id; set it to this cluster's management cluster id (e.g. c-m-ab12cd34)",
            args.cluster_id
        );
    }
    let trust = trust_from_args(&args)?;
    // The error names the file and the fix itself.
    link::read_token(&args.token_file)?;
    let kube_config = kube_config().await?;
    let kube_api = kube_config.cluster_url.to_string();
    let client =
        kube::Client::try_from(kube_config).context("cannot build the Kubernetes client")?;
    let instance = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "vclink-agent".into());

    let cancel = CancellationToken::new();
    spawn_signal_handler(cancel.clone());

    let mut tasks = tokio::task::JoinSet::new();
    let settings = ClusterTasks {
        client,
        namespace_selector: args.namespace_selector.clone(),
        jobs: args.job_settings(),
        kube_qps: args.kube_qps,
        kube_burst: args.kube_burst,
        instance: instance.clone(),
    };
    let channels = spawn_cluster_tasks_with(&mut tasks, settings, args.uninstall(), &cancel);
    let catalog_rx = channels.catalog.clone();
    let link_cfg = link::LinkConfig {
        hub_url: args.hub_url.clone(),
        trust,
        hub_ca_file: args.hub_ca_file.clone(),
        cluster_id: args.cluster_id.clone(),
        token_file: args.token_file.clone(),
        instance,
    };
    tasks.spawn(link::run(link_cfg, channels, cancel.clone()));
    if let Some(addr) = args.metrics_addr {
        let (catalog, cancel) = (catalog_rx.clone(), cancel.clone());
        tasks.spawn(async move {
            if let Err(e) = health::serve(addr, catalog, cancel).await {
                warn!(%addr, error = %e, "the health/metrics endpoint stopped");
            }
        });
    }
    info!(hub = %args.hub_url, cluster_id = %args.cluster_id, %kube_api, version = env!("CARGO_PKG_VERSION"), "vclink agent started");

    // Any task ending on its own (other than on shutdown) is a bug: stop everything.
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tasks.join_next() => {
            if !cancel.is_cancelled() {
                cancel.cancel();
                bail!("an agent task stopped unexpectedly; restarting the pod will recover");
            }
        }
    }
    info!("shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

fn spawn_signal_handler(cancel: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        warn!(error = %e, "cannot listen for SIGTERM; only ctrl-c stops the agent");
                        let _ = tokio::signal::ctrl_c().await;
                        cancel.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        cancel.cancel();
    });
}
