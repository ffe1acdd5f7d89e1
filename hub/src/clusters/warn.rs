//! Tells a vCluster's owner about a Rancher cluster that claims their vCluster without
//! the hub's proof (forged or tampered labels, `core::proof`): a `Status` with
//! `warning` set and state UNSPECIFIED (the state stays what it is), sent when the
//! warning appears, changes or goes, once per stream. The agent turns a new warning
//! into a Warning Event on the vCluster's Service. The claiming cluster itself is never
//! touched.

use vclink_proto::v1::{HubMessage, State, Status, hub_message::Msg};

use crate::core::index::VcKey;
use crate::core::proof::Unproven;
use crate::state::{Hub, World};

/// The warning for an unproven cluster `at` (`<workspace>/<name>`).
pub fn text(at: &str) -> String {
    format!(
        "a Rancher cluster {at} claims this vCluster but was not created by vclink; it is ignored"
    )
}

/// Sends `key`'s warning when it differs from the last one sent on its host's stream
/// (under the world lock the caller already holds).
pub fn sync(hub: &Hub, w: &mut World, key: &VcKey) {
    let warning = w.index.unproven_claim(key).map(text).unwrap_or_default();
    let Some(h) = w.hosts.get_mut(&key.host) else {
        return;
    };
    if !h.reported.contains_key(&key.uid) {
        return;
    }
    let sent = h
        .per_vc
        .get(&key.uid)
        .map(|p| p.warning.as_str())
        .unwrap_or_default();
    if sent == warning {
        return;
    }
    let msg = HubMessage {
        msg: Some(Msg::Status(Status {
            uid: key.uid.clone(),
            state: State::Unspecified as i32,
            warning: warning.clone(),
            ..Default::default()
        })),
    };
    if hub.send(h, msg) {
        tracing::debug!(host = %key.host, uid = %key.uid, "warning sent");
        h.per_vc.entry(key.uid.clone()).or_default().warning = warning;
    }
}

/// Recomputes `vclink_hub_unproven_clusters{reason}` (at scrape time).
pub fn refresh_gauge(hub: &Hub) {
    let counts = {
        let w = hub.world();
        Unproven::ALL.map(|why| (why, w.index.unproven_count(why)))
    };
    for (why, n) in counts {
        hub.metrics
            .unproven_clusters
            .get_or_create(&[("reason", why.as_str())])
            .set(n);
    }
}
