//! A small client-side rate limiter for Kubernetes writes (`--kube-qps`): every write
//! takes the next free slot, so bursts after a reconnect are spread out instead of
//! hammering the API server.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// Shared limiter; clones share the same budget.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    interval: Duration,
    next: Arc<Mutex<Instant>>,
}

impl RateLimiter {
    /// At most `qps` acquisitions per second (a non-positive or non-finite value means 1).
    pub fn new(qps: f64) -> Self {
        let qps = if qps.is_finite() && qps > 0.0 {
            qps
        } else {
            1.0
        };
        Self {
            interval: Duration::from_secs_f64(1.0 / qps),
            next: Arc::new(Mutex::new(Instant::now())),
        }
    }

    /// Waits for the next slot.
    pub async fn acquire(&self) {
        let wait_until = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let slot = if *next < now { now } else { *next };
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(wait_until).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn spreads_requests_at_the_configured_rate() {
        let rl = RateLimiter::new(10.0);
        let start = Instant::now();
        for _ in 0..11 {
            rl.acquire().await;
        }
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(1000), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(1100), "{elapsed:?}");
    }
}
