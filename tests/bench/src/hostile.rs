//! `--hostile`: the hub under hostile clients on loopback, with genuine agents
//! reconnecting meanwhile. The world is the end-to-end one (`vclink_harness::E2eEnv`):
//! the Rancher simulator in front of a real local API server, one real downstream API
//! server, the release hub verifying agents for real (TokenReviews through the
//! simulator's cluster proxy). The genuine agents are simulated: each claims its own
//! opted-in management cluster, which the simulator's proxy routes to the one
//! downstream API server (`RancherSim::alias_connection`), and presents a real token of
//! the agent ServiceAccount there.
//!
//! During a fixed window ([`WINDOW`]) three attacks run at once (see [`crate::attack`]):
//! slow 1 MiB `Hello`s on many unauthenticated connections, junk-token `Hello`s at a fixed
//! rate (both from [`HOSTILE_SOURCES`] loopback addresses 127.0.0.2 …, while the genuine
//! agents dial from 127.0.0.1, as distinct sources would on a real network), and one
//! authenticated agent flooding `Upsert`s at 10× its rate limit (from 127.0.0.254); every
//! genuine agent drops its stream every few seconds and reconnects, and each
//! drop → `Welcome` time is recorded. Measured: hub RSS (sampled `VmRSS`, and `VmHWM`),
//! hub file descriptors, genuine reconnect percentiles, TokenReviews (the hub's own
//! counters and the simulator's proxy count) and streams refused by reason (the hub's
//! `vclink_hub_rejections_total`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde::Serialize;
use tokio::time::Instant;
use vclink_harness::procs::agent::{TOKEN_AUDIENCE, ensure_service_account, mint_token};
use vclink_harness::{E2eEnv, E2eOptions, HubOptions, HubProcess};
use vclink_proto::Secret;

use crate::Args;
use crate::attack::{self, Outcomes};
use crate::loadgen::HubTarget;
use crate::measure::{Percentiles, Rss, percentiles};

/// Length of the attack window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// The hub's per-agent message rate (its default) and the flood's multiple of it.
const AGENT_MESSAGE_RATE: u32 = 100;
const FLOOD_FACTOR: u32 = 10;
/// The hub's negative TokenReview cache TTL, set explicitly so the bound is known.
const NEGATIVE_TTL_SECS: u64 = 30;
/// Distinct junk tokens (each claims its own host): the negative cache's key space.
const JUNK_TOKENS: usize = 10;
/// Loopback source addresses of the slow-Hello and junk clients (127.0.0.2 …).
pub const HOSTILE_SOURCES: usize = 16;
/// The genuine agents' source address, and the flooding agent's.
const GENUINE_SOURCE: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
const FLOOD_SOURCE: std::net::IpAddr =
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 254));

/// Sizes of the hostile run.
#[derive(Clone, Debug, Serialize)]
pub struct HostileScale {
    /// Unauthenticated slow-`Hello` connections.
    pub slow_connections: usize,
    /// Junk `Hello`s per second.
    pub junk_per_second: u32,
    /// Genuine simulated agents reconnecting.
    pub genuine_agents: usize,
    /// Upserts per second of the flooding agent.
    pub flood_per_second: u32,
    /// Attack window, seconds.
    pub window_seconds: u64,
    /// Source addresses of the slow-Hello and junk clients.
    pub hostile_sources: usize,
}

