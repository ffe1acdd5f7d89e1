//! The three watches of owner sync — Projects, PRTBs and CRTBs, each one watch over all
//! namespaces (the objects live in namespaces that appear at run time), on the shared
//! [`crate::watch`] helper. Events are applied to the [`super::store::OwnerStore`], and
//! the vClusters they may affect go to the owner queue. The first complete list of all
//! three opens the gate for the workers and queues every vCluster once (before that, a
//! list's own touches are not queued: the gate's full pass covers them).

use std::sync::Arc;

use kube::api::DynamicObject;
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

use super::Owners;
use super::model::{parse_crtb, parse_project, parse_prtb};
use super::store::{OwnerStore, Touch};
use crate::rancher::Kind;
use crate::watch::{self, ListGate, Op};

/// Starts the three watches.
pub fn spawn_all(
    owners: Arc<Owners>,
    synced: tokio::sync::watch::Sender<bool>,
    shutdown: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let o = owners.clone();
    let gate = ListGate::new(3, move || {
        tracing::info!(
            owned_bindings = o.store().owned_count(),
            "owner sync: projects and role bindings loaded; reconciling every vCluster"
        );
        let _ = synced.send(true);
        o.touch(vec![Touch::All]);
    });
    let client = owners.client.clone();
    vec![
        spawn(
            Kind::Project,
            &client,
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
            Kind::Prtb,
            &client,
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
            Kind::Crtb,
            &client,
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
    kind: Kind,
    client: &kube::Client,
    parse: fn(&DynamicObject) -> Option<T>,
    apply: fn(&mut OwnerStore, Op<T>) -> Vec<Touch>,
    owners: Arc<Owners>,
    gate: Arc<ListGate>,
    shutdown: CancellationToken,
    what: &'static str,
) -> tokio::task::JoinHandle<()> {
    let mut listed = false;
    watch::spawn(
        kind.all(client.clone()),
        watcher::Config::default(),
        parse,
        move |op| {
            // The first list's touches are left to the gate's pass over every vCluster.
            let first_list = !listed && matches!(op, Op::Replace(_));
            let touches = apply(&mut owners.store(), op);
            if first_list {
                listed = true;
            } else {
                owners.touch(touches);
            }
        },
        gate,
        shutdown,
        what,
    )
}
