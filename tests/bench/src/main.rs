//! `vclink-bench`: measures the hub and the agent against real API servers with the
//! release binaries and prints the numbers (also to `results.json` / `results.txt`).
//! Run through `./bench.sh`, which builds the release binaries first. See
//! [`scenario`] for the sequence, [`report`] for what each number means.
#![forbid(unsafe_code)]

mod attack;
mod bulk;
mod env;
mod faultproxy;
mod faults;
mod hostile;
mod leaderkill;
mod leaderscale;
mod loadgen;
mod measure;
mod player;
mod report;
mod restart;
mod scenario;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// Command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "vclink-bench",
    about = "vclink benchmarks: hub memory at scale, token→Register latency, idle API requests, agent memory"
)]
pub struct Args {
    /// Simulated agents (gRPC streams to the hub).
    #[arg(long, default_value_t = 200)]
    pub agents: usize,
    /// vClusters reported by the simulated agents in total.
    #[arg(long, default_value_t = 5_000)]
    pub vclusters: usize,
    /// Registrations held back until every one is waiting for its token, then measured.
    #[arg(long, default_value_t = 1_000)]
    pub in_flight: usize,
    /// Full scale: 2,000 agents × 50,000 vClusters, of which all but the `--in-flight`
    /// ones are pre-populated by the bulk stand-in (unless `--bulk` says otherwise), and
    /// `--abort-minutes` 45 unless given.
    #[arg(long)]
    pub full: bool,
    /// vClusters whose Rancher objects the bulk stand-in writes in their steady state
    /// before the hub starts (imported and connected; no controllers run for them). The
    /// others go through the hub and the benchmark's Rancher player. Default 0 (none),
    /// with `--full` everything but `--in-flight`.
    #[arg(long)]
    pub bulk: Option<usize>,
    /// vClusters the bulk stand-in writes in parallel (4 requests each).
    #[arg(long, default_value_t = 48)]
    pub bulk_parallel: usize,
    /// vCluster Services watched by the real agent (0 skips the agent benchmark).
    #[arg(long, default_value_t = 500)]
    pub services: usize,
    /// Idle window for counting API requests (seconds).
    #[arg(long, default_value_t = 60)]
    pub idle_seconds: u64,
    /// The hub's --kube-qps (burst = 2×); the product default is 50.
    #[arg(long, default_value_t = 500)]
    pub hub_kube_qps: u32,
    /// The agent's --kube-qps; the product default is 5.
    #[arg(long, default_value_t = 50)]
    pub agent_kube_qps: u32,
    /// Token writes in parallel during the latency phase (more parallel writes queue in
    /// the API server, which widens the gap between the two latency bounds).
    #[arg(long, default_value_t = 8)]
    pub token_parallel: usize,
    /// Simulated agents connecting at once.
    #[arg(long, default_value_t = 64)]
    pub connect_parallel: usize,
    /// Longest wait for any convergence step (seconds).
    #[arg(long, default_value_t = 3_600)]
    pub timeout_seconds: u64,
    /// Extra environment for the hub process, `KEY=VALUE` (repeatable), e.g.
    /// `MALLOC_ARENA_MAX=2` to see how much of its RSS is allocator arenas.
    #[arg(long, value_parser = parse_env)]
    pub hub_env: Vec<(String, String)>,
    /// Extra environment for the real agent process, `KEY=VALUE` (repeatable).
    #[arg(long, value_parser = parse_env)]
    pub agent_env: Vec<(String, String)>,
    /// Skip the hub-restart measurement at the end of the scale benchmark.
    #[arg(long)]
    pub no_restart: bool,
    /// Fault report instead (cases on real API servers; see `faults`).
    #[arg(long)]
    pub faults: bool,
    /// Hostile-client benchmark instead (loopback, bounded; see `hostile`).
    #[arg(long)]
    pub hostile: bool,
    /// `--hostile`: unauthenticated slow-Hello connections.
    #[arg(long, default_value_t = 2_000)]
    pub hostile_slow: usize,
    /// `--hostile`: junk-token Hellos per second.
    #[arg(long, default_value_t = 100)]
    pub hostile_junk_rate: u32,
    /// `--hostile`: genuine simulated agents reconnecting during the attack.
    #[arg(long, default_value_t = 200)]
    pub hostile_genuine: usize,
    /// Abort a mode past this many minutes (everything started is stopped). Default 15,
    /// with `--full` 45.
    #[arg(long)]
    pub abort_minutes: Option<u64>,
    /// Directory for results.json / results.txt.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,kube_client::client::builder=off")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let mut args = Args::parse();
    if args.full {
        args.agents = 2_000;
        args.vclusters = 50_000;
        args.bulk = Some(
            args.bulk
                .unwrap_or(args.vclusters.saturating_sub(args.in_flight)),
        );
        args.abort_minutes = Some(args.abort_minutes.unwrap_or(45));
    }
    let bulk = args.bulk.unwrap_or(0);
    if args.agents == 0 || args.in_flight + bulk > args.vclusters {
        eprintln!(
            "vclink-bench: need --agents ≥ 1 and --in-flight + --bulk ≤ --vclusters (the bulk stand-in's vClusters are already connected, so none of them can be measured in flight)"
        );
        return ExitCode::FAILURE;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vclink-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // On ctrl-c / SIGTERM the run is dropped, which stops the hub, the agent and the
    // API servers it started.
    let run = async {
        let limit = Duration::from_secs(args.abort_minutes.unwrap_or(15) * 60);
        let mode = async {
            if args.faults {
                faults::run(&args).await
            } else if args.hostile {
                hostile::run(&args).await
            } else {
                scenario::run(args.clone()).await
            }
        };
        tokio::select! {
            r = tokio::time::timeout(limit, mode) => r.unwrap_or_else(|_| Err(anyhow::anyhow!(
                "aborted after {} minutes (--abort-minutes); everything started was stopped", limit.as_secs() / 60
            ))),
            _ = stop_signal() => Err(anyhow::anyhow!("interrupted; everything started was stopped")),
        }
    };
    match rt.block_on(run) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vclink-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
