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
    /// Writers behind this bucket may write only while the fence holds (leader election).
    fence: Option<Fence>,
}

/// Whether this replica may still write: shared between a leader-election loop, which
/// extends it after every renewal and closes it the moment leadership is in doubt, and
/// the writers, which check it after waiting for the rate limiter and right before each
/// API call ([`TokenBucket::until_ready_fenced`]). Clones share one state.
#[derive(Debug, Clone)]
pub struct Fence(Arc<Mutex<FenceState>>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FenceState {
    Always,
    Until(Instant),
    Closed,
}

/// A write refused because the fence no longer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this replica no longer holds the leader lease; the write was not sent")]
pub struct Fenced;

impl Fence {
    /// A fence that always holds (no leader election).
    pub fn always() -> Self {
        Self(Arc::new(Mutex::new(FenceState::Always)))
    }

    /// A fence that does not hold until [`Fence::extend_until`].
    pub fn closed() -> Self {
        Self(Arc::new(Mutex::new(FenceState::Closed)))
    }

    /// Holds until `t` (a renewal succeeded); never shortens an `always` fence.
    pub fn extend_until(&self, t: Instant) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if *s != FenceState::Always {
            *s = FenceState::Until(t);
        }
    }

    /// Stops holding now (leadership lost or released).
    pub fn close(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = FenceState::Closed;
    }

    /// True while writes may go out.
    pub fn holds(&self, now: Instant) -> bool {
        match *self.0.lock().unwrap_or_else(|p| p.into_inner()) {
            FenceState::Always => true,
            FenceState::Until(t) => now < t,
            FenceState::Closed => false,
        }
    }
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
            fence: None,
        }
    }

    /// The same budget, with writes gated by `fence` ([`TokenBucket::until_ready_fenced`]).
    pub fn with_fence(mut self, fence: Fence) -> Self {
        self.fence = Some(fence);
        self
    }

    /// [`TokenBucket::until_ready`], then the fence check: `Err(Fenced)` when this replica
    /// may no longer write (checked before waiting too, so a fenced writer takes no token).
    pub async fn until_ready_fenced(&self) -> Result<(), Fenced> {
        self.check_fence()?;
        self.until_ready().await;
        self.check_fence()
    }

    fn check_fence(&self) -> Result<(), Fenced> {
        match &self.fence {
            Some(f) if !f.holds(Instant::now()) => Err(Fenced),
            _ => Ok(()),
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
            // A tiny qps makes the wait astronomically long; never panic on it.
            Duration::try_from_secs_f64(-tokens / self.qps).unwrap_or(Duration::MAX)
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
    fn a_tiny_qps_waits_forever_instead_of_panicking() {
        let r = TokenBucket::new(1e-20, 1);
        let t = Instant::now();
        assert_eq!(r.reserve(t), Duration::ZERO);
        assert_eq!(r.reserve(t), Duration::MAX);
    }

    #[tokio::test]
    async fn a_fence_stops_writes_after_the_wait() {
        let fence = Fence::closed();
        let r = TokenBucket::new(0.0, 1).with_fence(fence.clone());
        assert_eq!(r.until_ready_fenced().await, Err(Fenced));
        fence.extend_until(Instant::now() + Duration::from_secs(60));
        assert_eq!(r.until_ready_fenced().await, Ok(()));
        fence.extend_until(Instant::now());
        assert_eq!(r.until_ready_fenced().await, Err(Fenced), "expired");
        fence.close();
        assert!(!fence.holds(Instant::now()));
        let always = Fence::always();
        always.extend_until(Instant::now());
        assert!(always.holds(Instant::now()), "always stays always");
        assert_eq!(TokenBucket::new(0.0, 1).until_ready_fenced().await, Ok(()));
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
