//! Pure construction of the registration Job and its Secret, and reading a Job's outcome.
//! The Job runs this same image (`vclink-agent register`); the credential (manifest URL)
//! reaches it only through the Secret mounted read-only, never through arguments or
//! environment. The pod satisfies Pod Security "restricted" because vCluster namespaces
//! often enforce it. Scheduling settings (node selector, tolerations, priority class)
//! come from the operator; image pull secrets are copied from the agent's namespace next
//! to the Job (the Job's namespace is the vCluster's, where the agent's own pull secret
//! does not exist), owned by the Job like the credential Secret.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, LocalObjectReference, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceRequirements, SeccompProfile, Secret as KubeSecret, SecretVolumeSource,
    SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use sha2::{Digest, Sha256};
use vclink_proto::Secret;
use vclink_proto::keys;
use vclink_proto::v1::TlsMode;

use crate::watch::ServiceFacts;

/// Job annotation: the Rancher cluster the registration is for.
pub const ANNOTATION_JOB_RANCHER_CLUSTER: &str = "vclink.io/rancher-cluster-id";
/// Where the vCluster kubeconfig Secret is mounted in the Job.
pub const KUBECONFIG_DIR: &str = "/etc/vclink/vcluster";
/// Where the registration Secret is mounted in the Job.
pub const REGISTRATION_DIR: &str = "/etc/vclink/registration";
/// Non-root user of the Job's container (distroless "nonroot").
pub const RUN_AS_USER: i64 = 65532;

/// Keys of the registration Secret (files in [`REGISTRATION_DIR`]).
pub mod secret_keys {
    /// The import manifest URL (credential).
    pub const MANIFEST_URL: &str = "manifest-url";
    /// `strict`, `system-store` or `insecure`.
    pub const TLS_MODE: &str = "tls-mode";
    /// PEM CA bundle for strict mode (may be empty).
    pub const CA: &str = "ca.crt";
}

/// Operator settings for registration Jobs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobSettings {
    /// Container image.
    pub image: String,
    /// CPU request.
    pub cpu_request: String,
    /// CPU limit.
    pub cpu_limit: String,
    /// Memory request.
    pub memory_request: String,
    /// Memory limit.
    pub memory_limit: String,
    /// Pull secrets in the agent's namespace, copied next to each Job
    /// ([`pull_secret_copy`]) and named in its pod under [`pull_secret_name`].
    pub image_pull_secrets: Vec<String>,
    /// nodeSelector of the Job's pod.
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the Job's pod.
    pub tolerations: Vec<Toleration>,
    /// PriorityClass of the Job's pod.
    pub priority_class_name: Option<String>,
}

/// A validated Register request from the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Service UID of the vCluster.
    pub uid: String,
    /// Management cluster id.
    pub rancher_cluster_id: String,
    /// Provisioning cluster name.
    pub cluster_name: String,
    /// Credential: the manifest URL.
    pub manifest_url: Secret,
    /// How to verify Rancher.
    pub tls_mode: TlsMode,
    /// CA bundle (PEM) for strict mode.
    pub ca_certs: String,
}

/// How a registration Job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Still running (or not started).
    Running,
    /// Completed successfully.
    Succeeded,
    /// Failed, with the reason from the Job's Failed condition.
    Failed(String),
}

/// Deterministic Job (and Secret) name for a vCluster: one registration Job at a time.
pub fn job_name(uid: &str) -> String {
    let digest = hex::encode(Sha256::digest(uid.as_bytes()));
    format!("vclink-register-{}", &digest[..12])
}

/// Name of the copy of the `index`-th pull secret next to Job `job`. Never the source's
/// own name: when the vCluster lives in the agent's namespace, a copy under that name
/// would overwrite (and, owned by the Job, garbage-collect) the original.
pub fn pull_secret_name(job: &str, index: usize) -> String {
    format!("{job}-pull-{index}")
}

/// The copy of pull secret `source` (read in the agent's namespace) for the `index`-th
/// imagePullSecret of Job `job` (UID `job_uid`) in `namespace`: same type and data,
/// owned by the Job so it is garbage-collected with it.
pub fn pull_secret_copy(
    source: &KubeSecret,
    uid: &str,
    index: usize,
    namespace: &str,
    job_uid: &str,
) -> KubeSecret {
    let job = job_name(uid);
    KubeSecret {
        metadata: ObjectMeta {
            name: Some(pull_secret_name(&job, index)),
            namespace: Some(namespace.to_string()),
            labels: Some(labels(uid)),
            owner_references: Some(vec![job_owner(&job, job_uid)]),
            ..Default::default()
        },
        type_: source.type_.clone(),
        data: source.data.clone(),
        ..Default::default()
    }
}

