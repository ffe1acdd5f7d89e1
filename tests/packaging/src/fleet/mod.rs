//! The Fleet bundle as Fleet itself resolves it, so a test can prove the GitRepo deploys
//! the chart instead of trusting that a path exists. Follows rancher/fleet's
//! `internal/bundlereader` (read.go, resources.go, loaddirectory.go, style.go): only the
//! files under the GitRepo path are read; hidden files and directories are skipped;
//! `.fleetignore` patterns (matched against each base name, inherited by subdirectories)
//! drop files; `fleet.yaml` itself is no resource; and the chart is the resource named
//! `<helm.chart>/Chart.yaml` — a `helm.chart` pointing outside the path finds nothing, and
//! Fleet then deploys the directory as raw YAML instead of the chart.
//! Per-cluster targeting and values templating live in [`targets`] and [`template`].

pub mod glob;
pub mod targets;
pub mod template;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde_json::Value;

/// Why a bundle cannot be resolved the way Fleet would deploy it.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("I/O on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid YAML: {reason}")]
    Yaml { path: String, reason: String },
    #[error(
        "helm.chart {chart:?} resolves to {wanted}, which is not among the bundle's files \
         (Fleet loads only files under the GitRepo path {base}); Fleet would deploy the \
         directory as raw YAML, not the chart"
    )]
    ChartNotInBundle {
        chart: String,
        wanted: String,
        base: String,
    },
    #[error("symlink {0} points outside the bundle (Fleet refuses it)")]
    SymlinkEscapes(String),
    #[error("fleet.yaml template: {0}")]
    Template(String),
    #[error("fleet.yaml targets: {0}")]
    Targets(String),
}

/// A bundle as Fleet's reader builds it from one GitRepo path.
#[derive(Debug)]
pub struct Bundle {
    /// The GitRepo path (absolute).
    pub base: PathBuf,
    /// `fleet.yaml` as JSON (`{}` when there is none, as in Fleet).
    pub fleet_yaml: Value,
    /// Resource name (relative, `/`-separated) → content.
    pub resources: BTreeMap<String, Vec<u8>>,
    /// Directory of the chart inside the bundle (`""` for the bundle root).
    pub chart_dir: String,
}

impl Bundle {
    /// The chart's files (names relative to the chart directory), as Fleet's agent moves
    /// them into the chart it installs (`internal/helmdeployer/render/helm.go`, `move`).
    pub fn chart_files(&self) -> BTreeMap<String, &[u8]> {
        let prefix = if self.chart_dir.is_empty() {
            String::new()
        } else {
            format!("{}/", self.chart_dir)
        };
        self.resources
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(&prefix)
                    .map(|rest| (rest.to_string(), v.as_slice()))
            })
            .collect()
    }

    /// Writes the chart's files into `dir` (a directory Helm can load).
    pub fn write_chart(&self, dir: &Path) -> Result<(), BundleError> {
        for (name, data) in self.chart_files() {
            let path = dir.join(&name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
            }
            std::fs::write(&path, data).map_err(|e| io(&path, e))?;
        }
        Ok(())
    }
}

