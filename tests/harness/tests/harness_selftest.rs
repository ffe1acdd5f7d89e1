//! Proves the harness's fakes do what the end-to-end tests rely on, against real API
//! servers: the Job runner materialises Secret volumes and env, rewrites pod paths and
//! mapped Service addresses, fakes Pod Security admission, ignores foreign images, and
//! writes Job status like the Job controller would.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use vclink_envtest::{Cluster, ClusterOptions};
use vclink_harness::{JobRunner, RunOutcome, RunnerConfig, ServiceMap, wait_for};

const TIMEOUT: Duration = Duration::from_secs(60);

fn job(
    ns: &str,
    name: &str,
    image: &str,
    script: &str,
    extra_args: &[&str],
    pod: serde_json::Value,
) -> Job {
    let mut args = vec!["-c".to_owned(), script.to_owned(), "sh".to_owned()];
    args.extend(extra_args.iter().map(|s| s.to_string()));
    let mut spec = serde_json::json!({
        "restartPolicy": "Never",
        "automountServiceAccountToken": false,
        "containers": [{
            "name": "c", "image": image,
            "command": ["/bin/sh"], "args": args,
            "env": [
                {"name": "LITERAL", "value": "/etc/payload/greeting"},
                {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "payload", "key": "env-value"}}}
            ],
            "volumeMounts": [{"name": "payload", "mountPath": "/etc/payload", "readOnly": true}]
        }],
        "volumes": [{"name": "payload", "secret": {"secretName": "payload",
            "items": [{"key": "greeting", "path": "greeting"}], "defaultMode": 0o400}}]
    });
    if let (Some(extra), Some(obj)) = (pod.as_object(), spec.as_object_mut()) {
        for (k, v) in extra {
            obj.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"backoffLimit": 0, "template": {"spec": spec}}
    }))
    .expect("job")
}

async fn condition(api: &Api<Job>, name: &str) -> anyhow::Result<Option<(String, String)>> {
    let j = api.get(name).await?;
    let c = j.status.and_then(|s| s.conditions).unwrap_or_default();
    Ok(c.into_iter()
        .find(|c| c.status == "True" && (c.type_ == "Complete" || c.type_ == "Failed"))
        .map(|c| (c.type_, c.message.unwrap_or_default())))
}

