//! The Rancher simulator's error type.

/// Errors inside the simulator; `anyhow` is used only at the public API.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("object is malformed: {0}")]
    Malformed(String),
    #[error("injected fault: {0}")]
    Injected(String),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("tls: {0}")]
    Tls(String),
}

pub type Result<T, E = SimError> = std::result::Result<T, E>;

/// True for a 404 from the API server.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// True for a 409 from the API server.
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}
