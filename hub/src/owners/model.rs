//! Rancher's project and role-binding kinds as owner sync sees them: read as
//! `DynamicObject`s and reduced at once to the small structs here (see
//! `docs/rancher.md`). Pure and unit-tested; nothing here does I/O.

use kube::ResourceExt;
use kube::api::DynamicObject;
use serde_json::Value;
use vclink_proto::keys::{
    LABEL_HOST_CLUSTER, LABEL_MANAGED_BY, LABEL_SERVICE_UID, MANAGED_BY_VALUE,
};

use crate::core::index::VcKey;
use crate::rancher::LOFT_SERVICE_UID;

/// Label on the CRTBs owner sync creates (together with `vclink.io/managed-by=vclink`):
/// only CRTBs carrying both are ever deleted by the hub.
pub const LABEL_COMPONENT: &str = "vclink.io/component";
/// Value of [`LABEL_COMPONENT`] on owner bindings.
pub const COMPONENT_OWNER: &str = "owner-binding";
/// Label: kind of the binding an owner CRTB derives from (`prtb` or `crtb`).
pub const LABEL_PARENT_KIND: &str = "vclink.io/parent-kind";
/// Label: namespace of that binding.
pub const LABEL_PARENT_NAMESPACE: &str = "vclink.io/parent-namespace";
/// Label: name of that binding.
pub const LABEL_PARENT_NAME: &str = "vclink.io/parent-name";
/// Annotation: every binding the CRTB derived from when it was created (`kind:ns/name`, comma-separated).
pub const ANNOTATION_PARENTS: &str = "vclink.io/parents";

/// Who a binding grants to: exactly one user or one group (a CRTB cannot name a
/// ServiceAccount). Either field of a pair may be empty, not both.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// `userName` / `userPrincipalName`.
    User {
        /// `userName` (`u-…`).
        name: String,
        /// `userPrincipalName` (`local://u-…`, `okta_user://…`).
        principal: String,
    },
    /// `groupName` / `groupPrincipalName`.
    Group {
        /// `groupName`.
        name: String,
        /// `groupPrincipalName`.
        principal: String,
    },
}

impl Subject {
    /// Stable identity used in CRTB names: the name when set, else the principal.
    pub fn id(&self) -> String {
        let (kind, name, principal) = match self {
            Subject::User { name, principal } => ("user", name, principal),
            Subject::Group { name, principal } => ("group", name, principal),
        };
        if name.is_empty() {
            format!("{kind}-principal:{principal}")
        } else {
            format!("{kind}:{name}")
        }
    }

    /// The CRTB fields naming this subject.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let (n, p, name, principal) = match self {
            Subject::User { name, principal } => ("userName", "userPrincipalName", name, principal),
            Subject::Group { name, principal } => {
                ("groupName", "groupPrincipalName", name, principal)
            }
        };
        [(n, name), (p, principal)]
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k, v.clone()))
            .collect()
    }

    /// Whether this is a Rancher-internal principal (`system://…`, e.g. the
    /// provisioning cluster's own owner binding): never a person to copy.
    pub fn is_system(&self) -> bool {
        match self {
            Subject::User { principal, .. } | Subject::Group { principal, .. } => {
                principal.starts_with("system://")
            }
        }
    }
}

fn field<'a>(o: &'a DynamicObject, k: &str) -> &'a str {
    o.data.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// The one user or group subject of a binding; `None` for a ServiceAccount subject, none
/// at all, or both a user and a group (the webhook refuses those; never guess).
pub fn subject_of(o: &DynamicObject) -> Option<Subject> {
    let (un, up) = (field(o, "userName"), field(o, "userPrincipalName"));
    let (gn, gp) = (field(o, "groupName"), field(o, "groupPrincipalName"));
    let user = !un.is_empty() || !up.is_empty();
    let group = !gn.is_empty() || !gp.is_empty();
    match (user, group) {
        (true, false) => Some(Subject::User {
            name: un.into(),
            principal: up.into(),
        }),
        (false, true) => Some(Subject::Group {
            name: gn.into(),
            principal: gp.into(),
        }),
        _ => None,
    }
}

