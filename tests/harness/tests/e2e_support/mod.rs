//! What the end-to-end tests of "Import a vCluster end to end" check, written once: the
//! full list of things a user would look at after importing a vCluster (the Rancher
//! objects, the registration Job and its Secret, the manifest inside the vCluster, the
//! Service's annotations and Events, credentials nowhere they must not be), waiting for
//! a vCluster's Rancher cluster to go away, and diagnostics (hub/agent logs, Job runs)
//! attached to every failure so a red test says why.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Secret, Service, ServiceAccount};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::runtime::{WatchStreamExt, watcher};
use vclink_harness::{E2eEnv, RunOutcome, RunRecord, SimVCluster, wait_for};
use vclink_proto::keys;

/// The Fleet workspace the hub uses by default.
pub const WS: &str = "fleet-default";
/// Deadline of every wait on the import flow (several API servers share 2 cores).
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// The hub's and agents' last log lines and the Job runs so far, for failure messages.
pub fn diagnostics(env: &E2eEnv) -> String {
    let mut out = format!("--- hub ---\n{}\n", env.hub.log_buffer().tail(60));
    for d in &env.downstreams {
        if let Some(a) = &d.agent {
            out.push_str(&format!(
                "--- agent of {} ---\n{}\n",
                d.name,
                a.log_buffer().tail(60)
            ));
        }
        for r in d.runner.records() {
            let stderr = std::fs::read_to_string(&r.stderr_path).unwrap_or_default();
            let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
            out.push_str(&format!(
                "--- Job run {}/{} ({}): {:?} exit {:?}; stderr tail: {:?}\n",
                r.namespace, r.job_name, d.name, r.outcome, r.exit_code, tail
            ));
        }
    }
    out
}

/// Adds [`diagnostics`] to an error.
pub trait Diag<T> {
    /// The result, with the environment's logs attached if it is an error.
    fn diag(self, env: &E2eEnv) -> anyhow::Result<T>;
}

impl<T, E: Into<anyhow::Error>> Diag<T> for Result<T, E> {
    fn diag(self, env: &E2eEnv) -> anyhow::Result<T> {
        self.map_err(|e| {
            let e: anyhow::Error = e.into();
            e.context(diagnostics(env))
        })
    }
}

/// Records every registration Secret (label `vclink.io/component=registration`) that
/// appears in a host cluster. The agent deletes the Secret with its Job once the Job is
/// done, so a test that wants to check it must watch from before it is created.
pub struct RegistrationSecrets {
    seen: Arc<Mutex<Vec<Secret>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RegistrationSecrets {
    /// Starts watching `host` and returns once the initial list is done.
    pub async fn watch(host: kube::Client) -> anyhow::Result<Self> {
        let api: Api<Secret> = Api::all(host);
        let selector = format!(
            "{}={}",
            keys::LABEL_AGENT_COMPONENT,
            keys::COMPONENT_REGISTRATION
        );
        // Proves the selector and RBAC work before the test relies on the watch.
        api.list(&ListParams::default().labels(&selector)).await?;
        let seen: Arc<Mutex<Vec<Secret>>> = Arc::default();
        let store = seen.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut events = watcher(api, watcher::Config::default().labels(&selector))
                .default_backoff()
                .boxed();
            while let Some(ev) = events.next().await {
                match ev {
                    Ok(watcher::Event::InitDone) => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => {
                        store.lock().unwrap_or_else(|p| p.into_inner()).push(s);
                    }
                    _ => {}
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(30), ready_rx)
            .await
            .context("the registration Secret watch did not start")??;
        Ok(Self { seen, task })
    }

    /// Every version seen of the registration Secrets of the vCluster with Service `uid`.
    pub fn of(&self, uid: &str) -> Vec<Secret> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|s| {
                s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(keys::LABEL_JOB_SERVICE_UID))
                    .map(String::as_str)
                    == Some(uid)
            })
            .cloned()
            .collect()
    }
}

