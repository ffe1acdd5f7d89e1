//! The benchmark sequence, one environment for all measurements:
//! 1. local + downstream clusters (audited), Rancher APIs; with `--bulk`, the bulk
//!    stand-in's vClusters written in their steady state ([`crate::bulk`]); the release
//!    hub; hub RSS at rest;
//! 2. the real agent with `--services` vCluster Services, until all are `connected`;
//! 3. N simulated agents with empty snapshots (per-agent memory), then the full
//!    snapshots of M vClusters; K of them are held at "waiting for registration token";
//! 4. the K tokens are written and each Register's arrival timed;
//! 5. after everything is connected and the hub's API counter stands still, an idle
//!    window in which the audit logs count every request of the hub and the agent and
//!    both processes' memory is sampled;
//! 6. the hub killed and started again at this scale ([`crate::restart`]).
//!
//! Waits have deadlines and print progress; nothing is asserted — the numbers are the output.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use vclink_harness::HubProcess;
use vclink_proto::v1::{State, VCluster};

use crate::Args;
use crate::env::{self, AGENT_USER, HUB_USER, REAL_AGENT_CLUSTER, WORKSPACE};
use crate::loadgen::{HubTarget, LoadGen, fake_agents};
use crate::measure::{Rss, count_requests, cpu_seconds, percentiles};
use crate::player::{Player, write_token};
use crate::report::{self, AgentMemory, Cpu, Results, Scale};

/// Waits until `done()` is true, printing `progress()` every 10 s.
pub(crate) async fn wait_until(
    what: &str,
    timeout: Duration,
    mut done: impl AsyncFnMut() -> bool,
    progress: impl Fn() -> String,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut last_print = start;
    loop {
        if done().await {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            anyhow::bail!(
                "timed out after {timeout:?} waiting for {what} ({})",
                progress()
            );
        }
        if last_print.elapsed() >= Duration::from_secs(10) {
            eprintln!(
                "[bench] {:>6.0} s waiting for {what}: {}",
                start.elapsed().as_secs_f64(),
                progress()
            );
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub(crate) fn rss(pid: Option<u32>) -> Rss {
    pid.and_then(|p| Rss::of(p).ok()).unwrap_or_default()
}

/// Sum of the samples of a metric family in Prometheus text (`name{…} v` lines).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub(crate) async fn hub_metric(hub: &HubProcess, name: &str) -> f64 {
    hub.metrics()
        .await
        .map(|t| metric_sum(&t, name))
        .unwrap_or(f64::NAN)
}

/// `k` of `all`, every `len/k`-th, in order.
fn spread<'a>(all: &[&'a str], k: usize) -> Vec<&'a str> {
    if k == 0 {
        return Vec::new();
    }
    let stride = (all.len() / k).max(1);
    all.iter().step_by(stride).take(k).copied().collect()
}

/// Which vClusters go through the hub and the Rancher player (`real`: every
/// (M/real)-th by global index) and which of those are held for the latency phase (K
/// of them, spread the same way); the rest are the bulk stand-in's.
fn choose(
    agents: &[crate::loadgen::FakeAgent],
    real: usize,
    k: usize,
) -> (HashSet<String>, HashSet<String>) {
    let all: Vec<&str> = agents
        .iter()
        .flat_map(|a| a.vclusters.iter().map(|v| v.uid.as_str()))
        .collect();
    let real = spread(&all, real);
    let held = spread(&real, k);
    let own = |v: Vec<&str>| v.into_iter().map(String::from).collect();
    (own(real), own(held))
}

/// `/proc/loadavg` and how many compilers run, for the report (the machine is shared).
fn machine_load(stage: &str) -> (String, String) {
    let avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let avg: Vec<&str> = avg.split_whitespace().take(3).collect();
    let compilers = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
                .filter(|c| matches!(c.trim(), "rustc" | "cc1" | "cc1plus" | "ld" | "go"))
                .count()
        })
        .unwrap_or(0);
    (
        stage.to_string(),
        format!(
            "load average {} (1/5/15 min); compiler processes running: {compilers}",
            avg.join(" ")
        ),
    )
}

