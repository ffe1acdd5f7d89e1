//! Every Rancher kind the hub reads or writes, in one table: group, version, kind and
//! plural are written once here and nowhere else. No Rancher Rust crate exists, so
//! these kinds are handled as `DynamicObject`s through an [`ApiResource`].

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};

/// A Rancher kind the hub uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `provisioning.cattle.io/v1` `Cluster` (namespaced: the Fleet workspace).
    ProvCluster,
    /// `management.cattle.io/v3` `Cluster` (cluster-scoped).
    MgmtCluster,
    /// `management.cattle.io/v3` `ClusterRegistrationToken` (namespace = management id).
    RegistrationToken,
    /// `management.cattle.io/v3` `Setting`.
    Setting,
    /// `management.cattle.io/v3` `Token` (the hub's own Rancher credential).
    Token,
    /// `management.cattle.io/v3` `User`.
    User,
    /// `management.cattle.io/v3` `Project`.
    Project,
    /// `management.cattle.io/v3` `ProjectRoleTemplateBinding`.
    Prtb,
    /// `management.cattle.io/v3` `ClusterRoleTemplateBinding`.
    Crtb,
    /// `management.cattle.io/v3` `FleetWorkspace` (cluster-scoped; Rancher creates the
    /// namespace of the same name).
    FleetWorkspace,
}

impl Kind {
    /// (group/version, kind, plural).
    pub const fn gvk(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::ProvCluster => ("provisioning.cattle.io/v1", "Cluster", "clusters"),
            Self::MgmtCluster => ("management.cattle.io/v3", "Cluster", "clusters"),
            Self::RegistrationToken => (
                "management.cattle.io/v3",
                "ClusterRegistrationToken",
                "clusterregistrationtokens",
            ),
            Self::Setting => ("management.cattle.io/v3", "Setting", "settings"),
            Self::Token => ("management.cattle.io/v3", "Token", "tokens"),
            Self::User => ("management.cattle.io/v3", "User", "users"),
            Self::Project => ("management.cattle.io/v3", "Project", "projects"),
            Self::Prtb => (
                "management.cattle.io/v3",
                "ProjectRoleTemplateBinding",
                "projectroletemplatebindings",
            ),
            Self::Crtb => (
                "management.cattle.io/v3",
                "ClusterRoleTemplateBinding",
                "clusterroletemplatebindings",
            ),
            Self::FleetWorkspace => (
                "management.cattle.io/v3",
                "FleetWorkspace",
                "fleetworkspaces",
            ),
        }
    }

    /// The kind as kube's dynamic API wants it.
    pub fn resource(self) -> ApiResource {
        let (gv, kind, plural) = self.gvk();
        let (group, version) = gv.split_once('/').unwrap_or(("", gv));
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
    }

    /// An API over every namespace (or the cluster-scoped kind).
    pub fn all(self, client: Client) -> Api<DynamicObject> {
        Api::all_with(client, &self.resource())
    }

    /// An API in namespace `ns`.
    pub fn namespaced(self, client: Client, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(client, ns, &self.resource())
    }
}

/// Fails with `hint` when one of `kinds` is not served by the local cluster.
pub(crate) async fn check_served(
    client: &Client,
    kinds: &[Kind],
    hint: &str,
) -> anyhow::Result<()> {
    for k in kinds {
        let (gv, _, plural) = k.gvk();
        let found = match client.list_api_group_resources(gv).await {
            Ok(list) => list.resources.iter().any(|r| r.name == plural),
            Err(kube::Error::Api(e)) if e.code == 404 => false,
            Err(e) => {
                // The source stays attached: its chain says why (refused, DNS, TLS).
                return Err(anyhow::Error::new(e)
                    .context(format!("cannot reach the Kubernetes API to check for {gv}")));
            }
        };
        if !found {
            anyhow::bail!("the API {gv} {plural} is missing: {hint}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_carry_group_version_and_plural() {
        let r = Kind::ProvCluster.resource();
        assert_eq!(
            (r.group.as_str(), r.version.as_str(), r.kind.as_str()),
            ("provisioning.cattle.io", "v1", "Cluster")
        );
        assert_eq!(r.plural, "clusters");
        let r = Kind::Crtb.resource();
        assert_eq!(r.api_version, "management.cattle.io/v3");
        assert_eq!(r.plural, "clusterroletemplatebindings");
    }
}
