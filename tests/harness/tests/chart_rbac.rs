//! The end-to-end suite runs hub and agent under exactly the RBAC the Helm charts render
//! (E2eEnv's default): this proves it. The hub's identity in the local cluster is the hub
//! chart's ServiceAccount and cannot read an unrelated Secret nor list Secrets; the
//! agent's identity downstream cannot read any Secret (not even the vCluster's
//! kubeconfig); and with exactly these rights a full import works, and owner sync passes
//! Rancher's escalation check through the per-cluster grant — which is gone again once
//! the bindings exist.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use kube::Api;
use kube::api::{DynamicObject, ListParams, PostParams};
use serde_json::json;
use vclink_harness::procs::rbac;
use vclink_harness::{E2eEnv, E2eOptions, VClusterSpec, wait_for};

const TIMEOUT: Duration = Duration::from_secs(120);

fn is_forbidden<T: std::fmt::Debug>(r: &Result<T, kube::Error>) -> bool {
    matches!(r, Err(kube::Error::Api(e)) if e.code == 403)
}

fn crtbs(c: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let ar = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk(
            "management.cattle.io",
            "v3",
            "ClusterRoleTemplateBinding",
        ),
        "clusterroletemplatebindings",
    );
    Api::namespaced_with(c.clone(), ns, &ar)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hub_and_agent_run_with_exactly_the_charts_rbac() -> anyhow::Result<()> {
    let env = E2eEnv::start(E2eOptions::default()).await?;
    let admin = env.local_client().await?;
    let host = env.downstream().cluster_id.clone();
    let agent = env.downstream().agent.as_ref().expect("agent started");
    assert!(
        env.hub.uses_chart_rbac(),
        "E2eEnv's hub runs under the hub chart's RBAC"
    );
    let hub_token = env.hub.kube_token().expect("hub ServiceAccount token");
    let agent_token = agent.kube_token().expect("agent ServiceAccount token");

    // The hub's identity in the local cluster.
    let hub = env.local.client_with_token(hub_token.expose()).await?;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "someone-elses-secret"},
        "stringData": {"password": "hunter2"}
    }))?;
    Api::<Secret>::namespaced(admin.clone(), &host)
        .create(&PostParams::default(), &secret)
        .await?;
    let in_cluster_ns: Api<Secret> = Api::namespaced(hub.clone(), &host);
    assert!(
        is_forbidden(&in_cluster_ns.get("someone-elses-secret").await),
        "the hub must not read an unrelated Secret in a c-m- namespace"
    );
    assert!(
        is_forbidden(
            &Api::<Secret>::all(hub.clone())
                .list(&ListParams::default())
                .await
        ),
        "the hub must not list Secrets"
    );
    let token_secrets = Api::<Secret>::all(hub.clone())
        .list(&ListParams::default().fields("metadata.name=crt-token-default-token"))
        .await?;
    assert!(
        !token_secrets.items.is_empty(),
        "the hub's token-Secret watch is allowed (Rancher 2.15 writes them)"
    );
    let crb: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "hub-makes-itself-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": rbac::HUB_SERVICE_ACCOUNT, "namespace": rbac::RELEASE_NAMESPACE}]
    }))?;
    assert!(
        is_forbidden(
            &Api::<ClusterRoleBinding>::all(hub.clone())
                .create(&PostParams::default(), &crb)
                .await
        ),
        "the hub cannot make itself admin"
    );
    let rb: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "hub-admin-here"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": rbac::HUB_SERVICE_ACCOUNT, "namespace": rbac::RELEASE_NAMESPACE}]
    }))?;
    assert!(
        is_forbidden(
            &Api::<RoleBinding>::namespaced(hub.clone(), &host)
                .create(&PostParams::default(), &rb)
                .await
        ),
        "the hub may bind only its grant ClusterRole"
    );

    // A full import, and owner sync through the escalation check.
    let project = env.sim.create_project(&host, "team-a").await?;
    let project_id = format!("{host}:{}", project.id);
    let prtb: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "management.cattle.io/v3", "kind": "ProjectRoleTemplateBinding",
        "metadata": {"name": "alice-owner", "namespace": project.backing_namespace},
        "projectName": project_id, "roleTemplateName": "project-owner", "userName": "u-alice"
    }))?;
    let prtb_ar = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk(
            "management.cattle.io",
            "v3",
            "ProjectRoleTemplateBinding",
        ),
        "projectroletemplatebindings",
    );
    Api::<DynamicObject>::namespaced_with(admin.clone(), &project.backing_namespace, &prtb_ar)
        .create(&PostParams::default(), &prtb)
        .await?;
    let vc = env
        .create_vcluster(
            0,
            VClusterSpec::new("team-a", "vc1")
                .project(&project_id)
                .pod_security_restricted(),
        )
        .await?;
    let res = env
        .wait_for_ready_cluster("fleet-default", &vc, TIMEOUT)
        .await;
    if res.is_err() {
        eprintln!("--- hub ---\n{}", env.hub.log_buffer().tail(60));
        eprintln!("--- agent ---\n{}", agent.log_buffer().tail(60));
    }
    let (_, m) = res?;
    let owner = wait_for(
        "the hub to grant u-alice cluster-owner",
        TIMEOUT,
        || async {
            let list = crtbs(&admin, &m).list(&ListParams::default()).await?;
            anyhow::Ok(list.items.into_iter().find(|o| {
                o.data["userName"] == "u-alice" && o.data["roleTemplateName"] == "cluster-owner"
            }))
        },
    )
    .await;
    if owner.is_err() {
        eprintln!("--- hub ---\n{}", env.hub.log_buffer().tail(60));
    }
    owner?;
    assert!(
        Api::<RoleBinding>::namespaced(admin.clone(), &m)
            .get_opt("vclink-hub-crtb-grant")
            .await?
            .is_none(),
        "the hub's grant binding is removed once the CRTBs exist"
    );

    // The agent's identity downstream: Services yes, Secrets never.
    let downstream = env
        .downstream()
        .cluster
        .client_with_token(agent_token.expose())
        .await?;
    Api::<Service>::all(downstream.clone())
        .list(&ListParams::default().labels("app=vcluster"))
        .await?;
    assert!(
        is_forbidden(
            &Api::<Secret>::all(downstream.clone())
                .list(&ListParams::default())
                .await
        ),
        "the agent must not list Secrets"
    );
    let vc_secrets: Api<Secret> = Api::namespaced(downstream, vc.namespace());
    assert!(
        is_forbidden(&vc_secrets.get(&format!("vc-{}", vc.name())).await),
        "the agent must not read the vCluster's kubeconfig Secret"
    );
    assert!(
        is_forbidden(&vc_secrets.list(&ListParams::default()).await),
        "the agent must not list Secrets in a vCluster's namespace"
    );
    Ok(())
}
