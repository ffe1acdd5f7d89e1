//! Helm through its Go SDK: a cached Python venv with the PyPI package
//! `helm-python-sdk` (it bundles Helm v4's Go SDK as a shared library, so no helm binary
//! and no Go toolchain), and `scripts/render.py`, which lints strictly, validates the
//! values against `values.schema.json` and renders a chart offline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::{Case, ChartError, Result};

/// Pinned so a new Helm release cannot change the snapshots behind our back.
pub const HELM_SDK: &str = "helm-python-sdk==0.2.2";

/// What `render.py` reports for one case.
#[derive(Debug, Deserialize)]
pub struct Rendered {
    /// `helm lint --strict` report: `messages` (severity 1 info, 2 warning, 3 error) and `errors`.
    pub lint: serde_json::Value,
    /// Why the values do not match `values.schema.json`, if they do not.
    pub schema_error: Option<String>,
    /// Template path → rendered text (empty when the schema check failed).
    pub manifests: BTreeMap<String, String>,
}

impl Rendered {
    /// Lint findings of severity warning or error (strict lint fails on both).
    pub fn lint_problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self.lint["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e.as_str().map(str::to_string))
            .collect();
        for m in self.lint["messages"].as_array().into_iter().flatten() {
            if m["severity"].as_u64().unwrap_or(0) >= 2 {
                out.push(format!(
                    "{}: {}",
                    m["path"].as_str().unwrap_or("?"),
                    m["error"].as_str().unwrap_or("?")
                ));
            }
        }
        out
    }
}

fn venv_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("VCLINK_HELM_VENV") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache/vclink/helm-venv")
}

fn python_in(venv: &Path) -> PathBuf {
    venv.join("bin/python")
}

fn sdk_importable(python: &Path) -> bool {
    Command::new(python)
        .args([
            "-c",
            "import helm_python, sys; sys.exit(0 if helm_python.__version__ == '0.2.2' else 1)",
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn run(cmd: &mut Command, what: &str, venv: &Path) -> Result<()> {
    let out = cmd.output().map_err(|e| ChartError::Venv {
        path: venv.display().to_string(),
        reason: format!("{what}: {e}"),
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ChartError::Venv {
            path: venv.display().to_string(),
            reason: format!(
                "{what} failed: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ),
        })
    }
}

/// The venv's Python, creating the venv and installing the SDK on first use. Built in a
/// sibling directory and renamed into place, so an interrupted install is never reused.
pub fn python() -> Result<PathBuf> {
    static PY: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    PY.get_or_init(|| {
        let venv = venv_dir();
        let py = python_in(&venv);
        if sdk_importable(&py) {
            return Ok(py);
        }
        let staging = venv.with_extension(format!("staging-{}", std::process::id()));
        let build = || -> Result<()> {
            if let Some(parent) = staging.parent() {
                std::fs::create_dir_all(parent).map_err(|e| ChartError::Io {
                    path: parent.display().to_string(),
                    source: e,
                })?;
            }
            let _ = std::fs::remove_dir_all(&staging);
            run(
                Command::new("python3").args(["-m", "venv"]).arg(&staging),
                "python3 -m venv",
                &staging,
            )?;
            run(
                Command::new(python_in(&staging)).args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    HELM_SDK,
                ]),
                "pip install helm-python-sdk",
                &staging,
            )?;
            let _ = std::fs::remove_dir_all(&venv);
            std::fs::rename(&staging, &venv).map_err(|e| ChartError::Io {
                path: venv.display().to_string(),
                source: e,
            })
        };
        match build() {
            // A venv's scripts hold absolute paths, but `bin/python` is a symlink to the
            // base interpreter, so calling it from the renamed directory works.
            Ok(()) if sdk_importable(&py) => Ok(py),
            Ok(()) => Err(format!(
                "{HELM_SDK} installed into {} but does not import",
                venv.display()
            )),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                Err(e.to_string())
            }
        }
    })
    .clone()
    .map_err(|reason| ChartError::Venv {
        path: venv_dir().display().to_string(),
        reason,
    })
}

/// Lints and renders one case with extra values files appended after the case's own.
pub fn render_with(case: &Case, extra_values: &[PathBuf]) -> Result<Rendered> {
    let mut values = case.values_paths();
    values.extend_from_slice(extra_values);
    render_dir(
        case.name,
        &case.chart_dir(),
        case.release,
        case.namespace,
        &values,
    )
}

/// Lints and renders the chart in `chart_dir` (any directory, e.g. a chart as Fleet
/// assembles it from a bundle) with `values` files merged in order; `name` labels errors.
pub fn render_dir(
    name: &str,
    chart_dir: &Path,
    release: &str,
    namespace: &str,
    values: &[PathBuf],
) -> Result<Rendered> {
    let py = python()?;
    let script = crate::repo_root().join("tests/packaging/scripts/render.py");
    let mut cmd = Command::new(py);
    cmd.arg(script).arg(chart_dir).arg(release).arg(namespace);
    cmd.args(values);
    let out = cmd.output().map_err(|e| ChartError::Render {
        case: name.into(),
        reason: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(ChartError::Render {
            case: name.into(),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    serde_json::from_slice(&out.stdout).map_err(|e| ChartError::Render {
        case: name.into(),
        reason: format!("render.py printed no JSON report: {e}"),
    })
}

/// Lints and renders one case.
pub fn render(case: &Case) -> Result<Rendered> {
    render_with(case, &[])
}
