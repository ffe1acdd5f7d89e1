//! The Pod admission checks the Job runner fakes before "starting" a Job's pod, as pure
//! functions of the pod template: Pod Security "restricted" (enforced by the API server
//! from Kubernetes 1.23 on; the test API server is 1.20, so nothing else checks it) and
//! ResourceQuota's "must specify" rule for quota-constrained compute resources.

use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceQuota};

/// Namespace label that turns on Pod Security enforcement.
pub const ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";

/// Checks `spec` against the Pod Security Standard "restricted" (the parts that matter
/// for a Job vclink starts). `Err` holds a message in the API server's wording.
pub fn check_restricted(pod_name: &str, spec: &PodSpec) -> Result<(), String> {
    let mut v: Vec<String> = Vec::new();
    let psc = spec.security_context.as_ref();
    if spec.host_network == Some(true) || spec.host_pid == Some(true) || spec.host_ipc == Some(true)
    {
        v.push("host namespaces (hostNetwork=true, hostPID=true or hostIPC=true)".into());
    }
    let host_path: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|vol| vol.host_path.is_some())
        .map(|vol| vol.name.as_str())
        .collect();
    if !host_path.is_empty() {
        v.push(format!("hostPath volumes (volumes {})", quoted(&host_path)));
    }
    let pod_non_root = psc.and_then(|s| s.run_as_non_root);
    let pod_seccomp = psc
        .and_then(|s| s.seccomp_profile.as_ref())
        .map(|p| p.type_.as_str());
    if psc.and_then(|s| s.run_as_user) == Some(0) {
        v.push("runAsUser=0 (pod must not set runAsUser=0)".into());
    }

    let containers: Vec<&Container> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .collect();
    let mut privileged = Vec::new();
    let mut escalation = Vec::new();
    let mut caps = Vec::new();
    let mut non_root = Vec::new();
    let mut seccomp = Vec::new();
    let mut root_user = Vec::new();
    for c in &containers {
        let sc = c.security_context.as_ref();
        if sc.and_then(|s| s.privileged) == Some(true) {
            privileged.push(c.name.as_str());
        }
        if sc.and_then(|s| s.allow_privilege_escalation) != Some(false) {
            escalation.push(c.name.as_str());
        }
        let drops_all = sc
            .and_then(|s| s.capabilities.as_ref())
            .and_then(|c| c.drop.as_ref())
            .is_some_and(|d| d.iter().any(|x| x == "ALL"));
        let adds_only_bind = sc
            .and_then(|s| s.capabilities.as_ref())
            .and_then(|c| c.add.as_ref())
            .is_none_or(|a| a.iter().all(|x| x == "NET_BIND_SERVICE"));
        if !drops_all || !adds_only_bind {
            caps.push(c.name.as_str());
        }
        if sc.and_then(|s| s.run_as_non_root).or(pod_non_root) != Some(true) {
            non_root.push(c.name.as_str());
        }
        if sc.and_then(|s| s.run_as_user) == Some(0) {
            root_user.push(c.name.as_str());
        }
        let profile = sc
            .and_then(|s| s.seccomp_profile.as_ref())
            .map(|p| p.type_.as_str())
            .or(pod_seccomp);
        if !matches!(profile, Some("RuntimeDefault" | "Localhost")) {
            seccomp.push(c.name.as_str());
        }
    }
    let mut push = |names: &[&str], what: &str, must: &str| {
        if !names.is_empty() {
            v.push(format!(
                "{what} ({} {} must {must})",
                plural(names),
                quoted(names)
            ));
        }
    };
    push(
        &privileged,
        "privileged",
        "not set securityContext.privileged=true",
    );
    push(
        &escalation,
        "allowPrivilegeEscalation != false",
        "set securityContext.allowPrivilegeEscalation=false",
    );
    push(
        &caps,
        "unrestricted capabilities",
        "set securityContext.capabilities.drop=[\"ALL\"]",
    );
    push(
        &non_root,
        "runAsNonRoot != true",
        "set securityContext.runAsNonRoot=true",
    );
    push(&root_user, "runAsUser=0", "not set runAsUser=0");
    push(
        &seccomp,
        "seccompProfile",
        "set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
    );
    if v.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "pods \"{pod_name}\" is forbidden: violates PodSecurity \"restricted:latest\": {}",
            v.join(", ")
        ))
    }
}

/// Quota admission: when a ResourceQuota in the namespace constrains `requests.cpu`,
/// `requests.memory`, `limits.cpu` or `limits.memory` (or the bare `cpu`/`memory`
/// request forms), every container must specify that resource. `Err` holds the API
/// server's message.
pub fn check_quota(pod_name: &str, spec: &PodSpec, quotas: &[ResourceQuota]) -> Result<(), String> {
    for q in quotas {
        let Some(hard) = q.spec.as_ref().and_then(|s| s.hard.as_ref()) else {
            continue;
        };
        let mut missing: Vec<&str> = Vec::new();
        for key in [
            "limits.cpu",
            "limits.memory",
            "requests.cpu",
            "requests.memory",
        ] {
            let constrained = hard.contains_key(key)
                || (key == "requests.cpu" && hard.contains_key("cpu"))
                || (key == "requests.memory" && hard.contains_key("memory"));
            if !constrained {
                continue;
            }
            let (kind, res) = key.split_once('.').unwrap_or((key, key));
            let lacks = spec
                .init_containers
                .iter()
                .flatten()
                .chain(spec.containers.iter())
                .any(|c| {
                    let r = c.resources.as_ref();
                    let set = if kind == "limits" {
                        r.and_then(|r| r.limits.as_ref())
                    } else {
                        r.and_then(|r| r.requests.as_ref())
                    };
                    // Kubernetes defaults a missing request to the limit.
                    let via_limit = kind == "requests"
                        && r.and_then(|r| r.limits.as_ref())
                            .is_some_and(|l| l.contains_key(res));
                    !set.is_some_and(|s| s.contains_key(res)) && !via_limit
                });
            if lacks {
                missing.push(key);
            }
        }
        if !missing.is_empty() {
            let name = q.metadata.name.as_deref().unwrap_or("");
            return Err(format!(
                "pods \"{pod_name}\" is forbidden: failed quota: {name}: must specify {}",
                missing.join(",")
            ));
        }
    }
    Ok(())
}

