//! The results: one serialisable struct written as `results.json`, and the same numbers
//! as readable text (`results.txt`) with what each one means and the targets from the
//! project brief next to them. Extrapolations are labelled as such.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::measure::{Percentiles, RequestCount, Rss};

/// Target: hub memory for 2,000 agents × 50,000 vClusters.
pub const TARGET_HUB_MIB: f64 = 512.0;
/// Target: token → Register p99.
pub const TARGET_P99_MS: f64 = 50.0;
/// Target: agent idle memory with 500 Services.
pub const TARGET_AGENT_MIB: f64 = 15.0;

/// Scale and settings of the run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Scale {
    /// Simulated agents.
    pub agents: usize,
    /// vClusters reported by the simulated agents.
    pub vclusters: usize,
    /// Registrations held back and measured.
    pub in_flight: usize,
    /// Services watched by the real agent (0 = agent benchmark skipped).
    pub agent_services: usize,
    /// Idle window (seconds).
    pub idle_seconds: u64,
    /// Extra hub flags the benchmark used.
    pub hub_flags: Vec<String>,
    /// Extra agent flags.
    pub agent_flags: Vec<String>,
}

/// Hub memory.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HubMemory {
    /// Ready, no agents.
    pub baseline: Rss,
    /// With the real agent's vClusters only.
    pub after_real_agent: Rss,
    /// N agents connected, empty snapshots.
    pub agents_connected: Rss,
    /// All vClusters converged (before the latency phase).
    pub converged: Rss,
    /// End of the idle window (VmHWM = peak over the whole run).
    pub idle_end: Rss,
    /// (agents_connected − after_real_agent) / N, KiB.
    pub kib_per_agent: f64,
    /// (idle_end − agents_connected) / vClusters, KiB.
    pub kib_per_vcluster: f64,
    /// EXTRAPOLATION: baseline + 2,000 × per agent + 50,000 × per vCluster, MiB.
    pub extrapolated_2000x50000_mib: f64,
    /// Seconds from the full snapshots to every non-held vCluster connected.
    pub convergence_seconds: f64,
}

/// Token → Register latency.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    /// From just before the token write was sent to the Register at the agent.
    pub from_write_start: Percentiles,
    /// From the API server's answer to the write to the Register (0 when the Register
    /// arrived first, which watch delivery allows).
    pub from_write_ack: Percentiles,
    /// Duration of the token write requests themselves.
    pub write_request: Percentiles,
    /// Seconds to issue all K writes, and the resulting rate.
    pub write_seconds: f64,
    /// Writes per second achieved.
    pub writes_per_second: f64,
    /// Hub's own histogram (token seen → Register sent), mean over the phase, ms.
    pub hub_internal_mean_ms: Option<f64>,
    /// Held vClusters that never got Register in time.
    pub missing: usize,
}

/// Idle API requests.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Idle {
    /// The hub's requests to the local cluster in the window.
    pub hub: RequestCount,
    /// The agent's requests to its cluster in the window.
    pub agent: RequestCount,
    /// hub requests / vClusters / hour.
    pub hub_per_vcluster_hour: f64,
    /// hub requests per hour.
    pub hub_per_hour: f64,
    /// agent requests per hour.
    pub agent_per_hour: f64,
}

/// Agent memory.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AgentMemory {
    /// Ready, watching no Services yet.
    pub baseline: Rss,
    /// End of the idle window (VmHWM = peak incl. initial sync).
    pub idle_end: Rss,
    /// Largest VmRSS sampled during the idle window.
    pub idle_max_rss_kib: u64,
    /// Seconds from start to all Services annotated `connected`.
    pub convergence_seconds: f64,
}

/// Hub CPU per message (utime + stime of the hub process; messages counted at the
/// simulated agents, both directions).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Cpu {
    /// Full snapshots → converged: CPU seconds, messages.
    pub converge_cpu_seconds: f64,
    /// Messages in that phase.
    pub converge_messages: u64,
    /// Idle window: CPU seconds.
    pub idle_cpu_seconds: f64,
    /// Messages in the idle window (heartbeats).
    pub idle_messages: u64,
    /// Whole run (hub start → idle end): CPU seconds.
    pub total_cpu_seconds: f64,
    /// Messages over the whole run.
    pub total_messages: u64,
}

/// Hub restart (kill -9, start again) with everything converged.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Restart {
    /// kill → /readyz of the new process, seconds.
    pub ready_seconds: f64,
    /// kill → every agent attached again, seconds.
    pub attached_seconds: f64,
    /// kill → every vCluster connected in the hub's `vclink_hub_vclusters` gauge and no
    /// other state, seconds (None: not reached).
    pub settled_seconds: Option<f64>,
    /// Write requests (create/update/patch/delete) of the hub user in the local
    /// cluster's audit log from the kill until settled + 10 s, by kind.
    pub writes: RequestCount,
    /// The new process's `vclink_hub_api_requests_total` by verb at the end.
    pub hub_api_requests: Vec<(String, f64)>,
    /// RSS of the new process when settled.
    pub rss: Rss,
    /// CPU seconds (utime + stime) of the new process from its start to settled.
    pub cpu_seconds: f64,
    /// gRPC messages both ways at the simulated agents from the kill to settled.
    pub messages: u64,
}

