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
use crate::core::proof::{
    self, ANNOTATION_PROOF, ANNOTATION_PROOF_UID, Observed, ProofKey, Subject, Trust,
};
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

fn annotation<'a>(o: &'a DynamicObject, k: &str) -> Option<&'a str> {
    o.metadata.annotations.as_ref()?.get(k).map(String::as_str)
}

/// `field.cattle.io/creatorId`: the Rancher user whose request created the cluster.
/// Rancher's webhook sets it from the requester on create and refuses any change.
pub(crate) const CREATOR_ID: &str = "field.cattle.io/creatorId";

/// The creator Rancher's webhook recorded on a provisioning cluster.
pub(crate) fn creator_id(o: &DynamicObject) -> Option<&str> {
    annotation(o, CREATOR_ID).filter(|v| !v.is_empty())
}

/// Judges the hub's proofs on a provisioning cluster that names the vCluster `key`.
fn trust(o: &DynamicObject, key: &VcKey, proof_key: &ProofKey) -> Trust {
    let (namespace, name) = (o.namespace().unwrap_or_default(), o.name_any());
    let subject = Subject {
        namespace: &namespace,
        name: &name,
        host: &key.host,
        svc_uid: &key.uid,
    };
    let observed = Observed {
        object_uid: o.metadata.uid.as_deref().unwrap_or_default(),
        created_unix: o
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second()),
        proof: annotation(o, ANNOTATION_PROOF),
        proof_uid: annotation(o, ANNOTATION_PROOF_UID),
    };
    proof::judge(proof_key, &subject, &observed)
}