impl Drop for RegistrationSecrets {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a successful import left behind, for later comparisons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// Provisioning cluster name.
    pub name: String,
    /// Management cluster id (`c-m-…`).
    pub id: String,
    /// Provisioning cluster UID.
    pub prov_uid: String,
    /// Management cluster UID.
    pub mgmt_uid: String,
}

/// The status of condition `ty` of a Rancher object.
pub fn condition(obj: &DynamicObject, ty: &str) -> Option<String> {
    obj.data
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
        .and_then(|c| c["status"].as_str())
        .map(str::to_owned)
}

/// Labels of an object (empty when none).
pub fn labels_of(obj: &DynamicObject) -> BTreeMap<String, String> {
    obj.metadata.labels.clone().unwrap_or_default()
}

/// The vCluster's Service as it is now.
pub async fn service(env: &E2eEnv, i: usize, vc: &SimVCluster) -> anyhow::Result<Service> {
    let c = env.downstreams[i].cluster.client().await?;
    Ok(Api::<Service>::namespaced(c, vc.namespace())
        .get(vc.name())
        .await?)
}

/// The Service's `vclink.io/` annotations.
pub async fn vclink_annotations(
    env: &E2eEnv,
    i: usize,
    vc: &SimVCluster,
) -> anyhow::Result<BTreeMap<String, String>> {
    Ok(service(env, i, vc)
        .await?
        .metadata
        .annotations
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.starts_with("vclink.io/"))
        .collect())
}

/// Events whose involved object is the vCluster's Service.
pub async fn service_events(
    env: &E2eEnv,
    i: usize,
    vc: &SimVCluster,
) -> anyhow::Result<Vec<Event>> {
    let c = env.downstreams[i].cluster.client().await?;
    let lp = ListParams::default().fields(&format!("involvedObject.uid={}", vc.service_uid()));
    Ok(Api::<Event>::namespaced(c, vc.namespace())
        .list(&lp)
        .await?
        .items)
}

/// All provisioning clusters in the workspace that belong to `vc` (by its Service UID).
pub async fn clusters_of(env: &E2eEnv, vc: &SimVCluster) -> anyhow::Result<Vec<DynamicObject>> {
    Ok(env
        .provisioning_clusters(WS)
        .await?
        .into_iter()
        .filter(|c| {
            labels_of(c)
                .get(keys::LABEL_SERVICE_UID)
                .map(String::as_str)
                == Some(vc.service_uid())
        })
        .collect())
}

/// The registration token of management cluster `id` as a user reading it through
/// Kubernetes sees it: the CRT's `status.manifestUrl` and the real token (from
/// `status.token`, or from the Secret `status.tokenSecretName` names in newer Rancher).
pub async fn registration_token(env: &E2eEnv, id: &str) -> anyhow::Result<(String, String)> {
    let c = env.local_client().await?;
    let crt = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("management.cattle.io", "v3", "ClusterRegistrationToken"),
        "clusterregistrationtokens",
    );
    let t = Api::<DynamicObject>::namespaced_with(c.clone(), id, &crt)
        .get("default-token")
        .await?;
    let url = t.data["status"]["manifestUrl"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let legacy = t.data["status"]["token"].as_str().unwrap_or_default();
    if !legacy.is_empty() {
        return Ok((url, legacy.to_owned()));
    }
    let secret_name = t.data["status"]["tokenSecretName"]
        .as_str()
        .context("the registration token has neither status.token nor status.tokenSecretName")?;
    let s = Api::<Secret>::namespaced(c, id).get(secret_name).await?;
    let token = s
        .data
        .as_ref()
        .and_then(|d| d.get("token"))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .filter(|t| !t.is_empty())
        .context("the token Secret has no token")?;
    Ok((url, token))
}

