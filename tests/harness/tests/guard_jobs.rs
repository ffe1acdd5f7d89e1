//! Job progress only from the agent's own Jobs. A tenant creates, in their own namespace,
//! a Job labelled like a registration Job of another tenant's vCluster
//! (`vclink.io/component=registration`, the victim's `vclink.io/service-uid`) and marks
//! it Failed, next to a Secret of the same name. The victim's Service does not turn to
//! `error` (nor take the attacker's message), and the agent deletes neither object: it
//! did not create them.

mod e2e_support;
mod guard_support;

use std::time::{Duration, Instant};

use e2e_support::*;
use guard_support::*;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use vclink_harness::{E2eOptions, VClusterSpec};
use vclink_proto::keys;

const ATTACKER_NS: &str = "g-mallory";
const MESSAGE: &str = "forged failure from another tenant";

/// The name the agent gives the registration Job of the vCluster with Service `uid`
/// (`vclink-register-` + 12 hex digits of its SHA-256): public, so an attacker uses it.
fn agents_job_name(uid: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, uid.as_bytes());
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("vclink-register-{}", &hex[..12])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_foreign_registration_job_neither_speaks_for_a_vcluster_nor_is_deleted()
-> anyhow::Result<()> {
    let env = start(E2eOptions::default(), true).await?;
    let victim = env
        .create_vcluster(0, VClusterSpec::new("g-victim", "vc"))
        .await?;
    let imported = wait_connected(&env, 0, &victim).await?;
    let host = env.downstream().cluster.client().await?;
    namespace_with_labels(&env, 0, ATTACKER_NS, &[]).await?;
    let job_name = agents_job_name(victim.service_uid());
    let job_name = job_name.as_str();
    let labels = json!({keys::LABEL_AGENT_COMPONENT: keys::COMPONENT_REGISTRATION,
                        keys::LABEL_JOB_SERVICE_UID: victim.service_uid()});

    // The forged Job: parallelism 0 so Kubernetes runs nothing, then marked Failed.
    let jobs: Api<Job> = Api::namespaced(host.clone(), ATTACKER_NS);
    let job: Job = serde_json::from_value(json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": job_name, "namespace": ATTACKER_NS, "labels": labels},
        "spec": {"parallelism": 0, "backoffLimit": 0, "template": {
            "metadata": {"labels": labels},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}))?;
    jobs.create(&PostParams::default(), &job).await?;
    let secrets: Api<Secret> = Api::namespaced(host.clone(), ATTACKER_NS);
    let secret: Secret = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": job_name, "namespace": ATTACKER_NS, "labels": labels},
        "stringData": {"note": "the attacker's own data"}}))?;
    secrets.create(&PostParams::default(), &secret).await?;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({"status": {"failed": 1, "startTime": now, "conditions": [{
        "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
        "message": MESSAGE, "lastProbeTime": now, "lastTransitionTime": now}]}});
    jobs.patch_status(job_name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    let forged = Instant::now();
    wait(&env, "the forged Job to show Failed", || async {
        let j = jobs.get(job_name).await?;
        Ok(j.status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Failed" && c.status == "True")
            .then_some(()))
    })
    .await?;

    // The issue saw the victim turn to error within a second; watch three times longer
    // than the agent's slowest reaction would plausibly be, on a loaded machine.
    let window = Duration::from_secs(20);
    never(
        "the victim's Service must not take progress from another tenant's Job, nor may the agent delete that tenant's objects",
        forged + window,
        &env,
        || async {
            let ann = vclink_annotations(&env, 0, &victim).await?;
            let state = ann.get(keys::ANNOTATION_STATE).cloned();
            let err = ann.get(keys::ANNOTATION_LAST_ERROR).cloned().unwrap_or_default();
            if state.as_deref() != Some("connected") || err.contains(MESSAGE) {
                return Ok(Some(format!(
                    "vCluster g-victim/vc now says state {state:?}, last-error {err:?}: it took the Failed Job {ATTACKER_NS}/{job_name} of another namespace as its own"
                )));
            }
            if jobs.get_opt(job_name).await?.is_none_or(|j| j.metadata.deletion_timestamp.is_some()) {
                return Ok(Some(format!("the agent deleted Job {ATTACKER_NS}/{job_name}, which it did not create")));
            }
            if secrets.get_opt(job_name).await?.is_none_or(|s| s.metadata.deletion_timestamp.is_some()) {
                return Ok(Some(format!("the agent deleted Secret {ATTACKER_NS}/{job_name}, which it did not create")));
            }
            if current(&env, &victim).await?.as_ref() != Some(&imported) {
                return Ok(Some(format!("vCluster g-victim/vc's Rancher cluster {} changed", imported.name)));
            }
            Ok(None)
        },
    )
    .await?;
    let evs = service_events(&env, 0, &victim).await?;
    let took: Vec<_> = evs
        .iter()
        .filter(|e| e.message.as_deref().is_some_and(|m| m.contains(MESSAGE)))
        .collect();
    anyhow::ensure!(
        took.is_empty(),
        "the victim's Service shows the attacker's message in Events: {:?}",
        describe(&took)
    );
    Ok(())
}
