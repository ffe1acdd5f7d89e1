//! Fault injection and counters. Tests arm a [`FaultPoint`] with a [`Fault`] for N
//! occurrences; the simulator consumes one occurrence each time it reaches that point.
//! [`SimStats`] is a snapshot of what the simulator has served, for assertions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Where a fault can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultPoint {
    /// `GET /v3/import/…` answers the fault.
    ImportEndpoint,
    /// `/k8s/clusters/…` answers the fault.
    Proxy,
    /// The provisioning controller fails to create the management cluster.
    CreateManagementCluster,
    /// The management controller fails to create the registration token.
    CreateRegistrationToken,
    /// The CRTB admission webhook answers the fault.
    WebhookCrtb,
    /// The provisioning-cluster admission webhook answers the fault.
    WebhookProvisioningCluster,
}

/// What happens at an armed point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// HTTP status (or admission denial / controller error with that code).
    Status(u16),
    /// Hang past the caller's deadline (HTTP, webhook) or stall the reaction.
    Timeout,
}

/// Cloneable handle to arm faults.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    armed: Arc<Mutex<HashMap<FaultPoint, (Fault, u32)>>>,
}

impl Faults {
    /// Arms `point` so the next `times` occurrences answer `fault`.
    pub fn inject(&self, point: FaultPoint, fault: Fault, times: u32) {
        let mut armed = self.armed.lock().unwrap_or_else(|e| e.into_inner());
        if times == 0 {
            armed.remove(&point);
        } else {
            armed.insert(point, (fault, times));
        }
    }

    /// Consumes one occurrence at `point`, if armed.
    pub fn take(&self, point: FaultPoint) -> Option<Fault> {
        let mut armed = self.armed.lock().unwrap_or_else(|e| e.into_inner());
        let (fault, left) = armed.get_mut(&point)?;
        let fault = *fault;
        *left -= 1;
        if *left == 0 {
            armed.remove(&point);
        }
        Some(fault)
    }
}

/// Live counters shared by the simulator's parts.
#[derive(Debug, Default)]
pub struct Counters {
    pub manifests_served: AtomicU64,
    pub manifests_refused: AtomicU64,
    pub webhook_calls: AtomicU64,
    pub webhook_denials: AtomicU64,
    pub proxy_requests: AtomicU64,
    pub proxy_unauthorized: AtomicU64,
    pub reconciles: AtomicU64,
    pub faults_fired: AtomicU64,
}

impl Counters {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> SimStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SimStats {
            manifests_served: g(&self.manifests_served),
            manifests_refused: g(&self.manifests_refused),
            webhook_calls: g(&self.webhook_calls),
            webhook_denials: g(&self.webhook_denials),
            proxy_requests: g(&self.proxy_requests),
            proxy_unauthorized: g(&self.proxy_unauthorized),
            reconciles: g(&self.reconciles),
            faults_fired: g(&self.faults_fired),
        }
    }
}

/// A snapshot of the simulator's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Import manifests served (200).
    pub manifests_served: u64,
    /// Import requests refused (400/404/fault).
    pub manifests_refused: u64,
    /// Admission reviews received.
    pub webhook_calls: u64,
    /// Admission reviews denied.
    pub webhook_denials: u64,
    /// Requests to `/k8s/clusters/…`.
    pub proxy_requests: u64,
    /// Proxy requests refused with 401.
    pub proxy_unauthorized: u64,
    /// Controller reconciliations run.
    pub reconciles: u64,
    /// Injected faults that fired.
    pub faults_fired: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_fires_n_times() {
        let f = Faults::default();
        assert_eq!(f.take(FaultPoint::Proxy), None);
        f.inject(FaultPoint::Proxy, Fault::Status(500), 2);
        assert_eq!(f.take(FaultPoint::Proxy), Some(Fault::Status(500)));
        assert_eq!(f.take(FaultPoint::ImportEndpoint), None);
        assert_eq!(f.take(FaultPoint::Proxy), Some(Fault::Status(500)));
        assert_eq!(f.take(FaultPoint::Proxy), None);
    }
}
