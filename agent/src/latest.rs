//! The hand-off between the hub link and the agent's writers (the Job controller and the
//! recorder) and back: a "latest wins" queue keyed by vCluster (Service UID) instead of
//! a bounded channel. Putting an op in never waits, so the link's read loop and its
//! heartbeat timer keep running however slowly the writers drain (their Kubernetes
//! writes are paced by `--kube-qps`); a newer op for the same vCluster replaces the one
//! still waiting, so a hub that repeats itself (a reconnect resends every Status and
//! Register) adds no work, and what waits is bounded by the number of vClusters times
//! the few kinds of op ([`Coalesce::Slot`]), not by the number of messages.
//!
//! Each op names its vCluster and a slot; a vCluster holds at most one op per slot, so
//! ops of different kinds (a Register's Job and a later Status) never replace each
//! other. vClusters are served first come, first served (an update keeps its vCluster's
//! place, so a busy vCluster cannot starve the others), and one vCluster's ops come out
//! in the order their newest values went in: that is the order a plain queue would
//! have applied them, minus the superseded ones.
//!
//! Cost: `push` and `recv` are O(1) plus a scan of the vCluster's few slots, under a
//! mutex held for no more than that (never across an await). One consumer.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// An op that can wait in a [`Sender`]/[`Receiver`] pair.
pub trait Coalesce {
    /// Which ops replace each other: two ops of one vCluster with the same slot do.
    type Slot: Copy + Eq;
    /// The vCluster (Service UID) the op is about.
    fn uid(&self) -> &str;
    /// The op's slot.
    fn slot(&self) -> Self::Slot;
}

/// Why an op was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The consumer stopped.
    #[error("the receiving task stopped")]
    Closed,
    /// As many ops wait as the queue allows (a new vCluster or slot would exceed it).
    #[error("{0} ops are already waiting")]
    Full(usize),
}

/// What a successful push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// The op waits in a new place.
    Queued,
    /// The op replaced an older one of the same vCluster and slot.
    Replaced,
}

struct Waiting<T> {
    /// When its value went in (orders one vCluster's ops).
    seq: u64,
    op: T,
}

struct Queue<T> {
    /// Waiting ops per vCluster, at most one per slot.
    by_uid: HashMap<String, Vec<Waiting<T>>>,
    /// vClusters with waiting ops, each once, first come first served.
    order: VecDeque<String>,
    /// Ops waiting in all.
    len: usize,
    /// Most ops that may wait.
    max: usize,
    seq: u64,
    senders: usize,
    receiver: bool,
}

