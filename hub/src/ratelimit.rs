//! The hub's limiter for its own Kubernetes API requests (--kube-qps / --kube-burst), so
//! a flood of new vClusters cannot overload Rancher's local API server. The bucket is
//! shared with the agent (`vclink_proto::ratelimit`); this adds the waiting.

use vclink_proto::ratelimit::TokenBucket;

/// See the module docs. Clones share one budget.
#[derive(Debug, Clone)]
pub struct RateLimiter(TokenBucket);

impl RateLimiter {
    /// `qps` requests per second, at most `burst` at once; `qps` ≤ 0 disables limiting.
    pub fn new(qps: f64, burst: u32) -> Self {
        Self(TokenBucket::new(qps, burst))
    }

    /// Waits for a token.
    pub async fn acquire(&self) {
        let wait = self.0.reserve(std::time::Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}