fn job_owner(job: &str, job_uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        name: job.to_string(),
        uid: job_uid.to_string(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

/// Text form of a TLS mode, as stored in the Secret and read by `register`.
pub fn tls_mode_str(mode: TlsMode) -> &'static str {
    match mode {
        TlsMode::SystemStore => "system-store",
        TlsMode::Insecure => "insecure",
        // An unspecified mode is treated as the safe default.
        TlsMode::Strict | TlsMode::Unspecified => "strict",
    }
}

fn labels(uid: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            keys::LABEL_AGENT_COMPONENT.to_string(),
            keys::COMPONENT_REGISTRATION.to_string(),
        ),
        (keys::LABEL_JOB_SERVICE_UID.to_string(), uid.to_string()),
    ])
}

/// The registration Job for `reg` next to the vCluster described by `facts`.
pub fn build_job(settings: &JobSettings, reg: &Registration, facts: &ServiceFacts) -> Job {
    let name = job_name(&reg.uid);
    let resources = |cpu: &str, mem: &str| {
        BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.to_string())),
            ("memory".to_string(), Quantity(mem.to_string())),
        ])
    };
    let container = Container {
        name: "register".into(),
        image: Some(settings.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec![
            "/usr/local/bin/vclink-agent".into(),
            "register".into(),
        ]),
        args: Some(vec![
            format!("--kubeconfig={KUBECONFIG_DIR}/config"),
            format!("--registration-dir={REGISTRATION_DIR}"),
            format!(
                "--service-url=https://{}.{}:{}",
                facts.name, facts.namespace, facts.https_port
            ),
            "--termination-log=/dev/termination-log".into(),
        ]),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        resources: Some(ResourceRequirements {
            requests: Some(resources(&settings.cpu_request, &settings.memory_request)),
            limits: Some(resources(&settings.cpu_limit, &settings.memory_limit)),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS_USER),
            run_as_group: Some(RUN_AS_USER),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "vcluster-kubeconfig".into(),
                mount_path: KUBECONFIG_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "registration".into(),
                mount_path: REGISTRATION_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let pod = PodSpec {
        restart_policy: Some("Never".into()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS_USER),
            run_as_group: Some(RUN_AS_USER),
            // Lets the non-root user read the 0400 Secret files (the kubelet grants the group read).
            fs_group: Some(RUN_AS_USER),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..Default::default()
        }),
        containers: vec![container],
        image_pull_secrets: (!settings.image_pull_secrets.is_empty()).then(|| {
            (0..settings.image_pull_secrets.len())
                .map(|i| LocalObjectReference {
                    name: pull_secret_name(&name, i),
                })
                .collect()
        }),
        node_selector: (!settings.node_selector.is_empty()).then(|| settings.node_selector.clone()),
        tolerations: (!settings.tolerations.is_empty()).then(|| settings.tolerations.clone()),
        priority_class_name: settings.priority_class_name.clone(),
        volumes: Some(vec![
            Volume {
                name: "vcluster-kubeconfig".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(format!("vc-{}", facts.name)),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Volume {
                name: "registration".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(name.clone()),
                    default_mode: Some(0o400),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(facts.namespace.clone()),
            labels: Some(labels(&reg.uid)),
            annotations: Some(BTreeMap::from([(
                ANNOTATION_JOB_RANCHER_CLUSTER.to_string(),
                reg.rancher_cluster_id.clone(),
            )])),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(2),
            active_deadline_seconds: Some(600),
            ttl_seconds_after_finished: Some(3600),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&reg.uid)),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// The Secret carrying the credential to the Job, owned by the Job so it is garbage
/// collected with it.
pub fn build_secret(reg: &Registration, namespace: &str, job_uid: &str) -> KubeSecret {
    let name = job_name(&reg.uid);
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    KubeSecret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.to_string()),
            labels: Some(labels(&reg.uid)),
            owner_references: Some(vec![job_owner(&name, job_uid)]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            (
                secret_keys::MANIFEST_URL.to_string(),
                bytes(reg.manifest_url.expose()),
            ),
            (
                secret_keys::TLS_MODE.to_string(),
                bytes(tls_mode_str(reg.tls_mode)),
            ),
            (secret_keys::CA.to_string(), bytes(&reg.ca_certs)),
        ])),
        ..Default::default()
    }
}

