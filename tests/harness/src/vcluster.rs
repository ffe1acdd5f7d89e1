//! Simulated vClusters (docs/rancher.md: vCluster). A real vCluster is a Helm release in a
//! host namespace: a StatefulSet running its own API server, a Service in front of it,
//! a kubeconfig Secret and optionally a config Secret and a ResourceQuota. Here the API
//! server is a separate envtest [`Cluster`] on loopback, and the host objects are
//! created exactly as the vCluster chart would (v0.19 or v0.20+ flavour), so the agent
//! sees what it would see in production. The simulator learns about the vCluster's API
//! server (the import manifest is applied there), and the shared [`ServiceMap`] learns
//! which loopback URL plays the Service address — except for vClusters with a custom
//! kubeconfig server, whose Service address must stay unreachable.

use std::collections::BTreeMap;

use anyhow::Context;
use base64::Engine;
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota, Secret, Service};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use vclink_envtest::{Cluster, ClusterOptions};
use vclink_rancher_sim::RancherSim;

use crate::servicemap::ServiceMap;

/// Which vCluster chart generation to imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// v0.19: quota `<name>-quota`, no config Secret, no `vcluster.loft.sh/service` label.
    V019,
    /// v0.20+: quota `vc-<name>`, Secret `vc-config-<name>`, label `vcluster.loft.sh/service`.
    V020,
}

/// What to create.
#[derive(Debug, Clone)]
pub struct VClusterSpec {
    /// Host namespace (created if missing).
    pub namespace: String,
    /// Release name = Service name.
    pub name: String,
    /// Chart generation.
    pub flavour: Flavour,
    /// `"<c-m-id>:<p-id>"`: put the namespace in this Rancher project.
    pub project_id: Option<String>,
    /// Kubeconfig server is the real reachable URL (`exportKubeConfig.server`) instead of
    /// `https://localhost:8443`; the Service address is then NOT mapped.
    pub custom_server: bool,
    /// Create the vCluster's ResourceQuota.
    pub resource_quota: bool,
    /// Label the namespace `pod-security.kubernetes.io/enforce=restricted`.
    pub pod_security_restricted: bool,
    /// Extra annotations on the Service.
    pub service_annotations: BTreeMap<String, String>,
    /// Extra labels on the Service.
    pub service_labels: BTreeMap<String, String>,
}

impl VClusterSpec {
    /// A v0.20 vCluster `name` in `namespace`, in no project, no quota, no Pod Security.
    pub fn new(namespace: &str, name: &str) -> Self {
        VClusterSpec {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            flavour: Flavour::V020,
            project_id: None,
            custom_server: false,
            resource_quota: false,
            pod_security_restricted: false,
            service_annotations: BTreeMap::new(),
            service_labels: BTreeMap::new(),
        }
    }
    /// Sets the flavour.
    pub fn flavour(mut self, f: Flavour) -> Self {
        self.flavour = f;
        self
    }
    /// Puts the namespace in project `"<c-m-id>:<p-id>"`.
    pub fn project(mut self, project_id: &str) -> Self {
        self.project_id = Some(project_id.to_owned());
        self
    }
    /// Exports the kubeconfig with the real server URL.
    pub fn custom_server(mut self) -> Self {
        self.custom_server = true;
        self
    }
    /// Adds the ResourceQuota.
    pub fn resource_quota(mut self) -> Self {
        self.resource_quota = true;
        self
    }
    /// Enforces Pod Security "restricted" on the namespace.
    pub fn pod_security_restricted(mut self) -> Self {
        self.pod_security_restricted = true;
        self
    }
    /// Adds a Service annotation.
    pub fn service_annotation(mut self, k: &str, v: &str) -> Self {
        self.service_annotations.insert(k.to_owned(), v.to_owned());
        self
    }
    /// Adds a Service label.
    pub fn service_label(mut self, k: &str, v: &str) -> Self {
        self.service_labels.insert(k.to_owned(), v.to_owned());
        self
    }
}

