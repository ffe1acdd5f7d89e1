//! The per-cluster grant that lets the hub pass Rancher's CRTB escalation check without
//! holding cluster-owner's rules anywhere for longer than it needs them.
//!
//! rancher-webhook admits a CRTB only if its creator already holds every rule of the
//! granted role template, resolved from local-cluster RBAC *in the cluster's `c-m-`
//! namespace* (ClusterRoleBindings plus RoleBindings there) and the creator's CRTBs
//! (rancher-model.md §6). So right before creating CRTBs in one cluster's namespace the
//! hub binds its own ServiceAccount there to the chart's grant ClusterRole (RoleBinding
//! [`BINDING_NAME`]), and removes that RoleBinding right after. Its standing RBAC holds
//! only `bind` on that one ClusterRole, `create` on RoleBindings and `delete` on this
//! name — never the ClusterRole's rules themselves.

use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use super::apply::OwnerError;

/// Name of the RoleBinding in a `c-m-` namespace (the chart grants `delete` on this name).
pub const BINDING_NAME: &str = "vclink-hub-crtb-grant";

/// The ClusterRole to bind to and the hub's own ServiceAccount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// ClusterRole name (`--owner-grant-cluster-role`).
    pub cluster_role: String,
    /// The hub's ServiceAccount namespace.
    pub sa_namespace: String,
    /// The hub's ServiceAccount name.
    pub sa_name: String,
}

impl Grant {
    /// From `--owner-grant-cluster-role` and `--owner-grant-service-account`
    /// (`<namespace>/<name>`); `None` when neither is set.
    pub fn from_args(
        cluster_role: Option<&str>,
        service_account: Option<&str>,
    ) -> anyhow::Result<Option<Grant>> {
        match (cluster_role, service_account) {
            (None, None) => Ok(None),
            (Some(role), Some(sa)) => {
                let (ns, name) = sa
                    .split_once('/')
                    .filter(|(ns, n)| !ns.is_empty() && !n.is_empty() && !n.contains('/'))
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "--owner-grant-service-account must be <namespace>/<name>, got {sa:?}"
                        )
                    })?;
                anyhow::ensure!(
                    !role.is_empty(),
                    "--owner-grant-cluster-role must not be empty"
                );
                Ok(Some(Grant {
                    cluster_role: role.to_string(),
                    sa_namespace: ns.to_string(),
                    sa_name: name.to_string(),
                }))
            }
            _ => anyhow::bail!(
                "--owner-grant-cluster-role and --owner-grant-service-account go together"
            ),
        }
    }

    /// The RoleBinding in `namespace`.
    pub fn binding(&self, namespace: &str) -> RoleBinding {
        let v = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {
                "name": BINDING_NAME,
                "namespace": namespace,
                "labels": {
                    vclink_proto::keys::LABEL_MANAGED_BY: vclink_proto::keys::MANAGED_BY_VALUE,
                },
            },
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": self.cluster_role,
            },
            "subjects": [{
                "kind": "ServiceAccount",
                "name": self.sa_name,
                "namespace": self.sa_namespace,
            }],
        });
        serde_json::from_value(v).unwrap_or_default()
    }

    /// Creates the RoleBinding in `namespace` (an existing one, e.g. left by a crash, is
    /// kept).
    pub async fn bind(&self, client: &Client, namespace: &str) -> Result<(), OwnerError> {
        let api: Api<RoleBinding> = Api::namespaced(client.clone(), namespace);
        match api
            .create(&PostParams::default(), &self.binding(namespace))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(OwnerError::from_kube(
                format!("binding the hub to {} in {namespace}", self.cluster_role),
                e,
            )),
        }
    }

    /// Removes the RoleBinding from `namespace` (already gone is fine).
    pub async fn unbind(&self, client: &Client, namespace: &str) -> Result<(), OwnerError> {
        let api: Api<RoleBinding> = Api::namespaced(client.clone(), namespace);
        match api.delete(BINDING_NAME, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(OwnerError::from_kube(
                format!("removing the hub's grant binding in {namespace}"),
                e,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_parse_and_pair() {
        assert_eq!(Grant::from_args(None, None).unwrap(), None);
        let g = Grant::from_args(
            Some("vclink-hub-crtb-grant"),
            Some("vclink-system/vclink-hub"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(g.sa_namespace, "vclink-system");
        assert_eq!(g.sa_name, "vclink-hub");
        assert!(Grant::from_args(Some("r"), None).is_err());
        assert!(Grant::from_args(Some("r"), Some("no-slash")).is_err());
        assert!(Grant::from_args(Some("r"), Some("a/b/c")).is_err());
    }

    #[test]
    fn the_binding_names_the_role_and_the_hub() {
        let g = Grant::from_args(Some("grant"), Some("ns/sa"))
            .unwrap()
            .unwrap();
        let b = g.binding("c-m-abcd1234");
        assert_eq!(b.metadata.name.as_deref(), Some(BINDING_NAME));
        assert_eq!(b.metadata.namespace.as_deref(), Some("c-m-abcd1234"));
        assert_eq!(b.role_ref.kind, "ClusterRole");
        assert_eq!(b.role_ref.name, "grant");
        let s = &b.subjects.unwrap()[0];
        assert_eq!(
            (s.kind.as_str(), s.name.as_str(), s.namespace.as_deref()),
            ("ServiceAccount", "sa", Some("ns"))
        );
    }
}
