//! Who may cost a TokenReview now. The hub's TokenReview budget (`--rancher-qps`,
//! `--rancher-burst`) protects Rancher and the downstream API servers; this splits it so
//! that no client can take all of it:
//!
//! - **Reserved share** (`--tokenreview-reserved-share`, default 50%): only for claims
//!   of clusters whose agent verified successfully within the last hour (an agent
//!   reconnecting after a hub restart or a network blip). Each such cluster draws at
//!   most [`RESERVED_PER_CLUSTER`] from it, so a client that claims a known cluster id
//!   with junk tokens exhausts only that cluster's allowance, not everyone's; when the
//!   allowance or the reserved share is spent, the claim competes for the open share.
//! - **Open share** (the rest): everyone else, with a per-client-IP bucket in front
//!   (`--tokenreview-peer-qps`, `--tokenreview-peer-burst`), so one flooding address
//!   gets its own small rate and the rest of the budget stays for the others. An IP
//!   from which agents of N distinct clusters verified within the last hour (many
//!   downstream clusters behind one NAT address) gets N + 1 times that rate and burst,
//!   so a shared egress address does not queue its genuine agents behind one agent's
//!   share; only valid tokens of distinct clusters raise it.
//!
//! Refusals here cost no call: the stream gets UNAVAILABLE with a retry hint and the
//! agent backs off. Both maps are bounded ([`MAX_PEERS`], [`MAX_VERIFIED`]); when full,
//! stale entries go first, and new peers beyond that share one overflow bucket.
//! Complexity: O(1) per admission (two map lookups), O(n) pruning only when a map is full.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use vclink_proto::ratelimit::TokenBucket;

/// How long a successful verification makes a cluster "recently verified".
pub const RECENT: Duration = Duration::from_secs(3600);
/// What one recently verified cluster may draw from the reserved share: (per second,
/// burst) — one reconnect every few seconds.
pub const RESERVED_PER_CLUSTER: (f64, f64) = (0.2, 3.0);
/// Most client IPs tracked.
pub const MAX_PEERS: usize = 4096;
/// Most recently verified clusters tracked (a few MiB at most).
pub const MAX_VERIFIED: usize = 65_536;
/// A peer bucket not used for this long may be dropped.
const PEER_IDLE: Duration = Duration::from_secs(60);

/// A small token bucket by value (the maps hold thousands).
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Self {
        Self {
            tokens: burst,
            last: now,
        }
    }

    fn take(&mut self, qps: f64, burst: f64, now: Instant) -> bool {
        let t =
            (self.tokens + now.saturating_duration_since(self.last).as_secs_f64() * qps).min(burst);
        self.last = now.max(self.last);
        if t >= 1.0 {
            self.tokens = t - 1.0;
            true
        } else {
            self.tokens = t;
            false
        }
    }
}

/// Settings (from the flags).
#[derive(Clone, Debug)]
pub struct AdmissionSettings {
    pub qps: f64,
    pub burst: u32,
    pub reserved_share: f64,
    pub peer_qps: f64,
    pub peer_burst: u32,
}

/// Why a TokenReview was not admitted (metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// This client IP used its share.
    Peer,
    /// The whole open share is spent.
    Global,
}

/// Which share admitted a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    Reserved,
    Open,
}

#[derive(Debug)]
struct Verified {
    at: Instant,
    allowance: Bucket,
    /// The client IP of its last successful verification, if known.
    peer: Option<IpAddr>,
}

/// Most clusters one IP's verifications scale its bucket by.
const MAX_PEER_SCALE: u32 = 1024;

/// See the module docs.
#[derive(Debug)]
pub struct Admission {
    settings: AdmissionSettings,
    open: TokenBucket,
    reserved: Option<TokenBucket>,
    peers: Mutex<(HashMap<IpAddr, Bucket>, Bucket)>,
    verified: Mutex<Verifications>,
}

/// The recently verified clusters, and how many of them last verified from each IP.
#[derive(Debug, Default)]
struct Verifications {
    clusters: HashMap<String, Verified>,
    per_peer: HashMap<IpAddr, u32>,
}

impl Verifications {
    fn forget_peer(&mut self, peer: Option<IpAddr>) {
        if let Some(ip) = peer
            && let Some(n) = self.per_peer.get_mut(&ip)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_peer.remove(&ip);
            }
        }
    }

    fn remove(&mut self, cluster: &str) {
        if let Some(e) = self.clusters.remove(cluster) {
            self.forget_peer(e.peer);
        }
    }
}

fn split(total: f64, share: f64) -> (f64, f64) {
    (total * (1.0 - share), total * share)
}

