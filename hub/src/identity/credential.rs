//! The hub's own Rancher credential, used for one thing only: sending TokenReviews
//! through Rancher's cluster proxy (`/k8s/clusters/<id>/…`) to verify agents.
//!
//! Two sources:
//! - [`ManagedToken`] (`--rancher-user`): the hub creates a `management.cattle.io/v3`
//!   `Token` for a dedicated Rancher User (whose only downstream right is creating
//!   TokenReviews) with a TTL, and rotates it when half the TTL has passed: the new token
//!   is created and put in use first, the old one is deleted afterwards, so no request
//!   ever goes out with a token that is already gone. On shutdown the current token is
//!   deleted. Tokens are never read back (the hub needs no get/list on tokens, which
//!   would expose every user's credentials): creating returns the object.
//! - [`FileCredential`] (`--rancher-token-file`): `<name>:<secret>` from a file (a
//!   mounted Secret), re-read on every use, so a rotated Secret takes effect at once.
//!
//! The credential is a [`Secret`]: it never reaches a log, an error or a metric label.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use rand::Rng;
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use vclink_proto::Secret;

use crate::core::backoff::Backoff;
use crate::rancher::Kind;

/// Label on every Token the hub creates.
pub const LABEL_HUB_TOKEN: &str = "vclink.io/hub-token";
/// Rancher's label naming a Token's user.
pub const LABEL_TOKEN_USER: &str = "authn.management.cattle.io/token-userId";
/// Shortest TTL accepted for managed tokens.
pub const MIN_TTL: Duration = Duration::from_secs(10);
/// Rancher's token alphabet (no vowels, no look-alikes).
const TOKEN_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Why no credential is available.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The token file is missing, unreadable or malformed (its content is never shown).
    #[error("the Rancher token file {path} is unusable: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A Kubernetes call about the hub's Rancher User or Token failed.
    #[error("{what}: {source}")]
    Kube {
        /// What was attempted.
        what: String,
        /// The error.
        #[source]
        source: kube::Error,
    },
    /// No token was issued yet.
    #[error("the hub holds no Rancher token yet")]
    NotIssued,
}

/// Where the proxy credential comes from.
pub trait CredentialSource: Send + Sync {
    /// The credential to send now (`<name>:<secret>`).
    fn current(&self) -> Result<Secret, CredentialError>;

    /// Rancher refused `used` (401): a managed source replaces it soon.
    fn refused(&self, used: &Secret);
}

// === impl FileCredential ===

/// `<name>:<secret>` read from a file on every use.
#[derive(Debug, Clone)]
pub struct FileCredential {
    path: PathBuf,
}

impl FileCredential {
    /// Reads from `path`; checks once that it is usable.
    pub fn new(path: PathBuf) -> Result<Self, CredentialError> {
        let f = Self { path };
        f.current()?;
        Ok(f)
    }
}

/// Checks the `<name>:<secret>` form without echoing anything of it.
pub fn parse_credential(text: &str) -> Result<Secret, &'static str> {
    let t = text.trim();
    let Some((name, secret)) = t.split_once(':') else {
        return Err("not in the form <token-name>:<secret>");
    };
    if name.is_empty() || secret.is_empty() {
        return Err("the token name or secret is empty");
    }
    if t.len() > 4096 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains whitespace or control characters, or is too long");
    }
    Ok(Secret::new(t))
}

impl CredentialSource for FileCredential {
    fn current(&self) -> Result<Secret, CredentialError> {
        let err = |reason: String| CredentialError::File {
            path: self.path.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&self.path).map_err(|e| err(e.kind().to_string()))?;
        parse_credential(&text).map_err(|r| err(r.into()))
    }

    fn refused(&self, _used: &Secret) {
        tracing::error!(path = %self.path.display(), "Rancher refused the token from --rancher-token-file (401); replace it");
    }
}

// === impl ManagedToken ===

#[derive(Clone)]
struct Issued {
    name: String,
    credential: Secret,
    issued: SystemTime,
}

/// What rotation reports.
pub trait RotationObserver: Send + Sync {
    /// A new token is in use.
    fn rotated(&self);
    /// Creating or deleting a token failed.
    fn failed(&self);
}

impl RotationObserver for () {
    fn rotated(&self) {}
    fn failed(&self) {}
}

/// A Rancher Token the hub issues for itself and rotates. See the module docs.
pub struct ManagedToken {
    api: Api<DynamicObject>,
    user: String,
    ttl: Duration,
    current: RwLock<Option<Issued>>,
    refused: Notify,
    observer: Arc<dyn RotationObserver>,
}

/// A fresh token secret in Rancher's style (54 characters).
pub fn new_token_secret() -> String {
    let mut rng = rand::rng();
    (0..54)
        .map(|_| char::from(TOKEN_ALPHABET[rng.random_range(0..TOKEN_ALPHABET.len())]))
        .collect()
}

/// The Token object the hub creates (pure; tested).
pub fn token_object(user: &str, secret: &str, ttl: Duration, now: Timestamp) -> serde_json::Value {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let expires = now
        .checked_add(ttl)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    json!({
        "apiVersion": "management.cattle.io/v3", "kind": "Token",
        "metadata": {
            "generateName": "vclink-hub-",
            "labels": {LABEL_HUB_TOKEN: "true", LABEL_TOKEN_USER: user},
        },
        "token": secret, "userId": user, "authProvider": "local",
        "ttl": ttl_ms, "expiresAt": expires, "enabled": true, "isDerived": true,
        "description": "vclink hub: TokenReviews through the cluster proxy; rotated and deleted by the hub",
    })
}

