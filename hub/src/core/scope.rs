//! The scope rule against the hub's shared state: a stream verified for host cluster H
//! may only speak about H's vClusters. [`SessionState`](super::session::SessionState)
//! already refuses a project of another cluster; this adds what needs the index:
//! a vCluster whose recorded Rancher cluster belongs to a vCluster of another host, and
//! any report, Remove or progress about a Service UID that another host's vCluster holds
//! (UIDs are unique; the same UID from two hosts means one of them lies).
//! Runs under the world lock before anything changes, so a refusal changes nothing.

use std::collections::HashMap;

use tonic::Code;
use vclink_proto::v1::VCluster;

use super::session::{Effect, Reject};
use crate::core::index::Index;

fn denied(reason: &'static str, message: String) -> Reject {
    Reject {
        code: Code::PermissionDenied,
        reason,
        message,
    }
}

fn foreign_uid_owner<'a>(index: &'a Index, host: &str, uid: &str) -> Option<&'a str> {
    index
        .keys()
        .find(|k| k.uid == uid && k.host != host)
        .map(|k| k.host.as_str())
}

fn check_vc(
    index: &Index,
    host: &str,
    v: &VCluster,
    uid_owner: Option<&str>,
) -> Result<(), Reject> {
    if let Some(owner) = uid_owner
        && owner != host
    {
        return Err(denied(
            "foreign_uid",
            format!("vCluster {} belongs to another host", v.uid),
        ));
    }
    if !v.recorded_cluster_id.is_empty()
        && let Some(owner) = index.key_for_mgmt(&v.recorded_cluster_id)
        && owner.host != host
    {
        return Err(denied(
            "foreign_cluster",
            format!(
                "vCluster {} names Rancher cluster {}, which belongs to a vCluster of another host",
                v.uid, v.recorded_cluster_id
            ),
        ));
    }
    Ok(())
}

/// Checks `effect` of a stream of `host`. See the module docs.
pub fn check(index: &Index, host: &str, effect: &Effect) -> Result<(), Reject> {
    match effect {
        Effect::Snapshot(vs) if vs.is_empty() => Ok(()),
        Effect::Snapshot(vs) => {
            // One pass over the index per snapshot, not one per vCluster.
            let by_uid = owners(index);
            vs.iter()
                .try_for_each(|v| check_vc(index, host, v, by_uid.get(v.uid.as_str()).copied()))
        }
        Effect::Upsert(v) => check_vc(index, host, v, foreign_uid_owner(index, host, &v.uid)),
        Effect::Remove(uid) => match foreign_uid_owner(index, host, uid) {
            Some(_) => Err(denied(
                "foreign_uid",
                format!("vCluster {uid} belongs to another host; this agent may not remove it"),
            )),
            None => Ok(()),
        },
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
            match foreign_uid_owner(index, host, &p.uid) {
                Some(_) => Err(denied(
                    "foreign_uid",
                    format!("vCluster {} belongs to another host", p.uid),
                )),
                None => Ok(()),
            }
        }
    }
}

/// Hosts by Service UID of every vCluster in the index.
pub fn owners(index: &Index) -> HashMap<&str, &str> {
    index
        .keys()
        .map(|k| (k.uid.as_str(), k.host.as_str()))
        .collect()
}

#[cfg(test)]
#[path = "scope_tests.rs"]
mod tests;
