//! Real Kubernetes API servers for vclink's tests, demo and benchmarks.
//!
//! `kube-apiserver` and `kube-controller-manager` are built once from Debian's
//! `kubernetes` source package and cached outside the checkout ([`install`]); each
//! [`Cluster`] is an isolated etcd + API server (+ optional controller manager) on
//! loopback with its own CA, admin identity and ServiceAccount signing key. Dropping a
//! `Cluster` stops every process it started; a per-cluster watchdog ([`procs`]) kills
//! them even if the test process dies without running `Drop`. At most
//! `VCLINK_MAX_APISERVERS` tests (default 2) run clusters at once across all test
//! binaries ([`slots`]), so the unit tests around them can run fully parallel.
#![forbid(unsafe_code)]

pub mod cli;
pub mod cluster;
mod der;
pub mod install;
mod kubeconfig;
mod launch;
pub mod pki;
pub mod procs;
pub mod slots;

pub use cluster::{Cluster, ClusterOptions};
pub use launch::SERVICE_ACCOUNT_ISSUER;
pub use pki::{CertificateAuthority, ClientIdentity, ServiceAccountKeys};
