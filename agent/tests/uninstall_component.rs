//! Component test, against a real kube-apiserver, of the optional uninstall of a vCluster
//! whose Rancher cluster a user deleted in Rancher. The test plays the hub by handing the
//! agent a `Forget` (and the Status before it) the way the link does, and installs fake
//! "vCluster releases" ([`uninstall_fixtures`]): a Helm storage Secret encoded as Helm
//! encodes it whose manifest lists objects created with Helm's ownership annotations,
//! plus objects the agent must keep (an unrelated one, one carrying forged Helm markers
//! but not in the manifest, one in the manifest without markers, a cluster-scoped one,
//! the StatefulSet's PVC).

use std::time::SystemTime;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;
use vclink_agent::uninstall::UninstallSettings;
use vclink_proto::keys;

mod support;
mod uninstall_fixtures;
use support::{create_namespace, eventually};
use uninstall_fixtures::*;
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opted_in_vcluster_is_uninstalled_on_the_hubs_word_only() {
    let (_cluster, client) = start("agent-uninstall").await;
    let ns = "team-a";
    create_namespace(
        &client,
        ObjectMeta {
            name: Some(ns.into()),
            ..Default::default()
        },
    )
    .await;
    // The vCluster release vc1, opted in with vclink's annotation.
    let vc1 = vcluster_service(
        &client,
        ns,
        "vc1",
        &[(keys::ANNOTATION_UNINSTALL_ON_DELETE, "true")],
    )
    .await;
    let h = helm("vc1", ns);
    create::<StatefulSet>(&client, ns, serde_json::json!({
        "metadata": { "name": "vc1", "annotations": h },
        "spec": { "serviceName": "vc1-headless", "selector": { "matchLabels": { "app": "vcluster", "release": "vc1" } },
            "template": { "metadata": { "labels": { "app": "vcluster", "release": "vc1" } },
                "spec": { "containers": [{ "name": "syncer", "image": "vcluster:test" }] } } } })).await;
    create::<Service>(
        &client,
        ns,
        serde_json::json!({
        "metadata": { "name": "vc1-headless", "annotations": h },
        "spec": { "clusterIP": "None", "ports": [{ "name": "https", "port": 443 }] } }),
    )
    .await;
    create::<ServiceAccount>(
        &client,
        ns,
        serde_json::json!({ "metadata": { "name": "vc-vc1", "annotations": h } }),
    )
    .await;
    create::<Role>(
        &client,
        ns,
        serde_json::json!({ "metadata": { "name": "vc1", "annotations": h }, "rules": [] }),
    )
    .await;
    create::<RoleBinding>(
        &client,
        ns,
        serde_json::json!({
        "metadata": { "name": "vc1", "labels": { "release": "vc1" } },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "vc1" },
        "subjects": [{ "kind": "ServiceAccount", "name": "vc-vc1", "namespace": ns }] }),
    )
    .await;
    create::<ConfigMap>(
        &client,
        ns,
        serde_json::json!({ "metadata": { "name": "vc1-config", "annotations": h } }),
    )
    .await;
    // Listed in the manifest but without Helm's markers: kept.
    create::<ConfigMap>(
        &client,
        ns,
        serde_json::json!({ "metadata": { "name": "unmarked" } }),
    )
    .await;
    // Not in the manifest: kept, whatever they carry.
    create::<ConfigMap>(
        &client,
        ns,
        serde_json::json!({ "metadata": { "name": "unrelated" } }),
    )
    .await;
    create::<ConfigMap>(&client, ns, serde_json::json!({ "metadata": { "name": "forged", "annotations": h, "labels": { "release": "vc1" } } })).await;
    create::<PersistentVolumeClaim>(&client, ns, serde_json::json!({
        "metadata": { "name": "data-vc1-0", "labels": { "app": "vcluster", "release": "vc1" } },
        "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "1Gi" } } } })).await;
    // Cluster-scoped, in the manifest: the agent removes no cluster-scoped object.
    let cluster_roles: Api<ClusterRole> = Api::all(client.clone());
    let cr: ClusterRole = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "vc-vc1-v-team-a", "annotations": h }, "rules": [] }))
    .expect("cr");
    cluster_roles
        .create(&PostParams::default(), &cr)
        .await
        .expect("clusterrole");
    let doc = |api: &str, kind: &str, name: &str| {
        format!(
            "---\napiVersion: {api}\nkind: {kind}\nmetadata:\n  name: {name}\n  namespace: {ns}\n"
        )
    };
    let mut manifest = String::new();
    for (api, kind, name) in [
        ("v1", "ServiceAccount", "vc-vc1"),
        ("v1", "ConfigMap", "vc1-config"),
        ("v1", "ConfigMap", "unmarked"),
        ("rbac.authorization.k8s.io/v1", "Role", "vc1"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding", "vc1"),
        ("v1", "Service", "vc1"),
        ("v1", "Service", "vc1-headless"),
        ("apps/v1", "StatefulSet", "vc1"),
    ] {
        manifest.push_str(&doc(api, kind, name));
    }
    manifest.push_str("---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: vc-vc1-v-team-a\n");
    release_secret(
        &client,
        ns,
        "vc1",
        1,
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: unrelated\n",
    )
    .await;
    release_secret(&client, ns, "vc1", 2, &manifest).await;

    // vc2: a release that does not opt in. vc3: opted in (the operator's spelling) with a
    // forged rancher-cluster-deleted annotation, and no Forget from the hub.
    let vc2 = small_release(&client, "team-b", "vc2", &[]).await;
    let vc3 = small_release(
        &client,
        "team-c",
        "vc3",
        &[
            (keys::ANNOTATION_LOFT_UNINSTALL_ON_DELETE, "true"),
            (keys::ANNOTATION_RANCHER_DELETED, "2024-01-01T00:00:00Z"),
        ],
    )
    .await;
    let vc5 = small_release(
        &client,
        "team-e",
        "vc5",
        &[(keys::ANNOTATION_UNINSTALL_ON_DELETE, "true")],
    )
    .await;
    // vc4: an uninstall a previous run of the agent began (its proof in the agent's
    // namespace) and did not finish.
    let vc4 = small_release(
        &client,
        "team-d",
        "vc4",
        &[(keys::ANNOTATION_UNINSTALL_ON_DELETE, "true")],
    )
    .await;
    create::<ConfigMap>(&client, client.default_namespace(), serde_json::json!({
        "metadata": { "name": format!("vclink-uninstall-{vc4}"), "labels": { "vclink.io/component": "uninstall" } },
        "data": { "uid": vc4, "namespace": "team-d", "service": "vc4", "release": "vc4", "rancherCluster": "c-m-dddd4444" } })).await;

    // When the StatefulSet's deletion is seen, by the test's clock.
    let deleted_at = std::sync::Arc::new(std::sync::Mutex::new(None::<SystemTime>));
    {
        use futures::StreamExt;
        let deleted_at = deleted_at.clone();
        let sts: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
        tokio::spawn(async move {
            // With backoff: if the API server goes (a failed test dropping it), the task
            // sleeps between retries instead of spinning, so the runtime can shut down
            // and the failure is reported at once.
            let mut w = std::pin::pin!(watcher(sts, watcher::Config::default()).default_backoff());
            while let Some(ev) = w.next().await {
                if let Ok(watcher::Event::Delete(_)) = ev {
                    *deleted_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(SystemTime::now());
                }
            }
        });
    }

    let cancel = CancellationToken::new();
    let settings = UninstallSettings {
        allowed: true,
        by_default: false,
    };
    let (_tasks, channels) = agent(&client, settings, &cancel);
    // The resumed uninstall finishes without any Forget.
    event_with(&client, "team-d", "vc4", "VClusterUninstalled").await;
    assert!(!exists::<ConfigMap>(&client, "team-d", "vc4-config").await);
    assert!(!exists::<Secret>(&client, "team-d", "sh.helm.release.v1.vc4.v1").await);
    assert!(
        !exists::<ConfigMap>(
            &client,
            client.default_namespace(),
            &format!("vclink-uninstall-{vc4}")
        )
        .await
    );

    // The agent has seen vc3's forged annotation (it reports the deletion to the hub).
    eventually(60, "vc3 reported as deleted in Rancher", || {
        let ok = channels
            .catalog
            .borrow()
            .vclusters
            .get(&vc3)
            .is_some_and(|v| v.rancher_cluster_deleted)
            && channels.catalog.borrow().vclusters.contains_key(&vc1);
        async move { ok.then_some(()) }
    })
    .await;
    // vc1 and vc2 are imported (the hub's Status); vc5 never was (as after an un-import
    // and re-inclusion, whose cluster the hub itself deleted).
    connected(&client, &channels, ns, "vc1", &vc1, "c-m-aaaa1111").await;
    connected(&client, &channels, "team-b", "vc2", &vc2, "c-m-bbbb2222").await;
    // The hub's Forget for vc2 (not opted in), vc5, then vc1; the uninstaller takes
    // them in order, so once vc1 is done the others were decided.
    forget(&channels, &vc2);
    forget(&channels, &vc5);
    let refused = event_with(&client, "team-e", "vc5", "UninstallRefused").await;
    assert!(
        refused
            .note
            .unwrap_or_default()
            .contains("not taken for a user's")
    );
    forget(&channels, &vc1);
    let done = event_with(&client, ns, "vc1", "VClusterUninstalled").await;
    let first = event_with(&client, ns, "vc1", "UninstallingVCluster").await;
    assert_eq!(first.type_.as_deref(), Some("Warning"));
    let note = first.note.clone().unwrap_or_default();
    assert!(
        note.contains("team-a/vc1")
            && note.contains("c-m-aaaa1111")
            && note.contains("deleted in Rancher")
            && note.contains(keys::ANNOTATION_UNINSTALL_ON_DELETE),
        "{note}"
    );
    let announced = SystemTime::from(first.event_time.as_ref().expect("eventTime").0);
    let removed = deleted_at
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .expect("StatefulSet deletion seen");
    assert!(
        announced <= removed,
        "the Warning Event comes before anything is removed"
    );
    let summary = done.note.unwrap_or_default();
    assert!(
        summary.contains("ClusterRole vc-vc1-v-team-a")
            && summary.contains("unmarked")
            && summary.contains("PersistentVolumeClaims"),
        "{summary}"
    );

    for gone in ["vc1", "vc1-headless"] {
        assert!(
            !exists::<Service>(&client, ns, gone).await,
            "Service {gone} removed"
        );
    }
    assert!(!exists::<StatefulSet>(&client, ns, "vc1").await);
    assert!(!exists::<ServiceAccount>(&client, ns, "vc-vc1").await);
    assert!(!exists::<Role>(&client, ns, "vc1").await);
    assert!(
        !exists::<RoleBinding>(&client, ns, "vc1").await,
        "the release label identifies it"
    );
    assert!(!exists::<ConfigMap>(&client, ns, "vc1-config").await);
    for v in [1, 2] {
        assert!(!exists::<Secret>(&client, ns, &format!("sh.helm.release.v1.vc1.v{v}")).await);
    }
    for kept in ["unmarked", "unrelated", "forged"] {
        assert!(
            exists::<ConfigMap>(&client, ns, kept).await,
            "ConfigMap {kept} kept"
        );
    }
    assert!(
        exists::<PersistentVolumeClaim>(&client, ns, "data-vc1-0").await,
        "data kept"
    );
    assert!(
        cluster_roles
            .get_opt("vc-vc1-v-team-a")
            .await
            .expect("get")
            .is_some()
    );

    // Not opted in, forged, never imported: nothing removed, nothing announced.
    for (ns, name) in [("team-b", "vc2"), ("team-c", "vc3"), ("team-e", "vc5")] {
        assert!(exists::<Service>(&client, ns, name).await, "{name} kept");
        assert!(exists::<ConfigMap>(&client, ns, &format!("{name}-config")).await);
        assert!(exists::<Secret>(&client, ns, &format!("sh.helm.release.v1.{name}.v1")).await);
        assert!(
            events(&client, ns, name, "UninstallingVCluster")
                .await
                .is_empty()
        );
    }
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_uninstall_not_enabled_an_opted_in_vcluster_is_kept_and_told_why() {
    let (_cluster, client) = start("agent-uninstall-off").await;
    let vc = small_release(
        &client,
        "team-a",
        "vc1",
        &[(keys::ANNOTATION_LOFT_UNINSTALL_ON_DELETE, "true")],
    )
    .await;
    let cancel = CancellationToken::new();
    let (_tasks, channels) = agent(&client, UninstallSettings::default(), &cancel);
    eventually(60, "vc1 in the catalog", || {
        let ok = channels.catalog.borrow().vclusters.contains_key(&vc);
        async move { ok.then_some(()) }
    })
    .await;
    connected(&client, &channels, "team-a", "vc1", &vc, "c-m-aaaa1111").await;
    forget(&channels, &vc);
    let ev = event_with(&client, "team-a", "vc1", "UninstallNotEnabled").await;
    let note = ev.note.unwrap_or_default();
    assert!(
        note.contains("uninstall.enabled=true") && note.contains("nothing was removed"),
        "{note}"
    );
    // The recorder took the same Forget: the deletion is recorded, the release stays.
    event_with(&client, "team-a", "vc1", "RemovedFromRancher").await;
    assert!(exists::<Service>(&client, "team-a", "vc1").await);
    assert!(exists::<ConfigMap>(&client, "team-a", "vc1-config").await);
    assert!(exists::<Secret>(&client, "team-a", "sh.helm.release.v1.vc1.v1").await);
    let svc = Api::<Service>::namespaced(client.clone(), "team-a")
        .get("vc1")
        .await
        .expect("svc");
    assert!(
        svc.metadata
            .annotations
            .unwrap_or_default()
            .contains_key(keys::ANNOTATION_RANCHER_DELETED)
    );
    cancel.cancel();
}
