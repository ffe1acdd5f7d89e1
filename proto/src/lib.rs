//! The vclink agent ↔ hub contract: generated gRPC types for `vclink.v1`, the limits
//! both sides enforce, validation of every field that crosses the wire, and the small
//! vocabulary (label and annotation keys) that hub and agent must agree on.
//!
//! Nothing here talks to Kubernetes or the network; it is pure (but for the rate
//! limiter's sleep) so both binaries and the tests can use it and so the edge checks are
//! unit-tested in one place. [`cli`] holds what both binaries do the same way around
//! `main` (one-line error chains; logging setup behind the `cli` feature).
#![forbid(unsafe_code)]

pub mod cli;
pub mod keys;
pub mod limits;
pub mod names;
pub mod ratelimit;
pub mod secret;
pub mod validate;

/// Generated protobuf and tonic code for package `vclink.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("vclink.v1");

    impl VCluster {
        /// Why the agent asks not to import this vCluster: `Unspecified` (import it) when
        /// no exclusion is set or its kind is one this build does not know. The one
        /// reading of the field both binaries share.
        pub fn exclusion_kind(&self) -> exclusion::Kind {
            self.exclusion
                .as_ref()
                .map_or(exclusion::Kind::Unspecified, Exclusion::kind)
        }
    }

    impl std::fmt::Debug for Reauth {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Reauth")
                .field("token", &"<redacted>")
                .finish()
        }
    }
}

/// The protocol version this build speaks (see `Hello.protocol_version`).
pub const PROTOCOL_VERSION: u32 = 1;

/// The audience the agent's projected ServiceAccount token is minted for.
pub const TOKEN_AUDIENCE: &str = "vclink-hub";

/// gRPC response metadata on a refusal that will pass by itself (a hub still loading
/// Rancher objects): milliseconds until a retry is worth it. An agent waits about that
/// long instead of its doubling backoff, so agents are back within seconds of a
/// restarted hub becoming ready rather than up to a minute later.
pub const RETRY_AFTER_METADATA: &str = "vclink-retry-after-ms";

/// Most an agent waits on a [`RETRY_AFTER_METADATA`] hint (a larger value is capped).
pub const MAX_RETRY_AFTER_MS: u64 = 60_000;

/// The retry hint a refusal carries, if any, bounded by [`MAX_RETRY_AFTER_MS`].
pub fn retry_after(status: &tonic::Status) -> Option<std::time::Duration> {
    let ms: u64 = status
        .metadata()
        .get(RETRY_AFTER_METADATA)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    Some(std::time::Duration::from_millis(ms.min(MAX_RETRY_AFTER_MS)))
}

pub use secret::Secret;

#[cfg(test)]
mod tests {
    #[test]
    fn a_retry_hint_is_read_from_metadata_and_capped() {
        let with = |v: &str| {
            let mut s = tonic::Status::unavailable("starting");
            s.metadata_mut()
                .insert(crate::RETRY_AFTER_METADATA, v.parse().expect("ascii"));
            crate::retry_after(&s)
        };
        assert_eq!(with("5000"), Some(std::time::Duration::from_secs(5)));
        assert_eq!(with("999999999"), Some(std::time::Duration::from_secs(60)));
        assert_eq!(with("soon"), None);
        assert_eq!(crate::retry_after(&tonic::Status::unavailable("x")), None);
    }

    #[test]
    fn reauth_debug_hides_the_token() {
        let m = crate::v1::AgentMessage {
            msg: Some(crate::v1::agent_message::Msg::Reauth(crate::v1::Reauth {
                token: "sekret-token".into(),
            })),
        };
        assert!(!format!("{m:?}").contains("sekret-token"));
    }
}
