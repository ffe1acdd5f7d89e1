//! A small deduplicating work queue: watch events and outside triggers (an agent
//! connecting) enqueue keys; one worker runs a reconcile per key, never two at once for
//! the same key, requeueing a key that changed while it ran. Its size is bounded by the
//! number of distinct keys.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use tokio::sync::Notify;

/// What a reconcile is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// A provisioning cluster (namespace, name).
    Prov(String, String),
    /// A management cluster (name = c-m- id).
    Mgmt(String),
    /// A registered backend API server, by index.
    Backend(usize),
    /// A CRTB (namespace, name), rendered into local RBAC.
    Crtb(String, String),
    /// A GlobalRoleBinding (name), rendered into local RBAC.
    Grb(String),
    /// A FleetWorkspace (name), backed by its namespace.
    Workspace(String),
}

#[derive(Default)]
struct State {
    queued: VecDeque<Key>,
    queued_set: HashSet<Key>,
    running: HashSet<Key>,
    dirty: HashSet<Key>,
}

/// The queue; share it behind an `Arc`.
#[derive(Default)]
pub struct Queue {
    state: Mutex<State>,
    notify: Notify,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks for `key` to be reconciled (again).
    pub fn add(&self, key: Key) {
        let mut s = self.lock();
        if s.running.contains(&key) {
            s.dirty.insert(key);
            return;
        }
        if s.queued_set.insert(key.clone()) {
            s.queued.push_back(key);
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Waits for the next key that is not being reconciled and marks it running.
    pub async fn next(&self) -> Key {
        loop {
            let notified = self.notify.notified();
            {
                let mut s = self.lock();
                if let Some(key) = s.queued.pop_front() {
                    s.queued_set.remove(&key);
                    s.running.insert(key.clone());
                    return key;
                }
            }
            notified.await;
        }
    }

    /// Marks `key` done; requeues it when it changed while running.
    pub fn done(&self, key: &Key) {
        let again = {
            let mut s = self.lock();
            s.running.remove(key);
            s.dirty.remove(key)
        };
        if again {
            self.add(key.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dedups_and_requeues_dirty_keys() {
        let q = Queue::default();
        q.add(Key::Mgmt("a".into()));
        q.add(Key::Mgmt("a".into()));
        q.add(Key::Mgmt("b".into()));
        let k = q.next().await;
        assert_eq!(k, Key::Mgmt("a".into()));
        q.add(Key::Mgmt("a".into())); // changed while running
        assert_eq!(q.next().await, Key::Mgmt("b".into()));
        q.done(&k);
        assert_eq!(q.next().await, Key::Mgmt("a".into()));
    }
}
