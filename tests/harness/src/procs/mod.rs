//! vclink's real binaries as child processes of a test: finding them, starting them with
//! their output captured (files + a bounded in-memory line buffer a test can search),
//! and stopping them the ways production stops them (SIGTERM) or crashes them (SIGKILL).
//! [`hub`] and [`agent`] hold the per-binary wiring; [`rbac`] runs them under the exact
//! RBAC the Helm charts render (the default).

pub mod agent;
pub mod hub;
pub mod rbac;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};

pub use agent::{AgentOptions, AgentProcess};
pub use hub::{HubOptions, HubProcess, RancherAuth, RancherCredential};

/// Lines kept in memory per process (older ones remain in the log files).
pub const LOG_BUFFER_LINES: usize = 20_000;

/// How long [`ManagedProcess::stop`] waits after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// Environment variable that overrides where the binaries are looked for.
pub const BIN_DIR_ENV: &str = "VCLINK_BIN_DIR";

/// Environment variable that echoes process output to stderr when `1`.
pub const VERBOSE_ENV: &str = "VCLINK_TEST_VERBOSE";

/// Path of a workspace binary (`vclink-hub`, `vclink-agent`): `$VCLINK_BIN_DIR/<name>`,
/// else next to the running test executable (`target/<profile>/deps/x` →
/// `target/<profile>/<name>`).
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os(BIN_DIR_ENV) {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().context("locating the test executable")?;
            bin_dir_for(&exe)
        }
    };
    let p = dir.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        anyhow::bail!(
            "{} not found; run `cargo build --workspace --bins` first (or set {BIN_DIR_ENV})",
            p.display()
        )
    }
}

/// `target/<profile>/deps/x` and `target/<profile>/examples/x` → `target/<profile>`;
/// `target/<profile>/x` → `target/<profile>`.
fn bin_dir_for(exe: &Path) -> PathBuf {
    let parent = exe.parent().unwrap_or(Path::new("."));
    match parent.file_name().and_then(|n| n.to_str()) {
        Some("deps" | "examples") => parent.parent().unwrap_or(parent).to_owned(),
        _ => parent.to_owned(),
    }
}

/// A bounded, shared buffer of output lines.
#[derive(Debug, Clone, Default)]
pub struct LogBuffer {
    lines: Arc<Mutex<VecDeque<String>>>,
}

impl LogBuffer {
    fn push(&self, line: String) {
        let mut l = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if l.len() >= LOG_BUFFER_LINES {
            l.pop_front();
        }
        l.push_back(line);
    }

    /// All buffered lines, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// The last `n` lines joined by newlines (for error messages).
    pub fn tail(&self, n: usize) -> String {
        let l = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        l.iter()
            .skip(l.len().saturating_sub(n))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// True if any buffered line contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|l| l.contains(needle))
    }
}

/// One restartable child process with captured output.
#[derive(Debug)]
pub struct ManagedProcess {
    label: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log_dir: PathBuf,
    logs: LogBuffer,
    child: Option<tokio::process::Child>,
}

impl ManagedProcess {
    /// A process to be started with [`spawn`](Self::spawn); output goes to
    /// `<log_dir>/<label>.stdout.log|stderr.log` (appended across restarts).
    pub fn new(
        label: &str,
        program: PathBuf,
        args: Vec<String>,
        env: Vec<(String, String)>,
        log_dir: PathBuf,
    ) -> Self {
        ManagedProcess {
            label: label.to_owned(),
            program,
            args,
            env,
            log_dir,
            logs: LogBuffer::default(),
            child: None,
        }
    }

    /// Starts the process (a running one is left alone).
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // Settings must come from the harness, not from whatever the developer's shell holds.
        for (k, _) in std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v))) {
            if k.starts_with("VCLINK_") || k == "KUBECONFIG" || k.starts_with("KUBERNETES_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.program.display()))?;
        let verbose = std::env::var(VERBOSE_ENV).is_ok_and(|v| v == "1");
        if let Some(out) = child.stdout.take() {
            self.tee(out, "stdout", verbose);
        }
        if let Some(err) = child.stderr.take() {
            self.tee(err, "stderr", verbose);
        }
        self.child = Some(child);
        Ok(())
    }

    fn tee(&self, stream: impl AsyncRead + Unpin + Send + 'static, which: &str, verbose: bool) {
        let path = self
            .log_dir
            .join(format!("{}.{which}.log", self.label.replace(' ', "_")));
        let (buf, label) = (self.logs.clone(), self.label.clone());
        tokio::spawn(async move {
            let mut file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .await
                .ok();
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(f) = file.as_mut() {
                    let _ = f.write_all(format!("{line}\n").as_bytes()).await;
                }
                if verbose {
                    eprintln!("[{label}] {line}");
                }
                buf.push(line);
            }
        });
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// The exit status if the process has exited on its own.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Captured output lines (stdout and stderr interleaved), oldest first.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lines()
    }

    /// The shared log buffer.
    pub fn log_buffer(&self) -> &LogBuffer {
        &self.logs
    }

    /// Where the log files are.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// SIGKILL and wait: a crash.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// SIGTERM and wait for exit (SIGKILL after a grace period); returns the exit status.
    pub async fn stop(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        let Some(mut c) = self.child.take() else {
            return Ok(None);
        };
        if let Some(pid) = c
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        match tokio::time::timeout(STOP_GRACE, c.wait()).await {
            Ok(status) => Ok(Some(status?)),
            Err(_) => {
                c.kill().await?;
                anyhow::bail!(
                    "{} did not exit within {STOP_GRACE:?} of SIGTERM; killed",
                    self.label
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binaries_live_next_to_the_deps_dir() {
        assert_eq!(
            bin_dir_for(Path::new("/w/target/debug/deps/e2e-abc")),
            PathBuf::from("/w/target/debug")
        );
        assert_eq!(
            bin_dir_for(Path::new("/w/target/debug/vclink-demo")),
            PathBuf::from("/w/target/debug")
        );
    }

    #[test]
    fn the_log_buffer_is_bounded_and_tails() {
        let b = LogBuffer::default();
        for i in 0..LOG_BUFFER_LINES + 5 {
            b.push(format!("line {i}"));
        }
        assert_eq!(b.lines().len(), LOG_BUFFER_LINES);
        assert_eq!(
            b.tail(2),
            format!(
                "line {}\nline {}",
                LOG_BUFFER_LINES + 3,
                LOG_BUFFER_LINES + 4
            )
        );
        assert!(b.contains("line 5"));
        assert!(!b.contains("line 4\n"));
    }

    #[tokio::test]
    async fn captures_output_and_stops_with_sigterm() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = ManagedProcess::new(
            "sh",
            PathBuf::from("/bin/sh"),
            vec![
                "-c".into(),
                "echo hello; echo oops >&2; trap 'exit 3' TERM; while :; do sleep 0.05; done"
                    .into(),
            ],
            vec![],
            dir.path().to_owned(),
        );
        p.spawn().expect("spawn");
        crate::util::wait_for("both lines", Duration::from_secs(5), || async {
            p.log_buffer().contains("oops") && p.log_buffer().contains("hello")
        })
        .await
        .expect("output captured");
        let status = p.stop().await.expect("stop").expect("status");
        assert_eq!(
            status.code(),
            Some(3),
            "the trap ran, so SIGTERM was delivered"
        );
        let out = std::fs::read_to_string(dir.path().join("sh.stdout.log")).expect("log file");
        assert_eq!(out, "hello\n");
    }
}
