//! The measuring instruments: process memory from `/proc/<pid>/status`, percentiles of
//! latency samples, and request counts from a kube-apiserver audit log (the only
//! per-client request count a v1.20 API server offers: `apiserver_request_total` has no
//! user label). Pure apart from reading files, and unit-tested.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

/// Resident memory of a process, in KiB, as the kernel reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Rss {
    /// `VmRSS`: resident now.
    pub rss_kib: u64,
    /// `VmHWM`: the highest resident size since the process started.
    pub hwm_kib: u64,
}

impl Rss {
    /// Reads `/proc/<pid>/status`.
    pub fn of(pid: u32) -> anyhow::Result<Rss> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        parse_status(&text)
            .ok_or_else(|| anyhow::anyhow!("/proc/{pid}/status has no VmRSS/VmHWM lines"))
    }

    /// `VmRSS` in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }

    /// `VmHWM` in MiB.
    pub fn hwm_mib(&self) -> f64 {
        self.hwm_kib as f64 / 1024.0
    }
}

/// `VmRSS` and `VmHWM` from the text of `/proc/<pid>/status`.
pub fn parse_status(text: &str) -> Option<Rss> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    Some(Rss {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// CPU time (user + system) a process has used, in seconds, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_ticks(&text).map(|t| t as f64 / clock_ticks())
}

/// utime + stime (clock ticks) from the text of `/proc/<pid>/stat` (fields 14 and 15;
/// the command name in parentheses may hold spaces, so fields are counted after it).
pub fn parse_stat_ticks(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// `getconf CLK_TCK` (100 on Linux unless told otherwise).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// Summary of latency samples, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Number of samples.
    pub count: usize,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
    /// Arithmetic mean.
    pub mean_ms: f64,
}

/// Nearest-rank percentiles of `samples`.
pub fn percentiles(samples: &[Duration]) -> Percentiles {
    if samples.is_empty() {
        return Percentiles::default();
    }
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        let i = ((p / 100.0) * ms.len() as f64).ceil() as usize;
        ms[i.clamp(1, ms.len()) - 1]
    };
    Percentiles {
        count: ms.len(),
        p50_ms: rank(50.0),
        p90_ms: rank(90.0),
        p99_ms: rank(99.0),
        max_ms: ms[ms.len() - 1],
        mean_ms: ms.iter().sum::<f64>() / ms.len() as f64,
    }
}

/// The audit policy the benchmark's API servers run with: request metadata (no bodies)
/// of the users the components run as, nothing of anyone else (the benchmark itself
/// plays Rancher as `admin`, which must not be counted).
pub fn audit_policy(users: &[&str]) -> String {
    let users = users
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [\"RequestReceived\"]\nrules:\n\
         - level: Metadata\n  users: [{users}]\n- level: None\n"
    )
}

/// kube-apiserver flags that write an audit log with `policy`.
pub fn audit_args(policy: &Path, log: &Path) -> Vec<String> {
    vec![
        format!("--audit-policy-file={}", policy.display()),
        format!("--audit-log-path={}", log.display()),
        "--audit-log-format=json".into(),
        "--audit-log-maxsize=0".into(),
    ]
}

/// Requests one user made, counted by `verb resource`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RequestCount {
    /// All requests.
    pub total: u64,
    /// By `"<verb> <group/resource>"`, e.g. `"watch management.cattle.io/clusters"`.
    pub by_kind: BTreeMap<String, u64>,
}

