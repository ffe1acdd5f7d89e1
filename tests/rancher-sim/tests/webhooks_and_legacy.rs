//! Rancher 2.14 Rancher simulator with legacy tokens: token in status and any
//! well-formed token served; the provisioning-cluster and CRTB admission webhooks
//! (creatorId and creator-cluster-owner, subjects, immutability, 409 duplicates,
//! escalation) and a webhook fault.

mod common;

use std::time::Duration;

use common::{condition, eventually, pinned_client};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use vclink_envtest::{Cluster, ClusterOptions};
use vclink_rancher_sim::{
    Fault, FaultPoint, RancherSim, RancherVersion, SimOptions, TokenMode, kinds,
};

const T: Duration = Duration::from_secs(30);

fn crtb(cid: &str, ns: &str, name: Option<&str>, role: &str, extra: Value) -> DynamicObject {
    let mut v = json!({"apiVersion": "management.cattle.io/v3", "kind": "ClusterRoleTemplateBinding",
        "metadata": {"namespace": ns}, "clusterName": cid, "roleTemplateName": role});
    match name {
        Some(n) => v["metadata"]["name"] = json!(n),
        None => v["metadata"]["generateName"] = json!("crtb-"),
    }
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    serde_json::from_value(v).unwrap()
}

fn code(r: Result<DynamicObject, kube::Error>) -> u16 {
    match r {
        Ok(_) => 200,
        Err(kube::Error::Api(s)) => s.code,
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// Grants `user` exactly the listed rules cluster-wide on the local cluster.
async fn grant(admin: &Client, user: &str, rules: Value) {
    let cr: ClusterRole =
        serde_json::from_value(json!({"metadata": {"name": user}, "rules": rules})).unwrap();
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &cr)
        .await
        .unwrap();
    let crb: ClusterRoleBinding = serde_json::from_value(json!({"metadata": {"name": user},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": user},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}))
    .unwrap();
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &crb)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rancher_2_14_legacy_tokens_and_webhooks() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let local = Cluster::start("local", ClusterOptions::default())
        .await
        .unwrap();
    let opts = SimOptions {
        version: RancherVersion::V2_14,
        token_mode: Some(TokenMode::Legacy),
        ..Default::default()
    };
    let sim = RancherSim::start(&local, opts).await.unwrap();
    let lc = local.client().await.unwrap();
    let prov = kinds::PROV_CLUSTER.ns(&lc, "fleet-default");
    let crtb_rules = json!([{"apiGroups": ["management.cattle.io"], "resources": ["clusterroletemplatebindings"], "verbs": ["*"]},
                            {"apiGroups": ["provisioning.cattle.io"], "resources": ["clusters"], "verbs": ["*"]}]);

    // creatorId: set to the requester; refused with no-creator-rbac; bad names refused.
    grant(&lc, "dave", crtb_rules.clone()).await;
    let dave = local.client_as("dave", &[]).await.unwrap();
    let dprov = kinds::PROV_CLUSTER.ns(&dave, "fleet-default");
    let mk = |name: &str, ann: Value| -> DynamicObject {
        serde_json::from_value(
            json!({"apiVersion": "provisioning.cattle.io/v1", "kind": "Cluster",
            "metadata": {"name": name, "annotations": ann}}),
        )
        .unwrap()
    };
    let created = eventually("RBAC for dave", T, || async {
        dprov
            .create(&PostParams::default(), &mk("wh", json!({})))
            .await
            .ok()
    })
    .await;
    assert_eq!(
        created.metadata.annotations.unwrap()["field.cattle.io/creatorId"],
        "dave"
    );
    let both = mk(
        "wh2",
        json!({"field.cattle.io/no-creator-rbac": "true", "field.cattle.io/creatorId": "dave"}),
    );
    assert_eq!(code(dprov.create(&PostParams::default(), &both).await), 400);
    let plain = dprov
        .create(
            &PostParams::default(),
            &mk("wh3", json!({"field.cattle.io/no-creator-rbac": "true"})),
        )
        .await
        .unwrap();
    assert!(
        !plain
            .metadata
            .annotations
            .unwrap()
            .contains_key("field.cattle.io/creatorId")
    );
    assert_eq!(
        code(
            dprov
                .create(&PostParams::default(), &mk("c-m-abcd1234", json!({})))
                .await
        ),
        422
    );
    sim.faults().inject(
        FaultPoint::WebhookProvisioningCluster,
        Fault::Status(500),
        1,
    );
    assert_ne!(
        code(
            dprov
                .create(&PostParams::default(), &mk("wh4", json!({})))
                .await
        ),
        200,
        "injected webhook fault"
    );

    // Legacy token: the token is in status and the endpoint serves any well-formed token.
    let cid = eventually("clusterName", T, || async {
        prov.get("wh")
            .await
            .ok()?
            .data
            .pointer("/status/clusterName")?
            .as_str()
            .map(str::to_string)
    })
    .await;
    let crt = eventually("registration token", T, || async {
        kinds::CRT.ns(&lc, &cid).get("default-token").await.ok()
    })
    .await;
    let token = crt.data["status"]["token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 54);
    assert!(
        crt.data["status"]["manifestUrl"]
            .as_str()
            .unwrap()
            .contains(&token)
    );
    let http = pinned_client(&sim.ca_pem());
    let other = format!(
        "{}/v3/import/bcdfghjklmnpqrstv_{cid}.yaml",
        sim.server_url()
    );
    assert_eq!(
        http.get(other).send().await.unwrap().status(),
        200,
        "legacy Rancher serves any well-formed token"
    );
    // Rancher makes the creator an owner whether or not a User of that name exists.
    let creator = eventually("creator-cluster-owner", T, || async {
        kinds::CRTB
            .ns(&lc, &cid)
            .get("creator-cluster-owner")
            .await
            .ok()
    })
    .await;
    assert_eq!(creator.data["userName"], "dave");
    assert_eq!(creator.data["roleTemplateName"], "cluster-owner");
    assert_eq!(
        creator.metadata.annotations.unwrap_or_default()["authz.management.cattle.io/creator-owner-binding"],
        "true"
    );
    let m = eventually("CreatorMadeOwner", T, || async {
        let m = kinds::MGMT_CLUSTER.all(&lc).get(&cid).await.ok()?;
        condition(&m, "CreatorMadeOwner").map(|_| m)
    })
    .await;
    assert_eq!(condition(&m, "CreatorMadeOwner").unwrap().0, "True");
    // wh3 was created with no-creator-rbac: nobody is its creator-owner.
    let cid3 = eventually("clusterName of wh3", T, || async {
        prov.get("wh3")
            .await
            .ok()?
            .data
            .pointer("/status/clusterName")?
            .as_str()
            .map(str::to_string)
    })
    .await;
    eventually("wh3 projects (namespace reconciled)", T, || async {
        let l = kinds::PROJECT
            .ns(&lc, &cid3)
            .list(&Default::default())
            .await
            .ok()?;
        (!l.items.is_empty()).then_some(())
    })
    .await;
    assert!(
        kinds::CRTB
            .ns(&lc, &cid3)
            .get_opt("creator-cluster-owner")
            .await
            .unwrap()
            .is_none()
    );

    // CRTB shape rules, as admin.
    let crtbs = kinds::CRTB.ns(&lc, &cid);
    let pp = PostParams::default();
    assert_eq!(
        code(
            crtbs
                .create(
                    &pp,
                    &crtb(
                        &cid,
                        &cid,
                        Some("two"),
                        "cluster-member",
                        json!({"userName": "u-a", "groupName": "g"})
                    )
                )
                .await
        ),
        400
    );
    assert_eq!(
        code(
            crtbs
                .create(
                    &pp,
                    &crtb(
                        "c-m-other123",
                        &cid,
                        Some("ns"),
                        "cluster-member",
                        json!({"userName": "u-a"})
                    )
                )
                .await
        ),
        400
    );
    crtbs
        .create(
            &pp,
            &crtb(
                &cid,
                &cid,
                Some("ok"),
                "cluster-member",
                json!({"userName": "u-a"}),
            ),
        )
        .await
        .unwrap();
    let change = json!({"roleTemplateName": "cluster-owner"});
    assert_eq!(
        code(
            crtbs
                .patch("ok", &PatchParams::default(), &Patch::Merge(&change))
                .await
        ),
        400
    );
    let change = json!({"userName": "u-b"});
    assert_eq!(
        code(
            crtbs
                .patch("ok", &PatchParams::default(), &Patch::Merge(&change))
                .await
        ),
        400
    );
    // webhook v0.10 (2.14): any CRTB repeating a role + subject of the cluster is
    // refused with 409, with a generated name or an explicit one.
    crtbs
        .create(
            &pp,
            &crtb(
                &cid,
                &cid,
                None,
                "cluster-member",
                json!({"userName": "u-dup"}),
            ),
        )
        .await
        .unwrap();
    for name in [None, Some("dup-named")] {
        assert_eq!(
            code(
                crtbs
                    .create(
                        &pp,
                        &crtb(
                            &cid,
                            &cid,
                            name,
                            "cluster-member",
                            json!({"userName": "u-dup"})
                        )
                    )
                    .await
            ),
            409,
            "{name:?}"
        );
    }
    // Another role for the same subject is no duplicate.
    crtbs
        .create(
            &pp,
            &crtb(
                &cid,
                &cid,
                Some("dup-other-role"),
                "cluster-owner",
                json!({"userName": "u-dup"}),
            ),
        )
        .await
        .unwrap();

    // Escalation: dave may write CRTBs but holds none of cluster-owner's rights in wh3,
    // which he created with no-creator-rbac.
    let dcrtbs = kinds::CRTB.ns(&dave, &cid3);
    let err = dcrtbs
        .create(
            &pp,
            &crtb(
                &cid3,
                &cid3,
                Some("esc"),
                "cluster-owner",
                json!({"userName": "u-x"}),
            ),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403 && s.message.contains("not currently held")),
        "{err}"
    );
    // In wh, his creator-cluster-owner CRTB holds every rule of cluster-owner.
    eventually(
        "dave, creator of wh, may grant cluster-owner there",
        T,
        || async {
            kinds::CRTB
                .ns(&dave, &cid)
                .create(
                    &pp,
                    &crtb(
                        &cid,
                        &cid,
                        Some("by-dave"),
                        "cluster-owner",
                        json!({"userName": "u-d"}),
                    ),
                )
                .await
                .ok()
        },
    )
    .await;
    // erin holds cluster-owner rights in local RBAC; frank holds them through a CRTB.
    grant(&lc, "erin", json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, {"nonResourceURLs": ["*"], "verbs": ["*"]}])).await;
    let erin = local.client_as("erin", &[]).await.unwrap();
    eventually("erin may grant cluster-owner", T, || async {
        kinds::CRTB
            .ns(&erin, &cid)
            .create(
                &pp,
                &crtb(
                    &cid,
                    &cid,
                    Some("by-erin"),
                    "cluster-owner",
                    json!({"userName": "u-y"}),
                ),
            )
            .await
            .ok()
    })
    .await;
    crtbs
        .create(
            &pp,
            &crtb(
                &cid,
                &cid,
                Some("frank-owner"),
                "cluster-owner",
                json!({"userName": "frank"}),
            ),
        )
        .await
        .unwrap();
    grant(&lc, "frank", crtb_rules).await;
    let frank = local.client_as("frank", &[]).await.unwrap();
    eventually("frank may grant cluster-member", T, || async {
        kinds::CRTB
            .ns(&frank, &cid)
            .create(
                &pp,
                &crtb(
                    &cid,
                    &cid,
                    Some("by-frank"),
                    "cluster-member",
                    json!({"userName": "u-z"}),
                ),
            )
            .await
            .ok()
    })
    .await;
    sim.faults()
        .inject(FaultPoint::WebhookCrtb, Fault::Status(409), 1);
    assert_eq!(
        code(
            crtbs
                .create(
                    &pp,
                    &crtb(
                        &cid,
                        &cid,
                        Some("faulted"),
                        "cluster-member",
                        json!({"userName": "u-f"})
                    )
                )
                .await
        ),
        409
    );
    assert!(sim.stats().webhook_denials >= 6);
    sim.shutdown().await;
}
