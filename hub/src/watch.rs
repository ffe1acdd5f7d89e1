//! The reduced watch, written once for every watch of the hub (Rancher's clusters,
//! tokens and settings; owner sync's projects and role bindings): a kube-runtime
//! watcher with its default backoff, each object reduced to a small struct at once
//! (objects are never stored whole), and a (re)list delivered as one
//! [`Op::Replace`] on `InitDone`, so objects deleted while the watch was down are
//! noticed. A [`ListGate`] shared by a group of watches fires once every one of them
//! has listed for the first time (the hub is ready; owner sync may start).

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use kube::Resource;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

/// One watch event, reduced.
pub enum Op<T> {
    /// An object was added or changed.
    Apply(T),
    /// An object was deleted.
    Delete(T),
    /// A complete (re)list: exactly these objects exist.
    Replace(Vec<T>),
}

/// Runs `on_all` once, when the last of `n` watches finished its first list.
pub struct ListGate {
    remaining: AtomicUsize,
    on_all: Box<dyn Fn() + Send + Sync>,
}

impl ListGate {
    /// A gate for `n` watches.
    pub fn new(n: usize, on_all: impl Fn() + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self {
            remaining: AtomicUsize::new(n),
            on_all: Box::new(on_all),
        })
    }

    fn one_done(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            (self.on_all)();
        }
    }
}

/// Starts one watch of `api` narrowed by `cfg`. `parse` reduces an object (`None`
/// skips it); `sink` receives every reduced event, and after the sink has seen the
/// first complete list the watch counts itself done on `gate`. Runs until `shutdown`.
pub fn spawn<K, T>(
    api: Api<K>,
    cfg: watcher::Config,
    parse: impl Fn(&K) -> Option<T> + Send + 'static,
    mut sink: impl FnMut(Op<T>) + Send + 'static,
    gate: Arc<ListGate>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_fires_once_after_the_last_watch() {
        let fired = Arc::new(AtomicUsize::new(0));
        let f = fired.clone();
        let gate = ListGate::new(3, move || {
            f.fetch_add(1, Ordering::SeqCst);
        });
        gate.one_done();
        gate.one_done();
        assert_eq!(fired.load(Ordering::SeqCst), 0);
        gate.one_done();
        assert_eq!(fired.load(Ordering::SeqCst), 1);
    }
}