/// Waits until the vCluster's Service says `state` and returns its `vclink.io/` annotations.
pub async fn wait_state(
    env: &E2eEnv,
    i: usize,
    vc: &SimVCluster,
    state: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    let what = format!(
        "Service {}/{} to be annotated {}={state}",
        vc.namespace(),
        vc.name(),
        keys::ANNOTATION_STATE
    );
    wait_for(&what, TIMEOUT, || async {
        let a = vclink_annotations(env, i, vc).await?;
        anyhow::Ok((a.get(keys::ANNOTATION_STATE).map(String::as_str) == Some(state)).then_some(a))
    })
    .await
    .diag(env)
}

/// Waits until `vc` is imported and connected, then checks everything a user would:
/// 1. the provisioning cluster: deterministic name, owner labels (host, Service UID,
///    namespace, name, project), the two annotations Rancher needs;
/// 2. the management cluster: Connected and Ready, named after it;
/// 3. the registration Job: ran the vclink image under a restricted-safe pod spec with
///    requests/limits and no ServiceAccount token, its Secret owned by the Job carried
///    the manifest URL with the real token, and the URL was in no argument or env value;
///    Job and Secret were cleaned up afterwards;
/// 4. the manifest's objects exist in the vCluster's own API server;
/// 5. the Service: `vclink.io/` annotations with the ids and `state=connected`, and
///    Normal Events for the transitions;
/// 6. the registration token appears in no hub/agent log line, Event or annotation.
pub async fn assert_imported(
    env: &E2eEnv,
    i: usize,
    vc: &SimVCluster,
    secrets: &RegistrationSecrets,
    project: Option<&str>,
) -> anyhow::Result<Imported> {
    let host = env.downstreams[i].cluster_id.clone();
    let (name, id) = env
        .wait_for_ready_cluster(WS, vc, TIMEOUT)
        .await
        .diag(env)?;
    let what = format!("vCluster {}/{}", vc.namespace(), vc.name());

    // 1. Provisioning cluster, named after the host's Rancher display name.
    let host_mgmt = env
        .management_cluster(&host)
        .await?
        .context("the host's management cluster")?;
    let display = host_mgmt.data["spec"]["displayName"].as_str();
    assert_eq!(
        display,
        Some(env.downstreams[i].name.as_str()),
        "the simulator gives hosts a display name"
    );
    let expected = vclink_proto::names::cluster_name(
        &vclink_proto::names::host_part(&host, display),
        vc.namespace(),
        vc.name(),
        0,
    );
    assert_eq!(
        name, expected,
        "{what}: the Rancher cluster's name is <host display name>-<namespace>-<name>"
    );
    assert!(
        name.len() <= 63 && vclink_proto::validate::is_dns1123_label(&name),
        "{name}"
    );
    let all = clusters_of(env, vc).await?;
    assert_eq!(all.len(), 1, "{what}: exactly one provisioning cluster");
    let pc = &all[0];
    let l = labels_of(pc);
    let lab = |k: &str| l.get(k).map(String::as_str);
    assert_eq!(lab(keys::LABEL_HOST_CLUSTER), Some(host.as_str()), "{l:?}");
    assert_eq!(
        lab(keys::LABEL_SERVICE_UID),
        Some(vc.service_uid()),
        "{l:?}"
    );
    assert_eq!(lab(keys::LABEL_NAMESPACE), Some(vc.namespace()), "{l:?}");
    assert_eq!(lab(keys::LABEL_NAME), Some(vc.name()), "{l:?}");
    assert_eq!(lab(keys::LABEL_PROJECT), project, "{l:?}");
    let a = pc.metadata.annotations.clone().unwrap_or_default();
    // The hub creates clusters as its own Rancher user (impersonated), so Rancher's
    // webhook records that user as the creator and makes it the cluster's owner.
    assert!(!a.contains_key("field.cattle.io/no-creator-rbac"), "{a:?}");
    assert_eq!(
        a.get("field.cattle.io/creatorId").map(String::as_str),
        Some(vclink_harness::env::HUB_RANCHER_USER),
        "{a:?}"
    );
    assert_eq!(
        a.get("rancher.io/imported-cluster-version-management")
            .map(String::as_str),
        Some("false"),
        "{a:?}"
    );
    assert!(
        pc.data
            .get("spec")
            .and_then(|s| s.get("rkeConfig"))
            .is_none(),
        "imported, not provisioned"
    );

    // 2. Management cluster.
    let m = env
        .management_cluster(&id)
        .await?
        .context("management cluster")?;
    assert_eq!(
        condition(&m, "Connected").as_deref(),
        Some("True"),
        "{what}: Connected"
    );
    assert_eq!(
        condition(&m, "Ready").as_deref(),
        Some("True"),
        "{what}: Ready"
    );
    assert_eq!(m.data["spec"]["displayName"].as_str(), Some(name.as_str()));

    // 3. The registration Job and its Secret.
    let (crt_url, token) = registration_token(env, &id).await?;
    assert!(
        token.len() >= 16,
        "a registration token of {} chars",
        token.len()
    );
    let seen = secrets.of(vc.service_uid());
    let secret = seen
        .iter()
        .find(|s| {
            s.data
                .as_ref()
                .is_some_and(|d| d.contains_key("manifest-url"))
        })
        .with_context(|| format!("{what}: no registration Secret was ever seen"))
        .diag(env)?;
    let job_name = secret.metadata.name.clone().unwrap_or_default();
    let url = secret
        .data
        .as_ref()
        .and_then(|d| d.get("manifest-url"))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default();
    assert!(
        url.contains(&token),
        "the Job's manifest URL carries the real token"
    );
    assert!(
        !url.contains("{token}"),
        "the {{token}} placeholder was resolved"
    );
    assert!(url.contains(&id), "the manifest URL names the cluster");
    if crt_url.contains("{token}") {
        assert_eq!(url, crt_url.replace("{token}", &token));
    } else {
        assert_eq!(url, crt_url);
    }
    let owners = secret.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(
        (owners[0].kind.as_str(), owners[0].name.as_str()),
        ("Job", job_name.as_str())
    );
    let runs = env.downstreams[i].runner.runs_of(vc.namespace(), &job_name);
    let run: &RunRecord = runs
        .iter()
        .find(|r| r.job_uid == owners[0].uid)
        .with_context(|| format!("{what}: the Job owning the Secret never ran: {runs:?}"))
        .diag(env)?;
    assert_eq!(run.outcome, RunOutcome::Succeeded, "{run:?}");
    assert_restricted_pod(&run.pod_spec, vc.name(), &job_name);
    assert_eq!(run.automount_service_account_token, Some(false));
    for v in run.argv.iter().chain(run.env.iter().map(|(_, v)| v)) {
        assert!(
            !v.contains(&token) && !v.contains("/v3/import/"),
            "credential in the Job's argv/env: {v}"
        );
    }
    let host_client = env.downstreams[i].cluster.client().await?;
    let sel = format!("{}={}", keys::LABEL_JOB_SERVICE_UID, vc.service_uid());
    wait_for(
        "the registration Job and Secret to be cleaned up",
        TIMEOUT,
        || async {
            let lp = ListParams::default().labels(&sel);
            let jobs = Api::<Job>::namespaced(host_client.clone(), vc.namespace())
                .list(&lp)
                .await?;
            let secs = Api::<Secret>::namespaced(host_client.clone(), vc.namespace())
                .list(&lp)
                .await?;
            anyhow::Ok(jobs.items.is_empty() && secs.items.is_empty())
        },
    )
    .await
    .diag(env)?;

    // 4. The manifest landed in the vCluster's own API server.
    let vcc = vc.client().await?;
    let dep = Api::<Deployment>::namespaced(vcc.clone(), "cattle-system")
        .get("cattle-cluster-agent")
        .await
        .context("cattle-cluster-agent Deployment inside the vCluster")?;
    let envs = dep
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers)
        .unwrap_or_default()
        .into_iter()
        .flat_map(|c| c.env.unwrap_or_default())
        .collect::<Vec<_>>();
    let server = envs
        .iter()
        .find(|e| e.name == "CATTLE_SERVER")
        .and_then(|e| e.value.clone());
    assert_eq!(server, Some(env.sim.server_url()), "CATTLE_SERVER");
    Api::<ServiceAccount>::namespaced(vcc, "cattle-system")
        .get("cattle")
        .await
        .context("ServiceAccount cattle inside the vCluster")?;

    // 5. What the owner of the vCluster sees on its Service.
    let ann = wait_state(env, i, vc, "connected").await?;
    assert_eq!(
        ann.get(keys::ANNOTATION_RANCHER_CLUSTER),
        Some(&id),
        "{ann:?}"
    );
    assert_eq!(
        ann.get(keys::ANNOTATION_RANCHER_CLUSTER_NAME),
        Some(&name),
        "{ann:?}"
    );
    assert!(!ann.contains_key(keys::ANNOTATION_LAST_ERROR), "{ann:?}");
    assert!(ann.contains_key(keys::ANNOTATION_STATE_SINCE), "{ann:?}");
    let want = ["RegistrationJobCreated", "Registered", "Connected"];
    let events = wait_for(
        &format!("Events {want:?} on the Service of {what}"),
        TIMEOUT,
        || async {
            let evs = service_events(env, i, vc).await?;
            let reasons: Vec<String> = evs.iter().filter_map(|e| e.reason.clone()).collect();
            anyhow::Ok(
                want.iter()
                    .all(|w| reasons.iter().any(|r| r == w))
                    .then_some(evs),
            )
        },
    )
    .await
    .diag(env)?;
    for e in &events {
        assert_eq!(
            e.type_.as_deref(),
            Some("Normal"),
            "unexpected Warning: {e:?}"
        );
        assert_eq!(e.involved_object.kind.as_deref(), Some("Service"));
        assert_eq!(e.involved_object.name.as_deref(), Some(vc.name()));
    }
    let connected = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("Connected"));
    let note = connected
        .and_then(|e| e.message.clone())
        .unwrap_or_default();
    assert!(
        note.contains(&id) || note.contains(&name),
        "the Connected Event names the cluster: {note}"
    );

    // 6. The credential stayed where it belongs.
    let mut places: Vec<(String, String)> = env
        .hub
        .logs()
        .into_iter()
        .map(|l| ("hub log".into(), l))
        .collect();
    if let Some(a) = &env.downstreams[i].agent {
        places.extend(a.logs().into_iter().map(|l| ("agent log".into(), l)));
    }
    places.extend(
        events
            .iter()
            .filter_map(|e| Some(("Event".into(), e.message.clone()?))),
    );
    places.extend(
        ann.iter()
            .map(|(k, v)| (format!("annotation {k}"), v.clone())),
    );
    for (place, text) in &places {
        assert!(
            !text.contains(&token),
            "the registration token appears in a {place}"
        );
        assert!(
            !text.contains("/v3/import/"),
            "a manifest URL appears in a {place}: {text}"
        );
    }

    let prov_uid = pc.metadata.uid.clone().unwrap_or_default();
    let mgmt_uid = m.metadata.uid.clone().unwrap_or_default();
    Ok(Imported {
        name,
        id,
        prov_uid,
        mgmt_uid,
    })
}