/// A project (`<cluster-id>/<p-id>` as namespace/name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectInfo {
    /// Namespace = the cluster's management id.
    pub cluster: String,
    /// `p-…`.
    pub id: String,
    /// Where its PRTBs live: `status.backingNamespace`, else the project name.
    pub prtb_namespace: String,
    /// Has a deletionTimestamp (treated as gone).
    pub deleting: bool,
}

/// Reduces a Project.
pub fn parse_project(o: &DynamicObject) -> Option<ProjectInfo> {
    let id = o.name_any();
    let backing = o
        .data
        .pointer("/status/backingNamespace")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    Some(ProjectInfo {
        cluster: o.namespace()?,
        prtb_namespace: backing.unwrap_or_else(|| id.clone()),
        id,
        deleting: o.metadata.deletion_timestamp.is_some(),
    })
}

/// A PRTB or a CRTB someone else made: a possible source of owner bindings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Binding {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `roleTemplateName`.
    pub role: String,
    /// PRTB: `projectName` (`<cluster-id>:<p-id>`); CRTB: `clusterName`.
    pub scope: String,
    /// The subject, if it is a user or group.
    pub subject: Option<Subject>,
    /// Has a deletionTimestamp (treated as gone).
    pub deleting: bool,
    /// UID (precondition of a takeover write).
    pub uid: String,
    /// `metadata.resourceVersion` (precondition of a takeover write: the object judged is
    /// the object written).
    pub resource_version: String,
    /// CRTBs only: the vCluster Service UID on a CRTB labelled the way the
    /// vcluster-rancher-operator labels its owner bindings ([`operator_mark`]).
    pub operator_uid: Option<String>,
}

/// Label the vcluster-rancher-operator puts on its owner CRTBs: the PRTB it derived from.
pub const LOFT_PARENT_PRTB: &str = "loft.sh/parent-prtb";
/// Label the vcluster-rancher-operator puts on its owner CRTBs: the host CRTB it derived from.
pub const LOFT_PARENT_CRTB: &str = "loft.sh/parent-crtb";

/// The Service UID of a CRTB labelled like the operator's owner bindings: a non-empty
/// `loft.sh/vcluster-service-uid` and exactly one non-empty parent label. Labels are no
/// proof (anyone who may edit CRTBs there can write them); see [`super::takeover`].
pub fn operator_mark(o: &DynamicObject) -> Option<String> {
    let l = |k| label(o, k).filter(|v| !v.is_empty());
    let uid = l(LOFT_SERVICE_UID)?;
    (l(LOFT_PARENT_PRTB).is_some() != l(LOFT_PARENT_CRTB).is_some()).then(|| uid.to_string())
}

/// Reduces a PRTB.
pub fn parse_prtb(o: &DynamicObject) -> Option<Binding> {
    Some(Binding {
        namespace: o.namespace()?,
        name: o.name_any(),
        role: field(o, "roleTemplateName").into(),
        scope: field(o, "projectName").into(),
        subject: subject_of(o),
        deleting: o.metadata.deletion_timestamp.is_some(),
        ..Binding::default()
    })
}

/// A CRTB owner sync created (labels `managed-by=vclink`, `component=owner-binding`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedCrtb {
    /// Name.
    pub name: String,
    /// UID (delete precondition).
    pub uid: String,
    /// `roleTemplateName`.
    pub role: String,
    /// Subject.
    pub subject: Option<Subject>,
    /// The vCluster named by its labels.
    pub key: Option<VcKey>,
    /// Has a deletionTimestamp.
    pub deleting: bool,
}

