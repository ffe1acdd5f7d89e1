//! The provisioning-cluster controller: one Rancher provisioning cluster per reported
//! vCluster, created (or adopted) when its agent reports it, handed its registration
//! command as soon as Rancher's token exists, and deleted only with the agent's proof
//! that the vCluster is gone.
//!
//! - [`feed`]: the Rancher watches' events applied to the hub's state.
//! - [`workers`]: take a key, run `core::decide`, send messages, carry out writes.
//! - [`ensure`]: adopt / create under a free name / delete, generic over the
//!   `rancher::clusters::ProvClusters` seam (unit-tested against a fake).
//! - [`proofkey`]: the key of the hub's proofs, read (or created once) at start.
//! - [`warn`]: tells a vCluster's owner about clusters that claim it without proof.
//! - [`resync`]: every known vCluster re-evaluated from memory now and then.
//! - [`workspace`]: which Fleet workspace each write goes to; missing workspaces.

pub mod ensure;
pub mod feed;
pub mod proofkey;
pub mod resync;
pub mod warn;
pub mod workers;
pub mod workspace;
