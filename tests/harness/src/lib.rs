//! vclink's end-to-end harness: the pieces that stand in for what the test machine lacks
//! (vClusters, a kubelet for Jobs) and that run vclink's real binaries against real API
//! servers and the Rancher simulator.
//!
//! - [`vcluster`]: simulated vClusters (their own API server plus the host objects a
//!   vCluster Helm release creates).
//! - [`jobrunner`]: runs the registration Jobs the agent creates, as local processes.
//! - [`procs`]: `vclink-hub` and `vclink-agent` as real child processes.
//! - [`env`]: one call to bring up local + downstream clusters, simulator, hub and agent.
//! - [`util`], [`servicemap`]: waiting with deadlines; the Service-address fake.
#![forbid(unsafe_code)]

pub mod env;
pub mod jobrunner;
pub mod procs;
pub mod servicemap;
pub mod util;
pub mod vcluster;

pub use env::{Downstream, E2eEnv, E2eOptions};
pub use jobrunner::{JobRunner, RunOutcome, RunRecord, RunnerConfig};
pub use procs::{
    AgentOptions, AgentProcess, HubOptions, HubProcess, RancherAuth, RancherCredential,
};
pub use servicemap::ServiceMap;
pub use util::{NoLongerHolds, WaitTimeout, free_port, holds_for, http_get, wait_for};
pub use vcluster::{Flavour, SimVCluster, VClusterSpec};