/// A CRTB, split by who made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Crtb {
    /// Created by owner sync.
    Owned {
        /// Namespace = the vCluster cluster's management id.
        namespace: String,
        /// The binding.
        crtb: OwnedCrtb,
    },
    /// Anyone else's (a user's, Rancher's): read as a source, never written.
    Foreign(Binding),
}

impl Crtb {
    /// (namespace, name).
    pub fn id(&self) -> (&str, &str) {
        match self {
            Crtb::Owned { namespace, crtb } => (namespace, &crtb.name),
            Crtb::Foreign(b) => (&b.namespace, &b.name),
        }
    }
}

fn label<'a>(o: &'a DynamicObject, k: &str) -> Option<&'a str> {
    o.metadata.labels.as_ref()?.get(k).map(String::as_str)
}

/// Whether a CRTB is one of owner sync's.
pub fn is_owned(o: &DynamicObject) -> bool {
    label(o, LABEL_MANAGED_BY) == Some(MANAGED_BY_VALUE)
        && label(o, LABEL_COMPONENT) == Some(COMPONENT_OWNER)
}

/// Reduces a CRTB.
pub fn parse_crtb(o: &DynamicObject) -> Option<Crtb> {
    let namespace = o.namespace()?;
    if is_owned(o) {
        let key = match (label(o, LABEL_HOST_CLUSTER), label(o, LABEL_SERVICE_UID)) {
            (Some(h), Some(u)) => Some(VcKey::new(h, u)),
            _ => None,
        };
        return Some(Crtb::Owned {
            namespace,
            crtb: OwnedCrtb {
                name: o.name_any(),
                uid: o.uid().unwrap_or_default(),
                role: field(o, "roleTemplateName").into(),
                subject: subject_of(o),
                key,
                deleting: o.metadata.deletion_timestamp.is_some(),
            },
        });
    }
    Some(Crtb::Foreign(Binding {
        namespace,
        name: o.name_any(),
        role: field(o, "roleTemplateName").into(),
        scope: field(o, "clusterName").into(),
        subject: subject_of(o),
        deleting: o.metadata.deletion_timestamp.is_some(),
        uid: o.uid().unwrap_or_default(),
        resource_version: o.resource_version().unwrap_or_default(),
        operator_uid: operator_mark(o),
    }))
}