/// How a Job stands, from its conditions.
pub fn outcome(job: &Job) -> Outcome {
    let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
    for c in conditions.into_iter().flatten() {
        if c.status != "True" {
            continue;
        }
        match c.type_.as_str() {
            "Complete" => return Outcome::Succeeded,
            "Failed" => {
                let msg = c
                    .message
                    .clone()
                    .filter(|m| !m.trim().is_empty())
                    .or_else(|| c.reason.clone())
                    .unwrap_or_default();
                return Outcome::Failed(msg);
            }
            _ => {}
        }
    }
    Outcome::Running
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};

    const UID: &str = "0b6f7c52-8a8e-4c3f-9d51-3c1e2a4b5c6d";
    const URL: &str = "https://rancher.example.com/v3/import/sekrettoken123_c-m-abcd1234.yaml";

    fn settings() -> JobSettings {
        JobSettings {
            image: "registry.local/vclink-agent:1".into(),
            cpu_request: "50m".into(),
            cpu_limit: "500m".into(),
            memory_request: "64Mi".into(),
            memory_limit: "128Mi".into(),
            ..Default::default()
        }
    }

    fn scheduled() -> JobSettings {
        JobSettings {
            image_pull_secrets: vec!["regcred".into(), "mirror".into()],
            node_selector: BTreeMap::from([("kubernetes.io/os".into(), "linux".into())]),
            tolerations: vec![Toleration {
                key: Some("cattle.io/os".into()),
                operator: Some("Equal".into()),
                value: Some("linux".into()),
                effect: Some("NoSchedule".into()),
                toleration_seconds: None,
            }],
            priority_class_name: Some("vclink-critical".into()),
            ..settings()
        }
    }

    #[test]
    fn job_pod_carries_the_scheduling_settings() {
        let job = build_job(&scheduled(), &reg(), &facts());
        let pod = job.spec.and_then(|s| s.template.spec).expect("pod");
        let name = job_name(UID);
        let pulls: Vec<String> = pod
            .image_pull_secrets
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.name)
            .collect();
        // The copies next to the Job, never the source names.
        assert_eq!(
            pulls,
            vec![format!("{name}-pull-0"), format!("{name}-pull-1")]
        );
        assert!(pulls.iter().all(|n| is_subdomain(n)));
        assert_eq!(
            pod.node_selector.expect("nodeSelector")["kubernetes.io/os"],
            "linux"
        );
        let t = &pod.tolerations.expect("tolerations")[0];
        assert_eq!(
            (t.key.as_deref(), t.effect.as_deref()),
            (Some("cattle.io/os"), Some("NoSchedule"))
        );
        assert_eq!(pod.priority_class_name.as_deref(), Some("vclink-critical"));

        // Nothing configured: none of these fields is set.
        let plain = build_job(&settings(), &reg(), &facts());
        let pod = plain.spec.and_then(|s| s.template.spec).expect("pod");
        assert!(pod.image_pull_secrets.is_none() && pod.node_selector.is_none());
        assert!(pod.tolerations.is_none() && pod.priority_class_name.is_none());
    }

    fn is_subdomain(n: &str) -> bool {
        n.len() <= 253 && n.split('.').all(vclink_proto::validate::is_dns1123_label)
    }

    #[test]
    fn pull_secret_copy_keeps_type_and_data_and_is_owned_by_the_job() {
        let source = KubeSecret {
            metadata: ObjectMeta {
                name: Some("regcred".into()),
                namespace: Some("cattle-vclink".into()),
                owner_references: Some(vec![job_owner("someone-else", "x")]),
                annotations: Some(BTreeMap::from([("a".into(), "b".into())])),
                ..Default::default()
            },
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            data: Some(BTreeMap::from([(
                ".dockerconfigjson".into(),
                ByteString(b"{}".to_vec()),
            )])),
            ..Default::default()
        };
        let copy = pull_secret_copy(&source, UID, 1, "team-a", "job-uid-1");
        assert_eq!(
            copy.metadata.name.as_deref(),
            Some(format!("{}-pull-1", job_name(UID)).as_str())
        );
        assert_eq!(copy.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(
            copy.type_.as_deref(),
            Some("kubernetes.io/dockerconfigjson")
        );
        assert_eq!(copy.data, source.data);
        let owners = copy.metadata.owner_references.expect("owner");
        assert_eq!(owners.len(), 1);
        assert_eq!(
            (
                owners[0].kind.as_str(),
                owners[0].uid.as_str(),
                owners[0].name.as_str()
            ),
            ("Job", "job-uid-1", job_name(UID).as_str())
        );
        assert!(copy.metadata.annotations.is_none());
        assert_eq!(
            copy.metadata.labels.expect("labels")["vclink.io/component"],
            "registration"
        );
    }

    fn reg() -> Registration {
        Registration {
            uid: UID.into(),
            rancher_cluster_id: "c-m-abcd1234".into(),
            cluster_name: "host-team-a-vc1".into(),
            manifest_url: Secret::new(URL),
            tls_mode: TlsMode::Strict,
            ca_certs: "-----BEGIN CERTIFICATE-----\n...".into(),
        }
    }

    fn facts() -> ServiceFacts {
        ServiceFacts {
            namespace: "team-a".into(),
            name: "vc1".into(),
            https_port: 443,
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn job_name_is_deterministic_and_short() {
        let n = job_name(UID);
        assert_eq!(n, job_name(UID));
        assert_eq!(n.len(), "vclink-register-".len() + 12);
        assert!(vclink_proto::validate::is_dns1123_label(&n));
        assert_ne!(n, job_name("0b6f7c52-8a8e-4c3f-9d51-3c1e2a4b5c6e"));
    }

    #[test]
    fn job_runs_register_with_no_credential_in_args_or_env() {
        let job = build_job(&settings(), &reg(), &facts());
        let text = serde_json::to_string(&job).expect("json");
        assert!(
            !text.contains("sekrettoken123"),
            "credential leaked into the Job: {text}"
        );
        let pod = job
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod");
        let c = &pod.containers[0];
        assert_eq!(
            c.command.as_deref(),
            Some(
                &[
                    "/usr/local/bin/vclink-agent".to_string(),
                    "register".to_string()
                ][..]
            )
        );
        let args = c.args.clone().unwrap_or_default();
        assert!(
            args.contains(&"--service-url=https://vc1.team-a:443".to_string()),
            "{args:?}"
        );
        assert!(c.env.is_none());
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let spec = job.spec.as_ref().expect("spec");
        assert_eq!(
            (
                spec.backoff_limit,
                spec.active_deadline_seconds,
                spec.ttl_seconds_after_finished
            ),
            (Some(2), Some(600), Some(3600))
        );
        let vols = pod.volumes.clone().unwrap_or_default();
        let secret_names: Vec<_> = vols
            .iter()
            .filter_map(|v| v.secret.as_ref()?.secret_name.clone())
            .collect();
        assert_eq!(secret_names, vec!["vc-vc1".to_string(), job_name(UID)]);
        assert_eq!(
            vols[1].secret.as_ref().and_then(|s| s.default_mode),
            Some(0o400)
        );
    }

    #[test]
    fn job_satisfies_pod_security_restricted() {
        let job = build_job(&settings(), &reg(), &facts());
        let pod = job.spec.and_then(|s| s.template.spec).expect("pod");
        let psc = pod.security_context.expect("pod security context");
        assert_eq!(psc.run_as_non_root, Some(true));
        let sc = pod.containers[0]
            .security_context
            .clone()
            .expect("container security context");
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.run_as_user, Some(65532));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(
            sc.capabilities.and_then(|c| c.drop),
            Some(vec!["ALL".to_string()])
        );
        assert_eq!(
            sc.seccomp_profile.map(|p| p.type_),
            Some("RuntimeDefault".to_string())
        );
        let r = pod.containers[0].resources.clone().expect("resources");
        assert_eq!(r.requests.expect("requests")["cpu"], Quantity("50m".into()));
        assert_eq!(
            r.limits.expect("limits")["memory"],
            Quantity("128Mi".into())
        );
    }

    #[test]
    fn secret_holds_the_credential_and_is_owned_by_the_job() {
        let s = build_secret(&reg(), "team-a", "job-uid-1");
        let data = s.data.expect("data");
        assert_eq!(data["manifest-url"].0, URL.as_bytes());
        assert_eq!(data["tls-mode"].0, b"strict");
        let owner = &s.metadata.owner_references.expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Job", "job-uid-1")
        );
        assert_eq!(
            s.metadata.labels.expect("labels")["vclink.io/component"],
            "registration"
        );
    }

    #[test]
    fn tls_modes_map_to_text() {
        assert_eq!(tls_mode_str(TlsMode::Unspecified), "strict");
        assert_eq!(tls_mode_str(TlsMode::SystemStore), "system-store");
        assert_eq!(tls_mode_str(TlsMode::Insecure), "insecure");
    }

    #[test]
    fn outcome_reads_conditions() {
        let with = |t: &str, msg: &str| Job {
            status: Some(JobStatus {
                conditions: Some(vec![JobCondition {
                    type_: t.into(),
                    status: "True".into(),
                    message: Some(msg.into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(outcome(&Job::default()), Outcome::Running);
        assert_eq!(outcome(&with("Complete", "")), Outcome::Succeeded);
        assert_eq!(
            outcome(&with("Failed", "HTTP 400")),
            Outcome::Failed("HTTP 400".into())
        );
    }
}
