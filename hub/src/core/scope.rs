//! The scope rules against the hub's shared state, in two strengths:
//!
//! - [`check`], a protocol rule that closes the stream: a stream verified for host H may
//!   not speak about a Service UID that another host's vCluster holds (UIDs are unique;
//!   the same UID from two hosts means one of them lies), nor report progress for a
//!   Rancher cluster of another host. Runs under the world lock before anything
//!   changes, so a refusal changes nothing.
//! - [`Admission`], per vCluster, never per host: a vCluster naming a project of another
//!   cluster (a restored namespace), recording a Rancher cluster of another host (a
//!   hand-edited annotation), or over `--max-vclusters-per-agent` /
//!   `--max-vclusters-per-namespace` is held as "reported but refused" with a
//!   [`Refusal`]; nothing is created or deleted for it, and the stream and every other
//!   vCluster go on. Only vClusters to be imported count toward the limits (EXCLUDED,
//!   INVALID and UNIMPORT ones do not).
//!
//! - [`HostOptIn`], per host, at Hello: the hub serves an agent only for a Rancher
//!   cluster that carries the `--host-selector` label (`vclink.io/agent=enabled`, the
//!   label that makes Fleet deploy the agent). A cluster vclink created for a vCluster
//!   needs more: `--allow-nested-hosts` on the hub AND `vclink.io/nested-import=enabled`
//!   on the cluster. The hub flag exists because the owner of a Rancher cluster can edit
//!   its labels: the label alone would let every tenant whose vCluster vclink imported
//!   turn that vCluster into a host and have the hub create Rancher clusters at will.
//!
//! # Cost per message (n = vClusters in the message, r = refused vClusters of the host)
//!
//! - `Upsert`, `Remove`, `Progress`: [`check`] is O(1) (hash lookups by Service UID and
//!   management id); [`Admission::admit`] and [`Admission::forget`] are O(1). A
//!   `Remove` that frees a slot re-admits the vClusters refused for a limit: O(r).
//! - `Snapshot`: O(n) for [`check`] and for [`Admission::admit_all`].

use std::collections::HashMap;

use tonic::Code;
use vclink_proto::v1::VCluster;
use vclink_proto::v1::exclusion::Kind as ExclusionKind;

use super::session::{Effect, Reject};
use crate::core::index::{Index, MgmtCluster, VcKey};

/// The label a vCluster cluster vclink created needs (besides the host selector's, and
/// only with `--allow-nested-hosts`) to host an agent of its own.
pub const NESTED_IMPORT_LABEL: (&str, &str) = ("vclink.io/nested-import", "enabled");

/// Which hosts may be served. See the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostOptIn {
    /// The `--host-selector` as `key=value`, for messages; `None` serves every host
    /// (test hubs only: the flag always sets it).
    pub selector: Option<String>,
    /// --allow-nested-hosts.
    pub allow_nested: bool,
}

impl HostOptIn {
    /// Why the agent of `host` may not be served, if it may not. `mgmt` is its
    /// management cluster (absent: unknown to Rancher), `is_vcluster` whether it is the
    /// management cluster of a vCluster cluster vclink created. O(1).
    pub fn refusal(
        &self,
        host: &str,
        mgmt: Option<&MgmtCluster>,
        is_vcluster: bool,
    ) -> Option<String> {
        let selector = self.selector.as_deref()?;
        if !mgmt.is_some_and(|m| m.host_opt_in) {
            return Some(format!(
                "cluster {host} is not opted in: label the Rancher cluster {selector}"
            ));
        }
        let nested_ok = self.allow_nested && mgmt.is_some_and(|m| m.nested_opt_in);
        if is_vcluster && !nested_ok {
            let (k, v) = NESTED_IMPORT_LABEL;
            return Some(format!(
                "cluster {host} is a vCluster cluster created by vclink: it may host an agent only when the hub runs with --allow-nested-hosts and the Rancher cluster carries the label {k}={v}"
            ));
        }
        None
    }
}

fn denied(reason: &'static str, message: String) -> Reject {
    Reject {
        code: Code::PermissionDenied,
        reason,
        message,
    }
}

fn foreign_uid(index: &Index, host: &str, uid: &str, what: &str) -> Result<(), Reject> {
    match index.other_host_of_uid(uid, host) {
        Some(_) => Err(denied(
            "foreign_uid",
            format!("vCluster {uid} belongs to another host; this agent may not {what} it"),
        )),
        None => Ok(()),
    }
}

/// Checks `effect` of a stream of `host` for protocol violations. See the module docs.
pub fn check(index: &Index, host: &str, effect: &Effect) -> Result<(), Reject> {
    match effect {
        Effect::Snapshot(vs) => vs
            .iter()
            .try_for_each(|v| foreign_uid(index, host, &v.uid, "report")),
        Effect::Upsert(v) => foreign_uid(index, host, &v.uid, "report"),
        Effect::Remove(uid) => foreign_uid(index, host, uid, "remove"),
        Effect::Progress(p) => {
            if !p.rancher_cluster_id.is_empty()
                && let Some(owner) = index.key_for_mgmt(&p.rancher_cluster_id)
                && owner.host != host
            {
                return Err(denied(
                    "foreign_cluster",
                    format!(
                        "Rancher cluster {} belongs to another host",
                        p.rancher_cluster_id
                    ),
                ));
            }
            foreign_uid(index, host, &p.uid, "report progress for")
        }
    }
}

/// Why one reported vCluster is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Low-cardinality metric label.
    pub reason: &'static str,
    /// Shown on the Service (Status ERROR).
    pub message: String,
}

fn refused(reason: &'static str, message: String) -> Refusal {
    Refusal { reason, message }
}

