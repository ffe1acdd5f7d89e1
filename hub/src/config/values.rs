//! The values of the hub's flags that are more than a number or a path, parsed and
//! checked where clap reads them so a bad value fails at start with the flag's name:
//! durations (`90s`, `5m`), request rates, shares, the `--host-selector` label, and the
//! leader-election timings that must leave no moment with two writers.

use std::time::Duration;

/// Leader-election timings: 0 < retry < renew deadline, and renew deadline + retry
/// period < lease duration. A leader notices a failed renewal only at its next retry,
/// so it may write until renew deadline + retry period after its last renewal; a
/// standby takes over after the lease duration. Anything else lets two replicas write.
pub fn leader_timings(lease: Duration, renew: Duration, retry: Duration) -> Result<(), String> {
    if retry.is_zero() || renew <= retry || lease < Duration::from_secs(1) {
        return Err(format!(
            "leader election timings must satisfy 0 < --leader-election-retry-period ({retry:?}) \
             < --leader-election-renew-deadline ({renew:?}), --leader-election-lease-duration \
             ({lease:?}) at least 1s"
        ));
    }
    if renew.saturating_add(retry) >= lease {
        return Err(format!(
            "--leader-election-renew-deadline ({renew:?}) + --leader-election-retry-period \
             ({retry:?}) must be shorter than --leader-election-lease-duration ({lease:?}): \
             otherwise a leader that lost the lease may still write after a standby took over"
        ));
    }
    Ok(())
}

/// Parses a rate limit in requests per second, 0.1 to 10,000.
pub fn parse_qps(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("not a number: {s:?}"))?;
    if !(0.1..=10_000.0).contains(&v) {
        return Err(format!(
            "{s} is out of range: use 0.1 to 10000 (requests per second)"
        ));
    }
    Ok(v)
}

/// Parses a share between 0 and 0.9.
pub fn parse_share(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("not a number: {s:?}"))?;
    if !(0.0..=0.9).contains(&v) {
        return Err(format!("{s} is out of range: use 0 to 0.9"));
    }
    Ok(v)
}

/// `--host-selector`: one label, `key=value`, a Rancher cluster must carry to host an
/// agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostSelector {
    /// Label key.
    pub key: String,
    /// Label value.
    pub value: String,
}

impl Default for HostSelector {
    fn default() -> Self {
        Self {
            key: "vclink.io/agent".into(),
            value: "enabled".into(),
        }
    }
}

impl std::fmt::Display for HostSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

impl HostSelector {
    /// Parses `key=value` (both non-empty, no spaces).
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad =
            || format!("not a label selector {s:?}: use key=value, e.g. vclink.io/agent=enabled");
        let (k, v) = s.trim().split_once('=').ok_or_else(bad)?;
        let ok = |t: &str| {
            !t.is_empty() && !t.contains(|c: char| c.is_whitespace() || c == '=' || c == ',')
        };
        if !ok(k) || !ok(v) {
            return Err(bad());
        }
        Ok(Self {
            key: k.to_string(),
            value: v.to_string(),
        })
    }
}

/// Parses `300`, `300s`, `5m`, `1h`, `250ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (use e.g. 90s, 5m, 1h)"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("unknown unit in {s:?} (use ms, s, m or h)")),
    };
    Ok(d)
}
