//! Running one of the workspace's binaries as a person would from a clean shell, for the
//! wrong-invocation tests of both binaries: the environment scrubbed of everything that
//! could configure it behind the test's back (`VCLINK_*`, `KUBECONFIG`, in-cluster
//! `KUBERNETES_*`, a real `$HOME/.kube`), stdout and stderr read as they come, and the
//! process stopped at a deadline — or as soon as a text appeared, for a binary that
//! keeps retrying instead of exiting.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Runs `bin` with `args` and `env` until it exits, `stop_at` appears in its output, or
/// `deadline` passes. Returns the exit code (`None` when it was stopped) and everything
/// it printed on stdout and stderr.
pub fn run_scrubbed(
    bin: &str,
    args: &[String],
    env: &[(&str, String)],
    stop_at: Option<&str>,
    deadline: Duration,
) -> (Option<i32>, String) {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("VCLINK_") || k == "KUBECONFIG" || k.starts_with("KUBERNETES_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", "/nonexistent-home").env("RUST_LOG", "info");
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
    let out = Arc::new(Mutex::new(String::new()));
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut r| {
        let out = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    })
    .collect();
    let start = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        let seen =
            stop_at.is_some_and(|t| out.lock().unwrap_or_else(|p| p.into_inner()).contains(t));
        if seen || start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    for r in readers {
        let _ = r.join();
    }
    let text = out.lock().unwrap_or_else(|p| p.into_inner()).clone();
    (code, text)
}