/// Everything.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Results {
    /// Hub CPU.
    pub cpu: Cpu,
    /// Hub restart at this scale.
    pub restart: Option<Restart>,
    /// When (UTC).
    pub started_at: String,
    /// Scale.
    pub scale: Scale,
    /// Benchmark 1.
    pub hub_memory: HubMemory,
    /// Benchmark 2.
    pub latency: Latency,
    /// Benchmark 3.
    pub idle: Idle,
    /// Benchmark 4.
    pub agent_memory: Option<AgentMemory>,
    /// Binary sizes (bytes) of the release build.
    pub binary_bytes: Vec<(String, u64)>,
    /// Problems seen during the run (stream errors, player errors, timeouts).
    pub notes: Vec<String>,
    /// What the bulk stand-in wrote, if it ran.
    pub bulk: Option<crate::bulk::BulkStats>,
    /// The hub's `vclink_hub_api_requests_total` by verb, change from the full
    /// snapshots to convergence.
    pub converge_hub_requests: Vec<(String, f64)>,
    /// Machine load at stages of the run (stage, text).
    pub load: Vec<(String, String)>,
}

/// Whether the run had the full scale (2,000 agents × 50,000 vClusters or more).
fn full_scale(s: &Scale) -> bool {
    s.agents >= 2_000 && s.vclusters >= 50_000
}

fn verdict(ok: bool) -> &'static str {
    if ok { "meets target" } else { "MISSES target" }
}

fn requests(out: &mut String, c: &RequestCount) {
    for (k, v) in &c.by_kind {
        let _ = writeln!(out, "      {v:>6}  {k}");
    }
}

