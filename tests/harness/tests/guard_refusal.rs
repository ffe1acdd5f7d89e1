//! One bad vCluster does not silence its host. On host A: a vCluster in a namespace of
//! host B's project, one whose `vclink.io/rancher-cluster-id` was hand-edited to name a
//! vCluster cluster of host B, and (later) more Services than the hub's
//! `--max-vclusters-per-agent`. A good vCluster created on A after the first two is
//! imported; each bad one shows `vclink.io/state: error` with its reason; the hub never
//! closes A's stream over and over (the agent does not keep reconnecting, the hub does
//! not keep logging refusals), and nothing A already has is deleted.

mod e2e_support;
mod guard_support;

use std::time::{Duration, Instant};

use e2e_support::*;
use guard_support::*;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::{Patch, PatchParams};
use vclink_harness::vcluster::{headless_service, service_object};
use vclink_harness::{E2eEnv, E2eOptions, VClusterSpec};
use vclink_proto::keys;

const LIMIT: usize = 4;

/// A host Service that looks like a vCluster's (no API server behind it: these are
/// never meant to be imported).
async fn bare_vcluster(env: &E2eEnv, i: usize, spec: &VClusterSpec) -> anyhow::Result<String> {
    namespace_with_labels(env, i, &spec.namespace, &[]).await?;
    if let Some(p) = &spec.project_id {
        let c = env.downstreams[i].cluster.client().await?;
        let short = p.split_once(':').map_or(p.as_str(), |(_, s)| s);
        let patch = serde_json::json!({"metadata": {
            "annotations": {"field.cattle.io/projectId": p},
            "labels": {"field.cattle.io/projectId": short}}});
        Api::<k8s_openapi::api::core::v1::Namespace>::all(c)
            .patch(
                &spec.namespace,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
    }
    let c = env.downstreams[i].cluster.client().await?;
    let svcs: Api<Service> = Api::namespaced(c, &spec.namespace);
    let pp = PatchParams::apply("guard-test").force();
    svcs.patch(
        &format!("{}-headless", spec.name),
        &pp,
        &Patch::Apply(headless_service(spec)),
    )
    .await?;
    let s = svcs
        .patch(&spec.name, &pp, &Patch::Apply(service_object(spec)))
        .await?;
    Ok(s.metadata.uid.unwrap_or_default())
}

/// `vclink.io/` annotations of a Service by namespace/name.
async fn annotations(
    env: &E2eEnv,
    i: usize,
    ns: &str,
    name: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let c = env.downstreams[i].cluster.client().await?;
    Ok(Api::<Service>::namespaced(c, ns)
        .get(name)
        .await?
        .metadata
        .annotations
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.starts_with("vclink.io/"))
        .collect())
}

/// Waits until Service ns/name says `error` with a last-error containing one of `words`.
async fn wait_refused(
    env: &E2eEnv,
    ns: &str,
    name: &str,
    why: &str,
    words: &[&str],
) -> anyhow::Result<String> {
    let r = wait(
        env,
        &format!(
            "Service {ns}/{name} ({why}) to show {}=error with the reason",
            keys::ANNOTATION_STATE
        ),
        || async {
            let a = annotations(env, 0, ns, name).await?;
            let err = a
                .get(keys::ANNOTATION_LAST_ERROR)
                .cloned()
                .unwrap_or_default();
            let lower = err.to_lowercase();
            Ok(
                (a.get(keys::ANNOTATION_STATE).map(String::as_str) == Some("error")
                    && words.iter().any(|w| lower.contains(w)))
                .then_some(err),
            )
        },
    )
    .await;
    match r {
        Ok(e) => Ok(e),
        Err(e) => {
            let a = annotations(env, 0, ns, name).await.unwrap_or_default();
            anyhow::bail!(
                "{ns}/{name} ({why}): the Service does not say why it is not imported; annotations {a:?}; {e}"
            )
        }
    }
}

/// Times A's agent started a new stream so far (its reconnect log line).
fn reconnects(env: &E2eEnv) -> usize {
    env.downstreams[0]
        .agent
        .as_ref()
        .map(|a| lines_with(&a.logs(), &["reconnecting to the hub"]).len())
        .unwrap_or(0)
}

