//! The hub's pure core: no Kubernetes client, no gRPC server, no I/O, nothing else of
//! this crate. What the hub knows (the [`index`] of Rancher objects, filed under
//! [`keys::VcKey`]), what it decides from that ([`decide`]), the per-stream protocol
//! state machine ([`session`]) and the scope rule an agent's messages must satisfy
//! ([`scope`]), plus the retry delay ([`backoff`]). Every decision that can be wrong
//! about ordering, scope or deletion safety is unit-tested here.
//!
//! - [`keys`]: `VcKey`, a vCluster's identity (host cluster id + Service UID).
//! - [`claims`]: which clusters claim a vCluster, proven or not.
//! - [`objects`]: the reduced Rancher objects the index keeps.
//! - [`index`]: the lookups over them.
//! - [`decide`]: what to do next for one vCluster.
//! - [`decision`]: what a decision is given and what it returns.
//! - [`proof`]: HMAC proofs that the hub created or adopted a provisioning cluster.
//! - [`session`]: validates one agent message and turns it into an `Effect`.
//! - [`scope`]: an agent speaks only about its own host's vClusters.
//! - [`backoff`]: exponential retry delay with optional jitter.
//! - [`workspace`]: which Fleet workspace a new vCluster cluster goes to.
//! - [`labels`]: which Service labels may be synced onto Rancher clusters (read by the
//!   mirror, and by the hub state to keep no other label of a report).

pub mod backoff;
pub mod claims;
pub mod decide;
pub mod decision;
pub mod index;
pub mod keys;
pub mod labels;
pub mod objects;
pub mod proof;
pub mod scope;
pub mod session;
pub mod workspace;

pub use keys::VcKey;
