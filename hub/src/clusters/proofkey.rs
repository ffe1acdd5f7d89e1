//! The key of the hub's proofs (`core::proof`): Secret `vclink-hub-proof-key` (data key
//! `key`, 32 random bytes) in the hub's namespace, created by the first hub that needs
//! it and read by every later one. It is read before any watch starts, so a restarted
//! hub and a standby that becomes leader judge the clusters with the same key; losing
//! it makes every cluster the hub made unproven (never deleted, never acted on), so it
//! is never rotated or deleted by the hub.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use rand::Rng;

use crate::core::proof::{KEY_LEN, ProofKey};

/// Name of the key's Secret.
pub const SECRET_NAME: &str = "vclink-hub-proof-key";
/// Data key inside it.
pub const DATA_KEY: &str = "key";

/// Why the key could not be had. The text names the RBAC it needs; never the key.
#[derive(Debug, thiserror::Error)]
pub enum ProofKeyError {
    /// A call was refused or failed.
    #[error(
        "{what} Secret {namespace}/{SECRET_NAME}: {source} (the hub's ServiceAccount needs \
         `create` on secrets and `get` on the secret {SECRET_NAME} in namespace {namespace}; \
         the hub chart grants both; set --proof-key-namespace if the hub runs elsewhere)"
    )]
    Api {
        /// `reading` or `creating`.
        what: &'static str,
        /// The namespace.
        namespace: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The Secret exists but holds no usable key.
    #[error(
        "Secret {namespace}/{SECRET_NAME} holds no {KEY_LEN}-byte `{DATA_KEY}`; it was not \
         written by vclink. Restore it from a backup (every cluster vclink made is signed \
         with it) or delete it to start over (vclink then ignores the clusters it made before)"
    )]
    Malformed {
        /// The namespace.
        namespace: String,
    },
}

fn from_secret(s: &KubeSecret, namespace: &str) -> Result<ProofKey, ProofKeyError> {
    s.data
        .as_ref()
        .and_then(|d| d.get(DATA_KEY))
        .and_then(|b| ProofKey::from_bytes(&b.0).ok())
        .ok_or_else(|| ProofKeyError::Malformed {
            namespace: namespace.to_string(),
        })
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// The key Secret a new hub creates.
fn new_secret(namespace: &str) -> KubeSecret {
    let mut bytes = [0u8; KEY_LEN];
    rand::rng().fill(&mut bytes[..]);
    KubeSecret {
        metadata: ObjectMeta {
            name: Some(SECRET_NAME.into()),
            namespace: Some(namespace.into()),
            labels: Some(
                [(
                    vclink_proto::keys::LABEL_MANAGED_BY.to_string(),
                    vclink_proto::keys::MANAGED_BY_VALUE.to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        immutable: Some(true),
        data: Some([(DATA_KEY.to_string(), ByteString(bytes.to_vec()))].into()),
        ..Default::default()
    }
}

/// Reads the key, creating it when it does not exist yet (get; 404 → create; 409, a
/// hub that created it meanwhile → get).
pub async fn load_or_create(client: Client, namespace: &str) -> Result<ProofKey, ProofKeyError> {
    let api: Api<KubeSecret> = Api::namespaced(client, namespace);
    let err = |what, source| ProofKeyError::Api {
        what,
        namespace: namespace.to_string(),
        source,
    };
    match api.get(SECRET_NAME).await {
        Ok(s) => return from_secret(&s, namespace),
        Err(e) if is_status(&e, 404) => {}
        Err(e) => return Err(err("reading", e)),
    }
    match api
        .create(&PostParams::default(), &new_secret(namespace))
        .await
    {
        Ok(s) => {
            tracing::info!(
                namespace,
                secret = SECRET_NAME,
                "created the hub's proof key"
            );
            from_secret(&s, namespace)
        }
        Err(e) if is_status(&e, 409) => {
            let s = api.get(SECRET_NAME).await.map_err(|e| err("reading", e))?;
            from_secret(&s, namespace)
        }
        Err(e) => Err(err("creating", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_secret_holds_a_random_key_of_the_right_length() {
        let a = new_secret("vclink-system");
        let b = new_secret("vclink-system");
        let ka = from_secret(&a, "vclink-system").unwrap();
        let kb = from_secret(&b, "vclink-system").unwrap();
        assert_ne!(ka, kb, "random");
        assert_eq!(a.metadata.name.as_deref(), Some(SECRET_NAME));
        assert_eq!(a.immutable, Some(true));
    }

    #[test]
    fn a_secret_without_a_usable_key_is_a_clear_error() {
        let mut s = new_secret("ns");
        s.data = Some([(DATA_KEY.to_string(), ByteString(vec![1; 5]))].into());
        let e = from_secret(&s, "ns").unwrap_err();
        assert!(e.to_string().contains("ns/vclink-hub-proof-key"), "{e}");
        s.data = None;
        assert!(from_secret(&s, "ns").is_err());
    }
}
