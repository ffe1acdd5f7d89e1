//! The Job runner: a test double for the kubelet, which the test clusters lack.
//!
//! What it fakes, exactly:
//! - **Scheduling and running a pod.** One watch over Jobs in all namespaces of a host
//!   cluster; every unfinished Job whose first container's image contains
//!   [`RunnerConfig::image_substring`] is run once per Job UID (a deleted and re-created
//!   Job runs again) as a local process of [`RunnerConfig::agent_binary`], with
//!   `argv = [agent_binary] + command[1..] + args` (no `$(VAR)` expansion, no
//!   `subPath`) and an environment holding only the container's env (literal values,
//!   `secretKeyRef`/`configMapKeyRef` resolved), `PATH`, `HOME` (a temp dir) and the
//!   runner's `RUST_LOG`. Pods the Job controller creates stay Pending and are ignored.
//! - **Pod admission** that the 1.20 API server does not do: Pod Security "restricted"
//!   when the namespace is labelled `pod-security.kubernetes.io/enforce=restricted`, and
//!   quota's "must specify" rule when a ResourceQuota constrains cpu/memory. A rejected
//!   pod fails the Job at once (a real Job would retry pod creation until its deadline).
//! - **Volumes**: Secret, ConfigMap (`items`, modes, `optional` honoured) and emptyDir
//!   volumes are written to a temp dir; a missing Secret/ConfigMap is waited for (up to
//!   30 s, like the kubelet retrying the mount — the agent creates the registration
//!   Secret after the Job that owns it). Any argument or env value starting with a
//!   mountPath (also as `--flag=<path>`) is rewritten to the local copy. Paths the
//!   program uses only as compiled-in defaults cannot be rewritten: Jobs must name them.
//! - **Termination message**: the container's terminationMessagePath (default
//!   `/dev/termination-log`) becomes a temp file; if no argument or env value names it,
//!   `VCLINK_TERMINATION_LOG` points the agent at it.
//! - **Network**: the only fake — an argument or env value that equals a Service address
//!   in the [`ServiceMap`] (or is `--flag=<address>`) becomes the mapped loopback URL.
//! - **No ServiceAccount token** is ever mounted, whatever `automountServiceAccountToken`
//!   says; the setting is recorded so tests can assert it is `false`.
//! - **Job status**, written through the status subresource once the process ends:
//!   success → startTime, completionTime, succeeded=1, condition Complete=True; failure →
//!   failed=1, condition Failed=True reason BackoffLimitExceeded (DeadlineExceeded when
//!   `activeDeadlineSeconds`, default 120 s, ran out) with the trimmed termination
//!   message, or else the last stderr line, as its message. No retries (backoffLimit is
//!   not honoured).

mod admission;
mod command;
mod exec;
mod volumes;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

pub use admission::{ENFORCE_LABEL, check_quota, check_restricted};
pub use command::{Invocation, Rewrites, build as build_invocation, rewrite};
pub use volumes::{VolumeError, VolumeFile, files_for};

use crate::servicemap::ServiceMap;
use vclink_envtest::Cluster;

/// How many Jobs run at once (the rest wait; bounded like a node's capacity).
const MAX_CONCURRENT_RUNS: usize = 8;

/// Configuration of a [`JobRunner`].
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// The binary that plays the container image's entrypoint (normally `vclink-agent`).
    pub agent_binary: PathBuf,
    /// Service address → loopback URL (shared with the simulated vClusters).
    pub service_map: ServiceMap,
    /// Only Jobs whose container image contains this are run (e.g. `"vclink"`).
    pub image_substring: String,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// Still running.
    Running,
    /// Exit code 0; Job marked Complete.
    Succeeded,
    /// Non-zero exit, timeout or a failure before start; Job marked Failed.
    Failed {
        /// Condition reason written (`BackoffLimitExceeded`, `DeadlineExceeded`).
        reason: String,
        /// Condition message written.
        message: String,
    },
    /// Refused by the faked admission (Pod Security, quota) or by volume/env setup; the
    /// process never started; Job marked Failed with this message.
    Rejected {
        /// The admission or setup error.
        message: String,
    },
}

