//! Finding (and on first use building) the Kubernetes binaries.
//!
//! No registry we can reach ships a kube-apiserver binary, so
//! `scripts/install-kube.sh` installs etcd and Go with apt and builds kube-apiserver and
//! kube-controller-manager from Debian's `kubernetes` source package, caching them under
//! `~/.cache/vclink/kube` (`VCLINK_KUBE_CACHE` overrides). The script holds a `flock`,
//! so concurrent test binaries wait for one build; within a process the result is
//! memoized. The script's progress goes straight to the user's stderr.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Paths of the binaries the environment runs.
#[derive(Debug, Clone)]
pub struct KubeBinaries {
    /// kube-apiserver.
    pub apiserver: PathBuf,
    /// kube-controller-manager.
    pub controller_manager: PathBuf,
    /// etcd.
    pub etcd: PathBuf,
}

/// Why the binaries are not available.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The script could not be started.
    #[error("cannot run {script}: {source}")]
    Spawn {
        /// The script path.
        script: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The script failed; its stderr tail names the step and how to retry.
    #[error(
        "{script} failed ({status}); retry with `bash {script}`. Its output ended with:\n{tail}"
    )]
    Script {
        /// The script path.
        script: PathBuf,
        /// Exit status.
        status: std::process::ExitStatus,
        /// The last lines of its stderr (already shown to the user).
        tail: String,
    },
    /// A binary the script should have produced is missing.
    #[error("{0} is missing or not executable after install; remove the cache directory and retry")]
    Missing(PathBuf),
    /// etcd is not on PATH.
    #[error("etcd not found on PATH; install it with `apt-get install etcd-server` (or run {0})")]
    NoEtcd(PathBuf),
}

fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-kube.sh")
}

/// Installs (first use) or finds the cached binaries. Safe to call concurrently.
pub fn binaries() -> anyhow::Result<KubeBinaries> {
    static CELL: OnceLock<Result<KubeBinaries, String>> = OnceLock::new();
    CELL.get_or_init(|| install().map_err(|e| e.to_string()))
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Runs the install script once (no memoization).
pub fn install() -> Result<KubeBinaries, InstallError> {
    let script = script_path();
    let mut child = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| InstallError::Spawn {
            script: script.clone(),
            source,
        })?;
    // Pass stderr through line by line (progress stays visible) and keep a tail.
    let stderr = child.stderr.take();
    let tee = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut tail = std::collections::VecDeque::new();
        if let Some(stderr) = stderr {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                eprintln!("{line}");
                if tail.len() == 20 {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        }
        Vec::from(tail).join("\n")
    });
    let output = child
        .wait_with_output()
        .map_err(|source| InstallError::Spawn {
            script: script.clone(),
            source,
        })?;
    let tail = tee.join().unwrap_or_default();
    if !output.status.success() {
        return Err(InstallError::Script {
            script,
            status: output.status,
            tail,
        });
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let bin_dir = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    let apiserver = bin_dir.join("kube-apiserver");
    let controller_manager = bin_dir.join("kube-controller-manager");
    for p in [&apiserver, &controller_manager] {
        if !is_executable(p) {
            return Err(InstallError::Missing(p.clone()));
        }
    }
    let etcd = which("etcd").ok_or(InstallError::NoEtcd(script))?;
    Ok(KubeBinaries {
        apiserver,
        controller_manager,
        etcd,
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `which name` over `$PATH`, then the Debian location.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}
