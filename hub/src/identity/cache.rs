//! A small, bounded cache of positive TokenReview results, so an agent that reconnects
//! (or a flapping network) does not cost a round trip through Rancher each time. Keys
//! are a SHA-256 of the cluster id and the token, never the token itself; entries live
//! at most `ttl` and never past the token's own (unverified) expiry. When full, expired
//! entries go first, then the entry that expires soonest. The TokenReview authenticator
//! keeps a second instance for refusals (a short TTL, no token expiry), so a repeated
//! junk token costs one TokenReview per TTL.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

/// A SHA-256 of cluster id and token: what every per-token map keys on.
pub(crate) type Key = [u8; 32];

/// See the module docs.
#[derive(Debug)]
pub struct ReviewCache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<Key, Instant>>,
}

/// The key of `token` presented for `cluster` (the token itself is never kept).
pub(crate) fn key(cluster: &str, token: &str) -> Key {
    let mut h = Sha256::new();
    h.update(cluster.as_bytes());
    h.update([0u8]);
    h.update(token.as_bytes());
    h.finalize().into()
}

impl ReviewCache {
    /// A cache holding at most `capacity` results for at most `ttl` each.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// True when `token` was verified for `cluster` recently enough.
    pub fn hit(&self, cluster: &str, token: &str, now: Instant) -> bool {
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let k = key(cluster, token);
        match e.get(&k) {
            Some(until) if *until > now => true,
            Some(_) => {
                e.remove(&k);
                false
            }
            None => false,
        }
    }

    /// Remembers a positive result; `expiry` is the token's unverified `exp`.
    pub fn insert(&self, cluster: &str, token: &str, expiry: Option<SystemTime>, now: Instant) {
        let mut until = now + self.ttl;
        if let Some(exp) = expiry {
            let left = exp
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            until = until.min(now + left);
        }
        if until <= now || self.ttl.is_zero() {
            return;
        }
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if e.len() >= self.capacity {
            e.retain(|_, t| *t > now);
        }
        while e.len() >= self.capacity {
            let Some(k) = e.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k) else {
                break;
            };
            e.remove(&k);
        }
        e.insert(key(cluster, token), until);
    }

    /// Number of entries.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True when empty.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_are_per_cluster_and_expire() {
        let c = ReviewCache::new(Duration::from_secs(10), 8);
        let t0 = Instant::now();
        c.insert("c-m-a", "tok", None, t0);
        assert!(c.hit("c-m-a", "tok", t0));
        assert!(!c.hit("c-m-b", "tok", t0), "another cluster never hits");
        assert!(!c.hit("c-m-a", "tok2", t0));
        assert!(!c.hit("c-m-a", "tok", t0 + Duration::from_secs(11)));
        assert!(c.is_empty(), "an expired entry is dropped on lookup");
    }

    #[test]
    fn the_tokens_own_expiry_bounds_the_entry() {
        let c = ReviewCache::new(Duration::from_secs(60), 8);
        let t0 = Instant::now();
        c.insert(
            "c",
            "past",
            Some(SystemTime::now() - Duration::from_secs(1)),
            t0,
        );
        assert!(!c.hit("c", "past", t0));
        c.insert(
            "c",
            "soon",
            Some(SystemTime::now() + Duration::from_secs(2)),
            t0,
        );
        assert!(c.hit("c", "soon", t0));
        assert!(!c.hit("c", "soon", t0 + Duration::from_secs(3)));
    }

    #[test]
    fn capacity_is_bounded() {
        let c = ReviewCache::new(Duration::from_secs(60), 3);
        let t0 = Instant::now();
        for i in 0..10u64 {
            c.insert("c", &format!("t{i}"), None, t0 + Duration::from_millis(i));
        }
        assert_eq!(c.len(), 3);
        assert!(c.hit("c", "t9", t0), "the newest survive");
        assert!(!c.hit("c", "t0", t0));
    }
}
