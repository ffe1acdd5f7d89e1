//! The Rancher and Fleet kinds the Rancher simulator serves (docs/rancher.md: Where the objects live), as
//! dynamic `ApiResource`s: the simulator talks to them as JSON (`DynamicObject`) so that
//! it never depends on a typed model of Rancher that could drift from the CRDs it installs.

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject};

/// One kind: its group/version/kind/plural and whether it is namespaced.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
}

impl Kind {
    /// The dynamic resource description for `Api::*_with`.
    pub fn resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.to_string(),
            version: self.version.to_string(),
            api_version: format!("{}/{}", self.group, self.version),
            kind: self.kind.to_string(),
            plural: self.plural.to_string(),
        }
    }

    /// `group/version` as written in `apiVersion`.
    pub fn api_version(&self) -> String {
        format!("{}/{}", self.group, self.version)
    }

    /// An API for a cluster-scoped kind, or for a namespaced kind across all namespaces.
    pub fn all(&self, client: &Client) -> Api<DynamicObject> {
        Api::all_with(client.clone(), &self.resource())
    }

    /// An API for a namespaced kind in `ns`.
    pub fn ns(&self, client: &Client, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(client.clone(), ns, &self.resource())
    }
}

const fn mgmt(kind: &'static str, plural: &'static str, namespaced: bool) -> Kind {
    Kind {
        group: "management.cattle.io",
        version: "v3",
        kind,
        plural,
        namespaced,
    }
}

pub const PROV_CLUSTER: Kind = Kind {
    group: "provisioning.cattle.io",
    version: "v1",
    kind: "Cluster",
    plural: "clusters",
    namespaced: true,
};
pub const MGMT_CLUSTER: Kind = mgmt("Cluster", "clusters", false);
pub const CRT: Kind = mgmt(
    "ClusterRegistrationToken",
    "clusterregistrationtokens",
    true,
);
pub const PROJECT: Kind = mgmt("Project", "projects", true);
pub const PRTB: Kind = mgmt(
    "ProjectRoleTemplateBinding",
    "projectroletemplatebindings",
    true,
);
pub const CRTB: Kind = mgmt(
    "ClusterRoleTemplateBinding",
    "clusterroletemplatebindings",
    true,
);
pub const ROLE_TEMPLATE: Kind = mgmt("RoleTemplate", "roletemplates", false);
pub const USER: Kind = mgmt("User", "users", false);
pub const TOKEN: Kind = mgmt("Token", "tokens", false);
pub const GLOBAL_ROLE: Kind = mgmt("GlobalRole", "globalroles", false);
pub const GLOBAL_ROLE_BINDING: Kind = mgmt("GlobalRoleBinding", "globalrolebindings", false);
pub const SETTING: Kind = mgmt("Setting", "settings", false);
pub const FLEET_WORKSPACE: Kind = mgmt("FleetWorkspace", "fleetworkspaces", false);
pub const FLEET_CLUSTER: Kind = Kind {
    group: "fleet.cattle.io",
    version: "v1alpha1",
    kind: "Cluster",
    plural: "clusters",
    namespaced: true,
};
pub const GIT_REPO: Kind = Kind {
    group: "fleet.cattle.io",
    version: "v1alpha1",
    kind: "GitRepo",
    plural: "gitrepos",
    namespaced: true,
};

/// Every kind whose CRD the simulator installs.
pub const ALL: &[Kind] = &[
    PROV_CLUSTER,
    MGMT_CLUSTER,
    CRT,
    PROJECT,
    PRTB,
    CRTB,
    ROLE_TEMPLATE,
    USER,
    TOKEN,
    GLOBAL_ROLE,
    GLOBAL_ROLE_BINDING,
    SETTING,
    FLEET_WORKSPACE,
    FLEET_CLUSTER,
    GIT_REPO,
];

/// Well-known annotation and label keys (docs/rancher.md: Imported clusters, Projects and role bindings, Fleet).
pub mod keys {
    pub const CREATOR_ID: &str = "field.cattle.io/creatorId";
    pub const NO_CREATOR_RBAC: &str = "field.cattle.io/no-creator-rbac";
    /// On the CRTB Rancher creates for a cluster's creator.
    pub const CREATOR_OWNER_BINDING: &str = "authz.management.cattle.io/creator-owner-binding";
    /// Name of that CRTB, in the cluster's `c-m-` namespace.
    pub const CREATOR_CRTB: &str = "creator-cluster-owner";
    pub const DESCRIPTION: &str = "field.cattle.io/description";
    pub const DEFAULT_PROJECT: &str = "authz.management.cattle.io/default-project";
    pub const SYSTEM_PROJECT: &str = "authz.management.cattle.io/system-project";
    pub const FLEET_CLUSTER_NAME: &str = "management.cattle.io/cluster-name";
    pub const FLEET_CLUSTER_DISPLAY_NAME: &str = "management.cattle.io/cluster-display-name";
    pub const PROV_FINALIZER: &str = "wrangler.cattle.io/provisioning-cluster-remove";
    pub const MGMT_FINALIZER: &str = "wrangler.cattle.io/mgmt-cluster-remove";
}
