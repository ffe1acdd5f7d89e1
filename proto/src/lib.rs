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

pub use secret::Secret;

#[cfg(test)]
mod tests {
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
