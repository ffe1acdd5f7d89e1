//! vclink hub: runs in Rancher's local cluster, accepts one gRPC stream per downstream
//! cluster's agent, turns the vClusters the agents report into Rancher provisioning
//! clusters, hands out registration commands as soon as Rancher's token exists, and
//! deletes clusters only with an agent's proof that their vCluster is gone.
//!
//! Layout: `config` (flags), `rancher` (Rancher kinds, watches), `index` (pure view of
//! Rancher objects), `decide` (pure decisions), `reconcile` (I/O), `queue` (work queue),
//! `world` (shared state), `grpc` (service, session state machine, auth seam, scope),
//! `identity` (TokenReview authentication through Rancher's proxy), `leader` (Lease-based
//! leader election for several replicas), `forward` (a standby's forwarding to the
//! leader), `resync` (periodic re-evaluation from memory), `metrics`, `http`
//! (metrics/health), `tls` and `certreload` (serving certificate), `ratelimit`.
#![forbid(unsafe_code)]

pub mod certreload;
pub mod config;
pub mod decide;
pub mod forward;
pub mod grpc;
pub mod http;
pub mod identity;
pub mod index;
pub mod leader;
pub mod metrics;
pub mod owners;
pub mod queue;
pub mod rancher;
pub mod ratelimit;
pub mod reconcile;
pub mod resync;
pub mod tls;
pub mod world;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use crate::config::{Args, LogFormat};
use crate::grpc::auth::AgentAuthenticator;
use crate::grpc::service::LinkService;
use crate::world::{Hub, HubConfig};

/// Runs the hub against the cluster `kube::Config::infer` finds (KUBECONFIG honoured)
/// until `shutdown` is cancelled. With `--leader-election` it first stands by until it
/// holds the leader Lease, leads while it keeps it, and releases it on shutdown.
pub async fn run(args: Args, shutdown: CancellationToken) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes client configuration (in-cluster ServiceAccount or KUBECONFIG)")?;
    let Some(cfg) = leader::LeaderConfig::from_args(&args, client.default_namespace())? else {
        return lead(args, client, shutdown).await;
    };
    let mut elector = leader::Elector::new(client.clone(), cfg);
    let standby = shutdown.child_token();
    let lease = format!("{}/{}", elector.config().namespace, elector.config().lease);
    let server = http::serve_standby(args.metrics_listen, lease, standby.clone()).await?;
    let forwarder = forward::serve(args.listen, elector.leader_address(), standby.clone()).await?;
    let acquired = elector.acquire(&shutdown).await;
    standby.cancel();
    let _ = tokio::join!(server, forwarder);
    if !acquired? {
        return Ok(());
    }
    let work = shutdown.child_token();
    let leading = async {
        let r = lead(args, client, work.clone()).await;
        work.cancel();
        r
    };
    let (result, outcome) = tokio::join!(leading, elector.hold(&work));
    match outcome {
        leader::Outcome::Stopped => {
            if let Err(e) = elector.release().await {
                tracing::warn!(error = %e, "could not release the leader lease; a standby takes over when it expires");
            }
            result
        }
        leader::Outcome::Lost(reason) => {
            result?;
            anyhow::bail!("lost the leader lease ({reason}); exiting to restart as a standby")
        }
    }
}

/// Runs one leading hub: its Rancher credential, then [`run_with`].
async fn lead(args: Args, client: kube::Client, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (auth, rotation) = identity::build(&args, &client, &shutdown).await?;
    let result = run_with(args, client, auth, shutdown.clone()).await;
    // The rotation task deletes the hub's current Rancher token when it stops.
    shutdown.cancel();
    if let Some(t) = rotation {
        let _ = t.await;
    }
    result
}

/// [`run`] with an explicit client and authenticator (tests use this).
pub async fn run_with(
    args: Args,
    client: kube::Client,
    auth: Arc<dyn AgentAuthenticator>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let tls = tls::server_config(&args.tls_cert_file, &args.tls_key_file)?;
    rancher::check_apis(&client).await?;
    let cfg = HubConfig {
        workspace: args.fleet_workspace.clone(),
        grace: args.removal_grace,
        heartbeat_seconds: args.heartbeat_seconds,
        max_vclusters: args.max_vclusters_per_agent,
        tls_mode: args.registration_tls_mode,
    };
    let (queue, delay_rx) = queue::Queue::new();
    let mut hub = Hub::new(cfg, queue.clone());
    if let Some(m) = auth.metrics() {
        hub.metrics.add_identity(&m);
    }
    hub.metrics.leader.set(1);
    let hub = Arc::new(hub);
    let mut tasks = Vec::new();
    tasks.push(http::serve(args.metrics_listen, hub.clone(), shutdown.clone()).await?);
    tasks.push(tokio::spawn(queue.run_delays(delay_rx, shutdown.clone())));
    tasks.push(tokio::spawn(resync::run(
        hub.clone(),
        args.resync_interval,
        shutdown.clone(),
    )));
    tasks.extend(rancher::watch::spawn_all(
        client.clone(),
        hub.clone(),
        shutdown.clone(),
    ));
    let limiter = ratelimit::RateLimiter::new(args.kube_qps, args.kube_burst);
    if args.owner_sync != config::OwnerSyncMode::Disabled {
        let mapping = owners::RoleMapping::from_arg(args.owner_role_mapping.as_deref())
            .context("--owner-role-mapping")?;
        owners::check_apis(&client).await?;
        let grant = owners::grant::Grant::from_args(
            args.owner_grant_cluster_role.as_deref(),
            args.owner_grant_service_account.as_deref(),
        )?;
        tasks.extend(owners::spawn(
            client.clone(),
            hub.clone(),
            mapping,
            grant,
            limiter.clone(),
            shutdown.clone(),
        ));
    }
    let writer = Arc::new(rancher::write::Rancher::new(
        client,
        &args.fleet_workspace,
        limiter,
    ));
    tasks.extend(reconcile::spawn_workers(
        hub.clone(),
        writer,
        usize::from(args.workers),
        shutdown.clone(),
    ));
    let svc = LinkService::new(hub.clone(), auth, shutdown.clone())
        .with_limits(grpc::service::EdgeLimits {
            message_rate: args.agent_message_rate,
            message_burst: args.agent_message_burst,
            reverify_interval: args.agent_reverify_interval,
        })
        .into_server();
    tracing::info!(listen = %args.listen, workspace = %args.fleet_workspace, "vclink hub serving agents");
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding --listen {}", args.listen))?;
    let incoming = tls::incoming(listener, tls, shutdown.clone());
    let served = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned())
        .await
        .with_context(|| format!("serving gRPC on {}", args.listen));
    shutdown.cancel();
    for t in tasks {
        let _ = t.await;
    }
    served
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => b.json().try_init(),
        LogFormat::Text => b.try_init(),
    };
}

/// Entry point of the `vclink-hub` binary.
pub fn main_entry() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    init_tracing(args.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vclink-hub: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    let result = rt.block_on(async {
        let s = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            s.cancel();
        });
        run(args, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "vclink-hub failed");
            eprintln!("vclink-hub: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
