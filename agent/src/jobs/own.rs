//! Which registration Job speaks for a vCluster. Labels on a Job are user input: anyone
//! who may create Jobs in some namespace can label one `vclink.io/component=registration`
//! and `vclink.io/service-uid=<victim>`. Progress is accepted only from the Job the agent
//! created for that vCluster: in the namespace of the vCluster's Service, under the
//! deterministic name [`super::spec::job_name`], with the UID the API server returned
//! when the agent created it — remembered in memory and recorded on the Service
//! (`vclink.io/registration-job-uid`) so a restarted agent still knows it. Any other Job
//! is ignored and never deleted. Pure.

use vclink_proto::keys;

use super::spec::job_name;
use crate::watch::ServiceFacts;

/// A Job the agent created (remembered until the Job is gone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnJob {
    /// Namespace it was created in (the vCluster Service's).
    pub namespace: String,
    /// UID returned by the create.
    pub job_uid: String,
    /// The Rancher cluster it registers into.
    pub rancher_cluster_id: String,
}

/// Whether the Job `namespace/name` with UID `job_uid`, labelled for vCluster
/// `service_uid`, is the agent's own registration Job for it.
pub(crate) fn is_own(
    namespace: &str,
    name: &str,
    job_uid: &str,
    service_uid: &str,
    remembered: Option<&OwnJob>,
    facts: Option<&ServiceFacts>,
) -> bool {
    if job_uid.is_empty() || name != job_name(service_uid) {
        return false;
    }
    let by_memory = remembered.is_some_and(|o| o.namespace == namespace && o.job_uid == job_uid);
    let by_record = facts.is_some_and(|f| {
        f.namespace == namespace
            && f.annotations
                .get(keys::ANNOTATION_REGISTRATION_JOB_UID)
                .is_some_and(|u| u == job_uid)
    });
    by_memory || by_record
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const SVC: &str = "0b6f7c52-8a8e-4c3f-9d51-3c1e2a4b5c6d";

    fn facts(ns: &str, recorded: Option<&str>) -> ServiceFacts {
        ServiceFacts {
            namespace: ns.into(),
            name: "vc1".into(),
            https_port: 443,
            annotations: recorded
                .map(|u| {
                    BTreeMap::from([(
                        keys::ANNOTATION_REGISTRATION_JOB_UID.to_string(),
                        u.to_string(),
                    )])
                })
                .unwrap_or_default(),
        }
    }

    fn own(ns: &str, uid: &str) -> OwnJob {
        OwnJob {
            namespace: ns.into(),
            job_uid: uid.into(),
            rancher_cluster_id: "c-m-abcd1234".into(),
        }
    }

    #[test]
    fn only_the_job_the_agent_created_counts() {
        let name = job_name(SVC);
        let f = facts("team-a", None);
        // The agent remembers creating `team-a/<name>` with UID j1.
        let remembered = |ns: &str, name: &str, uid: &str| {
            is_own(ns, name, uid, SVC, Some(&own("team-a", "j1")), Some(&f))
        };
        assert!(remembered("team-a", &name, "j1"));
        // Another namespace, same labels and name: an impostor.
        assert!(!remembered("evil", &name, "j1"));
        // Same namespace, another UID (a Job someone else made under our name).
        assert!(!remembered("team-a", &name, "j2"));
        // Another name.
        assert!(!remembered("team-a", "other", "j1"));
        // Nothing known: nothing trusted.
        assert!(!is_own("team-a", &name, "j1", SVC, None, None));
    }

    #[test]
    fn a_restarted_agent_trusts_the_uid_recorded_on_the_service() {
        let name = job_name(SVC);
        // Nothing in memory; the Service in team-a records `recorded` as the Job's UID.
        let recorded = |ns: &str, uid: &str, recorded: &str| {
            is_own(
                ns,
                &name,
                uid,
                SVC,
                None,
                Some(&facts("team-a", Some(recorded))),
            )
        };
        assert!(recorded("team-a", "j1", "j1"));
        assert!(!recorded("evil", "j1", "j1"));
        assert!(!recorded("team-a", "j2", "j1"));
        assert!(!recorded("team-a", "", ""));
    }
}