#[tokio::test]
async fn job_runner_runs_jobs_like_a_kubelet_would() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let host = Cluster::start("runner-host", ClusterOptions::default()).await?;
    let client = host.client().await?;
    let services = ServiceMap::new();
    services.insert("https://vc1.team-a:443", "https://127.0.0.1:45678");
    let runner = JobRunner::start(
        &host,
        RunnerConfig {
            agent_binary: PathBuf::from("/bin/sh"),
            service_map: services.clone(),
            image_substring: "vclink".into(),
        },
    )
    .await?;

    let pp = PatchParams::apply("selftest");
    for (ns, restricted) in [("team-a", false), ("locked", true)] {
        let labels: BTreeMap<&str, &str> = if restricted {
            BTreeMap::from([("pod-security.kubernetes.io/enforce", "restricted")])
        } else {
            BTreeMap::new()
        };
        let obj = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}});
        Api::<Namespace>::all(client.clone())
            .patch(ns, &pp, &Patch::Apply(obj))
            .await?;
    }
    let jobs: Api<Job> = Api::namespaced(client.clone(), "team-a");
    let post = PostParams::default();

    // A foreign image is never run; created first so the runner has seen it before the rest.
    jobs.create(
        &post,
        &job(
            "team-a",
            "foreign",
            "docker.io/library/busybox",
            "exit 0",
            &[],
            serde_json::json!({}),
        ),
    )
    .await?;

    // The Job is created before its Secret, as the agent does (the Secret is owned by the Job).
    let script = r#"{ cat "$LITERAL"; printf ' %s %s %s' "$FROM_SECRET" "$1" "$(stat -c %a "$LITERAL")"; } > "$2"; exit 1"#;
    jobs.create(
        &post,
        &job(
            "team-a",
            "reads-volumes",
            "ghcr.io/vclink/vclink-agent:test",
            script,
            &[
                "--service-url=https://vc1.team-a:443",
                "/dev/termination-log",
            ],
            serde_json::json!({}),
        ),
    )
    .await?;
    let secret = serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "payload", "namespace": "team-a"},
        "stringData": {"greeting": "hello-from-volume", "env-value": "from-secret-env"}});
    Api::<Secret>::namespaced(client.clone(), "team-a")
        .patch("payload", &pp, &Patch::Apply(secret))
        .await?;
    jobs.create(
        &post,
        &job(
            "team-a",
            "succeeds",
            "ghcr.io/vclink/vclink-agent:test",
            "exit 0",
            &[],
            serde_json::json!({}),
        ),
    )
    .await?;
    let locked: Api<Job> = Api::namespaced(client.clone(), "locked");
    locked
        .create(
            &post,
            &job(
                "locked",
                "privileged",
                "vclink",
                "exit 0",
                &[],
                serde_json::json!({}),
            ),
        )
        .await?;

    let failed = wait_for("Job reads-volumes to fail", TIMEOUT, || {
        condition(&jobs, "reads-volumes")
    })
    .await?;
    assert_eq!(failed.0, "Failed");
    // Volume file via a rewritten env path, a Secret-sourced env value, the mapped Service
    // URL, the item's defaultMode, and the termination log rewritten to a file whose content became the message.
    assert_eq!(
        failed.1,
        "hello-from-volume from-secret-env --service-url=https://127.0.0.1:45678 400"
    );

    let ok = wait_for("Job succeeds to complete", TIMEOUT, || {
        condition(&jobs, "succeeds")
    })
    .await?;
    assert_eq!(ok.0, "Complete");
    let status = jobs.get("succeeds").await?.status.expect("status");
    assert_eq!(status.succeeded, Some(1));
    assert!(status.start_time.is_some() && status.completion_time.is_some());

    let rejected = wait_for("Job privileged to be rejected", TIMEOUT, || {
        condition(&locked, "privileged")
    })
    .await?;
    assert_eq!(rejected.0, "Failed");
    assert!(
        rejected
            .1
            .contains("violates PodSecurity \"restricted:latest\""),
        "{}",
        rejected.1
    );

    let runs = runner.records();
    assert!(
        runner.runs_of("team-a", "foreign").is_empty(),
        "a busybox Job must not run: {runs:?}"
    );
    let priv_run = runner.runs_of("locked", "privileged");
    assert!(
        matches!(priv_run[0].outcome, RunOutcome::Rejected { .. }) && priv_run[0].argv.is_empty(),
        "{priv_run:?}"
    );
    let rv = &runner.runs_of("team-a", "reads-volumes")[0];
    assert_eq!(rv.exit_code, Some(1));
    assert_eq!(rv.automount_service_account_token, Some(false));
    assert!(
        rv.env
            .iter()
            .any(|(k, v)| k == "FROM_SECRET" && v == "<secretKeyRef payload/env-value>"),
        "{:?}",
        rv.env
    );
    assert!(
        !rv.argv
            .iter()
            .any(|a| a.contains("/etc/payload") || a.contains("/dev/termination-log")),
        "{:?}",
        rv.argv
    );

    // One run per Job UID: a re-created Job runs again.
    // Background propagation: without a garbage collector the default (orphan) would hang.
    jobs.delete("succeeds", &kube::api::DeleteParams::background())
        .await?;
    wait_for("Job succeeds to be gone", TIMEOUT, || async {
        jobs.get_opt("succeeds").await.map(|j| j.is_none())
    })
    .await?;
    jobs.create(
        &post,
        &job(
            "team-a",
            "succeeds",
            "ghcr.io/vclink/vclink-agent:test",
            "exit 0",
            &[],
            serde_json::json!({}),
        ),
    )
    .await?;
    wait_for("the re-created Job to run", TIMEOUT, || async {
        runner
            .runs_of("team-a", "succeeds")
            .iter()
            .filter(|r| r.outcome == RunOutcome::Succeeded)
            .count()
            == 2
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn sim_vcluster_kubeconfig_reaches_its_api_via_the_service_map() -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::{ResourceQuota, Service};
    use vclink_harness::vcluster::{Flavour, SimVCluster, VClusterSpec};
    use vclink_rancher_sim::{RancherSim, SimOptions};

    let _ = rustls::crypto::ring::default_provider().install_default();
    let local = Cluster::start("selftest-local", ClusterOptions::default()).await?;
    let sim = RancherSim::start(&local, SimOptions::default()).await?;
    let host = Cluster::start("selftest-host", ClusterOptions::default()).await?;
    let hc = host.client().await?;
    let services = ServiceMap::new();
    let spec = VClusterSpec::new("team-a", "vc1")
        .project("c-m-abcd1234:p-xk2lm")
        .resource_quota()
        .pod_security_restricted();
    let vc = SimVCluster::create(&host, &sim, &services, spec).await?;
    // The agent's view: the kubeconfig Secret names https://localhost:8443 ...
    let secret = Api::<Secret>::namespaced(hc.clone(), "team-a")
        .get("vc-vc1")
        .await?;
    let data = secret.data.unwrap_or_default();
    for key in [
        "config",
        "certificate-authority",
        "client-certificate",
        "client-key",
    ] {
        assert!(data.contains_key(key), "vc-vc1 lacks {key}");
    }
    let mut kc: kube::config::Kubeconfig = serde_yaml_ng::from_slice(&data["config"].0)?;
    let cluster = kc.clusters[0].cluster.as_mut().expect("cluster");
    assert_eq!(cluster.server.as_deref(), Some("https://localhost:8443"));
    // ... and the registration Job replaces it with the Service address, which the
    // ServiceMap resolves to the vCluster's API server.
    let target = services
        .resolve(&vc.service_url())
        .expect("the Service address is mapped");
    cluster.server = Some(target);
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await?;
    let vclient = kube::Client::try_from(cfg)?;
    // The API server creates `default` shortly after it starts serving: wait for it.
    let namespaces = Api::<Namespace>::all(vclient);
    wait_for(
        "namespace default in the vCluster's API server",
        TIMEOUT,
        || {
            let namespaces = namespaces.clone();
            async move { namespaces.get_opt("default").await.map(|n| n.is_some()) }
        },
    )
    .await?;

    // Host objects as the chart makes them.
    let svc = Api::<Service>::namespaced(hc.clone(), "team-a")
        .get("vc1")
        .await?;
    assert_eq!(svc.metadata.uid.as_deref(), Some(vc.service_uid()));
    let headless = Api::<Service>::namespaced(hc.clone(), "team-a")
        .get("vc1-headless")
        .await?;
    assert_eq!(
        headless.spec.and_then(|s| s.cluster_ip).as_deref(),
        Some("None")
    );
    Api::<ResourceQuota>::namespaced(hc.clone(), "team-a")
        .get("vc-vc1")
        .await?;
    let ns = Api::<Namespace>::all(hc.clone()).get("team-a").await?;
    assert_eq!(
        ns.metadata
            .labels
            .unwrap_or_default()
            .get("field.cattle.io/projectId")
            .map(String::as_str),
        Some("p-xk2lm")
    );

    // A custom kubeconfig server is reachable as written, and its Service address is not.
    let vc2 = SimVCluster::create(
        &host,
        &sim,
        &services,
        VClusterSpec::new("team-a", "vc2")
            .flavour(Flavour::V019)
            .custom_server(),
    )
    .await?;
    assert!(services.resolve(&vc2.service_url()).is_none());
    let kc2: kube::config::Kubeconfig = serde_yaml_ng::from_str(vc2.kubeconfig_yaml())?;
    assert_eq!(
        kc2.clusters[0]
            .cluster
            .as_ref()
            .and_then(|c| c.server.as_deref()),
        Some(vc2.api().url())
    );
    let c2 = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kc2, &Default::default()).await?,
    )?;
    // Reachable and answering (its `default` namespace may not exist yet).
    Api::<Namespace>::all(c2).list(&Default::default()).await?;
    Api::<ResourceQuota>::namespaced(hc.clone(), "team-a")
        .get_opt("vc2-quota")
        .await?
        .map(|_| ())
        .ok_or(())
        .expect_err("no quota unless asked");

    vc.delete().await?;
    assert!(
        Api::<Service>::namespaced(hc, "team-a")
            .get_opt("vc1")
            .await?
            .is_none()
    );
    assert!(services.resolve(&vc.service_url()).is_none());
    Ok(())
}

