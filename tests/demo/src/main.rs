//! `vclink-demo`: brings up real API servers (Rancher's local cluster, one downstream
//! cluster, one API server per vCluster), the Rancher simulator, and vclink's hub and
//! agent as real processes; creates two vClusters, prints every step of their import as
//! it happens, a final table, then removes one to show the cleanup. Everything is torn
//! down at the end, on error and on Ctrl-C (dropping the environment stops every
//! process it started).
#![forbid(unsafe_code)]

mod observe;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::time::Instant;
use vclink_harness::{E2eEnv, E2eOptions, Flavour, SimVCluster, VClusterSpec};
use vclink_rancher_sim::RancherVersion;

use observe::{Facts, Observer, Watchlist};

const WORKSPACE: &str = "fleet-default";

/// Shows vclink importing vClusters into a simulated Rancher, on real kube-apiservers.
#[derive(Parser, Debug)]
#[command(name = "vclink-demo", version)]
struct Args {
    /// Rancher version the simulator plays: 2.13 (token in status), 2.14, 2.15 (token
    /// in a Secret, `{token}` placeholders).
    #[arg(long, default_value = "2.15", value_parser = parse_version)]
    rancher: RancherVersion,
    /// Keep everything running after the demo until Ctrl-C, to look around with the
    /// printed kubeconfigs.
    #[arg(long)]
    hold: bool,
    /// How long to wait for each phase before giving up.
    #[arg(long, default_value = "180", value_name = "SECONDS")]
    timeout: u64,
}

