//! Fair shares of the edge's pre-authentication budgets (TLS handshakes in progress,
//! streams not yet authenticated) by client IP, so that one source cannot take a global
//! budget and genuine agents get in while hostile clients hold the rest:
//!
//! - **Per-IP cap**: one client IP holds at most `per_peer` permits of the open pool.
//! - **Reserved share**: `reserved_share` of the budget is only for client IPs from
//!   which an agent authenticated within the last hour ([`RecentPeers`], fed at Welcome);
//!   such an IP may also hold up to `per_peer` reserved permits once its open ones are
//!   used (so a hub restart's reconnect wave, or agents reconnecting under a flood from
//!   other addresses, still find room).
//!
//! Memory is bounded: a gate's map holds only IPs that hold a permit now (at most the
//! budget), and [`RecentPeers`] at most [`MAX_RECENT_PEERS`] addresses (the oldest go
//! first). All agents behind one NAT share its address; the defaults leave such a fleet
//! room (a handshake takes milliseconds, a stream is unauthenticated until its
//! TokenReview) and a refused client retries with its backoff.
//! Complexity: O(1) per acquire and release; O(n) pruning only when [`RecentPeers`] is full.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an authenticated agent makes its IP "recent".
pub const RECENT: Duration = crate::identity::admission::RECENT;
/// Most client IPs remembered as recently verified (~100 bytes each).
pub const MAX_RECENT_PEERS: usize = 10_000;

/// Client IPs from which an agent authenticated recently (bounded; see module docs).
#[derive(Debug, Default)]
pub struct RecentPeers {
    seen: Mutex<HashMap<IpAddr, Instant>>,
}

impl RecentPeers {
    /// Records that an agent from `ip` authenticated at `now`.
    pub fn verified(&self, ip: IpAddr, now: Instant) {
        let mut m = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if !m.contains_key(&ip) && m.len() >= MAX_RECENT_PEERS {
            m.retain(|_, at| now.saturating_duration_since(*at) < RECENT);
            if m.len() >= MAX_RECENT_PEERS
                && let Some(oldest) = m.iter().min_by_key(|(_, at)| **at).map(|(k, _)| *k)
            {
                m.remove(&oldest);
            }
        }
        m.insert(ip, now);
    }

    /// Whether an agent from `ip` authenticated within [`RECENT`] of `now`.
    pub fn contains(&self, ip: IpAddr, now: Instant) -> bool {
        let m = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        m.get(&ip)
            .is_some_and(|at| now.saturating_duration_since(*at) < RECENT)
    }

    /// Number of remembered IPs (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Why a permit was refused (metric label suffix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This client IP holds its share.
    Peer,
    /// The budget (for this client) is spent.
    Full,
}

/// The sizes of one gate.
#[derive(Debug, Clone, Copy)]
pub struct GateLimits {
    /// Permits in all.
    pub total: usize,
    /// Permits of the open pool (and of the reserve) one client IP may hold.
    pub per_peer: usize,
    /// Share of `total` kept for recently verified client IPs (0 ..= 0.9).
    pub reserved_share: f64,
}

#[derive(Debug, Default)]
struct State {
    open_used: usize,
    reserved_used: usize,
    /// Permits held per IP: (open, reserved). Only IPs holding one.
    held: HashMap<IpAddr, (usize, usize)>,
}

/// A budget shared fairly by client IP (see the module docs).
#[derive(Debug)]
pub struct PeerGate {
    open: usize,
    reserved: usize,
    per_peer: usize,
    recent: Arc<RecentPeers>,
    state: Mutex<State>,
}

/// One held permit; released on drop.
#[derive(Debug)]
pub struct GatePermit {
    gate: Arc<PeerGate>,
    ip: Option<IpAddr>,
    reserved: bool,
}

impl PeerGate {
    /// A gate of `limits`, reserving for the IPs in `recent`.
    pub fn new(limits: GateLimits, recent: Arc<RecentPeers>) -> Arc<Self> {
        let total = limits.total.max(1);
        let share = limits.reserved_share.clamp(0.0, 0.9);
        let reserved = ((total as f64) * share).floor() as usize;
        Arc::new(Self {
            open: (total - reserved).max(1),
            reserved,
            per_peer: limits.per_peer.max(1),
            recent,
            state: Mutex::new(State::default()),
        })
    }