/// Whether two subjects are the same user or group: equal non-empty names or equal
/// non-empty principals (one side may carry only one of them).
pub fn same_subject(a: &Subject, b: &Subject) -> bool {
    let nonempty_eq = |x: &str, y: &str| !x.is_empty() && x == y;
    match (a, b) {
        (
            Subject::User {
                name: n1,
                principal: p1,
            },
            Subject::User {
                name: n2,
                principal: p2,
            },
        )
        | (
            Subject::Group {
                name: n1,
                principal: p1,
            },
            Subject::Group {
                name: n2,
                principal: p2,
            },
        ) => nonempty_eq(n1, n2) || nonempty_eq(p1, p2),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> DynamicObject {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn subjects_users_groups_and_the_rest() {
        let s = |v: Value| {
            subject_of(&obj(json!({"apiVersion": "management.cattle.io/v3", "kind": "X", "metadata": {"name": "b", "namespace": "n"}})).tap(v))
        };
        assert_eq!(
            s(json!({"userName": "u-1"})),
            Some(Subject::User {
                name: "u-1".into(),
                principal: String::new()
            })
        );
        assert_eq!(
            s(json!({"userName": "", "groupPrincipalName": "okta_group://devs"})),
            Some(Subject::Group {
                name: String::new(),
                principal: "okta_group://devs".into()
            })
        );
        assert_eq!(s(json!({"serviceAccount": "ns:sa"})), None);
        assert_eq!(s(json!({"userName": "u-1", "groupName": "g"})), None);
        assert_eq!(s(json!({})), None);
        let g = Subject::Group {
            name: String::new(),
            principal: "okta_group://devs".into(),
        };
        assert_eq!(g.id(), "group-principal:okta_group://devs");
        assert_eq!(
            g.fields(),
            vec![("groupPrincipalName", "okta_group://devs".to_string())]
        );
        let u = Subject::User {
            name: "u-1".into(),
            principal: "local://u-1".into(),
        };
        assert_eq!(u.id(), "user:u-1");
        assert_eq!(u.fields().len(), 2);
        assert!(
            Subject::User {
                name: "u-x".into(),
                principal: "system://provisioning/fleet-default/x".into()
            }
            .is_system()
        );
    }

    trait Tap {
        fn tap(self, v: Value) -> Self;
    }
    impl Tap for DynamicObject {
        fn tap(mut self, v: Value) -> Self {
            if let Value::Object(m) = v {
                for (k, v) in m {
                    self.data[k] = v;
                }
            }
            self
        }
    }

    #[test]
    fn projects_use_their_backing_namespace_or_their_name() {
        let p = parse_project(&obj(json!({"apiVersion": "management.cattle.io/v3", "kind": "Project",
            "metadata": {"name": "p-abc", "namespace": "c-m-1"}, "status": {"backingNamespace": "c-m-1-p-abc"}}))).unwrap();
        assert_eq!(
            (p.cluster.as_str(), p.prtb_namespace.as_str()),
            ("c-m-1", "c-m-1-p-abc")
        );
        let p = parse_project(&obj(
            json!({"apiVersion": "management.cattle.io/v3", "kind": "Project",
            "metadata": {"name": "p-abc", "namespace": "c-m-1"}}),
        ))
        .unwrap();
        assert_eq!(p.prtb_namespace, "p-abc");
    }

    #[test]
    fn crtbs_are_split_by_our_labels() {
        let ours = parse_crtb(&obj(
            json!({"apiVersion": "management.cattle.io/v3", "kind": "ClusterRoleTemplateBinding",
            "metadata": {"name": "a", "namespace": "c-m-v", "uid": "x", "labels": {
                "vclink.io/managed-by": "vclink", "vclink.io/component": "owner-binding",
                "vclink.io/host-cluster": "c-m-h", "vclink.io/service-uid": "s"}},
            "clusterName": "c-m-v", "roleTemplateName": "cluster-owner", "userName": "u-1"}),
        ))
        .unwrap();
        match ours {
            Crtb::Owned { crtb, .. } => assert_eq!(crtb.key, Some(VcKey::new("c-m-h", "s"))),
            other => panic!("{other:?}"),
        }
        let labelled = |labels: Value| {
            let o = obj(
                json!({"apiVersion": "management.cattle.io/v3", "kind": "ClusterRoleTemplateBinding",
                "metadata": {"name": "vcluster-u-1-co", "namespace": "c-m-v", "labels": labels},
                "clusterName": "c-m-v", "roleTemplateName": "cluster-owner", "userName": "u-1"}),
            );
            operator_mark(&o)
        };
        assert_eq!(
            labelled(json!({"loft.sh/vcluster-service-uid": "s", "loft.sh/parent-prtb": "p"})),
            Some("s".into())
        );
        assert_eq!(labelled(json!({"loft.sh/vcluster-service-uid": "s"})), None);
        assert_eq!(
            labelled(
                json!({"loft.sh/vcluster-service-uid": "s", "loft.sh/parent-prtb": "p", "loft.sh/parent-crtb": "c"})
            ),
            None
        );
        assert_eq!(labelled(json!({"loft.sh/parent-crtb": "c"})), None);
        // Only managed-by is not enough: a user may copy one label.
        let foreign = parse_crtb(&obj(json!({"apiVersion": "management.cattle.io/v3", "kind": "ClusterRoleTemplateBinding",
            "metadata": {"name": "b", "namespace": "c-m-v", "labels": {"vclink.io/managed-by": "vclink"}},
            "clusterName": "c-m-v", "roleTemplateName": "cluster-owner", "userName": "u-2"}))).unwrap();
        assert!(matches!(foreign, Crtb::Foreign(_)));
    }
}
