//! The Rancher simulator's creator and RBAC rules (Rancher 2.15): a user with the
//! `clusters-create` global role creates a provisioning cluster, the webhook makes it
//! the creator (overwriting any creatorId it sent), Rancher binds it `cluster-owner`
//! through CRTB `creator-cluster-owner`, renders that CRTB into a RoleBinding in the
//! `c-m-` namespace that covers CRTBs and nothing else, and the user's own owner CRTBs
//! then pass the escalation check there — and only there.

mod common;

use std::time::Duration;

use common::eventually;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use vclink_envtest::{Cluster, ClusterOptions};
use vclink_rancher_sim::{RancherSim, SimOptions, kinds};

const T: Duration = Duration::from_secs(60);

fn prov_cluster(name: &str, annotations: Value) -> DynamicObject {
    serde_json::from_value(
        json!({"apiVersion": "provisioning.cattle.io/v1", "kind": "Cluster",
        "metadata": {"name": name, "annotations": annotations}, "spec": {}}),
    )
    .unwrap()
}

fn crtb(cid: &str, name: &str, role: &str, subject: Value) -> DynamicObject {
    let mut v = json!({"apiVersion": "management.cattle.io/v3", "kind": "ClusterRoleTemplateBinding",
        "metadata": {"name": name, "namespace": cid}, "clusterName": cid, "roleTemplateName": role});
    for (k, x) in subject.as_object().unwrap() {
        v[k] = x.clone();
    }
    serde_json::from_value(v).unwrap()
}

fn code<T>(r: Result<T, kube::Error>) -> u16 {
    match r {
        Ok(_) => 200,
        Err(kube::Error::Api(s)) => s.code,
        Err(e) => panic!("unexpected error {e}"),
    }
}

