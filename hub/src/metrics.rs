//! Prometheus metrics of the hub (prometheus-client). Label values are low-cardinality
//! constants: never a cluster id, name or anything an agent can choose freely.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Labels = [(&'static str, &'static str); 1];

/// Help text of `vclink_hub_leader`, also served by a standby (see `http.rs`).
pub const LEADER_HELP: &str =
    "1 while this replica holds the leader lease (always 1 without leader election)";

/// All hub metrics.
pub struct Metrics {
    registry: Registry,
    /// `vclink_hub_agents_connected`
    pub agents_connected: Gauge,
    /// `vclink_hub_vclusters{state}` (refreshed at scrape time).
    pub vclusters: Family<Labels, Gauge>,
    /// `vclink_hub_unproven_clusters{reason}`: provisioning clusters with vclink labels
    /// but no valid vclink proof (refreshed at scrape time).
    pub unproven_clusters: Family<Labels, Gauge>,
    /// `vclink_hub_registrations_sent_total`
    pub registrations_sent: Counter,
    /// `vclink_hub_register_latency_seconds`: token seen → Register sent.
    pub register_latency: Histogram,
    /// `vclink_hub_rejections_total{reason}`
    pub rejections: Family<Labels, Counter>,
    /// `vclink_hub_vcluster_refusals_total{reason}`: reported vClusters held as refused
    /// (`foreign_project`, `foreign_cluster`, `over_agent_limit`, `over_namespace_limit`);
    /// their stream goes on.
    pub vcluster_refusals: Family<Labels, Counter>,
    /// `vclink_hub_reconcile_errors_total{kind}`
    pub reconcile_errors: Family<Labels, Counter>,
    /// `vclink_hub_api_requests_total{verb}`
    pub api_requests: Family<Labels, Counter>,
    /// `vclink_hub_owner_binding_errors_total{reason}`: owner CRTBs that could not be
    /// created or deleted (reason `refused`, `conflict`, `api`).
    pub owner_binding_errors: Family<Labels, Counter>,
    /// `vclink_hub_owner_api_requests_total{resource,verb}`: Kubernetes requests of owner
    /// sync (`crtb`, the temporary grant `rolebinding`, `cluster` relabels).
    pub owner_api_requests: Family<[(&'static str, &'static str); 2], Counter>,
    /// `vclink_hub_leader`: 1 while this replica leads (standbys serve 0 themselves).
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("vclink_hub");
        let agents_connected = Gauge::default();
        registry.register(
            "agents_connected",
            "Agents with a live stream",
            agents_connected.clone(),
        );
        let vclusters = Family::<Labels, Gauge>::default();
        registry.register(
            "vclusters",
            "vClusters reported by live agents, by Rancher-side state",
            vclusters.clone(),
        );
        let unproven_clusters = Family::<Labels, Gauge>::default();
        registry.register(
            "unproven_clusters",
            "Provisioning clusters carrying vclink labels without a valid vclink proof (ignored), by reason",
            unproven_clusters.clone(),
        );
        let registrations_sent = Counter::default();
        registry.register(
            "registrations_sent",
            "Register messages sent to agents",
            registrations_sent.clone(),
        );
        let register_latency = Histogram::new([
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
        ]);
        registry.register(
            "register_latency_seconds",
            "Time from the registration token becoming known to Register being sent",
            register_latency.clone(),
        );
        let rejections = Family::<Labels, Counter>::default();
        registry.register(
            "rejections",
            "Agent streams or messages refused, by reason",
            rejections.clone(),
        );
        let vcluster_refusals = Family::<Labels, Counter>::default();
        registry.register(
            "vcluster_refusals",
            "Reported vClusters refused one by one (nothing created or deleted for them), by reason",
            vcluster_refusals.clone(),
        );
        let reconcile_errors = Family::<Labels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconcile errors, by kind",
            reconcile_errors.clone(),
        );
        let api_requests = Family::<Labels, Counter>::default();
        registry.register(
            "api_requests",
            "Kubernetes API requests made by reconcile, by verb",
            api_requests.clone(),
        );
        let owner_binding_errors = Family::<Labels, Counter>::default();
        registry.register(
            "owner_binding_errors",
            "Owner bindings (CRTBs) that could not be created or deleted, by reason",
            owner_binding_errors.clone(),
        );
        let owner_api_requests = Family::<[(&'static str, &'static str); 2], Counter>::default();
        registry.register(
            "owner_api_requests",
            "Kubernetes API requests made by owner sync, by resource and verb",
            owner_api_requests.clone(),
        );
        let leader = Gauge::default();
        registry.register("leader", LEADER_HELP, leader.clone());
        Self {
            registry,
            agents_connected,
            vclusters,
            unproven_clusters,
            registrations_sent,
            register_latency,
            rejections,
            vcluster_refusals,
            reconcile_errors,
            api_requests,
            owner_binding_errors,
            owner_api_requests,
            leader,
        }
    }

    /// Lets a part of the hub register metrics of its own in the hub's registry (the
    /// identity metrics: TokenReviews, Rancher token rotation).
    pub fn register(&mut self, add: impl FnOnce(&mut Registry)) {
        add(&mut self.registry);
    }

    /// Counts a refusal.
    pub fn reject(&self, reason: &'static str) {
        self.rejections.get_or_create(&[("reason", reason)]).inc();
    }

    /// Counts a vCluster newly refused (its stream goes on).
    pub fn refuse_vcluster(&self, reason: &'static str) {
        self.vcluster_refusals
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// Counts an API request.
    pub fn api(&self, verb: &'static str) {
        self.api_requests.get_or_create(&[("verb", verb)]).inc();
    }

    /// Counts a reconcile error.
    pub fn reconcile_error(&self, kind: &'static str) {
        self.reconcile_errors.get_or_create(&[("kind", kind)]).inc();
    }

    /// Text exposition format.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut s, &self.registry);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_exposed() {
        let m = Metrics::new();
        m.reject("invalid");
        m.api("create");
        m.reconcile_error("api");
        m.vclusters.get_or_create(&[("state", "pending")]).set(2);
        let t = m.encode();
        for name in [
            "vclink_hub_agents_connected",
            "vclink_hub_vclusters{state=\"pending\"} 2",
            "vclink_hub_registrations_sent_total",
            "vclink_hub_register_latency_seconds_bucket",
            "vclink_hub_rejections_total{reason=\"invalid\"} 1",
            "vclink_hub_reconcile_errors_total{kind=\"api\"} 1",
            "vclink_hub_api_requests_total{verb=\"create\"} 1",
        ] {
            assert!(t.contains(name), "{name} missing in\n{t}");
        }
    }
}