/// A running simulated vCluster. Dropping it stops its API server (host objects stay).
pub struct SimVCluster {
    api: Cluster,
    host: kube::Client,
    spec: VClusterSpec,
    service_uid: String,
    kubeconfig: String,
    services: ServiceMap,
}

impl SimVCluster {
    /// Starts the vCluster's API server, creates (idempotently) its host objects,
    /// registers it with the simulator and (unless `custom_server`) in `services`.
    pub async fn create(
        host: &Cluster,
        sim: &RancherSim,
        services: &ServiceMap,
        spec: VClusterSpec,
    ) -> anyhow::Result<SimVCluster> {
        let (ns, name) = (spec.namespace.as_str(), spec.name.as_str());
        let sans = vec![
            name.to_owned(),
            format!("{name}.{ns}"),
            format!("{name}.{ns}.svc"),
        ];
        let api = Cluster::start(
            &format!("vc-{ns}-{name}"),
            ClusterOptions {
                extra_sans: sans,
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("starting the API server of vCluster {ns}/{name}"))?;
        let host_client = host.client().await?;
        let server = if spec.custom_server {
            api.url().to_owned()
        } else {
            "https://localhost:8443".to_owned()
        };
        let admin = api.admin_identity();
        let kubeconfig = kubeconfig_yaml(
            name,
            &server,
            api.ca().cert_pem(),
            &admin.cert_pem,
            &admin.key_pem,
        );

        let pp = PatchParams::apply(&format!("vclink-harness-vc-{name}")).force();
        let nsapi: Api<Namespace> = Api::all(host_client.clone());
        nsapi
            .patch(ns, &pp, &Patch::Apply(namespace_object(&spec)))
            .await
            .with_context(|| format!("applying namespace {ns}"))?;
        let secrets: Api<Secret> = Api::namespaced(host_client.clone(), ns);
        let kc_secret = kubeconfig_secret(
            &spec,
            &kubeconfig,
            api.ca().cert_pem(),
            &admin.cert_pem,
            &admin.key_pem,
        );
        secrets
            .patch(&format!("vc-{name}"), &pp, &Patch::Apply(kc_secret))
            .await
            .context("applying the kubeconfig Secret")?;
        if spec.flavour == Flavour::V020 {
            let cfg = config_secret(&spec, &server);
            secrets
                .patch(&format!("vc-config-{name}"), &pp, &Patch::Apply(cfg))
                .await
                .context("applying the config Secret")?;
        }
        if spec.resource_quota {
            let q = quota_object(&spec);
            let qname = q["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            Api::<ResourceQuota>::namespaced(host_client.clone(), ns)
                .patch(&qname, &pp, &Patch::Apply(q))
                .await
                .context("applying the ResourceQuota")?;
        }
        let svcs: Api<Service> = Api::namespaced(host_client.clone(), ns);
        svcs.patch(
            &format!("{name}-headless"),
            &pp,
            &Patch::Apply(headless_service(&spec)),
        )
        .await
        .context("applying the headless Service")?;
        let svc = svcs
            .patch(name, &pp, &Patch::Apply(service_object(&spec)))
            .await
            .context("applying the Service")?;
        let service_uid = svc.metadata.uid.context("Service without uid")?;

        sim.register_backend(&api);
        if !spec.custom_server {
            services.insert(ServiceMap::service_url(ns, name), api.url());
        }
        Ok(SimVCluster {
            api,
            host: host_client,
            spec,
            service_uid,
            kubeconfig,
            services: services.clone(),
        })
    }

    /// Host namespace.
    pub fn namespace(&self) -> &str {
        &self.spec.namespace
    }
    /// Release (Service) name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }
    /// What it was created from.
    pub fn spec(&self) -> &VClusterSpec {
        &self.spec
    }
    /// UID of the vCluster's Service — vclink's identity of the vCluster.
    pub fn service_uid(&self) -> &str {
        &self.service_uid
    }
    /// The in-cluster Service address `https://<name>.<ns>:443`.
    pub fn service_url(&self) -> String {
        ServiceMap::service_url(&self.spec.namespace, &self.spec.name)
    }
    /// The vCluster's own API server.
    pub fn api(&self) -> &Cluster {
        &self.api
    }
    /// Admin client of the vCluster's API server.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        self.api.client().await
    }
    /// The kubeconfig stored in Secret `vc-<name>` (key `config`).
    pub fn kubeconfig_yaml(&self) -> &str {
        &self.kubeconfig
    }
    /// Deletes the Service and the headless Service (the vCluster "goes away" as far as
    /// the agent can tell) and forgets the Service address; the API server keeps running.
    pub async fn delete(&self) -> anyhow::Result<()> {
        let svcs: Api<Service> = Api::namespaced(self.host.clone(), &self.spec.namespace);
        for n in [
            self.spec.name.clone(),
            format!("{}-headless", self.spec.name),
        ] {
            match svcs.delete(&n, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("deleting Service {}/{n}", self.spec.namespace));
                }
            }
        }
        self.services.remove(&self.service_url());
        Ok(())
    }
}