/// What the hostile run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HostileResults {
    /// When (UTC).
    pub started_at: String,
    /// Sizes.
    pub scale: Option<HostileScale>,
    /// Hub RSS before the attack.
    pub rss_before: Rss,
    /// Largest sampled VmRSS during the window (KiB).
    pub rss_peak_sampled_kib: u64,
    /// At the end (VmHWM = peak since start).
    pub rss_end: Rss,
    /// The chart's memory limit (MiB).
    pub chart_memory_limit_mib: f64,
    /// Largest number of open file descriptors of the hub sampled.
    pub hub_fds_peak: usize,
    /// Genuine drop → Welcome times.
    pub reconnect: Percentiles,
    /// Genuine reconnect attempts refused, by code.
    pub genuine_refusals: BTreeMap<String, u64>,
    /// Genuine agents that were attached at the end of the window.
    pub genuine_attached_at_end: usize,
    /// TokenReviews the hub sent (its counter), by outcome.
    pub tokenreviews: BTreeMap<String, f64>,
    /// Agent authentication outcomes (the hub's counter).
    pub authentications: BTreeMap<String, f64>,
    /// Requests the simulator's cluster proxy received in the window.
    pub proxy_requests: u64,
    /// TokenReviews not answered "ok" for a genuine agent: total − authentications{ok}.
    pub junk_tokenreviews: f64,
    /// The negative cache's bound for the junk tokens over the window.
    pub junk_tokenreview_bound: f64,
    /// `vclink_hub_rejections_total` in the window, by reason.
    pub rejections: BTreeMap<String, f64>,
    /// Client-side outcomes of each attack.
    pub slow: BTreeMap<String, u64>,
    /// Junk `Hello` outcomes.
    pub junk: BTreeMap<String, u64>,
    /// Flood outcomes.
    pub flood: BTreeMap<String, u64>,
    /// Problems.
    pub notes: Vec<String>,
}

/// Every sample of metric family `name` by the value of `label`.
pub fn metric_by_label(text: &str, name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let needle = format!("{label}=\"");
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = l.strip_prefix(name) else {
            continue;
        };
        if !rest.starts_with('{') {
            continue;
        }
        let Some(v) = l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        let key = rest
            .split_once(&needle)
            .and_then(|(_, r)| r.split_once('"'))
            .map_or("", |(k, _)| k);
        *out.entry(key.to_string()).or_default() += v;
    }
    out
}

fn delta(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v != 0.0)
        .collect()
}

/// The hub chart's memory limit in MiB (`resources.limits.memory` in
/// charts/hub/values.yaml), 256 if it cannot be read.
pub fn chart_memory_limit_mib() -> f64 {
    let text = std::fs::read_to_string("charts/hub/values.yaml").unwrap_or_default();
    parse_memory_limit(&text).unwrap_or(256.0)
}

/// `limits: … memory: <n>Mi|Gi` in a values file, in MiB.
fn parse_memory_limit(text: &str) -> Option<f64> {
    let mut in_limits = false;
    for l in text.lines() {
        let t = l.trim();
        if t.starts_with("limits:") {
            in_limits = true;
        } else if in_limits && let Some(v) = t.strip_prefix("memory:") {
            let v = v.trim().trim_matches('"');
            if let Some(n) = v.strip_suffix("Mi").and_then(|n| n.parse::<f64>().ok()) {
                return Some(n);
            }
            if let Some(n) = v.strip_suffix("Gi").and_then(|n| n.parse::<f64>().ok()) {
                return Some(n * 1024.0);
            }
        }
    }
    None
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn mgmt() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("management.cattle.io", "v3", "Cluster"),
        "clusters",
    )
}

/// Creates opted-in management clusters `ids`, each routed by the simulator's proxy to
/// the API server of the connected cluster `like`.
async fn alias_hosts(env: &E2eEnv, ids: &[String], like: &str) -> anyhow::Result<()> {
    let api: Api<DynamicObject> = Api::all_with(env.local_client().await?, &mgmt());
    let pp = PatchParams::apply("vclink-bench").force();
    for id in ids {
        let o = serde_json::json!({
            "apiVersion": "management.cattle.io/v3", "kind": "Cluster",
            "metadata": {"name": id, "labels": {"vclink.io/agent": "enabled"}},
            "spec": {"displayName": id},
        });
        api.patch(id, &pp, &Patch::Apply(&o))
            .await
            .with_context(|| format!("creating management cluster {id}"))?;
        anyhow::ensure!(
            env.sim.alias_connection(id, like),
            "the simulator has no connection for {like}"
        );
    }
    Ok(())
}

/// State shared by the genuine agents.
struct Genuine {
    hub: HubTarget,
    token: Secret,
    reconnects: std::sync::Mutex<Vec<Duration>>,
    refusals: Outcomes,
    attached: std::sync::atomic::AtomicUsize,
}

