//! What every owner-sync write shares: [`call`], which spends the shared write budget,
//! checks the leader fence and counts the request, and [`owner_marks`], the labels and
//! annotation that make a CRTB one of owner sync's. Apart from [`super::apply`] so the
//! operator takeover's writes ([`super::adopt`]) use them without the two modules
//! reaching each other.

use serde_json::Value;
use vclink_proto::keys::{
    LABEL_HOST_CLUSTER, LABEL_MANAGED_BY, LABEL_SERVICE_UID, MANAGED_BY_VALUE,
};

use super::Owners;
use super::desired::Desired;
use super::model::{
    COMPONENT_OWNER, LABEL_COMPONENT, LABEL_PARENT_KIND, LABEL_PARENT_NAME, LABEL_PARENT_NAMESPACE,
};
use crate::core::index::VcKey;

/// Waits for the shared write budget, checks the leader fence (a replica that lost the
/// lease while this waited sends nothing), counts the request by resource and verb (so
/// the scale numbers separate CRTBs from cluster relabels), then sends `request` (a
/// future: nothing goes out until it is awaited here).
pub(super) async fn call<T>(
    owners: &Owners,
    resource: &'static str,
    verb: &'static str,
    request: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, kube::Error> {
    owners
        .limiter
        .until_ready_fenced()
        .await
        .map_err(|e| kube::Error::Service(Box::new(e)))?;
    owners
        .hub
        .metrics
        .owner_api_requests
        .get_or_create(&[("resource", resource), ("verb", verb)])
        .inc();
    request.await
}

/// The labels that make a CRTB one of owner sync's for vCluster `key` and grant `d`, and
/// the value of its [`ANNOTATION_PARENTS`].
pub(super) fn owner_marks(key: &VcKey, d: &Desired) -> (serde_json::Map<String, Value>, String) {
    let mut labels = serde_json::Map::new();
    labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY_VALUE.into());
    labels.insert(LABEL_COMPONENT.into(), COMPONENT_OWNER.into());
    labels.insert(LABEL_HOST_CLUSTER.into(), key.host.clone().into());
    labels.insert(LABEL_SERVICE_UID.into(), key.uid.clone().into());
    if let Some(p) = d.parents.first()
        && label_value_ok(&p.namespace)
        && label_value_ok(&p.name)
    {
        labels.insert(LABEL_PARENT_KIND.into(), p.kind.into());
        labels.insert(LABEL_PARENT_NAMESPACE.into(), p.namespace.clone().into());
        labels.insert(LABEL_PARENT_NAME.into(), p.name.clone().into());
    }
    let parents: Vec<String> = d
        .parents
        .iter()
        .map(|p| format!("{}:{}/{}", p.kind, p.namespace, p.name))
        .collect();
    (labels, parents.join(","))
}

fn label_value_ok(s: &str) -> bool {
    s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}
