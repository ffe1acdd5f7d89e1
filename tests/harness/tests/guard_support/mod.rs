//! What the "nothing a user can edit or forge deletes, duplicates or redirects a Rancher
//! cluster" tests (guard_*.rs) share: an environment whose hosts are opted in the way a
//! real install opts them in, a watch over every provisioning cluster of the workspace
//! (so "never terminating, never a second one" is proven from events, not from a few
//! reads), a bounded "this never happens" check whose failure names the window, a
//! Rancher standard user, and what the cattle-cluster-agent inside a vCluster points at.
//!
//! Each guard test file declares `mod e2e_support; mod guard_support;` and this module
//! builds on `e2e_support` (import checks, diagnostics).
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Namespace, Secret, Service};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use vclink_harness::{E2eEnv, E2eOptions, SimVCluster, wait_for};
use vclink_proto::keys;

use crate::e2e_support::{Diag, Imported, WS, current, diagnostics, vclink_annotations};

/// Label of a Rancher cluster that lets its agent in (the hub's default host selector,
/// and the label that makes Fleet deploy the agent).
pub const AGENT_LABEL: (&str, &str) = ("vclink.io/agent", "enabled");
/// Extra label a vCluster cluster vclink created needs to host an agent of its own.
pub const NESTED_LABEL: (&str, &str) = ("vclink.io/nested-import", "enabled");

/// Starts an environment with no agent running, opts every downstream in (as an
/// administrator following the README does: label the Rancher cluster
/// `vclink.io/agent=enabled`) unless `opt_in` is false, then starts the agents if
/// `opts.start_agents` asked for them.
pub async fn start(opts: E2eOptions, opt_in: bool) -> anyhow::Result<E2eEnv> {
    let start_agents = opts.start_agents;
    let mut env = E2eEnv::start(E2eOptions {
        start_agents: false,
        opt_in_hosts: opt_in,
        ..opts
    })
    .await?;
    if opt_in {
        for i in 0..env.downstreams.len() {
            let id = env.downstreams[i].cluster_id.clone();
            label_rancher_cluster(&env, &id, AGENT_LABEL.0, Some(AGENT_LABEL.1)).await?;
        }
    }
    if start_agents {
        for i in 0..env.downstreams.len() {
            env.start_agent(i).await?;
        }
    }
    Ok(env)
}

/// Sets (or with `None` removes) a label on a Rancher cluster: on the management cluster
/// `id` (what the hub reads) and on the provisioning cluster behind it (what an
/// administrator labels in the UI, from which Rancher derives the others).
pub async fn label_rancher_cluster(
    env: &E2eEnv,
    id: &str,
    key: &str,
    value: Option<&str>,
) -> anyhow::Result<()> {
    let c = env.local_client().await?;
    let patch = json!({"metadata": {"labels": {key: value}}});
    let mgmt: Api<DynamicObject> =
        Api::all_with(c.clone(), &vclink_harness::env::management_cluster());
    mgmt.patch(id, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("labelling management cluster {id} {key}={value:?}"))?;
    let prov = prov_api(c);
    for p in prov.list(&Default::default()).await?.items {
        if p.data
            .pointer("/status/clusterName")
            .and_then(|v| v.as_str())
            == Some(id)
            && let Some(name) = p.metadata.name.as_deref()
        {
            prov.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .with_context(|| format!("labelling provisioning cluster {name}"))?;
        }
    }
    Ok(())
}

/// Provisioning clusters of the workspace.
pub fn prov_api(c: kube::Client) -> Api<DynamicObject> {
    Api::namespaced_with(c, WS, &vclink_harness::env::provisioning_cluster())
}

/// One provisioning cluster as the watch saw it over its life.
#[derive(Debug, Clone)]
pub struct Seen {
    /// metadata.name.
    pub name: String,
    /// Labels at the last event.
    pub labels: BTreeMap<String, String>,
    /// When the watch first saw it.
    pub first_seen: Instant,
    /// When it was first seen with a deletionTimestamp (terminating).
    pub terminating_at: Option<Instant>,
    /// When the watch saw it deleted.
    pub deleted_at: Option<Instant>,
}