/// Counts the requests of `user` that the API server *received* in `[since, until)`
/// (each request once, by audit id; a watch opened before `since` is not counted even
/// when it ends inside the window), reading the audit log text `log`.
pub fn count_requests(log: &str, user: &str, since: Timestamp, until: Timestamp) -> RequestCount {
    let mut seen = std::collections::HashSet::new();
    let mut out = RequestCount::default();
    for line in log.lines() {
        let Ok(ev) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let s = |p: &str| ev.pointer(p).and_then(serde_json::Value::as_str);
        if s("/user/username") != Some(user) {
            continue;
        }
        let received = s("/requestReceivedTimestamp").and_then(|t| t.parse::<Timestamp>().ok());
        if received.is_none_or(|t| t < since || t >= until) {
            continue;
        }
        let Some(id) = s("/auditID") else { continue };
        if !seen.insert(id.to_string()) {
            continue;
        }
        let group = s("/objectRef/apiGroup").unwrap_or("");
        let resource = s("/objectRef/resource").unwrap_or_else(|| s("/requestURI").unwrap_or("?"));
        let sub = s("/objectRef/subresource")
            .map(|x| format!("/{x}"))
            .unwrap_or_default();
        let kind = if group.is_empty() {
            format!("{} {resource}{sub}", s("/verb").unwrap_or("?"))
        } else {
            format!("{} {group}/{resource}{sub}", s("/verb").unwrap_or("?"))
        };
        out.total += 1;
        *out.by_kind.entry(kind).or_default() += 1;
    }
    out
}

/// Only the write requests (create, update, patch, delete, deletecollection) of `c`.
pub fn writes_only(c: &RequestCount) -> RequestCount {
    let mut out = RequestCount::default();
    for (k, v) in &c.by_kind {
        let verb = k.split(' ').next().unwrap_or("");
        if matches!(
            verb,
            "create" | "update" | "patch" | "delete" | "deletecollection"
        ) {
            out.total += v;
            out.by_kind.insert(k.clone(), *v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_read() {
        let t = "Name:\tvclink-hub\nVmPeak:\t  999 kB\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        let r = parse_status(t).unwrap();
        assert_eq!((r.rss_kib, r.hwm_kib), (10240, 20480));
        assert_eq!(r.rss_mib(), 10.0);
        assert_eq!(parse_status("Name: x\n"), None);
    }

    #[test]
    fn stat_ticks_are_read_after_the_command_name() {
        let t =
            "1234 (vclink hub) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 1 2 3\n";
        assert_eq!(parse_stat_ticks(t), Some(300));
        assert_eq!(parse_stat_ticks("garbage"), None);
        assert!(cpu_seconds(std::process::id()).is_some());
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = percentiles(&v);
        assert_eq!(
            (p.count, p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms),
            (100, 50.0, 90.0, 99.0, 100.0)
        );
        assert_eq!(percentiles(&[]).count, 0);
        assert_eq!(percentiles(&[Duration::from_millis(7)]).p99_ms, 7.0);
    }

    #[test]
    fn audit_events_are_counted_once_per_request_and_user() {
        let ev = |id: &str, user: &str, verb: &str, at: &str, stage: &str| {
            format!(
                r#"{{"auditID":"{id}","stage":"{stage}","verb":"{verb}","user":{{"username":"{user}"}},"objectRef":{{"resource":"clusters","apiGroup":"management.cattle.io"}},"requestReceivedTimestamp":"{at}"}}"#
            )
        };
        let log = [
            ev(
                "a",
                "vclink-hub",
                "watch",
                "2026-01-01T00:00:00.000001Z",
                "ResponseStarted",
            ),
            ev(
                "a",
                "vclink-hub",
                "watch",
                "2026-01-01T00:00:00.000001Z",
                "ResponseComplete",
            ),
            ev(
                "b",
                "vclink-hub",
                "watch",
                "2026-01-01T00:05:00.5Z",
                "ResponseStarted",
            ),
            ev(
                "b",
                "vclink-hub",
                "watch",
                "2026-01-01T00:05:00.5Z",
                "ResponseComplete",
            ),
            ev(
                "c",
                "admin",
                "list",
                "2026-01-01T00:05:01Z",
                "ResponseComplete",
            ),
            "not json".to_string(),
        ]
        .join("\n");
        let since: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let until: Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();
        let c = count_requests(&log, "vclink-hub", since, until);
        assert_eq!(c.total, 1);
        assert_eq!(c.by_kind["watch management.cattle.io/clusters"], 1);
        assert!(audit_policy(&["vclink-hub"]).contains("users: [\"vclink-hub\"]"));
    }
}
