//! The agent's limiter for its Kubernetes writes (`--kube-qps`, `--kube-burst`): a
//! vCluster's annotation patch, Event and Job go out together, while the burst after a
//! reconnect is paced instead of hammering the API server. The same token bucket as the
//! hub's, from `vclink_proto::ratelimit`.

pub use vclink_proto::ratelimit::RateLimiter;
