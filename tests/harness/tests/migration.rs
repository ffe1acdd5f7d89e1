//! Migrating from the vcluster-rancher-operator, end to end against real API servers and
//! the Rancher simulator (its webhook enforcing the creator and CRTB rules). A vCluster
//! the operator imported: its provisioning cluster created by the operator's Rancher
//! user with the operator's `loft.sh/*` labels, and its owner CRTBs
//! `vcluster-<user>-co` as the operator writes them in the cluster's `c-m-` namespace.
//! The administrator follows docs/migration.md: installs the hub with
//! `--adopt-operator-clusters-created-by`, grants the hub's Rancher user cluster-owner
//! in the adopted cluster, then rolls out the agent. Checked as an administrator would:
//! the cluster is adopted (no second one, no rename), at every moment a CRTB watch saw
//! each project member holds a cluster-owner binding, no grant is made twice, a removed
//! member loses the (adopted) binding, and bindings a person made — with or without
//! `loft.sh` labels, unless they have the operator's exact shape — are never touched.

mod e2e_support;
mod guard_support;
mod owners_support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::{Value, json};
use vclink_harness::{E2eEnv, E2eOptions, HubOptions, VClusterSpec};

use guard_support::{prov_api, wait, wait_connected};
use owners_support::{add_crtb, add_prtb, crtbs, delete, grant, owner_grants, prtbs, user};

const OPERATOR: &str = "vcluster-rancher-operator";

/// A client of the local cluster as the operator's Rancher user, with the global-admin
/// rights the operator's chart gives it (so Rancher's webhook records it as creator).
async fn operator_client(env: &E2eEnv) -> anyhow::Result<kube::Client> {
    let admin = env.local_client().await?;
    let crb: ClusterRoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "vcluster-rancher-operator-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": OPERATOR}]}))?;
    kube::Api::<ClusterRoleBinding>::all(admin)
        .patch(
            "vcluster-rancher-operator-admin",
            &PatchParams::apply("migration-test").force(),
            &Patch::Apply(&crb),
        )
        .await?;
    env.local.client_as(OPERATOR, &[]).await
}

/// A CRTB the way the operator writes one: `vcluster-<user>-co`, cluster-owner, only a
/// userName, labels `loft.sh/vcluster-service-uid` and `loft.sh/parent-<kind>`.
fn operator_crtb(m: &str, svc_uid: &str, u: &str, parent: (&str, &str), role: &str) -> Value {
    json!({"apiVersion": "management.cattle.io/v3", "kind": "ClusterRoleTemplateBinding",
        "metadata": {"name": format!("vcluster-{u}-co"), "namespace": m, "labels": {
            "loft.sh/vcluster-service-uid": svc_uid, (parent.0): parent.1}},
        "clusterName": m, "roleTemplateName": role, "userName": u})
}

/// One event of the CRTB watch: the grants alive right after it (name → grant).
type Moments = Arc<Mutex<Vec<(Instant, BTreeMap<String, String>)>>>;

/// Records, from a watch on the cluster's CRTBs, the live grants after every event.
fn record(c: kube::Client, m: &str) -> Moments {
    let moments: Moments = Arc::default();
    let out = moments.clone();
    let api = crtbs(&c, m);
    tokio::spawn(async move {
        let mut live = BTreeMap::new();
        let mut init = BTreeMap::new();
        let mut s = watcher(api, watcher::Config::default()).boxed();
        while let Some(Ok(ev)) = s.next().await {
            let alive = |o: &DynamicObject| o.metadata.deletion_timestamp.is_none();
            match ev {
                // A (re)list: `live` stays what the last event left until the list is
                // complete, so a relist is not mistaken for a moment without bindings.
                watcher::Event::Init => {
                    init.clear();
                    continue;
                }
                watcher::Event::InitApply(o) => {
                    init.insert(o.metadata.name.clone().unwrap_or_default(), grant(&o));
                    continue;
                }
                watcher::Event::InitDone => live = std::mem::take(&mut init),
                watcher::Event::Apply(o) if alive(&o) => {
                    live.insert(o.metadata.name.clone().unwrap_or_default(), grant(&o));
                }
                watcher::Event::Apply(o) | watcher::Event::Delete(o) => {
                    live.remove(&o.metadata.name.clone().unwrap_or_default());
                }
            }
            out.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((Instant::now(), live.clone()));
        }
    });
    moments
}

/// The first moment (before `until`) at which nobody held `want`, if any.
fn gap(moments: &Moments, want: &str, until: Instant) -> Option<BTreeMap<String, String>> {
    let m = moments.lock().unwrap_or_else(|p| p.into_inner());
    m.iter()
        .filter(|(t, _)| *t < until)
        .find(|(_, live)| !live.values().any(|g| g == want))
        .map(|(_, live)| live.clone())
}