fn plural(names: &[&str]) -> &'static str {
    if names.len() == 1 {
        "container"
    } else {
        "containers"
    }
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).expect("pod spec")
    }

    fn compliant() -> serde_json::Value {
        serde_json::json!({
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "register", "image": "vclink",
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
                "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}}
            }]
        })
    }

    #[test]
    fn a_compliant_pod_passes_restricted() {
        assert_eq!(check_restricted("p", &spec(compliant())), Ok(()));
    }

    #[test]
    fn each_restricted_rule_is_enforced() {
        let cases: [(&str, serde_json::Value, &str); 6] = [
            (
                "/securityContext/runAsNonRoot",
                serde_json::json!(false),
                "runAsNonRoot != true",
            ),
            (
                "/securityContext/seccompProfile/type",
                serde_json::json!("Unconfined"),
                "seccompProfile",
            ),
            (
                "/containers/0/securityContext/allowPrivilegeEscalation",
                serde_json::json!(true),
                "allowPrivilegeEscalation != false",
            ),
            (
                "/containers/0/securityContext/capabilities/drop",
                serde_json::json!(["NET_RAW"]),
                "unrestricted capabilities",
            ),
            (
                "/containers/0/securityContext/privileged",
                serde_json::json!(true),
                "privileged (container \"register\"",
            ),
            (
                "/volumes",
                serde_json::json!([{"name": "h", "hostPath": {"path": "/"}}]),
                "hostPath volumes (volumes \"h\")",
            ),
        ];
        for (ptr, val, expected) in cases {
            let mut s = compliant();
            if ptr == "/volumes" || ptr.ends_with("/privileged") {
                let (parent, key) = ptr.rsplit_once('/').expect("ptr");
                s.pointer_mut(if parent.is_empty() { "" } else { parent })
                    .and_then(|p| p.as_object_mut())
                    .expect("parent")
                    .insert(key.to_owned(), val);
            } else {
                *s.pointer_mut(ptr).expect(ptr) = val;
            }
            let err = check_restricted("p", &spec(s)).expect_err(ptr);
            assert!(
                err.contains("violates PodSecurity \"restricted:latest\""),
                "{ptr}: {err}"
            );
            assert!(
                err.contains(expected),
                "{ptr}: expected {expected:?} in {err}"
            );
            assert_eq!(
                err.matches(", ").count(),
                0,
                "{ptr}: only one violation expected: {err}"
            );
        }
    }

    #[test]
    fn container_level_settings_satisfy_restricted_too() {
        let s = spec(
            serde_json::json!({"containers": [{"name": "c", "securityContext": {
            "runAsNonRoot": true, "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "Localhost", "localhostProfile": "x"}}}]}),
        );
        assert_eq!(check_restricted("p", &s), Ok(()));
    }

    #[test]
    fn an_empty_security_context_lists_every_violation() {
        let err = check_restricted(
            "job-x",
            &spec(serde_json::json!({"containers": [{"name": "c"}]})),
        )
        .expect_err("violates");
        for part in [
            "allowPrivilegeEscalation",
            "capabilities",
            "runAsNonRoot",
            "seccompProfile",
            "pods \"job-x\"",
        ] {
            assert!(err.contains(part), "missing {part}: {err}");
        }
    }

    fn quota(hard: serde_json::Value) -> ResourceQuota {
        serde_json::from_value(
            serde_json::json!({"metadata": {"name": "vc-vc1"}, "spec": {"hard": hard}}),
        )
        .expect("quota")
    }

    #[test]
    fn quota_requires_the_constrained_resources() {
        let q = [quota(
            serde_json::json!({"limits.cpu": "4", "requests.memory": "4Gi", "count/jobs.batch": "10"}),
        )];
        assert_eq!(check_quota("p", &spec(compliant()), &q), Ok(()));
        let bare = spec(serde_json::json!({"containers": [{"name": "c"}]}));
        let err = check_quota("p", &bare, &q).expect_err("must specify");
        assert!(
            err.contains("failed quota: vc-vc1: must specify limits.cpu,requests.memory"),
            "{err}"
        );
    }

    #[test]
    fn a_limit_counts_as_the_request_and_unconstrained_quotas_pass() {
        let only_limits = spec(serde_json::json!({"containers": [{"name": "c",
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}));
        let q = [quota(
            serde_json::json!({"requests.cpu": "1", "cpu": "1", "requests.memory": "1Gi"}),
        )];
        assert_eq!(check_quota("p", &only_limits, &q), Ok(()));
        let pods_only = [quota(serde_json::json!({"pods": "10"}))];
        assert_eq!(
            check_quota(
                "p",
                &spec(serde_json::json!({"containers": [{"name": "c"}]})),
                &pods_only
            ),
            Ok(())
        );
    }
}