struct Shared<T> {
    queue: Mutex<Queue<T>>,
    /// Wakes the consumer; its stored permit covers a push between a check and a wait.
    wake: Notify,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, Queue<T>> {
        // Nothing is left half-updated across a panic (no user code runs under the lock).
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A new queue holding at most `max` ops (a safety net: the callers' own bounds, one op
/// per vCluster and slot, normally keep it far below).
pub fn channel<T: Coalesce>(max: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            by_uid: HashMap::new(),
            order: VecDeque::new(),
            len: 0,
            max,
            seq: 0,
            senders: 1,
            receiver: true,
        }),
        wake: Notify::new(),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

/// The producing end; cheap to clone.
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T: Coalesce> Sender<T> {
    /// Queues `op`, replacing a waiting op of the same vCluster and slot. Never waits.
    pub fn push(&self, op: T) -> Result<Pushed, PushError> {
        let pushed = {
            let mut guard = self.shared.lock();
            let q = &mut *guard;
            if !q.receiver {
                return Err(PushError::Closed);
            }
            q.seq += 1;
            let seq = q.seq;
            let (full, max) = (q.len >= q.max, q.max);
            let slot = op.slot();
            match q.by_uid.get_mut(op.uid()) {
                Some(waiting) => match waiting.iter_mut().find(|w| w.op.slot() == slot) {
                    Some(w) => {
                        *w = Waiting { seq, op };
                        Pushed::Replaced
                    }
                    None if full => return Err(PushError::Full(max)),
                    None => {
                        waiting.push(Waiting { seq, op });
                        q.len += 1;
                        Pushed::Queued
                    }
                },
                None if full => return Err(PushError::Full(max)),
                None => {
                    let uid = op.uid().to_string();
                    q.order.push_back(uid.clone());
                    q.by_uid.insert(uid, vec![Waiting { seq, op }]);
                    q.len += 1;
                    Pushed::Queued
                }
            }
        };
        self.shared.wake.notify_one();
        Ok(pushed)
    }
}

impl<T> Sender<T> {
    /// Ops waiting now.
    pub fn pending(&self) -> usize {
        self.shared.lock().len
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let last = {
            let mut q = self.shared.lock();
            q.senders -= 1;
            q.senders == 0
        };
        if last {
            self.shared.wake.notify_one();
        }
    }
}

/// The consuming end (one task).
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Receiver<T> {
    /// The next op: the oldest waiting vCluster's earliest op. `None` once every sender
    /// is gone and nothing waits. Cancel-safe (an op is taken only when returned).
    pub async fn recv(&mut self) -> Option<T> {
        loop {
            if let Some(op) = self.try_recv() {
                return Some(op);
            }
            if self.shared.lock().senders == 0 {
                return None;
            }
            self.shared.wake.notified().await;
        }
    }

    /// The next op if one waits.
    pub fn try_recv(&mut self) -> Option<T> {
        let mut guard = self.shared.lock();
        let q = &mut *guard;
        loop {
            let uid = q.order.front()?;
            let Some(waiting) = q.by_uid.get_mut(uid) else {
                // Not reachable (a place exists only with ops), but never wedge on it.
                q.order.pop_front();
                continue;
            };
            let first = waiting
                .iter()
                .enumerate()
                .min_by_key(|(_, w)| w.seq)
                .map(|(i, _)| i);
            let op = first.map(|i| waiting.swap_remove(i).op);
            if waiting.is_empty() {
                // Otherwise the vCluster's other ops stay at the front: they were
                // waiting before everything behind them.
                if let Some(uid) = q.order.pop_front() {
                    q.by_uid.remove(&uid);
                }
            }
            if let Some(op) = op {
                q.len -= 1;
                return Some(op);
            }
        }
    }

    /// Ops waiting now.
    pub fn pending(&self) -> usize {
        self.shared.lock().len
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut q = self.shared.lock();
        q.receiver = false;
        q.by_uid.clear();
        q.order.clear();
        q.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Op {
        uid: String,
        slot: u8,
        value: u32,
    }

    impl Coalesce for Op {
        type Slot = u8;
        fn uid(&self) -> &str {
            &self.uid
        }
        fn slot(&self) -> u8 {
            self.slot
        }
    }

    fn op(uid: u32, slot: u8, value: u32) -> Op {
        Op {
            uid: format!("uid-{uid}"),
            slot,
            value,
        }
    }

    fn drain(rx: &mut Receiver<Op>) -> Vec<Op> {
        std::iter::from_fn(|| rx.try_recv()).collect()
    }

    #[test]
    fn many_updates_for_one_vcluster_leave_one_op_with_the_newest_value() {
        let (tx, mut rx) = channel(10);
        assert_eq!(tx.push(op(1, 0, 0)), Ok(Pushed::Queued));
        for v in 1..10_000 {
            assert_eq!(tx.push(op(1, 0, v)), Ok(Pushed::Replaced));
        }
        assert_eq!(rx.pending(), 1);
        assert_eq!(drain(&mut rx), vec![op(1, 0, 9_999)]);
        assert_eq!(rx.pending(), 0);
    }

    #[test]
    fn n_vclusters_give_n_ops_in_arrival_order() {
        let (tx, mut rx) = channel(100_000);
        for round in 0..5 {
            for uid in 0..1_000 {
                tx.push(op(uid, 0, round)).expect("push");
            }
        }
        assert_eq!(tx.pending(), 1_000);
        let got = drain(&mut rx);
        assert_eq!(got, (0..1_000).map(|u| op(u, 0, 4)).collect::<Vec<_>>());
    }

    #[test]
    fn slots_do_not_replace_each_other_and_come_out_in_order_of_their_newest_value() {
        let (tx, mut rx) = channel(10);
        // A Job op (slot 0), then a record op (slot 1) for the same vCluster: both stay.
        tx.push(op(1, 0, 1)).expect("push");
        tx.push(op(1, 1, 2)).expect("push");
        tx.push(op(2, 1, 3)).expect("push");
        // A newer Job op replaces the first and now comes after the record op.
        assert_eq!(tx.push(op(1, 0, 4)), Ok(Pushed::Replaced));
        assert_eq!(
            drain(&mut rx),
            vec![op(1, 1, 2), op(1, 0, 4), op(2, 1, 3)],
            "vCluster 1 keeps its place; its ops in the order of their newest values"
        );
    }

    #[test]
    fn an_update_keeps_its_vclusters_place() {
        let (tx, mut rx) = channel(10);
        tx.push(op(1, 0, 1)).expect("push");
        tx.push(op(2, 0, 1)).expect("push");
        tx.push(op(1, 0, 2)).expect("push");
        assert_eq!(drain(&mut rx), vec![op(1, 0, 2), op(2, 0, 1)]);
        // Once taken, a new op for the vCluster waits behind the others.
        tx.push(op(1, 0, 3)).expect("push");
        tx.push(op(2, 0, 2)).expect("push");
        tx.push(op(1, 0, 4)).expect("push");
        assert_eq!(drain(&mut rx), vec![op(1, 0, 4), op(2, 0, 2)]);
    }

    #[test]
    fn a_full_queue_refuses_new_places_but_still_takes_updates() {
        let (tx, mut rx) = channel(2);
        tx.push(op(1, 0, 1)).expect("push");
        tx.push(op(2, 0, 1)).expect("push");
        assert_eq!(tx.push(op(3, 0, 1)), Err(PushError::Full(2)));
        assert_eq!(tx.push(op(1, 1, 1)), Err(PushError::Full(2)));
        assert_eq!(tx.push(op(2, 0, 2)), Ok(Pushed::Replaced));
        assert_eq!(drain(&mut rx), vec![op(1, 0, 1), op(2, 0, 2)]);
        assert_eq!(tx.push(op(3, 0, 1)), Ok(Pushed::Queued));
    }

    #[test]
    fn a_stopped_receiver_refuses_and_frees_what_waited() {
        let (tx, rx) = channel(10);
        tx.push(op(1, 0, 1)).expect("push");
        drop(rx);
        assert_eq!(tx.pending(), 0);
        assert_eq!(tx.push(op(1, 0, 2)), Err(PushError::Closed));
    }

    #[tokio::test]
    async fn recv_waits_for_a_push_and_ends_after_the_last_sender() {
        let (tx, mut rx) = channel(10);
        let tx2 = tx.clone();
        let producer = tokio::spawn(async move {
            tokio::task::yield_now().await;
            tx2.push(op(1, 0, 7)).expect("push");
        });
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("woken by the push");
        assert_eq!(got, Some(op(1, 0, 7)));
        producer.await.expect("producer");
        tx.push(op(2, 0, 1)).expect("push");
        drop(tx);
        assert_eq!(
            rx.recv().await,
            Some(op(2, 0, 1)),
            "what waited still comes"
        );
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("ends"),
            None
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn push_never_blocks_a_single_threaded_runtime() {
        // The link and the writers share one thread in the agent: a producer that pushes
        // far more than the consumer takes must finish without the consumer running.
        let (tx, mut rx) = channel(1_000);
        let producer = async {
            for v in 0..100_000u32 {
                tx.push(op(v % 1_000, (v % 2) as u8, v)).expect("push");
            }
        };
        tokio::time::timeout(Duration::from_secs(10), producer)
            .await
            .expect("pushes never wait");
        assert_eq!(
            rx.pending(),
            1_000,
            "1,000 vCluster/slot pairs wait, not 100,000 ops"
        );
        assert!(drain(&mut rx).iter().all(|o| o.value >= 99_000));
    }
}
