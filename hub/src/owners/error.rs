//! Why a write of owner sync failed, told apart for the metric
//! (`vclink_hub_owner_binding_errors_total{reason}`), the log and the vCluster's Status,
//! and whether retrying with backoff can help.

/// A write of owner sync that failed.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    /// The API server or Rancher's webhook refused it (e.g. the escalation check).
    #[error("{what}: refused: {message}")]
    Refused {
        /// What was being done.
        what: String,
        /// The refusal, as the API server put it.
        message: String,
    },
    /// The name is held by a CRTB vclink did not create.
    #[error("{what}: the name {name} is taken by a binding vclink did not create")]
    Conflict {
        /// What was being done.
        what: String,
        /// The contested name.
        name: String,
    },
    /// The hub's Rancher user owns not the cluster (it did not create it: e.g. one adopted
    /// from the vcluster-rancher-operator), so Rancher would refuse every write there.
    /// Not retried: the CRTB watch requeues the vCluster when an owner binding appears.
    #[error(
        "vclink's Rancher user {user} is not an owner of Rancher cluster {cluster} (its creator is {creator}), so vclink cannot manage its owner bindings; grant {user} cluster-owner in that cluster (see docs/migration.md)"
    )]
    NotOwner {
        /// The hub's Rancher user.
        user: String,
        /// The cluster's management id.
        cluster: String,
        /// Who Rancher's creator binding names.
        creator: String,
    },
    /// Any other API failure.
    #[error("{what}: {source}")]
    Api {
        /// What was being done.
        what: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

impl OwnerError {
    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Refused { .. } => "refused",
            Self::Conflict { .. } => "conflict",
            Self::NotOwner { .. } => "not-owner",
            Self::Api { .. } => "api",
        }
    }

    /// Whether retrying (with backoff) can help; a missing ownership waits for the watch.
    pub fn retryable(&self) -> bool {
        !matches!(self, Self::NotOwner { .. })
    }

    pub(crate) fn from_kube(what: String, e: kube::Error) -> Self {
        match e {
            kube::Error::Api(s) if matches!(s.code, 400 | 403 | 422) => Self::Refused {
                what,
                message: s.message,
            },
            source => Self::Api { what, source },
        }
    }
}
