//! The agent's limiter for its Kubernetes writes (`--kube-qps`, `--kube-burst`): a
//! vCluster's annotation patch, Event and Job go out together, while the burst after a
//! reconnect is paced instead of hammering the API server. The bucket is shared with
//! the hub (`vclink_proto::ratelimit`); this adds the waiting.

use vclink_proto::ratelimit::TokenBucket;

/// Shared limiter; clones share the same budget.
#[derive(Debug, Clone)]
pub struct RateLimiter(TokenBucket);

impl RateLimiter {
    /// At most `qps` writes per second on average, `burst` at once.
    pub fn new(qps: f64, burst: u32) -> Self {
        Self(TokenBucket::new(qps, burst))
    }

    /// Waits for the next slot.
    pub async fn acquire(&self) {
        let wait = self.0.reserve(std::time::Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}