/// Runs everything; returns the readable report.
pub async fn run(args: Args) -> anyhow::Result<String> {
    let started_at = Timestamp::now().to_string();
    let timeout = Duration::from_secs(args.timeout_seconds);
    let dir = tempfile::Builder::new().prefix("vclink-bench-").tempdir()?;
    let mut notes = Vec::new();
    eprintln!("[bench] starting the local and downstream API servers");
    let (local, down) = tokio::join!(
        env::start_audited("bench-local", dir.path(), &[HUB_USER]),
        env::start_audited("bench-down", dir.path(), &[AGENT_USER]),
    );
    let (local, down) = (local?, down?);
    env::install_rancher_apis(&local.cluster).await?;

    let mut results = Results {
        started_at,
        ..Default::default()
    };
    results.load.push(machine_load("start"));
    let agents = fake_agents(args.agents, args.vclusters);
    let bulk_n = args.bulk.unwrap_or(0);
    let (real, held) = choose(&agents, args.vclusters - bulk_n, args.in_flight);
    env::opt_in_hosts(
        &local.cluster,
        std::iter::once(env::REAL_AGENT_CLUSTER.to_string())
            .chain(agents.iter().map(|a| a.cluster_id.clone())),
    )
    .await?;
    let admin = local.cluster.client().await?;
    if bulk_n > 0 {
        let bulk: Vec<(String, VCluster)> = agents
            .iter()
            .flat_map(|a| {
                a.vclusters
                    .iter()
                    .filter(|v| !real.contains(&v.uid))
                    .map(|v| (a.cluster_id.clone(), v.clone()))
            })
            .collect();
        eprintln!(
            "[bench] bulk stand-in: writing the Rancher objects of {} vClusters in their steady state (no controllers)",
            bulk.len()
        );
        let key = crate::bulk::install_proof_key(&admin).await?;
        let stats =
            crate::bulk::populate(&admin, WORKSPACE, &key, bulk, args.bulk_parallel).await?;
        eprintln!(
            "[bench] bulk stand-in: {} vClusters in {:.0} s",
            stats.vclusters, stats.seconds
        );
        results.bulk = Some(stats);
        results.load.push(machine_load("after the bulk stand-in"));
    }
    let per_agent = agents.iter().map(|a| a.vclusters.len()).max().unwrap_or(0);
    let (mut hub, hub_flags) = env::start_hub(
        &local.cluster,
        args.hub_kube_qps,
        per_agent.max(args.services).max(5_000),
        args.hub_env.clone(),
    )
    .await?;
    let mut hub_flags = hub_flags;
    hub_flags.extend(args.hub_env.iter().map(|(k, v)| format!("(env {k}={v})")));
    if !hub_flags.iter().any(|f| f.starts_with("--agent-auth")) {
        notes.push("this hub has no --agent-auth flag: it trusts the claimed cluster id (TrustClaimedCluster), so the simulated agents need no ServiceAccount tokens".into());
    } else {
        notes.push("hub run with --agent-auth=trust-claimed (insecure opt-in) so the simulated agents need no real tokens".into());
    }
    let cpu = |hub: &HubProcess| hub.pid().and_then(cpu_seconds).unwrap_or(f64::NAN);
    let cpu_start = cpu(&hub);
    tokio::time::sleep(Duration::from_secs(2)).await;
    results.hub_memory.baseline = rss(hub.pid());

    let cancel = CancellationToken::new();
    let player = Player::new(
        local.cluster.client().await?,
        WORKSPACE,
        held.clone(),
        [REAL_AGENT_CLUSTER.to_string()].into(),
    );
    let (reg_tx, reg_rx) = mpsc::channel(args.vclusters + 1024);
    let player_tasks = player.spawn(reg_rx, cancel.clone());

    // The real agent.
    let mut agent = None;
    let mut agent_mem = AgentMemory::default();
    let mut agent_flags = vec![format!("--kube-qps={}", args.agent_kube_qps)];
    agent_flags.extend(args.agent_env.iter().map(|(k, v)| format!("(env {k}={v})")));
    if args.services > 0 {
        eprintln!(
            "[bench] creating {} vCluster Services and starting the real agent",
            args.services
        );
        let a = env::start_agent(
            &down.cluster,
            &hub,
            args.agent_kube_qps,
            args.agent_env.clone(),
        )
        .await?;
        let addr = a.metrics_addr().to_string();
        wait_until(
            "the real agent's /readyz (no Services yet)",
            timeout,
            async || {
                vclink_harness::http_get(&addr, "/readyz")
                    .await
                    .is_ok_and(|r| r.status == 200)
            },
            || String::from("see the agent's log"),
        )
        .await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        agent_mem.baseline = rss(a.pid());
        env::create_services(&down.cluster, args.services).await?;
        let d = &down.cluster;
        let n = args.services;
        let took = wait_until(
            "every Service annotated connected by the real agent",
            timeout,
            async || {
                env::services_in_state(d, "connected")
                    .await
                    .is_ok_and(|c| c == n)
            },
            || String::from("see the agent's log"),
        )
        .await
        .with_context(|| format!("agent log tail:\n{}", a.log_buffer().tail(20)))?;
        agent_mem.convergence_seconds = took.as_secs_f64();
        agent = Some(a);
    }
    results.hub_memory.after_real_agent = rss(hub.pid());

    // Simulated agents: connect with empty snapshots first.
    eprintln!("[bench] connecting {} simulated agents", args.agents);
    let target = HubTarget {
        url: hub.url(),
        ca_pem: hub.ca_pem().to_string(),
    };
    let lg = LoadGen::start(
        target,
        agents,
        reg_tx,
        args.connect_parallel,
        cancel.clone(),
    );
    let want_agents = (args.agents + usize::from(agent.is_some())) as f64;
    let h = &hub;
    wait_until(
        "all simulated agents attached",
        timeout,
        async || hub_metric(h, "vclink_hub_agents_connected").await >= want_agents,
        || format!("welcomed {}", lg.tracker.welcomed.load(Ordering::Relaxed)),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    results.hub_memory.agents_connected = rss(hub.pid());

    // Full snapshots.
    eprintln!(
        "[bench] {} vClusters reported ({} held for the latency phase)",
        args.vclusters,
        held.len()
    );
    let msgs = |t: &crate::loadgen::Tracker| {
        t.sent.load(Ordering::Relaxed) + t.received.load(Ordering::Relaxed)
    };
    let (c0, n0) = (cpu(&hub), msgs(&lg.tracker));
    let api_by_verb = async |h: &HubProcess| {
        let text = h.metrics().await.unwrap_or_default();
        crate::hostile::metric_by_label(&text, "vclink_hub_api_requests_total", "verb")
    };
    let api0 = api_by_verb(&hub).await;
    lg.send_full_snapshots();
    let (m, k) = (args.vclusters, held.len());
    let t = &lg.tracker;
    let p = &player;
    let conv = wait_until(
        "all vClusters connected or waiting for their token",
        timeout,
        async || {
            t.count_state(State::Connected, None) >= m - k
                && t.count_state(State::Pending, Some("waiting for registration token")) >= k
        },
        || format!("states {:?}; player {:?}", t.states(), p.stats),
    )
    .await?;
    results.cpu.converge_cpu_seconds = cpu(&hub) - c0;
    results.cpu.converge_messages = msgs(t) - n0;
    results.hub_memory.convergence_seconds = conv.as_secs_f64();
    results.hub_memory.converged = rss(hub.pid());
    results.converge_hub_requests = api_by_verb(&hub)
        .await
        .into_iter()
        .map(|(k, v)| {
            let d = v - api0.get(&k).copied().unwrap_or(0.0);
            (k, d)
        })
        .filter(|(_, d)| *d != 0.0)
        .collect();
    results.load.push(machine_load("converged"));

    // Latency.
    eprintln!("[bench] writing {k} registration tokens");
    let held_mgmt = player
        .held_mgmt
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let client = local.cluster.client().await?;
    let (sum0, cnt0) = (
        hub_metric(&hub, "vclink_hub_register_latency_seconds_sum").await,
        hub_metric(&hub, "vclink_hub_register_latency_seconds_count").await,
    );
    let begin = Instant::now();
    let writes: Vec<(String, Instant, Instant, bool)> =
        futures::stream::iter(held_mgmt.into_iter().map(|(uid, id)| {
            let client = client.clone();
            async move {
                let t0 = Instant::now();
                let ok = write_token(&client, &id).await.is_ok();
                (uid, t0, Instant::now(), ok)
            }
        }))
        .buffer_unordered(args.token_parallel.max(1))
        .collect()
        .await;
    let write_seconds = begin.elapsed().as_secs_f64();
    let _ = wait_until(
        "Register for every held vCluster",
        Duration::from_secs(300),
        async || {
            writes
                .iter()
                .all(|(u, ..)| t.get(u).is_some_and(|s| s.register_at.is_some()))
        },
        || format!("registers {}", t.registers.load(Ordering::Relaxed)),
    )
    .await
    .map_err(|e| notes.push(format!("{e:#}")));
    let (mut from_start, mut from_ack, mut req) = (Vec::new(), Vec::new(), Vec::new());
    let mut missing = 0;
    for (uid, t0, t1, ok) in &writes {
        req.push(t1.duration_since(*t0));
        match t.get(uid).and_then(|s| s.register_at) {
            Some(at) if *ok => {
                from_start.push(at.saturating_duration_since(*t0));
                from_ack.push(at.saturating_duration_since(*t1));
            }
            _ => missing += 1,
        }
    }
    let (sum1, cnt1) = (
        hub_metric(&hub, "vclink_hub_register_latency_seconds_sum").await,
        hub_metric(&hub, "vclink_hub_register_latency_seconds_count").await,
    );
    results.latency = report::Latency {
        from_write_start: percentiles(&from_start),
        from_write_ack: percentiles(&from_ack),
        write_request: percentiles(&req),
        write_seconds,
        writes_per_second: writes.len() as f64 / write_seconds.max(1e-9),
        hub_internal_mean_ms: (cnt1 > cnt0).then(|| (sum1 - sum0) / (cnt1 - cnt0) * 1e3),
        missing: missing + k.saturating_sub(writes.len()),
    };

    // Settle, then idle.
    let _ = wait_until(
        "every vCluster connected",
        timeout,
        async || t.count_state(State::Connected, None) >= m,
        || format!("states {:?}", t.states()),
    )
    .await
    .map_err(|e| notes.push(format!("{e:#}")));
    let last = std::cell::Cell::new(f64::NAN);
    let mut stable_since = Instant::now();
    let _ = wait_until(
        "the hub's API request counter to stand still for 5 s",
        Duration::from_secs(600),
        async || {
            let now = hub_metric(h, "vclink_hub_api_requests_total").await;
            if now != last.get() {
                last.set(now);
                stable_since = Instant::now();
            }
            stable_since.elapsed() >= Duration::from_secs(5)
        },
        || format!("vclink_hub_api_requests_total = {}", last.get()),
    )
    .await
    .map_err(|e| notes.push(format!("{e:#}")));

    eprintln!("[bench] idle window of {} s", args.idle_seconds);
    let since = Timestamp::now();
    let (ci0, ni0) = (cpu(&hub), msgs(t));
    let idle_end = Instant::now() + Duration::from_secs(args.idle_seconds);
    let mut agent_max = 0;
    while Instant::now() < idle_end {
        if let Some(a) = &agent {
            agent_max = agent_max.max(rss(a.pid()).rss_kib);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let until = Timestamp::now();
    let ci1 = cpu(&hub);
    results.cpu = Cpu {
        idle_cpu_seconds: ci1 - ci0,
        idle_messages: msgs(t) - ni0,
        total_cpu_seconds: ci1 - cpu_start,
        total_messages: msgs(t),
        ..results.cpu
    };
    results.hub_memory.idle_end = rss(hub.pid());
    results.load.push(machine_load("end of idle window"));
    let hours = args.idle_seconds as f64 / 3600.0;
    let local_log = std::fs::read_to_string(&local.audit_log).unwrap_or_default();
    let down_log = std::fs::read_to_string(&down.audit_log).unwrap_or_default();
    let total_vcs = (m + args.services) as f64;
    results.idle.hub = count_requests(&local_log, HUB_USER, since, until);
    results.idle.agent = count_requests(&down_log, AGENT_USER, since, until);
    results.idle.hub_per_hour = results.idle.hub.total as f64 / hours;
    results.idle.hub_per_vcluster_hour = results.idle.hub_per_hour / total_vcs;
    results.idle.agent_per_hour = results.idle.agent.total as f64 / hours;
    if let Some(a) = &agent {
        agent_mem.idle_end = rss(a.pid());
        agent_mem.idle_max_rss_kib = agent_max;
        results.agent_memory = Some(agent_mem);
    }

    if !args.no_restart {
        eprintln!(
            "[bench] hub restart: kill -9, start again, wait until everything is re-attached and connected"
        );
        let want = crate::restart::Want {
            agents: want_agents,
            connected: (m + args.services) as f64,
        };
        match crate::restart::run(&mut hub, &local.audit_log, &lg.tracker, want, timeout).await {
            Ok(r) => results.restart = Some(r),
            Err(e) => notes.push(format!("hub restart: {e:#}")),
        }
        results.load.push(machine_load("after the restart"));
    }

    // Derived memory figures.
    let hm = &mut results.hub_memory;
    hm.kib_per_agent = (hm.agents_connected.rss_kib as f64 - hm.after_real_agent.rss_kib as f64)
        / args.agents as f64;
    hm.kib_per_vcluster =
        (hm.idle_end.rss_kib as f64 - hm.agents_connected.rss_kib as f64) / m.max(1) as f64;
    hm.extrapolated_2000x50000_mib = (hm.baseline.rss_kib as f64
        + 2_000.0 * hm.kib_per_agent.max(0.0)
        + 50_000.0 * hm.kib_per_vcluster.max(0.0))
        / 1024.0;

    let errs = lg.tracker.stream_errors.load(Ordering::Relaxed);
    if errs > 0 {
        notes.push(format!(
            "{errs} simulated agent streams ended with an error and were reopened"
        ));
    }
    let perr = player.stats.errors.load(Ordering::Relaxed);
    if perr > 0 {
        notes.push(format!(
            "{perr} writes of the Rancher player failed after retries"
        ));
    }
    results.scale = Scale {
        agents: args.agents,
        vclusters: m,
        in_flight: k,
        agent_services: args.services,
        idle_seconds: args.idle_seconds,
        hub_flags,
        agent_flags,
    };
    for name in ["vclink-hub", "vclink-agent"] {
        if let Ok(p) = vclink_harness::procs::binary(name) {
            results.binary_bytes.push((
                name.into(),
                std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
            ));
        }
    }
    notes.push(format!("{} vClusters went through the hub's real path with the benchmark playing Rancher (no simulator controllers): provisioning cluster created by the hub, management cluster, status.clusterName, legacy registration token (one write), Register at the simulated agent, Connected", m - bulk_n));
    if bulk_n > 0 {
        notes.push(format!("BULK STAND-IN: {bulk_n} vClusters' Rancher objects (provisioning cluster with the hub's labels and both proofs signed with the hub's real key, status.clusterName/ready; management cluster Connected) were written by the load generator before the hub started, without controllers; the hub still judged, indexed and reported every one of them to its agent"));
    }
    results.notes = notes;

    // Tear down.
    cancel.cancel();
    lg.join().await;
    for t in player_tasks {
        let _ = t.await;
    }
    if let Some(mut a) = agent {
        let _ = a.stop().await;
    }
    let _ = hub.stop().await;
    report::write(&args.out, &results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums_match_whole_names_only() {
        let t = "# HELP x\nvclink_hub_api_requests_total{verb=\"create\"} 3\nvclink_hub_api_requests_total{verb=\"list\"} 4\nvclink_hub_api_requests_total_other 9\n";
        assert_eq!(metric_sum(t, "vclink_hub_api_requests_total"), 7.0);
    }

    #[test]
    fn held_vclusters_are_spread_and_inside_the_real_path() {
        let a = fake_agents(4, 100);
        let (real, held) = choose(&a, 20, 10);
        assert_eq!((real.len(), held.len()), (20, 10));
        assert!(held.is_subset(&real));
        let (real, held) = choose(&a, 100, 0);
        assert_eq!((real.len(), held.len()), (100, 0));
    }
}
