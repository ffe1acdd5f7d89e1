//! Pure translation of Kubernetes objects into what the agent keeps and sends: a compact
//! [`TrackedService`] per vCluster Service (only the fields vclink reads, so 500 Services
//! cost a few hundred KiB, not the full objects) and the wire [`VCluster`] built from it,
//! its namespace's project and its exclusion (see [`super::exclusion`]).
//!
//! Besides vclink's own annotations a Service contributes its labels (sent as they are:
//! the hub applies the label-sync policy), the requested name or name prefix (vclink's
//! annotation, else the Go operator's `platform.vcluster.com/` spelling, so a migrated
//! Service keeps its name) and the chart version from its `chart` label.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceQuota, Service};
use vclink_proto::keys;
use vclink_proto::v1::{Exclusion, Flavour, Quota, VCluster};
use vclink_proto::validate::{MAX_LABELS, is_label_key, is_label_value};

/// Namespace annotation that puts a namespace into a Rancher project.
pub const ANNOTATION_PROJECT_ID: &str = "field.cattle.io/projectId";
/// Label vCluster v0.24+ puts on its Service.
pub const LABEL_VCLUSTER_SERVICE: &str = "vcluster.loft.sh/service";
/// Label or annotation prefix vclink itself owns (recorded state lives there).
const VCLINK_PREFIX: &str = "vclink.io/";

/// A value the user asked for in an annotation, with the annotation it came from (so a
/// refusal can name it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested {
    /// The annotation key the value was read from.
    pub annotation: &'static str,
    /// The value, trimmed.
    pub value: String,
}

/// What the agent remembers about one `app=vcluster` Service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackedService {
    /// Service UID: the vCluster's identity.
    pub uid: String,
    /// Namespace of the Service.
    pub namespace: String,
    /// Service name (= vCluster release name).
    pub name: String,
    /// `clusterIP: None`: the `<name>-headless` companion, never a vCluster.
    pub headless: bool,
    /// The user opted this vCluster out (`vclink.io/skip-import: "true"`, or the
    /// operator's `loft.sh/vcluster-skip-import: "true"`).
    pub skip_import: bool,
    /// Carries `app=vcluster` (false for a Service seen through the tracked-label watch).
    pub vcluster_label: bool,
    /// The agent's own mark ([`keys::LABEL_TRACKED`]) is present and names this UID (a
    /// copied Service carries another object's UID and counts as unmarked).
    pub marked: bool,
    /// Detected vCluster layout.
    pub flavour: Flavour,
    /// Port number of the `https` port (443 for every known vCluster version).
    pub https_port: i32,
    /// All `vclink.io/` annotations: the state the agent recorded and user overrides.
    pub annotations: BTreeMap<String, String>,
    /// The Service's labels, reported as they are; empty when they cannot be reported
    /// (see `labels_refused`).
    pub labels: BTreeMap<String, String>,
    /// Why the labels are not reported (more than [`MAX_LABELS`], or one that is not a
    /// valid label: the API server allows neither, but the agent does not rely on it).
    pub labels_refused: Option<String>,
    /// Requested Rancher cluster name ([`keys::ANNOTATION_CLUSTER_NAME`], else
    /// [`keys::ANNOTATION_PLATFORM_CUSTOM_NAME`]), unchecked.
    pub requested_name: Option<Requested>,
    /// Requested name prefix ([`keys::ANNOTATION_CLUSTER_NAME_PREFIX`], else
    /// [`keys::ANNOTATION_PLATFORM_CUSTOM_NAME_PREFIX`]), unchecked.
    pub requested_prefix: Option<Requested>,
    /// Chart version from the `chart` label (`vcluster-0.21.1` → `0.21.1`), or empty.
    pub version: String,
}

/// Where a requested name is read from, in order.
pub(crate) const NAME_KEYS: [&str; 2] = [
    keys::ANNOTATION_CLUSTER_NAME,
    keys::ANNOTATION_PLATFORM_CUSTOM_NAME,
];
/// Where a requested name prefix is read from, in order.
pub(crate) const PREFIX_KEYS: [&str; 2] = [
    keys::ANNOTATION_CLUSTER_NAME_PREFIX,
    keys::ANNOTATION_PLATFORM_CUSTOM_NAME_PREFIX,
];

