//! The import manifest served at `/v3/import/<token>_<c-m-id>.yaml` (docs/rancher.md: Registration token and import manifest)
//! and the CA checksum rule. Pure rendering: the HTTP side lives in `server::import`.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// What the manifest is rendered from.
pub struct ManifestInput<'a> {
    /// Rancher's server-url (`https://host:port`).
    pub server_url: &'a str,
    /// The registration token taken from the URL.
    pub token: &'a str,
    /// The `cacerts` setting (may be empty when Rancher uses a public CA).
    pub cacerts: &'a str,
    /// `agent-tls-mode` is `strict`.
    pub strict: bool,
    /// The Rancher version string put on the agent image.
    pub agent_image: &'a str,
}

/// SHA-256 (hex) of the CA text with a newline appended only if it lacks one; empty
/// for an empty `cacerts`.
pub fn ca_checksum(cacerts: &str) -> String {
    if cacerts.is_empty() {
        return String::new();
    }
    let mut text = cacerts.to_string();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// `cattle-credentials-` + a short hash of what the Secret holds.
pub fn credential_secret_name(server_url: &str, token: &str) -> String {
    let digest = Sha256::digest(format!("{server_url}{token}").as_bytes());
    format!("cattle-credentials-{}", &hex::encode(digest)[..7])
}

/// The manifest as the objects it holds, in apply order.
pub fn manifest_objects(input: &ManifestInput<'_>) -> Vec<Value> {
    let cred = credential_secret_name(input.server_url, input.token);
    let labels = json!({"app": "cattle-cluster-agent"});
    vec![
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "proxy-clusterrole-kubeapiserver"},
            "rules": [{"apiGroups": [""], "resources": ["nodes/metrics", "nodes/proxy", "nodes/stats", "nodes/log", "nodes/spec"],
                       "verbs": ["get", "list", "watch", "create"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "proxy-role-binding-kubernetes-master"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "proxy-clusterrole-kubeapiserver"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "kube-apiserver"}]}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "cattle-system"}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "cattle", "namespace": "cattle-system"}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "cattle-admin", "labels": {"cattle.io/creator": "norman"}},
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, {"nonResourceURLs": ["*"], "verbs": ["*"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "cattle-admin-binding", "labels": {"cattle.io/creator": "norman"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cattle-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": "cattle", "namespace": "cattle-system"}]}),
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": cred, "namespace": "cattle-system"},
            "stringData": {"url": input.server_url, "token": input.token, "namespace": ""}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "cattle-cluster-agent", "namespace": "cattle-system", "annotations": {"management.cattle.io/scale-available": "2"}},
            "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {
                "serviceAccountName": "cattle",
                "containers": [{"name": "cluster-register", "imagePullPolicy": "IfNotPresent", "image": input.agent_image,
                    "env": [
                        {"name": "CATTLE_FEATURES", "value": ""},
                        {"name": "CATTLE_IS_RKE", "value": "false"},
                        {"name": "CATTLE_SERVER", "value": input.server_url},
                        {"name": "CATTLE_CA_CHECKSUM", "value": ca_checksum(input.cacerts)},
                        {"name": "CATTLE_CLUSTER", "value": "true"},
                        {"name": "CATTLE_K8S_MANAGED", "value": "true"},
                        {"name": "CATTLE_CLUSTER_REGISTRY", "value": ""},
                        {"name": "CATTLE_CREDENTIAL_NAME", "value": cred},
                        {"name": "STRICT_VERIFY", "value": if input.strict { "true" } else { "false" }},
                    ],
                    "volumeMounts": [{"name": "cattle-credentials", "mountPath": "/cattle-credentials", "readOnly": true}]}],
                "volumes": [{"name": "cattle-credentials", "secret": {"secretName": cred, "defaultMode": 320}}]}}}}),
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "cattle-cluster-agent", "namespace": "cattle-system"},
            "spec": {"selector": labels, "ports": [
                {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 80},
                {"name": "https-internal", "port": 443, "protocol": "TCP", "targetPort": 444}]}}),
    ]
}

/// The manifest as multi-document YAML separated by `---`.
pub fn render(input: &ManifestInput<'_>) -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    for obj in manifest_objects(input) {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&obj)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_appends_newline_once() {
        assert_eq!(ca_checksum(""), "");
        assert_eq!(ca_checksum("abc"), ca_checksum("abc\n"));
        assert_eq!(ca_checksum("abc\n"), hex::encode(Sha256::digest(b"abc\n")));
    }

    #[test]
    fn manifest_holds_every_object() {
        let input = ManifestInput {
            server_url: "https://r",
            token: "tok",
            cacerts: "CA",
            strict: true,
            agent_image: "x",
        };
        let yaml = render(&input).unwrap();
        let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&yaml)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        let kinds: Vec<String> = docs
            .iter()
            .map(|d| {
                format!(
                    "{}/{}",
                    d["kind"].as_str().unwrap(),
                    d["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect();
        for want in [
            "ClusterRole/proxy-clusterrole-kubeapiserver",
            "Namespace/cattle-system",
            "ServiceAccount/cattle",
            "ClusterRole/cattle-admin",
            "ClusterRoleBinding/cattle-admin-binding",
            "Deployment/cattle-cluster-agent",
            "Service/cattle-cluster-agent",
        ] {
            assert!(
                kinds.iter().any(|k| k == want),
                "{want} missing from {kinds:?}"
            );
        }
        let secret = docs.iter().find(|d| d["kind"] == "Secret").unwrap();
        assert_eq!(secret["stringData"]["token"], "tok");
        let env = &docs.iter().find(|d| d["kind"] == "Deployment").unwrap()["spec"]["template"]["spec"]
            ["containers"][0]["env"];
        let get = |n: &str| {
            env.as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == n)
                .unwrap()["value"]
                .clone()
        };
        assert_eq!(get("CATTLE_CREDENTIAL_NAME"), secret["metadata"]["name"]);
        assert_eq!(get("STRICT_VERIFY"), "true");
        assert_eq!(get("CATTLE_CA_CHECKSUM"), ca_checksum("CA"));
    }
}
