//! Agent identity end to end, on real API servers and the Rancher simulator, with the
//! real hub verifying agents by TokenReviews through the simulator's cluster proxy
//! under its own Rancher user (who may create TokenReviews downstream and nothing else).
//! Streams are opened by a hand-written client that claims what an attacker would.

mod identity_support;

use std::time::Duration;

use identity_support::*;
use tonic::Code;
use vclink_harness::{E2eEnv, E2eOptions, RancherCredential, VClusterSpec, wait_for};
use vclink_proto::v1::agent_message::Msg;
use vclink_proto::v1::{Heartbeat, Remove, Snapshot, Upsert};

const TIMEOUT: Duration = Duration::from_secs(120);

/// Provisioning clusters vclink made (the downstream clusters themselves have some too).
async fn vclink_clusters(env: &E2eEnv) -> anyhow::Result<Vec<kube::api::DynamicObject>> {
    Ok(env
        .provisioning_clusters("fleet-default")
        .await?
        .into_iter()
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(vclink_proto::keys::LABEL_SERVICE_UID))
        })
        .collect())
}

async fn no_clusters(env: &E2eEnv) -> anyhow::Result<()> {
    let n = vclink_clusters(env).await?.len();
    anyhow::ensure!(n == 0, "{n} vCluster clusters were created");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn impersonation_and_bad_tokens_are_refused() -> anyhow::Result<()> {
    let env = E2eEnv::start(E2eOptions {
        downstreams: 2,
        start_agents: false,
        ..Default::default()
    })
    .await?;
    let (a, b) = (&env.downstreams[0], &env.downstreams[1]);
    let snapshot = Msg::Snapshot(Snapshot {
        generation: 1,
        vclusters: vec![vc(1)],
        last: true,
    });

    // Control: A's agent token, claiming A, is welcomed as A.
    let good = token(&a.cluster, "vclink-agent", "vclink-hub").await?;
    let mut c = connect(&env.hub, Some(&good), vec![hello(&a.cluster_id)]).await?;
    assert_eq!(c.welcome().await?.cluster_id, a.cluster_id);
    drop(c);

    // Cluster B's agent claiming cluster A: B's token fails at A's API server.
    let b_token = token(&b.cluster, "vclink-agent", "vclink-hub").await?;
    let mut c = connect(
        &env.hub,
        Some(&b_token),
        vec![hello(&a.cluster_id), snapshot.clone()],
    )
    .await?;
    let st = c.refusal().await?;
    assert_eq!(st.code(), Code::Unauthenticated, "{st:?}");

    // No token; a token for another audience; an expired one; garbage.
    let wrong_aud = token(&a.cluster, "vclink-agent", "some-other-service").await?;
    let expired = expired_token(&a.cluster, "vclink-agent", Duration::from_secs(3600)).await?;
    for (what, t) in [
        ("no token", None),
        ("wrong audience", Some(wrong_aud.as_str())),
        ("expired", Some(expired.as_str())),
        ("garbage", Some("not-a-jwt")),
    ] {
        let mut c = connect(&env.hub, t, vec![hello(&a.cluster_id), snapshot.clone()]).await?;
        let st = c.refusal().await?;
        assert_eq!(st.code(), Code::Unauthenticated, "{what}: {st:?}");
        assert!(
            !st.message().contains("not-a-jwt"),
            "{what}: the token is not echoed"
        );
    }

    // A valid token of another ServiceAccount of cluster A: authenticated, not the agent.
    let other_sa = token(&a.cluster, "intruder", "vclink-hub").await?;
    let mut c = connect(
        &env.hub,
        Some(&other_sa),
        vec![hello(&a.cluster_id), snapshot.clone()],
    )
    .await?;
    let st = c.refusal().await?;
    assert_eq!(st.code(), Code::PermissionDenied, "{st:?}");

    // A token of the agent ServiceAccount after that account was deleted.
    let doomed = token(&a.cluster, "vclink-agent", "vclink-hub").await?;
    let sas: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
        kube::Api::namespaced(a.cluster.client().await?, NS);
    sas.delete("vclink-agent", &Default::default()).await?;
    wait_for("the ServiceAccount to be gone", TIMEOUT, || async {
        anyhow::Ok(sas.get_opt("vclink-agent").await?.is_none())
    })
    .await?;
    let mut c = connect(
        &env.hub,
        Some(&doomed),
        vec![hello(&a.cluster_id), snapshot.clone()],
    )
    .await?;
    let st = c.refusal().await?;
    assert_eq!(st.code(), Code::Unauthenticated, "{st:?}");

    // Nothing was created for any of them, and every refusal was counted.
    no_clusters(&env).await?;
    assert!(rejections(&env.hub, "unauthenticated").await? >= 6.0);
    assert!(rejections(&env.hub, "auth_denied").await? >= 1.0);
    assert!(
        metric(
            &env.hub,
            "vclink_hub_tokenreview_requests_total{outcome=\"ok\"}"
        )
        .await?
            >= 4.0,
        "the refusals came from TokenReviews in the claimed cluster"
    );
    // The hub's log names no token.
    let logs = env.hub.logs().join("\n");
    for t in [&good, &b_token, &wrong_aud, &expired, &other_sa, &doomed] {
        assert!(
            !logs.contains(t.as_str()),
            "a token leaked into the hub's log"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scope_and_bad_input_are_refused_and_counted() -> anyhow::Result<()> {
    let mut opts = E2eOptions {
        downstreams: 2,
        start_agents: false,
        ..Default::default()
    };
    opts.hub.extra_args = vec![
        "--max-vclusters-per-agent=3".into(),
        "--agent-message-rate=5".into(),
        "--agent-message-burst=20".into(),
    ];
    let mut env = E2eEnv::start(opts).await?;
    env.start_agent(0).await?;
    let vc_a = env
        .create_vcluster(0, VClusterSpec::new("team-a", "vc1"))
        .await?;
    let (_, a_vc_cluster) = env
        .wait_for_ready_cluster("fleet-default", &vc_a, TIMEOUT)
        .await?;
    let (a_id, b) = (env.downstreams[0].cluster_id.clone(), &env.downstreams[1]);
    let b_token = token(&b.cluster, "vclink-agent", "vclink-hub").await?;
    let open = |first: Vec<Msg>| {
        let (hub, t, h) = (&env.hub, b_token.clone(), hello(&b.cluster_id));
        async move {
            let mut c = connect(hub, Some(&t), std::iter::once(h).chain(first).collect()).await?;
            c.welcome().await?;
            anyhow::Ok(c)
        }
    };
    let upsert = |v| Msg::Upsert(Upsert { vcluster: Some(v) });

    // Spoofed host: B reports a vCluster whose Rancher cluster is A's vCluster's.
    let mut spoof = vc(1);
    spoof.recorded_cluster_id = a_vc_cluster.clone();
    // What one bad vCluster costs is that vCluster alone: it is refused with a reason on
    // its own Status, counted, and the stream goes on (the Status could not arrive on a
    // closed stream).
    let snapshot = |vcs: Vec<vclink_proto::v1::VCluster>| {
        Msg::Snapshot(Snapshot {
            generation: 1,
            vclusters: vcs,
            last: true,
        })
    };
    let refused: Vec<(&str, Vec<Msg>, Vec<String>, &str)> = vec![
        (
            "spoofed host",
            vec![snapshot(vec![spoof])],
            vec![vc(1).uid],
            "foreign_cluster",
        ),
        (
            "A's project",
            vec![snapshot(vec![vclink_proto::v1::VCluster {
                project_id: format!("{a_id}:p-abcde"),
                ..vc(2)
            }])],
            vec![vc(2).uid],
            "foreign_project",
        ),
        (
            "too many vClusters",
            vec![snapshot((10..14).map(vc).collect())],
            // Which one of the four is left out is the hub's choice.
            (10..14).map(|n| vc(n).uid).collect(),
            "over_agent_limit",
        ),
    ];
    for (what, msgs, uids, reason) in refused {
        let series = format!("vclink_hub_vcluster_refusals_total{{reason=\"{reason}\"}}");
        let before = metric(&env.hub, &series).await?;
        let mut c = open(msgs).await?;
        let message = c.error_status_for(&uids).await?;
        assert!(!message.is_empty(), "{what}: a reason is given");
        wait_for(&format!("{what} counted as {reason}"), TIMEOUT, || async {
            anyhow::Ok(metric(&env.hub, &series).await? > before)
        })
        .await?;
    }
    let cases: Vec<(&str, Vec<Msg>, Code, &str)> = vec![
        (
            "A's vCluster removed",
            vec![Msg::Remove(Remove {
                uid: vc_a.service_uid().to_owned(),
                namespace: "team-a".into(),
                name: "vc1".into(),
            })],
            Code::PermissionDenied,
            "foreign_uid",
        ),
        (
            "A's vCluster reported",
            vec![upsert(vclink_proto::v1::VCluster {
                uid: vc_a.service_uid().to_owned(),
                ..vc(3)
            })],
            Code::PermissionDenied,
            "foreign_uid",
        ),
        (
            "invalid uid",
            vec![upsert(vclink_proto::v1::VCluster {
                uid: "not-a-uid".into(),
                ..vc(4)
            })],
            Code::InvalidArgument,
            "invalid",
        ),
        (
            "invalid name",
            vec![upsert(vclink_proto::v1::VCluster {
                name: "Not_A_Name".into(),
                ..vc(5)
            })],
            Code::InvalidArgument,
            "invalid",
        ),
        (
            "oversized",
            vec![upsert(vclink_proto::v1::VCluster {
                requested_name: "x".repeat(2 << 20),
                ..vc(6)
            })],
            Code::ResourceExhausted,
            "oversized",
        ),
        (
            "rate",
            (0..60).map(|_| Msg::Heartbeat(Heartbeat {})).collect(),
            Code::ResourceExhausted,
            "rate_limited",
        ),
    ];
    for (what, msgs, code, reason) in cases {
        let before = rejections(&env.hub, reason).await?;
        let mut c = open(msgs).await?;
        let st = c.refusal().await?;
        assert_eq!(st.code(), code, "{what}: {st:?}");
        assert!(!st.message().is_empty(), "{what}: a reason is given");
        wait_for(&format!("{what} counted as {reason}"), TIMEOUT, || async {
            anyhow::Ok(rejections(&env.hub, reason).await? > before)
        })
        .await?;
    }
    // A malformed Hello is InvalidArgument before any authentication.
    let mut c = connect(&env.hub, Some(&b_token), vec![hello("Not A Cluster")]).await?;
    let st = c.refusal().await?;
    assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
    assert!(st.message().contains("cluster_id"), "{st:?}");

    // Nothing refused of B's got a cluster (the three admitted of the four may); A's is
    // untouched.
    let all = vclink_clusters(&env).await?;
    let uid_of = |o: &kube::api::DynamicObject| {
        o.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(vclink_proto::keys::LABEL_SERVICE_UID))
            .cloned()
            .unwrap_or_default()
    };
    for n in [1, 2, 3, 4, 5, 6] {
        assert!(
            !all.iter().any(|o| uid_of(o) == vc(n).uid),
            "a refused vCluster ({}) got a Rancher cluster",
            vc(n).name
        );
    }
    assert!(
        env.provisioning_cluster_for("fleet-default", &vc_a)
            .await?
            .is_some_and(|p| p.metadata.deletion_timestamp.is_none())
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_and_credential_rotation_do_not_interrupt_the_stream() -> anyhow::Result<()> {
    let mut opts = E2eOptions::default();
    opts.hub.extra_args = vec!["--agent-reverify-interval=2s".into()];
    let mut env = E2eEnv::start(E2eOptions {
        start_agents: false,
        ..opts.clone()
    })
    .await?;
    // Restart the hub with a short-lived, quickly rotated Rancher token.
    env.hub.stop().await?;
    let mut hub_opts = env.hub_options();
    let r = hub_opts.rancher.as_mut().expect("the env verifies agents");
    assert!(matches!(r.credential, RancherCredential::User(_)));
    r.token_ttl = Some(Duration::from_secs(12));
    env.hub = vclink_harness::HubProcess::start(&env.local, hub_opts).await?;
    env.start_agent(0).await?;
    let vc1 = env
        .create_vcluster(0, VClusterSpec::new("team-a", "vc1"))
        .await?;
    env.wait_for_ready_cluster("fleet-default", &vc1, TIMEOUT)
        .await?;
    let attached = |env: &E2eEnv| {
        env.hub
            .logs()
            .iter()
            .filter(|l| l.contains("agent attached"))
            .count()
    };
    assert_eq!(attached(&env), 1);

    // The hub's Rancher token (TTL 12 s, replaced every 6 s) rotates twice; a fresh
    // agent token then needs a real TokenReview with the rotated credential.
    let rotations = "vclink_hub_rancher_token_rotations_total";
    wait_for(
        "two rotations of the hub's Rancher token",
        TIMEOUT,
        || async { anyhow::Ok(metric(&env.hub, rotations).await? >= 2.0) },
    )
    .await?;
    let ok = "vclink_hub_tokenreview_requests_total{outcome=\"ok\"}";
    let reviews_before = metric(&env.hub, ok).await?;
    let d = env.downstream();
    let fresh = token(&d.cluster, "vclink-agent", "vclink-hub").await?;
    let agent = d.agent.as_ref().expect("agent");
    std::fs::write(agent.token_file(), &fresh)?;
    wait_for(
        "the hub to accept the rotated agent token",
        TIMEOUT,
        || async {
            anyhow::Ok(
                env.hub
                    .logs()
                    .iter()
                    .any(|l| l.contains("agent presented a rotated token; stream continues")),
            )
        },
    )
    .await?;
    assert!(
        metric(&env.hub, ok).await? > reviews_before,
        "verified by a TokenReview"
    );
    // Re-verifications every 2 s keep passing across another credential rotation.
    let now = metric(&env.hub, rotations).await?;
    wait_for("another rotation", TIMEOUT, || async {
        anyhow::Ok(metric(&env.hub, rotations).await? > now)
    })
    .await?;
    assert_eq!(attached(&env), 1, "one stream all along: no reconnect");
    assert_eq!(metric(&env.hub, "vclink_hub_agents_connected").await?, 1.0);
    assert_eq!(rejections(&env.hub, "unauthenticated").await?, 0.0);
    assert_eq!(rejections(&env.hub, "auth_unavailable").await?, 0.0);
    // Old Rancher tokens are deleted after each rotation: at most the current one and
    // one being replaced remain.
    let tokens: kube::Api<kube::api::DynamicObject> = kube::Api::all_with(
        env.local_client().await?,
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("management.cattle.io", "v3", "Token"),
            "tokens",
        ),
    );
    let mine = tokens
        .list(&kube::api::ListParams::default().labels("vclink.io/hub-token=true"))
        .await?
        .items
        .len();
    assert!((1..=2).contains(&mine), "{mine} hub tokens exist");
    Ok(())
}
