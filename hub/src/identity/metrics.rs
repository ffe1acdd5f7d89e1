//! Metrics of agent identity: TokenReview outcomes, stream re-verifications and the
//! rotation of the hub's Rancher token. Registered into the hub's registry by
//! the hub's `Metrics::register`; labels are fixed strings only.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::credential::RotationObserver;

type Labels = [(&'static str, &'static str); 1];

/// See the module docs. Clones share the counters.
#[derive(Clone, Debug, Default)]
pub struct IdentityMetrics {
    /// `vclink_hub_agent_authentications_total{outcome}`.
    pub authentications: Family<Labels, Counter>,
    /// `vclink_hub_tokenreview_requests_total{outcome}`: calls through Rancher's proxy.
    pub tokenreviews: Family<Labels, Counter>,
    /// `vclink_hub_rancher_token_rotations_total`.
    pub rotations: Counter,
    /// `vclink_hub_rancher_token_errors_total`.
    pub token_errors: Counter,
}

impl IdentityMetrics {
    /// Registers every counter.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "agent_authentications",
            "Agent authentications (connects, re-verifications, token rotations), by outcome",
            self.authentications.clone(),
        );
        r.register(
            "tokenreview_requests",
            "TokenReviews sent through Rancher's cluster proxy, by outcome",
            self.tokenreviews.clone(),
        );
        r.register(
            "rancher_token_rotations",
            "Rancher tokens the hub issued for itself after the first",
            self.rotations.clone(),
        );
        r.register(
            "rancher_token_errors",
            "Failures creating or deleting the hub's Rancher tokens",
            self.token_errors.clone(),
        );
    }

    /// Counts an authentication outcome.
    pub fn auth(&self, outcome: &'static str) {
        self.authentications
            .get_or_create(&[("outcome", outcome)])
            .inc();
    }

    /// Counts a TokenReview call outcome.
    pub fn review(&self, outcome: &'static str) {
        self.tokenreviews
            .get_or_create(&[("outcome", outcome)])
            .inc();
    }
}

impl RotationObserver for IdentityMetrics {
    fn rotated(&self) {
        self.rotations.inc();
    }

    fn failed(&self) {
        self.token_errors.inc();
    }
}
