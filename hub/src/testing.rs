//! One builder of a test [`Hub`], shared by the unit tests and `hub/tests` (hidden from
//! the docs; not for production use): defaults that match the hub's flags, a few
//! knobs, and no delay task (delayed re-queues fall back to queueing at once).

use std::sync::Arc;
use std::time::Duration;

use crate::config::RegistrationTlsMode;
use crate::core::index::Index;
use crate::queue::Queue;
use crate::state::{Hub, HubConfig};

/// The proof key of every test hub (fixed, so tests can sign what they expect).
pub(crate) fn test_proof_key() -> crate::core::proof::ProofKey {
    crate::core::proof::ProofKey::from_bytes(&[0x5a; crate::core::proof::KEY_LEN])
        .unwrap_or_else(|_| unreachable!("the length is KEY_LEN"))
}

/// Builds a test hub. See the module docs.
#[derive(Debug)]
pub struct TestHub {
    cfg: HubConfig,
    ready: bool,
    index: Option<Index>,
}

impl Default for TestHub {
    fn default() -> Self {
        Self {
            cfg: HubConfig {
                workspace: "fleet-default".into(),
                grace: Duration::from_secs(300),
                heartbeat_seconds: 30,
                max_vclusters: 10,
                max_per_namespace: 50,
                // Test hubs serve every host unless `host_selector` is called.
                hosts: crate::core::scope::HostOptIn {
                    selector: None,
                    allow_nested: false,
                },
                tls_mode: RegistrationTlsMode::Auto,
                proof_key: Arc::new(test_proof_key()),
            },
            ready: false,
            index: None,
        }
    }
}

impl TestHub {
    /// Most vClusters one agent may report.
    pub fn max_vclusters(mut self, n: usize) -> Self {
        self.cfg.max_vclusters = n;
        self
    }

    /// Most vClusters to import in one namespace.
    pub fn max_per_namespace(mut self, n: usize) -> Self {
        self.cfg.max_per_namespace = n;
        self
    }

    /// Serves only hosts opted in with `selector` (`key=value`, for the messages).
    pub fn host_selector(mut self, selector: &str, allow_nested: bool) -> Self {
        self.cfg.hosts = crate::core::scope::HostOptIn {
            selector: Some(selector.to_string()),
            allow_nested,
        };
        self
    }

    /// Marks the hub ready (as if every watch had listed).
    pub fn ready(mut self, ready: bool) -> Self {
        self.ready = ready;
        self
    }

    /// Starts from this index of Rancher objects.
    #[cfg(test)]
    pub(crate) fn index(mut self, index: Index) -> Self {
        self.index = Some(index);
        self
    }

    /// The hub.
    pub fn build(self) -> Arc<Hub> {
        let (queue, _delays) = Queue::new();
        let hub = Arc::new(Hub::new(self.cfg, queue));
        if let Some(index) = self.index {
            hub.world().index = index;
        }
        if self.ready {
            hub.set_ready();
        }
        hub
    }
}
