//! The Rancher adapter: Rancher's kinds as the hub sees them. No Rancher Rust crate
//! exists, so objects are read as `DynamicObject`s and immediately reduced to the small
//! structs of [`crate::core::index`] (`parse_*` here, pure and tested); objects are never
//! stored whole. This module never sees the hub's shared state: the watches hand their
//! reduced events to a [`watch::Feed`], writes go through [`clusters::KubeProvClusters`].
//!
//! - [`kinds`]: every Rancher `ApiResource`, in one table.
//! - [`watch`]: the six watches feeding the provisioning-cluster controller.
//! - [`clusters`]: the `ProvClusters` seam and its kube-backed implementation.
//! - [`impersonating_client`]: the client that acts as the hub's Rancher user.

pub(crate) mod clusters;
pub mod kinds;
pub(crate) mod watch;

use kube::api::DynamicObject;
use kube::{Client, ResourceExt};
use serde_json::Value;
use vclink_proto::Secret;
use vclink_proto::keys::{LABEL_HOST_CLUSTER, LABEL_SERVICE_UID};

use crate::core::index::{Conn, Crt, MgmtCluster, ProvCluster, VcKey};
pub use kinds::Kind;
use kinds::check_served;

/// Labels the Go operator (loft-sh/vcluster-rancher-operator) puts on its clusters.
pub(crate) const LOFT_SERVICE_UID: &str = "loft.sh/vcluster-service-uid";
/// See [`LOFT_SERVICE_UID`].
pub(crate) const LOFT_HOST_CLUSTER: &str = "loft.sh/vcluster-host-cluster";

/// A client of the local cluster (configured as `kube::Config::infer` finds it: the
/// in-cluster ServiceAccount or KUBECONFIG) that impersonates Rancher User `user`
/// (`Impersonate-User`; the API server adds `system:authenticated`). The hub's
/// ServiceAccount needs `impersonate` on `users` with `resourceNames: [user]`.
pub async fn impersonating_client(user: &str) -> anyhow::Result<Client> {
    use anyhow::Context as _;
    let mut cfg = kube::Config::infer()
        .await
        .context("no Kubernetes client configuration for the impersonating client")?;
    cfg.auth_info.impersonate = Some(user.to_string());
    cfg.auth_info.impersonate_groups = None;
    Client::try_from(cfg).with_context(|| format!("building a client impersonating {user}"))
}

/// Fails with an install hint when Rancher's APIs are missing from the local cluster.
pub async fn check_apis(client: &Client) -> anyhow::Result<()> {
    check_served(
        client,
        &[
            Kind::ProvCluster,
            Kind::MgmtCluster,
            Kind::RegistrationToken,
            Kind::Setting,
        ],
        "vclink-hub must run against Rancher's local cluster \
         (install Rancher, or point KUBECONFIG at the cluster Rancher runs in)",
    )
    .await
}

fn label<'a>(o: &'a DynamicObject, k: &str) -> Option<&'a str> {
    o.metadata
        .labels
        .as_ref()?
        .get(k)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

fn status(o: &DynamicObject) -> Option<&Value> {
    o.data.get("status")
}

fn str_at<'a>(v: Option<&'a Value>, k: &str) -> Option<&'a str> {
    v?.get(k)?.as_str().filter(|s| !s.is_empty())
}

/// The vCluster key on a provisioning cluster, from our labels.
pub(crate) fn key_from_labels(o: &DynamicObject) -> Option<VcKey> {
    Some(VcKey::new(
        label(o, LABEL_HOST_CLUSTER)?,
        label(o, LABEL_SERVICE_UID)?,
    ))
}

/// The vCluster key on a cluster the Go operator created.
pub(crate) fn loft_key(o: &DynamicObject) -> Option<VcKey> {
    Some(VcKey::new(
        label(o, LOFT_HOST_CLUSTER)?,
        label(o, LOFT_SERVICE_UID)?,
    ))
}

/// Reduces a provisioning cluster.
pub(crate) fn parse_prov(o: &DynamicObject) -> ProvCluster {
    let st = status(o);
    ProvCluster {
        name: o.name_any(),
        uid: o.uid().unwrap_or_default(),
        key: key_from_labels(o),
        mgmt_id: str_at(st, "clusterName").map(Into::into),
        ready: st
            .and_then(|s| s.get("ready"))
            .and_then(Value::as_bool)
            .unwrap_or(false),
        deleting: o.metadata.deletion_timestamp.is_some(),
        project: label(o, vclink_proto::keys::LABEL_PROJECT).map(Into::into),
        version: o
            .metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    }
}

fn condition<'a>(o: &'a DynamicObject, ty: &str) -> Option<&'a Value> {
    status(o)?
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(ty))
}

fn cond_is(c: Option<&Value>, field: &str, v: &str) -> bool {
    c.and_then(|c| c.get(field)).and_then(Value::as_str) == Some(v)
}