/// The readable report.
pub fn render(r: &Results) -> String {
    let mut o = String::new();
    let s = &r.scale;
    let _ = writeln!(o, "vclink benchmarks — {}", r.started_at);
    let _ = writeln!(
        o,
        "scale: {} simulated agents × {} vClusters ({} registrations measured in flight); real agent watching {} Services; idle window {} s",
        s.agents, s.vclusters, s.in_flight, s.agent_services, s.idle_seconds
    );
    let _ = writeln!(
        o,
        "hub flags added by the benchmark: {}",
        s.hub_flags.join(" ")
    );
    let _ = writeln!(
        o,
        "agent flags added by the benchmark: {}",
        s.agent_flags.join(" ")
    );
    if let Some(b) = &r.bulk {
        let _ = writeln!(
            o,
            "BULK STAND-IN: {} of the {} vClusters were pre-populated in their steady state (imported, connected) by the load generator before the hub started — {} requests in {:.0} s, {} in parallel, no controllers; the other {} went through the hub's real path",
            b.vclusters,
            s.vclusters,
            b.requests,
            b.seconds,
            b.parallel,
            s.vclusters - b.vclusters
        );
    }
    for (stage, text) in &r.load {
        let _ = writeln!(o, "machine ({stage}): {text}");
    }
    let _ = writeln!(o);

    let m = &r.hub_memory;
    let _ = writeln!(
        o,
        "1. HUB MEMORY (VmRSS / VmHWM of the vclink-hub process, MiB)"
    );
    for (label, v) in [
        ("ready, no agents", m.baseline),
        ("+ real agent's vClusters", m.after_real_agent),
        (
            "+ all simulated agents connected (empty snapshots)",
            m.agents_connected,
        ),
        ("+ all vClusters reported and converged", m.converged),
        ("end of idle window", m.idle_end),
    ] {
        let _ = writeln!(
            o,
            "   {label:<52} {:>8.1} / {:>8.1}",
            v.rss_mib(),
            v.hwm_mib()
        );
    }
    let _ = writeln!(
        o,
        "   per agent stream: {:.1} KiB; per vCluster: {:.2} KiB",
        m.kib_per_agent, m.kib_per_vcluster
    );
    let _ = writeln!(
        o,
        "   convergence (full snapshots → every vCluster connected, incl. the benchmark playing Rancher): {:.1} s",
        m.convergence_seconds
    );
    if full_scale(s) {
        let _ = writeln!(
            o,
            "   MEASURED at {} agents × {} vClusters: VmRSS after convergence {:.1} MiB, peak VmHWM {:.1} MiB — target ≤ {TARGET_HUB_MIB} MiB: {}",
            s.agents,
            s.vclusters,
            m.converged.rss_mib(),
            m.idle_end.hwm_mib(),
            verdict(m.idle_end.hwm_mib() <= TARGET_HUB_MIB)
        );
    } else {
        let _ = writeln!(
            o,
            "   EXTRAPOLATION (linear, not measured) to 2,000 agents × 50,000 vClusters: {:.0} MiB — target ≤ {TARGET_HUB_MIB} MiB: {}",
            m.extrapolated_2000x50000_mib,
            verdict(m.extrapolated_2000x50000_mib <= TARGET_HUB_MIB)
        );
        let _ = writeln!(
            o,
            "   measured VmHWM at this scale: {:.1} MiB",
            m.idle_end.hwm_mib()
        );
    }
    let _ = writeln!(
        o,
        "   hub API requests from the full snapshots to convergence (vclink_hub_api_requests_total by verb): {:?}\n",
        r.converge_hub_requests
    );

    let l = &r.latency;
    let _ = writeln!(
        o,
        "2. TOKEN → REGISTER LATENCY ({} registrations in flight; ms)",
        l.from_write_start.count + l.missing
    );
    let row = |o: &mut String, label: &str, p: &Percentiles| {
        let _ = writeln!(
            o,
            "   {label:<40} p50 {:>8.1}  p90 {:>8.1}  p99 {:>8.1}  max {:>8.1}  mean {:>8.1}",
            p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms, p.mean_ms
        );
    };
    row(
        &mut o,
        "token write sent → Register at agent",
        &l.from_write_start,
    );
    row(
        &mut o,
        "token write acked → Register at agent",
        &l.from_write_ack,
    );
    row(&mut o, "token write request itself", &l.write_request);
    let _ = writeln!(
        o,
        "   writes: {} in {:.2} s ({:.0}/s)",
        l.from_write_start.count + l.missing,
        l.write_seconds,
        l.writes_per_second
    );
    if let Some(h) = l.hub_internal_mean_ms {
        let _ = writeln!(
            o,
            "   hub's own histogram (token seen by the hub → Register sent), mean: {h:.2} ms"
        );
    }
    if l.missing > 0 {
        let _ = writeln!(o, "   {} held vClusters got no Register in time", l.missing);
    }
    let _ = writeln!(
        o,
        "   Rancher's write commits between \"sent\" and \"acked\", so the commit → Register time lies between\n   \
         the two rows: p99 between {:.1} ms (lower bound) and {:.1} ms (upper bound, includes the API server's write latency).",
        l.from_write_ack.p99_ms, l.from_write_start.p99_ms
    );
    let v = if l.missing > 0 || l.from_write_ack.p99_ms > TARGET_P99_MS {
        "MISSES target"
    } else if l.from_write_start.p99_ms <= TARGET_P99_MS {
        "meets target (even by the upper bound)"
    } else {
        "meets target by the lower bound; the upper bound is dominated by the API server's write latency"
    };
    let _ = writeln!(o, "   target p99 ≤ {TARGET_P99_MS} ms: {v}\n");

    let i = &r.idle;
    let _ = writeln!(
        o,
        "3. IDLE API REQUESTS over {} s (audit log of each API server, by user)",
        s.idle_seconds
    );
    let _ = writeln!(
        o,
        "   hub:   {} requests → {:.1}/hour, {:.5} per vCluster per hour",
        i.hub.total, i.hub_per_hour, i.hub_per_vcluster_hour
    );
    requests(&mut o, &i.hub);
    let _ = writeln!(
        o,
        "   agent: {} requests → {:.1}/hour",
        i.agent.total, i.agent_per_hour
    );
    requests(&mut o, &i.agent);
    let _ = writeln!(
        o,
        "   (watches are re-opened every ~290 s by kube-runtime's watcher: ≈12.4/hour per watch, independent of the number of vClusters)\n"
    );

    if let Some(a) = &r.agent_memory {
        let _ = writeln!(
            o,
            "4. AGENT MEMORY watching {} vCluster Services, idle after sync (MiB)",
            s.agent_services
        );
        let _ = writeln!(
            o,
            "   ready with no Services: VmRSS {:.1} (the cost of the Services is the difference)",
            a.baseline.rss_mib()
        );
        let _ = writeln!(
            o,
            "   VmRSS at end of idle window {:.1}; max sampled in window {:.1}; VmHWM (incl. sync) {:.1}",
            a.idle_end.rss_mib(),
            a.idle_max_rss_kib as f64 / 1024.0,
            a.idle_end.hwm_mib()
        );
        let _ = writeln!(
            o,
            "   sync (start → all Services annotated connected): {:.1} s",
            a.convergence_seconds
        );
        let _ = writeln!(
            o,
            "   target ≤ {TARGET_AGENT_MIB} MiB idle: {}\n",
            verdict(a.idle_end.rss_mib() <= TARGET_AGENT_MIB)
        );
    }
    let c = &r.cpu;
    let per = |s: f64, n: u64| {
        if n == 0 {
            f64::NAN
        } else {
            s / (n as f64 / 1000.0)
        }
    };
    let _ = writeln!(
        o,
        "5. HUB CPU (utime + stime from /proc/<pid>/stat; messages = gRPC messages both ways, counted at the simulated agents)"
    );
    let _ = writeln!(
        o,
        "   convergence phase: {:.2} CPU-s for {} messages → {:.3} CPU-s per 1,000 messages (includes the API work they cause)",
        c.converge_cpu_seconds,
        c.converge_messages,
        per(c.converge_cpu_seconds, c.converge_messages)
    );
    let _ = writeln!(
        o,
        "   idle window: {:.2} CPU-s for {} messages → {:.3} CPU-s per 1,000 messages",
        c.idle_cpu_seconds,
        c.idle_messages,
        per(c.idle_cpu_seconds, c.idle_messages)
    );
    let _ = writeln!(
        o,
        "   whole run: {:.2} CPU-s for {} messages → {:.3} CPU-s per 1,000 messages\n",
        c.total_cpu_seconds,
        c.total_messages,
        per(c.total_cpu_seconds, c.total_messages)
    );
    if let Some(rs) = &r.restart {
        let _ = writeln!(
            o,
            "6. HUB RESTART AT {} SCALE, {} agents × {} vClusters (kill -9, start the same hub again)",
            if full_scale(s) { "FULL" } else { "THIS" },
            s.agents,
            s.vclusters
        );
        let _ = writeln!(
            o,
            "   kill → ready: {:.1} s; → every agent re-attached: {:.1} s",
            rs.ready_seconds, rs.attached_seconds
        );
        match rs.settled_seconds {
            Some(sv) => {
                let _ = writeln!(
                    o,
                    "   kill → every vCluster connected, nothing pending: {sv:.1} s — target ≤ 60 s: {}",
                    verdict(sv <= 60.0)
                );
            }
            None => {
                let _ = writeln!(
                    o,
                    "   kill → every vCluster connected: NOT REACHED — MISSES target"
                );
            }
        }
        let _ = writeln!(
            o,
            "   API writes caused (audit log of the local cluster, user vclink-hub): {} — target 0: {}",
            rs.writes.total,
            verdict(rs.writes.total == 0)
        );
        requests(&mut o, &rs.writes);
        let _ = writeln!(
            o,
            "   new process's vclink_hub_api_requests_total: {:?}",
            rs.hub_api_requests
        );
        let _ = writeln!(
            o,
            "   new process: VmRSS when settled {:.1} MiB (VmHWM {:.1}); {:.2} CPU-s for {} messages → {:.3} CPU-s per 1,000 messages (incl. its initial lists)\n",
            rs.rss.rss_mib(),
            rs.rss.hwm_mib(),
            rs.cpu_seconds,
            rs.messages,
            per(rs.cpu_seconds, rs.messages)
        );
    }
    let _ = writeln!(o, "7. BINARY SIZES (release profile)");
    for (n, b) in &r.binary_bytes {
        let _ = writeln!(
            o,
            "   {n:<14} {b:>10} bytes ({:.1} MiB)",
            *b as f64 / 1048576.0
        );
    }
    if !r.notes.is_empty() {
        let _ = writeln!(o, "\nNOTES");
        for n in &r.notes {
            let _ = writeln!(o, "   - {n}");
        }
    }
    o
}