async fn cluster_id(prov: &Api<DynamicObject>, name: &str) -> String {
    eventually(&format!("clusterName of {name}"), T, || async {
        prov.get(name)
            .await
            .ok()?
            .data
            .pointer("/status/clusterName")?
            .as_str()
            .map(str::to_string)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn creator_becomes_owner_and_may_bind_only_there() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let local = Cluster::start("local", ClusterOptions::default())
        .await
        .unwrap();
    let sim = RancherSim::start(&local, SimOptions::default())
        .await
        .unwrap();
    let lc = local.client().await.unwrap();
    let prov = kinds::PROV_CLUSTER.ns(&lc, "fleet-default");
    let pp = PostParams::default();

    // A Rancher user with clusters-create: rendered as ClusterRole/ClusterRoleBinding.
    let hub = sim.create_user("vclink-hub").await.unwrap();
    let grb = sim.bind_global_role(&hub, "clusters-create").await.unwrap();
    let crb_name = format!("cattle-globalrolebinding-{grb}");
    let crb = eventually("GlobalRoleBinding rendered", T, || async {
        Api::<ClusterRoleBinding>::all(lc.clone())
            .get_opt(&crb_name)
            .await
            .ok()
            .flatten()
    })
    .await;
    assert_eq!(crb.role_ref.name, "cattle-globalrole-clusters-create");
    assert_eq!(crb.subjects.unwrap()[0].name, hub);

    // The user creates a cluster, claiming someone else as creator: overwritten.
    let hc = local.client_as(&hub, &[]).await.unwrap();
    let hprov = kinds::PROV_CLUSTER.ns(&hc, "fleet-default");
    let mine = hprov
        .create(
            &pp,
            &prov_cluster("mine", json!({"field.cattle.io/creatorId": "u-admin"})),
        )
        .await
        .unwrap();
    assert_eq!(
        mine.metadata.annotations.unwrap()["field.cattle.io/creatorId"],
        hub
    );
    // creatorId cannot be changed, even by an admin; removing it is allowed.
    let change = json!({"metadata": {"annotations": {"field.cattle.io/creatorId": "u-other"}}});
    assert_eq!(
        code(
            prov.patch("mine", &PatchParams::default(), &Patch::Merge(&change))
                .await
        ),
        400
    );
    // An admin's cluster vclink did not create, with no-creator-rbac (any value counts).
    prov.create(
        &pp,
        &prov_cluster(
            "theirs",
            json!({"field.cattle.io/no-creator-rbac": "false"}),
        ),
    )
    .await
    .unwrap();
    let removable = hprov
        .create(&pp, &prov_cluster("removable", json!({})))
        .await
        .unwrap();
    assert!(removable.metadata.annotations.unwrap()["field.cattle.io/creatorId"] == hub.as_str());
    let remove = json!({"metadata": {"annotations": {"field.cattle.io/creatorId": null}}});
    prov.patch("removable", &PatchParams::default(), &Patch::Merge(&remove))
        .await
        .unwrap();

    let cid = cluster_id(&prov, "mine").await;
    let theirs = cluster_id(&prov, "theirs").await;

    // creator-cluster-owner, rendered into a Role covering management-plane resources.
    let creator = eventually("creator-cluster-owner", T, || async {
        kinds::CRTB
            .ns(&lc, &cid)
            .get("creator-cluster-owner")
            .await
            .ok()
    })
    .await;
    assert_eq!(creator.data["userName"], hub.as_str());
    let rb = eventually("creator RoleBinding", T, || async {
        Api::<RoleBinding>::namespaced(lc.clone(), &cid)
            .get_opt("creator-cluster-owner-cluster-owner")
            .await
            .ok()
            .flatten()
    })
    .await;
    assert_eq!(rb.role_ref.kind, "Role");
    assert_eq!(rb.subjects.unwrap()[0].name, hub);
    let role = Api::<Role>::namespaced(lc.clone(), &cid)
        .get("cluster-owner")
        .await
        .unwrap();
    let rules = role.rules.unwrap_or_default();
    assert!(
        rules
            .iter()
            .any(|r| r.resources.as_deref()
                == Some(&["clusterroletemplatebindings".to_string()][..]))
    );
    assert!(rules.iter().all(|r| {
        let res = r.resources.clone().unwrap_or_default();
        !res.iter()
            .any(|x| x == "*" || x == "secrets" || x == "rolebindings")
    }));

    // The creator grants cluster-owner in its cluster (escalation check passes through
    // its creator CRTB); a duplicate under another name is refused with 409.
    let hcrtbs = kinds::CRTB.ns(&hc, &cid);
    eventually("creator may create an owner CRTB", T, || async {
        hcrtbs
            .create(
                &pp,
                &crtb(
                    &cid,
                    "alice-owner",
                    "cluster-owner",
                    json!({"userName": "u-alice"}),
                ),
            )
            .await
            .ok()
    })
    .await;
    assert_eq!(
        code(
            hcrtbs
                .create(
                    &pp,
                    &crtb(
                        &cid,
                        "alice-again",
                        "cluster-owner",
                        json!({"userName": "u-alice"})
                    )
                )
                .await
        ),
        409
    );
    hcrtbs
        .delete("alice-owner", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "alice's rendered RoleBinding removed with her CRTB",
        T,
        || async {
            Api::<RoleBinding>::namespaced(lc.clone(), &cid)
                .get_opt("alice-owner-cluster-owner")
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;

    // Nothing else: no CRTB in a cluster it did not create, no RoleBinding and no Secret
    // in its own cluster's namespace.
    assert_eq!(
        code(
            kinds::CRTB
                .ns(&hc, &theirs)
                .create(
                    &pp,
                    &crtb(&theirs, "x", "cluster-owner", json!({"userName": hub}))
                )
                .await
        ),
        403
    );
    let rb_try: RoleBinding = serde_json::from_value(json!({"metadata": {"name": "grab"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": hub}]}))
    .unwrap();
    for ns in [&cid, &theirs] {
        assert_eq!(
            code(
                Api::<RoleBinding>::namespaced(hc.clone(), ns)
                    .create(&pp, &rb_try)
                    .await
            ),
            403,
            "RoleBinding in {ns}"
        );
        let secrets = Api::<Secret>::namespaced(hc.clone(), ns);
        assert_eq!(code(secrets.list(&ListParams::default()).await), 403);
        assert_eq!(code(secrets.get("crt-token-default-token").await), 403);
    }

    // Group subjects: a CRTB for a group is rendered for the group, and a member's
    // escalation check counts it.
    kinds::CRTB
        .ns(&lc, &theirs)
        .create(
            &pp,
            &crtb(
                &theirs,
                "team-owner",
                "cluster-owner",
                json!({"groupPrincipalName": "team-x"}),
            ),
        )
        .await
        .unwrap();
    let gina = local.client_as("gina", &["team-x"]).await.unwrap();
    eventually("team-x member may grant cluster-member", T, || async {
        kinds::CRTB
            .ns(&gina, &theirs)
            .create(
                &pp,
                &crtb(
                    &theirs,
                    "by-gina",
                    "cluster-member",
                    json!({"userName": "u-g"}),
                ),
            )
            .await
            .ok()
    })
    .await;
    let outsider = local.client_as("olga", &["team-y"]).await.unwrap();
    assert_eq!(
        code(
            kinds::CRTB
                .ns(&outsider, &theirs)
                .create(
                    &pp,
                    &crtb(
                        &theirs,
                        "by-olga",
                        "cluster-member",
                        json!({"userName": "u-o"})
                    )
                )
                .await
        ),
        403
    );

    // A deleted GlobalRoleBinding takes its ClusterRoleBinding with it.
    kinds::GLOBAL_ROLE_BINDING
        .all(&lc)
        .delete(&grb, &DeleteParams::default())
        .await
        .unwrap();
    eventually("ClusterRoleBinding removed", T, || async {
        Api::<ClusterRoleBinding>::all(lc.clone())
            .get_opt(&crb_name)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    sim.shutdown().await;
}
