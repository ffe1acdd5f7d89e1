//! The hub restart at the benchmark's scale: kill -9 with everything converged, start
//! the same hub again, and measure until every agent is attached and every vCluster
//! connected with nothing else in the hub's own gauge; then count the writes the restart
//! caused, both from the API server's audit log (user `vclink-hub`) and from the new
//! process's `vclink_hub_api_requests_total`, and the new process's CPU per message.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::jiff::Timestamp;
use vclink_harness::HubProcess;

use crate::env::HUB_USER;
use crate::loadgen::Tracker;
use crate::measure::{count_requests, cpu_seconds, writes_only};
use crate::report::Restart;
use crate::scenario::{hub_metric, rss, wait_until};

/// What the restart waits for.
pub struct Want {
    /// Agent streams (simulated + the real agent).
    pub agents: f64,
    /// vClusters that must be connected.
    pub connected: f64,
}

/// Kills the hub (SIGKILL), starts it again and measures (see the module docs).
pub async fn run(
    hub: &mut HubProcess,
    audit_log: &std::path::Path,
    tracker: &Tracker,
    want: Want,
    timeout: Duration,
) -> anyhow::Result<Restart> {
    let since = Timestamp::now();
    let msgs = || tracker.sent.load(Ordering::Relaxed) + tracker.received.load(Ordering::Relaxed);
    let t0 = Instant::now();
    hub.kill().await;
    let n0 = msgs();
    hub.start_again().await.context("starting the hub again")?;
    let mut r = Restart {
        ready_seconds: t0.elapsed().as_secs_f64(),
        ..Default::default()
    };
    let h = &*hub;
    wait_until(
        "every agent re-attached",
        timeout,
        async || hub_metric(h, "vclink_hub_agents_connected").await >= want.agents,
        String::new,
    )
    .await?;
    r.attached_seconds = t0.elapsed().as_secs_f64();
    let last = std::cell::RefCell::new(String::new());
    let settled = wait_until(
        "every vCluster connected and nothing else",
        Duration::from_secs(300),
        async || {
            let text = h.metrics().await.unwrap_or_default();
            let by = crate::hostile::metric_by_label(&text, "vclink_hub_vclusters", "state");
            let connected = by.get("connected").copied().unwrap_or(0.0);
            let others: f64 = by
                .iter()
                .filter(|(k, _)| *k != "connected")
                .map(|(_, v)| v)
                .sum();
            *last.borrow_mut() = format!("{by:?}");
            connected >= want.connected && others == 0.0
        },
        || format!("vclink_hub_vclusters {}", last.borrow()),
    )
    .await;
    if settled.is_ok() {
        r.settled_seconds = Some(t0.elapsed().as_secs_f64());
    }
    r.cpu_seconds = h.pid().and_then(cpu_seconds).unwrap_or(f64::NAN);
    r.messages = msgs() - n0;
    r.rss = rss(h.pid());
    // Writes that follow the settle (a late resync, a status patch) still count.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let log = std::fs::read_to_string(audit_log).unwrap_or_default();
    r.writes = writes_only(&count_requests(&log, HUB_USER, since, Timestamp::now()));
    let text = h.metrics().await.unwrap_or_default();
    r.hub_api_requests =
        crate::hostile::metric_by_label(&text, "vclink_hub_api_requests_total", "verb")
            .into_iter()
            .collect();
    Ok(r)
}
