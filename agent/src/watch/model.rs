//! Pure translation of Kubernetes objects into what the agent keeps and sends: a compact
//! [`TrackedService`] per vCluster Service (only the fields vclink reads, so 500 Services
//! cost a few hundred KiB, not the full objects) and the wire [`VCluster`] built from it,
//! its namespace's project and its exclusion (see [`super::exclusion`]).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use vclink_proto::keys;
use vclink_proto::v1::{Exclusion, Flavour, VCluster};

/// Namespace annotation that puts a namespace into a Rancher project.
pub const ANNOTATION_PROJECT_ID: &str = "field.cattle.io/projectId";
/// Label vCluster v0.24+ puts on its Service.
pub const LABEL_VCLUSTER_SERVICE: &str = "vcluster.loft.sh/service";
/// Label or annotation prefix vclink itself owns (recorded state lives there).
const VCLINK_PREFIX: &str = "vclink.io/";

/// What the agent remembers about one `app=vcluster` Service.
#[derive(Debug, Clone, PartialEq, Eq)]
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
        })
    }

    /// True when this Service is no vCluster at all (the `<name>-headless` companion).
    pub fn is_skipped(&self) -> bool {
        self.headless
    }

    /// The wire description of this vCluster, given its namespace's project annotation
    /// (unchecked: [`super::exclusion::describe`] validates and excludes).
    pub fn to_vcluster(&self, project_id: Option<&str>, exclusion: Option<Exclusion>) -> VCluster {
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
            requested_name: ann(keys::ANNOTATION_CLUSTER_NAME),
            recorded_cluster_id: ann(keys::ANNOTATION_RANCHER_CLUSTER),
            rancher_cluster_deleted: !ann(keys::ANNOTATION_RANCHER_DELETED).is_empty(),
            exclusion,
        }
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
    match chart
        .and_then(|c| c.strip_prefix("vcluster-"))
        .and_then(parse_minor)
    {
        Some((0, minor)) if minor >= 20 => Flavour::V020,
        Some((0, _)) => Flavour::V019,
        Some((_, _)) => Flavour::V020,
        None => Flavour::Unspecified,
    }
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
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const UID: &str = "0b6f7c52-8a8e-4c3f-9d51-3c1e2a4b5c6d";

    fn svc(
        labels: &[(&str, &str)],
        annotations: &[(&str, &str)],
        cluster_ip: Option<&str>,
    ) -> Service {
        let map = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Service {
            metadata: ObjectMeta {
                name: Some("vc1".into()),
                namespace: Some("team-a".into()),
                uid: Some(UID.into()),
                labels: Some(map(labels)),
                annotations: Some(map(annotations)),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: cluster_ip.map(String::from),
                ports: Some(vec![
                    ServicePort {
                        name: Some("kubelet".into()),
                        port: 10250,
                        ..Default::default()
                    },
                    ServicePort {
                        name: Some("https".into()),
                        port: 443,
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn builds_a_vcluster_with_project_and_overrides() {
        let s = svc(
            &[("app", "vcluster"), ("vcluster.loft.sh/service", "true")],
            &[
                ("vclink.io/cluster-name", "my-vc"),
                ("vclink.io/rancher-cluster-id", "c-m-xyz12345"),
                ("unrelated/annotation", "big value"),
            ],
            Some("10.96.0.10"),
        );
        let t = TrackedService::from_service(&s).expect("tracked");
        assert!(!t.is_skipped());
        assert_eq!(t.https_port, 443);
        assert!(
            !t.annotations.contains_key("unrelated/annotation"),
            "only vclink.io/ annotations are kept"
        );
        let v = t.to_vcluster(Some("c-m-abcd1234:p-xk2lm"), None);
        assert_eq!(v.uid, UID);
        assert_eq!((v.namespace.as_str(), v.name.as_str()), ("team-a", "vc1"));
        assert_eq!(v.project_id, "c-m-abcd1234:p-xk2lm");
        assert_eq!(v.flavour, Flavour::V020 as i32);
        assert_eq!(v.requested_name, "my-vc");
        assert_eq!(v.recorded_cluster_id, "c-m-xyz12345");
        assert!(!v.rancher_cluster_deleted);
        assert_eq!(vclink_proto::validate::vcluster("v", &v), Ok(()));
    }

    #[test]
    fn namespace_without_project_gives_empty_project_id() {
        let t = TrackedService::from_service(&svc(&[("app", "vcluster")], &[], Some("10.0.0.1")))
            .expect("tracked");
        assert_eq!(t.to_vcluster(None, None).project_id, "");
    }

    #[test]
    fn headless_services_are_skipped_and_opt_outs_are_read() {
        let headless =
            TrackedService::from_service(&svc(&[("app", "vcluster")], &[], Some("None")))
                .expect("tracked");
        assert!(headless.is_skipped());
        for key in ["vclink.io/skip-import", "loft.sh/vcluster-skip-import"] {
            let opted_out = TrackedService::from_service(&svc(
                &[("app", "vcluster")],
                &[(key, "True")],
                Some("10.0.0.1"),
            ))
            .expect("tracked");
            assert!(!opted_out.is_skipped(), "an opt-out is still a vCluster");
            assert!(opted_out.skip_import, "{key}");
        }
        let not_opted_out = TrackedService::from_service(&svc(
            &[("app", "vcluster")],
            &[("vclink.io/skip-import", "false")],
            Some("10.0.0.1"),
        ))
        .expect("tracked");
        assert!(!not_opted_out.skip_import);
        assert!(not_opted_out.vcluster_label && !not_opted_out.marked);
    }

    #[test]
    fn the_mark_counts_only_with_this_services_uid() {
        let own = TrackedService::from_service(&svc(
            &[("vclink.io/tracked", UID)],
            &[],
            Some("10.0.0.1"),
        ))
        .expect("tracked");
        assert!(own.marked && !own.vcluster_label);
        let copied = TrackedService::from_service(&svc(
            &[("vclink.io/tracked", "0b6f7c52-8a8e-4c3f-9d51-000000000000")],
            &[],
            Some("10.0.0.1"),
        ))
        .expect("tracked");
        assert!(!copied.marked);
    }

    #[test]
    fn deleted_marker_is_reported() {
        let t = TrackedService::from_service(&svc(
            &[("app", "vcluster")],
            &[("vclink.io/rancher-cluster-deleted", "2024-01-01T00:00:00Z")],
            Some("10.0.0.1"),
        ))
        .expect("tracked");
        assert!(t.to_vcluster(None, None).rancher_cluster_deleted);
    }

    #[test]
    fn flavour_from_chart_labels() {
        let l = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        assert_eq!(flavour(&l("chart", "vcluster-0.19.5")), Flavour::V019);
        assert_eq!(
            flavour(&l("helm.sh/chart", "vcluster-0.20.0-beta.1")),
            Flavour::V020
        );
        assert_eq!(flavour(&l("chart", "vcluster-0.21.1")), Flavour::V020);
        assert_eq!(flavour(&l("chart", "something-else")), Flavour::Unspecified);
        assert_eq!(flavour(&BTreeMap::new()), Flavour::Unspecified);
    }
}
