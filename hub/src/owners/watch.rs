//! The three watches of owner sync — Projects, PRTBs and CRTBs, each one watch over all
//! namespaces (the objects live in namespaces that appear at run time). Events are
//! reduced at once, applied to the [`super::store::OwnerStore`], and the vClusters they
//! may affect go to the owner queue. A (re)list is applied as a whole, so objects deleted
//! while a watch was down are noticed; the first complete list of all three opens the
//! gate for the workers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio_util::sync::CancellationToken;

use super::model::{parse_crtb, parse_project, parse_prtb};
use super::store::{OwnerStore, Touch};
use super::{Owners, crtb_resource, project_resource, prtb_resource};

/// One reduced watch event.
enum Op<T> {
    Apply(T),
    Delete(T),
    Replace(Vec<T>),
}

/// Opens the workers' gate when every watch has listed once.
struct Gate {
    remaining: AtomicUsize,
    tx: tokio::sync::watch::Sender<bool>,
    owners: Arc<Owners>,
}

impl Gate {
    fn one_done(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            tracing::info!(
                owned_bindings = self.owners.store().owned_count(),
                "owner sync: projects and role bindings loaded; reconciling every vCluster"
            );
            let _ = self.tx.send(true);
            self.owners.touch(vec![Touch::All]);
        }
    }
}

/// Starts the three watches.
pub fn spawn_all(
    owners: Arc<Owners>,
    synced: tokio::sync::watch::Sender<bool>,
    shutdown: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let gate = Arc::new(Gate {
        remaining: AtomicUsize::new(3),
        tx: synced,
        owners: owners.clone(),
    });
    let client = owners.client.clone();
    vec![
        spawn(
            Api::all_with(client.clone(), &project_resource()),
            parse_project,
            |s: &mut OwnerStore, op| match op {
                Op::Apply(p) => s.apply_project(p),
                Op::Delete(p) => s.delete_project(&p),
                Op::Replace(all) => s.replace_projects(all),
            },
            owners.clone(),
            gate.clone(),
            shutdown.clone(),
            "projects",
        ),
        spawn(
            Api::all_with(client.clone(), &prtb_resource()),
            parse_prtb,
            |s: &mut OwnerStore, op| match op {
                Op::Apply(b) => s.apply_prtb(b),
                Op::Delete(b) => s.delete_prtb(&b),
                Op::Replace(all) => s.replace_prtbs(all),
            },
            owners.clone(),
            gate.clone(),
            shutdown.clone(),
            "project role template bindings",
        ),
        spawn(
            Api::all_with(client, &crtb_resource()),
            parse_crtb,
            |s: &mut OwnerStore, op| match op {
                Op::Apply(c) => s.apply_crtb(c),
                Op::Delete(c) => s.delete_crtb(&c),
                Op::Replace(all) => s.replace_crtbs(all),
            },
            owners,
            gate,
            shutdown,
            "cluster role template bindings",
        ),
    ]
}

#[allow(clippy::too_many_arguments)]
fn spawn<T: Send + 'static>(
    api: Api<DynamicObject>,
    parse: fn(&DynamicObject) -> Option<T>,
    sink: fn(&mut OwnerStore, Op<T>) -> Vec<Touch>,
    owners: Arc<Owners>,
    gate: Arc<Gate>,
    shutdown: CancellationToken,
    what: &'static str,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut buf: Vec<T> = Vec::new();
        let mut first = true;
        loop {
            let ev = tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = stream.next() => ev,
            };
            let op = match ev {
                None => return,
                Some(Err(e)) => {
                    tracing::warn!(watch = what, error = %e, "owner sync watch error; retrying with backoff");
                    continue;
                }
                Some(Ok(Event::Init)) => {
                    buf.clear();
                    continue;
                }
                Some(Ok(Event::InitApply(o))) => {
                    buf.extend(parse(&o));
                    continue;
                }
                Some(Ok(Event::InitDone)) => Op::Replace(std::mem::take(&mut buf)),
                Some(Ok(Event::Apply(o))) => match parse(&o) {
                    Some(t) => Op::Apply(t),
                    None => continue,
                },
                Some(Ok(Event::Delete(o))) => match parse(&o) {
                    Some(t) => Op::Delete(t),
                    None => continue,
                },
            };
            let is_list = matches!(op, Op::Replace(_));
            let touches = sink(&mut owners.store(), op);
            if first && is_list {
                first = false;
                gate.one_done();
            } else {
                owners.touch(touches);
            }
        }
    })
}