impl Admission {
    /// The budget `settings` describes.
    pub fn new(settings: AdmissionSettings) -> Self {
        let share = settings.reserved_share.clamp(0.0, 0.9);
        let (open_qps, res_qps) = split(settings.qps, share);
        let (open_burst, res_burst) = split(f64::from(settings.burst), share);
        let burst = |b: f64| b.round().clamp(1.0, f64::from(u32::MAX)) as u32;
        let now = Instant::now();
        Self {
            open: TokenBucket::new(open_qps, burst(open_burst)),
            reserved: (share > 0.0).then(|| TokenBucket::new(res_qps, burst(res_burst))),
            peers: Mutex::new((
                HashMap::new(),
                Bucket::full(f64::from(settings.peer_burst), now),
            )),
            verified: Mutex::new(Verifications::default()),
            settings,
        }
    }

    /// Takes one TokenReview from the budget for a claim of `cluster` from `peer`.
    pub fn admit(
        &self,
        cluster: &str,
        peer: Option<IpAddr>,
        now: Instant,
    ) -> Result<Share, Throttle> {
        if let Some(reserved) = &self.reserved
            && self.reserved_allowance(cluster, now)
            && reserved.try_take(now)
        {
            return Ok(Share::Reserved);
        }
        if let Some(ip) = peer
            && !self.peer_take(ip, now)
        {
            return Err(Throttle::Peer);
        }
        if self.open.try_take(now) {
            Ok(Share::Open)
        } else {
            Err(Throttle::Global)
        }
    }

    /// Records that `cluster`'s agent, connecting from `peer`, verified successfully.
    pub fn verified(&self, cluster: &str, peer: Option<IpAddr>, now: Instant) {
        let mut v = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = v.clusters.get_mut(cluster) {
            e.at = now;
            let old = std::mem::replace(&mut e.peer, peer);
            if old != peer {
                v.forget_peer(old);
                if let Some(ip) = peer {
                    *v.per_peer.entry(ip).or_default() += 1;
                }
            }
            return;
        }
        if v.clusters.len() >= MAX_VERIFIED {
            let stale: Vec<String> = v
                .clusters
                .iter()
                .filter(|(_, e)| now.saturating_duration_since(e.at) >= RECENT)
                .map(|(k, _)| k.clone())
                .collect();
            for k in stale {
                v.remove(&k);
            }
        }
        if v.clusters.len() >= MAX_VERIFIED
            && let Some(oldest) = v
                .clusters
                .iter()
                .min_by_key(|(_, e)| e.at)
                .map(|(k, _)| k.clone())
        {
            v.remove(&oldest);
        }
        v.clusters.insert(
            cluster.to_string(),
            Verified {
                at: now,
                allowance: Bucket::full(RESERVED_PER_CLUSTER.1, now),
                peer,
            },
        );
        if let Some(ip) = peer {
            *v.per_peer.entry(ip).or_default() += 1;
        }
    }

    /// How many times the per-IP rate `ip` gets: one plus the clusters whose agents last
    /// verified from it (bounded).
    fn peer_scale(&self, ip: IpAddr) -> f64 {
        let v = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        let n = v
            .per_peer
            .get(&ip)
            .copied()
            .unwrap_or(0)
            .min(MAX_PEER_SCALE);
        f64::from(n + 1)
    }

    fn reserved_allowance(&self, cluster: &str, now: Instant) -> bool {
        let mut v = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        let Some(e) = v.clusters.get_mut(cluster) else {
            return false;
        };
        if now.saturating_duration_since(e.at) >= RECENT {
            v.remove(cluster);
            return false;
        }
        let (qps, burst) = RESERVED_PER_CLUSTER;
        e.allowance.take(qps, burst, now)
    }

    fn peer_take(&self, ip: IpAddr, now: Instant) -> bool {
        let scale = self.peer_scale(ip);
        let (qps, burst) = (
            self.settings.peer_qps * scale,
            f64::from(self.settings.peer_burst) * scale,
        );
        let mut guard = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let (peers, overflow) = &mut *guard;
        if !peers.contains_key(&ip) && peers.len() >= MAX_PEERS {
            peers.retain(|_, b| now.saturating_duration_since(b.last) < PEER_IDLE);
            if peers.len() >= MAX_PEERS {
                return overflow.take(qps, burst, now);
            }
        }
        peers
            .entry(ip)
            .or_insert_with(|| Bucket::full(burst, now))
            .take(qps, burst, now)
    }

