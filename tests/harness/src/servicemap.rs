//! The one network fake of the harness: in a real cluster a registration Job reaches a
//! vCluster's API at its in-cluster Service address `https://<name>.<ns>:443`; here no
//! cluster DNS or Service routing exists, so simulated vClusters record which loopback
//! URL plays each Service address, and the Job runner substitutes it in the Job's
//! arguments and environment. Shared between the vCluster factory and the runner of one
//! test environment (never process-global: tests in one binary run in parallel).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Service address → loopback URL of the API server that plays it.
#[derive(Debug, Clone, Default)]
pub struct ServiceMap {
    inner: Arc<Mutex<HashMap<String, String>>>,
}

impl ServiceMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The in-cluster address of a vCluster Service, as the agent computes it.
    pub fn service_url(namespace: &str, name: &str) -> String {
        format!("https://{name}.{namespace}:443")
    }

    /// Records that `service_url` is served by `target` (e.g. `https://127.0.0.1:40123`).
    pub fn insert(&self, service_url: impl Into<String>, target: impl Into<String>) {
        self.lock()
            .insert(normalise(&service_url.into()), target.into());
    }

    /// Forgets a mapping.
    pub fn remove(&self, service_url: &str) {
        self.lock().remove(&normalise(service_url));
    }

    /// The loopback URL for `service_url`, if it is mapped.
    pub fn resolve(&self, service_url: &str) -> Option<String> {
        self.lock().get(&normalise(service_url)).cloned()
    }

    /// A copy of all mappings.
    pub fn snapshot(&self) -> HashMap<String, String> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        // A poisoned map still holds valid data: a panicking test thread must not hide
        // the mappings from the others.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `https://a.b:443/` and `https://a.b:443` are the same address.
fn normalise(url: &str) -> String {
    url.trim_end_matches('/').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_with_or_without_trailing_slash() {
        let m = ServiceMap::new();
        m.insert(
            ServiceMap::service_url("team-a", "vc1"),
            "https://127.0.0.1:4000",
        );
        assert_eq!(
            m.resolve("https://vc1.team-a:443/").as_deref(),
            Some("https://127.0.0.1:4000")
        );
        assert_eq!(m.resolve("https://vc1.team-b:443"), None);
        m.remove("https://vc1.team-a:443");
        assert!(m.snapshot().is_empty());
    }
}
