//! The six watches of the hub — one per kind, narrowed by label or field selectors —
//! feeding the index. Each event is reduced to a small struct at once, applied to the
//! index, and the affected vCluster keys go to the reconcile queue immediately: the path
//! from "Rancher wrote the token" to "Register sent" has no timer in it. A (re)list is
//! applied as a whole on `InitDone`, so objects deleted while the watch was down are
//! noticed; the first `InitDone` of every watch makes the hub ready.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use kube::api::{Api, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use vclink_proto::Secret;
use vclink_proto::keys::{LABEL_MANAGED_BY, MANAGED_BY_VALUE};

use super::{
    LOFT_SERVICE_UID, crt_resource, loft_key, mgmt_resource, parse_crt, parse_mgmt, parse_prov,
    parse_setting, prov_resource, setting_resource,
};
use crate::index::{TOKEN_SECRET_NAME, VcKey};
use crate::world::Hub;

/// One watch event, reduced.
enum Op<T> {
    Apply(T),
    Delete(T),
    Replace(Vec<T>),
}

/// Counts the watches that still owe their first complete list.
struct ReadyGate {
    remaining: AtomicUsize,
    hub: Arc<Hub>,
}

impl ReadyGate {
    fn one_done(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            tracing::info!("initial lists loaded; accepting agents");
            self.hub.set_ready();
        }
    }
}

/// Starts every watch; they run until `shutdown`.
pub fn spawn_all(
    client: Client,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let ws = hub.cfg.workspace.clone();
    let gate = Arc::new(ReadyGate {
        remaining: AtomicUsize::new(6),
        hub: hub.clone(),
    });
    let managed = format!("{LABEL_MANAGED_BY}={MANAGED_BY_VALUE}");
    let mut tasks = Vec::new();

    // Provisioning clusters: ours, in the workspace.
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ws, &prov_resource());
    let h = hub.clone();
    tasks.push(spawn(
        api,
        watcher::Config::default().labels(&managed),
        |o| Some(parse_prov(o)),
        move |op| {
            let mut w = h.world();
            let keys = match op {
                Op::Apply(p) => w.index.apply_prov(p),
                Op::Delete(p) => w.index.delete_prov(&p.name),
                Op::Replace(all) => w.index.replace_prov(all),
            };
            drop(w);
            h.queue.add_all(keys);
        },
        gate.clone(),
        shutdown.clone(),
        "provisioning clusters",
    ));

    // Provisioning clusters the vcluster-rancher-operator created and nobody adopted
    // yet (its labels, not ours): adopted instead of duplicated when their vCluster is
    // reported. A cluster being deleted is no candidate.
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ws, &prov_resource());
    let h = hub.clone();
    tasks.push(spawn(
        api,
        watcher::Config::default().labels(&format!("{LOFT_SERVICE_UID},!{LABEL_MANAGED_BY}")),
        |o| {
            let key = loft_key(o).filter(|_| o.metadata.deletion_timestamp.is_none());
            Some((o.name_any(), key))
        },
        move |op| {
            let mut w = h.world();
            match op {
                Op::Apply((name, key)) => w.index.apply_legacy(&name, key),
                Op::Delete((name, _)) => w.index.apply_legacy(&name, None),
                Op::Replace(all) => w.index.replace_legacy(all),
            }
        },
        gate.clone(),
        shutdown.clone(),
        "clusters of the vcluster-rancher-operator",
    ));

    // Management clusters: labels were copied from our provisioning clusters.
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &mgmt_resource());
    let h = hub.clone();
    tasks.push(spawn(
        api,
        watcher::Config::default().labels(&managed),
        |o| Some(parse_mgmt(o)),
        move |op| {
            let mut w = h.world();
            let keys = match op {
                Op::Apply(m) => w.index.apply_mgmt(m),
                Op::Delete(m) => w.index.delete_mgmt(&m.id),
                Op::Replace(all) => w.index.replace_mgmt(all),
            };
            drop(w);
            h.queue.add_all(keys);
        },
        gate.clone(),
        shutdown.clone(),
        "management clusters",
    ));

    // Registration tokens: one per cluster, always named default-token.
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &crt_resource());
    let h = hub.clone();
    tasks.push(spawn(
        api,
        watcher::Config::default().fields("metadata.name=default-token"),
        parse_crt,
        move |op| {
            let now = Instant::now();
            let mut w = h.world();
            let keys = match op {
                Op::Apply(c) => w.index.apply_crt(c, now),
                Op::Delete(c) => w.index.delete_crt(&c.mgmt_id, now),
                Op::Replace(all) => w.index.replace_crt(all, now),
            };
            drop(w);
            h.queue.add_all(keys);
        },
        gate.clone(),
        shutdown.clone(),
        "registration tokens",
    ));

    // Token Secrets (newer Rancher).
    let api: Api<KubeSecret> = Api::all(client.clone());
    let h = hub.clone();
    let fields = format!("metadata.name={TOKEN_SECRET_NAME}");
    tasks.push(spawn(
        api,
        watcher::Config::default().fields(&fields),
        parse_token_secret,
        move |op| {
            let now = Instant::now();
            let mut w = h.world();
            let keys: Vec<VcKey> = match op {
                Op::Apply((ns, t)) => w.index.apply_token_secret(&ns, t, now),
                Op::Delete((ns, _)) => w.index.delete_token_secret(&ns, now),
                Op::Replace(all) => w.index.replace_token_secrets(all, now),
            };
            drop(w);
            h.queue.add_all(keys);
        },
        gate.clone(),
        shutdown.clone(),
        "registration token Secrets",
    ));

    // Settings (TLS mode and CA for Register).
    let api: Api<DynamicObject> = Api::all_with(client, &setting_resource());
    let h = hub;
    tasks.push(spawn(
        api,
        watcher::Config::default(),
        parse_setting,
        move |op| {
            let mut w = h.world();
            let s = &mut w.index.settings;
            let set = |(name, value): (String, String), s: &mut crate::index::Settings| match name
                .as_str()
            {
                "agent-tls-mode" => s.agent_tls_mode = Some(value).filter(|v| !v.is_empty()),
                _ => s.cacerts = value,
            };
            match op {
                Op::Apply(kv) => set(kv, s),
                Op::Delete((name, _)) => set((name, String::new()), s),
                Op::Replace(all) => {
                    *s = Default::default();
                    for kv in all {
                        set(kv, s);
                    }
                }
            }
        },
        gate,
        shutdown,
        "settings",
    ));
    tasks
}

