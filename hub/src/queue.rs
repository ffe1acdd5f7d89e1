//! The reconcile work queue: keyed by vCluster, deduplicated (a key waits at most once),
//! never processed by two workers at once (a key added while in flight is re-queued when
//! its worker finishes), bounded by the number of distinct keys, plus delayed re-queues
//! (the removal grace and error backoff) held in one `DelayQueue` task — a timer per
//! due item, no polling.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::time::DelayQueue;

use crate::core::VcKey;
use crate::core::backoff::Backoff;

/// Most distinct keys waiting; beyond it new keys are dropped (and come back with the
/// next event or snapshot). 50,000 vClusters fit many times over.
pub const MAX_QUEUED: usize = 1_000_000;

#[derive(Default)]
struct Inner {
    queued: HashSet<VcKey>,
    order: VecDeque<VcKey>,
    inflight: HashSet<VcKey>,
    dirty: HashSet<VcKey>,
    failures: HashMap<VcKey, u32>,
}

/// See the module docs.
pub struct Queue {
    inner: Mutex<Inner>,
    notify: Notify,
    delay_tx: mpsc::Sender<(VcKey, Instant)>,
}

impl Queue {
    /// A queue and the receiver the delay task (see [`Queue::run_delays`]) consumes.
    pub fn new() -> (Arc<Self>, mpsc::Receiver<(VcKey, Instant)>) {
        let (delay_tx, delay_rx) = mpsc::channel(65_536);
        (
            Arc::new(Self {
                inner: Mutex::default(),
                notify: Notify::new(),
                delay_tx,
            }),
            delay_rx,
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a key now.
    pub fn add(&self, key: VcKey) {
        let mut q = self.lock();
        if q.inflight.contains(&key) {
            q.dirty.insert(key);
            return;
        }
        if q.queued.len() >= MAX_QUEUED || !q.queued.insert(key.clone()) {
            return;
        }
        q.order.push_back(key);
        drop(q);
        self.notify.notify_one();
    }

    /// Adds many keys.
    pub fn add_all(&self, keys: impl IntoIterator<Item = VcKey>) {
        for k in keys {
            self.add(k);
        }
    }

    /// Adds a key at `at` (earlier schedules win in the delay task).
    pub fn add_at(&self, key: VcKey, at: Instant) {
        if at <= Instant::now() {
            return self.add(key);
        }
        if self.delay_tx.try_send((key.clone(), at)).is_err() {
            // The delay channel is full: retrying now is safe (decide re-schedules).
            self.add(key);
        }
    }

    /// Re-queues after an error, with exponential backoff and jitter.
    pub fn retry(&self, key: VcKey) {
        let n = {
            let mut q = self.lock();
            let n = q.failures.entry(key.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        self.add_at(key, Instant::now() + Backoff::RECONCILE.delay(n));
    }

    /// Forgets the error count of a key after a success.
    pub fn succeeded(&self, key: &VcKey) {
        self.lock().failures.remove(key);
    }

    /// Waits for the next key and marks it in flight. Call [`Queue::done`] after.
    pub async fn next(&self, shutdown: &CancellationToken) -> Option<VcKey> {
        loop {
            let notified = self.notify.notified();
            {
                let mut q = self.lock();
                if let Some(k) = q.order.pop_front() {
                    q.queued.remove(&k);
                    q.inflight.insert(k.clone());
                    if !q.order.is_empty() {
                        self.notify.notify_one();
                    }
                    return Some(k);
                }
            }
            tokio::select! {
                _ = notified => {}
                _ = shutdown.cancelled() => return None,
            }
        }
    }

    /// Ends the processing of a key; re-queues it if it was added meanwhile.
    pub fn done(&self, key: &VcKey) {
        let again = {
            let mut q = self.lock();
            q.inflight.remove(key);
            q.dirty.remove(key)
        };
        if again {
            self.add(key.clone());
        }
    }

    /// Number of keys waiting.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    /// True when nothing waits.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs the delay task until shutdown.
    pub async fn run_delays(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<(VcKey, Instant)>,
        shutdown: CancellationToken,
    ) {
        let mut dq: DelayQueue<VcKey> = DelayQueue::new();
        let mut pending: HashMap<VcKey, (tokio_util::time::delay_queue::Key, Instant)> =
            HashMap::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                item = rx.recv() => {
                    let Some((key, at)) = item else { return };
                    match pending.get(&key) {
                        Some((_, existing)) if *existing <= at => {}
                        Some((dk, _)) => {
                            dq.reset_at(dk, at.into());
                            if let Some(e) = pending.get_mut(&key) { e.1 = at; }
                        }
                        None => {
                            let dk = dq.insert_at(key.clone(), at.into());
                            pending.insert(key, (dk, at));
                        }
                    }
                }
                Some(expired) = dq.next(), if !dq.is_empty() => {
                    let key = expired.into_inner();
                    pending.remove(&key);
                    self.add(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn k(u: &str) -> VcKey {
        VcKey::new("h", u)
    }

    #[tokio::test]
    async fn keys_are_deduplicated_and_not_processed_twice_at_once() {
        let (q, _rx) = Queue::new();
        let stop = CancellationToken::new();
        q.add(k("a"));
        q.add(k("a"));
        q.add(k("b"));
        assert_eq!(q.len(), 2);
        let a = q.next(&stop).await.unwrap();
        q.add(k("a")); // while in flight: deferred
        assert_eq!(q.len(), 1);
        q.done(&a);
        assert_eq!(q.len(), 2);
    }

    #[tokio::test]
    async fn delayed_keys_arrive_after_their_time() {
        let (q, rx) = Queue::new();
        let stop = CancellationToken::new();
        tokio::spawn(q.clone().run_delays(rx, stop.clone()));
        q.add_at(k("a"), Instant::now() + Duration::from_millis(50));
        assert!(q.is_empty());
        let got = tokio::time::timeout(Duration::from_secs(5), q.next(&stop))
            .await
            .unwrap();
        assert_eq!(got, Some(k("a")));
        stop.cancel();
    }
}
