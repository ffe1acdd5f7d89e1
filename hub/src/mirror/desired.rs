//! What vclink wants on a vCluster's management cluster ([`Mirror`]): the synced Service
//! labels, the status and quota annotations, and the description when it may be ours —
//! computed from the agent's latest report and the state the hub last sent it, and
//! compared with what the watch showed through one 64-bit [`Mirror::digest`]. Pure.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use vclink_proto::keys::{ANNOTATION_LAST_ERROR, ANNOTATION_STATE};
use vclink_proto::v1::{State, VCluster};

use crate::core::labels::{LabelPolicy, valid_value};

/// Annotation: the host cluster's management id (`c-m-…`).
pub const ANNOTATION_HOST_ID: &str = "vclink.io/host-cluster-id";
/// Annotation: the host cluster's name as Rancher shows it.
pub const ANNOTATION_HOST_NAME: &str = "vclink.io/host-cluster-name";
/// Annotation: the vCluster's namespace on its host.
pub const ANNOTATION_VC_NAMESPACE: &str = "vclink.io/vcluster-namespace";
/// Annotation: the vCluster's (Service's) name.
pub const ANNOTATION_VC_NAME: &str = "vclink.io/vcluster-name";
/// Annotation: the vCluster chart version, when the agent knows it.
pub const ANNOTATION_VC_VERSION: &str = "vclink.io/vcluster-version";
/// Annotation: the ResourceQuota's `spec.hard`, as `resource=quantity, …` (sorted).
pub const ANNOTATION_QUOTA: &str = "vclink.io/quota";
/// Annotation: the ResourceQuota's name.
pub const ANNOTATION_QUOTA_NAME: &str = "vclink.io/quota-name";

/// Longest error text copied into `vclink.io/last-error`.
const MAX_ERROR: usize = 1024;
/// Longest quota text (`vclink.io/quota`); the contract bounds the map already.
const MAX_QUOTA: usize = 8 * 1024;

/// The fields vclink owns on one management cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Mirror {
    /// Synced Service labels.
    pub labels: BTreeMap<String, String>,
    /// Status and quota annotations.
    pub annotations: BTreeMap<String, String>,
    /// `spec.description`, when vclink may own it.
    pub description: Option<String>,
}

impl Mirror {
    /// A digest of every owned field and its value: two mirrors with the same digest
    /// need no write (a 64-bit collision is the only false "equal").
    pub fn digest(&self) -> u64 {
        let mut h = std::hash::DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
    }
}

/// What [`desired`] reads for one vCluster.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// Host management id.
    pub host: &'a str,
    /// Host display name (`spec.displayName`), when known.
    pub host_name: Option<&'a str>,
    /// The agent's latest report.
    pub vc: &'a VCluster,
    /// The state and message the hub last sent the agent in Status.
    pub state: State,
    /// Its message.
    pub message: &'a str,
    /// Whether `spec.description` may be written (empty, or vclink's).
    pub describe: bool,
}