    /// Number of tracked peers (tests).
    #[cfg(test)]
    fn peers(&self) -> usize {
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> AdmissionSettings {
        AdmissionSettings {
            qps: 10.0,
            burst: 20,
            reserved_share: 0.5,
            peer_qps: 1.0,
            peer_burst: 3,
        }
    }

    fn ip(n: u8) -> Option<IpAddr> {
        Some(IpAddr::from([192, 168, 0, n]))
    }

    #[test]
    fn one_peer_gets_only_its_own_share() {
        let a = Admission::new(settings());
        let t = Instant::now();
        let granted = (0..100)
            .filter(|_| a.admit("c-m-x", ip(1), t).is_ok())
            .count();
        assert_eq!(granted, 3, "the peer burst");
        assert_eq!(a.admit("c-m-x", ip(1), t), Err(Throttle::Peer));
        assert_eq!(
            a.admit("c-m-y", ip(2), t),
            Ok(Share::Open),
            "others still get in"
        );
    }

    #[test]
    fn many_peers_share_the_open_budget_and_recent_hosts_keep_the_reserve() {
        let a = Admission::new(settings());
        let t = Instant::now();
        a.verified("c-m-known", None, t);
        let granted = (0..100u8)
            .filter(|n| a.admit("c-m-junk", ip(*n), t).is_ok())
            .count();
        assert_eq!(granted, 10, "half of the burst of 20 is open");
        assert_eq!(a.admit("c-m-junk", ip(200), t), Err(Throttle::Global));
        // The recently verified cluster still gets in, up to its own allowance.
        assert_eq!(a.admit("c-m-known", ip(201), t), Ok(Share::Reserved));
        assert_eq!(a.admit("c-m-known", ip(201), t), Ok(Share::Reserved));
        assert_eq!(a.admit("c-m-known", ip(201), t), Ok(Share::Reserved));
        assert_eq!(
            a.admit("c-m-known", ip(201), t),
            Err(Throttle::Global),
            "a claim of a known cluster cannot drain the reserve for all"
        );
        // Over time both refill.
        let later = t + Duration::from_secs(10);
        assert!(a.admit("c-m-junk", ip(202), later).is_ok());
        assert_eq!(a.admit("c-m-known", ip(203), later), Ok(Share::Reserved));
        // An old verification no longer counts.
        let much_later = t + RECENT + Duration::from_secs(1);
        assert_eq!(a.admit("c-m-known", ip(204), much_later), Ok(Share::Open));
    }

    #[test]
    fn an_address_shared_by_verified_agents_gets_their_shares() {
        let mut s = settings();
        s.qps = 1e4;
        s.burst = 100_000;
        s.reserved_share = 0.0;
        let a = Admission::new(s);
        let t = Instant::now();
        let nat = ip(7);
        for c in ["c-m-a", "c-m-b", "c-m-c"] {
            a.verified(c, nat, t);
        }
        // Re-verifying from the same address does not count twice.
        a.verified("c-m-a", nat, t);
        let granted = (0..100)
            .filter(|_| a.admit("c-m-x", nat, t).is_ok())
            .count();
        assert_eq!(
            granted,
            3 * 4,
            "the peer burst of 3, times 1 + 3 verified clusters"
        );
        // A cluster that moved to another address no longer counts for the first.
        a.verified("c-m-a", ip(8), t);
        a.verified("c-m-b", ip(8), t);
        a.verified("c-m-c", ip(8), t);
        let later = t + Duration::from_secs(100);
        let granted = (0..100)
            .filter(|_| a.admit("c-m-x", nat, later).is_ok())
            .count();
        assert_eq!(granted, 3, "back to one share");
        let unknown = (0..100)
            .filter(|_| a.admit("c-m-x", ip(9), later).is_ok())
            .count();
        assert_eq!(
            unknown, 3,
            "an address with no verified agent has one share"
        );
    }

    #[test]
    fn peer_tracking_is_bounded() {
        let mut s = settings();
        s.qps = 1e4;
        s.burst = 100_000;
        let a = Admission::new(s);
        let t = Instant::now();
        for n in 0..(MAX_PEERS as u32 + 100) {
            let _ = a.admit("c", Some(IpAddr::from(n.to_be_bytes())), t);
        }
        assert_eq!(a.peers(), MAX_PEERS);
    }

    #[test]
    fn no_reserved_share_means_one_open_budget() {
        let mut s = settings();
        s.reserved_share = 0.0;
        s.peer_burst = 100;
        let a = Admission::new(s);
        let t = Instant::now();
        a.verified("c-m-known", None, t);
        let granted = (0..100)
            .filter(|_| a.admit("c-m-known", ip(1), t).is_ok())
            .count();
        assert_eq!(granted, 20);
    }
}
