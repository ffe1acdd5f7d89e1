//! vclink hub: runs in Rancher's local cluster, accepts one gRPC stream per downstream
//! cluster's agent, turns the vClusters the agents report into Rancher provisioning
//! clusters, hands out registration commands as soon as Rancher's token exists, and
//! deletes clusters only with an agent's proof that their vCluster is gone.
//!
//! This file only wires the parts together ([`run`], [`run_with`]).
//!
//! # Module map
//!
//! - [`config`]: command-line flags and their environment fallbacks.
//! - [`leader`]: Lease-based leader election between replicas.
//! - [`core`]: pure, no I/O, depends on nothing else here:
//!   - [`core::keys`]: `VcKey`, a vCluster's identity (host cluster id + Service UID).
//!   - [`core::index`]: the reduced Rancher objects and their lookups.
//!   - [`core::decide`]: what to do next for one vCluster.
//!   - [`core::session`]: the per-stream protocol state machine.
//!   - [`core::scope`]: an agent speaks only about its own host's vClusters.
//!   - [`core::backoff`]: the one retry delay.
//! - [`state`]: the shared state (index + live agent streams) behind one lock: attach,
//!   apply an agent's message, send, record what the hub wrote.
//! - [`queue`]: the deduplicated work queue with delayed re-queues (the controller and
//!   owner sync each run one).
//! - [`watch`]: the reduced-watch helper every watch of the hub runs on.
//! - [`clusters`]: the provisioning-cluster controller:
//!   - [`clusters::feed`]: Rancher watch events applied to the state.
//!   - [`clusters::workers`]: decide, send, write.
//!   - [`clusters::ensure`]: adopt / create under a free name / delete.
//!   - [`clusters::resync`]: periodic re-evaluation from memory.
//! - [`owners`]: owner sync (who may use a vCluster's Rancher cluster):
//!   - [`owners::model`], [`owners::mapping`], [`owners::desired`], [`owners::store`],
//!     [`owners::watch`], [`owners::acting`], [`owners::apply`].
//! - [`rancher`]: the Rancher adapter; never sees the state:
//!   - [`rancher::kinds`]: every Rancher `ApiResource`, in one table.
//!   - [`rancher::watch`]: the six watches, handing reduced events to a `Feed`.
//!   - [`rancher::clusters`]: the `ProvClusters` seam and its kube implementation.
//! - [`grpc`]: the agent edge; never sees the Rancher adapter:
//!   - [`grpc::service`]: the tonic service `vclink.v1.Link`.
//!   - [`grpc::tls`], [`grpc::certreload`]: the listener's TLS and certificate reload.
//!   - [`grpc::forward`]: a standby's forwarding to the leader.
//! - [`identity`]: who an agent is:
//!   - [`identity::auth`]: the `AgentAuthenticator` seam.
//!   - [`identity::tokenreview`], [`identity::cache`], [`identity::jwt`],
//!     [`identity::proxy`]: TokenReviews through Rancher's cluster proxy.
//!   - [`identity::credential`]: the hub's own Rancher credential.
//!   - [`identity::metrics`]: identity counters.
//! - [`mirror`]: what the hub knows of each vCluster (synced labels, quota, state),
//!   shown on its Rancher management cluster.
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`metrics`]: the hub's Prometheus metrics.
//! - `testing` (hidden): one builder of a test hub for unit and integration tests.
//!
//! # One new vCluster, from the agent's watch to the provisioning-cluster create
//!
//! The agent's part: its Service watch folds the event into its catalog, a `watch`
//! channel wakes its link (hand-off), which diffs the catalog and sends `Upsert` on the
//! gRPC stream (hand-off). Then, in the hub (a hop is a call from one file into
//! another; `[lock n]` a take of the state lock, `[hand-off]` an async one):
//!
//! 1. `grpc/service` → `core/session`: validated, `Effect::Upsert`.
//! 2. `grpc/service` → `state` (`Hub::apply`) `[lock 1]`.
//! 3. `state` → `core/scope`, 4. `core/scope` → `core/index`: the scope check.
//! 5. `state` → `queue` `[hand-off]`; 6. `queue` → `clusters/workers`.
//! 7. `clusters/workers` → `state` `[lock 2]`, 8. → `core/decide`: `Action::Create`.
//! 9. `clusters/workers` → `clusters/ensure` in a spawned task `[hand-off]`.
//! 10. `clusters/ensure` → `state` (`Known::legacy_cluster`) `[lock 3]`, 11. →
//!     `state` (`Known::name_use`) `[lock 4]`.
//! 12. `clusters/ensure` → `rancher/clusters` (`ProvClusters::create`), 13. →
//!     `vclink_proto::ratelimit` (`until_ready`), 14. → `rancher` (`parse_prov`).
//! 15. `clusters/ensure` → `state` (`Hub::record_written`) `[lock 5]`, which queues
//!     the key for its next step.
//!
//! Before this layout the same path was 14 hops over 12 files (`grpc/service`,
//! `grpc/session`, `world`, `grpc/scope`, `index`, `queue`, `reconcile`, `decide`,
//! `rancher/write`, `rancher/mod`, `ratelimit`, `proto/ratelimit`), 3 async hand-offs
//! in the hub (+2 in the agent), 3 back-edges (calls into a module that depends on the
//! caller: `world` → `grpc::scope`, `rancher::write` → `world` for every state read,
//! `rancher::write` → `reconcile` for its error type) and 5 takes of the lock. After it:
//! 15 hops over 12 files (the Rancher writer is split into the `ensure` logic and the
//! adapter, so one more), 3 + 2 hand-offs, 0 back-edges (every step calls downward:
//! `grpc` → `state` → `core`; `clusters` → `state`, `rancher` → `core`) and the same 5
//! lock takes (no behaviour changed), three of which were hidden inside the Rancher
//! writer and are now the explicit `Known` calls a unit test replaces.
#![forbid(unsafe_code)]

