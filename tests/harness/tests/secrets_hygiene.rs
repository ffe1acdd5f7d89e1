//! Secrets hygiene: after a full import — once with the legacy token
//! presentation (token in `status.token` and every URL) and once with newer Rancher's
//! token Secret and `{token}` placeholders — no credential appears anywhere a user or an
//! operator can read it: not in any hub or agent log line, not in any Event of any cluster
//! (local, downstream, the vCluster's own API), not in any Job or Pod spec or Service the
//! agent wrote, not in the registration Job's process arguments or declared environment,
//! and not in its output. The credentials searched for are the ones the Rancher simulator
//! issued (registration tokens and the manifest URLs embedding them), the agent's bearer
//! token towards the hub, the Rancher Tokens the hub issued for itself, and the hub's and
//! agent's own Kubernetes tokens.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod, Secret, Service};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use vclink_harness::{E2eEnv, E2eOptions, RunOutcome, VClusterSpec, wait_for};
use vclink_rancher_sim::TokenMode;

const TIMEOUT: Duration = Duration::from_secs(120);

/// Where a text came from, and the text.
type Haystack = (String, String);

/// Every Event (core/v1 and events.k8s.io/v1) of a cluster, as JSON text.
async fn events(client: &kube::Client, cluster: &str) -> anyhow::Result<Vec<Haystack>> {
    let mut out = Vec::new();
    for e in Api::<Event>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
    {
        out.push((
            format!(
                "{cluster}: Event {}",
                e.metadata.name.clone().unwrap_or_default()
            ),
            serde_json::to_string(&e)?,
        ));
    }
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("events.k8s.io", "v1", "Event"),
        "events",
    );
    for e in Api::<DynamicObject>::all_with(client.clone(), &ar)
        .list(&ListParams::default())
        .await?
        .items
    {
        out.push((
            format!(
                "{cluster}: events.k8s.io Event {}",
                e.metadata.name.clone().unwrap_or_default()
            ),
            serde_json::to_string(&e)?,
        ));
    }
    Ok(out)
}

/// Jobs, Pods and Services of the downstream cluster (what the agent wrote), as JSON.
async fn workloads(client: &kube::Client) -> anyhow::Result<Vec<Haystack>> {
    let mut out = Vec::new();
    for j in Api::<Job>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
    {
        out.push((
            format!("Job {}", j.metadata.name.clone().unwrap_or_default()),
            serde_json::to_string(&j)?,
        ));
    }
    for p in Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
    {
        out.push((
            format!("Pod {}", p.metadata.name.clone().unwrap_or_default()),
            serde_json::to_string(&p)?,
        ));
    }
    for s in Api::<Service>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
    {
        out.push((
            format!("Service {}", s.metadata.name.clone().unwrap_or_default()),
            serde_json::to_string(&s)?,
        ));
    }
    Ok(out)
}

