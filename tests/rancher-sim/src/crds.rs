//! CustomResourceDefinitions for every Rancher and Fleet kind the Rancher simulator
//! serves (docs/rancher.md: Where the objects live). Schemas are open (`x-kubernetes-preserve-unknown-fields`)
//! as the simulator only needs the API server to store the objects; fields sit where
//! upstream puts them (top-level for RBAC kinds, Tokens and Settings, `spec`/`status`
//! elsewhere). Only the provisioning cluster, Fleet's cluster and — in Rancher 2.15 —
//! the management cluster have a status subresource.

use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use crate::error::{Result, SimError};
use crate::kinds::{self, Kind};
use crate::options::RancherVersion;

/// The CRD of `kind`.
pub fn crd_for(kind: &Kind, version: RancherVersion) -> Value {
    let status_subresource = match (kind.group, kind.kind) {
        ("provisioning.cattle.io", "Cluster") | ("fleet.cattle.io", "Cluster") => true,
        ("management.cattle.io", "Cluster") => version.mgmt_status_subresource(),
        _ => false,
    };
    let mut ver = json!({
        "name": kind.version, "served": true, "storage": true,
        "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
    });
    if status_subresource {
        ver["subresources"] = json!({"status": {}});
    }
    let singular = kind.kind.to_ascii_lowercase();
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{}.{}", kind.plural, kind.group)},
        "spec": {
            "group": kind.group,
            "scope": if kind.namespaced { "Namespaced" } else { "Cluster" },
            "names": {"kind": kind.kind, "plural": kind.plural, "singular": singular, "listKind": format!("{}List", kind.kind)},
            "versions": [ver],
        },
    })
}

/// Applies every CRD and waits until each is Established.
pub async fn install(client: &Client, version: RancherVersion) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let pp = PatchParams::apply("rancher-simulator").force();
    for kind in kinds::ALL {
        let crd = crd_for(kind, version);
        let name = format!("{}.{}", kind.plural, kind.group);
        api.patch(&name, &pp, &Patch::Apply(&crd)).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for kind in kinds::ALL {
        let name = format!("{}.{}", kind.plural, kind.group);
        loop {
            let crd = api.get(&name).await?;
            let established = crd
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            if established {
                break;
            }
            if Instant::now() > deadline {
                return Err(SimError::Malformed(format!(
                    "CRD {name} not Established within 60s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_subresource_follows_version() {
        let m13 = crd_for(&kinds::MGMT_CLUSTER, RancherVersion::V2_13);
        let m15 = crd_for(&kinds::MGMT_CLUSTER, RancherVersion::V2_15);
        assert!(m13["spec"]["versions"][0].get("subresources").is_none());
        assert!(m15["spec"]["versions"][0]["subresources"]["status"].is_object());
        let p = crd_for(&kinds::PROV_CLUSTER, RancherVersion::V2_13);
        assert!(p["spec"]["versions"][0]["subresources"]["status"].is_object());
        assert_eq!(
            crd_for(&kinds::TOKEN, RancherVersion::V2_15)["spec"]["scope"],
            "Cluster"
        );
        // the typed CRD accepts what we generate
        let _: CustomResourceDefinition = serde_json::from_value(p).unwrap();
    }
}