async fn get(c: &kube::Client, m: &str, name: &str) -> anyhow::Result<Option<DynamicObject>> {
    Ok(crtbs(c, m).get_opt(name).await?)
}

/// Sum of a counter's samples whose labels contain `labels` (empty: every sample).
fn counter(metrics: &str, name: &str, labels: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && l.split(['{', ' ']).next() == Some(name))
        .filter(|l| l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn label<'a>(o: &'a DynamicObject, k: &str) -> Option<&'a str> {
    o.metadata.labels.as_ref()?.get(k).map(String::as_str)
}

/// What the operator left behind for vCluster `vc`: its provisioning cluster, created as
/// the operator's Rancher user with its labels, and its owner CRTBs for `members`
/// (user, parent PRTB). Returns the cluster's object and management id.
async fn operator_import(
    env: &E2eEnv,
    operator: &kube::Client,
    project: &str,
    vc: &vclink_harness::SimVCluster,
    members: &[(&str, &str)],
) -> anyhow::Result<(DynamicObject, String)> {
    let c = env.local_client().await?;
    let host = env.downstream().cluster_id.clone();
    let uid = vc.service_uid();
    let name = format!("{host}-{}-{}", vc.namespace(), vc.name());
    let o: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "provisioning.cattle.io/v1", "kind": "Cluster",
        "metadata": {"name": name, "namespace": owners_support::WORKSPACE, "labels": {
            "loft.sh/vcluster-service-uid": uid, "loft.sh/vcluster-host-cluster": host,
            "loft.sh/vcluster-project-uid": "0d1e2f3a-project-uid", "loft.sh/vcluster-project": project}},
        "spec": {}}))?;
    let made = prov_api(operator.clone())
        .create(&PostParams::default(), &o)
        .await?;
    let m: String = wait(
        env,
        &format!("the simulator to create the management cluster of {name}"),
        || async {
            anyhow::Ok(
                prov_api(c.clone())
                    .get(&name)
                    .await?
                    .data
                    .pointer("/status/clusterName")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            )
        },
    )
    .await?;
    for (u, parent) in members {
        let o = operator_crtb(&m, uid, u, ("loft.sh/parent-prtb", parent), "cluster-owner");
        crtbs(operator, &m)
            .create(&PostParams::default(), &serde_json::from_value(o)?)
            .await?;
    }
    Ok((made, m))
}

