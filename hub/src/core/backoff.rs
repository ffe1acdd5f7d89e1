//! The one retry delay of the hub: exponential from a one-second base, capped, with an
//! optional jitter so that many keys failing together (an API server outage) do not
//! retry in lockstep. Used by the work queue, failed registrations, TokenReview pauses
//! and the Rancher token rotation.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff: 1 s, 2 s, 4 s … for attempts 1, 2, 3 …, at most `cap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The longest delay.
    pub cap: Duration,
    /// Multiply by a random factor in [0.5, 1.5).
    pub jitter: bool,
}

impl Backoff {
    /// Reconcile retries and failed registrations: up to 5 min, jittered.
    pub const RECONCILE: Self = Self {
        cap: Duration::from_secs(300),
        jitter: true,
    };

    /// A backoff capped at `cap`, without jitter.
    pub const fn capped(cap: Duration) -> Self {
        Self { cap, jitter: false }
    }

    /// The delay after the `attempt`-th consecutive failure (0 and 1 both give 1 s).
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = Duration::from_secs(1).saturating_mul(1u32 << attempt.saturating_sub(1).min(9));
        let capped = base.min(self.cap);
        if self.jitter {
            capped.mul_f64(rand::rng().random_range(0.5..1.5))
        } else {
            capped
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_is_capped() {
        let b = Backoff::RECONCILE;
        assert!(b.delay(1) < Duration::from_secs(2));
        assert!(b.delay(30) <= Duration::from_secs(450));
        assert!(b.delay(5) >= Duration::from_secs(8));
        let p = Backoff::capped(Duration::from_secs(30));
        let got: Vec<u64> = (1..=7).map(|n| p.delay(n).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 30, 30]);
    }
}
