//! Runs one Job: faked admission, volume materialisation, the local process, and the
//! Job status write. See the parent module for exactly what is faked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, PodSpec, ResourceQuota, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};

use super::command::{self, DEFAULT_TERMINATION_PATH, KeyRef, Rewrites};
use super::{RunOutcome, RunRecord, Shared, admission, volumes};

/// Timeout when the Job sets no activeDeadlineSeconds.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(120);

/// Longest wait for a mounted Secret/ConfigMap to appear.
const MAX_MOUNT_WAIT: Duration = Duration::from_secs(30);

/// Why a run could not start.
struct Rejected(String);

pub(crate) async fn run_job(shared: &Shared, job: Job) {
    let ns = job.metadata.namespace.clone().unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let spec = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default();
    let stem = format!("{ns}_{name}_{uid}");
    let stdout_path = shared.log_dir.join(format!("{stem}.stdout"));
    let stderr_path = shared.log_dir.join(format!("{stem}.stderr"));
    shared
        .records
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(RunRecord {
            namespace: ns.clone(),
            job_name: name.clone(),
            job_uid: uid.clone(),
            argv: Vec::new(),
            env: Vec::new(),
            pod_spec: serde_json::to_value(&spec).unwrap_or_default(),
            automount_service_account_token: spec.automount_service_account_token,
            exit_code: None,
            outcome: RunOutcome::Running,
            stdout_path: stdout_path.clone(),
            stderr_path: stderr_path.clone(),
        });
    let start = Time(k8s_openapi::jiff::Timestamp::now());
    let run_dir = shared.log_dir.join(&stem);
    let deadline = job
        .spec
        .as_ref()
        .and_then(|s| s.active_deadline_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_DEADLINE);

    let mount_wait = deadline.min(MAX_MOUNT_WAIT);
    let outcome = match prepare(shared, &ns, &name, &spec, &run_dir, mount_wait).await {
        Err(Rejected(message)) => RunOutcome::Rejected { message },
        Ok((inv, term_file)) => {
            shared.update(&uid, |r| {
                r.argv = inv.argv.clone();
                r.env = inv.declared_env.clone();
            });
            let (exit, timed_out) =
                execute(&inv, &run_dir, &stdout_path, &stderr_path, deadline).await;
            shared.update(&uid, |r| r.exit_code = exit);
            if exit == Some(0) {
                RunOutcome::Succeeded
            } else if timed_out {
                RunOutcome::Failed {
                    reason: "DeadlineExceeded".into(),
                    message: "Job was active longer than specified deadline".into(),
                }
            } else {
                let msg = failure_message(&term_file, &stderr_path, exit);
                RunOutcome::Failed {
                    reason: "BackoffLimitExceeded".into(),
                    message: msg,
                }
            }
        }
    };
    tracing::info!(namespace = %ns, job = %name, outcome = ?outcome, "job runner finished a Job");
    if std::env::var(crate::procs::VERBOSE_ENV).is_ok_and(|v| v == "1") {
        let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        eprintln!("[job {ns}/{name}] {outcome:?}");
        for line in err.lines() {
            eprintln!("[job {ns}/{name}] {line}");
        }
    }
    if let Err(e) = write_status(&shared.client, &ns, &name, start, &outcome).await {
        tracing::warn!(namespace = %ns, job = %name, error = %e, "job runner could not write Job status");
    }
    shared.update(&uid, |r| r.outcome = outcome);
}