/// The mirror vclink wants for one vCluster.
pub fn desired(policy: &LabelPolicy, i: &Inputs<'_>) -> Mirror {
    let labels =
        i.vc.labels
            .iter()
            .filter(|(k, v)| policy.allows(k) && valid_value(v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
    let mut a = BTreeMap::new();
    let mut put = |k: &str, v: &str| {
        if !v.is_empty() {
            a.insert(k.to_string(), v.to_string());
        }
    };
    let host_name = i.host_name.filter(|n| !n.is_empty()).unwrap_or(i.host);
    put(ANNOTATION_HOST_ID, i.host);
    put(ANNOTATION_HOST_NAME, host_name);
    put(ANNOTATION_VC_NAMESPACE, &i.vc.namespace);
    put(ANNOTATION_VC_NAME, &i.vc.name);
    put(ANNOTATION_VC_VERSION, &i.vc.vcluster_version);
    put(ANNOTATION_STATE, state_name(i.state));
    if i.state == State::Error {
        put(ANNOTATION_LAST_ERROR, &truncate(i.message, MAX_ERROR));
    }
    if let Some(q) = &i.vc.quota {
        put(ANNOTATION_QUOTA_NAME, &q.name);
        put(ANNOTATION_QUOTA, &truncate(&quota_text(&q.hard), MAX_QUOTA));
    }
    let description = i.describe.then(|| {
        let version = match i.vc.vcluster_version.as_str() {
            "" => String::new(),
            v => format!(" (v{})", v.trim_start_matches('v')),
        };
        format!(
            "vCluster {}/{} on {host_name}{version}",
            i.vc.namespace, i.vc.name
        )
    });
    Mirror {
        labels,
        annotations: a,
        description,
    }
}

/// `limits.cpu=4, limits.memory=8Gi, pods=20`: sorted (the contract's map is ordered),
/// one line, what Rancher's annotation list shows readably.
pub fn quota_text<'a>(hard: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    hard.into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The state as the agent's Service annotation spells it.
pub fn state_name(s: State) -> &'static str {
    match s {
        State::Pending => "pending",
        State::Registering => "registering",
        State::Connected => "connected",
        State::Disconnected => "disconnected",
        State::Error => "error",
        State::Excluded => "excluded",
        State::Unspecified => "",
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use vclink_proto::v1::Quota;

    fn vc() -> VCluster {
        VCluster {
            uid: "u1".into(),
            namespace: "team-a".into(),
            name: "dev".into(),
            vcluster_version: "0.21.1".into(),
            labels: [
                ("team", "a"),
                ("app", "vcluster"),
                ("org.example/cost", "42"),
                ("vclink.io/agent", "enabled"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            quota: Some(Quota {
                name: "vc-dev".into(),
                hard: [("requests.cpu", "4"), ("limits.memory", "8Gi")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }),
            ..Default::default()
        }
    }

    fn inputs<'a>(vc: &'a VCluster, state: State, message: &'a str) -> Inputs<'a> {
        Inputs {
            host: "c-m-host",
            host_name: Some("prod-eu"),
            vc,
            state,
            message,
            describe: true,
        }
    }

    fn policy(include: &[&str]) -> LabelPolicy {
        let v: Vec<String> = include.iter().map(|s| s.to_string()).collect();
        LabelPolicy::new(&v, &[]).expect("valid")
    }

    #[test]
    fn the_mirror_carries_allowed_labels_status_quota_and_description() {
        let v = vc();
        let m = desired(&policy(&["*"]), &inputs(&v, State::Connected, ""));
        assert_eq!(
            m.labels.keys().collect::<Vec<_>>(),
            ["org.example/cost", "team"],
            "reserved keys never arrive"
        );
        assert_eq!(m.annotations[ANNOTATION_STATE], "connected");
        assert!(!m.annotations.contains_key(ANNOTATION_LAST_ERROR));
        assert_eq!(m.annotations[ANNOTATION_HOST_ID], "c-m-host");
        assert_eq!(m.annotations[ANNOTATION_HOST_NAME], "prod-eu");
        assert_eq!(m.annotations[ANNOTATION_VC_NAMESPACE], "team-a");
        assert_eq!(m.annotations[ANNOTATION_VC_NAME], "dev");
        assert_eq!(m.annotations[ANNOTATION_VC_VERSION], "0.21.1");
        assert_eq!(
            m.annotations[ANNOTATION_QUOTA],
            "limits.memory=8Gi, requests.cpu=4"
        );
        assert_eq!(m.annotations[ANNOTATION_QUOTA_NAME], "vc-dev");
        assert_eq!(
            m.description.as_deref(),
            Some("vCluster team-a/dev on prod-eu (v0.21.1)")
        );
        let off = desired(&LabelPolicy::default(), &inputs(&v, State::Connected, ""));
        assert!(off.labels.is_empty(), "label sync is off by default");
    }

    #[test]
    fn an_error_state_carries_its_message_and_a_recovery_drops_it() {
        let v = vc();
        let p = policy(&[]);
        let err = desired(&p, &inputs(&v, State::Error, "Rancher refused the name"));
        assert_eq!(err.annotations[ANNOTATION_STATE], "error");
        assert_eq!(
            err.annotations[ANNOTATION_LAST_ERROR],
            "Rancher refused the name"
        );
        let ok = desired(
            &p,
            &inputs(&v, State::Connected, "Rancher refused the name"),
        );
        assert!(!ok.annotations.contains_key(ANNOTATION_LAST_ERROR));
        assert_ne!(err.digest(), ok.digest());
        let long = "é".repeat(2000);
        let e = desired(&p, &inputs(&v, State::Error, &long));
        assert!(e.annotations[ANNOTATION_LAST_ERROR].len() <= MAX_ERROR + "…".len());
    }

    #[test]
    fn the_digest_changes_with_every_owned_field_and_only_with_them() {
        let v = vc();
        let p = policy(&["team"]);
        let base = desired(&p, &inputs(&v, State::Connected, ""));
        assert_eq!(
            base.digest(),
            desired(&p, &inputs(&v, State::Connected, "")).digest()
        );
        let mut changed = v.clone();
        changed.labels.insert("team".into(), "b".into());
        assert_ne!(
            base.digest(),
            desired(&p, &inputs(&changed, State::Connected, "")).digest()
        );
        let mut unsynced = v.clone();
        unsynced.labels.insert("other".into(), "x".into());
        assert_eq!(
            base.digest(),
            desired(&p, &inputs(&unsynced, State::Connected, "")).digest(),
            "a label outside the include list changes nothing"
        );
        let mut no_quota = v.clone();
        no_quota.quota = None;
        let m = desired(&p, &inputs(&no_quota, State::Connected, ""));
        assert!(
            !m.annotations.contains_key(ANNOTATION_QUOTA),
            "quota gone, annotation gone"
        );
        assert_ne!(base.digest(), m.digest());
        let undescribed = desired(
            &p,
            &Inputs {
                describe: false,
                ..inputs(&v, State::Connected, "")
            },
        );
        assert_eq!(undescribed.description, None);
        assert_ne!(base.digest(), undescribed.digest());
    }

    #[test]
    fn a_missing_host_name_or_version_falls_back() {
        let mut v = vc();
        v.vcluster_version.clear();
        let m = desired(
            &LabelPolicy::default(),
            &Inputs {
                host_name: None,
                ..inputs(&v, State::Pending, "")
            },
        );
        assert_eq!(m.annotations[ANNOTATION_HOST_NAME], "c-m-host");
        assert!(!m.annotations.contains_key(ANNOTATION_VC_VERSION));
        assert_eq!(
            m.description.as_deref(),
            Some("vCluster team-a/dev on c-m-host")
        );
    }
}