/// A record of one Job the runner picked up.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// Job namespace.
    pub namespace: String,
    /// Job name.
    pub job_name: String,
    /// Job UID.
    pub job_uid: String,
    /// The process argv actually executed (after rewriting); empty when rejected.
    pub argv: Vec<String>,
    /// The environment as declared by the pod spec (see [`Invocation::declared_env`]).
    pub env: Vec<(String, String)>,
    /// The pod template's spec as JSON, exactly as the Job carried it.
    pub pod_spec: serde_json::Value,
    /// `automountServiceAccountToken` of the pod spec.
    pub automount_service_account_token: Option<bool>,
    /// Process exit code (None: not started, still running, killed or timed out).
    pub exit_code: Option<i32>,
    /// Outcome.
    pub outcome: RunOutcome,
    /// File with the process's stdout.
    pub stdout_path: PathBuf,
    /// File with the process's stderr.
    pub stderr_path: PathBuf,
}

/// Shared state of one runner.
pub(crate) struct Shared {
    pub(crate) cfg: RunnerConfig,
    pub(crate) client: kube::Client,
    pub(crate) log_dir: PathBuf,
    pub(crate) records: Mutex<Vec<RunRecord>>,
}

impl Shared {
    pub(crate) fn update(&self, uid: &str, f: impl FnOnce(&mut RunRecord)) {
        let mut recs = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = recs.iter_mut().find(|r| r.job_uid == uid) {
            f(r);
        }
    }
}

/// The running Job runner; dropping it stops the watch (running processes are killed).
pub struct JobRunner {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl JobRunner {
    /// Starts watching Jobs in all namespaces of `host`.
    pub async fn start(host: &Cluster, cfg: RunnerConfig) -> anyhow::Result<JobRunner> {
        let client = host.client().await?;
        let dir = tempfile::Builder::new()
            .prefix("vclink-jobrunner-")
            .tempdir()?;
        let shared = Arc::new(Shared {
            cfg,
            client: client.clone(),
            log_dir: dir.path().to_owned(),
            records: Mutex::new(Vec::new()),
        });
        let task = tokio::spawn(watch_loop(shared.clone()));
        Ok(JobRunner {
            shared,
            task,
            _dir: dir,
        })
    }

    /// Every run so far, oldest first.
    pub fn records(&self) -> Vec<RunRecord> {
        self.shared
            .records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Runs of Jobs named `job_name` in `namespace`.
    pub fn runs_of(&self, namespace: &str, job_name: &str) -> Vec<RunRecord> {
        self.records()
            .into_iter()
            .filter(|r| r.namespace == namespace && r.job_name == job_name)
            .collect()
    }

    /// Directory holding `<ns>_<job>_<uid>.stdout|stderr` files and run scratch dirs.
    pub fn log_dir(&self) -> &std::path::Path {
        &self.shared.log_dir
    }

    /// Waits until `n` runs have finished (any outcome but Running); returns them all.
    pub async fn wait_for_finished_runs(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<RunRecord>, crate::util::WaitTimeout> {
        crate::util::wait_for(&format!("{n} finished Job runs"), timeout, || async {
            let recs = self.records();
            let done = recs
                .iter()
                .filter(|r| r.outcome != RunOutcome::Running)
                .count();
            (done >= n).then_some(recs)
        })
        .await
    }
}

impl Drop for JobRunner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn watch_loop(shared: Arc<Shared>) {
    let api: Api<Job> = Api::all(shared.client.clone());
    let mut seen: HashSet<String> = HashSet::new();
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT_RUNS));
    let mut runs = tokio::task::JoinSet::new();
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(ev) = stream.next().await {
        let job = match ev {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(error = %e, "job runner watch error");
                continue;
            }
        };
        let Some(uid) = job.metadata.uid.clone() else {
            continue;
        };
        if seen.contains(&uid) || is_finished(&job) || !wants(&job, &shared.cfg.image_substring) {
            continue;
        }
        seen.insert(uid);
        let (shared, slots) = (shared.clone(), slots.clone());
        runs.spawn(async move {
            let Ok(_permit) = slots.acquire_owned().await else {
                return;
            };
            exec::run_job(&shared, job).await;
        });
        // Reap finished tasks so the set stays small.
        while runs.try_join_next().is_some() {}
    }
}

/// True when the Job already carries a Complete or Failed condition.
pub fn is_finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
}

/// True when the Job's first container image contains `substring`.
pub fn wants(job: &Job, substring: &str) -> bool {
    job.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.first())
        .and_then(|c| c.image.as_deref())
        .is_some_and(|i| i.contains(substring))
}