/// Name → UID of the CRTBs in `m`.
async fn uids(c: &kube::Client, m: &str) -> anyhow::Result<BTreeMap<String, String>> {
    Ok(crtbs(c, m)
        .list(&Default::default())
        .await?
        .items
        .iter()
        .map(|o| {
            (
                o.metadata.name.clone().unwrap_or_default(),
                o.metadata.uid.clone().unwrap_or_default(),
            )
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_clusters_and_bindings_are_taken_over_without_a_gap() -> anyhow::Result<()> {
    let mut env = guard_support::start(
        E2eOptions {
            hub: HubOptions {
                extra_args: vec![format!("--adopt-operator-clusters-created-by={OPERATOR}")],
                ..Default::default()
            },
            start_agents: false,
            ..Default::default()
        },
        true,
    )
    .await?;
    let c = env.local_client().await?;
    let host = env.downstream().cluster_id.clone();
    let p = env.sim.create_project(&host, "team-a").await?;
    let project_id = format!("{host}:{}", p.id);
    let ns = p.backing_namespace.clone();
    add_prtb(
        &c,
        &ns,
        "alice-owner",
        &project_id,
        "project-owner",
        user("u-alice"),
    )
    .await?;
    add_prtb(
        &c,
        &ns,
        "bob-member",
        &project_id,
        "project-member",
        user("u-bob"),
    )
    .await?;
    let vc = env
        .create_vcluster(0, VClusterSpec::new("team-a", "vc1").project(&project_id))
        .await?;
    let uid = vc.service_uid().to_string();

    // A second vCluster, to see what happens before the migration step that makes the
    // hub's user owner of an adopted cluster.
    let vc2 = env
        .create_vcluster(0, VClusterSpec::new("team-a", "vc2").project(&project_id))
        .await?;

    // What the operator left behind: its clusters and owner bindings (for vc1 also one
    // of a member whose PRTB is gone since).
    let operator = operator_client(&env).await?;
    let (made, m) = operator_import(
        &env,
        &operator,
        &p.id,
        &vc,
        &[
            ("u-alice", "alice-owner"),
            ("u-bob", "bob-member"),
            ("u-gone", "gone-owner"),
        ],
    )
    .await?;
    let prov_name = made.metadata.name.clone().unwrap_or_default();
    let (_, m2) = operator_import(
        &env,
        &operator,
        &p.id,
        &vc2,
        &[("u-alice", "alice-owner"), ("u-bob", "bob-member")],
    )
    .await?;
    let mk = |o: Value| serde_json::from_value::<DynamicObject>(o);
    // People's own bindings: without loft labels (one of them even for a member), and a
    // forgery with loft labels granting a role the operator never grants.
    add_crtb(&c, &m, "erins-own", "cluster-member", user("u-erin")).await?;
    add_crtb(&c, &m, "carols-own", "cluster-owner", user("u-carol")).await?;
    let forged = mk(operator_crtb(
        &m,
        &uid,
        "u-mallory",
        ("loft.sh/parent-prtb", "alice-owner"),
        "cluster-member",
    ))?;
    crtbs(&c, &m)
        .create(&PostParams::default(), &forged)
        .await?;
    // Migration step: the hub's Rancher user becomes owner of the adopted cluster (of
    // vc1's only, for now).
    add_crtb(
        &c,
        &m,
        "vclink-hub-owner",
        "cluster-owner",
        user(vclink_harness::env::HUB_RANCHER_USER),
    )
    .await?;
    let before = uids(&c, &m).await?;
    let before2 = uids(&c, &m2).await?;
    let moments = record(c.clone(), &m);
    let moments2 = record(c.clone(), &m2);
    wait(&env, "the CRTB watches to list", || async {
        let listed = |m: &Moments| !m.lock().unwrap_or_else(|p| p.into_inner()).is_empty();
        anyhow::Ok((listed(&moments) && listed(&moments2)).then_some(()))
    })
    .await?;

    // The agent is rolled out.
    env.start_agent(0).await?;
    let imported = wait_connected(&env, 0, &vc).await?;
    assert_eq!(
        imported.name, prov_name,
        "the operator's cluster is adopted, not renamed or replaced"
    );
    assert_eq!(
        imported.prov_uid,
        made.metadata.uid.clone().unwrap_or_default()
    );
    let clusters = e2e_support::clusters_of(&env, &vc).await?;
    assert_eq!(clusters.len(), 1, "no second cluster for the vCluster");

    // The members' bindings become vclink's; the stale one goes.
    let want = ["cluster-owner u-alice", "cluster-owner u-bob"];
    let last = Mutex::new(Default::default());
    wait(
        &env,
        "the operator's bindings of alice and bob adopted, u-gone's deleted",
        || async {
            let have = owner_grants(&c, &m).await?;
            let gone = get(&c, &m, "vcluster-u-gone-co").await?.is_none();
            let ok = gone && have.iter().map(String::as_str).eq(want);
            *last.lock().unwrap_or_else(|p| p.into_inner()) = (have, gone);
            anyhow::Ok(ok.then_some(()))
        },
    )
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}; last seen {:?}",
            last.lock().unwrap_or_else(|p| p.into_inner())
        )
    })?;
    for u in ["u-alice", "u-bob"] {
        let name = format!("vcluster-{u}-co");
        let o = get(&c, &m, &name).await?.expect("adopted");
        assert_eq!(
            o.metadata.uid,
            before.get(&name).cloned(),
            "{name} kept (never deleted and re-created)"
        );
        assert_eq!(label(&o, "vclink.io/managed-by"), Some("vclink"));
        assert!(
            label(&o, "loft.sh/parent-prtb").is_some(),
            "the operator's labels stay (rollback)"
        );
    }
    // One binding per grant.
    let all = crtbs(&c, &m).list(&Default::default()).await?.items;
    let mut grants: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for o in all
        .iter()
        .filter(|o| o.metadata.deletion_timestamp.is_none())
    {
        grants
            .entry(grant(o))
            .or_default()
            .push(o.metadata.name.clone().unwrap_or_default());
    }
    for (g, names) in &grants {
        assert_eq!(names.len(), 1, "{g} is granted twice: {names:?}");
    }

    // What it took: two adoptions (one patch each) and one stale binding deleted; no
    // CRTB created. Then, idle, no owner-sync request at all.
    let crtb_writes = |t: &str| {
        ["create", "patch", "delete"].map(|verb| {
            counter(
                t,
                "vclink_hub_owner_api_requests_total",
                &format!("resource=\"crtb\",verb=\"{verb}\""),
            )
        })
    };
    let t = env.hub.metrics().await?;
    // A reconcile that runs before the watch delivers the stale binding's deletion may
    // send the same UID- and resourceVersion-guarded delete once more; the API server
    // answers it 404/409 and nothing else is removed (the objects above prove it), so
    // the delete requests are one or two.
    let w = crtb_writes(&t);
    assert!(
        w[0] == 0.0 && w[1] == 2.0 && (1.0..=2.0).contains(&w[2]),
        "CRTB create/patch/delete: {:?}",
        t.lines()
            .filter(|l| l.starts_with("vclink_hub_owner_api_requests_total"))
            .collect::<Vec<_>>()
    );
    let idle = counter(&t, "vclink_hub_owner_api_requests_total", "");
    vclink_harness::holds_for(
        "no owner-sync request while nothing changes",
        Duration::from_secs(5),
        || async {
            let t = env.hub.metrics().await?;
            anyhow::Ok(counter(&t, "vclink_hub_owner_api_requests_total", "") == idle)
        },
    )
    .await?;

    // vc2's cluster, whose owner the hub's user is not yet: adopted as a cluster, its
    // bindings left exactly as the operator made them, and its Service says why.
    // (Its state is `error` until then: it is the administrator's move.)
    env.wait_for_ready_cluster(owners_support::WORKSPACE, &vc2, owners_support::TIMEOUT)
        .await?;
    let why = "not an owner of Rancher cluster";
    let seen = Mutex::new(BTreeMap::new());
    wait(
        &env,
        "vc2's Service to say the hub's user does not own its cluster",
        || async {
            let a = e2e_support::vclink_annotations(&env, 0, &vc2).await?;
            let e = a
                .get(vclink_proto::keys::ANNOTATION_LAST_ERROR)
                .cloned()
                .unwrap_or_default();
            let ok = e.contains(why) && e.contains(&m2);
            *seen.lock().unwrap_or_else(|p| p.into_inner()) = a;
            anyhow::Ok(ok.then_some(()))
        },
    )
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}; vc2's annotations: {:?}",
            seen.lock().unwrap_or_else(|p| p.into_inner())
        )
    })?;
    let now2 = uids(&c, &m2).await?;
    for (name, uid) in &before2 {
        assert_eq!(now2.get(name), Some(uid), "vc2's binding {name} untouched");
    }
    assert!(
        owner_grants(&c, &m2).await?.is_empty(),
        "nothing adopted in vc2's cluster"
    );
    // Now the migration step for vc2's cluster: its bindings are taken over too.
    add_crtb(
        &c,
        &m2,
        "vclink-hub-owner",
        "cluster-owner",
        user(vclink_harness::env::HUB_RANCHER_USER),
    )
    .await?;
    wait(&env, "vc2's operator bindings adopted", || async {
        let have = owner_grants(&c, &m2).await?;
        anyhow::Ok(have.iter().map(String::as_str).eq(want).then_some(()))
    })
    .await?;
    let all2 = crtbs(&c, &m2).list(&Default::default()).await?.items;
    for want in want {
        let n = all2.iter().filter(|o| grant(o) == want).count();
        assert_eq!(n, 1, "{want} granted {n} times in vc2's cluster");
    }
    for (name, uid) in &before2 {
        let o = get(&c, &m2, name).await?;
        assert_eq!(
            o.and_then(|o| o.metadata.uid).as_ref(),
            Some(uid),
            "{name} kept"
        );
    }
    wait(&env, "vc2's Service error cleared", || async {
        let a = e2e_support::vclink_annotations(&env, 0, &vc2).await?;
        let e = a
            .get(vclink_proto::keys::ANNOTATION_LAST_ERROR)
            .cloned()
            .unwrap_or_default();
        anyhow::Ok((!e.contains(why)).then_some(()))
    })
    .await?;

    // A removed member loses the adopted bindings.
    let removed_at = Instant::now();
    delete(&prtbs(&c, &ns), "alice-owner").await?;
    wait(&env, "alice's adopted bindings deleted", || async {
        let gone = get(&c, &m, "vcluster-u-alice-co").await?.is_none()
            && get(&c, &m2, "vcluster-u-alice-co").await?.is_none();
        anyhow::Ok(gone.then_some(()))
    })
    .await?;
    for m in [&m, &m2] {
        assert_eq!(
            owner_grants(&c, m).await?.into_iter().collect::<Vec<_>>(),
            ["cluster-owner u-bob"]
        );
    }

    // At no moment the watches saw was a member without a binding.
    for (cluster, moments) in [(&m, &moments), (&m2, &moments2)] {
        if let Some(live) = gap(moments, "cluster-owner u-alice", removed_at) {
            panic!("u-alice had no cluster-owner binding in {cluster} at one moment: {live:?}");
        }
        if let Some(live) = gap(moments, "cluster-owner u-bob", Instant::now()) {
            panic!("u-bob had no cluster-owner binding in {cluster} at one moment: {live:?}");
        }
    }
    // Bindings people made are untouched: the same objects, no vclink labels.
    for name in [
        "erins-own",
        "carols-own",
        "vcluster-u-mallory-co",
        "vclink-hub-owner",
    ] {
        let o = get(&c, &m, name)
            .await?
            .unwrap_or_else(|| panic!("{name} was deleted"));
        assert_eq!(o.metadata.uid, before.get(name).cloned(), "{name} replaced");
        assert_eq!(label(&o, "vclink.io/managed-by"), None, "{name} adopted");
    }
    Ok(())
}