/// `(what, where)` for every needle found in a haystack; the needle itself is never
/// printed.
fn leaks(haystacks: &[Haystack], needles: &[(String, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for (what, needle) in needles {
        for (place, text) in haystacks {
            if text.contains(needle.as_str()) {
                out.push(format!("{what} appears in {place}"));
            }
        }
    }
    out
}

async fn import_and_search(mode: TokenMode) -> anyhow::Result<()> {
    let env = E2eEnv::start(E2eOptions {
        token_mode: Some(mode),
        ..E2eOptions::default()
    })
    .await?;
    let admin = env.local_client().await?;
    let downstream = env.downstream().cluster.client().await?;
    let vc = env
        .create_vcluster(
            0,
            VClusterSpec::new("team-a", "vc1").pod_security_restricted(),
        )
        .await?;
    let (_, m) = env
        .wait_for_ready_cluster("fleet-default", &vc, TIMEOUT)
        .await?;
    // Every registration Job has finished (so its output is complete).
    let records = wait_for("the registration Job to finish", TIMEOUT, || async {
        let r = env.downstream().runner.records();
        let done = !r.is_empty()
            && r.iter().all(|r| !matches!(r.outcome, RunOutcome::Running))
            && r.iter().any(|r| r.exit_code == Some(0));
        anyhow::Ok(done.then_some(r))
    })
    .await?;

    // The needles: what the simulator issued, and the processes' own tokens.
    let mut needles: Vec<(String, String)> = Vec::new();
    for (token, url, cid) in env.sim.registration_credentials() {
        needles.push((format!("the registration token of {cid}"), token));
        needles.push((format!("the manifest URL of {cid}"), url));
    }
    // Positive control: the vCluster's own token is among them, read where Rancher keeps it.
    let crt_ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("management.cattle.io", "v3", "ClusterRegistrationToken"),
        "clusterregistrationtokens",
    );
    let crt = Api::<DynamicObject>::namespaced_with(admin.clone(), &m, &crt_ar)
        .get("default-token")
        .await?;
    let token = match mode {
        TokenMode::Legacy => crt.data["status"]["token"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        TokenMode::SecretPlaceholder => {
            let s = Api::<Secret>::namespaced(admin.clone(), &m)
                .get("crt-token-default-token")
                .await?;
            let bytes = s.data.and_then(|d| d.get("token").cloned()).map(|b| b.0);
            String::from_utf8(bytes.unwrap_or_default())?
                .trim()
                .to_owned()
        }
    };
    assert!(token.len() >= 16, "the vCluster cluster has a real token");
    assert!(
        needles.iter().any(|(_, n)| *n == token),
        "the simulator reports the token it gave the vCluster's cluster"
    );
    let agent = env.downstream().agent.as_ref().expect("agent");
    needles.push((
        "the agent's bearer token".into(),
        agent.hub_token().expose().to_owned(),
    ));
    if let Some(t) = agent.kube_token() {
        needles.push(("the agent's Kubernetes token".into(), t.expose().to_owned()));
    }
    if let Some(t) = env.hub.kube_token() {
        needles.push(("the hub's Kubernetes token".into(), t.expose().to_owned()));
    }
    // The hub's Rancher credential: the Tokens it issued for itself (--rancher-user).
    let token_ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("management.cattle.io", "v3", "Token"),
        "tokens",
    );
    for t in Api::<DynamicObject>::all_with(admin.clone(), &token_ar)
        .list(&ListParams::default().labels("vclink.io/hub-token=true"))
        .await?
        .items
    {
        if let Some(secret) = t.data["token"].as_str().filter(|s| !s.is_empty()) {
            needles.push(("the hub's Rancher token".into(), secret.to_owned()));
        }
    }
    assert!(
        needles.iter().all(|(_, n)| n.len() >= 16),
        "needles are real credentials"
    );

    // The haystacks.
    let mut hay: Vec<Haystack> = Vec::new();
    hay.extend(
        env.hub
            .logs()
            .into_iter()
            .map(|l| ("a hub log line".to_owned(), l)),
    );
    for d in &env.downstreams {
        if let Some(a) = &d.agent {
            hay.extend(
                a.logs()
                    .into_iter()
                    .map(|l| (format!("a log line of the agent of {}", d.name), l)),
            );
        }
    }
    hay.extend(events(&admin, "local").await?);
    hay.extend(events(&downstream, "downstream").await?);
    hay.extend(events(&vc.client().await?, "the vCluster").await?);
    hay.extend(workloads(&downstream).await?);
    for r in &records {
        let job = format!("registration Job {}/{}", r.namespace, r.job_name);
        hay.push((format!("{job}: process args"), r.argv.join(" ")));
        hay.push((format!("{job}: declared env"), format!("{:?}", r.env)));
        hay.push((format!("{job}: pod spec"), r.pod_spec.to_string()));
        for p in [&r.stdout_path, &r.stderr_path] {
            hay.push((
                format!("{job}: output {}", p.display()),
                std::fs::read_to_string(p).unwrap_or_default(),
            ));
        }
    }
    assert!(hay.len() > 20, "searched too little: {} texts", hay.len());
    let found = leaks(&hay, &needles);
    assert!(
        found.is_empty(),
        "{mode:?}: credentials leaked:\n{}",
        found.join("\n")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_credential_appears_in_logs_events_jobs_or_args_legacy_tokens() -> anyhow::Result<()> {
    import_and_search(TokenMode::Legacy).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_credential_appears_in_logs_events_jobs_or_args_token_secrets() -> anyhow::Result<()> {
    import_and_search(TokenMode::SecretPlaceholder).await
}

#[test]
fn the_search_finds_a_needle_without_printing_it() {
    let hay = vec![(
        "a log line".to_owned(),
        "x token=abcdefgh0123456789 y".to_owned(),
    )];
    let needles = vec![("the token".to_owned(), "abcdefgh0123456789".to_owned())];
    let found = leaks(&hay, &needles);
    assert_eq!(found, vec!["the token appears in a log line".to_owned()]);
    assert!(!found[0].contains("abcdefgh"));
}
