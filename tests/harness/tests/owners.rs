//! Owner sync end to end: the real hub and agent, real API servers and the
//! Rancher simulator with its webhook enforcing the CRTB rules. People who own or work in
//! the project that holds a vCluster's namespace, and the host cluster's owners, get
//! CRTBs on the vCluster's Rancher cluster — and lose them when they lose the project.

mod owners_support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::Api;
use kube::api::{Patch, PatchParams};
use owners_support::*;
use serde_json::json;
use vclink_harness::{E2eEnv, E2eOptions, VClusterSpec, wait_for};

async fn move_namespace(
    c: &kube::Client,
    ns: &str,
    project_id: Option<&str>,
) -> anyhow::Result<()> {
    let p = project_id
        .and_then(|p| p.split_once(':'))
        .map(|(_, p)| p.to_string());
    let patch = json!({"metadata": {
        "annotations": {"field.cattle.io/projectId": project_id},
        "labels": {"field.cattle.io/projectId": p}}});
    Api::<Namespace>::all(c.clone())
        .patch(ns, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

async fn project_label(c: &kube::Client, name: &str) -> anyhow::Result<Option<String>> {
    let p = prov_clusters(c).get(name).await?;
    Ok(p.metadata
        .labels
        .unwrap_or_default()
        .get("vclink.io/project")
        .cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn owner_bindings_follow_bindings_projects_and_namespaces() -> anyhow::Result<()> {
    let env = E2eEnv::start(E2eOptions::default()).await?;
    let c = env.local_client().await?;
    let host = env.downstream().cluster_id.clone();
    let downstream = env.downstream().cluster.client().await?;
    let pa = env.sim.create_project(&host, "team-a").await?;
    let pb = env.sim.create_project(&host, "team-b").await?;
    let (a_id, b_id) = (format!("{host}:{}", pa.id), format!("{host}:{}", pb.id));
    let a_ns = pa.backing_namespace.clone();
    add_prtb(
        &c,
        &a_ns,
        "alice-owner",
        &a_id,
        "project-owner",
        user("u-alice"),
    )
    .await?;
    add_prtb(
        &c,
        &a_ns,
        "devs-member",
        &a_id,
        "project-member",
        group_principal("local://g-devs"),
    )
    .await?;
    add_prtb(&c, &a_ns, "bob-readonly", &a_id, "read-only", user("u-bob")).await?;
    add_prtb(
        &c,
        &pb.backing_namespace,
        "harry-owner",
        &b_id,
        "project-owner",
        user("u-harry"),
    )
    .await?;
    add_crtb(&c, &host, "carol-owner", "cluster-owner", user("u-carol")).await?;
    add_crtb(&c, &host, "dave-member", "cluster-member", user("u-dave")).await?;

    let vc = env
        .create_vcluster(0, VClusterSpec::new("team-a", "vc1").project(&a_id))
        .await?;
    let (prov_name, m) = env.wait_for_ready_cluster(WORKSPACE, &vc, TIMEOUT).await?;
    // A user's own binding on the vCluster's cluster: never touched.
    add_crtb(&c, &m, "erins-own", "cluster-member", user("u-erin")).await?;

    wait_grants(
        &c,
        &m,
        &[
            "cluster-owner u-alice",
            "cluster-owner local://g-devs",
            "cluster-owner u-carol",
        ],
        "owners of project A and of the host cluster",
    )
    .await?;
    assert_eq!(project_label(&c, &prov_name).await?, Some(pa.id.clone()));

    // Binding added.
    add_prtb(
        &c,
        &a_ns,
        "frank-member",
        &a_id,
        "project-member",
        user("u-frank"),
    )
    .await?;
    wait_grants(
        &c,
        &m,
        &[
            "cluster-owner u-alice",
            "cluster-owner local://g-devs",
            "cluster-owner u-carol",
            "cluster-owner u-frank",
        ],
        "a new project member",
    )
    .await?;
    // Binding removed.
    delete(&prtbs(&c, &a_ns), "alice-owner").await?;
    wait_grants(
        &c,
        &m,
        &[
            "cluster-owner local://g-devs",
            "cluster-owner u-carol",
            "cluster-owner u-frank",
        ],
        "a removed project owner",
    )
    .await?;
    // Subject changed (PRTB subjects are immutable: delete and create under the same name).
    delete(&prtbs(&c, &a_ns), "frank-member").await?;
    wait_for("the old PRTB to go", TIMEOUT, || async {
        anyhow::Ok(
            prtbs(&c, &a_ns)
                .get_opt("frank-member")
                .await?
                .is_none()
                .then_some(()),
        )
    })
    .await?;
    add_prtb(
        &c,
        &a_ns,
        "frank-member",
        &a_id,
        "project-member",
        user("u-george"),
    )
    .await?;
    wait_grants(
        &c,
        &m,
        &[
            "cluster-owner local://g-devs",
            "cluster-owner u-carol",
            "cluster-owner u-george",
        ],
        "a binding whose subject changed",
    )
    .await?;

    // Namespace moved into project B (the agent reports it).
    move_namespace(&downstream, "team-a", Some(&b_id)).await?;
    wait_grants(
        &c,
        &m,
        &["cluster-owner u-carol", "cluster-owner u-harry"],
        "the namespace moved to project B",
    )
    .await?;
    wait_for("the project label to follow", TIMEOUT, || async {
        anyhow::Ok((project_label(&c, &prov_name).await? == Some(pb.id.clone())).then_some(()))
    })
    .await?;
    // Out of any project.
    move_namespace(&downstream, "team-a", None).await?;
    wait_grants(
        &c,
        &m,
        &["cluster-owner u-carol"],
        "the namespace left every project",
    )
    .await?;
    wait_for("the project label to go", TIMEOUT, || async {
        anyhow::Ok(project_label(&c, &prov_name).await?.is_none().then_some(()))
    })
    .await?;
    // Back into A, then project A is deleted.
    move_namespace(&downstream, "team-a", Some(&a_id)).await?;
    wait_grants(
        &c,
        &m,
        &[
            "cluster-owner local://g-devs",
            "cluster-owner u-carol",
            "cluster-owner u-george",
        ],
        "back in project A",
    )
    .await?;
    delete(&projects(&c, &host), &pa.id).await?;
    wait_grants(&c, &m, &["cluster-owner u-carol"], "project A deleted").await?;
    // Host owner removed.
    delete(&crtbs(&c, &host), "carol-owner").await?;
    wait_grants(&c, &m, &[], "the host owner removed").await?;

    // Nobody else's CRTB was touched: the user's own and Rancher's own are still there.
    let left: Vec<String> = crtbs(&c, &m)
        .list(&Default::default())
        .await?
        .items
        .iter()
        .filter_map(|o| o.metadata.name.clone())
        .collect();
    assert!(left.contains(&"erins-own".to_string()), "{left:?}");
    assert!(
        left.iter()
            .any(|n| n.ends_with("-owner") && n.starts_with(&m)),
        "Rancher's own creator binding: {left:?}"
    );

    // vCluster deleted: its cluster goes, and the hub stops managing it. Barrier: another
    // vCluster cluster of the same host gets the new host owner; the deleted one does not.
    vc.delete().await?;
    wait_for("the vCluster's Rancher cluster to go", TIMEOUT, || async {
        let p = prov_clusters(&c).get_opt(&prov_name).await?;
        anyhow::Ok(
            p.is_none_or(|p| p.metadata.deletion_timestamp.is_some())
                .then_some(()),
        )
    })
    .await?;
    let other = vcluster_cluster(
        &c,
        &host,
        "00000000-0000-0000-0000-00000000beef",
        None,
        "barrier-vc",
    )
    .await?;
    add_crtb(&c, &host, "zed-owner", "cluster-owner", user("u-zed")).await?;
    wait_grants(
        &c,
        &other,
        &["cluster-owner u-zed"],
        "the barrier cluster's host owner",
    )
    .await?;
    assert!(
        owner_grants(&c, &m)
            .await
            .map(|g| g.is_empty())
            .unwrap_or(true),
        "no binding for a deleted vCluster"
    );
    Ok(())
}

/// The hub's RBAC in the local cluster, as the chart grants it (owner sync: read
/// Projects, PRTBs, RoleTemplates, CRTBs; create/delete CRTBs; patch provisioning and
/// management clusters' labels).
async fn restricted_hub_rbac(c: &kube::Client, user: &str) -> anyhow::Result<()> {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let role: ClusterRole = serde_json::from_value(json!({
    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "vclink-hub-test"},
    "rules": [
        {"apiGroups": ["management.cattle.io"], "resources": ["clusters"], "verbs": ["get", "list", "watch", "patch"]},
        {"apiGroups": ["management.cattle.io"], "resources": ["clusterregistrationtokens"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["crt-token-default-token"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["vclink-hub-proof-key"], "verbs": ["get"]},
        {"apiGroups": ["management.cattle.io"], "resources": ["settings", "projects", "projectroletemplatebindings", "roletemplates"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["management.cattle.io"], "resources": ["clusterroletemplatebindings"], "verbs": ["get", "list", "watch", "create", "delete"]},
        {"apiGroups": ["provisioning.cattle.io"], "resources": ["clusters"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]}
    ]}))?;
    Api::<ClusterRole>::all(c.clone())
        .create(&Default::default(), &role)
        .await?;
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "vclink-hub-test"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "vclink-hub-test"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}))?;
    Api::<ClusterRoleBinding>::all(c.clone())
        .create(&Default::default(), &binding)
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_binding_is_reported_and_custom_roles_work() -> anyhow::Result<()> {
    // The hub holds least privilege, not cluster-owner's */*/*: Rancher's escalation check
    // refuses cluster-owner CRTBs from it, but admits a custom role within its rights.
    let mapping =
        r#"{"project": {"project-owner": "cluster-owner", "project-member": "vc-binding-reader"}}"#;
    let mut opts = E2eOptions {
        start_agents: false,
        ..Default::default()
    };
    opts.hub
        .extra_args
        .push(format!("--owner-role-mapping={mapping}"));
    // The hub starts with its restricted identity below, after RBAC exists.
    let mut env = E2eEnv::start(opts.clone()).await?;
    let c = env.local_client().await?;
    restricted_hub_rbac(&c, "vclink-hub-restricted").await?;
    env.hub.stop().await?;
    let mut hub_opts = opts.hub.clone();
    hub_opts.identity = Some(env.local.issue_identity("vclink-hub-restricted", &[]));
    // The proof key the first hub (chart RBAC) created in the release namespace.
    hub_opts.extra_args.push(format!(
        "--proof-key-namespace={}",
        vclink_harness::procs::rbac::RELEASE_NAMESPACE
    ));
    hub_opts.removal_grace = Some(Duration::from_secs(2));
    env.hub = vclink_harness::HubProcess::start(&env.local, hub_opts).await?;
    env.start_agent(0).await?;

    let rt = json!({"apiVersion": "management.cattle.io/v3", "kind": "RoleTemplate", "metadata": {"name": "vc-binding-reader"},
        "displayName": "Binding reader", "context": "cluster",
        "rules": [{"apiGroups": ["management.cattle.io"], "resources": ["clusterroletemplatebindings"], "verbs": ["get", "list", "watch"]}]});
    Api::<kube::api::DynamicObject>::all_with(
        c.clone(),
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("management.cattle.io", "v3", "RoleTemplate"),
            "roletemplates",
        ),
    )
    .create(&Default::default(), &serde_json::from_value(rt)?)
    .await?;

    let host = env.downstream().cluster_id.clone();
    let p = env.sim.create_project(&host, "team-x").await?;
    let pid = format!("{host}:{}", p.id);
    add_prtb(
        &c,
        &p.backing_namespace,
        "alice-owner",
        &pid,
        "project-owner",
        user("u-alice"),
    )
    .await?;
    add_prtb(
        &c,
        &p.backing_namespace,
        "bob-member",
        &pid,
        "project-member",
        user("u-bob"),
    )
    .await?;
    let vc = env
        .create_vcluster(0, VClusterSpec::new("team-x", "vc1").project(&pid))
        .await?;
    let (_, m) = env.wait_for_ready_cluster(WORKSPACE, &vc, TIMEOUT).await?;

    // The custom role is granted; cluster-owner is refused.
    wait_grants(
        &c,
        &m,
        &["vc-binding-reader u-bob"],
        "the custom role for the project member",
    )
    .await?;
    wait_for("the refusal to be counted", TIMEOUT, || async {
        let t = env.hub.metrics().await?;
        anyhow::Ok(
            (counter_with(
                &t,
                "vclink_hub_owner_binding_errors_total",
                "reason=\"refused\"",
            ) >= 1.0)
                .then_some(()),
        )
    })
    .await?;
    assert!(
        env.hub
            .logs()
            .iter()
            .any(|l| l.contains("owner binding failed") && l.contains("cluster-owner")),
        "a hub log line names the refused grant"
    );
    let svcs: Api<Service> = Api::namespaced(env.downstream().cluster.client().await?, "team-x");
    let err = wait_for("the refusal on the vCluster's Service", TIMEOUT, || async {
        let a = svcs
            .get("vc1")
            .await?
            .metadata
            .annotations
            .unwrap_or_default();
        let err = a.get("vclink.io/last-error").cloned().unwrap_or_default();
        anyhow::Ok(
            (a.get("vclink.io/state").map(String::as_str) == Some("error")
                && err.contains("owner bindings"))
            .then_some(err),
        )
    })
    .await?;
    assert!(
        err.contains("cluster-owner") && err.contains("u-alice"),
        "{err}"
    );

    // Remove the grant nobody may make: the error clears and the cluster shows connected.
    delete(&prtbs(&c, &p.backing_namespace), "alice-owner").await?;
    wait_for("the Service to show connected again", TIMEOUT, || async {
        let a = svcs
            .get("vc1")
            .await?
            .metadata
            .annotations
            .unwrap_or_default();
        anyhow::Ok(
            (a.get("vclink.io/state").map(String::as_str) == Some("connected")).then_some(()),
        )
    })
    .await?;
    wait_grants(
        &c,
        &m,
        &["vc-binding-reader u-bob"],
        "the custom grant stays",
    )
    .await?;
    Ok(())
}