/// Admission, volumes, env: everything before the process starts.
async fn prepare(
    shared: &Shared,
    ns: &str,
    job_name: &str,
    spec: &PodSpec,
    run_dir: &Path,
    mount_wait: Duration,
) -> Result<(command::Invocation, PathBuf), Rejected> {
    let client = &shared.client;
    let pod_name = format!("{job_name}-");
    let ns_obj = Api::<Namespace>::all(client.clone())
        .get_opt(ns)
        .await
        .map_err(|e| Rejected(format!("reading namespace {ns}: {e}")))?;
    let restricted = ns_obj
        .and_then(|n| n.metadata.labels)
        .and_then(|l| l.get(admission::ENFORCE_LABEL).cloned())
        .is_some_and(|v| v == "restricted");
    if restricted {
        admission::check_restricted(&pod_name, spec).map_err(Rejected)?;
    }
    let quotas = Api::<ResourceQuota>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| Rejected(format!("listing resource quotas in {ns}: {e}")))?;
    admission::check_quota(&pod_name, spec, &quotas.items).map_err(Rejected)?;

    let container: &Container = spec
        .containers
        .first()
        .ok_or_else(|| Rejected("pod has no containers".into()))?;
    std::fs::create_dir_all(run_dir).map_err(|e| Rejected(format!("creating run dir: {e}")))?;
    let mut mounts = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let vol = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == m.name)
            .ok_or_else(|| Rejected(format!("volumeMount {} references no volume", m.name)))?;
        let dir = materialise_waiting(client, ns, vol, run_dir, mount_wait).await?;
        mounts.push((m.mount_path.clone(), dir));
    }
    let term_pod = container
        .termination_message_path
        .clone()
        .unwrap_or_else(|| DEFAULT_TERMINATION_PATH.to_owned());
    let term_file = run_dir.join("termination-log");
    let rw = Rewrites {
        mounts,
        termination: (term_pod, term_file.clone()),
        services: shared.cfg.service_map.clone(),
    };
    let mut resolved: HashMap<KeyRef, String> = HashMap::new();
    for r in command::key_refs(container) {
        if let Some(v) = read_key(client, ns, &r).await.map_err(Rejected)? {
            resolved.insert(r, v);
        }
    }
    let inv =
        command::build(&shared.cfg.agent_binary, container, &resolved, &rw).map_err(Rejected)?;
    Ok((inv, term_file))
}

/// Like the kubelet, waits for a missing Secret/ConfigMap to appear: the agent creates
/// the registration Secret right after the Job, because the Secret is owned by it.
async fn materialise_waiting(
    client: &kube::Client,
    ns: &str,
    vol: &k8s_openapi::api::core::v1::Volume,
    run_dir: &Path,
    wait: Duration,
) -> Result<PathBuf, Rejected> {
    let start = tokio::time::Instant::now();
    loop {
        match volumes::materialise(client, ns, vol, run_dir).await {
            Ok(dir) => return Ok(dir),
            Err(volumes::VolumeError::Missing(m)) if start.elapsed() < wait => {
                tracing::debug!(namespace = %ns, message = %m, "job runner waiting for a volume source");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(Rejected(e.message().to_owned())),
        }
    }
}

async fn read_key(
    client: &kube::Client,
    ns: &str,
    (kind, name, key): &KeyRef,
) -> Result<Option<String>, String> {
    if *kind == "secret" {
        let s = Api::<Secret>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(|e| e.to_string())?;
        Ok(s.and_then(|s| s.data).and_then(|d| {
            d.get(key)
                .map(|v| String::from_utf8_lossy(&v.0).into_owned())
        }))
    } else {
        let c = Api::<ConfigMap>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(|e| e.to_string())?;
        Ok(c.and_then(|c| c.data).and_then(|d| d.get(key).cloned()))
    }
}

/// Runs the process; returns (exit code, timed out).
async fn execute(
    inv: &command::Invocation,
    run_dir: &Path,
    stdout: &Path,
    stderr: &Path,
    deadline: Duration,
) -> (Option<i32>, bool) {
    let (Ok(out), Ok(err)) = (std::fs::File::create(stdout), std::fs::File::create(stderr)) else {
        return (None, false);
    };
    let home = run_dir.join("home");
    let _ = std::fs::create_dir_all(&home);
    let mut cmd = tokio::process::Command::new(&inv.argv[0]);
    cmd.args(&inv.argv[1..])
        .env_clear()
        .env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
        )
        .env("HOME", &home)
        .current_dir(run_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .kill_on_drop(true);
    if let Ok(v) = std::env::var("RUST_LOG") {
        cmd.env("RUST_LOG", v);
    }
    cmd.envs(inv.env.iter().map(|(k, v)| (k, v)));
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::write(
                stderr,
                format!("job runner could not start {}: {e}\n", inv.argv[0]),
            );
            return (None, false);
        }
    };
    match tokio::time::timeout(deadline, child.wait()).await {
        Ok(Ok(status)) => (status.code(), false),
        Ok(Err(_)) => (None, false),
        Err(_) => {
            let _ = child.kill().await;
            (None, true)
        }
    }
}