/// The pod spec the registration Job ran with satisfies Pod Security "restricted",
/// sets requests and limits, mounts the vCluster's kubeconfig Secret and its own Secret.
pub fn assert_restricted_pod(pod: &serde_json::Value, vc_name: &str, job_name: &str) {
    let c = &pod["containers"][0];
    assert!(
        c["image"].as_str().is_some_and(|i| i.contains("vclink")),
        "{c}"
    );
    let sc = &c["securityContext"];
    let psc = &pod["securityContext"];
    let either = |k: &str| {
        if sc[k].is_null() {
            psc[k].clone()
        } else {
            sc[k].clone()
        }
    };
    assert_eq!(either("runAsNonRoot"), true, "runAsNonRoot: {pod}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{sc}");
    assert!(
        sc["capabilities"]["drop"]
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x == "ALL")),
        "drop ALL: {sc}"
    );
    assert_eq!(either("seccompProfile")["type"], "RuntimeDefault", "{pod}");
    assert_ne!(sc["privileged"], true);
    for k in ["requests", "limits"] {
        for r in ["cpu", "memory"] {
            assert!(c["resources"][k][r].is_string(), "resources.{k}.{r}: {c}");
        }
    }
    let secrets: Vec<&str> = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["secret"]["secretName"].as_str())
        .collect();
    assert!(
        secrets.contains(&format!("vc-{vc_name}").as_str()),
        "{secrets:?}"
    );
    assert!(secrets.contains(&job_name), "{secrets:?}");
    assert!(
        pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|v| v["hostPath"].is_null()),
        "no hostPath: {pod}"
    );
}