impl ManagedToken {
    /// Checks that Rancher User `user` exists and issues the first token.
    pub async fn start(
        client: kube::Client,
        user: &str,
        ttl: Duration,
        observer: Arc<dyn RotationObserver>,
    ) -> Result<Arc<Self>, CredentialError> {
        let users = Kind::User.all(client.clone());
        users
            .get(user)
            .await
            .map_err(|source| CredentialError::Kube {
                what: format!("reading Rancher User {user} (--rancher-user)"),
                source,
            })?;
        let me = Arc::new(Self {
            api: Kind::Token.all(client),
            user: user.to_string(),
            ttl: ttl.max(MIN_TTL),
            current: RwLock::new(None),
            refused: Notify::new(),
            observer,
        });
        let first = me.issue().await?;
        *me.current.write().unwrap_or_else(|p| p.into_inner()) = Some(first);
        Ok(me)
    }

    async fn issue(&self) -> Result<Issued, CredentialError> {
        let secret = new_token_secret();
        let obj: DynamicObject = serde_json::from_value(token_object(
            &self.user,
            &secret,
            self.ttl,
            Timestamp::now(),
        ))
        .map_err(|e| CredentialError::Kube {
            what: "building the Token object".into(),
            source: kube::Error::SerdeError(e),
        })?;
        let created = self
            .api
            .create(&PostParams::default(), &obj)
            .await
            .map_err(|source| CredentialError::Kube {
                what: format!("creating a Rancher Token for User {}", self.user),
                source,
            })?;
        let name = created.metadata.name.unwrap_or_default();
        tracing::info!(token = %name, user = %self.user, ttl_s = self.ttl.as_secs(), "issued the hub's Rancher token");
        Ok(Issued {
            credential: Secret::new(format!("{name}:{secret}")),
            name,
            issued: SystemTime::now(),
        })
    }

    async fn delete(&self, name: &str) {
        match self.api.delete(name, &DeleteParams::default()).await {
            Ok(_) => tracing::info!(token = %name, "deleted the hub's previous Rancher token"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                self.observer.failed();
                tracing::warn!(token = %name, error = %e, "cannot delete an old Rancher token; it expires by its TTL");
            }
        }
    }

    fn snapshot(&self) -> Option<Issued> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// When the current token should be replaced: half its TTL after issue.
    fn rotate_at(&self, issued: SystemTime) -> SystemTime {
        issued + self.ttl / 2
    }

    /// Rotates until `shutdown`, then deletes the current token.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut failures: u32 = 0;
        loop {
            let Some(cur) = self.snapshot() else { return };
            let wait = if failures > 0 {
                Backoff::capped(Duration::from_secs(32))
                    .delay(failures)
                    .min(self.ttl / 10)
            } else {
                self.rotate_at(cur.issued)
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO)
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
                _ = self.refused.notified() => {}
            }
            match self.issue().await {
                Ok(next) => {
                    failures = 0;
                    let old = self
                        .current
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .replace(next);
                    self.observer.rotated();
                    if let Some(old) = old {
                        self.delete(&old.name).await;
                    }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    self.observer.failed();
                    tracing::warn!(error = %e, "cannot rotate the hub's Rancher token; keeping the current one and retrying");
                }
            }
        }
        if let Some(cur) = self.snapshot() {
            let _ = tokio::time::timeout(Duration::from_secs(5), self.delete(&cur.name)).await;
        }
    }
}

impl CredentialSource for ManagedToken {
    fn current(&self) -> Result<Secret, CredentialError> {
        self.snapshot()
            .map(|i| i.credential)
            .ok_or(CredentialError::NotIssued)
    }

    fn refused(&self, used: &Secret) {
        if self.snapshot().is_some_and(|i| &i.credential == used) {
            tracing::warn!("Rancher refused the hub's current token (401); issuing a new one");
            self.refused.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_objects_carry_user_ttl_in_ms_and_expiry() {
        let now: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let o = token_object("u-abcde", "s3cret", Duration::from_secs(90), now);
        assert_eq!(o["userId"], "u-abcde");
        assert_eq!(o["ttl"], 90_000);
        assert_eq!(o["expiresAt"], "2030-01-01T00:01:30Z");
        assert_eq!(o["enabled"], true);
        assert_eq!(o["metadata"]["labels"][LABEL_TOKEN_USER], "u-abcde");
        assert_eq!(
            o["clusterName"],
            serde_json::Value::Null,
            "not scoped: every downstream"
        );
    }

    #[test]
    fn secrets_look_like_rancher_tokens_and_differ() {
        let (a, b) = (new_token_secret(), new_token_secret());
        assert_eq!(a.len(), 54);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| TOKEN_ALPHABET.contains(&c)));
    }

    #[test]
    fn credential_files_are_checked_without_echoing() {
        assert_eq!(
            parse_credential("token-ab:xyz\n").unwrap().expose(),
            "token-ab:xyz"
        );
        for bad in ["", "nocolon", ":x", "x:", "a b:c"] {
            assert!(parse_credential(bad).is_err(), "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tok");
        std::fs::write(&p, "not-a-credential-SECRETVALUE").unwrap();
        let e = FileCredential::new(p.clone()).unwrap_err().to_string();
        assert!(!e.contains("SECRETVALUE"), "{e}");
        std::fs::write(&p, "token-1:abc").unwrap();
        let f = FileCredential::new(p.clone()).unwrap();
        std::fs::write(&p, "token-2:def").unwrap();
        assert_eq!(
            f.current().unwrap().expose(),
            "token-2:def",
            "re-read on use"
        );
    }
}