/// The registration Job as the agent builds it (agent/src/jobs/spec.rs): restricted-safe,
/// with requests/limits, the credential only in a mounted Secret.
fn registration_job(ns: &str, name: &str, vc: &str) -> serde_json::Value {
    let sc = serde_json::json!({"runAsNonRoot": true, "runAsUser": 65532, "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}});
    serde_json::json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": ns},
        "spec": {"backoffLimit": 2, "activeDeadlineSeconds": 120, "template": {"spec": {
            "restartPolicy": "Never", "automountServiceAccountToken": false,
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "register", "image": "ghcr.io/vclink/vclink-agent:test",
                "command": ["/usr/local/bin/vclink-agent", "register"],
                "args": ["--kubeconfig=/etc/vclink/vcluster/config", "--registration-dir=/etc/vclink/registration",
                         format!("--service-url=https://{vc}.{ns}:443"), "--termination-log=/dev/termination-log"],
                "securityContext": sc,
                "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}},
                "volumeMounts": [{"name": "vcluster-kubeconfig", "mountPath": "/etc/vclink/vcluster", "readOnly": true},
                                 {"name": "registration", "mountPath": "/etc/vclink/registration", "readOnly": true}]}],
            "volumes": [{"name": "vcluster-kubeconfig", "secret": {"secretName": format!("vc-{vc}")}},
                        {"name": "registration", "secret": {"secretName": name, "defaultMode": 0o400}}]}}}})
}