/// The vCluster's kubeconfig, as the chart writes it into `vc-<name>`.
pub fn kubeconfig_yaml(
    name: &str,
    server: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let ctx = format!("my-vcluster-{name}");
    let v = serde_json::json!({
        "apiVersion": "v1", "kind": "Config", "current-context": ctx,
        "clusters": [{"name": ctx, "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": ctx, "user": {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}}],
        "contexts": [{"name": ctx, "context": {"cluster": ctx, "user": ctx}}],
        "preferences": {}
    });
    serde_yaml_ng::to_string(&v).unwrap_or_default()
}

/// The host Namespace: project annotation + label, Pod Security label.
pub fn namespace_object(spec: &VClusterSpec) -> serde_json::Value {
    let mut labels = serde_json::Map::new();
    let mut annotations = serde_json::Map::new();
    if let Some(pid) = &spec.project_id {
        annotations.insert("field.cattle.io/projectId".into(), pid.clone().into());
        let short = pid.split_once(':').map_or(pid.as_str(), |(_, p)| p);
        labels.insert("field.cattle.io/projectId".into(), short.into());
    }
    if spec.pod_security_restricted {
        labels.insert(
            "pod-security.kubernetes.io/enforce".into(),
            "restricted".into(),
        );
    }
    serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": spec.namespace, "labels": labels, "annotations": annotations}})
}

/// The vCluster Service `<name>`.
pub fn service_object(spec: &VClusterSpec) -> serde_json::Value {
    let mut labels: BTreeMap<String, String> = spec.service_labels.clone();
    labels.insert("app".into(), "vcluster".into());
    labels.insert("release".into(), spec.name.clone());
    if spec.flavour == Flavour::V020 {
        labels.insert("vcluster.loft.sh/service".into(), "true".into());
    }
    serde_json::json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": labels, "annotations": spec.service_annotations},
        "spec": {"type": "ClusterIP", "selector": {"app": "vcluster", "release": spec.name},
                 "ports": [{"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"}]}})
}

/// The headless Service `<name>-headless` (the agent must skip it).
pub fn headless_service(spec: &VClusterSpec) -> serde_json::Value {
    serde_json::json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("{}-headless", spec.name), "namespace": spec.namespace,
                     "labels": {"app": "vcluster", "release": spec.name}},
        "spec": {"clusterIP": "None", "selector": {"app": "vcluster", "release": spec.name},
                 "ports": [{"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"}]}})
}