/// Attaches `id` with retries (0.5 s apart, as an agent backs off) until `give_up`.
async fn attach_retrying(
    g: &Genuine,
    id: &str,
    give_up: Instant,
) -> Option<(
    tonic::Streaming<vclink_proto::v1::HubMessage>,
    tokio::sync::mpsc::Sender<vclink_proto::v1::AgentMessage>,
)> {
    while Instant::now() < give_up {
        match tokio::time::timeout(
            Duration::from_secs(20),
            attack::attach_from(
                &g.hub,
                &g.token,
                attack::hello(id, &format!("genuine-{id}")),
                Some(GENUINE_SOURCE),
            ),
        )
        .await
        {
            Ok(Ok((rx, tx))) => {
                let _ = tx.send(attack::empty_snapshot()).await;
                return Some((rx, tx));
            }
            Ok(Err(code)) => g.refusals.add(code),
            Err(_) => g.refusals.add("no_answer_in_20s"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

/// One genuine agent: attached at `start`; during the window it holds each stream a few
/// seconds (spread by `idx`), drops it and times the reconnect.
async fn genuine_agent(
    g: Arc<Genuine>,
    idx: usize,
    id: String,
    attack_at: Instant,
    until: Instant,
) {
    use std::sync::atomic::Ordering;
    let mut cur = attach_retrying(&g, &id, attack_at).await;
    if cur.is_some() {
        g.attached.fetch_add(1, Ordering::Relaxed);
    }
    tokio::time::sleep_until(attack_at).await;
    let mut hold = Duration::from_millis(3_000 + (idx as u64 * 137) % 7_000);
    while Instant::now() + hold < until {
        tokio::time::sleep(hold).await;
        if cur.take().is_some() {
            g.attached.fetch_sub(1, Ordering::Relaxed);
        }
        let t0 = Instant::now();
        cur = attach_retrying(&g, &id, until + Duration::from_secs(30)).await;
        if cur.is_some() {
            g.reconnects
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(t0.elapsed());
            g.attached.fetch_add(1, Ordering::Relaxed);
        }
        hold = Duration::from_millis(
            4_000 + (idx as u64 * 311 + t0.elapsed().as_millis() as u64) % 6_000,
        );
    }
    // Keep the stream until the window ends so "attached at end" is meaningful.
    tokio::time::sleep_until(until).await;
    drop(cur);
}

async fn metrics_text(hub: &HubProcess) -> String {
    hub.metrics().await.unwrap_or_default()
}

/// Runs the hostile benchmark; returns the readable report (also written to
/// `results-hostile.{txt,json}` and `results.{txt,json}` in `args.out`).
pub async fn run(args: &Args) -> anyhow::Result<String> {
    let mut r = HostileResults {
        started_at: k8s_openapi::jiff::Timestamp::now().to_string(),
        chart_memory_limit_mib: chart_memory_limit_mib(),
        ..Default::default()
    };
    let genuine_n = args.hostile_genuine;
    let scale = HostileScale {
        slow_connections: args.hostile_slow,
        junk_per_second: args.hostile_junk_rate,
        genuine_agents: genuine_n,
        flood_per_second: AGENT_MESSAGE_RATE * FLOOD_FACTOR,
        window_seconds: WINDOW.as_secs(),
        hostile_sources: HOSTILE_SOURCES,
    };
    eprintln!(
        "[hostile] starting the local cluster, the Rancher simulator, a downstream cluster and the hub"
    );
    let mut extra = vec![
        format!("--tokenreview-negative-ttl={NEGATIVE_TTL_SECS}s"),
        format!("--agent-message-rate={AGENT_MESSAGE_RATE}"),
    ];
    extra.retain(|f| crate::env::hub_has_flag(f.split('=').next().unwrap_or(f)));
    let env = E2eEnv::start(E2eOptions {
        start_agents: false,
        hub: HubOptions {
            extra_args: extra,
            extra_env: args.hub_env.clone(),
            ready_timeout: Some(Duration::from_secs(120)),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .context("starting the end-to-end world")?;
    let down = env.downstream();
    let client = down.cluster.client().await?;
    ensure_service_account(&client).await?;
    let token = mint_token(&client, TOKEN_AUDIENCE).await?;
    let ids: Vec<String> = (0..=genuine_n).map(|i| format!("c-m-hg{i:06}")).collect();
    alias_hosts(&env, &ids, &down.cluster_id).await?;
    let hub_pid = env.hub.pid().context("the hub has no pid")?;
    let target = HubTarget {
        url: env.hub.url(),
        ca_pem: env.hub.ca_pem().to_string(),
    };

    // Genuine agents attach first (untimed), then the window starts.
    let g = Arc::new(Genuine {
        hub: target.clone(),
        token: token.clone(),
        reconnects: Default::default(),
        refusals: Outcomes::default(),
        attached: Default::default(),
    });
    let warmup = Duration::from_secs(90);
    let attack_at = Instant::now() + warmup;
    let until = attack_at + WINDOW;
    eprintln!(
        "[hostile] attaching {genuine_n} genuine agents (up to {} s)",
        warmup.as_secs()
    );
    let genuine: Vec<_> = ids[..genuine_n]
        .iter()
        .enumerate()
        .map(|(i, id)| tokio::spawn(genuine_agent(g.clone(), i, id.clone(), attack_at, until)))
        .collect();
    // Start the window early once everyone is in.
    let attack_at = {
        let t0 = Instant::now();
        while g.attached.load(std::sync::atomic::Ordering::Relaxed) < genuine_n
            && Instant::now() < attack_at
        {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        eprintln!(
            "[hostile] {} of {genuine_n} genuine agents attached after {:.1} s; refusals so far {:?}",
            g.attached.load(std::sync::atomic::Ordering::Relaxed),
            t0.elapsed().as_secs_f64(),
            g.refusals.snapshot()
        );
        attack_at
    };
    tokio::time::sleep_until(attack_at).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    r.rss_before = Rss::of(hub_pid).unwrap_or_default();
    let m0 = metrics_text(&env.hub).await;
    let sim0 = env.sim.stats();

    eprintln!(
        "[hostile] attack window of {} s: {} slow-Hello connections, {} junk Hellos/s, one agent flooding {} Upserts/s",
        WINDOW.as_secs(),
        scale.slow_connections,
        scale.junk_per_second,
        scale.flood_per_second
    );
    let (slow_o, junk_o, flood_o) = (
        Arc::new(Outcomes::default()),
        Arc::new(Outcomes::default()),
        Arc::new(Outcomes::default()),
    );
    let slow = tokio::spawn(attack::slow_hellos(
        target.clone(),
        env.hub.grpc_addr(),
        scale.slow_connections,
        HOSTILE_SOURCES,
        until,
        slow_o.clone(),
    ));
    let junk = tokio::spawn(attack::junk_hellos(
        target.clone(),
        ids[..JUNK_TOKENS.min(genuine_n.max(1))].to_vec(),
        JUNK_TOKENS,
        scale.junk_per_second,
        HOSTILE_SOURCES,
        until,
        junk_o.clone(),
    ));
    let flood = tokio::spawn(attack::upsert_flood(
        target.clone(),
        ids[genuine_n].clone(),
        token.clone(),
        scale.flood_per_second,
        5,
        Some(FLOOD_SOURCE),
        until,
        flood_o.clone(),
    ));
    let mut peak = 0u64;
    let mut fd_peak = 0usize;
    while Instant::now() < until {
        peak = peak.max(Rss::of(hub_pid).map(|x| x.rss_kib).unwrap_or(0));
        fd_peak = fd_peak.max(fds(hub_pid));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let attached_at_end = g.attached.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("[hostile] window over; waiting for the clients to stop");
    let stop_by = Instant::now() + Duration::from_secs(60);
    for t in [slow, junk, flood] {
        if tokio::time::timeout_at(stop_by, t).await.is_err() {
            r.notes
                .push("an attack task did not stop within 60 s of the window".into());
        }
    }
    for t in genuine {
        let _ = tokio::time::timeout_at(stop_by, t).await;
    }
    r.rss_end = Rss::of(hub_pid).unwrap_or_default();
    r.rss_peak_sampled_kib = peak.max(r.rss_end.rss_kib);
    r.hub_fds_peak = fd_peak;
    let m1 = metrics_text(&env.hub).await;
    r.proxy_requests = env.sim.stats().proxy_requests - sim0.proxy_requests;
    r.tokenreviews = delta(
        &metric_by_label(&m1, "vclink_hub_tokenreview_requests_total", "outcome"),
        &metric_by_label(&m0, "vclink_hub_tokenreview_requests_total", "outcome"),
    );
    r.authentications = delta(
        &metric_by_label(&m1, "vclink_hub_agent_authentications_total", "outcome"),
        &metric_by_label(&m0, "vclink_hub_agent_authentications_total", "outcome"),
    );
    r.rejections = delta(
        &metric_by_label(&m1, "vclink_hub_rejections_total", "reason"),
        &metric_by_label(&m0, "vclink_hub_rejections_total", "reason"),
    );
    let total_reviews: f64 = r.tokenreviews.values().sum();
    r.junk_tokenreviews = total_reviews - r.authentications.get("ok").copied().unwrap_or(0.0);
    r.junk_tokenreview_bound =
        (JUNK_TOKENS as f64) * ((WINDOW.as_secs() / NEGATIVE_TTL_SECS) as f64 + 1.0);
    let samples = g
        .reconnects
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    r.reconnect = percentiles(&samples);
    r.genuine_refusals = g.refusals.snapshot();
    r.genuine_attached_at_end = attached_at_end;
    r.slow = slow_o.snapshot();
    r.junk = junk_o.snapshot();
    r.flood = flood_o.snapshot();
    if env.hub.log_buffer().contains("panicked") {
        r.notes.push("the hub's log contains a panic".into());
    }
    r.scale = Some(scale);
    crate::report::write_mode(&args.out, "hostile", &r, &render(&r))
}

fn verdict(ok: bool) -> &'static str {
    if ok { "meets target" } else { "MISSES target" }
}

fn table<V: std::fmt::Display>(o: &mut String, m: &BTreeMap<String, V>) {
    use std::fmt::Write as _;
    for (k, v) in m {
        let _ = writeln!(o, "      {v:>8}  {k}");
    }
}

/// The readable report.
pub fn render(r: &HostileResults) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(o, "vclink hostile-client benchmark — {}", r.started_at);
    if let Some(s) = &r.scale {
        let _ = writeln!(
            o,
            "window {} s on loopback: {} unauthenticated TLS connections dribbling a {} KiB Hello (1 KiB / 0.5 s) and {} junk-token Hellos/s ({} distinct tokens, each claiming an opted-in host), both from {} source addresses 127.0.0.2…; one authenticated agent flooding {} Upserts/s (10× --agent-message-rate) from 127.0.0.254; {} genuine agents from 127.0.0.1 dropping and re-opening their streams every 3–10 s\n",
            s.window_seconds,
            s.slow_connections,
            attack::SLOW_HELLO_BYTES / 1024,
            s.junk_per_second,
            JUNK_TOKENS,
            s.hostile_sources,
            s.flood_per_second,
            s.genuine_agents
        );
    }
    let limit = r.chart_memory_limit_mib;
    let peak_mib = (r.rss_peak_sampled_kib.max(r.rss_end.hwm_kib)) as f64 / 1024.0;
    let _ = writeln!(o, "1. HUB MEMORY (MiB)");
    let _ = writeln!(
        o,
        "   before the window: VmRSS {:.1}",
        r.rss_before.rss_mib()
    );
    let _ = writeln!(
        o,
        "   peak: VmRSS sampled every 250 ms {:.1}, VmHWM {:.1}; end VmRSS {:.1}",
        r.rss_peak_sampled_kib as f64 / 1024.0,
        r.rss_end.hwm_mib(),
        r.rss_end.rss_mib()
    );
    let _ = writeln!(
        o,
        "   target: under the chart's limit (charts/hub/values.yaml resources.limits.memory = {limit:.0} Mi): {}",
        verdict(peak_mib < limit)
    );
    let _ = writeln!(
        o,
        "   hub file descriptors, peak sampled: {}\n",
        r.hub_fds_peak
    );
    let p = &r.reconnect;
    let _ = writeln!(
        o,
        "2. GENUINE AGENTS' RECONNECT (stream dropped → Welcome on the new stream)"
    );
    let _ = writeln!(
        o,
        "   {} reconnects: p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        p.count, p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms
    );
    let _ = writeln!(
        o,
        "   target p99 ≤ 5 s: {}",
        verdict(p.count > 0 && p.p99_ms <= 5_000.0)
    );
    let _ = writeln!(
        o,
        "   attached at the end of the window: {}",
        r.genuine_attached_at_end
    );
    if !r.genuine_refusals.is_empty() {
        let _ = writeln!(o, "   refused attempts (each retried after 0.5 s):");
        table(&mut o, &r.genuine_refusals);
    }
    let _ = writeln!(o, "\n3. TOKENREVIEWS SENT TO RANCHER in the window");
    let _ = writeln!(
        o,
        "   simulator's cluster proxy received: {} requests",
        r.proxy_requests
    );
    let _ = writeln!(
        o,
        "   hub's vclink_hub_tokenreview_requests_total by outcome:"
    );
    table(&mut o, &r.tokenreviews);
    let _ = writeln!(
        o,
        "   hub's vclink_hub_agent_authentications_total by outcome:"
    );
    table(&mut o, &r.authentications);
    let _ = writeln!(
        o,
        "   junk TokenReviews (all − authentications{{ok}}): {:.0}; negative cache bound ({} tokens × (window / {} s TTL + 1)) = {:.0}: {}",
        r.junk_tokenreviews,
        JUNK_TOKENS,
        NEGATIVE_TTL_SECS,
        r.junk_tokenreview_bound,
        verdict(r.junk_tokenreviews <= r.junk_tokenreview_bound)
    );
    let _ = writeln!(
        o,
        "\n4. STREAMS AND CONNECTIONS REFUSED BY THE HUB (vclink_hub_rejections_total by reason, in the window; handshakes_* and connections_full: TCP connections closed before TLS; preauth_*: unauthenticated streams)"
    );
    table(&mut o, &r.rejections);
    let _ = writeln!(o, "\n5. WHAT THE CLIENTS SAW");
    let _ = writeln!(o, "   slow-Hello connections:");
    table(&mut o, &r.slow);
    let _ = writeln!(o, "   junk Hellos:");
    table(&mut o, &r.junk);
    let _ = writeln!(o, "   Upsert flood:");
    table(&mut o, &r.flood);
    if !r.notes.is_empty() {
        let _ = writeln!(o, "\nNOTES");
        for n in &r.notes {
            let _ = writeln!(o, "   - {n}");
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_metrics_are_split_by_label() {
        let t = "# HELP x\nvclink_hub_rejections_total{reason=\"preauth_full\"} 3\nvclink_hub_rejections_total{reason=\"hello_timeout\"} 4\nvclink_hub_rejections_total_x{reason=\"a\"} 9\n";
        let m = metric_by_label(t, "vclink_hub_rejections_total", "reason");
        assert_eq!(m.len(), 2);
        assert_eq!(m["preauth_full"], 3.0);
        let d = delta(&m, &BTreeMap::from([("preauth_full".to_string(), 1.0)]));
        assert_eq!(d["preauth_full"], 2.0);
    }

    #[test]
    fn the_chart_limit_is_read() {
        let t = "resources:\n  requests:\n    memory: 64Mi\n  limits:\n    cpu: \"1\"\n    memory: 256Mi\n";
        assert_eq!(parse_memory_limit(t), Some(256.0));
        assert_eq!(parse_memory_limit("limits:\n  memory: 1Gi\n"), Some(1024.0));
        let real = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../charts/hub/values.yaml"
        ))
        .unwrap();
        assert!(parse_memory_limit(&real).is_some());
    }
}
