//! Unit tests of the Service and ResourceQuota translation: overrides, labels, names, chart versions, quotas.

use super::*;
use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

const UID: &str = "0b6f7c52-8a8e-4c3f-9d51-3c1e2a4b5c6d";

fn svc(labels: &[(&str, &str)], annotations: &[(&str, &str)], cluster_ip: Option<&str>) -> Service {
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
    let v = t.to_vcluster(Some("c-m-abcd1234:p-xk2lm"), None, None);
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
    assert_eq!(t.to_vcluster(None, None, None).project_id, "");
}

#[test]
fn headless_services_are_skipped_and_opt_outs_are_read() {
    let headless = TrackedService::from_service(&svc(&[("app", "vcluster")], &[], Some("None")))
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
    let own =
        TrackedService::from_service(&svc(&[("vclink.io/tracked", UID)], &[], Some("10.0.0.1")))
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
    assert!(t.to_vcluster(None, None, None).rancher_cluster_deleted);
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
    assert_eq!(flavour(&l("chart", "vcluster-k8s-0.19.5")), Flavour::V019);
}

#[test]
fn chart_versions_are_parsed() {
    assert_eq!(chart_version("vcluster-0.21.1"), "0.21.1");
    assert_eq!(chart_version("vcluster-k8s-0.19.5"), "0.19.5");
    assert_eq!(chart_version("vcluster-k0s-0.19.0"), "0.19.0");
    assert_eq!(chart_version("vcluster-0.20.0-beta.1"), "0.20.0-beta.1");
    assert_eq!(chart_version("k3s-1-2-vcluster-0.19.5"), "0.19.5");
    assert_eq!(chart_version("vcluster-0.21.1_build.7"), "0.21.1_build.7");
    for none in [
        "vcluster",
        "vcluster-",
        "vcluster-1.2",
        "0.21.1",
        "vcluster-v0.21.1",
        "",
    ] {
        assert_eq!(chart_version(none), "", "{none}");
    }
    let t = TrackedService::from_service(&svc(
        &[("app", "vcluster"), ("chart", "vcluster-0.21.1")],
        &[],
        Some("10.0.0.1"),
    ))
    .expect("tracked");
    assert_eq!(t.to_vcluster(None, None, None).vcluster_version, "0.21.1");
}

#[test]
fn labels_are_reported_as_they_are_or_not_at_all() {
    let s = svc(
        &[
            ("app", "vcluster"),
            ("example.org/team", "blue"),
            ("env", ""),
        ],
        &[],
        Some("10.0.0.1"),
    );
    let t = TrackedService::from_service(&s).expect("tracked");
    let v = t.to_vcluster(None, None, None);
    assert_eq!(v.labels.len(), 3);
    assert_eq!(v.labels["example.org/team"], "blue");
    assert_eq!(t.labels_refused, None);
    let many: Vec<(String, String)> = (0..=MAX_LABELS)
        .map(|i| (format!("k{i}"), "v".to_string()))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let t = TrackedService::from_service(&svc(&many, &[], Some("10.0.0.1"))).expect("tracked");
    assert!(t.labels.is_empty());
    assert!(
        t.labels_refused
            .as_deref()
            .is_some_and(|r| r.contains("65 labels"))
    );
    let t = TrackedService::from_service(&svc(&[("bad key", "x")], &[], Some("10.0.0.1")))
        .expect("tracked");
    assert!(t.labels.is_empty() && t.labels_refused.is_some());
    assert_eq!(
        vclink_proto::validate::vcluster("v", &t.to_vcluster(None, None, None)),
        Ok(())
    );
}

#[test]
fn requested_name_and_prefix_fall_back_to_the_operators_annotations() {
    let read = |ann: &[(&str, &str)]| {
        let t = TrackedService::from_service(&svc(&[("app", "vcluster")], ann, Some("10.0.0.1")))
            .expect("tracked");
        let v = t.to_vcluster(None, None, None);
        (t, v.requested_name, v.requested_prefix)
    };
    let (t, name, prefix) = read(&[
        ("platform.vcluster.com/custom-name", "theirs"),
        ("platform.vcluster.com/custom-name-prefix", "edge"),
    ]);
    assert_eq!((name.as_str(), prefix.as_str()), ("theirs", "edge"));
    assert_eq!(
        t.requested_prefix.map(|r| r.annotation),
        Some("platform.vcluster.com/custom-name-prefix")
    );
    let (t, name, prefix) = read(&[
        ("platform.vcluster.com/custom-name", "theirs"),
        ("vclink.io/cluster-name", " ours "),
        ("vclink.io/cluster-name-prefix", "mine"),
        ("platform.vcluster.com/custom-name-prefix", "edge"),
    ]);
    assert_eq!((name.as_str(), prefix.as_str()), ("ours", "mine"));
    assert_eq!(
        t.requested_name.map(|r| r.annotation),
        Some("vclink.io/cluster-name")
    );
    let (_, name, prefix) = read(&[
        ("vclink.io/cluster-name", ""),
        ("platform.vcluster.com/custom-name", "x1"),
    ]);
    assert_eq!(
        (name.as_str(), prefix.as_str()),
        ("x1", ""),
        "an empty annotation is absent"
    );
}

#[test]
fn quotas_keep_name_and_hard_only() {
    use k8s_openapi::api::core::v1::ResourceQuotaSpec;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let rq = |name: &str, hard: &[(&str, &str)]| ResourceQuota {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("team-a".into()),
            ..Default::default()
        },
        spec: Some(ResourceQuotaSpec {
            hard: Some(
                hard.iter()
                    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                    .collect(),
            ),
            ..Default::default()
        }),
        status: None,
    };
    let f = QuotaFacts::from_quota(&rq(
        "vc-vc1",
        &[("limits.cpu", "4"), ("requests.memory", "8Gi")],
    ))
    .expect("a vCluster quota name");
    let q = f.quota.expect("reported");
    assert_eq!(q.name, "vc-vc1");
    assert_eq!(q.hard["requests.memory"], "8Gi");
    assert!(QuotaFacts::from_quota(&rq("vc1-quota", &[])).is_some());
    assert_eq!(
        QuotaFacts::from_quota(&rq("default-x7k2", &[("pods", "10")])),
        None
    );
    let many: Vec<(String, String)> = (0..40)
        .map(|i| (format!("count/r{i}"), "1".into()))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let f = QuotaFacts::from_quota(&rq("vc-vc1", &many)).expect("facts");
    assert_eq!(f.quota, None);
    assert!(f.refused.is_some_and(|r| r.contains("more than 32")));
}

#[test]
fn quota_names_follow_the_layout() {
    let mut t = TrackedService {
        name: "vc1".into(),
        ..Default::default()
    };
    assert_eq!(t.quota_names(), ["vc-vc1", "vc1-quota"]);
    t.flavour = Flavour::V019;
    assert_eq!(t.quota_names(), ["vc1-quota"]);
    t.flavour = Flavour::V020;
    assert_eq!(t.quota_names(), ["vc-vc1"]);
}