/// Reduces a management cluster: `Connected` (2.15) decides when present, else `Ready`
/// (≤ 2.14); `Ready=False` with reason `Disconnected` means the tunnel was lost.
pub(crate) fn parse_mgmt(o: &DynamicObject) -> MgmtCluster {
    let connected = condition(o, "Connected");
    let ready = condition(o, "Ready");
    let conn = if connected.is_some() {
        if cond_is(connected, "status", "True") {
            Conn::Connected
        } else {
            Conn::NotConnected
        }
    } else if cond_is(ready, "status", "True") {
        Conn::Connected
    } else {
        Conn::NotConnected
    };
    let conn = if conn != Conn::Connected
        && cond_is(ready, "status", "False")
        && cond_is(ready, "reason", "Disconnected")
    {
        Conn::Disconnected
    } else {
        conn
    };
    MgmtCluster {
        id: o.name_any(),
        conn,
    }
}

/// Reduces a ClusterRegistrationToken (namespace = management id).
pub(crate) fn parse_crt(o: &DynamicObject) -> Option<Crt> {
    let st = status(o);
    Some(Crt {
        mgmt_id: o.namespace()?,
        manifest_url: Secret::new(str_at(st, "manifestUrl").unwrap_or_default()),
        token: Secret::new(str_at(st, "token").unwrap_or_default()),
        token_secret_name: str_at(st, "tokenSecretName").map(Into::into),
    })
}

/// Reduces a Setting to (name, value) for the two the hub reads; `value` falls back to
/// `default` when empty.
pub(crate) fn parse_setting(o: &DynamicObject) -> Option<(String, String)> {
    let name = o.name_any();
    if name != "agent-tls-mode" && name != "cacerts" {
        return None;
    }
    let get = |k: &str| {
        o.data
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    Some((
        name,
        get("value")
            .or_else(|| get("default"))
            .unwrap_or_default()
            .to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> DynamicObject {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn provisioning_cluster_is_reduced_to_key_and_status() {
        let o = obj(json!({
            "apiVersion": "provisioning.cattle.io/v1", "kind": "Cluster",
            "metadata": {"name": "x", "namespace": "fleet-default", "uid": "u",
                "labels": {"vclink.io/host-cluster": "c-m-h", "vclink.io/service-uid": "s"}},
            "status": {"clusterName": "c-m-abc", "ready": true}
        }));
        let p = parse_prov(&o);
        assert_eq!(p.key, Some(VcKey::new("c-m-h", "s")));
        assert_eq!(p.mgmt_id.as_deref(), Some("c-m-abc"));
        assert!(p.ready && !p.deleting);
    }

    #[test]
    fn management_connection_by_rancher_version() {
        let m = |conds: Value| {
            parse_mgmt(&obj(
                json!({"apiVersion": "management.cattle.io/v3", "kind": "Cluster",
            "metadata": {"name": "c-m-1"}, "status": {"conditions": conds}}),
            ))
        };
        assert_eq!(m(json!([{"type": "Connected", "status": "True"}, {"type": "Ready", "status": "False"}])).conn, Conn::Connected);
        assert_eq!(m(json!([{"type": "Connected", "status": "False"}, {"type": "Ready", "status": "True"}])).conn, Conn::NotConnected);
        assert_eq!(
            m(json!([{"type": "Ready", "status": "True"}])).conn,
            Conn::Connected
        );
        assert_eq!(
            m(json!([{"type": "Ready", "status": "False", "reason": "Disconnected"}])).conn,
            Conn::Disconnected
        );
        assert_eq!(m(json!([])).conn, Conn::NotConnected);
    }

    #[test]
    fn token_and_settings_are_read() {
        let c = parse_crt(&obj(json!({"apiVersion": "management.cattle.io/v3", "kind": "ClusterRegistrationToken",
            "metadata": {"name": "default-token", "namespace": "c-m-1"},
            "status": {"token": "", "tokenSecretName": "crt-token-default-token", "manifestUrl": "https://r/{token}"}}))).unwrap();
        assert_eq!(c.mgmt_id, "c-m-1");
        assert!(c.token.is_empty());
        assert_eq!(
            c.token_secret_name.as_deref(),
            Some("crt-token-default-token")
        );
        let s = parse_setting(&obj(
            json!({"apiVersion": "management.cattle.io/v3", "kind": "Setting",
            "metadata": {"name": "agent-tls-mode"}, "value": "", "default": "strict"}),
        ));
        assert_eq!(s, Some(("agent-tls-mode".into(), "strict".into())));
        let s = parse_setting(&obj(
            json!({"apiVersion": "management.cattle.io/v3", "kind": "Setting",
            "metadata": {"name": "server-url"}, "value": "x"}),
        ));
        assert_eq!(s, None);
    }
}