/// The first non-empty of `keys` in `annotations`, with the key it was found under.
pub(crate) fn requested(
    annotations: &BTreeMap<String, String>,
    keys: [&'static str; 2],
) -> Option<Requested> {
    keys.into_iter().find_map(|k| {
        let v = annotations.get(k)?.trim();
        (!v.is_empty()).then(|| Requested {
            annotation: k,
            value: v.to_string(),
        })
    })
}

/// The Service's labels as reported, or why none are.
fn reported_labels(
    labels: &BTreeMap<String, String>,
) -> (BTreeMap<String, String>, Option<String>) {
    if labels.len() > MAX_LABELS {
        let why = format!(
            "the Service has {} labels, more than the {MAX_LABELS} vclink reports; none of them reach Rancher",
            labels.len()
        );
        return (BTreeMap::new(), Some(why));
    }
    match labels
        .iter()
        .find(|(k, v)| !is_label_key(k) || !is_label_value(v))
    {
        Some((k, _)) => {
            let key: String = k.chars().take(63).collect();
            let why = format!(
                "the Service label {key:?} is not a valid label; none of the labels reach Rancher"
            );
            (BTreeMap::new(), Some(why))
        }
        None => (labels.clone(), None),
    }
}

impl TrackedService {
    /// Extracts what vclink needs; `None` for an object without name, namespace or UID.
    pub fn from_service(svc: &Service) -> Option<Self> {
        let meta = &svc.metadata;
        let uid = meta.uid.clone()?;
        let namespace = meta.namespace.clone()?;
        let name = meta.name.clone()?;
        let empty = BTreeMap::new();
        let labels = meta.labels.as_ref().unwrap_or(&empty);
        let all_annotations = meta.annotations.as_ref().unwrap_or(&empty);
        let spec = svc.spec.as_ref();
        let headless = spec
            .and_then(|s| s.cluster_ip.as_deref())
            .is_some_and(|ip| ip.eq_ignore_ascii_case("none"));
        let https_port = spec
            .and_then(|s| s.ports.as_ref())
            .and_then(|ports| {
                ports
                    .iter()
                    .find(|p| p.name.as_deref() == Some("https"))
                    .or_else(|| ports.first())
            })
            .map(|p| p.port)
            .unwrap_or(443);
        let annotations: BTreeMap<String, String> = all_annotations
            .iter()
            .filter(|(k, _)| k.starts_with(VCLINK_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let is_true = |k: &str| {
            all_annotations
                .get(k)
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        };
        let skip_import =
            is_true(keys::ANNOTATION_SKIP_IMPORT) || is_true(keys::ANNOTATION_LOFT_SKIP_IMPORT);
        let vcluster_label = labels.get("app").is_some_and(|v| v == "vcluster");
        let marked = labels.get(keys::LABEL_TRACKED) == Some(&uid);
        let (reported, labels_refused) = reported_labels(labels);
        let requested_name = requested(all_annotations, NAME_KEYS);
        let requested_prefix = requested(all_annotations, PREFIX_KEYS);
        let version = labels
            .get("chart")
            .or_else(|| labels.get("helm.sh/chart"))
            .map(|c| chart_version(c))
            .unwrap_or_default();
        Some(Self {
            uid,
            namespace,
            name,
            headless,
            skip_import,
            vcluster_label,
            marked,
            flavour: flavour(labels),
            https_port,
            annotations,
            labels: reported,
            labels_refused,
            requested_name,
            requested_prefix,
            version: version.to_string(),
        })
    }

    /// Names of this vCluster's ResourceQuota, most likely first: `vc-<name>` from
    /// v0.20, `<name>-quota` before; both when the layout is unknown.
    pub fn quota_names(&self) -> Vec<String> {
        let new = format!("vc-{}", self.name);
        let old = format!("{}-quota", self.name);
        match self.flavour {
            Flavour::V020 => vec![new],
            Flavour::V019 => vec![old],
            Flavour::Unspecified => vec![new, old],
        }
    }

    /// True when this Service is no vCluster at all (the `<name>-headless` companion).
    pub fn is_skipped(&self) -> bool {
        self.headless
    }

    /// The wire description of this vCluster, given its namespace's project annotation
    /// (unchecked: [`super::exclusion::describe`] validates and excludes).
    pub fn to_vcluster(
        &self,
        project_id: Option<&str>,
        quota: Option<&Quota>,
        exclusion: Option<Exclusion>,
    ) -> VCluster {
        let ann = |k: &str| {
            self.annotations
                .get(k)
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        VCluster {
            uid: self.uid.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            project_id: project_id.map(|p| p.trim().to_string()).unwrap_or_default(),
            flavour: self.flavour as i32,
            requested_name: self
                .requested_name
                .as_ref()
                .map(|r| r.value.clone())
                .unwrap_or_default(),
            recorded_cluster_id: ann(keys::ANNOTATION_RANCHER_CLUSTER),
            rancher_cluster_deleted: !ann(keys::ANNOTATION_RANCHER_DELETED).is_empty(),
            exclusion,
            requested_prefix: self
                .requested_prefix
                .as_ref()
                .map(|r| r.value.clone())
                .unwrap_or_default(),
            labels: self.labels.clone(),
            quota: quota.cloned(),
            vcluster_version: self.version.clone(),
        }
    }
}

/// What the agent keeps of a ResourceQuota that may be a vCluster's (`vc-<name>` or
/// `<name>-quota`): its name and `spec.hard`, never its status, which changes with
/// every pod.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaFacts {
    /// Namespace of the quota.
    pub namespace: String,
    /// Object name.
    pub name: String,
    /// What is reported; `None` when it cannot be (see `refused`).
    pub quota: Option<Quota>,
    /// Why it is not reported (more entries than the contract allows, or one that is
    /// not a resource name and quantity).
    pub refused: Option<String>,
}

impl QuotaFacts {
    /// The facts of `rq`; `None` for a quota whose name no vCluster's can have.
    pub fn from_quota(rq: &ResourceQuota) -> Option<Self> {
        let namespace = rq.metadata.namespace.clone()?;
        let name = rq.metadata.name.clone()?;
        if !(name.starts_with("vc-") || name.ends_with("-quota")) {
            return None;
        }
        let hard: BTreeMap<String, String> = rq
            .spec
            .as_ref()
            .and_then(|s| s.hard.as_ref())
            .map(|h| h.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect())
            .unwrap_or_default();
        let quota = Quota {
            name: name.clone(),
            hard,
        };
        // The contract's own rules, on a probe that has nothing but the quota.
        let probe = VCluster {
            uid: "00000000-0000-0000-0000-000000000000".into(),
            namespace: "n".into(),
            name: "n".into(),
            quota: Some(quota.clone()),
            ..Default::default()
        };
        let (quota, refused) = match vclink_proto::validate::vcluster("vcluster", &probe) {
            Ok(()) => (Some(quota), None),
            Err(e) => (None, Some(e.to_string())),
        };
        Some(Self {
            namespace,
            name,
            quota,
            refused,
        })
    }
}

/// Detects the vCluster layout from Service labels. The agent may not read Secrets, so
/// `vc-config-<name>` cannot be checked; the Service labels are the next best signal.
pub fn flavour(labels: &BTreeMap<String, String>) -> Flavour {
    if labels
        .get(LABEL_VCLUSTER_SERVICE)
        .is_some_and(|v| v == "true")
    {
        return Flavour::V020;
    }
    let chart = labels.get("helm.sh/chart").or_else(|| labels.get("chart"));
    match chart.map(|c| chart_version(c)).and_then(parse_minor) {
        Some((0, minor)) if minor >= 20 => Flavour::V020,
        Some((0, _)) => Flavour::V019,
        Some((_, _)) => Flavour::V020,
        None => Flavour::Unspecified,
    }
}

/// The version part of a Helm `chart` label: what follows the first `-` that starts a
/// `<major>.<minor>.<patch>` version (`vcluster-0.21.1` → `0.21.1`, `vcluster-k8s-0.19.5`
/// → `0.19.5`, `vcluster-0.20.0-beta.1` → `0.20.0-beta.1`); empty when there is none.
pub fn chart_version(chart: &str) -> &str {
    let is_semver = |v: &str| {
        let core = v.split(['-', '_', '+']).next().unwrap_or_default();
        let parts: Vec<&str> = core.split('.').collect();
        parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    };
    chart
        .match_indices('-')
        .map(|(i, _)| &chart[i + 1..])
        .find(|rest| rest.starts_with(|c: char| c.is_ascii_digit()) && is_semver(rest))
        .unwrap_or_default()
}

/// `"0.19.5"` → `(0, 19)`; tolerates a leading `v` and suffixes like `-rc.1`.
fn parse_minor(version: &str) -> Option<(u32, u32)> {
    let v = version.strip_prefix('v').unwrap_or(version);
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor_raw = parts.next()?;
    let digits: String = minor_raw.chars().take_while(char::is_ascii_digit).collect();
    Some((major, digits.parse().ok()?))
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