/// The Failed condition's message: the termination message, else the last stderr line.
fn failure_message(term_file: &Path, stderr: &Path, exit: Option<i32>) -> String {
    let term = std::fs::read_to_string(term_file).unwrap_or_default();
    let term = term.trim();
    if !term.is_empty() {
        return term.to_owned();
    }
    let err = std::fs::read_to_string(stderr).unwrap_or_default();
    match err.lines().rev().find(|l| !l.trim().is_empty()) {
        Some(l) => l.trim().to_owned(),
        None => format!(
            "container exited with code {}",
            exit.map_or_else(|| "unknown".into(), |c| c.to_string())
        ),
    }
}

/// The Job status for `outcome`, as the Job controller would write it.
pub(crate) fn status_patch(start: &Time, now: &Time, outcome: &RunOutcome) -> serde_json::Value {
    match outcome {
        RunOutcome::Succeeded => serde_json::json!({"status": {
            "startTime": start, "completionTime": now, "active": 0, "succeeded": 1,
            "conditions": [{"type": "Complete", "status": "True", "lastProbeTime": now, "lastTransitionTime": now}]
        }}),
        RunOutcome::Failed { reason, message } => failed(start, now, reason, message),
        RunOutcome::Rejected { message } => failed(start, now, "BackoffLimitExceeded", message),
        RunOutcome::Running => serde_json::json!({"status": {"startTime": start, "active": 1}}),
    }
}

fn failed(start: &Time, now: &Time, reason: &str, message: &str) -> serde_json::Value {
    serde_json::json!({"status": {
        "startTime": start, "active": 0, "failed": 1,
        "conditions": [{"type": "Failed", "status": "True", "reason": reason, "message": message,
                        "lastProbeTime": now, "lastTransitionTime": now}]
    }})
}

async fn write_status(
    client: &kube::Client,
    ns: &str,
    name: &str,
    start: Time,
    outcome: &RunOutcome,
) -> kube::Result<()> {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let patch = status_patch(&start, &now, outcome);
    Api::<Job>::namespaced(client.clone(), ns)
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_message_prefers_the_termination_log() {
        let d = tempfile::tempdir().expect("tempdir");
        let (t, e) = (d.path().join("t"), d.path().join("e"));
        std::fs::write(&e, "line one\nlast line\n\n").expect("write");
        assert_eq!(failure_message(&t, &e, Some(1)), "last line");
        std::fs::write(&t, "  the manifest URL was refused (HTTP 400)\n").expect("write");
        assert_eq!(
            failure_message(&t, &e, Some(1)),
            "the manifest URL was refused (HTTP 400)"
        );
        assert_eq!(
            failure_message(&d.path().join("x"), &d.path().join("y"), Some(3)),
            "container exited with code 3"
        );
    }

    #[test]
    fn status_patches_carry_the_conditions_a_job_controller_writes() {
        let t = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let ok = status_patch(&t, &t, &RunOutcome::Succeeded);
        assert_eq!(ok["status"]["succeeded"], 1);
        assert_eq!(ok["status"]["conditions"][0]["type"], "Complete");
        assert_eq!(ok["status"]["completionTime"], "1970-01-01T00:00:00Z");
        let bad = status_patch(
            &t,
            &t,
            &RunOutcome::Rejected {
                message: "violates PodSecurity".into(),
            },
        );
        assert_eq!(bad["status"]["failed"], 1);
        assert_eq!(bad["status"]["conditions"][0]["type"], "Failed");
        assert_eq!(
            bad["status"]["conditions"][0]["message"],
            "violates PodSecurity"
        );
    }
}
