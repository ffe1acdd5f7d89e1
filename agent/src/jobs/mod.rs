//! Registration Jobs: ensures exactly one Job per vCluster when the hub asks for a
//! registration ([`create`]), watches all registration Jobs through one shared watch (label
//! `vclink.io/component=registration`), reports their outcome to the hub and on the
//! vCluster's Service, and cleans them up once finished. Only the agent's own Jobs count
//! ([`own`]): progress from any other Job is ignored and such a Job is never deleted. The
//! agent deletes only the Job it created, with a UID precondition; the credential Secret
//! is owned by that Job, so garbage collection removes it and the agent never deletes a
//! Secret by name. A Register is checked first: an excluded vCluster gets no Job, and
//! one that would move a registered vCluster to another Rancher cluster is refused
//! ([`crate::record::guard`]).

mod create;
pub(crate) mod own;
pub(crate) mod spec;

use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use vclink_proto::keys;
use vclink_proto::v1::RegistrationProgress;
use vclink_proto::v1::registration_progress::Phase;

pub(crate) use spec::Outcome;
pub use spec::{JobSettings, Registration};

use crate::latest;
use crate::ratelimit::RateLimiter;
use crate::record::guard::{Switch, cluster_switch};
use crate::record::{RecordOp, clean_text};
use crate::watch::CatalogRx;
use own::OwnJob;

