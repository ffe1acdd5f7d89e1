//! Opting out is not removal: a vCluster that leaves the agent's catalog (skip-import
//! annotations, the namespace selector, the `app=vcluster` label, a malformed requested
//! name) keeps its Rancher cluster well past the removal grace, and its Service says
//! why. Un-importing on purpose (`vclink.io/import: "false"`) warns at once, deletes
//! after the grace, and is undone by removing the annotation in time.

mod e2e_support;
mod guard_support;

use std::time::{Duration, Instant};

use e2e_support::*;
use guard_support::*;
use serde_json::json;
use vclink_harness::{AgentOptions, E2eOptions, VClusterSpec};
use vclink_proto::keys;

/// Namespace label the agent of these tests selects on.
const SELECT: (&str, &str) = ("guard.vclink.io/import", "yes");

/// One way of leaving the catalog: namespace, what is done, words the Service's
/// explanation must contain (any one of them, case-insensitive).
struct OptOut {
    ns: &'static str,
    how: &'static str,
    explains: &'static [&'static str],
}

const OPT_OUTS: [OptOut; 5] = [
    OptOut {
        ns: "g-skip",
        how: "annotation vclink.io/skip-import: \"true\"",
        explains: &["skip-import"],
    },
    OptOut {
        ns: "g-loft",
        how: "annotation loft.sh/vcluster-skip-import: \"true\"",
        explains: &["vcluster-skip-import"],
    },
    OptOut {
        ns: "g-selector",
        how: "the namespace no longer matching --namespace-selector",
        explains: &["selector"],
    },
    OptOut {
        ns: "g-label",
        how: "the label app=vcluster removed from the Service",
        explains: &["app=vcluster", "label"],
    },
    OptOut {
        ns: "g-name",
        how: "a malformed vclink.io/cluster-name",
        explains: &["cluster-name"],
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn opting_out_in_any_way_keeps_the_rancher_cluster_and_says_why() -> anyhow::Result<()> {
    let grace = Duration::from_secs(3);
    let margin = Duration::from_secs(12);
    let env = start(
        E2eOptions {
            removal_grace: grace,
            agent: AgentOptions {
                namespace_selector: Some(format!("{}={}", SELECT.0, SELECT.1)),
                ..Default::default()
            },
            ..Default::default()
        },
        true,
    )
    .await?;
    let mut vcs = Vec::new();
    for o in &OPT_OUTS {
        namespace_with_labels(&env, 0, o.ns, &[SELECT]).await?;
        vcs.push(
            env.create_vcluster(0, VClusterSpec::new(o.ns, "vc"))
                .await?,
        );
    }
    let mut imported = Vec::new();
    for vc in &vcs {
        imported.push(wait_connected(&env, 0, vc).await?);
    }
    let log = ClusterLog::watch(&env).await?;
    let mut marks = Vec::new();
    for vc in &vcs {
        marks.push(event_marks(&service_events(&env, 0, vc).await?));
    }

    // Every opt-out at once.
    let edited = Instant::now();
    let anno = |k: &str, v: &str| json!({"metadata": {"annotations": {k: v}}});
    patch_service(
        &env,
        0,
        "g-skip",
        "vc",
        anno(keys::ANNOTATION_SKIP_IMPORT, "true"),
    )
    .await?;
    patch_service(
        &env,
        0,
        "g-loft",
        "vc",
        anno(keys::ANNOTATION_LOFT_SKIP_IMPORT, "true"),
    )
    .await?;
    namespace_with_labels(&env, 0, "g-selector", &[]).await?;
    patch_service(
        &env,
        0,
        "g-label",
        "vc",
        json!({"metadata": {"labels": {"app": null}}}),
    )
    .await?;
    patch_service(
        &env,
        0,
        "g-name",
        "vc",
        anno(keys::ANNOTATION_CLUSTER_NAME, "Not_A valid/name!"),
    )
    .await?;

    // Each Service says it is excluded, and never on the way does its cluster terminate.
    let mut problems = Vec::new();
    for ((o, vc), imp) in OPT_OUTS.iter().zip(&vcs).zip(&imported) {
        let what = format!("vCluster {}/vc after {}", o.ns, o.how);
        let r = wait_unless(
            &format!(
                "{what}: its Service to say {}=excluded",
                keys::ANNOTATION_STATE
            ),
            TIMEOUT,
            &env,
            || async {
                Ok((state_of(&env, 0, vc).await?.as_deref() == Some("excluded")).then_some(()))
            },
            || log.deletion_of(&imp.prov_uid, &what, edited),
        )
        .await;
        if let Err(e) = r {
            problems.push(format!("{e:#}"));
        }
    }
    // Well past the grace: no cluster terminating, the same ones still there.
    let until = edited + grace + margin;
    let r = never(
        &format!("no opted-out vCluster's Rancher cluster may be deleted (grace {grace:?})"),
        until,
        &env,
        || async {
            for ((o, vc), imp) in OPT_OUTS.iter().zip(&vcs).zip(&imported) {
                let what = format!("vCluster {}/vc after {}", o.ns, o.how);
                if let Some(p) = log.deletion_of(&imp.prov_uid, &what, edited) {
                    return Ok(Some(p));
                }
                let now = current(&env, vc).await?;
                if now.as_ref().map(|n| &n.prov_uid) != Some(&imp.prov_uid) {
                    return Ok(Some(format!(
                        "{what}: its Rancher cluster {} is gone (now: {now:?})",
                        imp.name
                    )));
                }
            }
            Ok(None)
        },
    )
    .await;
    if let Err(e) = r {
        problems.push(format!("{e:#}"));
    }
    // What the owner reads on the Service: state, reason, an Event.
    for (((o, vc), imp), before) in OPT_OUTS.iter().zip(&vcs).zip(&imported).zip(&marks) {
        let what = format!("vCluster {}/vc after {}", o.ns, o.how);
        let ann = vclink_annotations(&env, 0, vc).await?;
        let evs = service_events(&env, 0, vc).await?;
        let fresh = new_events(before, &evs);
        let text = [
            ann.get(keys::ANNOTATION_EXCLUDED_REASON)
                .cloned()
                .unwrap_or_default(),
            ann.get(keys::ANNOTATION_LAST_ERROR)
                .cloned()
                .unwrap_or_default(),
        ]
        .into_iter()
        .chain(fresh.iter().filter_map(|e| e.message.clone()))
        .collect::<Vec<_>>()
        .join(" | ")
        .to_lowercase();
        if ann.get(keys::ANNOTATION_STATE).map(String::as_str) != Some("excluded") {
            problems.push(format!(
                "{what}: Service annotations are {ann:?}, want state excluded"
            ));
        }
        if fresh.is_empty() {
            problems.push(format!(
                "{what}: no Event on the Service explains the exclusion"
            ));
        }
        if !o.explains.iter().any(|w| text.contains(&w.to_lowercase())) {
            problems.push(format!(
                "{what}: neither {} nor the new Events {:?} mention {:?}",
                keys::ANNOTATION_EXCLUDED_REASON,
                describe(&fresh),
                o.explains
            ));
        }
        if ann.get(keys::ANNOTATION_RANCHER_CLUSTER) != Some(&imp.id) {
            problems.push(format!(
                "{what}: the Service no longer names its Rancher cluster {} ({ann:?})",
                imp.id
            ));
        }
    }
    anyhow::ensure!(
        problems.is_empty(),
        "opting out must never delete the Rancher cluster:\n- {}\n{}",
        problems.join("\n- "),
        diagnostics(&env)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unimport_warns_at_once_deletes_after_the_grace_and_is_undone_in_time() -> anyhow::Result<()>
{
    let grace = Duration::from_secs(20);
    let env = start(
        E2eOptions {
            removal_grace: grace,
            ..Default::default()
        },
        true,
    )
    .await?;
    let goes = env
        .create_vcluster(0, VClusterSpec::new("g-unimport", "goes"))
        .await?;
    let stays = env
        .create_vcluster(0, VClusterSpec::new("g-unimport", "stays"))
        .await?;
    let gone = wait_connected(&env, 0, &goes).await?;
    let kept = wait_connected(&env, 0, &stays).await?;
    let log = ClusterLog::watch(&env).await?;
    let goes_marks = event_marks(&service_events(&env, 0, &goes).await?);
    let stays_marks = event_marks(&service_events(&env, 0, &stays).await?);
    let unimport = json!({"metadata": {"annotations": {keys::ANNOTATION_IMPORT: "false"}}});

    // Un-import `goes`: a Warning at once (well before the grace is over).
    let t = Instant::now();
    patch_service(&env, 0, "g-unimport", "goes", unimport.clone()).await?;
    let warned = wait_unless(
        "a Warning Event on Service g-unimport/goes announcing that its Rancher cluster will be deleted",
        grace,
        &env,
        || async {
            let evs = service_events(&env, 0, &goes).await?;
            Ok(new_events(&goes_marks, &evs)
                .iter()
                .any(|e| e.type_.as_deref() == Some("Warning"))
                .then_some(t.elapsed()))
        },
        || log.deletion_of(&gone.prov_uid, "vCluster g-unimport/goes after vclink.io/import=false", t),
    )
    .await?;
    eprintln!("un-import warning after {warned:?}");
    // Not before the grace...
    never(
        &format!("the un-imported cluster may not be deleted before --removal-grace {grace:?}"),
        t + grace - Duration::from_secs(2),
        &env,
        || async {
            Ok(log.deletion_of(
                &gone.prov_uid,
                "vCluster g-unimport/goes after vclink.io/import=false",
                t,
            ))
        },
    )
    .await?;
    // ...but after it.
    wait_cluster_gone(&env, &goes, &gone.id, TIMEOUT).await?;
    eprintln!(
        "un-imported cluster deleted {:?} after the annotation",
        t.elapsed()
    );

    // Un-import `stays`, then change one's mind within the grace.
    let t = Instant::now();
    patch_service(&env, 0, "g-unimport", "stays", unimport).await?;
    wait_unless(
        "a Warning Event on Service g-unimport/stays announcing the un-import",
        grace / 2,
        &env,
        || async {
            let evs = service_events(&env, 0, &stays).await?;
            Ok(new_events(&stays_marks, &evs)
                .iter()
                .any(|e| e.type_.as_deref() == Some("Warning"))
                .then_some(()))
        },
        || {
            log.deletion_of(
                &kept.prov_uid,
                "vCluster g-unimport/stays after vclink.io/import=false",
                t,
            )
        },
    )
    .await?;
    patch_service(
        &env,
        0,
        "g-unimport",
        "stays",
        json!({"metadata": {"annotations": {keys::ANNOTATION_IMPORT: null}}}),
    )
    .await?;
    let undone = t.elapsed();
    anyhow::ensure!(
        undone < grace,
        "the test could not remove the annotation within the grace ({undone:?} >= {grace:?}); inconclusive"
    );
    let what =
        "vCluster g-unimport/stays whose vclink.io/import=false was removed within the grace";
    never(
        &format!("{what} must keep its Rancher cluster (grace {grace:?} + 10 s)"),
        t + grace + Duration::from_secs(10),
        &env,
        || async {
            if let Some(p) = log.deletion_of(&kept.prov_uid, what, t) {
                return Ok(Some(p));
            }
            let now = current(&env, &stays).await?;
            Ok((now.as_ref() != Some(&kept))
                .then(|| format!("{what}: its Rancher cluster changed: {now:?}, was {kept:?}")))
        },
    )
    .await?;
    wait_state(&env, 0, &stays, "connected").await?;
    Ok(())
}