#[tokio::test]
async fn a_registration_job_imports_a_simulated_vcluster_into_the_simulator() -> anyhow::Result<()>
{
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    use vclink_harness::env::{management_cluster, provisioning_cluster};
    use vclink_harness::vcluster::{SimVCluster, VClusterSpec};
    use vclink_rancher_sim::{RancherSim, SimOptions, TokenMode};

    let _ = rustls::crypto::ring::default_provider().install_default();
    let agent = vclink_harness::procs::binary("vclink-agent")?;
    let local = Cluster::start("reg-local", ClusterOptions::default()).await?;
    let sim = RancherSim::start(
        &local,
        SimOptions {
            token_mode: Some(TokenMode::Legacy),
            ..Default::default()
        },
    )
    .await?;
    let host = Cluster::start("reg-host", ClusterOptions::default()).await?;
    let services = ServiceMap::new();
    let vc = SimVCluster::create(
        &host,
        &sim,
        &services,
        VClusterSpec::new("team-a", "vc1")
            .pod_security_restricted()
            .resource_quota(),
    )
    .await?;
    let runner = JobRunner::start(
        &host,
        RunnerConfig {
            agent_binary: agent,
            service_map: services,
            image_substring: "vclink".into(),
        },
    )
    .await?;

    // What the hub does: a provisioning cluster, then the registration token's manifest URL.
    let lc = local.client().await?;
    let prov: Api<DynamicObject> =
        Api::namespaced_with(lc.clone(), "fleet-default", &provisioning_cluster());
    let obj = serde_json::json!({"apiVersion": "provisioning.cattle.io/v1", "kind": "Cluster",
        "metadata": {"name": "vc1-selftest", "namespace": "fleet-default",
                     "annotations": {"field.cattle.io/no-creator-rbac": "true"}}, "spec": {}});
    prov.create(&PostParams::default(), &serde_json::from_value(obj)?)
        .await?;
    let id = wait_for("the management cluster id", TIMEOUT, || async {
        let c = prov.get("vc1-selftest").await?;
        anyhow::Ok(
            c.data["status"]["clusterName"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        )
    })
    .await?;
    let crt = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("management.cattle.io", "v3", "ClusterRegistrationToken"),
        "clusterregistrationtokens",
    );
    let tokens: Api<DynamicObject> = Api::namespaced_with(lc.clone(), &id, &crt);
    let manifest_url = wait_for("the registration token's manifest URL", TIMEOUT, || async {
        let t = tokens.get_opt("default-token").await?;
        anyhow::Ok(t.and_then(|t| {
            t.data["status"]["manifestUrl"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        }))
    })
    .await?;

    // What the agent does: the Job, then its Secret.
    let hc = host.client().await?;
    let job: Job = serde_json::from_value(registration_job(
        "team-a",
        "vclink-register-selftest",
        "vc1",
    ))?;
    Api::<Job>::namespaced(hc.clone(), "team-a")
        .create(&PostParams::default(), &job)
        .await?;
    let secret = serde_json::json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "vclink-register-selftest", "namespace": "team-a"},
        "stringData": {"manifest-url": manifest_url, "tls-mode": "strict", "ca.crt": sim.ca_pem()}});
    Api::<Secret>::namespaced(hc.clone(), "team-a")
        .patch(
            "vclink-register-selftest",
            &PatchParams::apply("selftest"),
            &Patch::Apply(secret),
        )
        .await?;

    let jobs: Api<Job> = Api::namespaced(hc, "team-a");
    let (kind, message) = wait_for(
        "the registration Job to finish",
        Duration::from_secs(120),
        || condition(&jobs, "vclink-register-selftest"),
    )
    .await?;
    let run = &runner.runs_of("team-a", "vclink-register-selftest")[0];
    let stderr = std::fs::read_to_string(&run.stderr_path).unwrap_or_default();
    assert_eq!(kind, "Complete", "message: {message}\nstderr:\n{stderr}");
    let token = manifest_url
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    for a in run.argv.iter().chain(run.env.iter().map(|(_, v)| v)) {
        assert!(!a.contains(&token), "credential in the Job's argv/env: {a}");
    }
    assert!(
        run.argv
            .contains(&format!("--service-url={}", vc.api().url())),
        "{:?}",
        run.argv
    );

    // The manifest landed in the vCluster's API server, so the simulator sees the agent.
    let mgmt: Api<DynamicObject> = Api::all_with(lc, &management_cluster());
    wait_for(
        "the management cluster to be Connected",
        TIMEOUT,
        || async {
            let m = mgmt.get(&id).await?;
            let conds = m.data["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            anyhow::Ok(
                conds
                    .iter()
                    .any(|c| c["type"] == "Connected" && c["status"] == "True"),
            )
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn e2e_env_brings_up_hub_and_agent_and_imports_a_vcluster() -> anyhow::Result<()> {
    use vclink_harness::{E2eEnv, E2eOptions, VClusterSpec};

    let env = E2eEnv::start(E2eOptions::default()).await?;
    wait_for("the hub to count one connected agent", TIMEOUT, || async {
        anyhow::Ok(
            env.hub
                .metrics()
                .await?
                .lines()
                .any(|l| l.trim() == "vclink_hub_agents_connected 1"),
        )
    })
    .await?;
    let vc = env
        .create_vcluster(
            0,
            VClusterSpec::new("team-a", "vc1")
                .pod_security_restricted()
                .resource_quota(),
        )
        .await?;
    let res = env
        .wait_for_ready_cluster("fleet-default", &vc, Duration::from_secs(90))
        .await;
    if res.is_err() {
        eprintln!("--- hub ---\n{}", env.hub.log_buffer().tail(60));
        if let Some(a) = &env.downstream().agent {
            eprintln!("--- agent ---\n{}", a.log_buffer().tail(60));
        }
        eprintln!("--- runs ---\n{:#?}", env.downstream().runner.records());
    }
    let (name, id) = res?;
    assert!(id.starts_with("c-m-"), "{id}");
    assert!(!name.is_empty());

    // Tearing the environment down leaves no process behind: every API server and etcd
    // (local, downstream, the vCluster's), the hub and the agent are gone.
    let mut pids = env.local.pids();
    for d in &env.downstreams {
        pids.extend(d.cluster.pids());
        pids.extend(d.agent.as_ref().and_then(|a| a.pid()));
    }
    pids.extend(vc.api().pids());
    pids.extend(env.hub.pid());
    assert!(
        pids.len() >= 8,
        "expected every process to be known: {pids:?}"
    );
    assert!(pids.iter().all(|p| vclink_envtest::procs::is_alive(*p)));
    drop(vc);
    drop(env);
    wait_for(
        "every process of the environment to exit",
        TIMEOUT,
        || async {
            let alive: Vec<u32> = pids
                .iter()
                .copied()
                .filter(|p| vclink_envtest::procs::is_alive(*p))
                .collect();
            anyhow::Ok(alive.is_empty())
        },
    )
    .await?;
    Ok(())
}