/// Errors while creating a registration Job.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JobError {
    /// A Kubernetes request failed.
    #[error("{action} failed: {source}")]
    Kube {
        /// What was attempted.
        action: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// A pull secret named by `--job-image-pull-secret` is missing in the agent's namespace.
    #[error(
        "the image pull secret {name} (--job-image-pull-secret) does not exist in namespace {namespace}, \
         the agent's; create it there or remove the flag"
    )]
    PullSecretMissing {
        /// The Secret's name.
        name: String,
        /// The agent's namespace.
        namespace: String,
    },
    /// A Job under the agent's name exists that the agent did not create.
    #[error(
        "a Job named {name} that vclink did not create exists in namespace {namespace}; vclink leaves it alone. \
         Delete it to let the registration run"
    )]
    Foreign {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

fn kube_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> JobError {
    let action = action.into();
    move |source| JobError::Kube { action, source }
}

/// Creates, watches and cleans up registration Jobs.
pub(crate) struct JobController {
    client: Client,
    settings: JobSettings,
    catalog: CatalogRx,
    limiter: RateLimiter,
    records: latest::Sender<RecordOp>,
    progress: latest::Sender<RegistrationProgress>,
    /// UIDs of finished Jobs already reported (cleared when the Job is gone).
    handled: HashSet<String>,
    /// The Job this process created per vCluster UID (until that Job is gone).
    own: HashMap<String, OwnJob>,
}

impl JobController {
    /// A controller writing through `limiter`, recording via `records` and reporting to
    /// the hub via `progress`.
    pub fn new(
        client: Client,
        settings: JobSettings,
        catalog: CatalogRx,
        limiter: RateLimiter,
        records: latest::Sender<RecordOp>,
        progress: latest::Sender<RegistrationProgress>,
    ) -> Self {
        Self {
            client,
            settings,
            catalog,
            limiter,
            records,
            progress,
            handled: HashSet::new(),
            own: HashMap::new(),
        }
    }

    /// Serves registration requests and watches Jobs until `cancel` fires.
    pub async fn run(
        mut self,
        mut requests: latest::Receiver<Registration>,
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
                    Some(Err(e)) => warn!(error = %crate::error_line(&e), "watching registration Jobs failed; retrying with backoff"),
                    Some(Ok(Event::Apply(job) | Event::InitApply(job))) => self.observe(job).await,
                    Some(Ok(Event::Delete(job))) => self.forget(&job),
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
        (job_name, job_uid): (&str, &str),
        record: bool,
    ) {
        let message = clean_text(message);
        let p = RegistrationProgress {
            uid: uid.to_string(),
            phase: phase as i32,
            message: message.clone(),
            rancher_cluster_id: rancher_cluster_id.to_string(),
        };
        if let Err(e) = self.progress.push(p) {
            warn!(%uid, ?phase, error = %e, "dropping registration progress to the hub; the hub will learn the state from the next snapshot");
        }
        if record {
            let op = RecordOp::Progress {
                uid: uid.to_string(),
                phase,
                message,
                rancher_cluster_id: rancher_cluster_id.to_string(),
                job_name: job_name.to_string(),
                job_uid: job_uid.to_string(),
            };
            if let Err(e) = self.records.push(op) {
                warn!(%uid, error = %e, "dropping a registration progress record");
            }
        }
    }

    /// A Job is gone: forget it (and, when it was ours, that we created it).
    fn forget(&mut self, job: &Job) {
        let Some(job_uid) = job.uid() else { return };
        self.handled.remove(&job_uid);
        self.own.retain(|_, o| o.job_uid != job_uid);
    }

    /// Handles a Register from the hub: exactly one Job per vCluster.
    async fn register(&mut self, reg: Registration) {
        let name = spec::job_name(&reg.uid);
        let (facts, exclusion) = {
            let catalog = self.catalog.borrow();
            (
                catalog.services.get(&reg.uid).cloned(),
                catalog.exclusion(&reg.uid).map(|x| x.reason.clone()),
            )
        };
        let Some(facts) = facts else {
            warn!(uid = %reg.uid, "hub asked to register a vCluster this agent does not report");
            self.report(
                &reg.uid,
                Phase::Failed,
                "the agent sees no vCluster Service with this UID (deleted or filtered)",
                &reg.rancher_cluster_id,
                (&name, ""),
                false,
            );
            return;
        };
        if let Some(reason) = exclusion {
            warn!(namespace = %facts.namespace, name = %facts.name, cluster = %reg.rancher_cluster_id, "refusing to register an excluded vCluster");
            self.report(
                &reg.uid,
                Phase::Failed,
                &format!("this vCluster is excluded from import: {reason}"),
                &reg.rancher_cluster_id,
                (&name, ""),
                false,
            );
            return;
        }
        match cluster_switch(&facts.annotations, &reg.rancher_cluster_id) {
            Switch::Allowed => {}
            Switch::Reimport => {
                info!(namespace = %facts.namespace, name = %facts.name, cluster = %reg.rancher_cluster_id, "re-importing a vCluster into another Rancher cluster, as its Service asks")
            }
            Switch::Refused(reason) => {
                warn!(namespace = %facts.namespace, name = %facts.name, cluster = %reg.rancher_cluster_id, %reason, "refusing a Register for another Rancher cluster");
                self.report(
                    &reg.uid,
                    Phase::Failed,
                    &reason,
                    &reg.rancher_cluster_id,
                    (&name, ""),
                    false,
                );
                let op = RecordOp::RegisterRefused {
                    uid: reg.uid.clone(),
                    reason,
                };
                if let Err(e) = self.records.push(op) {
                    warn!(uid = %reg.uid, error = %e, "dropping a refused-registration record");
                }
                return;
            }
        }
        match self.ensure_job(&reg, &facts, &name).await {
            Ok(Some(job_uid)) => {
                info!(namespace = %facts.namespace, job = %name, cluster = %reg.rancher_cluster_id, "registration Job created");
                self.report(
                    &reg.uid,
                    Phase::JobCreated,
                    "",
                    &reg.rancher_cluster_id,
                    (&name, &job_uid),
                    true,
                );
            }
            Ok(None) => self.report(
                &reg.uid,
                Phase::JobCreated,
                "",
                &reg.rancher_cluster_id,
                (&name, ""),
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
                    (&name, ""),
                    true,
                );
            }
        }
    }

    /// Whether `job` is the agent's own registration Job for vCluster `service_uid`.
    fn owns(&self, job: &Job, service_uid: &str) -> bool {
        let facts = self.catalog.borrow().services.get(service_uid).cloned();
        own::is_own(
            &job.namespace().unwrap_or_default(),
            &job.name_any(),
            &job.uid().unwrap_or_default(),
            service_uid,
            self.own.get(service_uid),
            facts.as_deref(),
        )
    }

    /// Reports a finished Job of ours once and removes it (its Secret goes with it).
    async fn observe(&mut self, job: Job) {
        let outcome = spec::outcome(&job);
        let Some(job_uid) = job.uid() else { return };
        if outcome == Outcome::Running || self.handled.contains(&job_uid) {
            return;
        }
        let namespace = job.namespace().unwrap_or_default();
        let name = job.name_any();
        let uid = job
            .labels()
            .get(keys::LABEL_JOB_SERVICE_UID)
            .cloned()
            .unwrap_or_default();
        if !self.owns(&job, &uid) {
            debug!(%namespace, job = %name, "ignoring a registration-labelled Job the agent did not create");
            return;
        }
        self.handled.insert(job_uid.clone());
        // The cluster the agent created the Job for; the Job's annotation only as a
        // fallback after a restart (it is in the vCluster's own namespace).
        let cluster = self
            .own
            .get(&uid)
            .filter(|o| o.job_uid == job_uid)
            .map(|o| o.rancher_cluster_id.clone())
            .or_else(|| {
                job.annotations()
                    .get(spec::ANNOTATION_JOB_RANCHER_CLUSTER)
                    .cloned()
            })
            .unwrap_or_default();
        match outcome {
            Outcome::Succeeded => {
                info!(%namespace, job = %name, %cluster, "registration succeeded");
                self.report(&uid, Phase::Succeeded, "", &cluster, (&name, ""), true);
            }
            Outcome::Failed(condition_message) => {
                let reason = self
                    .pod_reason(&namespace, &name, &job_uid)
                    .await
                    .unwrap_or(condition_message);
                warn!(%namespace, job = %name, %cluster, %reason, "registration failed");
                self.report(&uid, Phase::Failed, &reason, &cluster, (&name, ""), true);
            }
            Outcome::Running => {}
        }
        self.delete(&namespace, &name, &job_uid).await;
    }

    /// The `register` container's one-line reason from its termination message (best
    /// effort), from pods the Job `job_uid` owns.
    async fn pod_reason(&self, namespace: &str, job: &str, job_uid: &str) -> Option<String> {
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
            .filter(|p| p.owner_references().iter().any(|o| o.uid == job_uid))
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

    /// Deletes the agent's Job `name` only if it still has UID `job_uid` (pods and the
    /// owned Secret go in the background); a missing or replaced Job is fine.
    async fn delete(&self, namespace: &str, name: &str, job_uid: &str) {
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), namespace);
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(job_uid.to_string()),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        self.limiter.acquire().await;
        if let Err(e) = jobs.delete(name, &params).await
            && !matches!(&e, kube::Error::Api(s) if s.code == 404 || s.code == 409)
        {
            warn!(%namespace, job = %name, error = %e, "deleting the registration Job failed");
        }
    }
}