/// Waits until the Rancher cluster of a vCluster is gone: no provisioning cluster for
/// it in the workspace and no management cluster `id` (not even one marked for deletion).
pub async fn wait_cluster_gone(
    env: &E2eEnv,
    vc: &SimVCluster,
    id: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    wait_for(
        &format!(
            "the Rancher cluster {id} of {}/{} to be deleted",
            vc.namespace(),
            vc.name()
        ),
        timeout,
        || async {
            let prov = clusters_of(env, vc).await?;
            let mgmt = env.management_cluster(id).await?;
            anyhow::Ok(prov.is_empty() && mgmt.is_none())
        },
    )
    .await
    .diag(env)
}

/// Waits until the hub counts `n` connected agents.
pub async fn wait_agents_connected(env: &E2eEnv, n: usize) -> anyhow::Result<()> {
    let line = format!("vclink_hub_agents_connected {n}");
    wait_for(
        &format!("the hub to count {n} connected agents"),
        TIMEOUT,
        || async { anyhow::Ok(env.hub.metrics().await?.lines().any(|l| l.trim() == line)) },
    )
    .await
    .diag(env)
}

/// The provisioning and management cluster of `vc` as they are now (UIDs, ids).
pub async fn current(env: &E2eEnv, vc: &SimVCluster) -> anyhow::Result<Option<Imported>> {
    let Some(pc) = env.provisioning_cluster_for(WS, vc).await? else {
        return Ok(None);
    };
    let Some(id) = pc.data["status"]["clusterName"]
        .as_str()
        .filter(|s| !s.is_empty())
    else {
        return Ok(None);
    };
    let Some(m) = env.management_cluster(id).await? else {
        return Ok(None);
    };
    Ok(Some(Imported {
        name: pc.metadata.name.clone().unwrap_or_default(),
        id: id.to_owned(),
        prov_uid: pc.metadata.uid.clone().unwrap_or_default(),
        mgmt_uid: m.metadata.uid.clone().unwrap_or_default(),
    }))
}

