//! The one token bucket of vclink. Both binaries put it in front of their Kubernetes
//! writes (`--kube-qps`, `--kube-burst`): a burst of a few writes goes out at once, so
//! one vCluster's state change is not delayed behind its own Event, while a flood (a
//! reconnect, thousands of new vClusters) is paced — callers wait with
//! [`TokenBucket::until_ready`]. The hub also limits each agent stream's messages and
//! its TokenReviews with it, refusing rather than waiting — [`TokenBucket::try_take`].
//! The arithmetic ([`TokenBucket::reserve`], [`TokenBucket::try_take`]) works on given
//! `Instant`s, so it is unit tested without a clock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Shared bucket; clones share one budget.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    qps: f64,
    burst: f64,
    state: Arc<Mutex<(f64, Instant)>>,
}

impl TokenBucket {
    /// `qps` tokens per second, at most `burst` (≥ 1) saved up. A `qps` that is not a
    /// positive finite number disables limiting.
    pub fn new(qps: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            qps: if qps.is_finite() { qps } else { 0.0 },
            burst,
            state: Arc::new(Mutex::new((burst, Instant::now()))),
        }
    }

    /// Takes one token if one is there now; never waits and takes nothing otherwise.
    pub fn try_take(&self, now: Instant) -> bool {
        if self.qps <= 0.0 {
            return true;
        }
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = *s;
        let tokens =
            (tokens + now.saturating_duration_since(last).as_secs_f64() * self.qps).min(self.burst);
        let taken = tokens >= 1.0;
        *s = (if taken { tokens - 1.0 } else { tokens }, now.max(last));
        taken
    }

    /// Waits until a token is there, then takes it. Waiters queue in call order.
    pub async fn until_ready(&self) {
        let wait = self.reserve(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes one token; returns how long the caller must wait before using it.
    pub fn reserve(&self, now: Instant) -> Duration {
        if self.qps <= 0.0 {
            return Duration::ZERO;
        }
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = *s;
        let tokens = (tokens + now.saturating_duration_since(last).as_secs_f64() * self.qps)
            .min(self.burst)
            - 1.0;
        *s = (tokens, now.max(last));
        if tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-tokens / self.qps)
        }
    }
}

/// The name both binaries' writers use for the bucket.
pub type RateLimiter = TokenBucket;

impl TokenBucket {
    /// Same as [`TokenBucket::until_ready`] (the agent's writers call it so).
    pub async fn acquire(&self) {
        self.until_ready().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_paced() {
        let r = TokenBucket::new(10.0, 2);
        let t = Instant::now();
        assert_eq!(r.reserve(t), Duration::ZERO);
        assert_eq!(r.reserve(t), Duration::ZERO);
        let w = r.reserve(t);
        assert!(
            w > Duration::from_millis(90) && w < Duration::from_millis(110),
            "{w:?}"
        );
        // The next caller queues behind the previous one.
        let w2 = r.clone().reserve(t);
        assert!(w2 > Duration::from_millis(190), "{w2:?}");
        assert_eq!(TokenBucket::new(0.0, 1).reserve(t), Duration::ZERO);
        assert_eq!(TokenBucket::new(f64::NAN, 1).reserve(t), Duration::ZERO);
    }

    #[test]
    fn refills_over_time_up_to_the_burst() {
        let r = TokenBucket::new(10.0, 3);
        let t = Instant::now();
        for _ in 0..3 {
            assert_eq!(r.reserve(t), Duration::ZERO);
        }
        let later = t + Duration::from_secs(10);
        for _ in 0..3 {
            assert_eq!(r.reserve(later), Duration::ZERO);
        }
        assert!(r.reserve(later) > Duration::ZERO);
    }

    #[test]
    fn try_take_never_goes_into_debt() {
        let r = TokenBucket::new(2.0, 2);
        let t = Instant::now();
        assert!(r.try_take(t));
        assert!(r.try_take(t));
        assert!(!r.try_take(t));
        assert!(
            !r.try_take(t),
            "a refusal takes nothing, but gives nothing either"
        );
        assert!(r.try_take(t + Duration::from_millis(500)));
        assert!(!r.try_take(t + Duration::from_millis(500)));
        assert!(TokenBucket::new(0.0, 1).try_take(t));
        assert!(TokenBucket::new(-1.0, 1).try_take(t));
    }
}
