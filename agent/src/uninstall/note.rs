//! The uninstaller's two kinds of writes besides deletions: Events on the vCluster's
//! Service (what happens, before it happens, and what went wrong, in words a user can
//! act on) and the agent's proof of a pending uninstall — a ConfigMap in the agent's
//! own namespace, which tenants cannot write, naming the vCluster and its release.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use tracing::warn;

use crate::record::FIELD_MANAGER;

/// Label (value [`COMPONENT`]) of the pending-uninstall ConfigMaps.
pub const LABEL_COMPONENT: &str = "vclink.io/component";
/// Value of [`LABEL_COMPONENT`] on them.
pub const COMPONENT: &str = "uninstall";

/// A vCluster being uninstalled: what the agent's proof records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The Service's UID.
    pub uid: String,
    /// The vCluster's namespace.
    pub namespace: String,
    /// The Service's name.
    pub service: String,
    /// The Helm release.
    pub release: String,
    /// The Rancher cluster that was deleted (for the messages).
    pub cluster: String,
}

impl Pending {
    /// Name of its ConfigMap.
    pub fn marker_name(&self) -> String {
        marker_name(&self.uid)
    }

    fn to_configmap(&self, home: &str) -> ConfigMap {
        let data = [
            ("uid", &self.uid),
            ("namespace", &self.namespace),
            ("service", &self.service),
            ("release", &self.release),
            ("rancherCluster", &self.cluster),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.marker_name()),
                namespace: Some(home.to_string()),
                labels: Some(BTreeMap::from([(
                    LABEL_COMPONENT.to_string(),
                    COMPONENT.to_string(),
                )])),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        }
    }

    fn from_configmap(cm: &ConfigMap) -> Option<Self> {
        let d = cm.data.as_ref()?;
        let get = |k: &str| d.get(k).cloned().filter(|v| !v.is_empty());
        let p = Pending {
            uid: get("uid")?,
            namespace: get("namespace")?,
            service: get("service")?,
            release: get("release")?,
            cluster: get("rancherCluster").unwrap_or_default(),
        };
        // Only a ConfigMap under the name the agent gives it counts.
        (cm.metadata.name.as_deref() == Some(p.marker_name().as_str())).then_some(p)
    }
}

/// Name of the pending-uninstall ConfigMap of Service UID `uid`.
pub fn marker_name(uid: &str) -> String {
    format!("vclink-uninstall-{uid}")
}

/// Writes and reads the proofs in the agent's namespace `home`.
pub(crate) struct Markers {
    api: Api<ConfigMap>,
    home: String,
}

impl Markers {
    pub fn new(client: Client, home: String) -> Self {
        Self {
            api: Api::namespaced(client, &home),
            home,
        }
    }

    /// Records `p` (already recorded is fine).
    pub async fn put(&self, p: &Pending) -> Result<(), kube::Error> {
        match self
            .api
            .create(&PostParams::default(), &p.to_configmap(&self.home))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Removes the proof of `p` (gone already is fine).
    pub async fn done(&self, p: &Pending) {
        match self
            .api
            .delete(&p.marker_name(), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => warn!(configmap = %p.marker_name(), namespace = %self.home, error = %e,
                "cannot remove the agent's record of a finished uninstall; delete the ConfigMap by hand"),
        }
    }

    /// The uninstalls a previous run of the agent left unfinished.
    pub async fn pending(&self) -> Result<Vec<Pending>, kube::Error> {
        let lp = ListParams::default().labels(&format!("{LABEL_COMPONENT}={COMPONENT}"));
        let list = self.api.list(&lp).await?;
        Ok(list
            .items
            .iter()
            .filter_map(Pending::from_configmap)
            .collect())
    }
}

/// Publishes one Event about Service `namespace`/`service` (UID `uid`).
pub(crate) async fn event(
    client: &Client,
    instance: &str,
    p: &Pending,
    warning: bool,
    reason: &str,
    note: &str,
) {
    let event = Event {
        metadata: ObjectMeta {
            name: Some(crate::record::event_name(&p.service)),
            namespace: Some(p.namespace.clone()),
            ..Default::default()
        },
        event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
        type_: Some(if warning { "Warning" } else { "Normal" }.into()),
        reason: Some(reason.into()),
        note: Some(bounded(note)),
        action: Some("UninstallVCluster".into()),
        reporting_controller: Some(FIELD_MANAGER.into()),
        reporting_instance: Some(instance.to_string()),
        regarding: Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            name: Some(p.service.clone()),
            namespace: Some(p.namespace.clone()),
            uid: Some(p.uid.clone()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &p.namespace);
    if let Err(e) = api.create(&PostParams::default(), &event).await {
        warn!(namespace = %p.namespace, name = %p.service, reason, error = %e, "publishing an Event failed");
    }
}

/// `note` cut to the 1 KiB the Events API accepts, at a character boundary.
fn bounded(note: &str) -> String {
    const MAX: usize = 1000;
    if note.len() <= MAX {
        return note.to_string();
    }
    let mut end = MAX - 3;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &note[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_bounded_and_markers_round_trip() {
        assert!(bounded(&"é".repeat(2000)).len() <= 1000);
        let p = Pending {
            uid: "0b0e7c4e-2f7a-4d7e-9a55-6f4b7b1c2d3e".into(),
            namespace: "team-a".into(),
            service: "vc1".into(),
            release: "vc1".into(),
            cluster: "c-m-abcd1234".into(),
        };
        let cm = p.to_configmap("vclink-system");
        assert!(p.marker_name().len() <= 63);
        assert_eq!(Pending::from_configmap(&cm), Some(p.clone()));
        let mut renamed = cm.clone();
        renamed.metadata.name = Some("vclink-uninstall-other".into());
        assert_eq!(Pending::from_configmap(&renamed), None);
    }
}
