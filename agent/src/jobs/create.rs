//! Creating a vCluster's registration Job: its credential Secret and the Job, unless an
//! unfinished Job of the agent's own exists already (so a repeated Register makes no
//! second Job), and the copies of `--job-image-pull-secret` next to it. Everything is
//! owned by the Job, so garbage collection removes it with the Job and nothing is ever
//! deleted by name. Kept apart from the controller's watch and reporting in
//! [`super`].

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use tracing::debug;

use super::own::OwnJob;
use super::spec::{self, Outcome, Registration};
use super::{JobController, JobError, kube_err};
use crate::record::FIELD_MANAGER;

impl JobController {
    /// Creates the Job and its Secret unless an unfinished Job of ours exists; the new
    /// Job's UID when created.
    pub(super) async fn ensure_job(
        &mut self,
        reg: &Registration,
        facts: &crate::watch::ServiceFacts,
        name: &str,
    ) -> Result<Option<String>, JobError> {
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &facts.namespace);
        if let Some(existing) = jobs
            .get_opt(name)
            .await
            .map_err(kube_err("reading the registration Job"))?
        {
            let existing_uid = existing.uid().unwrap_or_default();
            if !self.owns(&existing, &reg.uid) {
                // Not ours (or ours from before a crash that lost its UID): never touch it.
                return Err(JobError::Foreign {
                    namespace: facts.namespace.clone(),
                    name: name.to_string(),
                });
            }
            if spec::outcome(&existing) == Outcome::Running {
                debug!(job = %name, "registration Job already running");
                return Ok(None);
            }
            // A finished Job of an earlier attempt: its outcome was (or will be) reported; replace it.
            self.handled.insert(existing_uid.clone());
            self.delete(&facts.namespace, name, &existing_uid).await;
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
        self.own.insert(
            reg.uid.clone(),
            OwnJob {
                namespace: facts.namespace.clone(),
                job_uid: job_uid.clone(),
                rancher_cluster_id: reg.rancher_cluster_id.clone(),
            },
        );
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
            self.delete(&facts.namespace, name, &job_uid).await;
            return Err(kube_err("creating the registration Secret")(e));
        }
        if let Err(e) = self
            .copy_pull_secrets(reg, &facts.namespace, &job_uid)
            .await
        {
            self.delete(&facts.namespace, name, &job_uid).await;
            return Err(e);
        }
        Ok(Some(job_uid))
    }

    /// Copies each `--job-image-pull-secret` from the agent's namespace next to the Job,
    /// owned by it (garbage-collected with the Job; never deleted by name).
    async fn copy_pull_secrets(
        &self,
        reg: &Registration,
        namespace: &str,
        job_uid: &str,
    ) -> Result<(), JobError> {
        if self.settings.image_pull_secrets.is_empty() {
            return Ok(());
        }
        let home = self.client.default_namespace().to_string();
        let sources: Api<KubeSecret> = Api::namespaced(self.client.clone(), &home);
        let targets: Api<KubeSecret> = Api::namespaced(self.client.clone(), namespace);
        for (i, source_name) in self.settings.image_pull_secrets.iter().enumerate() {
            let source = sources
                .get_opt(source_name)
                .await
                .map_err(kube_err(format!(
                    "reading the image pull secret {source_name} in namespace {home}"
                )))?
                .ok_or_else(|| JobError::PullSecretMissing {
                    name: source_name.clone(),
                    namespace: home.clone(),
                })?;
            let copy = spec::pull_secret_copy(&source, &reg.uid, i, namespace, job_uid);
            let copy_name = copy.metadata.name.clone().unwrap_or_default();
            self.limiter.acquire().await;
            targets
                .patch(
                    &copy_name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&copy),
                )
                .await
                .map_err(kube_err(format!(
                    "copying the image pull secret {source_name} to {namespace}/{copy_name}"
                )))?;
        }
        Ok(())
    }
}
