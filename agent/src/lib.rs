//! vclink agent: runs in a Rancher downstream cluster, watches the vClusters in it
//! (Services labelled `app=vcluster`), streams them to the vclink hub over one gRPC/TLS
//! stream, runs the registration Job the hub asks for, and records where each vCluster
//! stands on its Service. The same binary is the registration Job (`register`).
//!
//! Layout: [`config`] (command line), [`watch`] (the shared watches and the derived
//! catalog), [`link`] (the hub stream), [`jobs`] (registration Jobs), [`record`]
//! (annotations and Events), [`register`] (the Job's work), [`tls`], [`health`].
#![forbid(unsafe_code)]

pub mod config;
pub mod health;
pub mod jobs;
pub mod link;
pub mod ratelimit;
pub mod record;
pub mod register;
pub mod status;
pub mod tls;
pub mod watch;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use config::{Cli, Command, LogFormat, RunArgs};

/// Capacity of the queues between the agent's tasks.
const QUEUE: usize = 256;

/// Sets up logging (`RUST_LOG` filters, default `info`).
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The binary's `main`: parses the command line and runs the subcommand.
pub fn main_entry() -> ExitCode {
    let cli = Cli::parse();
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
            if log {
                error!("{e:#}");
            }
            eprintln!("{who}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Checks the start-up inputs, failing with a sentence that says what to do.
pub fn trust_from_args(args: &RunArgs) -> anyhow::Result<tls::Trust> {
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

/// Runs the agent until SIGTERM or ctrl-c.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    if !args.hub_url.starts_with("https://") {
        bail!(
            "--hub-url must be an https:// URL of the vclink hub, got {:?}",
            args.hub_url
        );
    }
    if !vclink_proto::validate::is_dns1123_label(&args.cluster_id) {
        bail!(
            "--cluster-id {:?} is not a Rancher cluster id; set it to this cluster's management cluster id (e.g. c-m-ab12cd34)",
            args.cluster_id
        );
    }
    let trust = trust_from_args(&args)?;
    link::read_token(&args.token_file).with_context(|| {
        format!(
            "the agent needs a projected ServiceAccount token with audience {} at {} (or set --token-file)",
            vclink_proto::TOKEN_AUDIENCE,
            args.token_file.display()
        )
    })?;
    let kube_config = kube::Config::infer().await.context(
        "cannot find Kubernetes credentials; run in a pod with a ServiceAccount or set KUBECONFIG",
    )?;
    let client =
        kube::Client::try_from(kube_config).context("cannot build the Kubernetes client")?;
    let instance = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "vclink-agent".into());

    let cancel = CancellationToken::new();
    spawn_signal_handler(cancel.clone());

    let limiter = ratelimit::RateLimiter::new(args.kube_qps, args.kube_burst);
    let (catalog_tx, catalog_rx) = watch::channel();
    let (records_tx, records_rx) = mpsc::channel(QUEUE);
    let (reg_tx, reg_rx) = mpsc::channel(QUEUE);
    let (progress_tx, progress_rx) = mpsc::channel(QUEUE);

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(watch::run(
        client.clone(),
        args.namespace_selector.clone(),
        catalog_tx,
        records_tx.clone(),
        cancel.clone(),
    ));
    tasks.spawn(
        record::Writer::new(
            client.clone(),
            catalog_rx.clone(),
            limiter.clone(),
            instance.clone(),
        )
        .run(records_rx, cancel.clone()),
    );
    let settings = jobs::JobSettings {
        image: args.job_image.clone(),
        cpu_request: args.job_cpu_request.clone(),
        cpu_limit: args.job_cpu_limit.clone(),
        memory_request: args.job_memory_request.clone(),
        memory_limit: args.job_memory_limit.clone(),
    };
    tasks.spawn(
        jobs::JobController::new(
            client.clone(),
            settings,
            catalog_rx.clone(),
            limiter,
            records_tx.clone(),
            progress_tx,
        )
        .run(reg_rx, cancel.clone()),
    );
    let link_cfg = link::LinkConfig {
        hub_url: args.hub_url.clone(),
        trust,
        hub_ca_file: args.hub_ca_file.clone(),
        cluster_id: args.cluster_id.clone(),
        token_file: args.token_file.clone(),
        instance,
    };
    let channels = link::LinkChannels {
        catalog: catalog_rx.clone(),
        registrations: reg_tx,
        records: records_tx,
        progress: progress_rx,
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
    info!(hub = %args.hub_url, cluster_id = %args.cluster_id, version = env!("CARGO_PKG_VERSION"), "vclink agent started");

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
