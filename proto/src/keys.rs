//! Label and annotation keys shared by hub and agent. Everything vclink writes lives
//! under `vclink.io/` so it is easy to find and never collides with Rancher's or
//! vCluster's own keys.

/// Label on every provisioning cluster vclink created: marks it as ours.
pub const LABEL_MANAGED_BY: &str = "vclink.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY_VALUE: &str = "vclink";
/// Label: Rancher cluster id of the host (downstream) cluster the vCluster runs in.
pub const LABEL_HOST_CLUSTER: &str = "vclink.io/host-cluster";
/// Label: UID of the vCluster's Service in the host cluster.
pub const LABEL_SERVICE_UID: &str = "vclink.io/service-uid";
/// Label: namespace of the vCluster in the host cluster.
pub const LABEL_NAMESPACE: &str = "vclink.io/namespace";
/// Label: name of the vCluster (its Service).
pub const LABEL_NAME: &str = "vclink.io/name";
/// Label: project id (`p-xxxxx`) of the vCluster's namespace, if any.
pub const LABEL_PROJECT: &str = "vclink.io/project";
/// Label put on clusters vclink created, also seen by Fleet (it has no `cattle.io/`),
/// so the agent bundle can leave vCluster clusters out.
pub const LABEL_VCLUSTER: &str = "vclink.io/vcluster";

/// Service annotation: a prefix for the default Rancher cluster name
/// (`<prefix>-<namespace>-<name>`), used only when a cluster is created.
pub const ANNOTATION_CLUSTER_NAME_PREFIX: &str = "vclink.io/cluster-name-prefix";
/// The Go operator's (and vCluster Platform's) name annotation, read as a fallback for
/// [`ANNOTATION_CLUSTER_NAME`].
pub const ANNOTATION_PLATFORM_CUSTOM_NAME: &str = "platform.vcluster.com/custom-name";
/// The Go operator's prefix annotation, read as a fallback for
/// [`ANNOTATION_CLUSTER_NAME_PREFIX`].
pub const ANNOTATION_PLATFORM_CUSTOM_NAME_PREFIX: &str = "platform.vcluster.com/custom-name-prefix";
/// Service annotation `"true"`: when the vCluster's Rancher cluster is deleted in Rancher,
/// the agent uninstalls the vCluster's Helm release.
pub const ANNOTATION_UNINSTALL_ON_DELETE: &str = "vclink.io/uninstall-on-cluster-delete";
/// The Go operator's spelling of [`ANNOTATION_UNINSTALL_ON_DELETE`], honoured as well.
pub const ANNOTATION_LOFT_UNINSTALL_ON_DELETE: &str = "loft.sh/uninstall-on-cluster-delete";

/// Service label that selects vClusters.
pub const SERVICE_SELECTOR: &str = "app=vcluster";
/// Service annotation: do not import this vCluster.
pub const ANNOTATION_SKIP_IMPORT: &str = "vclink.io/skip-import";
/// Service annotation: requested Rancher cluster name.
pub const ANNOTATION_CLUSTER_NAME: &str = "vclink.io/cluster-name";
/// Service annotation written by the agent: Rancher management cluster id.
pub const ANNOTATION_RANCHER_CLUSTER: &str = "vclink.io/rancher-cluster-id";
/// Service annotation written by the agent: provisioning cluster name.
pub const ANNOTATION_RANCHER_CLUSTER_NAME: &str = "vclink.io/rancher-cluster-name";
/// Service annotation written by the agent: current state (pending, registering, ...).
pub const ANNOTATION_STATE: &str = "vclink.io/state";
/// Service annotation written by the agent: last error message (cleared on success).
pub const ANNOTATION_LAST_ERROR: &str = "vclink.io/last-error";
/// Service annotation written by the agent: when the state last changed (RFC 3339).
pub const ANNOTATION_STATE_SINCE: &str = "vclink.io/state-since";
/// Service annotation written by the agent when a user deleted the Rancher cluster;
/// remove it to import the vCluster again.
pub const ANNOTATION_RANCHER_DELETED: &str = "vclink.io/rancher-cluster-deleted";

/// Label on Jobs and Secrets the agent creates (so its RBAC and watches can be scoped).
pub const LABEL_AGENT_COMPONENT: &str = "vclink.io/component";
/// Value of [`LABEL_AGENT_COMPONENT`] on registration Jobs and their Secrets.
pub const COMPONENT_REGISTRATION: &str = "registration";
/// Label on registration Jobs/Secrets: the vCluster Service UID they belong to.
pub const LABEL_JOB_SERVICE_UID: &str = "vclink.io/service-uid";

/// Service annotation of the vcluster-rancher-operator with the same meaning as
/// [`ANNOTATION_SKIP_IMPORT`]; honoured so a migration keeps its opt-outs.
pub const ANNOTATION_LOFT_SKIP_IMPORT: &str = "loft.sh/vcluster-skip-import";
/// Service annotation: `"false"` un-imports the vCluster on purpose (its Rancher cluster
/// is deleted after the hub's removal grace; removing the annotation in time undoes it).
pub const ANNOTATION_IMPORT: &str = "vclink.io/import";
/// Service annotation written by the agent while the vCluster is excluded: why.
pub const ANNOTATION_EXCLUDED_REASON: &str = "vclink.io/excluded-reason";
/// Service annotation: `"true"` lets the agent register a vCluster that is connected to
/// one Rancher cluster into a different one (a re-import). The agent removes it once a
/// registration Job started.
pub const ANNOTATION_REIMPORT: &str = "vclink.io/reimport";
/// Service annotation written by the agent: UID of the registration Job it created, so a
/// restarted agent still accepts progress only from its own Job.
pub const ANNOTATION_REGISTRATION_JOB_UID: &str = "vclink.io/registration-job-uid";
/// Service label written by the agent on every Service it reports, valued with the
/// Service's own UID: a Service that loses `app=vcluster` stays visible to the agent
/// through [`TRACKED_UNLABELLED_SELECTOR`], so relabelling is not mistaken for deletion.
pub const LABEL_TRACKED: &str = "vclink.io/tracked";
/// Selector of Services the agent tracks that no longer carry `app=vcluster`.
pub const TRACKED_UNLABELLED_SELECTOR: &str = "vclink.io/tracked,app!=vcluster";
