//! The mirror's workers: for one vCluster, find the management cluster it may write
//! (proven, mapped to this very vCluster), compute the desired mirror from the agent's
//! latest report and the state last sent, compare its digest with what the watch
//! showed, and only on a difference send one server-side apply through the hub's rate
//! limiter and leader fence (counted as `vclink_hub_api_requests_total{verb="mirror"}`).
//! Notifications are coalesced per vCluster (the queue holds a key once; a flapping
//! state is written at most once per [`crate::state::MIRROR_COALESCE`], with the
//! latest value).

use std::time::Instant;

use kube::api::{DynamicObject, Patch, PatchParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::desired::{self, Inputs, Mirror};
use super::observed::{self, Desc, FIELD_MANAGER};
use super::{Entry, LabelPolicy, MirrorSync};
use crate::core::VcKey;
use crate::core::proof::Trust;
use crate::rancher::kinds::Kind;
use crate::state::Hub;
use vclink_proto::v1::State;

/// One write to make.
#[derive(Debug)]
pub(crate) struct Write {
    /// Management cluster id.
    pub(crate) id: String,
    /// What to apply.
    pub(crate) mirror: Mirror,
    /// The write takes over the create-time description.
    pub(crate) takes_description: bool,
}

/// `metadata.resourceVersion` as a number (0 when it is none).
pub(crate) fn version_of(o: &DynamicObject) -> u64 {
    o.metadata
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Runs one worker until shutdown, starting after the watch's first list.
pub(crate) async fn run(
    sync: std::sync::Arc<MirrorSync>,
    mut listed: tokio::sync::watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    tokio::select! {
        r = listed.wait_for(|l| *l) => if r.is_err() { return },
        _ = shutdown.cancelled() => return,
    }
    while let Some(key) = sync.queue.next(&shutdown).await {
        let found = plan(&sync.hub, &sync.policy, &key, |id| {
            sync.seen().get(id).copied()
        });
        match found {
            None => sync.queue.succeeded(&key),
            Some(w) => match write(&sync, &w).await {
                Ok(()) => sync.queue.succeeded(&key),
                Err(e) if is_gone(&e) => {
                    tracing::debug!(cluster = %w.id, "mirror: management cluster gone");
                    sync.queue.succeeded(&key);
                }
                Err(e) => {
                    sync.hub.metrics.reconcile_error("mirror");
                    tracing::warn!(host = %key.host, uid = %key.uid, cluster = %w.id, error = %e, "could not update the Rancher cluster's labels and annotations; retrying with backoff");
                    sync.queue.retry(key.clone());
                }
            },
        }
        sync.queue.done(&key);
    }
}

/// The write `key` needs, if any: `None` when nothing differs, or when there is nothing
/// the hub may write (no proven cluster mapped to this vCluster, no live report, no
/// state sent yet, the cluster not seen by the watch).
pub(crate) fn plan(
    hub: &Hub,
    policy: &LabelPolicy,
    key: &VcKey,
    seen: impl Fn(&str) -> Option<Entry>,
) -> Option<Write> {
    let w = hub.world();
    let prov = w.index.prov_for(key)?;
    if prov.trust != Trust::Proven || prov.deleting {
        return None;
    }
    let id = prov.mgmt_id.as_deref()?;
    if w.index.key_for_mgmt(id) != Some(key) {
        return None;
    }
    let host = w.hosts.get(&key.host)?;
    let vc = host.reported.get(&key.uid)?;
    let (state, message, _, _) = host.per_vc.get(&key.uid)?.last_status.as_ref()?;
    if *state == State::Unspecified {
        return None;
    }
    let Entry {
        seen,
        took_description: took,
        ..
    } = seen(id)?;
    let describe = match seen.desc {
        Desc::Empty | Desc::Ours => true,
        Desc::CreateText => !took,
        Desc::Theirs => false,
    };
    let mirror = desired::desired(
        policy,
        &Inputs {
            host: &key.host,
            host_name: host_display_name(&w, &key.host),
            vc,
            state: *state,
            message,
            describe,
        },
    );
    (mirror.digest() != seen.digest).then(|| Write {
        id: id.to_string(),
        takes_description: describe && seen.desc == Desc::CreateText,
        mirror,
    })
}

/// The host cluster's name as Rancher shows it (`spec.displayName`), when the hub knows
/// it.
fn host_display_name<'a>(w: &'a crate::state::World, host: &str) -> Option<&'a str> {
    w.index.mgmt(host)?.display_name.as_deref()
}

/// Sends one server-side apply of `w.mirror` as [`FIELD_MANAGER`] and records what the
/// API server answered. Fields the manager owned before and `w.mirror` lacks are removed
/// by the API server; fields of other managers are untouched. The apply never creates
/// a management cluster: the hub's RBAC has no `create` on them.
pub(crate) async fn write(sync: &MirrorSync, w: &Write) -> Result<(), kube::Error> {
    let (api_version, kind, _) = Kind::MgmtCluster.gvk();
    let mut body = json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "name": w.id,
            "labels": w.mirror.labels,
            "annotations": w.mirror.annotations,
        },
    });
    if let Some(d) = &w.mirror.description {
        body["spec"] = json!({ "description": d });
    }
    sync.limiter
        .until_ready_fenced()
        .await
        .map_err(|e| kube::Error::Service(Box::new(e)))?;
    sync.hub
        .metrics
        .api_requests
        .get_or_create(&[("verb", "mirror")])
        .inc();
    let started = Instant::now();
    let o = sync
        .api
        .patch(
            &w.id,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
    tracing::debug!(cluster = %w.id, took = ?started.elapsed(), "mirror written");
    if let Some((id, seen)) = observed::parse(&o) {
        sync.record(id, seen, version_of(&o));
    }
    if w.takes_description
        && let Some(e) = sync.seen().get_mut(&w.id)
    {
        e.took_description = true;
    }
    Ok(())
}

fn is_gone(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;