/// Writes a mode's results as `results-<mode>.{json,txt}` and as `results.{json,txt}`
/// (the file the last run wrote); returns `text`.
pub fn write_mode<T: Serialize>(
    dir: &Path,
    mode: &str,
    r: &T,
    text: &str,
) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(r)?;
    for stem in [format!("results-{mode}"), "results".to_string()] {
        std::fs::write(dir.join(format!("{stem}.json")), &json)?;
        std::fs::write(dir.join(format!("{stem}.txt")), text)?;
    }
    Ok(text.to_string())
}

/// Writes `results.json` and `results.txt` into `dir`.
pub fn write(dir: &Path, r: &Results) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("results.json"), serde_json::to_string_pretty(r)?)?;
    let text = render(r);
    std::fs::write(dir.join("results.txt"), &text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_renders_and_labels_the_extrapolation() {
        let r = Results {
            agent_memory: Some(AgentMemory::default()),
            binary_bytes: vec![("vclink-hub".into(), 1 << 20)],
            ..Default::default()
        };
        let t = render(&r);
        assert!(t.contains("EXTRAPOLATION"));
        assert!(t.contains("4. AGENT MEMORY"));
        assert!(t.contains("vclink-hub"));
        assert!(
            serde_json::to_string(&r)
                .unwrap()
                .contains("\"hub_memory\"")
        );
    }
}
