//! Registration Jobs: ensures exactly one Job per vCluster when the hub asks for a
//! registration, watches all registration Jobs through one shared watch (label
//! `vclink.io/component=registration`), reports their outcome to the hub and on the
//! vCluster's Service, and cleans them up (Job and credential Secret) once finished.

pub mod spec;

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret as KubeSecret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use vclink_proto::keys;
use vclink_proto::v1::RegistrationProgress;
use vclink_proto::v1::registration_progress::Phase;

pub use spec::{JobSettings, Outcome, Registration};

use crate::ratelimit::RateLimiter;
use crate::record::{FIELD_MANAGER, RecordOp, clean_text};
use crate::watch::CatalogRx;

/// Errors while creating a registration Job.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A Kubernetes request failed.
    #[error("{action} failed: {source}")]
    Kube {
        /// What was attempted.
        action: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

fn kube_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> JobError {
    let action = action.into();
    move |source| JobError::Kube { action, source }
}

/// Creates, watches and cleans up registration Jobs.
pub struct JobController {
    client: Client,
    settings: JobSettings,
    catalog: CatalogRx,
    limiter: RateLimiter,
    records: mpsc::Sender<RecordOp>,
    progress: mpsc::Sender<RegistrationProgress>,
    /// UIDs of finished Jobs already reported (cleared when the Job is gone).
    handled: HashSet<String>,
}

impl JobController {
    /// A controller writing through `limiter`, recording via `records` and reporting to
    /// the hub via `progress`.
    pub fn new(
        client: Client,
        settings: JobSettings,
        catalog: CatalogRx,
        limiter: RateLimiter,
        records: mpsc::Sender<RecordOp>,
        progress: mpsc::Sender<RegistrationProgress>,
    ) -> Self {
        Self {
            client,
            settings,
            catalog,
            limiter,
            records,
            progress,
            handled: HashSet::new(),
        }
    }

    /// Serves registration requests and watches Jobs until `cancel` fires.
    pub async fn run(
        mut self,
        mut requests: mpsc::Receiver<Registration>,
        cancel: CancellationToken,
    ) {
        let jobs: Api<Job> = Api::all(self.client.clone());
        let selector = format!(
            "{}={}",
            keys::LABEL_AGENT_COMPONENT,
            keys::COMPONENT_REGISTRATION
        );
        let mut stream = watcher::watcher(jobs, watcher::Config::default().labels(&selector))
            .default_backoff()
            .boxed();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                req = requests.recv() => match req {
                    Some(req) => self.register(req).await,
                    None => return,
                },
                ev = stream.next() => match ev {
                    None => return,
                    Some(Err(e)) => warn!(error = %e, "watching registration Jobs failed; retrying with backoff"),
                    Some(Ok(Event::Apply(job) | Event::InitApply(job))) => self.observe(job).await,
                    Some(Ok(Event::Delete(job))) => { self.handled.remove(&job.uid().unwrap_or_default()); }
                    Some(Ok(Event::Init | Event::InitDone)) => {}
                },
            }
        }
    }

    fn report(
        &self,
        uid: &str,
        phase: Phase,
        message: &str,
        rancher_cluster_id: &str,
        job_name: &str,
        record: bool,
    ) {
        let message = clean_text(message);
        let p = RegistrationProgress {
            uid: uid.to_string(),
            phase: phase as i32,
            message: message.clone(),
            rancher_cluster_id: rancher_cluster_id.to_string(),
        };
        if self.progress.try_send(p).is_err() {
            warn!(%uid, ?phase, "progress queue to the hub is full; the hub will learn the state from the next snapshot");
        }
        if record {
            let op = RecordOp::Progress {
                uid: uid.to_string(),
                phase,
                message,
                rancher_cluster_id: rancher_cluster_id.to_string(),
                job_name: job_name.to_string(),
            };
            if self.records.try_send(op).is_err() {
                warn!(%uid, "record queue is full; dropping a registration progress record");
            }
        }
    }

    /// Handles a Register from the hub: exactly one Job per vCluster.
    async fn register(&mut self, reg: Registration) {
        let name = spec::job_name(&reg.uid);
        let facts = self.catalog.borrow().services.get(&reg.uid).cloned();
        let Some(facts) = facts else {
            warn!(uid = %reg.uid, "hub asked to register a vCluster this agent does not report");
            self.report(
                &reg.uid,
                Phase::Failed,
                "the agent sees no vCluster Service with this UID (deleted, opted out or filtered)",
                &reg.rancher_cluster_id,
                &name,
                false,
            );
            return;
        };
        match self.ensure_job(&reg, &facts, &name).await {
            Ok(true) => {
                info!(namespace = %facts.namespace, job = %name, cluster = %reg.rancher_cluster_id, "registration Job created");
                self.report(
                    &reg.uid,
                    Phase::JobCreated,
                    "",
                    &reg.rancher_cluster_id,
                    &name,
                    true,
                );
            }
            Ok(false) => self.report(
                &reg.uid,
                Phase::JobCreated,
                "",
                &reg.rancher_cluster_id,
                &name,
                false,
            ),
            Err(e) => {
                warn!(namespace = %facts.namespace, job = %name, error = %e, "creating the registration Job failed");
                let msg = format!(
                    "creating registration Job {name} in namespace {} failed: {e}",
                    facts.namespace
                );
                self.report(
                    &reg.uid,
                    Phase::Failed,
                    &msg,
                    &reg.rancher_cluster_id,
                    &name,
                    true,
                );
            }
        }
    }

    /// Creates the Job and its Secret unless an unfinished one exists; true when created.
    async fn ensure_job(
        &mut self,
        reg: &Registration,
        facts: &crate::watch::ServiceFacts,
        name: &str,
    ) -> Result<bool, JobError> {
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &facts.namespace);
        if let Some(existing) = jobs
            .get_opt(name)
            .await
            .map_err(kube_err("reading the registration Job"))?
        {
            if spec::outcome(&existing) == Outcome::Running {
                debug!(job = %name, "registration Job already running");
                return Ok(false);
            }
            // A finished Job of an earlier attempt: its outcome was (or will be) reported; replace it.
            if let Some(uid) = existing.uid() {
                self.handled.insert(uid);
            }
            self.delete(&facts.namespace, name).await;
        }
        let job = spec::build_job(&self.settings, reg, facts);
        let mut attempt = 0;
        let created = loop {
            self.limiter.acquire().await;
            match jobs
                .create(
                    &PostParams {
                        field_manager: Some(FIELD_MANAGER.into()),
                        ..Default::default()
                    },
                    &job,
                )
                .await
            {
                Ok(j) => break j,
                // The previous Job is still being removed.
                Err(kube::Error::Api(s)) if s.code == 409 && attempt < 10 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(kube_err("creating the registration Job")(e)),
            }
        };
        let job_uid = created.uid().unwrap_or_default();
        let secret = spec::build_secret(reg, &facts.namespace, &job_uid);
        let secrets: Api<KubeSecret> = Api::namespaced(self.client.clone(), &facts.namespace);
        self.limiter.acquire().await;
        if let Err(e) = secrets
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&secret),
            )
            .await
        {
            // Without its Secret the Job cannot start: remove it so the next attempt starts clean.
            self.delete(&facts.namespace, name).await;
            return Err(kube_err("creating the registration Secret")(e));
        }
        Ok(true)
    }

    /// Reports a finished Job once and removes it with its Secret.
    async fn observe(&mut self, job: Job) {
        let outcome = spec::outcome(&job);
        let Some(job_uid) = job.uid() else { return };
        if outcome == Outcome::Running || self.handled.contains(&job_uid) {
            return;
        }
        self.handled.insert(job_uid);
        let namespace = job.namespace().unwrap_or_default();
        let name = job.name_any();
        let uid = job
            .labels()
            .get(keys::LABEL_JOB_SERVICE_UID)
            .cloned()
            .unwrap_or_default();
        let cluster = job
            .annotations()
            .get(spec::ANNOTATION_JOB_RANCHER_CLUSTER)
            .cloned()
            .unwrap_or_default();
        match outcome {
            Outcome::Succeeded => {
                info!(%namespace, job = %name, %cluster, "registration succeeded");
                self.report(&uid, Phase::Succeeded, "", &cluster, &name, true);
            }
            Outcome::Failed(condition_message) => {
                let reason = self
                    .pod_reason(&namespace, &name)
                    .await
                    .unwrap_or(condition_message);
                warn!(%namespace, job = %name, %cluster, %reason, "registration failed");
                self.report(&uid, Phase::Failed, &reason, &cluster, &name, true);
            }
            Outcome::Running => {}
        }
        self.delete(&namespace, &name).await;
    }

    /// The `register` container's one-line reason from its termination message (best effort).
    async fn pod_reason(&self, namespace: &str, job: &str) -> Option<String> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let list = match pods
            .list(&ListParams::default().labels(&format!("job-name={job}")))
            .await
        {
            Ok(l) => l,
            Err(e) => {
                debug!(%namespace, %job, error = %e, "cannot list the registration pods; using the Job's condition");
                return None;
            }
        };
        list.items
            .iter()
            .flat_map(|p| {
                p.status
                    .iter()
                    .flat_map(|s| s.container_statuses.iter().flatten())
            })
            .filter_map(|cs| cs.state.as_ref()?.terminated.as_ref()?.message.clone())
            .map(|m| {
                m.lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            })
            .find(|m| !m.is_empty())
    }

    /// Deletes a Job (pods in the background) and its Secret; missing objects are fine.
    async fn delete(&self, namespace: &str, name: &str) {
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), namespace);
        self.limiter.acquire().await;
        if let Err(e) = jobs.delete(name, &DeleteParams::background()).await
            && !matches!(&e, kube::Error::Api(s) if s.code == 404)
        {
            warn!(%namespace, job = %name, error = %e, "deleting the registration Job failed");
        }
        let secrets: Api<KubeSecret> = Api::namespaced(self.client.clone(), namespace);
        self.limiter.acquire().await;
        if let Err(e) = secrets.delete(name, &DeleteParams::default()).await
            && !matches!(&e, kube::Error::Api(s) if s.code == 404)
        {
            warn!(%namespace, secret = %name, error = %e, "deleting the registration Secret failed");
        }
    }
}
