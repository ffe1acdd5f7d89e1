//! Child processes of a test cluster and the guarantees that none outlives the test.
//!
//! Each server (etcd, kube-apiserver, kube-controller-manager) is a
//! `std::process::Child` so `Drop` can stop it synchronously: SIGTERM, up to a few
//! seconds' grace, SIGKILL, reap. Its stdout/stderr go to a log file in the cluster's
//! data directory so test output stays readable.
//!
//! `Drop` does not run when the test process itself is killed (SIGKILL, a panic with
//! `panic = "abort"`, Ctrl-C), and `PR_SET_PDEATHSIG` needs `unsafe`. So every cluster
//! also has a [`Watchdog`]: a tiny `sh` that leads its own process group, which every
//! server of the cluster joins. Its stdin is a pipe whose only writer is the test
//! process; when that process exits for any reason the kernel closes the pipe, the
//! shell's `read` hits end-of-file, SIGKILLs the other members of its process group
//! (the servers), removes the cluster's data directory and exits. No polling, no PID-reuse race. On a normal drop the servers are stopped
//! first and the watchdog is told `done` and exits. Being in their own group also
//! keeps the servers out of the terminal's Ctrl-C (the test process dies, the watchdog
//! does the rest).

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process, kill_process_group};

/// True if a process with this PID is still alive (not a zombie).
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => true,
        },
        Err(_) => false,
    }
}

/// Parent PID and process group of a live process, from `/proc/<pid>/stat`.
fn stat_fields(pid: u32) -> Option<(u32, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut it = rest.split_whitespace();
    let _state = it.next()?;
    let ppid = it.next()?.parse().ok()?;
    let pgrp = it.next()?.parse().ok()?;
    Some((ppid, pgrp))
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// PIDs of every live descendant of `pid` (children, grandchildren, …).
pub fn descendants(pid: u32) -> Vec<u32> {
    let table: Vec<(u32, u32)> = all_pids()
        .into_iter()
        .filter_map(|p| stat_fields(p).map(|(ppid, _)| (p, ppid)))
        .collect();
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(p, ppid) in &table {
            if ppid == parent && !out.contains(&p) {
                out.push(p);
                frontier.push(p);
            }
        }
    }
    out.retain(|p| is_alive(*p));
    out
}

/// PIDs of every live process in process group `pgid`.
pub fn process_group_members(pgid: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|p| stat_fields(*p).is_some_and(|(_, g)| g == pgid) && is_alive(*p))
        .collect()
}

fn pid(p: u32) -> Option<Pid> {
    Pid::from_raw(i32::try_from(p).ok()?)
}

/// The per-cluster watchdog (see the module docs). Dropping it kills its group.
pub(crate) struct Watchdog {
    child: Child,
    /// Closing this is the signal; kept only to be dropped.
    stdin: Option<ChildStdin>,
}

/// The watchdog script. A `done` line means "servers already stopped, just exit";
/// end-of-file means the test process is gone: SIGKILL every other member of our
/// process group (found in /proc, so the shell survives to clean up), remove the data
/// directory (`$1`, if given), then SIGKILL the group including ourselves.
const WATCHDOG_SCRIPT: &str = r#"
while read -r line; do [ "$line" = done ] && exit 0; done
for d in /proc/[0-9]*; do
  p=${d#/proc/}
  [ "$p" = "$$" ] && continue
  { read -r s < "$d/stat"; } 2>/dev/null || continue
  set -- ${s##*)}
  [ "${3-}" = "$$" ] && kill -KILL "$p" 2>/dev/null
done
[ -n "${DATA_DIR-}" ] && rm -rf -- "$DATA_DIR"
kill -KILL 0
"#;

impl Watchdog {
    /// Spawns the watchdog; `cleanup_dir` is removed if the test process dies.
    pub(crate) fn spawn(cleanup_dir: Option<&Path>) -> std::io::Result<Self> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("vclink-envtest-watchdog");
        if let Some(dir) = cleanup_dir {
            cmd.env("DATA_DIR", dir);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        let stdin = child.stdin.take();
        Ok(Self { child, stdin })
    }

    /// The watchdog's PID, which is also its process group ID.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Called after the servers were stopped: tell the shell to exit quietly.
        if let Some(mut stdin) = self.stdin.take() {
            use std::io::Write;
            let _ = stdin.write_all(b"done\n");
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Belt and braces: anything still in the group, and the shell itself.
        if let Some(g) = pid(self.child.id()) {
            let _ = kill_process_group(g, Signal::KILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One server process of a cluster, logging to a file.
pub(crate) struct Supervised {
    pub(crate) name: &'static str,
    pub(crate) log: PathBuf,
    child: Child,
    exited: Option<std::process::ExitStatus>,
}

impl Supervised {
    /// Starts `program args…` in the watchdog's process group, stdout+stderr → `log`.
    pub(crate) fn spawn(
        name: &'static str,
        program: &Path,
        args: &[String],
        log: PathBuf,
        watchdog: &Watchdog,
    ) -> std::io::Result<Self> {
        let out = File::create(&log)?;
        let err = out.try_clone()?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(i32::try_from(watchdog.pid()).unwrap_or(0))
            .spawn()?;
        Ok(Self {
            name,
            log,
            child,
            exited: None,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the process has exited (and is reaped).
    pub(crate) fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// The last `n` lines of the log.
    pub(crate) fn log_tail(&self, n: usize) -> String {
        tail(&self.log, n)
    }

    /// SIGTERM without waiting (so several servers can shut down in parallel).
    pub(crate) fn terminate(&mut self) {
        if self.exit_status().is_none()
            && let Some(p) = pid(self.pid())
        {
            let _ = kill_process(p, Signal::TERM);
        }
    }

    /// Waits until `deadline` for exit, then SIGKILLs; always reaps.
    pub(crate) fn wait_or_kill(&mut self, deadline: Instant) {
        while self.exit_status().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.exit_status().is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
    }

    /// SIGTERM, grace, SIGKILL, reap.
    pub(crate) fn stop(&mut self, grace: Duration) {
        self.terminate();
        self.wait_or_kill(Instant::now() + grace);
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// The last `n` lines of a file (empty if unreadable).
pub(crate) fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_kills_its_group_when_closed() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = dir.path().join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        let mut wd = Watchdog::spawn(Some(&scratch)).unwrap();
        let mut s = Supervised::spawn(
            "sleeper",
            Path::new("sleep"),
            &["300".into()],
            dir.path().join("sleep.log"),
            &wd,
        )
        .unwrap();
        let (sp, wp) = (s.pid(), wd.pid());
        assert!(is_alive(sp) && is_alive(wp));
        assert!(descendants(std::process::id()).contains(&sp));
        assert_eq!(process_group_members(wp).len(), 2);
        // What the kernel does when the test process dies: the pipe closes.
        drop(wd.stdin.take());
        // The sleeper was killed by the watchdog, not by us: reap it and look.
        s.wait_or_kill(Instant::now() + Duration::from_secs(5));
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(s.exit_status().and_then(|st| st.signal()), Some(9));
        drop(wd);
        assert!(!is_alive(sp) && !is_alive(wp));
        assert!(!scratch.exists(), "data directory removed by the watchdog");
    }
}
