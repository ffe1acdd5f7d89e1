//! Rancher 2.15 Rancher simulator against real API servers: `{token}` registration
//! tokens, the import endpoint, an agent connecting and disconnecting, the cluster proxy
//! with Rancher tokens and downstream RBAC, fault injection and the deletion cascade.
//! One test function: every cluster costs seconds and ~200 MB.

mod common;

use std::time::Duration;

use common::{apply_manifest, condition, docs, eventually, pinned_client};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use serde_json::{Value, json};
use vclink_envtest::{Cluster, ClusterOptions};
use vclink_rancher_sim::{Fault, FaultPoint, RancherSim, RancherVersion, SimOptions, kinds};

const T: Duration = Duration::from_secs(30);

async fn sa_token(cluster: &Cluster) -> String {
    let c = cluster.client().await.unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), "default");
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "probe"}})).unwrap();
    let _ = sas.create(&PostParams::default(), &sa).await;
    let tr: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}}))
            .unwrap();
    let out = sas
        .create_token_request("probe", &PostParams::default(), &tr)
        .await
        .unwrap();
    out.status.unwrap().token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rancher_2_15_import_connect_proxy_and_cascade() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (local, backend, down) = tokio::join!(
        Cluster::start("local", ClusterOptions::default()),
        Cluster::start("vc-backend", ClusterOptions::default()),
        Cluster::start("downstream", ClusterOptions::default()),
    );
    let (local, backend, down) = (local.unwrap(), backend.unwrap(), down.unwrap());
    let sim = RancherSim::start(
        &local,
        SimOptions {
            version: RancherVersion::V2_15,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    sim.register_backend(&backend);
    let lc = local.client().await.unwrap();
    let http = pinned_client(&sim.ca_pem());

    // A provisioning cluster becomes a management cluster with a `{token}` registration token.
    let prov = kinds::PROV_CLUSTER.ns(&lc, "fleet-default");
    let obj: DynamicObject = serde_json::from_value(json!({"apiVersion": "provisioning.cattle.io/v1", "kind": "Cluster",
        "metadata": {"name": "vc1", "labels": {"team": "a"}, "annotations": {"field.cattle.io/no-creator-rbac": "true"}}})).unwrap();
    prov.create(&PostParams::default(), &obj).await.unwrap();
    let cid = eventually("clusterName", T, || async {
        prov.get("vc1")
            .await
            .ok()?
            .data
            .pointer("/status/clusterName")?
            .as_str()
            .map(str::to_string)
    })
    .await;
    assert!(cid.starts_with("c-m-") && cid.len() == 12);
    let crt_api = kinds::CRT.ns(&lc, &cid);
    let crt = eventually("registration token", T, || async {
        crt_api.get("default-token").await.ok()
    })
    .await;
    assert_eq!(crt.data["status"]["token"], "");
    assert_eq!(
        crt.data["status"]["tokenSecretName"],
        "crt-token-default-token"
    );
    let url_tpl = crt.data["status"]["manifestUrl"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        url_tpl.contains("{token}")
            && crt.data["status"]["insecureCommand"]
                .as_str()
                .unwrap()
                .contains("{token}")
    );
    let secrets: Api<Secret> = Api::namespaced(lc.clone(), &cid);
    let tok = secrets
        .get("crt-token-default-token")
        .await
        .unwrap()
        .data
        .unwrap()["token"]
        .0
        .clone();
    let tok = String::from_utf8(tok).unwrap();
    let mgmt = kinds::MGMT_CLUSTER.all(&lc).get(&cid).await.unwrap();
    assert_eq!(mgmt.data["spec"]["displayName"], "vc1");
    assert_eq!(mgmt.metadata.labels.unwrap()["team"], "a");

    // Import endpoint: right token 200 with every object; wrong token 400; unknown cluster 404.
    let resp = http
        .get(url_tpl.replace("{token}", &tok))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let yaml = resp.text().await.unwrap();
    let kinds_in: Vec<String> = docs(&yaml)
        .iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    for want in [
        "ClusterRole/proxy-clusterrole-kubeapiserver",
        "Namespace/cattle-system",
        "ServiceAccount/cattle",
        "ClusterRoleBinding/cattle-admin-binding",
        "Deployment/cattle-cluster-agent",
        "Service/cattle-cluster-agent",
    ] {
        assert!(
            kinds_in.iter().any(|k| k == want),
            "{want} missing in {kinds_in:?}"
        );
    }
    assert!(
        kinds_in
            .iter()
            .any(|k| k.starts_with("Secret/cattle-credentials-"))
    );
    let wrong = http
        .get(url_tpl.replace("{token}", "bcdfghjklmnpqrstv"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 400);
    let unknown = http
        .get(format!(
            "{}/v3/import/{tok}_c-m-zzzzzzzz.yaml",
            sim.server_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    sim.faults()
        .inject(FaultPoint::ImportEndpoint, Fault::Status(503), 1);
    assert_eq!(
        http.get(url_tpl.replace("{token}", &tok))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    assert_eq!(
        http.get(url_tpl.replace("{token}", &tok))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Applying the manifest connects the cluster; provisioning status turns ready.
    let bc = backend.client().await.unwrap();
    apply_manifest(&bc, &yaml).await;
    let mapi = kinds::MGMT_CLUSTER.all(&lc);
    eventually("Connected=True", T, || async {
        let m = mapi.get(&cid).await.ok()?;
        (condition(&m, "Connected")?.0 == "True" && condition(&m, "Ready")?.0 == "True")
            .then_some(())
    })
    .await;
    eventually("provisioning ready", T, || async {
        (prov.get("vc1").await.ok()?.data.pointer("/status/ready")? == &Value::Bool(true))
            .then_some(())
    })
    .await;
    let fleet = eventually("fleet cluster", T, || async {
        kinds::FLEET_CLUSTER
            .ns(&lc, "fleet-default")
            .get("vc1")
            .await
            .ok()
    })
    .await;
    let fl = fleet.metadata.labels.unwrap();
    assert_eq!(fl["management.cattle.io/cluster-name"], cid);
    assert_eq!(fl["team"], "a");
    eventually("kubeconfig secret", T, || async {
        Api::<Secret>::namespaced(lc.clone(), "fleet-default")
            .get("vc1-kubeconfig")
            .await
            .ok()
    })
    .await;
    eventually("owner CRTB", T, || async {
        kinds::CRTB
            .ns(&lc, &cid)
            .get(&format!("{cid}-fleet-default-owner"))
            .await
            .ok()
    })
    .await;

    // Removing the agent disconnects; `ready` stays true.
    Api::<Deployment>::namespaced(bc.clone(), "cattle-system")
        .delete("cattle-cluster-agent", &DeleteParams::default())
        .await
        .unwrap();
    eventually("Disconnected", T, || async {
        let m = mapi.get(&cid).await.ok()?;
        (condition(&m, "Ready")? == ("False".into(), "Disconnected".into())
            && condition(&m, "Connected")?.0 == "False")
            .then_some(())
    })
    .await;
    assert_eq!(prov.get("vc1").await.unwrap().data["status"]["ready"], true);

    // Proxy: Rancher token → downstream with the token's user impersonated.
    let cid2 = sim.add_downstream("down", &down).await.unwrap();
    let user = sim.create_user("prober").await.unwrap();
    let rtok = sim
        .create_token(&user, Duration::from_secs(3600), None)
        .await
        .unwrap();
    let review_url = format!(
        "{}/k8s/clusters/{cid2}/apis/authentication.k8s.io/v1/tokenreviews",
        sim.server_url()
    );
    let down_sa = sa_token(&down).await;
    let foreign_sa = sa_token(&backend).await;
    let review = |bearer: String, sa: String| {
        let http = http.clone();
        let url = review_url.clone();
        async move {
            let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": sa}});
            let r = http
                .post(url)
                .bearer_auth(bearer)
                .json(&body)
                .send()
                .await
                .unwrap();
            let code = r.status().as_u16();
            (code, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    assert_eq!(
        review(rtok.clone(), down_sa.clone()).await.0,
        403,
        "no downstream RBAC yet"
    );
    let dc = down.client().await.unwrap();
    let cr: ClusterRole = serde_json::from_value(json!({"metadata": {"name": "tokenreviewer"},
        "rules": [{"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]}]})).unwrap();
    Api::<ClusterRole>::all(dc.clone())
        .create(&PostParams::default(), &cr)
        .await
        .unwrap();
    let crb: ClusterRoleBinding = serde_json::from_value(json!({"metadata": {"name": "tokenreviewer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "tokenreviewer"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]})).unwrap();
    Api::<ClusterRoleBinding>::all(dc.clone())
        .create(&PostParams::default(), &crb)
        .await
        .unwrap();
    let (code, body) = eventually("RBAC effective", T, || async {
        let r = review(rtok.clone(), down_sa.clone()).await;
        (r.0 != 403).then_some(r)
    })
    .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["status"]["authenticated"], true, "{body}");
    let (code, body) = review(rtok.clone(), foreign_sa).await;
    assert_eq!(code, 201);
    assert_ne!(
        body["status"]["authenticated"], true,
        "a token of another cluster must not authenticate: {body}"
    );
    let (name, _) = rtok.split_once(':').unwrap();
    assert_eq!(
        review(format!("{name}:wrongsecret"), down_sa.clone())
            .await
            .0,
        401
    );
    assert_eq!(review("token-nope:x".into(), down_sa.clone()).await.0, 401);
    let scoped = sim
        .create_token(&user, Duration::ZERO, Some(&cid))
        .await
        .unwrap();
    assert_eq!(
        review(scoped, down_sa.clone()).await.0,
        401,
        "token scoped to another cluster"
    );
    sim.faults()
        .inject(FaultPoint::Proxy, Fault::Status(500), 1);
    assert_eq!(review(rtok.clone(), down_sa.clone()).await.0, 500);
    assert_eq!(review(rtok.clone(), down_sa.clone()).await.0, 201);
    // A disconnected cluster is not reachable.
    let disconnected = format!("{}/k8s/clusters/{cid}/version", sim.server_url());
    assert_eq!(
        http.get(disconnected)
            .bearer_auth(&rtok)
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    assert!(sim.stats().proxy_requests >= 8);

    // Cascade: provisioning deleted → management cluster, token and projects go.
    prov.delete("vc1", &DeleteParams::default()).await.unwrap();
    eventually("management cluster gone", T, || async {
        mapi.get(&cid).await.is_err().then_some(())
    })
    .await;
    eventually("provisioning gone", T, || async {
        prov.get("vc1").await.is_err().then_some(())
    })
    .await;
    assert!(crt_api.get("default-token").await.is_err());
    assert!(
        kinds::PROJECT
            .ns(&lc, &cid)
            .list(&Default::default())
            .await
            .map(|l| l.items.is_empty())
            .unwrap_or(true)
    );
    // Cascade the other way: a user deletes the management cluster.
    mapi.delete(&cid2, &DeleteParams::default()).await.unwrap();
    eventually(
        "provisioning of deleted management cluster gone",
        T,
        || async { prov.get("down").await.is_err().then_some(()) },
    )
    .await;
    sim.shutdown().await;
}