/// Secret `vc-<name>`.
pub fn kubeconfig_secret(
    spec: &VClusterSpec,
    config: &str,
    ca: &str,
    cert: &str,
    key: &str,
) -> serde_json::Value {
    serde_json::json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": format!("vc-{}", spec.name), "namespace": spec.namespace,
                     "labels": {"app": "vcluster", "release": spec.name}},
        "stringData": {"config": config, "certificate-authority": ca, "client-certificate": cert, "client-key": key}})
}

/// Secret `vc-config-<name>` (v0.20+).
pub fn config_secret(spec: &VClusterSpec, server: &str) -> serde_json::Value {
    let mut cfg = serde_json::json!({
        "controlPlane": {"distro": {"k8s": {"enabled": true}}},
        "policies": {"resourceQuota": {"enabled": spec.resource_quota}},
    });
    if spec.custom_server {
        cfg["exportKubeConfig"] = serde_json::json!({"server": server});
    }
    serde_json::json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": format!("vc-config-{}", spec.name), "namespace": spec.namespace,
                     "labels": {"app": "vcluster", "release": spec.name}},
        "stringData": {"config.yaml": serde_yaml_ng::to_string(&cfg).unwrap_or_default()}})
}

/// The vCluster's ResourceQuota: `vc-<name>` (v0.20+) or `<name>-quota` (v0.19).
pub fn quota_object(spec: &VClusterSpec) -> serde_json::Value {
    let name = match spec.flavour {
        Flavour::V020 => format!("vc-{}", spec.name),
        Flavour::V019 => format!("{}-quota", spec.name),
    };
    serde_json::json!({"apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": {"name": name, "namespace": spec.namespace, "labels": {"app": "vcluster", "release": spec.name}},
        "spec": {"hard": {"requests.cpu": "10", "requests.memory": "20Gi", "limits.cpu": "20",
                          "limits.memory": "40Gi", "count/jobs.batch": "20"}}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v020_objects_follow_the_chart() {
        let s = VClusterSpec::new("team-a", "vc1")
            .project("c-m-abcd1234:p-xk2lm")
            .pod_security_restricted()
            .resource_quota();
        let ns = namespace_object(&s);
        assert_eq!(
            ns["metadata"]["annotations"]["field.cattle.io/projectId"],
            "c-m-abcd1234:p-xk2lm"
        );
        assert_eq!(
            ns["metadata"]["labels"]["field.cattle.io/projectId"],
            "p-xk2lm"
        );
        assert_eq!(
            ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
            "restricted"
        );
        let svc = service_object(&s);
        assert_eq!(
            svc["metadata"]["labels"]["vcluster.loft.sh/service"],
            "true"
        );
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8443);
        assert_eq!(quota_object(&s)["metadata"]["name"], "vc-vc1");
        assert_eq!(headless_service(&s)["spec"]["clusterIP"], "None");
    }

    #[test]
    fn v019_objects_differ_where_the_chart_did() {
        let s = VClusterSpec::new("team-a", "vc1").flavour(Flavour::V019);
        assert!(
            service_object(&s)["metadata"]["labels"]
                .get("vcluster.loft.sh/service")
                .is_none()
        );
        assert_eq!(quota_object(&s)["metadata"]["name"], "vc1-quota");
        let ns = namespace_object(&s);
        assert!(
            ns["metadata"]["labels"]
                .as_object()
                .is_some_and(|m| m.is_empty())
        );
    }

    #[test]
    fn kubeconfig_names_the_server_and_embeds_credentials() {
        let y = kubeconfig_yaml("vc1", "https://localhost:8443", "CA", "CERT", "KEY");
        let kc: kube::config::Kubeconfig = serde_yaml_ng::from_str(&y).expect("kubeconfig parses");
        let cluster = kc.clusters[0].cluster.as_ref().expect("cluster");
        assert_eq!(cluster.server.as_deref(), Some("https://localhost:8443"));
        assert_eq!(kc.current_context.as_deref(), Some("my-vcluster-vc1"));
    }
}