/// Every provisioning cluster UID that ever existed for one vCluster, from a watch (no
/// polling) started before the cluster is created: proves "never a second cluster, never
/// deleted and re-created" across everything that happens in between.
pub struct ClusterUids {
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ClusterUids {
    /// Starts watching provisioning clusters labelled with `service_uid`.
    pub async fn watch(local: kube::Client, service_uid: &str) -> anyhow::Result<Self> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(local, WS, &vclink_harness::env::provisioning_cluster());
        let selector = format!("{}={service_uid}", keys::LABEL_SERVICE_UID);
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let store = seen.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut events = watcher(api, watcher::Config::default().labels(&selector))
                .default_backoff()
                .boxed();
            while let Some(ev) = events.next().await {
                match ev {
                    Ok(watcher::Event::InitDone) => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                        let uid = o.metadata.uid.unwrap_or_default();
                        let mut s = store.lock().unwrap_or_else(|p| p.into_inner());
                        if !s.contains(&uid) {
                            s.push(uid);
                        }
                    }
                    _ => {}
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(30), ready_rx)
            .await
            .context("the provisioning cluster watch did not start")??;
        Ok(Self { seen, task })
    }

    /// UIDs seen so far, in order of first appearance.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for ClusterUids {
    fn drop(&mut self) {
        self.task.abort();
    }
}