pub(crate) mod clusters;
pub mod config;
pub(crate) mod core;
pub mod grpc;
pub(crate) mod http;
pub mod identity;
pub(crate) mod leader;
pub(crate) mod metrics;
pub(crate) mod mirror;
pub(crate) mod owners;
pub(crate) mod preflight;
pub(crate) mod queue;
pub mod rancher;
pub mod state;
#[doc(hidden)]
pub mod testing;
pub(crate) mod watch;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use vclink_proto::ratelimit::{Fence, RateLimiter};

use crate::config::{Args, LogFormat};
use crate::grpc::service::LinkService;
use crate::identity::auth::AgentAuthenticator;
use crate::rancher::clusters::KubeProvClusters;
use crate::state::{Hub, HubConfig};

/// Runs the hub against the cluster `kube::Config::infer` finds (KUBECONFIG honoured)
/// until `shutdown` is cancelled. With `--leader-election` it first stands by until it
/// holds the leader Lease, leads while it keeps it, and releases it on shutdown.
pub async fn run(args: Args, shutdown: CancellationToken) -> anyhow::Result<()> {
    preflight::check(&args)?;
    args.validate().map_err(anyhow::Error::msg)?;
    let config = kube_config().await?;
    let api_url = config.cluster_url.to_string();
    let client = kube::Client::try_from(config).context("cannot build the Kubernetes client")?;
    run_on(args, client, shutdown).await.map_err(|e| {
        if preflight::is_unreachable(&e) {
            e.context(format!(
                "the Kubernetes API server {api_url} is unreachable"
            ))
        } else {
            e
        }
    })
}

