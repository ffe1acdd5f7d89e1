//! Shared code of vclink's packaging checks: render the Helm charts in `charts/` with
//! Helm's own Go SDK (PyPI `helm-python-sdk`, no helm binary needed), keep the rendered
//! output as reviewed snapshots, and hand the rendered objects to tests — including the
//! exact RBAC the charts grant, so end-to-end tests can run hub and agent under it.
#![forbid(unsafe_code)]

pub mod cases;
pub mod fleet;
pub mod helm;
pub mod links;
pub mod metrics;
pub mod objects;
pub mod readme;
pub mod snapshot;

pub use cases::{CASES, Case};
pub use helm::{Rendered, render};
pub use objects::{Object, rbac_objects};

use std::path::PathBuf;

/// Root of the repository (this crate lives in `tests/packaging`). `cargo test` sets
/// CARGO_MANIFEST_DIR at run time to the running test's crate (this one, or
/// `tests/harness`: both two levels down); the compile-time path is the fallback, so a
/// build artefact carried over from another checkout does not render stale charts.
pub fn repo_root() -> PathBuf {
    let root_of = |here: PathBuf| {
        here.parent()
            .and_then(|p| p.parent())
            .map(PathBuf::from)
            .unwrap_or(here)
    };
    if let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR") {
        let root = root_of(PathBuf::from(dir));
        if root.join("charts/hub/Chart.yaml").is_file() {
            return root;
        }
    }
    root_of(PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// Errors of rendering and snapshot handling.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("cannot prepare the Helm SDK venv at {path}: {reason}")]
    Venv { path: String, reason: String },
    #[error("rendering {case} failed: {reason}")]
    Render { case: String, reason: String },
    #[error("rendered YAML of {case} does not parse: {source}")]
    Yaml {
        case: String,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error("I/O on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, ChartError>;