/// Every provisioning cluster of the workspace over the whole test, from one watch
/// started before anything of interest happens.
pub struct ClusterLog {
    seen: Arc<Mutex<BTreeMap<String, Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ClusterLog {
    /// Starts watching `fleet-default` and returns once the initial list is done.
    pub async fn watch(env: &E2eEnv) -> anyhow::Result<Self> {
        let api = prov_api(env.local_client().await?);
        let seen: Arc<Mutex<BTreeMap<String, Seen>>> = Arc::default();
        let store = seen.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut events = watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(ev) = events.next().await {
                let now = Instant::now();
                let mut s = store.lock().unwrap_or_else(|p| p.into_inner());
                match ev {
                    Ok(watcher::Event::InitDone) => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                        let uid = o.metadata.uid.clone().unwrap_or_default();
                        let e = s.entry(uid).or_insert_with(|| Seen {
                            name: o.metadata.name.clone().unwrap_or_default(),
                            labels: BTreeMap::new(),
                            first_seen: now,
                            terminating_at: None,
                            deleted_at: None,
                        });
                        e.labels = o.metadata.labels.clone().unwrap_or_default();
                        if o.metadata.deletion_timestamp.is_some() && e.terminating_at.is_none() {
                            e.terminating_at = Some(now);
                        }
                    }
                    Ok(watcher::Event::Delete(o)) => {
                        let uid = o.metadata.uid.clone().unwrap_or_default();
                        if let Some(e) = s.get_mut(&uid) {
                            e.terminating_at.get_or_insert(now);
                            e.deleted_at.get_or_insert(now);
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

    /// What was seen of the provisioning cluster with this UID.
    pub fn get(&self, uid: &str) -> Option<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(uid)
            .cloned()
    }

    /// Every provisioning cluster ever seen (by UID).
    pub fn all(&self) -> BTreeMap<String, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Provisioning clusters ever seen whose labels name this host, namespace and name.
    pub fn for_vcluster(&self, host: &str, ns: &str, name: &str) -> Vec<(String, Seen)> {
        self.all()
            .into_iter()
            .filter(|(_, s)| {
                let l = |k: &str| s.labels.get(k).map(String::as_str);
                l(keys::LABEL_HOST_CLUSTER) == Some(host)
                    && l(keys::LABEL_NAMESPACE) == Some(ns)
                    && l(keys::LABEL_NAME) == Some(name)
            })
            .collect()
    }

    /// `Some(problem)` if the provisioning cluster `uid` was marked for deletion or
    /// deleted, said as an administrator would see it.
    pub fn deletion_of(&self, uid: &str, what: &str, since: Instant) -> Option<String> {
        let s = self.get(uid)?;
        let when = s.terminating_at?;
        Some(format!(
            "{what}: its Rancher cluster {WS}/{} got a deletionTimestamp {:.1?} after the change{}",
            s.name,
            when.saturating_duration_since(since),
            if s.deleted_at.is_some() {
                " and was deleted"
            } else {
                ""
            }
        ))
    }
}

impl Drop for ClusterLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Checks `check` every `interval` until `until`: a "this never happens" assertion over
/// a bounded window. `check` answers `Ok(None)` when all is well and `Ok(Some(problem))`
/// when the thing that must not happen happened; API errors are retried (the last one is
/// reported if no check ever succeeded). The failure names the window.
pub async fn never<F, Fut>(
    what: &str,
    until: Instant,
    env: &E2eEnv,
    mut check: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<String>>>,
{
    let started = Instant::now();
    let window = until.saturating_duration_since(started);
    let mut ok_checks = 0u32;
    let mut last_err = None;
    loop {
        match check().await {
            Ok(None) => ok_checks += 1,
            Ok(Some(problem)) => {
                anyhow::bail!(
                    "{problem} (seen {:.1?} into a {window:.1?} window in which {what})\n{}",
                    started.elapsed(),
                    diagnostics(env)
                );
            }
            Err(e) => last_err = Some(format!("{e:#}")),
        }
        if Instant::now() >= until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    if ok_checks == 0 {
        anyhow::bail!(
            "could not check that {what} over {window:.1?}: {}\n{}",
            last_err.unwrap_or_default(),
            diagnostics(env)
        );
    }
    Ok(())
}

/// Waits (up to `timeout`) for `check` to return `Some`, failing at once with the
/// administrator-facing message when `broken` reports something that must not happen
/// (say, the Rancher cluster started terminating) while waiting.
pub async fn wait_unless<T, F, Fut, B>(
    what: &str,
    timeout: Duration,
    env: &E2eEnv,
    mut check: F,
    mut broken: B,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
    B: FnMut() -> Option<String>,
{
    let start = Instant::now();
    let mut last_err = None;
    loop {
        if let Some(problem) = broken() {
            anyhow::bail!("{problem} (while waiting for {what})\n{}", diagnostics(env));
        }
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(format!("{e:#}")),
        }
        if start.elapsed() >= timeout {
            anyhow::bail!(
                "timed out after {timeout:?} waiting for {what}{}\n{}",
                last_err
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default(),
                diagnostics(env)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `vc` is imported: a ready Rancher cluster and its Service says connected.
pub async fn wait_connected(env: &E2eEnv, i: usize, vc: &SimVCluster) -> anyhow::Result<Imported> {
    env.wait_for_ready_cluster(WS, vc, crate::e2e_support::TIMEOUT)
        .await
        .diag(env)?;
    crate::e2e_support::wait_state(env, i, vc, "connected").await?;
    current(env, vc)
        .await?
        .with_context(|| format!("{}/{}: no Rancher cluster", vc.namespace(), vc.name()))
        .diag(env)
}

/// The vCluster's Service state annotation now.
pub async fn state_of(env: &E2eEnv, i: usize, vc: &SimVCluster) -> anyhow::Result<Option<String>> {
    Ok(vclink_annotations(env, i, vc)
        .await?
        .get(keys::ANNOTATION_STATE)
        .cloned())
}

/// Events on a Service (by UID) in `ns` of downstream `i`.
pub async fn events_of(env: &E2eEnv, i: usize, ns: &str, uid: &str) -> anyhow::Result<Vec<Event>> {
    let c = env.downstreams[i].cluster.client().await?;
    let lp = kube::api::ListParams::default().fields(&format!("involvedObject.uid={uid}"));
    Ok(Api::<Event>::namespaced(c, ns).list(&lp).await?.items)
}

/// `(name, count)` of every Event on a Service: a later Event is one not in this set.
pub fn event_marks(evs: &[Event]) -> Vec<(String, i32)> {
    evs.iter()
        .map(|e| {
            (
                e.metadata.name.clone().unwrap_or_default(),
                e.count.unwrap_or(1),
            )
        })
        .collect()
}

/// Events in `now` that are new (or repeated) since `before` was taken.
pub fn new_events<'a>(before: &[(String, i32)], now: &'a [Event]) -> Vec<&'a Event> {
    now.iter()
        .filter(|e| {
            let mark = (
                e.metadata.name.clone().unwrap_or_default(),
                e.count.unwrap_or(1),
            );
            !before.contains(&mark)
        })
        .collect()
}

/// `type reason: message` of Events, for failure messages.
pub fn describe(evs: &[&Event]) -> Vec<String> {
    evs.iter()
        .map(|e| {
            format!(
                "{} {}: {}",
                e.type_.as_deref().unwrap_or("?"),
                e.reason.as_deref().unwrap_or("?"),
                e.message.as_deref().unwrap_or("")
            )
        })
        .collect()
}

/// Merge-patches a Service of downstream `i`.
pub async fn patch_service(
    env: &E2eEnv,
    i: usize,
    ns: &str,
    name: &str,
    patch: serde_json::Value,
) -> anyhow::Result<()> {
    let c = env.downstreams[i].cluster.client().await?;
    Api::<Service>::namespaced(c, ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("patching Service {ns}/{name}"))?;
    Ok(())
}

/// Creates (or updates) a namespace of downstream `i` with these labels.
pub async fn namespace_with_labels(
    env: &E2eEnv,
    i: usize,
    ns: &str,
    labels: &[(&str, &str)],
) -> anyhow::Result<()> {
    let c = env.downstreams[i].cluster.client().await?;
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}});
    Api::<Namespace>::all(c)
        .patch(ns, &PatchParams::apply("guard-test"), &Patch::Apply(&obj))
        .await
        .with_context(|| format!("applying namespace {ns}"))?;
    Ok(())
}

/// The registration token the cattle-cluster-agent inside `vc` runs with (from its
/// `CATTLE_CREDENTIAL_NAME` Secret): the credential that decides which Rancher cluster
/// the vCluster connects to. None while there is no agent.
pub async fn cattle_agent_token(vc: &SimVCluster) -> anyhow::Result<Option<String>> {
    let c = vc.client().await?;
    let Some(dep) = Api::<Deployment>::namespaced(c.clone(), "cattle-system")
        .get_opt("cattle-cluster-agent")
        .await?
    else {
        return Ok(None);
    };
    let cred = dep
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers)
        .unwrap_or_default()
        .into_iter()
        .flat_map(|c| c.env.unwrap_or_default())
        .find(|e| e.name == "CATTLE_CREDENTIAL_NAME")
        .and_then(|e| e.value);
    let Some(cred) = cred else {
        return Ok(None);
    };
    let Some(s) = Api::<Secret>::namespaced(c, "cattle-system")
        .get_opt(&cred)
        .await?
    else {
        return Ok(None);
    };
    let raw = s
        .data
        .as_ref()
        .and_then(|d| d.get("token"))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .or_else(|| s.string_data.as_ref().and_then(|d| d.get("token")).cloned());
    Ok(raw)
}

/// Which of `ids` the cattle-cluster-agent inside `vc` is registered to (by comparing
/// its credential with each cluster's registration token).
pub async fn cattle_agent_cluster(
    env: &E2eEnv,
    vc: &SimVCluster,
    ids: &[&str],
) -> anyhow::Result<Option<String>> {
    let Some(tok) = cattle_agent_token(vc).await? else {
        return Ok(None);
    };
    for id in ids {
        if let Ok((_, t)) = crate::e2e_support::registration_token(env, id).await
            && t == tok
        {
            return Ok(Some((*id).to_owned()));
        }
    }
    Ok(Some("<a cluster it was not expected to know>".into()))
}

/// A Rancher standard user of the local cluster: a User object, and exactly the right a
/// "create clusters" user has on provisioning clusters in `fleet-default` (create and
/// read). Requests as this user go through the simulator's admission webhook like any
/// other, which sees `userInfo.username` = `user` (from the client certificate's CN).
pub async fn standard_user(env: &E2eEnv, user: &str) -> anyhow::Result<kube::Client> {
    let admin = env.local_client().await?;
    let pp = PatchParams::apply("guard-test").force();
    let users: Api<DynamicObject> = Api::all_with(
        admin.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("management.cattle.io", "v3", "User"),
            "users",
        ),
    );
    let u: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "management.cattle.io/v3", "kind": "User",
        "metadata": {"name": user}, "displayName": user,
        "principalIds": [format!("local://{user}")]}))?;
    users
        .patch(user, &pp, &Patch::Apply(&u))
        .await
        .context("creating the standard user's User")?;
    let name = format!("create-clusters-{user}");
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": name, "namespace": WS},
        "rules": [{"apiGroups": ["provisioning.cattle.io"], "resources": ["clusters"],
                   "verbs": ["create", "get", "list", "watch"]}]});
    Api::<Role>::namespaced(admin.clone(), WS)
        .patch(&name, &pp, &Patch::Apply(&role))
        .await
        .context("the standard user's Role")?;
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": WS},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]});
    Api::<RoleBinding>::namespaced(admin, WS)
        .patch(&name, &pp, &Patch::Apply(&binding))
        .await
        .context("the standard user's RoleBinding")?;
    env.local.client_as(user, &[]).await
}

/// Hub metric value (sum over label sets) or 0.
pub fn metric_sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Lines of a process log that contain every one of `needles`.
pub fn lines_with(lines: &[String], needles: &[&str]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .cloned()
        .collect()
}

/// Waits for a condition with the standard deadline, logs attached on timeout.
pub async fn wait<T, F, Fut>(env: &E2eEnv, what: &str, f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    wait_for(what, crate::e2e_support::TIMEOUT, f)
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", diagnostics(env)))
}