/// Hub log lines closing A's stream.
fn stream_closures(env: &E2eEnv) -> usize {
    lines_with(&env.hub.logs(), &["closing agent stream"]).len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_vcluster_is_refused_alone_and_its_host_goes_on() -> anyhow::Result<()> {
    let mut opts = E2eOptions {
        downstreams: 2,
        removal_grace: Duration::from_secs(3),
        ..Default::default()
    };
    opts.hub.extra_args = vec![format!("--max-vclusters-per-agent={LIMIT}")];
    let env = start(opts, true).await?;
    let (a, b) = (
        env.downstreams[0].cluster_id.clone(),
        env.downstreams[1].cluster_id.clone(),
    );
    wait_agents_connected(&env, 2).await?;
    let log = ClusterLog::watch(&env).await?;

    // Host B: a project and an imported vCluster, whose cluster id A will claim.
    let pb = env.sim.create_project(&b, "team-b").await?;
    let on_b = env
        .create_vcluster(1, VClusterSpec::new("b-team", "vc"))
        .await?;
    let b_vc = wait_connected(&env, 1, &on_b).await?;

    // Host A: two bad vClusters.
    let (r0, c0) = (reconnects(&env), stream_closures(&env));
    let started = Instant::now();
    bare_vcluster(
        &env,
        0,
        &VClusterSpec::new("a-restored", "vc").project(&format!("{b}:{}", pb.id)),
    )
    .await?;
    bare_vcluster(
        &env,
        0,
        &VClusterSpec::new("a-edited", "vc")
            .service_annotation(keys::ANNOTATION_RANCHER_CLUSTER, &b_vc.id),
    )
    .await?;
    // ...and then a good one, which must be imported as if nothing were wrong.
    let good = env
        .create_vcluster(0, VClusterSpec::new("a-good", "vc"))
        .await?;
    let imported = wait_connected(&env, 0, &good).await.map_err(|e| {
        anyhow::anyhow!(
            "a vCluster created on host {a} after two bad ones was never imported: the bad ones silenced the host\n{e:#}"
        )
    })?;
    wait_refused(
        &env,
        "a-restored",
        "vc",
        &format!("namespace in host {b}'s project"),
        &["project"],
    )
    .await?;
    wait_refused(
        &env,
        "a-edited",
        "vc",
        &format!("rancher-cluster-id names host {b}'s cluster"),
        &[&b_vc.id, "cluster"],
    )
    .await?;

    // Over the limit: 2 bad + 1 good + 4 more = 7 > 4 (and 5 > 4 even if refused ones
    // are not counted).
    const MORE: [&str; 4] = ["x1", "x2", "x3", "x4"];
    for n in MORE {
        bare_vcluster(&env, 0, &VClusterSpec::new("a-many", n)).await?;
    }
    let over = wait(
        &env,
        &format!("one of the Services beyond --max-vclusters-per-agent={LIMIT} to show the limit"),
        || async {
            for n in MORE {
                let an = annotations(&env, 0, "a-many", n).await?;
                let err = an
                    .get(keys::ANNOTATION_LAST_ERROR)
                    .cloned()
                    .unwrap_or_default()
                    .to_lowercase();
                if an.get(keys::ANNOTATION_STATE).map(String::as_str) == Some("error")
                    && (err.contains("limit") || err.contains("max") || err.contains("too many"))
                {
                    return Ok(Some(n));
                }
            }
            Ok(None)
        },
    )
    .await?;
    eprintln!(
        "a-many/{over} refused for the limit after {:?}",
        started.elapsed()
    );

    // Bounded window: the host's stream stays up, nothing is deleted, the good one stays.
    never(
        "host A's stream must not be closed again and again, and its good vCluster must stay imported",
        Instant::now() + Duration::from_secs(20),
        &env,
        || async {
            let (r, c) = (reconnects(&env) - r0, stream_closures(&env) - c0);
            if r > 1 || c > 1 {
                return Ok(Some(format!(
                    "host {a}'s agent reconnected {r} times and the hub logged {c} stream closures since the bad vClusters appeared (a refusal per host, not per vCluster)"
                )));
            }
            if let Some(p) = log.deletion_of(&imported.prov_uid, "good vCluster a-good/vc", started) {
                return Ok(Some(p));
            }
            if let Some(p) = log.deletion_of(&b_vc.prov_uid, &format!("host {b}'s vCluster b-team/vc (claimed by a-edited/vc)"), started) {
                return Ok(Some(p));
            }
            let st = state_of(&env, 0, &good).await?;
            if st.as_deref() != Some("connected") {
                return Ok(Some(format!("good vCluster a-good/vc now says state {st:?}")));
            }
            Ok(None)
        },
    )
    .await?;
    // Nothing was created for a refused vCluster.
    let made: Vec<String> = log
        .all()
        .into_values()
        .filter(|s| s.labels.get(keys::LABEL_HOST_CLUSTER) == Some(&a))
        .filter(|s| {
            let ns = s.labels.get(keys::LABEL_NAMESPACE).map(String::as_str);
            ns == Some("a-restored") || ns == Some("a-edited")
        })
        .map(|s| s.name)
        .collect();
    anyhow::ensure!(
        made.is_empty(),
        "Rancher clusters were created for refused vClusters of host {a}: {made:?}\n{}",
        diagnostics(&env)
    );
    Ok(())
}