    /// Takes a permit for a client at `ip` (None: unknown address, open pool only,
    /// without a per-IP cap).
    pub fn try_acquire(
        self: &Arc<Self>,
        ip: Option<IpAddr>,
        now: Instant,
    ) -> Result<GatePermit, Refusal> {
        let recent = ip.is_some_and(|ip| self.recent.contains(ip, now));
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (open_held, reserved_held) = ip
            .and_then(|ip| st.held.get(&ip).copied())
            .unwrap_or_default();
        let open_ok = st.open_used < self.open && (ip.is_none() || open_held < self.per_peer);
        let reserved = if open_ok {
            false
        } else if recent && st.reserved_used < self.reserved && reserved_held < self.per_peer {
            true
        } else if open_held >= self.per_peer && (!recent || reserved_held >= self.per_peer) {
            return Err(Refusal::Peer);
        } else {
            return Err(Refusal::Full);
        };
        if reserved {
            st.reserved_used += 1;
        } else {
            st.open_used += 1;
        }
        if let Some(ip) = ip {
            let e = st.held.entry(ip).or_default();
            if reserved {
                e.1 += 1;
            } else {
                e.0 += 1;
            }
        }
        Ok(GatePermit {
            gate: self.clone(),
            ip,
            reserved,
        })
    }

    /// (open, reserved) permits held now, and IPs holding one (tests, metrics).
    #[cfg(test)]
    fn used(&self) -> (usize, usize, usize) {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (st.open_used, st.reserved_used, st.held.len())
    }
}

impl Drop for GatePermit {
    fn drop(&mut self) {
        let mut st = self.gate.state.lock().unwrap_or_else(|p| p.into_inner());
        if self.reserved {
            st.reserved_used = st.reserved_used.saturating_sub(1);
        } else {
            st.open_used = st.open_used.saturating_sub(1);
        }
        if let Some(ip) = self.ip
            && let Some(e) = st.held.get_mut(&ip)
        {
            let n = if self.reserved { &mut e.1 } else { &mut e.0 };
            *n = n.saturating_sub(1);
            if *e == (0, 0) {
                st.held.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> Option<IpAddr> {
        Some(IpAddr::from([127, 0, 0, n]))
    }

    fn gate(recent: &Arc<RecentPeers>) -> Arc<PeerGate> {
        PeerGate::new(
            GateLimits {
                total: 10,
                per_peer: 3,
                reserved_share: 0.2,
            },
            recent.clone(),
        )
    }

    #[test]
    fn one_ip_cannot_take_the_budget() {
        let recent = Arc::new(RecentPeers::default());
        let g = gate(&recent);
        let t = Instant::now();
        let held: Vec<_> = (0..3).map(|_| g.try_acquire(ip(2), t).unwrap()).collect();
        assert_eq!(g.try_acquire(ip(2), t).unwrap_err(), Refusal::Peer);
        assert!(g.try_acquire(ip(3), t).is_ok(), "another IP still gets in");
        drop(held);
        assert!(g.try_acquire(ip(2), t).is_ok(), "released on drop");
    }

    #[test]
    fn recently_verified_ips_keep_the_reserve_when_others_fill_the_rest() {
        let recent = Arc::new(RecentPeers::default());
        let g = gate(&recent);
        let t = Instant::now();
        recent.verified(IpAddr::from([127, 0, 0, 1]), t);
        // Hostile IPs fill the open pool (8 of 10).
        let hostile: Vec<_> = (2..=4u8)
            .flat_map(|n| {
                (0..3)
                    .filter_map(|_| g.try_acquire(ip(n), t).ok())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(hostile.len(), 8);
        assert_eq!(g.try_acquire(ip(5), t).unwrap_err(), Refusal::Full);
        // The genuine IP gets the reserve, up to its own cap; unknown IPs do not.
        let a = g.try_acquire(ip(1), t).unwrap();
        let b = g.try_acquire(ip(1), t).unwrap();
        assert!(a.reserved && b.reserved);
        assert_eq!(g.try_acquire(ip(1), t).unwrap_err(), Refusal::Full);
        assert_eq!(g.used(), (8, 2, 4));
        drop((a, b, hostile));
        assert_eq!(g.used(), (0, 0, 0), "nothing is kept for released permits");
        // An old verification no longer counts.
        assert!(!recent.contains(IpAddr::from([127, 0, 0, 1]), t + RECENT));
    }

    #[test]
    fn recent_peers_are_bounded() {
        let recent = RecentPeers::default();
        let t = Instant::now();
        for n in 0..(MAX_RECENT_PEERS as u32 + 50) {
            recent.verified(
                IpAddr::from(n.to_be_bytes()),
                t + Duration::from_millis(n.into()),
            );
        }
        assert_eq!(recent.len(), MAX_RECENT_PEERS);
        let newest = MAX_RECENT_PEERS as u32 + 49;
        assert!(recent.contains(IpAddr::from(newest.to_be_bytes()), t));
        assert!(
            !recent.contains(IpAddr::from(0u32.to_be_bytes()), t),
            "the oldest went first"
        );
    }
}
