//! A safety net under the event-driven reconcile: every `--resync-interval` the hub puts
//! every vCluster it knows (reported by a live agent or backed by a provisioning cluster)
//! back on the work queue. Decisions run on the in-memory index, so a vCluster whose
//! state is right costs no API request and sends nothing (statuses are deduplicated);
//! only one that a lost wake-up left behind gets its next step. No relist, no polling of
//! the API server. Keys are enqueued in batches so the queue never sees 50,000 at once
//! while agents are also being served.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::core::index::VcKey;
use crate::state::Hub;

/// Keys enqueued per batch, and the pause between batches.
const BATCH: usize = 500;
const PAUSE: Duration = Duration::from_millis(50);

/// Every vCluster key the hub knows now.
pub fn all_keys(hub: &Hub) -> Vec<VcKey> {
    let w = hub.world();
    let mut keys: Vec<VcKey> = w.index.keys().cloned().collect();
    for (host, h) in &w.hosts {
        keys.extend(h.reported.keys().map(|uid| VcKey::new(host, uid)));
    }
    drop(w);
    keys.sort();
    keys.dedup();
    keys
}

/// Runs until `shutdown`; `interval` zero disables it.
pub async fn run(hub: Arc<Hub>, interval: Duration, shutdown: CancellationToken) {
    if interval.is_zero() {
        return;
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let keys = all_keys(&hub);
        tracing::debug!(
            vclusters = keys.len(),
            "resync: re-evaluating every vCluster"
        );
        for chunk in keys.chunks(BATCH) {
            hub.queue.add_all(chunk.iter().cloned());
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(PAUSE) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::index::ProvCluster;
    use vclink_proto::v1::VCluster;

    #[tokio::test]
    async fn every_known_vcluster_is_queued_again_each_interval() {
        let hub = crate::testing::TestHub::default().build();
        // One vCluster known only from Rancher (its host's agent is away), one only from
        // its agent (no Rancher cluster yet).
        let imported = VcKey::new("c-m-host0001", "00000000-0000-4000-8000-000000000001");
        hub.world().index.apply_prov(
            ProvCluster {
                name: "c-m-host0001-team-a-vc1".into(),
                uid: "p-uid".into(),
                key: Some(imported.clone()),
                mgmt_id: Some("c-m-abcd1234".into()),
                ready: false,
                deleting: false,
                project: None,
                version: 1,
                ..Default::default()
            }
            .proven(),
        );
        let (tx, _rx) = tokio::sync::mpsc::channel(8);
        let stream = hub.attach("c-m-host0002", tx, CancellationToken::new());
        let reported = VCluster {
            uid: "00000000-0000-4000-8000-000000000002".into(),
            namespace: "team-b".into(),
            name: "vc2".into(),
            ..Default::default()
        };
        hub.apply(
            "c-m-host0002",
            stream,
            crate::core::session::Effect::Upsert(reported.clone()),
        )
        .expect("accepted");
        let shutdown = CancellationToken::new();
        // Drain what the events themselves queued: the resync must queue them again.
        while !hub.queue.is_empty() {
            let k = hub.queue.next(&shutdown).await.expect("key");
            hub.queue.done(&k);
        }
        let task = tokio::spawn(run(
            hub.clone(),
            Duration::from_millis(20),
            shutdown.clone(),
        ));
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while seen.len() < 2 {
            let k = tokio::time::timeout_at(deadline, hub.queue.next(&shutdown))
                .await
                .expect("the resync queues every known vCluster within the deadline")
                .expect("key");
            hub.queue.done(&k);
            if !seen.contains(&k) {
                seen.push(k);
            }
        }
        seen.sort();
        let mut want = vec![imported, VcKey::new("c-m-host0002", reported.uid)];
        want.sort();
        assert_eq!(seen, want);
        shutdown.cancel();
        task.await.expect("stops on shutdown");
    }
}
