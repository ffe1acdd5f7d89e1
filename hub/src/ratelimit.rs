//! A token bucket for the hub's own Kubernetes API requests (--kube-qps / --kube-burst),
//! so a flood of new vClusters cannot overload Rancher's local API server.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// See the module docs.
#[derive(Debug)]
pub struct RateLimiter {
    qps: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// `qps` tokens per second, at most `burst` saved up. A `qps` ≤ 0 disables limiting.
    pub fn new(qps: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            qps,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes one token; returns how long the caller must wait first.
    fn reserve(&self, now: Instant) -> Duration {
        if self.qps <= 0.0 {
            return Duration::ZERO;
        }
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = *s;
        let tokens = (tokens + now.saturating_duration_since(last).as_secs_f64() * self.qps)
            .min(self.burst)
            - 1.0;
        *s = (tokens, now);
        if tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-tokens / self.qps)
        }
    }

    /// Waits for a token.
    pub async fn acquire(&self) {
        let wait = self.reserve(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_paced() {
        let r = RateLimiter::new(10.0, 2);
        let t = Instant::now();
        assert_eq!(r.reserve(t), Duration::ZERO);
        assert_eq!(r.reserve(t), Duration::ZERO);
        let w = r.reserve(t);
        assert!(
            w > Duration::from_millis(90) && w < Duration::from_millis(110),
            "{w:?}"
        );
        assert_eq!(RateLimiter::new(0.0, 1).reserve(t), Duration::ZERO);
    }
}