/// [`run`] once the client exists.
async fn run_on(
    args: Args,
    client: kube::Client,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Some(cfg) = leader::LeaderConfig::from_args(&args, client.default_namespace())? else {
        return lead(args, client, shutdown, Fence::always()).await;
    };
    let mut elector = leader::Elector::new(client.clone(), cfg);
    let standby = shutdown.child_token();
    let lease = format!("{}/{}", elector.config().namespace, elector.config().lease);
    let server = http::serve_standby(args.metrics_listen, lease, standby.clone()).await?;
    let forwarding = grpc::forward::ForwardSettings {
        own: elector.config().advertise.clone(),
        max_connections: args.forward_max_connections as usize,
        idle_timeout: args.forward_idle_timeout,
    };
    let forwarder = grpc::forward::serve(
        args.listen,
        elector.leader_address(),
        forwarding,
        standby.clone(),
    )
    .await?;
    // A standby's health: alive, and ready while it forwards (see grpc::health).
    let health = match args.health_listen {
        Some(addr) => {
            let (reporter, service) = tonic_health::server::health_reporter();
            grpc::health::report(&reporter, false, false).await;
            Some(grpc::health::serve_plain(addr, service, standby.clone()).await?)
        }
        None => None,
    };
    let acquired = elector.acquire(&shutdown).await;
    standby.cancel();
    let _ = tokio::join!(server, forwarder);
    if let Some(h) = health {
        // The leader binds the same address next.
        let _ = h.await;
    }
    if !acquired? {
        return Ok(());
    }
    let work = shutdown.child_token();
    let fence = elector.fence();
    let leading = async {
        let r = lead(args, client, work.clone(), fence).await;
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
/// Its Kubernetes writes go out only while `fence` holds (leader election).
async fn lead(
    args: Args,
    client: kube::Client,
    shutdown: CancellationToken,
    fence: Fence,
) -> anyhow::Result<()> {
    let (auth, rotation) = identity::build(&args, &client, &shutdown).await?;
    let result = run_fenced(args, client, auth, shutdown.clone(), fence).await;
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
    run_fenced(args, client, auth, shutdown, Fence::always()).await
}

/// [`run_with`] whose writes stop the moment `fence` no longer holds.
async fn run_fenced(
    args: Args,
    client: kube::Client,
    auth: Arc<dyn AgentAuthenticator>,
    shutdown: CancellationToken,
    fence: Fence,
) -> anyhow::Result<()> {
    args.validate().map_err(anyhow::Error::msg)?;
    let workspaces = args.workspaces().map_err(anyhow::Error::msg)?;
    if workspaces.has_display_names() {
        tracing::warn!(
            "--fleet-workspace-for-project has display-name entries: a project owner can rename their project to send their own new clusters to any workspace a display name reaches (docs/rancher.md, Fleet workspaces); use <cluster-id>:<p-id> entries for workspaces that must not receive them"
        );
    }
    let tls = grpc::tls::server_config(&args.tls_cert_file, &args.tls_key_file)?;
    rancher::check_apis(&client).await?;
    // The proof key before any watch: every cluster is judged with it from the first
    // event on (a standby reads it here when it becomes leader).
    let proof_namespace = args
        .proof_key_namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let proof_key = Arc::new(
        clusters::proofkey::load_or_create(client.clone(), &proof_namespace)
            .await
            .context("the hub's proof key")?,
    );
    let synced_labels = if args.rancher_mirror {
        Some(
            mirror::LabelPolicy::new(&args.sync_labels_include, &args.sync_labels_exclude)
                .map_err(anyhow::Error::msg)
                .context("--sync-labels-include / --sync-labels-exclude")?,
        )
    } else {
        None
    };
    let cfg = HubConfig {
        synced_labels: synced_labels.clone(),
        proof_key: proof_key.clone(),
        workspace: args.fleet_workspace.clone(),
        workspaces: workspaces.clone(),
        create_workspaces: args.create_fleet_workspaces,
        grace: args.removal_grace,
        heartbeat_seconds: args.heartbeat_seconds,
        max_vclusters: args.max_vclusters_per_agent,
        max_per_namespace: args.max_vclusters_per_namespace,
        hosts: core::scope::HostOptIn {
            selector: Some(args.host_selector.to_string()),
            allow_nested: args.allow_nested_hosts,
        },
        tls_mode: args.registration_tls_mode,
    };
    let (queue, delay_rx) = queue::Queue::new();
    let mut hub = Hub::new(cfg, queue.clone());
    if let Some(m) = auth.metrics() {
        hub.metrics.register(|r| m.register(r));
    }
    hub.metrics.leader.set(1);
    let hub = Arc::new(hub);
    let mut tasks = Vec::new();
    tasks.push(http::serve(args.metrics_listen, hub.clone(), shutdown.clone()).await?);
    tasks.push(tokio::spawn(queue.run_delays(delay_rx, shutdown.clone())));
    tasks.push(tokio::spawn(clusters::resync::run(
        hub.clone(),
        args.resync_interval,
        shutdown.clone(),
    )));
    tasks.extend(rancher::watch::spawn_all(
        client.clone(),
        workspaces.has_display_names(),
        rancher::watch::Trusting {
            proof_key: proof_key.clone(),
            operator_creator: Some(args.adopt_operator_clusters_created_by.clone())
                .filter(|u| !u.is_empty()),
        },
        &args.host_selector,
        hub.clone(),
        shutdown.clone(),
    ));
    let limiter = RateLimiter::new(args.kube_qps, args.kube_burst).with_fence(fence);
    if args.owner_grant_cluster_role.is_some() || args.owner_grant_service_account.is_some() {
        tracing::warn!(
            "--owner-grant-cluster-role / --owner-grant-service-account (VCLINK_OWNER_GRANT_*) are deprecated and ignored: the hub no longer binds itself to a role; it acts as --impersonate-user"
        );
    }
    let acting_client = match args.acting_user() {
        Some(user) => Some((user.to_string(), rancher::impersonating_client(user).await?)),
        None => None,
    };
    if args.owner_sync != config::OwnerSyncMode::Disabled {
        let mapping = owners::RoleMapping::from_arg(args.owner_role_mapping.as_deref())
            .context("--owner-role-mapping")?;
        owners::check_apis(&client).await?;
        let acting = acting_client
            .clone()
            .map(|(user, client)| owners::acting::Acting { user, client });
        tasks.extend(owners::spawn(
            client.clone(),
            hub.clone(),
            mapping,
            acting,
            Some(args.adopt_operator_clusters_created_by.clone()),
            limiter.clone(),
            shutdown.clone(),
        ));
    }
    if let Some(policy) = synced_labels {
        tasks.extend(mirror::spawn(
            client.clone(),
            hub.clone(),
            policy,
            limiter.clone(),
            shutdown.clone(),
        ));
    }
    let mut writer =
        KubeProvClusters::new(client, limiter, hub.metrics.api_requests.clone(), proof_key);
    if let Some((_, as_user)) = acting_client {
        writer = writer.creating_as(as_user);
    }
    let writer = Arc::new(writer);
    tasks.extend(clusters::workers::spawn_workers(
        hub.clone(),
        writer,
        usize::from(args.workers),
        shutdown.clone(),
    ));
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let ready = {
        let hub = hub.clone();
        Arc::new(move || hub.is_ready()) as Arc<dyn Fn() -> bool + Send + Sync>
    };
    grpc::health::report(&health_reporter, true, false).await;
    tasks.push(grpc::health::follow_readiness(
        health_reporter,
        ready,
        shutdown.clone(),
    ));
    if let Some(addr) = args.health_listen {
        tasks
            .push(grpc::health::serve_plain(addr, health_service.clone(), shutdown.clone()).await?);
    }
    // One settings value: the service and the accept loop share its recent peers.
    let edge = grpc::edge::EdgeSettings::from_args(&args);
    let svc = LinkService::new(hub.clone(), auth, shutdown.clone())
        .with_limits(grpc::service::EdgeLimits {
            message_rate: args.agent_message_rate,
            message_burst: args.agent_message_burst,
            reverify_interval: args.agent_reverify_interval,
        })
        .with_edge(edge.clone())
        .into_server();
    tracing::info!(listen = %args.listen, workspace = %args.fleet_workspace,
        per_project = workspaces.is_mapped(), create_workspaces = args.create_fleet_workspaces,
        "vclink hub serving agents");
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding --listen {}", args.listen))?;
    let incoming = grpc::tls::incoming_gated(
        listener,
        tls,
        edge.accept.clone(),
        edge.handshake_gate(),
        Some(hub.metrics.rejections.clone()),
        shutdown.clone(),
    );
    let served = grpc::edge::server(&edge)
        .add_service(svc)
        .add_service(health_service)
        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned())
        .await
        .with_context(|| format!("serving gRPC on {}", args.listen));
    shutdown.cancel();
    for t in tasks {
        let _ = t.await;
    }
    served
}

/// Kubernetes client settings (KUBECONFIG, ~/.kube/config or in-cluster), failing with a
/// sentence that names the file it tried.
async fn kube_config() -> anyhow::Result<kube::Config> {
    kube::Config::infer().await.map_err(|e| {
        let what = match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
            Some(path) => format!(
                "KUBECONFIG={} cannot be used; point KUBECONFIG at a readable kubeconfig file",
                std::path::PathBuf::from(path).display()
            ),
            None => "no Kubernetes credentials: not in a pod with a ServiceAccount and no KUBECONFIG or \
                     ~/.kube/config; set KUBECONFIG"
                .to_string(),
        };
        anyhow::Error::new(e).context(what)
    })
}

/// An error and its causes on one line, each once (see
/// [`vclink_proto::cli::chain_line`]).
pub fn one_line(e: &anyhow::Error) -> String {
    vclink_proto::cli::chain_line(e.chain())
}

/// Logging to stderr (see [`vclink_proto::cli::init_tracing`]).
fn init_tracing(format: LogFormat) {
    vclink_proto::cli::init_tracing(matches!(format, LogFormat::Json));
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
            // Once, as a log line (in the chosen format), on one line.
            tracing::error!(error = %one_line(&e), "vclink-hub stopped");
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
