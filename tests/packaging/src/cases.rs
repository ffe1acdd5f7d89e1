//! The render cases: each is one chart with the values files a user would pass
//! (`tests/packaging/values/*.yaml`), and gives one snapshot `tests/packaging/rendered/<name>.yaml`.

use std::path::PathBuf;

/// One chart rendered with one set of values files.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// Snapshot name.
    pub name: &'static str,
    /// Chart directory under `charts/`.
    pub chart: &'static str,
    /// Helm release name.
    pub release: &'static str,
    /// Release namespace.
    pub namespace: &'static str,
    /// Values files under `tests/packaging/values/`, merged in order.
    pub values: &'static [&'static str],
}

impl Case {
    /// Absolute chart directory.
    pub fn chart_dir(&self) -> PathBuf {
        crate::repo_root().join("charts").join(self.chart)
    }

    /// Absolute paths of the values files.
    pub fn values_paths(&self) -> Vec<PathBuf> {
        let dir = crate::repo_root().join("tests/packaging/values");
        self.values.iter().map(|v| dir.join(v)).collect()
    }

    /// Absolute path of the snapshot.
    pub fn snapshot_path(&self) -> PathBuf {
        crate::repo_root()
            .join("tests/packaging/rendered")
            .join(format!("{}.yaml", self.name))
    }
}

/// Every case, as a new user would install: defaults, cert-manager, air-gapped registry,
/// monitoring + NetworkPolicy, Rancher's Apps page for the hub; defaults, air-gapped and
/// the Apps page for the agent.
pub const CASES: &[Case] = &[
    Case {
        name: "hub-default",
        chart: "hub",
        release: "vclink-hub",
        namespace: "vclink-system",
        values: &["hub-default.yaml"],
    },
    Case {
        name: "hub-cert-manager",
        chart: "hub",
        release: "vclink-hub",
        namespace: "vclink-system",
        values: &["hub-cert-manager.yaml"],
    },
    Case {
        name: "hub-custom-registry",
        chart: "hub",
        release: "vclink-hub",
        namespace: "vclink-system",
        values: &["hub-custom-registry.yaml"],
    },
    Case {
        name: "hub-monitoring",
        chart: "hub",
        release: "vclink-hub",
        namespace: "vclink-system",
        values: &["hub-monitoring.yaml"],
    },
    Case {
        name: "hub-rancher-apps",
        chart: "hub",
        release: "vclink-hub",
        namespace: "vclink-system",
        values: &["hub-rancher-apps.yaml"],
    },
    Case {
        name: "agent-default",
        chart: "agent",
        release: "vclink-agent",
        namespace: "vclink-system",
        values: &["agent-default.yaml"],
    },
    Case {
        name: "agent-custom-registry",
        chart: "agent",
        release: "vclink-agent",
        namespace: "vclink-system",
        values: &["agent-custom-registry.yaml"],
    },
    Case {
        name: "agent-rancher-apps",
        chart: "agent",
        release: "vclink-agent",
        namespace: "vclink-system",
        values: &["agent-rancher-apps.yaml"],
    },
];

/// Looks a case up by name.
pub fn case(name: &str) -> Option<&'static Case> {
    CASES.iter().find(|c| c.name == name)
}
