//! The hub's limiter for its own Kubernetes API requests (`--kube-qps`, `--kube-burst`),
//! so a flood of new vClusters cannot overload Rancher's local API server. The same
//! token bucket as the agent's, from `vclink_proto::ratelimit`.

pub use vclink_proto::ratelimit::RateLimiter;
