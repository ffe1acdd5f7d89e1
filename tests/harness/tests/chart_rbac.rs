//! The end-to-end suite runs hub and agent under exactly the RBAC the Helm charts render
//! (E2eEnv's default): this proves it. The hub's identity in the local cluster is the hub
//! chart's ServiceAccount and cannot read an unrelated Secret nor list Secrets; the
//! agent's identity downstream cannot read any Secret (not even the vCluster's
//! kubeconfig); and with exactly these rights a full import works, and owner sync passes
//! Rancher's escalation check as the hub's impersonated Rancher user, creator (so owner)
//! of the cluster it made — with no role binding of its own anywhere.
//!
//! A stolen hub token is no local-cluster admin: as the ServiceAccount, and as the
//! Rancher user it may impersonate, every attempt to bind a role (cluster-admin or any
//! `*/*/*` role) in `fleet-default`, `cattle-system` and the `c-m-` namespace of a
//! cluster vclink did not create, and to read Secrets there (Rancher's
//! `<cluster>-kubeconfig` included), is refused.

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

/// A client of the local cluster with the hub's ServiceAccount token, impersonating
/// Rancher user `user` (what the hub does for its cluster and owner-CRTB writes).
async fn impersonating(
    env: &E2eEnv,
    token: &vclink_proto::Secret,
    user: &str,
) -> anyhow::Result<kube::Client> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("kubeconfig");
    rbac::write_token_kubeconfig(&env.local, token, &path)?;
    let kc = kube::config::Kubeconfig::read_from(&path)?;
    let mut cfg =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    cfg.auth_info.impersonate = Some(user.to_owned());
    Ok(kube::Client::try_from(cfg)?)
}

/// In namespace `ns`: binding cluster-admin or a `*/*/*` ClusterRole to oneself, and
/// reading Secrets (a planted one, a list, and Rancher's `<cluster>-kubeconfig` in the
/// workspace) are all refused (403). With `sa`, the subject is the hub's ServiceAccount,
/// else the impersonated Rancher user.
async fn stolen_token_is_refused(
    admin: &kube::Client,
    thief: &kube::Client,
    ns: &str,
    foreign_cluster: &str,
    sa: bool,
) -> anyhow::Result<()> {
    let who = if sa {
        "the hub's ServiceAccount"
    } else {
        "the hub's Rancher user"
    };
    let subject = if sa {
        json!({"kind": "ServiceAccount", "name": rbac::HUB_SERVICE_ACCOUNT, "namespace": rbac::RELEASE_NAMESPACE})
    } else {
        json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": rbac::HUB_RANCHER_USER})
    };
    let star: k8s_openapi::api::rbac::v1::ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": "thief-star"},
        "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}))?;
    let _ = Api::<k8s_openapi::api::rbac::v1::ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &star)
        .await;
    for role in ["cluster-admin", "thief-star", "admin"] {
        let rb: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": format!("thief-{role}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [subject.clone()]}))?;
        let r = Api::<RoleBinding>::namespaced(thief.clone(), ns)
            .create(&PostParams::default(), &rb)
            .await;
        assert!(is_forbidden(&r), "{who} bound {role} in {ns}: {r:?}");
    }
    let planted = format!("planted-{}", if sa { "sa" } else { "user" });
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": planted}, "stringData": {"password": "hunter2"}}))?;
    let _ = Api::<Secret>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await;
    let secrets: Api<Secret> = Api::namespaced(thief.clone(), ns);
    assert!(
        is_forbidden(&secrets.get(&planted).await),
        "{who} read a Secret in {ns}"
    );
    assert!(
        is_forbidden(&secrets.list(&ListParams::default()).await),
        "{who} listed Secrets in {ns}"
    );
    if ns == "fleet-default" {
        // Rancher's kubeconfig Secret of a cluster vclink did not create (cluster-owner
        // token of that downstream cluster). Its display name is the host's.
        let names: Vec<String> = Api::<Secret>::namespaced(admin.clone(), ns)
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .filter(|n| n.ends_with("-kubeconfig"))
            .collect();
        assert!(
            !names.is_empty(),
            "Rancher wrote kubeconfig Secrets in {ns}"
        );
        for n in names {
            assert!(is_forbidden(&secrets.get(&n).await), "{who} read {n}");
        }
    } else if ns == foreign_cluster {
        assert!(
            is_forbidden(&secrets.get("crt-token-default-token").await),
            "{who} read the token Secret of {ns} by name"
        );
    }
    if !sa {
        // Nor may the user grant itself anything in a cluster vclink did not create.
        let crtb: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "management.cattle.io/v3", "kind": "ClusterRoleTemplateBinding",
            "metadata": {"name": "thief-owner", "namespace": foreign_cluster},
            "clusterName": foreign_cluster, "roleTemplateName": "cluster-owner",
            "userName": rbac::HUB_RANCHER_USER}))?;
        let r = crtbs(thief, foreign_cluster)
            .create(&PostParams::default(), &crtb)
            .await;
        assert!(
            is_forbidden(&r),
            "{who} granted itself cluster-owner of {foreign_cluster}: {r:?}"
        );
    }
    Ok(())
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
        "the hub binds no role in a c-m- namespace"
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
    // Created as the hub's Rancher user, Rancher made that user owner; no RoleBinding
    // names the hub's ServiceAccount in the cluster's namespace.
    let creator = crtbs(&admin, &m).get("creator-cluster-owner").await?;
    assert_eq!(creator.data["userName"], rbac::HUB_RANCHER_USER);
    let sa_bound = Api::<RoleBinding>::namespaced(admin.clone(), &m)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .any(|b| {
            b.subjects
                .unwrap_or_default()
                .iter()
                .any(|s| s.kind == "ServiceAccount" && s.name == rbac::HUB_SERVICE_ACCOUNT)
        });
    assert!(
        !sa_bound,
        "no self-grant: the hub's ServiceAccount is bound to nothing in {m}"
    );

    // A stolen hub token: as the ServiceAccount and as the impersonated Rancher user.
    let as_user = impersonating(&env, hub_token, rbac::HUB_RANCHER_USER).await?;
    stolen_token_is_refused(&admin, &hub, "fleet-default", &host, true).await?;
    stolen_token_is_refused(&admin, &as_user, "fleet-default", &host, false).await?;
    for ns in ["cattle-system", host.as_str()] {
        stolen_token_is_refused(&admin, &hub, ns, &host, true).await?;
        stolen_token_is_refused(&admin, &as_user, ns, &host, false).await?;
    }

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