/// The per-vCluster scope rules that need no counting: a project of another cluster,
/// or a recorded Rancher cluster that belongs to a vCluster of another host. O(1).
pub fn foreign(index: &Index, host: &str, v: &VCluster) -> Option<Refusal> {
    if let Some((cluster, _)) = v.project_id.split_once(':')
        && cluster != host
    {
        return Some(refused(
            "foreign_project",
            format!(
                "refused: the namespace {} is in a project of cluster {cluster}, not of this cluster {host}",
                v.namespace
            ),
        ));
    }
    if !v.recorded_cluster_id.is_empty()
        && let Some(owner) = index.key_for_mgmt(&v.recorded_cluster_id)
        && owner.host != host
    {
        return Some(refused(
            "foreign_cluster",
            format!(
                "refused: the Service records Rancher cluster {}, which belongs to a vCluster of another host",
                v.recorded_cluster_id
            ),
        ));
    }
    None
}

/// The two limits on what one host may have imported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// --max-vclusters-per-agent.
    pub per_agent: usize,
    /// --max-vclusters-per-namespace.
    pub per_namespace: usize,
}

/// Which reported vClusters of one stream count toward the limits, and which are
/// refused. See the module docs.
#[derive(Clone, Debug)]
pub struct Admission {
    limits: Limits,
    /// Counted vClusters: Service UID → namespace.
    counted: HashMap<String, String>,
    per_ns: HashMap<String, usize>,
    refused: HashMap<String, Refusal>,
}

fn to_import(v: &VCluster) -> bool {
    v.exclusion_kind() == ExclusionKind::Unspecified
}

fn excluded(v: &VCluster) -> bool {
    matches!(
        v.exclusion_kind(),
        ExclusionKind::Excluded | ExclusionKind::Invalid
    )
}

impl Admission {
    /// Nothing reported yet.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            counted: HashMap::new(),
            per_ns: HashMap::new(),
            refused: HashMap::new(),
        }
    }

    /// Why `uid` is refused, if it is.
    pub fn refusal(&self, uid: &str) -> Option<&Refusal> {
        self.refused.get(uid)
    }

    /// Number of vClusters counted toward the per-agent limit.
    pub fn counted(&self) -> usize {
        self.counted.len()
    }

    /// Forgets `uid` (removed, or about to be admitted again). O(1).
    pub fn forget(&mut self, uid: &str) {
        self.refused.remove(uid);
        if let Some(ns) = self.counted.remove(uid)
            && let Some(n) = self.per_ns.get_mut(&ns)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ns.remove(&ns);
            }
        }
    }

    /// Admits (or refuses) one reported vCluster of `host`, replacing what was decided
    /// for its UID before. Returns the reason when it is newly refused (for the metric).
    /// O(1).
    pub fn admit(&mut self, index: &Index, host: &str, v: &VCluster) -> Option<&'static str> {
        let before = self.refused.get(&v.uid).map(|r| r.reason);
        self.forget(&v.uid);
        if excluded(v) {
            // Nothing is created or deleted for it anyway; its Status says why.
            return None;
        }
        let refusal = foreign(index, host, v).or_else(|| {
            if !to_import(v) {
                return None;
            }
            if self.counted.len() >= self.limits.per_agent {
                return Some(refused(
                    "over_agent_limit",
                    format!(
                        "refused: this host already has {} vClusters to import (--max-vclusters-per-agent)",
                        self.limits.per_agent
                    ),
                ));
            }
            let in_ns = self.per_ns.get(&v.namespace).copied().unwrap_or(0);
            if in_ns >= self.limits.per_namespace {
                return Some(refused(
                    "over_namespace_limit",
                    format!(
                        "refused: namespace {} already has {} vClusters to import (--max-vclusters-per-namespace)",
                        v.namespace, self.limits.per_namespace
                    ),
                ));
            }
            None
        });
        match refusal {
            Some(r) => {
                let reason = r.reason;
                self.refused.insert(v.uid.clone(), r);
                (before != Some(reason)).then_some(reason)
            }
            None => {
                if to_import(v) {
                    self.counted.insert(v.uid.clone(), v.namespace.clone());
                    *self.per_ns.entry(v.namespace.clone()).or_default() += 1;
                }
                None
            }
        }
    }

    /// Admits a complete snapshot of `host` from scratch. vClusters that already have
    /// a cluster go first, so one that is imported never loses its place to a new one
    /// when the agent reconnects. Returns the reasons of new refusals. O(n).
    pub fn admit_all(&mut self, index: &Index, host: &str, vs: &[VCluster]) -> Vec<&'static str> {
        let before = std::mem::take(&mut self.refused);
        self.counted.clear();
        self.per_ns.clear();
        let has_cluster = |v: &VCluster| index.prov_for(&VcKey::new(host, &v.uid)).is_some();
        let (first, rest): (Vec<&VCluster>, Vec<&VCluster>) =
            vs.iter().partition(|v| has_cluster(v));
        let mut out = Vec::new();
        for v in first.into_iter().chain(rest) {
            self.admit(index, host, v);
            if let Some(r) = self.refused.get(&v.uid)
                && before.get(&v.uid).map(|b| b.reason) != Some(r.reason)
            {
                out.push(r.reason);
            }
        }
        out
    }

    /// Service UIDs refused only for a limit (candidates when a slot frees up). O(r).
    pub fn refused_for_limit(&self) -> Vec<String> {
        self.refused
            .iter()
            .filter(|(_, r)| matches!(r.reason, "over_agent_limit" | "over_namespace_limit"))
            .map(|(u, _)| u.clone())
            .collect()
    }
}

#[cfg(test)]
#[path = "scope_tests.rs"]
mod tests;