fn io(path: &Path, source: std::io::Error) -> BundleError {
    BundleError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Reads the bundle at `repo_root/gitrepo_path` as Fleet's bundle reader does.
pub fn read_bundle(repo_root: &Path, gitrepo_path: &str) -> Result<Bundle, BundleError> {
    let base = repo_root.join(gitrepo_path);
    let fleet_yaml = match ["fleet.yaml", "fleet.yml"]
        .iter()
        .map(|n| base.join(n))
        .find(|p| p.is_file())
    {
        Some(p) => {
            let text = std::fs::read_to_string(&p).map_err(|e| io(&p, e))?;
            serde_yaml_ng::from_str::<Value>(&text).map_err(|e| BundleError::Yaml {
                path: p.display().to_string(),
                reason: e.to_string(),
            })?
        }
        None => Value::Object(Default::default()),
    };
    // ignoreApplyConfigs: fleet.yaml and the values files it names are options, not resources.
    let mut skip: Vec<String> = vec!["fleet.yaml".into(), "fleet.yml".into()];
    for vf in fleet_yaml["helm"]["valuesFiles"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(s) = vf.as_str() {
            skip.push(s.to_string());
            if let Some(b) = Path::new(s).file_name() {
                skip.push(b.to_string_lossy().into_owned());
            }
        }
    }
    let mut resources = BTreeMap::new();
    walk(&base, &base, &[], &skip, &mut resources)?;
    let chart = fleet_yaml["helm"]["chart"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let repo = fleet_yaml["helm"]["repo"].as_str().unwrap_or("");
    // style.go chartPath: join(helm.chart or helm.repo, "Chart.yaml"), leading "/" cut.
    let wanted = join_clean(if chart.is_empty() { repo } else { &chart }, "Chart.yaml");
    if !resources.contains_key(&wanted) {
        return Err(BundleError::ChartNotInBundle {
            chart,
            wanted,
            base: gitrepo_path.into(),
        });
    }
    let chart_dir = wanted
        .strip_suffix("Chart.yaml")
        .unwrap_or("")
        .trim_end_matches('/')
        .to_string();
    Ok(Bundle {
        base,
        fleet_yaml,
        resources,
        chart_dir,
    })
}

/// Go's `strings.TrimPrefix(filepath.Join(a, b), "/")`: lexical cleaning, `..` kept
/// when it climbs above the start.
fn join_clean(a: &str, b: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in Path::new(a).join(b).components() {
        match c {
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if parts.last().is_some_and(|p| p != "..") {
                    parts.pop();
                } else {
                    parts.push("..".into());
                }
            }
            Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
        }
    }
    parts.join("/")
}

/// One directory level of `GetContent`'s walk: hidden entries skipped, `.fleetignore` of
/// this directory added to the inherited patterns, symlinks only inside the bundle.
fn walk(
    base: &Path,
    dir: &Path,
    inherited: &[String],
    skip: &[String],
    out: &mut BTreeMap<String, Vec<u8>>,
) -> Result<(), BundleError> {
    let mut patterns = inherited.to_vec();
    let ignore_file = dir.join(".fleetignore");
    if ignore_file.is_file() {
        let text = std::fs::read_to_string(&ignore_file).map_err(|e| io(&ignore_file, e))?;
        patterns.extend(glob::fleetignore_patterns(&text));
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| io(dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = path
            .strip_prefix(base)
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('\\', "/");
        let meta = std::fs::symlink_metadata(&path).map_err(|e| io(&path, e))?;
        let is_dir = path.is_dir();
        if glob::ignored(&patterns, &name, is_dir) || skip.contains(&rel) {
            continue;
        }
        if name.starts_with('.') {
            continue;
        }
        if meta.file_type().is_symlink() {
            let target = std::fs::canonicalize(&path).map_err(|e| io(&path, e))?;
            let root = std::fs::canonicalize(base).map_err(|e| io(base, e))?;
            if !target.starts_with(&root) {
                return Err(BundleError::SymlinkEscapes(rel));
            }
        }
        if is_dir {
            walk(base, &path, &patterns, skip, out)?;
        } else {
            let data = std::fs::read(&path).map_err(|e| io(&path, e))?;
            out.insert(rel, data);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_paths_are_joined_like_go() {
        assert_eq!(join_clean(".", "Chart.yaml"), "Chart.yaml");
        assert_eq!(join_clean("", "Chart.yaml"), "Chart.yaml");
        assert_eq!(
            join_clean("sub/chart", "Chart.yaml"),
            "sub/chart/Chart.yaml"
        );
        assert_eq!(
            join_clean("../../charts/agent", "Chart.yaml"),
            "../../charts/agent/Chart.yaml"
        );
    }

    #[test]
    fn a_chart_outside_the_gitrepo_path_is_not_found() {
        let dir = tempfile::tempdir().expect("tmp");
        let chart = dir.path().join("charts/agent");
        std::fs::create_dir_all(&chart).expect("mkdir");
        std::fs::write(chart.join("Chart.yaml"), "name: x\n").expect("write");
        let bundle = dir.path().join("fleet/agent");
        std::fs::create_dir_all(&bundle).expect("mkdir");
        std::fs::write(
            bundle.join("fleet.yaml"),
            "helm:\n  chart: ../../charts/agent\n",
        )
        .expect("write");
        let err = read_bundle(dir.path(), "fleet/agent").expect_err("outside the path");
        assert!(matches!(err, BundleError::ChartNotInBundle { .. }), "{err}");
    }

    #[test]
    fn hidden_and_ignored_files_stay_out() {
        let dir = tempfile::tempdir().expect("tmp");
        let b = dir.path();
        std::fs::create_dir_all(b.join("templates")).expect("mkdir");
        std::fs::create_dir_all(b.join("docs")).expect("mkdir");
        for (f, c) in [
            ("Chart.yaml", "name: x\n"),
            ("fleet.yaml", "helm:\n  chart: .\n"),
            (".helmignore", "x\n"),
            (".fleetignore", "*.md\ndocs/*\n"),
            ("README.md", "x"),
            ("templates/a.yaml", "x"),
            ("templates/NOTES.md", "x"),
            ("docs/b.yaml", "x"),
        ] {
            std::fs::write(b.join(f), c).expect("write");
        }
        let bundle = read_bundle(b, ".").expect("bundle");
        let names: Vec<&str> = bundle.resources.keys().map(String::as_str).collect();
        assert_eq!(names, vec!["Chart.yaml", "templates/a.yaml"]);
        assert_eq!(bundle.chart_dir, "");
    }
}
