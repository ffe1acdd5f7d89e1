//! Which objects of a vCluster's Helm release the agent removes, and which it leaves: an
//! object must be listed in the release's manifest, live in the release's namespace, be
//! of a kind the agent's RBAC lets it delete ([`KINDS`]), and — checked on the live
//! object — carry Helm's ownership markers for this release (the
//! `meta.helm.sh/release-name` / `meta.helm.sh/release-namespace` annotations Helm puts
//! on everything it creates) or the vCluster chart's `release=<release>` label. Anything
//! else is left and named. Pure, so every rule is unit-tested.

use std::collections::BTreeMap;

use super::release::Listed;

/// Helm's ownership annotation naming the release.
pub const HELM_RELEASE_NAME: &str = "meta.helm.sh/release-name";
/// Helm's ownership annotation naming the release's namespace.
pub const HELM_RELEASE_NAMESPACE: &str = "meta.helm.sh/release-namespace";

/// A namespaced kind the agent may delete when uninstall is enabled (the chart's RBAC
/// grants exactly these; keep the two lists equal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// API group ("" for core).
    pub group: &'static str,
    /// Version.
    pub version: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Resource (plural).
    pub plural: &'static str,
}

/// The kinds a vCluster release holds in its namespace, in the order they are removed:
/// the workloads first (so nothing keeps using what follows), the vCluster's Service
/// among the last.
pub const KINDS: &[Kind] = &[
    Kind {
        group: "apps",
        version: "v1",
        kind: "StatefulSet",
        plural: "statefulsets",
    },
    Kind {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
    },
    Kind {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "RoleBinding",
        plural: "rolebindings",
    },
    Kind {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "Role",
        plural: "roles",
    },
    Kind {
        group: "",
        version: "v1",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
    },
    Kind {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
    },
    Kind {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
    },
    Kind {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
    },
];

/// The allowed kind of `apiVersion`/`kind`, if any.
pub fn kind_of(api_version: &str, kind: &str) -> Option<&'static Kind> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.kind == kind)
}

/// A manifest object the agent will check and remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The object as listed (namespace filled in).
    pub listed: Listed,
    /// Its kind.
    pub kind: &'static Kind,
}

/// A manifest object left alone, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Left {
    /// What it is, e.g. `ClusterRole vc-x` or `Secret y`.
    pub what: String,
    /// Why it was left.
    pub why: String,
}

impl std::fmt::Display for Left {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.what, self.why)
    }
}

/// Splits the manifest of release `namespace`/`release` into the candidates (in
/// [`KINDS`] order, the vCluster's own Service `service` last) and what is left.
pub fn candidates(
    listed: &[Listed],
    namespace: &str,
    service: &str,
) -> (Vec<Candidate>, Vec<Left>) {
    let mut out = Vec::new();
    let mut left = Vec::new();
    for l in listed {
        let mut l = l.clone();
        let Some(kind) = kind_of(&l.api_version, &l.kind) else {
            left.push(Left {
                what: l.to_string(),
                why: "a kind the agent does not remove (cluster-scoped or not granted)".into(),
            });
            continue;
        };
        if l.namespace.is_empty() {
            l.namespace = namespace.to_string();
        } else if l.namespace != namespace {
            left.push(Left {
                what: l.to_string(),
                why: format!("outside the vCluster's namespace {namespace}"),
            });
            continue;
        }
        out.push(Candidate { listed: l, kind });
    }
    let rank = |c: &Candidate| {
        let own = c.kind.kind == "Service" && c.listed.name == service;
        let order = KINDS
            .iter()
            .position(|k| k == c.kind)
            .unwrap_or(KINDS.len());
        (own, order)
    };
    out.sort_by_key(rank);
    out.dedup();
    (out, left)
}

/// Whether the live object's metadata marks it as part of release `namespace`/`release`:
/// Helm's two ownership annotations, or the vCluster chart's `release` label.
pub fn owned_by(
    annotations: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
    release: &str,
    namespace: &str,
) -> bool {
    let helm = annotations.get(HELM_RELEASE_NAME).map(String::as_str) == Some(release)
        && annotations.get(HELM_RELEASE_NAMESPACE).map(String::as_str) == Some(namespace);
    helm || labels.get("release").map(String::as_str) == Some(release)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(api: &str, kind: &str, name: &str, ns: &str) -> Listed {
        Listed {
            api_version: api.into(),
            kind: kind.into(),
            name: name.into(),
            namespace: ns.into(),
        }
    }

    #[test]
    fn only_granted_namespaced_kinds_in_the_release_namespace_are_candidates() {
        let listed = vec![
            l("v1", "Service", "vc1", ""),
            l("v1", "Service", "vc1-headless", "team-a"),
            l("apps/v1", "StatefulSet", "vc1", ""),
            l(
                "rbac.authorization.k8s.io/v1",
                "ClusterRole",
                "vc-vc1-v-team-a",
                "",
            ),
            l("v1", "ConfigMap", "elsewhere", "kube-system"),
            l("networking.k8s.io/v1", "NetworkPolicy", "vc1", ""),
            l("apps/v1beta1", "StatefulSet", "old", ""),
        ];
        let (c, left) = candidates(&listed, "team-a", "vc1");
        let names: Vec<_> = c
            .iter()
            .map(|c| format!("{} {}", c.kind.kind, c.listed.name))
            .collect();
        assert_eq!(
            names,
            vec!["StatefulSet vc1", "Service vc1-headless", "Service vc1"],
            "workloads first, the vCluster's own Service last"
        );
        assert!(c.iter().all(|c| c.listed.namespace == "team-a"));
        let left: Vec<_> = left.iter().map(|l| l.what.clone()).collect();
        assert_eq!(
            left,
            vec![
                "ClusterRole vc-vc1-v-team-a",
                "ConfigMap elsewhere (namespace kube-system)",
                "NetworkPolicy vc1",
                "StatefulSet old"
            ]
        );
    }

    #[test]
    fn ownership_needs_both_helm_annotations_or_the_release_label() {
        let m = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let none = m(&[]);
        let helm = m(&[
            (HELM_RELEASE_NAME, "vc1"),
            (HELM_RELEASE_NAMESPACE, "team-a"),
        ]);
        assert!(owned_by(&helm, &none, "vc1", "team-a"));
        assert!(!owned_by(&helm, &none, "vc2", "team-a"));
        assert!(
            !owned_by(&helm, &none, "vc1", "team-b"),
            "another namespace's release"
        );
        let half = m(&[(HELM_RELEASE_NAME, "vc1")]);
        assert!(!owned_by(&half, &none, "vc1", "team-a"));
        assert!(owned_by(&none, &m(&[("release", "vc1")]), "vc1", "team-a"));
        assert!(!owned_by(
            &none,
            &m(&[("release", "vc10")]),
            "vc1",
            "team-a"
        ));
        assert!(!owned_by(&none, &none, "vc1", "team-a"));
    }
}