fn parse_token_secret(s: &KubeSecret) -> Option<(String, Secret)> {
    let ns = s.namespace()?;
    let raw = s
        .data
        .as_ref()
        .and_then(|d| d.get("token"))
        .map(|b| b.0.clone())
        .unwrap_or_default();
    let token = String::from_utf8(raw).ok()?.trim().to_string();
    Some((ns, Secret::new(token)))
}

#[allow(clippy::too_many_arguments)]
fn spawn<K, T>(
    api: Api<K>,
    cfg: watcher::Config,
    parse: impl Fn(&K) -> Option<T> + Send + 'static,
    mut sink: impl FnMut(Op<T>) + Send + 'static,
    gate: Arc<ReadyGate>,
    shutdown: CancellationToken,
    what: &'static str,
) -> tokio::task::JoinHandle<()>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    T: Send + 'static,
{
    tokio::spawn(async move {
        let stream = watcher::watcher(api, cfg).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut buf: Vec<T> = Vec::new();
        let mut first = true;
        loop {
            let ev = tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = stream.next() => ev,
            };
            match ev {
                None => return,
                Some(Err(e)) => {
                    tracing::warn!(watch = what, error = %e, "watch error; retrying with backoff")
                }
                Some(Ok(Event::Init)) => buf.clear(),
                Some(Ok(Event::InitApply(o))) => buf.extend(parse(&o)),
                Some(Ok(Event::InitDone)) => {
                    tracing::debug!(watch = what, objects = buf.len(), "list complete");
                    sink(Op::Replace(std::mem::take(&mut buf)));
                    if first {
                        first = false;
                        gate.one_done();
                    }
                }
                Some(Ok(Event::Apply(o))) => {
                    if let Some(t) = parse(&o) {
                        sink(Op::Apply(t));
                    }
                }
                Some(Ok(Event::Delete(o))) => {
                    if let Some(t) = parse(&o) {
                        sink(Op::Delete(t));
                    }
                }
            }
        }
    })
}
