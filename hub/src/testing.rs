//! One builder of a test [`Hub`], shared by the unit tests and `hub/tests` (hidden from
//! the docs; not for production use): defaults that match the hub's flags, a few
//! knobs, and no delay task (delayed re-queues fall back to queueing at once); and the
//! hub's proof annotations, for end-to-end tests that create clusters as the hub does.

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

pub use crate::clusters::proofkey::{DATA_KEY as PROOF_KEY_DATA, SECRET_NAME as PROOF_KEY_SECRET};
pub use crate::core::proof::BadKey;

fn proof_subject<'a>(
    namespace: &'a str,
    name: &'a str,
    host: &'a str,
    service_uid: &'a str,
) -> crate::core::proof::Subject<'a> {
    crate::core::proof::Subject {
        namespace,
        name,
        host,
        svc_uid: service_uid,
    }
}

/// The annotations the hub writes on a provisioning cluster it creates (the create-time
/// proof, signed at `unix_time` with `key`, the bytes of the hub's key Secret), for
/// end-to-end tests that create clusters as the hub would.
pub fn proof_annotations(
    key: &[u8],
    namespace: &str,
    name: &str,
    host: &str,
    service_uid: &str,
    unix_time: i64,
) -> Result<Vec<(String, String)>, BadKey> {
    use crate::core::proof::{ANNOTATION_PROOF, ProofKey, sign_create};
    let key = ProofKey::from_bytes(key)?;
    let s = proof_subject(namespace, name, host, service_uid);
    Ok(vec![(
        ANNOTATION_PROOF.to_string(),
        sign_create(&key, &s, unix_time),
    )])
}

/// The annotation the hub patches right after its create returns: the proof bound to
/// the created object's UID `object_uid`.
pub fn proof_uid_annotation(
    key: &[u8],
    namespace: &str,
    name: &str,
    host: &str,
    service_uid: &str,
    object_uid: &str,
) -> Result<(String, String), BadKey> {
    use crate::core::proof::{ANNOTATION_PROOF_UID, ProofKey, sign_uid};
    let key = ProofKey::from_bytes(key)?;
    let s = proof_subject(namespace, name, host, service_uid);
    Ok((
        ANNOTATION_PROOF_UID.to_string(),
        sign_uid(&key, &s, object_uid),
    ))
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
                workspaces: crate::core::workspace::Workspaces::single("fleet-default"),
                create_workspaces: false,
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
                synced_labels: None,
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

    /// Keeps the Service labels `policy` syncs (as with --rancher-mirror).
    pub fn synced_labels(mut self, policy: crate::core::labels::LabelPolicy) -> Self {
        self.cfg.synced_labels = Some(policy);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::proof::{Observed, Trust, judge};

    #[test]
    fn proof_annotations_are_what_the_hub_trusts() {
        let raw = [0x5a; crate::core::proof::KEY_LEN];
        let key = test_proof_key();
        let s = proof_subject("fleet-default", "vc", "c-m-1", "svc-1");
        let create = proof_annotations(&raw, "fleet-default", "vc", "c-m-1", "svc-1", 1_000)
            .expect("a 32-byte key");
        let (k, uid_proof) =
            proof_uid_annotation(&raw, "fleet-default", "vc", "c-m-1", "svc-1", "obj-1")
                .expect("a 32-byte key");
        assert_eq!(k, "vclink.io/proof-uid");
        let at_create = Observed {
            object_uid: "obj-1",
            created_unix: Some(1_001),
            proof: create.first().map(|(_, v)| v.as_str()),
            proof_uid: None,
        };
        assert_eq!(judge(&key, &s, &at_create), Trust::ProvenAtCreate);
        let sealed = Observed {
            proof_uid: Some(&uid_proof),
            ..at_create
        };
        assert_eq!(judge(&key, &s, &sealed), Trust::Proven);
        assert_eq!(
            proof_annotations(&raw[..5], "fleet-default", "vc", "c-m-1", "svc-1", 1_000),
            Err(BadKey(5))
        );
    }
}
