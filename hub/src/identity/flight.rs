//! Single-flight TokenReviews: concurrent verifications of the same (cluster, token)
//! share one in-flight call instead of each costing Rancher a TokenReview. A flood of
//! streams presenting one junk token before its refusal is cached, or a reconnect wave of
//! one agent's overlapping streams, costs one review; the result then feeds the positive
//! or negative cache as usual.
//!
//! Keys are the caches' SHA-256 of cluster and token ([`super::cache::key`]); the token
//! itself is never kept. An entry lives only while its call is in flight (the map holds
//! at most one entry per concurrent distinct key, so it is bounded by the streams that
//! may wait for authentication). When the caller running the call goes away (its stream
//! ended), the next waiter runs it (`tokio::sync::OnceCell` semantics), so a cancelled
//! leader never strands its followers.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use super::cache::Key;

/// See the module docs.
pub struct SingleFlight<V> {
    inflight: Mutex<HashMap<Key, Arc<OnceCell<V>>>>,
}

impl<V> Default for SingleFlight<V> {
    fn default() -> Self {
        Self {
            inflight: Mutex::new(HashMap::new()),
        }
    }
}

/// Removes the key's entry when the caller that joined it is done, if it is still the
/// same flight (a later flight for the key may have replaced it) and it either has its
/// result or no other caller waits on it (a cancelled lone caller leaves nothing behind).
struct Leave<'a, V> {
    flights: &'a SingleFlight<V>,
    key: Key,
    cell: Arc<OnceCell<V>>,
}

impl<V> Drop for Leave<'_, V> {
    fn drop(&mut self) {
        let mut m = self.flights.lock();
        // Holders: the map and each joined caller (this one included, until after drop).
        let alone = Arc::strong_count(&self.cell) <= 2;
        if m.get(&self.key).is_some_and(|c| Arc::ptr_eq(c, &self.cell))
            && (self.cell.initialized() || alone)
        {
            m.remove(&self.key);
        }
    }
}

impl<V> SingleFlight<V> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<OnceCell<V>>>> {
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<V: Clone> SingleFlight<V> {
    /// The result of `call` for `key`: run by the first caller, shared with every caller
    /// that arrives while it is in flight. True in the second field when this caller
    /// joined another's flight.
    pub async fn run<F, Fut>(&self, key: Key, call: F) -> (V, bool)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let cell = self.lock().entry(key).or_default().clone();
        let leave = Leave {
            flights: self,
            key,
            cell,
        };
        let mut ran = false;
        let v = leave
            .cell
            .get_or_init(|| {
                ran = true;
                call()
            })
            .await
            .clone();
        drop(leave);
        (v, !ran)
    }

    /// Keys in flight (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_calls_for_one_key_run_once() {
        let f = Arc::new(SingleFlight::<Result<u32, String>>::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let key = super::super::cache::key("c-m-x", "junk");
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (f, calls, gate) = (f.clone(), calls.clone(), gate.clone());
                tokio::spawn(async move {
                    f.run(key, || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        // Held until every caller joined (no sleep-and-hope).
                        gate.notified().await;
                        Err::<u32, _>("refused".to_string())
                    })
                    .await
                })
            })
            .collect();
        // Wait until the one call runs, then let every other task reach the flight.
        while calls.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        gate.notify_one();
        let mut joined = 0;
        for t in tasks {
            let (v, j) = t.await.unwrap();
            assert_eq!(v, Err("refused".to_string()));
            joined += usize::from(j);
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "one review for 50 verifications"
        );
        assert_eq!(joined, 49);
        assert_eq!(f.len(), 0, "nothing stays in flight");
        // Another key, or the same key later, is a new call.
        let (v, j) = f.run(key, || async { Ok(7) }).await;
        assert_eq!((v, j), (Ok(7), false));
    }

    #[tokio::test]
    async fn a_cancelled_leader_hands_the_call_to_a_waiter() {
        let f = Arc::new(SingleFlight::<u32>::default());
        let key = super::super::cache::key("c", "t");
        let f2 = f.clone();
        let leader = tokio::spawn(async move { f2.run(key, std::future::pending::<u32>).await });
        while f.len() == 0 {
            tokio::task::yield_now().await;
        }
        leader.abort();
        let _ = leader.await;
        let (v, _) = f.run(key, || async { 3 }).await;
        assert_eq!(v, 3);
        assert_eq!(f.len(), 0);
    }
}