fn parse_version(s: &str) -> Result<RancherVersion, String> {
    match s {
        "2.13" => Ok(RancherVersion::V2_13),
        "2.14" => Ok(RancherVersion::V2_14),
        "2.15" => Ok(RancherVersion::V2_15),
        other => Err(format!(
            "unknown Rancher version {other:?}; use 2.13, 2.14 or 2.15"
        )),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let outcome = tokio::select! {
        r = demo(&args) => r,
        _ = interrupted() => {
            println!("\ninterrupted: tearing everything down");
            Ok(())
        }
    };
    // By here the environment has been dropped: every API server, etcd, hub, agent and
    // Job process it started is stopped.
    match outcome {
        Ok(()) => {
            println!("all processes stopped; bye");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\nvclink-demo failed: {e:#}");
            eprintln!("all processes stopped");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn interrupted() {
    #[cfg(unix)]
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        return;
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn step(n: u32, what: &str) {
    println!("\n== {n}. {what}");
}

async fn demo(args: &Args) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(args.timeout);
    step(
        1,
        "starting the environment (the first run installs etcd and builds kube-apiserver: minutes)",
    );
    let t0 = Instant::now();
    let env = E2eEnv::start(E2eOptions {
        rancher_version: args.rancher,
        ..E2eOptions::default()
    })
    .await
    .context("bringing up the demo environment")?;
    let d = env.downstream();
    println!(
        "  Rancher's local cluster   {}  (kubeconfig {})",
        env.local.url(),
        env.local.kubeconfig_path().display()
    );
    println!(
        "  Rancher simulator         {}  (plays Rancher {:?})",
        env.sim.server_url(),
        args.rancher
    );
    println!(
        "  downstream cluster        {}  (Rancher id {}, kubeconfig {})",
        d.cluster.url(),
        d.cluster_id,
        d.cluster.kubeconfig_path().display()
    );
    println!("  vclink-hub                {}", env.hub.url());
    println!(
        "  vclink-agent              running in {}, connected to the hub",
        d.name
    );
    println!("  ready after {:.1}s", t0.elapsed().as_secs_f64());

    step(
        2,
        "creating two vClusters in the downstream cluster while watching vclink import them",
    );
    let project = env
        .sim
        .create_project(&d.cluster_id, "Team A")
        .await
        .context("creating a Rancher project for team-a")?;
    let specs = [
        (
            VClusterSpec::new("team-a", "dev").project(&format!("{}:{}", d.cluster_id, project.id)),
            "vCluster v0.20+ layout, namespace in Rancher project \"Team A\"",
        ),
        (
            VClusterSpec::new("team-b", "ci")
                .flavour(Flavour::V019)
                .resource_quota()
                .pod_security_restricted(),
            "vCluster v0.19 layout, ResourceQuota, Pod Security \"restricted\"",
        ),
    ];
    let watchlist = Watchlist::default();
    let mut observer = Observer::default();
    let create = async {
        for (spec, what) in specs.iter() {
            let vc = env.create_vcluster(0, spec.clone()).await?;
            println!(
                "  created {}/{}: {what} (its API server: {})",
                vc.namespace(),
                vc.name(),
                vc.api().url()
            );
            watchlist.push(Arc::new(vc));
        }
        anyhow::Ok(())
    };
    let follow = observer.follow(&env, WORKSPACE, &watchlist, specs.len(), timeout, |f| {
        f.ready && f.manifest_applied && f.service_state.as_deref() == Some("connected")
    });
    let (created, followed) = tokio::join!(create, follow);
    created?;
    let facts = followed.map_err(|e| with_logs(e, &env))?;
    let vcs = watchlist.snapshot();
    print_table(&vcs, &facts);

    step(
        3,
        "deleting the Service of team-b/ci: its Rancher cluster goes with it",
    );
    let removed = vcs[1].clone();
    removed.delete().await?;
    let only_b = Watchlist::default();
    only_b.push(removed);
    observer
        .follow(&env, WORKSPACE, &only_b, 1, timeout, |f| {
            f.service_gone && f.cluster.is_none()
        })
        .await
        .map_err(|e| with_logs(e, &env))?;
    let facts = observer.look(&env, WORKSPACE, &vcs, Instant::now()).await;
    print_table(&vcs, &facts);

    println!("\n  what a cluster user sees — `vclink-agent status` in the downstream cluster:");
    let status = tokio::process::Command::new(vclink_harness::procs::binary("vclink-agent")?)
        .arg("status")
        .env("KUBECONFIG", d.cluster.kubeconfig_path())
        .output()
        .await
        .context("running vclink-agent status")?;
    for line in String::from_utf8_lossy(&status.stdout).lines() {
        println!("  {line}");
    }

    if args.hold {
        step(4, "holding: everything keeps running until Ctrl-C");
        println!(
            "  try: KUBECONFIG={} kubectl get clusters.provisioning.cattle.io -A",
            env.local.kubeconfig_path().display()
        );
        std::future::pending::<()>().await;
    }
    step(if args.hold { 5 } else { 4 }, "tearing down");
    Ok(())
}

fn print_table(vcs: &[Arc<SimVCluster>], facts: &[Facts]) {
    let rows: Vec<[String; 4]> = vcs
        .iter()
        .zip(facts)
        .map(|(vc, f)| {
            [
                format!("{}/{}", vc.namespace(), vc.name()),
                f.cluster.clone().unwrap_or_else(|| "-".into()),
                f.cluster_id.clone().unwrap_or_else(|| "-".into()),
                f.summary(),
            ]
        })
        .collect();
    let head = ["vCluster", "Rancher cluster", "id", "state"];
    let mut w = head.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    println!();
    let line = |c: [&str; 4]| {
        println!(
            "  {:<w0$}  {:<w1$}  {:<w2$}  {}",
            c[0],
            c[1],
            c[2],
            c[3],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2]
        )
    };
    line(head);
    line([
        &"-".repeat(w[0]),
        &"-".repeat(w[1]),
        &"-".repeat(w[2]),
        &"-".repeat(w[3]),
    ]);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3]]);
    }
}

/// Adds the tails of the hub's and agent's logs to an error, since that is where the
/// reason for a stuck import is.
fn with_logs(e: anyhow::Error, env: &E2eEnv) -> anyhow::Error {
    let agent = env
        .downstream()
        .agent
        .as_ref()
        .map(|a| a.log_buffer().tail(20))
        .unwrap_or_default();
    e.context(format!(
        "hub log (last lines):\n{}\nagent log (last lines):\n{agent}",
        env.hub.log_buffer().tail(20)
    ))
}
