//! How a Rancher simulator is configured: which Rancher version it plays, how it
//! presents registration tokens (docs/rancher.md: Registration token and import manifest), the agent TLS mode, reaction
//! delays and the Fleet workspace.

use std::time::Duration;

/// Options for [`crate::RancherSim::start`].
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// The Rancher version whose behaviour is played.
    pub version: RancherVersion,
    /// How registration tokens are presented; `None` = the version's default.
    pub token_mode: Option<TokenMode>,
    /// The `agent-tls-mode` setting.
    pub agent_tls_mode: AgentTlsMode,
    /// Random delay before each controller reaction.
    pub delays: Delays,
    /// The default Fleet workspace (`fleet-default`).
    pub fleet_workspace: String,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            version: RancherVersion::V2_15,
            token_mode: None,
            agent_tls_mode: AgentTlsMode::Strict,
            delays: Delays::default(),
            fleet_workspace: "fleet-default".to_string(),
        }
    }
}

impl SimOptions {
    /// The token mode in effect (explicit, else the version's default).
    pub fn effective_token_mode(&self) -> TokenMode {
        self.token_mode.unwrap_or(match self.version {
            RancherVersion::V2_13 => TokenMode::Legacy,
            RancherVersion::V2_14 | RancherVersion::V2_15 => TokenMode::SecretPlaceholder,
        })
    }
}

/// The Rancher version whose differences are simulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RancherVersion {
    /// Legacy token in status, `Ready` decides readiness, no management status
    /// subresource, no duplicate-CRTB 409 (webhook v0.9).
    V2_13,
    /// `{token}` placeholder + Secret, `Ready` decides readiness; webhook v0.10 refuses
    /// any new CRTB granting a role its subject already holds in that cluster (409),
    /// whatever its name.
    V2_14,
    /// As 2.14, plus `Connected` decides readiness, the management cluster has a status
    /// subresource, and webhook v0.11 gives `generateName` CRTBs a deterministic name.
    V2_15,
}

impl RancherVersion {
    /// Rancher 2.15 writes management-cluster status through `/status`.
    pub fn mgmt_status_subresource(self) -> bool {
        matches!(self, RancherVersion::V2_15)
    }
    /// webhook v0.11 (Rancher 2.15) gives `generateName` CRTBs a deterministic name
    /// (rancher/webhook clusterroletemplatebinding/mutator.go).
    pub fn deterministic_crtb_names(self) -> bool {
        matches!(self, RancherVersion::V2_15)
    }
    /// webhook v0.10 (Rancher 2.14) refuses a CRTB whose role and subject an existing
    /// CRTB of the cluster already has (validateDuplicates in
    /// rancher/webhook clusterroletemplatebinding/validator.go).
    pub fn refuses_duplicate_crtbs(self) -> bool {
        !matches!(self, RancherVersion::V2_13)
    }
    /// The management condition that turns provisioning `status.ready` true.
    pub fn readiness_condition(self) -> &'static str {
        match self {
            RancherVersion::V2_15 => "Connected",
            _ => "Ready",
        }
    }
}

/// How the registration token is presented (docs/rancher.md: Registration token and import manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenMode {
    /// `status.token` holds the token; URLs carry it.
    Legacy,
    /// `status.token` is empty, `status.tokenSecretName` names a Secret (key `token`),
    /// URLs and commands carry the literal `{token}`.
    SecretPlaceholder,
}

/// The `agent-tls-mode` setting (docs/rancher.md: Registration token and import manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AgentTlsMode {
    /// The agent pins Rancher's CA (`strict`).
    #[default]
    Strict,
    /// The agent uses system roots (`system-store`).
    SystemStore,
}

impl AgentTlsMode {
    /// The setting's value.
    pub fn setting_value(self) -> &'static str {
        match self {
            AgentTlsMode::Strict => "strict",
            AgentTlsMode::SystemStore => "system-store",
        }
    }
}

/// Random delay before each controller reaction, uniformly in `[min, max]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Delays {
    pub min: Duration,
    pub max: Duration,
}

impl Delays {
    /// A random duration in `[min, max]` (`min` when `max <= min`).
    pub fn pick(&self) -> Duration {
        if self.max <= self.min {
            return self.min;
        }
        let span = (self.max - self.min).as_millis() as u64;
        let extra = rand::random_range(0..=span);
        self.min + Duration::from_millis(extra)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_defaults() {
        let mut o = SimOptions {
            version: RancherVersion::V2_13,
            ..Default::default()
        };
        assert_eq!(o.effective_token_mode(), TokenMode::Legacy);
        o.version = RancherVersion::V2_14;
        assert_eq!(o.effective_token_mode(), TokenMode::SecretPlaceholder);
        o.token_mode = Some(TokenMode::Legacy);
        assert_eq!(o.effective_token_mode(), TokenMode::Legacy);
        assert_eq!(RancherVersion::V2_14.readiness_condition(), "Ready");
        assert_eq!(RancherVersion::V2_15.readiness_condition(), "Connected");
        assert!(!RancherVersion::V2_13.refuses_duplicate_crtbs());
        assert!(RancherVersion::V2_14.refuses_duplicate_crtbs());
        assert!(!RancherVersion::V2_14.deterministic_crtb_names());
        assert!(RancherVersion::V2_15.deterministic_crtb_names());
    }

    #[test]
    fn delays_stay_in_range() {
        let d = Delays {
            min: Duration::from_millis(10),
            max: Duration::from_millis(20),
        };
        for _ in 0..100 {
            let p = d.pick();
            assert!(p >= d.min && p <= d.max);
        }
        assert_eq!(Delays::default().pick(), Duration::ZERO);
    }
}