/// Reduces a provisioning cluster, judging its proofs with `proof_key` (a cluster
/// without our labels is judged unproven: it names no vCluster).
pub(crate) fn parse_prov(o: &DynamicObject, proof_key: &ProofKey) -> ProvCluster {
    let st = status(o);
    let key = key_from_labels(o);
    ProvCluster {
        name: o.name_any(),
        namespace: o.namespace().unwrap_or_default(),
        uid: o.uid().unwrap_or_default(),
        trust: key
            .as_ref()
            .map(|k| trust(o, k, proof_key))
            .unwrap_or_default(),
        key,
        mgmt_id: str_at(st, "clusterName").map(Into::into),
        ready: st
            .and_then(|s| s.get("ready"))
            .and_then(Value::as_bool)
            .unwrap_or(false),
        deleting: o.metadata.deletion_timestamp.is_some(),
        project: label(o, vclink_proto::keys::LABEL_PROJECT).map(Into::into),
        vcluster: label(o, vclink_proto::keys::LABEL_NAMESPACE)
            .zip(label(o, vclink_proto::keys::LABEL_NAME))
            .map(|(ns, n)| (ns.to_string(), n.to_string())),
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
/// (≤ 2.14); `Ready=False` with reason `Disconnected` means the tunnel was lost. Of its
/// labels only the host opt-in booleans are kept: the `hosts` selector's label, and
/// `vclink.io/nested-import=enabled`.
pub(crate) fn parse_mgmt(o: &DynamicObject, hosts: &crate::config::HostSelector) -> MgmtCluster {
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
    let (nk, nv) = crate::core::scope::NESTED_IMPORT_LABEL;
    let nested_opt_in = label(o, nk) == Some(nv);
    // A vCluster's own cluster hosts no agent (unless nested): its display name, one per
    // vCluster, is not worth keeping.
    let may_host = nested_opt_in || label(o, vclink_proto::keys::LABEL_VCLUSTER).is_none();
    MgmtCluster {
        id: o.name_any(),
        conn,
        host_opt_in: label(o, &hosts.key) == Some(hosts.value.as_str()),
        nested_opt_in,
        // Bounded: only its first 40 name characters are ever used.
        display_name: may_host
            .then(|| str_at(o.data.get("spec"), "displayName"))
            .flatten()
            .map(|d| d.chars().take(256).collect()),
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
        let p = parse_prov(&o, &crate::testing::test_proof_key());
        assert_eq!(p.key, Some(VcKey::new("c-m-h", "s")));
        assert_eq!(p.mgmt_id.as_deref(), Some("c-m-abc"));
        assert!(p.ready && !p.deleting);
        assert_eq!(
            p.trust,
            Trust::Unproven(proof::Unproven::Missing),
            "labels alone prove nothing"
        );
    }

    /// A provisioning cluster named `name` (UID `uid`, created at `created`) labelled
    /// for host `c-m-h`, Service UID `s`, with these annotations.
    fn labelled(name: &str, uid: &str, created: &str, annotations: Value) -> DynamicObject {
        obj(json!({
            "apiVersion": "provisioning.cattle.io/v1", "kind": "Cluster",
            "metadata": {"name": name, "namespace": "fleet-default", "uid": uid,
                "creationTimestamp": created,
                "labels": {"vclink.io/host-cluster": "c-m-h", "vclink.io/service-uid": "s"},
                "annotations": annotations},
        }))
    }

    #[test]
    fn the_watch_judges_both_proofs_from_the_object() {
        let key = crate::testing::test_proof_key();
        let created = "2024-05-01T10:00:00Z";
        let at: i64 = 1_714_557_600; // the same instant
        let s = Subject {
            namespace: "fleet-default",
            name: "x",
            host: "c-m-h",
            svc_uid: "s",
        };
        let create = proof::sign_create(&key, &s, at);
        let uid = proof::sign_uid(&key, &s, "u1");
        let judged = |o: &DynamicObject| parse_prov(o, &key).trust;
        let both = json!({ANNOTATION_PROOF: create, ANNOTATION_PROOF_UID: uid});
        assert_eq!(
            judged(&labelled("x", "u1", created, both.clone())),
            Trust::Proven
        );
        assert_eq!(
            judged(&labelled(
                "x",
                "u1",
                created,
                json!({ANNOTATION_PROOF: create})
            )),
            Trust::ProvenAtCreate
        );
        // Every label and annotation copied onto another object: another name, or the
        // same name re-created later (another UID, another creationTimestamp).
        assert!(!judged(&labelled("y", "u2", created, both.clone())).is_proven());
        assert!(!judged(&labelled("x", "u2", "2024-05-01T11:00:00Z", both.clone())).is_proven());
        // Another key (another hub's, or a guess).
        let other = ProofKey::from_bytes(&[1; proof::KEY_LEN]).unwrap();
        assert!(
            !parse_prov(&labelled("x", "u1", created, both), &other)
                .trust
                .is_proven()
        );
    }

    #[test]
    fn operator_clusters_are_candidates_only_from_the_configured_creator() {
        let op = |creator: &str, deleting: bool| {
            let mut v = json!({
                "apiVersion": "provisioning.cattle.io/v1", "kind": "Cluster",
                "metadata": {"name": "vc-op", "namespace": "fleet-default", "uid": "u",
                    "labels": {LOFT_HOST_CLUSTER: "c-m-h", LOFT_SERVICE_UID: "s"},
                    "annotations": {CREATOR_ID: creator}},
            });
            if deleting {
                v["metadata"]["deletionTimestamp"] = json!("2024-05-01T10:00:00Z");
            }
            obj(v)
        };
        let want = Some(VcKey::new("c-m-h", "s"));
        let candidate = watch::operator_candidate;
        assert_eq!(
            candidate(
                &op("vcluster-rancher-operator", false),
                "vcluster-rancher-operator"
            ),
            want
        );
        assert_eq!(
            candidate(&op("u-tenant", false), "vcluster-rancher-operator"),
            None
        );
        assert_eq!(candidate(&op("", false), "vcluster-rancher-operator"), None);
        assert_eq!(
            candidate(
                &op("vcluster-rancher-operator", true),
                "vcluster-rancher-operator"
            ),
            None
        );
    }

    #[test]
    fn management_connection_by_rancher_version() {
        let m = |conds: Value| {
            parse_mgmt(
                &obj(
                    json!({"apiVersion": "management.cattle.io/v3", "kind": "Cluster",
            "metadata": {"name": "c-m-1"}, "status": {"conditions": conds}}),
                ),
                &crate::config::HostSelector::default(),
            )
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
    fn only_the_host_opt_in_labels_are_kept() {
        let m = |labels: Value| {
            parse_mgmt(
                &obj(
                    json!({"apiVersion": "management.cattle.io/v3", "kind": "Cluster",
                    "metadata": {"name": "c-m-1", "labels": labels}}),
                ),
                &crate::config::HostSelector::default(),
            )
        };
        let none = m(json!({"vclink.io/agent": "disabled"}));
        assert!(!none.host_opt_in && !none.nested_opt_in);
        let host = m(json!({"vclink.io/agent": "enabled"}));
        assert!(host.host_opt_in && !host.nested_opt_in);
        let nested = m(json!({"vclink.io/agent": "enabled", "vclink.io/nested-import": "enabled"}));
        assert!(nested.host_opt_in && nested.nested_opt_in);
    }

    #[test]
    fn a_hosts_display_name_is_kept_a_vclusters_is_not() {
        let m = |labels: Value, display: &str| {
            parse_mgmt(
                &obj(json!({"apiVersion": "management.cattle.io/v3", "kind": "Cluster",
                    "metadata": {"name": "c-m-1", "labels": labels}, "spec": {"displayName": display}})),
                &crate::config::HostSelector::default(),
            )
            .display_name
        };
        assert_eq!(m(json!({}), "Prod EU").as_deref(), Some("Prod EU"));
        assert_eq!(m(json!({}), ""), None);
        assert_eq!(m(json!({"vclink.io/vcluster": "true"}), "vc1"), None);
        let nested = json!({"vclink.io/vcluster": "true", "vclink.io/nested-import": "enabled"});
        assert_eq!(m(nested, "vc1").as_deref(), Some("vc1"));
        assert_eq!(
            m(json!({}), &"x".repeat(10_000)).map(|d| d.len()),
            Some(256)
        );
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
